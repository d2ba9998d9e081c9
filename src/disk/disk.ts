/**
 * Qcow2Disk: a qcow2 image on any storage, read and written through the pure model. Every decision
 * (where a cluster goes, what a read returns, what QEMU would refuse) comes from `step` and its
 * siblings; the driver only moves bytes — it fetches what the model asks for (BackendReader's
 * ReadPending), issues the model's host writes in order with a durable flush at every barrier
 * (apply-io.ts), and keeps memory bounded by rebasing the model's file onto the backend.
 */
import {
  INCOMPAT_DIRTY, absorbIssuedWrites, closeImage, overlayBytesIn, createImage, detectMetadataPreallocation, hostFromReader, imageBackingSource, mapImage, rawReaderBackingSource, readGuestInto, rebaseHostFile, step,
  headerReferences, INCOMPAT_DATA_FILE, type BackingSource, type CreateOptions, type HostFile, type HostIO, type HostTarget, hostTargetOf,
  type HostAllocation, type Image, type MapExtent, type MapOptions, type Op,
} from '../model/index.ts';
import { HEADER_MAGIC } from '../../generated/qcow2.ts';
import { checkImage, repairImage, type CheckResult, type RepairMode, type RepairResult } from '../check/index.ts';
import { openImageWithIo } from '../open/index.ts';
import { qcow2ImageInfo, type InfoResult } from '../views/index.ts';
import type { DiskBackend } from './backend.ts';
import { BackendReader, ReadPending } from './backend-reader.ts';
import { applyIo, type IoCounts, type IoTarget } from './apply-io.ts';
import { DirectWrites, scheduleEpochs } from './writeback.ts';
import { DiskError, backendError, isDiskError } from './errors.ts';
import { writeHostFileTo } from './write-host-file.ts';

/** A file the image names (a backing file or external data file), as the caller's resolver found it. */
export interface ResolvedFile {
  readonly backend: DiskBackend;
  /** What the file is called (e.g. its path): passed back as `parent` when the files it names are resolved. */
  readonly name?: string;
}

/**
 * Finds a file an image names: `name` exactly as the image's header says, `from.parent` the name of
 * the image that names it (undefined for the top image unless Qcow2Disk.open was given `name`).
 * Returns undefined when the file should not or cannot be opened (the open then fails with
 * DiskError 'backing' / 'data-file'). The resolver is the place for a path policy: an image's header
 * is data, and should not choose which files are read (see qcow2-ref/node's openDiskFile).
 */
export type FileResolver = (
  name: string,
  from: { readonly parent?: string; readonly kind: 'backing' | 'data-file'; readonly depth: number },
) => Promise<DiskBackend | ResolvedFile | undefined>;

export interface DiskOpenOptions {
  /** Open read-only: every change is refused with DiskError 'read-only', and nothing is written, even at open. */
  readonly readOnly?: boolean;
  /**
   * The backing chain: a resolver for the names the images' headers give, or 'none' to open without
   * it (unallocated clusters then read as zeros, as QEMU's BDRV_O_NO_BACKING). Required when the image
   * has a backing file — silently reading zeros instead of the backing data would be wrong.
   */
  readonly backing?: FileResolver | 'none';
  /** The external data file (incompatible bit 2): its backend, or a resolver for the header's name. */
  readonly dataFile?: DiskBackend | FileResolver;
  /** What the image is called (its path): info()'s filename and the `parent` the resolvers get. */
  readonly name?: string;
  /** Bytes of backend chunks cached between operations, per file (default 32 MiB). */
  readonly cacheBytes?: number;
  /**
   * Whether clusters freed by a guest request (a zero write with unmap, a discard) are punched out
   * of the files, as QEMU does when the image is opened with BDRV_O_UNMAP (default true: qemu-io and
   * qemu-img open images so). false is qemu-nbd's default `--discard=ignore`: the refcounts drop and
   * the files keep the bytes (SessionState.noDiscardPassthrough).
   */
  readonly discardPassthrough?: boolean;
  /**
   * Write-back, as QEMU's cache=writeback: guest data (and copy-on-write) goes to the backend at
   * once, without a flush, wherever the crash-safety order allows it (DirectWrites); the rest of the
   * host I/O of changes — metadata — is kept (in the model's pages, which reads see) and issued at
   * flush(), at close(), or once `writebackBytes` have accumulated — then in epochs with a flush only
   * between epochs, each change's crash-safety order kept (src/disk/writeback.ts). A change's promise
   * then resolves before the backend has it, and a backend failure is reported by the flush (or the
   * change) that issues it; flush() still returns only once every earlier change is durable. Default false: each change's I/O is issued before
   * its promise resolves, with a flush at each of its barriers.
   */
  readonly writeback?: boolean;
  /** Bytes of deferred writes that make a write-back disk issue them (default 64 MiB). */
  readonly writebackBytes?: number;
}

/** Longest backing chain opened, the top image included (a crafted chain cannot recurse forever). */
export const MAX_CHAIN_DEPTH = 64;

/** Unwritten model pages kept before the model's file is rebased onto the backend. */
const REBASE_BYTES = 8 * 1024 * 1024;

/** Largest guest read handed to the model at once (bounds the working set one read pins in the cache). */
const READ_PIECE = 4 * 1024 * 1024;

/** A pass limit for one operation: each pass fetches at least one new chunk, so this bounds a bug, not real work. */
const MAX_PASSES = 1_000_000;

const DEFAULT_CACHE_BYTES = 32 * 1024 * 1024;

const DEFAULT_WRITEBACK_BYTES = 64 * 1024 * 1024;

/**
 * An open qcow2 image. Methods are async and serialised: calls made concurrently run one after the
 * other in call order, each seeing the previous one's result. Errors are typed: DiskError (the
 * driver and the backend), ModelError (what QEMU refuses, with its errno and message), OpenError and
 * Qcow2FormatError (at open, and for structures that cannot be decoded).
 */
export class Qcow2Disk {
  private image: Image;
  private readonly targets: Partial<Record<HostTarget, IoTarget>>;
  private readonly readers: BackendReader[];
  private queue: Promise<unknown> = Promise.resolve();
  private state: 'open' | 'closed' | 'failed' = 'open';
  private failure: DiskError | undefined;
  private pendingBytes = 0;
  /** Write-back: the deferred I/O of each change since the last write-back, in order. */
  private deferred: (readonly HostIO[])[] = [];
  /** Write-back: the deferred bytes that trigger a write-back; undefined when writing through. */
  private writebackLimit: number | undefined;
  /** Write-back: which writes go to the backend at once (data), src/disk/writeback.ts. */
  private readonly direct = new DirectWrites();
  /** Write-back: the last write-back's final epoch has not been flushed yet. */
  private unflushedEpoch = false;
  private readonly dirty = new Set<HostTarget>();
  /** What the driver issued so far. */
  readonly counts: IoCounts = { hostWrites: 0, bytesWritten: 0, flushes: 0 };

  private constructor(
    image: Image,
    targets: Partial<Record<HostTarget, IoTarget>>,
    private readonly backingDisk: Qcow2Disk | undefined,
    private readonly backingRaw: BackendReader | undefined,
    /** Whether changes are refused. */
    readonly readOnly: boolean,
    /** The name given at open (info's filename). */
    readonly name: string,
    /** Host writes the open itself made (a writable open of a dirty image repairs it, as QEMU does). */
    readonly openRepair: RepairResult | undefined,
    /** What QEMU prints while opening the image. */
    readonly warnings: readonly string[],
  ) {
    this.image = image;
    this.targets = targets;
    this.readers = [targets.image!.reader, ...(targets.data !== undefined ? [targets.data.reader] : [])];
  }

  /**
   * Opens the qcow2 image on `backend` as QEMU 7.2 opens it (src/open: QEMU's checks in QEMU's
   * order; a writable open clears unknown autoclear bits and repairs a dirty image, and those writes
   * are issued before open returns). Follows the backing chain through `opts.backing` (read-only,
   * at most MAX_CHAIN_DEPTH files) and attaches the external data file. Throws OpenError or
   * Qcow2FormatError for an image QEMU refuses, DiskError for the rest; on failure every backend
   * opened here is closed again, `backend` included.
   */
  static async open(backend: DiskBackend, opts: DiskOpenOptions = {}): Promise<Qcow2Disk> {
    const opened: DiskBackend[] = [backend];
    try {
      return await Qcow2Disk.openAt(backend, opts, 0, opened);
    } catch (e) {
      await closeAll(opened);
      throw e;
    }
  }

  /**
   * Creates a new qcow2 image on `backend` (which must be empty and writable) with qemu-img create's
   * options (src/model/create.ts: the same file QEMU 7.2 creates), flushes it, and opens it for
   * writing. `opts.backing` and `opts.dataFile` resolve the files the new image names, as for open.
   */
  static async create(backend: DiskBackend, options: CreateOptions, opts: DiskOpenOptions & { readonly data?: DiskBackend } = {}): Promise<Qcow2Disk> {
    if (backend.write === undefined || backend.truncate === undefined) throw new DiskError('read-only', 'create needs a writable backend');
    const created = createImage(options);
    await writeHostFileTo(backend, created.image.file);
    if (created.dataFile !== undefined) {
      const data = opts.data ?? (typeof opts.dataFile === 'object' ? opts.dataFile : undefined);
      if (data === undefined) throw new DiskError('data-file', 'the new image has an external data file: pass its backend as `data`');
      await writeHostFileTo(data, created.dataFile);
    }
    const { data, ...rest } = opts;
    return Qcow2Disk.open(backend, { ...rest, ...(data !== undefined ? { dataFile: data } : {}) });
  }

  private static async openAt(backend: DiskBackend, opts: DiskOpenOptions, depth: number, opened: DiskBackend[]): Promise<Qcow2Disk> {
    const readOnly = opts.readOnly === true || backend.write === undefined;
    if (opts.readOnly === false && backend.write === undefined) throw new DiskError('read-only', 'the backend is read-only; open with readOnly: true');
    const cache = opts.cacheBytes ?? DEFAULT_CACHE_BYTES;
    const length = await sizeOf(backend);
    const reader = new BackendReader(backend, length, cache);
    const readers = [reader];
    const opened0 = await compute(readers, () => openImageWithIo(reader, { writable: !readOnly }));
    // The open reads through a view of the reader that keeps the header's pages; with nothing to
    // write, the file is based on the reader itself, so that writes issued at once can hand their
    // pages to it (absorbIssuedWrites) from the first one.
    let image = opened0.io.length === 0 ? { ...opened0.image, file: rebaseHostFile(opened0.image.file, reader) } : opened0.image;
    const refs = await compute(readers, () => headerReferences(image));
    const name = opts.name ?? '';
    const targets: Partial<Record<HostTarget, IoTarget>> = { image: { backend, reader } };

    // The external data file (QEMU refuses to open the image without it).
    if (image.header.version === 3 && (image.header.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n) {
      const spec = opts.dataFile;
      const found = typeof spec === 'function'
        ? refs.dataFile !== undefined ? await resolve(spec, refs.dataFile, { parent: opts.name, kind: 'data-file', depth }) : undefined
        : spec !== undefined ? { backend: spec } : undefined;
      if (found === undefined) {
        throw new DiskError('data-file', refs.dataFile === undefined
          ? 'the image has an external data file but names none'
          : `the image's external data file '${refs.dataFile}' was not supplied (pass dataFile: a backend or a resolver)`);
      }
      opened.push(found.backend);
      if (!readOnly && found.backend.write === undefined) throw new DiskError('read-only', 'the data file backend is read-only');
      const dataReader = new BackendReader(found.backend, await sizeOf(found.backend), cache);
      targets.data = { backend: found.backend, reader: dataReader };
      image = { ...image, dataFile: hostFromReader(dataReader) };
    }

    // The backing chain, read-only.
    let backingDisk: Qcow2Disk | undefined;
    let backingRaw: BackendReader | undefined;
    if (refs.backingFile !== undefined && opts.backing !== 'none') {
      if (opts.backing === undefined) {
        throw new DiskError('backing', `the image has backing file '${refs.backingFile}': pass backing (a resolver, or 'none' to read its clusters as zeros)`);
      }
      if (depth + 1 >= MAX_CHAIN_DEPTH) throw new DiskError('backing', `backing chain longer than ${MAX_CHAIN_DEPTH} files`);
      const found = await resolve(opts.backing, refs.backingFile, { parent: opts.name, kind: 'backing', depth: depth + 1 });
      if (found === undefined) throw new DiskError('backing', `backing file '${refs.backingFile}' was not supplied by the resolver`);
      opened.push(found.backend);
      const fmt = refs.backingFormat ?? (await probeFormat(found.backend));
      let source: BackingSource;
      if (fmt === 'qcow2') {
        backingDisk = await Qcow2Disk.openAt(found.backend, {
          readOnly: true, backing: opts.backing, cacheBytes: cache,
          ...(typeof opts.dataFile === 'function' ? { dataFile: opts.dataFile } : {}),
          ...(found.name !== undefined ? { name: found.name } : {}),
        }, depth + 1, opened);
        source = imageBackingSource(backingDisk.image);
      } else if (fmt === 'raw') {
        backingRaw = new BackendReader(found.backend, await sizeOf(found.backend), cache);
        source = rawReaderBackingSource(backingRaw);
      } else {
        throw new DiskError('backing', `backing file format '${fmt}' is not supported (only qcow2 and raw)`);
      }
      image = { ...image, backing: source };
    }

    if (opts.discardPassthrough === false) image = { ...image, session: { ...image.session, noDiscardPassthrough: true } };
    const disk = new Qcow2Disk(image, targets, backingDisk, backingRaw, readOnly, name, opened0.repair, opened0.warnings);
    if (opts.writeback === true && !readOnly) disk.writebackLimit = Math.max(REBASE_BYTES, opts.writebackBytes ?? DEFAULT_WRITEBACK_BYTES);
    // The writes the open made (cleared autoclear bits, the repair of a dirty image) go out now.
    if (opened0.io.length > 0) await disk.serial(() => disk.commit(image, opened0.io));
    return disk;
  }

  /** The virtual disk size in bytes. */
  get size(): bigint {
    return this.image.header.size;
  }

  /**
   * Files in the open backing chain, this image included: 1 without a backing file (or opened with
   * `backing: 'none'`), 2 with one backing file, and so on. Depths in map()'s extents are below it.
   */
  get chainLength(): number {
    return 1 + (this.backingDisk?.chainLength ?? (this.backingRaw !== undefined ? 1 : 0));
  }

  /** The model's current Image (immutable; for the pure functions of the core: mapImage, checkImage...). */
  get current(): Image {
    return this.image;
  }

  /** `length` bytes of the virtual disk at `offset` (zeros where nothing is allocated). */
  read(offset: bigint, length: number): Promise<Uint8Array> {
    return this.serial(async () => {
      this.usable();
      const out = new Uint8Array(checkRange(this.image, offset, length));
      await this.readTo(offset, out);
      return out;
    });
  }

  /** Reads `target.length` bytes of the virtual disk at `offset` into `target`. */
  readInto(offset: bigint, target: Uint8Array): Promise<void> {
    return this.serial(async () => {
      this.usable();
      checkRange(this.image, offset, target.length);
      await this.readTo(offset, target);
    });
  }

  /** Writes `data` at `offset` (QEMU's write path: allocation, copy-on-write, subclusters). */
  write(offset: bigint, data: Uint8Array): Promise<void> {
    return this.change({ kind: 'write', offset, data });
  }

  /** Writes `data` compressed (whole clusters into unallocated ones, as `qemu-io write -c`). */
  writeCompressed(offset: bigint, data: Uint8Array): Promise<void> {
    return this.change({ kind: 'writeCompressed', offset, data });
  }

  /**
   * Zeroes [offset, offset + length); `unmap` lets the image free the clusters (`write -z -u`).
   * `noFallback` (BDRV_REQ_NO_FALLBACK, NBD's FAST_ZERO) makes it fail with a ModelError (-ENOTSUP)
   * instead of writing zeros where the image cannot zero by metadata alone.
   */
  writeZeroes(offset: bigint, length: bigint, opts: { readonly unmap?: boolean; readonly noFallback?: boolean } = {}): Promise<void> {
    return this.change({ kind: 'writeZeroes', offset, length, unmap: opts.unmap === true, ...(opts.noFallback === true ? { noFallback: true } : {}) });
  }

  /** Discards [offset, offset + length) (what reads return afterwards: src/model/ops.ts DiscardOp). */
  discard(offset: bigint, length: bigint): Promise<void> {
    return this.change({ kind: 'discard', offset, length });
  }

  /** Changes the virtual size (`qemu-img resize`; smaller sizes as with `--shrink`). */
  resize(size: bigint): Promise<void> {
    return this.change({ kind: 'resize', size });
  }

  /** Creates internal snapshot `name`, dated now unless `date` is given (seconds since the epoch). */
  snapshotCreate(name: string, opts: { readonly dateSec?: number; readonly dateNsec?: number; readonly vmClockNsec?: bigint } = {}): Promise<void> {
    const now = Date.now();
    return this.change({
      kind: 'snapshotCreate', name,
      dateSec: opts.dateSec ?? Math.floor(now / 1000),
      dateNsec: opts.dateNsec ?? (opts.dateSec === undefined ? (now % 1000) * 1_000_000 : 0),
      ...(opts.vmClockNsec !== undefined ? { vmClockNsec: opts.vmClockNsec } : {}),
    });
  }

  /** Reverts the disk to snapshot `name` (`qemu-img snapshot -a`). */
  snapshotApply(name: string): Promise<void> {
    return this.change({ kind: 'snapshotApply', name });
  }

  /** Deletes snapshot `name` (`qemu-img snapshot -d`). */
  snapshotDelete(name: string): Promise<void> {
    return this.change({ kind: 'snapshotDelete', name });
  }

  /**
   * Makes every completed write durable: the model's flush (QEMU writes its caches) and a backend
   * flush of every file written since the last one. On a read-only disk it does nothing.
   */
  flush(): Promise<void> {
    if (this.readOnly) return this.serial(async () => this.usable());
    return this.change({ kind: 'flush' });
  }

  /** `qemu-img info` of the image (filename: the name given at open). */
  info(): Promise<InfoResult> {
    return this.serial(async () => {
      this.usable();
      return compute(this.allReaders(), () => qcow2ImageInfo(this.image, { filename: this.name }));
    });
  }

  /**
   * `qemu-img map`'s extents of [offset, offset + length) (default: the whole disk). `opts` tells the
   * model how the image's file is stored (mapImage's MapOptions: QEMU reports the holes of a sparse,
   * metadata-preallocated file as zeros); without it the file counts as fully allocated.
   */
  map(offset = 0n, length?: bigint, opts: MapOptions = {}): Promise<MapExtent[]> {
    return this.serial(async () => {
      this.usable();
      const len = length ?? (this.image.header.size & ~511n) - offset;
      return compute(this.allReaders(), () => mapImage(this.image, offset, len, opts));
    });
  }

  /**
   * Whether QEMU, opening this image now with its file stored as `host` says, would treat it as
   * metadata-preallocated (qcow2_detect_metadata_preallocation; see MapOptions.metadataPreallocated).
   */
  metadataPreallocation(host: HostAllocation): Promise<boolean> {
    return this.serial(async () => {
      this.usable();
      return compute(this.allReaders(), () => detectMetadataPreallocation(this.image, host));
    });
  }

  /** `qemu-img check` of the image as it is now (no repair). */
  check(): Promise<CheckResult> {
    return this.serial(async () => {
      this.usable();
      return compute(this.allReaders(), () => checkImage(this.image));
    });
  }

  /** `qemu-img check -r leaks|all`: repairs the image and issues the repair's writes. */
  repair(mode: RepairMode): Promise<RepairResult> {
    return this.serial(async () => {
      this.writable();
      const r = await compute(this.allReaders(), () => repairImage(this.image, mode));
      await this.commit(r.image, r.io);
      return r;
    });
  }

  /**
   * Closes the image as QEMU does (caches written; with lazy refcounts, the dirty bit this session
   * set is cleared after a flush), flushes, and closes every backend the open opened. After a
   * backend failure nothing more is written. Idempotent; later calls other than close throw
   * DiskError 'closed'.
   */
  close(): Promise<void> {
    return this.serial(async () => {
      if (this.state === 'closed') return;
      try {
        if (this.state === 'open' && !this.readOnly) {
          const closed = await compute(this.allReaders(), () => closeImage(this.image));
          await this.commit(closed.image, closed.io);
          await this.writeBack(true);
        }
      } finally {
        this.state = 'closed';
        await this.closeBackends();
      }
    });
  }

  /** Bytes the driver holds in its caches now (all files of the chain). */
  get cachedBytes(): number {
    return this.allReaders().reduce((n, r) => n + r.cachedBytes, 0);
  }

  // ------------------------------------------------------------------------------------------

  /** Runs `fn` after every earlier call has settled. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private usable(): void {
    if (this.state === 'closed') throw new DiskError('closed', 'the disk is closed');
    if (this.state === 'failed') throw new DiskError('failed', `an earlier backend failure stopped the disk: ${this.failure!.message}`, { cause: this.failure });
  }

  private writable(): void {
    this.usable();
    if (this.readOnly) throw new DiskError('read-only', 'the disk was opened read-only');
  }

  /** A model op: computed (fetching what it reads), then its host I/O issued; a refusal is thrown after what it committed is issued. */
  private change(op: Op): Promise<void> {
    return this.serial(async () => {
      this.writable();
      const wasDirty = (this.image.header.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n;
      const r = await compute(this.allReaders(), () => step(this.image, op));
      await this.commit(r.image, r.io);
      // A flush makes every earlier change durable: with write-back, that is now.
      if (op.kind === 'flush') await this.writeBack(true);
      // Crash safety: with lazy refcounts, every later change leaves refcounts behind the L2
      // entries on the strength of the dirty bit this change set (qcow2_mark_dirty flushes it).
      // Write-back orders writes only within a change and per page, so the bit is written out now,
      // and the next write-back's leading flush puts it on disk before anything that relies on it.
      else if (!wasDirty && (r.image.header.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n) await this.writeBack(false);
      if (!r.ok) throw r.error;
    });
  }

  /**
   * Issues `io` and makes `image` current. A backend failure stops the disk (state 'failed'): the
   * model's image no longer says what the file holds.
   */
  private async commit(image: Image, io: readonly HostIO[]): Promise<void> {
    if (io.length > 0) {
      if (this.writebackLimit !== undefined) {
        // Crash safety: I/O that begins with a barrier orders everything before it — closeImage
        // flushes before it clears the dirty bit (qcow2_mark_clean), which must not reach the disk
        // before the refcounts earlier changes left behind. Write-back orders writes only within a
        // change and per page, so what is deferred so far is written out first, and the next
        // write-back's leading flush keeps it before this change's writes.
        if (io[0]!.kind === 'flush' && this.deferred.length > 0) await this.writeBack(false);
        const { now, later } = this.direct.split(io);
        if (now.length > 0) image = await this.issueNow(image, now);
        if (later.some((op) => op.kind !== 'flush')) this.deferred.push(later);
        for (const op of later) {
          if (op.kind === 'write') this.pendingBytes += op.bytes.length;
          // A zero or punch is pages the model holds (or hides) too; a truncate moves the base.
          else if (op.kind === 'zero' || op.kind === 'discard') this.pendingBytes += op.length < 1n << 20n ? Number(op.length) : 1 << 20;
          else if (op.kind === 'truncate') this.pendingBytes += REBASE_BYTES;
        }
      } else {
        await this.issue(io);
        for (const op of io) if (op.kind === 'write') this.pendingBytes += op.bytes.length;
        if (io.some((op) => op.kind !== 'write' && op.kind !== 'flush')) this.pendingBytes += REBASE_BYTES;
      }
    }
    this.image = image;
    if (this.writebackLimit !== undefined) {
      if (this.pendingBytes >= this.writebackLimit) await this.writeBack(false);
    } else if (this.pendingBytes >= REBASE_BYTES) this.rebase();
  }

  /**
   * Issues `io` to the backends. A backend failure stops the disk (state 'failed'): the model's
   * image no longer says what the file holds.
   */
  private async issue(io: readonly HostIO[]): Promise<void> {
    try {
      await applyIo(io, this.targets, this.counts, this.dirty);
    } catch (e) {
      const err = isDiskError(e) ? e : new DiskError('internal', `issuing host I/O failed: ${(e as Error).message}`, { cause: e });
      this.state = 'failed';
      this.failure = err;
      throw err;
    }
  }

  /**
   * Write-back: issues `writes` (DirectWrites.split's `now`) at once — after a flush of the last
   * write-back's final epoch, which must reach the disk before anything issued after it — and
   * returns `image` with the written pages handed to the backends (absorbIssuedWrites), so that they
   * cost no memory until the next write-back. What stays in the model's pages is counted.
   */
  private async issueNow(image: Image, writes: readonly Extract<HostIO, { kind: 'write' }>[]): Promise<Image> {
    if (this.unflushedEpoch) {
      await this.issue([{ kind: 'flush' }]);
      this.unflushedEpoch = false;
    }
    await this.issue(writes);
    const onImage = writes.filter((w) => hostTargetOf(w) === 'image');
    const onData = writes.filter((w) => hostTargetOf(w) === 'data');
    const file = absorbIssuedWrites(image.file, this.targets.image!.reader, onImage);
    const dataFile = image.dataFile !== undefined && this.targets.data !== undefined ? absorbIssuedWrites(image.dataFile, this.targets.data.reader, onData) : image.dataFile;
    // What stays in the model's pages: partial pages, and all of a write its file could not absorb
    // (no base on that reader).
    for (const w of writes) this.pendingBytes += overlayBytesIn(hostTargetOf(w) === 'image' ? file : dataFile!, w.offset, w.bytes.length);
    return { ...image, file, ...(dataFile !== undefined ? { dataFile } : {}) };
  }

  /**
   * Write-back: issues the deferred I/O in epochs (src/disk/writeback.ts), after a flush of what
   * an earlier write-back left unflushed, then drops the model's pages (the backends hold them);
   * with `durable`, flushes the last epoch too. Nothing to do when writing through, except the
   * durable flush (already issued by the change itself).
   */
  private async writeBack(durable: boolean): Promise<void> {
    if (this.writebackLimit === undefined) return;
    if (this.deferred.length > 0) {
      const epochs = scheduleEpochs(this.deferred);
      this.deferred = [];
      const io: HostIO[] = [{ kind: 'flush' }];
      epochs.forEach((e, i) => {
        if (i > 0) io.push({ kind: 'flush' });
        for (const x of e) io.push(x);
      });
      await this.issue(io);
      this.direct.reset();
      this.unflushedEpoch = true;
      this.rebase();
    }
    if (durable) {
      await this.issue([{ kind: 'flush' }]);
      this.unflushedEpoch = false;
    }
  }

  /**
   * Drops the model's in-memory pages: the backends now hold exactly what the model's files hold
   * (every write issued), so the files become views of the backends again.
   */
  private rebase(): void {
    const img = this.image;
    const file = rebaseChecked(img.file, this.targets.image!.reader);
    const dataFile = img.dataFile !== undefined && this.targets.data !== undefined ? rebaseChecked(img.dataFile, this.targets.data.reader) : img.dataFile;
    this.image = { ...img, file, ...(dataFile !== undefined ? { dataFile } : {}) };
    this.pendingBytes = 0;
  }

  /** Reads guest bytes into `out` in pieces of at most READ_PIECE bytes. */
  private async readTo(offset: bigint, out: Uint8Array): Promise<void> {
    const readers = this.allReaders();
    for (let pos = 0; pos < out.length; pos += READ_PIECE) {
      const n = Math.min(READ_PIECE, out.length - pos);
      const img = this.image;
      await compute(readers, () => readGuestInto(img, offset + BigInt(pos), n, out, pos));
    }
  }

  /** The readers of every file of the chain (a ReadPending may come from any of them). */
  private allReaders(): BackendReader[] {
    const below = this.backingDisk?.allReaders() ?? (this.backingRaw !== undefined ? [this.backingRaw] : []);
    return [...this.readers, ...below];
  }

  private async closeBackends(): Promise<void> {
    const errors: unknown[] = [];
    for (const t of [this.targets.image, this.targets.data]) {
      if (t === undefined) continue;
      try {
        await t.backend.close?.();
      } catch (e) {
        errors.push(e);
      }
    }
    if (this.backingDisk !== undefined) await this.backingDisk.close().catch((e: unknown) => errors.push(e));
    if (this.backingRaw !== undefined) await Promise.resolve(this.backingRaw.backend.close?.()).catch((e: unknown) => errors.push(e));
    if (errors.length > 0) throw backendError('close', 0n, 0, errors[0]);
  }
}

/**
 * Runs the pure `fn` until it completes without a ReadPending, fetching what each pass missed; then
 * lets every reader trim its cache. Other errors propagate unchanged.
 */
async function compute<T>(readers: readonly BackendReader[], fn: () => T): Promise<T> {
  try {
    for (let pass = 0; pass < MAX_PASSES; pass++) {
      try {
        return fn();
      } catch (e) {
        if (!(e instanceof ReadPending)) throw e;
        await e.reader.fetch(e.offset, e.length, e.ahead);
      }
    }
    throw new DiskError('internal', `an operation still missed bytes after ${MAX_PASSES} fetches`);
  } finally {
    for (const r of readers) r.endOperation();
  }
}

/** The guest read range checked: `length` as a number of bytes inside the disk, else DiskError 'range'. */
function checkRange(image: Image, offset: bigint, length: number): number {
  if (!Number.isSafeInteger(length) || length < 0 || offset < 0n || offset + BigInt(length) > image.header.size) {
    throw new DiskError('range', `read of ${length} byte(s) at ${offset} is outside the ${image.header.size}-byte disk`);
  }
  return length;
}

function rebaseChecked(file: HostFile, reader: BackendReader): HostFile {
  if (file.length !== reader.length) {
    throw new DiskError('internal', `the model's file is ${file.length} bytes but the backend ${reader.length}`);
  }
  return rebaseHostFile(file, reader);
}

async function sizeOf(backend: DiskBackend): Promise<bigint> {
  try {
    const n = await backend.size();
    if (typeof n !== 'bigint' || n < 0n) throw new TypeError(`size() returned ${String(n)}, not a bigint >= 0`);
    return n;
  } catch (e) {
    throw isDiskError(e) ? e : backendError('size', 0n, 0, e);
  }
}

/** 'qcow2' when the backend starts with the qcow2 magic, else 'raw' (QEMU's probe for the two formats). */
async function probeFormat(backend: DiskBackend): Promise<string> {
  const n = await sizeOf(backend);
  if (n < 4n) return 'raw';
  const head = new Uint8Array(4);
  try {
    await backend.read(0n, head);
  } catch (e) {
    throw backendError('read', 0n, 4, e);
  }
  return HEADER_MAGIC.every((m, i) => head[i] === m) ? 'qcow2' : 'raw';
}

async function resolve(resolver: FileResolver, name: string, from: Parameters<FileResolver>[1]): Promise<ResolvedFile | undefined> {
  let r: DiskBackend | ResolvedFile | undefined;
  try {
    r = await resolver(name, from);
  } catch (e) {
    throw new DiskError(from.kind === 'backing' ? 'backing' : 'data-file', `opening ${from.kind} file '${name}' failed: ${(e as Error).message}`, { cause: e });
  }
  if (r === undefined) return undefined;
  return 'backend' in r ? r : { backend: r };
}

async function closeAll(backends: readonly DiskBackend[]): Promise<void> {
  for (const b of backends) await Promise.resolve(b.close?.()).catch(() => undefined);
}
