/**
 * Backing sources: what an overlay reads through when its clusters are unallocated (fact sheet §3.6).
 * A model Image can be the backing image of another, so chains of any depth are built from Images.
 */
import type { BackingSource, Image } from './image.ts';
import { mapImage, type MapExtent, type MapOptions } from './map.ts';
import { readGuest } from './read.ts';

/**
 * `image` as a read-only backing source: its virtual size, reads through its own mapping (and its own
 * backing chain), and its `map` for `qemu-img map` of an overlay. Later steps on the overlay never
 * change `image` (Images are immutable), as QEMU never writes a backing file. `mapOptions` tells
 * `map` how the backing file is stored on the host (src/model/map.ts).
 */
export function imageBackingSource(image: Image, mapOptions: MapOptions = {}): BackingSource {
  return {
    // QEMU sees a qcow2 image as whole 512-byte sectors (bs->total_sectors = size / 512): the bytes
    // of a partial last sector are past the backing file's end, so an overlay reads zeros there.
    size: image.header.size & ~511n,
    read: (offset, length) => readGuest(image, offset, length),
    map: (offset, length) => mapImage(image, offset, length, mapOptions),
  };
}

/**
 * A raw backing file holding `bytes` (zeros past its end), written without holes. QEMU sees its length
 * rounded up to 512 bytes (bdrv_getlength counts sectors) and maps the bytes as data at their own
 * offsets and the rest of the last sector as zeros. `bytes` is copied, so later changes to it do not
 * show through.
 */
export function rawBackingSource(bytes: Uint8Array): BackingSource {
  const copy = bytes.slice();
  const length = BigInt(copy.length);
  const size = (length + 511n) & ~511n;
  return {
    size,
    read: (offset, n) => {
      const out = new Uint8Array(n);
      if (offset < length) {
        const from = Number(offset);
        out.set(copy.subarray(from, Math.min(copy.length, from + n)));
      }
      return out;
    },
    map: (offset, n) => {
      const end = offset + n;
      const out: MapExtent[] = [];
      if (offset < length) {
        const to = end < length ? end : length;
        out.push({ start: offset, length: to - offset, depth: 0, present: true, zero: false, data: true, offset });
      }
      const from = offset > length ? offset : length;
      if (from < end) out.push({ start: from, length: end - from, depth: 0, present: true, zero: true, data: false, offset: from });
      return out;
    },
  };
}
