/**
 * QEMU 7.2's open-time validation (src/open/open.ts) side by side with qemu-io / qemu-img on the
 * same file. Every case builds its image with `qemu-img create` (and `qemu-img snapshot`), pokes the
 * bytes as QEMU's tests/qemu-iotests/080 does (docs/format/iotests.md#test-080-cases) or as the docs/format/open-validation.md / extensions.md check needs, and
 * then asserts, for the same file:
 * - our openImage throws an OpenError with the expected code, QEMU's message and the place in the file
 *   (or opens it, when QEMU does);
 * - QEMU's tool prints the same message (its text comes from qemu at test time);
 * - both equal the literal in docs/format/, so a change on either side is caught.
 * The open flags follow the tool: `qemu-io` opens read/write (writable), `qemu-io -r` read-only,
 * `qemu-img info` without I/O (noIo), `qemu-img map` read-only, `qemu-img check` in check mode.
 * Deliberate differences are tested as such (docs/open-validation.md).
 *
 * 080 cases covered here: huge header size (2), huge unknown header extension (3), huge refcount
 * table size (2), misaligned refcount table, huge refcount offset, invalid snapshot table (4), the
 * open part of "hitting snapshot table size limit" (65536 entries past the end of the file open),
 * invalid L1 table (4), invalid L1 table with an internal snapshot, invalid backing file size, and
 * every case of docs/format/iotests.md#additional-header-cases. Left to the check/repair tests (they are about
 * `snapshot -c`, `convert -s`, `amend`, `snapshot -a/-d` and check, not open): invalid L2 entry (huge
 * physical offset), invalid snapshot L1 table offset / size, and `snapshot -c` on the 16 MiB table.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { copyFile, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileReader } from '../../src/io/file-reader.ts';
import { main } from '../../src/cli/main.ts';
import { isQcow2FormatError } from '../../src/codec/errors.ts';
import { storeImage } from '../../src/model/load-store.ts';
import { OpenError, openImage, openImageWithIo, type OpenErrorCode, type OpenOptions } from '../../src/open/open.ts';
import { qemuImgCreateArgs } from '../../src/qemu/qemu-img.ts';
import { requireQemu, runTool, type RunResult } from '../../src/qemu/run.ts';

let dir = '';

// ---------------------------------------------------------------------------------------------
// Images and pokes

/** Base images, each made once by qemu-img (64 MiB as in test 080 unless the name says otherwise). */
const BASES = {
  v3: { size: '64M', options: {} },
  v2: { size: '64M', options: { compat: '0.10' } },
  c4k: { size: '64M', options: { cluster_size: '4k' } },
  c2m: { size: '64M', options: { cluster_size: '2M' } },
  extl2: { size: '64M', options: { extended_l2: 'on' } },
  zstd: { size: '64M', options: { compression_type: 'zstd' } },
  lazy: { size: '64M', options: { lazy_refcounts: 'on' } },
  datafile: { size: '1M', options: { data_file: 'base-datafile.raw' } },
  empty: { size: '0', options: { compat: '0.10' } },
  // 080 "Invalid L1 table (with internal snapshot in the image)": `qemu-img snapshot -c foo`.
  snap: { size: '64M', options: {}, snapshot: 'foo' },
} as const satisfies Record<string, { size: string; options: Record<string, string>; snapshot?: string }>;
type BaseName = keyof typeof BASES;

/** Big-endian writes into a copy of a base image. */
class Poker {
  constructor(readonly b: Buffer) {}
  u8(at: number, v: number): this {
    this.b.writeUInt8(v, at);
    return this;
  }
  u16(at: number, v: number): this {
    this.b.writeUInt16BE(v, at);
    return this;
  }
  u32(at: number, v: number): this {
    this.b.writeUInt32BE(v >>> 0, at);
    return this;
  }
  u64(at: number, v: bigint): this {
    this.b.writeBigUInt64BE(v, at);
    return this;
  }
  /** A header field's current value. */
  get64(at: number): bigint {
    return this.b.readBigUInt64BE(at);
  }
  /**
   * Replaces the header extensions at `start` (header_length, 112 for 7.2's v3 images) by `exts`
   * (each padded to 8 bytes) and an end marker. `len` overrides the length field.
   */
  extensions(exts: readonly { type: number; data?: Uint8Array; len?: number }[], start = 112): this {
    let at = start;
    for (const e of exts) {
      const data = e.data ?? new Uint8Array(0);
      this.u32(at, e.type).u32(at + 4, e.len ?? data.length);
      this.b.set(data, at + 8);
      at += 8 + Math.ceil(data.length / 8) * 8;
    }
    this.b.fill(0, at, at + 8);
    return this;
  }
  /** The data offset of the first extension of `type` (start 112), or undefined. */
  findExtension(type: number, start = 112): number | undefined {
    for (let at = start; at + 8 <= 4096; ) {
      const t = this.b.readUInt32BE(at);
      const len = this.b.readUInt32BE(at + 4);
      if (t === 0) return undefined;
      if (t === type) return at + 8;
      at += 8 + Math.ceil(len / 8) * 8;
    }
    return undefined;
  }
}

const EXT_BACKING_FORMAT = 0xe2792aca;
const EXT_FEATURE_TABLE = 0x6803f857;
const EXT_CRYPTO = 0x0537be77;
const EXT_BITMAPS = 0x23852875;
const EXT_DATA_FILE = 0x44415441;

function be(parts: readonly (readonly [number, number | bigint])[]): Uint8Array {
  const size = parts.reduce((n, [w]) => n + w, 0);
  const b = Buffer.alloc(size);
  let at = 0;
  for (const [w, v] of parts) {
    if (w === 4) b.writeUInt32BE(Number(v) >>> 0, at);
    else b.writeBigUInt64BE(BigInt(v), at);
    at += w;
  }
  return b;
}
const bitmapsExt = (nb: number, reserved: number, dirSize: bigint, dirOffset: bigint): Uint8Array =>
  be([[4, nb], [4, reserved], [8, dirSize], [8, dirOffset]]);

// ---------------------------------------------------------------------------------------------
// How each tool opens the image, and what it prints

/** The tool that opens the image the way the case needs, with our matching open flags. */
type Via = 'qemu-io' | 'qemu-io -r' | 'info' | 'map' | 'check';

function viaOptions(via: Via): OpenOptions {
  switch (via) {
    case 'qemu-io':
      return { writable: true };
    case 'qemu-io -r':
    case 'map':
      return {};
    case 'info':
      return { noIo: true };
    case 'check':
      return { checkMode: true };
  }
}

function viaArgs(via: Via, path: string): { tool: 'qemu-img' | 'qemu-io'; args: string[] } {
  switch (via) {
    case 'qemu-io':
      return { tool: 'qemu-io', args: ['-f', 'qcow2', '-c', 'read 0 512', path] };
    case 'qemu-io -r':
      return { tool: 'qemu-io', args: ['-r', '-f', 'qcow2', '-c', 'read 0 512', path] };
    case 'info':
      return { tool: 'qemu-img', args: ['info', '-f', 'qcow2', path] };
    case 'map':
      return { tool: 'qemu-img', args: ['map', '-f', 'qcow2', path] };
    case 'check':
      return { tool: 'qemu-img', args: ['check', '-f', 'qcow2', path] };
  }
}

/** What QEMU said about opening `path`: its open error (message and hint lines), or none. */
interface QemuOpen {
  readonly result: RunResult;
  readonly error?: { readonly message: string; readonly hint?: string };
}

function parseQemuOpen(via: Via, path: string, r: RunResult): QemuOpen {
  const prefix = via.startsWith('qemu-io') ? `qemu-io: can't open device ${path}: ` : `qemu-img: Could not open '${path}': `;
  const lines = r.stderr.split('\n');
  const i = lines.findIndex((l) => l.startsWith(prefix));
  if (i < 0) return { result: r };
  const hint = lines.slice(i + 1).join('\n').trim();
  return { result: r, error: { message: lines[i]!.slice(prefix.length), ...(hint !== '' ? { hint } : {}) } };
}

// ---------------------------------------------------------------------------------------------
// The cases

interface Expected {
  readonly code: OpenErrorCode;
  /** The literal of docs/format/open-validation.md, extensions.md or iotests.md — or, where it has none, noted as measured. */
  readonly message: string;
  /** `structure.field@offset` of the check (docs/format/header.md / extensions.md / snapshots.md layouts). */
  readonly at: string;
  readonly hint?: string;
}

interface Case {
  readonly name: string;
  readonly base: BaseName;
  readonly poke?: (p: Poker) => void;
  readonly via: Via;
  /** Omitted: both open the image. */
  readonly expect?: Expected;
  /** Extra file preparation after the pokes (e.g. a sparse tail). */
  readonly after?: (path: string) => Promise<void>;
}

const hdr = (field: string, offset: number): string => `header.${field}@${offset}`;

const CASES: Case[] = [
  // ---- test 080 (docs/format/iotests.md#test-080-cases), opened by qemu-io read/write as 080 does
  { name: '080 huge header size 0xffffffff', base: 'v3', poke: (p) => p.u32(100, 0xffffffff), via: 'qemu-io',
    expect: { code: 'header-exceeds-cluster', message: 'qcow2 header exceeds cluster size', at: hdr('header_length', 100) } },
  { name: '080 huge header size 0x7fffffff', base: 'v3', poke: (p) => p.u32(100, 0x7fffffff), via: 'qemu-io',
    expect: { code: 'header-exceeds-cluster', message: 'qcow2 header exceeds cluster size', at: hdr('header_length', 100) } },
  { name: '080 huge unknown extension, backing offset 2^64-1', base: 'v3', via: 'qemu-io',
    poke: (p) => p.u64(8, (1n << 64n) - 1n).u32(112, 0x12345678).u32(116, 0x7fffffff),
    expect: { code: 'invalid-backing-offset', message: 'Invalid backing file offset', at: hdr('backing_file_offset', 8) } },
  { name: '080 huge unknown extension, backing offset 116 (inside the extension header)', base: 'v3', via: 'qemu-io',
    poke: (p) => p.u64(8, 116n).u32(112, 0x12345678).u32(116, 0x7fffffff),
    expect: { code: 'extension-too-large', message: 'Header extension too large', at: 'header_extension.len_data@116' } },
  { name: '080 huge unknown extension, no backing file', base: 'v3', via: 'qemu-io',
    poke: (p) => p.u32(112, 0x12345678).u32(116, 0x7fffffff),
    expect: { code: 'extension-too-large', message: 'Header extension too large', at: 'header_extension.len_data@116' } },
  { name: '080 huge refcount table size 0xffffffff', base: 'v3', poke: (p) => p.u32(56, 0xffffffff), via: 'qemu-io',
    expect: { code: 'refcount-table-too-large', message: 'Reference count table too large', at: hdr('refcount_table_clusters', 56) } },
  { name: '080 huge refcount table size 0x00020001', base: 'v3', poke: (p) => p.u32(56, 0x00020001), via: 'qemu-io',
    expect: { code: 'refcount-table-too-large', message: 'Reference count table too large', at: hdr('refcount_table_clusters', 56) } },
  { name: '080 misaligned refcount table', base: 'v3', poke: (p) => p.u64(48, 0x1234567890abcdefn), via: 'qemu-io',
    expect: { code: 'refcount-table-offset-invalid', message: 'Reference count table offset invalid', at: hdr('refcount_table_offset', 48) } },
  { name: '080 huge refcount offset', base: 'v3', poke: (p) => p.u64(48, 0xffffffffffff0000n).u32(56, 0x7f), via: 'qemu-io',
    expect: { code: 'refcount-table-offset-invalid', message: 'Reference count table offset invalid', at: hdr('refcount_table_offset', 48) } },
  { name: '080 invalid snapshot table: nb 0xffffffff', base: 'v3', poke: (p) => p.u32(60, 0xffffffff), via: 'qemu-io',
    expect: { code: 'snapshot-table-too-large', message: 'Snapshot table too large', at: hdr('nb_snapshots', 60) } },
  { name: '080 invalid snapshot table: nb 0x7fffffff', base: 'v3', poke: (p) => p.u32(60, 0x7fffffff), via: 'qemu-io',
    expect: { code: 'snapshot-table-too-large', message: 'Snapshot table too large', at: hdr('nb_snapshots', 60) } },
  { name: '080 invalid snapshot table: offset 0xffffffffffff0000, nb 0xffff', base: 'v3', via: 'qemu-io',
    poke: (p) => p.u64(64, 0xffffffffffff0000n).u32(60, 0xffff),
    expect: { code: 'snapshot-table-offset-invalid', message: 'Snapshot table offset invalid', at: hdr('snapshots_offset', 64) } },
  { name: '080 invalid snapshot table: misaligned offset with 0 snapshots', base: 'v3', via: 'qemu-io',
    poke: (p) => p.u64(64, 0x1234567890abcdefn).u32(60, 0),
    expect: { code: 'snapshot-table-offset-invalid', message: 'Snapshot table offset invalid', at: hdr('snapshots_offset', 64) } },
  { name: '080 hitting the snapshot table size limit: 65536 entries at 16 MiB (past the end) open', base: 'v3', via: 'qemu-io',
    poke: (p) => p.u64(64, 16n << 20n).u32(60, 65536) },
  { name: '080 invalid L1 table: l1_size 0xffffffff', base: 'v3', poke: (p) => p.u32(36, 0xffffffff), via: 'qemu-io',
    expect: { code: 'l1-too-large', message: 'Active L1 table too large', at: hdr('l1_size', 36) } },
  { name: '080 invalid L1 table: l1_size 0x7fffffff', base: 'v3', poke: (p) => p.u32(36, 0x7fffffff), via: 'qemu-io',
    expect: { code: 'l1-too-large', message: 'Active L1 table too large', at: hdr('l1_size', 36) } },
  { name: '080 invalid L1 table: offset 0x7fffffffffff0000, size 0xffff', base: 'v3', via: 'qemu-io',
    poke: (p) => p.u64(40, 0x7fffffffffff0000n).u32(36, 0xffff),
    expect: { code: 'l1-offset-invalid', message: 'Active L1 table offset invalid', at: hdr('l1_table_offset', 40) } },
  { name: '080 invalid L1 table: offset 0x1234567890abcdef, size 1', base: 'v3', via: 'qemu-io',
    poke: (p) => p.u64(40, 0x1234567890abcdefn).u32(36, 1),
    expect: { code: 'l1-offset-invalid', message: 'Active L1 table offset invalid', at: hdr('l1_table_offset', 40) } },
  { name: '080 invalid L1 table with an internal snapshot: l1_size 0 (qemu-img info)', base: 'snap', via: 'info',
    poke: (p) => p.u32(36, 0),
    expect: { code: 'l1-too-small', message: 'L1 table is too small', at: hdr('l1_size', 36) } },
  { name: '080 invalid backing file size', base: 'v3', via: 'qemu-io',
    poke: (p) => p.u64(8, 0x1000n).u32(16, 0xffffffff),
    expect: { code: 'backing-name-too-long', message: 'Backing file name too long', at: hdr('backing_file_size', 16) } },

  // ---- docs/format/iotests.md#additional-header-cases
  { name: 'version 4', base: 'v3', poke: (p) => p.u32(4, 4), via: 'qemu-io',
    expect: { code: 'unsupported-version', message: 'Unsupported qcow2 version 4', at: hdr('version', 4) } },
  { name: 'magic 0', base: 'v3', poke: (p) => p.u32(0, 0), via: 'qemu-io',
    expect: { code: 'bad-magic', message: 'Image is not in qcow2 format', at: hdr('magic', 0) } },
  { name: 'cluster_bits 8', base: 'v3', poke: (p) => p.u32(20, 8), via: 'qemu-io',
    expect: { code: 'unsupported-cluster-size', message: 'Unsupported cluster size: 2^8', at: hdr('cluster_bits', 20) } },
  { name: 'cluster_bits 22', base: 'v3', poke: (p) => p.u32(20, 22), via: 'qemu-io',
    expect: { code: 'unsupported-cluster-size', message: 'Unsupported cluster size: 2^22', at: hdr('cluster_bits', 20) } },
  { name: 'header_length 100', base: 'v3', poke: (p) => p.u32(100, 100), via: 'qemu-io',
    expect: { code: 'header-too-short', message: 'qcow2 header too short', at: hdr('header_length', 100) } },
  { name: 'refcount_order 7', base: 'v3', poke: (p) => p.u32(96, 7), via: 'qemu-io',
    expect: { code: 'refcount-width-too-large', message: 'Reference count entry width too large; may not exceed 64 bits', at: hdr('refcount_order', 96) } },
  { name: 'crypt_method 3', base: 'v3', poke: (p) => p.u32(32, 3), via: 'qemu-io',
    expect: { code: 'unsupported-encryption-method', message: 'Unsupported encryption method 3', at: hdr('crypt_method', 32) } },
  { name: 'extended L2 bit on 4 KiB clusters', base: 'c4k', poke: (p) => p.u64(72, 0x10n), via: 'qemu-io',
    expect: { code: 'unsupported-subcluster-size', message: 'Unsupported subcluster size: 128', at: hdr('incompatible_features', 72) } },
  { name: 'incompatible bit 63', base: 'v3', poke: (p) => p.u64(72, 1n << 63n), via: 'qemu-io',
    expect: { code: 'unsupported-feature', message: 'Unsupported qcow2 feature(s): Unknown incompatible feature: 8000000000000000', at: hdr('incompatible_features', 72) } },
  { name: 'refcount_table_clusters 0', base: 'v3', poke: (p) => p.u32(56, 0), via: 'qemu-io',
    expect: { code: 'no-refcount-table', message: 'Image does not contain a reference count table', at: hdr('refcount_table_clusters', 56) } },

  // ---- the other checks of docs/format/open-validation.md#qemus-order, in qcow2_do_open order
  { name: 'QEMU order: header_length > cluster before an invalid backing offset', base: 'v3', via: 'qemu-io',
    poke: (p) => p.u32(100, 0x20000).u64(8, 0x20000n),
    expect: { code: 'header-exceeds-cluster', message: 'qcow2 header exceeds cluster size', at: hdr('header_length', 100) } },
  { name: 'QEMU order: the L1 table before crypt_method (the generated decoder checks crypt_method first)', base: 'v3', via: 'qemu-io',
    poke: (p) => p.u32(32, 7).u32(36, 0xffffffff),
    expect: { code: 'l1-too-large', message: 'Active L1 table too large', at: hdr('l1_size', 36) } },
  { name: 'QEMU order: crypt_method before the header extensions', base: 'v3', via: 'qemu-io -r',
    poke: (p) => p.u32(32, 3).u32(112, 0x12345678).u32(116, 0x7fffffff),
    expect: { code: 'unsupported-encryption-method', message: 'Unsupported encryption method 3', at: hdr('crypt_method', 32) } },
  { name: 'QEMU order: header extensions before the backing file name', base: 'v3', via: 'qemu-io -r',
    poke: (p) => p.u64(8, 0x1000n).u32(16, 0xffffffff).extensions([{ type: EXT_BACKING_FORMAT, data: Buffer.from('0123456789abcdefg') }]),
    expect: { code: 'backing-format-too-long', message: 'ERROR: ext_backing_format: len=17 too large (>=16)', at: 'header_extension.len_data@116' } },
  { name: 'QEMU order: the backing file name before the snapshot table', base: 'snap', via: 'qemu-io -r',
    poke: (p) => p.u64(8, 0x1000n).u32(16, 1024).u32(Number(p.get64(64)) + 36, 5000),
    expect: { code: 'backing-name-too-long', message: 'Backing file name too long', at: hdr('backing_file_size', 16) } },
  { name: 'crypt_method 0xffffffff is printed signed', base: 'v3', poke: (p) => p.u32(32, 0xffffffff), via: 'qemu-io -r',
    expect: { code: 'unsupported-encryption-method', message: 'Unsupported encryption method -1', at: hdr('crypt_method', 32) } },
  { name: 'v3 header_length 104 (older QEMU) opens', base: 'v3', poke: (p) => p.u32(100, 104).extensions([]), via: 'qemu-io' },
  { name: 'header_length not a multiple of 8 (107) opens', base: 'v3', poke: (p) => p.u32(100, 107).extensions([], 107), via: 'qemu-io -r' },
  { name: 'unknown compression type 2', base: 'v3', poke: (p) => p.u8(104, 2), via: 'qemu-io -r',
    expect: { code: 'unknown-compression-type', message: 'qcow2: unknown compression type: 2', at: hdr('compression_type', 104) } },
  { name: 'zlib with incompatible bit 3', base: 'v3', poke: (p) => p.u64(72, 8n), via: 'qemu-io -r',
    expect: { code: 'compression-bit-mismatch', message: 'qcow2: Compression type incompatible feature bit must not be set', at: hdr('incompatible_features', 72) } },
  { name: 'zstd without incompatible bit 3', base: 'zstd', poke: (p) => p.u64(72, 0n), via: 'qemu-io -r',
    expect: { code: 'compression-bit-mismatch', message: 'qcow2: Compression type incompatible feature bit must be set', at: hdr('incompatible_features', 72) } },
  { name: 'header_length 104 hides a zstd byte: bit 3 must not be set', base: 'zstd', poke: (p) => p.u32(100, 104), via: 'qemu-io -r',
    expect: { code: 'compression-bit-mismatch', message: 'qcow2: Compression type incompatible feature bit must not be set', at: hdr('incompatible_features', 72) } },
  { name: 'unknown incompatible bits named by the feature table (table order, then the rest)', base: 'v3', via: 'qemu-io -r',
    poke: (p) => {
      // Rename the table's "extended L2 entries" entry (bit 4) to bit 9, then set bits 9 and 5.
      const t = p.findExtension(EXT_FEATURE_TABLE)!;
      for (let e = t; e < t + 384; e += 48) if (p.b[e] === 0 && p.b[e + 1] === 4) p.u8(e + 1, 9);
      p.u64(72, 0x220n);
    },
    expect: { code: 'unsupported-feature', message: 'Unsupported qcow2 feature(s): extended L2 entries, Unknown incompatible feature: 20', at: hdr('incompatible_features', 72) } },
  { name: 'unknown incompatible bits on 4 KiB clusters (no feature table)', base: 'c4k', poke: (p) => p.u64(72, 0x220n), via: 'qemu-io -r',
    expect: { code: 'unsupported-feature', message: 'Unsupported qcow2 feature(s): Unknown incompatible feature: 220', at: hdr('incompatible_features', 72) } },
  { name: 'every unknown incompatible bit', base: 'v3', poke: (p) => p.u64(72, 0xffffffffffffffe0n), via: 'info',
    expect: { code: 'unsupported-feature', message: 'Unsupported qcow2 feature(s): Unknown incompatible feature: ffffffffffffffe0', at: hdr('incompatible_features', 72) } },
  { name: 'corrupt bit, read/write', base: 'v3', poke: (p) => p.u64(72, 2n), via: 'qemu-io',
    expect: { code: 'image-corrupt', message: 'qcow2: Image is corrupt; cannot be opened read/write', at: hdr('incompatible_features', 72) } },
  { name: 'corrupt bit, read-only opens', base: 'v3', poke: (p) => p.u64(72, 2n), via: 'qemu-io -r' },
  { name: 'corrupt bit, check mode opens', base: 'v3', poke: (p) => p.u64(72, 2n), via: 'check' },
  { name: 'dirty bit, read-only opens (no repair)', base: 'lazy', poke: (p) => p.u64(72, 1n), via: 'qemu-io -r' },
  { name: 'refcount_table_clusters 0 in check mode opens', base: 'v3', poke: (p) => p.u32(56, 0), via: 'check' },
  { name: 'an invalid snapshot table is not read in check mode', base: 'v3', poke: (p) => p.u32(60, 0xffffffff), via: 'check' },
  { name: 'unknown autoclear and compatible bits open', base: 'v3', poke: (p) => p.u64(80, 0xfffen).u64(88, 0xfffcn), via: 'qemu-io' },

  // ---- 64-bit boundary values in size and offset fields
  { name: 'size 2^53+1: L1 table is too small', base: 'v3', poke: (p) => p.u64(24, (1n << 53n) + 1n), via: 'qemu-io -r',
    expect: { code: 'l1-too-small', message: 'L1 table is too small', at: hdr('l1_size', 36) } },
  { name: 'size 2^63: Image is too big', base: 'v3', poke: (p) => p.u64(24, 1n << 63n), via: 'qemu-io -r',
    expect: { code: 'image-too-big', message: 'Image is too big', at: hdr('size', 24) } },
  { name: 'size 2^64-2^29 (L1 index 2^35-1): Image is too big', base: 'v3', poke: (p) => p.u64(24, (1n << 64n) - (1n << 29n)), via: 'info',
    expect: { code: 'image-too-big', message: 'Image is too big', at: hdr('size', 24) } },
  // Measured [7.2]: size_to_l1 wraps modulo 2^64 and passes; the block layer then refuses the size.
  { name: 'size 2^64-1: the L1 index wraps to 0; the block layer refuses the size', base: 'v3', poke: (p) => p.u64(24, (1n << 64n) - 1n), via: 'qemu-io -r',
    expect: { code: 'virtual-size-too-large', message: 'Could not refresh total sector count: File too large', at: hdr('size', 24) } },
  { name: 'size 2^64-2^29+1 (first wrapping size)', base: 'v3', poke: (p) => p.u64(24, (1n << 64n) - (1n << 29n) + 1n), via: 'info',
    expect: { code: 'virtual-size-too-large', message: 'Could not refresh total sector count: File too large', at: hdr('size', 24) } },
  { name: 'size 2^61 with 2 MiB clusters and a 32 MiB L1 table opens', base: 'c2m', poke: (p) => p.u64(24, 1n << 61n).u32(36, 1 << 22).u64(40, 1n << 30n), via: 'info' },
  { name: 'l1_table_offset 2^53+1', base: 'v3', poke: (p) => p.u64(40, (1n << 53n) + 1n), via: 'qemu-io -r',
    expect: { code: 'l1-offset-invalid', message: 'Active L1 table offset invalid', at: hdr('l1_table_offset', 40) } },
  { name: 'l1_table_offset 2^63', base: 'v3', poke: (p) => p.u64(40, 1n << 63n), via: 'qemu-io -r',
    expect: { code: 'l1-offset-invalid', message: 'Active L1 table offset invalid', at: hdr('l1_table_offset', 40) } },
  { name: 'l1_table_offset 2^64-1', base: 'v3', poke: (p) => p.u64(40, (1n << 64n) - 1n), via: 'qemu-io -r',
    expect: { code: 'l1-offset-invalid', message: 'Active L1 table offset invalid', at: hdr('l1_table_offset', 40) } },
  // Measured [7.2]: a table QEMU reads at open must end at or below BDRV_MAX_LENGTH (2^63 - 2^30).
  { name: 'l1_table_offset 2^63-2^30-2^16 (ends below the block limit) opens', base: 'v3', poke: (p) => p.u64(40, (1n << 63n) - (1n << 30n) - (1n << 16n)), via: 'info' },
  { name: 'l1_table_offset 2^63-2^30: the L1 read fails', base: 'v3', poke: (p) => p.u64(40, (1n << 63n) - (1n << 30n)), via: 'info',
    expect: { code: 'l1-read-failed', message: 'Could not read L1 table: Input/output error', at: hdr('l1_table_offset', 40) } },
  { name: 'l1_table_offset 2^63-2^16: valid for INT64_MAX, the L1 read fails', base: 'v3', poke: (p) => p.u64(40, (1n << 63n) - (1n << 16n)), via: 'qemu-io -r',
    expect: { code: 'l1-read-failed', message: 'Could not read L1 table: Input/output error', at: hdr('l1_table_offset', 40) } },
  { name: 'refcount_table_offset 2^63-2^30-2^16 (ends at the block limit) opens', base: 'v3', poke: (p) => p.u64(48, (1n << 63n) - (1n << 30n) - (1n << 16n)), via: 'info' },
  { name: 'refcount_table_offset 2^63-2^30: the refcount table read fails', base: 'v3', poke: (p) => p.u64(48, (1n << 63n) - (1n << 30n)), via: 'info',
    expect: { code: 'refcount-table-read-failed', message: 'Could not initialize refcount handling: Input/output error', at: hdr('refcount_table_offset', 48) } },
  { name: 'refcount table read failure comes after crypt_method', base: 'v3', poke: (p) => p.u64(48, (1n << 63n) - (1n << 30n)).u32(32, 9), via: 'info',
    expect: { code: 'unsupported-encryption-method', message: 'Unsupported encryption method 9', at: hdr('crypt_method', 32) } },
  { name: 'snapshots_offset 2^63-2^30-2^16 with one entry opens', base: 'v3', poke: (p) => p.u64(64, (1n << 63n) - (1n << 30n) - (1n << 16n)).u32(60, 1), via: 'info' },
  { name: 'snapshots_offset 2^63-2^30 with one entry: the snapshot table read fails', base: 'v3', poke: (p) => p.u64(64, (1n << 63n) - (1n << 30n)).u32(60, 1), via: 'info',
    expect: { code: 'snapshot-table-read-failed', message: 'Failed to read snapshot table: Input/output error', at: `snapshot_entry.(start)@${(1n << 63n) - (1n << 30n)}` } },
  { name: 'refcount_table_offset 2^53+1', base: 'v3', poke: (p) => p.u64(48, (1n << 53n) + 1n), via: 'qemu-io -r',
    expect: { code: 'refcount-table-offset-invalid', message: 'Reference count table offset invalid', at: hdr('refcount_table_offset', 48) } },
  { name: 'refcount_table_offset 2^63', base: 'v3', poke: (p) => p.u64(48, 1n << 63n), via: 'qemu-io -r',
    expect: { code: 'refcount-table-offset-invalid', message: 'Reference count table offset invalid', at: hdr('refcount_table_offset', 48) } },
  { name: 'refcount_table_offset 2^64-1', base: 'v3', poke: (p) => p.u64(48, (1n << 64n) - 1n), via: 'qemu-io -r',
    expect: { code: 'refcount-table-offset-invalid', message: 'Reference count table offset invalid', at: hdr('refcount_table_offset', 48) } },
  { name: 'snapshots_offset 2^53+1', base: 'v3', poke: (p) => p.u64(64, (1n << 53n) + 1n), via: 'qemu-io -r',
    expect: { code: 'snapshot-table-offset-invalid', message: 'Snapshot table offset invalid', at: hdr('snapshots_offset', 64) } },
  { name: 'snapshots_offset 2^63', base: 'v3', poke: (p) => p.u64(64, 1n << 63n), via: 'qemu-io -r',
    expect: { code: 'snapshot-table-offset-invalid', message: 'Snapshot table offset invalid', at: hdr('snapshots_offset', 64) } },
  { name: 'snapshots_offset 2^64-1', base: 'v3', poke: (p) => p.u64(64, (1n << 64n) - 1n), via: 'qemu-io -r',
    expect: { code: 'snapshot-table-offset-invalid', message: 'Snapshot table offset invalid', at: hdr('snapshots_offset', 64) } },
  { name: 'backing_file_offset 2^63', base: 'v3', poke: (p) => p.u64(8, 1n << 63n), via: 'qemu-io -r',
    expect: { code: 'invalid-backing-offset', message: 'Invalid backing file offset', at: hdr('backing_file_offset', 8) } },

  // ---- header extensions (docs/format/extensions.md#extension-errors)
  { name: 'backing format extension of 16 bytes', base: 'v3', via: 'qemu-io -r',
    poke: (p) => p.extensions([{ type: EXT_BACKING_FORMAT, data: Buffer.from('qcow2qcow2qcow2q') }]),
    expect: { code: 'backing-format-too-long', message: 'ERROR: ext_backing_format: len=16 too large (>=16)', at: 'header_extension.len_data@116' } },
  { name: 'backing format extension of 15 bytes opens', base: 'v3', via: 'qemu-io -r',
    poke: (p) => p.extensions([{ type: EXT_BACKING_FORMAT, data: Buffer.from('qcow2qcow2qcow2') }]) },
  { name: 'extension running past the backing file name', base: 'v3', via: 'qemu-io -r',
    poke: (p) => p.u64(8, 0x200n).u32(16, 1).extensions([{ type: 0x12345678, data: new Uint8Array(400) }]),
    expect: { code: 'extension-too-large', message: 'Header extension too large', at: 'header_extension.len_data@116' } },
  { name: 'bitmaps extension of 8 bytes (autoclear bit clear)', base: 'v3', via: 'qemu-io -r',
    poke: (p) => p.extensions([{ type: EXT_BITMAPS, data: be([[4, 1], [4, 0]]) }]),
    expect: { code: 'bitmaps-extension-size', message: 'bitmaps_ext: Invalid extension length', at: 'header_extension.len_data@116' } },
  { name: 'bitmaps extension, reserved field not zero', base: 'v3', via: 'qemu-io -r',
    poke: (p) => p.u64(88, 1n).extensions([{ type: EXT_BITMAPS, data: bitmapsExt(1, 1, 0n, 0x50000n) }]),
    expect: { code: 'bitmaps-reserved', message: 'bitmaps_ext: Reserved field is not zero', at: 'bitmaps_extension.reserved@124' } },
  { name: 'bitmaps extension with zero bitmaps', base: 'v3', via: 'qemu-io -r',
    poke: (p) => p.u64(88, 1n).extensions([{ type: EXT_BITMAPS, data: bitmapsExt(0, 0, 0n, 0x50000n) }]),
    expect: { code: 'no-bitmaps', message: 'found bitmaps extension with zero bitmaps', at: 'bitmaps_extension.nb_bitmaps@120' } },
  { name: 'bitmaps extension with 65536 bitmaps', base: 'v3', via: 'qemu-io -r',
    poke: (p) => p.u64(88, 1n).extensions([{ type: EXT_BITMAPS, data: bitmapsExt(65536, 0, 0n, 0x50000n) }]),
    expect: { code: 'too-many-bitmaps', message: 'bitmaps_ext: Image has 65536 bitmaps, exceeding the QEMU supported maximum of 65535', at: 'bitmaps_extension.nb_bitmaps@120' } },
  { name: 'bitmaps extension with an unaligned directory', base: 'v3', via: 'qemu-io -r',
    poke: (p) => p.u64(88, 1n).extensions([{ type: EXT_BITMAPS, data: bitmapsExt(1, 0, 0n, 0x50200n) }]),
    expect: { code: 'bitmap-directory-offset', message: 'bitmaps_ext: invalid bitmap directory offset', at: 'bitmaps_extension.bitmap_directory_offset@136' } },
  { name: 'bitmaps extension with a 2^64-1 byte directory', base: 'v3', via: 'qemu-io -r',
    poke: (p) => p.u64(88, 1n).extensions([{ type: EXT_BITMAPS, data: bitmapsExt(1, 0, (1n << 64n) - 1n, 0x50000n) }]),
    expect: { code: 'bitmap-directory-too-large', message: 'bitmaps_ext: bitmap directory size (18446744073709551615) exceeds the maximum supported size (67107840)', at: 'bitmaps_extension.bitmap_directory_size@128' } },
  { name: 'bitmaps extension without autoclear bit 0: ignored (a warning), opens', base: 'v3', via: 'qemu-io -r',
    poke: (p) => p.extensions([{ type: EXT_BITMAPS, data: bitmapsExt(0, 7, 0n, 0x50200n) }]) },
  { name: 'encryption header extension on an unencrypted image', base: 'v3', via: 'qemu-io -r',
    poke: (p) => p.extensions([{ type: EXT_CRYPTO, data: be([[8, 0x50000n], [8, 0x1000n]]) }]),
    expect: { code: 'crypto-extension-unexpected', message: 'CRYPTO header extension only expected with LUKS encryption method', at: 'header_extension.type@112' } },
  { name: 'encryption header extension of 8 bytes', base: 'v3', via: 'qemu-io -r',
    poke: (p) => p.u32(32, 2).extensions([{ type: EXT_CRYPTO, data: be([[8, 0x50000n]]) }]),
    expect: { code: 'crypto-extension-size', message: 'CRYPTO header extension size 8, but expected size 16', at: 'header_extension.len_data@116' } },
  { name: 'encryption header offset not cluster aligned', base: 'v3', via: 'qemu-io -r',
    poke: (p) => p.u32(32, 2).extensions([{ type: EXT_CRYPTO, data: be([[8, 0x50200n], [8, 0x1000n]]) }]),
    expect: { code: 'crypto-header-unaligned', message: "Encryption header offset '328192' is not a multiple of cluster size '65536'", at: 'full_disk_encryption_pointer.offset@120' } },
  { name: 'LUKS without the encryption header extension (I/O open)', base: 'v3', poke: (p) => p.u32(32, 2), via: 'qemu-io -r',
    expect: { code: 'missing-crypto-header', message: 'Missing CRYPTO header for crypt method 2', at: hdr('crypt_method', 32) } },
  { name: 'unknown extensions and a zero-length data-file name open', base: 'v3', via: 'qemu-io -r',
    poke: (p) => p.extensions([{ type: 0x12345678, data: new Uint8Array(13) }, { type: EXT_DATA_FILE }, { type: 0xfeedface }]) },

  // ---- external data file (docs/format/open-validation.md#qemus-order #20)
  { name: 'external data file bit without a data file name', base: 'datafile', via: 'qemu-io -r',
    poke: (p) => p.u32(p.findExtension(EXT_DATA_FILE)! - 8, 0x12345678),
    expect: { code: 'data-file-required', message: "'data-file' is required for this image", at: hdr('incompatible_features', 72) } },
  { name: 'external data file bit without a name, qemu-img info (no I/O) opens', base: 'datafile', via: 'info',
    poke: (p) => p.u32(p.findExtension(EXT_DATA_FILE)! - 8, 0x12345678) },
  { name: 'raw external data bit without a data file (map)', base: 'v3', poke: (p) => p.u64(88, 2n), via: 'map',
    expect: { code: 'data-file-raw-without-data-file', message: 'data-file-raw requires a data file', at: hdr('autoclear_features', 88) } },
  { name: 'raw external data bit without a data file, qemu-img info (no I/O) opens', base: 'v3', poke: (p) => p.u64(88, 2n), via: 'info' },

  // ---- snapshot table (docs/format/open-validation.md#qemus-order #23, docs/format/snapshots.md#snapshot-table)
  { name: 'snapshot entry with 1025 bytes of extra data', base: 'snap', via: 'qemu-io -r',
    poke: (p) => p.u32(Number(p.get64(64)) + 36, 1025),
    expect: { code: 'snapshot-extra-data-too-large', message: 'Too much extra metadata in snapshot table entry 0', at: 'snapshot_entry.len_extra_data@327716',
      hint: 'You can force-remove this extra metadata with qemu-img check -r all' } },
  { name: 'snapshot entry with 1024 bytes of extra data opens', base: 'snap', via: 'qemu-io -r',
    poke: (p) => p.u32(Number(p.get64(64)) + 36, 1024) },
  { name: 'snapshot table of more than 64 MiB', base: 'v3', via: 'qemu-io -r',
    // 520 entries of 40 + 0 + 65535 + 65535 bytes from 0x100000: the table passes 64 MiB in entry 511.
    poke: (p) => p.u64(64, 0x100000n).u32(60, 520),
    after: async (path) => {
      await truncate(path, 0x100000 + 520 * 131112);
      const fd = openSync(path, 'r+');
      try {
        let pos = 0x100000;
        for (let i = 0; i < 520; i++) {
          const e = Buffer.alloc(40);
          e.writeUInt16BE(65535, 12);
          e.writeUInt16BE(65535, 14);
          writeSync(fd, e, 0, 40, pos);
          pos = Math.ceil((pos + 40 + 65535 * 2) / 8) * 8;
        }
      } finally {
        closeSync(fd);
      }
    },
    expect: { code: 'snapshot-table-too-big', message: 'Snapshot table is too big', at: `snapshot_entry.(start)@${0x100000 + 511 * 131112}`,
      hint: 'You can force-remove all 9 overhanging snapshots with qemu-img check -r all' } },

  // ---- valid images of every kind open on both sides
  ...(['v3', 'v2', 'c4k', 'c2m', 'extl2', 'zstd', 'lazy', 'datafile', 'snap'] as const).map((base): Case => ({ name: `fresh ${base} image opens`, base, via: 'qemu-io' })),
  // `read 0 512` fails on a 0-byte disk: info opens it.
  { name: 'fresh empty image opens', base: 'empty', via: 'info' },
];

// ---------------------------------------------------------------------------------------------
// Running QEMU on every case once, in parallel

interface Prepared {
  readonly c: Case;
  readonly path: string;
  /** The poked file as it was before QEMU opened it (a writable open may change it). */
  readonly bytes: Buffer;
  readonly qemu: QemuOpen;
}
const prepared = new Map<string, Prepared>();

async function createBase(name: BaseName): Promise<string> {
  const spec = BASES[name];
  const path = join(dir, `base-${name}.qcow2`);
  const r = await runTool('qemu-img', qemuImgCreateArgs(path, spec.size, spec.options), { cwd: dir });
  if (r.code !== 0) throw new Error(`qemu-img create ${name}: ${r.stderr}`);
  if ('snapshot' in spec) {
    const s = await runTool('qemu-img', ['snapshot', '-c', spec.snapshot, path]);
    if (s.code !== 0) throw new Error(`qemu-img snapshot ${name}: ${s.stderr}`);
  }
  return path;
}

/** Runs `jobs` with at most `n` at a time. */
async function pool<T>(n: number, jobs: readonly (() => Promise<T>)[]): Promise<T[]> {
  const out: T[] = new Array(jobs.length);
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < jobs.length) {
      const i = next++;
      out[i] = await jobs[i]!();
    }
  }));
  return out;
}

beforeAll(async () => {
  await requireQemu();
  dir = await mkdtemp(join(tmpdir(), 'qcow2-ref-open-'));
  const bases = new Map<BaseName, Buffer>();
  await pool(3, (Object.keys(BASES) as BaseName[]).map((n) => async () => {
    bases.set(n, await readFile(await createBase(n)));
  }));
  // One file per case (data-file cases find base-datafile.raw in the same directory).
  const jobs = CASES.map((c, i) => async (): Promise<void> => {
    const path = join(dir, `case-${i}.qcow2`);
    const p = new Poker(Buffer.from(bases.get(c.base)!));
    c.poke?.(p);
    await writeFile(path, p.b);
    await c.after?.(path);
    const { tool, args } = viaArgs(c.via, path);
    const r = await runTool(tool, args, { cwd: dir });
    prepared.set(c.name, { c, path, bytes: p.b, qemu: parseQemuOpen(c.via, path, r) });
  });
  await pool(3, jobs);
});

afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

/** Our open of the file at `path` (through a file reader, as the CLI opens it): the OpenError, or undefined when it opens. */
function ourOpen(path: string, opts: OpenOptions): OpenError | undefined {
  const reader = fileReader(path);
  try {
    openImage(reader, opts);
    return undefined;
  } catch (e) {
    if (e instanceof OpenError) return e;
    throw e;
  } finally {
    reader.close();
  }
}

// ---------------------------------------------------------------------------------------------
// The tests

describe('open-time validation, side by side with QEMU 7.2', () => {
  it('has unique case names', () => {
    expect(new Set(CASES.map((c) => c.name)).size).toBe(CASES.length);
  });

  for (const c of CASES) {
    it(`${c.name} (${c.via})`, () => {
      const { path, qemu } = prepared.get(c.name)!;
      const ours = ourOpen(path, viaOptions(c.via));
      if (c.expect === undefined) {
        expect(qemu.error, `QEMU refused: ${qemu.result.stderr}`).toBeUndefined();
        // qemu-img check exits 2 or 3 for what it finds in an image it opened; the others succeed.
        if (c.via !== 'check') expect(qemu.result.code, qemu.result.stderr).toBe(0);
        else expect(qemu.result.stderr).not.toContain('Could not open');
        expect(ours, ours?.message).toBeUndefined();
        return;
      }
      // QEMU's text, ours, and the literal of docs/format agree.
      expect(qemu.error, `QEMU output: ${qemu.result.stderr}`).toBeDefined();
      expect(qemu.result.code).toBe(1);
      expect(qemu.error!.message).toBe(c.expect.message);
      expect(ours, 'we opened an image QEMU refuses').toBeInstanceOf(OpenError);
      expect(ours!.qemuMessage).toBe(qemu.error!.message);
      expect(ours!.code).toBe(c.expect.code);
      expect(`${ours!.structure}.${ours!.field}@${ours!.offset}`).toBe(c.expect.at);
      expect(ours!.message).toBe(`${ours!.structure}.${ours!.field} at 0x${ours!.offset.toString(16)}: ${c.expect.message}`);
      expect(ours!.hint).toBe(qemu.error!.hint);
      expect(ours!.hint).toBe(c.expect.hint);
    });
  }
});

describe('open options', () => {
  it('a data file given for an image without the external data file bit is refused, as with --image-opts data-file', async () => {
    const path = join(dir, 'plain-with-data-file.qcow2');
    const raw = join(dir, 'plain-with-data-file.raw');
    await copyFile(join(dir, 'base-v3.qcow2'), path);
    await writeFile(raw, new Uint8Array(4096));
    const r = await runTool('qemu-io', ['-r', '--image-opts', `driver=qcow2,file.filename=${path},data-file.filename=${raw}`, '-c', 'read 0 512']);
    const message = "'data-file' can only be set for images with an external data file";
    expect(r.stderr).toBe(`qemu-io: can't open: ${message}\n`);
    const bytes = await readFile(path);
    let e: unknown;
    try {
      openImage(bytes, { dataFile: new Uint8Array(4096) });
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(OpenError);
    expect((e as OpenError).code).toBe('data-file-not-allowed');
    expect((e as OpenError).qemuMessage).toBe(message);
  });

  it('a writable open clears unknown autoclear bits and keeps the known ones: the file qemu-io leaves', async () => {
    const { path, bytes: before } = prepared.get('unknown autoclear and compatible bits open')!;
    const r = openImageWithIo(before, { writable: true });
    expect(r.io.length).toBeGreaterThan(0);
    expect(r.image.header.autoclearFeatures).toBe(0n);
    expect(r.image.header.compatibleFeatures).toBe(0xfffen);
    const ours = Buffer.from(before);
    for (const x of r.io) {
      if (x.kind !== 'write') throw new Error(`unexpected ${x.kind}`);
      ours.set(x.bytes, Number(x.offset));
    }
    expect(Buffer.compare(ours, Buffer.from(storeImage(r.image)))).toBe(0);
    // The same file after qemu-io's read/write open (the case above ran it): autoclear 0xfffc → 0.
    const after = await readFile(path);
    expect(after.readBigUInt64BE(88)).toBe(0n);
    expect(Buffer.compare(ours, after)).toBe(0);
    // A read-only open changes nothing.
    expect(openImageWithIo(before, {}).io).toEqual([]);
  });

  it('a file shorter than its header: QEMU reads zeros past the end, we refuse it (deliberate difference)', async () => {
    // A v2 image of size 0 cut to 64 bytes: QEMU reads snapshots_offset as 0 and opens it.
    const path = join(dir, 'short-header.qcow2');
    await copyFile(join(dir, 'base-empty.qcow2'), path);
    await truncate(path, 64);
    const q = await runTool('qemu-img', ['info', '-f', 'qcow2', path]);
    expect(q.code).toBe(0);
    let err: unknown;
    try {
      openImage(await readFile(path), { noIo: true });
    } catch (e) {
      err = e;
    }
    expect(isQcow2FormatError(err)).toBe(true);
    expect((err as Error).message).toMatch(/^u64\.hi at 0x40: /);
    // QEMU's first failing check still wins when there is one: magic and version are read zero-padded.
    await truncate(path, 6);
    expect(ourOpen(path, { noIo: true })?.code).toBe('unsupported-version');
    const q6 = await runTool('qemu-img', ['info', '-f', 'qcow2', path]);
    expect(q6.stderr).toBe(`qemu-img: Could not open '${path}': Unsupported qcow2 version 0\n`);
  });

  it('LUKS without its encryption header: qemu-img info 7.2 crashes, we open it without I/O (deliberate difference)', async () => {
    const path = prepared.get('LUKS without the encryption header extension (I/O open)')!.path;
    const q = await runTool('qemu-img', ['info', '-f', 'qcow2', path]);
    expect(q.signal).toBe('SIGSEGV');
    expect(ourOpen(path, { noIo: true })).toBeUndefined();
    // qcow2-ref info reports what the I/O opens of QEMU report.
    expect(await cli('info', path)).toEqual({ code: 1, stdout: '', stderr: `qcow2-ref: ${path}: header.crypt_method at 0x20: Missing CRYPTO header for crypt method 2\n` });
  });

  it('an AES-encrypted image opens without a key (keys are not modelled), where qemu-io asks for one (deliberate difference)', async () => {
    const path = join(dir, 'aes-poked.qcow2');
    await copyFile(join(dir, 'base-v3.qcow2'), path);
    const b = await readFile(path);
    b.writeUInt32BE(1, 32);
    await writeFile(path, b);
    const q = await runTool('qemu-io', ['-r', '-f', 'qcow2', '-c', 'read 0 512', path]);
    expect(q.stderr).toBe(`qemu-io: can't open device ${path}: Parameter 'encrypt.key-secret' is required for cipher\n`);
    expect(ourOpen(path, {})).toBeUndefined();
  });
});

describe('writable open of a dirty image (docs/format/open-validation.md#qemus-order #25)', () => {
  it('repairs it as qemu-io does: the same file afterwards', async () => {
    const a = join(dir, 'dirty-a.qcow2');
    const b = join(dir, 'dirty-b.qcow2');
    await copyFile(join(dir, 'base-lazy.qcow2'), a);
    // A crashed lazy-refcounts session: the new cluster's refcount never reached the disk.
    const crash = await runTool('qemu-io', ['-f', 'qcow2', '-c', 'write -P 7 0 64k', '-c', 'abort', a]);
    expect(crash.signal).toBe('SIGABRT');
    await copyFile(a, b);
    const dirty = await readFile(a);
    expect(dirty[79]! & 1).toBe(1);
    const r = openImageWithIo(dirty, { writable: true });
    expect(r.repair).toBeDefined();
    expect(r.io.length).toBeGreaterThan(0);
    expect(r.image.header.incompatibleFeatures & 1n).toBe(0n);
    // qemu-io's read/write open runs the same repair.
    const q = await runTool('qemu-io', ['-f', 'qcow2', '-c', 'read -P 7 0 64k', b]);
    expect(q.code, q.stderr).toBe(0);
    expect(Buffer.compare(Buffer.from(storeImage(r.image)), await readFile(b))).toBe(0);
    // Read-only and check-mode opens leave it alone.
    expect(openImageWithIo(dirty, {}).io).toEqual([]);
    expect(openImageWithIo(dirty, { writable: true, checkMode: true }).repair).toBeUndefined();
  });

  it('fails as QEMU fails when the repair cannot fix it (test 060 "dirty + corrupt")', async () => {
    const path = join(dir, 'dirty-broken.qcow2');
    await copyFile(join(dir, 'base-lazy.qcow2'), path);
    const b = await readFile(path);
    b.writeBigUInt64BE(0xffff2a00n, 0x10000); // reftable[0] unaligned
    b.writeBigUInt64BE(1n, 72); // dirty
    await writeFile(path, b);
    const q = await runTool('qemu-io', ['-f', 'qcow2', '-c', 'read 0 512', path]);
    const message = 'Could not repair dirty image: Input/output error';
    expect(q.stderr).toContain(`qemu-io: can't open device ${path}: ${message}\n`);
    let err: unknown;
    try {
      openImage(b, { writable: true });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(OpenError);
    expect((err as OpenError).code).toBe('dirty-repair-failed');
    expect((err as OpenError).qemuMessage).toBe(message);
  });
});

// ---------------------------------------------------------------------------------------------
// Random header pokes: our first error is QEMU's

/** Header fields (offset, width in bytes) of docs/format/header.md#header-layout, compression_type included. */
const FIELDS: readonly (readonly [number, 1 | 4 | 8])[] = [
  [4, 4], [8, 8], [16, 4], [20, 4], [24, 8], [36, 4], [40, 8], [48, 8], [56, 4], [60, 4], [64, 8],
  [72, 8], [80, 8], [88, 8], [96, 4], [100, 4], [104, 1],
];
const BOUNDARY64 = [0n, 1n, (1n << 31n) - 1n, (1n << 32n) - 1n, (1n << 53n) + 1n, 1n << 63n, (1n << 64n) - 1n, (1n << 63n) - (1n << 30n), 0x10000n, 0x50000n];
const BOUNDARY32 = [0, 1, 8, 9, 14, 21, 22, 72, 104, 105, 112, 113, 0x1000, 0x10000, 0x7fffffff, 0xffffffff];

/** One poke: a field and a value (boundary or random), never one that reaches what is not modelled. */
const pokeArb = fc.tuple(fc.constantFrom(...FIELDS), fc.oneof(fc.constantFrom(...BOUNDARY64), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.constantFrom(...BOUNDARY32).map(BigInt)))
  .map(([[at, width], v]) => ({ at, width, value: v & ((1n << BigInt(width * 8)) - 1n) }));

describe('random header pokes (differential against qemu-io -r)', () => {
  it('our open error (or success) is QEMU\'s', async () => {
    const base = prepared.get('fresh v3 image opens')!.bytes;
    const path = join(dir, 'random-poke.qcow2');
    const seen = new Map<string, number>();
    await fc.assert(fc.asyncProperty(fc.array(pokeArb, { minLength: 1, maxLength: 3 }), fc.uint8Array({ minLength: 0, maxLength: 48 }), async (pokes, extBytes) => {
      const b = Buffer.from(base);
      b.set(extBytes, 112);
      for (const { at, width, value } of pokes) {
        if (width === 1) b.writeUInt8(Number(value), at);
        else if (width === 4) b.writeUInt32BE(Number(value), at);
        else b.writeBigUInt64BE(value, at);
      }
      // Not modelled (docs/open-validation.md): encryption keys and LUKS headers, opening the data
      // file a DATA extension names, loading the bitmap directory. Such images are steered away.
      b.writeUInt32BE(0, 32);
      if (b.readUInt32BE(4) === 3) {
        b.writeBigUInt64BE(b.readBigUInt64BE(72) & ~4n, 72);
        b.writeBigUInt64BE(b.readBigUInt64BE(88) & ~1n, 88);
      }
      await writeFile(path, b);
      const q = parseQemuOpen('qemu-io -r', path, await runTool('qemu-io', viaArgs('qemu-io -r', path).args));
      const ours = ourOpen(path, {});
      const key = ours?.code ?? 'opens';
      seen.set(key, (seen.get(key) ?? 0) + 1);
      expect(ours?.qemuMessage, `QEMU: ${q.result.stderr}`).toBe(q.error?.message);
      expect(ours?.hint).toBe(q.error?.hint);
    }), { numRuns: Number(process.env['QCOW2_OPEN_RUNS'] ?? 60) });
    // Both outcomes, and several different checks, were reached.
    expect(seen.size, JSON.stringify([...seen])).toBeGreaterThan(5);
    expect(seen.get('opens') ?? 0).toBeGreaterThan(0);
  });
});

// ---------------------------------------------------------------------------------------------
// The CLI: one line naming the image, the structure/field and offset, and QEMU's message

async function cli(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main(argv, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) });
  return { code, stdout, stderr };
}

describe('CLI commands report QEMU open errors', () => {
  it('info, map and convert print one line with the image, the field, the offset and QEMU\'s message', async () => {
    const path = prepared.get('080 huge header size 0xffffffff')!.path;
    const line = `qcow2-ref: ${path}: header.header_length at 0x64: qcow2 header exceeds cluster size\n`;
    for (const args of [['info', path], ['map', path], ['convert', '-O', 'raw', path, join(dir, 'never.raw')]]) {
      const r = await cli(...args);
      expect(r.code, args[0]).toBe(1);
      expect(r.stderr, args[0]).toBe(line);
    }
  });

  it('info refuses what qemu-img info refuses (snapshot extra data), and tolerates what it tolerates (data-file-raw bit)', async () => {
    const bad = prepared.get('snapshot entry with 1025 bytes of extra data')!.path;
    const q = await runTool('qemu-img', ['info', '-f', 'qcow2', bad]);
    expect(q.stderr.split('\n')[0]).toBe(`qemu-img: Could not open '${bad}': Too much extra metadata in snapshot table entry 0`);
    expect((await cli('info', bad)).stderr).toBe(`qcow2-ref: ${bad}: snapshot_entry.len_extra_data at 0x50024: Too much extra metadata in snapshot table entry 0\n`);
    const raw = prepared.get('raw external data bit without a data file (map)')!.path;
    expect((await runTool('qemu-img', ['info', '-f', 'qcow2', raw])).code).toBe(0);
    expect((await cli('info', raw)).code).toBe(0);
    expect(await cli('map', raw)).toEqual({ code: 1, stdout: '', stderr: `qcow2-ref: ${raw}: header.autoclear_features at 0x58: data-file-raw requires a data file\n` });
  });

  it('run repairs a dirty image as qemu-io does, then applies the ops: the same file and the same repair lines', async () => {
    const ours = join(dir, 'run-dirty-ours.qcow2');
    const theirs = join(dir, 'run-dirty-theirs.qcow2');
    await copyFile(join(dir, 'base-lazy.qcow2'), ours);
    const crash = await runTool('qemu-io', ['-f', 'qcow2', '-c', 'write -P 4 2000000 4096', '-c', 'abort', ours]);
    expect(crash.signal).toBe('SIGABRT');
    await copyFile(ours, theirs);
    expect((await readFile(ours))[79]! & 1).toBe(1);
    const script = join(dir, 'run-dirty.json');
    await writeFile(script, JSON.stringify([{ op: 'write', offset: 1000, length: 100000, pattern: 3 }]));
    const r = await cli('run', '--quiet', ours, script);
    const q = await runTool('qemu-io', ['-f', 'qcow2', '-c', 'write -P 3 1000 100000', theirs]);
    expect(q.code, q.stderr).toBe(0);
    expect(r.code, r.stderr).toBe(0);
    expect(q.stderr).toContain('Rebuilding refcount structure');
    expect(r.stderr).toBe(q.stderr);
    expect(Buffer.compare(await readFile(ours), await readFile(theirs))).toBe(0);
    expect((await runTool('qemu-img', ['check', ours])).code).toBe(0);
  });

  it('run refuses a corrupt image as qemu-io does and leaves the file unchanged', async () => {
    const path = join(dir, 'run-corrupt.qcow2');
    await copyFile(prepared.get('corrupt bit, read/write')!.path, path);
    const script = join(dir, 'run-corrupt.json');
    await writeFile(script, JSON.stringify([{ op: 'write', offset: 0, length: 512, pattern: 1 }]));
    const before = await readFile(path);
    const r = await cli('run', path, script);
    expect(r).toEqual({ code: 1, stdout: '', stderr: `qcow2-ref: ${path}: header.incompatible_features at 0x48: qcow2: Image is corrupt; cannot be opened read/write\n` });
    expect(Buffer.compare(await readFile(path), before)).toBe(0);
  });
});
