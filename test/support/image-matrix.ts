/**
 * A matrix of real qcow2 images made by qemu-img/qemu-io 7.2, covering the format's variants:
 * cluster sizes 512 B … 2 MiB, every refcount width, compat 0.10 and 1.1, extended L2, zlib and
 * zstd compressed clusters, lazy refcounts (one image left dirty by a crash), qcow2 and raw backing
 * files, external data files (plain and raw), metadata preallocation, internal snapshots,
 * persistent bitmaps and LUKS encryption. Every image has pattern writes, zero writes and discards,
 * so L2 tables exist and hold several entry kinds.
 *
 * The recipe of every image is declared in IMAGE_SPECS below (one entry per image, read top to
 * bottom); `buildImageMatrix` only executes it. Images are built concurrently, with at most
 * `availableParallelism()` (≥ 2) QEMU processes at a time; an overlay waits for its backing file.
 */
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { qemuImgBitmapAdd, qemuImgCreate, qemuImgCreateArgs, qemuImgSnapshot, qemuIo, qemuIoArgs } from '../../src/qemu/qemu-img.ts';
import { formatCommandLine } from '../../src/qemu/run.ts';

/** One image of the matrix. */
export interface MatrixImage {
  /** Stable identifier, also the file name without `.qcow2`. */
  readonly name: string;
  /** Absolute path of the qcow2 file. */
  readonly path: string;
  /** The `-o` options given to `qemu-img create` (exactly what was passed, values unparsed). */
  readonly createOptions: Readonly<Record<string, string>>;
  /** Other files the image needs (backing files, external data files), absolute paths. */
  readonly extraFiles: readonly string[];
  /** LUKS passphrase, for encrypted images (open with `{ luksSecret }` in src/qemu/qemu-img.ts). */
  readonly luksSecret?: string;
  /** What this image is for, in a sentence. */
  readonly notes: string;
  /** Virtual size in bytes, as requested at creation. */
  readonly virtualSize: number;
  /** True only for the image left by a simulated crash (dirty bit set, refcounts stale). */
  readonly leftDirty: boolean;
  /**
   * The QEMU command lines that built the image, in order (for debugging and replay). Snapshot and
   * bitmap steps are shown in their short, format-probing form.
   */
  readonly recipe: readonly string[];
}

/** A build step after `qemu-img create`. */
type Step =
  /** One qemu-io process running these commands. */
  | { readonly io: readonly string[] }
  /** One qemu-io process running these commands and then `abort` (simulated crash). */
  | { readonly ioThenAbort: readonly string[] }
  /** `qemu-img snapshot -c name`. */
  | { readonly snapshot: string }
  /** `qemu-img bitmap --add name`. */
  | { readonly bitmap: string; readonly granularity?: number; readonly disabled?: boolean };

interface ImageSpec {
  readonly name: string;
  readonly size: number;
  /** Static `-o` options. data_file / backing_file are added by the builder from the fields below. */
  readonly options: Readonly<Record<string, string>>;
  /** External data file name (created next to the image; stored in the header as an absolute path). */
  readonly dataFile?: string;
  /** Backing file name (relative, resolved by QEMU against the overlay's directory) and its format. */
  readonly backing?: { readonly file: string; readonly format: 'qcow2' | 'raw' };
  /** Extra `qemu-img create` arguments. */
  readonly createArgs?: readonly string[];
  readonly luksSecret?: string;
  readonly leftDirty?: boolean;
  readonly steps: readonly Step[];
  readonly notes: string;
}

/** A raw file used as a backing file (not itself part of the qcow2 matrix). */
interface RawSpec {
  readonly file: string;
  readonly size: number;
  readonly io: readonly string[];
}

const K = 1024;
const M = 1024 * 1024;
const LUKS_SECRET = '123456';

/** Raw backing files, built before the images that use them. */
const RAW_SPECS: readonly RawSpec[] = [
  {
    file: 'backing-raw.raw',
    size: 8 * M,
    io: ['write -P 0x51 0 1M', 'write -P 0x52 3M 512k', 'write -P 0x53 7M 1M'],
  },
];

/**
 * Every qcow2 image of the matrix. Order matters only in that a backing image comes before its
 * overlays; the LUKS image is first because its key derivation is the slowest step (~2 s of CPU).
 */
const IMAGE_SPECS: readonly ImageSpec[] = [
  {
    name: 'luks',
    size: 16 * M,
    options: { 'encrypt.format': 'luks', 'encrypt.key-secret': 'sec0', 'encrypt.iter-time': '10' },
    createArgs: ['--object', `secret,id=sec0,data=${LUKS_SECRET}`],
    luksSecret: LUKS_SECRET,
    steps: [{ io: ['write -P 0xa1 0 64k', 'write -P 0xa2 1M 100k', 'write -z 2M 128k', 'write -P 0xa3 3M 64k', 'discard 3M 64k'] }],
    notes: 'LUKS (aes-256-xts) encrypted data clusters; FDE header extension; iter-time 10 ms keeps opening fast',
  },
  {
    name: 'defaults',
    size: 64 * M,
    options: {},
    steps: [
      {
        io: [
          'write -P 0x11 0 64k',
          'write -P 0x12 1M 192k',
          'write -P 0x13 10M 3k',
          'write -z 2M 128k',
          'write -z 10M 1k',
          'discard 1M 64k',
          'write -P 0x14 63M 1M',
        ],
      },
    ],
    notes: 'qemu-img defaults (v3, 64 KiB clusters, 16-bit refcounts, zlib); partial-cluster writes, zero clusters, a discard',
  },
  {
    name: 'cluster-512-many-l2',
    size: 16 * M,
    options: { cluster_size: '512' },
    steps: [{ io: ['write -P 0x21 0 9M', 'write -z 10M 1M', 'discard 1M 512k', 'write -P 0x22 15M 17k', 'write -P 0x23 13M 1000'] }],
    notes:
      '512-byte clusters: L1 of 512 entries spans 8 clusters, ~300 L2 tables, 9 MiB of data forces many refblocks and a reftable move (grown to 2 clusters)',
  },
  {
    name: 'cluster-4k',
    size: 16 * M,
    options: { cluster_size: '4096' },
    steps: [
      {
        io: [
          'write -P 0x31 0 10k',
          'write -P 0x32 1M 4k',
          'write -c -P 0x33 8M 4k',
          'write -c -P 0x34 8196k 8k',
          'write -z 2M 16k',
          'discard 1M 4k',
          'write -P 0x35 9M 1000',
        ],
      },
    ],
    notes: '4 KiB clusters: no feature-name table in the header (cluster_size <= 4096), zlib compressed clusters with a 4-bit sector-count field',
  },
  {
    name: 'cluster-2m',
    size: 64 * M,
    options: { cluster_size: '2097152' },
    steps: [
      {
        io: [
          'write -P 0x41 0 64k',
          'write -P 0x42 3M 2M',
          'write -z 8M 2M',
          'write -z 12M 4k',
          'write -c -P 0x43 16M 2M',
          'discard 20M 2M',
          'write -P 0x44 20M 2M',
          'discard 20M 2M',
        ],
      },
    ],
    notes: '2 MiB clusters (largest allowed): partial-cluster COW, write straddling two clusters, compressed cluster with 13-bit sector field',
  },
  {
    name: 'refcount-1',
    size: 16 * M,
    options: { refcount_bits: '1' },
    steps: [{ io: ['write -P 0x61 0 128k', 'write -c -P 0x62 1M 64k', 'write -c -P 0x63 1088k 64k', 'write -z 2M 64k', 'discard 64k 64k'] }],
    notes: '1-bit refcounts (packed LSB-first); compressed clusters cannot share a host cluster; snapshots impossible',
  },
  {
    name: 'refcount-2',
    size: 8 * M,
    options: { refcount_bits: '2', cluster_size: '4096' },
    steps: [
      { io: ['write -P 0x64 0 12k', 'write -z 64k 8k'] },
      { snapshot: 's1' },
      { io: ['write -P 0x65 4k 4k', 'discard 8k 4k'] },
      { snapshot: 's2' },
      { io: ['write -P 0x66 0 4k'] },
    ],
    notes: '2-bit refcounts with two snapshots: shared clusters reach refcount 3 (the maximum)',
  },
  {
    name: 'refcount-4',
    size: 16 * M,
    options: { refcount_bits: '4' },
    steps: [
      {
        io: [
          'write -c -P 0x67 0 64k',
          'write -c -P 0x68 64k 64k',
          'write -c -P 0x69 128k 64k',
          'write -P 0x6a 1M 64k',
          'write -z 2M 64k',
          'discard 1M 64k',
        ],
      },
    ],
    notes: '4-bit refcounts; three compressed clusters packed in one host cluster (refcount 3)',
  },
  {
    name: 'refcount-8',
    size: 4 * M,
    options: { refcount_bits: '8', cluster_size: '512' },
    steps: [{ io: ['write -P 0x6b 0 300k', 'write -z 1M 4k', 'discard 100k 50k', 'write -P 0x6c 3M 1k'] }],
    notes: '8-bit refcounts with 512-byte clusters (512 entries per refblock, several refblocks)',
  },
  {
    name: 'refcount-16',
    size: 16 * M,
    options: { refcount_bits: '16', cluster_size: '16384' },
    steps: [{ io: ['write -P 0x6d 0 40k', 'write -z 1M 32k', 'discard 16k 16k'] }],
    notes: '16-bit refcounts (the default width) stated explicitly, 16 KiB clusters',
  },
  {
    name: 'refcount-32',
    size: 16 * M,
    options: { refcount_bits: '32' },
    steps: [
      { io: ['write -P 0x6e 0 128k', 'write -z 1M 64k'] },
      { snapshot: 's1' },
      { io: ['write -P 0x6f 0 64k', 'discard 64k 64k'] },
    ],
    notes: '32-bit refcounts with a snapshot (COW after snapshot)',
  },
  {
    name: 'refcount-64',
    size: 8 * M,
    options: { refcount_bits: '64', cluster_size: '4096' },
    steps: [
      { io: ['write -P 0x71 0 16k', 'write -c -P 0x72 1M 4k', 'write -z 2M 4k'] },
      { snapshot: 's1' },
      { io: ['write -P 0x73 0 4k', 'discard 4k 4k'] },
    ],
    notes: '64-bit refcounts (512 entries per 4 KiB refblock) with a snapshot and a compressed cluster',
  },
  {
    name: 'compat-0.10',
    size: 16 * M,
    options: { compat: '0.10' },
    steps: [
      { io: ['write -P 0x81 0 128k', 'write -P 0x82 1M 10k', 'write -z 2M 64k', 'write -z 64k 64k', 'discard 1M 64k'] },
      { snapshot: 's1' },
      { io: ['write -P 0x83 0 64k'] },
    ],
    notes: 'version 2 header (72 bytes, no feature bits): zero writes become deallocation, a snapshot',
  },
  {
    name: 'extended-l2',
    size: 16 * M,
    options: { extended_l2: 'on', cluster_size: '65536' },
    steps: [
      {
        io: [
          'write -P 0x91 0 64k',
          'write -P 0x92 64k 2k',
          'write -P 0x93 70k 1k',
          'write -z 128k 64k',
          'write -z 196k 4k',
          'write -P 0x94 256k 64k',
          'write -z 260k 8k',
          'write -c -P 0x95 1M 64k',
          'discard 2M 64k',
          'write -P 0x96 2M 6k',
          'discard 2M 64k',
        ],
      },
    ],
    notes:
      '128-bit L2 entries with 2 KiB subclusters: full, partial and sub-subcluster writes, full and partial zero writes (mixed alloc/zero bitmaps), a compressed cluster, discards',
  },
  {
    name: 'zstd',
    size: 16 * M,
    options: { compression_type: 'zstd' },
    steps: [
      {
        io: [
          'write -c -P 0x11 0 64k',
          'write -c -P 0x12 64k 64k',
          'write -c -P 0x13 128k 64k',
          'write -c 1M 128k',
          'write -P 0x14 64k 4k',
          'write -z 128k 64k',
          'write -P 0x15 2M 64k',
          'discard 3M 64k',
        ],
      },
    ],
    notes: 'compression_type=zstd (incompat bit 3, header byte 104): packed zstd frames, one compressed cluster rewritten by COW, one zeroed',
  },
  {
    name: 'zlib-unaligned-size',
    size: 16 * M + 4 * K,
    options: { compression_type: 'zlib' },
    steps: [
      {
        io: [
          'write -c -P 0x21 0 64k',
          'write -c -P 0x22 64k 64k',
          'write -c -P 0x23 16M 4k',
          'write -P 0x24 1M 64k',
          'write -z 64k 64k',
          'discard 1M 64k',
        ],
      },
    ],
    notes: 'zlib (raw deflate) compressed clusters; virtual size not a multiple of the cluster size, with a compressed partial last cluster',
  },
  {
    name: 'lazy-refcounts-clean',
    size: 16 * M,
    options: { lazy_refcounts: 'on' },
    steps: [{ io: ['write -P 0xb1 0 128k', 'write -z 1M 64k', 'discard 64k 64k'] }],
    notes: 'compatible bit 0 (lazy refcounts), closed cleanly: dirty bit clear, refcounts consistent',
  },
  {
    name: 'lazy-refcounts-dirty',
    size: 16 * M,
    options: { lazy_refcounts: 'on' },
    leftDirty: true,
    steps: [{ io: ['write -P 0xb2 0 64k', 'write -z 1M 64k'] }, { ioThenAbort: ['write -P 0xb3 2M 128k', 'discard 0 64k'] }],
    notes:
      'lazy refcounts, then qemu-io aborted after writing: incompatible bit 0 (dirty) set, new clusters have refcount 0; qemu-img check reports corruptions (rc 2)',
  },
  {
    name: 'backing-base',
    size: 16 * M,
    options: { cluster_size: '65536' },
    steps: [{ io: ['write -P 0xc1 0 1M', 'write -P 0xc2 4M 256k', 'write -P 0xc3 15M 1M', 'write -z 8M 64k'] }],
    notes: 'qcow2 image used as the backing file of the overlay images below',
  },
  {
    name: 'overlay-qcow2-backing',
    size: 32 * M,
    options: {},
    backing: { file: 'backing-base.qcow2', format: 'qcow2' },
    steps: [
      {
        io: [
          'write -P 0xd1 4k 4k',
          'write -P 0xd2 4M 1k',
          'write -z 128k 64k',
          'discard 256k 64k',
          'discard 10M 64k',
          'write -P 0xd3 20M 64k',
        ],
      },
    ],
    notes:
      'overlay on a qcow2 backing file (backing_fmt=qcow2, relative name), larger than its backing file: COW from backing data, zero and discard over backing data (ZERO_PLAIN)',
  },
  {
    name: 'extended-l2-backing',
    size: 16 * M,
    options: { extended_l2: 'on', cluster_size: '16384' },
    backing: { file: 'backing-base.qcow2', format: 'qcow2' },
    steps: [{ io: ['write -P 0xd4 2k 1k', 'write -P 0xd5 16k 16k', 'write -z 32k 2k', 'discard 48k 16k', 'write -P 0xd6 4100k 512'] }],
    notes:
      'extended L2 with 16 KiB clusters (512-byte subclusters) over a qcow2 backing file: subcluster COW leaves the rest reading from backing',
  },
  {
    name: 'overlay-raw-backing',
    size: 8 * M,
    options: {},
    backing: { file: 'backing-raw.raw', format: 'raw' },
    steps: [{ io: ['write -P 0xe1 0 4k', 'write -z 3M 64k', 'discard 7M 64k', 'write -P 0xe2 5M 64k'] }],
    notes: 'overlay on a raw backing file (backing_fmt=raw)',
  },
  {
    name: 'data-file',
    size: 16 * M,
    options: {},
    dataFile: 'data-file.data',
    steps: [{ io: ['write -P 0xf1 0 64k', 'write -P 0xf2 1M 100k', 'write -z 2M 64k', 'discard 1M 64k'] }],
    notes:
      'external data file (incompat bit 2, DATA header extension with an absolute path: QEMU resolves a relative data_file against the CWD): guest offset == data-file offset, no data refcounts',
  },
  {
    name: 'data-file-raw',
    size: 16 * M,
    options: { data_file_raw: 'on' },
    dataFile: 'data-file-raw.data',
    steps: [{ io: ['write -P 0xf3 0 64k', 'write -z 1M 64k', 'discard 2M 64k'] }],
    notes: 'external data file with data_file_raw=on (autoclear bit 1): metadata fully preallocated 1:1, zeros written through to the data file',
  },
  {
    name: 'prealloc-metadata',
    size: 16 * M,
    options: { preallocation: 'metadata' },
    steps: [{ io: ['write -P 0x0a 0 64k', 'write -P 0x0b 1M 4k', 'write -z 2M 64k', 'discard 3M 64k'] }],
    notes: 'preallocation=metadata: every L2 entry allocated (NORMAL+COPIED) before any write; file extended sparsely',
  },
  {
    name: 'snapshots',
    size: 16 * M,
    options: {},
    steps: [
      { io: ['write -P 0x1a 0 128k', 'write -P 0x1b 1M 64k', 'write -z 2M 64k'] },
      { snapshot: 's1' },
      { io: ['write -P 0x1c 0 4k', 'write -P 0x1d 4M 64k', 'discard 1M 64k', 'write -z 64k 64k'] },
      { snapshot: 's2' },
      { io: ['write -P 0x1e 4M 4k'] },
    ],
    notes: 'two internal snapshots with writes between them: shared clusters (refcount 2-3), COW-ed L2 tables, COPIED flags cleared',
  },
  {
    name: 'bitmaps',
    size: 16 * M,
    options: {},
    steps: [
      { io: ['write -P 0x2a 0 64k'] },
      { bitmap: 'b0' },
      { bitmap: 'b1', granularity: 4096, disabled: true },
      { io: ['write -P 0x2b 1M 128k', 'write -z 2M 64k', 'discard 0 64k', 'write -P 0x2c 5M 4k'] },
    ],
    notes: 'persistent dirty bitmaps (autoclear bit 0, bitmaps extension): b0 enabled and recording the later writes, b1 disabled with 4 KiB granularity',
  },
];

/**
 * Builds every matrix image into `dir` (which must exist and be writable) with qemu-img/qemu-io and
 * returns them in declaration order. Each image, backing file and data file is its own file in
 * `dir`. Rejects with the first QEMU failure (QemuCommandError / QemuToolMissingError).
 */
export async function buildImageMatrix(dir: string): Promise<MatrixImage[]> {
  // Check the declaration order first, so a mistake throws before any process starts.
  const declared = new Set<string>(RAW_SPECS.map((r) => r.file));
  for (const spec of IMAGE_SPECS) {
    if (spec.backing !== undefined && !declared.has(spec.backing.file)) {
      throw new Error(`image-matrix: ${spec.name} needs ${spec.backing.file}, which is not declared before it`);
    }
    declared.add(`${spec.name}.qcow2`);
  }
  const limit = makeLimiter(Math.max(2, availableParallelism()));
  // Every file being built, by file name; an overlay starts once its backing file is done.
  const done = new Map<string, Promise<unknown>>();
  for (const raw of RAW_SPECS) done.set(raw.file, buildRaw(dir, raw, limit));
  const images: Promise<MatrixImage>[] = [];
  for (const spec of IMAGE_SPECS) {
    const backingDone = spec.backing !== undefined ? done.get(spec.backing.file) : undefined;
    const built = Promise.resolve(backingDone).then(() => buildImage(dir, spec, limit));
    done.set(`${spec.name}.qcow2`, built);
    images.push(built);
  }
  // Wait for everything (so no process outlives a failure unobserved), then report the first error.
  const settled = await Promise.allSettled(done.values());
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
  return Promise.all(images);
}

/** Names of all matrix images, in build order (for tests that want to enumerate without building). */
export const MATRIX_IMAGE_NAMES: readonly string[] = IMAGE_SPECS.map((s) => s.name);

async function buildRaw(dir: string, raw: RawSpec, limit: Limiter): Promise<void> {
  const path = join(dir, raw.file);
  await limit(() => qemuImgCreate(path, raw.size, {}, [], 'raw'));
  await limit(() => qemuIo(path, raw.io, { format: 'raw' }));
}

async function buildImage(dir: string, spec: ImageSpec, limit: Limiter): Promise<MatrixImage> {
  const path = join(dir, `${spec.name}.qcow2`);
  const options: Record<string, string> = { ...spec.options };
  const extraFiles: string[] = [];
  if (spec.dataFile !== undefined) {
    // qemu-img create puts data_file= first in its own option list; order in -o does not matter.
    options['data_file'] = join(dir, spec.dataFile);
    extraFiles.push(options['data_file']);
  }
  if (spec.backing !== undefined) {
    options['backing_file'] = spec.backing.file;
    options['backing_fmt'] = spec.backing.format;
    extraFiles.push(join(dir, spec.backing.file));
  }
  const createArgs = spec.createArgs ?? [];
  const ioOpts = spec.luksSecret !== undefined ? { luksSecret: spec.luksSecret } : {};
  const recipe: string[] = [];
  // A relative backing_file is resolved by QEMU against the overlay's directory (not the CWD), so
  // it needs no cwd; create still runs in `dir` so nothing can land elsewhere.
  recipe.push(formatCommandLine('qemu-img', qemuImgCreateArgs(path, spec.size, options, createArgs)));
  await limit(() => qemuImgCreate(path, spec.size, options, createArgs, 'qcow2', { cwd: dir }));
  for (const step of spec.steps) {
    if ('io' in step) {
      recipe.push(formatCommandLine('qemu-io', qemuIoArgs(path, step.io, ioOpts)));
      await limit(() => qemuIo(path, step.io, ioOpts));
    } else if ('ioThenAbort' in step) {
      const commands = [...step.ioThenAbort, 'abort'];
      recipe.push(formatCommandLine('qemu-io', qemuIoArgs(path, commands, ioOpts)));
      await limit(() => qemuIo(path, commands, { ...ioOpts, expectAbort: true, cwd: dir }));
    } else if ('snapshot' in step) {
      recipe.push(formatCommandLine('qemu-img', ['snapshot', '-c', step.snapshot, path]));
      await limit(() => qemuImgSnapshot(path, 'create', step.snapshot));
    } else {
      const bitmapOpts = {
        ...(step.granularity !== undefined ? { granularity: step.granularity } : {}),
        ...(step.disabled === true ? { disabled: true } : {}),
      };
      recipe.push(
        formatCommandLine('qemu-img', [
          'bitmap',
          '--add',
          ...(step.granularity !== undefined ? ['-g', String(step.granularity)] : []),
          ...(step.disabled === true ? ['--disable'] : []),
          path,
          step.bitmap,
        ]),
      );
      await limit(() => qemuImgBitmapAdd(path, step.bitmap, bitmapOpts));
    }
  }
  return {
    name: spec.name,
    path,
    createOptions: options,
    extraFiles,
    ...(spec.luksSecret !== undefined ? { luksSecret: spec.luksSecret } : {}),
    notes: spec.notes,
    virtualSize: spec.size,
    leftDirty: spec.leftDirty === true,
    recipe,
  };
}

type Limiter = <T>(task: () => Promise<T>) => Promise<T>;

/** At most `n` tasks run at once; the others wait in FIFO order. A finishing task hands its slot to the next waiter. */
function makeLimiter(n: number): Limiter {
  let running = 0;
  const waiting: (() => void)[] = [];
  return async <T>(task: () => Promise<T>): Promise<T> => {
    if (running < n) running++;
    else await new Promise<void>((resolve) => waiting.push(resolve)); // slot handed over, count unchanged
    try {
      return await task();
    } finally {
      const next = waiting.shift();
      if (next !== undefined) next();
      else running--;
    }
  };
}
