/**
 * walkImage and `qcow2-ref dump` against real QEMU on every image of the matrix
 * (test/support/image-matrix.ts): header fields vs `qemu-img info`, decoded L2 entries vs
 * `qemu-img map` (depth-0 extents only, docs/format/map.md), refcount coverage of every referenced host
 * cluster, and the CLI's JSON and error behaviour. Needs qemu-img/qemu-io: fails loudly without them.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeaderLayout } from '../../generated/qcow2.ts';
import { main } from '../../src/cli/main.ts';
import { toJson } from '../../src/cli/dump.ts';
import { guestClusters, refcountOf, walkImage, type ImageWalk, type L2EntryInfo } from '../../src/format/walk.ts';
import { qcow2Specific, qemuImgInfo, qemuImgMap, toBigInt, type QemuImgInfo, type QemuMapExtent } from '../../src/qemu/qemu-img.ts';
import { buildImageMatrix, MATRIX_IMAGE_NAMES, type MatrixImage } from '../support/image-matrix.ts';

const execFileP = promisify(execFile);
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = join(ROOT, 'bin', 'qcow2-ref.mjs');

interface Built {
  readonly image: MatrixImage;
  readonly bytes: Uint8Array;
  readonly walk: ImageWalk;
  readonly info: QemuImgInfo;
  readonly map: QemuMapExtent[];
}

let dir: string;
const built = new Map<string, Built>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qcow2-ref-dump-'));
  const images = await buildImageMatrix(dir);
  await Promise.all(
    images.map(async (image) => {
      const opts = image.luksSecret !== undefined ? { luksSecret: image.luksSecret } : {};
      const [bytes, info, map] = await Promise.all([readFile(image.path), qemuImgInfo(image.path, opts), qemuImgMap(image.path, opts)]);
      built.set(image.name, { image, bytes, walk: walkImage(bytes), info, map });
    }),
  );
});

afterAll(async () => {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

function get(name: string): Built {
  const b = built.get(name);
  if (b === undefined) throw new Error(`matrix image ${name} was not built`);
  return b;
}

/** What qemu-img map should say about one guest unit (cluster or subcluster). */
interface Expect {
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: bigint;
}

function expectUnit(entry: L2EntryInfo | undefined, sub: number | undefined, unit: bigint): Expect {
  const unallocated: Expect = { present: false, zero: true, data: false };
  if (entry === undefined) return unallocated;
  const c = entry.class;
  if (sub !== undefined && entry.subclusters !== undefined) {
    const state = entry.subclusters[sub]!;
    const host = c.kind === 'normal' ? c.hostOffset + BigInt(sub) * unit : undefined;
    switch (state) {
      case 'unallocated-plain':
        return unallocated;
      case 'unallocated-alloc':
        return { present: false, zero: true, data: false, offset: host! };
      case 'zero-plain':
        return { present: true, zero: true, data: false };
      case 'zero-alloc':
        return { present: true, zero: true, data: false, offset: host! };
      case 'normal':
        return { present: true, zero: false, data: true, offset: host! };
      case 'compressed':
        return { present: true, zero: false, data: true };
      case 'invalid':
        throw new Error(`invalid subcluster in a QEMU-made image (entry ${entry.index})`);
    }
  }
  switch (c.kind) {
    case 'unallocated':
      return unallocated;
    case 'zero-plain':
      return { present: true, zero: true, data: false };
    case 'zero-alloc':
      return { present: true, zero: true, data: false, offset: c.hostOffset };
    case 'normal':
      return { present: true, zero: false, data: true, offset: c.hostOffset };
    case 'compressed':
      return { present: true, zero: false, data: true };
  }
}

/** Host byte ranges every referenced structure covers (docs/format/refcounts.md#what-must-be-counted). */
function referencedRanges(walk: ImageWalk): { what: string; start: bigint; length: bigint }[] {
  const h = walk.header;
  const cs = BigInt(h.clusterSize);
  const out: { what: string; start: bigint; length: bigint }[] = [{ what: 'header', start: 0n, length: 1n }];
  if (h.l1Size > 0) out.push({ what: 'active L1', start: h.l1TableOffset, length: 8n * BigInt(h.l1Size) });
  out.push({ what: 'refcount table', start: h.refcountTableOffset, length: BigInt(h.refcountTableClusters) * cs });
  for (const b of walk.refcounts.blocks) out.push({ what: `refblock ${b.offset}`, start: b.offset, length: cs });
  for (const t of walk.l2Tables) {
    out.push({ what: `L2 ${t.offset}`, start: t.offset, length: cs });
    for (const e of t.entries) {
      const c = e.class;
      if (c.kind === 'compressed') out.push({ what: `compressed ${c.hostOffset}`, start: c.hostOffset, length: BigInt(c.compressedBytes) });
      else if ((c.kind === 'normal' || c.kind === 'zero-alloc') && !h.externalDataFile) out.push({ what: `data ${c.hostOffset}`, start: c.hostOffset, length: cs });
    }
  }
  for (const s of walk.snapshots.entries) {
    out.push({ what: `snapshot entry ${s.index}`, start: BigInt(s.entryOffset), length: 40n });
    if (s.l1Size > 0) out.push({ what: `snapshot ${s.index} L1`, start: s.l1TableOffset, length: 8n * BigInt(s.l1Size) });
  }
  for (const e of walk.extensions) {
    if (e.type === 'full-disk-encryption') out.push({ what: 'LUKS header', start: e.headerOffset, length: e.headerLength });
  }
  if (walk.bitmaps !== undefined) {
    out.push({ what: 'bitmap directory', start: walk.bitmaps.offset, length: walk.bitmaps.size });
    for (const b of walk.bitmaps.bitmaps) {
      if (b.tableSize > 0) out.push({ what: `bitmap ${b.name} table`, start: b.tableOffset, length: 8n * BigInt(b.tableSize) });
      for (const t of b.table) if (t.dataOffset !== 0n) out.push({ what: `bitmap ${b.name} data`, start: t.dataOffset, length: cs });
    }
  }
  return out;
}

function captureIo(): { io: { stdout: (t: string) => void; stderr: (t: string) => void }; out: () => string; err: () => string } {
  let o = '';
  let e = '';
  return { io: { stdout: (t) => void (o += t), stderr: (t) => void (e += t) }, out: () => o, err: () => e };
}

describe.each(MATRIX_IMAGE_NAMES.map((n) => [n]))('%s', (name) => {
  it('walks without errors', () => {
    expect(get(name).walk.errors).toEqual([]);
  });

  it('header agrees with qemu-img info', () => {
    const { walk, info } = get(name);
    const h = walk.header;
    const fs = qcow2Specific(info);
    expect(toBigInt(info['virtual-size'])).toBe(h.size);
    expect(info['cluster-size']).toBe(h.clusterSize);
    expect(fs.compat).toBe(h.version >= 3 ? '1.1' : '0.10');
    expect(fs['refcount-bits']).toBe(h.refcountBits);
    expect(fs['compression-type']).toBe(h.compressionTypeName);
    expect(fs['extended-l2'] ?? false).toBe(h.extendedL2);
    expect(fs['lazy-refcounts'] ?? false).toBe(h.lazyRefcounts);
    expect(fs.corrupt ?? false).toBe(h.corrupt);
    expect(fs['data-file']).toBe(walk.dataFile);
    expect(fs['data-file-raw'] ?? false).toBe(h.rawExternalData);
    expect(info['dirty-flag'] ?? false).toBe(h.dirty);
    expect(info['backing-filename']).toBe(walk.backingFile?.name);
    expect(info['backing-filename-format']).toBe(walk.backingFile?.format);
    expect(info.encrypted ?? false).toBe(h.cryptMethod !== 0);
    const snaps = info.snapshots ?? [];
    expect(walk.snapshots.entries).toHaveLength(snaps.length);
    snaps.forEach((q, i) => {
      const s = walk.snapshots.entries[i]!;
      expect(s.id).toBe(q.id);
      expect(s.name).toBe(q.name);
      expect(s.vmStateSizeLarge ?? BigInt(s.vmStateSize)).toBe(toBigInt(q['vm-state-size']));
      expect(BigInt(s.dateSec)).toBe(toBigInt(q['date-sec']));
      expect(s.dateNsec).toBe(q['date-nsec']);
      expect(s.vmClockNsec / 1_000_000_000n).toBe(toBigInt(q['vm-clock-sec']));
      expect(Number(s.vmClockNsec % 1_000_000_000n)).toBe(q['vm-clock-nsec']);
      if (q.icount !== undefined) expect(s.icount).toBe(toBigInt(q.icount));
    });
  });

  it('decoded L2 entries agree with qemu-img map (depth 0)', async () => {
    const { walk, map, image, bytes } = get(name);
    const h = walk.header;
    const cs = BigInt(h.clusterSize);
    const unit = h.extendedL2 ? cs / 32n : cs;
    const byGuest = new Map<bigint, L2EntryInfo>();
    for (const g of guestClusters(walk)) byGuest.set(g.guestOffset, g.entry);
    const encrypted = h.cryptMethod !== 0;
    // Host bytes of data clusters: in the external data file if there is one.
    const host = walk.dataFile !== undefined ? await readFile(walk.dataFile) : bytes;
    const allZero = (from: bigint, to: bigint): boolean => {
      for (let i = Number(from); i < Math.min(Number(to), host.length); i++) if (host[i] !== 0) return false;
      return true; // bytes past the end of the file read as zeros
    };
    let compared = 0;
    for (const ext of map) {
      if (ext.depth !== 0) continue;
      const start = toBigInt(ext.start);
      const end = start + toBigInt(ext.length);
      for (let u = start - (start % unit); u < end; u += unit) {
        const cluster = u - (u % cs);
        const sub = h.extendedL2 ? Number((u - cluster) / unit) : undefined;
        const exp = expectUnit(byGuest.get(cluster), sub, unit);
        const p = u < start ? start : u; // first guest byte of this unit inside the extent
        const q = u + unit < end ? u + unit : end;
        const where = `${image.name} guest 0x${p.toString(16)}`;
        expect({ where, present: ext.present, data: ext.data }).toEqual({ where, present: exp.present, data: exp.data });
        if (encrypted || exp.offset === undefined) {
          expect({ where, offset: ext.offset }).toEqual({ where, offset: undefined });
        } else {
          expect(ext.offset, where).toBeDefined();
          expect({ where, offset: toBigInt(ext.offset!) + (p - start) }).toEqual({ where, offset: exp.offset + (p - u) });
        }
        if (exp.data && !exp.zero && ext.zero && exp.offset !== undefined) {
          // QEMU asks the file layer: a NORMAL cluster over a hole or past EOF reads as zero (docs/format/map.md#metadata-preallocation-heuristic).
          const o = exp.offset + (p - u);
          expect({ where, hostBytesZero: allZero(o, o + (q - p)) }).toEqual({ where, hostBytesZero: true });
        } else {
          expect({ where, zero: ext.zero }).toEqual({ where, zero: exp.zero });
        }
        compared++;
      }
    }
    expect(compared).toBeGreaterThan(0);
  });

  it('every referenced host cluster has a refcount of at least 1', () => {
    const { walk, image } = get(name);
    const cs = BigInt(walk.header.clusterSize);
    const missing: string[] = [];
    for (const r of referencedRanges(walk)) {
      if (r.length === 0n) continue;
      for (let c = r.start / cs; c <= (r.start + r.length - 1n) / cs; c++) {
        const rc = refcountOf(walk, c);
        if (rc === undefined || rc < 1n) missing.push(`${r.what}: cluster ${c} refcount ${rc}`);
      }
    }
    if (image.leftDirty) expect(missing.length).toBeGreaterThan(0); // the crash left new clusters at refcount 0 (docs/format/features.md#dirty-bit-and-lazy-refcounts)
    else expect(missing).toEqual([]);
  });

  it('dump --output=json holds the same values', async () => {
    const { walk, image, info } = get(name);
    const c = captureIo();
    const code = await main(['dump', '--output=json', image.path], c.io);
    expect(c.err()).toBe('');
    expect(code).toBe(0);
    const json = JSON.parse(c.out()) as { header: { size: number; clusterSize: number }; snapshots: { entries: { id: string }[] } };
    expect(json).toEqual(toJson(walk));
    expect(json.header.size).toBe(Number(toBigInt(info['virtual-size'])));
    expect(json.header.clusterSize).toBe(info['cluster-size']);
    expect(json.snapshots.entries.map((s) => s.id)).toEqual((info.snapshots ?? []).map((s) => s.id));
  });

  it('dump (human) names every L2 table and exits 0', async () => {
    const { walk, image } = get(name);
    const c = captureIo();
    expect(await main(['dump', image.path], c.io)).toBe(0);
    for (const t of walk.l2Tables) expect(c.out()).toContain(`L2 table at 0x${t.offset.toString(16)}`);
  });
});

describe('qcow2-ref command line', () => {
  it('works through bin/ from another directory, and its JSON parses', async () => {
    const image = get('defaults').image;
    const r = await execFileP(process.execPath, [BIN, 'dump', '--output=json', image.path], { cwd: tmpdir(), maxBuffer: 64 << 20 });
    const json = JSON.parse(r.stdout) as { header: { version: number } };
    expect(json.header.version).toBe(3);
  });

  it('works through npm exec from another directory', async () => {
    const r = await execFileP('npm', ['exec', '--prefix', ROOT, '--', 'qcow2-ref', '--help'], { cwd: tmpdir() });
    expect(r.stdout).toContain('dump IMAGE');
  });

  it('a garbage file exits 1 with one line naming image, structure, field and offset', async () => {
    const garbage = join(dir, 'garbage.bin');
    await writeFile(garbage, Buffer.from('this is not a qcow2 image, just some text padding it out'.repeat(20)));
    const err = await execFileP(process.execPath, [BIN, 'dump', garbage]).then(
      () => expect.unreachable('should fail'),
      (e: { code: number; stderr: string; stdout: string }) => e,
    );
    expect(err.code).toBe(1);
    expect(err.stdout).toBe('');
    expect(err.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(err.stderr).toMatch(new RegExp(`^qcow2-ref: ${garbage.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: header\\.magic at 0x0: `));
  });

  it('cluster_bits 22 is reported like qemu names it', async () => {
    const bytes = new Uint8Array(get('defaults').bytes);
    new DataView(bytes.buffer).setUint32(HeaderLayout.clusterBits.offset, 22);
    const bad = join(dir, 'bad-cluster-bits.qcow2');
    await writeFile(bad, bytes);
    const c = captureIo();
    expect(await main(['dump', bad], c.io)).toBe(1);
    expect(c.err()).toBe(`qcow2-ref: ${bad}: header.cluster_bits at 0x14: must be at most 21, is 22\n`);
  });

  it('a hostile L1 pointing every entry at one L2 table decodes it once', async () => {
    const bytes = new Uint8Array(get('defaults').bytes);
    const v = new DataView(bytes.buffer);
    const l1 = Number(get('defaults').walk.header.l1TableOffset);
    const l1Size = v.getUint32(HeaderLayout.l1Size.offset);
    const target = v.getBigUint64(l1);
    for (let i = 0; i < l1Size; i++) v.setBigUint64(l1 + 8 * i, target);
    const w = walkImage(bytes);
    expect(w.l2Tables).toHaveLength(1);
    expect(w.l2Tables[0]!.references).toHaveLength(l1Size);
  });

  it('a broken structure is recorded, not fatal', () => {
    const bytes = new Uint8Array(get('defaults').bytes);
    // Point the refcount table past the end of the file.
    new DataView(bytes.buffer).setBigUint64(HeaderLayout.refcountTableOffset.offset, 1n << 40n);
    const w = walkImage(bytes);
    expect(w.refcounts.error?.field).toBe('refcount_table');
    expect(w.errors).toHaveLength(1);
    expect(w.l2Tables.length).toBeGreaterThan(0);
  });

  it('--help, unknown command and bad options', async () => {
    let c = captureIo();
    expect(await main(['--help'], c.io)).toBe(0);
    expect(c.out()).toContain('dump');
    c = captureIo();
    expect(await main(['dump', '--help'], c.io)).toBe(0);
    expect(c.out()).toContain('2^53');
    c = captureIo();
    expect(await main(['frobnicate'], c.io)).toBe(2);
    expect(c.err()).toContain("unknown command 'frobnicate'");
    c = captureIo();
    expect(await main(['dump', '--output=xml', 'x'], c.io)).toBe(2);
    c = captureIo();
    expect(await main(['dump'], c.io)).toBe(2);
    c = captureIo();
    expect(await main([], c.io)).toBe(2);
  });
});
