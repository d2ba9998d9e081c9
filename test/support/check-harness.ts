/**
 * Side by side: `qemu-img check` (7.2, the oracle) and qcow2-ref's check on the same file. Used by
 * test/qemu/check-060.test.ts, test/qemu/model-check.test.ts and test/qemu/cli-check.test.ts.
 *
 * - qemuCheckText runs qemu-img check as a user would (human or JSON output, -r) and returns exactly
 *   what it printed and its exit code;
 * - ourCheckText runs src/cli/check.ts checkReport on a copy of the file (repairs written to that
 *   copy through the CLI's own writer), returning the same three things;
 * - normalizeProgram makes the program names comparable ("qemu-img: " and "qcow2-ref: " prefixes);
 * - sameContent compares two files byte for byte without reading their holes (repairs can make
 *   multi-GiB sparse files).
 */
import { open, readFile, stat } from 'node:fs/promises';
import { checkReport, type CheckReport } from '../../src/cli/check.ts';
import { probeHostAllocations } from '../../src/io/seek-data.ts';
import { fileReader } from '../../src/io/file-reader.ts';
import { applyHostIOToPaths } from '../../src/io/host-io-file.ts';
import type { RepairMode } from '../../src/check/repair.ts';
import { loadImage } from '../../src/model/load-store.ts';
import { runTool } from '../../src/qemu/run.ts';

/** What one check printed and returned. */
export interface CheckText {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Options of a check run. */
export interface CheckRun {
  readonly output?: 'human' | 'json';
  readonly repair?: RepairMode;
}

/**
 * `qemu-img check [-r MODE] [--output=json] -f qcow2 FILE` run in the file's directory with the
 * file's base name (so the JSON "filename" is the base name). The file is modified by -r.
 */
export async function qemuCheckText(dir: string, name: string, run: CheckRun = {}): Promise<CheckText> {
  const args = ['check', ...(run.output === 'json' ? ['--output=json'] : []), ...(run.repair !== undefined ? ['-r', run.repair] : []), '-f', 'qcow2', name];
  const r = await runTool('qemu-img', args, { cwd: dir });
  if (r.code === null) throw new Error(`qemu-img ${args.join(' ')} was killed by ${r.signal}`);
  return { code: r.code, stdout: r.stdout, stderr: r.stderr };
}

/**
 * qcow2-ref's check of `dir/name` as `qcow2-ref check` reports it (src/cli/check.ts checkReport on the
 * image loaded through a file reader); with -r the repair's host operations are written to the file
 * through the CLI's writer, so the file is modified as the CLI modifies it.
 */
export async function ourCheckText(dir: string, name: string, run: CheckRun = {}): Promise<CheckText & { readonly report: CheckReport }> {
  const path = `${dir}/${name}`;
  const reader = fileReader(path);
  let report: CheckReport;
  try {
    report = checkReport(loadImage(reader), { filename: name, output: run.output ?? 'human', ...(run.repair !== undefined ? { repair: run.repair } : {}) });
  } finally {
    reader.close();
  }
  if (report.io.length > 0) {
    await applyHostIOToPaths({ image: path }, report.io);
  }
  return { code: report.exitCode, stdout: report.stdout, stderr: report.stderr, report };
}

/** `text` with qemu-img's and qcow2-ref's program-name prefixes made the same. */
export function normalizeProgram(text: string): string {
  return text.replace(/^(qemu-img|qcow2-ref): /gm, 'PROGRAM: ');
}

/** Whether the files `a` and `b` hold the same bytes (reading only their data extents). */
export async function sameContent(a: string, b: string): Promise<boolean> {
  const [sa, sb] = await Promise.all([stat(a, { bigint: true }), stat(b, { bigint: true })]);
  if (sa.size !== sb.size) return false;
  if (sa.size <= 64n * 1024n * 1024n) return Buffer.compare(await readFile(a), await readFile(b)) === 0;
  const [fa, fb] = probeHostAllocations([a, b]);
  // Outside the union of both files' data extents both read as zeros.
  const ranges = [...fa!.data, ...fb!.data].sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  const ha = await open(a, 'r');
  const hb = await open(b, 'r');
  try {
    for (const [start, end] of ranges) {
      for (let pos = start; pos < end;) {
        const n = Number(end - pos < 1n << 20n ? end - pos : 1n << 20n);
        const ba = Buffer.alloc(n);
        const bb = Buffer.alloc(n);
        await ha.read(ba, 0, n, Number(pos));
        await hb.read(bb, 0, n, Number(pos));
        if (!ba.equals(bb)) return false;
        pos += BigInt(n);
      }
    }
    return true;
  } finally {
    await ha.close();
    await hb.close();
  }
}

/** Writes `bytes` at `offset` of the file at `path` (iotests' poke_file). */
export async function poke(path: string, offset: number, bytes: readonly number[]): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(Uint8Array.from(bytes), 0, bytes.length, offset);
  } finally {
    await fh.close();
  }
}

/** The 8 big-endian bytes of `v`. */
export function be64(v: bigint): number[] {
  const out: number[] = [];
  for (let i = 7; i >= 0; i--) out.push(Number((v >> BigInt(i * 8)) & 0xffn));
  return out;
}

/** The 4 big-endian bytes of `v`. */
export function be32(v: number): number[] {
  return [(v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
}

/** The 2 big-endian bytes of `v`. */
export function be16(v: number): number[] {
  return [(v >>> 8) & 0xff, v & 0xff];
}
