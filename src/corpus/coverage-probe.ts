/**
 * The child process of `qcow2-ref corpus --minimize`: runs our parser and checker over each case of a
 * list and takes one V8 coverage snapshot per case.
 *
 * Usage (started by minimize.ts with NODE_V8_COVERAGE=COVDIR and tsx loaded):
 *   node --import tsx coverage-probe.ts LIST.json
 * LIST.json is an array of { image, dataFile? } absolute paths. For case i the probe decodes every
 * structure (walkImage), opens the image as QEMU does (openImage), checks it (checkImage) and reads
 * the start of the guest disk (readGuest), catching the typed errors our code promises for bad input
 * (invalid cases are expected to fail somewhere; any other error is a bug and ends the probe); then `v8.takeCoverage()` writes the coverage since the previous snapshot into COVDIR
 * and resets the counters, and the probe renames that file to `case-<i>.json`. A first snapshot
 * before the first case takes the module loading out of case 0's coverage.
 */
import { readdirSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { takeCoverage } from 'node:v8';
import { isQcow2FormatError } from '../codec/index.ts';
import { walkImage } from '../format/index.ts';
import { checkImage } from '../check/index.ts';
import { ModelError } from '../model/index.ts';
import { HostReaderError } from '../model/index.ts';
import { isOpenError, openImage } from '../open/index.ts';
import { readGuest } from '../model/index.ts';
import type { ProbeInput } from './minimize.ts';

/** Guest bytes read per case (enough to touch the first L2 tables without reading a huge disk). */
const READ_BYTES = 4 << 20;

/**
 * Whether `e` is one of the typed errors our code promises for bad input. Anything else is a bug:
 * it is rethrown, the probe dies and --minimize reports the case.
 */
function typed(e: unknown): boolean {
  return isQcow2FormatError(e) || isOpenError(e) || e instanceof ModelError || e instanceof HostReaderError;
}

/** Runs `fn`; a typed error is the expected outcome for an invalid case (its error path is covered). */
function attempt(fn: () => void): void {
  try {
    fn();
  } catch (e) {
    if (!typed(e)) throw e;
  }
}

/** Runs the parser and checker over one case. */
function exercise(input: ProbeInput): void {
  const bytes = readFileSync(input.image);
  const dataFile = input.dataFile !== undefined ? readFileSync(input.dataFile) : undefined;
  attempt(() => void walkImage(bytes));
  attempt(() => {
    const image = openImage(bytes, dataFile !== undefined ? { dataFile } : {});
    attempt(() => void checkImage(image));
    const n = image.header.size < BigInt(READ_BYTES) ? Number(image.header.size & ~511n) : READ_BYTES;
    attempt(() => void readGuest(image, 0n, n));
  });
}

/** Takes a coverage snapshot and returns the file name V8 wrote (the one not seen before). */
function snapshot(dir: string, seen: Set<string>): string {
  takeCoverage();
  const fresh = readdirSync(dir).filter((f) => f.startsWith('coverage-') && !seen.has(f));
  if (fresh.length !== 1) throw new Error(`coverage probe: expected one new coverage file in ${dir}, found ${fresh.length}`);
  seen.add(fresh[0]!);
  return fresh[0]!;
}

function main(): void {
  const dir = process.env['NODE_V8_COVERAGE'];
  const listPath = process.argv[2];
  if (dir === undefined || listPath === undefined) {
    process.stderr.write('usage: NODE_V8_COVERAGE=DIR node --import tsx coverage-probe.ts LIST.json\n');
    process.exitCode = 2;
    return;
  }
  const list = JSON.parse(readFileSync(listPath, 'utf8')) as ProbeInput[];
  const seen = new Set(readdirSync(dir));
  snapshot(dir, seen); // module loading, discarded by the parent
  for (let i = 0; i < list.length; i++) {
    exercise(list[i]!);
    renameSync(join(dir, snapshot(dir, seen)), join(dir, `case-${i}.json`));
  }
}

main();
