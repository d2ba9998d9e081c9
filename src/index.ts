/**
 * `qcow2-ref`: the platform-neutral core. Nothing this module loads imports `node:*` or uses Node's
 * Buffer (test/unit/platform-neutral.test.ts), so it runs unchanged in Node, in browsers and in
 * workers; loading it has no side effects.
 *
 * - Every structure of spec/qcow2.ksy: `decodeX(bytes, offset, params)` / `encodeX(fields, params)`
 *   and their interfaces (generated; 64-bit values as exact hi/lo halves).
 * - The meaning of the bits: entry kinds, subcluster states, feature names, 64-bit helpers.
 * - `walkImage(bytes | source)`: every structure of an image, each distinct table decoded once; a
 *   source (`{ length, read(offset, n) }`) is read structure by structure, not whole.
 * - Errors: only `Qcow2FormatError` (code, structure, field, offset) escapes a decoder.
 * - The model: `createImage`, `loadImage` / `storeImage`, `step(image, op) → {image, io}`, `readGuest`
 *   (`readGuestInto`: into a reused buffer), `mapImage`, `closeImage` — pure functions over immutable Images; `ModelError` for refusals.
 *   Images may lie over a read-only HostReader (`loadImage(reader)`, `hostFromReader`), and a driver
 *   that writes the file rebases onto a new reader (`rebaseHostFile`) to keep memory bounded.
 * - QEMU's open-time validation (`openImage`), `qemu-img check` and its repairs (`checkImage`,
 *   `repairImage`), `qemu-img info` (`qcow2ImageInfo`, `imageInfoQObject`).
 * - The disk driver: `Qcow2Disk` (open/create on any `DiskBackend`; read, write, zeroes, discard,
 *   flush, snapshots, resize, info, map, check, repair, close — the model's I/O issued in order with a
 *   flush at every barrier) and the memory, Blob and OPFS backends.
 * - The compression codecs: portable ones are built in (pako, libzstd as embedded wasm);
 *   `installCompressionCodecs` swaps in faster equivalents (the Node entry does, for inflate).
 *
 * `qcow2-ref/node` adds the Node file layer (src/node.ts); `qcow2-ref/testing` the oracles, the
 * corruption catalog, the corpus and the conformance harness (src/testing.ts).
 */
export * from '../generated/qcow2.ts';
export * from './codec/errors.ts';
export * from './format/u64.ts';
export * from './format/entries.ts';
export * from './format/features.ts';
export * from './format/walk.ts';

// The model: a pure state machine over immutable Images (src/model).
export { step, type StepResult } from './model/step.ts';
export { OP_KINDS, opRange, type Op, type OpKind } from './model/ops.ts';
export { createImage, CreateError, type CreateOptions, type CreateResult } from './model/create.ts';
export { loadImage, storeImage, storeDataFile, type LoadOptions } from './model/load-store.ts';
export { readGuest, readGuestInto } from './model/read.ts';
export { mapImage, type MapExtent, type MapOptions, type HostAllocation } from './model/block-status.ts';
export { imageBackingSource, rawBackingSource, rawReaderBackingSource } from './model/backing.ts';
export { closeImage } from './model/close.ts';
export { ModelError, type ModelErrorCode } from './model/errors.ts';
export { freshSession, geometryOf, type BackingSource, type Geometry, type HeaderState, type Image, type SessionState } from './model/image.ts';
export { applyHostIO, emptyHostFile, hostBytes, hostFromBytes, hostFromReader, readHost, rebaseHostFile, type HostFile } from './model/host-file.ts';
export type { HostIO, HostTarget } from './model/host-io.ts';
export { HostReaderError, type HostBase, type HostReader } from './model/host-reader.ts';
export { compressionCodecs, installCompressionCodecs, type CompressionCodecs } from './model/compression.ts';
export { portableCompressionCodecs } from './model/portable-codecs.ts';

// Open, check and repair, info: what qemu-img and QEMU's open decide.
export { openImage, openImageWithIo, OpenError, isOpenError, type OpenErrorCode, type OpenOptions, type OpenResult } from './open/open.ts';
export { checkImage, checkExitCode, type CheckFinding, type CheckResult } from './check/check.ts';
export { repairImage, type RepairMode, type RepairOptions, type RepairResult } from './check/repair.ts';
export { imageInfoQObject, qcow2ImageInfo, rawImageInfo, type FileFacts, type ImageInfo, type InfoResult, type QObject } from './views/info.ts';

// The disk driver (src/disk): Qcow2Disk, an async driver over the model on any DiskBackend, and the
// platform-neutral backends: memory, a browser Blob/File (read-only), an OPFS file through a worker's
// FileSystemSyncAccessHandle.
export {
  BackendError, blobBackend, DiskError, isDiskError, MAX_CHAIN_DEPTH, memoryBackend, opfsBackend, Qcow2Disk,
  type BackendErrorCode, type BackendKind, type BlobBackendOptions, type BlobLike, type DiskBackend, type DiskErrorCode,
  type DiskOpenOptions, type FileResolver, type MemoryBackend, type OpfsBackend, type ResolvedFile, type SyncAccessHandleLike,
} from './disk/index.ts';
