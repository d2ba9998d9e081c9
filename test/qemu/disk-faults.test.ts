/**
 * Backend failures through the driver: a short sequence (allocating writes, copy-on-write after a
 * snapshot, discard, zeroes, flushes) is run once to count the backend's mutating calls, then once
 * per call position with that call failing (EIO; ENOSPC at every third position). Each time:
 * - the failing op rejects with DiskError 'io' carrying the backend's errno, later ops with 'failed',
 *   and close() writes nothing more;
 * - QEMU opens the file and `qemu-img check` finds no corruption (leaks allowed; with lazy refcounts
 *   after the repair QEMU's writable open would run, `check -r all`);
 * - every sector reads back as it was at the last completed flush, or as one of
 *   the states the ops issued after it would have left — acknowledged data is intact, and nothing
 *   reads as something no op wrote.
 * Read failures surface as DiskError 'io' and leave the disk usable.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Qcow2Disk } from '../../src/disk/index.ts';
import { fileBackend } from '../../src/io/index.ts';
import type { Op } from '../../src/model/index.ts';
import { RawDisk } from '../../src/oracle/raw-disk.ts';
import { faultyBackend, type BackendCall } from '../support/faulty-backend.ts';
import { pattern } from '../support/model-configs.ts';

const dir = mkdtempSync(join(tmpdir(), 'qcow2-faults-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SIZE = 8n * 1024n * 1024n;
const SECTOR = 512;

/** The sequence: every op kind that writes metadata, with flushes in between. */
const OPS: readonly Op[] = [
  { kind: 'write', offset: 0n, data: pattern(0n, 100_000, 11) },
  { kind: 'flush' },
  { kind: 'write', offset: 1n << 20n, data: pattern(1n << 20n, 70_000, 22) },
  { kind: 'snapshotCreate', name: 's', dateSec: 1_700_000_000, dateNsec: 0 },
  { kind: 'write', offset: 4096n, data: pattern(4096n, 4096, 33) },
  { kind: 'discard', offset: 1n << 20n, length: 65536n },
  { kind: 'flush' },
  { kind: 'write', offset: 4n << 20n, data: pattern(4n << 20n, 200_000, 44) },
  { kind: 'writeZeroes', offset: 30_000n, length: 50_000n, unmap: true },
  { kind: 'write', offset: 6n << 20n, data: pattern(6n << 20n, 65536, 55) },
];

const MUTATING: readonly BackendCall[] = ['write', 'truncate', 'flush'];

function run(disk: Qcow2Disk, op: Op): Promise<void> {
  switch (op.kind) {
    case 'write':
      return disk.write(op.offset, op.data);
    case 'flush':
      return disk.flush();
    case 'snapshotCreate':
      return disk.snapshotCreate(op.name, { dateSec: op.dateSec ?? 0, dateNsec: op.dateNsec ?? 0 });
    case 'discard':
      return disk.discard(op.offset, op.length);
    case 'writeZeroes':
      return disk.writeZeroes(op.offset, op.length, { unmap: op.unmap });
    default:
      throw new Error(`not in the sequence: ${op.kind}`);
  }
}

function image(name: string, lazy: boolean): string {
  const path = join(dir, name);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=65536,lazy_refcounts=${lazy ? 'on' : 'off'}`, path, String(SIZE)]);
  return path;
}

/** Runs the sequence over a copy of `template` with the `failAt`-th mutating call failing; returns what it saw. */
async function faultRun(template: string, failAt: number | undefined, errno: string): Promise<{ path: string; counted: number; states: RawDisk[]; failedOp: number | undefined; log: readonly string[] }> {
  const path = join(dir, `run-${failAt ?? 'clean'}-${errno}.qcow2`);
  copyFileSync(template, path);
  const backend = faultyBackend(await fileBackend(path, { readOnly: false }), { kinds: MUTATING, errno, ...(failAt !== undefined ? { failAt } : {}) });
  const disk = await Qcow2Disk.open(backend, { cacheBytes: 128 * 1024 });
  // states[0]: what the last completed flush made durable; then the state after each later op.
  const oracle = new RawDisk({ size: SIZE, clusterSize: 65536n });
  let states: RawDisk[] = [oracle.clone()];
  let failedOp: number | undefined;
  for (let i = 0; i < OPS.length; i++) {
    const op = OPS[i]!;
    oracle.apply(op);
    if (failedOp === undefined) {
      try {
        await run(disk, op);
      } catch (e) {
        failedOp = i;
        expect(e).toMatchObject({ name: 'DiskError', code: 'io', errno });
        // The failed op may have issued part of its writes: its result is one of the candidates too.
        states.push(oracle.clone());
        continue;
      }
      states = op.kind === 'flush' ? [oracle.clone()] : [...states, oracle.clone()];
    } else {
      await expect(run(disk, op)).rejects.toMatchObject({ name: 'DiskError', code: 'failed' });
    }
  }
  const before = backend.log.length;
  let closeFailed = false;
  try {
    await disk.close();
  } catch (e) {
    // The failure hit close's own writes (caches flushed, the dirty bit cleared): the data is as the ops left it.
    expect(failedOp).toBeUndefined();
    expect(e).toMatchObject({ name: 'DiskError', code: 'io', errno });
    closeFailed = true;
  }
  if (failedOp !== undefined) expect(backend.log.slice(before).filter((l) => !l.startsWith('read'))).toEqual([]);
  else if (!closeFailed) states = [oracle.clone()];
  return { path, counted: backend.counted, states, failedOp: failedOp ?? (closeFailed ? OPS.length : undefined), log: backend.log };
}

/**
 * Every sector of the image equals that sector in one of `states`. Read through a fresh read-only
 * open of the file by the driver (whose reads the property of disk-driver.test.ts and the QEMU
 * tests hold to qemu-img's); QEMU's own judgement of the file is checkNoCorruption's.
 */
async function checkContent(path: string, states: readonly RawDisk[]): Promise<void> {
  const disk = await Qcow2Disk.open(await fileBackend(path), { readOnly: true });
  let got: Buffer;
  try {
    expect(disk.size).toBe(SIZE);
    got = Buffer.from(await disk.read(0n, Number(SIZE)));
  } finally {
    await disk.close();
  }
  const candidates = states.map((s) => Buffer.from(s.read(0n, Number(SIZE))));
  for (let s = 0; s < got.length; s += SECTOR) {
    if (candidates.some((c) => got.compare(c, s, s + SECTOR, s, s + SECTOR) === 0)) continue;
    throw new Error(`sector ${s / SECTOR} reads as none of the ${candidates.length} states since the last completed flush`);
  }
}

/**
 * QEMU's snapshot refcount update (qcow2_update_snapshot_refcount) raises the refcounts of the
 * clusters the snapshot shares before it rewrites the L2 entries without QCOW_OFLAG_COPIED (the L2
 * cache depends on the refcount cache). Stopped between the two, the file holds entries with the
 * flag set on clusters (data clusters and L2 tables) of refcount 2, which `qemu-img check` counts as corruptions and `-r all`
 * fixes. The driver issues the model's order, which is QEMU's, so a failure inside a snapshot op may
 * leave exactly that — and nothing else.
 */
const SNAPSHOT_COPIED_WINDOW = /^ERROR OFLAG_COPIED (data cluster: l2_entry|L2 cluster: l1_index=\d+ l1_entry)=8[0-9a-f]{15} refcount=2$/;

function checkNoCorruption(path: string, lazy: boolean, failedOp?: Op): void {
  if (failedOp?.kind === 'snapshotCreate') {
    const r = spawnSync('qemu-img', ['check', path], { encoding: 'utf8' });
    const errors = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.startsWith('ERROR'));
    if (r.status === 2 && errors.length > 0 && errors.every((l) => SNAPSHOT_COPIED_WINDOW.test(l))) {
      spawnSync('qemu-img', ['check', '-r', 'all', path], { encoding: 'utf8' });
    }
  }
  if (lazy) {
    // QEMU's writable open of a dirty lazy-refcounts image runs this repair first.
    const r = spawnSync('qemu-img', ['check', '-r', 'all', path], { encoding: 'utf8' });
    if (r.error !== undefined) throw r.error;
  }
  const r = spawnSync('qemu-img', ['check', path], { encoding: 'utf8' });
  if (r.error !== undefined) throw new Error(`qemu-img could not run: ${r.error.message}`);
  // 0: clean, 3: leaked clusters only. 2 (corruption) and 1 (check failed) are failures.
  if (r.status !== 0 && r.status !== 3) throw new Error(`qemu-img check exit ${r.status}: ${r.stdout}${r.stderr}`);
}

describe('an injected backend failure at every mutating call position', () => {
  for (const lazy of [false, true]) {
    it(`lazy_refcounts=${lazy ? 'on' : 'off'}: typed errors, no corruption, acknowledged data intact`, async () => {
      const template = image(`template-${lazy}.qcow2`, lazy);
      const clean = await faultRun(template, undefined, 'EIO');
      expect(clean.failedOp).toBeUndefined();
      checkNoCorruption(clean.path, lazy);
      await checkContent(clean.path, clean.states);
      // The sequence makes many mutating calls (data, L2, refcounts, snapshot table, flushes).
      expect(clean.counted).toBeGreaterThan(20);
      let failures = 0;
      for (let k = 1; k <= clean.counted; k++) {
        const errno = k % 3 === 0 ? 'ENOSPC' : 'EIO';
        const r = await faultRun(template, k, errno);
        expect(r.failedOp).toBeDefined();
        failures++;
        try {
          checkNoCorruption(r.path, lazy, r.failedOp !== undefined ? OPS[r.failedOp] : undefined);
        } catch (e) {
          throw new Error(`failing mutating call #${k} (${errno}), op ${r.failedOp}: ${(e as Error).message}\ncalls: ${r.log.filter((l) => !l.startsWith('read')).join(', ')}`);
        }
        await checkContent(r.path, r.states);
        rmSync(r.path);
      }
      expect(failures).toBe(clean.counted);
    });
  }

  it('a failed read is DiskError io and the disk stays usable', async () => {
    const path = image('read-fault.qcow2', false);
    execFileSync('qemu-io', ['-c', 'write -P 9 0 1M', path], { stdio: 'ignore' });
    const backend = faultyBackend(await fileBackend(path, { readOnly: false }), { kinds: ['read'], failAt: 3, sticky: false });
    const disk = await Qcow2Disk.open(backend, { cacheBytes: 64 * 1024 });
    let failed = 0;
    for (let i = 0; i < 6; i++) {
      try {
        const b = await disk.read(BigInt(i) * 131072n, 65536);
        expect(b.every((x) => x === 9)).toBe(true);
      } catch (e) {
        expect(e).toMatchObject({ name: 'DiskError', code: 'io', errno: 'EIO' });
        failed++;
      }
    }
    expect(failed).toBe(1);
    await disk.write(0n, new Uint8Array(512).fill(1));
    expect((await disk.read(0n, 512)).every((x) => x === 1)).toBe(true);
    await disk.close();
    checkNoCorruption(path, false);
  });
});
