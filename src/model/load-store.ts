/**
 * Bytes ↔ Image. Loading decodes the header through the generated decodeHeader (so every `valid:`
 * rule of spec/qcow2.ksy applies and bad input is a Qcow2FormatError), keeps the bytes as a
 * persistent sparse HostFile, and starts a fresh QEMU session. Storing gives the bytes back.
 * Nothing else is validated here: a structurally odd but decodable image loads, so that the model's
 * check() can report on it the way `qemu-img check` does.
 */
import { decodeHeader } from '../../generated/qcow2.ts';
import { hostBytes, hostFromBytes, type HostFile } from './host-file.ts';
import { headerStateFrom } from './header.ts';
import { freshSession, type BackingSource, type Image } from './image.ts';

/** What loadImage needs besides the qcow2 file. */
export interface LoadOptions {
  /** The external data file's bytes, for images with incompatible bit 2. */
  readonly dataFile?: Uint8Array;
  /** The backing image, when the caller can supply it. */
  readonly backing?: BackingSource;
}

/**
 * The Image held in `bytes`: header decoded by the generated decoder (throws Qcow2FormatError on a
 * bad magic, version, cluster_bits, refcount_order, header_length, compression type or a header
 * cut short), the file as a HostFile of exactly `bytes.length` bytes, the optional data file and
 * backing source, and a fresh session (as QEMU starts every open). `bytes` is not retained: later
 * changes to it do not affect the image.
 *
 * An image whose dirty bit (incompatible bit 0) is set loads, but the fresh session did not set the
 * bit, so writes to it are refused (close.ts checkNotDirtyOnLoad): QEMU would repair its refcounts
 * on a writable open first, which the model does not do yet.
 */
export function loadImage(bytes: Uint8Array, opts: LoadOptions = {}): Image {
  const header = headerStateFrom(decodeHeader(bytes));
  const file = hostFromBytes(bytes);
  const image: Image = {
    file,
    header,
    session: freshSession(),
    ...(opts.dataFile !== undefined ? { dataFile: hostFromBytes(opts.dataFile) } : {}),
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
