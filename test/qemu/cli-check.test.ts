/**
 * `qcow2-ref check` (src/cli/check.ts runCheck, the whole command: argument parsing, opening the
 * file in check mode, the report, writing a repair to the file) against `qemu-img check` 7.2 run on
 * copies of the same files: exit code, stdout and stderr (program names aside), for clean, leaky and
 * corrupt images, a dirty image (check mode: no automatic repair on a writable open), an image whose
 * open needs check mode (no refcount table), -q, bad -r / --output values, a missing image, a raw
 * file (63) and --help. Expected values are qemu-img's output at test time; the exit codes of the
 * scenarios are also pinned to docs/format/check.md#exit-codes so a broken setup cannot agree with itself.
 */
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHECK_HELP, formatFixed2, runCheck } from '../../src/cli/check.ts';
import { qemuImgCreate } from '../../src/qemu/qemu-img.ts';
import { requireQemu, runTool } from '../../src/qemu/run.ts';
import { be64, normalizeProgram, poke, sameContent } from '../support/check-harness.ts';

const M = 1024 * 1024;
let dir = '';

/** Image name → [build, exit code qemu-img check returns for it (docs/format/check.md#exit-codes)]. */
const IMAGES: Readonly<Record<string, { build: (p: string) => Promise<void>; code: number }>> = {
  clean: {
    build: async (p) => {
      await qemuImgCreate(p, 64 * M, {});
      await io(p, 'write -P 1 0 300k', 'write -c -P 2 1M 64k', 'write -P 3 5M 64k');
    },
    code: 0,
  },
  leaky: {
    build: async (p) => {
      await qemuImgCreate(p, 64 * M, {});
      await io(p, 'write -P 1 0 512k');
      // Refcount 2 on the L1 table's cluster: one leak.
      await poke(p, 0x20000 + 3 * 2, [0, 2]);
    },
    code: 3,
  },
  corrupt: {
    build: async (p) => {
      await qemuImgCreate(p, 64 * M, {});
      await io(p, 'write -P 1 0 512k');
      // Two L2 entries share a data cluster (refcount 1, two references) and one cluster leaks.
      await poke(p, 0x40000 + 8, be64(0x8000000000050000n));
    },
    code: 2,
  },
  'needs-rebuild': {
    build: async (p) => {
      await qemuImgCreate(p, 64 * M, {});
      await io(p, 'write -P 1 0 512k');
      await poke(p, 0x20000 + 6 * 2, [0, 0]);
    },
    code: 2,
  },
  dirty: {
    build: async (p) => {
      await qemuImgCreate(p, 64 * M, { lazy_refcounts: 'on' });
      const r = await runTool('qemu-io', ['-f', 'qcow2', '-c', 'write -P 7 0 256k', '-c', 'abort', p]);
      if (r.signal !== 'SIGABRT') throw new Error('qemu-io did not abort');
    },
    code: 2,
  },
  'no-refcount-table': {
    build: async (p) => {
      await qemuImgCreate(p, 64 * M, {});
      await poke(p, 56, [0, 0, 0, 0]);
    },
    code: 2,
  },
};

async function io(path: string, ...commands: string[]): Promise<void> {
  const r = await runTool('qemu-io', ['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), path]);
  if (r.code !== 0) throw new Error(`qemu-io ${commands.join('; ')} failed: ${r.stderr}`);
}

/** Our command, in-process, with the working directory's relative names as given. */
async function ours(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runCheck(args, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) });
  return { code, stdout, stderr };
}

async function qemu(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const r = await runTool('qemu-img', ['check', ...args]);
  if (r.code === null) throw new Error(`qemu-img check ${args.join(' ')} crashed`);
  return { code: r.code, stdout: r.stdout, stderr: r.stderr };
}

/** Copies image `name` to two fresh files (qemu's and ours) and returns their paths. */
async function pair(name: string, tag: string): Promise<[string, string]> {
  const q = join(dir, `${name}-${tag}-q.qcow2`);
  const o = join(dir, `${name}-${tag}-o.qcow2`);
  await copyFile(join(dir, `${name}.qcow2`), q);
  await copyFile(join(dir, `${name}.qcow2`), o);
  return [q, o];
}

beforeAll(async () => {
  await requireQemu();
  dir = await mkdtemp(join(tmpdir(), 'qcow2ref-clicheck-'));
  await Promise.all(Object.entries(IMAGES).map(([name, i]) => i.build(join(dir, `${name}.qcow2`))));
  await writeFile(join(dir, 'raw.img'), 'hello, not a qcow2 image');
}, 60_000);

afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

const VARIANTS: readonly (readonly string[])[] = [[], ['--output=json'], ['--output=human', '-q'], ['-r', 'leaks'], ['-r', 'all'], ['-r', 'all', '--output=json'], ['-f', 'qcow2', '--repair=leaks', '--output=json']];

describe.concurrent('qcow2-ref check vs qemu-img check', () => {
  for (const name of Object.keys(IMAGES)) {
    for (const v of VARIANTS) {
      it(`${name}: check ${v.join(' ')}`, async () => {
        const [q, o] = await pair(name, v.join('_').replace(/[^a-z0-9_]/gi, ''));
        const theirs = await qemu([...v, q]);
        const mine = await ours([...v, o]);
        expect({ code: mine.code, stdout: mine.stdout.replaceAll(o, q), stderr: normalizeProgram(mine.stderr) })
          .toEqual({ code: theirs.code, stdout: theirs.stdout, stderr: normalizeProgram(theirs.stderr) });
        if (v.length === 0) expect(theirs.code).toBe(IMAGES[name]!.code);
        // -r writes the same repair to both files; without -r neither changes.
        expect(await sameContent(q, o)).toBe(true);
      });
    }
  }

  it('bad -r value: exit 1 and the same complaint', async () => {
    const theirs = await qemu(['-r', 'bogus', join(dir, 'clean.qcow2')]);
    const mine = await ours(['-r', 'bogus', join(dir, 'clean.qcow2')]);
    expect(theirs.code).toBe(1);
    expect(mine.code).toBe(1);
    expect(normalizeProgram(mine.stderr).split('\n')[0]).toBe(normalizeProgram(theirs.stderr).split('\n')[0]);
    expect(mine.stdout).toBe('');
  });

  it('bad --output value, no image, two images: exit 1 and the same first line', async () => {
    for (const args of [['--output=xml', join(dir, 'clean.qcow2')], [], [join(dir, 'clean.qcow2'), join(dir, 'leaky.qcow2')]]) {
      const theirs = await qemu(args);
      const mine = await ours(args);
      expect(mine.code, args.join(' ')).toBe(theirs.code);
      expect(theirs.code).toBe(1);
      expect(normalizeProgram(mine.stderr).split('\n')[0]).toBe(normalizeProgram(theirs.stderr).split('\n')[0]);
    }
  });

  it('a missing file: exit 1, the same message', async () => {
    const missing = join(dir, 'missing.qcow2');
    const theirs = await qemu([missing]);
    const mine = await ours([missing]);
    expect(theirs.code).toBe(1);
    expect({ code: mine.code, stderr: normalizeProgram(mine.stderr) }).toEqual({ code: theirs.code, stderr: normalizeProgram(theirs.stderr) });
  });

  it('a raw file (probed or -f raw): exit 63, "This image format does not support checks"', async () => {
    for (const args of [[join(dir, 'raw.img')], ['-f', 'raw', join(dir, 'raw.img')]]) {
      const theirs = await qemu(args);
      const mine = await ours(args);
      expect(theirs.code).toBe(63);
      expect({ code: mine.code, stdout: mine.stdout, stderr: normalizeProgram(mine.stderr) })
        .toEqual({ code: theirs.code, stdout: theirs.stdout, stderr: normalizeProgram(theirs.stderr) });
    }
  });

  it('--help prints the help and exits 0', async () => {
    const r = await ours(['--help']);
    expect(r).toEqual({ code: 0, stdout: CHECK_HELP, stderr: '' });
    expect(CHECK_HELP).toMatch(/-r, --repair leaks\|all/);
  });
});

describe("formatFixed2 (glibc's %0.2f)", () => {
  it('rounds exact ties to even and everything else to nearest, as printf does', () => {
    // Values whose doubles are exact ties at two decimals, and ordinary ones (expected values are
    // what glibc's printf prints: ties to even on the exact binary value).
    expect(formatFixed2(12.125)).toBe('12.12');
    expect(formatFixed2(12.375)).toBe('12.38');
    expect(formatFixed2(0.125)).toBe('0.12');
    expect(formatFixed2(100)).toBe('100.00');
    expect(formatFixed2(0)).toBe('0.00');
    expect(formatFixed2((1 * 100.0) / 3)).toBe('33.33');
    expect(formatFixed2((2 * 100.0) / 3)).toBe('66.67');
    // 0.29 and 1.005 are not exact: their doubles are below the tie.
    expect(formatFixed2(1.005)).toBe('1.00');
  });
});
