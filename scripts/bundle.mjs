// Bundles the CLI into one executable file, dist/rc.libvirt, that needs no node_modules.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';

const out = 'dist/rc.libvirt';
mkdirSync('dist', { recursive: true });
const options = {
  entryPoints: ['src/cli/bin.ts'],
  outfile: out,
  bundle: true,
  platform: 'node',
  target: 'node20',
  // CommonJS: node runs a file without a .js suffix as CommonJS wherever it is installed.
  format: 'cjs',
  minify: true,
  keepNames: true,
  sourcemap: false,
  legalComments: 'none',
  banner: {
    // Libraries written as ES modules ask for import.meta.url; give them this file's URL.
    js: "#!/usr/bin/env node\nconst __rclImportMetaUrl = require('node:url').pathToFileURL(__filename).href;",
  },
  define: { 'import.meta.url': '__rclImportMetaUrl' },
  logLevel: 'warning',
};
await build(options);
chmodSync(out, 0o755);
// Inside this repository package.json says "type": "module"; dist/ holds CommonJS.
writeFileSync('dist/package.json', '{ "type": "commonjs" }\n');
// Render --help once (to a pipe: 100 columns) and build again with the text in, so --help skips yargs' layout.
const help = execFileSync(process.execPath, [out, '--help'], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
await build({ ...options, define: { ...options.define, __RCL_HELP__: JSON.stringify(help) } });
chmodSync(out, 0o755);
console.log(`built ${out}`);
