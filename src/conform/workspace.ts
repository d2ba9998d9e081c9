/**
 * The files of one conformance test: a private directory per test holding a copy of the case's
 * files (so an adapter that writes to its input, or a writer test, never changes the corpus), laid
 * out with the same relative paths as in the corpus (so the names an image's header gives to its
 * backing and data files resolve the same way), plus an output directory for the raw file and the
 * script. Also the byte-level helpers the judges need: a streaming SHA-256 and the first differing
 * offset of two files.
 */
import { createHash } from 'node:crypto';
import { closeSync, copyFileSync, mkdirSync, mkdtempSync, openSync, readSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** Paths of one test's private directory. */
export interface Workspace {
  /** The test's directory (removed by the harness unless asked to keep it). */
  readonly root: string;
  /** Where the case's files are copied to, with their corpus-relative paths. */
  readonly filesDir: string;
  /** Where the harness puts what the adapter produces or reads besides the image ({raw}, {script}). */
  readonly outDir: string;
}

/** A new, empty workspace under `parent` whose name starts with `label` (made filename-safe). */
export function makeWorkspace(parent: string, label: string): Workspace {
  const root = mkdtempSync(join(parent, `${label.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 80)}-`));
  const filesDir = join(root, 'files');
  const outDir = join(root, 'out');
  mkdirSync(filesDir);
  mkdirSync(outDir);
  return { root, filesDir, outDir };
}

/**
 * Copies each corpus-relative path in `relPaths` from `corpusDir` to the same relative path under
 * `ws.filesDir` (directories created as needed). The paths come from a validated manifest
 * (parseManifest: relative, no `..`), so they stay inside both directories.
 */
export function copyCaseFiles(corpusDir: string, relPaths: readonly string[], ws: Workspace): void {
  for (const rel of relPaths) {
    const to = join(ws.filesDir, rel);
    mkdirSync(dirname(to), { recursive: true });
    copyFileSync(join(corpusDir, rel), to);
  }
}

/**
 * `text` (an adapter's message) with the workspace's temporary paths made relative: a case file is
 * named by its corpus-relative path (`plain.0000/disk.qcow2`) and an output file as `out/NAME`, so
 * reports do not depend on where the temporary directory happened to be.
 */
export function scrubPaths(text: string, ws: Workspace): string {
  return text.split(`${ws.filesDir}/`).join('').split(`${ws.outDir}/`).join('out/').split(ws.root).join('.');
}

const CHUNK = 1 << 20;

/** The size of the file at `path`, or undefined when there is no regular file there. */
export function fileSize(path: string): bigint | undefined {
  try {
    const st = statSync(path, { bigint: true });
    return st.isFile() ? st.size : undefined;
  } catch {
    return undefined;
  }
}

/** SHA-256 (lowercase hex) of the file at `path`, read in 1 MiB chunks (memory bounded). */
export function sha256File(path: string): string {
  const h = createHash('sha256');
  const buf = Buffer.alloc(CHUNK);
  const fd = openSync(path, 'r');
  try {
    for (;;) {
      const n = readSync(fd, buf, 0, CHUNK, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

/** Where two byte sources first differ. */
export interface FirstDifference {
  readonly offset: bigint;
  /** The byte there in each source, or undefined past its end. */
  readonly actual: number | undefined;
  readonly expected: number | undefined;
  /**
   * How many bytes from `offset` on differ in a row, counted within the 1 MiB chunk compared (so at
   * most to the chunk's end); 0 when one source ended there.
   */
  readonly run: number;
}

/**
 * The first offset at or after `from` at which `actual` and `expected` differ, each given as a reader
 * of `length` bytes (`read(offset, count)`), compared in 1 MiB chunks; undefined when they are equal
 * from there on, lengths included.
 */
export function firstDifference(
  actual: { readonly length: bigint; read(offset: bigint, count: number): Uint8Array },
  expected: { readonly length: bigint; read(offset: bigint, count: number): Uint8Array },
  from = 0n,
): FirstDifference | undefined {
  const common = actual.length < expected.length ? actual.length : expected.length;
  for (let pos = from; pos < common; pos += BigInt(CHUNK)) {
    const n = Number(common - pos < BigInt(CHUNK) ? common - pos : BigInt(CHUNK));
    const a = actual.read(pos, n);
    const e = expected.read(pos, n);
    if (Buffer.compare(a, e) === 0) continue;
    let i = 0;
    while (a[i] === e[i]) i++;
    let j = i;
    while (j < n && a[j] !== e[j]) j++;
    return { offset: pos + BigInt(i), actual: a[i], expected: e[i], run: j - i };
  }
  if (actual.length === expected.length) return undefined;
  return {
    offset: common,
    actual: actual.length > common ? actual.read(common, 1)[0] : undefined,
    expected: expected.length > common ? expected.read(common, 1)[0] : undefined,
    run: 0,
  };
}

/** "first difference at byte N (0x…): got 0x.., expected 0x.. (K bytes differ in a row)". */
export function describeDifference(d: FirstDifference): string {
  const run = d.run > 1 ? ` (${d.run} bytes differ in a row)` : '';
  return `first difference at byte ${d.offset} (0x${d.offset.toString(16)}): got ${describeByte(d.actual)}, expected ${describeByte(d.expected)}${run}`;
}

/** "0x1f" for a byte, "end of data" past the end. */
export function describeByte(b: number | undefined): string {
  return b === undefined ? 'end of data' : `0x${b.toString(16).padStart(2, '0')}`;
}
