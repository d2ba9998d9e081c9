/**
 * The corpus manifest: one `CorpusCase` per line in `DIR/manifest.jsonl` (JSON Lines). All paths are
 * relative to DIR; 64-bit values (virtual sizes) are decimal strings. This is the contract between
 * `qcow2-ref corpus` (which writes it) and `qcow2-ref conform` (which reads it).
 *
 * Names inside the images (backing file, external data file) are relative to the image's directory;
 * a tool must run with that directory as its working directory, because QEMU 7.2 opens a relative
 * data file name relative to its working directory (docs/format/features.md#external-data-file). The files QEMU would open are
 * listed in `files` (with their DIR-relative paths), so copying them keeps the names resolving.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { match } from 'ts-pattern';

/** Name of the manifest file inside a corpus directory. */
export const MANIFEST_FILE = 'manifest.jsonl';

/** What `qemu-img check` reports: its exit code and the corruption/leak counts. */
export interface CheckExpectation<Exit extends number> {
  readonly exitCode: Exit;
  readonly corruptions: number;
  readonly leaks: number;
}

/** The expected outcome of a case. */
export type CaseExpectation =
  | { readonly kind: 'content'; readonly guestSha256: string; readonly check: CheckExpectation<0 | 2 | 3> }
  | { readonly kind: 'reject-open'; readonly errorClass: string; readonly qemuMessage: string }
  | { readonly kind: 'reject-check'; readonly errorClass: string; readonly check: CheckExpectation<1 | 2 | 3> };

/** One case of a corpus (one line of manifest.jsonl). */
export interface CorpusCase {
  /** Unique and stable for a seed; filename-safe (letters, digits, '-', '_', '.'). */
  readonly id: string;
  /** e.g. "extended-l2", "zstd", "backing-raw", "invalid/l1-too-large". */
  readonly family: string;
  readonly valid: boolean;
  readonly features: readonly string[];
  /** qemu-img create -o style options used. */
  readonly options: Readonly<Record<string, string>>;
  readonly files: { readonly image: string; readonly backing?: readonly string[]; readonly dataFile?: string };
  /** Decimal string. */
  readonly virtualSize?: string;
  readonly expect: CaseExpectation;
  /** Set by --verify when QEMU disagrees and the case is kept as a recorded difference. */
  readonly qemuDifference?: string;
  /** The op script (qcow2-ref run format, docs/op-script.md) that produced a valid image, when one did. */
  readonly script?: string;
}

/** A manifest line that does not hold a well-formed CorpusCase. */
export class ManifestError extends Error {
  constructor(
    readonly line: number,
    message: string,
  ) {
    super(`manifest line ${line}: ${message}`);
    this.name = 'ManifestError';
  }
}

const ID_PATTERN = /^[A-Za-z0-9._-]+$/;

/**
 * Serializes cases as JSON Lines: one object per line, keys in a fixed order, '\n' after every line.
 * Equal inputs give byte-identical text.
 */
export function formatManifest(cases: readonly CorpusCase[]): string {
  return cases.map((c) => JSON.stringify(canonicalCase(c)) + '\n').join('');
}

/**
 * Parses manifest.jsonl text. Empty lines are ignored. Throws ManifestError (with the 1-based line
 * number) for a line that is not JSON or does not have the CorpusCase shape, and for a duplicate id.
 */
export function parseManifest(text: string): CorpusCase[] {
  const cases: CorpusCase[] = [];
  const ids = new Set<string>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      throw new ManifestError(i + 1, `not JSON (${(e as Error).message})`);
    }
    const c = validateCase(value, i + 1);
    if (ids.has(c.id)) throw new ManifestError(i + 1, `duplicate id '${c.id}'`);
    ids.add(c.id);
    cases.push(c);
  }
  return cases;
}

/** Reads and parses DIR/manifest.jsonl (see parseManifest). */
export function readManifest(dir: string): CorpusCase[] {
  return parseManifest(readFileSync(join(dir, MANIFEST_FILE), 'utf8'));
}

/** Writes DIR/manifest.jsonl (see formatManifest), replacing any previous one. */
export function writeManifest(dir: string, cases: readonly CorpusCase[]): void {
  writeFileSync(join(dir, MANIFEST_FILE), formatManifest(cases));
}

/** The case with its keys in the contract's order (so the JSON text does not depend on how it was built). */
function canonicalCase(c: CorpusCase): CorpusCase {
  const files = {
    image: c.files.image,
    ...(c.files.backing !== undefined ? { backing: [...c.files.backing] } : {}),
    ...(c.files.dataFile !== undefined ? { dataFile: c.files.dataFile } : {}),
  };
  const expect = match<CaseExpectation, CaseExpectation>(c.expect)
    .with({ kind: 'content' }, (e) => ({ kind: 'content', guestSha256: e.guestSha256, check: canonicalCheck(e.check) }))
    .with({ kind: 'reject-open' }, (e) => ({ kind: 'reject-open', errorClass: e.errorClass, qemuMessage: e.qemuMessage }))
    .with({ kind: 'reject-check' }, (e) => ({ kind: 'reject-check', errorClass: e.errorClass, check: canonicalCheck(e.check) }))
    .exhaustive();
  const options: Record<string, string> = {};
  for (const k of Object.keys(c.options).sort()) options[k] = c.options[k]!;
  return {
    id: c.id,
    family: c.family,
    valid: c.valid,
    features: [...c.features],
    options,
    files,
    ...(c.virtualSize !== undefined ? { virtualSize: c.virtualSize } : {}),
    expect,
    ...(c.qemuDifference !== undefined ? { qemuDifference: c.qemuDifference } : {}),
    ...(c.script !== undefined ? { script: c.script } : {}),
  };
}

function canonicalCheck<E extends number>(c: CheckExpectation<E>): CheckExpectation<E> {
  return { exitCode: c.exitCode, corruptions: c.corruptions, leaks: c.leaks };
}

function validateCase(v: unknown, line: number): CorpusCase {
  const fail = (msg: string): never => {
    throw new ManifestError(line, msg);
  };
  const obj = (x: unknown, what: string): Record<string, unknown> =>
    typeof x === 'object' && x !== null && !Array.isArray(x) ? (x as Record<string, unknown>) : fail(`${what} is not an object`);
  const str = (x: unknown, what: string): string => (typeof x === 'string' ? x : fail(`${what} is not a string`));
  const count = (x: unknown, what: string): number =>
    typeof x === 'number' && Number.isSafeInteger(x) && x >= 0 ? x : fail(`${what} is not a non-negative integer`);
  const relPath = (x: unknown, what: string): string => {
    const p = str(x, what);
    // Paths are relative to the corpus directory and stay inside it.
    if (p === '' || p.startsWith('/') || p.split('/').some((s) => s === '..' || s === '')) fail(`${what} '${p}' is not a relative path inside the corpus`);
    return p;
  };

  const o = obj(v, 'case');
  const id = str(o.id, 'id');
  if (!ID_PATTERN.test(id)) fail(`id '${id}' is not filename-safe`);
  const family = str(o.family, 'family');
  if (typeof o.valid !== 'boolean') fail('valid is not a boolean');
  const features = Array.isArray(o.features) ? o.features.map((f, i) => str(f, `features[${i}]`)) : fail('features is not an array');
  const optionsObj = obj(o.options, 'options');
  const options: Record<string, string> = {};
  for (const [k, val] of Object.entries(optionsObj)) options[k] = str(val, `options.${k}`);
  const f = obj(o.files, 'files');
  const files = {
    image: relPath(f.image, 'files.image'),
    ...(f.backing !== undefined
      ? { backing: Array.isArray(f.backing) ? f.backing.map((b, i) => relPath(b, `files.backing[${i}]`)) : fail('files.backing is not an array') }
      : {}),
    ...(f.dataFile !== undefined ? { dataFile: relPath(f.dataFile, 'files.dataFile') } : {}),
  };
  if (o.virtualSize !== undefined && !/^(0|[1-9][0-9]*)$/.test(str(o.virtualSize, 'virtualSize'))) fail('virtualSize is not a decimal string');
  const e = obj(o.expect, 'expect');
  const check = (x: unknown, allowed: readonly number[]): CheckExpectation<never> => {
    const c = obj(x, 'expect.check');
    const exitCode = count(c.exitCode, 'expect.check.exitCode');
    if (!allowed.includes(exitCode)) fail(`expect.check.exitCode ${exitCode} is not one of ${allowed.join(', ')}`);
    return { exitCode: exitCode as never, corruptions: count(c.corruptions, 'expect.check.corruptions'), leaks: count(c.leaks, 'expect.check.leaks') };
  };
  let expect: CaseExpectation;
  switch (e.kind) {
    case 'content': {
      const guestSha256 = str(e.guestSha256, 'expect.guestSha256');
      if (!/^[0-9a-f]{64}$/.test(guestSha256)) fail('expect.guestSha256 is not a lowercase hex SHA-256');
      expect = { kind: 'content', guestSha256, check: check(e.check, [0, 2, 3]) };
      break;
    }
    case 'reject-open':
      expect = { kind: 'reject-open', errorClass: str(e.errorClass, 'expect.errorClass'), qemuMessage: str(e.qemuMessage, 'expect.qemuMessage') };
      break;
    case 'reject-check':
      expect = { kind: 'reject-check', errorClass: str(e.errorClass, 'expect.errorClass'), check: check(e.check, [1, 2, 3]) };
      break;
    default:
      return fail(`expect.kind '${String(e.kind)}' is not content, reject-open or reject-check`);
  }
  return {
    id,
    family,
    valid: o.valid as boolean,
    features,
    options,
    files,
    ...(o.virtualSize !== undefined ? { virtualSize: o.virtualSize as string } : {}),
    expect,
    ...(o.qemuDifference !== undefined ? { qemuDifference: str(o.qemuDifference, 'qemuDifference') } : {}),
    ...(o.script !== undefined ? { script: str(o.script, 'script') } : {}),
  };
}
