/**
 * The conformance scoreboard: runs `qcow2-ref conform` (the library behind it, src/conform/harness.ts)
 * for every built-in implementation that can run on this machine — readers qemu-img, qcow2-ref,
 * libqcow, 7-Zip; writers qemu-io, qcow2-ref — over a corpus, and writes a markdown table of families
 * × implementations with everything each gets wrong (the first failing case of each family and why),
 * known failures included: the scoreboard shows, it does not hide.
 *
 *   npx tsx scripts/scoreboard.ts [--corpus corpus] [--out docs/scoreboard.md | --out -] [--jobs N] [--timeout S]
 *                                 [--update-expected-failures]
 *
 * --update-expected-failures rewrites conform/expected-failures/<impl>.txt of every implementation
 * that ran to exactly the families that fail now (one `role:family` line each, the first failure's
 * verdict as the comment) — for a maintainer after a corpus or implementation change; review the diff.
 *
 * An implementation that is not installed is listed as such (with what to install), not dropped.
 * Exit status: 0 when the table was written (whatever it shows), 1 when a run could not be made.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { builtinAdapters, builtinProblem, repoRoot, type BuiltinImpl } from '../src/conform/adapter.ts';
import { parseExpectedFailures, type TestRole } from '../src/conform/expected-failures.ts';
import { runConformance, type ConformReport } from '../src/conform/harness.ts';
import { readManifest } from '../src/corpus/manifest.ts';
import { requireQemu } from '../src/qemu/run.ts';

/** The columns, in order: an implementation in one role. */
const COLUMNS: readonly { readonly impl: BuiltinImpl; readonly role: TestRole; readonly title: string }[] = [
  { impl: 'qemu-img', role: 'reader', title: 'qemu-img (read)' },
  { impl: 'qcow2-ref', role: 'reader', title: 'qcow2-ref (read)' },
  { impl: 'libqcow', role: 'reader', title: 'libqcow (read)' },
  { impl: '7zip', role: 'reader', title: '7-Zip (read)' },
  { impl: 'qemu-io', role: 'writer', title: 'qemu-io (write)' },
  { impl: 'qcow2-ref', role: 'writer', title: 'qcow2-ref (write)' },
];

/** The version line of each implementation, as it reports itself (or why it is missing). */
function versionOf(impl: BuiltinImpl, qemuImg: string, qemuIo: string): string {
  const run = (cmd: string, args: string[]): string => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    } catch {
      return '';
    }
  };
  switch (impl) {
    case 'qemu-img':
      return qemuImg;
    case 'qemu-io':
      return qemuIo;
    case 'qcow2-ref':
      return `qcow2-ref ${(JSON.parse(readFileSync(resolve(repoRoot(), 'package.json'), 'utf8')) as { version: string }).version} (this repository)`;
    case 'libqcow':
      return `libqcow ${run('/usr/bin/python3', ['-c', 'import pyqcow; print(pyqcow.get_version())']).trim()} (Debian python3-libqcow)`;
    case '7zip':
      return (run('7zz', []).split('\n').find((l) => l.startsWith('7-Zip')) ?? '7-Zip').replace(/ : Copyright.*$/, '').trim() + ' (Debian 7zip, 7zz)';
  }
}

function cell(report: ConformReport | undefined, role: TestRole, family: string): string {
  if (report === undefined) return 'n/a';
  const row = report.families.find((f) => f.role === role && f.family === family);
  if (row === undefined) return '—';
  const failed = row.fail + row.known;
  const ran = row.pass + failed;
  const text = `${row.pass}/${ran}`;
  const skip = row.skip > 0 ? ` (${row.skip} skipped)` : '';
  return failed > 0 ? `**${text}** ✗${skip}` : `${text}${skip}`;
}

function escapeCell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/** The expected-failures file that lists exactly the failing families of `report`. */
function expectedFailuresText(impl: string, report: ConformReport): string {
  const lines = [
    `# Known failures of ${impl} on the checked-in corpus (qcow2-ref conform --impl ${impl}).`,
    '# One role:family per line; the comment is the verdict on the first failing case. A listed family',
    '# whose tests all pass fails the run: remove its line. Regenerate with',
    '# npx tsx scripts/scoreboard.ts --update-expected-failures (and review the diff).',
  ];
  const failing = report.families.filter((f) => f.fail + f.known > 0);
  if (failing.length === 0) lines.push('# (none)');
  for (const f of failing) {
    const detail = f.firstFailure!.detail.replace(/\s+/g, ' ');
    lines.push(`${f.role}:${f.family}   # ${detail.length > 160 ? `${detail.slice(0, 160)}…` : detail}`);
  }
  return `${lines.join('\n')}\n`;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      corpus: { type: 'string' },
      out: { type: 'string' },
      jobs: { type: 'string' },
      timeout: { type: 'string' },
      'update-expected-failures': { type: 'boolean' },
    },
    strict: true,
  });
  const corpus = resolve(values.corpus ?? resolve(repoRoot(), 'corpus'));
  // `--out -` prints the table on stdout instead (the README's first command).
  const out = values.out === '-' ? '-' : resolve(values.out ?? resolve(repoRoot(), 'docs/scoreboard.md'));
  const jobs = values.jobs !== undefined ? Number(values.jobs) : availableParallelism();
  const timeoutMs = (values.timeout !== undefined ? Number(values.timeout) : 60) * 1000;
  const versions = await requireQemu();
  const cases = readManifest(corpus);

  const reports = new Map<BuiltinImpl, ConformReport>();
  const missing = new Map<BuiltinImpl, string>();
  for (const impl of [...new Set(COLUMNS.map((c) => c.impl))]) {
    const problem = await builtinProblem(impl);
    if (problem !== undefined) {
      missing.set(impl, problem);
      process.stderr.write(`scoreboard: ${impl}: not available here: ${problem}\n`);
      continue;
    }
    const listPath = resolve(repoRoot(), 'conform/expected-failures', `${impl}.txt`);
    const expected = existsSync(listPath) ? parseExpectedFailures(readFileSync(listPath, 'utf8'), relative(repoRoot(), listPath)) : [];
    process.stderr.write(`scoreboard: running ${impl}…\n`);
    const started = performance.now();
    const report = await runConformance({
      corpusDir: corpus,
      impl,
      adapters: builtinAdapters(impl),
      expected,
      ...(expected.length > 0 || existsSync(listPath) ? { expectedSource: relative(repoRoot(), listPath) } : {}),
      jobs,
      timeoutMs,
      rerun: (_role, caseId) => `qcow2-ref conform --corpus corpus --impl ${impl} --only ${caseId} --keep-work`,
    });
    reports.set(impl, report);
    process.stderr.write(`scoreboard: ${impl}: ${((performance.now() - started) / 1000).toFixed(1)} s, ${report.totals.pass} passed, ${report.totals.fail + report.totals.known} failed\n`);
  }

  // Families in manifest order of first appearance (valid first, as the corpus lists them).
  const families: string[] = [];
  for (const c of cases) if (!families.includes(c.family)) families.push(c.family);

  const md: string[] = [];
  md.push('# Conformance scoreboard', '');
  md.push(
    `Every implementation the harness can run here, over the checked-in corpus (\`${relative(repoRoot(), corpus) || corpus}\`, ${cases.length} cases), ` +
      'made by `npx tsx scripts/scoreboard.ts`. A cell is passed/run tests of that family; **bold ✗** marks a family with failures, ' +
      '— a family with no test for that role (writers run only the valid cases that carry the op script that made them), ' +
      'n/a an implementation not installed. Reader tests: the guest content of a valid image (SHA-256 of the raw output), and a ' +
      'refusal (non-zero exit) of an image QEMU refuses to open; images QEMU opens but `qemu-img check` finds corrupt ' +
      'only have to be read or refused without a crash or hang. Writer tests: the case\'s op script applied to a fresh ' +
      '`qemu-img create` image with the case\'s options, then a clean `qemu-img check`, a clean qcow2-ref check, and the ' +
      'guest content of the raw-disk oracle. Details: `qcow2-ref conform --help`, `adapters/README.md`.',
    '',
  );
  md.push('Versions:', '');
  for (const impl of [...new Set(COLUMNS.map((c) => c.impl))]) {
    md.push(`- ${impl}: ${missing.has(impl) ? `not installed here (${missing.get(impl)})` : versionOf(impl, versions.qemuImg, versions.qemuIo)}`);
  }
  md.push('');
  md.push(`| family | ${COLUMNS.map((c) => c.title).join(' | ')} |`);
  md.push(`|---|${COLUMNS.map(() => '---').join('|')}|`);
  for (const f of families) md.push(`| ${escapeCell(f)} | ${COLUMNS.map((c) => cell(reports.get(c.impl), c.role, f)).join(' | ')} |`);
  const totals = COLUMNS.map((c) => {
    const r = reports.get(c.impl);
    if (r === undefined) return 'n/a';
    const rows = r.families.filter((f) => f.role === c.role);
    const pass = rows.reduce((n, f) => n + f.pass, 0);
    const ran = rows.reduce((n, f) => n + f.pass + f.fail + f.known, 0);
    return pass === ran ? `${pass}/${ran}` : `**${pass}/${ran}**`;
  });
  md.push(`| **total** | ${totals.join(' | ')} |`, '');

  md.push('## What each gets wrong', '');
  md.push('The first failing case of every failing family, with the harness\'s verdict. `qcow2-ref conform --corpus corpus --impl NAME --only CASE --keep-work` reruns one and keeps its files.', '');
  for (const c of COLUMNS) {
    const r = reports.get(c.impl);
    md.push(`### ${c.title}`, '');
    if (r === undefined) {
      md.push(`Not installed here: ${missing.get(c.impl)}.`, '');
      continue;
    }
    const failing = r.families.filter((f) => f.role === c.role && f.firstFailure !== undefined);
    const skipped = r.families.filter((f) => f.role === c.role && f.firstSkip !== undefined);
    if (failing.length === 0) md.push('Nothing: every test passed.');
    for (const f of failing) {
      const first = f.firstFailure!;
      md.push(`- **${escapeCell(f.family)}** (${f.fail + f.known} of ${f.pass + f.fail + f.known} failed), e.g. \`${first.caseId}\`: ${escapeCell(first.detail)}`);
    }
    for (const f of skipped) md.push(`- ${escapeCell(f.family)}: ${f.skip} skipped, e.g. \`${f.firstSkip!.caseId}\`: ${escapeCell(f.firstSkip!.detail)}`);
    md.push('');
  }
  const table = `${md.join('\n').replace(/\n+$/, '')}\n`;
  if (out === '-') process.stdout.write(table);
  else writeFileSync(out, table);
  if (values['update-expected-failures'] === true) {
    for (const [impl, report] of reports) {
      const path = resolve(repoRoot(), 'conform/expected-failures', `${impl}.txt`);
      writeFileSync(path, expectedFailuresText(impl, report));
      process.stderr.write(`scoreboard: wrote ${relative(process.cwd(), path)}\n`);
    }
  }
  if (out !== '-') process.stderr.write(`scoreboard: wrote ${relative(process.cwd(), out)}\n`);
  return 0;
}

process.exitCode = await main().catch((e: unknown) => {
  process.stderr.write(`scoreboard: ${(e as Error).message}\n`);
  return 1;
});
