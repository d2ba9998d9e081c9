/**
 * The fast-check commands of the model property: one class per op kind, each running the op on the
 * model and the oracle and checking the result (model-checks.ts).
 */
import { applyHostIO } from '../../src/model/host-file.ts';
import type { Image } from '../../src/model/image.ts';
import { type Op } from '../../src/model/ops.ts';
import { readGuest } from '../../src/model/read.ts';
import { step } from '../../src/model/step.ts';
import { RawDiskError } from '../../src/oracle/raw-disk.ts';
import { MiB, pattern, type Geo, fmt } from './model-configs.ts';
import { type Real, type Model, type Cmd, notePages, show, sameFile, replayDiff, compareReads, checkAround, isDirtyHeader, type DirtyRule, checkHeaderChange, stepChecked, expectRefusedUnchanged, expectOk, count, acceptRefusal } from './model-checks.ts';
import { compressedAt, normalAt, writeLinks, zeroMayWrite, cheapResizeSize, type ResizeTarget, resolveResize, zeroFillFails, growDirtyRule, expectedResizeRefusal, type ExpectedRefusal, liveRefblocks, ENOTSUP_ERRNO, dataFileSnapshotRefusal, compressedDirtyRule } from './model-qemu-rules.ts';

/** The current virtual size: the oracle's (the model's must be equal after every step, stepChecked). */
export function sizeOf(model: Model): bigint {
  return model.disk.size;
}

/** See above: where a range generated against the initial disk lands on a disk of `size` bytes. */
export function place(g: Geo, size: bigint, offset: bigint, length: bigint, fromEnd: boolean): { offset: bigint; length: bigint } {
  if (size === g.size) return { offset, length };
  const cs = g.cs;
  const clusters = (size + cs - 1n) / cs;
  const c = offset / cs;
  const w = offset % cs;
  let o = fromEnd ? (clusters - 1n - (g.clusters - 1n - c)) * cs + w : offset < size ? offset : (c % clusters) * cs + w;
  if (o >= size) o = size - 1n;
  if (o < 0n) o = 0n;
  if (offset + length === g.size && !fromEnd && size - o > length) o = size - length;
  const n = offset + length === g.size || length > size - o ? size - o : length;
  return { offset: o, length: n };
}

/** ` at OFFSET+LENGTH` when the placed range differs from the generated one (for messages). */
export function placedNote(offset: bigint, length: bigint, p: { offset: bigint; length: bigint }): string {
  return p.offset === offset && p.length === length ? '' : ` at ${fmt(p.offset)}+${fmt(p.length)}`;
}

export class WriteCmd implements Cmd {
  constructor(readonly offset: bigint, readonly length: number, readonly seed: number, readonly fromEnd = false) {}
  check(m: Readonly<Model>): boolean {
    return m.corrupt !== true;
  }
  run(model: Model, real: Real): void {
    const p = place(model.geo, sizeOf(model), this.offset, BigInt(this.length), this.fromEnd);
    const what = `${this}${placedNote(this.offset, BigInt(this.length), p)}`;
    const op: Op = { kind: 'write', offset: p.offset, data: pattern(p.offset, Number(p.length), this.seed) };
    const prev = real.image;
    const links = writeLinks(prev, p.offset, p.length);
    noteWrite(model, real, prev, p, links);
    expectOk(stepChecked(model, real, op, what, undefined, links ? 'set' : 'keep'), what);
    real.touched.push(p);
    checkAround(model, real, p.offset, p.length, what);
  }
  toString(): string {
    return `Write(${fmt(this.offset)}, ${this.length}, seed ${this.seed}${this.fromEnd ? ', from end' : ''})`;
  }
}

/** Coverage counts of a write_zeroes or discard about to run over data-file clusters holding data. */
export function noteZeroOrDiscard(model: Model, real: Real, p: { offset: bigint; length: bigint }, kind: 'zero' | 'zero, unmap' | 'discard'): void {
  const g = model.geo;
  if (!g.dataFile || p.length === 0n) return;
  const end = p.offset + p.length;
  // Discard acts on whole clusters only: look at the first one inside the range; zeroes at both ends.
  const firstWhole = ((p.offset + g.cs - 1n) / g.cs) * g.cs;
  const spots = kind === 'discard' ? (firstWhole + g.cs <= end || (firstWhole < end && end === sizeOf(model)) ? [firstWhole] : []) : [p.offset, end - 1n];
  if (!spots.some((o) => normalAt(real.image, o) !== undefined)) return;
  count(real, `data file (${real.cfg.dataFile}): ${kind} over a data cluster`);
}

/** Coverage counts of a guest write about to run (data-file and lazy-refcounts cases). */
export function noteWrite(model: Model, real: Real, img: Image, p: { offset: bigint; length: bigint }, links: boolean): void {
  const g = model.geo;
  if (p.length === 0n) return;
  if (g.lazy) {
    if (!isDirtyHeader(img.header)) count(real, links ? 'lazy: allocating write on a clean image' : 'lazy: in-place write on a clean image');
    if (links && model.disk.snapshotNames.length > 0) count(real, 'lazy: allocating write with snapshots');
  }
  if (!g.dataFile || !links) return;
  const partial = (o: bigint): boolean => o % g.cs !== 0n && o < sizeOf(model);
  const end = p.offset + p.length;
  for (const [edge, at] of [[p.offset, p.offset], [end, end - 1n]] as const) {
    if (!partial(edge)) continue;
    const n = normalAt(img, at);
    if (n === undefined) count(real, `data file: COW into a new cluster${real.backing !== undefined ? ' over a backing file' : ''}`);
    else if (!n.copied) count(real, 'data file: COW of a cluster not COPIED');
    else if (g.extendedL2) count(real, 'data file: write into unallocated subclusters');
  }
}

export class WriteZeroesCmd implements Cmd {
  constructor(readonly offset: bigint, readonly length: bigint, readonly unmap: boolean, readonly fromEnd = false) {}
  check(m: Readonly<Model>): boolean {
    return m.corrupt !== true;
  }
  run(model: Model, real: Real): void {
    const size = sizeOf(model);
    const p = place(model.geo, size, this.offset, this.length, this.fromEnd);
    // The oracle's one known difference (src/oracle/raw-disk.ts): with extended L2, a write_zeroes of
    // exactly the last, partial subcluster [roundDown(size, sc), size) of a compressed last cluster
    // (not starting at the cluster's start) makes QEMU write explicit zeros (zero_l2_subclusters
    // cannot zero part of a compressed cluster: -ENOTSUP, the block layer's fallback), which keep the
    // bytes past the end in that subcluster; the oracle, which has no allocation state, zeroes them.
    // Such a range is widened by one subcluster to the left: the first piece then turns the compressed
    // cluster into a normal one (explicit zeros) and the last piece gets a zero flag, as the oracle says.
    const g = model.geo;
    const lastPiece = (size / g.sc) * g.sc;
    if (g.extendedL2 && size % g.sc !== 0n && lastPiece % g.cs !== 0n && p.offset === lastPiece && p.offset + p.length === size && compressedAt(real.image, lastPiece)) {
      p.offset -= g.sc;
      p.length += g.sc;
      count(real, 'write_zeroes widened: last partial subcluster of a compressed cluster');
    }
    const what = `${this}${placedNote(this.offset, this.length, p)}`;
    const op: Op = { kind: 'writeZeroes', offset: p.offset, length: p.length, unmap: this.unmap };
    noteZeroOrDiscard(model, real, p, this.unmap ? 'zero, unmap' : 'zero');
    const dirty: DirtyRule = zeroMayWrite(g, size, p.offset, p.length) ? 'may-set' : 'keep';
    expectOk(stepChecked(model, real, op, what, undefined, dirty), what);
    real.touched.push(p);
    checkAround(model, real, p.offset, p.length, what);
  }
  toString(): string {
    return `WriteZeroes(${fmt(this.offset)}, ${fmt(this.length)}${this.unmap ? ', unmap' : ''}${this.fromEnd ? ', from end' : ''})`;
  }
}

export class DiscardCmd implements Cmd {
  constructor(readonly offset: bigint, readonly length: bigint, readonly fromEnd = false) {}
  check(m: Readonly<Model>): boolean {
    return m.corrupt !== true;
  }
  run(model: Model, real: Real): void {
    const p = place(model.geo, sizeOf(model), this.offset, this.length, this.fromEnd);
    const what = `${this}${placedNote(this.offset, this.length, p)}`;
    const op: Op = { kind: 'discard', offset: p.offset, length: p.length };
    noteZeroOrDiscard(model, real, p, 'discard');
    expectOk(stepChecked(model, real, op, what), what);
    real.touched.push(p);
    checkAround(model, real, p.offset, p.length, what);
  }
  toString(): string {
    return `Discard(${fmt(this.offset)}, ${fmt(this.length)}${this.fromEnd ? ', from end' : ''})`;
  }
}

export class FlushCmd implements Cmd {
  check(m: Readonly<Model>): boolean {
    return m.corrupt !== true;
  }
  run(model: Model, real: Real): void {
    const before = real.image;
    const r = stepChecked(model, real, { kind: 'flush' }, this.toString());
    expectOk(r, this.toString());
    if (r.ok && r.io.some((o) => o.kind !== 'flush')) throw new Error(`Flush: io has host writes: ${r.io.map((o) => o.kind).join(', ')}`);
    if (sameFile(before.file, real.image.file) !== undefined) throw new Error('Flush: the file changed');
    if (before.dataFile !== undefined && sameFile(before.dataFile, real.image.dataFile!) !== undefined) throw new Error('Flush: the data file changed');
  }
  toString(): string {
    return 'Flush';
  }
}

// ---- resize -----------------------------------------------------------------------------------

/**
 * `qemu-img resize [--shrink]` to a target relative to the size when it runs (ResizeTarget). Valid
 * sizes must succeed: afterwards the model's size is the new one and reads equal the oracle's around
 * the old and the new end and on the whole disk (sampled when large). QEMU's refusals (computed here
 * from QEMU's rules: size 0 / negative / past the maximum / not a multiple of 512, a version 2 image
 * with snapshots, an L1 table over 32 MiB, a zero-fill over a backing file version 2 or a compressed
 * extended-L2 cluster cannot do) must be refused with QEMU's message and change no read.
 */
export class ResizeCmd implements Cmd {
  constructor(readonly target: ResizeTarget) {}
  check(m: Readonly<Model>): boolean {
    return m.corrupt !== true;
  }
  run(model: Model, real: Real): void {
    const from = sizeOf(model);
    const g = model.geo;
    const to = resolveResize(this.target, g, model.disk.backing?.size, from);
    const what = `${this} (${fmt(from)} → ${fmt(to)})`;
    const prev = real.image;
    const expected = expectedResizeRefusal(model, prev, from, to);
    const refblocks = liveRefblocks(prev);
    const op: Op = { kind: 'resize', size: to };
    const r = stepChecked(model, real, op, what, expected, growDirtyRule(model, prev, from, to));
    if (expected !== undefined) {
      acceptRefusal(model, real, prev, op, r, expected, what);
      count(real, `resize refused: ${expected.label}`);
      return;
    }
    expectOk(r, what);
    count(real, to > from ? 'resize grow' : to < from ? 'resize shrink' : 'resize to the same size');
    if (to !== from && to % g.cs !== 0n) count(real, `resize ${to > from ? 'grow' : 'shrink'} to a size not cluster aligned`);
    if (to > from && from % g.cs !== 0n) count(real, 'resize grow from a partial last cluster');
    if (BigInt(real.image.header.l1Size) * 8n > g.cs && BigInt(prev.header.l1Size) * 8n <= g.cs) count(real, 'resize grows the L1 table past one cluster');
    if (liveRefblocks(real.image) < refblocks) count(real, 'resize drops refcount blocks');
    const b = model.disk.backing;
    if (to > from && b !== undefined && b.size > from) count(real, 'resize grow zero-fills over the backing file');
    const low = from < to ? from : to;
    checkAround(model, real, low, 0n, what);
    if (to > from) checkAround(model, real, to, 0n, what);
    compareReads(what, to, 0n, to, (o, n) => readGuest(real.image, o, n), (o, n) => model.disk.read(o, n));
  }
  toString(): string {
    const t = this.target;
    switch (t.to) {
      case 'size':
      case 'invalid':
        return `Resize(${t.to} ${fmt(t.size)})`;
      case 'delta':
        return `Resize(${t.delta < 0n ? '-' : '+'}${fmt(t.delta < 0n ? -t.delta : t.delta)})`;
      case 'clusters':
        return `Resize(cluster ${t.clusters < 0n ? '' : '+'}${t.clusters}, +${t.plus})`;
      case 'l1':
      case 'unaligned':
      case 'l1-too-large':
        return `Resize(${t.to} +${t.plus})`;
    }
  }
}

export class SnapshotCmd implements Cmd {
  constructor(readonly kind: 'snapshotCreate' | 'snapshotApply' | 'snapshotDelete', readonly name: string) {}
  check(m: Readonly<Model>): boolean {
    if (m.corrupt === true) return false;
    if (m.geo.dataFile) return true;
    const exists = m.disk.snapshotNames.includes(this.name);
    if (this.kind === 'snapshotCreate') return !exists;
    if (!exists) return false;
    if (this.kind === 'snapshotDelete') return true;
    const to = m.snapshotSizes.get(this.name)!;
    return cheapResizeSize(m.geo, m.disk.backing?.size, m.disk.size, to) === to;
  }
  run(model: Model, real: Real): void {
    const what = this.toString();
    const from = sizeOf(model);
    const prev = real.image;
    const op: Op = { kind: this.kind, name: this.name };
    if (model.geo.dataFile) {
      const expected = dataFileSnapshotRefusal(this.kind, this.name);
      expectRefusedUnchanged(real, prev, stepChecked(model, real, op, what, expected), expected, what);
      return;
    }
    const to = this.kind === 'snapshotApply' ? model.snapshotSizes.get(this.name)! : from;
    const refusal: ExpectedRefusal | undefined = this.kind === 'snapshotApply' && zeroFillFails(model, prev, from, to)
      ? { label: 'zero-fill impossible', code: 'unsupported', message: new RegExp(`^Could not apply snapshot '${this.name}': Failed to zero out new clusters: Operation not supported$`) }
      : undefined;
    const r = stepChecked(model, real, op, what, refusal, this.kind === 'snapshotApply' ? growDirtyRule(model, prev, from, to) : 'keep');
    if (refusal !== undefined) {
      acceptRefusal(model, real, prev, op, r, refusal, what);
      count(real, 'snapshot apply refused: zero-fill of the resize');
      return;
    }
    if (!r.ok) {
      // Narrow widths overflow easily: a shared cluster (refcount_bits 1, 2) or a host cluster packed
      // with many compressed blobs (each blob is one reference; 4 bits allow only 15).
      if (this.kind !== 'snapshotDelete' && r.error.code === 'refcount-overflow' && real.cfg.refcountBits <= 8) {
        const size = r.image.header.size;
        if (size !== from && size !== to) throw new Error(`${what}: failed leaving a ${size}-byte disk (before ${from}, the snapshot's ${to})`);
        if (size !== from) {
          // The resize to the snapshot's size happened before the failure, and stays.
          model.disk.apply({ kind: 'resize', size });
          count(real, 'snapshot apply failed after its resize');
        }
        count(real, 'snapshot failed: refcount overflow');
        if (r.image !== prev) {
          const diff = replayDiff(prev, r.io, r.image);
          if (diff !== undefined) throw new Error(`${what}: failed; applyHostIO(previous files, io) is not the image left behind: ${diff}`);
          checkHeaderChange(real, prev, r.image, op, r.io, 'keep', `${what} (failed, left changed)`);
        }
        notePages(real, r.image);
        real.image = r.image;
        if (size !== from) checkAround(model, real, 0n, size, `${what} (failed after the resize)`);
        return;
      }
      throw new Error(`${what}: refused with ${r.error.code}: ${r.error.message}`);
    }
    if (this.kind === 'snapshotCreate') model.snapshotSizes.set(this.name, from);
    if (this.kind === 'snapshotDelete') model.snapshotSizes.delete(this.name);
    // After an apply every read equals the content captured at create time (the oracle's snapshot).
    if (this.kind === 'snapshotApply') {
      if (to !== from) count(real, `snapshot apply ${to > from ? 'grows' : 'shrinks'} the disk`);
      checkAround(model, real, 0n, sizeOf(model), what);
    }
  }
  toString(): string {
    return `${this.kind[0]!.toUpperCase()}${this.kind.slice(1)}(${JSON.stringify(this.name)})`;
  }
}

export class ReadRandomCmd implements Cmd {
  constructor(readonly offset: bigint, readonly length: number, readonly fromEnd = false) {}
  check(m: Readonly<Model>): boolean {
    return m.corrupt !== true;
  }
  run(model: Model, real: Real): void {
    const size = sizeOf(model);
    const p = place(model.geo, size, this.offset, BigInt(this.length), this.fromEnd);
    const what = `${this}${placedNote(this.offset, BigInt(this.length), p)}`;
    compareReads(what, size, p.offset, p.offset + p.length, (o, n) => readGuest(real.image, o, n), (o, n) => model.disk.read(o, n));
  }
  toString(): string {
    return `ReadRandom(${fmt(this.offset)}, ${this.length}${this.fromEnd ? ', from end' : ''})`;
  }
}

/** Bytes for a compressed write: compressible runs, the position pattern, or noise (stored uncompressed). */
export function compressData(offset: bigint, length: number, seed: number, mode: 'runs' | 'pattern' | 'noise'): Uint8Array {
  if (mode === 'pattern') return pattern(offset, length, seed);
  const out = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    if (mode === 'runs') {
      out[i] = ((i >> 7) * seed + seed) & 0xff;
    } else {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      out[i] = x & 0xff;
    }
  }
  return out;
}

/**
 * A compressed write of whole clusters (the last one may be the partial last cluster of the disk),
 * zlib or zstd as the image's compression_type says. After a size change it is placed like the
 * other ranges, then cut to whole clusters of the current disk. QEMU refuses it when a target
 * cluster is allocated ("Compression can't overwrite anything", EIO): that refusal must change nothing.
 * On an image with an external data file QEMU refuses every compressed write (ENOTSUP), unchanged.
 */
export class WriteCompressedCmd implements Cmd {
  constructor(readonly offset: bigint, readonly length: number, readonly seed: number, readonly mode: 'runs' | 'pattern' | 'noise', readonly fromEnd = false) {}
  check(m: Readonly<Model>): boolean {
    return m.corrupt !== true;
  }
  run(model: Model, real: Real): void {
    const size = sizeOf(model);
    const cs = model.geo.cs;
    const placed = place(model.geo, size, this.offset, BigInt(this.length), this.fromEnd);
    const offset = (placed.offset / cs) * cs;
    const whole = ((BigInt(this.length) + cs - 1n) / cs) * cs;
    const p = { offset, length: whole < size - offset ? whole : size - offset };
    const what = `${this}${placedNote(this.offset, BigInt(this.length), p)}`;
    const op: Op = { kind: 'writeCompressed', offset: p.offset, data: compressData(p.offset, Number(p.length), this.seed, this.mode) };
    const prev = real.image;
    if (model.geo.dataFile) {
      // QEMU 7.2: "write failed: Operation not supported" (measured, test/qemu/model-data-file.test.ts).
      const expected = { label: 'data file: compressed write', code: 'unsupported', errno: ENOTSUP_ERRNO, message: /not supported/i };
      expectRefusedUnchanged(real, prev, stepChecked(model, real, op, what, expected), expected, what);
      return;
    }
    const r = stepChecked(model, real, op, what, undefined, compressedDirtyRule(model.geo, prev, p, this.mode));
    if (!r.ok && r.error.code === 'corrupt' && /Preventing invalid write on metadata/.test(r.error.message)) {
      // QEMU 7.2 does the same: its compressed-byte cursor can point into a cluster freed and reused
      // as metadata since; the overlap check refuses the write and marks the image corrupt.
      if ((r.image.header.incompatibleFeatures & 2n) === 0n) throw new Error(`${what}: refused as corrupt without the corrupt bit`);
      real.image = r.image;
      model.corrupt = true;
      return;
    }
    if (!r.ok) {
      if (r.error.code !== 'unsupported' || !/allocated cluster/.test(r.error.message)) throw new Error(`${what}: refused with ${r.error.code}: ${r.error.message}`);
      if (real.image !== prev || r.image !== prev) throw new Error(`${what}: the image changed`);
      return;
    }
    count(real, `compressed write (${real.cfg.compressionType})`);
    real.touched.push(p);
    checkAround(model, real, p.offset, p.length, what);
  }
  toString(): string {
    return `WriteCompressed(${fmt(this.offset)}, ${this.length}, ${this.mode} ${this.seed}${this.fromEnd ? ', from end' : ''})`;
  }
}

/**
 * An op past the end of the disk (or at a negative offset): refused, 'out-of-range', nothing changes.
 * `fromEnd`: `offset` is counted back from the current end (0 = starting at the end), so it straddles
 * the end whatever the size is when it runs.
 */
export class OutOfRangeCmd implements Cmd {
  constructor(readonly kind: 'write' | 'writeZeroes' | 'discard', readonly offset: bigint, readonly length: number, readonly fromEnd = false) {}
  check(m: Readonly<Model>): boolean {
    return m.corrupt !== true;
  }
  run(model: Model, real: Real): void {
    const size = sizeOf(model);
    const at = this.fromEnd ? size - this.offset : this.offset;
    const what = `${this}${this.fromEnd ? ` at ${fmt(at)}` : ''}`;
    const op: Op = this.kind === 'write'
      ? { kind: 'write', offset: at, data: pattern(at < 0n ? 0n : at, this.length, 99) }
      : this.kind === 'writeZeroes'
        ? { kind: 'writeZeroes', offset: at, length: BigInt(this.length), unmap: true }
        : { kind: 'discard', offset: at, length: BigInt(this.length) };
    const prev = real.image;
    const pages = prev.file.pages;
    const header = show(prev.header);
    const r = stepChecked(model, real, op, what);
    if (r.ok) throw new Error(`${what}: accepted an op beyond the end of the ${size}-byte disk`);
    if (r.error.code !== 'out-of-range') throw new Error(`${what}: refused with '${r.error.code}' (${r.error.message}), expected 'out-of-range'`);
    if (real.image !== prev || real.image.file.pages !== pages || show(real.image.header) !== header) throw new Error(`${what}: the image changed`);
    // The oracle refuses it too (and stays as it was).
    let refused = false;
    try {
      model.disk.apply(op);
    } catch (e) {
      if (!(e instanceof RawDiskError)) throw e;
      refused = true;
    }
    if (!refused) throw new Error(`${what}: the oracle accepted it`);
  }
  toString(): string {
    const at = this.fromEnd ? `end${this.offset === 0n ? '' : `-${this.offset}`}` : fmt(this.offset);
    return `OutOfRange${this.kind[0]!.toUpperCase()}${this.kind.slice(1)}(${at}, ${this.length})`;
  }
}

// ---- command arbitraries ----------------------------------------------------------------------
