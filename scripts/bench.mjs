// Bundles the benchmark runner (bench/main.ts) into dist/bench/bench.mjs with
// esbuild (node 20 cannot run TypeScript) and runs it with this script's arguments
// on this terminal; a failed run stops with a message naming the command.
import { build } from 'esbuild';
import { runner, stopOnError } from './lib/run.mjs';

const out = 'dist/bench/bench.mjs';
await stopOnError('scripts/bench.mjs', async () => {
  await build({
    entryPoints: ['bench/main.ts'],
    outfile: out,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    // The helpers find the repository from their own URL: dist/bench/ is two levels down, like test/helpers/.
    packages: 'external',
    sourcemap: 'inline',
    logLevel: 'warning',
  });
  await runner({ stdio: 'inherit' })`${process.execPath} --enable-source-maps ${out} ${process.argv.slice(2)}`;
});
