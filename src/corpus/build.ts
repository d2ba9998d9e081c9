/**
 * Building corpus images through the model: `qemu-img create` (createImage), one session of ops
 * (step), a clean close (closeImage) — exactly what `qcow2-ref create` + `qcow2-ref run SCRIPT` write
 * and, since the model is byte-exact, what `qemu-img create` + `qemu-io` write. Also the guest content
 * hash, read back through the model from the stored bytes.
 */
import { createHash } from 'node:crypto';
import { closeImage } from '../model/index.ts';
import { createImage, type CreateOptions } from '../model/index.ts';
import { hostBytes } from '../model/index.ts';
import type { BackingSource, Image } from '../model/index.ts';
import { mapImage } from '../model/index.ts';
import type { Op } from '../model/index.ts';
import { readGuest } from '../model/index.ts';
import { formatScript } from '../script/index.ts';
import { step } from '../model/index.ts';

/** An image the model built, with the ops that took effect. */
export interface BuiltImage {
  /** The image after the ops (and the close, unless `close: false`). */
  readonly image: Image;
  /** The ops that succeeded, in order; ops the model refused were left out (they changed nothing). */
  readonly ops: readonly Op[];
  /** Their script text (docs/op-script.md), canonical. */
  readonly script: string;
  /** The qcow2 file. */
  readonly bytes: Uint8Array;
  /** The external data file, when the image has one. */
  readonly dataFile?: Uint8Array;
}

/** How buildImage runs the session. */
export interface BuildOptions {
  /** The backing image the ops read through (for images with a backing file). */
  readonly backing?: BackingSource;
  /**
   * Close the image cleanly at the end (default true). Without it the file is what a crashed
   * QEMU leaves (the dirty bit set after an allocating write with lazy refcounts).
   */
  readonly close?: boolean;
}

/**
 * The image `createImage(create)` gives after applying `ops` in one session (a refused op is
 * skipped: step guarantees it changed nothing, which is asserted) and, by default, closing it.
 * Throws CreateError for refused options; throws Error if a refused op changed the image (which
 * would make the recorded script lie). Pure.
 */
export function buildImage(create: CreateOptions, ops: readonly Op[], opts: BuildOptions = {}): BuiltImage {
  let image = createImage(create).image;
  if (opts.backing !== undefined) image = { ...image, backing: opts.backing };
  const applied: Op[] = [];
  for (const op of ops) {
    const r = step(image, op);
    if (r.ok) {
      image = r.image;
      applied.push(op);
    } else if (r.image !== image || r.io.length > 0) {
      throw new Error(`corpus: op ${op.kind} failed and changed the image (${r.error.message})`);
    }
  }
  if (opts.close ?? true) image = closeImage(image).image;
  return {
    image,
    ops: applied,
    script: formatScript(applied),
    bytes: hostBytes(image.file),
    ...(image.dataFile !== undefined ? { dataFile: hostBytes(image.dataFile) } : {}),
  };
}

/** Bytes hashed per read of the guest disk. */
const HASH_CHUNK = 1 << 20;
const ZEROS = new Uint8Array(HASH_CHUNK);

/**
 * SHA-256 (lowercase hex) of the whole guest disk of `image` (virtual size rounded down to 512 bytes,
 * as QEMU sees it: `qemu-img convert -O raw` writes that many bytes), read through the model: ranges
 * the model's map (mapImage, the same resolution readGuest uses) reports as reading zeros are hashed
 * as zeros without reading them, everything else is read with readGuest. Throws the model's error
 * when a cluster cannot be read.
 */
export function guestSha256(image: Image): string {
  const size = image.header.size & ~511n;
  const h = createHash('sha256');
  const feed = (at: bigint, end: bigint, zero: boolean): void => {
    for (let pos = at; pos < end; pos += BigInt(HASH_CHUNK)) {
      const n = end - pos < BigInt(HASH_CHUNK) ? Number(end - pos) : HASH_CHUNK;
      h.update(zero ? ZEROS.subarray(0, n) : readGuest(image, pos, n));
    }
  };
  let at = 0n;
  for (const e of size > 0n ? mapImage(image, 0n, size) : []) {
    const end = e.start + e.length > size ? size : e.start + e.length;
    if (e.start > at) feed(at, e.start, false);
    feed(e.start > at ? e.start : at, end, e.zero);
    at = end;
  }
  if (at < size) feed(at, size, false);
  return h.digest('hex');
}

/** The `qemu-img create -o` options (names and values as qemu-img takes them) equivalent to `c`, sorted by name. */
export function createOptionsRecord(c: CreateOptions): Record<string, string> {
  const o: Record<string, string> = {};
  if (c.backingFile !== undefined) o['backing_file'] = c.backingFile;
  if (c.backingFmt !== undefined) o['backing_fmt'] = c.backingFmt;
  if (c.clusterSize !== undefined) o['cluster_size'] = String(c.clusterSize);
  if (c.compat !== undefined) o['compat'] = c.compat;
  if (c.compressionType !== undefined) o['compression_type'] = c.compressionType;
  if (c.dataFile !== undefined) o['data_file'] = c.dataFile;
  if (c.dataFileRaw !== undefined) o['data_file_raw'] = c.dataFileRaw ? 'on' : 'off';
  if (c.extendedL2 !== undefined) o['extended_l2'] = c.extendedL2 ? 'on' : 'off';
  if (c.lazyRefcounts !== undefined) o['lazy_refcounts'] = c.lazyRefcounts ? 'on' : 'off';
  if (c.preallocation !== undefined) o['preallocation'] = c.preallocation;
  if (c.refcountBits !== undefined) o['refcount_bits'] = String(c.refcountBits);
  return o;
}
