/**
 * For the record (issue 13): MiB/s reading a 1 GiB qcow2 image from a Blob through Qcow2Disk in
 * Debian's chromium (headless, the test harness of test/qemu/browser.test.ts), with the Blob's own
 * slice rates beside it. Every 4 KiB block's content is checked, so a fast wrong read cannot pass.
 *
 *   npm run bench:browser
 */
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { qemuImgConvert } from '../src/qemu/qemu-img.ts';
import { inPage, startBrowserHarness } from '../test/support/browser-harness.ts';

const KIB = 1024;
const MIB = 1024 * KIB;
const BLOCK = 4 * KIB;

const dir = mkdtempSync(join(tmpdir(), 'qcow2-ref-browser-bench-'));
const h = await startBrowserHarness(dir);
try {
  // Each 4 KiB block starts with its index and is filled with its low byte: the page checks both.
  const raw = join(dir, 'big.raw');
  const fd = openSync(raw, 'w');
  try {
    const buf = Buffer.alloc(16 * MIB);
    for (let at = 0; at < 1024 * MIB; at += buf.length) {
      for (let p = 0; p < buf.length; p += BLOCK) {
        buf.writeUInt32LE((at + p) / BLOCK, p);
        buf.fill(((at + p) / BLOCK) & 0xff, p + 4, p + BLOCK);
      }
      writeSync(fd, buf);
    }
  } finally {
    closeSync(fd);
  }
  const big = join(dir, 'big.qcow2');
  await qemuImgConvert(raw, big, { inFormat: 'raw', outFormat: 'qcow2' });
  rmSync(raw);
  h.serve('big.qcow2', big);
  const r = await inPage(h, 'readSpeed', 'big.qcow2', MIB, BLOCK);
  if (r.bytes !== 1024 * MIB || r.badBlocks !== 0) throw new Error(`read ${r.bytes} bytes, ${r.badBlocks} bad blocks`);
  const rate = (bytes: number, ms: number): string => (bytes / MIB / (ms / 1000)).toFixed(0);
  console.log(`Chromium ${h.version}: a 1 GiB qcow2 image (64 KiB clusters) from a Blob`);
  console.log(`  Qcow2Disk over blobBackend, 1 MiB reads:   ${rate(r.bytes, r.driverMs).padStart(5)} MiB/s (${(r.driverMs / 1000).toFixed(1)} s)`);
  console.log(`  Blob.slice().arrayBuffer(), 1 MiB slices:  ${rate(r.bytes, r.blobMs).padStart(5)} MiB/s`);
  console.log(`  Blob.slice().arrayBuffer(), 64 KiB slices: ${rate(r.bytes64k, r.blob64kMs).padStart(5)} MiB/s`);
  console.log(`  blobBackend, sequential 64 KiB reads:      ${rate(r.bytes64k, r.backend64kMs).padStart(5)} MiB/s`);
} finally {
  await h.close();
  rmSync(dir, { recursive: true, force: true });
}
