// The disk layer's surface: the async driver over the pure model, its backend contract, and the
// platform-neutral backends (memory, browser Blob/File, OPFS sync access handle).
export type { DiskBackend } from './backend.ts';
export { HostIoIssuer, type IoCounts } from './apply-io.ts';
export { BackendError, type BackendErrorCode, type BackendKind } from './backend-errors.ts';
export { CHUNK_SIZE } from './backend-reader.ts';
export { blobBackend, type BlobBackendOptions, type BlobLike } from './blob-backend.ts';
export { MAX_CHAIN_DEPTH, Qcow2Disk } from './disk.ts';
export type { DiskOpenOptions, FileResolver, ResolvedFile } from './disk.ts';
export { DiskError, isDiskError } from './errors.ts';
export type { DiskErrorCode } from './errors.ts';
export { memoryBackend, type MemoryBackend } from './memory-backend.ts';
export { opfsBackend, type OpfsBackend, type SyncAccessHandleLike } from './opfs-backend.ts';
export { writeHostFileTo } from './write-host-file.ts';
