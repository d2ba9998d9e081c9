/**
 * Bytes ↔ Image. Loading decodes the header through the generated decodeHeader (so every `valid:`
 * rule of spec/qcow2.ksy applies and bad input is a Qcow2FormatError), keeps the bytes as a
 * persistent sparse HostFile, and starts a fresh QEMU session. Storing gives the bytes back.
 * The file (and data file) may also be a HostReader: then nothing but the header is read at load,
 * and the rest is read when the model needs it, so an image of any size loads in constant memory.
 * Nothing else is validated here: a structurally odd but decodable image loads, so that the model's
 * check() can report on it the way `qemu-img check` does.
 */
import { decodeHeader } from '../../generated/qcow2.ts';
import { Qcow2FormatError } from '../codec/index.ts';
import { hostBytes, hostFromBytes, hostFromReader, type HostFile } from './host-file.ts';
import { HostReaderError, type HostReader } from './host-reader.ts';
import { PAGE_SIZE } from './page-map.ts';
import { headerStateFrom } from './header.ts';
import { freshSession, type BackingSource, type Image } from './image.ts';

/** What loadImage needs besides the qcow2 file. */
export interface LoadOptions {
  /** The external data file (its bytes, or a reader of them), for images with incompatible bit 2. */
  readonly dataFile?: Uint8Array | HostReader;
  /** The backing image, when the caller can supply it. */
  readonly backing?: BackingSource;
}

/**
 * Bytes a header can occupy: header_length is at most one cluster (spec/qcow2.ksy), and clusters are
 * at most 2 MiB, so decoding this prefix gives the same header or Qcow2FormatError as the whole file.
 */
const MAX_HEADER_BYTES = 1 << 21;

/** The first `n` bytes of `reader` (all of it when shorter). */
function prefixOf(reader: HostReader, n: number): Uint8Array {
  const len = reader.length < BigInt(n) ? Number(reader.length) : n;
  const b = reader.read(0n, len);
  if (b.length !== len) throw new HostReaderError('short-read', `host reader returned ${b.length} byte(s) at 0x0, not ${len}`);
  return b;
}

/**
 * decodeHeader of the file `reader` reads, reading as little as possible: one page is enough for
 * every header QEMU writes; a longer header (a 'truncated' error on a file longer than the page) is
 * decoded again from MAX_HEADER_BYTES, which always gives what decoding the whole file gives.
 */
function decodeHeaderOf(reader: HostReader): ReturnType<typeof decodeHeader> {
  const first = prefixOf(reader, PAGE_SIZE);
  try {
    return decodeHeader(first);
  } catch (e) {
    if (!(e instanceof Qcow2FormatError && e.code === 'truncated' && BigInt(first.length) < reader.length)) throw e;
  }
  return decodeHeader(prefixOf(reader, MAX_HEADER_BYTES));
}

/** A HostFile holding `source` (bytes copied, or a reader read lazily). */
function hostOf(source: Uint8Array | HostReader): HostFile {
  return source instanceof Uint8Array ? hostFromBytes(source) : hostFromReader(source);
}

/**
 * The Image held in `source`: header decoded by the generated decoder (throws Qcow2FormatError on a
 * bad magic, version, cluster_bits, refcount_order, header_length, compression type or a header
 * cut short), the file as a HostFile of exactly the source's length, the optional data file and
 * backing source, and a fresh session (as QEMU starts every open).
 *
 * `source` is the file's bytes or a HostReader of them. Bytes are copied, not retained: later
 * changes to them do not affect the image. A reader is retained and read lazily (at most the first
 * 2 MiB at load, the rest when an operation needs it): its content must not change while the Image
 * or any Image derived from it is used (HostReader). Either way the Image, its reads, map and step
 * results are the same. The same holds for `opts.dataFile`.
 *
 * An image whose dirty bit (incompatible bit 0) is set loads, but the fresh session did not set the
 * bit, so writes to it are refused (close.ts checkNotDirtyOnLoad): QEMU repairs its refcounts on a
 * writable open first, which src/open/open.ts openImage({ writable: true }) does and loadImage does not.
 * loadImage validates nothing beyond the header decoder's rules; openImage adds QEMU's open checks.
 */
export function loadImage(source: Uint8Array | HostReader, opts: LoadOptions = {}): Image {
  // Decoded before the file is copied: garbage fails fast.
  const header = headerStateFrom(source instanceof Uint8Array ? decodeHeader(source) : decodeHeaderOf(source));
  const file = hostOf(source);
  const image: Image = {
    file,
    header,
    session: freshSession(),
    ...(opts.dataFile !== undefined ? { dataFile: hostOf(opts.dataFile) } : {}),
    ...(opts.backing !== undefined ? { backing: opts.backing } : {}),
  };
  return image;
}

/** The qcow2 file of `image`, every byte (holes as zeros); `loadImage(storeImage(i))` has i's file and header. */
export function storeImage(image: Image): Uint8Array {
  return hostBytes(image.file);
}

/** The external data file of `image` as bytes, or undefined when the image has none. */
export function storeDataFile(image: Image): Uint8Array | undefined {
  const f: HostFile | undefined = image.dataFile;
  return f === undefined ? undefined : hostBytes(f);
}
