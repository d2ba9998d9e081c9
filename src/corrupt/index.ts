/** The surface of the corrupt layer (ARCHITECTURE.md): what the other layers may import from it. */
export { CORRUPTIONS, corrupt } from './catalog.ts';
export type { CorruptionName } from './catalog.ts';
export { seededRng } from './rng.ts';
export type { Rng } from './rng.ts';
