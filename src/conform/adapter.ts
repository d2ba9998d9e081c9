/**
 * Adapters: how the conformance harness drives an implementation. An adapter is a command template
 * (src/conform/command-template.ts) with a role:
 * - a reader gets `{image}` (a qcow2 file) and must write the guest content, as a raw file of exactly
 *   the virtual size, to `{raw}`, or exit non-zero to refuse the image;
 * - a writer gets `{image}` (a qcow2 file the harness created) and `{script}` (an op script,
 *   docs/op-script.md) and must apply the script to the image in place, exiting 0 on success.
 * Both run in the image's directory (QEMU 7.2 resolves a relative external data file name against its
 * current directory) with stdin closed; `{dir}` is that directory.
 *
 * The built-in implementations (`--impl NAME`) are templates too, so every test the harness runs,
 * built-in or not, is one process that can be rerun by hand with the command the report prints.
 */
import { isAbsolute, resolve } from 'node:path';
import { match } from 'ts-pattern';
import { repoRoot } from '../io/index.ts';
import { parseTemplate, requirePlaceholders, TemplateError, type CommandTemplate } from './command-template.ts';
import type { TestRole } from './expected-failures.ts';
import { findProgram, runAdapter } from './run-adapter.ts';

/** One way of running an implementation. */
export interface Adapter {
  /** The implementation's name ('qemu-img', 'libqcow', …; 'custom' for a template from the command line). */
  readonly impl: string;
  readonly role: TestRole;
  readonly template: CommandTemplate;
}

/** The repository's root directory (where bin/ and adapters/ are). */
export { repoRoot };

/** The placeholders each role must use. */
const REQUIRED = { reader: ['image', 'raw'], writer: ['image', 'script'] } as const;

/**
 * An adapter for `role` from a template given on the command line. Promises: the template parses,
 * uses the placeholders the role needs, and its program exists (on PATH, or as a path relative to
 * `cwd`, which is then made absolute because adapters run in the image's directory); throws
 * TemplateError otherwise.
 */
export function adapterFromTemplate(impl: string, role: TestRole, source: string, cwd: string = process.cwd()): Adapter {
  const template = parseTemplate(source);
  requirePlaceholders(template, REQUIRED[role], role);
  const program = template.args[0]!;
  if (program.some((p) => p.kind === 'placeholder')) throw new TemplateError('the program name (first argument) cannot contain a placeholder');
  const name = program.map((p) => (p.kind === 'text' ? p.text : '')).join('');
  const found = findProgram(name, cwd);
  if (found === undefined) {
    throw new TemplateError(
      name.includes('/') ? `the program ${JSON.stringify(name)} does not exist or is not executable` : `the program ${JSON.stringify(name)} is not on PATH`,
    );
  }
  // Relative program paths are made absolute: the adapter runs in the image's directory.
  const args = name.includes('/') && !isAbsolute(name) ? [[{ kind: 'text' as const, text: resolve(cwd, name) }], ...template.args.slice(1)] : template.args;
  return { impl, role, template: { source, args } };
}

/** The names `--impl` accepts. */
export const BUILTIN_IMPLS = ['qemu-img', 'qemu-io', 'qcow2-ref', 'libqcow', '7zip'] as const;
export type BuiltinImpl = (typeof BUILTIN_IMPLS)[number];

/** What each built-in implementation is and what it needs installed (for --help and errors). */
export const BUILTIN_DESCRIPTIONS: Readonly<Record<BuiltinImpl, string>> = {
  'qemu-img': 'reader: qemu-img convert -f qcow2 -O raw (QEMU, package qemu-utils)',
  'qemu-io': 'writer: qemu-io, one -c per op (qemu-img snapshot/resize between), adapters/qemu-io-writer.mjs',
  'qcow2-ref': 'reader: qcow2-ref convert; writer: qcow2-ref run (this project)',
  libqcow: 'reader: adapters/libqcow-reader.py (Debian package python3-libqcow)',
  '7zip': 'reader: adapters/7zip-reader.sh, 7zz x (Debian package 7zip)',
};

function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The template sources of a built-in implementation, one per role it has (qcow2-ref has both).
 * Paths are absolute (the repository's bin/ and adapters/, Node as the running one), so the
 * templates work from any directory and the printed reproduction commands can be pasted anywhere.
 */
export function builtinTemplates(impl: BuiltinImpl): { readonly role: TestRole; readonly source: string }[] {
  const node = q(process.execPath);
  const bin = q(resolve(repoRoot(), 'bin/qcow2-ref.mjs'));
  const adapter = (f: string): string => q(resolve(repoRoot(), 'adapters', f));
  return match(impl)
    .with('qemu-img', () => [{ role: 'reader' as const, source: 'qemu-img convert -f qcow2 -O raw {image} {raw}' }])
    .with('qemu-io', () => [{ role: 'writer' as const, source: `${node} ${adapter('qemu-io-writer.mjs')} {image} {script}` }])
    .with('qcow2-ref', () => [
      { role: 'reader' as const, source: `${node} ${bin} convert -q -f qcow2 -O raw --allow-backing {image} {raw}` },
      { role: 'writer' as const, source: `${node} ${bin} run -q {image} {script}` },
    ])
    .with('libqcow', () => [{ role: 'reader' as const, source: `/usr/bin/python3 ${adapter('libqcow-reader.py')} {image} {raw}` }])
    .with('7zip', () => [{ role: 'reader' as const, source: `${adapter('7zip-reader.sh')} {image} {raw}` }])
    .exhaustive();
}

/** The adapters of a built-in implementation (see builtinTemplates); throws TemplateError when its program is missing. */
export function builtinAdapters(impl: BuiltinImpl): Adapter[] {
  return builtinTemplates(impl).map((t) => adapterFromTemplate(impl, t.role, t.source));
}

/**
 * Why the built-in `impl` cannot run on this machine (with what to install), or undefined when it
 * can: its programs are present and, for libqcow, Python can import pyqcow. qemu-img and qemu-io
 * themselves are required by every run (requireQemu), so they are not checked here.
 */
export async function builtinProblem(impl: BuiltinImpl): Promise<string | undefined> {
  const probe = async (argv: readonly string[]): Promise<boolean> => {
    const r = await runAdapter(argv, { cwd: repoRoot(), timeoutMs: 30_000 });
    return r.code === 0;
  };
  return match(impl)
    .with('qemu-img', 'qemu-io', 'qcow2-ref', async () => undefined)
    .with('libqcow', async () =>
      (await probe(['/usr/bin/python3', '-c', 'import pyqcow']))
        ? undefined
        : 'libqcow needs /usr/bin/python3 with the pyqcow module: apt-get install python3-libqcow',
    )
    .with('7zip', async () => (findProgram('7zz', repoRoot()) !== undefined ? undefined : '7-Zip needs the 7zz program: apt-get install 7zip'))
    .exhaustive();
}

/** Whether `name` is a built-in implementation. */
export function isBuiltinImpl(name: string): name is BuiltinImpl {
  return (BUILTIN_IMPLS as readonly string[]).includes(name);
}
