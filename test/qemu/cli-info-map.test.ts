/**
 * `qcow2-ref info` and `qcow2-ref map` against qemu-img 7.2, text for text. Expected values come
 * from qemu-img run on the same files, never from our code:
 * - every image of the matrix (test/support/image-matrix.ts: cluster sizes 512 B – 2 MiB, refcount
 *   widths, compat 0.10/1.1, extended L2, zlib/zstd, lazy refcounts clean and dirty, qcow2 and raw
 *   backing files, external data files raw and not, metadata preallocation, snapshots, bitmaps,
 *   LUKS) plus extra images (relative data files, dirty and corrupt bits poked into the header,
 *   sparse and odd-sized raw backing files, a three-level chain, poked snapshot fields, non-ASCII
 *   names, a virtual size above 2^53): `info --output=json` is byte-identical to qemu-img's (and
 *   parses to the same report), `info` (human) is identical, `map --output=json` and `map` (human)
 *   are identical, exit codes included;
 * - the file policy: backing files only with --allow-backing, absolute / escaping backing and data
 *   file names refused without their flag (one line naming the image and the path), loops refused;
 * - --help, usage errors and the python3 fallback.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, openSync, writeSync, closeSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeaderLayout } from '../../generated/qcow2.ts';
import { fullyAllocated, probeHostAllocationsOrFull } from '../../src/io/seek-data.ts';
import { formatG3, sizeToStr } from '../../src/cli/info.ts';
import { main } from '../../src/cli/main.ts';
import { parseQemuJson, qemuImgCreate, qemuImgInfo, qemuImgSnapshot, qemuIo } from '../../src/qemu/qemu-img.ts';
import { requireQemu, runTool, type RunResult } from '../../src/qemu/run.ts';
import { buildImageMatrix, type MatrixImage } from '../support/image-matrix.ts';

const BIN = resolve(import.meta.dirname, '../../bin/qcow2-ref.mjs');
let dir = '';
let matrix: MatrixImage[] = [];
/** Extra images: name → { path, cwd for qemu-img (relative data files), our flags }. */
const extras: { name: string; path: string; cwd?: string; flags: string[]; qemuArgs?: string[] }[] = [];

const M = 1024 * 1024;

/** Runs our CLI in-process. */
async function cli(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main(argv, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) });
  return { code, stdout, stderr };
}

/** Runs bin/qcow2-ref.mjs in a child process (for a working directory or environment). */
function cliProcess(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: opts.cwd ?? dir, encoding: 'utf8', ...(opts.env !== undefined ? { env: opts.env } : {}) });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

async function qemuImg(args: string[], cwd?: string): Promise<RunResult> {
  return runTool('qemu-img', args, cwd !== undefined ? { cwd } : {});
}

/** Writes `bytes` at `offset` of the file (header pokes). */
function poke(path: string, offset: number, bytes: number[]): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, Buffer.from(bytes), 0, bytes.length, offset);
  } finally {
    closeSync(fd);
  }
}

function be64(v: bigint): number[] {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(v);
  return [...b];
}

/** Offset of the first snapshot table entry (header bytes 64..71). */
async function snapshotsOffset(path: string): Promise<number> {
  const { readFileSync } = await import('node:fs');
  return Number(readFileSync(path).readBigUInt64BE(HeaderLayout.snapshotsOffset.offset));
}

beforeAll(async () => {
  await requireQemu();
  dir = await mkdtemp(join(tmpdir(), 'qcow2-ref-info-map-'));
  matrix = await buildImageMatrix(dir);

  const x = join(dir, 'extra');
  mkdirSync(x);
  const add = (name: string, flags: string[] = [], cwd?: string, qemuArgs?: string[]): string => {
    const path = join(x, name);
    extras.push({ name, path, flags, ...(cwd !== undefined ? { cwd } : {}), ...(qemuArgs !== undefined ? { qemuArgs } : {}) });
    return path;
  };

  // Relative data file names (stored relative; qemu-img resolves them against its cwd = x).
  for (const raw of [false, true]) {
    const name = raw ? 'rel-data-raw.qcow2' : 'rel-data.qcow2';
    await qemuImgCreate(name, 4 * M, { data_file: raw ? 'rel-data-raw.data' : 'rel-data.data', ...(raw ? { data_file_raw: 'on' } : {}) }, [], 'qcow2', { cwd: x });
    await qemuIo(name, ['write -P 7 0 64k', 'write -z 1M 64k', 'write -P 8 2M 4k'], { cwd: x });
    add(name, [], x);
  }
  // Dirty and corrupt bits poked into a v3 header (incompatible features, bytes 72..79).
  for (const [name, bits] of [['dirty.qcow2', 1], ['corrupt.qcow2', 2], ['dirty-corrupt.qcow2', 3]] as const) {
    const p = add(name);
    await qemuImgCreate(p, 2 * M, { lazy_refcounts: 'on' });
    await qemuIo(p, ['write -P 9 0 64k']);
    poke(p, 79, [bits]);
  }
  // Sparse raw backing with holes, and a raw backing of odd length, under qcow2 overlays; a chain of 3.
  const sparse = join(x, 'sparse.raw');
  await qemuImgCreate(sparse, 6 * M, {}, [], 'raw');
  await qemuIo(sparse, ['write -P 1 64k 64k', 'write -P 2 3M 1M'], { format: 'raw' });
  const odd = join(x, 'odd.raw');
  writeFileSync(odd, Buffer.alloc(100_000, 0x5a));
  for (const [name, backing, size] of [['over-sparse.qcow2', 'sparse.raw', 8 * M], ['over-odd.qcow2', 'odd.raw', 1 * M]] as const) {
    const p = add(name, ['--allow-backing']);
    await qemuImgCreate(p, size, { backing_file: backing, backing_fmt: 'raw' });
    await qemuIo(p, ['write -P 3 0 4k', `write -z ${size / 2} 64k`]);
  }
  const mid = join(x, 'mid.qcow2');
  await qemuImgCreate(mid, 7 * M, { backing_file: 'sparse.raw', backing_fmt: 'raw', cluster_size: '16384', extended_l2: 'on' });
  await qemuIo(mid, ['write -P 4 1M 20k', 'write -z 3M 8k', 'discard 64k 16k']);
  const top = add('chain3.qcow2', ['--allow-backing']);
  await qemuImgCreate(top, 8 * M, { backing_file: 'mid.qcow2', backing_fmt: 'qcow2' });
  await qemuIo(top, ['write -P 5 2M 64k', 'write -c -P 6 6M 64k']);
  // Snapshots: several, with non-ASCII names, and poked vm-state-size / icount / vm clock / date.
  const snaps = add('snap-fields.qcow2');
  await qemuImgCreate(snaps, 1 * M, {});
  await qemuIo(snaps, ['write -P 1 0 64k']);
  for (const n of ['first', 'zweiter-ü', 'emoji-😀', 'a-rather-long-snapshot-name-to-overflow']) await qemuImgSnapshot(snaps, 'create', n);
  {
    // Entry 0: 40-byte header then extra data (vm_state_size_large, disk_size, icount).
    const at = await snapshotsOffset(snaps);
    poke(snaps, at + 16, [0x12, 0x34, 0x56, 0x78]); // date_sec
    poke(snaps, at + 24, be64(3_725_123_456_789n)); // vm_clock_nsec: 1h02m05.123s
    poke(snaps, at + 40, be64(1152n)); // vm_state_size_large → "1.12 KiB"
    poke(snaps, at + 56, be64((1n << 64n) - 1n)); // icount all ones → absent
  }
  const snaps2 = add('snap-fields2.qcow2');
  await qemuImgCreate(snaps2, 1 * M, {});
  await qemuImgSnapshot(snaps2, 'create', 's');
  {
    const at = await snapshotsOffset(snaps2);
    poke(snaps2, at + 40, be64((1n << 63n) + 12345n)); // vm_state_size_large above 2^63
    poke(snaps2, at + 56, be64((1n << 63n) + 5n)); // icount above 2^63 (printed signed)
    poke(snaps2, at + 24, be64(999_999_999_999_999n));
  }
  // Huge virtual size (above 2^53) and a size that is not a multiple of 512 (rounded down).
  const big = add('huge.qcow2');
  await qemuImgCreate(big, String(1n << 54n), { cluster_size: '2097152' });
  await qemuIo(big, [`write -P 1 ${(1n << 54n) - 65536n} 64k`]);
  const unaligned = add('unaligned.qcow2');
  await qemuImgCreate(unaligned, 3 * M, {});
  poke(unaligned, HeaderLayout.size.offset, be64(BigInt(3 * M - 100)));
  // Sizes with fractions in "virtual size" and "disk size".
  const small = add('size-1152.qcow2');
  await qemuImgCreate(small, 1152, { cluster_size: '512' });
  // Bitmap names and a bitmap-less image with a backing file but no backing format (poked away).
  const noFmt = add('no-backing-format.qcow2', ['--allow-backing']);
  await qemuImgCreate(noFmt, 2 * M, { backing_file: 'mid.qcow2', backing_fmt: 'qcow2' });
  {
    // Turn the backing-format extension (type 0xe2792aca) into an unknown one QEMU ignores.
    const { readFileSync } = await import('node:fs');
    const b = readFileSync(noFmt);
    const i = b.indexOf(Buffer.from([0xe2, 0x79, 0x2a, 0xca]));
    expect(i).toBeGreaterThan(0);
    poke(noFmt, i, [0x12, 0x34, 0x56, 0x78]);
  }
  // An absolute backing path (works with --allow-backing-path).
  const absB = add('abs-backing.qcow2', ['--allow-backing-path']);
  await qemuImgCreate(absB, 2 * M, { backing_file: join(x, 'mid.qcow2'), backing_fmt: 'qcow2' });
  await qemuIo(absB, ['write -P 1 0 4k']);
}, 600_000);

afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

/** Our flags for a matrix image (what it needs opened). */
function matrixFlags(img: MatrixImage): string[] {
  const flags: string[] = [];
  if (img.createOptions['backing_file'] !== undefined) flags.push('--allow-backing');
  if (img.createOptions['data_file'] !== undefined) flags.push('--allow-data-file-path');
  return flags;
}

/** qemu-img's open arguments for an image (LUKS needs its secret for map). */
function qemuOpen(img: { path: string; luksSecret?: string }, forMap: boolean): string[] {
  if (img.luksSecret !== undefined && forMap) {
    return ['--object', `secret,id=s0,data=${img.luksSecret}`, '--image-opts', `driver=qcow2,file.filename=${img.path},encrypt.key-secret=s0`];
  }
  return [img.path];
}

interface Case {
  name: string;
  path: string;
  cwd?: string;
  flags: string[];
  luksSecret?: string;
}

function allCases(): Case[] {
  return [
    ...matrix.map((m) => ({ name: m.name, path: m.path, flags: matrixFlags(m), ...(m.luksSecret !== undefined ? { luksSecret: m.luksSecret } : {}) })),
    ...extras.map((e) => ({ name: e.name, path: e.path, flags: e.flags, ...(e.cwd !== undefined ? { cwd: e.cwd } : {}) })),
  ];
}

/** Runs ours for a case: in-process with the absolute path, or in a child process in `cwd` with the file name. */
async function ours(c: Case, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  if (c.cwd !== undefined) return cliProcess([...args, ...c.flags, c.path.slice(c.cwd.length + 1)], { cwd: c.cwd });
  return cli(...args, ...c.flags, c.path);
}

async function theirs(c: Case, args: string[], forMap: boolean): Promise<RunResult> {
  if (c.cwd !== undefined) return qemuImg([...args, c.path.slice(c.cwd.length + 1)], c.cwd);
  return qemuImg([...args, ...qemuOpen(c, forMap)]);
}

/**
 * Map output can depend on how the kernel reports a file's allocation at the moment (ext4 reports
 * unwritten extents as holes while their pages are dirty); compare ours before and after qemu-img's
 * and retry until a run agrees with itself.
 */
async function compareMap(c: Case, args: string[]): Promise<string> {
  for (let attempt = 0; ; attempt++) {
    const a = await ours(c, args);
    const q = await theirs(c, args, true);
    const b = await ours(c, args);
    if (a.stdout === b.stdout && a.code === b.code) {
      expect(a.stdout, `${c.name}: ${args.join(' ')}`).toBe(q.stdout);
      expect(a.code, `${c.name}: exit code (stderr: ${a.stderr} / qemu: ${q.stderr})`).toBe(q.code);
      if (q.code !== 0) {
        expect(q.stderr).toContain('File contains external, encrypted or compressed clusters.');
        expect(a.stderr).toMatch(/^qcow2-ref: .*: File contains external, encrypted or compressed clusters\.\n$/);
      } else expect(a.stderr).toBe('');
      return a.stdout;
    }
    if (attempt >= 5) throw new Error(`${c.name}: our map kept changing`);
  }
}

describe('info equals qemu-img info', () => {
  it('covers the whole matrix and the extra images', () => {
    expect(allCases().length).toBeGreaterThan(40);
  });

  it('--output=json: byte for byte, and the same parsed report (every image)', async () => {
    for (const c of allCases()) {
      const q = await theirs(c, ['info', '--output=json'], false);
      expect(q.code, `${c.name}: ${q.stderr}`).toBe(0);
      const o = await ours(c, ['info', '--output=json']);
      expect(o.stderr, c.name).toBe('');
      expect(o.code, c.name).toBe(0);
      expect(o.stdout, c.name).toBe(q.stdout);
      expect(parseQemuJson(o.stdout), c.name).toEqual(parseQemuJson(q.stdout));
    }
  }, 300_000);

  it('human: identical text (every image)', async () => {
    for (const c of allCases()) {
      const q = await theirs(c, ['info'], false);
      const o = await ours(c, ['info']);
      expect(o.code, c.name).toBe(0);
      expect(o.stdout, c.name).toBe(q.stdout);
    }
  }, 300_000);

  it('--backing-chain (json and human) for every image with a backing file', async () => {
    const chains = allCases().filter((c) => c.flags.some((f) => f.startsWith('--allow-backing')));
    expect(chains.length).toBeGreaterThanOrEqual(8);
    for (const c of chains) {
      for (const args of [['info', '--backing-chain', '--output=json'], ['info', '--backing-chain']]) {
        const q = await theirs(c, args, false);
        expect(q.code, `${c.name}: ${q.stderr}`).toBe(0);
        const o = await ours(c, args);
        expect(o.code, `${c.name}: ${o.stderr}`).toBe(0);
        expect(o.stdout, `${c.name} ${args.join(' ')}`).toBe(q.stdout);
      }
    }
    // The typed driver reads our chain as it reads qemu-img's.
    const c = extras.find((e) => e.name === 'chain3.qcow2')!;
    const parsed = await qemuImgInfo(c.path, { backingChain: true });
    const o = await cli('info', '--backing-chain', '--allow-backing', '--output=json', c.path);
    expect(parseQemuJson(o.stdout)).toEqual(parsed as unknown);
    expect(parsed.map((p) => p.format)).toEqual(['qcow2', 'qcow2', 'raw']);
  }, 300_000);

  it('reports the header of an image whose backing file is missing (nothing else is opened)', async () => {
    const p = join(dir, 'extra', 'missing-backing.qcow2');
    await qemuImgCreate(p, M, { backing_file: 'nowhere.qcow2', backing_fmt: 'qcow2' }, ['-u']);
    for (const args of [['info'], ['info', '--output=json']]) {
      const q = await qemuImg([...args, p]);
      const o = await cli(...args, p);
      expect(o.stdout).toBe(q.stdout);
      expect(o.code).toBe(0);
    }
    const q = await qemuImg(['info', '--backing-chain', p]);
    const o = await cli('info', '--backing-chain', '--allow-backing', p);
    expect(q.code).toBe(1);
    expect(o.code).toBe(1);
    expect(o.stderr).toMatch(/^qcow2-ref: .*nowhere\.qcow2: Could not open '.*nowhere\.qcow2': No such file or directory\n$/);
  });
});

describe('map equals qemu-img map', () => {
  it('--output=json: byte for byte (every image)', async () => {
    const outputs: string[] = [];
    for (const c of allCases()) outputs.push(await compareMap(c, ['map', '--output=json']));
    // The cases reach QEMU's special paths: file holes in a metadata-preallocated image, raw backing
    // holes, unallocated ranges below the chain, hidden offsets (compressed, encrypted).
    const all = outputs.join('\n');
    expect(all).toContain('"present": true, "zero": true, "data": true, "offset"');
    expect(all).toMatch(/"depth": 2, "present": true, "zero": true, "data": false, "offset"/);
    expect(all).toContain('"depth": 1, "present": false, "zero": true, "data": false}');
    expect(all).toContain('"depth": 0, "present": true, "zero": false, "data": true}');
  }, 600_000);

  it('human: identical table and exit code (every image)', async () => {
    for (const c of allCases()) await compareMap(c, ['map']);
  }, 600_000);

  it('--start-offset and --max-length', async () => {
    const c = extras.find((e) => e.name === 'chain3.qcow2')!;
    for (const r of [['-s', '1M', '-l', '3M'], ['--start-offset=65536', '--max-length=1'], ['-s', '8M'], ['-s', '100M'], ['-s', '1536k', '-l', '0x3000']]) {
      await compareMap({ name: `chain3 ${r.join(' ')}`, path: c.path, flags: c.flags }, ['map', '--output=json', ...r]);
      await compareMap({ name: `chain3 ${r.join(' ')}`, path: c.path, flags: c.flags }, ['map', ...r]);
    }
  });
});

describe('the file policy', () => {
  it('map refuses a backing file without --allow-backing and says which flag allows it', async () => {
    const c = extras.find((e) => e.name === 'over-odd.qcow2')!;
    const o = await cli('map', c.path);
    expect(o.code).toBe(1);
    expect(o.stdout).toBe('');
    expect(o.stderr).toBe(`qcow2-ref: ${c.path}: has backing file 'odd.raw', which is opened only with --allow-backing (the image's header should not choose which files are read)\n`);
    // info --backing-chain too; plain info reads only the header.
    expect((await cli('info', '--backing-chain', c.path)).code).toBe(1);
    expect((await cli('info', c.path)).code).toBe(0);
  });

  it('absolute and escaping backing names are refused without --allow-backing-path', async () => {
    const abs = extras.find((e) => e.name === 'abs-backing.qcow2')!;
    const o = await cli('map', '--allow-backing', abs.path);
    expect(o.code).toBe(1);
    expect(o.stderr).toBe(`qcow2-ref: ${abs.path}: backing file path '${join(dir, 'extra', 'mid.qcow2')}' is absolute; refusing to open it (--allow-backing-path allows it)\n`);
    const sub = join(dir, 'extra', 'sub');
    mkdirSync(sub, { recursive: true });
    const esc = join(sub, 'escape.qcow2');
    await qemuImgCreate(esc, M, { backing_file: '../mid.qcow2', backing_fmt: 'qcow2' });
    const e = await cli('info', '--backing-chain', '--allow-backing', esc);
    expect(e.code).toBe(1);
    expect(e.stderr).toBe(`qcow2-ref: ${esc}: backing file path '../mid.qcow2' leads outside the image's directory; refusing to open it (--allow-backing-path allows it)\n`);
    const ok = await cli('map', '--output=json', '--allow-backing-path', esc);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toBe((await qemuImg(['map', '--output=json', esc])).stdout);
    const proto = join(sub, 'proto.qcow2');
    await qemuImgCreate(proto, M, { backing_file: 'nbd://localhost:1/x', backing_fmt: 'raw' }, ['-u']);
    const p = await cli('map', '--allow-backing', proto);
    expect(p.stderr).toBe(`qcow2-ref: ${proto}: backing file path 'nbd://localhost:1/x' names a protocol; refusing to open it (--allow-backing-path allows it)\n`);
    expect((await cli('map', '--allow-backing-path', proto)).stderr).toContain('names a protocol; qcow2-ref opens only local files');
  });

  it('an absolute data file name is refused for map without --allow-data-file-path (info needs no data file)', async () => {
    const img = matrix.find((m) => m.name === 'data-file')!;
    const o = await cli('map', img.path);
    expect(o.code).toBe(1);
    expect(o.stderr).toBe(`qcow2-ref: ${img.path}: data file path '${img.createOptions['data_file']}' is absolute; refusing to use it (--allow-data-file-path allows it)\n`);
    expect((await cli('info', img.path)).code).toBe(0);
  });

  it('a backing loop is refused (qemu-img info --backing-chain refuses it too; qemu-img map never returns)', async () => {
    const a = join(dir, 'extra', 'loop-a.qcow2');
    const b = join(dir, 'extra', 'loop-b.qcow2');
    await qemuImgCreate(a, M, { backing_file: 'loop-b.qcow2', backing_fmt: 'qcow2' }, ['-u']);
    await qemuImgCreate(b, M, { backing_file: 'loop-a.qcow2', backing_fmt: 'qcow2' }, ['-u']);
    const q = await qemuImg(['info', '--backing-chain', a]);
    expect(q.code).toBe(1);
    expect(q.stderr).toContain(`Backing file '${a}' creates an infinite loop.`);
    for (const args of [['info', '--backing-chain'], ['map']]) {
      const o = await cli(...args, '--allow-backing', a);
      expect(o.code).toBe(1);
      expect(o.stderr).toBe(`qcow2-ref: ${a}: Backing file '${a}' creates an infinite loop.\n`);
    }
  });
});

describe('command line', () => {
  it('--help of both commands answers and exits 0', async () => {
    for (const cmd of ['info', 'map']) {
      const o = await cli(cmd, '--help');
      expect(o.code).toBe(0);
      expect(o.stdout).toMatch(new RegExp(`^Usage: qcow2-ref ${cmd} `));
      for (const s of ['--output=human', '--output=json', '--allow-backing', 'Exit codes:', 'CVE-2024-32498']) expect(o.stdout).toContain(s);
    }
    expect((await cli('--help')).stdout).toMatch(/info \[--output=human\|json\][\s\S]*map \[--output=human\|json\]/);
  });

  it('usage errors exit 2, unreadable and undecodable images exit 1 with one line', async () => {
    for (const args of [['info'], ['map'], ['info', '--output=xml', 'x'], ['map', '--bogus', 'x'], ['info', 'a', 'b'], ['map', '-s', 'lots', 'x']]) {
      const o = await cli(...args);
      expect(o.code, args.join(' ')).toBe(2);
      expect(o.stderr).toMatch(/^qcow2-ref: (info|map): .*\nTry 'qcow2-ref --help' for more information\.\n$/);
    }
    const missing = join(dir, 'nope.qcow2');
    for (const cmd of ['info', 'map']) {
      const o = await cli(cmd, missing);
      expect(o.code).toBe(1);
      expect(o.stderr).toBe(`qcow2-ref: ${missing}: Could not open '${missing}': No such file or directory\n`);
    }
    const junk = join(dir, 'junk.qcow2');
    writeFileSync(junk, Buffer.alloc(4096, 1));
    expect((await cli('info', junk)).stderr).toBe(`qcow2-ref: ${junk}: header.magic at 0x0: Image is not in qcow2 format\n`);
    const bad = join(dir, 'bad-cluster-bits.qcow2');
    await qemuImgCreate(bad, M, {});
    poke(bad, 23, [30]);
    const o = await cli('map', bad);
    expect(o.code).toBe(1);
    expect(o.stderr).toMatch(/^qcow2-ref: .*bad-cluster-bits\.qcow2: header\.cluster_bits at 0x14: .*\n$/);
  });

  it('without python3 the files are taken as fully allocated, with one warning line', async () => {
    let warnings = 0;
    const img = matrix.find((m) => m.name === 'defaults')!;
    const r = probeHostAllocationsOrFull([img.path], () => warnings++, '/nonexistent/python3');
    expect(warnings).toBe(1);
    expect(r).toEqual([fullyAllocated(img.path)]);
    const o = cliProcess(['map', '--output=json', img.path], { env: { PATH: '/nonexistent' } });
    expect(o.code).toBe(0);
    expect(o.stderr).toMatch(/^qcow2-ref: warning: cannot probe file allocation with SEEK_DATA\/SEEK_HOLE: python3 not found; treating the files as fully allocated.*\n$/);
    // A file QEMU never considers metadata-preallocated maps the same either way.
    expect(o.stdout).toBe((await qemuImg(['map', '--output=json', img.path])).stdout);
  });

  it('size_to_str and %0.3g as glibc prints them', () => {
    expect([0n, 999n, 1000n, 1152n, 1023488n, 221184n, 1n << 60n, (1n << 64n) - 1n].map(sizeToStr)).toEqual([
      '0 B', '999 B', '0.977 KiB', '1.12 KiB', '1e+03 KiB', '216 KiB', '1 EiB', '16 EiB',
    ]);
    expect([0.5, 1.125, 1.135, 100, 0.0001, 12345].map(formatG3)).toEqual(['0.5', '1.12', '1.14', '100', '0.0001', '1.23e+04']);
  });
});

