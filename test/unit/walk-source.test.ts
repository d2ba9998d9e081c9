/**
 * walkImage over a ByteSource (positioned reads: how `qcow2-ref dump` reads a file of any size) is
 * the walk of the same bytes held in memory — values, errors, error offsets and messages alike — on
 * every checked-in corpus image and on mutations of them (the corruption engine's field values,
 * truncations and bit flips: src/corrupt/mutate.ts), and it reads only the structures it decodes.
 * `dump`'s streamed output (a walk without L2 entries, each table decoded again as it is printed)
 * is the report of the whole walk, byte for byte, in both formats. No QEMU needed.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { formatHuman, runDump, toJson, walkErrorLine } from '../../src/cli/dump.ts';
import { ByteReader, PagedBytes, type ByteSource } from '../../src/codec/index.ts';
import { applyMutations, boundaryValues, mutationTargets, type Mutation } from '../../src/corrupt/mutate.ts';
import { walkImage } from '../../src/format/index.ts';
import { repoRoot } from '../../src/io/repo-root.ts';
const REPO_ROOT = repoRoot();

/** Mutations tried per corpus image (spread over all of its targets). */
const MUTATIONS_PER_IMAGE = 24;

const corpusFiles: string[] = [];
for (const d of readdirSync(join(REPO_ROOT, 'corpus'))) {
  const p = join(REPO_ROOT, 'corpus', d);
  if (statSync(p).isDirectory()) for (const f of readdirSync(p)) corpusFiles.push(join(p, f));
}

/** The images: every corpus file, then mutations of each. */
function* images(): Generator<{ label: string; bytes: Uint8Array }> {
  for (const f of corpusFiles) {
    const bytes = new Uint8Array(readFileSync(f));
    yield { label: f, bytes };
    let t;
    try {
      t = mutationTargets(bytes);
    } catch {
      continue;
    }
    const muts: Mutation[] = [];
    for (const fld of t.fields) for (const v of boundaryValues(fld, t)) muts.push({ kind: 'write', field: fld.name, offset: fld.offset, width: fld.width, value: v });
    for (const b of t.boundaries) for (const d of [-1, 0, 1]) muts.push({ kind: 'truncate', length: b + d });
    for (const r of t.regions) for (let k = 0; k < 4; k++) muts.push({ kind: 'flip', region: r.kind, offset: r.start + Math.floor(((r.end - r.start) * k) / 4), bit: 3 * k });
    const step = Math.max(1, Math.floor(muts.length / MUTATIONS_PER_IMAGE));
    for (let i = 0; i < muts.length; i += step) yield { label: `${f} ${JSON.stringify(muts[i], (_k, v) => (typeof v === 'bigint' ? `${v}` : v))}`, bytes: applyMutations(bytes, [muts[i]!]) };
  }
}

/** A ByteSource over `bytes` that counts what it reads. */
function countingSource(bytes: Uint8Array): ByteSource & { read_: number } {
  const s = {
    length: BigInt(bytes.length),
    read_: 0,
    read(offset: bigint, count: number): Uint8Array {
      s.read_ += count;
      return bytes.slice(Number(offset), Number(offset) + count);
    },
  };
  return s;
}

/** The walk (or the header's error) as comparable text. */
function walkText(f: () => unknown): string {
  try {
    return JSON.stringify(f(), (_k, v) => (typeof v === 'bigint' ? `${v}n` : v instanceof Uint8Array ? `bytes:${Buffer.from(v).toString('hex')}` : v));
  } catch (e) {
    return `throws ${(e as Error).name}: ${(e as Error).message}`;
  }
}

const dir = mkdtempSync(join(tmpdir(), 'qcow2-ref-walk-source-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('walkImage over a ByteSource', () => {
  it('is the walk of the bytes in memory, errors included, on the corpus and its mutations', () => {
    let compared = 0;
    let withErrors = 0;
    for (const { label, bytes } of images()) {
      const inMemory = walkText(() => walkImage(bytes));
      expect(walkText(() => walkImage(countingSource(bytes))), label).toBe(inMemory);
      compared++;
      if (inMemory.includes('"errors":[{')) withErrors++;
    }
    expect(compared).toBeGreaterThan(1000);
    // The mutations reach the error paths.
    expect(withErrors).toBeGreaterThan(200);
  });

  it('reads only the structures it decodes', () => {
    // A 1 MiB image of 512-byte clusters padded to 64 MiB: the walk reads its metadata and little else.
    const bytes = new Uint8Array(readFileSync(corpusFiles.find((f) => f.includes('cluster-512.'))!));
    const padded = new Uint8Array(64 << 20);
    padded.set(bytes);
    const src = countingSource(padded);
    expect(walkText(() => walkImage(src))).toBe(walkText(() => walkImage(padded)));
    expect(src.read_).toBeLessThan(bytes.length + (1 << 20));
  });

  it('decoders over a PagedBytes report source offsets, as over the whole buffer', () => {
    const bytes = new Uint8Array(300_000).map((_, i) => (i * 7) & 0xff);
    const paged = new PagedBytes(countingSource(bytes), { cacheBytes: 1 << 17 });
    const a = new ByteReader(bytes);
    const b = new ByteReader(paged);
    for (const at of [0, 65_530, 131_072 - 3, 299_990]) {
      a.pos = at;
      b.pos = at;
      expect(b.readU4('t', 'f')).toBe(a.readU4('t', 'f'));
      expect(b.readBytes(5, 't', 'f')).toEqual(a.readBytes(5, 't', 'f'));
    }
    a.pos = 10;
    b.pos = 10;
    expect(b.readBytes(200_000, 't', 'f')).toEqual(a.readBytes(200_000, 't', 'f'));
    a.pos = 299_998;
    b.pos = 299_998;
    expect(() => b.readU4('t', 'f')).toThrow('t.f at 0x493de: needs 4 byte(s) at 0x493de but the enclosing region ends at 0x493e0');
    expect(() => a.readU4('t', 'f')).toThrow('t.f at 0x493de: needs 4 byte(s) at 0x493de but the enclosing region ends at 0x493e0');
    expect(b.substream(2, 't', 'f').readBytesToEnd()).toEqual(a.substream(2, 't', 'f').readBytesToEnd());
  });
});

describe('dump streams its report', () => {
  it('prints, in both formats, the report of the whole walk', async () => {
    const path = join(dir, 'x.qcow2');
    let n = 0;
    for (const { label, bytes } of images()) {
      if (n++ % 4 !== 0) continue;
      writeFileSync(path, bytes);
      let walk;
      try {
        walk = walkImage(bytes);
      } catch {
        continue;
      }
      for (const output of ['human', 'json'] as const) {
        let out = '';
        let err = '';
        const code = await runDump([`--output=${output}`, path], { stdout: (t) => void (out += t), stderr: (t) => void (err += t) });
        expect(code, label).toBe(walk.errors.length === 0 ? 0 : 1);
        expect(out, label).toBe(output === 'json' ? `${JSON.stringify(toJson(walk), null, 2)}\n` : formatHuman(path, walk));
        expect(err, label).toBe(walk.errors.map((e) => `qcow2-ref: ${path}: ${walkErrorLine(e)}\n`).join(''));
      }
    }
  });
});
