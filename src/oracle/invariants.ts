/**
 * The structural invariants every qcow2 image the model writes must keep after every step
 * (ARCHITECTURE.md, docs/format/mapping.md, docs/format/refcounts.md, docs/format/check.md), computed from the file bytes alone: the image is
 * decoded by walkImage (generated decoders), references are counted here independently of the
 * model's allocator, and the result is a list of typed violations (empty = the image is sound).
 *
 * What is checked:
 * 1. refcounts: for every host cluster inside the file, the on-disk refcount equals the references
 *    counted the way `qemu-img check` counts them (calculate_refcounts): header cluster 0; the
 *    active L1 (every cluster it spans) and each snapshot L1; each L2 table once per L1 entry that
 *    points at it; each NORMAL / ZERO_ALLOC data cluster once per reference to its L2 table (not with
 *    an external data file); each compressed entry +1 on every host cluster its byte range touches;
 *    the refcount table; each refcount block (once per refcount-table entry); the snapshot table's
 *    byte range; bitmap directory, tables and data clusters (when the bitmaps autoclear bit is set);
 *    the LUKS header range. Refcounts of clusters past the end of the file are not compared
 *    (docs/format/surprises.md#28-refcounts-past-the-end-of-the-file) except for the tail of a compressed range that QEMU tolerates there.
 * 2. COPIED ⇔ refcount == 1 for active L1 entries and for NORMAL / ZERO_ALLOC entries of L2 tables
 *    reachable from the active L1 (refcount taken as 1 with an external data file); never on
 *    compressed entries.
 * 3. No overlap: a cluster holds at most one metadata structure; data clusters (normal or compressed)
 *    never share a cluster with metadata; normal data never shares with compressed data (compressed
 *    blobs may share clusters among themselves; two normal references to one cluster are sharing,
 *    which the refcount check judges).
 * 4. Nothing referenced past the end of the file: tables (L1 entries, L2 cluster, refcount table,
 *    refcount block, snapshot table, bitmap directory/tables) must lie wholly inside the file; data
 *    clusters and compressed ranges follow QEMU's check rule — an error once the range reaches a
 *    whole cluster or more past the end (a partially written last cluster is normal: docs/format/surprises.md#1-files-are-not-cluster-multiples).
 * 5. Extended L2: no subcluster both allocated and zero; no alloc bits on an entry with offset 0;
 *    compressed entries have a zero bitmap.
 * 6. v2 images have no zero flags (extended-L2 images neither: bit 0 is unused there); reserved bits
 *    of L1, L2, refcount-table and bitmap-table entries are zero; every cluster offset is aligned;
 *    with an external data file: no compressed entries and host offset == guest offset.
 *
 * Bounded on hostile input: walkImage bounds the decoding; every per-cluster array here is sized by
 * the file's cluster count, ranges reaching outside the file are reported and not iterated, repeated
 * identical L1 ranges are counted once with a multiplicity, an L2 table's entries are visited once
 * whatever the number of L1 entries pointing at it, and at most MAX_VIOLATIONS are reported.
 */
import { isQcow2FormatError } from '../codec/index.ts';
import { refcountOf, walkImage, type ImageWalk, type L2TableInfo } from '../format/index.ts';

/** What went wrong, one word per invariant family. */
export type InvariantKind =
  /** A structure could not be decoded at all (walkImage error). */
  | 'decode-error'
  /** On-disk refcount of a host cluster differs from the references counted. */
  | 'refcount-mismatch'
  /** COPIED flag set while refcount != 1, or clear while refcount == 1. */
  | 'copied-mismatch'
  /** A compressed L2 entry with COPIED set. */
  | 'compressed-copied'
  /** Two structures share a host cluster. */
  | 'overlap'
  /** A structure or data range referenced beyond the end of the file. */
  | 'past-eof'
  /** Extended L2: a subcluster both allocated and zero. */
  | 'subcluster-alloc-and-zero'
  /** Extended L2: allocation bits on an entry with host offset 0. */
  | 'alloc-bits-without-cluster'
  /** Extended L2: a compressed entry with a non-zero subcluster bitmap. */
  | 'compressed-bitmap'
  /** The zero flag (bit 0) in a version 2 image. */
  | 'zero-flag-v2'
  /** Bit 0 (unused) set in an extended-L2 image's descriptor. */
  | 'zero-flag-extended-l2'
  /** Reserved bits set in an L1, L2, refcount-table or bitmap-table entry. */
  | 'reserved-bits'
  /** A cluster offset that is not cluster aligned. */
  | 'unaligned'
  /** A compressed entry in an image with an external data file. */
  | 'compressed-with-data-file'
  /** External data file: an entry's host offset differs from its guest offset. */
  | 'data-file-offset-mismatch'
  /** The list was cut at MAX_VIOLATIONS. */
  | 'too-many-violations';

/** One broken invariant. `message` names the structure and its offset. */
export interface InvariantViolation {
  readonly kind: InvariantKind;
  readonly message: string;
  /** The host cluster concerned (refcount, COPIED and overlap violations). */
  readonly hostCluster?: number;
  /** The byte offset concerned (start of the structure or entry, or the referenced offset). */
  readonly offset?: bigint;
  /** The structure concerned, e.g. `L2 table at 0x50000 (active L1[0])`. */
  readonly structure?: string;
  /** Overlap: the structure already holding the cluster. */
  readonly other?: string;
  /** Refcount violations: the on-disk refcount (exact). */
  readonly refcount?: bigint;
  /** Refcount violations: the references counted. */
  readonly references?: number;
}

/** Options of checkInvariants. */
export interface InvariantOptions {
  /** The external data file's bytes; when given, data clusters are checked against its length. */
  readonly dataFile?: Uint8Array;
}

/** At most this many violations are returned (then one 'too-many-violations'). */
export const MAX_VIOLATIONS = 1000;

const hex = (v: bigint | number): string => `0x${v.toString(16)}`;

/** Kinds of data claims in a cluster. */
const DATA_NORMAL = 1;
const DATA_COMPRESSED = 2;

class TooMany extends Error {}

/**
 * The invariant violations of the qcow2 image `bytes` (empty when it keeps them all): refcounts vs
 * references, COPIED flags, overlaps, references past the end of the file, extended-L2 bitmaps,
 * zero flags, reserved bits and alignment (see the module doc for the exact rules). Works from the
 * bytes alone through walkImage; never throws on a decodable-or-not image (an undecodable header is
 * one 'decode-error'). `opts.dataFile` is the external data file, for images that have one.
 */
export function checkInvariants(bytes: Uint8Array, opts: InvariantOptions = {}): InvariantViolation[] {
  let walk: ImageWalk;
  try {
    walk = walkImage(bytes);
  } catch (e) {
    if (isQcow2FormatError(e)) {
      return [{ kind: 'decode-error', message: `header: ${e.message}`, offset: BigInt(e.offset), structure: 'header' }];
    }
    throw e;
  }
  const out: InvariantViolation[] = [];
  try {
    new Checker(walk, out, opts).run();
  } catch (e) {
    if (!(e instanceof TooMany)) throw e;
  }
  return out;
}

class Checker {
  private readonly h;
  private readonly cs: number;
  private readonly csn: bigint;
  private readonly fileSize: bigint;
  private readonly nClusters: number;
  /** References counted per host cluster inside the file. */
  private readonly refs: Float64Array;
  /** Metadata owner per cluster: index + 1 into `owners`, 0 = none. */
  private readonly owner: Int32Array;
  private readonly owners: string[] = [];
  /** DATA_NORMAL | DATA_COMPRESSED bits per cluster. */
  private readonly dataKind: Uint8Array;
  /** On-disk refcounts (as numbers; exact value via refcountOf for messages) and whether known. */
  private readonly onDisk: Float64Array;
  private readonly known: Uint8Array;
  /** References to clusters past the end of the file that QEMU tolerates (compressed tails). */
  private readonly tail = new Map<number, number>();

  constructor(
    private readonly walk: ImageWalk,
    private readonly out: InvariantViolation[],
    private readonly opts: InvariantOptions,
  ) {
    this.h = walk.header;
    this.cs = walk.header.clusterSize;
    this.csn = BigInt(this.cs);
    this.fileSize = BigInt(walk.fileSize);
    this.nClusters = Math.ceil(walk.fileSize / this.cs);
    this.refs = new Float64Array(this.nClusters);
    this.owner = new Int32Array(this.nClusters);
    this.dataKind = new Uint8Array(this.nClusters);
    this.onDisk = new Float64Array(this.nClusters);
    this.known = new Uint8Array(this.nClusters);
  }

  private report(v: InvariantViolation): void {
    if (this.out.length >= MAX_VIOLATIONS) {
      this.out.push({ kind: 'too-many-violations', message: `more than ${MAX_VIOLATIONS} violations; the rest are not reported` });
      throw new TooMany();
    }
    this.out.push(v);
  }

  run(): void {
    const w = this.walk;
    for (const e of w.errors) {
      this.report({ kind: 'decode-error', message: `${e.at}: ${e.detail} (${e.structure}.${e.field} at ${hex(e.offset)})`, offset: BigInt(e.offset), structure: e.at });
    }
    this.readOnDiskRefcounts();
    this.checkHeaderOffsets();
    this.claimMetadata();
    this.checkActiveL1Copied();
    for (const t of w.l2Tables) this.checkL2Table(t);
    this.compareRefcounts();
  }

  // -------------------------------------------------------------------------------------------
  // On-disk refcounts

  private readOnDiskRefcounts(): void {
    const r = this.walk.refcounts;
    if (r.error !== undefined) return; // nothing known; the decode error is reported
    this.known.fill(1); // clusters without a refcount block (or beyond the table) have refcount 0
    const perBlock = (this.cs * 8) / this.h.refcountBits;
    const blocks = new Map(r.blocks.map((b) => [b.offset, b] as const));
    for (const te of r.entries) {
      if (te.blockOffset === 0n) continue;
      const base = te.index * perBlock;
      if (base >= this.nClusters) continue;
      const block = blocks.get(te.blockOffset);
      const end = Math.min(base + perBlock, this.nClusters);
      if (block === undefined || block.error !== undefined) {
        this.known.fill(0, base, end);
        continue;
      }
      for (const run of block.runs) {
        const s = base + run.start;
        if (s >= end) break;
        this.onDisk.fill(Number(run.refcount), s, Math.min(s + run.count, end));
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Alignment of header-level offsets

  private aligned(v: bigint): boolean {
    return (v & (this.csn - 1n)) === 0n;
  }

  private checkAligned(v: bigint, what: string): void {
    if (!this.aligned(v)) this.report({ kind: 'unaligned', message: `${what} offset ${hex(v)} is not aligned to the ${this.cs}-byte cluster size`, offset: v, structure: what });
  }

  private checkHeaderOffsets(): void {
    const w = this.walk;
    if (this.h.l1Size > 0 || this.h.l1TableOffset !== 0n) this.checkAligned(this.h.l1TableOffset, 'active L1 table');
    this.checkAligned(this.h.refcountTableOffset, 'refcount table');
    if (this.h.nbSnapshots > 0) this.checkAligned(this.h.snapshotsOffset, 'snapshot table');
    for (const s of w.snapshots.entries) this.checkAligned(s.l1TableOffset, `snapshot ${s.index} L1 table`);
    for (const te of w.refcounts.entries) {
      if (te.reservedBits !== 0) {
        this.report({ kind: 'reserved-bits', message: `refcount table[${te.index}] at ${hex(this.h.refcountTableOffset + 8n * BigInt(te.index))} has reserved bits ${hex(te.reservedBits)} set`, offset: this.h.refcountTableOffset + 8n * BigInt(te.index), structure: 'refcount table' });
      }
      if (te.blockOffset !== 0n) this.checkAligned(te.blockOffset, `refcount block (refcount table[${te.index}])`);
    }
    const l1 = w.activeL1;
    for (const e of l1.entries) {
      const at = l1.offset + 8n * BigInt(e.index);
      if (e.reservedBits !== 0n) this.report({ kind: 'reserved-bits', message: `active L1[${e.index}] at ${hex(at)} has reserved bits ${hex(e.reservedBits)} set (entry ${hex(e.word)})`, offset: at, structure: 'active L1 table' });
      if (e.l2Offset !== 0n) this.checkAligned(e.l2Offset, `L2 table (active L1[${e.index}])`);
    }
    for (const s of w.snapshots.entries) {
      for (const e of s.l1.entries) {
        const at = s.l1.offset + 8n * BigInt(e.index);
        if (e.reservedBits !== 0n) this.report({ kind: 'reserved-bits', message: `snapshot ${s.index} L1[${e.index}] at ${hex(at)} has reserved bits ${hex(e.reservedBits)} set`, offset: at, structure: `snapshot ${s.index} L1 table` });
        if (e.l2Offset !== 0n) this.checkAligned(e.l2Offset, `L2 table (snapshot ${s.index} L1[${e.index}])`);
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Claims

  /** Clusters [first, last] of a byte range (length > 0). */
  private clustersOf(start: bigint, length: bigint): { first: bigint; last: bigint } {
    return { first: start / this.csn, last: (start + length - 1n) / this.csn };
  }

  /**
   * A metadata structure at [start, start+length) referenced `addend` times. `whole`: the bytes must
   * all be inside the file (tables); else QEMU's tolerance applies (LUKS header).
   */
  private claimMeta(name: string, start: bigint, length: bigint, addend: number, whole = true): void {
    if (length <= 0n) return;
    const end = start + length;
    if (whole ? end > this.fileSize : end - this.fileSize >= this.csn) {
      this.report({ kind: 'past-eof', message: `${name} (${length} bytes at ${hex(start)}) extends past the end of the file (${hex(this.fileSize)})`, offset: start, structure: name });
      return;
    }
    const id = this.owners.push(name);
    const { first, last } = this.clustersOf(start, length);
    for (let c = Number(first); c <= Number(last); c++) {
      if (!this.count(c, addend)) continue;
      const o = this.owner[c]!;
      if (o === 0) this.owner[c] = id;
      else if (o !== id) {
        this.reportOverlap(name, this.owners[o - 1]!, c);
      }
    }
  }

  /**
   * Adds `addend` references to host cluster `c`; clusters past the end of the file are counted
   * apart (they have no refcount slot to compare with). Returns whether `c` is inside the file.
   */
  private count(c: number, addend: number): boolean {
    if (c >= this.nClusters) {
      this.tail.set(c, (this.tail.get(c) ?? 0) + addend);
      return false;
    }
    this.refs[c]! += addend;
    return true;
  }

  private reportOverlap(name: string, other: string, c: number): void {
    this.report({ kind: 'overlap', message: `${name} overlaps ${other} in host cluster ${c} (${hex(BigInt(c) * this.csn)})`, hostCluster: c, offset: BigInt(c) * this.csn, structure: name, other });
  }

  /** A guest data range (normal cluster or compressed blob) referenced `addend` times. */
  private claimData(name: string, start: bigint, length: bigint, addend: number, kind: number): void {
    if (length <= 0n) return;
    const end = start + length;
    if (end - this.fileSize >= this.csn) {
      this.report({ kind: 'past-eof', message: `${name} (${length} bytes at ${hex(start)}) lies past the end of the file (${hex(this.fileSize)})`, offset: start, structure: name });
      return;
    }
    const { first, last } = this.clustersOf(start, length);
    for (let c = Number(first); c <= Number(last); c++) {
      if (!this.count(c, addend)) continue;
      const o = this.owner[c]!;
      if (o !== 0) {
        this.reportOverlap(name, this.owners[o - 1]!, c);
      }
      const k = this.dataKind[c]!;
      if ((k | kind) === (DATA_NORMAL | DATA_COMPRESSED) && k !== (k | kind)) {
        const other = kind === DATA_NORMAL ? 'compressed data' : 'a normal data cluster';
        this.report({ kind: 'overlap', message: `${name} shares host cluster ${c} (${hex(BigInt(c) * this.csn)}) with ${other}`, hostCluster: c, offset: BigInt(c) * this.csn, structure: name, other });
      }
      this.dataKind[c] = k | kind;
    }
  }

  private claimMetadata(): void {
    const w = this.walk;
    const h = this.h;
    this.claimMeta('header cluster', 0n, this.csn > this.fileSize ? this.fileSize : this.csn, 1);
    this.claimMeta(`refcount table at ${hex(h.refcountTableOffset)}`, h.refcountTableOffset, BigInt(h.refcountTableClusters) * this.csn, 1);
    for (const b of w.refcounts.blocks) {
      this.claimMeta(`refcount block at ${hex(b.offset)} (refcount table[${b.tableIndexes.join(', ')}])`, b.offset, this.csn, b.tableIndexes.length);
    }
    // L1 tables: identical (offset, size) ranges are one structure referenced several times.
    const l1s = new Map<string, { name: string; offset: bigint; size: number; n: number }>();
    const addL1 = (name: string, offset: bigint, size: number): void => {
      const key = `${offset}:${size}`;
      const known = l1s.get(key);
      if (known !== undefined) known.n++;
      else l1s.set(key, { name, offset, size, n: 1 });
    };
    addL1(`active L1 table at ${hex(h.l1TableOffset)}`, h.l1TableOffset, h.l1Size);
    for (const s of w.snapshots.entries) addL1(`snapshot ${s.index} L1 table at ${hex(s.l1TableOffset)}`, s.l1TableOffset, s.l1Size);
    for (const l1 of l1s.values()) this.claimMeta(l1.name, l1.offset, 8n * BigInt(l1.size), l1.n);
    // Snapshot table: from its offset to the end of the last decoded entry.
    const snaps = w.snapshots.entries;
    if (h.nbSnapshots > 0 && snaps.length > 0) {
      const last = snaps[snaps.length - 1]!;
      const end = BigInt(last.entryOffset + 40 + last.extraDataSize + last.id.length + last.name.length);
      this.claimMeta(`snapshot table at ${hex(h.snapshotsOffset)}`, h.snapshotsOffset, end - h.snapshotsOffset, 1);
    }
    for (const t of w.l2Tables) this.claimMeta(this.l2Name(t), t.offset, this.csn, t.references.length);
    if (w.bitmaps !== undefined && h.bitmapsConsistent) {
      const d = w.bitmaps;
      this.checkAligned(d.offset, 'bitmap directory');
      this.claimMeta(`bitmap directory at ${hex(d.offset)}`, d.offset, d.size, 1);
      for (const b of d.bitmaps) {
        const tname = `bitmap '${b.name}' table at ${hex(b.tableOffset)}`;
        this.checkAligned(b.tableOffset, `bitmap '${b.name}' table`);
        this.claimMeta(tname, b.tableOffset, 8n * BigInt(b.tableSize), 1);
      }
      for (const b of d.bitmaps) {
        for (const e of b.table) {
          const at = b.tableOffset + 8n * BigInt(e.index);
          if (e.reservedBits !== 0n) this.report({ kind: 'reserved-bits', message: `bitmap '${b.name}' table[${e.index}] at ${hex(at)} has reserved bits ${hex(e.reservedBits)} set`, offset: at, structure: `bitmap '${b.name}' table` });
          if (e.dataOffset === 0n) continue;
          this.checkAligned(e.dataOffset, `bitmap '${b.name}' data cluster (table[${e.index}])`);
          this.claimMeta(`bitmap '${b.name}' data cluster at ${hex(e.dataOffset)} (table[${e.index}])`, e.dataOffset, this.csn, 1, false);
        }
      }
    }
    if (h.cryptMethod === 2) {
      for (const x of w.extensions) {
        if (x.type !== 'full-disk-encryption') continue;
        this.checkAligned(x.headerOffset, 'LUKS header');
        this.claimMeta(`LUKS header at ${hex(x.headerOffset)}`, x.headerOffset, x.headerLength, 1, false);
      }
    }
  }

  private l2Name(t: L2TableInfo): string {
    const refs = t.references.map((r) => `${r.l1} L1[${r.index}]`);
    const shown = refs.length > 3 ? [...refs.slice(0, 3), `+${refs.length - 3} more`] : refs;
    return `L2 table at ${hex(t.offset)} (${shown.join(', ')})`;
  }

  // -------------------------------------------------------------------------------------------
  // COPIED

  /** The on-disk refcount of in-file cluster `c` when known, as a number. */
  private diskRefcount(c: bigint): number | undefined {
    if (c >= BigInt(this.nClusters)) return undefined;
    const i = Number(c);
    return this.known[i] === 1 ? this.onDisk[i] : undefined;
  }

  private checkActiveL1Copied(): void {
    const l1 = this.walk.activeL1;
    for (const e of l1.entries) {
      if (e.l2Offset === 0n) continue;
      const rc = this.diskRefcount(e.l2Offset / this.csn);
      if (rc === undefined) continue;
      if (e.copied !== (rc === 1)) {
        const at = l1.offset + 8n * BigInt(e.index);
        this.report({
          kind: 'copied-mismatch',
          message: `active L1[${e.index}] at ${hex(at)} (entry ${hex(e.word)}): COPIED is ${e.copied ? 'set' : 'clear'} but the L2 table at ${hex(e.l2Offset)} has refcount ${rc}`,
          hostCluster: Number(e.l2Offset / this.csn),
          offset: at,
          structure: 'active L1 table',
          refcount: BigInt(rc),
        });
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // L2 entries

  private checkL2Table(t: L2TableInfo): void {
    const h = this.h;
    const n = t.references.length;
    const active = t.references.find((r) => r.l1 === 'active');
    const entriesPerL2 = BigInt(t.entryCount);
    const entrySize = h.extendedL2 ? 16n : 8n;
    const tname = `L2 table at ${hex(t.offset)}`;
    for (const e of t.entries) {
      const at = t.offset + entrySize * BigInt(e.index);
      const where = `${tname} [${e.index}] (entry ${hex(e.word)}${e.bitmap !== undefined ? `, bitmap ${hex(e.bitmap)}` : ''}) at ${hex(at)}`;
      const base = { offset: at, structure: tname };
      const c = e.class;
      if (e.reservedBits !== 0n) this.report({ ...base, kind: 'reserved-bits', message: `${where} has reserved bits ${hex(e.reservedBits)} set` });
      if (c.kind !== 'compressed' && (e.word & 1n) !== 0n) {
        if (h.version === 2) this.report({ ...base, kind: 'zero-flag-v2', message: `${where} has the zero flag set in a version 2 image` });
        else if (h.extendedL2) this.report({ ...base, kind: 'zero-flag-extended-l2', message: `${where} has bit 0 (the zero flag, unused with extended L2) set` });
      }
      if (e.bitmap !== undefined) {
        const alloc = e.bitmap & 0xffffffffn;
        const zero = e.bitmap >> 32n;
        if (c.kind === 'compressed') {
          if (e.bitmap !== 0n) this.report({ ...base, kind: 'compressed-bitmap', message: `${where}: compressed entry with a non-zero subcluster bitmap` });
        } else if (c.kind === 'unallocated') {
          if (alloc !== 0n) this.report({ ...base, kind: 'alloc-bits-without-cluster', message: `${where}: allocation bits ${hex(alloc)} on an entry without a host cluster` });
        } else if ((alloc & zero) !== 0n) {
          this.report({ ...base, kind: 'subcluster-alloc-and-zero', message: `${where}: subclusters ${hex(alloc & zero)} are both allocated and zero` });
        }
      }
      if (c.kind === 'compressed') {
        if (c.copied) this.report({ ...base, kind: 'compressed-copied', message: `${where}: compressed entry with COPIED set` });
        if (h.externalDataFile) {
          this.report({ ...base, kind: 'compressed-with-data-file', message: `${where}: compressed entry in an image with an external data file` });
          continue;
        }
        this.claimData(`compressed cluster at ${hex(c.hostOffset)} (${tname} [${e.index}])`, c.hostOffset, BigInt(c.compressedBytes), n, DATA_COMPRESSED);
        continue;
      }
      if (c.kind !== 'normal' && c.kind !== 'zero-alloc') continue;
      const host = c.hostOffset;
      if (!this.aligned(host)) this.report({ ...base, kind: 'unaligned', message: `${where}: host cluster offset ${hex(host)} is not cluster aligned` });
      let rc: number | undefined;
      if (h.externalDataFile) {
        rc = 1;
        if (active !== undefined) {
          const guest = (BigInt(active.index) * entriesPerL2 + BigInt(e.index)) * this.csn;
          if (host !== guest) this.report({ ...base, kind: 'data-file-offset-mismatch', message: `${where}: data file offset ${hex(host)} differs from the guest offset ${hex(guest)}` });
        }
        const df = this.opts.dataFile;
        if (df !== undefined && host >= BigInt(df.length)) {
          this.report({ ...base, kind: 'past-eof', message: `${where}: data cluster at ${hex(host)} lies past the end of the external data file (${hex(df.length)})` });
        }
      } else {
        this.claimData(`data cluster at ${hex(host)} (${tname} [${e.index}])`, host, this.csn, n, DATA_NORMAL);
        rc = this.diskRefcount(host / this.csn);
      }
      if (active !== undefined && rc !== undefined && c.copied !== (rc === 1)) {
        this.report({
          ...base,
          kind: 'copied-mismatch',
          message: `${where}: COPIED is ${c.copied ? 'set' : 'clear'} but the data cluster at ${hex(host)} has refcount ${rc}`,
          hostCluster: Number(host / this.csn),
          refcount: BigInt(rc),
        });
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Refcount comparison

  private compareRefcounts(): void {
    if (this.walk.refcounts.error !== undefined) return;
    for (let c = 0; c < this.nClusters; c++) {
      if (this.known[c] !== 1 || this.onDisk[c] === this.refs[c]) continue;
      this.mismatch(c, this.refs[c]!);
    }
    for (const [c, n] of [...this.tail].sort((a, b) => a[0] - b[0])) {
      const r = refcountOf(this.walk, BigInt(c));
      if (r !== undefined && r !== BigInt(n)) this.mismatch(c, n, r);
    }
  }

  private mismatch(c: number, references: number, exact?: bigint): void {
    const refcount = exact ?? refcountOf(this.walk, BigInt(c)) ?? BigInt(this.onDisk[c] ?? 0);
    const o = this.owner[c] ?? 0;
    const d = this.dataKind[c] ?? 0;
    const what = o !== 0 ? this.owners[o - 1]! : d === DATA_NORMAL ? 'data' : d === DATA_COMPRESSED ? 'compressed data' : d !== 0 ? 'data' : 'unreferenced';
    this.report({
      kind: 'refcount-mismatch',
      message: `host cluster ${c} at ${hex(BigInt(c) * this.csn)} (${what}): refcount ${refcount} on disk but ${references} reference(s) counted`,
      hostCluster: c,
      offset: BigInt(c) * this.csn,
      refcount,
      references,
    });
  }
}
