/**
 * Model-based property (fc.commands, size 'max'): the qcow2 model (`step` on an immutable Image) against
 * the flat raw-disk oracle, over every configuration class the model supports today:
 * - cluster_bits 9..21 (small ones weighted), refcount_bits 1..64, compat 0.10 and 1.1, extended L2
 *   where allowed, compression_type zlib/zstd, virtual sizes from tiny to 1 TiB (sparse);
 * - preallocation=metadata on small disks;
 * - a raw backing file (shorter, equal or longer than the disk; with extended L2 also preallocated);
 * - qcow2 backing chains built by the model itself: 1 to 3 images below the overlay (qcow2 over qcow2
 *   over raw and the other mixes), each shorter, equal or longer than the image above, with its own
 *   geometry (v2/v3, extended L2) and history (writes, zeroes, discards, compressed writes, snapshot
 *   create/apply/delete); the overlay reads them through the model's read path, and the oracle's
 *   backing content is computed from the same history with RawDisk alone;
 * - an external data file, plain or data_file_raw (v3; plain ones also preallocated and over raw or
 *   qcow2 backing files; some with lazy refcounts): data, COW and zeroes go to the data file, whose
 *   io must replay; compressed writes and internal snapshots must be refused as QEMU 7.2 refuses them;
 * - lazy_refcounts=on (v3, any geometry, backing files, preallocation, snapshots): the dirty bit after
 *   the first write that links new clusters and never otherwise, then a clean close (closeImage) that
 *   clears it, keeps every read and leaves an image checkInvariants finds sound, and reloads: the
 *   closed image takes writes, the unclosed dirty one is refused with 'dirty'.
 * Commands: Write (any alignment and length, weighted to cluster and subcluster boundaries and to a few
 * hot clusters so later ops overwrite earlier ones), WriteZeroes (unmap or not), Discard, Flush,
 * ReadRandom, WriteCompressed (whole clusters, zlib or zstd; a target already allocated must be
 * refused without change), snapshot create/apply/delete (an apply to a snapshot of another size
 * resizes first, as QEMU 7.2 does), Resize (grow and shrink, to sizes aligned or not to the cluster
 * size, L1 growth past one cluster, shrinks that drop refcount blocks, and QEMU's refusals, which must
 * change no read), and out-of-range Write/WriteZeroes/Discard that must be refused with 'out-of-range'
 * and change nothing. Commands are generated up front against the initial size and placed on the
 * current disk when they run (`place` in the support file). What is checked after each command and at
 * the end of a run is described in test/support/model-commands.ts. Ops and configurations the
 * model refuses as 'unsupported' are not generated: see NOT_YET_MODELLED_OPS and
 * NOT_YET_MODELLED_CONFIGS (both empty now) and NOT_YET_MODELLED_OPS_BY_CONFIG (resizes of data-file
 * images) there.
 *
 * Runs: QCOW2_COMMANDS_RUNS=<n> runs n sequences per configuration class (default: CONFIG_CLASSES in
 * the support file, 420 in all, sized for `npm test` on 2 cores; `npm run fuzz` runs them open-ended).
 * With the default counts each class also checks that its runs met the resize cases it should (see
 * PER_CLASS_COVERAGE, CLASS_COVERAGE for the data-file and lazy-refcounts cases, and TOTAL_COVERAGE
 * over all classes). On failure fast-check prints seed, path and the
 * shrunk command list (each command prints itself) with its replayPath; replay with
 * `fc.assert(commandsProperty(configArb(cls), modelStep, { maxCommands, compressed: true, replayPath }),
 * { seed, path, endOnFailure: true })`.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeHeader } from '../../generated/qcow2.ts';
import { createImage } from '../../src/model/create.ts';
import { headerStateFrom } from '../../src/model/header.ts';
import { applyHostIO, readHost } from '../../src/model/host-file.ts';
import { type HostIO } from '../../src/model/host-io.ts';
import type { BackingSource, Image } from '../../src/model/image.ts';
import type { Op } from '../../src/model/ops.ts';
import { readGuest } from '../../src/model/read.ts';
import { step, type StepResult } from '../../src/model/step.ts';
import { RawDisk } from '../../src/oracle/raw-disk.ts';
import {
  backingOps,
  backingOracle,
  commandsProperty,
  CONFIG_CLASSES,
  configArb,
  DiscardCmd,
  geoOf,
  modelStep,
  NOT_YET_MODELLED_CONFIGS,
  NOT_YET_MODELLED_OPS,
  NOT_YET_MODELLED_OPS_BY_CONFIG,
  place,
  ReadRandomCmd,
  ResizeCmd,
  runArb,
  runSequence,
  SnapshotCmd,
  WriteCmd,
  WriteCompressedCmd,
  WriteZeroesCmd,
  type BackingSpec,
  type Cmd,
  type Config,
  type ConfigClass,
  type StepFn,
} from '../support/model-commands.ts';

const envRuns = process.env['QCOW2_COMMANDS_RUNS'];
const runs = (dflt: number): number => (envRuns !== undefined && envRuns !== '' ? Number(envRuns) : dflt);

/** Compressed writes (zlib or zstd, as the configuration says) are generated unless QCOW2_COMMANDS_COMPRESSED=0. */
const COMPRESSED_WRITES_IN_PROPERTY = process.env['QCOW2_COMMANDS_COMPRESSED'] !== '0';

/**
 * What the default runs must meet at least (Real.stats, counted by the commands), per class and over
 * all classes together: low enough to hold for any seed, so that a generator that stops producing one
 * of these cases fails the test.
 */
const PER_CLASS_COVERAGE: Record<string, number> = {
  'resize grow': 20,
  'resize shrink': 20,
  'resize grow to a size not cluster aligned': 5,
  'resize shrink to a size not cluster aligned': 5,
  'resize grow from a partial last cluster': 5,
};
/** Classes without resizes (the model does not resize data-file images yet: NOT_YET_MODELLED_OPS_BY_CONFIG). */
const NO_RESIZE_CLASSES: readonly ConfigClass[] = ['data-file'];
/** What the default runs of one class must meet besides PER_CLASS_COVERAGE (Real.stats keys). */
const CLASS_COVERAGE: Partial<Record<ConfigClass, Record<string, number>>> = {
  'data-file': {
    'data file: COW into a new cluster': 20,
    'data file: COW into a new cluster over a backing file': 10,
    'data file: write into unallocated subclusters': 3,
    'data file (plain): zero over a data cluster': 5,
    'data file (plain): zero, unmap over a data cluster': 5,
    'data file (plain): discard over a data cluster': 5,
    'data file (raw): zero over a data cluster': 5,
    'data file (raw): zero, unmap over a data cluster': 5,
    'data file (raw): discard over a data cluster': 5,
    'refused unchanged: data file: compressed write': 10,
    'refused unchanged: data file: snapshot create': 10,
    'refused unchanged: data file: snapshot apply': 3,
    'refused unchanged: data file: snapshot delete': 3,
    'lazy: write set the dirty bit': 2,
    'lazy: dirty at the end, with a data file': 2,
  },
  'lazy-refcounts': {
    'lazy: write set the dirty bit': 10,
    'lazy: in-place write on a clean image': 3,
    'lazy: allocating write with snapshots': 10,
    'lazy: dirty at the end of a run': 10,
    'lazy: dirty at the end, with a backing file': 3,
    'lazy: clean at the end of a run': 1,
  },
};
const TOTAL_COVERAGE: Record<string, number> = {
  'resize grows the L1 table past one cluster': 10,
  'resize drops refcount blocks': 2,
  'resize grow zero-fills over the backing file': 10,
  'resize refused: size not positive': 10,
  'resize refused: past the maximum': 5,
  'resize refused: not a multiple of 512': 10,
  'resize refused: L1 over 32 MiB': 10,
  'resize refused: v2 with snapshots': 10,
  'resize refused: zero-fill impossible': 1,
  'snapshot apply grows the disk': 5,
  'snapshot apply shrinks the disk': 5,
  'compressed write (zstd)': 50,
  'compressed write (zlib)': 50,
};

describe('model vs raw-disk oracle: fc.commands over every supported configuration', () => {
  const totals = new Map<string, number>();
  const reports: string[] = [];
  let classesPassed = 0;
  it('every class runs sequences of up to 100 commands, at least 200 sequences in all by default', () => {
    for (const c of CONFIG_CLASSES) expect(c.maxCommands, c.cls).toBe(100);
    expect(CONFIG_CLASSES.reduce((n, c) => n + c.numRuns, 0)).toBeGreaterThanOrEqual(200);
    expect(new Set(CONFIG_CLASSES.map((c) => c.cls)).size).toBe(CONFIG_CLASSES.length);
    // Data files and lazy refcounts are classes of their own, 30-40 sequences each.
    for (const cls of ['data-file', 'lazy-refcounts'] as const) {
      const c = CONFIG_CLASSES.find((x) => x.cls === cls);
      expect(c?.numRuns, cls).toBeGreaterThanOrEqual(30);
      expect(c?.numRuns, cls).toBeLessThanOrEqual(40);
    }
  });

  for (const c of CONFIG_CLASSES) {
    it(`${c.title} (${runs(c.numRuns)} runs)`, () => {
      const stats = new Map<string, number>();
      const onRun = ({ stats: s }: { stats: ReadonlyMap<string, number> }): void => {
        for (const [k, n] of s) stats.set(k, (stats.get(k) ?? 0) + n);
      };
      fc.assert(commandsProperty(configArb(c.cls), modelStep, { maxCommands: c.maxCommands, compressed: COMPRESSED_WRITES_IN_PROPERTY, onRun }), { numRuns: runs(c.numRuns), includeErrorInReport: true });
      const report = [...stats.entries()].sort().map(([k, n]) => `${k}: ${n}`).join('\n');
      if (process.env['QCOW2_COVERAGE_REPORT'] === '1') console.log(`${c.cls}\n${report}`);
      if (runs(c.numRuns) < c.numRuns || !COMPRESSED_WRITES_IN_PROPERTY) return;
      const wanted = { ...(NO_RESIZE_CLASSES.includes(c.cls) ? {} : PER_CLASS_COVERAGE), ...CLASS_COVERAGE[c.cls] };
      for (const [k, n] of Object.entries(wanted)) {
        expect(stats.get(k) ?? 0, `${c.cls}: ${k} (of ${runs(c.numRuns)} runs)\n${report}`).toBeGreaterThanOrEqual(n);
      }
      for (const [k, n] of stats) totals.set(k, (totals.get(k) ?? 0) + n);
      reports.push(`${c.cls}:\n${report}`);
      classesPassed++;
    }, 600_000);
  }

  it('the default runs of all classes together meet every resize, snapshot-apply and compression case', (ctx) => {
    // Only meaningful after every class ran with its default count (not with -t or QCOW2_COMMANDS_RUNS).
    if (classesPassed < CONFIG_CLASSES.length) ctx.skip();
    for (const [k, n] of Object.entries(TOTAL_COVERAGE)) expect(totals.get(k) ?? 0, `${k}\n${reports.join('\n')}`).toBeGreaterThanOrEqual(n);
  });

  // Regression (seed -673974742): the compressed-byte cursor (session.freeByteOffset) pointed into a
  // host cluster freed by a COW and reused as an L2 table, and the model packed the next blob into
  // that table. QEMU 7.2 has the same stale cursor (its overlap check then marks the image corrupt;
  // with a reused data cluster it silently corrupts guest data — test/qemu/model-write-vs-qemu.test.ts
  // records both). The model starts a new cluster instead and counts the deviation.
  it('regression: a stale compressed cursor in a freed and reused cluster is not used', () => {
    let img = createImage({ size: 1n << 20n, clusterSize: 2048, refcountBits: 2 }).image;
    const ops: Op[] = [
      { kind: 'writeCompressed', offset: 0n, data: new Uint8Array(2048).fill(1) },
      { kind: 'write', offset: 0n, data: new Uint8Array(512).fill(5) },
      { kind: 'writeCompressed', offset: 524288n, data: new Uint8Array(2048).fill(1) },
    ];
    for (const op of ops) {
      const r = step(img, op);
      expect(r.ok).toBe(true);
      img = r.image;
    }
    expect(img.session.staleCursorAvoided).toBe(1);
    expect(img.header.incompatibleFeatures & 2n).toBe(0n);
    expect(readGuest(img, 524288n, 2048).every((b) => b === 1)).toBe(true);
    expect(readGuest(img, 0n, 512).every((b) => b === 5)).toBe(true);
  });

  it('not-yet-modelled ops and configurations are really refused as unsupported (so they are not generated)', () => {
    // When one of these starts to succeed, the model supports it: add its command / configuration
    // to test/support/model-commands.ts and remove it from the not-yet list.
    const image = createImage({ size: 1n << 20n }).image;
    const ops: Record<(typeof NOT_YET_MODELLED_OPS)[number], Op> = {
      write: { kind: 'write', offset: 0n, data: new Uint8Array(1) },
      writeZeroes: { kind: 'writeZeroes', offset: 0n, length: 1n, unmap: false },
      discard: { kind: 'discard', offset: 0n, length: 1n },
      writeCompressed: { kind: 'writeCompressed', offset: 0n, data: new Uint8Array(65536).fill(7) },
      snapshotCreate: { kind: 'snapshotCreate', name: 's1' },
      snapshotApply: { kind: 'snapshotApply', name: 's1' },
      snapshotDelete: { kind: 'snapshotDelete', name: 's1' },
      resize: { kind: 'resize', size: 2n << 20n },
      flush: { kind: 'flush' },
    };
    for (const kind of NOT_YET_MODELLED_OPS) {
      const r = step(image, ops[kind]);
      expect(r.ok ? 'ok' : r.error.code, kind).toBe('unsupported');
    }
    for (const opts of NOT_YET_MODELLED_CONFIGS) {
      const img = createImage({ size: 1n << 20n, ...opts }).image;
      const r = step(img, { kind: 'write', offset: 0n, data: new Uint8Array(512).fill(1) });
      expect(r.ok ? 'ok' : r.error.code, JSON.stringify(opts)).toBe('unsupported');
    }
    for (const { config, op } of NOT_YET_MODELLED_OPS_BY_CONFIG) {
      const img = createImage({ size: 1n << 20n, ...config }).image;
      const r = step(img, ops[op]);
      expect(r.ok ? 'ok' : r.error.code, `${op} on ${JSON.stringify(config)}`).toBe('unsupported');
    }
  });

  // Regression: data_file_raw preallocates every cluster, so a write took the handle_copied path and
  // wrote the guest data into the qcow2 file at the data-file offset (inside cluster 0); writes to
  // data-file images are refused as 'unsupported' until the model writes data files.
  it('regression: a write to a data_file_raw image is refused or reads back', () => {
    const img = createImage({ size: 1n << 20n, dataFile: 'data.raw', dataFileRaw: true }).image;
    const data = new Uint8Array(512).fill(0xab);
    const r = step(img, { kind: 'write', offset: 4096n, data });
    if (!r.ok) {
      expect(r.error.code).toBe('unsupported');
      return;
    }
    expect(Buffer.from(readGuest(r.image, 4096n, 512)).equals(Buffer.from(data))).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// Size changes: where commands land, and the oracle's one known difference.

describe('commands after a size change', () => {
  it('place: the identity at the initial size; from the end, modulo, cut or moved after a resize (values worked out by hand)', () => {
    // 4 KiB clusters, 10 clusters and 512 bytes: 11 clusters, the last one partial.
    const cfg: Config = { clusterBits: 12, refcountBits: 16, compat: '1.1', extendedL2: false, compressionType: 'zlib', preallocation: 'off', requestedSize: 41472n, size: 41472n };
    const g = geoOf(cfg);
    expect(place(g, 41472n, 40960n + 100n, 412n, true)).toEqual({ offset: 41060n, length: 412n });
    expect(place(g, 41472n, 12345n, 7n, false)).toEqual({ offset: 12345n, length: 7n });
    // Shrunk to 5 clusters + 1024 bytes (6 clusters).
    const small = 5n * 4096n + 1024n;
    expect(place(g, small, 10n * 4096n + 100n, 412n, true)).toEqual({ offset: 5n * 4096n + 100n, length: 924n }); // last cluster → last cluster, to the end
    expect(place(g, small, 9n * 4096n + 8n, 16n, true)).toEqual({ offset: 4n * 4096n + 8n, length: 16n }); // one before the last
    expect(place(g, small, 3n * 4096n, 100n, false)).toEqual({ offset: 3n * 4096n, length: 100n }); // inside: unchanged
    expect(place(g, small, 8n * 4096n + 7n, 10n, false)).toEqual({ offset: 2n * 4096n + 7n, length: 10n }); // cluster 8 mod 6
    expect(place(g, small, 5n * 4096n + 1000n, 5000n, false)).toEqual({ offset: 5n * 4096n + 1000n, length: 24n }); // cut at the end
    expect(place(g, small, 2n * 4096n, 8n * 4096n + 512n, false)).toEqual({ offset: 2n * 4096n, length: 3n * 4096n + 1024n }); // reached the end: still does
    // Grown to 100 clusters.
    const big = 100n * 4096n;
    expect(place(g, big, 10n * 4096n, 512n, false)).toEqual({ offset: big - 512n, length: 512n }); // reached the end: moved there
    expect(place(g, big, 10n * 4096n + 1n, 511n, true)).toEqual({ offset: 99n * 4096n + 1n, length: 4095n }); // from the end: to the new end
    expect(place(g, big, 10n * 4096n + 1n, 100n, false)).toEqual({ offset: 10n * 4096n + 1n, length: 100n }); // the old partial cluster, now inside
  });

  // QEMU 7.2, measured with qemu-img/qemu-io: `create -o extended_l2=on,cluster_size=65536 1M`,
  // `write -c -P 0x61 983040 65536`, `resize --shrink 988672`, then either `write -z 987136 1536` (the
  // last partial subcluster exactly) or `write -z 985088 3584` (one subcluster more), then `resize 2M`:
  // read 988672+512 gives 0x61 in the first case (zero_l2_subclusters refuses a compressed cluster,
  // the block layer writes explicit zeros, the subcluster's bytes past the end stay), zeros in the
  // second (the first piece turns the cluster into a normal one, the last piece gets a zero flag), and
  // 989184..1048576 keeps 0x61 in both. The oracle has no allocation state and says zeros in both.
  it('the oracle\'s known difference: zeroing exactly the last partial subcluster of a compressed extended-L2 cluster', () => {
    const L = 983040n;
    const run = (zeroAt: bigint): { model: (o: bigint, n: number) => Uint8Array; oracle: RawDisk } => {
      let img = createImage({ size: 1n << 20n, clusterSize: 65536, extendedL2: true }).image;
      const oracle = new RawDisk({ size: 1n << 20n, clusterSize: 65536n, subclusterSize: 2048n });
      const ops: Op[] = [
        { kind: 'writeCompressed', offset: L, data: new Uint8Array(65536).fill(0x61) },
        { kind: 'resize', size: L + 5632n },
        { kind: 'writeZeroes', offset: zeroAt, length: L + 5632n - zeroAt, unmap: false },
        { kind: 'resize', size: 2n << 20n },
      ];
      for (const op of ops) {
        const r = step(img, op);
        if (!r.ok) throw r.error;
        img = r.image;
        oracle.apply(op);
      }
      return { model: (o, n) => readGuest(img, o, n), oracle };
    };
    const exact = run(L + 4096n);
    expect([...new Set(exact.model(L + 5632n, 512))]).toEqual([0x61]); // QEMU's bytes
    expect([...new Set(exact.oracle.read(L + 5632n, 512))]).toEqual([0]); // the documented difference
    const widened = run(L + 2048n);
    for (const r of [widened.model, (o: bigint, n: number) => widened.oracle.read(o, n)]) {
      expect([...new Set(r(L + 4096n, 2048))]).toEqual([0]);
      expect([...new Set(r(L + 6144n, 65536 - 6144))]).toEqual([0x61]);
    }
    // The property never generates the exact case: WriteZeroesCmd widens it by one subcluster.
    const cfg: Config = { clusterBits: 16, refcountBits: 16, compat: '1.1', extendedL2: true, compressionType: 'zstd', preallocation: 'off', requestedSize: 1n << 20n, size: 1n << 20n };
    const stats = runSequence(cfg, [
      new WriteCompressedCmd(L, 65536, 5, 'pattern'),
      new ResizeCmd({ to: 'size', size: L + 5632n }),
      new WriteZeroesCmd(L + 4096n, 65536n - 4096n, false, true), // placed at [L + 4096, L + 5632)
      new ResizeCmd({ to: 'size', size: 2n << 20n }),
      new ReadRandomCmd(L, 65536),
    ]);
    expect(stats.get('write_zeroes widened: last partial subcluster of a compressed cluster')).toBe(1);
  });

  it('zstd compressed writes, resizes and a snapshot of another size applied (a fixed sequence)', () => {
    // 732 clusters of 4 KiB and a partial one of 2048 bytes.
    const cfg: Config = { clusterBits: 12, refcountBits: 4, compat: '1.1', extendedL2: false, compressionType: 'zstd', preallocation: 'off', requestedSize: 3000220n, size: 3000320n };
    const stats = runSequence(cfg, [
      new WriteCompressedCmd(0n, 8192, 7, 'runs'),
      new WriteCmd(3000320n - 700n, 700, 9, true),
      new SnapshotCmd('snapshotCreate', 'a'),
      new ResizeCmd({ to: 'clusters', clusters: -3n, plus: 1536n }), // to 729 clusters + 1536
      new WriteCompressedCmd(732n * 4096n, 2048, 3, 'pattern', true), // the new partial last cluster
      new SnapshotCmd('snapshotApply', 'a'), // back to 3000320 bytes
      new ResizeCmd({ to: 'l1', plus: 512n }), // 1 GiB + 512: 513 L1 entries
      new ResizeCmd({ to: 'unaligned', plus: 100n }),
      new ReadRandomCmd(0n, 65536),
    ]);
    expect(Object.fromEntries(stats)).toMatchObject({
      'compressed write (zstd)': 2,
      'resize shrink': 1,
      'resize grow': 1,
      'resize grows the L1 table past one cluster': 1,
      'snapshot apply grows the disk': 1,
      'resize refused: not a multiple of 512': 1,
    });
  });
});

// ---------------------------------------------------------------------------------------------
// The property can fail: the same machinery against deliberately broken systems.

/** Writes all but the last byte of every non-empty write. */
const dropsLastByte: StepFn = (image: Image, op: Op) =>
  op.kind === 'write' && op.data.length > 0 ? step(image, { ...op, data: op.data.subarray(0, op.data.length - 1) }) : step(image, op);

/** Correct results, but scribbles on a page of the input image afterwards (impure). */
const mutatesInput: StepFn = (image: Image, op: Op) => {
  const r = step(image, op);
  if (r.ok && op.kind === 'write' && op.data.length > 0) {
    const page = image.file.pages.get(0);
    if (page !== undefined) page[page.length - 1] = (page[page.length - 1]! + 1) & 0xff;
  }
  return r;
};

/** Correct image, but the io list misses its last host write. */
const dropsLastIo: StepFn = (image: Image, op: Op) => {
  const r = step(image, op);
  if (!r.ok) return r;
  const last = r.io.map((o) => o.kind).lastIndexOf('write');
  return last < 0 ? r : { ...r, io: r.io.filter((_o, i) => i !== last) };
};

/** Accepts a resize to a size that is not a multiple of 512 by rounding it up (QEMU refuses it). */
const roundsUnalignedResize: StepFn = (image: Image, op: Op) =>
  op.kind === 'resize' && op.size > 0n && op.size % 512n !== 0n ? step(image, { ...op, size: ((op.size + 511n) / 512n) * 512n }) : step(image, op);

/** Shrinks, then zeroes the new last cluster as well (data lost at the new end; the io is complete). */
const shrinkLosesLastCluster: StepFn = (image: Image, op: Op) => {
  const r = step(image, op);
  if (!r.ok || op.kind !== 'resize' || op.size >= image.header.size) return r;
  const cs = 1n << BigInt(image.header.clusterBits);
  const last = ((op.size - 1n) / cs) * cs;
  const z = step(r.image, { kind: 'writeZeroes', offset: last, length: op.size - last, unmap: true });
  return z.ok ? { ok: true, image: z.image, io: [...r.io, ...z.io] } : r;
};

/** Accepts writes past the end by clipping them (never reports 'out-of-range'). */
const clipsOutOfRange: StepFn = (image: Image, op: Op) => {
  const r = step(image, op);
  if (!r.ok && r.error.code === 'out-of-range') return { ok: true, image, io: [] };
  return r;
};

describe('the property can fail', () => {
  const broken: readonly { name: string; system: StepFn; message: RegExp }[] = [
    { name: 'a write that drops the last byte', system: dropsLastByte, message: /reads differ/ },
    { name: 'a step that mutates its input image', system: mutatesInput, message: /mutated in place/ },
    { name: 'an io list missing a write', system: dropsLastIo, message: /applyHostIO/ },
    { name: 'out-of-range ops accepted', system: clipsOutOfRange, message: /accepted an op beyond the end/ },
    { name: 'a resize to a size that is not a multiple of 512 accepted', system: roundsUnalignedResize, message: /Resize\(unaligned \+\d+\) .*accepted; QEMU refuses it/ },
    { name: 'a shrink that loses the data of the new last cluster', system: shrinkLosesLastCluster, message: /reads differ/ },
  ];
  for (const b of broken) {
    it(`detects ${b.name}, printing seed, path and the command list`, () => {
      let message = '';
      try {
        fc.assert(commandsProperty(configArb('small-clusters'), b.system, { maxCommands: 100 }), { numRuns: 200, seed: 42, includeErrorInReport: true });
      } catch (e) {
        message = (e as Error).message;
      }
      expect(message).toMatch(/Property failed after \d+ tests/);
      expect(message).toMatch(/seed: -?\d+, path: "[\d:]+"/);
      expect(message).toMatch(b.message);
      // The shrunk counterexample lists the commands that ran.
      expect(message).toMatch(/(Write|WriteZeroes|Discard|OutOfRange\w+|Resize|Snapshot\w+)\(/);
    }, 300_000);
  }
});

// ---------------------------------------------------------------------------------------------
// Data files and lazy refcounts: one broken system per feature.

/**
 * Writes the guest data (and COW, zeroes, punched holes) meant for the external data file into the
 * qcow2 file at the same offsets, leaving the data file as it was; the io says so, so it replays.
 */
const dataIntoQcow2File: StepFn = (image: Image, op: Op) => {
  const r = step(image, op);
  if (!r.ok || image.dataFile === undefined || !r.io.some((o) => o.kind !== 'flush' && o.target === 'data')) return r;
  const io: HostIO[] = r.io.map((o) => {
    if (o.kind === 'flush' || o.target !== 'data') return o;
    const { target: _data, ...onImage } = o;
    return onImage;
  });
  const file = applyHostIO(image.file, io);
  // The header as the (possibly overwritten) file says, when it still decodes; else the model's.
  let header = r.image.header;
  try {
    header = headerStateFrom(decodeHeader(readHost(file, 0n, 1 << image.header.clusterBits)));
  } catch {
    // keep the model's header: the property reports the mismatch
  }
  return { ok: true, io, image: { ...r.image, file, header, dataFile: image.dataFile } };
};

/** Lazy refcounts without qcow2_mark_dirty: the 8-byte header write is dropped, the bit stays clear. */
const neverSetsDirty: StepFn = (image: Image, op: Op) => {
  const r = step(image, op);
  if (!r.ok || (image.header.incompatibleFeatures & 1n) !== 0n || (r.image.header.incompatibleFeatures & 1n) === 0n) return r;
  const io = r.io.filter((o) => !(o.kind === 'write' && o.target === undefined && o.offset === 72n && o.bytes.length === 8));
  const header = { ...r.image.header, incompatibleFeatures: r.image.header.incompatibleFeatures & ~1n };
  const { dirtyBySession: _set, ...session } = r.image.session;
  return { ok: true, io, image: { ...r.image, header, session, file: applyHostIO(image.file, io) } };
};

/** data_file_raw without its zeroing: write_zeroes leaves the data file's old bytes (as a plain data file does). */
const skipsRawZeroing: StepFn = (image: Image, op: Op) => {
  const r = step(image, op);
  if (!r.ok || image.dataFile === undefined || op.kind !== 'writeZeroes') return r;
  const io = r.io.filter((o) => !(o.kind === 'zero' && o.target === 'data'));
  return { ok: true, io, image: { ...r.image, dataFile: applyHostIO(image.dataFile, io, 'data') } };
};

/** Accepts snapshot creation on a data-file image by pretending it worked (nothing written). */
const acceptsDataFileSnapshots: StepFn = (image: Image, op: Op) => {
  const r = step(image, op);
  if (!r.ok && image.dataFile !== undefined && op.kind === 'snapshotCreate') return { ok: true, image, io: [] };
  return r;
};

describe('the property can fail on data files and lazy refcounts', () => {
  const broken: readonly { name: string; cls: ConfigClass; system: StepFn; message: RegExp }[] = [
    { name: 'data-file guest data written into the qcow2 file', cls: 'data-file', system: dataIntoQcow2File, message: /Write\(.*(reads differ|header does not decode|is not what the file says)/ },
    { name: 'data_file_raw without zeroing the data file', cls: 'data-file', system: skipsRawZeroing, message: /data_file_raw: the data file read as a raw image/ },
    { name: 'snapshots accepted on a data-file image', cls: 'data-file', system: acceptsDataFileSnapshots, message: /SnapshotCreate\("\w"\): accepted; QEMU refuses it/ },
    { name: 'lazy refcounts that never set the dirty bit', cls: 'lazy-refcounts', system: neverSetsDirty, message: /allocating write .* left the dirty bit of a lazy-refcounts image clear/ },
  ];
  for (const b of broken) {
    it(`detects ${b.name}, printing seed, path and the command list`, () => {
      let message = '';
      try {
        fc.assert(commandsProperty(configArb(b.cls), b.system, { maxCommands: 100, compressed: true }), { numRuns: 200, seed: 42, includeErrorInReport: true });
      } catch (e) {
        message = (e as Error).message;
      }
      expect(message).toMatch(/Property failed after \d+ tests/);
      expect(message).toMatch(/seed: -?\d+, path: "[\d:]+"/);
      expect(message).toMatch(b.message);
      // The counterexample prints the configuration (plain data) and the commands that ran.
      expect(message).toMatch(b.cls === 'data-file' ? /"dataFile":"(plain|raw)"/ : /"lazy":true/);
      expect(message).toMatch(/(Write|WriteZeroes|Discard|Snapshot\w+)\(/);
    }, 300_000);
  }

  it('the same systems pass on images without a data file or lazy refcounts', () => {
    for (const b of broken) fc.assert(commandsProperty(configArb('small-clusters'), b.system, { maxCommands: 30, compressed: true }), { numRuns: 10, seed: 42 });
  }, 300_000);

  // QEMU 7.2 (test/qemu/model-data-file.test.ts, measured): with data_file_raw a zero write without unmap
  // zeroes the data file too; plain data files keep the old bytes under a ZERO_ALLOC entry. A system
  // that forgets this reads correctly (the L2 entry says zero) and only the raw-image check sees it.
  it('data_file_raw zeroing skipped: only the check that the data file reads as the raw disk sees it', () => {
    const cfg: Config = { clusterBits: 16, refcountBits: 16, compat: '1.1', extendedL2: false, compressionType: 'zlib', preallocation: 'metadata', requestedSize: 1n << 20n, size: 1n << 20n, dataFile: 'raw' };
    const cmds: Cmd[] = [new WriteCmd(0n, 65536, 5), new WriteZeroesCmd(0n, 65536n, false), new ReadRandomCmd(0n, 200_000)];
    runSequence(cfg, cmds);
    expect(() => runSequence(cfg, cmds, skipsRawZeroing)).toThrow(/WriteZeroes\(0, 65536\), data_file_raw: the data file read as a raw image: reads differ at guest offset 0 /);
    // The same system on a plain data file is right: there the old bytes stay.
    runSequence({ ...cfg, preallocation: 'off', dataFile: 'plain' }, cmds, skipsRawZeroing);
  });
});

// ---------------------------------------------------------------------------------------------
// qcow2 backing chains: the property catches a wrong backing read, and the generator makes the hard cases.

/**
 * A backing source reading `shift` bytes further on (zeros past its end): what a driver with an
 * off-by-one-cluster backing read returns.
 */
function shiftedBacking(b: BackingSource, shift: bigint): BackingSource {
  return {
    size: b.size,
    read: (offset, length) => {
      const out = new Uint8Array(length);
      const from = offset + shift;
      if (from < b.size) out.set(b.read(from, Number(b.size - from < BigInt(length) ? b.size - from : BigInt(length))));
      return out;
    },
  };
}

/**
 * Steps with a backing read off by one cluster (of the overlay). `keep`: the returned image keeps the
 * shifted source, so later reads are wrong too; otherwise only the data the step itself read from the
 * backing (copy-on-write of a partially written cluster) is wrong.
 */
function backingOffByOneCluster(keep: boolean): StepFn {
  const shifted = new WeakSet<BackingSource>();
  return (image: Image, op: Op) => {
    const b = image.backing;
    if (b === undefined || shifted.has(b)) return step(image, op);
    const s = shiftedBacking(b, 1n << BigInt(image.header.clusterBits));
    shifted.add(s);
    const r = step({ ...image, backing: s }, op);
    return keep ? r : { ...r, image: { ...r.image, backing: b } } as StepResult;
  };
}

describe('qcow2 backing chains', () => {
  const broken: readonly { name: string; system: StepFn }[] = [
    { name: 'a backing read off by one cluster', system: backingOffByOneCluster(true) },
    { name: 'copy-on-write that copies the backing data of the next cluster', system: backingOffByOneCluster(false) },
  ];
  for (const b of broken) {
    it(`detects ${b.name}, printing seed, path and the backing chain`, () => {
      let message = '';
      try {
        fc.assert(commandsProperty(configArb('backing-chain'), b.system, { maxCommands: 100 }), { numRuns: 200, seed: 42, includeErrorInReport: true });
      } catch (e) {
        message = (e as Error).message;
      }
      expect(message).toMatch(/Property failed after \d+ tests/);
      expect(message).toMatch(/seed: -?\d+, path: "[\d:]+"/);
      expect(message).toMatch(/reads differ/);
      // The counterexample prints the configuration as plain data, backing chain included.
      expect(message).toMatch(/"format":"qcow2"/);
      expect(message).toMatch(/(Write|WriteZeroes|Discard|ReadRandom)\(/);
    }, 300_000);
  }

  it('the same systems pass without a backing file (the failures above come from the backing read)', () => {
    for (const b of broken) {
      fc.assert(commandsProperty(configArb('small-clusters'), b.system, { maxCommands: 30 }), { numRuns: 15, seed: 42 });
    }
  }, 300_000);

  // A hand-written case with every level of difficulty at once; the expected bytes are spelled out
  // here, not taken from the model or the oracle.
  it('v2 overlay over a v3 extended-L2 image with a compressed cluster and a reverted snapshot over raw', () => {
    const raw: BackingSpec = { format: 'raw', size: 200_000n, writes: [{ offset: 0n, length: 200_000, seed: 7 }] };
    const mid: BackingSpec = {
      format: 'qcow2', clusterBits: 14, refcountBits: 16, compat: '1.1', extendedL2: true, compressionType: 'zstd', size: 65536n,
      ops: [
        { op: 'compress', offset: 16384n, length: 16384, seed: 3 },
        { op: 'snapshot', action: 'create', name: 'p' },
        { op: 'write', offset: 512n, length: 1000, seed: 9 }, // undone by the apply below
        { op: 'snapshot', action: 'apply', name: 'p' },
        { op: 'zero', offset: 32768n + 512n, length: 512n, unmap: false },
        { op: 'discard', offset: 49152n, length: 16384n }, // v3: reads zeros, hides the raw data
      ],
      backing: raw,
    };
    const cfg: Config = { clusterBits: 12, refcountBits: 16, compat: '0.10', extendedL2: false, compressionType: 'zlib', preallocation: 'off', requestedSize: 131072n, size: 131072n, backing: mid };
    const expectedBacking = (o: number): number => {
      // What a read of the backing chain returns at guest offset o (< 65536: the middle image).
      if (o >= 16384 && o < 32768) return compressedRunsByte(o - 16384, 3);
      if ((o >= 33280 && o < 33792) || o >= 49152) return 0;
      return patternByte(o, 7);
    };
    const oracle = backingOracle(mid);
    for (const o of [0, 511, 512, 1511, 16384, 20000, 32767, 33279, 33280, 33791, 33792, 49151, 49152, 65535]) {
      expect(oracle.read(BigInt(o), 1)[0], `oracle at ${o}`).toBe(expectedBacking(o));
    }
    // Overlay: a partial write into the compressed cluster (COW from a compressed backing cluster),
    // one across the end of the backing (65536), a zero in v2 over backing data, a discard (v2 with a
    // backing file: refused silently, nothing changes).
    const cmds: Cmd[] = [
      new WriteCmd(16384n + 100n, 50, 11),
      new WriteCmd(65536n - 300n, 600, 12),
      new WriteZeroesCmd(4096n, 4096n, true),
      new DiscardCmd(0n, 16384n),
      new ReadRandomCmd(0n, 131072),
    ];
    runSequence(cfg, cmds);
    // And the same sequence through a shifted backing read fails.
    expect(() => runSequence(cfg, cmds, backingOffByOneCluster(false))).toThrow(/reads differ/);
  });

  it('the generator produces the hard cases (sampled, counted against the backing oracle)', () => {
    const counts = new Map<string, number>();
    const count = (k: string): void => void counts.set(k, (counts.get(k) ?? 0) + 1);
    const samples = fc.sample(runArb(configArb('backing-chain'), { maxCommands: 100, compressed: true }), { numRuns: 150, seed: 7 });
    for (const { cfg, cmds } of samples) {
      const spec = cfg.backing!;
      const levels: BackingSpec[] = [];
      for (let l: BackingSpec | undefined = spec; l !== undefined; l = l.format === 'qcow2' ? l.backing : undefined) levels.push(l);
      count(`chain of ${levels.length}`);
      if (levels.some((l, i) => l.format === 'qcow2' && levels[i + 1]?.format === 'qcow2')) count('qcow2 over qcow2');
      if (levels.some((l) => l.format === 'raw')) count('raw at the bottom');
      count(spec.size < cfg.size ? 'backing shorter' : spec.size === cfg.size ? 'backing equal' : 'backing longer');
      for (const l of levels) {
        if (l.format !== 'qcow2') continue;
        if (l.compat === '0.10') count('a v2 backing');
        if (l.extendedL2) count('an extended-L2 backing');
        for (const { op } of backingOps(l)) count(`backing ${op.kind}`);
      }
      // Overlay commands against what the backing chain holds (RawDisk only).
      const oracle = backingOracle(spec);
      const cs = 1n << BigInt(cfg.clusterBits);
      const sc = cfg.extendedL2 ? cs / 32n : cs;
      // Whether the backing chain shows non-zero bytes in [from, to) (long ranges: at both ends).
      const hasData = (from: bigint, to: bigint): boolean => {
        if (to > oracle.size) to = oracle.size;
        if (from >= to) return false;
        const W = 128n * 1024n;
        const windows = to - from <= 2n * W ? [[from, to]] : [[from, from + W], [to - W, to]];
        return windows.some(([f, t]) => oracle.read(f!, Number(t! - f!)).some((x) => x !== 0));
      };
      const written = new Set<bigint>();
      const v = cfg.compat === '0.10' ? 'v2' : 'v3';
      for (const w of cmds) {
        const c = (w as unknown as { cmd?: Cmd }).cmd ?? w;
        if (c instanceof WriteCmd && c.length > 0) {
          const first = c.offset / cs;
          const last = (c.offset + BigInt(c.length) - 1n) / cs;
          const partialHead = c.offset % cs !== 0n;
          const partialTail = (c.offset + BigInt(c.length)) % cs !== 0n && c.offset + BigInt(c.length) < cfg.size;
          for (const [k, partial] of [[first, partialHead], [last, partialTail]] as const) {
            if (partial && !written.has(k) && hasData(k * cs, (k + 1n) * cs)) count(`COW from backing data (${cfg.extendedL2 ? 'extended L2' : 'standard L2'})`);
          }
          if (cfg.extendedL2 && (c.offset % sc !== 0n || BigInt(c.length) % sc !== 0n) && hasData(first * cs, (last + 1n) * cs)) count('partial subcluster write over backing data');
          for (let k = first; k <= last; k++) written.add(k);
        } else if (c instanceof WriteZeroesCmd && hasData(c.offset, c.offset + c.length)) {
          count(`zero over backing data, ${v}`);
        } else if (c instanceof DiscardCmd) {
          const from = ((c.offset + cs - 1n) / cs) * cs;
          if (hasData(from, c.offset + c.length)) count(`discard over backing data, ${v}`);
        } else if (c instanceof SnapshotCmd && c.kind === 'snapshotApply') {
          count('overlay snapshot apply');
        }
      }
    }
    const report = [...counts.entries()].sort().map(([k, n]) => `${k}: ${n}`).join('\n');
    if (process.env['QCOW2_COVERAGE_REPORT'] === '1') console.log(report);
    const atLeast: Record<string, number> = {
      'chain of 1': 5, 'chain of 2': 10, 'chain of 3': 10, 'qcow2 over qcow2': 10, 'raw at the bottom': 10,
      'backing shorter': 10, 'backing equal': 10, 'backing longer': 10, 'a v2 backing': 10, 'an extended-L2 backing': 5,
      'backing write': 50, 'backing writeZeroes': 20, 'backing discard': 20, 'backing writeCompressed': 20, 'backing snapshotApply': 20, 'backing snapshotDelete': 5,
      'COW from backing data (standard L2)': 20, 'COW from backing data (extended L2)': 5, 'partial subcluster write over backing data': 10,
      'zero over backing data, v2': 10, 'zero over backing data, v3': 10, 'discard over backing data, v2': 5, 'discard over backing data, v3': 5,
    };
    for (const [k, n] of Object.entries(atLeast)) expect(counts.get(k) ?? 0, `${k} (of 150 runs)\n${report}`).toBeGreaterThanOrEqual(n);
  }, 120_000);
});

/** Byte i of `pattern(0n, …, seed)` (test/support/model-commands.ts), restated for the example. */
function patternByte(p: number, seed: number): number {
  return (seed * 131 + p * 7 + (p >>> 9) * 29) & 0xff || seed;
}

/** Byte i of the 'runs' compressed-write data (compressData), restated for the example. */
function compressedRunsByte(i: number, seed: number): number {
  return ((i >> 7) * seed + seed) & 0xff;
}
