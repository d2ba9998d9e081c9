/**
 * Write logs from our own writers: the pure model (the HostIO `step` returns, in order) and the
 * driver `Qcow2Disk` on a backend that records every mutating call — the same run, seen where a
 * real disk would see it. QEMU's log comes from src/qemu (blklogwrites); a third party's from a file
 * (docs/crash.md).
 */
import { Qcow2Disk, memoryBackend, type DiskBackend, type DiskOpenOptions } from '../disk/index.ts';
import { closeImage, hostBytes, step, type HostIO, type Image, type Op } from '../model/index.ts';
import type { GuestEvent, WriteLog } from './write-log.ts';

/**
 * The model's write log for `ops` from `image`: each op's HostIO in order (a refused op keeps what
 * it committed, as QEMU's does), then closeImage's. Pure.
 */
export function modelWriteLog(image: Image, ops: readonly Op[]): WriteLog {
  const base = hostBytes(image.file);
  const baseData = image.dataFile !== undefined ? hostBytes(image.dataFile) : undefined;
  const host: HostIO[] = [];
  const guest: GuestEvent[] = [];
  let img = image;
  for (const op of ops) {
    const start = host.length;
    const r = step(img, op);
    host.push(...r.io);
    img = r.image;
    guest.push(r.ok ? { op, start, end: host.length, ok: true } : { op, start, end: host.length, ok: false, message: r.error.message });
  }
  host.push(...closeImage(img).io);
  return baseData === undefined ? { writer: 'model', base, host, guest } : { writer: 'model', base, baseData, host, guest };
}

/** A backend that records its mutating calls as HostIO (with copies of the bytes) before passing them on. */
export function recordingBackend(inner: DiskBackend, log: HostIO[], target: 'image' | 'data' = 'image'): DiskBackend {
  const tag = target === 'data' ? { target: 'data' as const } : {};
  const b: DiskBackend = {
    size: () => inner.size(),
    read: (o, t) => inner.read(o, t),
    close: async () => inner.close?.(),
  };
  if (inner.write !== undefined) {
    b.write = async (offset, data) => {
      log.push({ kind: 'write', offset, bytes: data.slice(), ...tag });
      await inner.write!(offset, data);
    };
    b.truncate = async (length) => {
      log.push({ kind: 'truncate', length, ...tag });
      await inner.truncate!(length);
    };
    b.flush = async () => {
      log.push({ kind: 'flush' });
      await inner.flush?.();
    };
    if (inner.zero !== undefined) {
      b.zero = async (offset, length) => {
        log.push({ kind: 'zero', offset, length, ...tag });
        await inner.zero!(offset, length);
      };
    }
  }
  return b;
}

/** Runs one op on the driver: the Qcow2Disk call that performs it. */
export async function applyOpToDisk(disk: Qcow2Disk, op: Op): Promise<void> {
  switch (op.kind) {
    case 'write':
      return disk.write(op.offset, op.data);
    case 'writeZeroes':
      return disk.writeZeroes(op.offset, op.length, { unmap: op.unmap, ...(op.noFallback !== undefined ? { noFallback: op.noFallback } : {}) });
    case 'discard':
      return disk.discard(op.offset, op.length);
    case 'writeCompressed':
      return disk.writeCompressed(op.offset, op.data);
    case 'snapshotCreate':
      return disk.snapshotCreate(op.name, { ...(op.dateSec !== undefined ? { dateSec: op.dateSec } : {}), ...(op.dateNsec !== undefined ? { dateNsec: op.dateNsec } : {}), ...(op.vmClockNsec !== undefined ? { vmClockNsec: op.vmClockNsec } : {}) });
    case 'snapshotApply':
      return disk.snapshotApply(op.name);
    case 'snapshotDelete':
      return disk.snapshotDelete(op.name);
    case 'resize':
      return disk.resize(op.size);
    case 'flush':
      return disk.flush();
  }
}

/**
 * The driver's write log for `ops` on an image whose file is `base` (and data file `baseData`):
 * Qcow2Disk opened for writing on memory backends that record every call, each op awaited in turn,
 * then close. `opts` passes the driver's options (backing resolver, write-back mode, cache size).
 */
export async function driverWriteLog(base: Uint8Array, ops: readonly Op[], opts: Omit<DiskOpenOptions, 'readOnly' | 'dataFile'> & { readonly baseData?: Uint8Array } = {}): Promise<WriteLog> {
  const host: HostIO[] = [];
  const guest: GuestEvent[] = [];
  const { baseData, ...open } = opts;
  const backend = recordingBackend(memoryBackend(base), host);
  const data = baseData !== undefined ? recordingBackend(memoryBackend(baseData), host, 'data') : undefined;
  const disk = await Qcow2Disk.open(backend, { ...open, readOnly: false, ...(data !== undefined ? { dataFile: data } : {}) });
  // Opening reads only (a dirty image is repaired by the open's own writes, which belong to no op).
  for (const op of ops) {
    const start = host.length;
    try {
      await applyOpToDisk(disk, op);
      guest.push({ op, start, end: host.length, ok: true });
    } catch (e) {
      guest.push({ op, start, end: host.length, ok: false, message: e instanceof Error ? e.message : String(e) });
    }
  }
  await disk.close();
  const writer = opts.writeback === true ? 'driver-writeback' : 'driver';
  return baseData === undefined ? { writer, base, host, guest } : { writer, base, baseData, host, guest };
}
