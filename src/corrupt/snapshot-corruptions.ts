/**
 * Corruptions of the snapshot table (category 'snapshot'): an entry's L1 table unaligned, too large or
 * past the end of the file, and extra data too short or too large.
 */
import { encodeSnapshotEntry, type SnapshotEntryFields } from '../../generated/qcow2.ts';
import { QCOW_MAX_SNAPSHOT_EXTRA_DATA } from '../format/index.ts';
import { readField, type FileLayout } from './layout.ts';
import { bigBelow, pick, type Rng } from './rng.ts';
import { type Corruption, type CorruptionName, MAX_L1_ENTRIES, hex, Poker, applied, notApplicable, pastEof, unalign } from './corruption.ts';

/** The snapshot table entries with their fields, or undefined when there is none or the table did not decode whole. */
export function snapshotFields(l: FileLayout): { offset: number; fields: SnapshotEntryFields }[] | undefined {
  if (l.snapshots.length === 0 || l.snapshotTableBytes === 0) return undefined;
  return l.snapshots.map((s) => ({ offset: s.entryOffset, fields: s.fields }));
}

/**
 * A corruption of one snapshot, chosen by the Rng, when `requires` finds nothing missing (a string
 * says what is): `edit` pokes snapshot `i` through `p` and returns the description, or `{ reason }`
 * when it cannot.
 */
export function snapshotCorruption(
  name: CorruptionName,
  title: string,
  edit: (l: FileLayout, rng: Rng, p: Poker, i: number, entry: { offset: number; fields: SnapshotEntryFields }) => string | { readonly reason: string },
  requires: (l: FileLayout) => string | undefined = () => undefined,
): Corruption {
  return {
    name,
    category: 'snapshot',
    title,
    apply(l, rng) {
      const missing = requires(l);
      if (missing !== undefined) return notApplicable(this, missing);
      const entries = snapshotFields(l);
      if (entries === undefined) return notApplicable(this, 'no snapshot');
      const i = rng.int(entries.length);
      const p = new Poker(l);
      const done = edit(l, rng, p, i, entries[i]!);
      return typeof done === 'string' ? applied(this, p, done, []) : notApplicable(this, done.reason);
    },
  };
}

/** A snapshot corruption that sets `field` of the entry to what `value` makes of the old one (undefined: nothing suitable). */
export function snapshotFieldCorruption(
  name: CorruptionName,
  title: string,
  field: 'l1_table_offset' | 'l1_size',
  value: (l: FileLayout, rng: Rng, old: bigint) => bigint | undefined,
): Corruption {
  return snapshotCorruption(name, title, (l, rng, p, i, e) => {
    const at = BigInt(e.offset) + (field === 'l1_table_offset' ? 0n : 8n);
    const bits = field === 'l1_table_offset' ? 64 : 32;
    const old = readField(l.bytes, at, bits);
    const v = value(l, rng, old);
    if (v === undefined || v === old) return { reason: `no suitable ${field} for snapshot ${i}` };
    p.set(`snapshot table entry ${i} (id ${e.fields.idStr})`, field, at, bits, v);
    return `snapshot ${i} ${field} ${hex(old)} → ${hex(v)}`;
  });
}

export const snapshotL1Unaligned = snapshotFieldCorruption(
  'snapshot-l1-unaligned',
  'a snapshot table entry gets an L1 offset that is not cluster aligned (test 080: check ERROR snapshot N ... L1 table is not cluster aligned)',
  'l1_table_offset',
  (l, rng, old) => pick(rng, [unalign(l, rng, old), old + 1n + bigBelow(rng, 511n)]),
);

export const snapshotL1TooLarge = snapshotFieldCorruption(
  'snapshot-l1-too-large',
  'a snapshot table entry gets an l1_size above 4 Mi entries (test 080: check ERROR snapshot N ... L1 table is too large)',
  'l1_size',
  (_l, rng) => pick(rng, [MAX_L1_ENTRIES + 1n, 0x10000000n, 0xffffffffn, MAX_L1_ENTRIES + 1n + bigBelow(rng, 0xffffffffn - MAX_L1_ENTRIES)]),
);

export const snapshotL1PastEof = snapshotFieldCorruption(
  'snapshot-l1-past-eof',
  'a snapshot table entry gets a cluster-aligned L1 offset past the end of the file',
  'l1_table_offset',
  (l, rng) => pastEof(l, rng, (1n << 63n) - 1n),
);

/**
 * Rewrites snapshot `i` of the table with `change` applied to its fields: the whole table is encoded
 * again (entries after it move), in place; bytes of the old table past the new end are zeroed.
 * Returns undefined when the new table does not fit the clusters the old one occupies.
 */
export function rewriteSnapshot(l: FileLayout, p: Poker, i: number, change: (f: SnapshotEntryFields) => SnapshotEntryFields): string | undefined {
  const entries = snapshotFields(l)!;
  const n = entries.length;
  const parts = entries.map((e, k) => {
    const f = k === i ? change(e.fields) : e.fields;
    const isLast = k + 1 === n;
    const len = 40 + f.lenExtraData + f.lenId + f.lenName;
    const { padding: _old, ...rest } = f;
    const fixed: SnapshotEntryFields = isLast ? rest : { ...rest, padding: new Uint8Array((8 - (len % 8)) % 8) };
    return encodeSnapshotEntry(fixed, { clusterBits: l.clusterBits, extendedL2: l.extendedL2, isLast });
  });
  const total = parts.reduce((a, b) => a + b.length, 0);
  const start = l.header.snapshotsOffset;
  const room = ((BigInt(l.snapshotTableBytes) + l.clusterSize - 1n) / l.clusterSize) * l.clusterSize;
  if (BigInt(total) > room) return undefined;
  // The table's last cluster is usually where the file ends: it may grow inside it.
  p.grow(start + BigInt(total));
  const table = new Uint8Array(Math.max(total, l.snapshotTableBytes));
  let at = 0;
  for (const part of parts) {
    table.set(part, at);
    at += part.length;
  }
  // Record the changed bytes as runs of 8-byte (or shorter, at the end) big-endian words.
  for (let k = 0; k < table.length; k += 8) {
    const w = Math.min(8, table.length - k);
    const off = start + BigInt(k);
    let v = 0n;
    for (let j = 0; j < w; j++) v = (v << 8n) | BigInt(table[k + j]!);
    if (p.read(off, 8 * w) !== v) p.set('snapshot table', `bytes ${k}..${k + w - 1}`, off, 8 * w, v);
  }
  return `table rewritten (${l.snapshotTableBytes} → ${total} bytes)`;
}

export type ExtraData = SnapshotEntryFields['extraData'];

/**
 * A snapshot corruption that gives the snapshot `length(rng)` bytes of extra data (`extra` makes
 * them from the old ones) by rewriting the snapshot table; `noRoom` says why not when the new table
 * does not fit the old one's clusters.
 */
export function extraDataCorruption(
  name: CorruptionName,
  title: string,
  requires: (l: FileLayout) => string | undefined,
  length: (rng: Rng) => number,
  extra: (l: FileLayout, old: ExtraData, len: number) => ExtraData,
  noRoom: string,
): Corruption {
  return snapshotCorruption(name, title, (l, rng, p, i, e) => {
    const len = length(rng);
    const how = rewriteSnapshot(l, p, i, (f) => ({ ...f, lenExtraData: len, extraData: extra(l, f.extraData, len) }));
    if (how === undefined) return { reason: noRoom };
    return `snapshot ${i} extra data ${e.fields.lenExtraData} → ${len} bytes; ${how}`;
  }, requires);
}

export const snapshotExtraShort = extraDataCorruption(
  'snapshot-extra-data-short',
  'a version 3 snapshot entry gets less than 16 bytes of extra data (docs/format/snapshots.md#extra-data: check ERROR snapshot table entry N is incomplete; -r all rewrites the table)',
  (l) => (l.version < 3 ? 'version 2: snapshot entries need no extra data' : undefined),
  (rng) => pick(rng, [0, 8, 1 + rng.int(15)]),
  (_l, old, len) => ({
    ...(len >= 8 ? { vmStateSizeLarge: old.vmStateSizeLarge ?? { hi: 0, lo: 0 } } : {}),
    unknown: new Uint8Array(len >= 8 ? len - 8 : len),
  }),
  'the rewritten table does not fit',
);

export const snapshotExtraTooLarge = extraDataCorruption(
  'snapshot-extra-data-too-large',
  'a snapshot entry gets more than 1024 bytes of extra data (docs/format/snapshots.md#limits: Too much extra metadata in snapshot table entry N; -r all drops it)',
  () => undefined,
  (rng) => QCOW_MAX_SNAPSHOT_EXTRA_DATA + 1 + rng.int(64) * 8,
  (l, old, len) => {
    const known = 24;
    const zero = { hi: 0, lo: 0 };
    return { vmStateSizeLarge: old.vmStateSizeLarge ?? zero, diskSize: old.diskSize ?? { hi: Number(l.size >> 32n), lo: Number(l.size & 0xffffffffn) }, icount: old.icount ?? { hi: 0xffffffff, lo: 0xffffffff }, unknown: new Uint8Array(len - known) };
  },
  'the enlarged table does not fit the clusters of the old one',
);
