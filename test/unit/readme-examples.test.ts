/**
 * The README's TypeScript examples run as written: each ```ts block is written to a module that
 * imports the package's entry points from the sources instead of 'qcow2-ref', 'qcow2-ref/node' and
 * 'qcow2-ref/testing', and imported. An example that throws, or imports something the package does
 * not export, fails here.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');
/** package.json "exports" → the source each entry point is built from. */
const ENTRIES: Readonly<Record<string, string>> = { 'qcow2-ref': 'src/index.ts', 'qcow2-ref/node': 'src/node.ts', 'qcow2-ref/testing': 'src/testing.ts' };
const IMPORT = /from '(qcow2-ref(?:\/[a-z]+)?)'/g;
const blocks = [...readFileSync(join(ROOT, 'README.md'), 'utf8').matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
// Inside the repository, so the example resolves the project's packages as a user's would resolve them.
const dir = mkdtempSync(join(ROOT, 'test', '.readme-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('README examples', () => {
  it('there is at least one TypeScript example, and each imports the package through its entry points', () => {
    expect(blocks.length).toBeGreaterThan(0);
    for (const b of blocks) {
      const used = [...b.matchAll(IMPORT)].map((m) => m[1]!);
      expect(used.length).toBeGreaterThan(0);
      for (const u of used) expect(Object.keys(ENTRIES)).toContain(u);
    }
  });

  blocks.forEach((code, i) => {
    it(`example ${i + 1} runs`, async () => {
      const file = join(dir, `example-${i + 1}.ts`);
      writeFileSync(file, code.replace(IMPORT, (_m, name: string) => `from '${pathToFileURL(join(ROOT, ENTRIES[name] ?? 'missing')).href}'`));
      await expect(import(pathToFileURL(file).href)).resolves.toBeDefined();
    });
  });
});
