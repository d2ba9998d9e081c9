// The disk layer's surface: the async driver over the pure model, and its backend contract.
export type { DiskBackend } from './backend.ts';
export { CHUNK_SIZE } from './backend-reader.ts';
export { MAX_CHAIN_DEPTH, Qcow2Disk } from './disk.ts';
export type { DiskOpenOptions, FileResolver, ResolvedFile } from './disk.ts';
export { DiskError, isDiskError } from './errors.ts';
export type { DiskErrorCode } from './errors.ts';
