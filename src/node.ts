/**
 * `qcow2-ref/node`: everything of the core (`qcow2-ref`, src/index.ts) plus the Node file layer
 * (src/io): the disk driver on files (`openDiskFile`, `createDiskFile`, `fileBackend`), images
 * opened from files with their backing chain and data file under a path policy, the model's host
 * writes applied to files with fsync at every flush barrier, SEEK_DATA probes and the streaming
 * `convert` engine, and the NBD server (`NbdServer` serving an `NbdExport`). Loading it installs node:zlib's inflate into the model's codecs
 * (src/io/node-compression.ts: the same bytes as the portable inflate, 2–3× faster).
 */
export * from './index.ts';

export { fileReader, type FileReader } from './io/file-reader.ts';
export { applyHostIOToPaths, writeHostFile, type HostIOStats } from './io/host-io-file.ts';
export {
  MAX_BACKING_DEPTH,
  OpenImageError,
  chainImage,
  mapDependencies,
  mapLayer,
  openImageFile,
  withOpenImageFile,
  type OpenFileOptions,
  type OpenPolicy,
  type OpenedDataFile,
  type OpenedLayer,
} from './io/open-file.ts';
export { probeHostAllocations, probeHostAllocationsOrFull, HostProbeError } from './io/seek-data.ts';
export { ConvertError, OUTPUT_CACHES, convertImage, type ConvertHooks, type ConvertProgress, type ConvertRequest, type ConvertSummary, type OutputCache } from './io/convert.ts';
export { fileBackend, type FileBackend, type FileBackendOptions } from './io/file-backend.ts';
export { createDiskFile, openDiskFile, type OpenDiskFileOptions } from './io/open-disk-file.ts';
export { nodeCompressionCodecs } from './io/node-compression.ts';
export { NbdServer, NbdServerError, type NbdListenOptions } from './io/nbd-server.ts';
export {
  NbdExport,
  NbdExportError,
  NbdSession,
  type DetectZeroesMode,
  type DiscardMode,
  type NbdChannel,
  type NbdExportOptions,
  type NbdServerContext,
} from './nbd/index.ts';
