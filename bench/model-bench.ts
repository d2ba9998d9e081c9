/**
 * Model benchmark (issue 3, "Performance"): throughput and memory of `step` on a 1 TiB image with
 * 64 KiB clusters, next to qemu-io executing the same operations on a real image.
 *
 *   npx tsx bench/model-bench.ts [--ops N] [--mixed-ops N] [--seed S] [--max-seconds S]
 *                                [--mixed-max-seconds S] [--repeat N] [--no-qemu] [--json]
 *   node --expose-gc --import tsx bench/model-bench.ts …   (adds a post-GC retained-memory figure)
 *
 * 1. `random-writes`: N (default 100 000) 4 KiB writes at random 4 KiB-aligned offsets.
 * 2. `mixed`: M (default 10 000) ops: writes, write_zeroes (with and without unmap), discards,
 *    compressed writes and flushes, with 8 internal snapshots (snapshotCreate) spread evenly over the
 *    sequence (the "10,000 ops of a mixed sequence with 8 snapshots"; they are 8 of the M ops).
 * Each runs through `step` (only the time inside `step` counts; rss/heapUsed sampled every 1000
 * ops), `--repeat` times (default 3) in fresh processes, reporting the median run, and then through qemu-io fed on
 * stdin (`-t writeback`, so neither side pays an fsync per request). qemu-io has no command that
 * creates an internal snapshot, so the QEMU side of `mixed` is split at each snapshot: one qemu-io
 * process per segment, and `qemu-img snapshot -c` in between; its time is the sum of the segments'
 * and the snapshots' net times (each minus the start/open/close time of the same tool doing nothing).
 * At those boundaries the model's session state (allocation hint, compressed cursor) is reset, as
 * every new QEMU process starts with a fresh one, so the final layouts stay comparable.
 * The model run of each benchmark stops at a wall-clock cap (--max-seconds, default 90 s;
 * --mixed-max-seconds, default 20 s) so the whole bench stays near 3 minutes; a capped run says so,
 * and qemu-io then executes exactly the ops the model completed. `--max-seconds 0` means no cap.
 *
 * A benchmark reports; it never fails on a missed target (exit 0), only on a crash.
 */
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { L1EntryMasks } from '../generated/qcow2.ts';
import { createImage } from '../src/model/create.ts';
import { readHost } from '../src/model/host-file.ts';
import { freshSession, geometryOf, type Image } from '../src/model/image.ts';
import type { Op } from '../src/model/ops.ts';
import { step } from '../src/model/step.ts';
import { qemuImgCreate } from '../src/qemu/qemu-img.ts';
import { mulberry32 } from './prng.ts';
import { qemuIoStdin } from './qemu-io-stdin.ts';
// Node's faster inflate for the model's codecs, as the Node entry and the CLI install it.
import '../src/io/node-compression.ts';

// ---------------------------------------------------------------------------------------------
// Parameters

const KiB = 1024;
const MiB = 1024 * KiB;
const VIRTUAL_SIZE = 1n << 40n; // 1 TiB
const CLUSTER_SIZE = 64 * KiB;
const TARGET_OPS_PER_SEC = 50_000;
const TARGET_MEMORY_FACTOR = 3;

interface Args {
  ops: number;
  mixedOps: number;
  seed: number;
  json: boolean;
  qemu: boolean;
  /** Wall-clock cap of each model run; the qemu-io run then gets the ops the model completed. */
  maxSeconds: number;
  mixedMaxSeconds: number;
  /** Model runs per benchmark, each in a fresh process; the median by ops/s is reported. */
  repeat: number;
  /** Internal: run only this benchmark's model side and print its ModelResult as JSON. */
  child?: string;
}

function parseArgs(argv: readonly string[]): Args {
  const a: Args = { ops: 100_000, mixedOps: 10_000, seed: 0x5eed, json: false, qemu: true, maxSeconds: 90, mixedMaxSeconds: 20, repeat: 3 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const num = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isSafeInteger(v) || v < 0) throw new Error(`${k} needs a non-negative integer`);
      return v;
    };
    if (k === '--ops') a.ops = num();
    else if (k === '--mixed-ops') a.mixedOps = num();
    else if (k === '--seed') a.seed = num();
    else if (k === '--max-seconds') a.maxSeconds = num();
    else if (k === '--mixed-max-seconds') a.mixedMaxSeconds = num();
    else if (k === '--repeat') a.repeat = Math.max(1, num());
    else if (k === '--json') a.json = true;
    else if (k === '--no-qemu') a.qemu = false;
    else if (k === '--child') a.child = argv[++i];
    else if (k === '--help' || k === '-h') {
      console.log('usage: model-bench.ts [--ops N] [--mixed-ops N] [--seed S] [--max-seconds S] [--mixed-max-seconds S] [--repeat N] [--no-qemu] [--json]');
      process.exit(0);
    } else throw new Error(`unknown argument ${k}`);
  }
  return a;
}

// ---------------------------------------------------------------------------------------------
// Deterministic draws (mulberry32, bench/prng.ts)

/** Integer in [0, n) for n ≤ 2^53: a 53-bit draw from two outputs, reduced mod n (bias ≤ n / 2^53). */
function randInt(rnd: () => number, n: number): number {
  const x = Math.floor(rnd() * 2 ** 21) * 2 ** 32 + Math.floor(rnd() * 2 ** 32);
  return x % n;
}

// ---------------------------------------------------------------------------------------------
// Op sequences: a model Op and the equivalent qemu-io command, generated lazily (no 400 MB of data)

/** One shared buffer per (pattern, length): write data is never retained by the bench itself. */
const patternBuffers = new Map<string, Uint8Array>();
function patternData(pattern: number, length: number): Uint8Array {
  const k = `${pattern}:${length}`;
  let b = patternBuffers.get(k);
  if (!b) {
    b = new Uint8Array(length).fill(pattern);
    patternBuffers.set(k, b);
  }
  return b;
}

interface BenchOp {
  readonly op: Op;
  /** The qemu-io command line; for a snapshotCreate, `qemu-img snapshot -c NAME` runs instead (between qemu-io processes). */
  readonly qemu: string;
  /** Guest bytes this op writes with data (write / compressed write). */
  readonly dataBytes: number;
}

function writeOp(offset: bigint, length: number, pattern: number): BenchOp {
  return {
    op: { kind: 'write', offset, data: patternData(pattern, length) },
    qemu: `write -q -P ${pattern} ${offset} ${length}`,
    dataBytes: length,
  };
}

/** Benchmark 1: `count` 4 KiB writes at random 4 KiB-aligned offsets. */
function* randomWrites(count: number, seed: number): Generator<BenchOp> {
  const rnd = mulberry32(seed);
  const blocks = Number(VIRTUAL_SIZE / 4096n); // 2^28
  for (let i = 0; i < count; i++) {
    yield writeOp(BigInt(randInt(rnd, blocks)) * 4096n, 4096, 1 + (i % 255));
  }
}

/** Internal snapshots in the mixed benchmark (the "8 snapshots"). */
const MIXED_SNAPSHOTS = 8;

/**
 * The positions of the snapshotCreate ops in a mixed sequence of `count` ops: `MIXED_SNAPSHOTS`
 * positions spread evenly, the first after 1/9 of the sequence, the last at 8/9 (fewer when count < 9).
 */
function snapshotPositions(count: number): Set<number> {
  const out = new Set<number>();
  for (let j = 1; j <= MIXED_SNAPSHOTS; j++) {
    const at = Math.floor((j * count) / (MIXED_SNAPSHOTS + 1));
    if (at > 0 && at < count) out.add(at);
  }
  return out;
}

/**
 * Benchmark 2: a mixed sequence. 80 % of the ops fall in a 1 GiB hot window (so they overwrite,
 * zero, discard and COW each other's clusters), 20 % anywhere in the 1 TiB disk.
 * Weights: write 45 % (4–128 KiB), write_zeroes 15 % (4 KiB–1 MiB, unmap half the time),
 * discard 15 % (4 KiB–1 MiB), compressed write 20 % (one cluster, to a cluster this sequence has
 * not allocated — QEMU refuses to compress over an allocated cluster), flush 5 %; and at the 8
 * positions of `snapshotPositions`, a snapshotCreate (`snap1` … `snap8`) instead. After a snapshot
 * every cluster it shares is COW'd by the next write to it.
 */
function* mixedOps(count: number, seed: number): Generator<BenchOp> {
  const rnd = mulberry32(seed ^ 0x9e3779b9);
  const cs = CLUSTER_SIZE;
  const HOT = 1n << 30n;
  const clusters = VIRTUAL_SIZE / BigInt(cs);
  /** Guest clusters that may be allocated (conservative: anything touched, minus whole-cluster discards). */
  const touched = new Set<bigint>();
  const mark = (off: bigint, len: bigint): void => {
    for (let c = off / BigInt(cs); c * BigInt(cs) < off + len; c++) touched.add(c);
  };
  const unmarkWhole = (off: bigint, len: bigint): void => {
    const first = (off + BigInt(cs) - 1n) / BigInt(cs);
    const end = (off + len) / BigInt(cs);
    for (let c = first; c < end; c++) touched.delete(c);
  };
  const place = (len: number): bigint => {
    const span = rnd() < 0.8 ? HOT : VIRTUAL_SIZE;
    const blocks = Number((span - BigInt(len)) / 4096n);
    return BigInt(randInt(rnd, blocks + 1)) * 4096n;
  };
  const len4k = (maxBlocks: number): number => (1 + randInt(rnd, maxBlocks)) * 4096;
  const snapshots = snapshotPositions(count);
  let snapshotNo = 0;
  for (let i = 0; i < count; i++) {
    if (snapshots.has(i)) {
      const name = `snap${++snapshotNo}`;
      yield { op: { kind: 'snapshotCreate', name }, qemu: `snapshot -c ${name}`, dataBytes: 0 };
      continue;
    }
    const r = rnd();
    const pattern = 1 + (i % 255);
    if (r < 0.45) {
      const len = len4k(32);
      const off = place(len);
      mark(off, BigInt(len));
      yield writeOp(off, len, pattern);
    } else if (r < 0.6) {
      const len = BigInt(len4k(256));
      const off = place(Number(len));
      const unmap = rnd() < 0.5;
      mark(off, len);
      yield { op: { kind: 'writeZeroes', offset: off, length: len, unmap }, qemu: `write -q -z${unmap ? ' -u' : ''} ${off} ${len}`, dataBytes: 0 };
    } else if (r < 0.75) {
      const len = BigInt(len4k(256));
      const off = place(Number(len));
      unmarkWhole(off, len);
      yield { op: { kind: 'discard', offset: off, length: len }, qemu: `discard -q ${off} ${len}`, dataBytes: 0 };
    } else if (r < 0.95) {
      let c = -1n;
      for (let tries = 0; tries < 16 && c < 0n; tries++) {
        const span = rnd() < 0.8 ? HOT / BigInt(cs) : clusters;
        const cand = BigInt(randInt(rnd, Number(span)));
        if (!touched.has(cand)) c = cand;
      }
      if (c < 0n) {
        const off = place(4096);
        mark(off, 4096n);
        yield writeOp(off, 4096, pattern);
        continue;
      }
      touched.add(c);
      const off = c * BigInt(cs);
      yield {
        op: { kind: 'writeCompressed', offset: off, data: patternData(pattern, cs) },
        qemu: `write -q -c -P ${pattern} ${off} ${cs}`,
        dataBytes: cs,
      };
    } else {
      yield { op: { kind: 'flush' }, qemu: 'flush', dataBytes: 0 };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Model side

interface MemSample {
  rss: number;
  heapUsed: number;
  arrayBuffers: number;
}

function mem(): MemSample {
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, arrayBuffers: m.arrayBuffers };
}

const gc = (globalThis as { gc?: () => void }).gc;

interface ModelResult {
  ops: number;
  /** snapshotCreate ops that succeeded. */
  snapshots: number;
  /** The run hit its wall-clock cap before the end of the sequence. */
  truncated: boolean;
  failedOps: number;
  firstError?: string;
  seconds: number;
  opsPerSec: number;
  baseline: MemSample;
  peakRss: number;
  peakHeapUsed: number;
  peakArrayBuffers: number;
  /** heapUsed + arrayBuffers after a forced GC with the final image alive, minus the same before (needs --expose-gc). */
  retainedAfterGc?: number;
  metadataClusters: number;
  metadataBytes: number;
  dataBytes: number;
  /** 3 × (metadata + data). */
  memoryBudget: number;
  hostFileLength: bigint;
  hostPages: number;
  /** Every run's ops/s, in run order, when the model ran more than once (runModelRepeated). */
  runsOpsPerSec?: number[];
}

/** Host clusters holding metadata: header, L1, L2 tables, refcount table and refcount blocks. */
function metadataClusters(img: Image): number {
  const h = img.header;
  const g = geometryOf(h);
  const cs = g.clusterSize;
  const clustersOf = (bytes: number): number => Math.ceil(bytes / cs);
  let n = 1; // header (+ extensions, + backing name) — one cluster for these images
  n += clustersOf(h.l1Size * 8);
  const l1 = readHost(img.file, h.l1TableOffset, h.l1Size * 8);
  const l1v = new DataView(l1.buffer, l1.byteOffset, l1.byteLength);
  for (let i = 0; i < h.l1Size; i++) if ((l1v.getBigUint64(i * 8) & L1EntryMasks.l2Offset) !== 0n) n++;
  n += h.refcountTableClusters;
  const rt = readHost(img.file, h.refcountTableOffset, h.refcountTableClusters * cs);
  const rtv = new DataView(rt.buffer, rt.byteOffset, rt.byteLength);
  for (let i = 0; i < rt.length / 8; i++) if ((rtv.getBigUint64(i * 8) & ~511n) !== 0n) n++;
  return n;
}

function runModel(ops: Iterable<BenchOp>, maxSeconds: number): ModelResult {
  gc?.();
  const baseline = mem();
  let peakRss = baseline.rss;
  let peakHeap = baseline.heapUsed;
  let peakAb = baseline.arrayBuffers;
  const sample = (): void => {
    const m = mem();
    if (m.rss > peakRss) peakRss = m.rss;
    if (m.heapUsed > peakHeap) peakHeap = m.heapUsed;
    if (m.arrayBuffers > peakAb) peakAb = m.arrayBuffers;
  };
  let img = createImage({ size: VIRTUAL_SIZE, clusterSize: CLUSTER_SIZE }).image;
  let count = 0;
  let snapshots = 0;
  let failed = 0;
  let firstError: string | undefined;
  let dataBytes = 0;
  /** Time inside `step` only: op generation, memory sampling and this loop are not the model's. */
  let stepMs = 0;
  let truncated = false;
  const capMs = maxSeconds > 0 ? maxSeconds * 1000 : Infinity;
  const it = ops[Symbol.iterator]();
  const t0 = performance.now();
  for (;;) {
    const n = it.next();
    if (n.done) break;
    const snapshot = n.value.op.kind === 'snapshotCreate';
    // QEMU creates each snapshot in a new process (qemu-img), and the next qemu-io is another one:
    // both start with a fresh session (allocation hint, compressed cursor), and so does the model here.
    if (snapshot) img = { ...img, session: freshSession() };
    const s0 = performance.now();
    const r = step(img, n.value.op);
    stepMs += performance.now() - s0;
    img = snapshot ? { ...r.image, session: freshSession() } : r.image;
    if (r.ok) {
      dataBytes += n.value.dataBytes;
      if (snapshot) snapshots++;
    } else {
      failed++;
      firstError ??= `${n.value.qemu}: ${r.error.message}`;
    }
    if (++count % 1000 === 0) sample();
    if (count % 100 === 0 && performance.now() - t0 > capMs) {
      truncated = !it.next().done;
      break;
    }
  }
  const ms = stepMs;
  sample();
  let retainedAfterGc: number | undefined;
  if (gc) {
    gc();
    const m = mem();
    retainedAfterGc = m.heapUsed + m.arrayBuffers - (baseline.heapUsed + baseline.arrayBuffers);
  }
  const mc = metadataClusters(img);
  const metadataBytes = mc * CLUSTER_SIZE;
  return {
    ops: count,
    snapshots,
    truncated,
    failedOps: failed,
    ...(firstError !== undefined ? { firstError } : {}),
    seconds: ms / 1000,
    opsPerSec: count / (ms / 1000),
    baseline,
    peakRss,
    peakHeapUsed: peakHeap,
    peakArrayBuffers: peakAb,
    ...(retainedAfterGc !== undefined ? { retainedAfterGc } : {}),
    metadataClusters: mc,
    metadataBytes,
    dataBytes,
    memoryBudget: TARGET_MEMORY_FACTOR * (metadataBytes + dataBytes),
    hostFileLength: img.file.length,
    hostPages: img.file.pages.size,
  };
}

// ---------------------------------------------------------------------------------------------
// qemu-io side

interface QemuResult {
  ops: number;
  failedOps: number;
  /** Wall time of every QEMU process of the run (qemu-io segments and qemu-img snapshot -c). */
  seconds: number;
  /** One qemu-io process with no commands (start, open, close), subtracted once per qemu-io process. */
  startupSeconds: number;
  /** Snapshots created with `qemu-img snapshot -c` (each its own process, between qemu-io processes). */
  snapshots: number;
  /** `qemu-img snapshot -l` on the empty image (start, open, list, close), subtracted once per snapshot. */
  snapshotStartupSeconds: number;
  /** Wall time of the `qemu-img snapshot -c` processes. */
  snapshotSeconds: number;
  /** qemu-io processes (1 + number of snapshots). */
  processes: number;
  netSeconds: number;
  opsPerSec: number;
  peakRssKiB?: number;
  fileLength: number;
}

/** Runs `qemu-img ARGS` to completion; resolves with its wall time and whether it succeeded. */
function qemuImgTimed(args: readonly string[]): Promise<{ seconds: number; ok: boolean; stderr: string }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn('qemu-img', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ seconds: (performance.now() - t0) / 1000, ok: code === 0, stderr }));
  });
}

/**
 * The ops on a real image: the qemu-io commands in one `qemu-io -t writeback` process per segment
 * between snapshots, and each snapshotCreate as `qemu-img snapshot -c NAME` (qemu-io cannot create
 * internal snapshots). Net time = Σ (segment − empty qemu-io run) + Σ (snapshot − `qemu-img snapshot
 * -l` on the empty image).
 */
async function runQemu(dir: string, name: string, ops: Iterable<BenchOp>): Promise<QemuResult> {
  const segments: string[][] = [[]];
  const snapshotNames: string[] = [];
  let count = 0;
  for (const o of ops) {
    count++;
    if (o.op.kind === 'snapshotCreate') {
      snapshotNames.push(o.op.name);
      segments.push([]);
    } else segments[segments.length - 1]!.push(o.qemu);
  }
  const empty = join(dir, `${name}-empty.qcow2`);
  const path = join(dir, `${name}.qcow2`);
  await qemuImgCreate(empty, VIRTUAL_SIZE.toString(), { cluster_size: String(CLUSTER_SIZE) });
  await qemuImgCreate(path, VIRTUAL_SIZE.toString(), { cluster_size: String(CLUSTER_SIZE) });
  const startup = await qemuIoStdin(empty, []);
  const snapStartup = snapshotNames.length > 0 ? (await qemuImgTimed(['snapshot', '-l', empty])).seconds : 0;
  let seconds = 0;
  let snapshotSeconds = 0;
  let failed = 0;
  let peak: number | undefined;
  for (const [i, seg] of segments.entries()) {
    if (i > 0) {
      const snap = await qemuImgTimed(['snapshot', '-c', snapshotNames[i - 1]!, path]);
      if (!snap.ok) failed++;
      snapshotSeconds += snap.seconds;
    }
    const r = await qemuIoStdin(path, seg);
    seconds += r.seconds;
    failed += (r.stdout.match(/failed:/g) ?? []).length;
    if (r.peakRssKiB !== undefined) peak = Math.max(peak ?? 0, r.peakRssKiB);
  }
  const net = Math.max(1e-9, seconds - segments.length * startup.seconds + snapshotSeconds - snapshotNames.length * snapStartup);
  return {
    ops: count,
    failedOps: failed,
    seconds: seconds + snapshotSeconds,
    startupSeconds: startup.seconds,
    snapshots: snapshotNames.length,
    snapshotStartupSeconds: snapStartup,
    snapshotSeconds,
    processes: segments.length,
    netSeconds: net,
    opsPerSec: count / net,
    ...(peak !== undefined ? { peakRssKiB: peak } : {}),
    fileLength: statSync(path).size,
  };
}

// ---------------------------------------------------------------------------------------------
// Report

interface BenchResult {
  name: string;
  description: string;
  model: ModelResult;
  qemu?: QemuResult;
  /** model seconds / qemu-io net seconds (> 1: the model is slower). */
  timeRatio?: number;
  /** Undefined for the mixed benchmark: the issue asks for its figures, the 50,000 ops/s target is the random writes'. */
  meetsOpsTarget?: boolean;
  meetsMemoryTarget: boolean;
  pending?: string;
}

const mib = (b: number): string => `${(b / MiB).toFixed(1)} MiB`;

function printTable(results: readonly BenchResult[], args: Args): void {
  const rows: [string, ...string[]][] = [['', ...results.map((r) => r.name)]];
  const add = (label: string, f: (r: BenchResult) => string): void => {
    rows.push([label, ...results.map(f)]);
  };
  add('ops (failed)', (r) => `${r.model.ops}${r.model.truncated ? '*' : ''} (${r.model.failedOps})`);
  add('  of which snapshots', (r) => `${r.model.snapshots}`);
  add('model time', (r) => `${r.model.seconds.toFixed(2)} s`);
  add('model ops/s', (r) => `${Math.round(r.model.opsPerSec)}`);
  add('  runs (median above)', (r) => (r.model.runsOpsPerSec ?? [r.model.opsPerSec]).map((x) => Math.round(x)).join(' / '));
  add(`  target ≥ ${TARGET_OPS_PER_SEC}`, (r) => (r.meetsOpsTarget === undefined ? '– (figures only)' : r.meetsOpsTarget ? 'met' : 'MISSED'));
  add('metadata (clusters)', (r) => `${mib(r.model.metadataBytes)} (${r.model.metadataClusters})`);
  add('data written', (r) => mib(r.model.dataBytes));
  add(`budget ${TARGET_MEMORY_FACTOR}×(meta+data)`, (r) => mib(r.model.memoryBudget));
  add('peak rss (abs)', (r) => mib(r.model.peakRss));
  add('peak rss − baseline', (r) => mib(r.model.peakRss - r.model.baseline.rss));
  add('peak heapUsed', (r) => mib(r.model.peakHeapUsed));
  add('peak arrayBuffers', (r) => mib(r.model.peakArrayBuffers));
  add('retained after gc', (r) => (r.model.retainedAfterGc === undefined ? 'n/a (--expose-gc)' : mib(r.model.retainedAfterGc)));
  add('  memory target', (r) => (r.meetsMemoryTarget ? 'met' : 'MISSED'));
  add('model host file', (r) => `${mib(Number(r.model.hostFileLength))} (${r.model.hostPages} pages)`);
  if (args.qemu) {
    add('qemu time (net)', (r) => (r.qemu ? `${r.qemu.seconds.toFixed(2)} s (${r.qemu.netSeconds.toFixed(2)} s)` : '-'));
    add('  qemu-io processes', (r) => (r.qemu ? `${r.qemu.processes}` : '-'));
    add('  qemu-img snapshot -c', (r) => (r.qemu ? (r.qemu.snapshots > 0 ? `${r.qemu.snapshots} in ${r.qemu.snapshotSeconds.toFixed(2)} s` : '0') : '-'));
    add('qemu ops/s (net)', (r) => (r.qemu ? `${Math.round(r.qemu.opsPerSec)}` : '-'));
    add('qemu failed ops', (r) => (r.qemu ? `${r.qemu.failedOps}` : '-'));
    add('qemu-io peak rss', (r) => (r.qemu?.peakRssKiB !== undefined ? mib(r.qemu.peakRssKiB * KiB) : '-'));
    add('qemu host file', (r) => (r.qemu ? mib(r.qemu.fileLength) : '-'));
    add('  = model file length', (r) => (r.qemu ? (BigInt(r.qemu.fileLength) === r.model.hostFileLength ? 'yes' : `no (${r.model.hostFileLength} vs ${r.qemu.fileLength})`) : '-'));
    add('time model / qemu-io', (r) => (r.timeRatio === undefined ? '-' : `${r.timeRatio.toFixed(2)}×`));
  }
  const widths = rows[0]!.map((_c, i) => Math.max(...rows.map((row) => row[i]!.length)));
  for (const row of rows) console.log(row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));
  for (const r of results) {
    console.log(`\n${r.name}: ${r.description}`);
    if (r.model.truncated) console.log(`  * stopped at the model time cap after ${r.model.ops} ops (qemu-io ran the same ${r.model.ops}); raise --max-seconds / --mixed-max-seconds for the full sequence`);
    if (r.model.firstError) console.log(`  first model error: ${r.model.firstError}`);
    if (r.pending) console.log(`  pending: ${r.pending}`);
  }
  console.log(
    `\nmemory target = peak rss − baseline rss ≤ ${TARGET_MEMORY_FACTOR} × (metadata clusters × cluster size + data bytes written).` +
      `\nqemu-io runs with -t writeback, fed on stdin, one process per segment between snapshots; each snapshot is a` +
      `\nqemu-img snapshot -c process (qemu-io cannot create internal snapshots). "net" subtracts, per process, the` +
      `\nstart/open/close time of the same tool doing nothing (an empty qemu-io run; qemu-img snapshot -l).`,
  );
}

function* take<T>(it: Iterable<T>, n: number): Generator<T> {
  if (n <= 0) return;
  let i = 0;
  for (const x of it) {
    yield x;
    if (++i >= n) return;
  }
}

const jsonBigint = (_k: string, v: unknown): unknown => (typeof v === 'bigint' ? `${v}n` : v);
const reviveBigint = (_k: string, v: unknown): unknown => (typeof v === 'string' && /^\d+n$/.test(v) ? BigInt(v.slice(0, -1)) : v);

/**
 * The model side of benchmark `name` in a fresh process with the same node flags (tsx loader,
 * --expose-gc), so that one benchmark's garbage and never-returned malloc arenas do not show up
 * in the next one's memory figures.
 */
function runModelInChild(name: string): ModelResult {
  const args = process.argv.slice(2).filter((_a, i, all) => all[i] !== '--repeat' && all[i - 1] !== '--repeat');
  const out = execFileSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...args, '--child', name], {
    encoding: 'utf8',
    maxBuffer: 16 * MiB,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return JSON.parse(out, reviveBigint) as ModelResult;
}

/**
 * `repeat` model runs of benchmark `name`, each in a fresh process (runModelInChild): the run with
 * the median ops/s, with every run's ops/s in `runsOpsPerSec` and the highest peak rss of all runs
 * as its peak rss (the memory target is judged on the worst run). One run's figure moves by ±10 %
 * on a shared 2-core machine; the median of three moves much less.
 */
function runModelRepeated(name: string, repeat: number): ModelResult {
  const runs = Array.from({ length: repeat }, () => runModelInChild(name));
  const sorted = [...runs].sort((a, b) => a.opsPerSec - b.opsPerSec);
  const median = sorted[Math.floor((sorted.length - 1) / 2)]!;
  const peakRss = Math.max(...runs.map((r) => r.peakRss));
  return { ...median, peakRss, runsOpsPerSec: runs.map((r) => r.opsPerSec) };
}

async function bench(
  name: string,
  description: string,
  gen: () => Iterable<BenchOp>,
  withQemu: boolean,
  repeat: number,
  hasOpsTarget: boolean,
  pending?: string,
): Promise<BenchResult> {
  const model = runModelRepeated(name, repeat);
  let qemu: QemuResult | undefined;
  if (withQemu) {
    const dir = mkdtempSync(join(tmpdir(), 'qcow2-bench-'));
    try {
      qemu = await runQemu(dir, name, take(gen(), model.ops));
    } finally {
      rmSync(dir, { recursive: true, force: true }); // the random-writes image is a ~6 GiB sparse file
    }
  }
  const memUsed = model.peakRss - model.baseline.rss;
  return {
    name,
    description,
    model,
    ...(qemu ? { qemu, timeRatio: model.seconds / qemu.netSeconds } : {}),
    ...(hasOpsTarget ? { meetsOpsTarget: model.opsPerSec >= TARGET_OPS_PER_SEC } : {}),
    meetsMemoryTarget: memUsed <= model.memoryBudget,
    ...(pending !== undefined ? { pending } : {}),
  };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.child !== undefined) {
    const r =
      args.child === 'random-writes'
        ? runModel(randomWrites(args.ops, args.seed), args.maxSeconds)
        : args.child === 'mixed'
          ? runModel(mixedOps(args.mixedOps, args.seed), args.mixedMaxSeconds)
          : undefined;
    if (!r) throw new Error(`unknown benchmark ${args.child}`);
    process.stdout.write(JSON.stringify(r, jsonBigint));
    return;
  }
  const results: BenchResult[] = [];
  results.push(
    await bench(
      'random-writes',
      `${args.ops} random 4 KiB writes (4 KiB aligned, seed ${args.seed}), 1 TiB image, 64 KiB clusters`,
      () => randomWrites(args.ops, args.seed),
      args.qemu,
      args.repeat,
      true,
    ),
  );
  results.push(
    await bench(
      'mixed',
      `${args.mixedOps} mixed ops (write 45 %, write_zeroes 15 %, discard 15 %, compressed write 20 %, flush 5 %; 80 % in a 1 GiB hot window) with ${snapshotPositions(args.mixedOps).size} internal snapshots spread evenly, 1 TiB image, 64 KiB clusters`,
      () => mixedOps(args.mixedOps, args.seed),
      args.qemu,
      args.repeat,
      false,
    ),
  );
  if (args.json) {
    console.log(
      JSON.stringify(
        {
          targets: { opsPerSec: TARGET_OPS_PER_SEC, memoryFactor: TARGET_MEMORY_FACTOR },
          node: process.version,
          exposeGc: gc !== undefined,
          results,
        },
        (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v),
        2,
      ),
    );
  } else printTable(results, args);
}

await main();
