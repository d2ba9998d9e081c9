/**
 * The conformance report as text: a table of families × pass/fail/known/skip, the first failing test
 * of each family with the command that reproduces it, the expected-failure entries that no longer
 * fail, and a one-line verdict; or the same as JSON (--output=json).
 */
import type { EntryUsage } from './expected-failures.ts';
import type { ConformReport, FamilyRow } from './harness.ts';
import type { TestResult } from './test-result.ts';

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

function padLeft(s: string, n: number): string {
  return s.length >= n ? s : ' '.repeat(n - s.length) + s;
}

function entryName(u: EntryUsage): string {
  return `${u.entry.role !== undefined ? `${u.entry.role}:` : ''}${u.entry.pattern}`;
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** The one-line verdict: "OK: …" or "FAIL: …". */
export function verdictLine(r: ConformReport): string {
  const t = r.totals;
  const counts = `${t.pass} passed, ${plural(t.fail, 'unexpected failure')}, ${plural(t.known, 'known failure')}, ${plural(t.unexpectedPasses, 'unexpected pass', 'unexpected passes')}, ${t.skip} skipped`;
  return `${r.ok ? 'OK' : 'FAIL'}: ${counts}`;
}

function failureBlock(row: FamilyRow, f: TestResult): string[] {
  const tag = f.knownFailure !== undefined ? 'known' : 'UNEXPECTED';
  const others = row.fail + row.known - 1;
  const lines = [`  [${tag}] ${row.role} ${row.family}: ${f.caseId}${others > 0 ? ` (+${others} more)` : ''}`, `    ${f.detail}`];
  if (f.knownFailure !== undefined) lines.push(`    listed at ${f.knownFailure}`);
  if (f.reproduce !== undefined) lines.push(`    reproduce: ${f.reproduce}`);
  if (f.workDir !== undefined) lines.push(`    kept: ${f.workDir}`);
  return lines;
}

/** The human report (ends with a newline). */
export function formatHumanReport(r: ConformReport): string {
  const out: string[] = [];
  out.push(`qcow2-ref conform: ${r.impl} on ${r.corpus} (${plural(r.cases, 'case')}, ${plural(r.results.length, 'test')})`);
  for (const a of r.adapters) out.push(`  ${a.role}: ${a.command}`);
  out.push(`  expected failures: ${r.expectedFailures ?? 'none'}`);
  out.push('');
  const famWidth = Math.max(6, ...r.families.map((f) => f.family.length));
  out.push(`${pad('role', 7)} ${pad('family', famWidth)} ${padLeft('pass', 5)} ${padLeft('fail', 5)} ${padLeft('known', 6)} ${padLeft('skip', 5)}`);
  for (const f of r.families) {
    out.push(`${pad(f.role, 7)} ${pad(f.family, famWidth)} ${padLeft(String(f.pass), 5)} ${padLeft(String(f.fail), 5)} ${padLeft(String(f.known), 6)} ${padLeft(String(f.skip), 5)}`);
  }
  const t = r.totals;
  out.push(`${pad('', 7)} ${pad('total', famWidth)} ${padLeft(String(t.pass), 5)} ${padLeft(String(t.fail), 5)} ${padLeft(String(t.known), 6)} ${padLeft(String(t.skip), 5)}`);

  const failing = r.families.filter((f) => f.firstFailure !== undefined);
  if (failing.length > 0) {
    out.push('', 'First failure of each family:');
    // Unexpected ones first: they are what decides the exit code.
    for (const f of [...failing.filter((x) => x.fail > 0), ...failing.filter((x) => x.fail === 0)]) out.push(...failureBlock(f, f.firstFailure!));
  }
  const skipping = r.families.filter((f) => f.firstSkip !== undefined);
  if (skipping.length > 0) {
    out.push('', 'Skipped (the test could not be set up; says nothing about the implementation):');
    for (const f of skipping) out.push(`  ${f.role} ${f.family}: ${plural(f.skip, 'test')}, e.g. ${f.firstSkip!.caseId}: ${f.firstSkip!.detail}`);
  }
  if (r.staleEntries.length > 0) {
    out.push('', `Unexpected passes (entries of ${r.expectedFailures} whose tests all passed; remove them):`);
    for (const u of r.staleEntries) out.push(`  line ${u.entry.line}: ${entryName(u)} (${plural(u.matched, 'test')}, all passed)`);
  }
  if (r.unusedEntries.length > 0) {
    out.push('', 'Expected-failure entries that matched no test in this run:');
    for (const u of r.unusedEntries) out.push(`  line ${u.entry.line}: ${entryName(u)}`);
  }
  if (r.keptWork !== undefined) out.push('', `Test directories kept in ${r.keptWork} (files/: the case's files as the adapter saw them; out/: raw output, script).`);
  out.push('', verdictLine(r));
  return `${out.join('\n')}\n`;
}

/** The report as a JSON value (what --output=json prints). */
export function reportJson(r: ConformReport): unknown {
  const entry = (u: EntryUsage): unknown => ({
    line: u.entry.line,
    pattern: u.entry.pattern,
    ...(u.entry.role !== undefined ? { role: u.entry.role } : {}),
    reason: u.entry.reason,
    matched: u.matched,
    failed: u.failed,
  });
  return {
    impl: r.impl,
    corpus: r.corpus,
    cases: r.cases,
    adapters: r.adapters,
    expectedFailures: r.expectedFailures ?? null,
    ok: r.ok,
    totals: r.totals,
    ...(r.keptWork !== undefined ? { keptWork: r.keptWork } : {}),
    families: r.families.map((f) => ({
      role: f.role,
      family: f.family,
      pass: f.pass,
      fail: f.fail,
      known: f.known,
      skip: f.skip,
      firstFailure: f.firstFailure?.caseId ?? null,
    })),
    staleEntries: r.staleEntries.map(entry),
    unusedEntries: r.unusedEntries.map(entry),
    results: r.results,
  };
}
