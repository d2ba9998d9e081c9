/**
 * The README's TypeScript examples run as written: each ```ts block is written to a module that
 * imports the package entry from the sources instead of 'qcow2-ref', and imported. An example that
 * throws, or imports something the package does not export, fails here.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');
const blocks = [...readFileSync(join(ROOT, 'README.md'), 'utf8').matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
// Inside the repository, so the example resolves the project's packages as a user's would resolve them.
const dir = mkdtempSync(join(ROOT, 'test', '.readme-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('README examples', () => {
  it('there is at least one TypeScript example, and each imports the package', () => {
    expect(blocks.length).toBeGreaterThan(0);
    for (const b of blocks) expect(b).toMatch(/from 'qcow2-ref'/);
  });

  blocks.forEach((code, i) => {
    it(`example ${i + 1} runs`, async () => {
      const entry = pathToFileURL(join(ROOT, 'src', 'index.ts')).href;
      const file = join(dir, `example-${i + 1}.ts`);
      writeFileSync(file, code.replaceAll("from 'qcow2-ref'", `from '${entry}'`));
      await expect(import(pathToFileURL(file).href)).resolves.toBeDefined();
    });
  });
});
