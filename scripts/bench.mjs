// Bundles the benchmark runner (bench/main.ts) into dist/bench/bench.mjs with
// esbuild (node 20 cannot run TypeScript) and runs it with this script's arguments.
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';

const out = 'dist/bench/bench.mjs';
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
const r = spawnSync(process.execPath, ['--enable-source-maps', out, ...process.argv.slice(2)], { stdio: 'inherit' });
process.exit(r.status ?? 1);
