/**
 * `qcow2-ref serve` against `qemu-nbd`, side by side in one run: fio with its nbd engine (libnbd)
 * drives each server over a Unix socket with the same job on the same starting image, on the
 * patterns of the published qcow2 performance studies:
 *
 * - 4 KiB random writes into an empty overlay over a fully populated backing file (64 KiB
 *   clusters), without and with extended_l2=on (subclusters: no copy-on-write of the untouched
 *   part of a cluster);
 * - 4 KiB random reads and random writes over a fully allocated image;
 * - 1 MiB sequential writes into an empty image, and 1 MiB sequential reads of a full one.
 *
 * Reported per pattern: IOPS (random) or MiB/s (sequential) of each server, the ratio ours /
 * qemu-nbd (target ≥ 0.5, goal 1), and the CPU seconds each server process used (utime + stime
 * from /proc, read just before it is stopped). Both servers run with their defaults (qemu-nbd:
 * cache=writeback, discard=ignore; qcow2-ref serve the same), each write job ends with a flush
 * (fio end_fsync=1) so that both pay for durability. The order alternates between patterns. The
 * benchmark never fails on a missed target: it prints `met` / `MISSED`.
 *
 *   npm run bench:nbd [-- --size-mib N] [--seq-mib N] [--runtime S] [--iodepth N] [--patterns a,b] [--json]
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const ROOT = resolve(import.meta.dirname, '../..');
const BIN = existsSync(join(ROOT, 'bin/qcow2-ref.mjs')) ? join(ROOT, 'bin/qcow2-ref.mjs') : join(resolve(import.meta.dirname, '..'), 'bin/qcow2-ref.mjs');

const { values } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1024' },
    'seq-mib': { type: 'string', default: '2048' },
    runtime: { type: 'string', default: '15' },
    iodepth: { type: 'string', default: '16' },
    patterns: { type: 'string' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help === true) {
  console.log('usage: npm run bench:nbd -- [--size-mib N] [--seq-mib N] [--runtime S] [--iodepth N] [--patterns a,b] [--json]');
  process.exit(0);
}
const SIZE_MIB = Number(values['size-mib']);
const SEQ_MIB = Number(values['seq-mib']);
const RUNTIME = Number(values.runtime);
const IODEPTH = Number(values.iodepth);
const CLK_TCK = 100;

interface Pattern {
  readonly name: string;
  readonly title: string;
  /** fio arguments beyond the engine, URI and output. */
  readonly fio: readonly string[];
  /** Which image each server serves (a fresh copy per server when `copy`). */
  readonly image: () => string;
  readonly copy: boolean;
  readonly readOnly: boolean;
  readonly unit: 'IOPS' | 'MiB/s';
}

interface Side {
  readonly value: number;
  readonly cpuSeconds: number;
  readonly seconds: number;
}

interface Result {
  readonly pattern: string;
  readonly title: string;
  readonly unit: string;
  readonly ours: Side;
  readonly qemu: Side;
  /** ours / qemu-nbd. */
  readonly ratio: number;
}

const dir = mkdtempSync(join(tmpdir(), 'nbd-bench-'));

function sh(tool: string, args: readonly string[]): void {
  execFileSync(tool, args, { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
}

/** Fills `path` with a byte pattern through qemu-io, at most 1 GiB per request. */
function fill(path: string, mib: number): void {
  const cmds: string[] = [];
  for (let at = 0; at < mib; at += 1024) cmds.push('-c', `write -q -P 0x5a ${at}M ${Math.min(1024, mib - at)}M`);
  sh('qemu-io', ['-t', 'writeback', '-f', 'qcow2', ...cmds, path]);
}

let built = false;
/** The images, made once. */
function images(): void {
  if (built) return;
  built = true;
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=64k', 'backing.qcow2', `${SIZE_MIB}M`]);
  fill(join(dir, 'backing.qcow2'), SIZE_MIB);
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=64k', 'full.qcow2', `${SIZE_MIB}M`]);
  fill(join(dir, 'full.qcow2'), SIZE_MIB);
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=64k', 'seq-full.qcow2', `${SEQ_MIB}M`]);
  fill(join(dir, 'seq-full.qcow2'), SEQ_MIB);
}

function overlay(name: string, extendedL2: boolean): () => string {
  return () => {
    images();
    rmSync(join(dir, name), { force: true });
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=64k${extendedL2 ? ',extended_l2=on' : ''}`, '-b', 'backing.qcow2', '-F', 'qcow2', name, `${SIZE_MIB}M`]);
    return name;
  };
}

const random = (rw: string): string[] => [`--rw=${rw}`, '--bs=4k', `--iodepth=${IODEPTH}`, '--time_based', `--runtime=${RUNTIME}`, `--size=${SIZE_MIB}M`, '--randrepeat=1', '--norandommap'];
const sequential = (rw: string): string[] => [`--rw=${rw}`, '--bs=1M', `--iodepth=${Math.min(IODEPTH, 8)}`, `--size=${SEQ_MIB}M`];

const PATTERNS: readonly Pattern[] = [
  { name: 'overlay-randwrite', title: '4 KiB random writes, empty overlay over a full backing file (64 KiB clusters)', fio: [...random('randwrite'), '--end_fsync=1'], image: overlay('overlay.qcow2', false), copy: false, readOnly: false, unit: 'IOPS' },
  { name: 'overlay-randwrite-l2', title: 'the same with extended_l2=on (subclusters)', fio: [...random('randwrite'), '--end_fsync=1'], image: overlay('overlay-l2.qcow2', true), copy: false, readOnly: false, unit: 'IOPS' },
  { name: 'full-randread', title: '4 KiB random reads, fully allocated image', fio: random('randread'), image: () => (images(), 'full.qcow2'), copy: false, readOnly: true, unit: 'IOPS' },
  { name: 'full-randwrite', title: '4 KiB random writes, fully allocated image', fio: [...random('randwrite'), '--end_fsync=1'], image: () => (images(), 'full.qcow2'), copy: true, readOnly: false, unit: 'IOPS' },
  {
    name: 'seq-write', title: `1 MiB sequential writes, empty image (${SEQ_MIB} MiB)`, fio: [...sequential('write'), '--end_fsync=1'],
    image: () => {
      rmSync(join(dir, 'seq.qcow2'), { force: true });
      sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=64k', 'seq.qcow2', `${SEQ_MIB}M`]);
      return 'seq.qcow2';
    },
    copy: false, readOnly: false, unit: 'MiB/s',
  },
  { name: 'seq-read', title: `1 MiB sequential reads, full image (${SEQ_MIB} MiB)`, fio: sequential('read'), image: () => (images(), 'seq-full.qcow2'), copy: false, readOnly: true, unit: 'MiB/s' },
];

/** CPU seconds (user + system) of process `pid` so far. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/** Whether the server at `socket` answers: connects and waits for its greeting (so it does not write to a closed socket). */
function canConnect(socket: string): Promise<boolean> {
  return new Promise((r) => {
    const c = createConnection(socket);
    c.once('data', () => {
      c.destroy();
      r(true);
    });
    c.once('error', () => r(false));
    c.once('close', () => r(false));
  });
}

async function startServer(which: 'ours' | 'qemu', image: string, socket: string, readOnly: boolean): Promise<ChildProcess> {
  const args = ['-k', socket, '-t', ...(readOnly ? ['-r'] : []), ...(which === 'ours' ? ['--allow-backing'] : ['-f', 'qcow2']), image];
  const p = which === 'ours' ? spawn(process.execPath, [BIN, 'serve', ...args], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] }) : spawn('qemu-nbd', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  // What a server says is shown only when it fails to start (the readiness probe's hang-up makes
  // qemu-nbd complain about the negotiation).
  let stderr = '';
  p.stderr!.setEncoding('utf8').on('data', (d: string) => void (stderr += d.length + stderr.length < 65536 ? d : ''));
  for (let i = 0; i < 1200; i++) {
    if (p.exitCode !== null) throw new Error(`${which} server exited (${p.exitCode}): ${stderr}`);
    if (existsSync(socket) && (await canConnect(socket))) return p;
    await new Promise((r) => setTimeout(r, 50));
  }
  p.kill('SIGKILL');
  throw new Error(`${which} server did not start: ${stderr}`);
}

async function runSide(which: 'ours' | 'qemu', p: Pattern): Promise<Side> {
  let image = p.image();
  if (p.copy) {
    const copy = `${which}-${image}`;
    copyFileSync(join(dir, image), join(dir, copy));
    image = copy;
  }
  const socket = join(dir, `${which}.sock`);
  const server = await startServer(which, image, socket, p.readOnly);
  const out = join(dir, `${which}.json`);
  const t0 = Date.now();
  let cpu = 0;
  try {
    execFileSync('fio', ['--name=bench', '--ioengine=nbd', `--uri=nbd+unix:///?socket=${socket}`, ...p.fio, '--output-format=json', `--output=${out}`], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
  } finally {
    cpu = cpuSeconds(server.pid!);
    const exited = new Promise<void>((r) => server.once('exit', () => r()));
    server.kill('SIGTERM');
    await exited;
    if (p.copy) rmSync(join(dir, image), { force: true });
  }
  const seconds = (Date.now() - t0) / 1000;
  const job = (JSON.parse(readFileSync(out, 'utf8')) as { jobs: { read: { iops: number; bw_bytes: number }; write: { iops: number; bw_bytes: number } }[] }).jobs[0]!;
  const io = p.fio.some((a) => /rw=(rand)?read/.test(a)) ? job.read : job.write;
  return { value: p.unit === 'IOPS' ? io.iops : io.bw_bytes / (1024 * 1024), cpuSeconds: cpu, seconds };
}

const chosen = values.patterns !== undefined ? PATTERNS.filter((p) => values.patterns!.split(',').includes(p.name)) : PATTERNS;
const results: Result[] = [];
try {
  for (const t of ['qemu-img', 'qemu-io', 'qemu-nbd', 'fio']) {
    try {
      execFileSync(t, ['--version'], { stdio: 'ignore' });
    } catch {
      throw new Error(`${t} is needed (bash scripts/setup.sh --tests installs it)`);
    }
  }
  let i = 0;
  for (const p of chosen) {
    const order: ('ours' | 'qemu')[] = i++ % 2 === 0 ? ['ours', 'qemu'] : ['qemu', 'ours'];
    const sides: Partial<Record<'ours' | 'qemu', Side>> = {};
    for (const w of order) sides[w] = await runSide(w, p);
    const r: Result = { pattern: p.name, title: p.title, unit: p.unit, ours: sides.ours!, qemu: sides.qemu!, ratio: sides.ours!.value / sides.qemu!.value };
    results.push(r);
    if (values.json !== true) {
      console.log(`${p.name}: ${p.title}`);
      console.log(`  qcow2-ref serve ${r.ours.value.toFixed(0).padStart(8)} ${p.unit}  cpu ${r.ours.cpuSeconds.toFixed(1)} s`);
      console.log(`  qemu-nbd        ${r.qemu.value.toFixed(0).padStart(8)} ${p.unit}  cpu ${r.qemu.cpuSeconds.toFixed(1)} s`);
      console.log(`  ours / qemu-nbd: ${r.ratio.toFixed(2)}×  target ≥ 0.5: ${r.ratio >= 0.5 ? 'met' : 'MISSED'}`);
    }
  }
  if (values.json === true) console.log(JSON.stringify({ sizeMiB: SIZE_MIB, seqMiB: SEQ_MIB, runtime: RUNTIME, iodepth: IODEPTH, results }, null, 2));
  else {
    console.log('\n| pattern | qcow2-ref serve | qemu-nbd | ours / qemu-nbd | CPU s (ours / qemu-nbd) |\n|---|---|---|---|---|');
    for (const r of results) {
      console.log(`| ${r.title} | ${r.ours.value.toFixed(0)} ${r.unit} | ${r.qemu.value.toFixed(0)} ${r.unit} | ${r.ratio.toFixed(2)}× | ${r.ours.cpuSeconds.toFixed(1)} / ${r.qemu.cpuSeconds.toFixed(1)} |`);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
