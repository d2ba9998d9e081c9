/**
 * The model's write, write_zeroes, discard and compressed-write paths against both oracles:
 * - layout fidelity: the same sequence of guest operations applied by qemu-io (one process) and by the
 *   model to the same `qemu-img create` image gives byte-identical files;
 * - data: every model read equals the flat raw-disk oracle;
 * - format: `qemu-img check` finds nothing wrong with the model's file.
 * Configurations cover every refcount width, cluster sizes from 512 B to 2 MiB, compat 0.10/1.1,
 * extended L2, external data files (with and without data_file_raw; the data file is compared byte
 * for byte too) and lazy refcounts (compared after a clean close: the model's closeImage, qemu-io's
 * normal exit); sequences include writes that force new refcount blocks and reftable growth.
 * qemu-img and qemu-io run in the images' directory: QEMU 7.2 resolves a relative data-file name
 * against its working directory.
 */
import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { closeImage } from '../../src/model/close.ts';
import { loadImage, storeDataFile, storeImage } from '../../src/model/load-store.ts';
import { readGuest } from '../../src/model/read.ts';
import { beginTx } from '../../src/model/tx.ts';
import { step } from '../../src/model/step.ts';
import { guestWrite } from '../../src/model/write.ts';
import { guestDiscard, guestWriteZeroes } from '../../src/model/zero-discard.ts';
import { RawDisk } from '../../src/oracle/raw-disk.ts';
import { qemuImgCheck, qemuImgCreate, qemuIo } from '../../src/qemu/qemu-img.ts';
import { requireQemu, runTool } from '../../src/qemu/run.ts';

interface Config {
  clusterBits: number;
  refcountBits: number;
  compat: '0.10' | '1.1';
  extendedL2: boolean;
  size: number;
  /** External data file (v3 only): 'plain', or 'raw' for data_file_raw=on. */
  dataFile?: 'plain' | 'raw';
  /** lazy_refcounts=on (v3 only). */
  lazy?: boolean;
}

interface Write {
  kind: 'write' | 'zero' | 'discard' | 'compress';
  offset: number;
  length: number;
  pattern: number;
  unmap: boolean;
  /** For 'compress': the share of random bytes in the data (0 = a pattern fill, 1 = incompressible). */
  noise?: number;
}

/** Deterministic data for a compressed write: the pattern with a share `noise` of pseudo-random bytes. */
function compressData(w: Write): Uint8Array {
  const out = new Uint8Array(w.length).fill(w.pattern);
  let x = (w.offset * 2654435761 + w.pattern) >>> 0 || 1;
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    if ((x & 0xffff) / 0x10000 < (w.noise ?? 0)) out[i] = x >>> 24;
  }
  return out;
}

const configArb: fc.Arbitrary<Config> = fc
  .record({
    clusterBits: fc.oneof(fc.constantFrom(9, 12, 16, 21), fc.integer({ min: 9, max: 21 })),
    refcountBits: fc.constantFrom(1, 2, 4, 8, 16, 32, 64),
    compat: fc.constantFrom<'0.10' | '1.1'>('0.10', '1.1', '1.1'),
    extendedL2: fc.boolean(),
    sizeMiB: fc.constantFrom(1, 8, 64),
    dataFile: fc.constantFrom<'none' | 'plain' | 'raw'>('none', 'none', 'none', 'plain', 'raw'),
    lazy: fc.constantFrom(false, false, true),
  })
  .map((c) => ({
    clusterBits: c.clusterBits,
    refcountBits: c.compat === '0.10' ? 16 : c.refcountBits,
    compat: c.compat,
    extendedL2: c.compat === '1.1' && c.clusterBits >= 14 && c.extendedL2,
    // data_file_raw preallocates every L2 table: keep those images small.
    size: (c.dataFile === 'raw' ? Math.min(c.sizeMiB, 8) : c.sizeMiB) * 1024 * 1024,
    ...(c.compat === '1.1' && c.dataFile !== 'none' ? { dataFile: c.dataFile } : {}),
    ...(c.compat === '1.1' && c.lazy ? { lazy: true } : {}),
  }));

function writesArb(cfg: Config): fc.Arbitrary<Write[]> {
  const cs = 1 << cfg.clusterBits;
  const write = fc
    .record({
      // Cluster-aligned, subcluster-aligned or arbitrary starts.
      start: fc.oneof(
        fc.integer({ min: 0, max: Math.max(0, Math.ceil(cfg.size / cs) - 1) }).map((c) => c * cs),
        fc.integer({ min: 0, max: Math.floor(cfg.size / 512) - 1 }).map((s) => s * 512),
        fc.integer({ min: 0, max: cfg.size - 1 }),
      ),
      length: fc.oneof(fc.integer({ min: 1, max: 4096 }), fc.integer({ min: 1, max: 3 * cs }), fc.constant(cs), fc.integer({ min: 1, max: 300_000 })),
      pattern: fc.integer({ min: 1, max: 255 }),
      kind: fc.constantFrom<Write['kind']>('write', 'write', 'write', 'zero', 'discard', 'compress'),
      unmap: fc.boolean(),
      noise: fc.constantFrom(0, 0.05, 0.5, 1),
    })
    .map(({ start, length, pattern, kind, unmap, noise }): Write => {
      if (kind === 'compress') {
        // One whole cluster from a cluster boundary (the last cluster of the disk may be partial).
        // QEMU compresses the clusters of a multi-cluster request in parallel tasks and allocates
        // them in completion order, so their placement is not deterministic in QEMU itself
        // (docs/layout-differences.md); those are compared by content in the test below.
        const offset = Math.floor(start / cs) * cs;
        return { kind, offset, length: Math.min(cs, cfg.size - offset), pattern, unmap, noise };
      }
      return { kind, offset: start, length: Math.max(1, Math.min(length, cfg.size - start)), pattern, unmap };
    });
  return fc.array(write, { minLength: 1, maxLength: 24 });
}

const dir = mkdtempSync(join(tmpdir(), 'qcow2-ref-model-write-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let run = 0;

async function checkSequence(cfg: Config, writes: Write[]): Promise<{ ours: string; theirs: string }> {
  const id = run++;
  const ours = join(dir, `ours-${id}.qcow2`);
  const theirs = join(dir, `qemu-${id}.qcow2`);
  // The data file's name is stored relative; QEMU opens it relative to its working directory.
  const dataName = `qemu-${id}.raw`;
  await qemuImgCreate(`qemu-${id}.qcow2`, cfg.size, {
    cluster_size: String(1 << cfg.clusterBits),
    refcount_bits: String(cfg.refcountBits),
    compat: cfg.compat,
    ...(cfg.extendedL2 ? { extended_l2: 'on' } : {}),
    ...(cfg.dataFile !== undefined ? { data_file: dataName } : {}),
    ...(cfg.dataFile === 'raw' ? { data_file_raw: 'on' } : {}),
    ...(cfg.lazy === true ? { lazy_refcounts: 'on' } : {}),
  }, [], 'qcow2', { cwd: dir });
  const created = new Uint8Array(readFileSync(theirs));
  const createdData = cfg.dataFile !== undefined ? new Uint8Array(readFileSync(join(dir, dataName))) : undefined;

  // The model.
  const tx = beginTx(loadImage(created, createdData !== undefined ? { dataFile: createdData } : {}));
  const kept = new Set(writes);
  let qemuMustFail = false;
  const oracle = new RawDisk({ size: BigInt(cfg.size), clusterSize: 1n << BigInt(cfg.clusterBits), version: cfg.compat === '0.10' ? 2 : 3 });
  for (const w of writes) {
    const offset = BigInt(w.offset);
    const length = BigInt(w.length);
    if (w.kind === 'write') {
      const data = new Uint8Array(w.length).fill(w.pattern);
      guestWrite(tx, offset, data);
      oracle.apply({ kind: 'write', offset, data });
    } else if (w.kind === 'zero') {
      guestWriteZeroes(tx, offset, length, w.unmap);
      oracle.apply({ kind: 'writeZeroes', offset, length, unmap: w.unmap });
    } else if (w.kind === 'discard') {
      guestDiscard(tx, offset, length);
      oracle.apply({ kind: 'discard', offset, length });
    } else {
      // QEMU refuses a compressed write to an allocated cluster (EIO); such ops are left out of
      // both sequences (the refusal itself is checked in test/model-compress.test.ts).
      const data = compressData(w);
      const r = step(tx.img, { kind: 'writeCompressed', offset, data });
      if (!r.ok && r.error.code === 'corrupt') {
        // QEMU's overlap check stops this write and marks the image corrupt; it refuses every
        // later request in the session, so the sequence ends here for both (and qemu-io exits 1).
        tx.img = r.image;
        writeFileSync(join(dir, `data-${id}-${writes.indexOf(w)}`), data);
        for (const later of writes.slice(writes.indexOf(w) + 1)) kept.delete(later);
        qemuMustFail = true;
        break;
      }
      if (!r.ok) {
        kept.delete(w);
        continue;
      }
      tx.img = r.image;
      oracle.apply({ kind: 'writeCompressed', offset, data });
      writeFileSync(join(dir, `data-${id}-${writes.indexOf(w)}`), data);
    }
  }
  // qemu-io closes the image when it exits (with lazy refcounts: qcow2_mark_clean clears the dirty bit).
  const img = closeImage(tx.img).image;
  const ourBytes = storeImage(img);
  writeFileSync(ours, ourBytes);

  // QEMU, the same writes in one process.
  const qemuOps = writes.filter((w) => kept.has(w)).map((w) =>
    w.kind === 'write' ? `write -P ${w.pattern} ${w.offset} ${w.length}`
      : w.kind === 'zero' ? `write -z${w.unmap ? ' -u' : ''} ${w.offset} ${w.length}`
        : w.kind === 'discard' ? `discard ${w.offset} ${w.length}`
          : `write -c -s ${join(dir, `data-${id}-${writes.indexOf(w)}`)} ${w.offset} ${w.length}`);
  // Where the model avoided QEMU 7.2's stale compressed cursor (a data-corruption bug, see
  // docs/layout-differences.md), QEMU's file is corrupt or refused: no byte comparison then.
  const divergent = img.session.staleCursorAvoided > 0;
  if (qemuMustFail) {
    const r = await runTool('qemu-io', ['-f', 'qcow2', ...qemuOps.flatMap((c) => ['-c', c]), theirs], { cwd: dir });
    expect(r.stderr).toContain('Marking image as corrupt');
  } else if (!divergent && qemuOps.length > 0) {
    // (qemu-io without any -c reads commands from stdin: an empty sequence — e.g. only compressed
    // writes, all refused on a data-file image — must not start it.)
    await qemuIo(theirs, qemuOps, { cwd: dir });
  }
  const qemuBytes = new Uint8Array(readFileSync(theirs));

  // Data: every written range and its surroundings read back as the oracle says.
  for (const w of writes.filter((x) => kept.has(x))) {
    const from = Math.max(0, w.offset - 700);
    const len = Math.min(cfg.size - from, w.length + 1400);
    expect(Buffer.from(readGuest(img, BigInt(from), len)).equals(Buffer.from(oracle.read(BigInt(from), len)))).toBe(true);
  }
  // Format: QEMU finds the model's image clean (with its own data file, under the name the header
  // gives, in a directory of its own).
  let check;
  if (cfg.dataFile !== undefined) {
    const m = join(dir, `model-${id}`);
    mkdirSync(m);
    writeFileSync(join(m, 'image.qcow2'), ourBytes);
    writeFileSync(join(m, dataName), storeDataFile(img)!);
    check = await qemuImgCheck('image.qcow2', { cwd: m });
    // The data file: byte for byte.
    if (!divergent) expect(Buffer.from(storeDataFile(img)!).equals(readFileSync(join(dir, dataName)))).toBe(true);
  } else {
    check = await qemuImgCheck(ours);
  }
  expect({ code: check.code, stderr: check.stderr }).toEqual({ code: 0, stderr: '' });
  // The regression of the stale compressed cursor: the refusal leaves QEMU's exact bytes (checked
  // below), including the corrupt bit, which qemu-img check does not report (docs/format/features.md#corrupt-bit).
  // Layout: byte for byte.
  if (!divergent && !Buffer.from(ourBytes).equals(Buffer.from(qemuBytes))) {
    let first = 0;
    while (first < Math.min(ourBytes.length, qemuBytes.length) && ourBytes[first] === qemuBytes[first]) first++;
    expect.fail(`files differ: qemu ${qemuBytes.length} bytes, model ${ourBytes.length} bytes, first difference at 0x${first.toString(16)}`);
  }
  return { ours, theirs };
}

/** Runs `seq` with qemu-io alone on a fresh image (for recording QEMU's own behaviour). */
async function qemuRun(cfg: Config, seq: Write[], extra: string[] = []): Promise<{ path: string; stdout: string; stderr: string }> {
  const id = run++;
  const path = join(dir, `qemu-only-${id}.qcow2`);
  await qemuImgCreate(path, cfg.size, {
    cluster_size: String(1 << cfg.clusterBits),
    refcount_bits: String(cfg.refcountBits),
    compat: cfg.compat,
  });
  const cmds = seq.map((w, i) => {
    if (w.kind === 'compress') {
      const file = join(dir, `qemu-only-${id}-${i}`);
      writeFileSync(file, compressData(w));
      return `write -c -s ${file} ${w.offset} ${w.length}`;
    }
    if (w.kind === 'zero') return `write -z${w.unmap ? ' -u' : ''} ${w.offset} ${w.length}`;
    if (w.kind === 'discard') return `discard ${w.offset} ${w.length}`;
    return `write -P ${w.pattern} ${w.offset} ${w.length}`;
  });
  const r = await runTool('qemu-io', ['-f', 'qcow2', ...[...cmds, ...extra].flatMap((c) => ['-c', c]), path]);
  return { path, stdout: r.stdout, stderr: r.stderr };
}

describe('model writes against qemu-io and the raw oracle', () => {
  it('requires qemu-img and qemu-io', async () => {
    await requireQemu();
  });

  it('random configurations and write/zero/discard/compress sequences: identical files, oracle reads, clean check', async () => {
    await fc.assert(
      fc.asyncProperty(configArb.chain((cfg) => writesArb(cfg).map((writes) => ({ cfg, writes }))), async ({ cfg, writes }) => {
        await checkSequence(cfg, writes);
      }),
      { numRuns: Number(process.env['QCOW2_MODEL_RUNS'] ?? 60) },
    );
  }, 600_000);

  it('regressions: shrunk counterexamples of this property', async () => {
    // A discarded cluster at a page boundary kept its data in the host file (HostFile zeroHost).
    await checkSequence({ clusterBits: 9, refcountBits: 16, compat: '0.10', extendedL2: false, size: 1 << 20 }, [
      { kind: 'write', offset: 0, length: 1537, pattern: 1, unmap: false },
      { kind: 'discard', offset: 0, length: 2048, pattern: 1, unmap: false },
      { kind: 'write', offset: 0, length: 1, pattern: 1, unmap: false },
    ]);
  }, 60_000);

  it('external data files (plain and raw) and lazy refcounts: fixed sequences', async () => {
    const seq: Write[] = [
      { kind: 'write', offset: 1000, length: 200_000, pattern: 1, unmap: false },
      { kind: 'zero', offset: 65536, length: 65536, pattern: 0, unmap: false },
      { kind: 'zero', offset: 131072, length: 70_000, pattern: 0, unmap: true },
      { kind: 'discard', offset: 0, length: 65536, pattern: 0, unmap: false },
      { kind: 'compress', offset: 262144, length: 16384, pattern: 2, unmap: false, noise: 0 },
      { kind: 'write', offset: 70_000, length: 333, pattern: 3, unmap: false },
      { kind: 'write', offset: 1_000_000, length: 48_576, pattern: 4, unmap: false },
    ];
    const base = { clusterBits: 14, refcountBits: 16, compat: '1.1' as const, extendedL2: false, size: 1 << 20 };
    for (const extra of [{ dataFile: 'plain' as const }, { dataFile: 'raw' as const }, { lazy: true }, { dataFile: 'plain' as const, lazy: true, extendedL2: true }, { dataFile: 'raw' as const, lazy: true, refcountBits: 1 }]) {
      await checkSequence({ ...base, ...extra }, seq);
    }
  }, 120_000);

  it('QEMU 7.2 bug, avoided by the model: a stale compressed cursor in a cluster reused as an L2 table', async () => {
    // Found by test/unit/model-commands.test.ts (seed -673974742). QEMU's overlap check stops the
    // third write and marks the image corrupt; the model starts a new cluster and stays correct.
    const cfg: Config = { clusterBits: 11, refcountBits: 2, compat: '1.1', extendedL2: false, size: 1 << 20 };
    const seq: Write[] = [
      { kind: 'compress', offset: 0, length: 2048, pattern: 1, unmap: false, noise: 0 },
      { kind: 'write', offset: 0, length: 512, pattern: 5, unmap: false },
      { kind: 'compress', offset: 524288, length: 2048, pattern: 1, unmap: false, noise: 0 },
    ];
    const { ours } = await checkSequence(cfg, seq);
    expect(JSON.parse(execFileSync('qemu-img', ['info', '--output=json', ours]).toString())['format-specific']['data']['corrupt']).toBe(false);
    const theirs = await qemuRun(cfg, seq);
    expect(theirs.stderr).toContain('Preventing invalid write on metadata (overlaps with active L2 table)');
  }, 60_000);

  it('QEMU 7.2 bug, avoided by the model: a stale compressed cursor in a cluster reused for guest data corrupts it', async () => {
    // Found by test/unit/model-commands.test.ts (seed 1663028412): the compressed cluster at the
    // end of the disk is freed (v2 zero write = discard), its host cluster is reused for new data,
    // and the next compressed write packs into that data cluster. The model starts a new cluster.
    const cfg: Config = { clusterBits: 10, refcountBits: 16, compat: '0.10', extendedL2: false, size: 1 << 20 };
    const seq: Write[] = [
      { kind: 'compress', offset: 1047552, length: 1024, pattern: 1, unmap: false, noise: 0 },
      { kind: 'zero', offset: 1047552, length: 1024, pattern: 1, unmap: false },
      { kind: 'write', offset: 1047552, length: 512, pattern: 9, unmap: false },
      { kind: 'compress', offset: 1042432, length: 1024, pattern: 1, unmap: false, noise: 0 },
    ];
    await checkSequence(cfg, seq); // the model: oracle reads and a clean check
    const theirs = await qemuRun(cfg, seq, ['read -P 9 1047552 512']);
    expect(theirs.stdout).toContain('Pattern verification failed at offset 1047552');
    const check = await qemuImgCheck(theirs.path);
    expect(check.code).toBe(2);
  }, 60_000);

  it('multi-cluster compressed writes: same content as QEMU and a clean check (placement order differs run to run in QEMU)', async () => {
    const cfg: Config = { clusterBits: 12, refcountBits: 16, compat: '1.1', extendedL2: false, size: 8 << 20 };
    const ops: Write[] = [
      { kind: 'compress', offset: 0, length: 5 * 4096, pattern: 3, unmap: false, noise: 0.05 },
      { kind: 'compress', offset: 8 * 4096, length: 3 * 4096, pattern: 4, unmap: false, noise: 1 },
      { kind: 'write', offset: 4096 + 17, length: 9000, pattern: 5, unmap: false },
    ];
    const id = run++;
    const ours = join(dir, `ours-${id}.qcow2`);
    const theirs = join(dir, `qemu-${id}.qcow2`);
    await qemuImgCreate(theirs, cfg.size, { cluster_size: '4096' });
    let img = loadImage(new Uint8Array(readFileSync(theirs)));
    const cmds: string[] = [];
    ops.forEach((w, i) => {
      const data = w.kind === 'compress' ? compressData(w) : new Uint8Array(w.length).fill(w.pattern);
      const r = step(img, w.kind === 'compress' ? { kind: 'writeCompressed', offset: BigInt(w.offset), data } : { kind: 'write', offset: BigInt(w.offset), data });
      if (!r.ok) throw r.error;
      img = r.image;
      const file = join(dir, `multi-${id}-${i}`);
      writeFileSync(file, data);
      cmds.push(`write ${w.kind === 'compress' ? '-c ' : ''}-s ${file} ${w.offset} ${w.length}`);
    });
    writeFileSync(ours, storeImage(img));
    await qemuIo(theirs, cmds);
    expect((await qemuImgCheck(ours)).code).toBe(0);
    execFileSync('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'qcow2', ours, theirs]);
  }, 60_000);

  it('refcount block allocation and reftable growth (512-byte clusters, 64-bit refcounts)', async () => {
    // 64 refcounts per block and a one-cluster reftable (64 blocks) cover 2 MiB of file: these
    // writes need new refcount blocks and then a larger reftable.
    const cfg: Config = { clusterBits: 9, refcountBits: 64, compat: '1.1', extendedL2: false, size: 64 << 20 };
    const writes = Array.from({ length: 48 }, (_, i) => ({ kind: 'write' as const, offset: i * 1_300_000 + i * 7, length: 50_000 + i, pattern: i + 1, unmap: false }));
    const { ours } = await checkSequence(cfg, writes);
    const tables = execFileSync('qemu-img', ['info', '--output=json', ours]).toString();
    expect(JSON.parse(tables)['format-specific']['data']['refcount-bits']).toBe(64);
  }, 120_000);
});
