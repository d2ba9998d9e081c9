/**
 * A third-party writer for `qcow2-ref conform --crash --writer …` tests (test/qemu/conform-crash.test.ts):
 * `node --import tsx test/support/dm-log-writes-writer.ts IMAGE SCRIPT LOG [--no-flush]` applies the
 * op script to IMAGE with the driver (Qcow2Disk) on a backend that logs, in the dm-log-writes format
 * docs/crash.md describes, every write as whole 512-byte sectors of the file after it, every flush
 * as a FLUSH entry and a MARK entry after each op — what a writer on a Linux dm-log-writes device
 * hands over. `--no-flush` drops the flushes from the log: a broken writer the harness must catch.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { memoryBackend, Qcow2Disk, type DiskBackend } from '../../src/disk/index.ts';
import { applyOpToDisk } from '../../src/crash/index.ts';
import { parseScript } from '../../src/script/index.ts';

const SECTOR = 512;
const [imagePath, scriptPath, logPath, flag] = process.argv.slice(2);
if (imagePath === undefined || scriptPath === undefined || logPath === undefined) {
  process.stderr.write('usage: dm-log-writes-writer.ts IMAGE SCRIPT LOG [--no-flush]\n');
  process.exit(2);
}
const noFlush = flag === '--no-flush';
const entries: Uint8Array[] = [];
let count = 0;

/** One log entry: a sector-sized header {sector, nr_sectors, flags, data_len} and its data. */
function entry(sector: bigint, data: Uint8Array, flags: bigint, dataLen = 0n): void {
  const head = new Uint8Array(SECTOR);
  const v = new DataView(head.buffer);
  v.setBigUint64(0, sector, true);
  v.setBigUint64(8, BigInt(data.length / SECTOR), true);
  v.setBigUint64(16, flags, true);
  v.setBigUint64(24, dataLen, true);
  entries.push(head, data);
  count++;
}

const mem = memoryBackend(new Uint8Array(readFileSync(imagePath)));
const logging: DiskBackend = {
  size: () => mem.size(),
  read: (o, t) => mem.read(o, t),
  write: async (offset, data) => {
    await mem.write!(offset, data);
    // Whole sectors, as the file holds them after the write.
    const first = offset / BigInt(SECTOR);
    const end = (offset + BigInt(data.length) + BigInt(SECTOR - 1)) / BigInt(SECTOR);
    const bytes = new Uint8Array(Number(end - first) * SECTOR);
    const size = await mem.size();
    const avail = Number((end * BigInt(SECTOR) < size ? end * BigInt(SECTOR) : size) - first * BigInt(SECTOR));
    await mem.read(first * BigInt(SECTOR), bytes.subarray(0, avail));
    entry(first, bytes, 0n);
  },
  truncate: (l) => mem.truncate!(l),
  flush: async () => {
    if (!noFlush) entry(0n, new Uint8Array(0), 1n);
  },
};

const disk = await Qcow2Disk.open(logging, { readOnly: false });
for (const [i, op] of parseScript(readFileSync(scriptPath, 'utf8')).entries()) {
  await applyOpToDisk(disk, op);
  const name = new TextEncoder().encode(`op ${i}`);
  const data = new Uint8Array(SECTOR);
  data.set(name);
  entry(0n, data, 8n, BigInt(name.length));
}
await disk.close();
writeFileSync(imagePath, mem.bytes());
const superblock = new Uint8Array(SECTOR);
const sv = new DataView(superblock.buffer);
sv.setBigUint64(0, 0x6a736677736872n, true);
sv.setBigUint64(8, 1n, true);
sv.setBigUint64(16, BigInt(count), true);
sv.setUint32(24, SECTOR, true);
writeFileSync(logPath, Buffer.concat([superblock, ...entries]));
