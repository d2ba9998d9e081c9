/**
 * Corruption injection: a valid image made by the model (a configuration and command sequence of the
 * model-commands property, run with all of its checks, then closed cleanly), one corruption from the
 * catalog (src/corrupt/catalog.ts), and then our check and repair side by side with qemu-img's:
 *
 * 1. the image before the corruption reads as the raw-disk oracle (on the clusters compared in 4), and
 *    `qemu-img check` finds no corruption in it (leaks are allowed: QEMU leaves them too, e.g. after a
 *    snapshot that failed on a refcount overflow);
 * 2. check of the corrupted file: our exit code (openImage in check mode + checkImage; an OpenError is
 *    exit 1) equals `qemu-img check`'s, with the same corruption and leak counts (and check-errors);
 *    when both refuse to open, QEMU printed our OpenError's message;
 * 3. repair of copies, `-r all` and `-r leaks`: our repairImage reports the exit code, corruptions,
 *    leaks and fixed counters qemu-img's repair reports; then `qemu-img check` of our repaired file
 *    and of qemu-img's gives the same exit code and counts (both clean whenever qemu-img's repair
 *    made its copy clean);
 * 4. the guest data the corruption cannot affect (everything outside AppliedCorruption.affected) reads
 *    back unchanged — equal to the oracle — from our repaired image and from qemu-img's (both read with
 *    the model's reader), for the `all` and the `leaks` repairs.
 *
 * Differences from QEMU we keep on purpose are listed in KNOWN_DIFFERENCES with their reason
 * (docs/check-differences.md); a case that meets one is counted, and checked for everything else.
 * There are none: every comparison must hold.
 *
 * Which guest data can change (AppliedCorruption.affected) is the catalog's account: the guest
 * clusters whose mapping entry was poked, and every guest cluster whose data lives in a host cluster
 * a poked pointer now aims at (a repair may rewrite it, e.g. COPIED flags in a "table" that is data).
 */
import { mkdtemp, rm, writeFile, copyFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { CORRUPTIONS, applicableCorruptions, corrupt, type AppliedCorruption, type CorruptionCategory, type CorruptionName } from '../../src/corrupt/catalog.ts';
import { layoutOf, type GuestRange } from '../../src/corrupt/layout.ts';
import { pick, seededRng } from '../../src/corrupt/rng.ts';
import { checkExitCode, checkImage, type CheckResult } from '../../src/check/check.ts';
import { closeImage } from '../../src/model/close.ts';
import type { BackingSource, Image } from '../../src/model/image.ts';
import { loadImage, storeDataFile, storeImage } from '../../src/model/load-store.ts';
import { openImage } from '../../src/open/open.ts';
import { readGuest } from '../../src/model/read.ts';
import { repairImage, type RepairMode } from '../../src/check/repair.ts';
import { step } from '../../src/model/step.ts';
import { writeRawFile, type RawDisk } from '../../src/oracle/raw-disk.ts';
import { checkCounter, qemuImgCheck, toBigInt, type QemuCheckResult } from '../../src/qemu/qemu-img.ts';
import { failureOf, type BatchParams, type BatchResult, type Campaign } from './campaign.ts';
import { backingOracle, configArb, modelStep, runArb, setup, type Cmd, type Config, type ConfigClass } from './model-commands.ts';

// ---------------------------------------------------------------------------------------------
// Cases

/** One case: the valid image's recipe, the corruption asked for, and the seed of its choices. */
export interface InjectionCase {
  readonly cfg: Config;
  readonly cmds: Iterable<Cmd>;
  readonly corruption: CorruptionName;
  readonly choices: number;
}

/** Configuration classes used: every model class; qcow2 backing chains are replaced by no backing (qemu-img check must open the chain, which exists only in memory). */
export const INJECTION_CONFIG_CLASSES: readonly ConfigClass[] = ['small-clusters', 'large-clusters', 'preallocated', 'backing', 'data-file', 'lazy-refcounts'];

/** `configArb(cls)` with qcow2 backing files dropped (raw ones are written next to the image). */
export function injectionConfigArb(cls: ConfigClass): fc.Arbitrary<Config> {
  return configArb(cls).map((c) => {
    if (c.backing?.format !== 'qcow2') return c;
    const { backing: _dropped, ...rest } = c;
    return rest;
  });
}

/**
 * `large-clusters` configurations made version 3 with extended L2 entries (cluster_bits ≥ 14 there),
 * for the corruptions that need subcluster bitmaps.
 */
export function extendedL2ConfigArb(): fc.Arbitrary<Config> {
  return configArb('large-clusters').map((c) => ({ ...c, compat: '1.1' as const, extendedL2: true }));
}

/**
 * Cases with corruptions among `names` (uniformly), each on a configuration of `classes` — on an
 * extended-L2 one when the corruption needs subcluster bitmaps — and a command sequence of at most
 * `maxCommands`.
 */
export function injectionCaseArb(names: readonly CorruptionName[], maxCommands: number, classes: readonly ConfigClass[] = INJECTION_CONFIG_CLASSES): fc.Arbitrary<InjectionCase> {
  return fc.record({ corruption: fc.constantFrom(...names), choices: fc.integer({ min: 0, max: 0x7fffffff }) }).chain(({ corruption, choices }) => {
    const subcluster = CORRUPTIONS.find((k) => k.name === corruption)!.category === 'subcluster';
    const cfgs = subcluster ? extendedL2ConfigArb() : fc.constantFrom(...classes).chain((cls) => injectionConfigArb(cls));
    return runArb(cfgs, { maxCommands, compressed: true }).map(({ cfg, cmds }): InjectionCase => ({ cfg, cmds, corruption, choices }));
  });
}

/** The corruption names of a category (all when undefined). */
export function corruptionNames(category?: CorruptionCategory): CorruptionName[] {
  return CORRUPTIONS.filter((c) => category === undefined || c.category === category).map((c) => c.name);
}

// ---------------------------------------------------------------------------------------------
// Known differences

/** A deliberate, documented difference from qemu-img: when `applies` says so, the named comparison is skipped. */
export interface KnownDifference {
  readonly id: string;
  /** Where it is explained. */
  readonly doc: string;
  /** Which comparison it excuses. */
  readonly comparison: 'check' | 'repair-all' | 'repair-leaks' | 'recheck-all' | 'recheck-leaks';
  readonly applies: (c: AppliedCorruption, ours: Outcome, qemu: Outcome) => boolean;
}

/** None so far. */
export const KNOWN_DIFFERENCES: readonly KnownDifference[] = [];

// ---------------------------------------------------------------------------------------------
// Running one case

/** An exit code with the counters qemu-img prints (absent counters are 0). */
export interface Outcome {
  readonly code: number;
  readonly corruptions: number;
  readonly leaks: number;
  readonly checkErrors: number;
  readonly corruptionsFixed: number;
  readonly leaksFixed: number;
  /** The OpenError message (ours) or stderr (QEMU's), for messages. */
  readonly note: string;
  /** Ours only: the open was refused (an OpenError; `note` is its QEMU message). */
  readonly refusedOpen?: boolean;
}

function fromQemu(r: QemuCheckResult): Outcome {
  const n = (k: Parameters<typeof checkCounter>[1]): number => (r.json === undefined ? 0 : Number(toBigInt(checkCounter(r.json, k))));
  return { code: r.code, corruptions: n('corruptions'), leaks: n('leaks'), checkErrors: n('check-errors'), corruptionsFixed: n('corruptions-fixed'), leaksFixed: n('leaks-fixed'), note: r.stderr.trim() };
}

function fromOurs(r: CheckResult): Outcome {
  // qemu-img prints no JSON when the check function fails: the counters are then QEMU's absent ones.
  if (r.failure !== undefined) return { code: 1, corruptions: 0, leaks: 0, checkErrors: 0, corruptionsFixed: 0, leaksFixed: 0, note: `Check failed: ${r.failure}` };
  return { code: checkExitCode(r), corruptions: r.corruptions, leaks: r.leaks, checkErrors: r.checkErrors, corruptionsFixed: r.corruptionsFixed, leaksFixed: r.leaksFixed, note: r.findings.map((f) => f.message).join(' / ') };
}

function refusedOpen(e: unknown): Outcome {
  if (e instanceof Error && e.name === 'OpenError') {
    return { code: 1, corruptions: 0, leaks: 0, checkErrors: 0, corruptionsFixed: 0, leaksFixed: 0, note: (e as Error & { qemuMessage: string }).qemuMessage, refusedOpen: true };
  }
  throw e;
}

const show = (o: Outcome): string => `exit ${o.code}, corruptions ${o.corruptions}, leaks ${o.leaks}, check-errors ${o.checkErrors}, fixed ${o.corruptionsFixed}/${o.leaksFixed} (${o.note.slice(0, 400)})`;

/** Whether two outcomes agree: the exit code, and the counters whenever qemu-img printed them. */
function agree(ours: Outcome, qemu: Outcome, withFixed: boolean): boolean {
  if (ours.code !== qemu.code) return false;
  if (qemu.code === 1 && qemu.corruptions + qemu.leaks + qemu.checkErrors === 0 && ours.corruptions + ours.leaks + ours.checkErrors === 0) return true;
  if (ours.corruptions !== qemu.corruptions || ours.leaks !== qemu.leaks || ours.checkErrors !== qemu.checkErrors) return false;
  return !withFixed || (ours.corruptionsFixed === qemu.corruptionsFixed && ours.leaksFixed === qemu.leaksFixed);
}

/** What one case met (for statistics). */
export interface InjectionReport {
  readonly applied?: AppliedCorruption;
  readonly check?: { readonly ours: Outcome; readonly qemu: Outcome };
  readonly repaired?: { readonly all: Outcome; readonly leaks: Outcome };
  /** Known differences met, by id. */
  readonly differences: readonly string[];
  /** Guest clusters compared after the repairs. */
  readonly clustersCompared: number;
}

/** Most guest clusters compared per repaired image. */
const MAX_COMPARED_CLUSTERS = 256;

/** Guest cluster offsets worth comparing: every allocated cluster and the touched ranges' edges, minus the affected ranges. */
function intactClusters(original: Uint8Array, touched: readonly { offset: bigint; length: bigint }[], affected: readonly GuestRange[], size: bigint, seed: number): bigint[] {
  const l = layoutOf(original);
  const cs = l.clusterSize;
  const set = new Set<bigint>();
  for (const d of l.activeData) if (d.guestOffset < size) set.add(d.guestOffset);
  for (const t of touched) {
    if (t.length <= 0n) continue;
    set.add((t.offset / cs) * cs);
    set.add(((t.offset + t.length - 1n) / cs) * cs);
  }
  const rng = seededRng(seed);
  const clusters = (size + cs - 1n) / cs;
  for (let k = 0; k < 4 && clusters > 0n; k++) set.add(BigInt(rng.int(Number(clusters < 2n ** 31n ? clusters : 2n ** 31n))) * cs);
  const hit = (c: bigint): boolean => affected.some((a) => c < a.offset + a.length && a.offset < c + cs);
  const all = [...set].filter((c) => c < size && !hit(c)).sort((a, b) => (a < b ? -1 : 1));
  if (all.length <= MAX_COMPARED_CLUSTERS) return all;
  return Array.from({ length: MAX_COMPARED_CLUSTERS }, (_v, i) => all[Math.floor((i * all.length) / MAX_COMPARED_CLUSTERS)]!);
}

/** Where a runner keeps its files. */
export class InjectionWorkspace {
  private constructor(readonly dir: string) {}
  static async create(): Promise<InjectionWorkspace> {
    return new InjectionWorkspace(await mkdtemp(join(tmpdir(), 'qcow2-ref-injection-')));
  }
  path(name: string): string {
    return join(this.dir, name);
  }
  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** A valid image to corrupt, with what is needed to open it and the content it must read as. */
export interface ValidImage {
  readonly bytes: Uint8Array;
  readonly dataFile?: Uint8Array;
  readonly backing?: BackingSource;
  /** The raw backing file to write next to it as `base.raw` (the name the header gives), if any. */
  readonly rawBacking?: RawDisk;
  /** The guest content it must read as (the raw-disk oracle). */
  readonly oracle: (offset: bigint, length: number) => Uint8Array;
  /** Guest ranges written by its history (compared after the repairs besides every allocated cluster). */
  readonly touched: readonly { readonly offset: bigint; readonly length: bigint }[];
}

/**
 * The valid image of a case: the model-commands run with all its checks, closed cleanly — with a
 * snapshot taken when the corruption needs one and the history left none (the guest content does
 * not change; refused on images that cannot have one, e.g. 1-bit refcounts or a data file).
 */
export function makeValidImage(c: InjectionCase): ValidImage {
  const s = setup(c.cfg, modelStep);
  fc.modelRun(() => s, c.cmds);
  let closed = closeImage(s.real.image).image;
  if (CORRUPTIONS.find((k) => k.name === c.corruption)!.category === 'snapshot' && closed.header.nbSnapshots === 0) {
    const r = step(closed, { kind: 'snapshotCreate', name: 'injection' });
    if (r.ok) closed = r.image;
  }
  const dataFile = storeDataFile(closed);
  const disk = s.model.disk;
  return {
    bytes: storeImage(closed),
    ...(dataFile !== undefined ? { dataFile } : {}),
    ...(s.real.backing !== undefined ? { backing: s.real.backing } : {}),
    ...(c.cfg.backing?.format === 'raw' ? { rawBacking: backingOracle(c.cfg.backing) } : {}),
    oracle: (offset, length) => disk.read(offset, length),
    touched: s.real.touched,
  };
}

/**
 * The corruption of a case: the one asked for; when the image lacks what it needs, another of its
 * category, else any applicable one (chosen with the case's seed); undefined when none applies.
 */
export function chooseCorruption(original: Uint8Array, name: CorruptionName, choices: number): AppliedCorruption | undefined {
  const layout = layoutOf(original);
  const first = corrupt(layout, name, seededRng(choices));
  if (first.kind === 'applied') return first;
  const others = applicableCorruptions(layout, () => seededRng(choices));
  const same = others.filter((a) => a.category === first.category);
  const from = same.length > 0 ? same : others;
  return from.length > 0 ? pick(seededRng(choices), from) : undefined;
}

/** Runs one case (see the module comment); throws an Error describing the first disagreement. */
export async function runInjectionCase(c: InjectionCase, ws: InjectionWorkspace): Promise<InjectionReport> {
  const valid = makeValidImage(c);
  const applied = chooseCorruption(valid.bytes, c.corruption, c.choices);
  if (applied === undefined) return { differences: [], clustersCompared: 0 };
  return compareCorruption(valid, applied, ws, c.choices);
}

/**
 * Steps 1-4 of the module comment for `applied`, a corruption of `valid`: throws an Error describing
 * the first disagreement with qemu-img (or the first intact guest cluster that does not read back).
 * `seed` picks the sampled guest clusters.
 */
export async function compareCorruption(valid: ValidImage, applied: AppliedCorruption, ws: InjectionWorkspace, seed: number): Promise<InjectionReport> {
  const original = valid.bytes;
  const dataFile = valid.dataFile;
  const header = layoutOf(original).header;
  const size = header.size;
  const loadOpts = { ...(dataFile !== undefined ? { dataFile } : {}), ...(valid.backing !== undefined ? { backing: valid.backing } : {}) };

  // Files: the image, its data file and raw backing file under the names the header gives.
  const image = ws.path('image.qcow2');
  if (dataFile !== undefined) await writeFile(ws.path('data.raw'), dataFile);
  if (valid.rawBacking !== undefined) writeRawFile(valid.rawBacking, ws.path('base.raw'));
  await writeFile(image, original);
  // Valid: no corruption for qemu-img (leaks are possible: QEMU leaves them too, e.g. after a
  // snapshot that failed on a refcount overflow — model-commands.ts closeChecks).
  const pre = await qemuImgCheck(image, { cwd: ws.dir });
  if (pre.code !== 0 && pre.code !== 3) {
    // QEMU itself can leave a corruption in a "valid" sequence: a snapshot create that fails on a
    // refcount overflow (2-bit refcounts, a compressed host cluster shared by several blobs) has
    // already updated some refcounts (qemu-img snapshot -c: "-22"), and the model commits the same
    // partial state (ModelError.committed). Such a base image is not a valid starting point for an
    // injection; our check must still agree with qemu-img's on it, then the case is not injected.
    const ours = fromOurs(checkImage(openImage(original, { ...loadOpts, checkMode: true })));
    if (!agree(ours, fromQemu(pre), false)) {
      throw new Error(`the base image (already corrupt after QEMU's own failure) is judged differently\n  ours: ${show(ours)}\n  qemu: ${show(fromQemu(pre))}`);
    }
    return { differences: [], clustersCompared: 0 };
  }
  await writeFile(image, applied.bytes);
  const what = `${applied.name}: ${applied.description}`;
  const differences: string[] = [];
  const compare = (kind: KnownDifference['comparison'], ours: Outcome, qemu: Outcome, withFixed: boolean): void => {
    if (agree(ours, qemu, withFixed)) return;
    const known = KNOWN_DIFFERENCES.find((d) => d.comparison === kind && d.applies(applied!, ours, qemu));
    if (known !== undefined) {
      differences.push(known.id);
      return;
    }
    throw new Error(`${kind} after ${what}\n  ours: ${show(ours)}\n  qemu: ${show(qemu)}`);
  };

  // 2. check.
  let ours: Outcome;
  try {
    ours = fromOurs(checkImage(openImage(applied.bytes, { ...loadOpts, checkMode: true })));
  } catch (e) {
    ours = refusedOpen(e);
  }
  const qemu = fromQemu(await qemuImgCheck(image, { cwd: ws.dir }));
  compare('check', ours, qemu, false);
  if (ours.refusedOpen === true && !qemu.note.includes(`: ${ours.note}`)) {
    throw new Error(`check after ${what}: we refuse to open with '${ours.note}', qemu-img said: ${qemu.note}`);
  }

  // 3 and 4. repairs on copies, both ways.
  const cs = BigInt(header.clusterSize);
  const intact = intactClusters(original, valid.touched, applied.affected, size, seed);
  let compared = 0;
  const repaired: Partial<Record<RepairMode, Outcome>> = {};
  for (const mode of ['all', 'leaks'] as const) {
    let ourRepaired: Uint8Array | undefined;
    let oursR: Outcome;
    try {
      const r = repairImage(openImage(applied.bytes, { ...loadOpts, checkMode: true, writable: true }), mode);
      oursR = fromOurs(r.result);
      ourRepaired = storeImage(r.image);
    } catch (e) {
      oursR = refusedOpen(e);
    }
    const qemuCopy = ws.path(`qemu-${mode}.qcow2`);
    await copyFile(image, qemuCopy);
    const qemuR = fromQemu(await qemuImgCheck(qemuCopy, { repair: mode, cwd: ws.dir }));
    compare(mode === 'all' ? 'repair-all' : 'repair-leaks', oursR, qemuR, true);
    repaired[mode] = oursR;
    const qemuRepaired = new Uint8Array(await readFile(qemuCopy));
    if (ourRepaired === undefined) continue;
    // Both results through qemu-img check.
    const oursCopy = ws.path(`ours-${mode}.qcow2`);
    await writeFile(oursCopy, ourRepaired);
    const recheckOurs = fromQemu(await qemuImgCheck(oursCopy, { cwd: ws.dir }));
    const recheckQemu = fromQemu(await qemuImgCheck(qemuCopy, { cwd: ws.dir }));
    compare(mode === 'all' ? 'recheck-all' : 'recheck-leaks', recheckOurs, recheckQemu, false);
    if (qemuR.code === 0 && recheckOurs.code !== 0) throw new Error(`${mode} repair after ${what}: qemu-img's repair is clean, ours is not for qemu-img check: ${show(recheckOurs)}`);
    // The intact guest data.
    const readers: [string, Image][] = [['the valid', loadImage(original, loadOpts)], ['ours', loadImage(ourRepaired, loadOpts)], ['qemu-img', loadImage(qemuRepaired, loadOpts)]];
    for (const at of intact) {
      const n = Number(size - at < cs ? size - at : cs);
      const want = valid.oracle(at, n);
      for (const [who, img] of readers) {
        let got: Uint8Array;
        try {
          got = readGuest(img, at, n);
        } catch (e) {
          throw new Error(`${mode} repair after ${what}: ${who} image cannot read intact guest cluster 0x${at.toString(16)}: ${(e as Error).message}`);
        }
        if (!Buffer.from(got).equals(Buffer.from(want))) throw new Error(`${mode} repair after ${what}: ${who} image reads intact guest cluster 0x${at.toString(16)} differently from the oracle`);
      }
      compared++;
    }
  }
  return { applied, check: { ours, qemu }, repaired: { all: repaired.all!, leaks: repaired.leaks! }, differences, clustersCompared: compared };
}

// ---------------------------------------------------------------------------------------------
// Statistics and the campaign

/** What a series of cases met. */
export class InjectionStats {
  cases = 0;
  notApplicable = 0;
  readonly byName = new Map<string, number>();
  readonly byCategory = new Map<string, number>();
  /** QEMU's check exit codes on the corrupted images. */
  readonly checkCodes = new Map<number, number>();
  readonly differences = new Map<string, number>();
  repairedClean = 0;
  clustersCompared = 0;

  add(r: InjectionReport): void {
    this.cases++;
    if (r.applied === undefined) {
      this.notApplicable++;
      return;
    }
    this.byName.set(r.applied.name, (this.byName.get(r.applied.name) ?? 0) + 1);
    this.byCategory.set(r.applied.category, (this.byCategory.get(r.applied.category) ?? 0) + 1);
    if (r.check !== undefined) this.checkCodes.set(r.check.qemu.code, (this.checkCodes.get(r.check.qemu.code) ?? 0) + 1);
    if (r.repaired?.all.code === 0) this.repairedClean++;
    for (const d of r.differences) this.differences.set(d, (this.differences.get(d) ?? 0) + 1);
    this.clustersCompared += r.clustersCompared;
  }

  summary(): string {
    const m = (x: Map<string | number, number>): string => [...x].map(([k, n]) => `${k} ${n}`).join(', ');
    return [
      `corruption-injection: ${this.cases} cases (${this.notApplicable} without an applicable corruption), ${this.repairedClean} clean after -r all, ${this.clustersCompared} intact clusters compared`,
      `  by corruption: ${m(this.byName)}`,
      `  by category: ${m(this.byCategory)}`,
      `  qemu-img check exit codes: ${m(this.checkCodes)}`,
      `  known differences met: ${this.differences.size === 0 ? '(none)' : m(this.differences)}`,
    ].join('\n');
  }
}

/** The property over `arb`, recording into `stats`. */
export function injectionProperty(ws: InjectionWorkspace, arb: fc.Arbitrary<InjectionCase>, stats: InjectionStats): fc.IAsyncPropertyWithHooks<[InjectionCase]> {
  return fc.asyncProperty(arb, async (c) => {
    stats.add(await runInjectionCase(c, ws));
  });
}

/** Commands per model sequence in injection cases (the image only needs some history). */
export const INJECTION_MAX_COMMANDS = 12;

/**
 * The corruption-injection campaign for `npm run fuzz`: one class per corruption category, plus
 * 'mixed'. Needs qemu-img. `summary()` gives what the cases met; `close()` removes the workspace.
 */
export function injectionCampaign(): Campaign & { summary(): string; close(): Promise<void> } {
  const stats = new InjectionStats();
  let ws: InjectionWorkspace | undefined;
  const classes: { name: string; title: string }[] = [...new Set(CORRUPTIONS.map((c) => c.category))].map((cat) => ({ name: cat as string, title: `corruption injection: ${corruptionNames(cat).join(', ')}` }));
  classes.push({ name: 'mixed', title: 'corruption injection: any corruption of the catalog' });
  return {
    name: 'corruption-injection',
    classes,
    async runBatch(cls: string, { seed, numRuns, maxCommands }: BatchParams): Promise<BatchResult> {
      ws ??= await InjectionWorkspace.create();
      const names = cls === 'mixed' ? corruptionNames() : corruptionNames(cls as CorruptionCategory);
      if (names.length === 0) throw new Error(`corruption-injection: no class ${cls}`);
      const max = maxCommands ?? INJECTION_MAX_COMMANDS;
      const before = stats.cases;
      const d = await fc.check(injectionProperty(ws, injectionCaseArb(names, max), stats), { seed, numRuns });
      const ops = stats.cases - before;
      const failure = failureOf(d, 'corruption-injection', cls, (path) =>
        `fc.assert(injectionProperty(ws, injectionCaseArb(${JSON.stringify(names)}, ${max}), stats), { seed: ${d.seed}, path: '${path}', endOnFailure: true })`);
      return { sequences: d.numRuns, ops, ...(failure !== undefined ? { failure } : {}) };
    },
    summary: () => stats.summary(),
    close: async () => {
      await ws?.remove();
    },
  };
}
