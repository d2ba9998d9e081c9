/**
 * `npm run generate`: rewrites generated/ from spec/qcow2.ksy —
 *   generated/qcow2.ts           our exact decoders and encoders (src/codegen/emit-typescript.ts)
 *   generated/kaitai/Qcow2.cjs   kaitai-struct-compiler's JavaScript parser, for cross-checking only
 *   generated/zstd-wasm.ts       the zstd encoder's wasm (not from the spec: from the pinned
 *                                @bokuweb/zstd-wasm package, src/codegen/emit-zstd-wasm.ts)
 * `npm run generate -- --check` writes nothing and exits 1 when any generated file differs from
 * what the spec produces now (CI runs it), 0 when all are current.
 */
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { emitTypeScript } from './emit-typescript.ts';
import { emitZstdWasm } from './emit-zstd-wasm.ts';
import { readKsy, KsyError } from './ksy-model.ts';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface KaitaiCompiler {
  compile(lang: string, spec: unknown, importer: unknown, debug: boolean): Promise<Record<string, string>>;
}

/** Every generated file (absolute path → content) for the spec at root/spec/qcow2.ksy. */
export async function generateAll(root: string = REPO): Promise<Map<string, string>> {
  const source = readFileSync(join(root, 'spec', 'qcow2.ksy'), 'utf8');
  const hash = createHash('sha256').update(source).digest('hex');
  const yamlDoc: unknown = parseYaml(source);
  const spec = readKsy(yamlDoc);
  const files = new Map<string, string>();
  files.set(join(root, 'generated', 'qcow2.ts'), emitTypeScript(spec, 'spec/qcow2.ksy', hash));

  const require = createRequire(import.meta.url);
  const ksc = require('kaitai-struct-compiler') as KaitaiCompiler;
  // The compiler mutates nothing we keep, but parse again so it gets a pristine object.
  const out = await ksc.compile('javascript', parseYaml(source), null, false);
  for (const [name, text] of Object.entries(out)) {
    const base = name.replace(/\.js$/, '.cjs');
    files.set(join(root, 'generated', 'kaitai', base),
      `// GENERATED FILE - DO NOT EDIT. kaitai-struct-compiler output for spec/qcow2.ksy (sha256 ${hash}).\n// Used only to cross-check generated/qcow2.ts. Regenerate with \`npm run generate\`.\n${text}`);
  }
  files.set(join(root, 'generated', 'zstd-wasm.ts'), emitZstdWasm(zstdWasmSource(require)));
  return files;
}

/**
 * The pinned zstd.wasm and where it comes from. The package's export map exposes only its entry
 * (dist/common/index.node.js), so the wasm and package.json are found from the entry's directory.
 */
function zstdWasmSource(require: NodeJS.Require): { wasm: Uint8Array; origin: string } {
  const dir = dirname(require.resolve('@bokuweb/zstd-wasm'));
  const { name, version } = JSON.parse(readFileSync(join(dir, '..', '..', 'package.json'), 'utf8')) as { name: string; version: string };
  return { wasm: readFileSync(join(dir, 'zstd.wasm')), origin: `${name} ${version}` };
}

async function main(argv: string[]): Promise<number> {
  const check = argv.includes('--check');
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write('usage: npm run generate [-- --check] [-- --root DIR]\n'
      + '  rewrites generated/ from spec/qcow2.ksy; --check only reports stale files (exit 1);\n'
      + '  --root DIR works on DIR/spec and DIR/generated instead of this repository (for tests).\n');
    return 0;
  }
  const rootAt = argv.indexOf('--root');
  const ROOT = rootAt >= 0 && argv[rootAt + 1] ? argv[rootAt + 1]! : REPO;
  let files: Map<string, string>;
  try {
    files = await generateAll(ROOT);
  } catch (e) {
    if (e instanceof KsyError) {
      process.stderr.write(`generate: spec/qcow2.ksy: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  const stale: string[] = [];
  for (const [path, content] of files) {
    const current = existsSync(path) ? readFileSync(path, 'utf8') : undefined;
    if (current === content) continue;
    stale.push(relative(ROOT, path));
    if (!check) {
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, content);
    }
  }
  if (check) {
    if (stale.length) {
      process.stderr.write(`generate --check: stale generated files (run npm run generate): ${stale.join(', ')}\n`);
      return 1;
    }
    process.stdout.write('generate --check: generated/ is up to date\n');
    return 0;
  }
  process.stdout.write(stale.length ? `generate: wrote ${stale.join(', ')}\n` : 'generate: generated/ already up to date\n');
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
