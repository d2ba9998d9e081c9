/**
 * The async driver (src/disk, Qcow2Disk) on real files:
 * - a property: random op sequences (the model property's configurations and offset/length
 *   generators) through the driver on a file, the pure model stepped beside it, and the raw-disk
 *   oracle — after every op the driver's reads around the op equal the oracle's and the model's, and
 *   its refusals are the model's; after close the file (and data file) is byte-identical to the pure
 *   model's closed image, and `qemu-img check` finds nothing;
 * - memory stays bounded on a 1 TiB image (the chunk cache and the model's unwritten pages, measured
 *   in bytes and pages, not time);
 * - read-only opens refuse changes; concurrent calls are serialised in call order;
 * - a writable open issues the repair of a dirty image (what QEMU does on open) before returning.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { applyOpToDisk } from '../../src/crash/index.ts';
import { DiskError, Qcow2Disk } from '../../src/disk/index.ts';
import { createDiskFile, fileBackend, fileReader, openDiskFile, writeHostFile, type FileReader } from '../../src/io/index.ts';
import { closeImage, createImage, readGuest, step, storeImage, rawReaderBackingSource, type Image, type Op } from '../../src/model/index.ts';
import { storeDataFile } from '../../src/model/load-store.ts';
import { ModelError } from '../../src/model/errors.ts';
import { checkExitCode, checkImage } from '../../src/check/index.ts';
import { RawDisk, writeRawFile } from '../../src/oracle/raw-disk.ts';
import { configArb, createOptionsOf, geoOf, pattern, type Config, type ConfigClass } from '../support/model-configs.ts';
import { backingOracle, emptyOracle } from '../support/model-backing.ts';
import { hotArb, offsetArb, rangeLengthArb, writeLengthArb } from '../support/model-commands.ts';
import { place } from '../support/model-cmds.ts';

const dir = mkdtempSync(join(tmpdir(), 'qcow2-disk-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function qemuImgCheck(path: string, cwd?: string): { status: number; out: string; json: string } {
  const r = spawnSync('qemu-img', ['check', '--output=json', path], { encoding: 'utf8', ...(cwd !== undefined ? { cwd } : {}) });
  if (r.error !== undefined) throw new Error(`qemu-img could not run (is qemu-utils installed?): ${r.error.message}`);
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}`, json: r.stdout };
}

/** An abstract op, placed on the disk's current size when it runs. */
type AbstractOp =
  | { readonly kind: 'write'; readonly offset: bigint; readonly length: number; readonly seed: number; readonly fromEnd: boolean }
  | { readonly kind: 'writeZeroes' | 'discard'; readonly offset: bigint; readonly length: bigint; readonly unmap: boolean; readonly fromEnd: boolean }
  | { readonly kind: 'writeCompressed'; readonly cluster: bigint; readonly seed: number }
  | { readonly kind: 'snapshotCreate' | 'snapshotApply' | 'snapshotDelete'; readonly name: string }
  | { readonly kind: 'flush' };

function opsArb(cfg: Config, hot: readonly bigint[]): fc.Arbitrary<AbstractOp[]> {
  const g = geoOf(cfg);
  const off = offsetArb(g, hot);
  const op: fc.Arbitrary<AbstractOp> = fc.oneof(
    { weight: 8, arbitrary: fc.tuple(off, writeLengthArb(g), fc.integer({ min: 0, max: 255 })).map(([o, length, seed]): AbstractOp => ({ kind: 'write', offset: o.offset, length, seed, fromEnd: o.fromEnd })) },
    { weight: 3, arbitrary: fc.tuple(fc.constantFrom<'writeZeroes' | 'discard'>('writeZeroes', 'discard'), off, rangeLengthArb(g), fc.boolean()).map(([kind, o, length, unmap]): AbstractOp => ({ kind, offset: o.offset, length, unmap, fromEnd: o.fromEnd })) },
    { weight: cfg.dataFile === undefined ? 1 : 0, arbitrary: fc.tuple(fc.constantFrom(...hot), fc.integer({ min: 1, max: 255 })).map(([cluster, seed]): AbstractOp => ({ kind: 'writeCompressed', cluster, seed })) },
    { weight: cfg.dataFile === undefined ? 2 : 0, arbitrary: fc.tuple(fc.constantFrom<'snapshotCreate' | 'snapshotApply' | 'snapshotDelete'>('snapshotCreate', 'snapshotCreate', 'snapshotApply', 'snapshotDelete'), fc.constantFrom('a', 'b')).map(([kind, name]): AbstractOp => ({ kind, name })) },
    { weight: 1, arbitrary: fc.constant<AbstractOp>({ kind: 'flush' }) },
  );
  return fc.array(op, { minLength: 1, maxLength: 25, size: 'max' });
}

/** The concrete model op of `a` on a disk of `size` bytes now. */
function concrete(cfg: Config, a: AbstractOp, size: bigint): Op {
  const g = geoOf(cfg);
  switch (a.kind) {
    case 'write': {
      const p = place(g, size, a.offset, BigInt(a.length), a.fromEnd);
      const n = p.length < BigInt(a.length) ? Number(p.length) : a.length;
      return { kind: 'write', offset: p.offset, data: pattern(p.offset, n, a.seed) };
    }
    case 'writeZeroes':
    case 'discard': {
      const p = place(g, size, a.offset, a.length, a.fromEnd);
      const len = p.offset + a.length > size ? size - p.offset : a.length;
      return a.kind === 'writeZeroes' ? { kind: 'writeZeroes', offset: p.offset, length: len, unmap: a.unmap } : { kind: 'discard', offset: p.offset, length: len };
    }
    case 'writeCompressed': {
      const clusters = (size + g.cs - 1n) / g.cs;
      const offset = (a.cluster % clusters) * g.cs;
      const n = offset + g.cs > size ? Number(size - offset) : Number(g.cs);
      return { kind: 'writeCompressed', offset, data: pattern(offset, n, a.seed).map((b, i) => (i % 97 < 60 ? 0 : b)) };
    }
    case 'snapshotCreate':
      return { kind: 'snapshotCreate', name: a.name, dateSec: 1_700_000_000, dateNsec: 0 };
    case 'snapshotApply':
    case 'snapshotDelete':
      return { kind: a.kind, name: a.name };
    case 'flush':
      return { kind: 'flush' };
  }
}

/** The image, data file and backing of `cfg` written into `sub` (created by the model, as qemu-img would). */
async function makeFiles(cfg: Config, sub: string): Promise<{ path: string; model: Image; oracle: RawDisk; close(): void }> {
  let backingReader: FileReader | undefined;
  let backingOracleDisk: RawDisk | undefined;
  if (cfg.backing !== undefined) {
    if (cfg.backing.format !== 'raw') throw new Error('only raw backing files here');
    backingOracleDisk = backingOracle(cfg.backing);
    writeRawFile(backingOracleDisk, join(sub, 'base.raw'));
    backingReader = fileReader(join(sub, 'base.raw'));
  }
  const created = createImage(createOptionsOf(cfg));
  const path = join(sub, 'disk.qcow2');
  await writeHostFile(path, created.image.file);
  if (created.dataFile !== undefined) await writeHostFile(join(sub, 'data.raw'), created.dataFile);
  const model: Image = backingReader !== undefined ? { ...created.image, backing: rawReaderBackingSource(backingReader) } : created.image;
  return { path, model, oracle: emptyOracle(cfg, backingOracleDisk), close: () => backingReader?.close() };
}

let runNo = 0;

/** `syncIo`: the file read on the JavaScript thread, guest data straight into the read buffers (backend readSync). */
async function runSequence(cfg: Config, ops: readonly AbstractOp[], syncIo = false): Promise<void> {
  const sub = join(dir, `run${runNo++}`);
  execFileSync('mkdir', ['-p', sub]);
  try {
    const files = await makeFiles(cfg, sub);
    let model = files.model;
    const oracle = files.oracle;
    let oracleValid = true;
    const g = geoOf(cfg);
    const disk = await openDiskFile(files.path, { readOnly: false, allowBacking: true, cacheBytes: 256 * 1024, syncIo });
    try {
      for (const a of ops) {
        const op = concrete(cfg, a, model.header.size);
        // Snapshot names are unique in the oracle's vocabulary (the model property's rule too).
        if (op.kind === 'snapshotCreate' && oracle.snapshotNames.includes(op.name)) continue;
        const r = step(model, op);
        let driverError: unknown;
        try {
          await applyOpToDisk(disk, op);
        } catch (e) {
          driverError = e;
        }
        if (r.ok) {
          if (driverError !== undefined) throw new Error(`${op.kind}: the model accepted it, the driver threw ${String(driverError)}`);
          oracle.apply(op);
        } else {
          if (!(driverError instanceof ModelError) || driverError.code !== r.error.code) {
            throw new Error(`${op.kind}: the model refused it with ${r.error.code}, the driver ${driverError instanceof Error ? `threw ${driverError.name} ${String((driverError as { code?: unknown }).code)}` : 'accepted it'}`);
          }
          // A refusal part-way leaves what QEMU leaves; the oracle cannot follow it, the model can.
          if (r.image !== model) oracleValid = false;
        }
        model = r.image;
        expect(disk.size).toBe(model.header.size);
        if (oracleValid) expect(oracle.size).toBe(model.header.size);
        // Reads around the op (one cluster each side), through the driver, against model and oracle.
        const range = op.kind === 'write' || op.kind === 'writeCompressed' ? { o: op.offset, n: BigInt(op.data.length) } : 'offset' in op ? { o: op.offset, n: op.length } : { o: 0n, n: g.cs };
        const from = range.o > g.cs ? range.o - g.cs : 0n;
        let to = range.o + range.n + g.cs;
        if (to > model.header.size) to = model.header.size;
        if (to - from > 4n * 1024n * 1024n) to = from + 4n * 1024n * 1024n;
        if (to > from) {
          const got = await disk.read(from, Number(to - from));
          expect(Buffer.from(got).equals(Buffer.from(readGuest(model, from, Number(to - from))))).toBe(true);
          if (oracleValid) expect(Buffer.from(got).equals(Buffer.from(oracle.read(from, Number(to - from))))).toBe(true);
        }
      }
    } finally {
      await disk.close();
      files.close();
    }
    const closed = closeImage(model).image;
    expect(Buffer.from(readFileSync(files.path)).equals(Buffer.from(storeImage(closed)))).toBe(true);
    const data = storeDataFile(closed);
    if (data !== undefined) expect(Buffer.from(readFileSync(join(sub, 'data.raw'))).equals(Buffer.from(data))).toBe(true);
    // qemu-img check finds what our check of the model's closed image finds (leaks only where a
    // snapshot op failed part-way on a refcount overflow, as QEMU's does), and never a corruption.
    const ours = checkImage(closed);
    const check = qemuImgCheck(files.path, sub);
    expect(ours.corruptions).toBe(0);
    if (check.status !== checkExitCode(ours)) throw new Error(`qemu-img check exit ${check.status}, ours ${checkExitCode(ours)} (${ours.leaks} leaks): ${check.out}`);
    if (ours.leaks > 0) expect(JSON.parse(check.json)).toMatchObject({ leaks: ours.leaks });
  } finally {
    rmSync(sub, { recursive: true, force: true });
  }
}


const CLASSES: readonly { cls: ConfigClass; runs: number }[] = [
  { cls: 'small-clusters', runs: 12 },
  { cls: 'large-clusters', runs: 10 },
  { cls: 'preallocated', runs: 6 },
  { cls: 'lazy-refcounts', runs: 8 },
  { cls: 'data-file', runs: 6 },
  { cls: 'backing', runs: 6 },
];

describe('the driver on a real file agrees with the pure model and the raw oracle', () => {
  for (const { cls, runs } of CLASSES) {
    it(`${cls}: reads after every op, the closed file byte for byte, qemu-img check`, async () => {
      const cfgs = configArb(cls).filter((c) => c.backing === undefined || c.backing.format === 'raw');
      await fc.assert(
        fc.asyncProperty(cfgs.chain((cfg) => hotArb(cfg).chain((hot) => opsArb(cfg, hot).map((ops) => ({ cfg, ops })))), fc.boolean(), async ({ cfg, ops }, syncIo) => {
          await runSequence(cfg, ops, syncIo);
        }),
        { numRuns: runs },
      );
    });
  }
});

describe('driver regressions (shrunk counterexamples of the property above)', () => {
  it('close fetches what closeImage reads (a ReadPending escaped close on a lazy-refcounts image)', async () => {
    const cfg: Config = {
      clusterBits: 11, refcountBits: 16, compat: '1.1', extendedL2: false, compressionType: 'zstd', preallocation: 'off',
      requestedSize: 17179868953n, size: 17179869184n, lazy: true,
      backing: { format: 'raw', size: 17179869184n, writes: [{ offset: 0n, length: 147988, seed: 52 }, { offset: 0n, length: 32319, seed: 105 }, { offset: 0n, length: 198942, seed: 71 }] },
    };
    await runSequence(cfg, [
      { kind: 'writeCompressed', cluster: 0n, seed: 1 },
      { kind: 'write', offset: 14572877824n, length: 1, seed: 0, fromEnd: false },
    ]);
  });
});

describe('driver behaviour', () => {
  it.each([
    ['write-through', {}],
    ['write-back, data written at once', { writeback: true, writebackBytes: 8 * 1024 * 1024, syncIo: true }],
  ] as const)('keeps memory bounded on a 1 TiB image (%s): cache bytes and unwritten model pages stay under their bounds', async (_name, mode) => {
    const path = join(dir, `big-${mode === undefined || !('writeback' in mode) ? 'wt' : 'wb'}.qcow2`);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, '1T']);
    const cacheBytes = 1 << 20;
    const disk = await openDiskFile(path, { readOnly: false, cacheBytes, ...mode });
    const rand = fc.sample(fc.bigInt({ min: 0n, max: (1n << 40n) / 4096n - 1n }), { numRuns: 400, seed: 7 });
    let maxCache = 0;
    let maxPages = 0;
    const block = new Uint8Array(4096).fill(0xa5);
    for (const k of rand) {
      await disk.write(k * 4096n, block);
      maxCache = Math.max(maxCache, disk.cachedBytes);
      maxPages = Math.max(maxPages, [...disk.current.file.pages.keys()].length);
    }
    // Spot reads across the disk come back.
    for (const k of rand.slice(0, 20)) expect((await disk.read(k * 4096n, 4096))[100]).toBe(0xa5);
    await disk.close();
    // 400 allocating writes into fresh L2 tables touch ~50 MiB of metadata and data; the cache never
    // holds more than its capacity between operations, and the model's overlay is rebased at 8 MiB.
    expect(maxCache).toBeLessThanOrEqual(cacheBytes);
    expect(maxPages).toBeLessThanOrEqual((8 * 1024 * 1024) / 4096 + 64);
    expect(qemuImgCheck(path).status).toBe(0);
  });

  it('with synchronous reads, guest data goes straight from the file into the read buffer, past the chunk cache', async () => {
    const path = join(dir, 'sync-read.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', path, '64M']);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x3c 0 8M', path]);
    for (const syncIo of [false, true]) {
      const disk = await openDiskFile(path, { syncIo, cacheBytes: 16 << 20 });
      const got = await disk.read(1n << 20n, 4 << 20);
      expect(got.every((b) => b === 0x3c)).toBe(true);
      // The 4 MiB of data pass through the cache only when reads go through it (L2 and refcount
      // metadata are cached either way: a few 64 KiB windows).
      if (syncIo) expect(disk.cachedBytes).toBeLessThan(1 << 20);
      else expect(disk.cachedBytes).toBeGreaterThanOrEqual(4 << 20);
      await disk.close();
    }
  });

  it('write-back sends sequential data to the file at once: no write-back, no flush, bounded model pages', async () => {
    const path = join(dir, 'seq-wb.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, '1G']);
    const disk = await openDiskFile(path, { readOnly: false, writeback: true, writebackBytes: 8 * 1024 * 1024, syncIo: true });
    let maxPages = 0;
    for (let i = 0; i < 96; i++) {
      await disk.write(BigInt(i) << 20n, new Uint8Array(1 << 20).fill(i + 1));
      maxPages = Math.max(maxPages, disk.current.file.pages.size);
    }
    // 96 MiB through an 8 MiB write-back limit: without direct data writes, a dozen write-backs of
    // two or three fdatasyncs each. The metadata (L2 entries, refcounts) waits for the flush, and so
    // does the first write's data (it follows the allocation of the L2 table, a barrier): 256 pages.
    expect(disk.counts.flushes).toBe(0);
    expect(maxPages).toBeLessThanOrEqual(256 + 64);
    expect((await disk.read(95n << 20n, 4))[0]).toBe(96);
    await disk.flush();
    expect(disk.counts.flushes).toBeGreaterThan(0);
    await disk.close();
    expect(qemuImgCheck(path).status).toBe(0);
    const r = spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x60 95M 1M', '-c', 'read -P 0x01 0 1M', path], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).not.toMatch(/Pattern verification failed/);
  });

  it('a read-only open refuses every change with DiskError read-only and writes nothing', async () => {
    const path = join(dir, 'ro.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, '64M']);
    const before = readFileSync(path);
    const disk = await openDiskFile(path);
    for (const f of [
      () => disk.write(0n, new Uint8Array(512)),
      () => disk.writeZeroes(0n, 512n),
      () => disk.discard(0n, 65536n),
      () => disk.resize(1n << 27n),
      () => disk.snapshotCreate('x'),
      () => disk.repair('all'),
    ]) {
      await expect(f()).rejects.toMatchObject({ name: 'DiskError', code: 'read-only' });
    }
    expect((await disk.read(0n, 512)).every((b) => b === 0)).toBe(true);
    await disk.close();
    expect(readFileSync(path).equals(before)).toBe(true);
    await expect(disk.read(0n, 1)).rejects.toMatchObject({ code: 'closed' });
  });

  it('serialises concurrent calls in call order', async () => {
    const path = join(dir, 'conc.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, '16M']);
    const disk = await openDiskFile(path, { readOnly: false });
    // Overlapping writes issued without waiting: the last one issued must win everywhere it wrote.
    const writes = Array.from({ length: 40 }, (_, i) => disk.write(BigInt((i % 7) * 3000), new Uint8Array(70_000).fill(i + 1)));
    const reads = disk.read(0n, 100_000);
    await Promise.all(writes);
    const got = await reads;
    const expected = new Uint8Array(100_000);
    for (let i = 0; i < 40; i++) expected.fill(i + 1, (i % 7) * 3000, Math.min(100_000, (i % 7) * 3000 + 70_000));
    expect(Buffer.from(got).equals(Buffer.from(expected))).toBe(true);
    await disk.close();
    expect(qemuImgCheck(path).status).toBe(0);
  });

  it('a writable open repairs a dirty image (lazy refcounts, no clean close) and issues the repair', async () => {
    const path = join(dir, 'dirty.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', path, '64M']);
    spawnSync('qemu-io', ['-c', 'write -P 7 0 128k', '-c', 'abort', path], { stdio: 'ignore' });
    const dirtyBit = (): number => readFileSync(path)[79]! & 1;
    expect(dirtyBit()).toBe(1);
    // A read-only open leaves it as it is (QEMU too).
    const ro = await openDiskFile(path);
    expect(ro.openRepair).toBeUndefined();
    await ro.close();
    expect(dirtyBit()).toBe(1);
    const disk = await openDiskFile(path, { readOnly: false });
    expect(disk.openRepair).toBeDefined();
    // The repair and the cleared dirty bit are on disk before open returned.
    expect(dirtyBit()).toBe(0);
    expect(qemuImgCheck(path).status).toBe(0);
    expect((await disk.read(0n, 131072)).every((b) => b === 7)).toBe(true);
    await disk.close();
    expect(qemuImgCheck(path).status).toBe(0);
  });

  it('refuses to open an image with a backing file unless told how to find it', async () => {
    const base = join(dir, 'b-base.qcow2');
    const top = join(dir, 'b-top.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', base, '1M']);
    execFileSync('qemu-io', ['-c', 'write -P 3 0 64k', base], { stdio: 'ignore' });
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'b-base.qcow2', '-F', 'qcow2', top]);
    await expect(openDiskFile(top)).rejects.toMatchObject({ name: 'DiskError', code: 'backing' });
    const disk = await openDiskFile(top, { allowBacking: true });
    expect((await disk.read(0n, 65536)).every((b) => b === 3)).toBe(true);
    await disk.close();
    const noBacking = await Qcow2Disk.open(await fileBackend(top), { backing: 'none' });
    expect((await noBacking.read(0n, 65536)).every((b) => b === 0)).toBe(true);
    await noBacking.close();
  });

  it('creates an image qemu-img accepts (createDiskFile) and DiskError is typed', async () => {
    const path = join(dir, 'new.qcow2');
    const disk = await createDiskFile(path, { size: 1n << 30n, clusterSize: 65536 });
    await disk.write(1n << 20n, new Uint8Array(5000).fill(1));
    await expect(disk.read(1n << 30n, 1)).rejects.toBeInstanceOf(DiskError);
    await disk.close();
    expect(qemuImgCheck(path).status).toBe(0);
    const out = execFileSync('qemu-io', ['-c', `read -P 1 ${1 << 20} 5000`, path]).toString();
    expect(out).toMatch(/read 5000\/5000 bytes/);
  });
});
