/**
 * The corruption catalog (src/corrupt/catalog.ts) does what it says, checked against QEMU: every
 * corruption applied to images made by qemu-img/qemu-io (v3 and v2 with snapshots and compressed
 * clusters, extended L2, small clusters with 4-bit refcounts) makes `qemu-img check` print the
 * finding QEMU 7.2 prints for that inconsistency (messages from docs/format/check.md and docs/format/iotests.md, not
 * from our check); its pokes account for every changed byte with the right old values; it is pure and
 * deterministic; and it says 'not applicable' exactly when the image lacks what it needs.
 * Needs qemu-img and qemu-io (fails loudly without them).
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CORRUPTIONS, corrupt, type AppliedCorruption, type CorruptionName } from '../../src/corrupt/catalog.ts';
import { layoutOf, readField, writeField } from '../../src/corrupt/layout.ts';
import { seededRng } from '../../src/corrupt/rng.ts';
import { qemuImgCheck, qemuImgCreate, qemuImgInfo, qemuImgSnapshot, qemuIo } from '../../src/qemu/qemu-img.ts';
import { runTool, requireQemu } from '../../src/qemu/run.ts';

interface Seed {
  readonly name: string;
  readonly bytes: Uint8Array;
}

let dir = '';
const seeds: Seed[] = [];

/**
 * qemu-img create, qemu-io writes (plain and compressed), then a snapshot followed by more writes
 * (`afterSnapshot`), or a snapshot as the last thing written ('last', so its table ends the file), or
 * no snapshot ('none').
 */
async function make(name: string, size: string, options: Record<string, string>, io: string[], afterSnapshot: string[] | 'last' | 'none'): Promise<void> {
  const path = join(dir, `${name}.qcow2`);
  await qemuImgCreate(path, size, options);
  if (io.length > 0) await qemuIo(path, io);
  if (afterSnapshot !== 'none') await qemuImgSnapshot(path, 'create', 's1');
  if (Array.isArray(afterSnapshot)) await qemuIo(path, afterSnapshot);
  seeds.push({ name, bytes: new Uint8Array(await readFile(path)) });
}

beforeAll(async () => {
  await requireQemu();
  dir = await mkdtemp(join(tmpdir(), 'qcow2-ref-catalog-'));
  await make('v3-64k', '64M', {}, ['write -P 1 0 192k', 'write -c -P 2 1M 64k', 'write -z 2M 64k'], ['write -P 3 64k 4k']);
  await make('v2-64k', '64M', { compat: '0.10' }, ['write -P 1 0 192k', 'write -c -P 2 1M 64k'], ['write -P 3 64k 4k']);
  await make('v3-extl2-32k', '64M', { cluster_size: '32768', extended_l2: 'on' }, ['write -P 1 0 40k', 'write -P 5 100k 2k', 'write -c -P 2 1M 32k', 'write -z 2M 1k'], ['write -P 3 4k 1k']);
  await make('fresh', '1G', {}, [], 'none');
  await make('snapshot-last', '16M', {}, ['write -P 1 0 64k'], 'last');
  await make('v3-4k-refcount4', '16M', { cluster_size: '4096', refcount_bits: '4' }, ['write -P 1 0 20k', 'write -c -P 2 64k 4k', 'write -P 4 8M 4k'], ['write -P 3 4k 512']);
}, 120_000);

afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

/**
 * What `qemu-img check` prints for each corruption (QEMU 7.2 messages, docs/format/check.md, docs/format/iotests.md), as a
 * function of what was poked: a pattern its stderr must match, or 'clean' where QEMU's check does
 * not see the inconsistency.
 */
function expectedFinding(c: AppliedCorruption, fileClusters: bigint): RegExp | 'clean' {
  const cluster = (): bigint => BigInt(/refcount of cluster (\d+)/.exec(c.pokes[0]!.field)![1]!);
  const table: Record<CorruptionName, () => RegExp | 'clean'> = {
    'refcount-too-low': () => new RegExp(`ERROR cluster ${cluster()} refcount=${c.pokes[0]!.new} reference=`),
    // Refcounts of clusters past the end of the file are invisible to check (docs/format/surprises.md#28-refcounts-past-the-end-of-the-file).
    'refcount-too-high': () => (cluster() < fileClusters ? new RegExp(`Leaked cluster ${cluster()} refcount=${c.pokes[0]!.new} reference=`) : 'clean'),
    'refcount-zero': () => new RegExp(`ERROR cluster ${cluster()} refcount=0 reference=`),
    'l2-into-metadata': () => /ERROR/,
    'data-into-metadata': () => /ERROR cluster \d+ refcount=\d+ reference=\d+/,
    'unaligned-l1-entry': () => /ERROR l2_offset=[0-9a-f]+: Table is not cluster aligned; L1 entry corrupted/,
    'unaligned-l2-entry': () => /ERROR offset=[0-9a-f]+: (Data|Preallocated) cluster is not properly aligned; L2 entry corrupted\./,
    'unaligned-refblock-entry': () => /ERROR refcount block \d+ is not cluster aligned; refcount table entry corrupted/,
    'reserved-bits-l1': () => /ERROR found L1 entry with reserved bits set/,
    'reserved-bits-l2': () => /ERROR found l2 entry with reserved bits set/,
    'reserved-bits-reftable': () => /ERROR refcount table entry \d+ has reserved bits set/,
    'compressed-copied': () => /copied flag must never be set for compressed clusters/,
    // check does not flag the zero flag of a v2 image (docs/format/mapping.md#cluster-types); a read does (below).
    'v2-zero-flag': () => 'clean',
    'compressed-nonzero-bitmap': () => /ERROR compressed cluster \d+ with non-zero subcluster allocation bitmap/,
    'alloc-and-zero-subcluster': () => /Allocated cluster has corrupted subcluster allocation bitmap/,
    'alloc-bits-on-unallocated': () => /Unallocated cluster has non-zero subcluster allocation map/,
    'l1-entry-past-eof': () => /counting reference for region exceeding the end of the file by one cluster or more/,
    'l2-entry-past-eof': () => /counting reference for region exceeding the end of the file by one cluster or more/,
    'refblock-past-eof': () => /ERROR refcount block \d+ is outside image/,
    'snapshot-l1-unaligned': () => /L1 table is not cluster aligned; snapshot table entry corrupted/,
    'snapshot-l1-too-large': () => /L1 table is too large; snapshot table entry corrupted/,
    'snapshot-l1-past-eof': () => /Leaked cluster|exceeding the end of the file/,
    'snapshot-extra-data-short': () => /ERROR snapshot table entry \d+ is incomplete/,
    'snapshot-extra-data-too-large': () => /Too much extra metadata in snapshot table entry \d+/,
    'dirty-stale-refcounts': () => /ERROR cluster \d+ refcount=0 reference=/,
  };
  return table[c.name]();
}

describe('corruption catalog', () => {
  it('every corruption makes qemu-img check report what QEMU reports for it', async () => {
    const applied = new Map<CorruptionName, number>();
    const path = join(dir, 'corrupted.qcow2');
    for (const seed of seeds) {
      const layout = layoutOf(seed.bytes);
      const fileClusters = (layout.fileLength + layout.clusterSize - 1n) / layout.clusterSize;
      for (const k of CORRUPTIONS) {
        for (const s of [1, 2]) {
          const r = corrupt(layout, k.name, seededRng(s));
          if (r.kind === 'not-applicable') continue;
          applied.set(k.name, (applied.get(k.name) ?? 0) + 1);
          await writeFile(path, r.bytes);
          const q = await qemuImgCheck(path);
          const want = expectedFinding(r, fileClusters);
          const what = `${seed.name} ${r.description}`;
          if (want === 'clean') expect(q.code, `${what}: ${q.stderr}`).toBe(0);
          else {
            expect(q.code, `${what}: ${q.stderr}`).not.toBe(0);
            expect(q.stderr, what).toMatch(want);
          }
        }
      }
    }
    // Each corruption applied somewhere in the seed set.
    expect([...applied.keys()].sort()).toEqual(CORRUPTIONS.map((c) => c.name).sort());
    // The snapshot table that ends the file grew into its cluster.
    const last = corrupt(seeds.find((x) => x.name === 'snapshot-last')!.bytes, 'snapshot-extra-data-too-large', seededRng(1));
    expect(last.kind === 'applied' && last.grewTo !== undefined).toBe(true);
  }, 120_000);

  it('a v2 zero flag, unseen by check, makes the read of its cluster fail in QEMU', async () => {
    const v2 = seeds.find((s) => s.name === 'v2-64k')!;
    const r = corrupt(v2.bytes, 'v2-zero-flag', seededRng(7));
    expect(r.kind).toBe('applied');
    if (r.kind !== 'applied') return;
    const path = join(dir, 'v2-zero.qcow2');
    await writeFile(path, r.bytes);
    const a = r.affected[0]!;
    const res = await runTool('qemu-io', ['-f', 'qcow2', '-c', `read ${a.offset} ${a.length}`, path]);
    expect(`${res.stdout}${res.stderr}`).toMatch(/Zero cluster entry found in pre-v3 image/);
  });

  it('the dirty corruption sets the dirty bit qemu-img info reports', async () => {
    const r = corrupt(seeds[0]!.bytes, 'dirty-stale-refcounts', seededRng(3));
    expect(r.kind).toBe('applied');
    if (r.kind !== 'applied') return;
    const path = join(dir, 'dirty.qcow2');
    await writeFile(path, r.bytes);
    expect((await qemuImgInfo(path))['dirty-flag']).toBe(true);
  });

  it('pokes account for every changed byte, with the old values; the input is untouched; same seed, same result', () => {
    for (const seed of seeds) {
      const before = seed.bytes.slice();
      for (const k of CORRUPTIONS) {
        const r = corrupt(seed.bytes, k.name, seededRng(11));
        const again = corrupt(seed.bytes, k.name, seededRng(11));
        expect(again.kind).toBe(r.kind);
        if (r.kind === 'not-applicable' || again.kind === 'not-applicable') continue;
        expect(Buffer.from(again.bytes).equals(Buffer.from(r.bytes))).toBe(true);
        expect(again.pokes).toEqual(r.pokes);
        expect(again.description).toBe(r.description);
        expect(r.pokes.length).toBeGreaterThan(0);
        let replay = seed.bytes.slice();
        if (r.grewTo !== undefined) {
          expect(r.grewTo).toBeGreaterThan(BigInt(seed.bytes.length));
          replay = new Uint8Array(Number(r.grewTo));
          replay.set(seed.bytes);
        }
        for (const p of r.pokes) {
          expect(readField(replay, p.offset, p.bits, p.shift), `${k.name} ${p.structure} ${p.field}`).toBe(p.old);
          expect(p.new).not.toBe(p.old);
          writeField(replay, p.offset, p.bits, p.new, p.shift);
        }
        expect(Buffer.from(replay).equals(Buffer.from(r.bytes)), k.name).toBe(true);
      }
      expect(Buffer.from(seed.bytes).equals(Buffer.from(before))).toBe(true);
    }
  });

  it('says not applicable when the image lacks what the corruption needs', () => {
    const v3 = seeds.find((s) => s.name === 'v3-64k')!.bytes;
    const v2 = seeds.find((s) => s.name === 'v2-64k')!.bytes;
    expect(corrupt(v3, 'v2-zero-flag', seededRng(1)).kind).toBe('not-applicable');
    expect(corrupt(v2, 'dirty-stale-refcounts', seededRng(1)).kind).toBe('not-applicable');
    expect(corrupt(v2, 'snapshot-extra-data-short', seededRng(1)).kind).toBe('not-applicable');
    for (const n of ['compressed-nonzero-bitmap', 'alloc-and-zero-subcluster', 'alloc-bits-on-unallocated'] as const) {
      expect(corrupt(v3, n, seededRng(1)).kind).toBe('not-applicable');
    }
    // A fresh image: no snapshot, no L2 table, no compressed or shared cluster.
    const fresh = seeds.find((s) => s.name === 'fresh')!.bytes;
    for (const n of ['refcount-too-low', 'unaligned-l1-entry', 'unaligned-l2-entry', 'compressed-copied', 'snapshot-l1-unaligned', 'snapshot-extra-data-too-large'] as const) {
      expect(corrupt(fresh, n, seededRng(1)).kind, n).toBe('not-applicable');
    }
    for (const n of ['refcount-zero', 'refcount-too-high', 'l2-into-metadata', 'reserved-bits-l1', 'l1-entry-past-eof', 'refblock-past-eof', 'dirty-stale-refcounts'] as const) {
      expect(corrupt(fresh, n, seededRng(1)).kind, n).toBe('applied');
    }
  });

  it('the affected ranges hold the guest clusters whose mapping was poked', () => {
    const seed = seeds.find((s) => s.name === 'v3-64k')!;
    for (let s = 0; s < 8; s++) {
      const r = corrupt(seed.bytes, 'reserved-bits-l2', seededRng(s));
      if (r.kind !== 'applied') throw new Error(r.reason);
      const guest = BigInt(/guest (0x[0-9a-f]+)/.exec(r.pokes[0]!.field)![1]!);
      expect(r.affected.some((a) => a.offset <= guest && guest < a.offset + a.length)).toBe(true);
    }
    for (const name of ['refcount-zero', 'refcount-too-high', 'snapshot-l1-unaligned'] as const) {
      const r = corrupt(seed.bytes, name, seededRng(5));
      expect(r.kind === 'applied' && r.affected.length === 0).toBe(true);
    }
  });
});
