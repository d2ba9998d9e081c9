/**
 * The invalid families. Two kinds:
 *
 * - Header-level and CVE classes (this file's pokes): images QEMU 7.2 refuses to open — oversized
 *   tables (L1, refcount table, snapshot table), size arithmetic that overflows (table offset + size
 *   past INT64_MAX, a virtual size whose L1 index exceeds INT_MAX), unknown incompatible bits,
 *   compression-type/bit mismatch, bad header lengths and offsets, bad extensions, bad snapshot
 *   entries — each one family named after its check (src/open/open.ts OpenErrorCode), expected
 *   outcome `reject-open` with QEMU's message; plus backing/data-file names that escape the image's
 *   directory (CVE-2015-1851, CVE-2024-32498), which QEMU follows and a safe reader must refuse
 *   (recorded as a deliberate QEMU difference).
 * - Check-level corruptions (src/corrupt/catalog.ts: refcounts, metadata overlap, unaligned and
 *   reserved bits, offsets past EOF, subcluster bitmaps, snapshot entries): the image opens, and
 *   `qemu-img check` reports it — expected outcome `reject-check` with the counts — unless QEMU's open
 *   already refuses it (then `reject-open`).
 *
 * Every expectation comes from the model (openImage, checkImage); a family states what it intends
 * (the open error code) and generation fails if the model disagrees.
 */
import { encodeFeatureNameEntry, FeatureType, HEADER_MAGIC_U32, HeaderExtensionType } from '../../generated/qcow2.ts';
import { corrupt, CORRUPTIONS, type CorruptionName } from '../corrupt/index.ts';
import { INT64_MAX } from '../format/index.ts';
import type { CreateOptions } from '../model/index.ts';
import type { OpenErrorCode } from '../open/index.ts';
import type { Op } from '../model/index.ts';
import { addBitmaps } from './bitmaps.ts';
import { buildImage, createOptionsRecord, type BuiltImage } from './build.ts';
import { checkExpectation, openCase } from './expect.ts';
import { imageFeatures } from './features.ts';
import type { CaseFile, Family, FamilyContext, FamilyOutput, SharedFile } from './family.ts';
import { HEADER_FIELD, peek, poke, pokeHeader, readHeaderCluster, writeHeaderCluster, type RawExtension } from './header-edit.ts';
import type { CheckExpectation, CorpusCase } from './manifest.ts';
import { payload, randomOps } from './op-gen.ts';
import type { Prng } from './prng.ts';
import { IMAGE_NAME } from './valid-case.ts';

const K = 1024;
const SMALL_CLUSTERS: readonly number[] = [512, 512, 1 * K, 1 * K, 2 * K];
const U32_MAX = 0xffffffffn;
const U64_MAX = (1n << 64n) - 1n;

/** What an invalid image is made from before its poke. */
interface Base {
  readonly built: BuiltImage;
  readonly create: CreateOptions;
  readonly clusterSize: number;
}

/** A small valid image with some data (the thing the pokes break). */
function baseImage(prng: Prng, create: Partial<CreateOptions> = {}): Base {
  const clusterSize = create.clusterSize ?? prng.pick(SMALL_CLUSTERS);
  const size = create.size ?? BigInt(clusterSize) * BigInt(prng.int(8, 32));
  const c: CreateOptions = { ...create, size, clusterSize };
  // One to three ops: the poke is what the case is about, the data only gives it something to break.
  const ops = randomOps(prng, { size, clusterSize }, prng.int(1, 3), { compress: 1 });
  return { built: buildImage(c, ops), create: c, clusterSize };
}

/** A boundary-ish value in [lo, hi]: one of the ends, a power of two inside, or a random value. */
function boundary(prng: Prng, lo: bigint, hi: bigint): bigint {
  const candidates = [lo, hi, lo + 1n <= hi ? lo + 1n : lo];
  for (let b = 0n; b < 64n; b++) if ((1n << b) >= lo && (1n << b) <= hi) candidates.push(1n << b);
  const pick = prng.pick(candidates);
  if (prng.chance(0.3)) {
    const span = hi - lo;
    let r = 0n;
    for (let i = 0; i < 3; i++) r = (r << 32n) | BigInt(prng.nextU32());
    return lo + (span === 0n ? 0n : r % (span + 1n));
  }
  return pick;
}

/** What a reject-open family's maker returns. */
interface Poked {
  readonly bytes: Uint8Array;
  readonly create: CreateOptions;
  /** Tags describing the poke (e.g. "cve:size-overflow"). */
  readonly features: readonly string[];
}

/** A family of images QEMU refuses at open with `code`. */
function openFamily(code: OpenErrorCode, doc: string, make: (prng: Prng) => Poked): Family {
  const name = `invalid/${code}`;
  return {
    name,
    valid: false,
    doc,
    generate(ctx: FamilyContext): FamilyOutput {
      const p = make(ctx.prng);
      const outcome = openCase({ image: p.bytes });
      if (outcome.ok) throw new Error(`${name}: the model opens the poked image (${p.features.join(', ')})`);
      if (outcome.code !== code) throw new Error(`${name}: the model refuses the image with ${outcome.code} (${outcome.qemuMessage}), not ${code}`);
      const files: CaseFile[] = [{ path: `${ctx.id}/${IMAGE_NAME}`, bytes: p.bytes }];
      const entry: CorpusCase = {
        id: ctx.id,
        family: name,
        valid: false,
        features: [...p.features].sort(),
        options: createOptionsRecord(p.create),
        files: { image: files[0]!.path },
        expect: { kind: 'reject-open', errorClass: code, qemuMessage: outcome.qemuMessage },
      };
      return { entry, files };
    },
  };
}

/** A poke of one header field of a base image. */
function headerPoke(prng: Prng, field: keyof typeof HEADER_FIELD, value: (b: Base) => bigint, base: Partial<CreateOptions> = {}, tags: readonly string[] = []): Poked {
  const b = baseImage(prng, base);
  const v = value(b);
  return { bytes: pokeHeader(b.built.bytes, field, v), create: b.create, features: [`poke:${field}=0x${v.toString(16)}`, ...tags] };
}

/** Cluster 0 of a base image rewritten with `change` (header fields and extensions). */
function clusterPoke(prng: Prng, change: (c: ReturnType<typeof readHeaderCluster>, b: Base) => ReturnType<typeof readHeaderCluster>, base: Partial<CreateOptions> = {}, tags: readonly string[] = []): Poked {
  const b = baseImage(prng, base);
  const c = readHeaderCluster(b.built.bytes);
  return { bytes: writeHeaderCluster(b.built.bytes, change(c, b)), create: b.create, features: tags };
}

// ---------------------------------------------------------------------------------------------
// Header fields (docs/format/open-validation.md#qemus-order #1-#18, #21-#22, block-layer limits; test 080)

const headerFamilies: Family[] = [
  openFamily('bad-magic', 'the magic is not QFI\\xfb (opened as qcow2: "Image is not in qcow2 format")', (prng) =>
    headerPoke(prng, 'magic', () => {
      let m = BigInt(prng.nextU32());
      while (m === BigInt(HEADER_MAGIC_U32)) m = BigInt(prng.nextU32());
      return prng.chance(0.3) ? 0n : m;
    })),
  openFamily('unsupported-version', 'version other than 2 or 3 (0, 1, 4, up to 2^32-1)', (prng) =>
    headerPoke(prng, 'version', () => prng.pick([0n, 1n, 4n, 5n, 0x7fffffffn, U32_MAX]))),
  openFamily('unsupported-cluster-size', 'cluster_bits outside 9..21', (prng) =>
    headerPoke(prng, 'clusterBits', () => prng.pick([0n, 1n, 8n, 22n, 31n, 32n, 63n, 64n, U32_MAX]))),
  openFamily('header-too-short', 'version 3 with header_length below 104', (prng) =>
    headerPoke(prng, 'headerLength', () => prng.pick([0n, 1n, 72n, 100n, 103n]))),
  openFamily('header-exceeds-cluster', 'header_length larger than a cluster (up to 2^32-1, test 080)', (prng) =>
    headerPoke(prng, 'headerLength', (b) => boundary(prng, BigInt(b.clusterSize) + 1n, U32_MAX))),
  openFamily('invalid-backing-offset', 'backing_file_offset past the end of cluster 0 (up to 2^64-1)', (prng) =>
    headerPoke(prng, 'backingFileOffset', (b) => boundary(prng, BigInt(b.clusterSize) + 1n, U64_MAX), {}, ['cve:offset-out-of-bounds'])),
  openFamily('unknown-compression-type', 'compression_type other than 0 (zlib) and 1 (zstd)', (prng) => {
    const withBit = prng.chance(0.5);
    return clusterPoke(prng, (c) => ({
      ...c,
      header: { ...c.header, compressionType: prng.int(2, 255), incompatibleFeatures: withBit ? c.header.incompatibleFeatures | 8n : c.header.incompatibleFeatures },
    }), {}, [`incompatible-bit-3:${withBit}`]);
  }),
  openFamily('compression-bit-mismatch', 'compression_type and incompatible bit 3 disagree (zstd without the bit, or the bit with zlib)', (prng) => {
    const zstdWithoutBit = prng.chance(0.5);
    return clusterPoke(prng, (c) => ({
      ...c,
      header: zstdWithoutBit
        ? { ...c.header, compressionType: 1, incompatibleFeatures: c.header.incompatibleFeatures & ~8n }
        : { ...c.header, compressionType: 0, incompatibleFeatures: c.header.incompatibleFeatures | 8n },
    }), zstdWithoutBit ? { compressionType: 'zstd' } : {}, [zstdWithoutBit ? 'zstd-without-bit' : 'bit-with-zlib']);
  }),
  openFamily('unsupported-feature', 'unknown incompatible feature bits (5..63), sometimes named in the feature name table', (prng) => {
    let mask = 0n;
    for (let i = prng.int(1, 3); i > 0; i--) mask |= 1n << BigInt(prng.int(5, 63));
    const named = prng.chance(0.5);
    return clusterPoke(prng, (c) => {
      const exts: RawExtension[] = [...c.extensions];
      if (named) {
        // A feature table entry naming the lowest unknown bit (QEMU prints the name, docs/format/open-validation.md#unknown-incompatible-bits).
        let bit = 0;
        while (((mask >> BigInt(bit)) & 1n) === 0n) bit++;
        const entry = encodeFeatureNameEntry({ featureType: FeatureType.INCOMPATIBLE, bit, name: `corpus feature ${bit}` });
        const i = exts.findIndex((e) => e.type === HeaderExtensionType.FEATURE_NAME_TABLE);
        if (i >= 0) {
          const data = new Uint8Array(exts[i]!.data.length + entry.length);
          data.set(exts[i]!.data);
          data.set(entry, exts[i]!.data.length);
          exts[i] = { type: HeaderExtensionType.FEATURE_NAME_TABLE, data };
        } else {
          exts.push({ type: HeaderExtensionType.FEATURE_NAME_TABLE, data: entry });
        }
      }
      return { ...c, extensions: exts, header: { ...c.header, incompatibleFeatures: c.header.incompatibleFeatures | mask } };
    }, { compat: '1.1' }, [`unknown-incompatible-mask:0x${mask.toString(16)}`, `named-in-feature-table:${named}`]);
  }),
  openFamily('unsupported-subcluster-size', 'extended L2 (incompatible bit 4) with clusters below 16 KiB (subclusters below 512 bytes)', (prng) =>
    clusterPoke(prng, (c) => ({ ...c, header: { ...c.header, incompatibleFeatures: c.header.incompatibleFeatures | 16n } }), { clusterSize: prng.pick([512, 1 * K, 2 * K, 4 * K, 8 * K]) })),
  openFamily('refcount-width-too-large', 'refcount_order above 6 (refcount entries wider than 64 bits)', (prng) =>
    headerPoke(prng, 'refcountOrder', () => prng.pick([7n, 8n, 31n, 64n, U32_MAX]))),
  openFamily('no-refcount-table', 'refcount_table_clusters = 0', (prng) => headerPoke(prng, 'refcountTableClusters', () => 0n)),
  openFamily('refcount-table-too-large', 'a refcount table above 8 MiB (refcount_table_clusters up to 2^32-1)', (prng) =>
    headerPoke(prng, 'refcountTableClusters', (b) => boundary(prng, (8n << 20n) / BigInt(b.clusterSize) + 1n, U32_MAX), {}, ['cve:oversized-table'])),
  openFamily('refcount-table-offset-invalid', 'refcount table offset unaligned, or its end past INT64_MAX (size arithmetic overflow)', (prng) =>
    headerPoke(prng, 'refcountTableOffset', (b) => {
      const cs = BigInt(b.clusterSize);
      return prng.chance(0.5) ? cs * BigInt(prng.int(1, 64)) + BigInt(prng.int(1, Number(cs) - 1)) : INT64_MAX - cs + 1n + (prng.chance(0.5) ? 0n : (1n << 63n));
    }, {}, ['cve:size-overflow'])),
  openFamily('snapshot-table-too-large', 'nb_snapshots above 65536', (prng) =>
    headerPoke(prng, 'nbSnapshots', () => boundary(prng, 65537n, U32_MAX), {}, ['cve:oversized-table'])),
  openFamily('snapshot-table-offset-invalid', 'snapshots_offset unaligned or past INT64_MAX (checked even with 0 snapshots, test 080)', (prng) =>
    headerPoke(prng, 'snapshotsOffset', (b) => {
      const cs = BigInt(b.clusterSize);
      return prng.chance(0.5) ? cs * BigInt(prng.int(1, 64)) + BigInt(prng.int(1, Number(cs) - 1)) : U64_MAX - cs + 1n;
    }, {}, ['cve:size-overflow'])),
  openFamily('l1-too-large', 'an active L1 table above 32 MiB (l1_size up to 2^32-1)', (prng) =>
    headerPoke(prng, 'l1Size', () => boundary(prng, (32n << 20n) / 8n + 1n, U32_MAX), {}, ['cve:oversized-table'])),
  openFamily('l1-offset-invalid', 'active L1 offset unaligned, or offset + l1_size × 8 past INT64_MAX (size arithmetic overflow)', (prng) =>
    headerPoke(prng, 'l1TableOffset', (b) => {
      const cs = BigInt(b.clusterSize);
      // Unaligned, or aligned at 2^63 or above, where offset + l1_size × 8 exceeds INT64_MAX whatever l1_size is.
      return prng.chance(0.5) ? cs * BigInt(prng.int(1, 64)) + BigInt(prng.int(1, Number(cs) - 1)) : boundary(prng, 1n << 63n, U64_MAX) & ~(cs - 1n);
    }, {}, ['cve:size-overflow'])),
  openFamily('image-too-big', 'a virtual size whose last L1 index exceeds INT_MAX (size arithmetic overflow)', (prng) =>
    headerPoke(prng, 'size', (b) => {
      const l2Bytes = BigInt(b.clusterSize) * BigInt(b.clusterSize / 8);
      // Up to 2^63: above, QEMU's size-to-L1 rounding wraps modulo 2^64 (the next family).
      return boundary(prng, (0x80000000n * l2Bytes) + 1n, 1n << 63n);
    }, { clusterSize: prng.pick([512, 1 * K, 4 * K]) }, ['cve:size-overflow'])),
  openFamily('virtual-size-too-large', 'a virtual size within one L2 range of 2^64: QEMU\'s size-to-L1 rounding wraps to a small L1 size, and the block layer refuses the size afterwards', (prng) =>
    headerPoke(prng, 'size', (b) => {
      const l2Bytes = BigInt(b.clusterSize) * BigInt(b.clusterSize / 8);
      return boundary(prng, U64_MAX - l2Bytes + 2n, U64_MAX);
    }, {}, ['cve:size-overflow', 'arithmetic-wraps'])),
  openFamily('l1-too-small', 'l1_size smaller than the virtual size needs (virtual size raised, or l1_size lowered)', (prng) => {
    const b = baseImage(prng, { clusterSize: prng.pick([512, 1 * K, 4 * K]) });
    const l2Bytes = BigInt(b.clusterSize) * BigInt(b.clusterSize / 8);
    const grow = prng.chance(0.5) || b.built.image.header.l1Size === 0;
    const bytes = grow
      ? pokeHeader(b.built.bytes, 'size', l2Bytes * BigInt(b.built.image.header.l1Size + prng.int(1, 100)))
      : pokeHeader(b.built.bytes, 'l1Size', BigInt(prng.int(0, b.built.image.header.l1Size - 1)));
    return { bytes, create: b.create, features: [grow ? 'size-raised' : 'l1-size-lowered'] };
  }),
  openFamily('unsupported-encryption-method', 'crypt_method other than 0, 1 and 2', (prng) =>
    headerPoke(prng, 'cryptMethod', () => prng.pick([3n, 4n, 255n, U32_MAX]))),
  openFamily('missing-crypto-header', 'crypt_method 2 (LUKS) without the full disk encryption header extension', (prng) =>
    headerPoke(prng, 'cryptMethod', () => 2n)),
  openFamily('backing-name-too-long', 'backing_file_size above 1023 or past the end of cluster 0', (prng) => {
    const b = baseImage(prng);
    const off = BigInt(prng.int(112, Math.min(b.clusterSize, 4096) - 8) & ~7);
    const bytes = pokeHeader(pokeHeader(b.built.bytes, 'backingFileOffset', off), 'backingFileSize', boundary(prng, 1024n, U32_MAX));
    return { bytes, create: b.create, features: ['cve:length-out-of-bounds'] };
  }),
];

// ---------------------------------------------------------------------------------------------
// Header extensions (docs/format/extensions.md, docs/format/open-validation.md#qemus-order #19-#20)

const extensionFamilies: Family[] = [
  openFamily('extension-too-large', 'a header extension whose length runs past the end of cluster 0 or the backing file name (test 080)', (prng) => {
    const b = baseImage(prng);
    const c = readHeaderCluster(b.built.bytes);
    const withBacking = prng.chance(0.5);
    const type = prng.pick([0x12345678, HeaderExtensionType.FEATURE_NAME_TABLE, HeaderExtensionType.BACKING_FILE_FORMAT]);
    const exts: RawExtension[] = [...c.extensions, { type, data: new Uint8Array(8) }];
    const bytes = writeHeaderCluster(b.built.bytes, { ...c, extensions: exts, ...(withBacking ? { backingName: new TextEncoder().encode('backing.qcow2') } : {}) });
    // The added extension is the last before the end marker: its length field then claims more
    // bytes than are left before the end of the extension area.
    const headerLen = c.header.version === 2 ? 72 : c.header.headerLength;
    const at = headerLen + c.extensions.reduce((n, e) => n + 8 + ((e.data.length + 7) & ~7), 0);
    const areaEnd = withBacking ? Number(peek(bytes, HEADER_FIELD.backingFileOffset.offset, HEADER_FIELD.backingFileOffset.size)) : b.clusterSize;
    const len = boundary(prng, BigInt(areaEnd - (at + 8) + 1), U32_MAX);
    return { bytes: poke(bytes, at + 4, 4, len), create: b.create, features: ['cve:length-out-of-bounds', `extension-area-ends-at:${withBacking ? 'backing-name' : 'cluster-end'}`] };
  }),
  openFamily('backing-format-too-long', 'a backing format extension of 16 bytes or more', (prng) =>
    clusterPoke(prng, (c) => ({
      ...c,
      extensions: [{ type: HeaderExtensionType.BACKING_FILE_FORMAT, data: new TextEncoder().encode('q'.repeat(prng.int(16, 64))) }, ...c.extensions],
      backingName: new TextEncoder().encode('backing.qcow2'),
    }))),
  openFamily('data-file-required', 'incompatible bit 2 (external data file) without a data file name', (prng) =>
    clusterPoke(prng, (c) => ({ ...c, header: { ...c.header, incompatibleFeatures: c.header.incompatibleFeatures | 4n } }), { compat: '1.1' })),
  openFamily('data-file-raw-without-data-file', 'autoclear bit 1 (raw external data) without incompatible bit 2', (prng) =>
    clusterPoke(prng, (c) => ({ ...c, header: { ...c.header, autoclearFeatures: c.header.autoclearFeatures | 2n } }), { compat: '1.1' })),
  openFamily('crypto-extension-unexpected', 'a full disk encryption header extension on an image that is not LUKS-encrypted', (prng) =>
    clusterPoke(prng, (c, b) => ({ ...c, extensions: [{ type: HeaderExtensionType.FULL_DISK_ENCRYPTION, data: cryptoPointer(BigInt(b.clusterSize) * 3n, 4096n) }, ...c.extensions] }))),
];

/** The 16 bytes of a full disk encryption pointer extension. */
function cryptoPointer(offset: bigint, length: bigint): Uint8Array {
  const out = new Uint8Array(16);
  const v = new DataView(out.buffer);
  v.setBigUint64(0, offset);
  v.setBigUint64(8, length);
  return out;
}

/** Bitmaps extension pokes on an image that has valid bitmaps. */
function bitmapsPoke(prng: Prng, change: (data: Uint8Array, cs: number) => Uint8Array, tag: string): Poked {
  const b = baseImage(prng, { compat: '1.1' });
  const withBitmaps = addBitmaps(b.built.image, prng, prng.int(1, 2)).bytes;
  const c = readHeaderCluster(withBitmaps);
  const exts = c.extensions.map((e) => (e.type === HeaderExtensionType.BITMAPS ? { type: e.type, data: change(e.data.slice(), b.clusterSize) } : e));
  return { bytes: writeHeaderCluster(withBitmaps, { ...c, extensions: exts }), create: b.create, features: ['bitmaps', tag] };
}

const bitmapFamilies: Family[] = [
  openFamily('bitmaps-extension-size', 'a bitmaps extension whose length is not 24', (prng) =>
    bitmapsPoke(prng, (d) => (prng.chance(0.5) ? d.subarray(0, prng.int(0, 23)) : Uint8Array.from([...d, ...prng.bytes(prng.int(1, 16))])), 'bitmaps-ext-length')),
  openFamily('bitmaps-reserved', 'a bitmaps extension with a non-zero reserved field', (prng) =>
    bitmapsPoke(prng, (d) => {
      new DataView(d.buffer, d.byteOffset).setUint32(4, prng.int(1, 0xffffffff));
      return d;
    }, 'bitmaps-reserved')),
  openFamily('too-many-bitmaps', 'a bitmaps extension claiming more than 65535 bitmaps', (prng) =>
    bitmapsPoke(prng, (d) => {
      new DataView(d.buffer, d.byteOffset).setUint32(0, Number(boundary(prng, 65536n, U32_MAX)));
      return d;
    }, 'cve:oversized-table')),
  openFamily('no-bitmaps', 'a bitmaps extension with zero bitmaps', (prng) =>
    bitmapsPoke(prng, (d) => {
      new DataView(d.buffer, d.byteOffset).setUint32(0, 0);
      return d;
    }, 'bitmaps-count-zero')),
  openFamily('bitmap-directory-offset', 'a bitmap directory offset that is not cluster aligned', (prng) =>
    bitmapsPoke(prng, (d, cs) => {
      const v = new DataView(d.buffer, d.byteOffset);
      v.setBigUint64(16, v.getBigUint64(16) + BigInt(prng.int(1, cs - 1)));
      return d;
    }, 'bitmap-directory-unaligned')),
  openFamily('bitmap-directory-too-large', 'a bitmap directory size above 1024 × 65535 bytes', (prng) =>
    bitmapsPoke(prng, (d) => {
      new DataView(d.buffer, d.byteOffset).setBigUint64(8, boundary(prng, 1024n * 65535n + 1n, U64_MAX));
      return d;
    }, 'cve:oversized-table')),
];

// ---------------------------------------------------------------------------------------------
// References that escape the image's directory (CVE-2015-1851, CVE-2024-32498)

/** The file the escaping names point at, in the corpus directory (outside every case directory). */
export const ESCAPE_TARGET = 'escape-target.raw';

/** Its content: a recognizable text, so a reader that follows the name shows it in its output. */
function escapeTarget(): SharedFile {
  const line = new TextEncoder().encode('qcow2-ref corpus: this file is outside the image\'s directory; a safe reader must not open it.\n');
  const bytes = new Uint8Array(8 * K);
  for (let at = 0; at < bytes.length; at += line.length) bytes.set(line.subarray(0, Math.min(line.length, bytes.length - at)), at);
  return { path: ESCAPE_TARGET, bytes };
}

/** A family of images that name a file outside their directory. */
function escapeFamily(kind: 'backing' | 'data-file'): Family {
  const code = kind === 'backing' ? 'backing-path-escapes' : 'data-file-path-escapes';
  const name = `invalid/${code}`;
  return {
    name,
    valid: false,
    doc: kind === 'backing'
      ? 'a backing file name that leads out of the image\'s directory (CVE-2015-1851): QEMU follows it, a safe reader refuses'
      : 'an external data file name that leads out of the image\'s directory (CVE-2024-32498): QEMU opens it, a safe reader refuses',
    generate(ctx: FamilyContext): FamilyOutput {
      const prng = ctx.prng;
      const target = `../${ESCAPE_TARGET}`;
      const cs = prng.pick(SMALL_CLUSTERS);
      const size = BigInt(cs) * BigInt(prng.int(8, 32));
      const create: CreateOptions = kind === 'backing'
        ? { size, clusterSize: cs, backingFile: target, backingFmt: 'raw' }
        : { size: 8n * 1024n, clusterSize: cs, dataFile: target };
      const built = buildImage(create, kind === 'backing' ? [{ kind: 'write', offset: 0n, data: payload(prng, 512, 'pattern') }] : []);
      const entry: CorpusCase = {
        id: ctx.id,
        family: name,
        valid: false,
        features: [`escaping-${kind}-name`, kind === 'backing' ? 'cve:CVE-2015-1851' : 'cve:CVE-2024-32498'],
        options: createOptionsRecord(create),
        // The target is listed (as the backing or data file QEMU would open) so that a harness that
        // copies a case's files with their corpus-relative paths recreates the escape.
        files: { image: `${ctx.id}/${IMAGE_NAME}`, ...(kind === 'backing' ? { backing: [ESCAPE_TARGET] } : { dataFile: ESCAPE_TARGET }) },
        expect: { kind: 'reject-open', errorClass: code, qemuMessage: '' },
        qemuDifference: kind === 'backing'
          ? `QEMU 7.2 opens the backing file '${target}' relative to the image's directory, out of it, and reads it`
          : `QEMU 7.2 opens the data file '${target}' (relative to its working directory), out of the image's directory, and reads it`,
      };
      return { entry, files: [{ path: entry.files.image, bytes: built.bytes }], shared: [escapeTarget()] };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Check-level corruptions from the catalog

/**
 * Corruptions whose outcome the manifest cannot express: QEMU opens the image, its check is clean,
 * and only a read of the affected cluster fails (docs/format/mapping.md#cluster-types). Left out.
 */
const NOT_EXPRESSIBLE: ReadonlySet<CorruptionName> = new Set<CorruptionName>(['v2-zero-flag']);

/** Corruptions that need extended L2 entries in the base image. */
const NEEDS_EXTENDED_L2: ReadonlySet<CorruptionName> = new Set<CorruptionName>(['compressed-nonzero-bitmap', 'alloc-and-zero-subcluster', 'alloc-bits-on-unallocated']);

/** Corruptions that grow the snapshot table in place: its cluster must have room for more than 1 KiB of extra data. */
const NEEDS_ROOMY_SNAPSHOT_TABLE: ReadonlySet<CorruptionName> = new Set<CorruptionName>(['snapshot-extra-data-too-large']);

/** The case for dirty-stale-refcounts is a valid family (lazy-refcounts-dirty): a crash's image is readable. */
const VALID_ELSEWHERE: ReadonlySet<CorruptionName> = new Set<CorruptionName>(['dirty-stale-refcounts']);

/** Corruptions that move an offset to a 512-byte boundary inside a cluster: none with 512-byte clusters. */
const NEEDS_SECTORS_IN_A_CLUSTER: ReadonlySet<CorruptionName> = new Set<CorruptionName>(['unaligned-l1-entry', 'unaligned-l2-entry', 'unaligned-refblock-entry']);

/**
 * Most base images tried before a corruption counts as not applicable to this family's bases; a last
 * one (a base whose clusters hold several sectors) follows for NEEDS_SECTORS_IN_A_CLUSTER.
 */
const MAX_ATTEMPTS = 8;

/**
 * A base image for catalog corruptions: data, compressed clusters, zero clusters and a snapshot.
 * `sectorsInACluster`: clusters of 1 or 2 KiB where the random choice includes 512 bytes.
 */
function richBase(prng: Prng, name: CorruptionName, sectorsInACluster = false): Base {
  const extendedL2 = NEEDS_EXTENDED_L2.has(name);
  const clusterSize = extendedL2 ? 16 * K : NEEDS_ROOMY_SNAPSHOT_TABLE.has(name) ? prng.pick([2 * K, 4 * K]) : prng.pick(sectorsInACluster ? [1 * K, 2 * K] : [512, 512, 1 * K, 2 * K]);
  const size = BigInt(clusterSize) * BigInt(extendedL2 ? prng.int(4, 6) : prng.int(8, 24));
  const create: CreateOptions = { size, clusterSize, ...(extendedL2 ? { extendedL2: true } : {}) };
  const space = { size, clusterSize, zeroGranularity: extendedL2 ? clusterSize / 32 : 512 };
  // Compressed clusters first (a compressed write needs an unallocated target), then anything.
  const first = prng.int(0, 3);
  const compressed: Op[] = Array.from({ length: prng.int(1, extendedL2 ? 1 : 3) }, (_, i) => ({
    kind: 'writeCompressed' as const,
    offset: BigInt((first + i) * clusterSize),
    data: payload(prng, clusterSize, prng.pick(['pattern', 'text'] as const)),
  }));
  // Extended-L2 corruptions need no snapshot (and 16 KiB clusters make every extra cluster costly).
  const ops: Op[] = extendedL2
    ? [...compressed, ...randomOps(prng, { ...space, maxClusters: 1 }, prng.int(1, 2), { writeUnaligned: 2, zero: 0, zeroUnmap: 0, discard: 0 })]
    : [
      ...compressed,
      ...randomOps(prng, space, prng.int(1, 4), { compress: 1, writeUnaligned: 2 }),
      { kind: 'snapshotCreate', name: 'corpus-snap' },
      ...randomOps(prng, space, prng.int(1, 2), { compress: 1 }),
    ];
  return { built: buildImage(create, ops), create, clusterSize };
}

/** A family for one catalog corruption. */
function catalogFamily(name: CorruptionName, title: string): Family {
  const family = `invalid/${name}`;
  return {
    name: family,
    valid: false,
    doc: title,
    generate(ctx: FamilyContext): FamilyOutput {
      const prng = ctx.prng;
      const rng = { int: (n: number): number => prng.int(0, n - 1) };
      const reasons: string[] = [];
      // Random bases first (the cases of every seed that found one keep their bytes), then, for a
      // corruption that 512-byte clusters cannot express, one base that can: no seed fails for
      // drawing 512-byte clusters eight times (seed 7, invalid/unaligned-l2-entry.0022).
      const attempts = MAX_ATTEMPTS + (NEEDS_SECTORS_IN_A_CLUSTER.has(name) ? 1 : 0);
      for (let attempt = 0; attempt < attempts; attempt++) {
        const base = richBase(prng, name, attempt === MAX_ATTEMPTS);
        const r = corrupt(base.built.bytes, name, rng);
        if (r.kind !== 'applied') {
          reasons.push(r.reason);
          continue;
        }
        const outcome = openCase({ image: r.bytes });
        let expect: CorpusCase['expect'];
        if (!outcome.ok) {
          expect = { kind: 'reject-open', errorClass: outcome.code, qemuMessage: outcome.qemuMessage };
        } else {
          const check = checkExpectation(outcome.image);
          if (check.exitCode === 0) {
            // Invisible to check (e.g. a refcount raised past the end of the file, docs/format/surprises.md#28-refcounts-past-the-end-of-the-file): try another base.
            reasons.push(`check is clean after: ${r.description}`);
            continue;
          }
          expect = { kind: 'reject-check', errorClass: name, check: check as CheckExpectation<1 | 2 | 3> };
        }
        const entry: CorpusCase = {
          id: ctx.id,
          family,
          valid: false,
          // What the base image held (read from the corrupted file: the corruptions keep the header decodable).
          features: [...new Set([`corruption:${r.category}`, ...imageFeatures(r.bytes)])].sort(),
          options: createOptionsRecord(base.create),
          files: { image: `${ctx.id}/${IMAGE_NAME}` },
          virtualSize: base.built.image.header.size.toString(),
          expect,
        };
        return { entry, files: [{ path: entry.files.image, bytes: r.bytes }] };
      }
      throw new Error(`${family}: no expressible case in ${attempts} attempts: ${reasons.slice(0, 3).join('; ')}`);
    },
  };
}

const catalogFamilies: Family[] = CORRUPTIONS
  .filter((c) => !NOT_EXPRESSIBLE.has(c.name) && !VALID_ELSEWHERE.has(c.name))
  .map((c) => catalogFamily(c.name, c.title));

/** Every invalid family, in a fixed order. */
export const INVALID_FAMILIES: readonly Family[] = [
  ...headerFamilies,
  ...extensionFamilies,
  ...bitmapFamilies,
  escapeFamily('backing'),
  escapeFamily('data-file'),
  ...catalogFamilies,
];

/** The catalog corruptions that have no family, and why (for the report and the docs). */
export const CATALOG_EXCLUSIONS: Readonly<Record<string, string>> = {
  'v2-zero-flag': 'QEMU opens the image and its check is clean; only reading the cluster fails, which the manifest cannot express',
  'dirty-stale-refcounts': 'a crash with lazy refcounts leaves a readable image: it is the valid family lazy-refcounts-dirty',
};
