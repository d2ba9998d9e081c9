/**
 * `qcow2-ref conform` (src/conform, src/cli/conform.ts) on a small corpus made here by real QEMU:
 * images written by qemu-io from op scripts, their expected content hashed from `qemu-img convert`
 * output, invalid images patched by hand and confirmed refused (or check-corrupt) by qemu-img. The
 * harness must be able to fail, so besides correct adapters it is run against deliberately broken
 * ones — a reader that flips one byte, one that reads zero-flagged clusters as garbage, one that
 * "reads" images QEMU refuses, one that hangs, one that crashes, writers that damage content or
 * refcounts — and each must be caught in the right family, with the right case and reason.
 * Also: template splitting, expected-failures semantics (known failure → ok, unexpected failure and
 * unexpected pass → exit 1), the JSON report, the progress bar, usage errors.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HEADER_MAGIC, HeaderLayout } from '../../generated/qcow2.ts';
import { runConform } from '../../src/cli/conform.ts';
import { builtinProblem } from '../../src/conform/adapter.ts';
import { UsageError } from '../../src/cli/io.ts';
import { expandTemplate, parseTemplate, TemplateError } from '../../src/conform/command-template.ts';
import { entryUsage, ExpectedFailuresError, parseExpectedFailures } from '../../src/conform/expected-failures.ts';
import { runAdapter } from '../../src/conform/run-adapter.ts';
import { writeManifest, type CorpusCase } from '../../src/corpus/manifest.ts';
import type { Op } from '../../src/model/ops.ts';
import { formatScript } from '../../src/script/script.ts';
import { checkCounter, qemuImgCheck, qemuImgConvert, qemuImgCreate } from '../../src/qemu/qemu-img.ts';
import { planQemuSteps, runQemuSteps } from '../../src/qemu/qemu-steps.ts';
import { requireQemu } from '../../src/qemu/run.ts';

const ROOT = resolve(import.meta.dirname, '../..');
let dir = '';
let corpus = '';
let cases: CorpusCase[] = [];

const K = 1024;
const w = (offset: number, length: number, pattern: number): Op => ({ kind: 'write', offset: BigInt(offset), data: new Uint8Array(length).fill(pattern) });

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** A case made by real QEMU: qemu-img create with `options`, then the script through qemu-io/qemu-img. */
async function scriptedCase(id: string, family: string, options: Record<string, string>, size: number, ops: Op[], before?: (caseDir: string) => Promise<string[]>): Promise<CorpusCase> {
  const caseDir = join(corpus, id);
  mkdirSync(caseDir, { recursive: true });
  const backing = before !== undefined ? await before(caseDir) : [];
  const image = join(caseDir, 'disk.qcow2');
  await qemuImgCreate(image, size, options, [], 'qcow2', { cwd: caseDir });
  await runQemuSteps(image, planQemuSteps(ops, BigInt(size)), { cwd: caseDir });
  const raw = join(dir, `${id}.raw`);
  await qemuImgConvert(image, raw, { cwd: caseDir });
  const check = await qemuImgCheck(image, { cwd: caseDir });
  expect(check.code).toBe(0);
  return {
    id,
    family,
    valid: true,
    features: [],
    options,
    files: { image: `${id}/disk.qcow2`, ...(backing.length > 0 ? { backing: backing.map((b) => `${id}/${b}`) } : {}) },
    virtualSize: String(size),
    expect: { kind: 'content', guestSha256: sha256(readFileSync(raw)), check: { exitCode: 0, corruptions: 0, leaks: 0 } },
    script: formatScript(ops),
  };
}

/** Overwrites `bytes` at `offset` of the file at `path`. */
function patch(path: string, offset: number, bytes: Uint8Array): void {
  const fd = openSync(path, 'r+');
  writeSync(fd, bytes, 0, bytes.length, offset);
  closeSync(fd);
}

function readAt(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  const b = Buffer.alloc(length);
  readSync(fd, b, 0, length, offset);
  closeSync(fd);
  return b;
}

/** An invalid case: a fresh 1 MiB image with one write, then `damage`; QEMU's verdict is asserted. */
async function invalidCase(id: string, family: string, damage: (image: string) => void, kind: 'reject-open' | 'reject-check'): Promise<CorpusCase> {
  const caseDir = join(corpus, id);
  mkdirSync(caseDir, { recursive: true });
  const image = join(caseDir, 'disk.qcow2');
  await qemuImgCreate(image, 1024 * K, {});
  await runQemuSteps(image, planQemuSteps([w(0, 64 * K, 3)], 1024n * 1024n));
  damage(image);
  const check = await qemuImgCheck(image);
  if (kind === 'reject-open') {
    // QEMU refuses to open it: check fails with exit 1 and says why on stderr.
    expect(check.code).toBe(1);
    return {
      id,
      family,
      valid: false,
      features: [],
      options: {},
      files: { image: `${id}/disk.qcow2` },
      virtualSize: '1048576',
      expect: { kind: 'reject-open', errorClass: family.replace('invalid/', ''), qemuMessage: check.stderr.trim() },
    };
  }
  expect(check.code).toBe(3);
  expect(check.json).toBeDefined();
  return {
    id,
    family,
    valid: false,
    features: [],
    options: {},
    files: { image: `${id}/disk.qcow2` },
    virtualSize: '1048576',
    expect: {
      kind: 'reject-check',
      errorClass: 'leak',
      check: { exitCode: 3, corruptions: Number(checkCounter(check.json!, 'corruptions')), leaks: Number(checkCounter(check.json!, 'leaks')) },
    },
  };
}

beforeAll(async () => {
  await requireQemu(); // no QEMU: the whole file fails here, loudly
  dir = await mkdtemp(join(tmpdir(), 'qcow2-ref-conform-test-'));
  corpus = join(dir, 'corpus');
  mkdirSync(corpus);
  const mixed = new Uint8Array(6000).map((_, i) => (i * 7 + 1) & 0xff);
  cases = [
    await scriptedCase('plain.0000', 'plain', {}, 1024 * K, [w(0, 64 * K, 171), { kind: 'write', offset: 130_000n, data: mixed }, w(512 * K, 4 * K, 9)]),
    await scriptedCase('zero-clusters.0000', 'zero-clusters', { cluster_size: '4096' }, 512 * K, [
      w(0, 128 * K, 5),
      { kind: 'writeZeroes', offset: 16n * 1024n, length: 32n * 1024n, unmap: false },
      { kind: 'writeZeroes', offset: 64n * 1024n, length: 8n * 1024n, unmap: true },
    ]),
    await scriptedCase('compat-0.10.0000', 'compat-0.10', { compat: '0.10' }, 1024 * K, [w(70 * K, 10 * K, 77), { kind: 'discard', offset: 0n, length: 64n * 1024n }]),
    await scriptedCase(
      'backing-qcow2.0000',
      'backing-qcow2',
      { backing_file: 'base.qcow2', backing_fmt: 'qcow2' },
      1024 * K,
      [w(64 * K, 4 * K, 9), { kind: 'discard', offset: 0n, length: 64n * 1024n }, { kind: 'snapshotCreate', name: 'snap' }, w(200 * K, 8 * K, 1)],
      async (caseDir) => {
        const base = join(caseDir, 'base.qcow2');
        await qemuImgCreate(base, 1024 * K, {});
        await runQemuSteps(base, planQemuSteps([w(0, 192 * K, 0xab), w(300 * K, 4 * K, 0xcd)], 1024n * 1024n));
        return ['base.qcow2'];
      },
    ),
    await invalidCase('invalid.bad-magic.0000', 'invalid/bad-magic', (p) => patch(p, HeaderLayout.magic.offset, Buffer.from([...HEADER_MAGIC.slice(0, 3), 0])), 'reject-open'),
    // Incompatible feature bit 40: unknown to QEMU 7.2, which must refuse the image.
    await invalidCase('invalid.unknown-incompatible.0000', 'invalid/unknown-incompatible', (p) => patch(p, HeaderLayout.incompatibleFeatures.offset, Buffer.from([0, 0, 1, 0, 0, 0, 0, 0])), 'reject-open'),
    // A refcount of 2 for cluster 0 (the header, referenced once): a leak QEMU opens and check reports.
    await invalidCase(
      'corrupt.leak.0000',
      'corrupt/leak',
      (p) => {
        const refcountTable = Number(readAt(p, 48, 8).readBigUInt64BE(0));
        const refblock = Number(readAt(p, refcountTable, 8).readBigUInt64BE(0));
        patch(p, refblock, Buffer.from([0, 2]));
      },
      'reject-check',
    ),
  ];
  writeManifest(corpus, cases);
}, 120_000);

afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function conform(...args: string[]): Promise<Run> {
  let stdout = '';
  let stderr = '';
  let code: number;
  try {
    code = await runConform(['--corpus', corpus, '--jobs', '2', ...args], { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) }, { cwd: dir });
  } catch (e) {
    if (e instanceof UsageError) return { code: 2, stdout, stderr: e.message };
    throw e;
  }
  return { code, stdout, stderr };
}

interface JsonReport {
  ok: boolean;
  totals: { pass: number; fail: number; known: number; skip: number; unexpectedPasses: number };
  families: { role: string; family: string; pass: number; fail: number; known: number; skip: number; firstFailure: string | null }[];
  staleEntries: { line: number; pattern: string; matched: number }[];
  results: { role: string; caseId: string; family: string; status: string; detail: string; reproduce?: string; knownFailure?: string }[];
}

async function conformJson(...args: string[]): Promise<{ code: number; report: JsonReport; stderr: string }> {
  const r = await conform('--output=json', ...args);
  if (r.stdout === '') throw new Error(`no report (exit ${r.code}): ${r.stderr}`);
  return { code: r.code, report: JSON.parse(r.stdout) as JsonReport, stderr: r.stderr };
}

/** family → [pass, fail, known, skip] of one role. */
function table(report: JsonReport, role = 'reader'): Record<string, [number, number, number, number]> {
  const t: Record<string, [number, number, number, number]> = {};
  for (const f of report.families) if (f.role === role) t[f.family] = [f.pass, f.fail, f.known, f.skip];
  return t;
}

const CONTENT_FAMILIES = ['backing-qcow2', 'compat-0.10', 'plain', 'zero-clusters'];
const ALL_PASS = {
  'backing-qcow2': [1, 0, 0, 0],
  'compat-0.10': [1, 0, 0, 0],
  'corrupt/leak': [1, 0, 0, 0],
  'invalid/bad-magic': [1, 0, 0, 0],
  'invalid/unknown-incompatible': [1, 0, 0, 0],
  plain: [1, 0, 0, 0],
  'zero-clusters': [1, 0, 0, 0],
};

/** The state letter of process `pid` from /proc (R, S, Z, …), or 'gone'. */
function processState(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return 'gone';
  }
}

/** Writes an adapter script into the test directory and returns its path. */
function script(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text, { mode: 0o755 });
  return p;
}

describe('command templates', () => {
  it('splits like sh without a shell and substitutes placeholders inside arguments', () => {
    const t = parseTemplate(`tool -x 'a b' "c \\"d\\" \\\\ \\n" e\\ f --out={raw} '{image}' "pre-{image}-post" '' {{lit}} x{{y}}z`);
    expect(expandTemplate(t, { image: '/p q/i.qcow2', raw: "/o'r.raw" })).toEqual([
      'tool',
      '-x',
      'a b',
      'c "d" \\ \\n',
      'e f',
      "--out=/o'r.raw",
      '/p q/i.qcow2',
      'pre-/p q/i.qcow2-post',
      '',
      '{lit}',
      'x{y}z',
    ]);
    // Shell metacharacters are plain text.
    expect(expandTemplate(parseTemplate('echo $HOME ; ls > f | *'), {})).toEqual(['echo', '$HOME', ';', 'ls', '>', 'f', '|', '*']);
  });

  it('rejects what it cannot split, unknown placeholders and lone braces, with the position', () => {
    expect(() => parseTemplate('')).toThrow(TemplateError);
    expect(() => parseTemplate('   ')).toThrow(/empty/);
    expect(() => parseTemplate("a 'b")).toThrow(/unclosed single quote at character 3/);
    expect(() => parseTemplate('a "b')).toThrow(/unclosed double quote/);
    expect(() => parseTemplate('a b\\')).toThrow(/trailing backslash/);
    expect(() => parseTemplate('a {imgae}')).toThrow(/unknown placeholder \{imgae\}/);
    expect(() => parseTemplate('a {image')).toThrow(/lone '\{'/);
    expect(() => parseTemplate('a image}')).toThrow(/lone '\}'/);
    expect(() => parseTemplate("a '{ima'ge}")).toThrow(/lone '\{'/);
    expect(() => parseTemplate("'' x")).toThrow(/program name/);
  });

  it('is checked for the placeholders of its role and for its program when given to conform', async () => {
    expect((await conform('--reader', 'qemu-img convert {image} out.raw')).stderr).toMatch(/must use \{image\} and \{raw\}.*lacks \{raw\}/);
    expect((await conform('--writer', 'qemu-io {image}')).stderr).toMatch(/lacks \{script\}/);
    const missing = await conform('--reader', 'no-such-reader-program {image} {raw}');
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/not on PATH/);
    expect((await conform('--reader', './nope.sh {image} {raw}')).stderr).toMatch(/does not exist/);
  });
});

describe('expected-failures files', () => {
  it('parses ids, globs, role prefixes and comments; rejects junk lines and duplicates', () => {
    const e = parseExpectedFailures('# header\n\nplain.0000\ninvalid/*   # reason here\nwriter:zero-*\n', 'x.txt');
    expect(e.map((x) => [x.pattern, x.role, x.line, x.reason])).toEqual([
      ['plain.0000', undefined, 3, ''],
      ['invalid/*', undefined, 4, 'reason here'],
      ['zero-*', 'writer', 5, ''],
    ]);
    expect(() => parseExpectedFailures('a b\n', 'x.txt')).toThrow(/x.txt:1: expected one case id/);
    expect(() => parseExpectedFailures('a\nb\na\n', 'x.txt')).toThrow(/x.txt:3: "a" is already listed on line 1/);
    expect(() => parseExpectedFailures('reader:\n', 'x.txt')).toThrow(ExpectedFailuresError);
  });

  it('an entry is stale only when every test it matched passed', () => {
    const e = parseExpectedFailures('fam\nreader:other\ngone\n', 'x');
    const r = (family: string, status: 'pass' | 'fail' | 'skip', role: 'reader' | 'writer' = 'reader') => ({ role, caseId: `${family}.1`, family, status });
    const u = entryUsage(e, [r('fam', 'pass'), r('fam', 'fail'), r('other', 'pass'), r('other', 'fail', 'writer'), r('gone', 'skip')]);
    expect(u.map((x) => [x.matched, x.failed, x.stale])).toEqual([
      [2, 1, false],
      [1, 0, true], // the writer failure is not the reader's
      [0, 0, false], // skipped tests do not count either way
    ]);
  });
});

describe('reader adapters', () => {
  it('a correct reader (qemu-img) passes every family; exit 0', async () => {
    const { code, report } = await conformJson('--reader', 'qemu-img convert -f qcow2 -O raw {image} {raw}');
    expect(report.results.filter((r) => r.status !== 'pass').map((r) => `${r.caseId}: ${r.detail}`)).toEqual([]);
    expect(table(report)).toEqual(ALL_PASS);
    expect(code).toBe(0);
    expect(report.ok).toBe(true);
  });

  it('the built-in readers qemu-img and qcow2-ref pass, with the human table and verdict', async () => {
    const q = await conform('--impl', 'qemu-img', '--expected-failures', '/dev/null');
    expect(q.code).toBe(0);
    expect(q.stdout).toMatch(/^reader +plain +1 +0 +0 +0$/m);
    expect(q.stdout).toMatch(/^OK: 7 passed, 0 unexpected failures, 0 known failures, 0 unexpected passes, 0 skipped$/m);
    const ours = await conformJson('--impl', 'qcow2-ref', '--expected-failures', '/dev/null', '--only', '*', '--timeout', '60');
    expect(table(ours.report, 'reader')).toEqual(ALL_PASS);
  });

  it('a reader that flips one byte fails every content family at that byte, and the reproduction command shows it', async () => {
    const flip = script('flip-reader.sh', '#!/bin/sh\nqemu-img convert -f qcow2 -O raw "$1" "$2" || exit 1\nprintf "\\377" | dd of="$2" bs=1 seek=70000 conv=notrunc status=none\n');
    const { code, report } = await conformJson('--reader', `${flip} {image} {raw}`);
    expect(code).toBe(1);
    expect(report.ok).toBe(false);
    const t = table(report);
    for (const f of CONTENT_FAMILIES) expect(t[f]).toEqual([0, 1, 0, 0]);
    for (const f of ['invalid/bad-magic', 'invalid/unknown-incompatible', 'corrupt/leak']) expect(t[f]).toEqual([1, 0, 0, 0]);
    const plain = report.results.find((r) => r.caseId === 'plain.0000')!;
    expect(plain.detail).toMatch(/^wrong content: .*first difference at byte 70000 \(0x11170\): got 0xff, expected 0x00/);
    // The printed command redoes it on the corpus's files and prints the wrong hash next to the expected one.
    const rerun = spawnSync('sh', ['-c', plain.reproduce!], { encoding: 'utf8' });
    expect(rerun.status).toBe(0);
    const expectedSha = cases.find((c) => c.id === 'plain.0000')!.expect;
    expect(expectedSha.kind).toBe('content');
    const got = rerun.stdout.split(/\s+/)[0]!;
    expect(got).toMatch(/^[0-9a-f]{64}$/);
    expect(got).not.toBe(expectedSha.kind === 'content' ? expectedSha.guestSha256 : '');
    expect(plain.reproduce).toContain(expectedSha.kind === 'content' ? expectedSha.guestSha256 : '?');
  });

  it('a reader that reads zero-flagged clusters as garbage fails exactly the families with zero-flagged clusters', async () => {
    // Patches 0xee over every range qemu-img map reports as zero-flagged in the top image.
    const zeroGarbage = script(
      'zero-garbage-reader.mjs',
      `#!/usr/bin/env node
import { execFileSync } from 'node:child_process';
import { openSync, writeSync, closeSync } from 'node:fs';
const [image, raw] = process.argv.slice(2);
try { execFileSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', image, raw], { stdio: 'inherit' }); } catch { process.exit(1); }
const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', '-f', 'qcow2', image], { encoding: 'utf8' }));
const fd = openSync(raw, 'r+');
for (const e of map) if (e.zero && e.present && e.depth === 0) writeSync(fd, Buffer.alloc(e.length, 0xee), 0, e.length, e.start);
closeSync(fd);
`,
    );
    const { code, report } = await conformJson('--reader', `${process.execPath} ${zeroGarbage} {image} {raw}`);
    expect(code).toBe(1);
    // zero-clusters by design; backing-qcow2 because a v3 discard over a backing file leaves zero-flagged
    // clusters (docs/format/allocation.md#discard); compat-0.10 discards too, but v2 has no zero flag.
    expect(table(report)).toEqual({ ...ALL_PASS, 'zero-clusters': [0, 1, 0, 0], 'backing-qcow2': [0, 1, 0, 0] });
    const f = report.families.find((x) => x.family === 'zero-clusters')!;
    expect(f.firstFailure).toBe('zero-clusters.0000');
    // The script zeroed [16 KiB, 48 KiB) without unmap: zero-flagged, so 32 KiB of garbage from 16 KiB on.
    expect(report.results.find((r) => r.caseId === 'zero-clusters.0000')!.detail).toMatch(
      /first difference at byte 16384 \(0x4000\): got 0xee, expected 0x00 \(32768 bytes differ in a row\)/,
    );
  });

  it('a reader that "reads" images QEMU refuses fails exactly the reject-open families', async () => {
    // When qemu-img refuses, it makes up a zero disk and exits 0. Braces doubled: they are template syntax.
    const accept = `sh -c 'qemu-img convert -f qcow2 -O raw "$1" "$2" 2>/dev/null || {{ truncate -s 1M "$2"; exit 0; }}' sh {image} {raw}`;
    const { code, report } = await conformJson('--reader', accept);
    expect(code).toBe(1);
    expect(table(report)).toEqual({ ...ALL_PASS, 'invalid/bad-magic': [0, 1, 0, 0], 'invalid/unknown-incompatible': [0, 1, 0, 0] });
    const bad = report.results.find((r) => r.caseId === 'invalid.bad-magic.0000')!;
    expect(bad.detail).toMatch(/^read an invalid image without refusing it \(expected refusal: bad-magic: .*not in qcow2 format/);
  });

  it('a reader that refuses a valid image fails it with its message (a Node crash by its Error line)', async () => {
    const picky = `sh -c 'case "$1" in *backing*) echo "no backing files here" >&2; exit 4;; esac; qemu-img convert -f qcow2 -O raw "$1" "$2"' sh {image} {raw}`;
    const { report } = await conformJson('--reader', picky);
    expect(table(report)).toEqual({ ...ALL_PASS, 'backing-qcow2': [0, 1, 0, 0] });
    expect(report.results.find((r) => r.family === 'backing-qcow2')!.detail).toBe('refused a valid image (exit 4: no backing files here)');
    const thrower = script('throwing-reader.mjs', "throw new RangeError('The number 4.9375 cannot be converted to a BigInt');\n");
    const crashed = await conformJson('--only', 'plain', '--reader', `${process.execPath} ${thrower} {image} {raw}`);
    expect(crashed.report.results[0]!.detail).toBe('refused a valid image (exit 1: RangeError: The number 4.9375 cannot be converted to a BigInt)');
  });

  it('a hanging reader is killed at the time limit with everything it started; a crashing one is a failure', async () => {
    const pidFile = join(dir, 'child.pid');
    const started = performance.now();
    const { code, report } = await conformJson('--timeout', '1', '--only', 'plain', '--reader', `sh -c 'sleep 60 & echo $! > ${pidFile}; wait' sh {image} {raw}`);
    // The timeout is the feature under test, so this one bound is on time: not a speed limit but
    // the proof that the reader's group was killed rather than waited for — an unkilled reader
    // takes 60 s; a killed one ends the run about 1 s after the 1 s timeout, so 30 s is more than
    // 10 × the usual time.
    expect(performance.now() - started).toBeLessThan(30_000);
    expect(code).toBe(1);
    expect(report.results.map((r) => [r.caseId, r.status, r.detail])).toEqual([['plain.0000', 'fail', 'timed out after 1 s (killed)']]);
    // The background sleep went with the group: gone, or a zombie nobody reaps (PID 1 of a container may not).
    const pid = Number(readFileSync(pidFile, 'utf8'));
    expect(processState(pid)).toMatch(/^(gone|Z|X)$/);

    const crash = await conformJson('--only', 'invalid/bad-magic', '--reader', `sh -c 'kill -SEGV $$' sh {image} {raw}`);
    expect(crash.report.results.map((r) => [r.status, r.detail])).toEqual([['fail', 'crashed: killed by SIGSEGV']]);
    // Through a shell script the crash is exit status 139; still a crash, not a refusal.
    const viaShell = await conformJson('--only', 'invalid/bad-magic', '--reader', `sh -c 'sh -c "kill -SEGV \\$\\$"' sh {image} {raw}`);
    expect(viaShell.report.results[0]!.detail).toMatch(/^crashed: exit status 139 \(a child killed by SIGSEGV\)/);
  });

  it('a reader that writes more than the virtual size is stopped before it fills the disk', async () => {
    // 1 MiB every 20 ms, forever: past the 1 MiB disk (+1 MiB slack) within the first checks.
    const endless = `sh -c 'while :; do head -c 1048576 /dev/zero | tr "\\0" x; sleep 0.02; done > "$2"' sh {image} {raw}`;
    // Bounded by what it wrote (below), not by time: the test's timeout is the hang detector.
    const { report } = await conformJson('--only', 'plain', '--reader', endless);
    const r = report.results[0]!;
    expect(r.status).toBe('fail');
    expect(r.detail).toMatch(/^killed after writing (\d+) bytes to one file, more than the test allows \(--max-output\)$/);
    const written = Number(/(\d+) bytes/.exec(r.detail)![1]);
    expect(written).toBeGreaterThan(2 * 1024 * 1024);
    expect(written).toBeLessThan(64 * 1024 * 1024);
    // --max-output lowers the cap below the virtual size for cases without one, and is checked.
    expect((await conform('--only', 'plain', '--reader', endless, '--max-output', 'lots')).code).toBe(2);
  });

  it("a corpus's shared files are in every reader test: an escaping data-file name finds its target", async () => {
    // As qcow2-ref corpus lays it out: the target the escaping name points at lives at the corpus's top.
    const escCorpus = join(dir, 'escape-corpus');
    const caseDir = join(escCorpus, 'esc.0000');
    mkdirSync(caseDir, { recursive: true });
    const image = join(caseDir, 'image.qcow2');
    await qemuImgCreate(image, 64 * K, { data_file: '../escape-target.raw' }, [], 'qcow2', { cwd: caseDir });
    await runQemuSteps(image, planQemuSteps([w(0, 4 * K, 0x5a)], 64n * 1024n), { cwd: caseDir });
    expect(readAt(join(escCorpus, 'escape-target.raw'), 0, 1)[0]).toBe(0x5a);
    const esc: CorpusCase = {
      id: 'esc.0000',
      family: 'invalid/data-file-path-escapes',
      valid: false,
      features: [],
      options: { data_file: '../escape-target.raw' },
      files: { image: 'esc.0000/image.qcow2' },
      expect: { kind: 'reject-open', errorClass: 'data-file-path-escapes', qemuMessage: '' },
      qemuDifference: 'QEMU 7.2 opens the escaping data file and reads it',
    };
    writeManifest(escCorpus, [esc]);
    const run = async (impl: string): Promise<JsonReport> => {
      let out = '';
      await runConform(['--corpus', escCorpus, '--impl', impl, '--expected-failures', '/dev/null', '--output=json'], { stdout: (t) => (out += t), stderr: () => undefined });
      return JSON.parse(out) as JsonReport;
    };
    // QEMU follows the name out of the image's directory and reads the target: not refused.
    const q = await run('qemu-img');
    expect(q.results.map((r) => [r.status, r.detail])).toEqual([
      ['fail', 'read an invalid image without refusing it (expected refusal: data-file-path-escapes) [recorded QEMU difference: QEMU 7.2 opens the escaping data file and reads it]'],
    ]);
    // qcow2-ref refuses names that leave the image's directory (CVE-2024-32498 class).
    const ours = await run('qcow2-ref');
    expect(ours.results.map((r) => r.status)).toEqual(['pass']);
  });

  it('runAdapter keeps only the tail of a flood of output', async () => {
    const r = await runAdapter(['sh', '-c', 'head -c 3000000 /dev/zero | tr "\\0" a; echo END'], { cwd: dir, timeoutMs: 30_000 });
    expect(r.code).toBe(0);
    expect(r.stdout.length).toBeLessThanOrEqual(16 * 1024);
    expect(r.stdout.endsWith('aaaEND\n')).toBe(true);
  });
});

describe('expected failures in a run', () => {
  const flipTemplate = (): string => `${join(dir, 'flip-reader.sh')} {image} {raw}`;

  it('known failures are reported but do not fail the run', async () => {
    const list = join(dir, 'known.txt');
    writeFileSync(list, '# flips a byte\nplain\nzero-clusters   # family\ncompat-0.10.0000\nreader:backing-*\n');
    const { code, report } = await conformJson('--reader', flipTemplate(), '--expected-failures', list);
    expect(report.totals).toEqual({ pass: 3, fail: 0, known: 4, skip: 0, unexpectedPasses: 0 });
    expect(code).toBe(0);
    expect(report.results.find((r) => r.caseId === 'plain.0000')!.knownFailure).toBe('known.txt:2 plain');
    const human = await conform('--reader', flipTemplate(), '--expected-failures', list);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/\[known\] reader plain: plain\.0000/);
    expect(human.stdout).toMatch(/^OK: 3 passed, 0 unexpected failures, 4 known failures/m);
  });

  it('a failure not on the list fails the run (a writer-only entry does not cover a reader test)', async () => {
    const list = join(dir, 'partial.txt');
    writeFileSync(list, 'plain\nzero-clusters\ncompat-0.10\nwriter:backing-qcow2\n');
    const { code, report } = await conformJson('--reader', flipTemplate(), '--expected-failures', list);
    expect(code).toBe(1);
    expect(report.totals.fail).toBe(1);
    expect(table(report)['backing-qcow2']).toEqual([0, 1, 0, 0]);
  });

  it('an entry whose tests all pass is an unexpected pass and fails the run', async () => {
    const list = join(dir, 'stale.txt');
    writeFileSync(list, 'plain\nzero-clusters\ncompat-0.10\nbacking-qcow2\ninvalid/*\nnot-in-this-corpus\n');
    const { code, report } = await conformJson('--reader', flipTemplate(), '--expected-failures', list);
    expect(code).toBe(1);
    expect(report.totals.fail).toBe(0);
    expect(report.staleEntries.map((s) => [s.line, s.pattern, s.matched])).toEqual([[5, 'invalid/*', 2]]);
    const human = await conform('--reader', flipTemplate(), '--expected-failures', list);
    expect(human.stdout).toMatch(/Unexpected passes[^\n]*\n {2}line 5: invalid\/\* \(2 tests, all passed\)/);
    expect(human.stdout).toMatch(/matched no test in this run:\n {2}line 6: not-in-this-corpus/);
    expect(human.stdout).toMatch(/^FAIL: .*1 unexpected pass/m);
  });
});

describe('writer adapters', () => {
  it('qemu-io (built-in) passes every writer case; invalid cases are not writer tests', async () => {
    const { code, report } = await conformJson('--impl', 'qemu-io', '--expected-failures', '/dev/null');
    expect(report.results.filter((r) => r.status !== 'pass').map((r) => `${r.caseId}: ${r.detail}`)).toEqual([]);
    expect(table(report, 'writer')).toEqual({ 'backing-qcow2': [1, 0, 0, 0], 'compat-0.10': [1, 0, 0, 0], plain: [1, 0, 0, 0], 'zero-clusters': [1, 0, 0, 0] });
    expect(code).toBe(0);
  });

  it('qcow2-ref (built-in: reader and writer) passes both roles', async () => {
    const { report } = await conformJson('--impl', 'qcow2-ref', '--expected-failures', '/dev/null', '--only', 'plain', '--only', 'backing-*');
    expect(report.results.map((r) => [r.role, r.caseId, r.status])).toEqual([
      ['reader', 'plain.0000', 'pass'],
      ['reader', 'backing-qcow2.0000', 'pass'],
      ['writer', 'plain.0000', 'pass'],
      ['writer', 'backing-qcow2.0000', 'pass'],
    ]);
  });

  it('a writer that writes one wrong byte fails on content, at that byte; --keep-work keeps its files', async () => {
    let kept = '';
    const writer = `sh -c '${process.execPath} ${join(ROOT, 'adapters/qemu-io-writer.mjs')} "$1" "$2" && qemu-io -f qcow2 -c "write -q -P 0x42 900000 1" "$1"' sh {image} {script}`;
    const { code, report } = await conformJson('--writer', writer, '--only', 'plain');
    expect(code).toBe(1);
    const r = report.results[0]!;
    expect(r.detail).toBe('guest content differs from the oracle: first difference at byte 900000 (0xdbba0): got 0x42, expected 0x00');
    expect(r.reproduce).toMatch(/^qcow2-ref conform --corpus .* --writer .* --only plain\.0000 --keep-work$/);
    // Rerun as printed (in-process): the test's files stay, the writer's image among them.
    const again = await runConform(
      ['--corpus', corpus, '--writer', writer, '--only', 'plain.0000', '--keep-work', '--output=json'],
      { stdout: (t) => (kept += t), stderr: () => undefined },
      { cwd: dir },
    );
    expect(again).toBe(1);
    const keptWork = (JSON.parse(kept) as { keptWork: string }).keptWork;
    const imageDirs = readdirSync(keptWork);
    expect(imageDirs).toHaveLength(1);
    const image = join(keptWork, imageDirs[0]!, 'files/plain.0000/disk.qcow2');
    expect([...readAt(image, HeaderLayout.magic.offset, HeaderLayout.magic.size)]).toEqual(HEADER_MAGIC);
    await rm(keptWork, { recursive: true, force: true });
  });

  it('a writer that damages the refcounts is caught by qemu-img check and by our check', async () => {
    // After the script, raise the refcount of cluster 0 (the header) to 2: a leak QEMU and we must both report.
    const leaker = script(
      'leak-writer.sh',
      `#!/bin/sh
${process.execPath} ${join(ROOT, 'adapters/qemu-io-writer.mjs')} "$1" "$2" || exit 1
table=$(od -An -tu8 --endian=big -j 48 -N 8 "$1" | tr -d ' ')
block=$(od -An -tu8 --endian=big -j "$table" -N 8 "$1" | tr -d ' ')
printf '\\000\\002' | dd of="$1" bs=1 seek="$block" conv=notrunc status=none
`,
    );
    const writer = `${leaker} {image} {script}`;
    const { code, report } = await conformJson('--writer', writer, '--only', 'compat-0.10');
    expect(code).toBe(1);
    const d = report.results[0]!.detail;
    expect(d).toMatch(/qemu-img check: exit 3, 0 corruption\(s\), 1 leak\(s\)/);
    expect(d).toMatch(/qcow2-ref check: 0 corruption\(s\), 1 leak\(s\), 0 check error\(s\) \(Leaked cluster 0 refcount=2 reference=1\)/);
  });

  it('a writer that fails the script, or leaves the wrong virtual size, fails the test', async () => {
    const { report } = await conformJson('--writer', `sh -c 'echo "cannot do snapshots" >&2; exit 1' sh {image} {script}`, '--only', 'plain');
    expect(report.results.map((r) => [r.status, r.detail])).toEqual([['fail', 'the writer failed (exit 1: cannot do snapshots)']]);
    const grows = `sh -c '${process.execPath} ${join(ROOT, 'adapters/qemu-io-writer.mjs')} "$1" "$2" && qemu-img resize -q -f qcow2 "$1" +1M' sh {image} {script}`;
    const sized = await conformJson('--writer', grows, '--only', 'plain');
    expect(sized.report.results.map((r) => [r.status, r.detail])).toEqual([['fail', 'virtual size 2097152, expected 1048576']]);
  });
});

describe('the adapters of other implementations (setup.sh installs them)', () => {
  beforeAll(async () => {
    // Not installed: fail loudly with what to install, never skip.
    for (const impl of ['libqcow', '7zip'] as const) {
      const problem = await builtinProblem(impl);
      if (problem !== undefined) throw new Error(problem);
    }
  });

  it('libqcow reads plain images and refuses bad ones, and is caught on its known bugs', async () => {
    const { code, report } = await conformJson('--impl', 'libqcow', '--expected-failures', '/dev/null');
    expect(code).toBe(1);
    const t = table(report);
    expect(t.plain).toEqual([1, 0, 0, 0]);
    expect(t['compat-0.10']).toEqual([1, 0, 0, 0]);
    expect(t['invalid/bad-magic']).toEqual([1, 0, 0, 0]);
    expect(t['invalid/unknown-incompatible']).toEqual([1, 0, 0, 0]);
    const detail = (family: string): string => report.results.find((r) => r.family === family)!.detail;
    // libqcow 20201213 ignores the zero flag: the zero-flagged cluster at 16 KiB still holds the 0x05 written before.
    expect(t['zero-clusters']).toEqual([0, 1, 0, 0]);
    expect(detail('zero-clusters')).toMatch(/first difference at byte 16384 \(0x4000\): got 0x05, expected 0x00/);
    // A zero flag without a host offset (here: the v3 discard over the backing file) reads host
    // cluster 0, the header: 'QFI\xfb' where zeros belong.
    expect(t['backing-qcow2']).toEqual([0, 1, 0, 0]);
    expect(detail('backing-qcow2')).toMatch(/first difference at byte 0 \(0x0\): got 0x51, expected 0x00 \(4 bytes differ in a row\)$/);
  });

  it('7-Zip reads plain images and refuses images with a backing file', async () => {
    const { report } = await conformJson('--impl', '7zip', '--expected-failures', '/dev/null');
    const t = table(report);
    expect(t.plain).toEqual([1, 0, 0, 0]);
    expect(t['invalid/bad-magic']).toEqual([1, 0, 0, 0]);
    expect(t['backing-qcow2']).toEqual([0, 1, 0, 0]);
    expect(report.results.find((r) => r.family === 'backing-qcow2')!.detail).toMatch(/^refused a valid image \(exit 2: 7-Zip \(exit 2\): .*Unsupported method/);
  });
});

describe('the command', () => {
  it('usage errors exit 2; an unreadable corpus or no selected test exits 3', async () => {
    expect((await conform('--impl', 'nope')).stderr).toMatch(/unknown implementation 'nope'/);
    expect((await conform('--name', 'x')).stderr).toMatch(/--name is for --reader/);
    expect((await conform('--impl', 'qemu-img', '--reader', 'x {image} {raw}')).code).toBe(2);
    expect((await conform('--impl', 'qemu-img', '--jobs', '0')).code).toBe(2);
    expect((await conform('--impl', 'qemu-img', '--timeout', 'soon')).code).toBe(2);
    const bad = join(dir, 'bad-list.txt');
    writeFileSync(bad, 'two words\n');
    expect((await conform('--impl', 'qemu-img', '--expected-failures', bad)).stderr).toMatch(/bad-list.txt:1/);
    let stderr = '';
    const code = await runConform(['--corpus', join(dir, 'nothing-here'), '--impl', 'qemu-img'], { stdout: () => undefined, stderr: (t) => (stderr += t) });
    expect(code).toBe(3);
    expect(stderr).toMatch(/cannot read the corpus/);
    expect((await conform('--impl', 'qemu-img', '--only', 'no-such-family')).code).toBe(3);
    const help = await conform('--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: qcow2-ref conform/);
  });

  it('runs qemu-img by default, with a progress bar on a terminal and nothing otherwise', async () => {
    for (const isTTY of [true, false]) {
      let drawn = '';
      let stdout = '';
      const code = await runConform(
        ['--corpus', corpus, '--expected-failures', '/dev/null', '--jobs', '1'],
        { stdout: (t) => (stdout += t), stderr: () => undefined },
        { cwd: dir, progress: { write: (t) => (drawn += t), isTTY } },
      );
      expect(code).toBe(0);
      expect(stdout).toMatch(/^qcow2-ref conform: qemu-img on corpus \(7 cases, 7 tests\)\n {2}reader: qemu-img convert -f qcow2 -O raw \{image\} \{raw\}\n/);
      expect(stdout).toMatch(/^OK:/m);
      if (isTTY) expect(drawn).toMatch(/7\/7 tests/);
      else expect(drawn).toBe('');
    }
  });
});
