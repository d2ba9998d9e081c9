/**
 * opfsBackend (src/disk/opfs-backend.ts) against a fake FileSystemSyncAccessHandle that follows the
 * File System standard (a write past the end fills with zeros; read returns 0 at the end) and can
 * return short reads and writes, throw QuotaExceededError, or lie about its size: the DiskBackend
 * contract against a plain array (with one-byte-at-a-time handles too), flush and close reach the
 * handle, and failures are typed (ENOSPC, EIO, EINVAL, EFBIG before the handle is touched, EBADF
 * after close). The real OPFS file in Chromium is test/qemu/browser.test.ts.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { opfsBackend, type SyncAccessHandleLike } from '../../src/disk/opfs-backend.ts';
import { backendOps, checkAgainstArray, rejection } from '../support/backend-contract.ts';

/** A FileSystemSyncAccessHandle in memory, per the File System standard, with faults to inject. */
class FakeHandle implements SyncAccessHandleLike {
  bytes: Uint8Array;
  closed = false;
  flushes = 0;
  calls = 0;
  /** At most this many bytes per read or write call (short transfers). */
  maxChunk = Infinity;
  /** Writes that would make the file longer than this throw QuotaExceededError. */
  quota = Infinity;
  /** getSize reports this many extra bytes (a file that shrank between getSize and read). */
  sizeLie = 0;

  constructor(initial: Uint8Array = new Uint8Array(0)) {
    this.bytes = Uint8Array.from(initial);
  }
  private enter(): void {
    this.calls++;
    if (this.closed) throw new DOMException('The access handle was closed', 'InvalidStateError');
  }
  private resize(n: number): void {
    const next = new Uint8Array(n);
    next.set(this.bytes.subarray(0, Math.min(n, this.bytes.length)));
    this.bytes = next;
  }
  read(buffer: Uint8Array, options: { at?: number } = {}): number {
    this.enter();
    const at = options.at ?? 0;
    if (at >= this.bytes.length) return 0;
    const n = Math.min(buffer.length, this.bytes.length - at, this.maxChunk);
    buffer.set(this.bytes.subarray(at, at + n));
    return n;
  }
  write(buffer: Uint8Array, options: { at?: number } = {}): number {
    this.enter();
    const at = options.at ?? 0;
    const n = Math.min(buffer.length, this.maxChunk);
    if (at + n > this.quota) throw new DOMException('quota', 'QuotaExceededError');
    if (at + n > this.bytes.length) this.resize(at + n);
    this.bytes.set(buffer.subarray(0, n), at);
    return n;
  }
  truncate(newSize: number): void {
    this.enter();
    if (newSize > this.quota) throw new DOMException('quota', 'QuotaExceededError');
    this.resize(newSize);
  }
  getSize(): number {
    this.enter();
    return this.bytes.length + this.sizeLie;
  }
  flush(): void {
    this.enter();
    this.flushes++;
  }
  close(): void {
    this.closed = true;
  }
}

describe('opfsBackend', () => {
  it('agrees with a plain array, also when the handle transfers a few bytes per call', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 3000 }), backendOps(20_000, 9000), fc.constantFrom(Infinity, 1, 7, 4096), async (initial, ops, chunk) => {
        const h = new FakeHandle(initial);
        h.maxChunk = chunk;
        await checkAgainstArray(opfsBackend(h), initial, ops);
        expect(h.closed).toBe(false);
      }),
      { numRuns: 150 },
    );
  });

  it('flush and close reach the handle; after close every call is EBADF and the handle is not touched', async () => {
    const h = new FakeHandle(new Uint8Array(8));
    const b = opfsBackend(h);
    await b.flush();
    await b.flush();
    expect(h.flushes).toBe(2);
    await b.close();
    expect(h.closed).toBe(true);
    const calls = h.calls;
    for (const p of [b.read(0n, new Uint8Array(1)), b.write(0n, new Uint8Array(1)), b.truncate(0n), b.flush(), b.size()]) {
      expect((await rejection(p)).code).toBe('EBADF');
    }
    expect(h.calls).toBe(calls);
    await b.close(); // a second close is harmless
  });

  it('QuotaExceededError is ENOSPC with the DOMException as cause; what was written before stays', async () => {
    const h = new FakeHandle();
    h.quota = 100;
    h.maxChunk = 60;
    const b = opfsBackend(h);
    const e = await rejection(b.write(0n, new Uint8Array(120).fill(1)));
    expect([e.code, e.offset, e.length]).toEqual(['ENOSPC', 0n, 120n]);
    expect(e.cause).toBeInstanceOf(DOMException);
    expect(await b.size()).toBe(60n); // the first short write went through, as on a real full disk
    expect((await rejection(b.truncate(101n))).code).toBe('ENOSPC');
  });

  it('a read past the end is EINVAL, and a file that shrank under the read is EIO', async () => {
    const h = new FakeHandle(new Uint8Array(10));
    const b = opfsBackend(h);
    const past = await rejection(b.read(8n, new Uint8Array(3)));
    expect([past.code, past.backend]).toEqual(['EINVAL', 'opfs']);
    h.sizeLie = 5;
    expect((await rejection(b.read(8n, new Uint8Array(3)))).code).toBe('EIO');
  });

  it('refuses offsets past 2^53 - 1 with EFBIG before touching the handle', async () => {
    const h = new FakeHandle();
    const b = opfsBackend(h);
    const e = await rejection(b.write(1n << 53n, new Uint8Array(1)));
    expect([e.code, e.offset]).toEqual(['EFBIG', 1n << 53n]);
    expect((await rejection(b.read(BigInt(Number.MAX_SAFE_INTEGER), new Uint8Array(1)))).code).toBe('EFBIG');
    expect((await rejection(b.truncate(1n << 60n))).code).toBe('EFBIG');
    expect(h.calls).toBe(0);
  });
});
