/**
 * What the browser-side test scripts (page.ts, worker.ts) use of qcow2-ref — all from the package's
 * core entry src/index.ts, whose bundle for the browser (no Node polyfills) is what the test proves
 * — and two helpers over an open Qcow2Disk.
 */
import type { Qcow2Disk } from '../../src/index.ts';

export { blobBackend, memoryBackend, opfsBackend, Qcow2Disk, type BlobLike, type DiskBackend, type SyncAccessHandleLike } from '../../src/index.ts';

/** The SHA-256 of `bytes` as lowercase hex (crypto.subtle; the project compiles without the DOM lib). */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const subtle = (globalThis as unknown as { crypto: { subtle: { digest(alg: string, data: Uint8Array): Promise<ArrayBuffer> } } }).crypto.subtle;
  const digest = new Uint8Array(await subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Reads the whole virtual disk in chunks of `chunk` bytes (the last one shorter) into one array. */
export async function readWholeDisk(disk: Qcow2Disk, chunk: number): Promise<Uint8Array> {
  if (disk.size > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`disk of ${disk.size} bytes is too large to read whole`);
  const size = Number(disk.size);
  const out = new Uint8Array(size);
  for (let at = 0; at < size; at += chunk) {
    const length = Math.min(chunk, size - at);
    const got = await disk.read(BigInt(at), length);
    if (got.length !== length) throw new Error(`read(${at}, ${length}) returned ${got.length} bytes`);
    out.set(got, at);
  }
  return out;
}
