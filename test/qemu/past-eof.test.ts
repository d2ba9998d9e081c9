/**
 * Structures QEMU reads past the end of the file, side by side with qemu-img 7.2: the block layer's
 * bdrv_pread of a short file gives zeros there, so qemu-img opens such images and reports on them.
 * - a file that ends inside its first cluster after a complete header (the header extensions, the
 *   backing file name, the L1 and refcount tables past the end): `info`, `map`, `check` (human and
 *   JSON, exit codes 0 and 2) and `convert -O raw` behave as qemu-img's;
 * - a snapshot table that runs past the end of the file (wholly, or cut inside an entry's fixed
 *   part, its extra data or its name): `info` lists the snapshots with zeros for the missing bytes,
 *   as qemu-img does, and `check`, `map` and `convert` match qemu-img too;
 * - a LUKS header past the end of the file: `info` refuses it, as qemu-img does, because the zeros
 *   there are not a LUKS header (the message's wording is ours).
 * Every expected value is what qemu-img prints at test time; each fixture is also asserted to be
 * what it claims (a structure past the end of the file) and qemu-img's exit codes are pinned, so a
 * broken fixture cannot agree with itself. Needs qemu-img and qemu-io (fails without them).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { qemuImgCreate, qemuImgSnapshot, qemuIo } from '../../src/qemu/qemu-img.ts';
import { requireQemu, runTool } from '../../src/qemu/run.ts';
import { normalizeProgram, sameContent } from '../support/check-harness.ts';

const BIN = resolve(import.meta.dirname, '../../bin/qcow2-ref.mjs');
const M = 1024 * 1024;
let dir = '';

interface Output {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** `qemu-img ARGS` in the fixture directory. */
async function qemuImg(args: readonly string[]): Promise<Output> {
  const r = await runTool('qemu-img', args, { cwd: dir });
  if (r.code === null) throw new Error(`qemu-img ${args.join(' ')} was killed by ${r.signal}`);
  return { code: r.code, stdout: normalizeProgram(r.stdout), stderr: normalizeProgram(r.stderr) };
}

/** `qcow2-ref ARGS` (the built command, as a user runs it) in the fixture directory. */
function ours(args: readonly string[]): Output {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: dir, encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: normalizeProgram(r.stdout), stderr: normalizeProgram(r.stderr) };
}

/** The first `n` bytes of `from` written as `to` (both in the fixture directory). */
function cut(from: string, to: string, n: number): void {
  writeFileSync(join(dir, to), readFileSync(join(dir, from)).subarray(0, n));
}

/** Big-endian header fields of a fixture. */
function headerField(name: string, offset: number, bytes: 4 | 8): bigint {
  const b = readFileSync(join(dir, name));
  return bytes === 4 ? BigInt(b.readUInt32BE(offset)) : b.readBigUInt64BE(offset);
}

/**
 * info (human, JSON), map (human, JSON), check (human, JSON) and convert -O raw of `name` by both
 * tools: the same exit code, stdout and stderr, and the same raw file. Returns qemu-img's exit codes
 * by command so a caller can pin them.
 */
async function sideBySide(name: string): Promise<Record<string, number>> {
  const codes: Record<string, number> = {};
  const commands: readonly (readonly string[])[] = [
    ['info', name],
    ['info', '--output=json', name],
    ['map', name],
    ['map', '--output=json', name],
    ['check', name],
    ['check', '--output=json', name],
  ];
  for (const args of commands) {
    const want = await qemuImg(args);
    const got = ours(args);
    expect(got, `qcow2-ref ${args.join(' ')}`).toEqual(want);
    codes[args.slice(0, -1).join(' ')] = want.code;
  }
  const want = await qemuImg(['convert', '-O', 'raw', name, `${name}.qemu.raw`]);
  const got = ours(['convert', '-O', 'raw', name, `${name}.ours.raw`]);
  expect({ code: got.code, stderr: got.stderr }, `qcow2-ref convert ${name}`).toEqual({ code: want.code, stderr: want.stderr });
  codes['convert'] = want.code;
  if (want.code === 0) expect(await sameContent(join(dir, `${name}.qemu.raw`), join(dir, `${name}.ours.raw`)), `convert ${name}`).toBe(true);
  return codes;
}

beforeAll(async () => {
  await requireQemu();
  dir = await mkdtemp(join(tmpdir(), 'qcow2-ref-past-eof-'));
  // Defaults (64 KiB clusters), as `qemu-img create -f qcow2 x.qcow2 64M` makes it.
  await qemuImgCreate(join(dir, 'x.qcow2'), 64 * M, {});
  // 4 KiB clusters, data, and two snapshots: the snapshot table is the last thing in the file.
  const s = join(dir, 'snap.qcow2');
  await qemuImgCreate(s, M, { cluster_size: '4096' });
  await qemuIo(s, ['write -P 1 0 8k']);
  await qemuImgSnapshot(s, 'create', 's1');
  await qemuImgSnapshot(s, 'create', 'second-snapshot');
}, 60_000);

afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

describe('a file that ends inside its first cluster, after its header', () => {
  // 112: the whole extension area past the end; 300: the feature name table cut; 512: the case.
  for (const n of [112, 300, 512]) {
    it(`the first ${n} bytes of a new 64 MiB image: info, map, check, convert as qemu-img`, async () => {
      const name = `cut-${n}.qcow2`;
      cut('x.qcow2', name, n);
      // The extension area (to the end of the 64 KiB cluster), the refcount table and the L1 table lie past the end.
      expect(headerField(name, 20, 4)).toBe(16n);
      expect(headerField(name, 48, 8)).toBeGreaterThanOrEqual(BigInt(n));
      expect(headerField(name, 40, 8)).toBeGreaterThanOrEqual(BigInt(n));
      const codes = await sideBySide(name);
      // qemu-img opens it: info, map and convert succeed; check finds the tables past the end (2: corruptions).
      expect(codes).toEqual({ info: 0, 'info --output=json': 0, map: 0, 'map --output=json': 0, check: 2, 'check --output=json': 2, convert: 0 });
    }, 60_000);
  }

  it('a backing file name cut by the end of the file: info shows the part in the file', async () => {
    await qemuImgCreate(join(dir, 'overlay.qcow2'), 64 * M, { cluster_size: '4096', backing_file: 'x.qcow2', backing_fmt: 'qcow2' });
    const offset = Number(headerField('overlay.qcow2', 8, 8));
    const length = Number(headerField('overlay.qcow2', 16, 4));
    expect(length).toBe('x.qcow2'.length);
    cut('overlay.qcow2', 'overlay-cut.qcow2', offset + 4);
    for (const args of [['info', 'overlay-cut.qcow2'], ['info', '--output=json', 'overlay-cut.qcow2']]) {
      const want = await qemuImg(args);
      expect(want.code).toBe(0);
      expect(want.stdout).toContain('x.qc');
      expect(ours(args), args.join(' ')).toEqual(want);
    }
  });
});

describe('a LUKS header past the end of the file', () => {
  it('info refuses it as qemu-img does: the zeros there are not a LUKS header', async () => {
    const l = join(dir, 'luks.qcow2');
    await qemuImgCreate(l, M, { 'encrypt.format': 'luks', 'encrypt.key-secret': 'sec0', 'encrypt.iter-time': '10' }, ['--object', 'secret,id=sec0,data=past-eof']);
    cut('luks.qcow2', 'luks-cut.qcow2', 4096);
    const want = await qemuImg(['info', 'luks-cut.qcow2']);
    expect(want.code).toBe(1);
    expect(want.stderr).toContain('Volume is not in LUKS format');
    const got = ours(['info', 'luks-cut.qcow2']);
    expect(got.code).toBe(1);
    expect(got.stderr).toContain('Volume is not in LUKS format');
  });
});

describe('a snapshot table that runs past the end of the file', () => {
  it('is listed by info with zeros for the missing bytes, and check, map, convert match qemu-img', async () => {
    const offset = Number(headerField('snap.qcow2', 64, 8));
    expect(headerField('snap.qcow2', 60, 4)).toBe(2n);
    const full = readFileSync(join(dir, 'snap.qcow2')).length;
    // Entry 0: 40-byte fixed part, 24 bytes of extra data, id "1", name "s1" (then padding to 8).
    const cuts: Record<string, number> = {
      'whole table': offset,
      'fixed part of entry 0': offset + 20,
      'extra data of entry 0': offset + 50,
      'name of entry 1': full - 6,
    };
    for (const [what, n] of Object.entries(cuts)) {
      expect(n, what).toBeLessThan(full);
      const name = `snap-${n}.qcow2`;
      cut('snap.qcow2', name, n);
      const codes = await sideBySide(name);
      expect(codes['info'], what).toBe(0);
      expect(codes['convert'], what).toBe(0);
    }
    // The listing really comes from zeros: a table cut at its start lists two snapshots with empty ids and names.
    const info = await qemuImg(['info', '--output=json', `snap-${offset}.qcow2`]);
    const snaps = (JSON.parse(info.stdout) as { snapshots: { id: string; name: string }[] }).snapshots;
    expect(snaps.map((s) => [s.id, s.name])).toEqual([['', ''], ['', '']]);
  }, 120_000);
});
