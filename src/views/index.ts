/** The surface of the views layer (ARCHITECTURE.md): what the other layers may import from it. */
export { imageInfoQObject, qcow2ImageInfo, rawImageInfo } from './info.ts';
export type { ImageInfo, InfoResult, QObject } from './info.ts';
