/**
 * libzstd 1.5.4's one-shot encoder, from the wasm that @bokuweb/zstd-wasm 0.0.22 ships (embedded in
 * generated/zstd-wasm.ts; its frames equal the ones QEMU 7.2 writes with Debian 12's libzstd 1.5.4,
 * while the package's later releases, with zstd 1.5.7, compress differently).
 *
 * The package's own loader is asynchronous and reads the wasm with node:fs or fetch; this is a
 * minimal synchronous replacement for its Emscripten glue, so the model can compress inside `step`
 * on any platform: the bytes are inflated and compiled with `new WebAssembly.Module` and
 * `new WebAssembly.Instance` on the first zstd compression (a few milliseconds, once per process).
 * Browsers allow synchronous compilation of a module this size on the main thread since Chrome 114
 * (Firefox and Safari always did).
 *
 * The module's import and export names are Emscripten's minified ones for this exact build (the
 * generated file pins its sha256): imports a.a = __assert_fail, a.b = emscripten_resize_heap,
 * a.c = setTempRet0; exports d = memory, e = __wasm_call_ctors, f = ZSTD_isError,
 * g = ZSTD_compressBound, k = ZSTD_compress, q = malloc, r = free.
 */
import { Inflate } from 'pako';
import { ZSTD_WASM_DEFLATED_BASE64, ZSTD_WASM_LENGTH } from '../../generated/zstd-wasm.ts';
import { base64Decode } from '../codec/index.ts';

/** The parts of the WebAssembly JS API used here (the core compiles without the DOM lib). */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { readonly exports: Record<string, unknown> };
}

/** The encoder's exports, by their C names. */
interface ZstdExports {
  readonly memory: WasmMemory;
  readonly isError: (code: number) => number;
  readonly compressBound: (size: number) => number;
  readonly compress: (dst: number, dstCapacity: number, src: number, srcSize: number, level: number) => number;
  readonly malloc: (size: number) => number;
  readonly free: (ptr: number) => void;
}

/** Emscripten's heap limit for this build (its glue refuses to grow past 2 GiB). */
const MAX_HEAP = 2 ** 31;

let encoder: ZstdExports | undefined;

/** The inflated wasm bytes (raw deflate of the base64 text, newlines dropped). */
function wasmBytes(): Uint8Array {
  const packed = base64Decode(ZSTD_WASM_DEFLATED_BASE64.replace(/\n/g, ''));
  if (packed === undefined) throw new Error('generated/zstd-wasm.ts holds invalid base64');
  const inflater = new Inflate({ raw: true });
  inflater.push(packed, true);
  const bytes = inflater.result;
  if (inflater.err !== 0 || !(bytes instanceof Uint8Array) || bytes.length !== ZSTD_WASM_LENGTH) {
    throw new Error(`generated/zstd-wasm.ts does not inflate to ${ZSTD_WASM_LENGTH} bytes of wasm`);
  }
  return bytes;
}

/** Compiles and starts the encoder, once. */
function loadEncoder(): ZstdExports {
  if (encoder !== undefined) return encoder;
  const wa = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;
  if (wa === undefined) throw new Error('this JavaScript runtime has no WebAssembly');
  let memory: WasmMemory | undefined;
  const imports = {
    a: {
      a: (): never => {
        throw new Error('zstd: assertion failed');
      },
      // emscripten_resize_heap(requested): grow to at least `requested` bytes, or report failure (0).
      b: (requested: number): number => {
        const want = requested >>> 0;
        if (memory === undefined || want > MAX_HEAP) return 0;
        const have = memory.buffer.byteLength;
        const target = Math.min(MAX_HEAP, Math.max(want, Math.ceil(have * 1.2 / 65536) * 65536));
        try {
          memory.grow(Math.ceil((target - have) / 65536));
          return 1;
        } catch {
          return 0;
        }
      },
      c: (): void => {}, // setTempRet0: the high half of an i64 result, which ZSTD_compress never returns
    },
  };
  const instance = new wa.Instance(new wa.Module(wasmBytes()), imports);
  const x = instance.exports;
  const fn = (name: string): ((...args: number[]) => number) => {
    const f = x[name];
    if (typeof f !== 'function') throw new Error(`the zstd wasm has no export ${name}`);
    return f as (...args: number[]) => number;
  };
  memory = x['d'] as WasmMemory;
  fn('e')(); // __wasm_call_ctors
  encoder = {
    memory,
    isError: fn('f'),
    compressBound: fn('g'),
    compress: fn('k'),
    malloc: fn('q'),
    free: fn('r'),
  };
  return encoder;
}

/** One-shot ZSTD_compress(level) of `data`: one zstd frame with the content size in its header. */
export function zstdCompress(data: Uint8Array, level: number): Uint8Array {
  const z = loadEncoder();
  const bound = z.compressBound(data.length);
  const dst = z.malloc(bound);
  const src = z.malloc(Math.max(1, data.length));
  try {
    if (dst === 0 || src === 0) throw new Error('zstd: out of wasm memory');
    // A fresh view each time: growing the memory replaces its buffer.
    new Uint8Array(z.memory.buffer).set(data, src);
    const size = z.compress(dst, bound, src, data.length, level);
    if (z.isError(size) !== 0) throw new Error(`ZSTD_compress failed with code ${size >>> 0}`);
    return new Uint8Array(z.memory.buffer, dst, size).slice();
  } finally {
    if (src !== 0) z.free(src);
    if (dst !== 0) z.free(dst);
  }
}
