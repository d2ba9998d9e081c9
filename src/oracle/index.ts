/** The surface of the oracle layer (ARCHITECTURE.md): what the other layers may import from it. */
export { checkInvariants } from './invariants.ts';
export { RawDisk, RawDiskError, writeRawFile } from './raw-disk.ts';
