/**
 * The persistent host file against a flat byte array: every operation, any alignment, and the
 * old value never changes (path copying).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { applyHostIO, emptyHostFile, hostBytes, PAGE_SIZE, readHost, type HostIO } from '../src/model/host-file.ts';

const SPAN = 5 * PAGE_SIZE;

const opArb: fc.Arbitrary<HostIO> = fc.oneof(
  fc.record({ offset: fc.nat(SPAN), bytes: fc.uint8Array({ minLength: 1, maxLength: 2 * PAGE_SIZE + 3 }) })
    .map(({ offset, bytes }) => ({ kind: 'write' as const, offset: BigInt(offset), bytes })),
  fc.record({ offset: fc.oneof(fc.nat(SPAN), fc.nat(5).map((p) => p * PAGE_SIZE)), length: fc.oneof(fc.integer({ min: 1, max: 3 * PAGE_SIZE }), fc.constantFrom(512, PAGE_SIZE)) })
    .map(({ offset, length }) => ({ kind: 'zero' as const, offset: BigInt(offset), length: BigInt(length) })),
  fc.record({ offset: fc.oneof(fc.nat(SPAN), fc.nat(5).map((p) => p * PAGE_SIZE)), length: fc.oneof(fc.integer({ min: 1, max: 3 * PAGE_SIZE }), fc.constantFrom(512, PAGE_SIZE)) })
    .map(({ offset, length }) => ({ kind: 'discard' as const, offset: BigInt(offset), length: BigInt(length) })),
  fc.nat(SPAN + PAGE_SIZE).map((n) => ({ kind: 'truncate' as const, length: BigInt(n) })),
);

/** The reference: a plain growable array. */
function reference(ops: readonly HostIO[]): Uint8Array {
  let b = new Uint8Array(0);
  const grow = (n: number): void => {
    if (n > b.length) {
      const next = new Uint8Array(n);
      next.set(b);
      b = next;
    }
  };
  for (const op of ops) {
    if (op.kind === 'write') {
      grow(Number(op.offset) + op.bytes.length);
      b.set(op.bytes, Number(op.offset));
    } else if (op.kind === 'zero') {
      grow(Number(op.offset + op.length));
      b.fill(0, Number(op.offset), Number(op.offset + op.length));
    } else if (op.kind === 'discard') {
      b.fill(0, Math.min(b.length, Number(op.offset)), Math.min(b.length, Number(op.offset + op.length)));
    } else if (op.kind === 'truncate') {
      const n = Number(op.length);
      const next = new Uint8Array(n);
      next.set(b.subarray(0, Math.min(n, b.length)));
      b = next;
    }
  }
  return b;
}

describe('HostFile', () => {
  it('equals a flat byte array after any operations, and earlier values stay unchanged', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 30 }), fc.array(opArb, { maxLength: 10 }), (first, second) => {
        const a = applyHostIO(emptyHostFile(), first);
        const snapshot = hostBytes(a);
        const b = applyHostIO(a, second);
        expect(Buffer.from(hostBytes(b)).equals(Buffer.from(reference([...first, ...second])))).toBe(true);
        expect(Buffer.from(hostBytes(a)).equals(Buffer.from(snapshot))).toBe(true);
        // Reads past the end are zeros.
        expect(readHost(b, b.length, 10).every((x) => x === 0)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('regression: zeroing a range that starts on a page boundary and ends inside the page', () => {
    // Found by properties/model-write-vs-qemu.test.ts (v2, 512-byte clusters: write 1537 bytes at
    // 0, discard 0+2048, write 1 byte at 0): the punched cluster at 0x1000 kept its data.
    const f = applyHostIO(emptyHostFile(), [
      { kind: 'write', offset: 0n, bytes: new Uint8Array(4608).fill(1) },
      { kind: 'discard', offset: 4096n, length: 512n },
    ]);
    expect(f.length).toBe(4608n);
    expect(readHost(f, 4096n, 512).every((x) => x === 0)).toBe(true);
    expect(readHost(f, 4095n, 1)[0]).toBe(1);
  });
});
