/**
 * The dedicated worker of the OPFS test (test/qemu/browser.test.ts), bundled by
 * test/support/browser-harness.ts: it copies the qemu-img-made image at `imageUrl` into an OPFS
 * file, opens it with Qcow2Disk over opfsBackend (the sync access handle exists only in workers),
 * issues the writes (reading each back), hashes the whole guest and closes the disk, which closes
 * the handle so the page can read the file.
 */
import { opfsBackend, Qcow2Disk, readWholeDisk, sha256Hex, type SyncAccessHandleLike } from './core.ts';
import { patternBytes, type PlannedWrite } from './writes.ts';

/** What the page sends. */
export interface WorkerRequest {
  readonly name: string;
  readonly imageUrl: string;
  readonly writes: readonly PlannedWrite[];
}

/** What the worker answers: the guest's size and hash after the writes, and any read-back difference. */
export type WorkerReply = { ok: true; size: string; sha256: string; mismatches: string[] } | { ok: false; error: string };

/** The worker globals this script uses (the project compiles without the DOM lib). */
interface WorkerScope {
  fetch(url: string): Promise<{ ok: boolean; status: number; arrayBuffer(): Promise<ArrayBuffer> }>;
  navigator: {
    storage: {
      getDirectory(): Promise<{
        getFileHandle(name: string, options: { create: boolean }): Promise<{ createSyncAccessHandle(): Promise<SyncAccessHandleLike> }>;
      }>;
    };
  };
  postMessage(message: WorkerReply): void;
  onmessage: ((e: { data: WorkerRequest }) => void) | null;
}

const scope = globalThis as unknown as WorkerScope;

async function run(req: WorkerRequest): Promise<WorkerReply> {
  const r = await scope.fetch(req.imageUrl);
  if (!r.ok) throw new Error(`GET ${req.imageUrl}: HTTP ${r.status}`);
  const image = new Uint8Array(await r.arrayBuffer());
  const root = await scope.navigator.storage.getDirectory();
  const handle = await (await root.getFileHandle(req.name, { create: true })).createSyncAccessHandle();
  const backend = opfsBackend(handle);
  try {
    await backend.truncate(0n);
    await backend.write(0n, image);
    await backend.flush();
    const disk = await Qcow2Disk.open(backend, { readOnly: false });
    const mismatches: string[] = [];
    for (const [i, w] of req.writes.entries()) {
      const data = patternBytes(w.seed, w.length);
      await disk.write(BigInt(w.offset), data);
      const back = await disk.read(BigInt(w.offset), w.length);
      const bad = back.length !== data.length ? 0 : back.findIndex((b, k) => b !== data[k]);
      if (back.length !== data.length || bad >= 0) mismatches.push(`write ${i} (${w.offset}+${w.length}) read back differs at byte ${bad}`);
      if (w.flushAfter) await disk.flush();
    }
    const sha256 = await sha256Hex(await readWholeDisk(disk, 1 << 20));
    const size = String(disk.size);
    await disk.close();
    return { ok: true, size, sha256, mismatches };
  } finally {
    await backend.close(); // a no-op after disk.close(); releases the file when the driver failed
  }
}

scope.onmessage = (e) => {
  run(e.data).then(
    (reply) => scope.postMessage(reply),
    (err: unknown) => scope.postMessage({ ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
  );
};
