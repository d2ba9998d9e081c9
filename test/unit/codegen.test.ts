/**
 * The generator: refuses what it cannot generate exactly, keeps generated/ in sync with the spec
 * (--check), and its expression semantics match kaitai-struct-compiler's JavaScript.
 */
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { evaluate, parseExpression, toTypeScript } from '../../src/codegen/expression.ts';
import { KsyError, readKsy } from '../../src/codegen/ksy-model.ts';
import { kaitaiMod } from '../../src/codec/codec-support.ts';

const run = promisify(execFile);
const REPO = join(import.meta.dirname, '..', '..');
const TSX = join(REPO, 'node_modules', '.bin', 'tsx');

function specWith(fieldYaml: string): unknown {
  return parseYaml(`meta:\n  id: t\n  endian: be\ndoc: A test spec.\nseq:\n${fieldYaml}`);
}

describe('readKsy refuses what the generator cannot do exactly', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['u8 (lossy in Kaitai JS)', '  - id: x\n    type: u8\n    doc: d.', /u8 is not supported.*2\^53/],
    ['bit field over 32 bits', '  - id: x\n    type: b33\n    doc: d.', /wider than 32 bits/],
    ['an unknown key', '  - id: x\n    type: u4\n    process: xor(1)\n    doc: d.', /key 'process' is not supported/],
    ['a field without doc', '  - id: x\n    type: u4', /needs a one-sentence doc/],
    ['strz', '  - id: x\n    type: strz\n    encoding: ASCII\n    doc: d.', /strz is not supported/],
    ['an unknown type', '  - id: x\n    type: nope\n    doc: d.', /unknown type 'nope'/],
    ['a non-ASCII encoding', '  - id: x\n    type: str\n    size: 2\n    encoding: UTF-16LE\n    doc: d.', /only ASCII/],
    ['an unparsable expression', '  - id: x\n    size: 1 +* 2\n    doc: d.', /unexpected/],
  ];
  for (const [what, yaml, message] of cases) {
    it(what, () => {
      expect(() => readKsy(specWith(yaml))).toThrow(KsyError);
      expect(() => readKsy(specWith(yaml))).toThrow(message);
    });
  }

  it('accepts the real spec', () => {
    const spec = readKsy(parseYaml(readFileSync(join(REPO, 'spec', 'qcow2.ksy'), 'utf8')));
    expect(spec.types.get('header')?.seq.map((a) => a.id).slice(0, 3)).toEqual(['magic', 'version', 'backing_file_offset']);
  });
});

describe('expressions follow Kaitai JavaScript semantics', () => {
  const env = {
    name: (n: string) => ({ a: 0xfffffffe, b: 3, neg: -7, t: true })[n],
    member: () => undefined,
    enumValue: () => 0,
  };
  const cases: Array<[string, unknown]> = [
    ['a >> 1', 0x7fffffff], // unsigned shift, as kaitai-struct-compiler emits >>>
    ['1 << 31', -2147483648], // 32-bit, as in JavaScript
    ['neg % 4', 1], // non-negative modulo
    ['7 / 2', 3],
    ['neg / 2', -4], // floor division
    ['b * 4294967296 + 1', 12884901889], // doubles above 2^32 stay exact
    ['not t or b == 3', true],
    ['b > 2 ? 10 : 20', 10],
    ['(8 - b % 8) % 8', 5],
    ['b & 1 | 4 ^ 1', 4 ^ 1 | (3 & 1)],
  ];
  for (const [src, expected] of cases) {
    it(`${src} = ${String(expected)}`, () => {
      const e = parseExpression(src);
      expect(evaluate(e, env)).toBe(expected);
      // The emitted TypeScript computes the same value.
      const code = toTypeScript(e, { name: (n) => `env.${n}`, member: () => 'undefined', enumValue: () => '0' });
      const fn = new Function('env', 'kaitaiMod', `return ${code};`) as (e: unknown, m: typeof kaitaiMod) => unknown;
      expect(fn({ a: 0xfffffffe, b: 3, neg: -7, t: true }, kaitaiMod)).toBe(expected);
    });
  }
});

describe('npm run generate -- --check', () => {
  const dir = mkdtempSync(join(tmpdir(), 'qcow2-ref-codegen-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(join(REPO, 'spec'), join(dir, 'spec'), { recursive: true });
  cpSync(join(REPO, 'generated'), join(dir, 'generated'), { recursive: true });
  const check = async (): Promise<number> => {
    try {
      await run(TSX, [join(REPO, 'src', 'codegen', 'main.ts'), '--check', '--root', dir], { cwd: REPO });
      return 0;
    } catch (e) {
      return (e as { code: number }).code;
    }
  };

  it('is clean for the checked-in generated/ and fails once it or the spec changes', async () => {
    expect(await check()).toBe(0);
    const ts = join(dir, 'generated', 'qcow2.ts');
    const original = readFileSync(ts, 'utf8');
    appendFileSync(ts, '\n// hand edit\n');
    expect(await check()).toBe(1);
    writeFileSync(ts, original);
    expect(await check()).toBe(0);
    // The embedded zstd wasm is generated too (from the pinned @bokuweb/zstd-wasm).
    const wasm = join(dir, 'generated', 'zstd-wasm.ts');
    const wasmText = readFileSync(wasm, 'utf8');
    writeFileSync(wasm, wasmText.replace(/^[A-Za-z0-9+/]{120}$/m, (line) => line.replace(/^./, (c) => (c === 'A' ? 'B' : 'A'))));
    expect(await check()).toBe(1);
    writeFileSync(wasm, wasmText);
    expect(await check()).toBe(0);
    appendFileSync(join(dir, 'spec', 'qcow2.ksy'), '\n# a comment changes the spec hash\n');
    expect(await check()).toBe(1);
    await run(TSX, [join(REPO, 'src', 'codegen', 'main.ts'), '--root', dir], { cwd: REPO });
    expect(await check()).toBe(0);
  }, 120_000);
});
