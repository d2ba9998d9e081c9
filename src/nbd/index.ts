/**
 * The surface of the nbd layer (ARCHITECTURE.md): the NBD protocol's values and codecs, an export
 * (a Qcow2Disk served the way qemu-nbd serves an image) and the per-connection session over any byte
 * channel. Platform neutral; src/io/nbd-server.ts puts it on Node's sockets.
 */
export { NbdExport, NbdExportError } from './export.ts';
export type { DetectZeroesMode, DiscardMode, MetaContexts, NbdExportOptions, ReadPiece } from './export.ts';
export { CONTEXT_BASE, CONTEXT_DEPTH, MAX_IN_FLIGHT, MAX_IN_FLIGHT_BYTES, MAX_OPTIONS, MAX_OPTION_PAYLOAD, NbdSession, nbdErrno } from './session.ts';
export type { NbdChannel, NbdServerContext } from './session.ts';
export * as nbdProtocol from './protocol.ts';
