/**
 * memoryBackend (src/disk/memory-backend.ts): the DiskBackend contract against a plain array (random
 * writes, truncations and reads, from empty and from initial content), copies in and out (`initial`
 * and `bytes()` are not aliased), zeros after a shrink and regrow, and typed refusals (EINVAL for
 * reads outside the store and negative offsets, EFBIG past 2^53 - 1).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { memoryBackend } from '../../src/disk/memory-backend.ts';
import { backendOps, checkAgainstArray, rejection } from '../support/backend-contract.ts';

/** The error `p` rejects with (fails the test when it resolves). */
describe('memoryBackend', () => {
  it('agrees with a plain array on random writes, truncations and reads', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 3000 }), backendOps(20_000, 9000), async (initial, ops) => {
        await checkAgainstArray(memoryBackend(initial), initial, ops);
      }),
      { numRuns: 150 },
    );
  });

  it('copies its initial content and hands out copies', async () => {
    const initial = new Uint8Array([1, 2, 3, 4]);
    const b = memoryBackend(initial);
    initial[0] = 99;
    const out = b.bytes();
    expect(out).toEqual(new Uint8Array([1, 2, 3, 4]));
    out[1] = 99;
    const again = new Uint8Array(4);
    await b.read(0n, again);
    expect(again).toEqual(new Uint8Array([1, 2, 3, 4]));
  });

  it('a write past the end grows with zeros; a shrink and regrow reads zeros, not the old bytes', async () => {
    const b = memoryBackend();
    await b.write(1_000_000n, new Uint8Array([7, 7]));
    expect(await b.size()).toBe(1_000_002n);
    await b.write(0n, new Uint8Array(10).fill(5));
    await b.truncate(3n);
    await b.truncate(10n);
    expect(b.bytes()).toEqual(new Uint8Array([5, 5, 5, 0, 0, 0, 0, 0, 0, 0]));
    await b.write(20n, new Uint8Array([1]));
    expect(b.bytes().subarray(10)).toEqual(new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
  });

  it('an empty write does not extend the store', async () => {
    const b = memoryBackend(new Uint8Array(3));
    await b.write(100n, new Uint8Array(0));
    expect(await b.size()).toBe(3n);
  });

  it('refuses reads outside the store, negative offsets and offsets past 2^53 - 1 with typed errors', async () => {
    const b = memoryBackend(new Uint8Array(16));
    const past = await rejection(b.read(10n, new Uint8Array(7)));
    expect([past.code, past.backend, past.offset, past.length]).toEqual(['EINVAL', 'memory', 10n, 7n]);
    expect((await rejection(b.read(-1n, new Uint8Array(1)))).code).toBe('EINVAL');
    expect((await rejection(b.write(-1n, new Uint8Array(1)))).code).toBe('EINVAL');
    const big = await rejection(b.write(BigInt(Number.MAX_SAFE_INTEGER), new Uint8Array(1)));
    expect([big.code, big.offset]).toEqual(['EFBIG', BigInt(Number.MAX_SAFE_INTEGER)]);
    expect((await rejection(b.truncate(1n << 60n))).code).toBe('EFBIG');
    expect(await b.size()).toBe(16n); // nothing changed
  });

  it('a store too large to allocate is ENOMEM, and the content survives', async () => {
    const b = memoryBackend(new Uint8Array([1, 2, 3]));
    const e = await rejection(b.write(1n << 50n, new Uint8Array(1)));
    expect(e.code).toBe('ENOMEM');
    expect(b.bytes()).toEqual(new Uint8Array([1, 2, 3]));
  });

  it('declares no durability and holds nothing to release', () => {
    const b = memoryBackend();
    expect([b.flush, b.close, b.zero]).toEqual([undefined, undefined, undefined]);
  });
});
