/**
 * Corpus generation: which families, how many cases each, each case from its own random stream
 * (seed, generator version, family, index), in a fixed order — so the same parameters always give
 * byte-identical cases — and writing them out (case directories plus manifest.jsonl, or a flat
 * directory of seed files named by content hash for libFuzzer/AFL).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { caseId, type Family, type GeneratedCase, type SharedFile } from './family.ts';
import { INVALID_FAMILIES } from './invalid-families.ts';
import { MANIFEST_FILE, readManifest, writeManifest, type CorpusCase } from './manifest.ts';
import { Prng } from './prng.ts';
import { VALID_FAMILIES } from './valid-families.ts';

/**
 * The generator's version: part of every case's random stream and of corpus.json. Bump it whenever a
 * change makes the same seed produce different bytes (a regenerated corpus must then be checked in).
 */
export const CORPUS_GENERATOR_VERSION = 1;

/** Name of the file describing how a corpus directory was generated. */
export const PARAMS_FILE = 'corpus.json';

/** Every family, valid ones first, each in its fixed order. */
export const ALL_FAMILIES: readonly Family[] = [...VALID_FAMILIES, ...INVALID_FAMILIES];

/** What to generate. */
export interface CorpusParams {
  /** The seed (any string; decimal numbers are the usual choice). */
  readonly seed: string;
  /** Cases per family. */
  readonly count: number;
  /** Family names, in ALL_FAMILIES order (default: all). */
  readonly families?: readonly string[];
  /** Largest total size of one case's files; bigger cases are skipped. */
  readonly maxSize?: number;
}

/** A case that was not generated, and why. */
export interface SkippedCase {
  readonly id: string;
  readonly family: string;
  readonly reason: string;
}

/** The generated corpus, in memory. */
export interface GeneratedCorpus {
  readonly cases: readonly GeneratedCase[];
  /** Corpus-level files the cases refer to, de-duplicated by path. */
  readonly shared: readonly SharedFile[];
  readonly skipped: readonly SkippedCase[];
}

/** Attempts (with fresh streams) at a case that came out larger than `maxSize`. */
export const SIZE_ATTEMPTS = 3;

/**
 * Resolves family selectors: exact names, `valid`, `invalid`, or a prefix ending in `*`
 * (e.g. `invalid/*`, `cluster-*`). Returns the names in ALL_FAMILIES order; throws RangeError naming
 * a selector that matches nothing.
 */
export function selectFamilies(selectors: readonly string[] | undefined): Family[] {
  if (selectors === undefined || selectors.length === 0) return [...ALL_FAMILIES];
  const chosen = new Set<string>();
  for (const s of selectors) {
    const matches = ALL_FAMILIES.filter((f) =>
      s === 'valid' ? f.valid
        : s === 'invalid' ? !f.valid
          : s.endsWith('*') ? f.name.startsWith(s.slice(0, -1))
            : f.name === s);
    if (matches.length === 0) throw new RangeError(`no family '${s}' (qcow2-ref corpus --list-families lists them)`);
    for (const f of matches) chosen.add(f.name);
  }
  return ALL_FAMILIES.filter((f) => chosen.has(f.name));
}

/** The random stream of case `index` of `family` under `seed` (attempt > 0: the retries for --max-size). */
export function caseStream(seed: string, family: string, index: number, attempt = 0): Prng {
  return new Prng(`qcow2-ref corpus v${CORPUS_GENERATOR_VERSION}\0${seed}\0${family}\0${index}${attempt > 0 ? `\0retry ${attempt}` : ''}`);
}

/** Total bytes of a case's files. */
export function caseBytes(c: GeneratedCase): number {
  return c.files.reduce((n, f) => n + f.bytes.length, 0);
}

/**
 * Generates the corpus `params` describe, calling `onCase` after each case (for progress). Pure
 * apart from the callback: the result depends only on `params` and the generator version. A family
 * that fails (the model contradicts its intent) throws, naming the case.
 */
export function generateCorpus(params: CorpusParams, onCase?: (done: number, total: number) => void): GeneratedCorpus {
  const families = selectFamilies(params.families);
  const total = families.length * params.count;
  const cases: GeneratedCase[] = [];
  const shared = new Map<string, SharedFile>();
  const skipped: SkippedCase[] = [];
  let done = 0;
  for (const family of families) {
    for (let index = 0; index < params.count; index++) {
      const id = caseId(family.name, index);
      let made: GeneratedCase | undefined;
      let size = family.minBytes ?? 0;
      const attempts = params.maxSize === undefined ? 1 : size > params.maxSize ? 0 : SIZE_ATTEMPTS;
      for (let attempt = 0; attempt < attempts; attempt++) {
        let out;
        try {
          out = family.generate({ prng: caseStream(params.seed, family.name, index, attempt), id });
        } catch (e) {
          throw new Error(`corpus: case ${id} (seed ${params.seed}): ${(e as Error).message}`, { cause: e });
        }
        size = caseBytes(out);
        if (params.maxSize === undefined || size <= params.maxSize) {
          made = { entry: out.entry, files: out.files };
          for (const s of out.shared ?? []) shared.set(s.path, s);
          break;
        }
      }
      if (made !== undefined) cases.push(made);
      else skipped.push({ id, family: family.name, reason: `larger than --max-size ${params.maxSize} (${attempts === 0 ? 'at least ' : ''}${size} bytes)` });
      onCase?.(++done, total);
    }
  }
  return { cases, shared: [...shared.values()].sort((a, b) => (a.path < b.path ? -1 : 1)), skipped };
}

/** What corpus.json records. */
export interface CorpusParamsFile {
  readonly generator: 'qcow2-ref corpus';
  readonly version: number;
  readonly seed: string;
  readonly count: number;
  /** The selectors given, or null for all families. */
  readonly families: readonly string[] | null;
  readonly maxSize: number | null;
  readonly minimized: boolean;
  readonly cases: number;
}

/**
 * Throws unless `dir` can receive a corpus: it does not exist, is empty, or holds a corpus made
 * before (a manifest.jsonl). Nothing is changed. Lets the command fail before generating anything.
 */
export function checkCorpusDir(dir: string): void {
  if (!existsSync(dir)) return;
  const entries = readdirSync(dir);
  if (entries.length > 0 && !entries.includes(MANIFEST_FILE)) {
    throw new Error(`${dir} is not empty and holds no ${MANIFEST_FILE}: refusing to write a corpus into it`);
  }
}

/**
 * Makes `dir` ready to receive a corpus (see checkCorpusDir, which it applies first): creates it, or
 * removes what a previous corpus left there (the case directories its manifest lists, the manifest,
 * corpus.json, the shared files); files that are not part of a corpus (a README) stay.
 */
export function prepareCorpusDir(dir: string, sharedNames: readonly string[]): void {
  checkCorpusDir(dir);
  if (!existsSync(dir)) {
    mkdirSync(dir, { recursive: true });
    return;
  }
  if (!readdirSync(dir).includes(MANIFEST_FILE)) return;
  for (const c of readManifest(dir)) rmSync(join(dir, c.id), { recursive: true, force: true });
  for (const name of [MANIFEST_FILE, PARAMS_FILE, ...sharedNames]) rmSync(join(dir, name), { force: true });
}

/** Writes the cases' files and the shared files under `dir` (paths are relative to it). */
export function writeCaseFiles(dir: string, cases: readonly GeneratedCase[], shared: readonly SharedFile[]): void {
  for (const f of [...shared, ...cases.flatMap((c) => c.files)]) {
    const path = join(dir, f.path);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, f.bytes);
  }
}

/** Writes manifest.jsonl and corpus.json for `cases` in `dir`. */
export function writeCorpusIndex(dir: string, cases: readonly CorpusCase[], params: CorpusParamsFile): void {
  writeManifest(dir, cases);
  writeFileSync(join(dir, PARAMS_FILE), JSON.stringify(params, null, 2) + '\n');
}

/** Lowercase hex SHA-256 of `bytes`. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** One file of a flat corpus: its name (content hash) and the case it came from. */
export interface FlatFile {
  readonly name: string;
  readonly caseId: string;
  readonly path: string;
}

/**
 * Writes the qcow2 files of `cases` (images and qcow2 backing files) into `dir` as a flat seed
 * corpus: one file per distinct content, named by its SHA-256, nothing else (libFuzzer and AFL take
 * every file in the directory as an input). Returns what was written, sorted by name.
 */
export function writeFlatCorpus(dir: string, cases: readonly GeneratedCase[]): FlatFile[] {
  mkdirSync(dir, { recursive: true });
  const out = new Map<string, FlatFile>();
  for (const c of cases) {
    for (const f of c.files) {
      if (!f.path.endsWith('.qcow2')) continue;
      const name = sha256Hex(f.bytes);
      if (out.has(name)) continue;
      writeFileSync(join(dir, name), f.bytes);
      out.set(name, { name, caseId: c.entry.id, path: f.path });
    }
  }
  return [...out.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
}
