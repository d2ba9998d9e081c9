/**
 * blobBackend (src/disk/blob-backend.ts) on Node's global Blob and File: every in-range read equals
 * the same bytes of the source (including across the parts a Blob was built from), the size is the
 * Blob's, the backend is read-only (no write, truncate, flush or close), and failures are typed:
 * EINVAL outside the Blob, EFBIG past 2^53 - 1, EIO when the Blob's read rejects (a File changed on
 * disk) or returns a short buffer. The real-browser read is test/qemu/browser.test.ts.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BackendError } from '../../src/disk/backend-errors.ts';
import { blobBackend, type BlobLike } from '../../src/disk/blob-backend.ts';
import { expectSameBytes } from '../support/backend-contract.ts';

async function rejection(p: Promise<unknown>): Promise<BackendError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(BackendError);
  return e as BackendError;
}

describe('blobBackend', () => {
  it('reads every range of a multi-part Blob exactly', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.uint8Array({ maxLength: 5000 }), { minLength: 1, maxLength: 5 }),
        fc.array(fc.tuple(fc.nat(), fc.nat()), { minLength: 1, maxLength: 10 }),
        async (parts, ranges) => {
          const whole = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
          parts.reduce((at, p) => (whole.set(p, at), at + p.length), 0);
          const b = blobBackend(new Blob(parts));
          expect(await b.size()).toBe(BigInt(whole.length));
          for (const [x, y] of ranges) {
            const offset = whole.length === 0 ? 0 : x % (whole.length + 1);
            const length = y % (whole.length - offset + 1);
            const got = new Uint8Array(length).fill(0xee);
            await b.read(BigInt(offset), got);
            expectSameBytes(got, whole.subarray(offset, offset + length), `read(${offset}, ${length})`);
          }
        },
      ),
      { numRuns: 100 },
    );
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
