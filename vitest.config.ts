import { defineConfig } from 'vitest/config';

// Two projects: unit tests run in parallel; integration tests run real QEMU
// guests and a real libvirtd, one file at a time (there is one libvirtd per host).
export default defineConfig({
  test: {
    teardownTimeout: 120_000,
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          // The host's daemons and processes are out of reach (see the file).
          setupFiles: ['test/unit/no-host.setup.ts'],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          fileParallelism: false,
          testTimeout: 180_000,
          hookTimeout: 240_000,
        },
      },
    ],
  },
});
