/**
 * zstd compressed writes (compression_type=zstd, `qemu-io -c 'write -c …'`) against QEMU 7.2:
 * - layout: the same single-cluster compressed writes applied by qemu-io to a `qemu-img create`
 *   image and by the model (createImage + step) give byte-identical files, for cluster sizes from
 *   512 B to 2 MiB, with incompressible clusters written as normal clusters (docs/format/compression.md#when-data-is-stored-compressed);
 * - format and data: `qemu-img check` finds the model's file clean, `qemu-img compare` and
 *   `qemu-io read -P` agree with a raw file of the expected content;
 * - reads: the model's read path returns the written data from both files;
 * - refusals: the same as the zlib path (allocated target EIO, unaligned or partial EINVAL).
 * A missing qemu-img/qemu-io fails the tests (QemuToolMissingError), it never skips them.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compressCluster, zstdCompressCluster } from '../../src/model/compress.ts';
import { createImage } from '../../src/model/create.ts';
import { EINVAL, EIO } from '../../src/model/errors.ts';
import type { Image } from '../../src/model/image.ts';
import { loadImage, storeImage } from '../../src/model/load-store.ts';
import { readGuest } from '../../src/model/read.ts';
import { step } from '../../src/model/step.ts';
import { checkCounter, qcow2Specific, qemuImgCheck, qemuImgCreate, qemuImgInfo, qemuIo } from '../../src/qemu/qemu-img.ts';
import { requireQemu, runTool } from '../../src/qemu/run.ts';

const dir = mkdtempSync(join(tmpdir(), 'qcow2-ref-zstd-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
beforeAll(async () => {
  await requireQemu();
});
let run = 0;

function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x;
  };
}

/** The kinds of cluster content the tests write; 'random' never compresses below a cluster. */
const KINDS = ['zeros', 'fill', 'text', 'nibbles', 'noise50', 'random', 'noise90', 'period'] as const;
type Kind = (typeof KINDS)[number];

/** Deterministic content of `length` bytes of one kind. */
function content(kind: Kind, length: number, seed: number): Uint8Array {
  const r = xorshift(seed * 2654435761 + length);
  const d = new Uint8Array(length);
  switch (kind) {
    case 'zeros':
      break;
    case 'fill':
      d.fill(0x5a);
      break;
    case 'text': {
      const words = ['qcow2 ', 'cluster ', 'zstd ', 'QEMU ', 'refcount ', 'L2 table ', 'guest\n', 'host '];
      let i = 0;
      while (i < length) for (const ch of words[r() % words.length]!) if (i < length) d[i++] = ch.charCodeAt(0);
      break;
    }
    case 'nibbles':
      for (let i = 0; i < length; i++) d[i] = 0x40 + (r() & 15);
      break;
    case 'noise50':
    case 'noise90': {
      const share = kind === 'noise50' ? 0.5 : 0.9;
      for (let i = 0; i < length; i++) d[i] = (r() & 0xffff) / 0x10000 < share ? r() >>> 24 : 0x11;
      break;
    }
    case 'random':
      for (let i = 0; i < length; i++) d[i] = r() >>> 24;
      break;
    case 'period': {
      const p = Array.from({ length: 300 }, () => r() >>> 24);
      for (let i = 0; i < length; i++) d[i] = p[i % 300]!;
      break;
    }
  }
  return d;
}

interface Config {
  clusterBits: number;
  refcountBits?: number;
  extendedL2?: boolean;
}

interface Written {
  offset: number;
  data: Uint8Array;
  kind: Kind;
  file: string;
}

function createOptions(cfg: Config): Record<string, string> {
  return {
    cluster_size: String(1 << cfg.clusterBits),
    compression_type: 'zstd',
    ...(cfg.refcountBits !== undefined ? { refcount_bits: String(cfg.refcountBits) } : {}),
    ...(cfg.extendedL2 === true ? { extended_l2: 'on' } : {}),
  };
}

/**
 * Creates the image with qemu-img and with createImage (which must agree), applies one compressed
 * write per cluster of every kind (and a partial last cluster) with qemu-io in one process and with
 * `step`, and returns both files.
 */
async function compressedWrites(cfg: Config): Promise<{ ours: string; theirs: string; raw: string; img: Image; written: Written[] }> {
  const id = run++;
  const cs = 1 << cfg.clusterBits;
  // KINDS.length whole clusters and half a cluster at the end (zero padded when compressed); with
  // 512-byte clusters the last one is whole (disk sizes are multiples of 512).
  const tail = cs === 512 ? cs : cs / 2;
  const size = KINDS.length * cs + tail;
  const theirs = join(dir, `qemu-${id}.qcow2`);
  const ours = join(dir, `ours-${id}.qcow2`);
  const raw = join(dir, `raw-${id}.img`);
  await qemuImgCreate(theirs, size, createOptions(cfg));
  let img = createImage({
    size: BigInt(size),
    clusterSize: cs,
    compressionType: 'zstd',
    ...(cfg.refcountBits !== undefined ? { refcountBits: cfg.refcountBits } : {}),
    ...(cfg.extendedL2 === true ? { extendedL2: true } : {}),
  }).image;
  expect(Buffer.from(storeImage(img)).equals(readFileSync(theirs))).toBe(true);

  const written: Written[] = [];
  KINDS.forEach((kind, i) => written.push({ offset: i * cs, data: content(kind, cs, id * 100 + i), kind, file: '' }));
  written.push({ offset: KINDS.length * cs, data: content('text', tail, id * 100 + 99), kind: 'text', file: '' });
  // A different order than the guest offsets, so packing does not follow the L2 order.
  const order = [3, 0, 5, 8, 1, 6, 2, 7, 4];
  const expected = new Uint8Array(size);
  const cmds: string[] = [];
  for (const n of order) {
    const w = written[n]!;
    w.file = join(dir, `data-${id}-${n}`);
    writeFileSync(w.file, w.data);
    cmds.push(`write -c -s ${w.file} ${w.offset} ${w.data.length}`);
    const r = step(img, { kind: 'writeCompressed', offset: BigInt(w.offset), data: w.data });
    if (!r.ok) throw r.error;
    img = r.image;
    expected.set(w.data, w.offset);
  }
  await qemuIo(theirs, cmds);
  writeFileSync(ours, storeImage(img));
  writeFileSync(raw, expected);
  return { ours, theirs, raw, img, written };
}

const CONFIGS: Config[] = [
  ...Array.from({ length: 13 }, (_, i) => ({ clusterBits: 9 + i })),
  { clusterBits: 12, refcountBits: 1 },
  { clusterBits: 9, refcountBits: 2 },
  { clusterBits: 16, refcountBits: 64, extendedL2: true },
  { clusterBits: 21, extendedL2: true },
];

function describeConfig(c: Config): string {
  return `${1 << c.clusterBits}-byte clusters${c.refcountBits !== undefined ? `, ${c.refcountBits}-bit refcounts` : ''}${c.extendedL2 === true ? ', extended L2' : ''}`;
}

describe('zstd compressed writes: the model against qemu-io, byte for byte', () => {
  for (const cfg of CONFIGS) {
    it(`${describeConfig(cfg)}: identical files, clean check, same content as a raw file`, async () => {
      const { ours, theirs, raw, written } = await compressedWrites(cfg);
      const qemuBytes = readFileSync(theirs);
      const ourBytes = readFileSync(ours);
      if (!ourBytes.equals(qemuBytes)) {
        let first = 0;
        while (first < Math.min(ourBytes.length, qemuBytes.length) && ourBytes[first] === qemuBytes[first]) first++;
        expect.fail(`files differ: qemu ${qemuBytes.length} bytes, model ${ourBytes.length} bytes, first difference at 0x${first.toString(16)}`);
      }
      // QEMU stored the random cluster (and at small cluster sizes the noisy ones) as normal
      // clusters; the text, fill and zero clusters compressed.
      const theirCheck = await qemuImgCheck(theirs);
      expect(theirCheck.code).toBe(0);
      const qemuCompressed = Number(checkCounter(theirCheck.json!, 'compressed-clusters'));
      expect(qemuCompressed).toBeLessThan(written.length);
      expect(qemuCompressed).toBeGreaterThanOrEqual(4);
      // The model's file, through QEMU.
      const check = await qemuImgCheck(ours);
      expect({ code: check.code, stderr: check.stderr }).toEqual({ code: 0, stderr: '' });
      expect(Number(checkCounter(check.json!, 'compressed-clusters'))).toBe(qemuCompressed);
      expect(qcow2Specific(await qemuImgInfo(ours))['compression-type']).toBe('zstd');
      execFileSync('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'raw', ours, raw]);
      const cs = 1 << cfg.clusterBits;
      // KINDS: cluster 0 holds zeros, cluster 1 the 0x5a fill.
      const r = await qemuIo(ours, [`read -P 0 0 ${cs}`, `read -P 0x5a ${cs} ${cs}`]);
      expect(r.stdout).not.toContain('Pattern verification failed');
    }, 120_000);
  }
});

describe('zstd compressed clusters through the model read path', () => {
  it('reads of both files return the written data (every cluster size)', async () => {
    for (const cfg of CONFIGS.filter((c) => c.refcountBits === undefined && c.extendedL2 !== true)) {
      const { theirs, img, written } = await compressedWrites(cfg);
      const theirImg = loadImage(new Uint8Array(readFileSync(theirs)));
      for (const w of written) {
        const at = BigInt(w.offset);
        expect(Buffer.from(readGuest(img, at, w.data.length)).equals(Buffer.from(w.data)), `model file, ${w.kind} at ${w.offset}`).toBe(true);
        expect(Buffer.from(readGuest(theirImg, at, w.data.length)).equals(Buffer.from(w.data)), `QEMU file, ${w.kind} at ${w.offset}`).toBe(true);
      }
    }
  }, 300_000);

  it('a normal write into a zstd compressed cluster (COW) gives QEMU\'s file', async () => {
    const cfg: Config = { clusterBits: 12 };
    const { ours, theirs, img, written } = await compressedWrites(cfg);
    const target = written.find((w) => w.kind === 'text')!;
    const r = step(img, { kind: 'write', offset: BigInt(target.offset + 100), data: new Uint8Array(300).fill(0x77) });
    if (!r.ok) throw r.error;
    writeFileSync(ours, storeImage(r.image));
    await qemuIo(theirs, [`write -P 0x77 ${target.offset + 100} 300`]);
    expect(readFileSync(ours).equals(readFileSync(theirs))).toBe(true);
    expect((await qemuImgCheck(ours)).code).toBe(0);
  }, 60_000);
});

describe('zstd compression of one cluster', () => {
  it('the frames are QEMU\'s: content size present, single segment, no checksum (bytes taken from a QEMU image)', async () => {
    const cfg: Config = { clusterBits: 16 };
    const { theirs, written } = await compressedWrites(cfg);
    const bytes = new Uint8Array(readFileSync(theirs));
    const text = written.find((w) => w.kind === 'text')!;
    const frame = zstdCompressCluster(text.data);
    // The frame must occur in QEMU's file (compressed data is packed at byte granularity).
    expect(Buffer.from(bytes).indexOf(Buffer.from(frame))).toBeGreaterThan(0);
    expect([...frame.subarray(0, 4)]).toEqual([0x28, 0xb5, 0x2f, 0xfd]);
    // Frame header descriptor: FCS field size 2 (bits 7-6 = 1, 256..65791), single segment (bit 5), no checksum (bit 2).
    expect(frame[4]! & 0xe4).toBe(0x60);
  }, 60_000);

  it('an incompressible cluster does not fit in cluster_size - 1 bytes with either compression type', () => {
    const random = content('random', 4096, 7);
    expect(zstdCompressCluster(random).length).toBeGreaterThan(4095);
    expect(compressCluster(random, 1)).toBeUndefined();
    expect(compressCluster(random, 0)).toBeUndefined();
    expect(compressCluster(new Uint8Array(4096), 1)!.length).toBeLessThan(4096);
  });
});

describe('refusals: zstd behaves like zlib (and like QEMU)', () => {
  // Each case: setup writes, then one compressed write QEMU refuses with the given errno text.
  const cases: { name: string; setup: string[]; offset: number; length: number; errno: number; qemu: string }[] = [
    { name: 'normal cluster at the target', setup: ['write -P 1 4096 512'], offset: 4096, length: 4096, errno: -EIO, qemu: 'write failed: Input/output error' },
    { name: 'compressed cluster at the target', setup: ['write -c -P 2 4096 4096'], offset: 4096, length: 4096, errno: -EIO, qemu: 'write failed: Input/output error' },
    { name: 'unaligned offset', setup: [], offset: 512, length: 4096, errno: -EINVAL, qemu: 'write failed: Invalid argument' },
    { name: 'partial cluster not at the end of the disk', setup: [], offset: 8192, length: 1024, errno: -EINVAL, qemu: 'write failed: Invalid argument' },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const results: { code: string; errno: number }[] = [];
      for (const type of ['zlib', 'zstd'] as const) {
        const id = run++;
        const path = join(dir, `refuse-${id}.qcow2`);
        await qemuImgCreate(path, 1 << 20, { cluster_size: '4096', compression_type: type });
        if (c.setup.length > 0) await qemuIo(path, c.setup);
        const before = new Uint8Array(readFileSync(path));
        const data = content('text', c.length, id);
        const file = join(dir, `refuse-data-${id}`);
        writeFileSync(file, data);
        const r = step(loadImage(before), { kind: 'writeCompressed', offset: BigInt(c.offset), data });
        expect(r.ok).toBe(false);
        if (r.ok) return;
        expect(r.io).toEqual([]);
        results.push({ code: r.error.code, errno: r.error.errno });
        const q = await runTool('qemu-io', ['-f', 'qcow2', '-c', `write -c -s ${file} ${c.offset} ${c.length}`, path]);
        expect(q.stdout + q.stderr).toContain(c.qemu);
        // QEMU left the file as it was, as the model does.
        expect(Buffer.from(readFileSync(path)).equals(Buffer.from(before))).toBe(true);
      }
      expect(results[1]).toEqual(results[0]);
      expect(results[1]!.errno).toBe(c.errno);
    }, 60_000);
  }
});
