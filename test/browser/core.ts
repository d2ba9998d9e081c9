/**
 * What the browser-side test scripts (page.ts, worker.ts) use of qcow2-ref, all from the package's
 * core entry src/index.ts: the backends by name, and the disk driver `Qcow2Disk` through a narrow,
 * declared view of the API this test needs. The bundle of these scripts is built for the browser
 * with no Node polyfills, so a core that loads node:* fails to bundle.
 *
 * Until the driver is exported by src/index.ts, `Qcow2Disk.open` throws a plain "not exported"
 * error in the page (and the tests that need it fail); once it is, `import { Qcow2Disk }` can
 * replace the view below.
 */
import * as core from '../../src/index.ts';

export { blobBackend, memoryBackend, opfsBackend, type BlobLike, type DiskBackend, type SyncAccessHandleLike } from '../../src/index.ts';

/** The part of an open Qcow2Disk the browser tests use. */
export interface DiskView {
  /** The virtual disk size. */
  readonly size: bigint;
  read(offset: bigint, length: number): Promise<Uint8Array>;
  write(offset: bigint, data: Uint8Array): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** The open options the browser tests pass. */
export interface DiskOpenView {
  readonly readOnly?: boolean;
  /** The backend of the backing file the image names, or undefined when there is none by that name. */
  readonly backing?: (name: string) => Promise<core.DiskBackend | undefined>;
}

/** `Qcow2Disk` as the browser tests call it. */
export const Qcow2Disk = {
  open(backend: core.DiskBackend, options: DiskOpenView): Promise<DiskView> {
    const driver = (core as unknown as { Qcow2Disk?: { open(b: core.DiskBackend, o: DiskOpenView): Promise<DiskView> } }).Qcow2Disk;
    if (driver === undefined) throw new Error('src/index.ts does not export Qcow2Disk (the disk driver is not merged yet)');
    return driver.open(backend, options);
  },
};

/** The SHA-256 of `bytes` as lowercase hex (crypto.subtle; the project compiles without the DOM lib). */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const subtle = (globalThis as unknown as { crypto: { subtle: { digest(alg: string, data: Uint8Array): Promise<ArrayBuffer> } } }).crypto.subtle;
  const digest = new Uint8Array(await subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Reads the whole virtual disk in chunks of `chunk` bytes (the last one shorter) into one array. */
export async function readWholeDisk(disk: DiskView, chunk: number): Promise<Uint8Array> {
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
