/**
 * `--verify`: every expectation of a corpus case confirmed against QEMU 7.2 itself.
 *
 * - `content`: `qemu-img check --output=json` gives the expected exit code and counts, and
 *   `qemu-img convert -f qcow2 -O raw` of the image hashes to the expected guest SHA-256;
 * - `reject-open`: a read-only I/O open (`qemu-io -r -f qcow2 -c quit`, what `qemu-img convert`
 *   does) fails with `can't open device IMAGE: <qemuMessage>`;
 * - `reject-check`: `qemu-img check --output=json` gives the expected exit code and counts.
 * - A case with `qemuDifference` is one where QEMU is known to behave otherwise on purpose (it
 *   follows names out of the image's directory): verification confirms that QEMU still does what the
 *   difference says (it opens the image), so the record stays true.
 *
 * Every command runs in the case's directory, with the image named by its file name: QEMU 7.2 opens
 * a relative external data file name relative to its working directory (docs/format/features.md#external-data-file) and a
 * backing file name relative to the image's directory, so both resolve inside the case.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { match } from 'ts-pattern';
import { probeHostAllocationsOrFull } from '../io/index.ts';
import { checkCounter, qemuImgCheck, qemuImgConvert } from '../qemu/index.ts';
import { formatCommandLine, runTool } from '../qemu/index.ts';
import type { CorpusCase } from './manifest.ts';

/** The verdict on one case. */
export type CaseVerdict =
  | { readonly id: string; readonly ok: true }
  | { readonly id: string; readonly ok: false; readonly reason: string };

/** How long one QEMU command may take (a 4 GiB convert included). */
const COMMAND_TIMEOUT_MS = 300_000;

/** Files above this size are hashed extent by extent (a raw disk of 4 GiB is mostly a hole). */
const SPARSE_HASH_BYTES = 64 * 1024 * 1024;
const HASH_CHUNK = 1 << 20;
const ZEROS = new Uint8Array(HASH_CHUNK);

/**
 * SHA-256 of a file. A large one is read only where the file system has data (SEEK_DATA, through
 * src/io/seek-data.ts; the whole file when that cannot be probed): its holes read as zeros, so they
 * are hashed from a buffer of zeros — reading a 4 GiB hole through the kernel cost ~15 s, hashing
 * its zeros ~2.5 s.
 */
async function fileSha256(path: string): Promise<string> {
  const h = createHash('sha256');
  if ((await stat(path)).size <= SPARSE_HASH_BYTES) {
    for await (const chunk of createReadStream(path, { highWaterMark: HASH_CHUNK })) h.update(chunk as Buffer);
    return h.digest('hex');
  }
  const zeros = (n: bigint): void => {
    for (let left = n; left > 0n; left -= BigInt(HASH_CHUNK)) h.update(left < BigInt(HASH_CHUNK) ? ZEROS.subarray(0, Number(left)) : ZEROS);
  };
  const alloc = probeHostAllocationsOrFull([path], () => undefined)[0]!;
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(HASH_CHUNK);
    let at = 0n;
    for (const [start, end] of alloc.data) {
      zeros(start - at);
      for (let pos = start; pos < end;) {
        const n = Number(end - pos < BigInt(HASH_CHUNK) ? end - pos : BigInt(HASH_CHUNK));
        const { bytesRead } = await fh.read(buf, 0, n, Number(pos));
        if (bytesRead !== n) throw new Error(`${path}: short read of ${bytesRead} of ${n} byte(s) at ${pos}`);
        h.update(buf.subarray(0, n));
        pos += BigInt(n);
      }
      at = end;
    }
    zeros(alloc.length - at);
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

/** `qemu-img check`'s exit code and counts for the image, or a description of what went wrong. */
async function qemuCheck(image: string, cwd: string): Promise<{ exitCode: number; corruptions: number; leaks: number; stderr: string }> {
  const r = await qemuImgCheck(basename(image), { cwd, timeoutMs: COMMAND_TIMEOUT_MS });
  const count = (k: 'corruptions' | 'leaks'): number => (r.json !== undefined ? Number(checkCounter(r.json, k)) : 0);
  return { exitCode: r.code, corruptions: count('corruptions'), leaks: count('leaks'), stderr: r.stderr.trim() };
}

/** What a read-only I/O open by qemu-io says: ok, or the message after `can't open device NAME: `. */
async function qemuOpen(image: string, cwd: string): Promise<{ ok: true } | { ok: false; message: string; stderr: string }> {
  const name = basename(image);
  const args = ['-r', '-f', 'qcow2', '-c', 'quit', name];
  const r = await runTool('qemu-io', args, { cwd, timeoutMs: COMMAND_TIMEOUT_MS });
  if (r.signal !== null) throw new Error(`${formatCommandLine('qemu-io', args)} died of ${r.signal}`);
  if (r.code === 0) return { ok: true };
  const prefix = `qemu-io: can't open device ${name}: `;
  const first = r.stderr.split('\n', 1)[0] ?? '';
  return { ok: false, message: first.startsWith(prefix) ? first.slice(prefix.length) : first, stderr: r.stderr.trim() };
}

function checkMismatch(want: { exitCode: number; corruptions: number; leaks: number }, got: { exitCode: number; corruptions: number; leaks: number; stderr: string }): string | undefined {
  if (want.exitCode === got.exitCode && want.corruptions === got.corruptions && want.leaks === got.leaks) return undefined;
  return `qemu-img check: expected exit ${want.exitCode}, ${want.corruptions} corruption(s), ${want.leaks} leak(s); ` +
    `QEMU: exit ${got.exitCode}, ${got.corruptions} corruption(s), ${got.leaks} leak(s)${got.stderr !== '' ? ` (${got.stderr.split('\n')[0]})` : ''}`;
}

/**
 * Confirms the expectations of case `c`, whose files are under `dir`, against QEMU. Never throws for
 * a disagreement (that is the verdict); throws when QEMU cannot be run at all.
 */
export async function verifyCase(dir: string, c: CorpusCase): Promise<CaseVerdict> {
  const image = join(dir, c.files.image);
  const cwd = dirname(image);
  const fail = (reason: string): CaseVerdict => ({ id: c.id, ok: false, reason });
  if (c.qemuDifference !== undefined) {
    // Known, deliberate difference: QEMU opens what a safe reader refuses. Confirm it still does.
    const o = await qemuOpen(image, cwd);
    return o.ok ? { id: c.id, ok: true } : fail(`recorded difference no longer holds: QEMU refuses the image: ${o.message}`);
  }
  return match(c.expect)
    .with({ kind: 'content' }, async (e): Promise<CaseVerdict> => {
      const bad = checkMismatch(e.check, await qemuCheck(image, cwd));
      if (bad !== undefined) return fail(bad);
      const tmp = await mkdtemp(join(tmpdir(), 'qcow2-ref-verify-'));
      try {
        const raw = join(tmp, 'guest.raw');
        try {
          await qemuImgConvert(basename(image), raw, { inFormat: 'qcow2', outFormat: 'raw', cwd, timeoutMs: COMMAND_TIMEOUT_MS });
        } catch (err) {
          return fail(`qemu-img convert failed: ${(err as Error).message.split('\n')[0]}`);
        }
        const sha = await fileSha256(raw);
        return sha === e.guestSha256 ? { id: c.id, ok: true } : fail(`guest content: expected SHA-256 ${e.guestSha256}, qemu-img convert gives ${sha}`);
      } finally {
        await rm(tmp, { recursive: true, force: true });
      }
    })
    .with({ kind: 'reject-open' }, async (e): Promise<CaseVerdict> => {
      const o = await qemuOpen(image, cwd);
      if (o.ok) return fail(`QEMU opens the image; expected it to refuse: ${e.qemuMessage}`);
      return o.message === e.qemuMessage ? { id: c.id, ok: true } : fail(`QEMU refuses the image with '${o.message}', expected '${e.qemuMessage}'`);
    })
    .with({ kind: 'reject-check' }, async (e): Promise<CaseVerdict> => {
      const bad = checkMismatch(e.check, await qemuCheck(image, cwd));
      return bad === undefined ? { id: c.id, ok: true } : fail(bad);
    })
    .exhaustive();
}

/**
 * Verifies every case (at most `concurrency` QEMU processes at a time), calling `onDone` after each.
 * Returns the verdicts in the order of `cases`.
 */
export async function verifyCases(dir: string, cases: readonly CorpusCase[], concurrency: number, onDone?: (done: number) => void): Promise<CaseVerdict[]> {
  const verdicts: CaseVerdict[] = new Array(cases.length);
  let next = 0;
  let done = 0;
  const worker = async (): Promise<void> => {
    while (next < cases.length) {
      const i = next++;
      verdicts[i] = await verifyCase(dir, cases[i]!);
      onDone?.(++done);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, cases.length)) }, worker));
  return verdicts;
}
