/**
 * The DiskBackend contract (src/disk/backend.ts) as a property, for read-write backends: random
 * writes, truncations and reads applied to the backend and to a plain growable array must agree on
 * the size and on every byte after each operation (a write past the end fills the gap with zeros; a
 * truncation cuts, and a later extension reads zeros, not the old bytes).
 */
import fc from 'fast-check';
import { expect } from 'vitest';
import type { DiskBackend } from '../../src/disk/backend.ts';
import { BackendError } from '../../src/disk/backend-errors.ts';

export type BackendOp =
  | { readonly kind: 'write'; readonly offset: number; readonly data: Uint8Array }
  | { readonly kind: 'truncate'; readonly length: number }
  | { readonly kind: 'read'; readonly offset: number; readonly length: number };

/** Operations within the first `span` bytes (writes up to `maxWrite` bytes). */
export function backendOps(span: number, maxWrite: number): fc.Arbitrary<BackendOp[]> {
  const op: fc.Arbitrary<BackendOp> = fc.oneof(
    { weight: 5, arbitrary: fc.record({ kind: fc.constant('write' as const), offset: fc.nat(span), data: fc.uint8Array({ minLength: 1, maxLength: maxWrite }) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('truncate' as const), length: fc.nat(span) }) },
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('read' as const), offset: fc.nat(span), length: fc.nat(maxWrite) }) },
  );
  return fc.array(op, { maxLength: 25 });
}

/** Applies `ops` to `backend` (which starts with `initial`) and to an array, comparing after each. */
export async function checkAgainstArray(backend: DiskBackend, initial: Uint8Array, ops: readonly BackendOp[]): Promise<void> {
  let model: Uint8Array = Uint8Array.from(initial);
  const resized = (n: number): Uint8Array => {
    const next = new Uint8Array(n);
    next.set(model.subarray(0, Math.min(n, model.length)));
    return next;
  };
  for (const op of ops) {
    switch (op.kind) {
      case 'write':
        await backend.write!(BigInt(op.offset), op.data);
        if (op.offset + op.data.length > model.length) model = resized(op.offset + op.data.length);
        model.set(op.data, op.offset);
        break;
      case 'truncate':
        await backend.truncate!(BigInt(op.length));
        model = resized(op.length);
        break;
      case 'read': {
        // Only inside the store: the contract promises no other reads.
        const offset = Math.min(op.offset, model.length);
        const length = Math.min(op.length, model.length - offset);
        const got = new Uint8Array(length);
        await backend.read(BigInt(offset), got);
        expectSameBytes(got, model.subarray(offset, offset + length), `read(${offset}, ${length})`);
        break;
      }
    }
    expect(await backend.size()).toBe(BigInt(model.length));
    const all = new Uint8Array(model.length);
    await backend.read(0n, all);
    expectSameBytes(all, model, `content after ${op.kind}`);
  }
}

/** Fails with the first differing byte unless `got` equals `want` (element-wise expect is slow). */
export function expectSameBytes(got: Uint8Array, want: Uint8Array, what: string): void {
  if (got.length === want.length && Buffer.from(got.buffer, got.byteOffset, got.length).equals(Buffer.from(want.buffer, want.byteOffset, want.length))) return;
  let i = 0;
  while (i < got.length && i < want.length && got[i] === want[i]) i++;
  expect.fail(`${what}: ${got.length} bytes, expected ${want.length}; first difference at byte ${i} (${got[i]} instead of ${want[i]})`);
}

/** The BackendError `p` rejects with (a test failure when it resolves or rejects with anything else). */
export async function rejection(p: Promise<unknown>): Promise<BackendError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(BackendError);
  return e as BackendError;
}
