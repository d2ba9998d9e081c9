/**
 * The model's compression codecs (src/model/compression.ts): the portable ones every platform has
 * (pako; libzstd 1.5.4 from the wasm embedded in generated/zstd-wasm.ts) and Node's faster inflate
 * (src/io/node-compression.ts).
 *
 * - zstd: the embedded encoder writes exactly the frames of @bokuweb/zstd-wasm 0.0.22 itself (whose
 *   frames equal QEMU 7.2's: test/qemu/model-zstd.test.ts), and fzstd reads them back.
 * - inflate: zlib's inflate(Z_FINISH) into a `limit`-byte buffer, as QEMU's qcow2_zlib_decompress
 *   runs it — stops at a full buffer, accepts a stream that does not end within the data, follows
 *   distances into the output buffer; Node's inflate gives the portable one's result for any input
 *   (valid, cut, corrupted, followed by other bytes, longer than the limit).
 * - the model reads the compressed clusters of the checked-in corpus identically with either.
 */
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { decompress as zstdDecompress } from 'fzstd';
import { deflateRaw } from 'pako';
import { beforeAll, describe, expect, it } from 'vitest';
import { nodeCompressionCodecs } from '../../src/io/node-compression.ts';
import { compressionCodecs, installCompressionCodecs } from '../../src/model/compression.ts';
import { portableCompressionCodecs as portable } from '../../src/model/portable-codecs.ts';
import { readGuest } from '../../src/model/read.ts';
import { openImage } from '../../src/open/open.ts';
import { fileReader } from '../../src/io/file-reader.ts';
import { readFileSync } from 'node:fs';

const ROOT = resolve(import.meta.dirname, '../..');
const QEMU_DEFLATE = { level: 6, windowBits: 12, memLevel: 9, strategy: 0 } as const;

/** Cluster-like data: runs, small alphabets and noise, so that it compresses anywhere from 0 % to 99 %. */
const clusterData: fc.Arbitrary<Uint8Array> = fc
  .record({ size: fc.constantFrom(512, 4096, 65536, 1000, 70000), alphabet: fc.constantFrom(1, 2, 13, 256), run: fc.integer({ min: 1, max: 300 }), seed: fc.nat() })
  .map(({ size, alphabet, run, seed }) => {
    const b = new Uint8Array(size);
    let s = seed | 1;
    for (let i = 0; i < size; i += run) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      b.fill((s >>> 0) % alphabet, i, i + run);
    }
    return b;
  });

const eq = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));

describe('zstd: the embedded libzstd wasm', () => {
  let packageCompress: (data: Uint8Array, level: number) => Uint8Array;
  beforeAll(async () => {
    // The package's own loader (node:fs + async instantiation), as the reference.
    const pkg = createRequire(join(ROOT, 'package.json'))('@bokuweb/zstd-wasm') as { init(): Promise<void>; compress(d: Uint8Array, l: number): Uint8Array };
    await pkg.init();
    packageCompress = pkg.compress;
  });

  it('writes the frames @bokuweb/zstd-wasm 0.0.22 writes, at QEMU\'s level and others, and fzstd reads them back', () => {
    fc.assert(
      fc.property(clusterData, fc.constantFrom(3, 1, 19), (data, level) => {
        const ours = portable.zstdCompress(data, level);
        expect(eq(ours, packageCompress(data, level))).toBe(true);
        expect(eq(zstdDecompress(ours), data)).toBe(true);
      }),
      { numRuns: 60 },
    );
    expect(eq(portable.zstdCompress(new Uint8Array(0), 3), packageCompress(new Uint8Array(0), 3))).toBe(true);
  });

  it('survives the wasm heap growing (a 2 MiB cluster of noise, then small ones again)', () => {
    const big = new Uint8Array(2 << 20);
    for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
    expect(eq(portable.zstdCompress(big, 3), packageCompress(big, 3))).toBe(true);
    const small = new Uint8Array(4096).fill(5);
    expect(eq(portable.zstdCompress(small, 3), packageCompress(small, 3))).toBe(true);
  });
});

describe('inflate: QEMU\'s qcow2_zlib_decompress', () => {
  it('round-trips QEMU\'s deflate streams and stops at the limit', () => {
    fc.assert(
      fc.property(clusterData, fc.integer({ min: 1, max: 80000 }), (data, limit) => {
        const stream = portable.deflateRaw(data, QEMU_DEFLATE);
        expect(eq(portable.inflateRaw(stream, { windowBits: 12, limit: data.length }), data)).toBe(true);
        expect(eq(portable.inflateRaw(stream, { windowBits: 12, limit }), data.subarray(0, Math.min(limit, data.length)))).toBe(true);
      }),
      { numRuns: 80 },
    );
  });

  it('returns what a stream cut short produced, and ignores the bytes after a full buffer or the stream end', () => {
    const data = new Uint8Array(65536).map((_, i) => (i * 31) % 251);
    const stream = portable.deflateRaw(data, QEMU_DEFLATE);
    const cut = portable.inflateRaw(stream.subarray(0, stream.length >> 1), { windowBits: 12, limit: data.length });
    expect(cut.length).toBeGreaterThan(0);
    expect(cut.length).toBeLessThan(data.length);
    expect(eq(cut, data.subarray(0, cut.length))).toBe(true);
    // Garbage after the end of the stream (the next packed blob, in a qcow2 file) is never read.
    const followed = new Uint8Array(stream.length + 600).fill(0xff);
    followed.set(stream);
    expect(eq(portable.inflateRaw(followed, { windowBits: 12, limit: data.length }), data)).toBe(true);
    // A corrupted byte past what fills the buffer is never reached.
    const corrupt = stream.slice();
    corrupt[corrupt.length - 1]! ^= 0xff;
    expect(eq(portable.inflateRaw(corrupt, { windowBits: 12, limit: 1000 }), data.subarray(0, 1000))).toBe(true);
    expect(() => portable.inflateRaw(new Uint8Array([0xff, 0xff, 0xff, 0xff]), { windowBits: 12, limit: 4096 })).toThrow();
  });

  it('follows a distance beyond the 4 KiB window into the output buffer, as zlib does in QEMU\'s one inflate call', () => {
    const data = new Uint8Array(65536);
    for (let i = 0; i < 8192; i++) data[i] = (i * 2654435761) >>> 24;
    for (let i = 8192; i < data.length; i += 8192) data.copyWithin(i, 0, 8192); // 8 KiB back: a 32 KiB window's stream
    const wide = deflateRaw(data, { level: 6, windowBits: 15 });
    expect(eq(portable.inflateRaw(wide, { windowBits: 12, limit: data.length }), data)).toBe(true);
    expect(eq(nodeCompressionCodecs.inflateRaw(wide, { windowBits: 12, limit: data.length }), data)).toBe(true);
  });

  it('Node\'s inflate gives the portable inflate\'s result for any input', () => {
    const outcome = (f: () => Uint8Array): { bytes?: Buffer; error?: true } => {
      try {
        return { bytes: Buffer.from(f()) };
      } catch {
        return { error: true };
      }
    };
    const mangled = fc
      .record({ data: clusterData, cut: fc.option(fc.nat()), flips: fc.array(fc.record({ at: fc.nat(), bit: fc.nat(7) }), { maxLength: 3 }), tail: fc.uint8Array({ maxLength: 40 }), limitShift: fc.integer({ min: -2, max: 2 }) })
      .map(({ data, cut, flips, tail, limitShift }) => {
        let stream = portable.deflateRaw(data, QEMU_DEFLATE);
        if (cut !== null) stream = stream.subarray(0, cut % (stream.length + 1));
        const bytes = new Uint8Array(stream.length + tail.length);
        bytes.set(stream);
        bytes.set(tail, stream.length);
        for (const f of flips) if (bytes.length > 0) bytes[f.at % bytes.length]! ^= 1 << f.bit;
        return { bytes, limit: Math.max(1, limitShift === 0 ? data.length : Math.round(data.length * 2 ** (limitShift / 2))) };
      });
    fc.assert(
      fc.property(mangled, ({ bytes, limit }) => {
        const options = { windowBits: 12, limit };
        expect(outcome(() => nodeCompressionCodecs.inflateRaw(bytes, options))).toEqual(outcome(() => portable.inflateRaw(bytes, options)));
      }),
      { numRuns: 120 },
    );
  });
});

describe('the model with either codec set', () => {
  it('reads the compressed clusters of the checked-in corpus identically', () => {
    const before = compressionCodecs();
    try {
      for (const name of ['compressed-zlib.0000', 'compressed-zstd.0000']) {
        const bytes = readFileSync(join(ROOT, 'corpus', name, 'image.qcow2'));
        const read = (): Uint8Array => {
          const image = openImage(fileReader(join(ROOT, 'corpus', name, 'image.qcow2')));
          return readGuest(image, 0n, Number(image.header.size < 8n << 20n ? image.header.size : 8n << 20n));
        };
        installCompressionCodecs(undefined);
        const viaPortable = read();
        installCompressionCodecs(nodeCompressionCodecs);
        const viaNode = read();
        expect(bytes.length).toBeGreaterThan(0);
        expect(viaPortable.some((b) => b !== 0)).toBe(true);
        expect(eq(viaPortable, viaNode)).toBe(true);
      }
    } finally {
      installCompressionCodecs(before);
    }
  });
});
