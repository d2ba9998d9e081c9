/**
 * Model-based property (fc.commands, size 'max'): the qcow2 model (`step` on an immutable Image) against
 * the flat raw-disk oracle, over every configuration class the model supports today:
 * - cluster_bits 9..21 (small ones weighted), refcount_bits 1..64, compat 0.10 and 1.1, extended L2
 *   where allowed, compression_type zlib/zstd, virtual sizes from tiny to 1 TiB (sparse);
 * - preallocation=metadata on small disks;
 * - a raw backing file (shorter, equal or longer than the disk; with extended L2 also preallocated).
 * Commands: Write (any alignment and length, weighted to cluster and subcluster boundaries and to a few
 * hot clusters so later ops overwrite earlier ones), WriteZeroes (unmap or not), Discard, Flush,
 * ReadRandom, WriteCompressed (whole clusters; zlib — zstd and allocated targets must be refused
 * without change), and out-of-range Write/WriteZeroes/Discard that must be refused with 'out-of-range'
 * and change nothing. What is checked after each command and at the end of a run is described in
 * properties/support/model-commands.ts. Ops the model refuses as 'unsupported' are not generated yet:
 * see NOT_YET_MODELLED_OPS / NOT_YET_MODELLED_CONFIGS there.
 *
 * Runs: QCOW2_COMMANDS_RUNS=<n> runs n sequences per configuration class (default: the numbers below,
 * 300 in all, sized for `npm test` on 2 cores). On failure fast-check prints seed, path and the
 * shrunk command list (each command prints itself) with its replayPath; replay with
 * `{ seed, path, endOnFailure: true }` and `fc.commands(..., { replayPath })`.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createImage } from '../src/model/create.ts';
import type { Image } from '../src/model/image.ts';
import type { Op } from '../src/model/ops.ts';
import { readGuest } from '../src/model/read.ts';
import { step } from '../src/model/step.ts';
import {
  commandsProperty,
  configArb,
  modelStep,
  NOT_YET_MODELLED_CONFIGS,
  NOT_YET_MODELLED_OPS,
  ReadRandomCmd,
  runSequence,
  WriteCmd,
  WriteCompressedCmd,
  type Config,
  type ConfigClass,
  type StepFn,
} from './support/model-commands.ts';

const envRuns = process.env['QCOW2_COMMANDS_RUNS'];
const runs = (dflt: number): number => (envRuns !== undefined && envRuns !== '' ? Number(envRuns) : dflt);

/** Compressed writes (zlib) are generated unless QCOW2_COMMANDS_COMPRESSED=0. */
const COMPRESSED_WRITES_IN_PROPERTY = process.env['QCOW2_COMMANDS_COMPRESSED'] !== '0';

const CLASSES: readonly { cls: ConfigClass; title: string; numRuns: number; maxCommands: number }[] = [
  { cls: 'small-clusters', title: 'cluster_bits 9..13, refcount_bits 1..64, v2/v3, up to the largest cheap disk', numRuns: 100, maxCommands: 100 },
  { cls: 'large-clusters', title: 'cluster_bits 14..21, extended L2 on/off, disks up to 1 TiB', numRuns: 80, maxCommands: 100 },
  { cls: 'preallocated', title: 'preallocation=metadata on small disks', numRuns: 60, maxCommands: 100 },
  { cls: 'backing', title: 'a raw backing file (short, equal, long; v2/v3; extended L2)', numRuns: 60, maxCommands: 100 },
];

describe('model vs raw-disk oracle: fc.commands over every supported configuration', () => {
  for (const c of CLASSES) {
    it(`${c.title} (${runs(c.numRuns)} runs)`, () => {
      fc.assert(commandsProperty(configArb(c.cls), modelStep, { maxCommands: c.maxCommands, compressed: COMPRESSED_WRITES_IN_PROPERTY }), { numRuns: runs(c.numRuns), includeErrorInReport: true });
    }, 600_000);
  }

  // Regression (seed -673974742): the compressed-byte cursor (session.freeByteOffset) pointed into a
  // host cluster freed by a COW and reused as an L2 table, and the model packed the next blob into
  // that table. QEMU 7.2 has the same stale cursor (its overlap check then marks the image corrupt;
  // with a reused data cluster it silently corrupts guest data — properties/model-write-vs-qemu.test.ts
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
    // to properties/support/model-commands.ts and remove it from the not-yet list.
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
      expect(message).toMatch(/(Write|WriteZeroes|Discard|OutOfRange\w+)\(/);
    }, 300_000);
  }
});
