/**
 * Convert benchmark (issue 4, "Performance"): `qcow2-ref convert -O raw` of a fully written qcow2
 * image against `qemu-img convert -O raw` of the same image, in the same run.
 *
 *   npx tsx bench/convert-bench.ts [--size-mib N] [--repeat R] [--json]
 *
 * The input: N MiB (default 1024 = 1 GiB) of non-repeating data (a xorshift stream, no zero
 * sectors, so neither converter can skip anything), turned into a qcow2 image by
 * `qemu-img convert -f raw -O qcow2` (64 KiB clusters, every cluster allocated). Then R times
 * (default 3), alternating which goes first, each tool converts it to a raw file in the same
 * directory (after a `sync`, so that neither pays for the other's write-back); the outputs must be
 * byte-identical (checked with `cmp`) and are deleted before the next conversion. Reported: the
 * median and the best wall time of each (process start to exit, so qcow2-ref's Node and TypeScript
 * loader start-up is included, as a user pays it, and so is its fsync of the output before the
 * rename — qemu-img's default cache mode for convert output, `unsafe`, never flushes; so the time of
 * `sync OUT` after qemu-img is also reported), the ratios ours / qemu-img's (target ≤ 1.5×), and
 * the peak resident memory of each process (GNU time's
 * maximum RSS when /usr/bin/time exists, else VmHWM polled from /proc every 50 ms).
 *
 * A benchmark reports; it never fails on a missed target (exit 0), only on a crash or on outputs
 * that differ.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

const MiB = 1 << 20;
const TARGET_RATIO = 1.5;
const CLI = fileURLToPath(new URL('../bin/qcow2-ref.mjs', import.meta.url));
const GNU_TIME = '/usr/bin/time';

interface Args {
  sizeMiB: number;
  repeat: number;
  json: boolean;
}

function parseArgs(argv: readonly string[]): Args {
  const a: Args = { sizeMiB: 1024, repeat: 3, json: false };
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
    const ours: Timed[] = [];
    const qemu: Timed[] = [];
    /** qemu-img's output fsync'ed after it finished (`sync FILE`): the durability qcow2-ref convert gives. */
    const qemuSync: number[] = [];
    const outQemu = join(dir, 'qemu.raw');
    const outOurs = join(dir, 'ours.raw');
    for (let r = 0; r < args.repeat; r++) {
      // `sync` (untimed) before each conversion: the previous one's dirty pages are written back
      // first instead of slowing down whichever runs next.
      const runQemu = async (): Promise<void> => {
        execFileSync('sync');
        qemu.push(await timed('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', input, outQemu]));
        qemuSync.push((await timed('sync', [outQemu])).seconds);
      };
      const runOurs = async (): Promise<void> => {
        execFileSync('sync');
        ours.push(await timed(process.execPath, [CLI, 'convert', '-f', 'qcow2', '-O', 'raw', input, outOurs]));
      };
      if (r % 2 === 0) {
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
    const oursS = median(ours.map((t) => t.seconds));
    const qemuS = median(qemu.map((t) => t.seconds));
    const result = {
      sizeMiB: args.sizeMiB,
      repeat: args.repeat,
      prepareSeconds: prepSeconds,
      qemuImgSeconds: qemu.map((t) => t.seconds),
      oursSeconds: ours.map((t) => t.seconds),
      qemuImgMedianSeconds: qemuS,
      oursMedianSeconds: oursS,
      ratio: oursS / qemuS,
      qemuImgPlusSyncMedianSeconds: median(qemu.map((t, i) => t.seconds + qemuSync[i]!)),
      ratioToQemuImgPlusSync: oursS / median(qemu.map((t, i) => t.seconds + qemuSync[i]!)),
      qemuImgBestSeconds: Math.min(...qemu.map((t) => t.seconds)),
      oursBestSeconds: Math.min(...ours.map((t) => t.seconds)),
      bestRatio: Math.min(...ours.map((t) => t.seconds)) / Math.min(...qemu.map((t) => t.seconds)),
      targetRatio: TARGET_RATIO,
      met: oursS / qemuS <= TARGET_RATIO,
      qemuImgPeakRssMiB: Math.max(...qemu.map((t) => t.peakRssKiB)) / 1024,
      oursPeakRssMiB: Math.max(...ours.map((t) => t.peakRssKiB)) / 1024,
      memorySource: existsSync(GNU_TIME) ? 'GNU time %M' : '/proc VmHWM polled',
      identicalOutputs: true,
    };
    if (args.json) {
      console.log(JSON.stringify(result, null, 2));
      return;
    }
    const f = (s: number): string => s.toFixed(2);
    console.log(`convert of a fully written ${args.sizeMiB} MiB qcow2 image (64 KiB clusters) to raw, ${args.repeat} runs each (input made in ${f(prepSeconds)} s)`);
    console.log('');
    console.log(`| | qemu-img convert -O raw | qcow2-ref convert -O raw |`);
    console.log(`|---|---|---|`);
    console.log(`| wall time, median (runs) | ${f(qemuS)} s (${qemu.map((t) => f(t.seconds)).join(', ')}) | ${f(oursS)} s (${ours.map((t) => f(t.seconds)).join(', ')}) |`);
    console.log(`| wall time, best | ${f(result.qemuImgBestSeconds)} s | ${f(result.oursBestSeconds)} s |`);
    console.log(`| qemu-img + \`sync OUT\` (same durability as ours), median | ${f(result.qemuImgPlusSyncMedianSeconds)} s | |`);
    console.log(`| peak RSS (${result.memorySource}) | ${result.qemuImgPeakRssMiB.toFixed(0)} MiB | ${result.oursPeakRssMiB.toFixed(0)} MiB |`);
    console.log('');
    console.log(`ratio ours / qemu-img: ${result.ratio.toFixed(2)}× of the medians, ${result.bestRatio.toFixed(2)}× of the best runs (target ≤ ${TARGET_RATIO}×: ${result.met ? 'met' : 'MISSED'}); ${result.ratioToQemuImgPlusSync.toFixed(2)}× against qemu-img followed by an fsync of its output; outputs byte-identical`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
