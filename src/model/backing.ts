/**
 * Backing sources: what an overlay reads through when its clusters are unallocated (docs/format/mapping.md#read-resolution).
 * A model Image can be the backing image of another, so chains of any depth are built from Images.
 */
import { HostReaderError, type HostReader } from './host-reader.ts';
import type { BackingSource, Image } from './image.ts';
import { mapImage, type MapExtent, type MapOptions } from './block-status.ts';
import { readGuest } from './read.ts';

/**
 * `image` as a read-only backing source: its virtual size, reads through its own mapping (and its own
 * backing chain), and its `map` for `qemu-img map` of an overlay. Later steps on the overlay never
 * change `image` (Images are immutable), as QEMU never writes a backing file. `mapOptions` tells
 * `map` how the backing file is stored on the host (src/model/block-status.ts).
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
  return rawReaderBackingSource({
    length: BigInt(copy.length),
    // A view is enough: rawReaderBackingSource copies what it reads into a fresh array.
    read: (offset, n) => copy.subarray(Number(offset), Number(offset) + n),
  });
}

/**
 * A raw backing file read through `reader` (e.g. a file, with positioned reads), never copied into
 * memory: the same BackingSource rawBackingSource makes of the reader's bytes. QEMU sees the file's
 * length rounded up to 512 bytes (bdrv_getlength counts sectors); reads return the reader's bytes and
 * zeros past its end. `map` reports the ranges of `data` (sorted, disjoint [start, end) pairs: what
 * SEEK_DATA/SEEK_HOLE say holds data; default the whole file) as data, and holes and the tail of the
 * last sector as zeros, every extent at its own offset — what QEMU's file-posix block status reports
 * for a raw file. The reader's content must not change while the source is used (HostReader);
 * a reader that returns fewer bytes than asked makes `read` throw HostReaderError('short-read').
 */
export function rawReaderBackingSource(reader: HostReader, data?: readonly (readonly [bigint, bigint])[]): BackingSource {
  const length = reader.length;
  const size = (length + 511n) & ~511n;
  const ranges: readonly (readonly [bigint, bigint])[] = data ?? (length > 0n ? [[0n, length]] : []);
  return {
    size,
    read: (offset, n) => {
      const out = new Uint8Array(n);
      const end = offset + BigInt(n) < length ? offset + BigInt(n) : length;
      if (offset < end) {
        const want = Number(end - offset);
        const got = reader.read(offset, want);
        if (got.length !== want) {
          throw new HostReaderError('short-read', `raw backing reader returned ${got.length} byte(s) at 0x${offset.toString(16)}, not ${want}`);
        }
        out.set(got);
      }
      return out;
    },
    map: (offset, n) => {
      const end = offset + n;
      const out: MapExtent[] = [];
      let at = offset;
      const piece = (to: bigint, isData: boolean): void => {
        if (to <= at) return;
        out.push({ start: at, length: to - at, depth: 0, present: true, zero: !isData, data: isData, offset: at });
        at = to;
      };
      for (const [a, b] of ranges) {
        if (at >= end) break;
        if (b <= at) continue;
        piece(a < end ? a : end, false);
        piece(b < end ? b : end, true);
      }
      piece(end, false);
      return out;
    },
  };
}
