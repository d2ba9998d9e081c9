/**
 * `qcow2-ref create` and `qcow2-ref run` against real qemu-img / qemu-io 7.2:
 * - create writes the same bytes as `qemu-img create` for several option sets (incl. extended_l2,
 *   compat=0.10, preallocation=metadata and a relative data_file), and refuses bad options with
 *   qemu-img's message and exit 1, leaving no file (nor a temporary one) behind;
 * - run applies a script to an image and the result is byte-identical to qemu-io doing the same ops
 *   on a copy, and passes `qemu-img check`; a bad script (exit 2), an op failing in the model (exit 1)
 *   and an op the model does not support yet (exit 1) all leave the file byte-identical;
 * - run writes an image's external data file too (same bytes as qemu-io), refuses a data-file name
 *   that is absolute or leaves the image's directory unless --allow-data-file-path, and closes a
 *   lazy-refcounts image like qemu-io does (dirty bit cleared).
 */
import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, open, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.ts';
import { parseQemuSize } from '../../src/cli/create.ts';
import { fileReader } from '../../src/io/file-reader.ts';
import { planOps } from '../../src/cli/run.ts';
import { loadImage } from '../../src/model/load-store.ts';
import { parseScript } from '../../src/script/script.ts';
import { qemuImgCheck, qemuImgCreate, qemuImgCreateArgs, qemuIo } from '../../src/qemu/qemu-img.ts';
import { requireQemu, runTool } from '../../src/qemu/run.ts';

const BIN = resolve(import.meta.dirname, '../../bin/qcow2-ref.mjs');
let dir = '';
let counter = 0;

beforeAll(async () => {
  await requireQemu();
  dir = await mkdtemp(join(tmpdir(), 'qcow2-ref-cli-'));
});

afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

/** Runs the CLI in-process; returns exit code and captured output. */
async function cli(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main(argv, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) });
  return { code, stdout, stderr };
}

/** Runs bin/qcow2-ref.mjs in a child process (for a working directory or stdin). */
function cliProcess(args: string[], opts: { cwd?: string; input?: string } = {}): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: opts.cwd ?? dir, input: opts.input ?? '', encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A fresh sub-directory of the test directory. */
async function freshDir(): Promise<string> {
  const d = join(dir, `case${counter++}`);
  await mkdir(d);
  return d;
}

/** `-o` option string of a Record (values comma-escaped like qemu). */
function optionString(o: Record<string, string>): string {
  return Object.entries(o)
    .map(([k, v]) => `${k}=${v.replace(/,/g, ',,')}`)
    .join(',');
}

describe('qcow2-ref create', () => {
  const sets: Array<{ name: string; size: string; options: Record<string, string> }> = [
    { name: 'defaults', size: '1G', options: {} },
    { name: 'extended_l2 with 32k clusters', size: '100M', options: { cluster_size: '32k', extended_l2: 'on' } },
    { name: 'compat=0.10, unaligned size', size: '1.5k', options: { compat: '0.10' } },
    {
      name: 'lazy refcounts, 8-bit refcounts, zstd, 4k clusters',
      size: '64M',
      options: { cluster_size: '4096', lazy_refcounts: 'on', refcount_bits: '8', compression_type: 'zstd' },
    },
    { name: 'preallocation=metadata, size in bytes', size: '3145728', options: { preallocation: 'metadata' } },
  ];
  for (const s of sets) {
    it(`matches qemu-img create byte for byte: ${s.name}`, async () => {
      const d = await freshDir();
      const ours = join(d, 'ours.qcow2');
      const theirs = join(d, 'theirs.qcow2');
      const o = optionString(s.options);
      const r = await cli('create', ...(o === '' ? [] : ['-o', o]), ours, s.size);
      expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
      await qemuImgCreate(theirs, s.size, s.options);
      expect(Buffer.compare(await readFile(ours), await readFile(theirs))).toBe(0);
      expect((await qemuImgCheck(ours)).code).toBe(0);
      expect((await readdir(d)).sort()).toEqual(['ours.qcow2', 'theirs.qcow2']);
    });
  }

  it('creates a relative data_file in the current directory like qemu-img (separate -o accumulate)', async () => {
    const d = await freshDir();
    await mkdir(join(d, 'ours'));
    await mkdir(join(d, 'theirs'));
    const r = cliProcess(['create', '-o', 'data_file=data.raw', '-o', 'data_file_raw=on', 'ours/img.qcow2', '2M'], { cwd: d });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const ourImg = await readFile(join(d, 'ours/img.qcow2'));
    const ourData = await readFile(join(d, 'data.raw'));
    await rm(join(d, 'data.raw'));
    const q = await runTool('qemu-img', qemuImgCreateArgs('theirs/img.qcow2', '2M', { data_file: 'data.raw', data_file_raw: 'on' }), { cwd: d });
    expect(q.code).toBe(0);
    expect(Buffer.compare(ourImg, await readFile(join(d, 'theirs/img.qcow2')))).toBe(0);
    expect(Buffer.compare(ourData, await readFile(join(d, 'data.raw')))).toBe(0);
  });

  const bad: Array<{ name: string; args: string[] }> = [
    { name: 'unknown option', args: ['-o', 'foo=1'] },
    { name: 'bad boolean', args: ['-o', 'lazy_refcounts=maybe'] },
    { name: 'bad size option', args: ['-o', 'cluster_size=abc'] },
    { name: 'bad number', args: ['-o', 'refcount_bits=x'] },
    { name: 'extended_l2 with small clusters', args: ['-o', 'cluster_size=4096,extended_l2=on'] },
    { name: 'lazy refcounts on compat=0.10 (two -o)', args: ['-o', 'compat=0.10', '-o', 'lazy_refcounts=on'] },
    { name: 'bad compat', args: ['-o', 'compat=0.9'] },
    { name: 'data_file_raw without data_file', args: ['-o', 'data_file_raw=on'] },
    { name: 'refcount width', args: ['-o', 'refcount_bits=3'] },
    { name: 'invalid option list', args: ['-o', 'cluster_size=4096,'] },
    { name: 'missing backing file', args: ['-o', 'backing_file=nope.qcow2,backing_fmt=qcow2'] },
  ];
  const badSizes: Array<{ name: string; size: string | undefined; options?: string[] }> = [
    { name: 'size with an unknown suffix', size: '1Q' },
    { name: 'size out of range', size: '8E' },
    { name: 'size too large for qcow2', size: '1E' },
    { name: 'size given twice', size: '1M', options: ['-o', 'size=2M'] },
    { name: 'no size', size: undefined },
  ];
  const cases = [
    ...bad.map((b) => ({ name: b.name, args: [...b.args, 'IMG', '1M'] })),
    ...badSizes.map((b) => ({ name: b.name, args: [...(b.options ?? []), 'IMG', ...(b.size !== undefined ? [b.size] : [])] })),
  ];
  for (const c of cases) {
    it(`refuses like qemu-img, exit 1, no file left: ${c.name}`, async () => {
      const d = await freshDir();
      const args = (img: string) => c.args.map((a) => (a === 'IMG' ? img : a));
      const q = await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', ...args('theirs.qcow2')], { cwd: d });
      expect(q.code).toBe(1);
      const r = cliProcess(['create', ...args('ours.qcow2')], { cwd: d });
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      const expected = q.stderr.replaceAll('qemu-img: ', 'qcow2-ref: ').replaceAll('theirs.qcow2', 'ours.qcow2');
      expect(r.stderr).toBe(expected);
      expect(await readdir(d)).toEqual([]);
    });
  }

  it('leaves an existing image untouched when refusing, and replaces it otherwise (like qemu-img)', async () => {
    const d = await freshDir();
    const img = join(d, 'img.qcow2');
    await writeFile(img, 'precious');
    expect((await cli('create', '-o', 'cluster_size=1000', img, '1M')).code).toBe(1);
    expect(await readFile(img, 'utf8')).toBe('precious');
    expect((await cli('create', img, '1M')).code).toBe(0);
    expect((await readFile(img)).subarray(0, 4).toString('hex')).toBe('514649fb');
    expect(await readdir(d)).toEqual(['img.qcow2']);
  });

  it('takes the size from a backing file when SIZE is omitted, and matches qemu-img', async () => {
    const d = await freshDir();
    await runTool('qemu-img', qemuImgCreateArgs('base.raw', 3000, {}, [], 'raw'), { cwd: d });
    const o = { backing_file: 'base.raw', backing_fmt: 'raw' };
    expect(cliProcess(['create', '-o', optionString(o), 'ours.qcow2'], { cwd: d }).code).toBe(0);
    expect((await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', optionString(o), 'theirs.qcow2'], { cwd: d })).code).toBe(0);
    expect(Buffer.compare(await readFile(join(d, 'ours.qcow2')), await readFile(join(d, 'theirs.qcow2')))).toBe(0);
  });

  it('-o help lists the options; --help documents exit codes; bad usage exits 2', async () => {
    const h = await cli('create', '-o', 'help');
    expect(h.code).toBe(0);
    expect(h.stdout).toContain('extended_l2=<bool (on/off)>');
    const help = await cli('create', '--help');
    expect(help.code).toBe(0);
    for (const opt of ['cluster_size', 'compat', 'refcount_bits', 'extended_l2', 'compression_type', 'lazy_refcounts', 'backing_file', 'backing_fmt', 'data_file', 'data_file_raw', 'preallocation', 'Exit codes']) {
      expect(help.stdout).toContain(opt);
    }
    expect((await cli('create')).code).toBe(2);
    expect((await cli('create', '--bogus', 'x', '1M')).code).toBe(2);
    expect((await cli('create', '-f', 'raw', join(dir, 'never.raw'), '1M')).code).toBe(2);
    expect((await cli('create', join(dir, 'never.qcow2'), '1M', 'extra')).code).toBe(2);
  });

  it('parses sizes like qemu_strtosz', () => {
    expect(parseQemuSize('1.5k')).toBe(1536n);
    expect(parseQemuSize('0x10')).toBe(16n);
    expect(parseQemuSize('010')).toBe(10n);
    expect(parseQemuSize('1.0000001k')).toBe(1024n);
    expect(parseQemuSize('1b')).toBe(1n);
    expect(parseQemuSize('2E')).toBe(2n ** 61n);
    expect(parseQemuSize('16E')).toBe('range');
    for (const bad of ['1.5', '.5M', '1k5', '1e3', '', '-1', '0x1k', '1Q']) expect(parseQemuSize(bad)).toBe('invalid');
  });
});

describe('qcow2-ref run', () => {
  /** A qemu-made image and a byte-identical copy, in a fresh directory. */
  async function pair(size: string, options: Record<string, string>): Promise<{ d: string; ours: string; theirs: string }> {
    const d = await freshDir();
    const ours = join(d, 'ours.qcow2');
    const theirs = join(d, 'theirs.qcow2');
    await qemuImgCreate(theirs, size, options);
    await copyFile(theirs, ours);
    return { d, ours, theirs };
  }

  const b64 = Buffer.from(Array.from({ length: 1500 }, (_, i) => (i * 7 + 3) & 255)).toString('base64');
  /** The script and the qemu-io commands doing the same. */
  const script = [
    { op: 'write', offset: 0, length: 196608, pattern: 171 },
    { op: 'write', offset: 70000, length: 5000, pattern: 5 },
    { op: 'zero', offset: 65536, length: 65536, unmap: false },
    { op: 'zero', offset: '131072', length: 65536, unmap: true },
    { op: 'discard', offset: 0, length: 65536 },
    { op: 'write', offset: 1048576, length: 4096, pattern: 9 },
    { op: 'flush' },
    { op: 'write', offset: 2000000, length: 300000, pattern: 77 },
    { op: 'zero', offset: 2097152, length: 65536 },
    { op: 'discard', offset: 2000000, length: 200000 },
  ];
  const commands = [
    'write -P 171 0 196608',
    'write -P 5 70000 5000',
    'write -z 65536 65536',
    'write -z -u 131072 65536',
    'discard 0 65536',
    'write -P 9 1048576 4096',
    'flush',
    'write -P 77 2000000 300000',
    'write -z 2097152 65536',
    'discard 2000000 200000',
  ];

  const configs: Array<{ name: string; size: string; options: Record<string, string> }> = [
    { name: 'v3 defaults', size: '8M', options: {} },
    { name: 'compat=0.10', size: '8M', options: { compat: '0.10' } },
    { name: 'extended_l2, 64k clusters', size: '8M', options: { extended_l2: 'on' } },
    { name: '4k clusters, 2-bit refcounts', size: '8M', options: { cluster_size: '4096', refcount_bits: '2' } },
  ];
  for (const c of configs) {
    it(`gives the same file as qemu-io and passes qemu-img check: ${c.name}`, async () => {
      const { d, ours, theirs } = await pair(c.size, c.options);
      const scriptPath = join(d, 'script.json');
      await writeFile(scriptPath, JSON.stringify(script));
      const r = await cli('run', '--output=json', ours, scriptPath);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const summary = JSON.parse(r.stdout) as Record<string, number>;
      expect(summary.ops).toBe(script.length);
      expect(summary.hostWrites).toBeGreaterThan(0);
      expect(summary.bytesWritten).toBeGreaterThan(0);
      expect(summary.flushes).toBeGreaterThan(0);
      await qemuIo(theirs, commands);
      expect(Buffer.compare(await readFile(ours), await readFile(theirs))).toBe(0);
      expect((await qemuImgCheck(ours)).code).toBe(0);
    });
  }

  it('writes base64 data, reads the script from stdin, and --quiet prints nothing', async () => {
    const { ours, theirs, d } = await pair('4M', {});
    const s = JSON.stringify([{ op: 'write', offset: 512, data: b64 }]);
    const r = cliProcess(['run', '--quiet', 'ours.qcow2', '-'], { cwd: d, input: s });
    expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
    // qemu-io cannot write arbitrary bytes: check what QEMU reads back instead.
    const q = await runTool('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', 'ours.qcow2', 'ours.raw'], { cwd: d });
    expect(q.code).toBe(0);
    const raw = await readFile(join(d, 'ours.raw'));
    expect(Buffer.compare(raw.subarray(512, 512 + 1500), Buffer.from(b64, 'base64'))).toBe(0);
    expect(raw.subarray(0, 512).every((x) => x === 0)).toBe(true);
    expect((await qemuImgCheck(ours)).code).toBe(0);
    expect(Buffer.compare(await readFile(theirs), await readFile(ours))).not.toBe(0);
  });

  it('a bad op 2 exits 2 naming op 2 and leaves the file byte-identical', async () => {
    const { d, ours, theirs } = await pair('4M', {});
    const scriptPath = join(d, 'bad.json');
    await writeFile(scriptPath, JSON.stringify([{ op: 'write', offset: 0, length: 512, pattern: 1 }, { op: 'flush' }, { op: 'write', offset: -1, length: 512, pattern: 1 }]));
    const r = await cli('run', ours, scriptPath);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`qcow2-ref: ${scriptPath}: op 2 (write): field "offset": expected a non-negative integer or decimal string, got -1\n`);
    expect(Buffer.compare(await readFile(ours), await readFile(theirs))).toBe(0);
  });

  it('an op failing in the model (write past the end) exits 1 and leaves the file unchanged', async () => {
    const { d, ours, theirs } = await pair('4M', {});
    const scriptPath = join(d, 'past.json');
    await writeFile(scriptPath, JSON.stringify([{ op: 'write', offset: 0, length: 65536, pattern: 1 }, { op: 'write', offset: 4194304 - 512, length: 1024, pattern: 2 }]));
    const r = await cli('run', ours, scriptPath);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^qcow2-ref: ${ours.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: op 1 \\(write\\): write of 1024 bytes at 4193792 is beyond the end of the 4194304-byte disk\\n$`));
    expect(Buffer.compare(await readFile(ours), await readFile(theirs))).toBe(0);
  });

  it('an op the model does not support yet (resize of a data-file image) is reported clearly, exit 1, files unchanged', async () => {
    const d = await freshDir();
    const q = await runTool('qemu-img', qemuImgCreateArgs('img.qcow2', '4M', { data_file: 'img.raw' }), { cwd: d });
    expect(q.code).toBe(0);
    const before = await readFile(join(d, 'img.qcow2'));
    const dataBefore = await readFile(join(d, 'img.raw'));
    const scriptPath = join(d, 'resize.json');
    await writeFile(scriptPath, JSON.stringify([{ op: 'write', offset: 0, length: 512, pattern: 1 }, { op: 'resize', size: 8388608 }]));
    const r = await cli('run', join(d, 'img.qcow2'), scriptPath);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^qcow2-ref: ${join(d, 'img.qcow2').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: op 1 \\(resize\\): [^\\n]*not modelled yet\\n$`));
    expect(Buffer.compare(await readFile(join(d, 'img.qcow2')), before)).toBe(0);
    expect(Buffer.compare(await readFile(join(d, 'img.raw')), dataBefore)).toBe(0);
  });

  it('applies ops through a backing file like qemu-io (partial-cluster COW reads the backing image)', async () => {
    const d = await freshDir();
    await runTool('qemu-img', qemuImgCreateArgs('base.qcow2', '4M', {}), { cwd: d });
    await qemuIo(join(d, 'base.qcow2'), ['write -P 33 0 1M']);
    for (const n of ['ours.qcow2', 'theirs.qcow2']) {
      const q = await runTool('qemu-img', qemuImgCreateArgs(n, '4M', { backing_file: 'base.qcow2', backing_fmt: 'qcow2' }), { cwd: d });
      expect(q.code).toBe(0);
    }
    await writeFile(join(d, 's.json'), JSON.stringify([{ op: 'write', offset: 1000, length: 3000, pattern: 4 }, { op: 'zero', offset: 131072, length: 4096 }]));
    const r = await cli('run', join(d, 'ours.qcow2'), join(d, 's.json'));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    await qemuIo(join(d, 'theirs.qcow2'), ['write -P 4 1000 3000', 'write -z 131072 4096']);
    expect(Buffer.compare(await readFile(join(d, 'ours.qcow2')), await readFile(join(d, 'theirs.qcow2')))).toBe(0);
  });

  it('writes the external data file too (raw and not), byte-identical to qemu-io run in the image directory', async () => {
    for (const raw of [false, true]) {
      const d = await freshDir();
      await mkdir(join(d, 'ours'));
      await mkdir(join(d, 'theirs'));
      for (const side of ['ours', 'theirs']) {
        // QEMU 7.2 resolves a relative data-file name against its working directory: run it in the image's.
        const q = await runTool('qemu-img', qemuImgCreateArgs('img.qcow2', '4M', { data_file: 'img.raw', ...(raw ? { data_file_raw: 'on' } : {}) }), { cwd: join(d, side) });
        expect(q.code).toBe(0);
      }
      await writeFile(join(d, 's.json'), JSON.stringify(script));
      const r = await cli('run', join(d, 'ours', 'img.qcow2'), join(d, 's.json'));
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      await qemuIo('img.qcow2', commands, { cwd: join(d, 'theirs') });
      expect(Buffer.compare(await readFile(join(d, 'ours', 'img.qcow2')), await readFile(join(d, 'theirs', 'img.qcow2')))).toBe(0);
      const ourData = await readFile(join(d, 'ours', 'img.raw'));
      expect(ourData.some((b) => b !== 0)).toBe(true);
      expect(Buffer.compare(ourData, await readFile(join(d, 'theirs', 'img.raw')))).toBe(0);
      expect((await qemuImgCheck('img.qcow2', { cwd: join(d, 'ours') })).code).toBe(0);
    }
  });

  it('a data-file image over a backing file: COW reads the backing image and writes the data file, like qemu-io', async () => {
    const d = await freshDir();
    await runTool('qemu-img', qemuImgCreateArgs('base.qcow2', '4M', {}), { cwd: d });
    await qemuIo(join(d, 'base.qcow2'), ['write -P 33 0 1M']);
    for (const n of ['ours', 'theirs']) {
      const q = await runTool('qemu-img', qemuImgCreateArgs(`${n}.qcow2`, '4M', { backing_file: 'base.qcow2', backing_fmt: 'qcow2', data_file: `${n}.raw` }), { cwd: d });
      expect(q.code).toBe(0);
    }
    await writeFile(join(d, 's.json'), JSON.stringify([
      { op: 'write', offset: 1000, length: 3000, pattern: 4 },
      { op: 'zero', offset: 131072, length: 4096 },
      { op: 'discard', offset: 196608, length: 65536 },
      { op: 'write', offset: 200000, length: 10, pattern: 5 },
    ]));
    const r = await cli('run', join(d, 'ours.qcow2'), join(d, 's.json'));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    await qemuIo('theirs.qcow2', ['write -P 4 1000 3000', 'write -z 131072 4096', 'discard 196608 65536', 'write -P 5 200000 10'], { cwd: d });
    // The headers differ only in the data file's name ('ours.raw' / 'theirs.raw'), so compare past it.
    const ours = await readFile(join(d, 'ours.qcow2'));
    const theirs = await readFile(join(d, 'theirs.qcow2'));
    expect(ours.length).toBe(theirs.length);
    expect(Buffer.compare(ours.subarray(65536), theirs.subarray(65536))).toBe(0);
    const ourData = await readFile(join(d, 'ours.raw'));
    expect(ourData[1000]).toBe(4);
    expect(ourData[0]).toBe(33); // COW head from the backing file
    expect(Buffer.compare(ourData, await readFile(join(d, 'theirs.raw')))).toBe(0);
  });

  it('a data file name that leaves the image directory (or is absolute) is refused: exit 1, nothing read or written', async () => {
    for (const name of ['../outside.raw', 'sub/../../outside.raw']) {
      const d = await freshDir();
      await mkdir(join(d, 'img'));
      await mkdir(join(d, 'img', 'sub'));
      const q = await runTool('qemu-img', qemuImgCreateArgs('img.qcow2', '1M', { data_file: name }), { cwd: join(d, 'img') });
      expect(q.code).toBe(0);
      const before = await readFile(join(d, 'img', 'img.qcow2'));
      const dataBefore = await readFile(join(d, 'outside.raw'));
      await writeFile(join(d, 's.json'), JSON.stringify([{ op: 'write', offset: 0, length: 4096, pattern: 1 }]));
      const r = await cli('run', join(d, 'img', 'img.qcow2'), join(d, 's.json'));
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(`qcow2-ref: ${join(d, 'img', 'img.qcow2')}: data file path '${name}' is outside the image's directory; refusing to use it (--allow-data-file-path allows it)\n`);
      expect(Buffer.compare(await readFile(join(d, 'img', 'img.qcow2')), before)).toBe(0);
      expect(Buffer.compare(await readFile(join(d, 'outside.raw')), dataBefore)).toBe(0);
      // With the flag the same run goes through and writes the data file outside.
      const ok = await cli('run', '-q', '--allow-data-file-path', join(d, 'img', 'img.qcow2'), join(d, 's.json'));
      expect(ok).toEqual({ code: 0, stdout: '', stderr: '' });
      expect((await readFile(join(d, 'outside.raw')))[0]).toBe(1);
    }
    // An absolute name.
    const d = await freshDir();
    const abs = join(d, 'abs.raw');
    const q = await runTool('qemu-img', qemuImgCreateArgs('img.qcow2', '1M', { data_file: abs }), { cwd: d });
    expect(q.code).toBe(0);
    await writeFile(join(d, 's.json'), JSON.stringify([{ op: 'write', offset: 0, length: 512, pattern: 1 }]));
    const before = await readFile(join(d, 'img.qcow2'));
    const r = await cli('run', join(d, 'img.qcow2'), join(d, 's.json'));
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`qcow2-ref: ${join(d, 'img.qcow2')}: data file path '${abs}' is absolute; refusing to use it (--allow-data-file-path allows it)\n`);
    expect(Buffer.compare(await readFile(join(d, 'img.qcow2')), before)).toBe(0);
    expect((await readFile(abs)).every((b) => b === 0)).toBe(true);
  });

  it('closes a lazy-refcounts image like qemu-io: the dirty bit set by the writes is cleared', async () => {
    const { d, ours, theirs } = await pair('4M', { lazy_refcounts: 'on' });
    await writeFile(join(d, 's.json'), JSON.stringify([{ op: 'write', offset: 1000, length: 100000, pattern: 3 }, { op: 'zero', offset: 0, length: 65536, unmap: true }]));
    const r = await cli('run', ours, join(d, 's.json'));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    await qemuIo(theirs, ['write -P 3 1000 100000', 'write -z -u 0 65536']);
    const q = await readFile(theirs);
    expect(q[79]! & 1).toBe(0);
    expect(Buffer.compare(await readFile(ours), q)).toBe(0);
    // An image a crashed QEMU left dirty is repaired by the writable open first, as qemu-io does
    // (test/qemu/open-validation.test.ts compares the result with qemu-io's byte for byte).
    await qemuIo(theirs, ['write -P 4 2000000 4096', 'abort'], { expectAbort: true });
    expect((await readFile(theirs))[79]! & 1).toBe(1);
    const again = await cli('run', theirs, join(d, 's.json'));
    expect(again.code).toBe(0);
    expect(again.stderr).toContain('Rebuilding refcount structure');
    expect((await readFile(theirs))[79]! & 1).toBe(0);
    expect((await runTool('qemu-img', ['check', theirs])).code).toBe(0);
  });

  describe('on a 1 TiB sparse file', () => {
    const TiB = 1n << 40n;
    const GiB = 1 << 30;
    const big = [
      { op: 'write', offset: 10 * GiB + 1000, length: 100000, pattern: 4 },
      { op: 'zero', offset: String(900n << 30n), length: 65536 },
      { op: 'flush' },
      { op: 'write', offset: String(512n << 30n), length: 70000, pattern: 6 },
      { op: 'discard', offset: 10 * GiB + 65536, length: 65536 },
      { op: 'write', offset: String(TiB - 4096n), length: 4096, pattern: 8 },
    ];
    const bigCommands = [
      `write -P 4 ${10 * GiB + 1000} 100000`,
      `write -z ${900n << 30n} 65536`,
      'flush',
      `write -P 6 ${512n << 30n} 70000`,
      `discard ${10 * GiB + 65536} 65536`,
      `write -P 8 ${TiB - 4096n} 4096`,
    ];
    /** A 1 TiB-disk image holding data at 900 GiB, its file extended (sparse) to 1 TiB. */
    async function hugeImage(path: string): Promise<void> {
      await qemuImgCreate(path, '1T', {});
      await qemuIo(path, [`write -P 3 ${900n << 30n} 65536`, `write -P 2 ${100n << 30n} 4096`]);
      await truncate(path, Number(TiB));
    }
    /** The first `n` bytes of the file at `path`. */
    async function head(path: string, n: number): Promise<Buffer> {
      const fh = await open(path, 'r');
      try {
        const b = Buffer.alloc(n);
        await fh.read(b, 0, n, 0);
        return b;
      } finally {
        await fh.close();
      }
    }
    /** Runs the CLI in a child process; returns its exit code, output and peak RSS in bytes. */
    function measured(args: string[]): { code: number; stdout: string; stderr: string; maxRss: number } {
      const code = [
        "import { register } from 'tsx/esm/api';",
        'register();',
        "const { main } = await import('./src/cli/main.ts');",
        'const args = JSON.parse(process.env.QCOW2_REF_ARGS);',
        'const code = await main(args, { stdout: (t) => process.stdout.write(t), stderr: (t) => process.stderr.write(t) });',
        "process.stdout.write('\\nMAXRSS ' + process.resourceUsage().maxRSS * 1024 + '\\n');",
        'process.exitCode = code;',
      ].join('\n');
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], {
        cwd: resolve(import.meta.dirname, '../..'),
        env: { ...process.env, QCOW2_REF_ARGS: JSON.stringify(args) },
        encoding: 'utf8',
      });
      const m = /\nMAXRSS (\d+)\n$/.exec(r.stdout);
      return { code: r.status ?? -1, stdout: m ? r.stdout.slice(0, m.index) : r.stdout, stderr: r.stderr, maxRss: m ? Number(m[1]) : Infinity };
    }

    it('loads lazily: planning the script reads a few MiB of the 1 TiB file', async () => {
      const d = await freshDir();
      const path = join(d, 'huge.qcow2');
      await hugeImage(path);
      const reader = fileReader(path);
      try {
        expect(reader.length).toBe(TiB);
        const plan = planOps(loadImage(reader), parseScript(JSON.stringify(big)));
        expect(plan.ok).toBe(true);
        expect(reader.bytesRead).toBeGreaterThan(0);
        expect(reader.bytesRead).toBeLessThan(8 << 20);
      } finally {
        reader.close();
      }
    });

    it('works like qemu-io with peak memory far below the file size', async () => {
      const d = await freshDir();
      const ours = join(d, 'ours.qcow2');
      const theirs = join(d, 'theirs.qcow2');
      await hugeImage(ours);
      await hugeImage(theirs);
      const scriptPath = join(d, 'big.json');
      await writeFile(scriptPath, JSON.stringify(big));
      const r = measured(['run', '--output=json', ours, scriptPath]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ ops: big.length });
      // The same process shape on a small image: the 1 TiB file adds little on top.
      const small = join(d, 'small.qcow2');
      await qemuImgCreate(small, '1T', {});
      const base = measured(['run', '--output=json', small, scriptPath]);
      expect(base.code).toBe(0);
      expect(r.maxRss).toBeLessThan(1 << 30);
      expect(r.maxRss - base.maxRss).toBeLessThan(64 << 20);

      await qemuIo(theirs, bigCommands);
      expect((await stat(ours)).size).toBe(Number(TiB));
      expect((await stat(theirs)).size).toBe(Number(TiB));
      // Everything either side wrote lies in the first few MiB (allocation is by refcount, not file length).
      expect(Buffer.compare(await head(ours, 8 << 20), await head(theirs, 8 << 20))).toBe(0);
      const check = await qemuImgCheck(ours);
      expect(check.code).toBe(0);
      await qemuIo(ours, [
        `read -P 4 ${10 * GiB + 1000} ${65536 - 1000}`,
        `read -P 0 ${10 * GiB + 65536} 65536`,
        `read -P 0 ${900n << 30n} 65536`,
        `read -P 6 ${512n << 30n} 70000`,
        `read -P 2 ${100n << 30n} 4096`,
        `read -P 8 ${TiB - 4096n} 4096`,
      ]);
    });
  });

  it('--help documents every option and the exit codes; usage errors exit 2', async () => {
    const h = await cli('run', '--help');
    expect(h.code).toBe(0);
    for (const s of ['--output=json', '--quiet', '--allow-data-file-path', 'Exit codes', 'data file', 'dirty bit']) expect(h.stdout).toContain(s);
    expect((await cli('run')).code).toBe(2);
    expect((await cli('run', 'a')).code).toBe(2);
    expect((await cli('run', '--output=xml', 'a', 'b')).code).toBe(2);
    const main = await cli('--help');
    expect(main.stdout).toContain('create');
    expect(main.stdout).toContain('run');
  });
});
