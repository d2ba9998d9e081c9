/**
 * The package as a user gets it: `npm pack` (which builds dist/ through the prepack script) into a
 * temporary folder, the tarball installed into a scratch project (`npm install --prefer-offline`:
 * its dependencies are in npm's cache after `npm ci`), and then, from the outside:
 * - the tarball ships what `bin` and `exports` load and nothing else (no TypeScript sources, no
 *   scripts/: the installed bin cannot run a build tool);
 * - the consumer's `tsc --noEmit` with strict options (noUnusedParameters,
 *   exactOptionalPropertyTypes, erasableSyntaxOnly, skipLibCheck false, ...) under moduleResolution
 *   nodenext and bundler reports nothing: the core alone with no @types/node (with and without the
 *   DOM lib), all three entries with @types/node;
 * - plain `node` imports every entry point, each exports what its source exports, and the entries
 *   share their modules (one ModelError class);
 * - the core, bundled for browsers by esbuild, resolves no Node module and runs in a bare V8
 *   context (no Buffer, process or require): zlib and zstd compressed writes and reads, a snapshot;
 * - the installed bin runs `info` and `check` on an image qemu-img made, with qemu-img's output;
 * - publint and @arethetypeswrong/cli report no problem (attw with its esm-only profile: the
 *   package is ES modules only, as Node 20 cannot require() them);
 * - (its own `it`) a write/read round trip through the disk driver on an image qemu-img made.
 * Uses this checkout's tsc, esbuild, publint and attw (devDependencies); a missing tool fails.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { runInNewContext } from 'node:vm';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireQemu } from '../../src/qemu/run.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const BIN = (name: string): string => join(ROOT, 'node_modules', '.bin', name);

interface Ran {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * The environment the programs run in: the test's own, without colour. A CI runner that sets
 * FORCE_COLOR would otherwise wrap publint's verdict in escape codes (it did, once).
 */
const PLAIN_ENV: NodeJS.ProcessEnv = (() => {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
  delete env.FORCE_COLOR;
  return env;
})();

/** Runs a program to its end (no shell); a program that cannot start fails the test. */
function run(cmd: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv = PLAIN_ENV): Ran {
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', maxBuffer: 64 << 20, timeout: 300_000 });
  if (r.error !== undefined) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs a program that must succeed; returns its stdout. */
function ok(cmd: string, args: readonly string[], cwd: string): string {
  const r = run(cmd, args, cwd);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

let dir = '';
let app = '';
let tarball = '';
let installed = '';

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'qcow2-ref-package-'));
  const packs = join(dir, 'pack');
  mkdirSync(packs);
  ok('npm', ['pack', '--pack-destination', packs], ROOT);
  const tgz = readdirSync(packs).filter((f) => f.endsWith('.tgz'));
  expect(tgz).toHaveLength(1);
  tarball = join(packs, tgz[0]!);
  app = join(dir, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  ok('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], app);
  installed = join(app, 'node_modules', 'qcow2-ref');
});

afterAll(() => {
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
});

/** Every file under `d`, relative to it. */
function filesUnder(d: string, prefix = ''): string[] {
  return readdirSync(join(d, prefix), { withFileTypes: true }).flatMap((e) => {
    const rel = prefix === '' ? e.name : `${prefix}/${e.name}`;
    return e.isDirectory() ? filesUnder(d, rel) : [rel];
  });
}

describe('the packed package', () => {
  it('ships dist/, bin/, the adapters, the corpus and the expected-failure lists, and no sources or build scripts', () => {
    const files = filesUnder(installed);
    const allowed = /^(package\.json|README\.md|bin\/qcow2-ref\.mjs|dist\/(cli|qemu-io-writer)\.mjs|dist\/(src|generated)\/.+\.(js|d\.ts)|adapters\/[^/]+|conform\/expected-failures\/[^/]+\.txt|corpus\/.+)$/;
    expect(files.filter((f) => !allowed.test(f))).toEqual([]);
    expect(files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([]);
    expect(existsSync(join(installed, 'scripts'))).toBe(false);
    const pkg = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; sideEffects: string[] };
    expect(Object.keys(pkg.dependencies).sort()).toEqual(['cli-progress', 'fzstd', 'pako', 'ts-pattern']);
    for (const f of pkg.sideEffects) expect(existsSync(join(installed, f)), f).toBe(true);
  });

  it('type-checks in a strict consumer under moduleResolution nodenext and bundler', () => {
    writeFileSync(join(app, 'core.ts'), CORE_CONSUMER);
    writeFileSync(join(app, 'node.ts'), NODE_CONSUMER);
    const strict = {
      strict: true, noEmit: true, target: 'ES2022', skipLibCheck: false, noUnusedLocals: true, noUnusedParameters: true,
      exactOptionalPropertyTypes: true, noImplicitOverride: true, noPropertyAccessFromIndexSignature: true, noUncheckedIndexedAccess: true,
      noImplicitReturns: true, noFallthroughCasesInSwitch: true, erasableSyntaxOnly: true, verbatimModuleSyntax: true, isolatedModules: true,
    };
    const nodeTypes = { types: ['node'], typeRoots: [join(ROOT, 'node_modules', '@types')] };
    const configs: Record<string, { compilerOptions: Record<string, unknown>; files: string[] }> = {};
    for (const [resolution, module] of [['nodenext', 'nodenext'], ['bundler', 'esnext']] as const) {
      // The core needs neither @types/node nor the DOM lib.
      configs[`core-${resolution}`] = { compilerOptions: { ...strict, module, moduleResolution: resolution, lib: ['ES2022'], types: [] }, files: ['core.ts'] };
      configs[`all-${resolution}`] = { compilerOptions: { ...strict, module, moduleResolution: resolution, lib: ['ES2022'], ...nodeTypes }, files: ['core.ts', 'node.ts'] };
    }
    configs['core-browser'] = { compilerOptions: { ...strict, module: 'esnext', moduleResolution: 'bundler', lib: ['ES2022', 'DOM', 'DOM.Iterable'], types: [] }, files: ['core.ts'] };
    const reports: Record<string, string> = {};
    for (const [name, config] of Object.entries(configs)) {
      writeFileSync(join(app, `tsconfig.${name}.json`), JSON.stringify(config));
      const r = run(BIN('tsc'), ['-p', `tsconfig.${name}.json`], app);
      reports[name] = `exit ${r.code} ${r.stdout}${r.stderr}`.trim();
      if (name.startsWith('core')) {
        const listed = run(BIN('tsc'), ['-p', `tsconfig.${name}.json`, '--listFiles'], app).stdout;
        expect(listed, `${name} loads the qcow2-ref declarations`).toMatch(/qcow2-ref\/dist\/src\/index\.d\.ts/);
        expect(listed, `${name} loads no @types/node`).not.toMatch(/@types\/node/);
      }
    }
    expect(reports).toEqual(Object.fromEntries(Object.keys(configs).map((k) => [k, 'exit 0'])));
  });

  it('plain node imports every entry point; each exports what its source exports; the entries share modules', async () => {
    const script = [
      "const core = await import('qcow2-ref');",
      "const node = await import('qcow2-ref/node');",
      "const testing = await import('qcow2-ref/testing');",
      'console.log(JSON.stringify({',
      '  core: Object.keys(core).sort(), node: Object.keys(node).sort(), testing: Object.keys(testing).sort(),',
      '  shared: core.ModelError === node.ModelError && core.step === node.step,',
      '  nodeInflate: core.compressionCodecs() === node.nodeCompressionCodecs,',
      '}));',
    ].join('\n');
    writeFileSync(join(app, 'imports.mjs'), script);
    const got = JSON.parse(ok(process.execPath, ['imports.mjs'], app)) as Record<string, unknown>;
    const keys = async (p: string): Promise<string[]> => Object.keys((await import(join(ROOT, p))) as object).sort();
    expect(got).toEqual({
      core: await keys('src/index.ts'),
      node: await keys('src/node.ts'),
      testing: await keys('src/testing.ts'),
      shared: true,
      nodeInflate: true,
    });
  });

  it('the core, bundled for browsers, resolves no Node module and runs in a bare V8 context', async () => {
    writeFileSync(join(app, 'browser.mjs'), BROWSER_PROGRAM);
    // platform 'browser': a node:* import, or a Node built-in, would fail to resolve here.
    const bundled = await build({ entryPoints: [join(app, 'browser.mjs')], bundle: true, write: false, platform: 'browser', format: 'iife', target: 'es2022', logLevel: 'silent', absWorkingDir: app });
    const code = bundled.outputFiles[0]!.text;
    const context: Record<string, unknown> = { result: undefined };
    runInNewContext(code, context, { timeout: 120_000 });
    expect(['Buffer', 'process', 'require'].filter((g) => runInNewContext(`typeof ${g}`, {}) !== 'undefined')).toEqual([]);
    expect(context['result']).toEqual({ zlib: true, zstd: true, snapshots: 1, rereadZlib: true, rereadZstd: true });
  });

  it('the installed bin runs info and check on an image qemu-img made, as qemu-img does', async () => {
    await requireQemu();
    const image = join(app, 'made-by-qemu.qcow2');
    ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'compression_type=zstd', image, '16M'], app);
    ok('qemu-io', ['-c', 'write -c -P 7 0 64k', '-c', 'write -P 9 1M 4k', image], app);
    const bin = join(app, 'node_modules', '.bin', 'qcow2-ref');
    expect(ok(bin, ['info', '--output=json', image], app)).toBe(ok('qemu-img', ['info', '--output=json', image], app));
    const check = run(bin, ['check', '--output=json', image], app);
    const qemuCheck = run('qemu-img', ['check', '--output=json', image], app);
    expect({ code: check.code, stdout: check.stdout }).toEqual({ code: qemuCheck.code, stdout: qemuCheck.stdout });
    expect(check.code).toBe(0);
  });

  it('publint and @arethetypeswrong/cli report no problem', () => {
    const lint = run(BIN('publint'), ['run', tarball, '--strict', '--level', 'suggestion'], app);
    expect({ code: lint.code, out: lint.stdout.trim().split('\n').at(-1) }).toEqual({ code: 0, out: 'All good!' });
    const attw = run(BIN('attw'), [tarball, '--profile', 'esm-only', '--format', 'json'], app);
    const problems = (JSON.parse(attw.stdout) as { problems?: Record<string, { resolutionKind?: string; entrypoint?: string }[]> }).problems ?? {};
    // esm-only ignores the two CommonJS resolutions; nothing may be wrong in the others.
    const counted = Object.values(problems).flat().filter((p) => p.resolutionKind !== 'node10' && p.resolutionKind !== 'node16-cjs');
    expect({ code: attw.code, counted }).toEqual({ code: 0, counted: [] });
  });
});

describe('the packed package with the disk driver', () => {
  it('writes and reads back through Qcow2Disk and openDiskFile on an image qemu-img made; qemu-img checks it clean', async () => {
    await requireQemu();
    const image = join(app, 'driver.qcow2');
    ok('qemu-img', ['create', '-q', '-f', 'qcow2', image, '64M'], app);
    writeFileSync(join(app, 'driver.mjs'), DRIVER_PROGRAM);
    const out = ok(process.execPath, ['driver.mjs', image], app);
    expect(JSON.parse(out)).toEqual({ isDisk: true, sameBytes: true });
    const check = run('qemu-img', ['check', image], app);
    expect({ code: check.code, stdout: check.stdout.split('\n')[0] }).toEqual({ code: 0, stdout: 'No errors were found on the image.' });
    const raw = join(app, 'driver.raw');
    ok('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', image, raw], app);
    const expected = new Uint8Array(70000).map((_, i) => (i * 7 + 3) % 251);
    const got = readFileSync(raw);
    expect(Buffer.from(got.subarray(4096, 4096 + expected.length)).equals(Buffer.from(expected))).toBe(true);
  });
});

/** A consumer of the core, typed as strictly as the options allow; uses no global beyond ES2022. */
const CORE_CONSUMER = `import {
  checkImage, createImage, imageInfoQObject, installCompressionCodecs, loadImage, mapImage, ModelError, openImage, portableCompressionCodecs,
  Qcow2FormatError, qcow2ImageInfo, readGuest, repairImage, step, storeImage, walkImage,
  type CompressionCodecs, type DiskBackend, type HostReader, type Image, type Op,
} from 'qcow2-ref';

let { image } = createImage({ size: 64n << 20n, compressionType: 'zstd' });
const ops: Op[] = [
  { kind: 'write', offset: 0n, data: new Uint8Array(4096).fill(7) },
  { kind: 'writeCompressed', offset: 65536n, data: new Uint8Array(65536).fill(3) },
];
for (const op of ops) {
  const r = step(image, op);
  if (!r.ok) throw r.error;
  image = r.image;
}
const bytes = storeImage(image);
const again: Image = loadImage(bytes);
const reader: HostReader = { length: BigInt(bytes.length), read: (offset: bigint, length: number) => bytes.slice(Number(offset), Number(offset) + length) };
const opened = openImage(reader);
const codecs: CompressionCodecs = { ...portableCompressionCodecs };
installCompressionCodecs(codecs);
const backend: DiskBackend = { size: async () => BigInt(bytes.length), read: async (offset: bigint, target: Uint8Array) => target.set(bytes.subarray(Number(offset), Number(offset) + target.length)) };
export const results = [readGuest(again, 0n, 16)[0], mapImage(opened).length, checkImage(again).corruptions, repairImage, walkImage(bytes), qcow2ImageInfo, imageInfoQObject, backend];
export function classify(e: unknown): string {
  return e instanceof ModelError ? e.code : e instanceof Qcow2FormatError ? e.code : 'other';
}
`;

/** A consumer of the Node and testing entries. */
const NODE_CONSUMER = `import { readFileSync } from 'node:fs';
import { convertImage, fileReader, openImageFile, withOpenImageFile, type OpenedLayer } from 'qcow2-ref/node';
import { CORRUPTIONS, RawDisk, checkInvariants, parseScript, seededRng, type CorpusCase } from 'qcow2-ref/testing';

export async function size(path: string): Promise<bigint> {
  const layer: OpenedLayer = await openImageFile(path);
  return layer.image?.header.size ?? 0n;
}
const disk = new RawDisk({ size: 1n << 20n, clusterSize: 65536n, version: 3 });
export const used = [disk, checkInvariants(readFileSync('x')), parseScript('[]'), CORRUPTIONS.length, seededRng(1).int(3), fileReader, withOpenImageFile, convertImage];
export type Case = CorpusCase;
`;

/** Runs in a V8 context with nothing but the language's globals: sets `result`. */
const BROWSER_PROGRAM = `import { createImage, step, readGuest, storeImage, loadImage, closeImage } from 'qcow2-ref';

function roundTrip(compressionType) {
  let { image } = createImage({ size: 8n << 20n, compressionType });
  const data = new Uint8Array(65536);
  for (let i = 0; i < data.length; i++) data[i] = (i % 97) < 40 ? 0 : (i * 13) & 255;
  for (const op of [{ kind: 'writeCompressed', offset: 0n, data }, { kind: 'snapshotCreate', name: 'one' }]) {
    const r = step(image, op);
    if (!r.ok) throw r.error;
    image = r.image;
  }
  const reread = loadImage(storeImage(closeImage(image).image));
  const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
  return { written: same(readGuest(image, 0n, data.length), data), reread: same(readGuest(reread, 0n, data.length), data), snapshots: reread.header.nbSnapshots };
}
const z = roundTrip('zlib');
const s = roundTrip('zstd');
globalThis.result = { zlib: z.written, zstd: s.written, snapshots: s.snapshots, rereadZlib: z.reread, rereadZstd: s.reread };
`;

/** The disk driver's round trip, as the README will show it. */
const DRIVER_PROGRAM = `import { Qcow2Disk } from 'qcow2-ref';
import { openDiskFile } from 'qcow2-ref/node';

const bytes = new Uint8Array(70000).map((_, i) => (i * 7 + 3) % 251);
const disk = await openDiskFile(process.argv[2], { readOnly: false });
await disk.write(4096n, bytes);
const back = await disk.read(4096n, bytes.length);
await disk.flush();
await disk.close();
console.log(JSON.stringify({ isDisk: disk instanceof Qcow2Disk, sameBytes: back.length === bytes.length && back.every((x, i) => x === bytes[i]) }));
`;
