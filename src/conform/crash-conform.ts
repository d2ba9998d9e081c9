/**
 * `qcow2-ref conform --crash`: crash consistency of writers, judged on the corpus's writer cases.
 * For each valid case with an op script, a fresh image is made with `qemu-img create` and the case's
 * options; each writer runs the script while its host writes are logged — the model (its HostIO),
 * the driver on recording backends (write-through and write-back), QEMU itself through blklogwrites
 * (src/qemu/logged-run.ts), or a third party handing over a dm-log-writes log with a mark after each
 * op (docs/crash.md) — and every crash state of the log (src/crash) is judged. A sample of the states
 * is also given to `qemu-img check`, whose verdict our check must match.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkExitCode, checkImage } from '../check/index.ts';
import { driverWriteLog, judgeRun, modelWriteLog, validateWriteLog, VIOLATION_KINDS, type CrashPoint, type CrashStateOptions, type Violation, type ViolationKind, type WriteLog } from '../crash/index.ts';
import type { CorpusCase } from '../corpus/index.ts';
import { geometryOf, hostBytes, loadImage, type HostIO, type Op } from '../model/index.ts';
import { isOpenError, openImage as openChecked } from '../open/index.ts';
import { isQcow2FormatError } from '../codec/index.ts';
import { RawDisk } from '../oracle/index.ts';
import { checkCounter, LOG_MARK_FLAG, parseBlkLogWrites, qemuImgCheck, qemuImgCreate, runQemuLogged, toBigInt } from '../qemu/index.ts';
import { parseScript } from '../script/index.ts';
import { expandTemplate, type CommandTemplate } from './command-template.ts';
import { entryMatches, type ExpectedFailure } from './expected-failures.ts';
import { runAdapter } from './run-adapter.ts';

/** The built-in writers whose logs `conform --crash` can take. */
export type CrashWriterName = 'model' | 'driver' | 'driver-writeback' | 'qemu-io';

/** Every built-in crash writer, in report order. */
export const CRASH_WRITERS: readonly CrashWriterName[] = ['model', 'driver', 'driver-writeback', 'qemu-io'];

/** A writer to judge: a built-in one, or a third party's command that logs in dm-log-writes format. */
export type CrashWriter = { readonly kind: 'builtin'; readonly name: CrashWriterName } | { readonly kind: 'template'; readonly name: string; readonly template: CommandTemplate };

/** What `runCrashConformance` needs. */
export interface CrashConformOptions {
  readonly corpusDir: string;
  readonly cases: readonly CorpusCase[];
  readonly writers: readonly CrashWriter[];
  readonly states: CrashStateOptions;
  /** Give every n-th crash state (and every violating one) to `qemu-img check` too; 0: never. */
  readonly qemuCheckEvery: number;
  /** Where to keep the first violating state of each row (a directory per row); none by default. */
  readonly keepDir?: string;
  readonly timeoutMs: number;
  /**
   * Known violations per writer name (conform/expected-failures/crash-WRITER.txt: case ids or family
   * patterns): a listed row's violations do not fail the run; an entry no violating row matches does.
   */
  readonly expected?: ReadonlyMap<string, { readonly source: string; readonly entries: readonly ExpectedFailure[] }>;
  readonly onProgress?: (done: number, total: number) => void;
}

/** The first violating state of a row, and how to reproduce it. */
export interface CrashFirstViolation {
  readonly caseId: string;
  readonly point: CrashPoint;
  readonly violations: readonly Violation[];
  /** Where its files were kept (state.qcow2, base.qcow2, script.json, log.jsonl, point.json). */
  readonly kept?: string;
}

/** One row of the report: a writer on one corpus family. */
export interface CrashFamilyRow {
  readonly writer: string;
  readonly family: string;
  readonly cases: number;
  readonly skipped: number;
  readonly firstSkip?: string;
  readonly states: number;
  /** Runs whose writer failed (exited non-zero, or handed over a log that does not parse or fit the script). */
  readonly writerFailures: number;
  readonly firstWriterFailure?: string;
  readonly violating: number;
  /** States accepted only as QEMU's own snapshot COPIED window (docs/format/snapshots.md). */
  readonly known: number;
  readonly byKind: Readonly<Record<ViolationKind, number>>;
  /** States given to qemu-img check, and those where its verdict differed from ours. */
  readonly qemuChecked: number;
  readonly disagreements: number;
  readonly firstDisagreement?: string;
  readonly first?: CrashFirstViolation;
  /** The expected-failures entry covering this row's violations (`source:line pattern # reason`). */
  readonly knownFailure?: string;
}

/** The whole report. */
export interface CrashReport {
  readonly rows: readonly CrashFamilyRow[];
  readonly totals: { readonly states: number; readonly violating: number; readonly known: number; readonly qemuChecked: number; readonly disagreements: number };
  /**
   * Judging speed in crash states per minute: our whole judgement (open, check, guest content of
   * every sector), and on the states given to qemu-img check, our open and check against it.
   */
  readonly statesPerMinute: { readonly ours: number; readonly oursCheck?: number; readonly qemuImgCheck?: number };
  /** Expected-failures entries that matched no violating row (they fail the run: remove them). */
  readonly staleEntries: readonly string[];
  /** Violating rows no entry covers, plus check disagreements: 0 for a passing run. */
  readonly unexpected: number;
  readonly ok: boolean;
}

/** Why a case cannot be a crash test (undefined: it can). */
function skipReason(c: CorpusCase, writer: CrashWriter): string | undefined {
  if (!c.valid || c.script === undefined || c.virtualSize === undefined) return 'not a writer case';
  if ((c.files.backing ?? []).length > 0) return 'has a backing file (crash runs use a fresh image without one)';
  if (c.files.dataFile !== undefined && writer.kind === 'builtin' && writer.name === 'qemu-io') return 'has an external data file, whose writes blklogwrites does not log';
  if (c.files.dataFile !== undefined) return 'has an external data file (not supported by crash runs yet)';
  return undefined;
}

/** The raw-disk oracle of a fresh image, configured from its header. */
function oracleOf(base: Uint8Array): RawDisk {
  const h = loadImage(base).header;
  const g = geometryOf(h);
  const cs = BigInt(g.clusterSize);
  return new RawDisk({ size: h.size, version: h.version === 2 ? 2 : 3, clusterSize: cs, subclusterSize: cs / BigInt(g.subclusters) });
}

/** A dm-log-writes log with a mark after each op: the host operations and each op's range. */
function logFromMarks(bytes: Uint8Array, ops: readonly Op[], writer: string, base: Uint8Array): WriteLog {
  const parsed = parseBlkLogWrites(bytes);
  const marks = parsed.entries.flatMap((e, i) => ((e.flags & LOG_MARK_FLAG) !== 0n ? [parsed.hostStart[i]!] : []));
  if (marks.length !== ops.length) throw new Error(`the log has ${marks.length} marks for ${ops.length} ops (docs/crash.md: one mark after each op)`);
  let at = 0;
  const guest = ops.map((op, i) => {
    const g = { op, start: at, end: marks[i]!, ok: true };
    at = marks[i]!;
    return g;
  });
  return { writer, base, host: parsed.host, guest };
}

/** The write log of `writer` running `ops` on a copy of `imagePath` (whose bytes are `base`). */
async function writeLogOf(writer: CrashWriter, base: Uint8Array, ops: readonly Op[], scriptText: string, dir: string, timeoutMs: number): Promise<WriteLog> {
  if (writer.kind === 'template') {
    const image = join(dir, 'writer.qcow2');
    const script = join(dir, 'script.json');
    const log = join(dir, 'writer.log');
    writeFileSync(image, base);
    writeFileSync(script, scriptText);
    const argv = expandTemplate(writer.template, { image, script, log, dir });
    const r = await runAdapter(argv, { cwd: dir, timeoutMs });
    if (r.code !== 0) throw new Error(`the writer exited ${r.code ?? r.signal}: ${r.stderr.trim().split('\n').at(-1) ?? ''}`);
    return logFromMarks(readFileSync(log), ops, writer.name, base);
  }
  switch (writer.name) {
    case 'model':
      return modelWriteLog(loadImage(base), ops);
    case 'driver':
      return driverWriteLog(base, ops);
    case 'driver-writeback':
      return driverWriteLog(base, ops, { writeback: true });
    case 'qemu-io': {
      const image = join(dir, 'qemu.qcow2');
      writeFileSync(image, base);
      const log = await runQemuLogged(image, ops, { commandTimeoutMs: timeoutMs });
      return { writer: 'qemu-io', base, host: log.host, guest: log.guest };
    }
  }
}

/** Our check's verdict on a crash state as `qemu-img check` (no repair) gives it: exit code, corruptions, leaks. */
function ourCheckVerdict(bytes: Uint8Array): string {
  try {
    const r = checkImage(openChecked(bytes, { checkMode: true }));
    return `exit ${checkExitCode(r)}, ${r.corruptions} corruptions, ${r.leaks} leaks`;
  } catch (e) {
    // What QEMU refuses to open, qemu-img check cannot check (exit 1); anything else is our bug.
    if (isOpenError(e) || isQcow2FormatError(e)) return 'exit 1 (cannot open)';
    throw e;
  }
}

/**
 * Whether `qemu-img check` (no repair) agrees with our check on the crash state `bytes`, written to
 * `path` for it: `differs` is undefined when they agree (exit code, corruptions, leaks), else both
 * verdicts; `qemuMs` is the time qemu-img check took, `oursMs` our open and check of the same bytes.
 */
export async function qemuCheckDisagreement(bytes: Uint8Array, path: string, timeoutMs: number): Promise<{ readonly differs?: string; readonly qemuMs: number; readonly oursMs: number }> {
  writeFileSync(path, bytes);
  const q0 = performance.now();
  const q = await qemuImgCheck(path, { timeoutMs });
  const qemuMs = performance.now() - q0;
  const o0 = performance.now();
  const ours = ourCheckVerdict(bytes);
  const oursMs = performance.now() - o0;
  const theirs = q.json !== undefined ? `exit ${q.code}, ${toBigInt(checkCounter(q.json, 'corruptions'))} corruptions, ${toBigInt(checkCounter(q.json, 'leaks'))} leaks` : `exit ${q.code} (cannot open)`;
  return theirs === ours ? { qemuMs, oursMs } : { differs: `qemu-img check says ${theirs}, ours ${ours}`, qemuMs, oursMs };
}

/** The JSON lines of a log: one host operation per line, bytes in base64. */
function logLines(host: readonly HostIO[]): string {
  const b64 = (b: Uint8Array): string => btoa(Array.from(b, (x) => String.fromCharCode(x)).join(''));
  return host.map((h) => JSON.stringify(h, (k, v) => (typeof v === 'bigint' ? v.toString() : v instanceof Uint8Array ? b64(v) : v))).join('\n') + '\n';
}

/** Runs the crash conformance (see the module comment). */
export async function runCrashConformance(opts: CrashConformOptions): Promise<CrashReport> {
  const rows = new Map<string, { -readonly [K in keyof CrashFamilyRow]: CrashFamilyRow[K] } & { byKind: Record<ViolationKind, number> }>();
  const work = mkdtempSync(join(tmpdir(), 'qcow2-ref-crash-'));
  let oursMs = 0;
  let oursStates = 0;
  let qemuMs = 0;
  let oursCheckMs = 0;
  const total = opts.cases.length * opts.writers.length;
  let done = 0;
  try {
    for (const c of opts.cases) {
      for (const writer of opts.writers) {
        const key = `${writer.name}\u0000${c.family}`;
        let row = rows.get(key);
        if (row === undefined) {
          row = { writer: writer.name, family: c.family, cases: 0, skipped: 0, states: 0, writerFailures: 0, violating: 0, known: 0, byKind: Object.fromEntries(VIOLATION_KINDS.map((k) => [k, 0])) as Record<ViolationKind, number>, qemuChecked: 0, disagreements: 0 };
          rows.set(key, row);
        }
        row.cases++;
        const why = skipReason(c, writer);
        if (why !== undefined) {
          row.skipped++;
          row.firstSkip ??= `${c.id}: ${why}`;
          opts.onProgress?.(++done, total);
          continue;
        }
        const dir = join(work, `${done}`);
        mkdirSync(dir);
        const created = join(dir, 'base.qcow2');
        await qemuImgCreate(created, c.virtualSize!, c.options, [], 'qcow2', { cwd: dir, timeoutMs: opts.timeoutMs });
        const base = new Uint8Array(readFileSync(created));
        const ops = parseScript(c.script!);
        let log: WriteLog;
        try {
          log = await writeLogOf(writer, base, ops, c.script!, dir, opts.timeoutMs);
          validateWriteLog(log);
        } catch (e) {
          // A third party's writer or log failing is its result; ours failing is a bug to surface.
          if (writer.kind !== 'template') throw e;
          row.writerFailures++;
          row.firstWriterFailure ??= `${c.id}: ${(e as Error).message}`;
          rmSync(dir, { recursive: true, force: true });
          opts.onProgress?.(++done, total);
          continue;
        }
        const sampled: Uint8Array[] = [];
        let n = 0;
        const t0 = performance.now();
        const v = judgeRun({ log, initial: oracleOf(base) }, {
          ...opts.states,
          onState: (state, j) => {
            n++;
            if (opts.qemuCheckEvery > 0 && (n % opts.qemuCheckEvery === 0 || j.violations.length > 0) && sampled.length < 64) {
              sampled.push(hostBytes(state.image));
            }
            if (j.violations.length > 0 && row.first === undefined) {
              let kept: string | undefined;
              if (opts.keepDir !== undefined) {
                kept = join(opts.keepDir, `${writer.name}-${c.id}`.replace(/[^A-Za-z0-9._-]/g, '_'));
                mkdirSync(kept, { recursive: true });
                writeFileSync(join(kept, 'state.qcow2'), hostBytes(state.image));
                writeFileSync(join(kept, 'base.qcow2'), base);
                writeFileSync(join(kept, 'script.json'), c.script!);
                writeFileSync(join(kept, 'log.jsonl'), logLines(log.host));
                writeFileSync(join(kept, 'point.json'), JSON.stringify(state.point, (_, x) => (x instanceof Map ? Object.fromEntries(x) : x)) + '\n');
              }
              row.first = { caseId: c.id, point: state.point, violations: j.violations, ...(kept !== undefined ? { kept } : {}) };
            }
          },
        });
        oursMs += performance.now() - t0;
        oursStates += v.states;
        row.states += v.states;
        row.violating += v.violating;
        row.known += v.known;
        for (const k of VIOLATION_KINDS) row.byKind[k] += v.byKind[k];
        for (const bytes of sampled) {
          const { differs, qemuMs: ms, oursMs } = await qemuCheckDisagreement(bytes, join(dir, 'state.qcow2'), opts.timeoutMs);
          qemuMs += ms;
          oursCheckMs += oursMs;
          row.qemuChecked++;
          if (differs !== undefined) {
            row.disagreements++;
            row.firstDisagreement ??= `${c.id}: ${differs}`;
          }
        }
        rmSync(dir, { recursive: true, force: true });
        opts.onProgress?.(++done, total);
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const list = [...rows.values()].sort((a, b) => (a.writer === b.writer ? a.family.localeCompare(b.family) : a.writer.localeCompare(b.writer)));
  // Expected failures: by writer, an entry covers a row when it matches the family or the first violating case.
  const used = new Set<ExpectedFailure>();
  for (const r of list) {
    const known = opts.expected?.get(r.writer);
    if (known === undefined || r.first === undefined) continue;
    const e = known.entries.find((x) => entryMatches(x, { role: 'writer', caseId: r.first!.caseId, family: r.family }));
    if (e !== undefined) {
      used.add(e);
      r.knownFailure = `${known.source}:${e.line} ${e.pattern}${e.reason !== '' ? ` # ${e.reason}` : ''}`;
    }
  }
  // An entry is stale when its writer's rows it covers all ran and none violated.
  const staleEntries: string[] = [];
  for (const [writer, l] of opts.expected ?? new Map<string, { readonly source: string; readonly entries: readonly ExpectedFailure[] }>()) {
    for (const e of l.entries) {
      if (used.has(e)) continue;
      const covered = list.filter((r) => r.writer === writer && r.states > 0 && entryMatches(e, { role: 'writer', caseId: '', family: r.family }));
      if (covered.length > 0) staleEntries.push(`${l.source}:${e.line} ${e.pattern}`);
    }
  }
  const unexpected = list.filter((r) => r.violating > 0 && r.knownFailure === undefined).length + list.reduce((x, r) => x + r.disagreements + r.writerFailures, 0);
  const sum = (f: (r: CrashFamilyRow) => number): number => list.reduce((x, r) => x + f(r), 0);
  const totals = { states: sum((r) => r.states), violating: sum((r) => r.violating), known: sum((r) => r.known), qemuChecked: sum((r) => r.qemuChecked), disagreements: sum((r) => r.disagreements) };
  const perMinute = (states: number, ms: number): number => (ms > 0 ? Math.round((states * 60_000) / ms) : 0);
  return {
    rows: list,
    totals,
    statesPerMinute: { ours: perMinute(oursStates, oursMs), ...(totals.qemuChecked > 0 ? { oursCheck: perMinute(totals.qemuChecked, oursCheckMs), qemuImgCheck: perMinute(totals.qemuChecked, qemuMs) } : {}) },
    staleEntries,
    unexpected,
    ok: unexpected === 0 && staleEntries.length === 0,
  };
}
