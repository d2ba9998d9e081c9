#!/usr/bin/env node
/**
 * Builds dist/, what the package ships:
 *
 *   dist/src/**, dist/generated/**   the library (package.json "exports"): TypeScript's compiler
 *                                    (tsconfig.build.json) emits one ES module and one declaration
 *                                    file per source module reachable from the three entry points
 *   dist/cli.mjs, dist/qemu-io-writer.mjs   the commands (bin/, adapters/): esbuild bundles
 *
 *   node scripts/build.mjs                build the bundles if a source changed (bin/qcow2-ref.mjs
 *                                         does this in a checkout before every run)
 *   node scripts/build.mjs --force        build the bundles whatever the time stamps say
 *   node scripts/build.mjs --library      also build the library (npm run build, and npm pack through
 *                                         the prepack script)
 *   node scripts/build.mjs X.ts ...       also bundle each X.ts into dist/X.mjs (the benchmarks:
 *                                         `npm run bench` measures the code as the command runs it)
 *
 * Why two forms: the library is one module per source file, so every entry point shares the same
 * module instances (a class is one class whichever entry it was imported from, and `instanceof`
 * works across them), bundlers can drop what a user does not import, and the declarations sit
 * beside the code. The commands are bundles because starting a process that loads ~200 modules
 * one by one costs about 0.1 s more than loading one file. Both are built from the same sources.
 *
 * The commands do not run through tsx either: tsx transforms with esbuild's keepNames, which wraps
 * every closure in a __name() call on each creation, and starts a loader thread — about 0.4 s more
 * per CLI process and about 10 % of the model's throughput (bench/README.md). `bin/qcow2-ref.mjs`
 * runs dist/cli.mjs and, in a checkout, calls `ensureBuilt` first, so the command never runs code
 * older than the sources; the installed package has no scripts/ and runs what it ships.
 *
 * Dependencies (package.json "dependencies") stay external: they are loaded from node_modules.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** The checkout's root (scripts/..). */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Bundles: output (relative to ROOT) → entry point (relative to ROOT). */
export const BUNDLES = {
  'dist/cli.mjs': 'src/cli/main.ts',
  'dist/qemu-io-writer.mjs': 'src/conform/qemu-io-writer.ts',
};

/** The library's output folders under dist/ (tsconfig.build.json's rootDir is the checkout). */
const LIBRARY_DIRS = ['src', 'generated'];

/** Files whose change makes a bundle stale: every file under these (relative to ROOT), and package.json. */
const INPUT_DIRS = ['src', 'generated'];

/** The newest modification time (ms) of the inputs; a bound of 10,000 files keeps a stray tree from stalling. */
function newestInput() {
  let newest = statSync(join(ROOT, 'package.json')).mtimeMs;
  let seen = 0;
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (++seen > 10_000) throw new Error(`build: more than 10,000 files under ${INPUT_DIRS.join(', ')}`);
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  for (const d of INPUT_DIRS) walk(join(ROOT, d));
  return newest;
}

/** Whether `out` (relative to ROOT) exists and is at least as new as every input. */
function isFresh(out, newest) {
  try {
    return statSync(join(ROOT, out)).mtimeMs >= newest;
  } catch {
    return false;
  }
}

/**
 * Bundles `entry` into `out` (both relative to ROOT), atomically: written to a temporary name and
 * renamed, so a concurrent process (parallel tests each starting the CLI) sees the old file or the
 * new one, never a partial one.
 */
export async function bundle(entry, out) {
  const esbuild = await import('esbuild');
  const target = join(ROOT, out);
  mkdirSync(dirname(target), { recursive: true });
  const temp = `${target}.${process.pid}.${Date.now()}.tmp.mjs`;
  try {
    await esbuild.build({
      entryPoints: [join(ROOT, entry)],
      outfile: temp,
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      packages: 'external',
      // No source map: an inline one doubles what every start parses; stack traces name the
      // functions of the sources, which esbuild keeps (renaming only on a clash: fooN).
      logLevel: 'error',
    });
    renameSync(temp, target);
  } finally {
    rmSync(temp, { force: true });
  }
}

/**
 * Builds every bundle that is missing or older than the sources (all of them with `force`).
 * Returns the outputs it built.
 */
export async function ensureBuilt({ force = false } = {}) {
  const newest = newestInput();
  const built = [];
  for (const [out, entry] of Object.entries(BUNDLES)) {
    if (!force && isFresh(out, newest)) continue;
    await bundle(entry, out);
    built.push(out);
  }
  return built;
}

/** The .d.ts files under `dir` (recursively). */
function declarationFiles(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return declarationFiles(p);
    return e.name.endsWith('.d.ts') ? [p] : [];
  });
}

/**
 * A relative module specifier ending in .ts, in a declaration file: `from './x.ts'`,
 * `import('./x.ts')`, `import './x.ts'`. tsc rewrites them to .js in the JavaScript it emits
 * (rewriteRelativeImportExtensions) but keeps them in declarations, which TypeScript before 5.0
 * cannot resolve; .js works in every version.
 */
const TS_SPECIFIER = /(\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])(\.{1,2}\/[^'"]*)\.ts\2/g;

/**
 * Builds the library into dist/src and dist/generated: tsc into a temporary folder, declaration
 * specifiers made .js, then the old folders replaced (tsc never deletes the output of a module that
 * no longer exists).
 */
export function buildLibrary() {
  const temp = join(ROOT, 'dist', `.library.${process.pid}.tmp`);
  rmSync(temp, { recursive: true, force: true });
  try {
    const tsc = join(ROOT, 'node_modules', '.bin', 'tsc');
    const r = spawnSync(tsc, ['-p', join(ROOT, 'tsconfig.build.json'), '--outDir', temp], { cwd: ROOT, stdio: 'inherit' });
    if (r.error !== undefined) throw new Error(`build: cannot run ${tsc}: ${r.error.message}`);
    if (r.status !== 0) throw new Error(`build: tsc -p tsconfig.build.json failed (exit ${r.status ?? r.signal})`);
    for (const file of declarationFiles(temp)) {
      const text = readFileSync(file, 'utf8');
      const fixed = text.replace(TS_SPECIFIER, (_m, lead, quote, path) => `${lead}${quote}${path}.js${quote}`);
      if (fixed !== text) writeFileSync(file, fixed);
    }
    for (const d of LIBRARY_DIRS) {
      rmSync(join(ROOT, 'dist', d), { recursive: true, force: true });
      renameSync(join(temp, d), join(ROOT, 'dist', d));
    }
  } finally {
    rmSync(temp, { recursive: true, force: true });
  }
  return LIBRARY_DIRS.map((d) => `dist/${d}/`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const unknown = args.filter((a) => a.startsWith('-') && a !== '--force' && a !== '--library');
  if (unknown.length > 0) {
    console.error(`usage: node scripts/build.mjs [--force] [--library] [ENTRY.ts ...] (unknown: ${unknown.join(' ')})`);
    process.exit(2);
  }
  const built = await ensureBuilt({ force: args.includes('--force') });
  if (args.includes('--library')) built.push(...buildLibrary());
  for (const entry of args.filter((a) => !a.startsWith('-'))) {
    const out = join('dist', entry.replace(/\.ts$/, '.mjs'));
    await bundle(entry, out);
    built.push(out);
  }
  console.log(built.length > 0 ? `built ${built.join(', ')}` : 'dist/ is up to date');
}
