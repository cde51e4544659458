// Imports point one way: every relative import in src/ goes to the same layer
// or to one below it, never back up. The layer order is written here, once;
// docs/architecture.md explains it.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/testbed.js';

/**
 * The layers, top first. A file may import its own layer or any layer further down this list. Layers on one row are
 * peers: neither imports the other (the two drivers and the daemons).
 */
export const LAYERS: readonly (readonly string[])[] = [
  ['cli'],
  ['rc'],
  ['report'],
  ['guests'],
  ['domain/libvirt', 'domain/qmp', 'daemons'],
  ['qmp'],
  ['domain'],
  ['proc'],
  ['config'],
  ['util'],
];

const SRC = join(repoRoot, 'src');

/** The layer of a file under src/: its folder, `domain/<driver>` for a driver, `util` for files at the top of src/. */
export function layerOf(srcPath: string): string {
  const parts = relative(SRC, srcPath).split('/');
  if (parts.length === 1) return 'util';
  if (parts[0] === 'domain' && parts.length > 2) return `domain/${parts[1]}`;
  return parts[0] as string;
}

function rankOf(layer: string): number | undefined {
  const i = LAYERS.findIndex((row) => row.includes(layer));
  return i < 0 ? undefined : i;
}

/** Why importing `to` from `from` breaks the order, or undefined when it keeps it. */
export function violation(from: string, to: string): string | undefined {
  const a = rankOf(from);
  const b = rankOf(to);
  if (a === undefined) return `layer '${from}' is not in the layer order`;
  if (b === undefined) return `layer '${to}' is not in the layer order`;
  if (from === to || b > a) return undefined;
  return b === a ? `layer '${from}' imports its peer '${to}'` : `layer '${from}' imports '${to}', which is above it`;
}

/** Every relative import of a source text: the specifier and its line. */
export function importsOf(text: string): { spec: string; line: number }[] {
  const found: { spec: string; line: number }[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])(\.{1,2}\/[^'"]+)\1/g;
  for (const m of text.matchAll(re)) {
    found.push({ spec: m[2] as string, line: text.slice(0, m.index).split('\n').length });
  }
  return found;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

describe('the layering of src/', () => {
  it('finds the imports of a source text, with their lines', () => {
    const text = "import a from './a.js';\nimport type { B } from '../b/b.js';\nexport { c } from './c.js';\nconst d = await import('../d.js');\nimport 'node:fs';\n";
    expect(importsOf(text)).toEqual([
      { spec: './a.js', line: 1 },
      { spec: '../b/b.js', line: 2 },
      { spec: './c.js', line: 3 },
      { spec: '../d.js', line: 4 },
    ]);
  });

  it('tells a downward import from one running back up or sideways', () => {
    expect(violation('rc', 'guests')).toBeUndefined();
    expect(violation('domain/libvirt', 'qmp')).toBeUndefined();
    expect(violation('config', 'cli')).toBe("layer 'config' imports 'cli', which is above it");
    expect(violation('domain/libvirt', 'domain/qmp')).toBe("layer 'domain/libvirt' imports its peer 'domain/qmp'");
    expect(layerOf(join(SRC, 'domain/qmp/qmp-driver.ts'))).toBe('domain/qmp');
    expect(layerOf(join(SRC, 'domain/types.ts'))).toBe('domain');
  });

  it('has no import in src/ that runs back up (file, line and the two layers named)', () => {
    const bad: string[] = [];
    const files = sourceFiles(SRC);
    expect(files.length).toBeGreaterThan(50);
    for (const file of files) {
      const from = layerOf(file);
      for (const { spec, line } of importsOf(readFileSync(file, 'utf8'))) {
        const target = resolve(dirname(file), spec);
        if (!target.startsWith(`${SRC}/`)) continue; // package.json for the version
        const why = violation(from, layerOf(target));
        if (why) bad.push(`${relative(repoRoot, file)}:${line} imports ${relative(repoRoot, target)}: ${why}`);
      }
    }
    expect(bad).toEqual([]);
  });
});
