/**
 * `qcow2-ref convert` against `qemu-img convert` 7.2. Expected values come from QEMU, never from our
 * code: for every image of the matrix (test/support/image-matrix.ts, LUKS excepted) and for raw
 * inputs, in every direction (qcow2 → raw, qcow2 → qcow2, raw → qcow2, compressed, -o variants):
 * - the guest content is identical (`qemu-img compare` of our output with the input, and with
 *   qemu-img convert's output);
 * - qcow2 outputs pass `qemu-img check`; compressed outputs hold exactly as many compressed clusters
 *   as qemu-img's (so they really are compressed);
 * - raw outputs are byte-identical to qemu-img's and have the same holes (SEEK_DATA/SEEK_HOLE), so
 *   unallocated and zero ranges stay sparse;
 * - whether our qcow2 output is byte-identical to qemu-img's is measured for every case and checked
 *   against the explicit list of expected differences below (docs/layout-differences.md says why).
 * Then: the backing-file policy, atomic replacement of OUT (nothing half-written, no temporary file
 * left), usage errors and --help, the progress bar (drawn only on a terminal), memory bounded in a
 * child process for a 64 GiB sparse image and for dense inputs of growing size, and the reader-based
 * opening of images (src/io/open-file.ts, rawReaderBackingSource).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeaderLayout, L1EntryMasks } from '../../generated/qcow2.ts';
import { isAllocatedSectorsMin } from '../../src/io/convert.ts';
import { parseTargetOptions, runConvert } from '../../src/cli/convert.ts';
import { main } from '../../src/cli/main.ts';
import * as api from '../../src/index.ts';
import { openImageFile, withOpenImageFile } from '../../src/io/open-file.ts';
import { rawBackingSource, rawReaderBackingSource } from '../../src/model/backing.ts';
import { HostReaderError } from '../../src/model/host-reader.ts';
import { checkCounter, qemuImgCheck, qemuImgCompare, qemuImgConvert, qemuImgCreate, qemuIo } from '../../src/qemu/qemu-img.ts';
import { requireQemu } from '../../src/qemu/run.ts';
import { buildImageMatrix, type MatrixImage } from '../support/image-matrix.ts';
import { probeHostAllocation } from '../support/host-allocation.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const BIN = join(ROOT, 'bin/qcow2-ref.mjs');
const M = 1024 * 1024;
let dir = '';
let matrix: MatrixImage[] = [];

/** Runs our CLI in-process. */
async function cli(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main(argv, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) });
  return { code, stdout, stderr };
}

/** Runs bin/qcow2-ref.mjs in a child process. */
function cliProcess(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: dir, encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Runs `qcow2-ref ARGS` in a child process and returns its exit code and peak resident set size
 * (getrusage ru_maxrss, in bytes), measured by the child itself at exit.
 */
function measuredRun(args: string[]): { code: number; maxRss: number; stderr: string } {
  const script = [
    "import { register } from 'tsx/esm/api';",
    'register();',
    "const { main } = await import('./src/cli/main.ts');",
    'const code = await main(process.argv.slice(1));',
    "process.stderr.write('\\nRESULT ' + JSON.stringify({ code, maxRss: process.resourceUsage().maxRSS * 1024 }) + '\\n');",
    'process.exitCode = code;',
  ].join('\n');
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 600_000 });
  const m = /RESULT (\{.*\})/.exec(r.stderr);
  if (m === null) throw new Error(`child failed (status ${r.status}): ${r.stderr}`);
  const res = JSON.parse(m[1]!) as { code: number; maxRss: number };
  return { ...res, stderr: r.stderr };
}

function sameFile(a: string, b: string): boolean {
  return readFileSync(a).equals(readFileSync(b));
}

/** Files in `d` whose names say they are convert's temporary files. */
function tempFiles(d: string): string[] {
  return readdirSync(d).filter((n) => n.includes('.qcow2-ref-') && n.endsWith('.tmp'));
}

async function expectSameContent(a: string, fa: string, b: string, fb: string): Promise<void> {
  const r = await qemuImgCompare(a, b, { formatA: fa, formatB: fb });
  expect(r.identical, `${a} vs ${b}: ${r.stdout}${r.stderr}`).toBe(true);
}

async function expectCleanCheck(path: string): Promise<number> {
  const c = await qemuImgCheck(path);
  expect(c.code, `${path}: ${c.stdout}${c.stderr}`).toBe(0);
  return Number(checkCounter(c.json!, 'compressed-clusters'));
}

/** Flags that let our convert open what qemu-img opens for a matrix image. */
const OPEN_FLAGS = ['--allow-backing', '--allow-data-file-path'];

/**
 * (case, conversion) pairs whose qcow2 output is NOT byte-identical to qemu-img convert's, each with
 * its reason (docs/layout-differences.md, "convert"). Every other case must be byte-identical.
 */
const EXPECTED_LAYOUT_DIFFERENCES: Readonly<Record<string, string>> = {};

/** Byte identity of our qcow2 outputs with qemu-img's, by case (reported at the end). */
const identity = new Map<string, boolean>();

beforeAll(async () => {
  await requireQemu();
  dir = await mkdtemp(join(tmpdir(), 'qcow2-ref-convert-'));
  matrix = (await buildImageMatrix(dir)).filter((m) => m.luksSecret === undefined);
}, 300_000);

afterAll(async () => {
  if (identity.size > 0) {
    const same = [...identity].filter(([, v]) => v).length;
    console.log(`convert: qcow2 outputs byte-identical to qemu-img convert: ${same}/${identity.size}` +
      [...identity].filter(([, v]) => !v).map(([k]) => `\n  differs: ${k}`).join(''));
  }
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

/** Converts with ours and with qemu-img; checks content, check, compressed count; records identity. */
async function compareWithQemu(
  name: string,
  input: string,
  inFormat: 'qcow2' | 'raw',
  outFormat: 'qcow2' | 'raw',
  opts: { compress?: boolean; options?: Record<string, string> } = {},
): Promise<void> {
  const tag = `${name} -> ${outFormat}${opts.compress === true ? ' -c' : ''}${opts.options !== undefined ? ` -o ${Object.entries(opts.options).map(([k, v]) => `${k}=${v}`).join(',')}` : ''}`;
  const safe = tag.replace(/[^A-Za-z0-9.=-]+/g, '_');
  const ours = join(dir, `ours-${safe}.${outFormat}`);
  const theirs = join(dir, `qemu-${safe}.${outFormat}`);
  const o = opts.options !== undefined ? ['-o', Object.entries(opts.options).map(([k, v]) => `${k}=${v}`).join(',')] : [];
  const r = await cli('convert', '-f', inFormat, '-O', outFormat, ...(opts.compress === true ? ['-c'] : []), ...o, ...OPEN_FLAGS, input, ours);
  expect(r, tag).toEqual({ code: 0, stdout: '', stderr: '' });
  await qemuImgConvert(input, theirs, {
    inFormat,
    outFormat,
    ...(opts.compress === true ? { compress: true } : {}),
    ...(opts.options !== undefined ? { options: opts.options } : {}),
  });
  await expectSameContent(ours, outFormat, input, inFormat);
  await expectSameContent(ours, outFormat, theirs, outFormat);
  if (outFormat === 'raw') {
    expect(sameFile(ours, theirs), `${tag}: raw bytes`).toBe(true);
    // Sparse exactly where qemu-img's output is: unallocated and zero ranges are holes.
    expect(probeHostAllocation(ours).data, `${tag}: holes`).toEqual(probeHostAllocation(theirs).data);
  } else {
    const ourCompressed = await expectCleanCheck(ours);
    const theirCompressed = await expectCleanCheck(theirs);
    expect(ourCompressed, `${tag}: compressed clusters`).toBe(theirCompressed);
    if (opts.compress === true) expect(ourCompressed, `${tag}: compressed clusters`).toBeGreaterThan(0);
    const same = sameFile(ours, theirs);
    identity.set(tag, same);
    expect(same ? undefined : 'differs', tag).toBe(EXPECTED_LAYOUT_DIFFERENCES[tag] === undefined ? undefined : 'differs');
  }
  await rm(ours, { force: true });
  await rm(theirs, { force: true });
}

describe('convert against qemu-img convert, every image of the matrix', () => {
  it('qcow2 -> raw: same bytes and same holes as qemu-img', async () => {
    for (const m of matrix) await compareWithQemu(m.name, m.path, 'qcow2', 'raw');
  }, 300_000);

  it('qcow2 -> qcow2: same content, clean check, layout measured', async () => {
    for (const m of matrix) await compareWithQemu(m.name, m.path, 'qcow2', 'qcow2');
  }, 300_000);

  it('qcow2 -> qcow2 -c: same content, clean check, as many compressed clusters as qemu-img', async () => {
    for (const m of matrix) await compareWithQemu(m.name, m.path, 'qcow2', 'qcow2', { compress: true });
  }, 300_000);

  it('raw -> qcow2 (plain and -c), from raw files with holes', async () => {
    for (const m of matrix.slice(0, 8)) {
      const raw = join(dir, `in-${m.name}.raw`);
      await qemuImgConvert(m.path, raw, { outFormat: 'raw' });
      await compareWithQemu(`${m.name}.raw`, raw, 'raw', 'qcow2');
      await compareWithQemu(`${m.name}.raw`, raw, 'raw', 'qcow2', { compress: true });
      await compareWithQemu(`${m.name}.raw`, raw, 'raw', 'raw');
      await rm(raw);
    }
  }, 300_000);
});

describe('convert -o: the creation options of the output', () => {
  const variants: Record<string, string>[] = [
    { cluster_size: '512' },
    { cluster_size: '4k' },
    { cluster_size: '2M' },
    { compat: '0.10' },
    { refcount_bits: '1' },
    { refcount_bits: '64' },
    { extended_l2: 'on', cluster_size: '16k' },
    { lazy_refcounts: 'on' },
    { preallocation: 'metadata' },
  ];
  it('qcow2 -> qcow2 -o …, plain and compressed', async () => {
    const input = matrix.find((m) => m.name === 'defaults')!.path;
    for (const options of variants) {
      await compareWithQemu('defaults', input, 'qcow2', 'qcow2', { options });
      if (options.preallocation === undefined) await compareWithQemu('defaults', input, 'qcow2', 'qcow2', { options, compress: true });
    }
    await compareWithQemu('defaults', input, 'qcow2', 'qcow2', { options: { compression_type: 'zstd' }, compress: true });
  }, 300_000);

  it('parses option lists as create does, and refuses what convert cannot do', () => {
    expect(parseTargetOptions(['cluster_size=4k,compat=0.10', 'nolazy_refcounts'])).toEqual({ clusterSize: 4096, compat: '0.10', lazyRefcounts: false });
    expect(() => parseTargetOptions(['backing_file=x'])).toThrow(/not supported by qcow2-ref convert/);
    expect(() => parseTargetOptions(['bogus=1'])).toThrow("Invalid parameter 'bogus'");
    expect(() => parseTargetOptions([',x'])).toThrow('Invalid option list: ,x');
  });

  it('an option set qemu-img refuses: exit 1, qemu-img\'s message, OUT untouched', async () => {
    const input = matrix.find((m) => m.name === 'defaults')!.path;
    const out = join(dir, 'refused.qcow2');
    writeFileSync(out, 'old content');
    const r = await cli('convert', '-O', 'qcow2', '-o', 'compat=0.10,lazy_refcounts=on', input, out);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^qcow2-ref: .*refused\.qcow2: Lazy refcounts only supported with compatibility level 1\.1 and above.*\n$/);
    expect(readFileSync(out, 'utf8')).toBe('old content');
    expect(tempFiles(dir)).toEqual([]);
  });
});

describe('raw inputs', () => {
  it('an odd-sized raw file: the last sector is padded with zeros, as qemu-img does', async () => {
    const odd = join(dir, 'odd.raw');
    writeFileSync(odd, Buffer.alloc(100_000, 0x5a));
    await compareWithQemu('odd', odd, 'raw', 'qcow2');
    await compareWithQemu('odd', odd, 'raw', 'qcow2', { compress: true });
    await compareWithQemu('odd', odd, 'raw', 'raw');
  });

  it('a raw file with data and zero runs of every size: zero detection (-S 4k) as qemu-img', async () => {
    const p = join(dir, 'runs.raw');
    const b = Buffer.alloc(4 * M);
    let at = 0;
    // Data, then zero runs of 512 B .. 64 KiB at aligned and unaligned places.
    for (const zeroRun of [512, 1024, 3584, 4096, 4608, 8192, 12800, 65536, 512, 7680]) {
      b.fill(0x33, at, at + 5000);
      at += 5000 + zeroRun;
    }
    writeFileSync(p, b);
    await compareWithQemu('runs', p, 'raw', 'raw');
    await compareWithQemu('runs', p, 'raw', 'qcow2');
    await compareWithQemu('runs', p, 'raw', 'qcow2', { options: { cluster_size: '512' } });
    await compareWithQemu('runs', p, 'raw', 'qcow2', { compress: true, options: { cluster_size: '4k' } });
  });

  it('is_allocated_sectors_min: zero runs shorter than -S are written with the data', () => {
    const buf = new Uint8Array(64 * 512);
    buf.fill(1, 0, 512); // sector 0 data
    buf.fill(1, 4 * 512, 5 * 512); // sectors 1..3 zero (short run), 4 data
    // sectors 5..63 zero (long run) → the data part ends at sector 8 (aligned up to 8 sectors).
    expect(isAllocatedSectorsMin(buf, 0, 64, 8, 0n, 8)).toEqual({ allocated: true, count: 8 });
    expect(isAllocatedSectorsMin(buf, 8, 56, 8, 8n, 8)).toEqual({ allocated: false, count: 56 });
    expect(isAllocatedSectorsMin(new Uint8Array(512 * 3), 0, 3, 8, 5n, 8)).toEqual({ allocated: false, count: 3 });
  });
});

describe('backing files of the input: only with --allow-backing', () => {
  it('refused without the flag (one line naming the image), converted through the chain with it', async () => {
    const m = matrix.find((x) => x.name === 'overlay-qcow2-backing')!;
    const out = join(dir, 'chain.raw');
    const r = await cli('convert', m.path, out);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^qcow2-ref: .*overlay-qcow2-backing\.qcow2: has backing file '.*', which is opened only with --allow-backing.*\n$/);
    expect(r.stderr.split('\n').length).toBe(2);
    expect(existsSync(out)).toBe(false);
    expect(tempFiles(dir)).toEqual([]);
    const ok = await cli('convert', '--allow-backing', m.path, out);
    expect(ok.code).toBe(0);
    await expectSameContent(out, 'raw', m.path, 'qcow2');
    await rm(out);
  });

  it('a raw backing file whose length is not a multiple of 512: same bytes as qemu-img (regression)', async () => {
    // Found by the conformance harness: a status extent ending at the backing file's odd length
    // (84448 bytes) made a chunk of 164.9375 sectors and convert threw a RangeError. qemu-img's
    // convert_iteration_sectors rounds each status length up to whole sectors (DIV_ROUND_UP).
    const back = join(dir, 'odd-back.raw');
    const bytes = new Uint8Array(84448);
    for (let i = 0; i < bytes.length; i++) bytes[i] = 1 + (i % 251);
    writeFileSync(back, bytes);
    const top = join(dir, 'odd-top.qcow2');
    expect(spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'odd-back.raw', '-F', 'raw', top, '1M'], { cwd: dir }).status).toBe(0);
    await qemuIo(top, ['write -P 7 0 4096', 'write -P 9 200000 1000']); // 64K..128K stays backed
    const ours = join(dir, 'odd-ours.raw');
    const theirs = join(dir, 'odd-theirs.raw');
    const r = await cli('convert', '--allow-backing', top, ours);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    await qemuImgConvert(top, theirs);
    expect(sameFile(ours, theirs)).toBe(true);
  });

  it('an absolute data file path is refused without --allow-data-file-path', async () => {
    const m = matrix.find((x) => x.name === 'data-file')!;
    const r = await cli('convert', m.path, join(dir, 'df.raw'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/data file path '.*' is absolute; refusing to use it \(--allow-data-file-path allows it\)\n$/);
  });
});

describe('nothing half-written', () => {
  it('a corrupt input: exit 1 naming IN, the existing OUT unchanged, no temporary file left', async () => {
    const p = join(dir, 'corrupt.qcow2');
    await qemuImgCreate(p, 4 * M, {});
    await qemuIo(p, ['write -P 1 0 64k', 'write -c -P 2 1M 64k']);
    // Overwrite the compressed cluster's deflate stream with garbage: it cannot be decompressed.
    const bytes = readFileSync(p);
    const l1 = Number(bytes.readBigUInt64BE(HeaderLayout.l1TableOffset.offset));
    const l2 = Number(bytes.readBigUInt64BE(l1) & L1EntryMasks.l2Offset);
    const descriptor = bytes.readBigUInt64BE(l2 + 16 * 8);
    expect(descriptor >> 62n).toBe(1n); // compressed
    bytes.fill(0xff, Number(descriptor & ((1n << 54n) - 1n)), Number(descriptor & ((1n << 54n) - 1n)) + 64);
    writeFileSync(p, bytes);
    // qemu-img convert fails on it too.
    await expect(qemuImgConvert(p, join(dir, 'corrupt-qemu.raw'))).rejects.toThrow();
    const out = join(dir, 'keep.raw');
    writeFileSync(out, 'previous');
    const r = await cli('convert', p, out);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^qcow2-ref: .*corrupt\.qcow2: error while reading 65536 bytes at guest offset 1048576: compressed cluster cannot be decompressed\n$/);
    expect(r.stderr.split('\n').length).toBe(2);
    expect(readFileSync(out, 'utf8')).toBe('previous');
    expect(tempFiles(dir)).toEqual([]);
  });

  it('a missing input and an OUT that is a directory: exit 1, one line', async () => {
    const a = await cli('convert', join(dir, 'nope.qcow2'), join(dir, 'x.raw'));
    expect(a.code).toBe(1);
    expect(a.stderr).toMatch(/nope\.qcow2: Could not open '.*nope\.qcow2': No such file or directory\n$/);
    const input = matrix.find((m) => m.name === 'defaults')!.path;
    const b = await cli('convert', input, dir);
    expect(b.code).toBe(1);
    expect(b.stderr).toMatch(/Is a directory\n$/);
    expect(tempFiles(dir)).toEqual([]);
  });

  it('an existing OUT is replaced only by the complete output', async () => {
    const input = matrix.find((m) => m.name === 'defaults')!.path;
    const out = join(dir, 'replace.qcow2');
    writeFileSync(out, 'x'.repeat(10_000));
    expect((await cli('convert', '-O', 'qcow2', input, out)).code).toBe(0);
    await expectSameContent(out, 'qcow2', input, 'qcow2');
    expect(tempFiles(dir)).toEqual([]);
    await rm(out);
  });
});

describe('the command line', () => {
  it('--help, and usage errors exit 2', async () => {
    const h = await cli('convert', '--help');
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/^Usage: qcow2-ref convert /);
    expect(h.stdout).toMatch(/Exit codes:\n {2}0 {2}OUT was written\n {2}1 .*\n[\s\S]* {2}2 {2}usage error/);
    expect((await cli('--help')).stdout).toMatch(/\n {2}convert \[-f qcow2\|raw\]/);
    for (const args of [['convert'], ['convert', 'a'], ['convert', 'a', 'b', 'c'], ['convert', '-c', 'a', 'b'], ['convert', '-f', 'vmdk', 'a', 'b'],
      ['convert', '-O', 'vdi', 'a', 'b'], ['convert', '-o', 'cluster_size=4k', 'a', 'b'], ['convert', '--bogus', 'a', 'b'], ['convert', '-t', 'fast', 'a', 'b']]) {
      const r = await cli(...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(/^qcow2-ref: convert: .*\nTry 'qcow2-ref --help' for more information\.\n$/);
    }
  });

  it('-t: OUT is fsync\'ed once before the rename in every cache mode but unsafe, the default (as qemu-img convert)', async () => {
    const input = matrix.find((m) => m.name === 'defaults')!.path;
    const quiet = { stdout: () => undefined, stderr: (t: string) => { throw new Error(t); } };
    for (const [flags, syncs] of [[[], 0], [['-t', 'unsafe'], 0], [['-t', 'writeback'], 1], [['-t', 'none'], 1], [['-t', 'directsync'], 1], [['-t', 'writethrough'], 1]] as const) {
      for (const format of ['raw', 'qcow2']) {
        const out = join(dir, `cache-${flags.join('')}.${format}`);
        const synced: number[] = [];
        // The fsync stub checks the output is not in place yet: the sync comes before the rename.
        const fsync = (fd: number): void => {
          synced.push(fd);
          expect(existsSync(out)).toBe(false);
        };
        expect(await runConvert([...flags, '-O', format, input, out], quiet, { fsync })).toBe(0);
        expect(synced.length, `${flags.join(' ')} -O ${format}`).toBe(syncs);
        await expectSameContent(out, format, input, 'qcow2');
        await rm(out);
      }
    }
  });

  it('-p draws a bar on a terminal and nothing elsewhere', async () => {
    const input = matrix.find((m) => m.name === 'defaults')!.path;
    const run = async (tty: boolean, ...flags: string[]): Promise<string> => {
      let stderr = '';
      const out = join(dir, `progress-${tty}.raw`);
      const code = await runConvert([...flags, input, out], { stdout: () => undefined, stderr: (t) => (stderr += t) }, { stderrIsTTY: tty, columns: 100 });
      expect(code).toBe(0);
      await rm(out);
      return stderr;
    };
    const drawn = await run(true, '-p');
    expect(drawn).toContain('convert |');
    expect(drawn).toContain('100%');
    expect(drawn).toContain('#');
    expect(await run(false, '-p')).toBe('');
    expect(await run(true)).toBe('');
    expect(await run(true, '-p', '-q')).toBe('');
    // A real process whose stderr is a pipe: nothing.
    const r = cliProcess(['convert', '-p', input, join(dir, 'p.raw')]);
    expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
  });
});

describe('memory does not grow with the image or its data (child processes)', () => {
  const LIMIT = 300 * M;

  it('a 64 GiB sparse qcow2 with a few MiB of data, to raw and back', async () => {
    const big = join(dir, 'big.qcow2');
    await qemuImgCreate(big, 64 * 1024 * M, {});
    await qemuIo(big, ['write -P 1 0 1M', 'write -P 2 17G 2M', 'write -P 3 40000M 1M', 'write -c -P 4 50G 64k', 'write -P 5 65535M 1M']);
    const raw = join(dir, 'big.raw');
    const back = join(dir, 'big-back.qcow2');
    const a = measuredRun(['convert', big, raw]);
    expect(a.code, a.stderr).toBe(0);
    const b = measuredRun(['convert', '-f', 'raw', '-O', 'qcow2', raw, back]);
    expect(b.code, b.stderr).toBe(0);
    console.log(`convert 64 GiB sparse: qcow2 -> raw peak RSS ${(a.maxRss / M).toFixed(0)} MiB, raw -> qcow2 ${(b.maxRss / M).toFixed(0)} MiB`);
    expect(a.maxRss).toBeLessThan(LIMIT);
    expect(b.maxRss).toBeLessThan(LIMIT);
    // The raw file is sparse: only the data is allocated.
    const alloc = probeHostAllocation(raw);
    expect(alloc.length).toBe(64n * 1024n * BigInt(M));
    expect(alloc.allocatedBytes).toBeLessThan(16n * BigInt(M));
    await expectSameContent(back, 'qcow2', big, 'qcow2');
    const theirs = join(dir, 'big-qemu.qcow2');
    await qemuImgConvert(raw, theirs, { inFormat: 'raw', outFormat: 'qcow2' });
    expect(sameFile(back, theirs)).toBe(true);
    await expectCleanCheck(back);
    for (const f of [big, raw, back, theirs]) await rm(f);
  }, 600_000);

  it('dense inputs of 32 MiB and 384 MiB: the same peak RSS', async () => {
    const peaks: Record<string, number> = {};
    for (const mib of [32, 384]) {
      const src = join(dir, `dense-${mib}.qcow2`);
      await qemuImgCreate(src, 512 * M, {});
      // Data that does not repeat at cluster granularity.
      await qemuIo(src, [`write -P 0x5a 0 ${mib}M`, ...Array.from({ length: 16 }, (_, i) => `write -P ${i + 1} ${i * 8}M 4k`)]);
      const raw = join(dir, `dense-${mib}.raw`);
      const out = join(dir, `dense-${mib}-out.qcow2`);
      const toRaw = measuredRun(['convert', src, raw]);
      const toQcow2 = measuredRun(['convert', '-O', 'qcow2', src, out]);
      expect(toRaw.code, toRaw.stderr).toBe(0);
      expect(toQcow2.code, toQcow2.stderr).toBe(0);
      peaks[`${mib} MiB -> raw`] = toRaw.maxRss;
      peaks[`${mib} MiB -> qcow2`] = toQcow2.maxRss;
      await expectSameContent(raw, 'raw', src, 'qcow2');
      await expectSameContent(out, 'qcow2', src, 'qcow2');
      const theirs = join(dir, `dense-${mib}-qemu.qcow2`);
      await qemuImgConvert(src, theirs, { outFormat: 'qcow2' });
      expect(sameFile(out, theirs)).toBe(true);
      for (const f of [src, raw, out, theirs]) await rm(f);
    }
    console.log(`convert dense peak RSS: ${Object.entries(peaks).map(([k, v]) => `${k} ${(v / M).toFixed(0)} MiB`).join(', ')}`);
    for (const v of Object.values(peaks)) expect(v).toBeLessThan(LIMIT);
    // 12 times the data, at most 64 MiB more memory.
    expect(peaks['384 MiB -> raw']! - peaks['32 MiB -> raw']!).toBeLessThan(64 * M);
    expect(peaks['384 MiB -> qcow2']! - peaks['32 MiB -> qcow2']!).toBeLessThan(64 * M);
  }, 600_000);
});

describe('opening images through readers (src/io/open-file.ts)', () => {
  it('the public API exports the reader-based host files', () => {
    expect(typeof api.hostFromReader).toBe('function');
    expect(typeof api.rebaseHostFile).toBe('function');
    expect(typeof api.rawReaderBackingSource).toBe('function');
    expect(new api.HostReaderError('io', 'x')).toBeInstanceOf(Error);
    const reader: api.HostReader = { length: 5n, read: (o, n) => new Uint8Array(n).fill(Number(o) + 1) };
    const f: api.HostFile = api.hostFromReader(reader);
    const base: api.HostBase | undefined = f.base;
    expect(base?.limit).toBe(5n);
    expect(api.readHost(api.rebaseHostFile(f, reader), 0n, 2)).toEqual(new Uint8Array([1, 1]));
  });

  it('reads only what it needs, and close() closes every file of the chain', async () => {
    const m = matrix.find((x) => x.name === 'overlay-raw-backing')!;
    const top = await openImageFile(m.path, { allowBacking: true }, { backing: true, dataFile: 'read' });
    // The header page and the header cluster (extensions, backing name) of a 64 KiB-cluster image.
    expect(top.reader.bytesRead).toBeLessThanOrEqual(68 * 1024);
    expect(BigInt(top.reader.bytesRead)).toBeLessThan(top.stat.length);
    expect(top.backing!.reader.bytesRead).toBe(0);
    expect(top.backing?.format).toBe('raw');
    top.close();
    expect(() => top.reader.read(0n, 1)).toThrow(HostReaderError);
    expect(() => top.backing!.reader.read(0n, 1)).toThrow(HostReaderError);
    top.close(); // idempotent
  });

  it('withOpenImageFile closes the chain when the callback throws', async () => {
    const m = matrix.find((x) => x.name === 'overlay-qcow2-backing')!;
    let seen: Awaited<ReturnType<typeof openImageFile>> | undefined;
    await expect(withOpenImageFile(m.path, { allowBacking: true }, { backing: true }, (top) => {
      seen = top;
      throw new Error('boom');
    })).rejects.toThrow('boom');
    expect(() => seen!.reader.read(0n, 1)).toThrow(HostReaderError);
    expect(() => seen!.backing!.reader.read(0n, 1)).toThrow(HostReaderError);
  });

  it('rawReaderBackingSource: the bytes source\'s size (512-byte rounding), reads and map; holes from data ranges', () => {
    const bytes = new Uint8Array(100_000).map((_, i) => (i % 251) + 1);
    const reader = { length: BigInt(bytes.length), read: (o: bigint, n: number) => bytes.slice(Number(o), Number(o) + n) };
    const a = rawBackingSource(bytes);
    const b = rawReaderBackingSource(reader);
    expect(b.size).toBe(100_352n);
    expect(b.size).toBe(a.size);
    for (const [o, n] of [[0n, 512], [99_840n, 512], [4096n, 70_000]] as const) expect(b.read(o, n)).toEqual(a.read(o, n));
    for (const [o, n] of [[0n, 100_352n], [99_840n, 512n], [512n, 1024n]] as const) expect(b.map!(o, n)).toEqual(a.map!(o, n));
    const holes = rawReaderBackingSource(reader, [[4096n, 8192n], [65536n, 100_000n]]);
    expect(holes.map!(0n, 100_352n)).toEqual([
      { start: 0n, length: 4096n, depth: 0, present: true, zero: true, data: false, offset: 0n },
      { start: 4096n, length: 4096n, depth: 0, present: true, zero: false, data: true, offset: 4096n },
      { start: 8192n, length: 57_344n, depth: 0, present: true, zero: true, data: false, offset: 8192n },
      { start: 65_536n, length: 34_464n, depth: 0, present: true, zero: false, data: true, offset: 65_536n },
      { start: 100_000n, length: 352n, depth: 0, present: true, zero: true, data: false, offset: 100_000n },
    ]);
  });
});
