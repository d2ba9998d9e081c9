/**
 * The root directory of the qcow2-ref checkout (where package.json, bin/, adapters/ and corpus/ are),
 * found from this module's own location — which is src/ when run from the TypeScript sources and
 * dist/ when run from the bundle (scripts/build.mjs), so a fixed `../..` would be wrong in one of them.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package name the root's package.json carries. */
const PACKAGE_NAME = 'qcow2-ref';

/**
 * The nearest directory at or above `from` whose package.json names qcow2-ref. Throws when there is
 * none within 8 levels (a copy of the sources outside the checkout).
 */
export function findRepoRoot(from: string): string {
  let dir = from;
  for (let i = 0; i < 8; i++) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name === PACKAGE_NAME) return dir;
      } catch {
        // Not a readable package.json: keep looking upwards.
      }
    }
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  throw new Error(`qcow2-ref: no package.json named ${PACKAGE_NAME} at or above ${from}`);
}

let root: string | undefined;

/**
 * The repository's root directory (no trailing separator), found on the first call: only the
 * commands and tools that read the checkout's files (corpus/, adapters/, conform/) ask, so loading
 * the package from somewhere without its package.json (an application bundle) does not fail.
 */
export function repoRoot(): string {
  root ??= findRepoRoot(dirname(fileURLToPath(import.meta.url)));
  return root;
}
