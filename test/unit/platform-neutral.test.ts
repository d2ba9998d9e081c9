/**
 * The core entry (src/index.ts, the package's `qcow2-ref`) is platform-neutral: no module it loads,
 * at run time or for its types, imports `node:*` or a Node built-in, or uses Node's globals (Buffer,
 * process, require, __dirname); and the npm packages it loads are the portable three. A browser
 * bundle of the core then needs no stubs, and its declarations need no @types/node.
 * (test/qemu/package.test.ts checks the built package the same way from the outside.)
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { builtinModules } from 'node:module';
import { describe, expect, it } from 'vitest';
import { importsOf } from '../support/source-imports.ts';

const ROOT = resolve(import.meta.dirname, '../..');

/** Every module reachable from `entry` through relative imports (static, dynamic and type-only), and the packages they import. */
function moduleGraph(entry: string): { modules: Map<string, string>; packages: Map<string, string[]> } {
  const modules = new Map<string, string>();
  const packages = new Map<string, string[]>();
  const todo = [entry];
  while (todo.length > 0) {
    const file = todo.pop()!;
    if (modules.has(file)) continue;
    const text = readFileSync(file, 'utf8');
    modules.set(file, text);
    for (const spec of importsOf(text)) {
      if (spec.startsWith('.')) {
        const target = resolve(dirname(file), spec);
        if (!existsSync(target)) throw new Error(`${relative(ROOT, file)} imports ${spec}, which does not exist`);
        todo.push(target);
      } else {
        const users = packages.get(spec) ?? [];
        users.push(relative(ROOT, file));
        packages.set(spec, users);
      }
    }
  }
  return { modules, packages };
}

/** `text` without comments and quoted strings (a rough cut: enough that prose about Buffer does not count). */
function code(text: string): string {
  return text
    .replace(/'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"/g, "''")
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/\/\/.*$/gm, '');
}

/** Node's globals that browsers do not have. */
const NODE_GLOBALS = /\b(Buffer|process|require|__dirname|__filename|setImmediate)\b/;

describe('the core entry is platform-neutral', () => {
  const { modules, packages } = moduleGraph(join(ROOT, 'src', 'index.ts'));

  it('imports no node:* module, no Node built-in, and only the portable npm packages', () => {
    expect(modules.size).toBeGreaterThan(50);
    const builtins = new Set(builtinModules);
    const nodeImports = [...packages].filter(([spec]) => spec.startsWith('node:') || builtins.has(spec.split('/')[0]!));
    expect(nodeImports).toEqual([]);
    // A new package in the core is a decision: it must run in browsers and be a runtime dependency.
    expect([...packages.keys()].sort()).toEqual(['fzstd', 'pako', 'ts-pattern']);
  });

  it('uses none of Node\'s globals (Buffer, process, require, __dirname, ...)', () => {
    const users = [...modules].filter(([, text]) => NODE_GLOBALS.test(code(text))).map(([file, text]) => `${relative(ROOT, file)}: ${NODE_GLOBALS.exec(code(text))![0]}`);
    expect(users).toEqual([]);
  });

  it('loads neither the I/O layer nor anything else that installs or reads platform state', () => {
    const rel = [...modules.keys()].map((f) => relative(ROOT, f));
    expect(rel.filter((f) => /^src\/(io|cli|qemu|oracle|corpus|conform|corrupt|script|codegen)\//.test(f))).toEqual([]);
  });

  it('the checker sees what it should', () => {
    expect(NODE_GLOBALS.test(code("const b = Buffer.from('x');"))).toBe(true);
    expect(NODE_GLOBALS.test(code('// a comment about Buffer\n/* and process */ const x = 1;'))).toBe(false);
    expect(NODE_GLOBALS.test(code("const u = 'https://example.org'; process.exit(1);"))).toBe(true);
    expect(NODE_GLOBALS.test(code("fail('a backing file does not require process');"))).toBe(false);
  });
});
