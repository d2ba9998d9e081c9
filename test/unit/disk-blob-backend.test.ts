/**
 * blobBackend (src/disk/blob-backend.ts) on Node's global Blob and File: every in-range read equals
 * the same bytes of the source (including across the parts a Blob was built from, with and without
 * read-ahead), sequential reads are served from one read-ahead window while others fetch exactly what
 * they ask for, the size is the Blob's, the backend is read-only (no write, truncate, flush or close), and failures are typed:
 * EINVAL outside the Blob, EFBIG past 2^53 - 1, EIO when the Blob's read rejects (a File changed on
 * disk) or returns a short buffer. The real-browser read is test/qemu/browser.test.ts.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { blobBackend, type BlobLike } from '../../src/disk/blob-backend.ts';
import { expectSameBytes, rejection } from '../support/backend-contract.ts';

describe('blobBackend', () => {
  it('reads every range of a multi-part Blob exactly', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.uint8Array({ maxLength: 5000 }), { minLength: 1, maxLength: 5 }),
        fc.array(fc.tuple(fc.nat(), fc.nat(), fc.boolean()), { minLength: 1, maxLength: 10 }),
        fc.constantFrom(0, 1, 100, 4096),
        async (parts, ranges, readAhead) => {
          const whole = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
          parts.reduce((at, p) => (whole.set(p, at), at + p.length), 0);
          const b = blobBackend(new Blob(parts), { readAhead });
          expect(await b.size()).toBe(BigInt(whole.length));
          let lastEnd = 0;
          for (const [x, y, follow] of ranges) {
            // Half the reads continue the previous one (the sequential case read-ahead serves).
            const offset = follow ? lastEnd : whole.length === 0 ? 0 : x % (whole.length + 1);
            const length = y % (whole.length - offset + 1);
            const got = new Uint8Array(length).fill(0xee);
            await b.read(BigInt(offset), got);
            expectSameBytes(got, whole.subarray(offset, offset + length), `read(${offset}, ${length})`);
            lastEnd = offset + length;
          }
        },
      ),
      { numRuns: 100 },
    );
  });

  it('a sequential stream is served from read-ahead windows; other reads fetch exactly what they ask', async () => {
    const slices: Array<[number, number]> = [];
    const data = new Uint8Array(1 << 20).map((_, i) => i * 7);
    const source = new Blob([data]);
    const counting: BlobLike = {
      size: data.length,
      slice(start, end) {
        slices.push([start!, end!]);
        return source.slice(start, end);
      },
    };
    const b = blobBackend(counting, { readAhead: 256 << 10 });
    const c = 64 << 10;
    const got = new Uint8Array(c);
    await b.read(0n, got); // not yet known to be sequential: exact
    for (let i = 1; i < 16; i++) {
      await b.read(BigInt(i * c), got);
      expectSameBytes(got, data.subarray(i * c, (i + 1) * c), `read ${i}`);
      if (i === 6) await b.read(999_000n, new Uint8Array(100)); // an interleaved read elsewhere
    }
    expect(slices).toEqual([[0, c], [c, 5 * c], [5 * c, 9 * c], [999_000, 999_100], [9 * c, 13 * c], [13 * c, 1 << 20]]);
    // Random reads: exactly their ranges.
    slices.length = 0;
    const r = blobBackend(counting);
    for (const [o, n] of [[5000, 10], [100, 4096], [70_000, 1]] as const) await r.read(BigInt(o), new Uint8Array(n));
    expect(slices).toEqual([[5000, 5010], [100, 4196], [70_000, 70_001]]);
  });

  it('reads a File and is read-only', async () => {
    const f = new File([new Uint8Array([9, 8, 7, 6, 5])], 'disk.qcow2');
    const b = blobBackend(f);
    const got = new Uint8Array(3);
    await b.read(2n, got);
    expect(got).toEqual(new Uint8Array([7, 6, 5]));
    expect([b.write, b.truncate, b.flush, b.zero, b.close]).toEqual([undefined, undefined, undefined, undefined, undefined]);
  });

  it('refuses reads past the end, negative offsets and offsets past 2^53 - 1 without touching the Blob', async () => {
    let slices = 0;
    const counting: BlobLike = {
      size: 100,
      slice(start, end) {
        slices++;
        return new Blob([new Uint8Array(100)]).slice(start, end);
      },
    };
    const b = blobBackend(counting);
    const past = await rejection(b.read(95n, new Uint8Array(6)));
    expect([past.code, past.backend, past.offset, past.length]).toEqual(['EINVAL', 'blob', 95n, 6n]);
    expect((await rejection(b.read(-5n, new Uint8Array(1)))).code).toBe('EINVAL');
    expect((await rejection(b.read(BigInt(Number.MAX_SAFE_INTEGER) - 1n, new Uint8Array(2)))).code).toBe('EFBIG');
    expect(slices).toBe(0);
    await b.read(99n, new Uint8Array(1));
    expect(slices).toBe(1);
  });

  it('a rejected or short Blob read is EIO, keeping the cause', async () => {
    const cause = new Error('NotReadableError: the file changed');
    const failing: BlobLike = { size: 10, slice: () => ({ arrayBuffer: () => Promise.reject(cause) }) };
    const e = await rejection(blobBackend(failing).read(0n, new Uint8Array(4)));
    expect([e.code, e.cause]).toEqual(['EIO', cause]);
    const short: BlobLike = { size: 10, slice: () => ({ arrayBuffer: () => Promise.resolve(new ArrayBuffer(3)) }) };
    expect((await rejection(blobBackend(short).read(0n, new Uint8Array(4)))).code).toBe('EIO');
  });
});
