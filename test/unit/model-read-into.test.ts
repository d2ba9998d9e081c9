/**
 * readGuestInto / readHostInto (src/model/read.ts, host-file.ts): the streaming reads convert uses
 * store every byte of the range — zeros of unallocated, zero and discarded clusters included — into
 * a buffer that starts full of garbage, and equal readGuest everywhere: for host-contiguous and
 * scattered clusters (one read per contiguous run), compressed clusters, subclusters, a backing file
 * shorter than the disk, and an image read lazily from a HostReader with and without readInto.
 */
import { describe, expect, it } from 'vitest';
import { createImage } from '../../src/model/create.ts';
import type { HostReader } from '../../src/model/host-reader.ts';
import { hostFromReader, readHost, readHostInto } from '../../src/model/host-file.ts';
import type { Image } from '../../src/model/image.ts';
import { loadImage, storeImage } from '../../src/model/load-store.ts';
import type { Op } from '../../src/model/ops.ts';
import { readGuest, readGuestInto } from '../../src/model/read.ts';
import { rawBackingSource } from '../../src/model/backing.ts';
import { step } from '../../src/model/step.ts';

const KiB = 1024;
const KIB = 1024n;

function run(img: Image, ops: readonly Op[]): Image {
  for (const op of ops) {
    const r = step(img, op);
    if (!r.ok) throw r.error;
    img = r.image;
  }
  return img;
}

/** `n` non-zero bytes depending on `seed`. */
function fill(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = ((i * 31 + seed) % 251) + 1;
  return out;
}

const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));

/** readGuestInto at position 5 of a garbage buffer, the stored bytes. */
function readInto(img: Image, offset: bigint, length: number): Uint8Array {
  const buf = new Uint8Array(length + 9).fill(0xa5);
  readGuestInto(img, offset, length, buf, 5);
  expect([...buf.subarray(0, 5), ...buf.subarray(5 + length)].every((b) => b === 0xa5)).toBe(true);
  return buf.subarray(5, 5 + length);
}

function expectSameEverywhere(img: Image, step = 4096): void {
  const size = Number(img.header.size);
  for (const [from, len] of [[0, size], [513, size - 1000], [step - 7, 3 * step + 11]] as const) {
    expect(same(readInto(img, BigInt(from), len), readGuest(img, BigInt(from), len))).toBe(true);
  }
}

/** A reader over `bytes` counting its calls; with or without readInto. */
function reader(bytes: Uint8Array, withInto: boolean): HostReader & { calls: number } {
  const r = {
    calls: 0,
    length: BigInt(bytes.length),
    read(offset: bigint, n: number): Uint8Array {
      r.calls++;
      return bytes.slice(Number(offset), Number(offset) + n);
    },
    ...(withInto
      ? {
        readInto(offset: bigint, target: Uint8Array, pos: number, n: number): void {
          r.calls++;
          target.set(bytes.subarray(Number(offset), Number(offset) + n), pos);
        },
      }
      : {}),
  };
  return r;
}

describe('readGuestInto', () => {
  const ops: Op[] = [
    // Written backwards: the clusters land at descending host offsets (not contiguous in guest order).
    { kind: 'write', offset: 192n * KIB, data: fill(64 * KiB, 1) },
    { kind: 'write', offset: 128n * KIB, data: fill(64 * KiB, 2) },
    // One contiguous run of four clusters.
    { kind: 'write', offset: 256n * KIB, data: fill(256 * KiB, 3) },
    { kind: 'writeZeroes', offset: 300n * KIB, length: 64n * KIB, unmap: false },
    { kind: 'discard', offset: 448n * KIB, length: 64n * KIB },
    { kind: 'writeCompressed', offset: 640n * KIB, data: fill(64 * KiB, 4) },
    { kind: 'write', offset: 900n * KIB + 100n, data: fill(5000, 5) },
  ];

  it('equals readGuest with standard clusters, zero and compressed clusters and holes', () => {
    const img = run(createImage({ size: 1n << 20n, clusterSize: 64 * KiB }).image, ops);
    expectSameEverywhere(img);
    expect(same(readInto(img, 640n * KIB, 64 * KiB), fill(64 * KiB, 4))).toBe(true);
    expect(readInto(img, 300n * KIB, 64 * KiB).every((b) => b === 0)).toBe(true);
  });

  it('equals readGuest with extended L2 subclusters and over a backing file shorter than the disk', () => {
    const backing = rawBackingSource(fill(720 * KiB + 300, 9));
    const created = createImage({ size: 1n << 20n, clusterSize: 64 * KiB, extendedL2: true, backingFile: 'b.raw', backingFmt: 'raw' }).image;
    const withBacking = run({ ...created, backing }, ops);
    expectSameEverywhere(withBacking, 2048);
    expect(readInto(withBacking, 720n * KIB, 1024)).toEqual(Uint8Array.from({ length: 1024 }, (_v, i) => (i < 300 ? fill(720 * KiB + 300, 9)[720 * KiB + i]! : 0)));
  });

  it('equals readGuest on an image read from a HostReader, with and without readInto, in one read per contiguous run', () => {
    const img = run(createImage({ size: 1n << 20n, clusterSize: 64 * KiB }).image, ops);
    const bytes = storeImage(img);
    for (const withInto of [false, true]) {
      const src = reader(bytes, withInto);
      const lazy = loadImage(src);
      expectSameEverywhere(lazy);
      // The four clusters at 256 KiB are host-contiguous (written by one request): one call.
      const before = src.calls;
      readInto(lazy, 320n * KIB + 1n, 128 * KiB);
      expect(src.calls - before).toBeLessThanOrEqual(withInto ? 1 : 2);
    }
  });

  it('refuses a range past the disk or past the buffer and leaves the buffer alone', () => {
    const img = createImage({ size: 1n << 20n, clusterSize: 64 * KiB }).image;
    const buf = new Uint8Array(16).fill(0xa5);
    expect(() => readGuestInto(img, (1n << 20n) - 8n, 16, buf, 0)).toThrow(/beyond the end/);
    expect(() => readGuestInto(img, 0n, 16, buf, 1)).toThrow(RangeError);
    expect(buf.every((b) => b === 0xa5)).toBe(true);
  });
});

describe('readHostInto', () => {
  it('stores zeros for holes and past the end of a file over a base', () => {
    const base = fill(10_000, 3);
    const file = hostFromReader(reader(base, true));
    const buf = new Uint8Array(12_000).fill(0xa5);
    readHostInto(file, 2000n, 10_000, buf, 1000);
    expect(Buffer.from(buf.subarray(1000, 11_000)).equals(Buffer.from(readHost(file, 2000n, 10_000)))).toBe(true);
    expect(buf.subarray(1000 + 8000, 11_000).every((b) => b === 0)).toBe(true);
    expect(buf[999]).toBe(0xa5);
    expect(buf[11_000]).toBe(0xa5);
  });
});
