/**
 * Every command streams: `dump`, `info`, `map`, `check`, `convert` and `run` on a 6 GiB image made with
 * preallocation=metadata (98304 allocated clusters, a 6 GiB file) and on a 1 TiB sparse image with a
 * little data qemu-io wrote. Each command runs as a child process of bin/qcow2-ref.mjs with a small
 * V8 heap (--max-old-space-size); the child reports its peak resident set size (VmHWM) and the bytes
 * it read through read(2)/pread(2) (/proc/self/io rchar), and both are bounded far below the file
 * size. Where a command mirrors qemu-img (info, map, check JSON; convert's qcow2 output) the output
 * is qemu-img's byte for byte. Needs qemu-img/qemu-io: fails loudly without them.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = join(ROOT, 'bin', 'qcow2-ref.mjs');
const M = 1024 * 1024;
const G = 1024 * M;
/** The children's V8 heap limit: a command that held a 6 GiB file (or its tables' entries as objects) could not run. */
const HEAP_MIB = 96;
/** Peak RSS allowed: node itself is about 55 MiB. */
const RSS_LIMIT = 256 * M;
/** Bytes a metadata-only command may read beyond the bare process's own reads (the 6 GiB image's metadata is about 1.6 MiB). */
const READ_LIMIT = 32 * M;

/** What a child run of the CLI did. */
interface Measured {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** Peak resident set size in bytes. */
  readonly hwm: number;
  /** Bytes read by read-like system calls. */
  readonly rchar: number;
}

/** Runs bin/qcow2-ref.mjs ARGS in a child with a small heap; the child reports VmHWM and rchar on exit. */
function measured(args: string[], cwd: string): Measured {
  const script = [
    "import { readFileSync } from 'node:fs';",
    "process.on('exit', () => {",
    "  const hwm = Number(/VmHWM:\\s+(\\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;",
    "  const rchar = Number(/rchar:\\s+(\\d+)/.exec(readFileSync('/proc/self/io', 'utf8'))[1]);",
    "  process.stderr.write('\\nMEASURED ' + JSON.stringify({ hwm, rchar }) + '\\n');",
    '});',
    `process.argv = [process.argv[0], ${JSON.stringify(BIN)}, ...process.argv.slice(1)];`,
    `await import(${JSON.stringify(BIN)});`,
  ].join('\n');
  const r = spawnSync(process.execPath, [`--max-old-space-size=${HEAP_MIB}`, '--input-type=module', '-e', script, '--', ...args], {
    cwd, encoding: 'utf8', maxBuffer: 256 * M, timeout: 600_000,
  });
  const m = /\nMEASURED (\{.*\})\n$/.exec(r.stderr);
  if (m === null) throw new Error(`child failed (status ${r.status}, signal ${r.signal}): ${r.stderr.slice(-2000)}`);
  const { hwm, rchar } = JSON.parse(m[1]!) as { hwm: number; rchar: number };
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr.slice(0, m.index), hwm, rchar };
}

function tool(cmd: string, args: string[], cwd: string): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', maxBuffer: 64 * M });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

let dir = '';
/** rchar of a child that runs the CLI's --help: what the process reads besides the image. */
let baseRead = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qcow2-ref-large-'));
  tool('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', 'pre.qcow2', '6G'], dir);
  tool('qemu-img', ['create', '-q', '-f', 'qcow2', 'sparse.qcow2', '1T'], dir);
  tool('qemu-io', [
    '-c', 'write -P 0xab 0 1M',
    '-c', 'write -c -P 0x11 100G 64k',
    '-c', 'write -P 0xcd 512G 192k',
    '-c', 'write -z 512G 64k',
    '-c', 'write -P 0xef 1099511496704 128k', // the last 128 KiB
    'sparse.qcow2',
  ], dir);
  // The first run of the bin may build the bundle: not part of any measurement.
  const help = measured(['--help'], dir);
  expect(help.code).toBe(0);
  baseRead = measured(['--help'], dir).rchar;
}, 600_000);

afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

/** One line of figures for the log. */
function report(r: Measured, what: string): void {
  console.log(`${what}: peak RSS ${(r.hwm / M).toFixed(0)} MiB, read ${((r.rchar - baseRead) / M).toFixed(1)} MiB`);
}

/** Asserts the bounds on a command that reads metadata only. */
function expectBounded(r: Measured, what: string): void {
  report(r, what);
  expect(r.code, `${what}: ${r.stderr}`).toBe(0);
  expect(r.hwm, `${what}: peak RSS`).toBeLessThan(RSS_LIMIT);
  expect(r.rchar - baseRead, `${what}: bytes read`).toBeLessThan(READ_LIMIT);
}

describe.each([
  { name: 'pre.qcow2', what: '6 GiB, preallocation=metadata', size: 6 * G },
  { name: 'sparse.qcow2', what: '1 TiB sparse', size: 1024 * 1024 * M },
])('$what', ({ name, size }) => {
  it('dump: human and JSON, reading only the metadata', async () => {
    const human = measured(['dump', name], dir);
    expectBounded(human, `dump ${name}`);
    expect(human.stdout).toMatch(new RegExp(`^qcow2 image ${name} \\(\\d+ bytes\\)\n`));
    const json = measured(['dump', '--output=json', name], dir);
    expectBounded(json, `dump --output=json ${name}`);
    const walk = JSON.parse(json.stdout) as { fileSize: number; header: { size: number; clusterSize: number }; l2Tables: { entries: { class: { kind: string } }[] }[]; errors: unknown[] };
    expect(walk.fileSize).toBe((await stat(join(dir, name))).size);
    expect(walk.header.size).toBe(size);
    expect(walk.errors).toEqual([]);
    const kinds = new Map<string, number>();
    for (const t of walk.l2Tables) for (const e of t.entries) kinds.set(e.class.kind, (kinds.get(e.class.kind) ?? 0) + 1);
    if (name === 'pre.qcow2') {
      expect(walk.fileSize).toBeGreaterThan(size);
      expect(Object.fromEntries(kinds)).toEqual({ normal: size / walk.header.clusterSize });
    } else {
      // 16 + 1 + 3 + 2 clusters written, one of them compressed and one zeroed.
      expect(Object.fromEntries(kinds)).toEqual({ normal: 20, compressed: 1, 'zero-alloc': 1 });
    }
  }, 600_000);

  it('info, map and check print what qemu-img prints', () => {
    for (const args of [['info', '--output=json'], ['map', '--output=json'], ['check', '--output=json'], ['check']]) {
      const ours = measured([...args, name], dir);
      expectBounded(ours, `${args.join(' ')} ${name}`);
      expect(ours.stdout, args.join(' ')).toBe(tool('qemu-img', [...args, name], dir));
    }
  }, 600_000);

  it('convert to qcow2: the bytes qemu-img convert writes', async () => {
    const out = `conv-${name}`;
    // Preallocated clusters over the file's holes read as zeros without being read (QEMU's block
    // status recurses into the file for them), so convert reads only metadata and data here too.
    const r = measured(['convert', '-O', 'qcow2', name, out], dir);
    expectBounded(r, `convert -O qcow2 ${name}`);
    tool('qemu-img', ['convert', '-O', 'qcow2', name, `qemu-${out}`], dir);
    expect(tool('cmp', [out, `qemu-${out}`], dir)).toBe('');
    expect(tool('qemu-img', ['compare', name, out], dir)).toContain('Images are identical.');
    await rm(join(dir, out));
    await rm(join(dir, `qemu-${out}`));
  }, 600_000);

  it('run: a small script, written in place; qemu-img check is clean and qemu-io reads it back', async () => {
    const at = name === 'pre.qcow2' ? 5 * G + 12345 : 700 * G + 12345;
    await writeFile(join(dir, 'script.json'), JSON.stringify([
      { op: 'write', offset: at, length: 100_000, pattern: 0x5a },
      { op: 'zero', offset: 64 * 1024, length: 64 * 1024 },
      { op: 'flush' },
    ]));
    const r = measured(['run', '--output=json', name, 'script.json'], dir);
    expectBounded(r, `run ${name}`);
    expect(JSON.parse(r.stdout)).toMatchObject({ ops: 3 });
    expect(tool('qemu-img', ['check', name], dir)).toContain('No errors were found on the image.');
    const read = tool('qemu-io', ['-r', '-c', `read -P 0x5a ${at} 100000`, '-c', `read -P 0 ${64 * 1024} ${64 * 1024}`, name], dir);
    expect(read).not.toMatch(/fail|Pattern verification/i);
  }, 600_000);
});

describe('1 TiB sparse to raw', () => {
  it('writes a sparse 1 TiB file with the same content, in bounded memory', async () => {
    const r = measured(['convert', '-O', 'raw', 'sparse.qcow2', 'sparse.raw'], dir);
    expectBounded(r, 'convert -O raw sparse.qcow2');
    const st = await stat(join(dir, 'sparse.raw'));
    expect(st.size).toBe(1024 * 1024 * M);
    // Only the data is allocated (and the first block, as QEMU's file-posix allocates it).
    expect(st.blocks * 512).toBeLessThan(16 * M);
    expect(tool('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', 'sparse.qcow2', 'sparse.raw'], dir)).toContain('Images are identical.');
    await rm(join(dir, 'sparse.raw'));
  }, 600_000);
});
