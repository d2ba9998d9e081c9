/**
 * The page script of test/qemu/browser.test.ts, bundled by test/support/browser-harness.ts and run
 * in headless Chromium. It installs `globalThis.qcow2Browser` (PageApi), which the Node test calls
 * through page.evaluate; files come from the harness's HTTP server (/files/NAME) and go back to it
 * (POST /upload/NAME).
 */
import { blobBackend, memoryBackend, Qcow2Disk, readWholeDisk, sha256Hex, type BlobLike, type DiskBackend } from './core.ts';
import type { PlannedWrite } from './writes.ts';
import type { WorkerReply, WorkerRequest } from './worker.ts';

/** What the page offers the Node test. */
export interface PageApi {
  /**
   * Opens /files/TOP read-only from a Blob with the others in `files` as its possible backing
   * files (by name), reads the whole virtual disk once per chunk size and hashes it (SHA-256); then
   * once more with TOP in a memoryBackend (1 MiB chunks). One hash per pass, in that order.
   */
  hashImage(top: string, files: readonly string[], chunks: readonly number[]): Promise<{ size: string; hashes: string[] }>;
  /**
   * In a dedicated worker: puts /files/NAME into an OPFS file, applies `writes` through the driver
   * over opfsBackend, then uploads the OPFS file to /upload/NAME.
   */
  opfsWrite(name: string, writes: readonly PlannedWrite[]): Promise<WorkerReply & { uploaded: number }>;
  /**
   * Reads /files/NAME (a Blob) through the driver in `chunk`-byte reads and checks that every
   * `block`-byte block of the guest starts with its index (u32 little-endian); then reads the Blob
   * itself, all of it in `chunk`-byte slices, and its first 256 MiB in 64 KiB slices and in 64 KiB
   * reads through blobBackend (read-ahead). Times each.
   */
  readSpeed(
    name: string,
    chunk: number,
    block: number,
  ): Promise<{ bytes: number; driverMs: number; blobMs: number; blob64kMs: number; backend64kMs: number; bytes64k: number; badBlocks: number }>;
}

/** The browser globals this script uses (the project compiles without the DOM lib). */
interface PageScope {
  fetch(url: string, init?: { method: string; body: unknown }): Promise<{ ok: boolean; status: number; blob(): Promise<BlobLike> }>;
  performance: { now(): number };
  navigator: { storage: { getDirectory(): Promise<OpfsDirectory> } };
  Worker: new (url: string, options: { type: 'module' }) => WorkerLike;
  qcow2Browser?: PageApi;
}
interface OpfsDirectory {
  getFileHandle(name: string): Promise<{ getFile(): Promise<BlobLike> }>;
  removeEntry(name: string): Promise<void>;
}
interface WorkerLike {
  postMessage(message: WorkerRequest): void;
  terminate(): void;
  onmessage: ((e: { data: WorkerReply }) => void) | null;
  onerror: ((e: { message: string }) => void) | null;
}

const scope = globalThis as unknown as PageScope;

async function fetchBlob(name: string): Promise<BlobLike> {
  const r = await scope.fetch(`/files/${encodeURIComponent(name)}`);
  if (!r.ok) throw new Error(`GET /files/${name}: HTTP ${r.status}`);
  return r.blob();
}

const api: PageApi = {
  async hashImage(top, files, chunks) {
    const blobs = new Map<string, BlobLike>();
    for (const name of [top, ...files]) blobs.set(name, await fetchBlob(name));
    const backing = async (name: string): Promise<DiskBackend | undefined> => {
      const blob = blobs.get(name);
      return blob === undefined ? undefined : blobBackend(blob);
    };
    const hashes: string[] = [];
    const disk = await Qcow2Disk.open(blobBackend(blobs.get(top)!), { readOnly: true, backing });
    let size: bigint;
    try {
      size = disk.size;
      for (const chunk of chunks) hashes.push(await sha256Hex(await readWholeDisk(disk, chunk)));
    } finally {
      await disk.close();
    }
    const inMemory = memoryBackend(new Uint8Array(await blobs.get(top)!.slice().arrayBuffer()));
    const again = await Qcow2Disk.open(inMemory, { readOnly: true, backing });
    try {
      hashes.push(await sha256Hex(await readWholeDisk(again, 1 << 20)));
    } finally {
      await again.close();
    }
    return { size: String(size), hashes };
  },

  async opfsWrite(name, writes) {
    const worker = new scope.Worker('/worker.js', { type: 'module' });
    let reply: WorkerReply;
    try {
      reply = await new Promise<WorkerReply>((resolve, reject) => {
        worker.onmessage = (e) => resolve(e.data);
        worker.onerror = (e) => reject(new Error(`worker failed: ${e.message}`));
        worker.postMessage({ name, imageUrl: `/files/${encodeURIComponent(name)}`, writes });
      });
    } finally {
      worker.terminate();
    }
    if (!reply.ok) throw new Error(`worker: ${reply.error}`);
    // The worker closed its sync access handle, so the page may read the file now.
    const root = await scope.navigator.storage.getDirectory();
    const file = await (await root.getFileHandle(name)).getFile();
    const up = await scope.fetch(`/upload/${encodeURIComponent(name)}`, { method: 'POST', body: file });
    if (!up.ok) throw new Error(`POST /upload/${name}: HTTP ${up.status}`);
    await root.removeEntry(name);
    return { ...reply, uploaded: file.size };
  },

  async readSpeed(name, chunk, block) {
    const blob = await fetchBlob(name);
    const disk = await Qcow2Disk.open(blobBackend(blob), { readOnly: true });
    let badBlocks = 0;
    let driverMs: number;
    const size = Number(disk.size);
    try {
      const t0 = scope.performance.now();
      for (let at = 0; at < size; at += chunk) {
        const got = await disk.read(BigInt(at), Math.min(chunk, size - at));
        const view = new DataView(got.buffer, got.byteOffset, got.byteLength);
        for (let p = 0; p + 4 <= got.length; p += block) if (view.getUint32(p, true) !== (at + p) / block) badBlocks++;
      }
      driverMs = scope.performance.now() - t0;
    } finally {
      await disk.close();
    }
    // What the Blob itself gives, in the same chunks and in cluster-sized ones.
    const sliced = async (end: number, step: number): Promise<number> => {
      const t = scope.performance.now();
      for (let at = 0; at < end; at += step) await blob.slice(at, Math.min(at + step, end)).arrayBuffer();
      return scope.performance.now() - t;
    };
    const blobMs = await sliced(blob.size, chunk);
    const bytes64k = Math.min(blob.size, 256 << 20);
    const blob64kMs = await sliced(bytes64k, 64 << 10);
    const backend = blobBackend(blob);
    const t2 = scope.performance.now();
    const target = new Uint8Array(64 << 10);
    for (let at = 0; at + target.length <= bytes64k; at += target.length) await backend.read(BigInt(at), target);
    const backend64kMs = scope.performance.now() - t2;
    return { bytes: size, driverMs, blobMs, blob64kMs, backend64kMs, bytes64k, badBlocks };
  },
};

scope.qcow2Browser = api;
