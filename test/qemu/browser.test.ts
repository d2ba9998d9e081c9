/**
 * qcow2-ref in a real browser: Debian's chromium, headless, driven by playwright-core through
 * test/support/browser-harness.ts, running test/browser/page.ts and worker.ts bundled by esbuild for
 * the browser from the core entry src/index.ts.
 * - The bundle: the core entry and everything it loads bundle with platform 'browser' and no Node
 *   polyfills (a node:* import fails the build), and the page starts.
 * - Blob reads: an image qemu-img made, with zstd compressed clusters, extended L2, an internal
 *   snapshot and a qcow2 backing file (itself with zlib compressed clusters, and shorter than the
 *   image), is read in the page from Blobs through Qcow2Disk; the SHA-256 of the guest (crypto.subtle,
 *   read in aligned and in odd-sized chunks, and once more with the image in a memoryBackend) equals
 *   that of `qemu-img convert -O raw`.
 * - OPFS writes: in a dedicated worker, a write sequence goes through Qcow2Disk over opfsBackend into
 *   an OPFS file holding an image qemu-img created; each write reads back, the file is copied out,
 *   passes `qemu-img check` clean, and converts to exactly the raw bytes the same writes make.
 * The read rate of a 1 GiB image from a Blob is a benchmark (bench/browser-bench.ts), not a test.
 * A missing chromium, qemu-img or qemu-io fails the tests; nothing is skipped.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkCounter, qcow2Specific, qemuImgCheck, qemuImgConvert, qemuImgCreate, qemuImgInfo, qemuImgSnapshot, qemuIo, toBigInt } from '../../src/qemu/qemu-img.ts';
import { requireQemu } from '../../src/qemu/run.ts';
import { applyWrites, planWrites, xorshift, type PlannedWrite } from '../browser/writes.ts';
import { bundleBrowserScripts, inPage, startBrowserHarness, type BrowserHarness } from '../support/browser-harness.ts';

const dir = mkdtempSync(join(tmpdir(), 'qcow2-ref-browser-'));
const KIB = 1024;
const MIB = 1024 * KIB;

// One browser for the file, started by the first test that needs it; a failure to start (no
// chromium, a bundle that pulls node:*) fails every such test with the same message.
let started: Promise<BrowserHarness> | undefined;
const browser = (): Promise<BrowserHarness> => (started ??= startBrowserHarness(dir));

beforeAll(async () => {
  await requireQemu();
});
afterAll(async () => {
  try {
    await started?.then((h) => h.close(), () => undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** `length` bytes of text-like data (compresses, but differs at every position) for qemu-io `write -s`. */
function textFile(name: string, length: number, seed: number): string {
  const words = ['qcow2 ', 'cluster ', 'zstd ', 'zlib ', 'refcount ', 'L2 table ', 'snapshot\n', 'backing '];
  const out = Buffer.alloc(length);
  const next = xorshift(seed);
  for (let i = 0; i < length; ) {
    const x = next();
    const w = `${words[x % words.length]!}${(x >>> 8) % 1000} `;
    i += out.write(w.slice(0, length - i), i, 'latin1');
  }
  const path = join(dir, name);
  writeFileSync(path, out);
  return path;
}

describe('qcow2-ref in Chromium', () => {
  it('the core entry bundles for the browser without node:* modules', async () => {
    const bundle = await bundleBrowserScripts();
    expect([...bundle.files.keys()].sort()).toEqual(['page.js', 'worker.js']);
    expect(bundle.inputs.filter((p) => p.startsWith('node:'))).toEqual([]);
    expect(bundle.inputs).toContain('src/index.ts');
  });

  it('reads a compressed, extended-L2, snapshotted image with a backing file from Blobs as qemu-img convert does', async () => {
    const h = await browser();
    const c = 64 * KIB;
    // The backing file: zlib, 8 MiB, compressed clusters of text, a plain cluster, a zeroed one.
    const base = join(dir, 'base.qcow2');
    await qemuImgCreate(base, 8 * MIB, { compression_type: 'zlib', cluster_size: String(c) });
    await qemuIo(base, [
      `write -c -s ${textFile('t1', c, 1)} 0 ${c}`,
      `write -c -s ${textFile('t2', c, 2)} ${5 * c} ${c}`,
      `write -c -s ${textFile('t3', c, 3)} ${100 * c} ${c}`,
      `write -s ${textFile('t4', 3 * c, 4)} ${20 * c} ${3 * c}`,
      `write -P 0x5a ${127 * c} ${c}`,
    ]);
    // The image: zstd, extended L2, 16 MiB over the 8 MiB backing file; compressed clusters,
    // subcluster writes over backing data, zeroed subclusters, a snapshot, then writes after it.
    const top = join(dir, 'top.qcow2');
    await qemuImgCreate(top, 16 * MIB, { compression_type: 'zstd', extended_l2: 'on', cluster_size: String(c) }, ['-b', 'base.qcow2', '-F', 'qcow2']);
    await qemuIo(top, [
      `write -c -s ${textFile('t5', c, 5)} ${2 * c} ${c}`,
      `write -c -s ${textFile('t6', c, 6)} ${150 * c} ${c}`,
      `write -c -s ${textFile('t7', c, 7)} ${200 * c} ${c}`,
      `write -c -s ${textFile('t14', c, 14)} ${151 * c} ${c}`,
      `write -s ${textFile('t8', 4 * KIB, 8)} ${5 * c + 4 * KIB} ${4 * KIB}`,
      `write -s ${textFile('t9', 6 * KIB, 9)} ${21 * c + 2 * KIB} ${6 * KIB}`,
      `write -z ${c + 8 * KIB} ${8 * KIB}`,
      `write -z ${100 * c + 16 * KIB} ${16 * KIB}`,
      `write -s ${textFile('t10', 3 * c, 10)} ${240 * c} ${3 * c}`,
    ]);
    await qemuImgSnapshot(top, 'create', 'before');
    await qemuIo(top, [
      `write -s ${textFile('t11', 8 * KIB, 11)} ${200 * c + 12 * KIB} ${8 * KIB}`, // into a compressed cluster the snapshot shares
      `write -s ${textFile('t12', 2 * KIB, 12)} ${241 * c + 30 * KIB} ${2 * KIB}`, // into a plain cluster the snapshot shares
      `write -z ${2 * c} ${c}`,
      `write -s ${textFile('t13', 12 * KIB, 13)} ${127 * c + 60 * KIB} ${12 * KIB}`, // across the end of the backing file
    ]);

    // What the image is: otherwise this test would prove less than it says.
    const info = await qemuImgInfo(top);
    const q = qcow2Specific(info);
    expect([q['compression-type'], q['extended-l2'], info.snapshots?.map((s) => s.name), info['backing-filename']]).toEqual(['zstd', true, ['before'], 'base.qcow2']);
    expect(qcow2Specific(await qemuImgInfo(base))['compression-type']).toBe('zlib');
    for (const path of [base, top]) {
      // Compressed clusters the active image maps (the snapshot holds two more in top.qcow2).
      const check = await qemuImgCheck(path);
      expect(check.code).toBe(0);
      expect(toBigInt(checkCounter(check.json!, 'compressed-clusters'))).toBeGreaterThanOrEqual(2n);
    }
    await qemuImgConvert(top, join(dir, 'top.raw'));
    const raw = readFileSync(join(dir, 'top.raw'));
    expect(raw.length).toBe(16 * MIB);

    h.serve('top.qcow2', top);
    h.serve('base.qcow2', base);
    const got = await inPage(h, 'hashImage', 'top.qcow2', ['base.qcow2'], [MIB, 65_537 + 3 * 512 + 11]);
    expect(got).toEqual({ size: String(16 * MIB), hashes: [sha256(raw), sha256(raw), sha256(raw)] });
  });

  it.each([
    { label: '64 KiB clusters', size: 64 * MIB, options: {} as Record<string, string>, cluster: 64 * KIB },
    { label: '16 KiB clusters, extended L2', size: 32 * MIB, options: { cluster_size: '16384', extended_l2: 'on' }, cluster: 16 * KIB },
  ])('writes an image through the OPFS backend in a worker that qemu-img checks clean ($label)', async ({ label, size, options, cluster }) => {
    const h = await browser();
    const name = `opfs-${cluster}.qcow2`;
    const path = join(dir, name);
    await qemuImgCreate(path, size, options);
    const writes: PlannedWrite[] = planWrites(size, cluster, cluster, 40);
    const expected = applyWrites(size, writes);

    h.serve(name, path);
    const got = await inPage(h, 'opfsWrite', name, writes);
    if (!got.ok) throw new Error(`${label}: ${got.error}`);
    expect(got.mismatches).toEqual([]);
    expect([got.size, got.sha256]).toEqual([String(size), sha256(expected)]);

    const out = h.uploaded(name);
    expect(readFileSync(out).length).toBe(got.uploaded);
    const check = await qemuImgCheck(out);
    expect({ code: check.code, stderr: check.stderr }).toEqual({ code: 0, stderr: '' });
    await qemuImgConvert(out, `${out}.raw`);
    expect(Buffer.compare(readFileSync(`${out}.raw`), expected)).toBe(0);
  });
});
