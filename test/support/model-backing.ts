/**
 * Backing files of the model property as plain data: a raw disk, or a qcow2 chain the model builds
 * from ops, each built with the model and, independently, as a raw-disk oracle.
 */
import { createImage } from '../../src/model/create.ts';
import type { BackingSource, Image } from '../../src/model/image.ts';
import { opRange, type Op } from '../../src/model/ops.ts';
import { readGuest } from '../../src/model/read.ts';
import { step } from '../../src/model/step.ts';
import { RawDisk } from '../../src/oracle/raw-disk.ts';
import { type Qcow2BackingSpec, type BackingSpec, MiB, pattern } from './model-configs.ts';
import { show, compareReads } from './model-checks.ts';
import { compressData } from './model-cmds.ts';

/**
 * The ops of a qcow2 backing spec that run, decided from the spec alone: a snapshot op runs only when
 * its name is free (create) or taken (apply, delete) at that point, and a compressed write only when
 * no earlier write, zero or compressed write of this image touched one of its clusters (QEMU refuses
 * to compress over an allocated cluster). Both the model and the oracle apply exactly these.
 */
export function backingOps(spec: Qcow2BackingSpec): { readonly op: Op; readonly what: string }[] {
  const cs = 1n << BigInt(spec.clusterBits);
  const names = new Set<string>();
  const touched = new Set<bigint>();
  const touch = (o: bigint, n: bigint): void => {
    for (let c = o / cs; c * cs < o + n; c++) touched.add(c);
  };
  const out: { op: Op; what: string }[] = [];
  for (const o of spec.ops) {
    switch (o.op) {
      case 'write':
        touch(o.offset, BigInt(o.length));
        out.push({ op: { kind: 'write', offset: o.offset, data: pattern(o.offset, o.length, o.seed) }, what: `write(${o.offset}, ${o.length}, seed ${o.seed})` });
        break;
      case 'zero':
        touch(o.offset, o.length);
        out.push({ op: { kind: 'writeZeroes', offset: o.offset, length: o.length, unmap: o.unmap }, what: `zero(${o.offset}, ${o.length}${o.unmap ? ', unmap' : ''})` });
        break;
      case 'discard':
        out.push({ op: { kind: 'discard', offset: o.offset, length: o.length }, what: `discard(${o.offset}, ${o.length})` });
        break;
      case 'compress': {
        let free = true;
        for (let c = o.offset / cs; c * cs < o.offset + BigInt(o.length); c++) if (touched.has(c)) free = false;
        if (!free) break;
        touch(o.offset, BigInt(o.length));
        out.push({ op: { kind: 'writeCompressed', offset: o.offset, data: compressData(o.offset, o.length, o.seed, 'runs') }, what: `compress(${o.offset}, ${o.length}, seed ${o.seed})` });
        break;
      }
      case 'snapshot': {
        const exists = names.has(o.name);
        if (o.action === 'create' ? exists : !exists) break;
        if (o.action === 'create') names.add(o.name);
        if (o.action === 'delete') names.delete(o.name);
        const kind = o.action === 'create' ? 'snapshotCreate' : o.action === 'apply' ? 'snapshotApply' : 'snapshotDelete';
        out.push({ op: { kind, name: o.name }, what: `snapshot ${o.action} ${o.name}` });
        break;
      }
    }
  }
  return out;
}

/**
 * A fresh raw-disk oracle for a qcow2 geometry (version, cluster and subcluster size decide how
 * discard and zero-fill behave) over the expected content of its backing image, if any.
 */
export function emptyOracle(
  g: { readonly size: bigint; readonly compat: '0.10' | '1.1'; readonly clusterBits: number; readonly extendedL2: boolean },
  backing: RawDisk | undefined,
): RawDisk {
  return new RawDisk({
    size: g.size,
    version: g.compat === '0.10' ? 2 : 3,
    clusterSize: 1n << BigInt(g.clusterBits),
    subclusterSize: (1n << BigInt(g.clusterBits)) / (g.extendedL2 ? 32n : 1n),
    ...(backing !== undefined ? { backing } : {}),
  });
}

/**
 * The expected content of a backing chain, computed with RawDisk only (no model code): a raw spec's
 * patterned writes, or a qcow2 spec's `backingOps` over the oracle of its own backing, with the
 * qcow2 image's version and cluster size (they decide what discard does).
 */
export function backingOracle(spec: BackingSpec): RawDisk {
  if (spec.format === 'raw') {
    const d = new RawDisk({ size: spec.size });
    for (const w of spec.writes) if (w.length > 0) d.apply({ kind: 'write', offset: w.offset, data: pattern(w.offset, w.length, w.seed) });
    return d;
  }
  const lower = spec.backing !== undefined ? backingOracle(spec.backing) : undefined;
  const d = emptyOracle(spec, lower);
  for (const { op } of backingOps(spec)) d.apply(op);
  return d;
}

/** A qcow2 image as a backing source: its virtual size, and reads through the model's read path. */
export function qcow2BackingSource(img: Image): BackingSource {
  return { size: img.header.size, read: (offset, length) => readGuest(img, offset, length) };
}

/**
 * Builds a backing chain with the model: a raw spec is a RawDisk (a raw file is its bytes); a qcow2
 * spec is createImage (with `backing_file`/`backing_fmt` when it has a backing of its own) and
 * `step` over `backingOps(spec)`, exposed through `qcow2BackingSource`. Throws when the model
 * refuses one of those ops (each must be accepted, see backingOps) or when a level does not read as
 * its oracle (`backingOracle`) around every op and, for small images, everywhere.
 */
export function buildBacking(spec: BackingSpec, level = 1): BackingSource {
  if (spec.format === 'raw') return backingOracle(spec);
  const lower = spec.backing !== undefined ? buildBacking(spec.backing, level + 1) : undefined;
  let img = createImage({
    size: spec.size,
    clusterSize: 1 << spec.clusterBits,
    compat: spec.compat,
    refcountBits: spec.refcountBits,
    extendedL2: spec.extendedL2,
    compressionType: spec.compressionType,
    ...(spec.backing !== undefined ? { backingFile: `base${level + 1}.${spec.backing.format}`, backingFmt: spec.backing.format } : {}),
  }).image;
  if (lower !== undefined) img = { ...img, backing: lower };
  const ops = backingOps(spec);
  for (const [i, { op, what }] of ops.entries()) {
    const r = step(img, op);
    if (!r.ok) throw new Error(`backing level ${level}: op ${i} ${what} refused with ${r.error.code}: ${r.error.message}`);
    img = r.image;
  }
  const source = qcow2BackingSource(img);
  const oracle = backingOracle(spec);
  const rd = (o: bigint, n: number): Uint8Array => source.read(o, n);
  const ro = (o: bigint, n: number): Uint8Array => oracle.read(o, n);
  const cs = 1n << BigInt(spec.clusterBits);
  if (spec.size <= 4n * MiB) compareReads(`backing level ${level}, whole image vs its oracle`, spec.size, 0n, spec.size, rd, ro);
  else {
    for (const { op, what } of ops) {
      const range = opRange(op);
      if (range !== undefined) compareReads(`backing level ${level}, around ${what}, vs its oracle`, spec.size, range.offset - cs, range.offset + range.length + cs, rd, ro);
    }
  }
  return source;
}

/**
 * Guest offsets of the overlay where the backing chain has something to show or an edge: the first
 * and last byte of every range written, zeroed, discarded or compressed at any level, and each
 * level's end. The overlay's hot clusters are drawn from these so that its ops land on backing data.
 */
export function backingSpots(spec: BackingSpec): bigint[] {
  const out: bigint[] = [spec.size - 1n, spec.size];
  if (spec.format === 'raw') {
    for (const w of spec.writes) out.push(w.offset, w.offset + BigInt(w.length) - 1n);
    return out;
  }
  for (const o of spec.ops) {
    if (o.op === 'snapshot') continue;
    out.push(o.offset, o.offset + BigInt(o.length) - 1n);
  }
  if (spec.backing !== undefined) out.push(...backingSpots(spec.backing));
  return out;
}
