/**
 * The one errno table of qcow2-ref: Linux's errno numbers (positive, as in <errno.h>) and the text
 * glibc's strerror prints for each, because QEMU's messages embed that text and so must ours.
 */

/** ENOENT: no such file or directory. */
export const ENOENT = 2;
/** EIO: input/output error (QEMU's answer to most corruption found while reading). */
export const EIO = 5;
/** ENOMEM: cannot allocate memory (QEMU's compressors say this when a cluster does not shrink). */
export const ENOMEM = 12;
/** EACCES: permission denied. */
export const EACCES = 13;
/** EEXIST: file exists. */
export const EEXIST = 17;
/** EISDIR: is a directory. */
export const EISDIR = 21;
/** EINVAL: invalid argument. */
export const EINVAL = 22;
/** EFBIG: file too large. */
export const EFBIG = 27;
/** ENOSPC: no space left on device. */
export const ENOSPC = 28;
/** ENOTSUP (= EOPNOTSUPP on Linux): operation not supported. */
export const ENOTSUP = 95;
/** ENOMEDIUM: no medium found (QEMU's answer once a fatal error has detached the driver). */
export const ENOMEDIUM = 123;

/** Each errno's symbolic name with its number and glibc's strerror text. */
const TABLE: Readonly<Record<string, readonly [number, string]>> = {
  ENOENT: [ENOENT, 'No such file or directory'],
  EIO: [EIO, 'Input/output error'],
  ENOMEM: [ENOMEM, 'Cannot allocate memory'],
  EACCES: [EACCES, 'Permission denied'],
  EEXIST: [EEXIST, 'File exists'],
  EISDIR: [EISDIR, 'Is a directory'],
  EINVAL: [EINVAL, 'Invalid argument'],
  EFBIG: [EFBIG, 'File too large'],
  ENOSPC: [ENOSPC, 'No space left on device'],
  ENOTSUP: [ENOTSUP, 'Operation not supported'],
  ENOMEDIUM: [ENOMEDIUM, 'No medium found'],
};

const BY_NUMBER: ReadonlyMap<number, string> = new Map(Object.values(TABLE).map(([n, text]) => [n, text]));

/**
 * glibc's strerror text for `errno`; a negative errno (QEMU's -EIO style) reads as its absolute
 * value. Unknown numbers read as glibc prints them: `Unknown error N`.
 */
export function strerror(errno: number): string {
  const n = Math.abs(errno);
  return BY_NUMBER.get(n) ?? `Unknown error ${n}`;
}

/**
 * The text QEMU prints for a failed system call, given the error Node threw: strerror's text when
 * the error carries a known errno code (`ENOENT` …), else the code itself, else the error's message.
 */
export function errnoText(e: unknown): string {
  const err = e as { code?: unknown; message?: unknown };
  const code = typeof err?.code === 'string' ? err.code : undefined;
  const known = code !== undefined ? TABLE[code] : undefined;
  if (known !== undefined) return known[1];
  return code ?? String(err?.message ?? e);
}
