/**
 * QEMU's iotest 060 (image corruption) cases that are about `qemu-img check` / `check -r`, and the
 * iotest 080 cases whose outcome is a check result (docs/format/iotests.md#test-080-cases, #test-060-cases): every image is built
 * with qemu-img / qemu-io 7.2 and poked as the iotest pokes it; then on the same bytes
 *
 * - `qcow2-ref check` (src/cli/check.ts checkReport over src/check/check.ts) and `qemu-img check`
 *   print the same report (human and JSON, stdout), the same ERROR / Leaked lines (stderr) and return
 *   the same exit code;
 * - on two copies, `qemu-img check -r leaks|all` and our repair (src/check/repair.ts, its writes
 *   issued to the copy by the CLI's writer) print the same, return the same, and leave files that
 *   `qemu-img check` judges the same — byte for byte the same files, in fact;
 * - guest data written before the corruption and not touched by it reads back unchanged from our
 *   repaired file (through qemu-io and through the model), as from QEMU's.
 *
 * Expected values are qemu-img's output on the same file at test time; on top, the facts the fact
 * sheet records for 7.2 (exit codes and key lines) are asserted for the cases it lists, so a broken
 * setup that made both sides agree on nonsense would still fail.
 *
 * Out of scope (not check results): the write-time overlap marking itself (qemu-io's "Marking image
 * as corrupt ... overlaps with ..." while writing), the COW-in-flight race (blkdebug), QMP shutdown
 * and inactive incoming images (need a VM), the non-fatal "Cannot free unaligned cluster" and the
 * read-only corruption report (runtime messages). For the images those writes leave behind (corrupt
 * bit set, partial writes), what qemu-img check says is tested: the `*-after-write` cases.
 */
import { copyFile, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileReader } from '../../src/io/file-reader.ts';
import { MAX_FILE_BYTES } from '../../src/check/check.ts';
import { loadImage } from '../../src/model/load-store.ts';
import { readGuest } from '../../src/model/read.ts';
import { parseQemuJson, qemuImgCreate, qemuImgSnapshot } from '../../src/qemu/qemu-img.ts';
import { requireQemu, runTool } from '../../src/qemu/run.ts';
import { be32, be64, normalizeProgram, ourCheckText, poke, qemuCheckText, sameContent } from '../support/check-harness.ts';

// Offsets in a fresh 64 MiB image with 64 KiB clusters (iotest 060's assumptions).
const RT = 0x10000;
const RB = 0x20000;
const L1 = 0x30000;
const L2 = 0x40000;
const M = 1024 * 1024;

/** Guest bytes written before the corruption that it does not touch. */
interface Intact {
  readonly offset: number;
  readonly length: number;
  readonly pattern: number;
}

/** What docs/format/iotests.md (measured on 7.2) says about a case, independently of this run. */
interface Facts {
  readonly check?: { readonly code: number; readonly stderr?: readonly string[] };
  readonly repairAll?: { readonly code: number; readonly stderr?: readonly string[]; readonly stdout?: readonly string[] };
}

interface Case {
  readonly name: string;
  readonly build: (path: string) => Promise<void>;
  readonly facts?: Facts;
  readonly intact?: readonly Intact[];
  /** The repair modes compared (default both). */
  readonly repairModes?: readonly ('leaks' | 'all')[];
}

/** qemu-io with commands, its exit code ignored (a failing write is the point of some steps). */
async function io(path: string, ...commands: string[]): Promise<void> {
  const args = commands.flatMap((c) => ['-c', c]);
  const r = await runTool('qemu-io', [...args, path]);
  if (r.code === null) throw new Error(`qemu-io ${commands.join('; ')} on ${path} was killed by ${r.signal}`);
}

/** qemu-io that must succeed. */
async function ioOk(path: string, ...commands: string[]): Promise<void> {
  const args = commands.flatMap((c) => ['-c', c]);
  const r = await runTool('qemu-io', ['-f', 'qcow2', ...args, path]);
  if (r.code !== 0) throw new Error(`qemu-io ${commands.join('; ')} on ${path} failed: ${r.stderr}`);
}

async function make(path: string, size = 64 * M, options: Record<string, string> = { compat: '1.1' }): Promise<void> {
  await qemuImgCreate(path, size, options);
}

/** The write iotest 060 uses to trip the overlap check (marks the image corrupt). */
async function overlapWrite(path: string, pattern = 0x2a): Promise<void> {
  await io(path, `open -o overlap-check=all ${path}`, `write -P ${pattern} 0 512`);
}

const CASES: readonly Case[] = [
  {
    name: 'l2-into-l1',
    build: async (p) => {
      await make(p);
      await poke(p, L1, be64(0x8000000000030000n));
    },
    facts: { check: { code: 2, stderr: ['ERROR cluster 3 refcount=1 reference=3'] } },
  },
  {
    name: 'l2-into-l1-after-write',
    build: async (p) => {
      await make(p);
      await poke(p, L1, be64(0x8000000000030000n));
      await overlapWrite(p);
    },
  },
  {
    name: 'data-into-refblock',
    build: async (p) => {
      await make(p);
      await truncate(p, L2 + 65536);
      await poke(p, L1, be64(0x8000000000040000n));
      await poke(p, RB + 8, [0x00, 0x01]);
      await poke(p, L2, be64(0x8000000000020000n));
    },
    facts: { check: { code: 2, stderr: ['ERROR refcount block 0 refcount=2', 'ERROR cluster 2 refcount=1 reference=2'] } },
  },
  {
    name: 'data-into-refblock-after-write',
    build: async (p) => {
      await make(p);
      await truncate(p, L2 + 65536);
      await poke(p, L1, be64(0x8000000000040000n));
      await poke(p, RB + 8, [0x00, 0x01]);
      await poke(p, L2, be64(0x8000000000020000n));
      await overlapWrite(p);
    },
    // -r all rebuilds, fixes both corruptions and clears the corrupt bit the write set.
    facts: { repairAll: { code: 0, stderr: ['Rebuilding refcount structure'], stdout: ['    2 corruptions'] } },
  },
  {
    name: 'data-into-inactive-l2',
    build: async (p) => {
      await make(p);
      await ioOk(p, 'write -P 1 0 512');
      await qemuImgSnapshot(p, 'create', 'foo');
      await ioOk(p, 'write -P 2 0 512');
      await poke(p, 0x80000, be64(0x8000000000040000n));
    },
    facts: {
      check: { code: 2, stderr: ['ERROR cluster 4 refcount=1 reference=2', 'Leaked cluster 9 refcount=1 reference=0'] },
      repairAll: { code: 0, stderr: ['Repairing OFLAG_COPIED data cluster: l2_entry=8000000000040000 refcount=2'] },
    },
  },
  {
    name: 'data-into-inactive-l2-after-write',
    build: async (p) => {
      await make(p);
      await ioOk(p, 'write -P 1 0 512');
      await qemuImgSnapshot(p, 'create', 'foo');
      await ioOk(p, 'write -P 2 0 512');
      await poke(p, 0x80000, be64(0x8000000000040000n));
      await overlapWrite(p, 3);
    },
  },
  {
    name: 'unallocated-header',
    build: async (p) => {
      await make(p);
      await ioOk(p, 'write -P 0x5a 1M 128k');
      await poke(p, RB, [0, 0]);
    },
    intact: [{ offset: M, length: 128 * 1024, pattern: 0x5a }],
  },
  {
    name: 'unallocated-header-after-write',
    build: async (p) => {
      await make(p);
      await poke(p, RB, [0, 0]);
      await io(p, 'write -P 0x2a 0 64k');
    },
  },
  {
    name: 'unaligned-l1-entry',
    build: async (p) => {
      await make(p);
      await ioOk(p, 'write 0 64k');
      await poke(p, L1, be64(0x8000000000042a00n));
    },
  },
  {
    name: 'unaligned-l2-entry',
    build: async (p) => {
      await make(p);
      await ioOk(p, 'write 0 64k');
      await poke(p, L2, be64(0x8000000000052a00n));
    },
    facts: {
      check: { code: 2, stderr: ['ERROR offset=52a00: Data cluster is not properly aligned; L2 entry corrupted.', 'ERROR cluster 6 refcount=0 reference=1'] },
    },
  },
  {
    name: 'unaligned-prealloc-zero',
    build: async (p) => {
      await make(p);
      await ioOk(p, 'write 0 64k');
      await poke(p, L2, be64(0x8000000000052a01n));
    },
  },
  {
    name: 'unaligned-prealloc-zero-low',
    build: async (p) => {
      await make(p);
      await ioOk(p, 'write 0 64k', 'write -P 0x77 1M 64k');
      await poke(p, L2, be64(0x8000000000002a01n));
    },
    facts: { repairAll: { code: 0, stderr: ['Repairing offset=2a00: Preallocated cluster is not properly aligned; L2 entry corrupted.'] } },
    intact: [{ offset: M, length: 64 * 1024, pattern: 0x77 }],
  },
  {
    name: 'unaligned-reftable-entry',
    build: async (p) => {
      await make(p);
      await ioOk(p, 'write 0 64k');
      await poke(p, RT, be64(0x22a00n));
    },
  },
  {
    name: 'empty-reftable',
    build: async (p) => {
      await make(p);
      await poke(p, RT, be64(0n));
    },
    facts: {
      check: { code: 2, stderr: ['ERROR cluster 0 refcount=0 reference=1', 'ERROR cluster 1 refcount=0 reference=1', 'ERROR cluster 3 refcount=0 reference=1'] },
      repairAll: { code: 0, stderr: ['Rebuilding refcount structure'], stdout: ['    3 corruptions'] },
    },
  },
  {
    name: 'empty-reftable-after-write',
    build: async (p) => {
      await make(p);
      await poke(p, RT, be64(0n));
      await overlapWrite(p);
    },
  },
  {
    name: 'empty-reftable-compressed',
    build: async (p) => {
      await make(p);
      await ioOk(p, 'write -P 0x31 64k 64k');
      await poke(p, RT, be64(0n));
      await io(p, 'write -c 0 64k');
    },
    intact: [{ offset: 65536, length: 65536, pattern: 0x31 }],
  },
  {
    name: 'empty-refblock',
    build: async (p) => {
      await make(p);
      await poke(p, RB, be64(0n));
    },
    facts: {
      check: {
        code: 2,
        stderr: ['ERROR cluster 0 refcount=0 reference=1', 'ERROR cluster 1 refcount=0 reference=1', 'ERROR cluster 2 refcount=0 reference=1', 'ERROR cluster 3 refcount=0 reference=1'],
      },
    },
  },
  {
    name: 'empty-refblock-compressed',
    build: async (p) => {
      await make(p);
      await ioOk(p, 'write -P 0x32 64k 64k');
      await poke(p, RB, be64(0n));
      await io(p, 'write -c 0 64k');
    },
    intact: [{ offset: 65536, length: 65536, pattern: 0x32 }],
  },
  {
    name: 'zero-reftable-size',
    build: async (p) => {
      await make(p);
      await poke(p, 56, be32(0));
    },
    facts: { repairAll: { code: 0, stdout: ['    2 corruptions'] } },
  },
  {
    name: 'reftable-offset-0',
    build: async (p) => {
      await make(p);
      await poke(p, 48, be64(0n));
    },
  },
  {
    name: 'reftable-offset-0-after-write',
    build: async (p) => {
      await make(p);
      await poke(p, 48, be64(0n));
      await io(p, 'write -P 0x2a 0 64k');
    },
  },
  {
    name: 'dirty-corrupt',
    build: async (p) => {
      await make(p);
      await poke(p, RT, be64(0xffff2a00n));
      await poke(p, 72, be64(1n));
    },
  },
  {
    name: 'dirty-corrupt-after-open',
    build: async (p) => {
      await make(p);
      await poke(p, RT, be64(0xffff2a00n));
      await poke(p, 72, be64(1n));
      // The writable open runs the automatic repair and fails ("Could not repair dirty image").
      await io(p, 'close');
    },
    facts: { repairAll: { code: 0, stdout: ['    1 leaked clusters'] } },
  },
  {
    name: 'dirty-lazy-refcounts-crash',
    build: async (p) => {
      await make(p, 64 * M, { compat: '1.1', lazy_refcounts: 'on' });
      await ioOk(p, 'write -P 0x44 2M 64k');
      const r = await runTool('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x45 0 256k', '-c', 'abort', p]);
      if (r.signal !== 'SIGABRT') throw new Error('qemu-io abort did not abort');
    },
    intact: [{ offset: 2 * M, length: 65536, pattern: 0x44 }, { offset: 0, length: 256 * 1024, pattern: 0x45 }],
  },
  // iotest 080: snapshot table entries and an L2 entry pointing far past the end of the file.
  {
    name: 'snapshot-l1-offset-unaligned',
    build: async (p) => {
      await make(p);
      await ioOk(p, 'write 0 512');
      await qemuImgSnapshot(p, 'create', 'test');
      await poke(p, 0x70000, be64(0x400200n));
    },
    facts: { check: { code: 2, stderr: ['ERROR snapshot 1 (test) l1_offset=0x400200: L1 table is not cluster aligned; snapshot table entry corrupted'] } },
  },
  {
    name: 'snapshot-l1-size-too-large',
    build: async (p) => {
      await make(p);
      await ioOk(p, 'write 0 512');
      await qemuImgSnapshot(p, 'create', 'test');
      await poke(p, 0x70008, be32(0x10000000));
    },
    facts: { check: { code: 2, stderr: ['ERROR snapshot 1 (test) l1_size=0x10000000: L1 table is too large; snapshot table entry corrupted'] } },
  },
  {
    name: 'l2-entry-past-eof',
    build: async (p) => {
      await make(p);
      await ioOk(p, 'write 0 512');
      await poke(p, L2, be64(0x800000ffffff0000n));
    },
    facts: {
      check: {
        code: 2,
        stderr: ['ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0xffffff0000 size 0x10000'],
      },
    },
  },
  // Beyond 060: snapshot-table checks and repairs (qcow2_check_read_snapshot_table,
  // qcow2_check_fix_snapshot_table), regressions of bugs found while comparing.
  {
    name: 'snapshot-extra-data-too-large',
    build: async (p) => {
      await make(p);
      await ioOk(p, 'write -P 0x66 0 64k');
      await qemuImgSnapshot(p, 'create', 's1');
      await poke(p, 0x70000 + 36, be32(1025));
    },
    facts: {
      check: { code: 1, stderr: ['qemu-img: ERROR failed to read the snapshot table: Too much extra metadata in snapshot table entry 0'] },
      repairAll: { code: 0, stderr: ['Discarding too much extra metadata in snapshot table entry 0 (1025 > 1024)'] },
    },
    intact: [{ offset: 0, length: 65536, pattern: 0x66 }],
  },
  {
    name: 'snapshot-count-too-large',
    build: async (p) => {
      await make(p);
      await ioOk(p, 'write 0 64k');
      await qemuImgSnapshot(p, 'create', 's1');
      await poke(p, 60, be32(65537));
    },
    facts: { check: { code: 1, stderr: ['qemu-img: ERROR snapshot table too large', 'You can force-remove all 1 overhanging snapshots with qemu-img check -r all'] } },
    // -r all rewrites a 65536-entry table: 30 s of qemu-img; the same bug is covered by the next case.
    repairModes: ['leaks'],
  },
  {
    // 1999 entries past the end of the file read as zeros: each is an incomplete v3 entry, so -r all
    // rewrites the table, and the new table's clusters overlap the old table's range (which runs
    // past the end of the file): QEMU's overlap check refuses the write and marks the image corrupt.
    name: 'snapshot-table-rewrite-overlap',
    build: async (p) => {
      await make(p);
      await ioOk(p, 'write -P 0x67 0 64k');
      await qemuImgSnapshot(p, 'create', 's1');
      await poke(p, 60, be32(2000));
    },
    facts: { repairAll: { code: 1, stderr: ['ERROR failed to update snapshot table: Input/output error'] } },
    intact: [{ offset: 0, length: 65536, pattern: 0x67 }],
  },
  // 64-bit values above 2^53 and int64 wrap-around (regressions of bugs found while comparing).
  {
    // The refcount block past the end of the file cannot be brought inside it: the new length is
    // past BDRV_MAX_LENGTH, the block layer refuses the truncation (EIO), -r all rebuilds instead.
    name: 'refblock-beyond-max-length',
    build: async (p) => {
      await make(p);
      await ioOk(p, 'write -P 0x68 0 64k');
      await poke(p, RT + 8, be64(0x7fffffffc0000000n));
    },
    facts: { repairAll: { code: 0, stderr: ['qemu-img: offset(9223372035781099520) exceeds maximum(9223372035781033984)', 'ERROR could not resize image: Input/output error'] } },
    intact: [{ offset: 0, length: 65536, pattern: 0x68 }],
  },
  {
    // An L1 offset that is negative as QEMU's int64 passes the end-of-file test and makes the
    // reference array grow to 2^48 entries: ENOMEM, the check fails.
    name: 'snapshot-l1-offset-negative',
    build: async (p) => {
      await make(p);
      await ioOk(p, 'write 0 64k');
      await qemuImgSnapshot(p, 'create', 's1');
      await poke(p, 0x70000, be64(0xffffffffffff0000n));
    },
    facts: { check: { code: 1, stderr: ['qemu-img: Check failed: Cannot allocate memory'] } },
  },
  {
    name: 'l1-entry-near-2^56',
    build: async (p) => {
      await make(p);
      await ioOk(p, 'write 0 64k');
      await poke(p, L1, be64(0x80fffffffffe0000n));
    },
    facts: {
      check: { code: 2, stderr: ['ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0xfffffffffe0000 size 0x10000'] },
    },
  },
  {
    name: 'l2-entry-compressed-far',
    build: async (p) => {
      await make(p);
      await ioOk(p, 'write 0 512');
      await poke(p, L2, be64(0xbfffffffffff0000n));
    },
  },
];

let dir = '';
/** Case name → path of the pristine (corrupted, not repaired) image. */
const built = new Map<string, string>();
let ext4Limit = false;

beforeAll(async () => {
  await requireQemu();
  dir = await mkdtemp(join(tmpdir(), 'qcow2ref-check060-'));
  await Promise.all(CASES.map(async (c) => {
    const path = join(dir, `${c.name}.qcow2`);
    await c.build(path);
    built.set(c.name, path);
  }));
  // The refcount-block-outside-image repair grows the file; how far the file system lets it grow
  // decides QEMU's answer, and the model assumes ext4's limit (src/check/check.ts MAX_FILE_BYTES).
  const probe = join(dir, 'size-probe');
  await writeFile(probe, '');
  const grows = async (n: bigint): Promise<boolean> => truncate(probe, Number(n)).then(() => true, () => false);
  ext4Limit = (await grows(MAX_FILE_BYTES)) && !(await grows(MAX_FILE_BYTES + 1n));
  await rm(probe, { force: true });
}, 60_000);

afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

/** Copies the pristine image of `c` to `<name>.<tag>.qcow2` and returns the base name. */
async function copyOf(c: Case, tag: string): Promise<string> {
  const name = `${c.name}.${tag}.qcow2`;
  await copyFile(built.get(c.name)!, join(dir, name));
  return name;
}

function expectSameText(ours: { code: number; stdout: string; stderr: string }, qemu: { code: number; stdout: string; stderr: string }, what: string): void {
  expect({ code: ours.code, stdout: ours.stdout, stderr: normalizeProgram(ours.stderr) }, what)
    .toEqual({ code: qemu.code, stdout: qemu.stdout, stderr: normalizeProgram(qemu.stderr) });
}

function expectFacts(text: { code: number; stdout: string; stderr: string }, facts: { code: number; stderr?: readonly string[]; stdout?: readonly string[] } | undefined): void {
  if (facts === undefined) return;
  expect(text.code).toBe(facts.code);
  for (const line of facts.stderr ?? []) expect(text.stderr.split('\n')).toContain(line);
  for (const line of facts.stdout ?? []) expect(text.stdout.split('\n')).toContain(line);
}

/** Guest bytes of `intact` read through qemu-io (must match the pattern) and through the model. */
async function expectIntact(path: string, intact: readonly Intact[] | undefined): Promise<void> {
  for (const r of intact ?? []) {
    const q = await runTool('qemu-io', ['-r', '-f', 'qcow2', '-c', `read -P ${r.pattern} ${r.offset} ${r.length}`, path]);
    expect(q.stdout + q.stderr, `qemu-io read -P ${r.pattern} ${r.offset} ${r.length} of ${path}`).not.toMatch(/Pattern verification failed|failed/);
    const reader = fileReader(path);
    try {
      const data = readGuest(loadImage(reader), BigInt(r.offset), r.length);
      expect(data.every((b) => b === r.pattern), `model read of ${path} at ${r.offset}`).toBe(true);
    } finally {
      reader.close();
    }
  }
}

describe('iotest 060/080 cases: qcow2-ref check vs qemu-img check', () => {
  it('covers every case it lists', () => {
    expect(built.size).toBe(CASES.length);
  });

  // The cases are independent (each works on its own copies): run them side by side.
  for (const c of CASES) {
    describe.concurrent(c.name, () => {
      it('check (human and JSON) prints and returns what qemu-img check does', async () => {
        const name = await copyOf(c, 'plain');
        const qemu = await qemuCheckText(dir, name);
        const ours = await ourCheckText(dir, name);
        expectSameText(ours, qemu, 'human');
        expectFacts(qemu, c.facts?.check);
        const qemuJson = await qemuCheckText(dir, name, { output: 'json' });
        const ourJson = await ourCheckText(dir, name, { output: 'json' });
        expectSameText(ourJson, qemuJson, 'json');
        if (qemuJson.stdout !== '') expect(parseQemuJson(ourJson.stdout)).toEqual(parseQemuJson(qemuJson.stdout));
        // A plain check never changes the file.
        expect(await sameContent(join(dir, name), built.get(c.name)!)).toBe(true);
      });

      for (const mode of c.repairModes ?? (['leaks', 'all'] as const)) {
        it(`check -r ${mode}: same output, same repaired file, intact data`, async () => {
          if (c.name === 'reftable-offset-0' && mode === 'all' && !ext4Limit) {
            throw new Error(`${dir} is not on a file system with ext4's file size limit (${MAX_FILE_BYTES} bytes), which this case's QEMU result depends on`);
          }
          const qName = await copyOf(c, `qemu-${mode}`);
          const oName = await copyOf(c, `ours-${mode}`);
          const qemu = await qemuCheckText(dir, qName, { repair: mode });
          const ours = await ourCheckText(dir, oName, { repair: mode });
          expectSameText({ ...ours, stdout: ours.stdout.replaceAll(oName, qName) }, qemu, `-r ${mode}`);
          if (mode === 'all') expectFacts(qemu, c.facts?.repairAll);
          // The repaired files: the same bytes, so qemu-img check says the same about both.
          expect(await sameContent(join(dir, oName), join(dir, qName)), 'repaired files identical').toBe(true);
          const afterQemu = await qemuCheckText(dir, qName, { output: 'json' });
          const afterOurs = await qemuCheckText(dir, oName, { output: 'json' });
          expect(afterOurs.code).toBe(afterQemu.code);
          expect(afterOurs.stdout.replaceAll(oName, qName)).toBe(afterQemu.stdout);
          if (afterQemu.code === 0) expect(afterOurs.code).toBe(0);
          await expectIntact(join(dir, qName), c.intact);
          await expectIntact(join(dir, oName), c.intact);
        });
      }
    });
  }

  it('the intact ranges are really written (the data checks are not vacuous)', async () => {
    for (const c of CASES) {
      for (const r of c.intact ?? []) {
        const bytes = await readFile(built.get(c.name)!);
        expect(bytes.includes(r.pattern), `${c.name} holds pattern ${r.pattern}`).toBe(true);
      }
    }
  });
});
