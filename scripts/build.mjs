#!/usr/bin/env node
/**
 * Builds dist/: the TypeScript sources bundled by esbuild into plain ES modules that Node runs
 * without a loader.
 *
 *   node scripts/build.mjs            build dist/cli.mjs and dist/index.mjs if a source changed
 *   node scripts/build.mjs --force    build them whatever the time stamps say
 *   node scripts/build.mjs X.ts ...   also bundle each X.ts into dist/X.mjs (the benchmarks:
 *                                     `npm run bench` measures the code as the command runs it)
 *
 * Why: the sources run through tsx in development (vitest, scripts), but tsx transforms with
 * esbuild's keepNames, which wraps every closure in a __name() call on each creation, and starts a
 * loader thread — about 0.4 s more per CLI process and about 10 % of the model's throughput
 * (bench/README.md). `bin/qcow2-ref.mjs` runs dist/cli.mjs and calls `ensureBuilt` first, so the
 * command never runs code older than the sources. `npm ci` builds through the `prepare` script.
 *
 * Dependencies (package.json "dependencies") stay external: they are loaded from node_modules.
 */
import { mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** The checkout's root (scripts/..). */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Bundles: output (relative to ROOT) → entry point (relative to ROOT). */
export const BUNDLES = {
  'dist/cli.mjs': 'src/cli/main.ts',
  'dist/index.mjs': 'src/index.ts',
  'dist/qemu-io-writer.mjs': 'src/conform/qemu-io-writer.ts',
};

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

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const unknown = args.filter((a) => a.startsWith('-') && a !== '--force');
  if (unknown.length > 0) {
    console.error(`usage: node scripts/build.mjs [--force] [ENTRY.ts ...] (unknown: ${unknown.join(' ')})`);
    process.exit(2);
  }
  const built = await ensureBuilt({ force: args.includes('--force') });
  for (const entry of args.filter((a) => !a.startsWith('-'))) {
    const out = join('dist', entry.replace(/\.ts$/, '.mjs'));
    await bundle(entry, out);
    built.push(out);
  }
  console.log(built.length > 0 ? `built ${built.join(', ')}` : 'dist/ is up to date');
}
