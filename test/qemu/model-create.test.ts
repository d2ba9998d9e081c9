/**
 * createImage against real qemu-img 7.2: for every option combination here (a fixed matrix and
 * fast-check draws) either both produce exactly the same bytes (qcow2 file and external data file)
 * and `qemu-img check` accepts ours, or both refuse with the same message.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CreateError, createImage, type CreateOptions } from '../../src/model/create.ts';
import { hostBytes } from '../../src/model/host-file.ts';
import { qemuImgCheck, qemuImgCreateArgs } from '../../src/qemu/qemu-img.ts';
import { requireQemu, runTool } from '../../src/qemu/run.ts';

const QEMU = { timeout: 120_000 };
let dir = '';
let counter = 0;
let rawBacking = '';
let qcowBacking = '';

beforeAll(async () => {
  await requireQemu();
  dir = await mkdtemp(join(tmpdir(), 'qcow2-ref-create-'));
  rawBacking = join(dir, 'backing.raw');
  qcowBacking = join(dir, 'backing.qcow2');
  for (const [p, fmt] of [[rawBacking, 'raw'], [qcowBacking, 'qcow2']] as const) {
    const r = await runTool('qemu-img', qemuImgCreateArgs(p, 1048576, {}, [], fmt));
    if (r.code !== 0) throw new Error(r.stderr);
  }
});

afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

/** The `-o` options qemu-img gets for `o` (the model's names → qemu-img's). */
function qemuOptions(o: CreateOptions): Record<string, string> {
  const q: Record<string, string> = {};
  const onOff = (b: boolean): string => (b ? 'on' : 'off');
  if (o.clusterSize !== undefined) q.cluster_size = String(o.clusterSize);
  if (o.compat !== undefined) q.compat = o.compat;
  if (o.refcountBits !== undefined) q.refcount_bits = String(o.refcountBits);
  if (o.extendedL2 !== undefined) q.extended_l2 = onOff(o.extendedL2);
  if (o.compressionType !== undefined) q.compression_type = o.compressionType;
  if (o.lazyRefcounts !== undefined) q.lazy_refcounts = onOff(o.lazyRefcounts);
  if (o.backingFile !== undefined) q.backing_file = o.backingFile;
  if (o.backingFmt !== undefined) q.backing_fmt = o.backingFmt;
  if (o.dataFile !== undefined) q.data_file = o.dataFile;
  if (o.dataFileRaw !== undefined) q.data_file_raw = onOff(o.dataFileRaw);
  if (o.preallocation !== undefined) q.preallocation = o.preallocation;
  return q;
}

/** First differing offset of two byte strings (or the shorter length), -1 when equal. */
function firstDiff(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

type Outcome = { ok: true; file: Uint8Array; data?: Uint8Array } | { ok: false; message: string };

/** Runs qemu-img create for `o` in a fresh file name; `withData` asks for a data file path. */
async function qemuOutcome(path: string, o: CreateOptions): Promise<Outcome> {
  const r = await runTool('qemu-img', qemuImgCreateArgs(path, o.size.toString(), qemuOptions(o)));
  if (r.code !== 0) {
    const prefix = `qemu-img: ${path}: `;
    const text = r.stderr.trim();
    return { ok: false, message: text.startsWith(prefix) ? text.slice(prefix.length) : text };
  }
  const file = new Uint8Array(await readFile(path));
  return o.dataFile !== undefined ? { ok: true, file, data: new Uint8Array(await readFile(o.dataFile)) } : { ok: true, file };
}

function modelOutcome(o: CreateOptions): Outcome {
  try {
    const { image, dataFile } = createImage(o);
    const file = hostBytes(image.file);
    return dataFile !== undefined ? { ok: true, file, data: hostBytes(dataFile) } : { ok: true, file };
  } catch (e) {
    if (e instanceof CreateError) return { ok: false, message: e.message };
    throw e;
  }
}

/** Creates with both, compares, and runs qemu-img check on our bytes. Returns a description of a mismatch or ''. */
async function compare(o: CreateOptions): Promise<string> {
  const n = counter++;
  const path = join(dir, `img${n}.qcow2`);
  const opts: CreateOptions = o.dataFile !== undefined ? { ...o, dataFile: join(dir, `img${n}.data`) } : o;
  const q = await qemuOutcome(path, opts);
  const m = modelOutcome(opts);
  const what = JSON.stringify(qemuOptions(opts)) + ` size=${opts.size}`;
  try {
    if (!q.ok || !m.ok) {
      if (q.ok !== m.ok) return `${what}: qemu ${q.ok ? 'ok' : `refused (${(q as { message: string }).message})`}, model ${m.ok ? 'ok' : `refused (${(m as { message: string }).message})`}`;
      const qm = (q as { message: string }).message;
      const mm = (m as { message: string }).message;
      // "Backing file specified without backing format" is followed by a line naming the probed format.
      const qFirst = qm.split('\n')[0];
      return qFirst === mm ? '' : `${what}: qemu says ${JSON.stringify(qm)}, model says ${JSON.stringify(mm)}`;
    }
    const d = firstDiff(q.file, m.file);
    if (d >= 0) return `${what}: qcow2 file differs at 0x${d.toString(16)} (qemu ${q.file.length} bytes, model ${m.file.length})`;
    if (q.data !== undefined || m.data !== undefined) {
      const dd = firstDiff(q.data ?? new Uint8Array(), m.data ?? new Uint8Array());
      if (dd >= 0) return `${what}: data file differs at 0x${dd.toString(16)} (qemu ${q.data?.length} bytes, model ${m.data?.length})`;
    }
    // Our bytes, written to a file of their own, must pass qemu-img check.
    const ours = join(dir, `ours${n}.qcow2`);
    await writeFile(ours, m.file);
    const c = await qemuImgCheck(ours);
    await rm(ours, { force: true });
    if (c.code !== 0) return `${what}: qemu-img check of our bytes exited ${c.code}`;
    return '';
  } finally {
    await rm(path, { force: true });
    if (opts.dataFile !== undefined) await rm(opts.dataFile, { force: true });
  }
}

const KiB = 1024n;
const MiB = 1024n * KiB;
const GiB = 1024n * MiB;
const TiB = 1024n * GiB;

/** The fixed matrix: every cluster size class, refcount width, compat level and feature. */
function matrix(): CreateOptions[] {
  const out: CreateOptions[] = [];
  for (const size of [0n, 1n, 512n, GiB, TiB + 512n]) out.push({ size });
  for (const clusterSize of [512, 4096, 65536, 2097152]) {
    out.push({ size: GiB, clusterSize });
    out.push({ size: 3n * TiB, clusterSize });
  }
  for (const refcountBits of [1, 2, 4, 8, 16, 32, 64]) out.push({ size: 64n * MiB, refcountBits, clusterSize: 4096 });
  for (const compat of ['0.10', '1.1', 'v2', 'v3']) out.push({ size: GiB, compat, backingFile: rawBacking, backingFmt: 'raw' });
  out.push({ size: GiB, extendedL2: true, clusterSize: 16384 });
  out.push({ size: GiB, compressionType: 'zstd' });
  out.push({ size: GiB, lazyRefcounts: true });
  out.push({ size: MiB, backingFile: qcowBacking, backingFmt: 'qcow2' });
  out.push({ size: MiB, backingFile: rawBacking, backingFmt: 'raw', clusterSize: 512 });
  out.push({ size: MiB, dataFile: 'x' });
  out.push({ size: MiB + 100n, dataFile: 'x', dataFileRaw: true });
  out.push({ size: 3n * MiB, dataFile: 'x', preallocation: 'metadata', clusterSize: 512 });
  out.push({ size: 200n * MiB, preallocation: 'metadata' });
  out.push({ size: 1200n * MiB, preallocation: 'metadata', dataFile: 'x' });
  out.push({ size: MiB + 512n, preallocation: 'metadata' });
  out.push({ size: 64n * MiB, preallocation: 'metadata', clusterSize: 512 });
  out.push({ size: 20n * MiB, preallocation: 'metadata', clusterSize: 512, refcountBits: 1 });
  out.push({ size: 16n * MiB, preallocation: 'metadata', clusterSize: 512, refcountBits: 64 });
  out.push({ size: 48n * MiB, preallocation: 'metadata', clusterSize: 1024, refcountBits: 4, lazyRefcounts: true });
  out.push({ size: 64n * MiB, preallocation: 'metadata', clusterSize: 2097152, extendedL2: true });
  out.push({ size: 32n * MiB, preallocation: 'metadata', clusterSize: 16384, extendedL2: true, backingFile: rawBacking, backingFmt: 'raw' });
  // Refcount table growth without preallocation: an L1 table of 25 MiB with 512-byte clusters.
  out.push({ size: 100n * GiB, clusterSize: 512 });
  out.push({ size: 128n * GiB, clusterSize: 512, refcountBits: 1 });
  return out;
}

/** Combinations qemu-img refuses (docs/format/create.md#refusals), each with the message it must give. */
function invalid(): CreateOptions[] {
  return [
    { size: MiB, clusterSize: 1000 },
    { size: MiB, clusterSize: 256 },
    { size: MiB, clusterSize: 4194304 },
    { size: MiB, extendedL2: true, clusterSize: 4096 },
    { size: MiB, extendedL2: true, compat: '0.10', clusterSize: 1000 },
    { size: MiB, refcountBits: 3 },
    { size: MiB, refcountBits: 128 },
    { size: MiB, refcountBits: 8, compat: '0.10' },
    { size: MiB, lazyRefcounts: true, compat: '0.10' },
    { size: MiB, compressionType: 'zstd', compat: '0.10' },
    { size: MiB, dataFile: 'x', compat: '0.10' },
    { size: MiB, dataFileRaw: true },
    { size: MiB, dataFileRaw: true, dataFile: 'x', backingFile: rawBacking, backingFmt: 'raw' },
    { size: MiB, backingFile: rawBacking, backingFmt: 'raw', preallocation: 'metadata' },
    { size: MiB, backingFmt: 'raw' },
    { size: MiB, backingFile: rawBacking },
    { size: MiB, compat: '1.2' },
    { size: MiB, compressionType: 'lzo' },
    { size: MiB, preallocation: 'bogus' },
    { size: 200n * TiB, clusterSize: 512 },
    { size: 128n * GiB + 512n, clusterSize: 512 },
    { size: (1n << 61n) + 512n, clusterSize: 2097152 },
    { size: (1n << 63n) - 1024n },
    { size: 200n * TiB, clusterSize: 512, lazyRefcounts: true, compat: '0.10' },
  ];
}

describe('createImage matches qemu-img create byte for byte', QEMU, () => {
  it('on the option matrix (and qemu-img check accepts our bytes)', async () => {
    const problems: string[] = [];
    for (const o of matrix()) {
      const p = await compare(o);
      if (p !== '') problems.push(p);
    }
    expect(problems).toEqual([]);
  });

  it('on the combinations qemu-img refuses, with the same messages', async () => {
    const problems: string[] = [];
    for (const o of invalid()) {
      const m = modelOutcome(o);
      expect(m.ok, JSON.stringify(qemuOptions(o))).toBe(false);
      const p = await compare(o);
      if (p !== '') problems.push(p);
    }
    expect(problems).toEqual([]);
  });

  it('on option combinations drawn by fast-check', async () => {
    let valid = 0;
    const arbOptions = fc.record(
      {
        size: fc.oneof(fc.constantFrom(0n, 1n, 512n, MiB, 5n * MiB + 1n, 9n * MiB), fc.bigInt({ min: 0n, max: 12n * MiB })),
        // Mostly valid values, so that most draws compare bytes rather than messages.
        clusterSize: fc.oneof({ weight: 9, arbitrary: fc.constantFrom(512, 1024, 4096, 16384, 65536, 2097152) }, { weight: 1, arbitrary: fc.constant(1000) }),
        compat: fc.oneof({ weight: 4, arbitrary: fc.constantFrom('1.1', 'v3') }, { weight: 1, arbitrary: fc.constantFrom('0.10', 'v2') }),
        refcountBits: fc.oneof({ weight: 9, arbitrary: fc.constantFrom(1, 2, 4, 8, 16, 32, 64) }, { weight: 1, arbitrary: fc.constant(3) }),
        extendedL2: fc.boolean(),
        compressionType: fc.constantFrom('zlib', 'zstd'),
        lazyRefcounts: fc.boolean(),
        backing: fc.constantFrom<'none' | 'raw' | 'qcow2' | 'fmt-only'>('none', 'none', 'raw', 'qcow2', 'fmt-only'),
        dataFile: fc.boolean(),
        dataFileRaw: fc.oneof({ weight: 3, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
        preallocation: fc.constantFrom('off', 'metadata'),
      },
      { requiredKeys: ['size'] },
    );
    await fc.assert(
      fc.asyncProperty(arbOptions, async (a) => {
        const { backing, dataFile, ...rest } = a;
        const o: CreateOptions = {
          ...rest,
          ...(backing === 'raw' ? { backingFile: rawBacking, backingFmt: 'raw' } : {}),
          ...(backing === 'qcow2' ? { backingFile: qcowBacking, backingFmt: 'qcow2' } : {}),
          ...(backing === 'fmt-only' ? { backingFmt: 'raw' } : {}),
          ...(dataFile === true ? { dataFile: 'x' } : {}),
        };
        const p = await compare(o);
        if (p === '' && modelOutcome(o).ok) valid++;
        expect(p).toBe('');
      }),
      { numRuns: 120, seed: 20240607, endOnFailure: true },
    );
    // The draws must exercise image bytes, not only refusals.
    expect(valid).toBeGreaterThan(20);
  });
});

describe('createImage is pure', () => {
  it('gives equal bytes for equal options and does not touch its input', () => {
    const o: CreateOptions = Object.freeze({ size: 3n * MiB, clusterSize: 512, preallocation: 'metadata' });
    const a = hostBytes(createImage(o).image.file);
    const b = hostBytes(createImage(o).image.file);
    expect(firstDiff(a, b)).toBe(-1);
  });

  it('reports refused options as CreateError with a code', () => {
    expect(() => createImage({ size: MiB, clusterSize: 1000 })).toThrow(CreateError);
    try {
      createImage({ size: MiB, refcountBits: 3 });
    } catch (e) {
      expect((e as CreateError).code).toBe('refcount-width');
    }
  });
});
