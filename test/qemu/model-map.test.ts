/**
 * `mapImage` (src/model/block-status.ts) against `qemu-img map --output=json` of QEMU 7.2, in both directions:
 * - QEMU writes: qemu-io applies a random sequence of writes, zero writes (with and without unmap),
 *   discards and compressed writes to a `qemu-img create` image; our map of the loaded file must equal
 *   qemu-img's map of the same file, extent for extent;
 * - the model writes: the same sequence applied by `step` to the same created image; qemu-img's map of
 *   the stored file must equal our map of the model's image.
 * Configurations: cluster sizes 512 B – 2 MiB, compat 0.10 / 1.1, extended L2, no backing file, a raw
 * backing file (shorter or longer than the disk, odd lengths included) and a qcow2 backing file that
 * qemu-io wrote to (so extents come from depth 0, 1 and 2).
 */
import fc from 'fast-check';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { imageBackingSource, rawBackingSource } from '../../src/model/backing.ts';
import type { BackingSource, Image } from '../../src/model/image.ts';
import { loadImage, storeImage } from '../../src/model/load-store.ts';
import { mapImage, type HostAllocation, type MapExtent } from '../../src/model/block-status.ts';
import type { Op } from '../../src/model/ops.ts';
import { step } from '../../src/model/step.ts';
import { qemuImgCreate, qemuImgMap, qemuIo, toBigInt, type QemuMapExtent } from '../../src/qemu/qemu-img.ts';
import { requireQemu } from '../../src/qemu/run.ts';
import { probeHostAllocation } from '../support/host-allocation.ts';

type Backing = { kind: 'none' } | { kind: 'raw'; length: number } | { kind: 'qcow2'; length: number; rawBelow: boolean };

interface Config {
  clusterBits: number;
  compat: '0.10' | '1.1';
  extendedL2: boolean;
  size: number;
  backing: Backing;
}

interface MapOp {
  kind: 'write' | 'zero' | 'discard' | 'compress';
  offset: number;
  length: number;
  pattern: number;
  unmap: boolean;
}

const MiB = 1024 * 1024;

const configArb: fc.Arbitrary<Config> = fc
  .record({
    clusterBits: fc.oneof(fc.constantFrom(9, 12, 16, 21), fc.integer({ min: 9, max: 21 })),
    compat: fc.constantFrom<'0.10' | '1.1'>('0.10', '1.1', '1.1'),
    extendedL2: fc.boolean(),
    sizeMiB: fc.constantFrom(1, 4),
    backing: fc.oneof(
      fc.constant<Backing>({ kind: 'none' }),
      fc.record({ kind: fc.constant('raw' as const), length: fc.oneof(fc.integer({ min: 1, max: 6 * MiB }), fc.constantFrom(MiB, 2 * MiB, 512 * 3)) }),
      fc.record({ kind: fc.constant('qcow2' as const), length: fc.constantFrom(MiB / 2, MiB, 3 * MiB, 8 * MiB), rawBelow: fc.boolean() }),
    ),
  })
  .map((c) => ({
    clusterBits: c.clusterBits,
    compat: c.compat,
    extendedL2: c.compat === '1.1' && c.clusterBits >= 14 && c.extendedL2,
    size: c.sizeMiB * MiB,
    backing: c.backing,
  }));

function opsArb(size: number, clusterBits: number, kinds: readonly MapOp['kind'][]): fc.Arbitrary<MapOp[]> {
  const cs = 1 << clusterBits;
  return fc.array(
    fc.record({
      start: fc.oneof(
        fc.integer({ min: 0, max: Math.ceil(size / cs) - 1 }).map((c) => c * cs),
        fc.integer({ min: 0, max: size / 512 - 1 }).map((s) => s * 512),
        fc.integer({ min: 0, max: size - 1 }),
      ),
      length: fc.oneof(fc.integer({ min: 1, max: 4096 }), fc.integer({ min: 1, max: 3 * cs }), fc.constant(cs), fc.integer({ min: 1, max: 600_000 })),
      pattern: fc.integer({ min: 0, max: 255 }),
      kind: fc.constantFrom(...kinds),
      unmap: fc.boolean(),
    }).map(({ start, length, pattern, kind, unmap }): MapOp => {
      if (kind === 'compress') {
        // One whole cluster (QEMU places the clusters of a multi-cluster compressed write in
        // completion order, docs/layout-differences.md).
        const offset = Math.floor(start / cs) * cs;
        return { kind, offset, length: Math.min(cs, size - offset), pattern, unmap };
      }
      return { kind, offset: start, length: Math.max(1, Math.min(length, size - start)), pattern, unmap };
    }),
    { minLength: 0, maxLength: 16 },
  ).map((ops) => {
    // QEMU refuses a compressed write to an allocated cluster; keep compressed writes only on
    // clusters no earlier op touched (the refusal itself is tested in test/model-compress.test.ts).
    const touched = new Set<number>();
    return ops.filter((o) => {
      const first = Math.floor(o.offset / cs);
      const last = Math.floor((o.offset + o.length - 1) / cs);
      const keep = o.kind !== 'compress' || !touched.has(first);
      if (keep) for (let c = first; c <= last; c++) touched.add(c);
      return keep;
    });
  });
}

function qemuCommand(o: MapOp): string {
  switch (o.kind) {
    case 'write': return `write -q -P ${o.pattern} ${o.offset} ${o.length}`;
    case 'zero': return `write -q -z${o.unmap ? ' -u' : ''} ${o.offset} ${o.length}`;
    case 'discard': return `discard -q ${o.offset} ${o.length}`;
    case 'compress': return `write -q -c -P ${o.pattern} ${o.offset} ${o.length}`;
  }
}

function modelOp(o: MapOp): Op {
  switch (o.kind) {
    case 'write': return { kind: 'write', offset: BigInt(o.offset), data: new Uint8Array(o.length).fill(o.pattern) };
    case 'zero': return { kind: 'writeZeroes', offset: BigInt(o.offset), length: BigInt(o.length), unmap: o.unmap };
    case 'discard': return { kind: 'discard', offset: BigInt(o.offset), length: BigInt(o.length) };
    case 'compress': return { kind: 'writeCompressed', offset: BigInt(o.offset), data: new Uint8Array(o.length).fill(o.pattern) };
  }
}

/** QEMU's extents in the model's shape (exact integers; `offset` only when QEMU printed one). */
function fromQemu(e: QemuMapExtent): MapExtent {
  return {
    start: toBigInt(e.start),
    length: toBigInt(e.length),
    depth: e.depth,
    present: e.present,
    zero: e.zero,
    data: e.data,
    ...(e.offset !== undefined ? { offset: toBigInt(e.offset) } : {}),
  };
}

/** Deterministic bytes with no zero runs (so the raw file has no holes and no zero pages). */
function rawBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out[i] = 1 + (x % 255);
  }
  return out;
}

const dir = mkdtempSync(join(tmpdir(), 'qcow2-ref-map-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let run = 0;

/** Builds the backing chain of `cfg` on disk (with qemu-img/qemu-io) and as a model BackingSource. */
/**
 * A backing chain: its top file, and the model's BackingSource for it given the top file's current
 * host allocation (a qcow2 backing file's map depends on it, see src/model/block-status.ts).
 */
interface BackingChain {
  readonly path?: string;
  readonly fmt?: string;
  /** The files whose allocation the map depends on. */
  readonly probed: readonly string[];
  source(hosts: readonly HostAllocation[]): BackingSource | undefined;
}

async function makeBacking(cfg: Config, id: number, backingOps: readonly MapOp[]): Promise<BackingChain> {
  const b = cfg.backing;
  if (b.kind === 'none') return { probed: [], source: () => undefined };
  if (b.kind === 'raw') {
    const path = join(dir, `raw-${id}.img`);
    const bytes = rawBytes(b.length, id + 1);
    writeFileSync(path, bytes);
    // Written in full: no holes, so its map needs no probing.
    const source = rawBackingSource(bytes);
    return { path, fmt: 'raw', probed: [], source: () => source };
  }
  // A qcow2 backing file with 64 KiB clusters, written by qemu-io, optionally over a raw file.
  const path = join(dir, `base-${id}.qcow2`);
  let below: BackingSource | undefined;
  const opts: Record<string, string> = { cluster_size: '65536' };
  if (b.rawBelow) {
    const rawPath = join(dir, `base-raw-${id}.img`);
    const bytes = rawBytes(b.length / 2, id + 7);
    writeFileSync(rawPath, bytes);
    below = rawBackingSource(bytes);
    Object.assign(opts, { backing_file: rawPath, backing_fmt: 'raw' });
  }
  await qemuImgCreate(path, b.length, opts);
  if (backingOps.length > 0) await qemuIo(path, backingOps.map(qemuCommand));
  const img = loadImage(new Uint8Array(readFileSync(path)), below !== undefined ? { backing: below } : {});
  return { path, fmt: 'qcow2', probed: [path], source: (hosts) => imageBackingSource(img, { host: hosts[0]! }) };
}

/**
 * qemu-img's map of `path` and the file's allocation at the same moment. ext4 reports an unwritten
 * (fallocated) extent as a hole while its pages are dirty and as data once written back, so the
 * allocation is probed before and after the map and the pair is retried until both probes agree.
 */
async function qemuMapWithAllocation(path: string, others: readonly string[]): Promise<{ map: MapExtent[]; hosts: HostAllocation[] }> {
  const key = (h: HostAllocation[]): string => JSON.stringify(h, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v));
  for (let attempt = 0; ; attempt++) {
    const before = [path, ...others].map(probeHostAllocation);
    const map = (await qemuImgMap(path)).map(fromQemu);
    const after = [path, ...others].map(probeHostAllocation);
    if (key(before) === key(after)) return { map, hosts: after };
    if (attempt >= 5) throw new Error(`${path}: the allocation of the files kept changing while qemu-img map ran`);
  }
}

async function checkBothDirections(cfg: Config, ops: readonly MapOp[], backingOps: readonly MapOp[]): Promise<void> {
  const id = run++;
  const backing = await makeBacking(cfg, id, backingOps);
  const created = join(dir, `created-${id}.qcow2`);
  await qemuImgCreate(created, cfg.size, {
    cluster_size: String(1 << cfg.clusterBits),
    compat: cfg.compat,
    ...(cfg.extendedL2 ? { extended_l2: 'on' } : {}),
    ...(backing.path !== undefined ? { backing_file: backing.path, backing_fmt: backing.fmt! } : {}),
  });
  const base = new Uint8Array(readFileSync(created));
  const loadOpts = (hosts: readonly HostAllocation[]): { backing?: BackingSource } => {
    const source = backing.source(hosts);
    return source !== undefined ? { backing: source } : {};
  };

  // QEMU writes; we map its file.
  const theirs = join(dir, `qemu-${id}.qcow2`);
  writeFileSync(theirs, base);
  if (ops.length > 0) await qemuIo(theirs, ops.map(qemuCommand));
  const q1 = await qemuMapWithAllocation(theirs, backing.probed);
  const theirImage = loadImage(new Uint8Array(readFileSync(theirs)), loadOpts(q1.hosts.slice(1)));
  expect(mapImage(theirImage, 0n, undefined, { host: q1.hosts[0]! }), 'our map of the image QEMU wrote').toEqual(q1.map);

  // The model writes; QEMU maps its file.
  let img: Image = loadImage(base, loadOpts(q1.hosts.slice(1)));
  for (const o of ops) {
    const r = step(img, modelOp(o));
    expect(r.ok, `model refused ${o.kind}: ${r.ok ? '' : r.error.message}`).toBe(true);
    img = r.image;
  }
  const ours = join(dir, `ours-${id}.qcow2`);
  writeFileSync(ours, storeImage(img));
  const q2 = await qemuMapWithAllocation(ours, backing.probed);
  // Our file is written in full (no holes), so QEMU never detects metadata preallocation in it; its
  // backing file's allocation still matters for the extents that come from the backing file.
  const ourImage = loadImage(storeImage(img), loadOpts(q2.hosts.slice(1)));
  expect(mapImage(ourImage), 'our map of the image the model wrote').toEqual(q2.map);
  expect(mapImage(ourImage, 0n, undefined, { host: q2.hosts[0]! }), 'the same, told the real allocation').toEqual(q2.map);
}

describe('mapImage equals qemu-img map --output=json', () => {
  it('qemu-img is installed', async () => {
    await requireQemu();
  });

  it('an empty image without backing is one unallocated zero extent', async () => {
    await checkBothDirections({ clusterBits: 16, compat: '1.1', extendedL2: false, size: 4 * MiB, backing: { kind: 'none' } }, [], []);
    const path = join(dir, 'empty.qcow2');
    await qemuImgCreate(path, 4 * MiB, {});
    expect(mapImage(loadImage(new Uint8Array(readFileSync(path))))).toEqual([
      { start: 0n, length: BigInt(4 * MiB), depth: 0, present: false, zero: true, data: false },
    ]);
  });

  it('random write/zero/discard/compress sequences, both directions, every configuration class', async () => {
    await fc.assert(
      fc.asyncProperty(
        configArb.chain((cfg) => fc.tuple(
          fc.constant(cfg),
          opsArb(cfg.size, cfg.clusterBits, ['write', 'write', 'zero', 'discard', 'compress']),
          cfg.backing.kind === 'qcow2' ? opsArb(cfg.backing.length, 16, ['write', 'zero', 'discard', 'compress']) : fc.constant([] as MapOp[]),
        )),
        async ([cfg, ops, backingOps]) => checkBothDirections(cfg, ops, backingOps),
      ),
      { numRuns: 60 },
    );
  }, 600_000);
});
