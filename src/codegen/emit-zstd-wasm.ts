/**
 * generated/zstd-wasm.ts: libzstd 1.5.4's encoder as wasm bytes inside a module, so that the model
 * compresses zstd clusters on every platform without reading a file (no node:fs, no fetch, no
 * bundler plugin). The bytes are @bokuweb/zstd-wasm 0.0.22's zstd.wasm (pinned: its frames equal
 * QEMU 7.2's on Debian 12, docs/format/compression.md), raw-deflated by pako at level 9 (348 KiB →
 * 92 KiB) and base64-encoded in lines of 120 characters. src/model/zstd-encoder.ts inflates and
 * instantiates them on the first zstd compression.
 */
import { createHash } from 'node:crypto';
import { deflateRaw } from 'pako';
import { base64Encode } from '../codec/index.ts';

/** What the generated module is made from. */
export interface ZstdWasmSource {
  /** zstd.wasm's bytes. */
  readonly wasm: Uint8Array;
  /** The npm package and version they come from, e.g. `@bokuweb/zstd-wasm 0.0.22`. */
  readonly origin: string;
}

const LINE = 120;

/** The text of generated/zstd-wasm.ts for `source`. */
export function emitZstdWasm(source: ZstdWasmSource): string {
  const sha256 = createHash('sha256').update(source.wasm).digest('hex');
  const packed = base64Encode(deflateRaw(source.wasm, { level: 9 }));
  const lines: string[] = [];
  for (let i = 0; i < packed.length; i += LINE) lines.push(packed.slice(i, i + LINE));
  return [
    `// GENERATED FILE - DO NOT EDIT. zstd.wasm of ${source.origin} (${source.wasm.length} bytes, sha256 ${sha256}),`,
    '// raw-deflated (pako, level 9) and base64-encoded by src/codegen/emit-zstd-wasm.ts. Regenerate with `npm run generate`.',
    '',
    '/** Length in bytes of the wasm module once inflated. */',
    `export const ZSTD_WASM_LENGTH = ${source.wasm.length};`,
    '',
    '/** The wasm module, raw-deflated, as base64 in lines of ' + LINE + ' characters (newlines are not part of the data). */',
    'export const ZSTD_WASM_DEFLATED_BASE64 = `',
    ...lines,
    '`;',
    '',
  ].join('\n');
}
