/**
 * Convert benchmark (issue 4, "Performance"): `qcow2-ref convert -O raw` of a fully written qcow2
 * image against `qemu-img convert -O raw` of the same image, in the same run.
 *
 *   npm run bench:convert -- [--size-mib N] [--repeat R] [--json]
 *   (= node scripts/build.mjs bench/convert-bench.ts && node dist/bench/convert-bench.mjs)
 *
 * The input: N MiB (default 1024 = 1 GiB) of non-repeating data (a xorshift stream, no zero
 * sectors, so neither converter can skip anything), turned into a qcow2 image by
 * `qemu-img convert -f raw -O qcow2` (64 KiB clusters, every cluster allocated). Then R times
 * (default 5), for each output cache mode — both tools' default `-t unsafe` (OUT never flushed) and
 * `-t writeback` (OUT flushed once at the end) — each tool converts it to a raw file in the same
 * directory, alternating which goes first, after one unrecorded warm-up round. Before each conversion, untimed: `sync` (so that neither
 * pays for the other's write-back) and a read of the whole input (so both read it from the page
 * cache). The outputs must be byte-identical (checked with `cmp`) and are deleted before the next
 * conversion. Reported: the median and every wall time (process start to exit, so qcow2-ref's Node
 * start-up is included, as a user pays it), the ratio ours / qemu-img's of the medians (target
 * ≤ 1.5× for the defaults), and the peak resident memory of each process (GNU time's maximum RSS
 * when /usr/bin/time exists, else VmHWM polled from /proc every 50 ms).
 *
 * A benchmark reports; it never fails on a missed target (exit 0), only on a crash or on outputs
 * that differ.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { repoRoot } from '../src/io/repo-root.ts';
// Node's faster inflate for the model's codecs, as the Node entry and the CLI install it.
import '../src/io/node-compression.ts';

const MiB = 1 << 20;
const TARGET_RATIO = 1.5;
const CLI = join(repoRoot(), 'bin/qcow2-ref.mjs');
const GNU_TIME = '/usr/bin/time';
/** The output cache modes compared: both tools' default, and a flush of OUT at the end. */
const CACHE_MODES = ['unsafe', 'writeback'] as const;
type CacheMode = (typeof CACHE_MODES)[number];

interface Args {
  sizeMiB: number;
  repeat: number;
  json: boolean;
}

function parseArgs(argv: readonly string[]): Args {
  const a: Args = { sizeMiB: 1024, repeat: 5, json: false };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const int = (): number => {
      const v = argv[++i];
      if (v === undefined || !/^\d+$/.test(v) || Number(v) < 1) throw new Error(`${flag} needs a positive integer`);
      return Number(v);
    };
    if (flag === '--size-mib') a.sizeMiB = int();
    else if (flag === '--repeat') a.repeat = int();
    else if (flag === '--json') a.json = true;
    else throw new Error(`unknown argument ${flag} (usage: convert-bench.ts [--size-mib N] [--repeat R] [--json])`);
  }
  return a;
}

/** Writes `sizeMiB` MiB of a xorshift32 byte stream (no zero 512-byte sector in practice) to `path`. */
async function writeData(path: string, sizeMiB: number): Promise<void> {
  const out = createWriteStream(path);
  let x = 0x2545f491;
  for (let m = 0; m < sizeMiB; m++) {
    const buf = Buffer.allocUnsafe(MiB);
    const words = new Uint32Array(buf.buffer, buf.byteOffset, MiB / 4);
    for (let i = 0; i < words.length; i++) {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      words[i] = x;
    }
    if (!out.write(buf)) await new Promise<void>((r) => out.once('drain', () => r()));
  }
  await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
}

interface Timed {
  readonly seconds: number;
  /** Peak resident set size of the process, KiB. */
  readonly peakRssKiB: number;
}

/**
 * Runs `cmd args` to completion and measures its wall time and peak RSS: through GNU time when it
 * exists (`-f %M` on a file descriptor of its own), else VmHWM polled from /proc.
 */
function timed(cmd: string, args: readonly string[]): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const gnu = existsSync(GNU_TIME);
    const rssFile = join(tmpdir(), `convert-bench-rss-${process.pid}-${Math.random().toString(36).slice(2)}`);
    const t0 = performance.now();
    const child = gnu
      ? spawn(GNU_TIME, ['-o', rssFile, '-f', '%M', cmd, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
      : spawn(cmd, [...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let peak = 0;
    const poll = gnu
      ? undefined
      : setInterval(() => {
          try {
            const m = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
            if (m) peak = Math.max(peak, Number(m[1]));
          } catch {
            /* exited */
          }
        }, 50);
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (e) => {
      if (poll) clearInterval(poll);
      reject(e);
    });
    child.on('close', (code) => {
      const seconds = (performance.now() - t0) / 1000;
      if (poll) clearInterval(poll);
      if (gnu) {
        try {
          peak = Number(readFileSync(rssFile, 'utf8').trim().split('\n').pop());
        } finally {
          rmSync(rssFile, { force: true });
        }
      }
      if (code !== 0) reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr}`));
      else resolve({ seconds, peakRssKiB: peak });
    });
  });
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const dir = mkdtempSync(join(tmpdir(), 'qcow2-ref-convert-bench-'));
  try {
    const raw = join(dir, 'input.raw');
    const input = join(dir, 'input.qcow2');
    const tPrep = performance.now();
    await writeData(raw, args.sizeMiB);
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, input]);
    rmSync(raw);
    const prepSeconds = (performance.now() - tPrep) / 1000;
    const outQemu = join(dir, 'qemu.raw');
    const outOurs = join(dir, 'ours.raw');
    /** One timed conversion by each tool per run and cache mode, alternating which goes first. */
    const runs: Record<CacheMode, { qemu: Timed[]; ours: Timed[] }> = { unsafe: { qemu: [], ours: [] }, writeback: { qemu: [], ours: [] } };
    // Round -1 is a warm-up, not recorded: in the first seconds after the input was made, whichever
    // tool runs second was seen to take 5–10× its usual time (the VM reclaiming page cache).
    for (let r = -1; r < args.repeat; r++) {
      const record = (list: Timed[], t: Timed): void => {
        if (r >= 0) list.push(t);
      };
      for (const mode of CACHE_MODES) {
        // Untimed before each conversion: `sync`, so the previous one's dirty pages are written back
        // instead of slowing down whichever runs next, then a read of the whole input, so that both
        // tools read it from the page cache (the VM's reclaim may have dropped it since).
        const settle = (): void => {
          execFileSync('sync');
          execFileSync('cat', [input], { stdio: ['ignore', 'ignore', 'inherit'] });
        };
        const runQemu = async (): Promise<void> => {
          settle();
          record(runs[mode].qemu, await timed('qemu-img', ['convert', '-t', mode, '-f', 'qcow2', '-O', 'raw', input, outQemu]));
        };
        const runOurs = async (): Promise<void> => {
          settle();
          record(runs[mode].ours, await timed(process.execPath, [CLI, 'convert', '-t', mode, '-f', 'qcow2', '-O', 'raw', input, outOurs]));
        };
        if (r % 2 !== 0) {
          await runQemu();
          await runOurs();
        } else {
          await runOurs();
          await runQemu();
        }
        // The same bytes (cmp exits 1 on a difference, which execFileSync throws).
        execFileSync('cmp', ['-s', outQemu, outOurs]);
        if (statSync(outOurs).size !== args.sizeMiB * MiB) throw new Error('output has the wrong size');
        rmSync(outQemu);
        rmSync(outOurs);
      }
    }
    const summary = (mode: CacheMode) => {
      const { qemu, ours } = runs[mode];
      const qemuS = median(qemu.map((t) => t.seconds));
      const oursS = median(ours.map((t) => t.seconds));
      return {
        qemuImgSeconds: qemu.map((t) => t.seconds),
        oursSeconds: ours.map((t) => t.seconds),
        qemuImgMedianSeconds: qemuS,
        oursMedianSeconds: oursS,
        ratio: oursS / qemuS,
        bestRatio: Math.min(...ours.map((t) => t.seconds)) / Math.min(...qemu.map((t) => t.seconds)),
        qemuImgPeakRssMiB: Math.max(...qemu.map((t) => t.peakRssKiB)) / 1024,
        oursPeakRssMiB: Math.max(...ours.map((t) => t.peakRssKiB)) / 1024,
      };
    };
    const unsafe = summary('unsafe');
    const writeback = summary('writeback');
    const result = {
      sizeMiB: args.sizeMiB,
      repeat: args.repeat,
      prepareSeconds: prepSeconds,
      /** Both tools' default: no flush of OUT (qemu-img convert's default cache mode is unsafe). */
      unsafe,
      /** `-t writeback`: OUT flushed to disk once at the end, by both. */
      writeback,
      targetRatio: TARGET_RATIO,
      met: unsafe.ratio <= TARGET_RATIO,
      memorySource: existsSync(GNU_TIME) ? 'GNU time %M' : '/proc VmHWM polled',
      identicalOutputs: true,
    };
    if (args.json) {
      console.log(JSON.stringify(result, null, 2));
      return;
    }
    const f = (x: number): string => x.toFixed(2);
    const times = (xs: readonly number[]): string => xs.map(f).join(', ');
    console.log(`convert of a fully written ${args.sizeMiB} MiB qcow2 image (64 KiB clusters) to raw, ${args.repeat} runs each (input made in ${f(prepSeconds)} s)`);
    console.log('');
    console.log(`| | qemu-img convert -O raw | qcow2-ref convert -O raw | ratio of medians (best runs) |`);
    console.log(`|---|---|---|---|`);
    for (const [label, m] of [['default (`-t unsafe`)', unsafe], ['`-t writeback` (OUT fsync\'ed)', writeback]] as const) {
      console.log(`| ${label}: median (runs) | ${f(m.qemuImgMedianSeconds)} s (${times(m.qemuImgSeconds)}) | ${f(m.oursMedianSeconds)} s (${times(m.oursSeconds)}) | ${f(m.ratio)}× (${f(m.bestRatio)}×) |`);
    }
    console.log(`| peak RSS (${result.memorySource}) | ${Math.max(unsafe.qemuImgPeakRssMiB, writeback.qemuImgPeakRssMiB).toFixed(0)} MiB | ${Math.max(unsafe.oursPeakRssMiB, writeback.oursPeakRssMiB).toFixed(0)} MiB | |`);
    console.log('');
    console.log(`ratio ours / qemu-img with both defaults: ${f(unsafe.ratio)}× of the medians (target ≤ ${TARGET_RATIO}×: ${result.met ? 'met' : 'MISSED'}); with -t writeback: ${f(writeback.ratio)}×; outputs byte-identical`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
