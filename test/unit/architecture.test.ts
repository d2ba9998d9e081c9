/**
 * The layer rules of ARCHITECTURE.md, enforced: the test reads the layer table from the document
 * itself (so the table is the rule) and checks every import of every module under src/ and of
 * generated/*.ts against it.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { importsOf } from '../support/source-imports.ts';

const ROOT = resolve(import.meta.dirname, '../..');

interface Layer {
  readonly name: string;
  readonly folder: string;
  readonly may: ReadonlySet<string>;
  readonly node: boolean;
}

/** The rows of the "Layers" table of `markdown`. */
export function parseLayerTable(markdown: string): Layer[] {
  const section = markdown.split(/^## /m).find((s) => s.startsWith('Layers'));
  if (section === undefined) throw new Error('ARCHITECTURE.md has no "## Layers" section');
  const rows = section.split('\n').filter((l) => l.startsWith('|')).slice(2);
  return rows.map((row) => {
    // Cells are separated by | not preceded by a backslash (`\|` appears inside cells).
    const cells = row.split(/(?<!\\)\|/).slice(1, -1).map((c) => c.trim());
    if (cells.length !== 5) throw new Error(`layer row with ${cells.length} cells: ${row}`);
    const [name, folder, , may, node] = cells as [string, string, string, string, string];
    return {
      name,
      folder,
      may: new Set(may === '—' ? [] : may.split(',').map((s) => s.trim())),
      node: node === 'yes',
    };
  });
}

/** The .ts files under `dir` (recursively). */
function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) return tsFiles(p);
    return n.endsWith('.ts') ? [p] : [];
  });
}


/** The package's entry points (package.json "exports"), outside every layer. */
const ENTRY_POINTS = ['index.ts', 'node.ts', 'testing.ts'].map((f) => join('src', f));

const layers = parseLayerTable(readFileSync(join(ROOT, 'ARCHITECTURE.md'), 'utf8'));

/** The layer of the file at absolute path `file`, or undefined outside every layer folder. */
function layerOf(file: string): Layer | undefined {
  const rel = relative(ROOT, file);
  if (/^generated\/[^/]+\.ts$/.test(rel.split('\\').join('/'))) return layers.find((l) => l.name === 'generated');
  return layers.find((l) => l.folder !== 'generated' && rel.startsWith(l.folder + '/'));
}

interface Violation {
  readonly file: string;
  readonly imports: string;
  readonly why: string;
}

/** Every import in `source` (the text of the module at absolute path `file`) that breaks the table's rules. */
function violationsIn(file: string, source: string): Violation[] {
  const from = layerOf(file);
  const rel = relative(ROOT, file);
  if (from === undefined) return [];
  const out: Violation[] = [];
  for (const spec of importsOf(source)) {
    if (spec.startsWith('node:')) {
      if (!from.node) out.push({ file: rel, imports: spec, why: `${from.name} may not import node:*` });
      continue;
    }
    if (!spec.startsWith('.')) continue; // an npm package
    const targetRel = relative(ROOT, resolve(dirname(file), spec));
    const to = layerOf(resolve(dirname(file), spec));
    if (/^(test|scripts|bench)\//.test(targetRel)) out.push({ file: rel, imports: targetRel, why: 'src/ may not import tests, scripts or benches' });
    else if (ENTRY_POINTS.includes(targetRel)) out.push({ file: rel, imports: targetRel, why: 'only users import the package entry points' });
    else if (to === undefined) out.push({ file: rel, imports: targetRel, why: 'imports a module outside every layer' });
    else if (to.name !== from.name && !from.may.has(to.name)) out.push({ file: rel, imports: targetRel, why: `${from.name} may not import ${to.name}` });
    else if (to.name !== from.name && to.name !== 'generated' && targetRel !== join(to.folder, 'index.ts')) {
      out.push({ file: rel, imports: targetRel, why: `another layer is imported through its index.ts (${to.folder}/index.ts)` });
    }
  }
  return out;
}

describe('ARCHITECTURE.md layer rules', () => {
  it('the table names every folder under src/ once, and only known layers in "may import"', () => {
    const folders = readdirSync(join(ROOT, 'src')).filter((n) => statSync(join(ROOT, 'src', n)).isDirectory()).map((n) => `src/${n}`);
    expect(layers.map((l) => l.folder).filter((f) => f !== 'generated').sort()).toEqual(folders.sort());
    const names = new Set(layers.map((l) => l.name));
    for (const l of layers) for (const m of l.may) expect(names.has(m), `${l.name} may import unknown layer ${m}`).toBe(true);
  });

  it('the rules are acyclic (a layer never may-import a layer that may import it back)', () => {
    const byName = new Map(layers.map((l) => [l.name, l]));
    const reaches = (a: string, b: string, seen = new Set<string>()): boolean => {
      if (seen.has(a)) return false;
      seen.add(a);
      return [...byName.get(a)!.may].some((m) => m === b || reaches(m, b, seen));
    };
    for (const l of layers) expect(reaches(l.name, l.name), `${l.name} reaches itself`).toBe(false);
  });

  it('every import under src/ and in generated/*.ts follows them', () => {
    const generated = readdirSync(join(ROOT, 'generated')).filter((n) => n.endsWith('.ts')).map((n) => join(ROOT, 'generated', n));
    const files = [...tsFiles(join(ROOT, 'src')), ...generated];
    expect(files.length).toBeGreaterThan(100);
    expect(files.flatMap((f) => violationsIn(f, readFileSync(f, 'utf8')))).toEqual([]);
  });

  it('the checker catches what it should (node:*, the CLI or the I/O layer from the model; the CLI from conform)', () => {
    const model = join(ROOT, 'src', 'model', 'x.ts');
    const caught = (file: string, text: string): string[] => violationsIn(file, text).map((v) => v.imports);
    expect(caught(model, "import { readFileSync } from 'node:fs';")).toEqual(['node:fs']);
    expect(caught(model, "import { main } from '../cli/main.ts';")).toEqual(['src/cli/main.ts']);
    expect(caught(model, "export { fileReader } from '../io/file-reader.ts';")).toEqual(['src/io/file-reader.ts']);
    expect(caught(model, "const m = await import('../io/convert.ts');")).toEqual(['src/io/convert.ts']);
    expect(caught(model, "import x from '../../test/support/mutations.ts';")).toEqual(['test/support/mutations.ts']);
    expect(caught(model, "import { step } from './step.ts';\nimport { u64ToBigInt } from '../format/index.ts';\nimport pako from 'pako';")).toEqual([]);
    expect(caught(model, "import { u64ToBigInt } from '../format/u64.ts';")).toEqual(['src/format/u64.ts']);
    expect(caught(join(ROOT, 'src', 'conform', 'x.ts'), "import { UsageError } from '../cli/io.ts';")).toEqual(['src/cli/io.ts']);
    expect(caught(model, "import { openImageFile } from '../node.ts';")).toEqual(['src/node.ts']);
    expect(caught(join(ROOT, 'src', 'disk', 'x.ts'), "import { fileReader } from '../io/index.ts';\nimport { step } from '../model/index.ts';")).toEqual(['src/io/index.ts']);
    expect(caught(join(ROOT, 'generated', 'x.ts'), "import { isZeroBytes } from '../src/codec/index.ts';\nimport { step } from '../src/model/index.ts';")).toEqual(['src/model/index.ts']);
  });
});
