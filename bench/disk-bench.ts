/**
 * The driver (Qcow2Disk over a Node file) against `qemu-io -t writeback` doing the same requests in
 * the same run: random 4 KiB writes into a fresh 1 TiB image, and random 4 KiB reads over a fully
 * written 4 GiB image. Reports ops/s of each side, their ratio, and memory (the driver's peak RSS
 * and cache, qemu-io's peak RSS). Never fails on a missed target: it prints `met` / `MISSED`.
 *
 *   npm run bench:disk [-- --writes N] [-- --reads N] [--seed S] [--json]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { openDiskFile } from '../src/io/index.ts';
import { mulberry32 } from './prng.ts';
import { qemuIoStdin } from './qemu-io-stdin.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const BLOCK = 4 * KiB;

const { values } = parseArgs({
  options: {
    writes: { type: 'string', default: '20000' },
    reads: { type: 'string', default: '20000' },
    seed: { type: 'string', default: '24301' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help === true) {
  console.log('usage: npm run bench:disk -- [--writes N] [--reads N] [--seed S] [--json]');
  process.exit(0);
}
const WRITES = Number(values.writes);
const READS = Number(values.reads);
const SEED = Number(values.seed);

/** `n` random block-aligned offsets inside `size` bytes. */
function offsets(n: number, size: bigint, seed: number): bigint[] {
  const r = mulberry32(seed);
  const blocks = Number(size / BigInt(BLOCK));
  return Array.from({ length: n }, () => BigInt(Math.floor(r() * 2 ** 21) * 2 ** 32 + Math.floor(r() * 2 ** 32)) % BigInt(blocks) * BigInt(BLOCK));
}

function peakRssMiB(): number {
  return process.resourceUsage().maxRSS / 1024;
}

interface Side {
  ops: number;
  seconds: number;
  opsPerSec: number;
  peakRssMiB?: number;
}

interface Result {
  name: string;
  driver: Side & { cacheMiB: number };
  qemu: Side;
  /** driver ops/s ÷ qemu-io ops/s (target ≥ 1). */
  ratio: number;
}

/** qemu-io with no commands: its start, open and close, subtracted from each timed run. */
async function qemuStartup(path: string): Promise<number> {
  let best = Infinity;
  for (let i = 0; i < 3; i++) best = Math.min(best, (await qemuIoStdin(path, [])).seconds);
  return best;
}

async function benchWrites(dir: string): Promise<Result[]> {
  const size = 1n << 40n;
  const offs = offsets(WRITES, size, SEED);
  const data = new Uint8Array(BLOCK).fill(0xab);
  // qemu-io first, on its own image.
  const qpath = join(dir, 'w-qemu.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', qpath, '1T']);
  const startup = await qemuStartup(qpath);
  const q = await qemuIoStdin(qpath, offs.map((o) => `write -q -P 0xab ${o} 4k`));
  const qSeconds = Math.max(1e-9, q.seconds - startup);
  rmSync(qpath);

  const driver = async (mode: 'write-through' | 'write-back, synchronous calls'): Promise<Result> => {
    const dpath = join(dir, 'w-disk.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', dpath, '1T']);
    const wb = mode !== 'write-through';
    const disk = await openDiskFile(dpath, { readOnly: false, ...(wb ? { writeback: true, syncIo: true } : {}) });
    const t0 = performance.now();
    for (const o of offs) await disk.write(o, data);
    const cache = disk.cachedBytes;
    // Included in the time: write-back issues the deferred I/O here, and both end as qemu-io does.
    await disk.close();
    const dSeconds = (performance.now() - t0) / 1000;
    rmSync(dpath);
    return {
      name: `random 4 KiB writes into a fresh 1 TiB image (${WRITES} ops), driver ${mode}`,
      driver: { ops: WRITES, seconds: dSeconds, opsPerSec: WRITES / dSeconds, peakRssMiB: peakRssMiB(), cacheMiB: cache / MiB },
      qemu: { ops: WRITES, seconds: qSeconds, opsPerSec: WRITES / qSeconds, ...(q.peakRssKiB !== undefined ? { peakRssMiB: q.peakRssKiB / 1024 } : {}) },
      ratio: WRITES / dSeconds / (WRITES / qSeconds),
    };
  };
  return [await driver('write-through'), await driver('write-back, synchronous calls')];
}

async function benchReads(dir: string): Promise<Result[]> {
  const size = 4n << 30n;
  const path = join(dir, 'r.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, '4G']);
  // qemu-io takes at most 2 GiB - 512 bytes per request: four writes of 1 GiB.
  execFileSync('qemu-io', ['-t', 'writeback', ...[0, 1, 2, 3].flatMap((g) => ['-c', `write -q -P 0x5a ${g}G 1G`]), path]);
  const offs = offsets(READS, size, SEED + 1);
  const startup = await qemuStartup(path);
  const q = await qemuIoStdin(path, offs.map((o) => `read -q ${o} 4k`));
  const qSeconds = Math.max(1e-9, q.seconds - startup);

  const driver = async (sync: boolean): Promise<Result> => {
    const disk = await openDiskFile(path, sync ? { syncIo: true } : {});
    const t0 = performance.now();
    let check = 0;
    for (const o of offs) check ^= (await disk.read(o, BLOCK))[0]!;
    const dSeconds = (performance.now() - t0) / 1000;
    const cache = disk.cachedBytes;
    await disk.close();
    if (check !== (READS % 2 === 0 ? 0 : 0x5a)) throw new Error('reads returned the wrong bytes');
    return {
      name: `random 4 KiB reads over a fully written 4 GiB image (${READS} ops), driver ${sync ? 'with synchronous calls' : 'on the thread pool'}`,
      driver: { ops: READS, seconds: dSeconds, opsPerSec: READS / dSeconds, peakRssMiB: peakRssMiB(), cacheMiB: cache / MiB },
      qemu: { ops: READS, seconds: qSeconds, opsPerSec: READS / qSeconds, ...(q.peakRssKiB !== undefined ? { peakRssMiB: q.peakRssKiB / 1024 } : {}) },
      ratio: READS / dSeconds / (READS / qSeconds),
    };
  };
  const results = [await driver(false), await driver(true)];
  rmSync(path);
  return results;
}

const dir = mkdtempSync(join(tmpdir(), 'disk-bench-'));
try {
  const results = [...(await benchWrites(dir)), ...(await benchReads(dir))];
  if (values.json === true) console.log(JSON.stringify({ seed: SEED, results }, null, 2));
  else {
    for (const r of results) {
      console.log(r.name);
      console.log(`  driver   ${r.driver.opsPerSec.toFixed(0).padStart(8)} ops/s  (${r.driver.seconds.toFixed(2)} s, peak rss ${r.driver.peakRssMiB?.toFixed(0)} MiB, cache ${r.driver.cacheMiB.toFixed(1)} MiB)`);
      console.log(`  qemu-io  ${r.qemu.opsPerSec.toFixed(0).padStart(8)} ops/s  (${r.qemu.seconds.toFixed(2)} s net, peak rss ${r.qemu.peakRssMiB?.toFixed(0) ?? '?'} MiB)`);
      console.log(`  driver / qemu-io: ${r.ratio.toFixed(2)}×  target ≥ 1: ${r.ratio >= 1 ? 'met' : 'MISSED'}`);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
