/** The surface of the open layer (ARCHITECTURE.md): what the other layers may import from it. */
export { isOpenError, openImage, openImageWithIo } from './open.ts';
export type { OpenErrorCode } from './open.ts';
