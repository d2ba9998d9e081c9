/**
 * `npm run fuzz -- [--seconds N] [--seed S] [--classes a,b] [--max-commands N] [--output=table|json]`
 *
 * Open-ended fuzzing: runs the project's fast-check properties as named campaigns, round-robin over
 * their configuration classes, in batches of `fc.check` (never `fc.assert`, so sequences and ops can
 * be counted and a failure does not stop the run), until N seconds have passed. Batch k runs from the
 * seed `batchSeed(S, k)`, so a run with the same seed starts the same batches in the same order (how
 * many batches fit in N seconds depends on the machine). Every failure is reported with its batch
 * seed, path and the commands' replayPath, which replay it exactly:
 *
 *   fc.assert(commandsProperty(configArb(CLASS), modelStep, { maxCommands: M, compressed: true, replayPath: R }),
 *             { seed: SEED, path: PATH, endOnFailure: true })
 *
 * Campaigns today: `model-commands` (test/support/model-commands.ts, every configuration
 * class of CONFIG_CLASSES), `qemu-forward` and `qemu-reverse` (test/support/qemu-sequences.ts:
 * real QEMU judges the model's files, the model reads and continues QEMU's; every class of
 * QEMU_CLASSES). The table then also gives the QEMU processes run and, for qemu-reverse, the share of
 * sequences whose files were byte-identical to QEMU's; `corruption-injection`
 * (test/support/injection-campaign.ts: a catalog corruption of a model image, our check and
 * repair against qemu-img's) and `hostile-input` (test/support/hostile-campaign.ts: mutated images
 * through open, info, map, reads, check and repair; only typed errors, bounded time and heap), and
 * `crash` (test/support/crash-campaign.ts: every crash state of the model's, the driver's and
 * QEMU's write logs over random sequences, judged; qemu-img check sampled against ours), whose
 * summaries (typed errors by code, the slowest case, crash states by writer, ...) follow the table.
 *
 * Exit codes: 0 no failure, 1 at least one failure, 2 usage error. Importing this module has no side
 * effects: `main` runs only when the file is executed directly.
 */
import { realpathSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import {
  commandsProperty,
  CONFIG_CLASSES,
  configArb,
  modelStep,
  type ConfigClass,
  type StepFn,
} from '../test/support/model-commands.ts';
import { failureOf, type BatchResult, type Campaign, type Failure } from '../test/support/campaign.ts';
import { crashCampaign } from '../test/support/crash-campaign.ts';
import { hostileCampaign } from '../test/support/hostile-campaign.ts';
import { injectionCampaign } from '../test/support/injection-campaign.ts';
import {
  closeProbeServer,
  formatLayoutTable,
  forwardRun,
  QEMU_CLASSES,
  reverseRun,
  sequenceArb,
  tallyLayout,
  type LayoutTally,
  type QemuClass,
  type RunReport,
} from '../test/support/qemu-sequences.ts';
// Node's faster inflate for the model's codecs, as the Node entry and the CLI install it.
import '../src/io/node-compression.ts';

// ---------------------------------------------------------------------------------------------
// Campaigns


/**
 * The model-commands property (model vs raw-disk oracle, fc.commands with size 'max') as a campaign
 * with one class per entry of CONFIG_CLASSES, against `system` (the model's `step` unless a test
 * plugs in a broken one). Compressed writes are generated as in `npm test`.
 */
export function modelCommandsCampaign(system: StepFn = modelStep, systemName = 'modelStep'): Campaign {
  const byName = new Map(CONFIG_CLASSES.map((c) => [c.cls as string, c]));
  return {
    name: 'model-commands',
    classes: CONFIG_CLASSES.map((c) => ({ name: c.cls, title: c.title })),
    runBatch(cls, { seed, numRuns, maxCommands }) {
      const c = byName.get(cls);
      if (c === undefined) throw new Error(`model-commands: no class ${cls}`);
      const max = maxCommands ?? c.maxCommands;
      const steps: number[] = [];
      const prop = commandsProperty(configArb(cls as ConfigClass), system, { maxCommands: max, compressed: true, onRun: ({ steps: n }) => steps.push(n) });
      const d = fc.check(prop, { seed, numRuns });
      const ops = steps.slice(0, d.numRuns).reduce((a, b) => a + b, 0);
      const failure = failureOf(d, 'model-commands', cls, (path, replayPath) =>
        `fc.assert(commandsProperty(configArb('${cls}'), ${systemName}, { maxCommands: ${max}, compressed: true${replayPath !== undefined ? `, replayPath: '${replayPath}'` : ''} }), { seed: ${d.seed}, path: '${path}', endOnFailure: true })`);
      return { sequences: d.numRuns, ops, ...(failure !== undefined ? { failure } : {}) };
    },
  };
}

/** Totals of a QEMU campaign beyond sequences and ops: QEMU processes run and the layout tally. */
export interface QemuCampaignStats {
  qemuCalls: number;
  readonly layout: LayoutTally;
}

/**
 * Real QEMU as the second oracle (test/support/qemu-sequences.ts), one class per entry of
 * QEMU_CLASSES: `qemu-forward` (QEMU judges the model's files) or `qemu-reverse` (the model reads and
 * continues QEMU's files; layout compared byte for byte). Sequences of up to `maxCommands` ops
 * (default 50). A failure replays with
 *
 *   fc.assert(fc.asyncProperty(sequenceArb(CLASS, MAX), (s) => forwardRun(s)), { seed: SEED, path: PATH, endOnFailure: true })
 */
export function qemuCampaign(direction: 'forward' | 'reverse', stats: QemuCampaignStats = { qemuCalls: 0, layout: new Map() }): Campaign & { readonly stats: QemuCampaignStats } {
  const name = `qemu-${direction}`;
  const run = direction === 'forward' ? forwardRun : reverseRun;
  return {
    name,
    stats,
    classes: QEMU_CLASSES.map((c) => ({ name: c.cls, title: c.title })),
    async runBatch(cls, { seed, numRuns, maxCommands }) {
      if (!QEMU_CLASSES.some((c) => c.cls === cls)) throw new Error(`${name}: no class ${cls}`);
      const max = maxCommands ?? 50;
      const reports: RunReport[] = [];
      // Runs after the first failure are fast-check's shrinking: not counted.
      let failed = false;
      const prop = fc.asyncProperty(sequenceArb(cls as QemuClass, max), async (spec) => {
        let r: RunReport;
        try {
          r = await run(spec);
        } catch (e) {
          failed = true;
          throw e;
        }
        if (failed) return;
        reports.push(r);
        stats.qemuCalls += r.qemuCalls;
        tallyLayout(stats.layout, cls, r);
      });
      const d = await fc.check(prop, { seed, numRuns });
      const ops = reports.reduce((a, r) => a + r.ops, 0);
      const qemuCalls = reports.reduce((a, r) => a + r.qemuCalls, 0);
      const withLayout = reports.filter((r) => r.layout !== undefined);
      const layout = direction === 'reverse' ? { layout: { compared: withLayout.length, identical: withLayout.filter((r) => r.layout!.identical).length } } : {};
      const failure = failureOf(d, name, cls, (path) =>
        `fc.assert(fc.asyncProperty(sequenceArb('${cls}', ${max}), (s) => ${direction}Run(s)), { seed: ${d.seed}, path: '${path}', endOnFailure: true })`);
      return { sequences: d.numRuns, ops, qemuCalls, ...layout, ...(failure !== undefined ? { failure } : {}) };
    },
  };
}

/** Every campaign `npm run fuzz` runs, in round-robin order. */
export function defaultCampaigns(): Campaign[] {
  return [modelCommandsCampaign(), qemuCampaign('forward'), qemuCampaign('reverse'), injectionCampaign(), hostileCampaign(), crashCampaign()];
}

/**
 * The QEMU campaigns' extra summary: the layout-identical shares per class and layout category
 * (single or several QEMU processes, with or without compressed writes), after the main table.
 */
export function formatQemuStats(campaigns: readonly Campaign[]): string {
  const out: string[] = [];
  for (const c of campaigns) {
    const s = (c as Partial<{ stats: QemuCampaignStats }>).stats;
    if (s === undefined || s.layout.size === 0) continue;
    out.push('', `${c.name}: layout-identical sequences by category (model vs QEMU, same created image, ops and process boundaries):`, formatLayoutTable(s.layout));
  }
  return out.length > 0 ? `\n${out.join('\n')}\n` : '';
}

// ---------------------------------------------------------------------------------------------
// Arguments

/** Parsed command line. */
export interface FuzzOptions {
  readonly seconds: number;
  readonly seed: number;
  /** Whether the seed was chosen at random (it is printed either way). */
  readonly randomSeed: boolean;
  /** Selected classes (`name` or `campaign/name`); all when undefined. */
  readonly classes?: readonly string[];
  readonly maxCommands?: number;
  readonly output: 'table' | 'json';
  readonly help: boolean;
}

/** A command-line error (exit code 2). */
export class FuzzUsageError extends Error {
  override readonly name = 'FuzzUsageError';
}

/** The --help text (also printed after a usage error). */
export const USAGE = `usage: npm run fuzz -- [--seconds N] [--seed S] [--classes a,b] [--max-commands N] [--output=table|json]

Runs the fast-check properties open-ended: round-robin over every campaign's classes, batches of
fc.check from seeds derived from S, until N seconds have passed (a batch in progress finishes).

  --seconds N        how long to fuzz (default 60)
  --seed S           32-bit integer seed of the whole run (default: random, printed)
  --classes a,b      only these classes (a class name, or campaign/class); default all
  --max-commands N   commands per generated sequence (default: each class's own, as in npm test)
  --output=json      one JSON object on stdout instead of the table
  --help             this text

Exit codes: 0 no failure, 1 a property failed (seed, path, replayPath and counterexample printed), 2 usage.`;

/**
 * Parses the fuzz command line (`--flag value` and `--flag=value` forms). Throws FuzzUsageError for an
 * unknown flag, a missing or malformed value; `random` is called only when no --seed is given.
 */
export function parseFuzzArgs(argv: readonly string[], random: () => number = Math.random): FuzzOptions {
  let seconds = 60;
  let seed: number | undefined;
  let classes: string[] | undefined;
  let maxCommands: number | undefined;
  let output: 'table' | 'json' = 'table';
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const flag = eq >= 0 ? arg.slice(0, eq) : arg;
    const value = (): string => {
      if (eq >= 0) return arg.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw new FuzzUsageError(`${flag} needs a value`);
      return v;
    };
    const int = (min: number, max: number): number => {
      const v = value();
      if (!/^-?\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new FuzzUsageError(`${flag} needs an integer in [${min}, ${max}], got '${v}'`);
      return Number(v);
    };
    switch (flag) {
      case '--seconds': {
        const v = value();
        if (!/^\d+(\.\d+)?$/.test(v) || Number(v) <= 0) throw new FuzzUsageError(`--seconds needs a positive number, got '${v}'`);
        seconds = Number(v);
        break;
      }
      case '--seed':
        seed = int(-(2 ** 31), 2 ** 32 - 1) | 0;
        break;
      case '--classes':
        classes = value().split(',').map((c) => c.trim()).filter((c) => c !== '');
        if (classes.length === 0) throw new FuzzUsageError('--classes needs at least one class name');
        break;
      case '--max-commands':
        maxCommands = int(1, 100_000);
        break;
      case '--output': {
        const v = value();
        if (v !== 'table' && v !== 'json') throw new FuzzUsageError(`--output must be table or json, got '${v}'`);
        output = v;
        break;
      }
      case '--help':
      case '-h':
        help = true;
        break;
      default:
        throw new FuzzUsageError(`unknown argument '${arg}'`);
    }
  }
  const randomSeed = seed === undefined;
  return {
    seconds,
    seed: seed ?? (Math.floor(random() * 2 ** 32) | 0),
    randomSeed,
    ...(classes !== undefined ? { classes } : {}),
    ...(maxCommands !== undefined ? { maxCommands } : {}),
    output,
    help,
  };
}

// ---------------------------------------------------------------------------------------------
// The loop

/**
 * The seed of batch `k` of a run with seed `seed`: a 32-bit integer that depends only on both
 * (a murmur3-style mix), so batches of one run differ and a rerun with the same seed repeats them.
 */
export function batchSeed(seed: number, k: number): number {
  let h = (seed ^ Math.imul(k + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) | 0;
}

/** Totals of one campaign class. */
export interface UnitReport {
  readonly campaign: string;
  readonly cls: string;
  sequences: number;
  ops: number;
  /** QEMU processes run (0 for campaigns without QEMU). */
  qemuCalls: number;
  /** Sequences whose layout was compared with QEMU's, and the byte-identical ones among them. */
  layoutCompared: number;
  layoutIdentical: number;
  failures: number;
  batches: number;
  seconds: number;
}

/** What a fuzz run did. */
export interface FuzzReport {
  readonly seed: number;
  readonly randomSeed: boolean;
  readonly seconds: number;
  elapsedSeconds: number;
  readonly maxCommands?: number;
  readonly units: UnitReport[];
  readonly failures: Failure[];
}

/** Hooks of runFuzz: a clock (ms) and a progress callback (called after every batch). */
export interface FuzzHooks {
  readonly now?: () => number;
  readonly progress?: (report: FuzzReport, current: UnitReport) => void;
}

/** After this many failures a class is not run again in the same fuzz run (the rest get the time). */
export const MAX_FAILURES_PER_CLASS = 3;

/**
 * Selects the classes: every class of every campaign, or those named in `classes` (`name` or
 * `campaign/name`). Throws FuzzUsageError naming the unknown ones and listing the known ones.
 */
export function selectUnits(campaigns: readonly Campaign[], classes?: readonly string[]): { campaign: Campaign; cls: string }[] {
  const all = campaigns.flatMap((campaign) => campaign.classes.map((c) => ({ campaign, cls: c.name })));
  if (classes === undefined) return all;
  const unknown = classes.filter((n) => !all.some((u) => u.cls === n || `${u.campaign.name}/${u.cls}` === n));
  if (unknown.length > 0) {
    throw new FuzzUsageError(`unknown class ${unknown.join(', ')}; known: ${all.map((u) => `${u.campaign.name}/${u.cls}`).join(', ')}`);
  }
  return all.filter((u) => classes.includes(u.cls) || classes.includes(`${u.campaign.name}/${u.cls}`));
}

/**
 * Runs batches round-robin over the selected classes until `opts.seconds` have passed: batch k runs
 * class k mod n (skipping classes that failed MAX_FAILURES_PER_CLASS times) from `batchSeed(seed, k)`,
 * with as many sequences as fit in about 2 s by that class's measured speed (at least 1, at most
 * the time left). No batch starts after the deadline; the one in progress finishes. Promises: every
 * selected class is in `units` (zeros when it never ran), and every failure any batch reported is in
 * `failures`.
 */
export async function runFuzz(opts: FuzzOptions, campaigns: readonly Campaign[], hooks: FuzzHooks = {}): Promise<FuzzReport> {
  const now = hooks.now ?? (() => performance.now());
  const selected = selectUnits(campaigns, opts.classes);
  const report: FuzzReport = {
    seed: opts.seed,
    randomSeed: opts.randomSeed,
    seconds: opts.seconds,
    elapsedSeconds: 0,
    ...(opts.maxCommands !== undefined ? { maxCommands: opts.maxCommands } : {}),
    units: selected.map((u) => ({ campaign: u.campaign.name, cls: u.cls, sequences: 0, ops: 0, qemuCalls: 0, layoutCompared: 0, layoutIdentical: 0, failures: 0, batches: 0, seconds: 0 })),
    failures: [],
  };
  const t0 = now();
  const deadline = t0 + opts.seconds * 1000;
  const BATCH_MS = 2000;
  for (let k = 0; ; k++) {
    const t = now();
    if (t >= deadline) break;
    const live = selected.map((_u, i) => i).filter((i) => report.units[i]!.failures < MAX_FAILURES_PER_CLASS);
    if (live.length === 0) break;
    const i = live[k % live.length]!;
    const u = selected[i]!;
    const r = report.units[i]!;
    const msPerSeq = r.sequences > 0 ? (r.seconds * 1000) / r.sequences : BATCH_MS;
    const budget = Math.min(BATCH_MS, deadline - t);
    const numRuns = Math.max(1, Math.min(1000, Math.floor(budget / Math.max(msPerSeq, 1))));
    const b = await u.campaign.runBatch(u.cls, { seed: batchSeed(opts.seed, k), numRuns, ...(opts.maxCommands !== undefined ? { maxCommands: opts.maxCommands } : {}) });
    const dt = now() - t;
    r.batches++;
    r.sequences += b.sequences;
    r.ops += b.ops;
    r.qemuCalls += b.qemuCalls ?? 0;
    r.layoutCompared += b.layout?.compared ?? 0;
    r.layoutIdentical += b.layout?.identical ?? 0;
    // Time of a failing batch includes shrinking: keep it out of the speed estimate.
    if (b.failure === undefined) r.seconds += dt / 1000;
    else {
      r.failures++;
      report.failures.push(b.failure);
    }
    report.elapsedSeconds = (now() - t0) / 1000;
    hooks.progress?.(report, r);
  }
  report.elapsedSeconds = (now() - t0) / 1000;
  return report;
}

// ---------------------------------------------------------------------------------------------
// Output

/** "identical/compared (share %)", or "-" when nothing was compared. */
function layoutCell(compared: number, identical: number): string {
  return compared === 0 ? '-' : `${identical}/${compared} (${((100 * identical) / compared).toFixed(0)} %)`;
}

/** Sequences per minute of the time spent in successful batches, or "-" before any. */
function rateCell(sequences: number, seconds: number): string {
  return seconds > 0 ? ((60 * sequences) / seconds).toFixed(0) : '-';
}

/**
 * The summary table (one row per class and a total: sequences, ops, QEMU processes, failures, the
 * layout-identical share where layouts are compared, sequences per minute) followed by every failure
 * with its replay data.
 */
export function formatReport(report: FuzzReport): string {
  const rows: string[][] = [['campaign', 'class', 'sequences', 'ops', 'qemu calls', 'failures', 'layout identical', 'seq/min']];
  for (const u of report.units) {
    rows.push([u.campaign, u.cls, String(u.sequences), String(u.ops), String(u.qemuCalls), String(u.failures), layoutCell(u.layoutCompared, u.layoutIdentical), rateCell(u.sequences, u.seconds)]);
  }
  const total = (f: (u: UnitReport) => number): number => report.units.reduce((a, u) => a + f(u), 0);
  const sum = (f: (u: UnitReport) => number): string => String(total(f));
  rows.push([
    'total', '', sum((u) => u.sequences), sum((u) => u.ops), sum((u) => u.qemuCalls), sum((u) => u.failures),
    layoutCell(total((u) => u.layoutCompared), total((u) => u.layoutIdentical)), rateCell(total((u) => u.sequences), report.elapsedSeconds),
  ]);
  const widths = rows[0]!.map((_c, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]): string => r.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  const out: string[] = [
    `fuzz: seed ${report.seed}${report.randomSeed ? ' (random)' : ''}, ${report.elapsedSeconds.toFixed(1)} s of ${report.seconds} s` +
      (report.maxCommands !== undefined ? `, max ${report.maxCommands} commands` : ''),
    '',
    line(rows[0]!),
    ...rows.slice(1, -1).map(line),
    widths.map((w) => '-'.repeat(w)).join('  '),
    line(rows[rows.length - 1]!),
  ];
  report.failures.forEach((f, i) => {
    out.push(
      '',
      `failure ${i + 1}: ${f.campaign}/${f.cls}`,
      `  seed: ${f.seed}, path: "${f.path}"${f.replayPath !== undefined ? `, replayPath: "${f.replayPath}"` : ''}`,
      `  replay: ${f.replay}`,
      `  error: ${f.error.split('\n')[0]}`,
      `  counterexample: ${f.counterexample}`,
    );
  });
  return out.join('\n') + '\n';
}

/** The report as JSON (plain numbers and strings only). */
export function reportJson(report: FuzzReport): string {
  return JSON.stringify(report, null, 2) + '\n';
}

/** Where main writes. */
export interface FuzzIO {
  readonly stdout: (s: string) => void;
  readonly stderr: (s: string) => void;
  /** Whether stderr is a terminal (the progress line is drawn only then). */
  readonly isTTY: boolean;
}

const processIO: FuzzIO = {
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
  isTTY: process.stderr.isTTY === true,
};

/**
 * The whole command: parses `argv`, runs the campaigns and prints the table (or JSON) on stdout.
 * Resolves to the exit code (0 no failure, 1 failures, 2 usage error); never calls process.exit.
 */
export async function fuzzMain(argv: readonly string[], io: FuzzIO = processIO, campaigns: readonly Campaign[] = defaultCampaigns()): Promise<number> {
  let opts: FuzzOptions;
  try {
    opts = parseFuzzArgs(argv);
    if (!opts.help) selectUnits(campaigns, opts.classes);
  } catch (e) {
    if (!(e instanceof FuzzUsageError)) throw e;
    io.stderr(`fuzz: ${e.message}\n${USAGE}\n`);
    return 2;
  }
  if (opts.help) {
    io.stdout(`${USAGE}\n`);
    return 0;
  }
  io.stderr(`fuzz: seed ${opts.seed}${opts.randomSeed ? ' (random)' : ''}, ${opts.seconds} s\n`);
  let lastDraw = 0;
  const progress = (r: FuzzReport, u: UnitReport): void => {
    if (!io.isTTY) return;
    const t = performance.now();
    if (t - lastDraw < 200) return;
    lastDraw = t;
    const seqs = r.units.reduce((a, x) => a + x.sequences, 0);
    const ops = r.units.reduce((a, x) => a + x.ops, 0);
    io.stderr(`\r\x1b[K[${r.elapsedSeconds.toFixed(0)}/${r.seconds} s] ${u.campaign}/${u.cls}  ${seqs} sequences, ${ops} ops, ${r.failures.length} failures`);
  };
  const report = await runFuzz(opts, campaigns, { progress });
  closeProbeServer();
  await Promise.all(campaigns.map((c) => c.close?.()));
  const ran = new Set(report.units.filter((u) => u.sequences > 0).map((u) => u.campaign));
  const extra = campaigns.flatMap((c) => (c.summary !== undefined && ran.has(c.name) ? [c.summary()] : []));
  if (io.isTTY) io.stderr('\r\x1b[K');
  io.stdout(opts.output === 'json' ? reportJson(report) : formatReport(report) + formatQemuStats(campaigns) + (extra.length > 0 ? `\n${extra.join('\n')}\n` : ''));
  return report.failures.length > 0 ? 1 : 0;
}

function isMain(): boolean {
  const arg = process.argv[1];
  if (arg === undefined) return false;
  try {
    return realpathSync(arg) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  process.exitCode = await fuzzMain(process.argv.slice(2));
}
