/**
 * loadImage / storeImage / withHeader: images qemu-img makes load to the header `qemu-img info`
 * reports, store(load(b)) is b, header edits go through the generated encoder, and garbage is a
 * Qcow2FormatError.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeHeader, HEADER_MAGIC, HeaderLayout } from '../../generated/qcow2.ts';
import { Qcow2FormatError } from '../../src/codec/errors.ts';
import { createImage } from '../../src/model/create.ts';
import { encodeHeaderState, headerStateFrom, withHeader } from '../../src/model/header.ts';
import { fileReader, type FileReader } from '../../src/io/file-reader.ts';
import { applyHostIO, hostBytes, rebaseHostFile } from '../../src/model/host-file.ts';
import { type HostIO } from '../../src/model/host-io.ts';
import { INCOMPAT_DATA_FILE, INCOMPAT_EXTL2, COMPAT_LAZY_REFCOUNTS, AUTOCLEAR_DATA_FILE_RAW, type BackingSource, type Image } from '../../src/model/image.ts';
import { mapImage } from '../../src/model/block-status.ts';
import type { Op } from '../../src/model/ops.ts';
import { readGuest } from '../../src/model/read.ts';
import { step } from '../../src/model/step.ts';
import { loadImage, storeDataFile, storeImage } from '../../src/model/load-store.ts';
import { qcow2Specific, qemuImgCreate, qemuImgInfo, qemuIo, toBigInt } from '../../src/qemu/qemu-img.ts';
import { requireQemu } from '../../src/qemu/run.ts';

const QEMU = { timeout: 60_000 };
let dir = '';

beforeAll(async () => {
  await requireQemu();
  dir = await mkdtemp(join(tmpdir(), 'qcow2-ref-load-'));
});

afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

const CASES: ReadonlyArray<{ name: string; size: number; options: Record<string, string> }> = [
  { name: 'default', size: 1 << 30, options: {} },
  { name: 'v2', size: 1 << 20, options: { compat: '0.10' } },
  { name: 'small-clusters', size: 64 << 20, options: { cluster_size: '512', refcount_bits: '1' } },
  { name: 'extl2-zstd-lazy', size: 1 << 26, options: { cluster_size: '2M', extended_l2: 'on', compression_type: 'zstd', lazy_refcounts: 'on' } },
  { name: 'prealloc', size: 3 << 20, options: { preallocation: 'metadata', cluster_size: '4096', refcount_bits: '64' } },
  { name: 'datafile', size: 1 << 20, options: { data_file: 'DATA', data_file_raw: 'on' } },
  { name: 'backing', size: 1 << 20, options: { backing_file: 'BACKING', backing_fmt: 'raw' } },
];

describe('loadImage on images made by qemu-img', QEMU, () => {
  for (const c of CASES) {
    it(`${c.name}: header agrees with qemu-img info, store(load(b)) == b`, async () => {
      const path = join(dir, `${c.name}.qcow2`);
      const opts: Record<string, string> = {};
      for (const [k, v] of Object.entries(c.options)) {
        opts[k] = v === 'DATA' ? join(dir, `${c.name}.data`) : v === 'BACKING' ? join(dir, `${c.name}.raw`) : v;
      }
      if (opts.backing_file !== undefined) await qemuImgCreate(opts.backing_file, 1 << 20, {}, [], 'raw');
      await qemuImgCreate(path, c.size, opts);
      const bytes = new Uint8Array(await readFile(path));
      const data = opts.data_file !== undefined ? new Uint8Array(await readFile(opts.data_file)) : undefined;
      const img = loadImage(bytes, data !== undefined ? { dataFile: data } : {});
      const info = await qemuImgInfo(path);
      const q = qcow2Specific(info);
      const h = img.header;
      expect(h.size).toBe(toBigInt(info['virtual-size']));
      expect(2 ** h.clusterBits).toBe(info['cluster-size']);
      expect(h.version === 2 ? '0.10' : '1.1').toBe(q.compat);
      expect(2 ** h.refcountOrder).toBe(q['refcount-bits']);
      expect(h.compressionType === 1 ? 'zstd' : 'zlib').toBe(q['compression-type']);
      if (h.version === 3) {
        expect((h.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n).toBe(q['lazy-refcounts']);
        expect((h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n).toBe(q['extended-l2']);
        expect((h.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n).toBe(q['data-file'] !== undefined);
        if (q['data-file-raw'] !== undefined) expect((h.autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) !== 0n).toBe(q['data-file-raw']);
      }
      expect(h.backingFileOffset !== 0n).toBe(info['backing-filename'] !== undefined);
      expect(h.backingFileSize).toBe(info['backing-filename']?.length ?? 0);
      expect(img.session).toEqual({ freeClusterIndex: 0n, freeByteOffset: 0n, cursorClusterFreed: false, staleCursorAvoided: 0 });
      // store(load(b)) == b, and the header bytes re-encode to what is on disk.
      expect(Buffer.from(storeImage(img)).equals(Buffer.from(bytes))).toBe(true);
      if (data !== undefined) expect(Buffer.from(storeDataFile(img)!).equals(Buffer.from(data))).toBe(true);
      const hl = h.version === 2 ? 72 : h.headerLength;
      expect(Buffer.from(encodeHeaderState(h)).equals(Buffer.from(bytes.subarray(0, hl)))).toBe(true);
    });
  }
});

describe('loadImage through a reader on images made by qemu-img and qemu-io', QEMU, () => {
  /** The ops stepped on both loads of an image of `size` bytes with `cs`-byte clusters (some may fail, alike). */
  const opsFor = (size: bigint, cs: bigint): Op[] => {
    const pat = (n: number, v: number): Uint8Array => Uint8Array.from({ length: n }, (_x, i) => (i * v + 1) & 255);
    const ops: Op[] = [
      { kind: 'write', offset: 5000n, data: pat(3000, 3) },
      { kind: 'writeZeroes', offset: 2n * cs, length: cs, unmap: true },
      { kind: 'discard', offset: 0n, length: cs },
      { kind: 'writeCompressed', offset: 3n * cs, data: pat(Number(cs), 5) },
      { kind: 'write', offset: size - 4096n, data: pat(4096, 7) },
      { kind: 'snapshotCreate', name: 's1', dateSec: 1, dateNsec: 2, vmClockNsec: 3n },
      { kind: 'write', offset: 1000n, data: pat(70000, 11) },
      { kind: 'flush' },
      { kind: 'snapshotApply', name: 's1' },
      { kind: 'write', offset: size / 2n, data: pat(513, 13) },
    ];
    return ops.filter((o) => !('offset' in o) || o.offset < size);
  };

  /** `io` with write payloads as hashes: vitest's deep equality on MiB-sized typed arrays is very slow. */
  const ioShape = (io: readonly HostIO[]): unknown[] =>
    io.map((x) => (x.kind === 'write' ? { ...x, bytes: `${x.bytes.length}:${createHash('sha256').update(x.bytes).digest('hex')}` } : x));

  for (const c of CASES) {
    it(`${c.name}: same header, reads, map and step io as loadImage(bytes); rebase keeps the content`, async () => {
      const path = join(dir, `lazy-${c.name}.qcow2`);
      const opts: Record<string, string> = {};
      for (const [k, v] of Object.entries(c.options)) {
        opts[k] = v === 'DATA' ? join(dir, `lazy-${c.name}.data`) : v === 'BACKING' ? join(dir, `lazy-${c.name}.raw`) : v;
      }
      if (opts.backing_file !== undefined) {
        await qemuImgCreate(opts.backing_file, 1 << 20, {}, [], 'raw');
        await qemuIo(opts.backing_file, ['write -P 9 0 1M'], { format: 'raw' });
      }
      await qemuImgCreate(path, c.size, opts);
      await qemuIo(path, ['write -P 5 1000 70000', `write -P 6 ${c.size / 2} 4096`, 'write -z 0 512', `discard ${c.size / 2 + 4096} 4096`]);
      const bytes = new Uint8Array(await readFile(path));
      const data = opts.data_file !== undefined ? new Uint8Array(await readFile(opts.data_file)) : undefined;
      let backing: BackingSource | undefined;
      if (opts.backing_file !== undefined) {
        const raw = new Uint8Array(await readFile(opts.backing_file));
        backing = { size: BigInt(raw.length), read: (o, l) => { const out = new Uint8Array(l); out.set(raw.subarray(Number(o), Number(o) + l)); return out; } };
      }
      const readers: FileReader[] = [];
      const open = (p: string): FileReader => {
        const r = fileReader(p);
        readers.push(r);
        return r;
      };
      try {
        const eager = loadImage(bytes, { ...(data !== undefined ? { dataFile: data } : {}), ...(backing !== undefined ? { backing } : {}) });
        const reader = open(path);
        const lazy = loadImage(reader, { ...(data !== undefined ? { dataFile: open(opts.data_file!) } : {}), ...(backing !== undefined ? { backing } : {}) });
        expect(lazy.file.base).toBeDefined();
        expect(lazy.file.pages.size).toBe(0);
        expect(lazy.header).toEqual(eager.header);
        expect(lazy.file.length).toBe(eager.file.length);
        // Loading read only the header, not the file.
        expect(reader.bytesRead).toBeLessThanOrEqual(4096);
        const size = eager.header.size;
        const cs = 1n << BigInt(eager.header.clusterBits);
        const same = (a: Image, b: Image): void => {
          expect(Buffer.from(hostBytes(a.file)).equals(Buffer.from(hostBytes(b.file)))).toBe(true);
          if (a.dataFile !== undefined) expect(Buffer.from(hostBytes(a.dataFile)).equals(Buffer.from(hostBytes(b.dataFile!)))).toBe(true);
          for (const [o, n] of [[0n, 200000], [size / 2n - 1000n, 10000], [size - 5000n, 5000]] as const) {
            expect(Buffer.from(readGuest(a, o, n)).equals(Buffer.from(readGuest(b, o, n)))).toBe(true);
          }
          expect(mapImage(a)).toEqual(mapImage(b));
        };
        same(lazy, eager);
        let e = eager;
        let l = lazy;
        let failures = 0;
        for (const op of opsFor(size, cs)) {
          const re = step(e, op);
          const rl = step(l, op);
          expect(rl.ok).toBe(re.ok);
          if (!re.ok && !rl.ok) {
            failures++;
            expect(rl.error.message).toBe(re.error.message);
          }
          expect(ioShape(rl.io)).toEqual(ioShape(re.io));
          e = re.image;
          l = rl.image;
        }
        expect(failures).toBeLessThan(opsFor(size, cs).length);
        same(l, e);
        // The earlier lazy image is unchanged.
        expect(Buffer.from(hostBytes(lazy.file)).equals(Buffer.from(bytes))).toBe(true);

        // A driver writes the result to a file and rebases onto it: same content, no pages in memory.
        const after = `${path}.after`;
        await writeFile(after, storeImage(e));
        const rebased: Image = { ...l, file: rebaseHostFile(l.file, open(after)) };
        expect(rebased.file.pages.size).toBe(0);
        same(rebased, e);
        const more: Op = { kind: 'write', offset: 3n * cs + 100n < size ? 3n * cs + 100n : 100n, data: new Uint8Array(600).fill(0x3c) };
        const me = step(e, more);
        const mr = step(rebased, more);
        expect(mr.ok).toBe(true);
        expect(ioShape(mr.io)).toEqual(ioShape(me.io));
        same(mr.image, me.image);
      } finally {
        for (const r of readers) r.close();
      }
    });
  }
});

describe('load and store round trips', () => {
  it('loadImage(storeImage(img)) has the same file bytes and header as img (created images)', () => {
    for (const o of [{ size: 1n << 30n }, { size: 5n << 20n, clusterSize: 512, preallocation: 'metadata' }, { size: 1n, compat: '0.10' }]) {
      const { image } = createImage(o);
      const back = loadImage(storeImage(image));
      expect(back.header).toEqual(image.header);
      expect(Buffer.from(storeImage(back)).equals(Buffer.from(storeImage(image)))).toBe(true);
      expect(back.file.length).toBe(image.file.length);
    }
  });

  it('does not keep a reference to the input bytes', () => {
    const bytes = storeImage(createImage({ size: 1n << 20n }).image);
    const img = loadImage(bytes);
    const copy = bytes.slice();
    bytes.fill(0xff);
    expect(Buffer.from(storeImage(img)).equals(Buffer.from(copy))).toBe(true);
  });

  it('headerStateFrom(decodeHeader(encodeHeaderState(h))) == h, unknown header bytes preserved', () => {
    const h = { ...createImage({ size: 123n << 20n }).image.header, headerLength: 120 };
    const unknown = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
    const enc = encodeHeaderState(h, unknown);
    expect(enc.length).toBe(120);
    expect(Array.from(enc.subarray(112))).toEqual(Array.from(unknown));
    expect(headerStateFrom(decodeHeader(enc))).toEqual(h);
    const h104 = { ...h, headerLength: 104 };
    expect(encodeHeaderState(h104).length).toBe(104);
    expect(headerStateFrom(decodeHeader(encodeHeaderState(h104)))).toEqual({ ...h104, compressionType: 0 });
  });

  it('withHeader rewrites only the changed bytes and returns matching writes', () => {
    const { image } = createImage({ size: 1n << 30n });
    const { image: next, io } = withHeader(image, { size: 2n << 30n, l1Size: 4 });
    expect(next.header.size).toBe(2n << 30n);
    expect(image.header.size).toBe(1n << 30n);
    expect(io.length).toBeGreaterThan(0);
    for (const op of io) {
      expect(op.kind).toBe('write');
      if (op.kind === 'write') expect(op.offset + BigInt(op.bytes.length)).toBeLessThanOrEqual(112n);
    }
    expect(Buffer.from(hostBytes(applyHostIO(image.file, io))).equals(Buffer.from(hostBytes(next.file)))).toBe(true);
    expect(loadImage(storeImage(next)).header).toEqual(next.header);
    expect(withHeader(image, {}).io).toEqual([]);
  });
});

describe('loadImage refuses garbage with Qcow2FormatError', () => {
  it('on empty, short, bad-magic and bad-version input', () => {
    const good = storeImage(createImage({ size: 1n << 20n }).image);
    const bad: Uint8Array[] = [new Uint8Array(0), good.slice(0, 50), good.slice(0, 100)];
    const magic = good.slice();
    magic[0] = 0;
    bad.push(magic);
    const version = good.slice();
    version[7] = 4;
    bad.push(version);
    const clusterBits = good.slice();
    clusterBits[23] = 22;
    bad.push(clusterBits);
    for (const b of bad) expect(() => loadImage(b)).toThrow(Qcow2FormatError);
  });

  it('through a reader: the same header or the same Qcow2FormatError as from the bytes, also for headers longer than a page', () => {
    const reader = (b: Uint8Array) => ({ length: BigInt(b.length), read: (o: bigint, n: number) => b.slice(Number(o), Number(o) + n) });
    const good = storeImage(createImage({ size: 1n << 20n }).image);
    // header_length 8200 (within one 64 KiB cluster): decoding the first page alone would say 'truncated'.
    const long = new Uint8Array(70000);
    long.set(good.subarray(0, 104));
    new DataView(long.buffer).setUint32(HeaderLayout.headerLength.offset, 8200);
    const longShort = long.slice(0, 6000); // really cut short
    const cases = [good, long, longShort, new Uint8Array(0), good.slice(0, 50), Object.assign(good.slice(), { 5: 9 })];
    for (const b of cases) {
      let want: unknown;
      try {
        want = loadImage(b).header;
      } catch (e) {
        want = e;
      }
      if (want instanceof Error) {
        expect(want).toBeInstanceOf(Qcow2FormatError);
        expect(() => loadImage(reader(b))).toThrow(want.message);
      } else {
        expect(loadImage(reader(b)).header).toEqual(want);
      }
    }
    expect(loadImage(reader(long)).header.headerLength).toBe(8200);
    expect(() => loadImage(reader(longShort))).toThrow(Qcow2FormatError);
  });

  it('on random bytes (fast-check): either a Qcow2FormatError or a loaded image, never another error', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 256 }), fc.boolean(), (b, withMagic) => {
        const bytes = b.slice();
        if (withMagic && bytes.length >= 4) bytes.set(HEADER_MAGIC);
        try {
          const img = loadImage(bytes);
          expect(storeImage(img).length).toBe(bytes.length);
        } catch (e) {
          expect(e).toBeInstanceOf(Qcow2FormatError);
        }
      }),
      { numRuns: 300, seed: 7 },
    );
  });
});
