/** The surface of the io layer (ARCHITECTURE.md): what the other layers may import from it. */
export { ConvertError, OUTPUT_CACHES, convertImage } from './convert.ts';
export type { ConvertRequest, OutputCache } from './convert.ts';
export { fileReader } from './file-reader.ts';
export type { FileReader } from './file-reader.ts';
export { applyHostIOToPaths, writeHostFile } from './host-io-file.ts';
export type { HostIOStats } from './host-io-file.ts';
export { OPEN_POLICY_OPTIONS, OpenImageError, chainImage, mapDependencies, mapLayer, openImageFile, openPolicyFrom, withOpenImageFile } from './open-file.ts';
export type { OpenFileOptions, OpenPolicy, OpenedLayer } from './open-file.ts';
export { repoRoot } from './repo-root.ts';
export { SeekDataProbeServer, probeHostAllocationsOrFull } from './seek-data.ts';
export { tempPathBeside } from './temp-file.ts';

// Loading the I/O layer installs node:zlib's faster inflate into the model's codecs (src/model/compression.ts).
import './node-compression.ts';
export { fileBackend } from './file-backend.ts';
export type { FileBackend, FileBackendOptions } from './file-backend.ts';
export { createDiskFile, openDiskFile } from './open-disk-file.ts';
export type { OpenDiskFileOptions } from './open-disk-file.ts';
export { NbdServer, NbdServerError, SocketChannel } from './nbd-server.ts';
export type { NbdListenOptions } from './nbd-server.ts';
