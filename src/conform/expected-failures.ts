/**
 * Expected-failures files, as in protobuf's conformance suite: the list of tests an implementation is
 * known to fail. A known failure is reported but does not fail the run; a failure not on the list
 * does, and so does a list entry that no longer fails (the implementation was fixed: take the entry
 * out, so the list never hides a regression behind a stale line).
 *
 * Format (conform/expected-failures/<impl>.txt), one entry per line:
 *
 *     # comment lines and blank lines are ignored
 *     valid-zstd-0003                  a case id
 *     backing-raw                      a family: every case of it
 *     invalid/*                        a glob (`*` any run of characters, `/` included; `?` one character)
 *     writer:valid-zstd-0003           only the writer tests of that case (or `reader:`)
 *     extended-l2   # text after ` #` is a comment (the reason, by convention)
 *
 * A pattern matches a test when it matches (as a whole) the case id or the case family. An entry is
 * stale — reported as an unexpected pass — when it matched at least one test that ran and none of
 * those tests failed. An entry that matched no test at all (e.g. a case filtered out with --only) is
 * only reported as unused.
 */

/** The two kinds of tests the harness runs. */
export type TestRole = 'reader' | 'writer';

/** One line of an expected-failures file. */
export interface ExpectedFailure {
  /** The pattern as written (without the role prefix). */
  readonly pattern: string;
  /** The role it is restricted to, if a `reader:`/`writer:` prefix was given. */
  readonly role?: TestRole;
  /** 1-based line number in the file. */
  readonly line: number;
  /** The text after ` #`, trimmed ('' when none). */
  readonly reason: string;
  readonly regex: RegExp;
}

/** A line that is not a valid entry. */
export class ExpectedFailuresError extends Error {
  override readonly name = 'ExpectedFailuresError';
}

/** The whole-string regular expression of a glob: `*` any characters, `?` one, everything else literal. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (const c of glob) {
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else re += c.replace(/[\\^$.|+()[\]{}]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 's');
}

/**
 * The entries of an expected-failures file's text (`source` names it in errors). Throws an
 * ExpectedFailuresError naming the line for an entry with whitespace inside the pattern, an empty
 * pattern after a role prefix, or the same entry twice.
 */
export function parseExpectedFailures(text: string, source: string): ExpectedFailure[] {
  const entries: ExpectedFailure[] = [];
  const lines = text.split(/\r?\n/);
  for (let n = 0; n < lines.length; n++) {
    let line = lines[n]!;
    let reason = '';
    const hash = line.search(/(^|\s)#/);
    if (hash >= 0) {
      reason = line.slice(line.indexOf('#', hash) + 1).trim();
      line = line.slice(0, hash);
    }
    line = line.trim();
    if (line === '') continue;
    const where = `${source}:${n + 1}`;
    if (/\s/.test(line)) throw new ExpectedFailuresError(`${where}: expected one case id or family pattern per line, got ${JSON.stringify(line)}`);
    let role: TestRole | undefined;
    let pattern = line;
    const prefix = /^(reader|writer):/.exec(line);
    if (prefix !== null) {
      role = prefix[1] as TestRole;
      pattern = line.slice(prefix[0].length);
    }
    if (pattern === '') throw new ExpectedFailuresError(`${where}: nothing after '${role}:'`);
    const dup = entries.find((e) => e.pattern === pattern && e.role === role);
    if (dup !== undefined) throw new ExpectedFailuresError(`${where}: ${JSON.stringify(line)} is already listed on line ${dup.line}`);
    entries.push({ pattern, ...(role !== undefined ? { role } : {}), line: n + 1, reason, regex: globToRegExp(pattern) });
  }
  return entries;
}

/** What the harness knows about a test when matching it against the list. */
export interface TestKey {
  readonly role: TestRole;
  readonly caseId: string;
  readonly family: string;
}

/** Whether `entry` covers the test `key`. */
export function entryMatches(entry: ExpectedFailure, key: TestKey): boolean {
  if (entry.role !== undefined && entry.role !== key.role) return false;
  return entry.regex.test(key.caseId) || entry.regex.test(key.family);
}

/** The first entry covering `key`, if any. */
export function findExpectedFailure(entries: readonly ExpectedFailure[], key: TestKey): ExpectedFailure | undefined {
  return entries.find((e) => entryMatches(e, key));
}

/** How one entry fared in a run. */
export interface EntryUsage {
  readonly entry: ExpectedFailure;
  /** Tests it matched that ran (passed or failed; skipped tests are not counted). */
  readonly matched: number;
  /** Of those, how many failed. */
  readonly failed: number;
  /** matched > 0 and failed === 0: the entry no longer describes a failure. */
  readonly stale: boolean;
}

/**
 * For each entry, how many of the tests that ran it covers and how many of those failed; `stale`
 * marks the entries that cover only passing tests (an unexpected pass). Every matching entry is
 * credited, not only the first, so two overlapping entries are each judged on their own.
 */
export function entryUsage(
  entries: readonly ExpectedFailure[],
  results: readonly (TestKey & { readonly status: 'pass' | 'fail' | 'skip' })[],
): EntryUsage[] {
  return entries.map((entry) => {
    let matched = 0;
    let failed = 0;
    for (const r of results) {
      if (r.status === 'skip' || !entryMatches(entry, r)) continue;
      matched++;
      if (r.status === 'fail') failed++;
    }
    return { entry, matched, failed, stale: matched > 0 && failed === 0 };
  });
}
