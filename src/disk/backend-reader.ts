/**
 * The bridge between the synchronous model and an asynchronous backend: a HostReader that serves
 * reads from a bounded cache of the backend's chunks and, on a miss, throws ReadPending instead of
 * blocking. The driver catches it, fetches the chunks, and runs the (pure) model operation again —
 * so the model stays synchronous and free of I/O, and every decision still comes from it.
 */
import type { HostReader } from '../model/index.ts';
import type { DiskBackend } from './backend.ts';
import { DiskError, backendError } from './errors.ts';

/**
 * Thrown by BackendReader when bytes it must return are not cached yet. Never escapes the driver:
 * it fetches [offset, offset + length) and runs the operation again. Holds no partial state — the
 * model is pure, so abandoning an operation half way is free.
 */
export class ReadPending extends Error {
  override readonly name = 'ReadPending';
  constructor(
    readonly reader: BackendReader,
    readonly offset: bigint,
    readonly length: number,
    /** Fetch the whole aligned READ_AHEAD window around the range (a metadata read), not just the range. */
    readonly ahead: boolean,
  ) {
    // Thrown and caught once per cache miss: no stack trace to capture (V8 honours the limit at
    // construction; other engines ignore the property).
    const limit = (Error as { stackTraceLimit?: number }).stackTraceLimit;
    (Error as { stackTraceLimit?: number }).stackTraceLimit = 0;
    super('bytes of the backend are not cached yet');
    (Error as { stackTraceLimit?: number }).stackTraceLimit = limit;
  }
}

/** Cached chunks are this size, aligned: the model's page, so a 4 KiB guest read fetches 4 KiB. */
export const CHUNK_SIZE = 4096;
const CHUNK_BITS = 12n;

/**
 * A miss of a metadata read (the model's page reads, `read`) fetches the aligned window of this many
 * bytes around it: a typical cluster, so one fetch brings a whole L2 table or refcount block. Data
 * reads (`readInto`, the model's host-contiguous runs) fetch exactly the pages they need.
 */
export const READ_AHEAD = 64 * 1024;

/** The most bytes one backend read call asks for (a long missing range is read in pieces). */
const MAX_FETCH = 8 * 1024 * 1024;

/**
 * A HostReader over a DiskBackend whose bytes are fetched ahead by the driver. `length` follows the
 * backend as the driver writes it (applyWrite/applyZero/applyTruncate keep the cache equal to the
 * backend's content). Memory: at most `capacity` bytes of chunks between operations; chunks fetched
 * during an operation are pinned until `endOperation`, so an operation whose working set exceeds
 * the capacity still completes (its working set is bounded by the request size and the metadata it
 * touches).
 */
export class BackendReader implements HostReader {
  /** Chunk index → CHUNK_SIZE bytes (zeros past the backend's end). Map order is LRU order. */
  private readonly chunks = new Map<number, Uint8Array>();
  private readonly pinned = new Set<number>();
  /** Bytes fetched from the backend so far (for tests and cost reports). */
  bytesFetched = 0;

  constructor(
    readonly backend: DiskBackend,
    /** Length of the backend in bytes, as the driver's writes left it. */
    public length: bigint,
    /** Bytes of chunks kept between operations. */
    readonly capacity: number,
  ) {}

  /** See HostReader: a fresh copy of `count` bytes at `offset`, or ReadPending. */
  read(offset: bigint, count: number): Uint8Array {
    const out = new Uint8Array(count);
    this.copy(offset, out, 0, count, true);
    return out;
  }

  /**
   * See HostReader.readInto. A backend with readSync is read straight into `target` (guest data: no
   * copy into the cache, no second pass of the model); otherwise throws ReadPending (nothing stored)
   * when a chunk of the range is not cached.
   */
  readInto(offset: bigint, target: Uint8Array, pos: number, count: number): void {
    if (this.backend.readSync === undefined) {
      this.copy(offset, target, pos, count, false);
      return;
    }
    if (count === 0) return;
    this.checkRange(offset, count);
    // The cache always equals the backend (applyWrite/applyZero/applyTruncate), so either may answer.
    try {
      this.backend.readSync(offset, target.subarray(pos, pos + count));
    } catch (e) {
      throw backendError('read', offset, count, e);
    }
    this.bytesFetched += count;
  }

  private copy(offset: bigint, target: Uint8Array, pos: number, count: number, ahead: boolean): void {
    if (count === 0) return;
    this.checkRange(offset, count);
    const first = Number(offset >> CHUNK_BITS);
    const last = Number((offset + BigInt(count) - 1n) >> CHUNK_BITS);
    for (let c = first; c <= last; c++) {
      if (!this.chunks.has(c)) throw new ReadPending(this, offset, count, ahead);
    }
    let at = Number(offset - (BigInt(first) << CHUNK_BITS));
    let done = 0;
    for (let c = first; c <= last; c++) {
      const chunk = this.touch(c);
      const n = Math.min(CHUNK_SIZE - at, count - done);
      target.set(chunk.subarray(at, at + n), pos + done);
      done += n;
      at = 0;
    }
  }

  /** Throws DiskError('internal') unless [offset, offset + count) lies inside the backend. */
  private checkRange(offset: bigint, count: number): void {
    if (offset < 0n || offset + BigInt(count) > this.length) {
      throw new DiskError('internal', `read of ${count} byte(s) at ${offset} past the end of a ${this.length}-byte backend`);
    }
  }

  /**
   * Reads the missing chunks of [offset, offset + count) — with `ahead`, of the READ_AHEAD window
   * around it — from the backend (one call per contiguous run, at most MAX_FETCH bytes each) and
   * pins them until endOperation. Throws DiskError('io') when the backend fails.
   */
  async fetch(offset: bigint, count: number, ahead = false): Promise<void> {
    let from = offset;
    let to = offset + BigInt(Math.max(count, 1));
    if (ahead) {
      const w = BigInt(READ_AHEAD);
      from = (from / w) * w;
      to = ((to + w - 1n) / w) * w;
      if (to > this.length) to = this.length > offset ? this.length : offset + 1n;
    }
    const first = Number(from >> CHUNK_BITS);
    const last = Number((to - 1n) >> CHUNK_BITS);
    let c = first;
    while (c <= last) {
      if (this.chunks.has(c)) {
        this.pinned.add(c);
        c++;
        continue;
      }
      let end = c + 1;
      while (end <= last && !this.chunks.has(end) && (end - c) * CHUNK_SIZE < MAX_FETCH) end++;
      const start = BigInt(c) << CHUNK_BITS;
      const avail = this.length - start;
      const want = Math.min((end - c) * CHUNK_SIZE, avail > 0n ? Number(avail < BigInt(MAX_FETCH) ? avail : BigInt(MAX_FETCH)) : 0);
      const buf = new Uint8Array((end - c) * CHUNK_SIZE);
      if (want > 0) {
        try {
          await this.backend.read(start, buf.subarray(0, want));
        } catch (e) {
          throw backendError('read', start, want, e);
        }
        this.bytesFetched += want;
      }
      for (let k = c; k < end; k++) {
        const i = (k - c) * CHUNK_SIZE;
        this.chunks.set(k, buf.subarray(i, i + CHUNK_SIZE));
        this.pinned.add(k);
      }
      c = end;
    }
  }

  /** Unpins what the finished operation fetched and trims the cache to its capacity (oldest first). */
  endOperation(): void {
    this.pinned.clear();
    const max = Math.max(1, Math.floor(this.capacity / CHUNK_SIZE));
    for (const k of this.chunks.keys()) {
      if (this.chunks.size <= max) break;
      this.chunks.delete(k);
    }
  }

  /** Bytes of chunks held now. */
  get cachedBytes(): number {
    return this.chunks.size * CHUNK_SIZE;
  }

  /** The backend now holds `data` at `offset` (a completed write): cached chunks follow, the length grows. */
  applyWrite(offset: bigint, data: Uint8Array): void {
    this.forCached(offset, data.length, (chunk, at, from, n) => chunk.set(data.subarray(from, from + n), at));
    const end = offset + BigInt(data.length);
    if (end > this.length) this.length = end;
  }

  /** The backend now reads zeros at [offset, offset + count); with `extend` the length grows to its end. */
  applyZero(offset: bigint, count: bigint, extend: boolean): void {
    const end = offset + count;
    const cachedEnd = this.length > end ? end : this.length;
    if (cachedEnd > offset) this.forCachedRange(offset, cachedEnd, (chunk, at, _from, n) => chunk.fill(0, at, at + n));
    if (extend && end > this.length) this.length = end;
  }

  /** The backend is now `length` bytes long: chunks past it go, the bytes past it in the last one become zeros. */
  applyTruncate(length: bigint): void {
    if (length < this.length) this.applyZero(length, this.length - length, false);
    this.length = length;
  }

  /** Forgets what is cached of [offset, offset + count) (its content on the backend is unknown). */
  forget(offset: bigint, count: number): void {
    const first = Number(offset >> CHUNK_BITS);
    const last = Number((offset + BigInt(Math.max(count, 1)) - 1n) >> CHUNK_BITS);
    for (let c = first; c <= last; c++) this.chunks.delete(c);
  }

  /** The chunk `c` (cached), moved to the young end of the LRU order. */
  private touch(c: number): Uint8Array {
    const chunk = this.chunks.get(c)!;
    this.chunks.delete(c);
    this.chunks.set(c, chunk);
    return chunk;
  }

  private forCached(offset: bigint, count: number, fn: (chunk: Uint8Array, at: number, from: number, n: number) => void): void {
    if (count > 0) this.forCachedRange(offset, offset + BigInt(count), fn);
  }

  /** Calls `fn` for each cached chunk's part of [start, end): chunk, position in it, position in the range, bytes. */
  private forCachedRange(start: bigint, end: bigint, fn: (chunk: Uint8Array, at: number, from: number, n: number) => void): void {
    // Visit only cached chunks: a range may be terabytes long (a zeroed preallocated area).
    const first = start >> CHUNK_BITS;
    const last = (end - 1n) >> CHUNK_BITS;
    const visit = (c: number): void => {
      const chunkStart = BigInt(c) << CHUNK_BITS;
      const a = start > chunkStart ? start : chunkStart;
      const b = end < chunkStart + BigInt(CHUNK_SIZE) ? end : chunkStart + BigInt(CHUNK_SIZE);
      fn(this.chunks.get(c)!, Number(a - chunkStart), Number(a - start), Number(b - a));
    };
    if (last - first + 1n <= BigInt(this.chunks.size)) {
      for (let c = Number(first); c <= Number(last); c++) if (this.chunks.has(c)) visit(c);
    } else {
      for (const c of [...this.chunks.keys()]) if (c >= Number(first) && c <= Number(last)) visit(c);
    }
  }
}
