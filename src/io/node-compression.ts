/**
 * The model's compression codecs on Node (src/model/compression.ts), installed when this module is
 * first imported: pako's deflate (a port of reference zlib, so its output equals the zlib QEMU links
 * against; Node's own zlib is Chromium's fork and compresses differently), Node's zlib inflate, and
 * libzstd 1.5.4 compiled to wasm by @bokuweb/zstd-wasm 0.0.22 (pinned: its frames equal those QEMU 7.2
 * writes with Debian's libzstd 1.5.4; 0.0.27, with zstd 1.5.7, compresses differently). pako and the
 * wasm load on first use, so commands that never compress do not pay for them.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { inflateRawSync, constants as zlibConstants } from 'node:zlib';
import type * as Pako from 'pako';
import { installCompressionCodecs, type CompressionCodecs } from '../model/index.ts';

const require = createRequire(import.meta.url);

let pakoDeflateRaw: typeof Pako.deflateRaw | undefined;

type ZstdCompress = (buf: Uint8Array, level?: number) => Uint8Array;
/** The part of the WebAssembly JS API used here (the project compiles without the DOM lib). */
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => object;
}
let zstdEncoder: ZstdCompress | undefined;

/**
 * Loads @bokuweb/zstd-wasm synchronously, once. The package's own `init()` is asynchronous (it
 * awaits WebAssembly.instantiate); its Emscripten glue lets `Module.instantiateWasm` supply the
 * instance instead, so the wasm is compiled and instantiated here with the synchronous
 * `new WebAssembly.Module/Instance`, after which the runtime starts synchronously and the package's
 * `compress` (one-shot ZSTD_compress into a ZSTD_compressBound buffer) is ready.
 */
function loadZstdEncoder(): ZstdCompress {
  if (zstdEncoder !== undefined) return zstdEncoder;
  const entry = require.resolve('@bokuweb/zstd-wasm'); // dist/common/index.node.js
  const dir = dirname(entry);
  // An absolute path: the package's export map only exposes its entry point.
  const glue = require(join(dir, 'module.js')) as {
    Module: {
      instantiateWasm?: (imports: object, receive: (instance: object) => void) => object;
      init: (bytes?: Uint8Array) => void;
      calledRun?: boolean;
    };
  };
  const mod = glue.Module;
  const started = (): boolean => mod.calledRun === true;
  if (!started()) {
    const wa = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
    const wasm = new wa.Module(readFileSync(join(dir, 'zstd.wasm')));
    mod.instantiateWasm = (imports, receive) => {
      receive(new wa.Instance(wasm, imports));
      return {};
    };
    mod.init();
    if (!started()) throw new Error('the zstd wasm runtime did not start synchronously');
  }
  const api = require(entry) as { compress?: unknown };
  if (typeof api.compress !== 'function') throw new Error('@bokuweb/zstd-wasm exports no compress function');
  zstdEncoder = api.compress as ZstdCompress;
  return zstdEncoder;
}

/** Node's implementation of the model's codecs. */
export const nodeCompressionCodecs: CompressionCodecs = {
  deflateRaw(data, options) {
    pakoDeflateRaw ??= (require('pako') as typeof Pako).deflateRaw;
    return pakoDeflateRaw(data, options as Pako.DeflateFunctionOptions);
  },
  inflateRaw(data) {
    return new Uint8Array(inflateRawSync(data, { finishFlush: zlibConstants.Z_SYNC_FLUSH }));
  },
  zstdCompress(data, level) {
    return loadZstdEncoder()(data, level);
  },
};

installCompressionCodecs(nodeCompressionCodecs);
