/**
 * Opening a qcow2 file with the driver on Node: the image's file, its backing chain and its external
 * data file as file backends, found where QEMU finds them and only as far as the path policy allows
 * (open-file.ts explains the policy and why an image's header must not choose which files are read).
 */
import { Qcow2Disk, type DiskBackend, type DiskOpenOptions, type FileResolver } from '../disk/index.ts';
import type { CreateOptions } from '../model/index.ts';
import { fileBackend, type FileBackend } from './file-backend.ts';
import { backingPathOf, dataFilePathOf, MAX_BACKING_DEPTH, OpenImageError, type OpenPolicy } from './open-file.ts';
import { errnoText } from '../model/index.ts';

/** How to open a file with the driver: read-only or not, the path policy, the cache size. */
export interface OpenDiskFileOptions extends OpenPolicy {
  /** Default true: open read-only (nothing is written, even at open). */
  readonly readOnly?: boolean;
  /** Bytes of file chunks cached between operations, per file (default 32 MiB). */
  readonly cacheBytes?: number;
  /** Punch clusters freed by guest requests out of the files (default true; DiskOpenOptions.discardPassthrough). */
  readonly discardPassthrough?: boolean;
  /** Synchronous system calls instead of the thread pool (FileBackendOptions.syncIo). */
  readonly syncIo?: boolean;
  /** Write-back (DiskOpenOptions.writeback, .writebackBytes). */
  readonly writeback?: boolean;
  readonly writebackBytes?: number;
}

/**
 * Opens the qcow2 image at `path` with the driver: read-only unless `readOnly: false`. Its backing
 * chain is opened (read-only) only with `allowBacking` — an image with a backing file and no
 * `allowBacking` is refused with DiskError 'backing' — and backing names that are absolute, lead out
 * of the naming image's directory or name a protocol only with `allowBackingPath`; a data file name
 * that is absolute or leads out of the image's directory only with `allowDataFilePath`. A file that
 * appears twice in a chain is refused. Throws OpenImageError (unreadable file, refused name),
 * OpenError / Qcow2FormatError (QEMU refuses the image), or DiskError.
 */
export async function openDiskFile(path: string, opts: OpenDiskFileOptions = {}): Promise<Qcow2Disk> {
  const top = await openFile(path, opts.readOnly !== false, path, opts.syncIo === true);
  return Qcow2Disk.open(top, {
    ...diskOptions(path, top, opts),
    readOnly: opts.readOnly !== false,
    ...(opts.discardPassthrough !== undefined ? { discardPassthrough: opts.discardPassthrough } : {}),
    ...(opts.writeback !== undefined ? { writeback: opts.writeback } : {}),
    ...(opts.writebackBytes !== undefined ? { writebackBytes: opts.writebackBytes } : {}),
  });
}

/**
 * Creates a new qcow2 image at `path` (which must not exist) with qemu-img create's options and
 * opens it for writing. An external data file (`options.dataFile`) is created beside it under the
 * same path policy; a backing file is opened under the policy when `allowBacking`.
 */
export async function createDiskFile(path: string, options: CreateOptions, opts: OpenPolicy & { readonly cacheBytes?: number } = {}): Promise<Qcow2Disk> {
  const { open } = await import('node:fs/promises');
  await (await open(path, 'wx', 0o644)).close();
  const top = await fileBackend(path, { readOnly: false });
  let data: DiskBackend | undefined;
  try {
    if (options.dataFile !== undefined) {
      const dataPath = dataFilePathOf(path, options.dataFile, opts.allowDataFilePath === true);
      await (await open(dataPath, 'w', 0o644)).close();
      data = await fileBackend(dataPath, { readOnly: false });
    }
  } catch (e) {
    await top.close!();
    throw e;
  }
  const o = diskOptions(path, top, { ...opts, readOnly: false });
  return Qcow2Disk.create(top, options, { ...o, ...(data !== undefined ? { data } : {}) });
}

/** The resolver without allowBacking: the image's header should not choose which files are read. */
const refuseBacking: FileResolver = async (name) => {
  throw new OpenImageError('refused', name, 'backing files are opened only with allowBacking (CLI --allow-backing): the image\'s header should not choose which files are read');
};

/** The driver options for the file at `path`: resolvers that apply the policy and refuse loops. */
function diskOptions(path: string, top: FileBackend, opts: OpenDiskFileOptions): DiskOpenOptions {
  const seen: { dev: bigint; ino: bigint }[] = [{ dev: top.dev, ino: top.ino }];
  const backing: FileResolver = async (name, from) => {
    const parent = from.parent ?? path;
    if (from.depth >= MAX_BACKING_DEPTH) throw new OpenImageError('unsupported', parent, `backing chain longer than ${MAX_BACKING_DEPTH} files`);
    const p = backingPathOf(parent, name, opts.allowBackingPath === true);
    const b = await openFile(p, true, parent, opts.syncIo === true);
    if (seen.some((s) => s.dev === b.dev && s.ino === b.ino)) {
      await b.close!();
      throw new OpenImageError('loop', p, `Backing file '${p}' creates an infinite loop.`);
    }
    seen.push({ dev: b.dev, ino: b.ino });
    return { backend: b, name: p };
  };
  const dataFile: FileResolver = async (name, from) => {
    const parent = from.parent ?? path;
    const p = dataFilePathOf(parent, name, opts.allowDataFilePath === true);
    // Only the top image's data file is written.
    return { backend: await openFile(p, from.depth > 0 || opts.readOnly !== false, parent, opts.syncIo === true), name: p };
  };
  return {
    name: path,
    dataFile,
    backing: opts.allowBacking === true || opts.allowBackingPath === true ? backing : refuseBacking,
    ...(opts.cacheBytes !== undefined ? { cacheBytes: opts.cacheBytes } : {}),
  };
}

async function openFile(path: string, readOnly: boolean, owner: string, syncIo = false): Promise<FileBackend> {
  try {
    return await fileBackend(path, { readOnly, syncIo });
  } catch (e) {
    throw new OpenImageError('read', owner, `Could not open '${path}': ${errnoText(e)}`);
  }
}

