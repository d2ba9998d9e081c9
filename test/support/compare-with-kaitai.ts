/**
 * Field-by-field cross-check of our generated decoder (generated/qcow2.ts) against
 * kaitai-struct-compiler's JavaScript (generated/kaitai/Qcow2.cjs) on the same bytes.
 *
 * Both trees are walked together: every own property of ours (seq fields, value instances and lazy
 * pointer instances alike) is read on both sides and compared; objects and arrays are entered,
 * pointer instances are followed. A property that throws on one side must throw on the other, and
 * ours may only ever throw Qcow2FormatError. The walk is bounded by a node budget, and pointer
 * instances are deduplicated by (type, absolute position[, count]) so that a hostile image that
 * points every L1 entry at the same L2 table costs one table, not l1_size tables.
 *
 * Kaitai's JavaScript runtime (kaitai-struct 0.11.0) is not exact in three places that a hostile
 * image reaches. Each is recognised by a precise predicate and reported as a `quirk`, never as a
 * silent pass; everything else that differs is a `difference`:
 *
 *  - `kaitai-seek-clamps`: `KaitaiStream.prototype.seek` clamps the position into [0, size]
 *    (and maps NaN to 0). A `pos:` instance whose position is past the end of the file therefore
 *    reads at the end of the file in Kaitai; if it reads zero bytes there (l1_size 0, nb_snapshots 0,
 *    refcount_table_clusters 0, backing_file_size 0, bitmap_directory_size 0, bitmap_table_size 0),
 *    Kaitai returns an empty value where ours throws `truncated` ("position … is outside …").
 *    Accepted only when ours threw exactly that error and Kaitai's value is empty. Example: the
 *    snapshots image truncated to 262145 bytes with nb_snapshots 0 (snapshots_offset 917504).
 *  - `kaitai-length-int32`: `KaitaiStream.prototype.mapUint8Array` (behind every `readBytes`) does
 *    `length |= 0`, so a byte count ≥ 2^31 is reduced modulo 2^32 to an int32: negative ones throw a
 *    RangeError (agreeing with ours), non-negative ones read a short window and parse garbage. This
 *    happens for sizes computed from 64-bit or multiplied fields: `extensions_end - len_header`
 *    (backing_file_offset ≥ 2^32), `refcount_table_clusters * cluster_size`, and
 *    `bitmap_directory_size`. Accepted only when ours threw a Qcow2FormatError whose detail names a
 *    byte count ≥ 2^31 (`needs N byte(s)` / `size N is not a valid byte count`) and Kaitai did not throw. Examples:
 *    refcount_table_clusters = 2^31 (2^31 * 65536 | 0 = 0: Kaitai reads an empty refcount table);
 *    backing_file_offset = 2^64-1 (Kaitai reads an empty header extension area).
 *  - `kaitai-stale-bits`: `readBitsIntBe` updates `bitsLeft` before `readBytes`, so an EOF inside a
 *    bit field leaves the shared root stream with buffered bits, and `seek` does not clear them. The
 *    next bit-field structure read on the root stream (an L1 table, a snapshot's L1 table, a bitmap
 *    table) would then start with stale bits and decode shifted values. After every error Kaitai
 *    throws, the walker clears the root stream's bit buffer (`alignToByte()`, what Kaitai would need
 *    to do on seek) and records the quirk when there were bits to clear. Example: compat-0.10 with
 *    l1_size = 2^31-1 - the active L1 table hits EOF one bit into an entry, and without the clearing
 *    Kaitai decodes snapshots[0].l1Table[0] shifted by 7 bits (copied false, reserved_hi 1).
 *
 * Kaitai's numbers for `u64.num` and positions are doubles computed by the same expression as ours,
 * so they are compared strictly like every other number (positions ≥ 2^53 fail on both sides).
 */
import { createRequire } from 'node:module';
import { decodeQcow2 } from '../../generated/qcow2.ts';
import { isQcow2FormatError } from '../../src/codec/errors.ts';

const require = createRequire(import.meta.url);

/** The KaitaiStream class of the kaitai-struct runtime (untyped CommonJS). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type KaitaiStreamClass = new (bytes: Uint8Array | ArrayBuffer) => any;
/** Kaitai's generated Qcow2 class (untyped CommonJS). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type KaitaiQcow2Class = new (io: any) => any;

let kaitaiModules: { Qcow2: KaitaiQcow2Class; KaitaiStream: KaitaiStreamClass } | undefined;

/** Loads kaitai-struct-compiler's Qcow2 parser and the KaitaiStream runtime (CommonJS, once). */
export function loadKaitai(): { Qcow2: KaitaiQcow2Class; KaitaiStream: KaitaiStreamClass } {
  if (kaitaiModules === undefined) {
    const mod = require('../../generated/kaitai/Qcow2.cjs') as { Qcow2: KaitaiQcow2Class };
    const KaitaiStream = require('kaitai-struct/KaitaiStream') as KaitaiStreamClass;
    kaitaiModules = { Qcow2: mod.Qcow2, KaitaiStream };
  }
  return kaitaiModules;
}

/** Decodes `bytes` with Kaitai's parser; throws whatever Kaitai throws. */
export function decodeWithKaitai(bytes: Uint8Array): unknown {
  const { Qcow2, KaitaiStream } = loadKaitai();
  return new Qcow2(new KaitaiStream(bytes));
}

/** The documented ways Kaitai's runtime is not exact (see the file comment). */
export type KaitaiQuirk = 'kaitai-seek-clamps' | 'kaitai-length-int32' | 'kaitai-stale-bits';

/** One place where the two trees disagree. */
export interface Difference {
  /** Where, e.g. `root.l1Table[0].l2Table.entries[3].hostOffsetLo`. */
  readonly path: string;
  /** What kind of disagreement. */
  readonly kind:
    | 'value' // different numbers, booleans, strings, or different types
    | 'bytes' // byte arrays of different length or content
    | 'length' // arrays of different length
    | 'missing' // a property one side has and the other lacks
    | 'only-ours-threw'
    | 'only-kaitai-threw'
    | 'foreign-error'; // ours threw something other than Qcow2FormatError
  /** Our side, printed. */
  readonly ours: string;
  /** Kaitai's side, printed. */
  readonly kaitai: string;
}

/** A place where a documented Kaitai quirk explained a disagreement (not a difference). */
export interface QuirkHit {
  readonly path: string;
  readonly quirk: KaitaiQuirk;
  readonly detail: string;
}

/** A place where both sides threw (the subtree below it is not compared). */
export interface BothThrew {
  readonly path: string;
  /** Our Qcow2FormatError's message. */
  readonly ours: string;
  /** Kaitai's error, `Name: message`. */
  readonly kaitai: string;
}

/** The outcome of one comparison. */
export interface CompareReport {
  /** Leaf values (numbers, booleans, strings, byte arrays, absent values) compared equal or not. */
  readonly compared: number;
  /** Nodes visited (leaves, objects, arrays), bounded by the budget. */
  readonly nodes: number;
  /** True when the budget ran out before the walk finished (the rest was not compared). */
  readonly budgetExhausted: boolean;
  /** Pointer instances not followed again because (type, position) was already compared. */
  readonly deduplicated: number;
  /** Every disagreement, in walk order (at most `maxDifferences`). */
  readonly differences: readonly Difference[];
  /** Disagreements explained by a documented Kaitai quirk. */
  readonly quirks: readonly QuirkHit[];
  /** Properties where both sides threw. */
  readonly bothThrew: readonly BothThrew[];
  /**
   * Visited nodes per path shape (indices erased), e.g. `root.l1Table[].l2Table.entries[]` →
   * number of L2 entries compared. Lets a test assert the walk reached a structure.
   */
  readonly shapes: ReadonlyMap<string, number>;
}

/** Options of compareWithKaitai. */
export interface CompareOptions {
  /** Maximum number of nodes to visit. Default: 64 per byte of input plus 100 000. */
  readonly budget?: number;
  /** Stop recording after this many differences (the walk continues). Default 100. */
  readonly maxDifferences?: number;
  /**
   * Decode Kaitai's side from these bytes instead of `bytes` — only to prove that the walk reports
   * differences (a mutated copy against the original).
   */
  readonly kaitaiBytes?: Uint8Array;
  /**
   * Clear Kaitai's stale root-stream bits after an error (the `kaitai-stale-bits` quirk). Default
   * true; false shows the shifted values Kaitai would otherwise decode.
   */
  readonly clearKaitaiStaleBits?: boolean;
}

/**
 * Decodes `bytes` with our decoder and with Kaitai's, walks both trees together and reports every
 * disagreement. Never throws for any input: decoding errors become `bothThrew` entries (top level
 * path `root`) or differences. The walk visits at most `budget` nodes and follows each pointer
 * instance (L2 table, refcount block, snapshot L1 table, bitmap directory/table) once per
 * (type, position), so its cost is bounded and linear in the file size for non-overlapping layouts.
 */
export function compareWithKaitai(bytes: Uint8Array, options: CompareOptions = {}): CompareReport {
  const walker = new Walker(options.budget ?? 64 * bytes.length + 100_000, options.maxDifferences ?? 100);
  const kBytes = options.kaitaiBytes ?? bytes;
  const ours = attempt(() => decodeQcow2(bytes));
  const kaitai = attempt(() => decodeWithKaitai(kBytes));
  if (kaitai.ok && options.clearKaitaiStaleBits !== false) walker.kaitaiRootIo = (kaitai.value as { _io?: unknown })._io;
  walker.compareOutcomes('', 'root', '', ours, kaitai);
  return walker.report();
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

function attempt(f: () => unknown): Outcome {
  try {
    return { ok: true, value: f() };
  } catch (error) {
    return { ok: false, error };
  }
}

const TWO_31 = 2 ** 31;

/** Computes the dedupe key of a pointer instance `name` on our object `obj`, if it is one. */
function pointerKey(obj: Record<string, unknown>, name: string): string | undefined {
  const u64 = (v: unknown): string | undefined => {
    const o = v as { hi?: unknown; lo?: unknown } | undefined;
    return o !== undefined && typeof o.hi === 'number' && typeof o.lo === 'number' ? `${o.hi}:${o.lo}` : undefined;
  };
  switch (name) {
    // Unallocated entries (offset 0) are cheap and not deduplicated: both sides must give undefined.
    case 'l2Table':
      return typeof obj['l2OffsetHi'] === 'number' && (obj['l2OffsetHi'] !== 0 || obj['l2OffsetLo'] !== 0)
        ? `l2_table@${obj['l2OffsetHi']}:${String(obj['l2OffsetLo'])}`
        : undefined;
    case 'refcountBlock':
      return typeof obj['refblockOffsetHi'] === 'number' && (obj['refblockOffsetHi'] !== 0 || obj['refblockOffsetLo'] !== 0)
        ? `refcount_block@${obj['refblockOffsetHi']}:${String(obj['refblockOffsetLo'])}`
        : undefined;
    case 'l1Table': {
      // Only snapshot entries carry l1TableOffset; the root's l1Table is visited once anyway.
      const at = u64(obj['l1TableOffset']);
      return at !== undefined ? `snapshot_l1_table@${at}#${String(obj['l1Size'])}` : undefined;
    }
    case 'bitmapTable': {
      const at = u64(obj['bitmapTableOffset']);
      return at !== undefined ? `bitmap_table@${at}#${String(obj['bitmapTableSize'])}` : undefined;
    }
    case 'bitmapDirectory': {
      const at = u64(obj['bitmapDirectoryOffset']);
      const size = u64(obj['bitmapDirectorySize']);
      return at !== undefined && size !== undefined ? `bitmap_directory@${at}#${size}` : undefined;
    }
    default:
      return undefined;
  }
}

/** Per Kaitai class: its constructor parameters (own properties, not format fields) and its instance getters. */
interface KaitaiClassInfo {
  readonly params: ReadonlySet<string>;
  readonly getters: readonly string[];
}
const kaitaiClassCache = new Map<object | null, KaitaiClassInfo>();
function kaitaiClass(proto: object | null): KaitaiClassInfo {
  let info = kaitaiClassCache.get(proto);
  if (info === undefined) {
    const ctor = (proto as { constructor?: unknown } | null)?.constructor;
    const src = typeof ctor === 'function' ? Function.prototype.toString.call(ctor) : '';
    const m = /^function\s*\w*\s*\(([^)]*)\)/.exec(src);
    const names = m?.[1]?.split(',').map((x) => x.trim()) ?? [];
    const getters =
      proto === null || proto === Object.prototype
        ? []
        : Object.getOwnPropertyNames(proto).filter(
            (n) => !n.startsWith('_') && n !== 'constructor' && Object.getOwnPropertyDescriptor(proto, n)?.get !== undefined,
          );
    info = { params: new Set(names.filter((n) => n !== '' && !n.startsWith('_'))), getters };
    kaitaiClassCache.set(proto, info);
  }
  return info;
}

/** Kaitai's format-level property names of `k`: seq fields (own) and instances (prototype getters). */
function kaitaiFieldNames(k: object): string[] {
  const info = kaitaiClass(Object.getPrototypeOf(k) as object | null);
  const out: string[] = [];
  for (const n of Object.keys(k)) if (n.charCodeAt(0) !== 95 /* _ */ && !info.params.has(n)) out.push(n);
  for (const n of info.getters) out.push(n);
  return out;
}

function show(v: unknown): string {
  if (v instanceof Uint8Array) return `bytes[${v.length}]`;
  if (Array.isArray(v)) return `array[${v.length}]`;
  if (typeof v === 'string') return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v);
  if (typeof v === 'bigint') return `${v}n`;
  if (v !== null && typeof v === 'object') return 'object';
  return String(v);
}

function showError(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : `thrown ${String(e)}`;
}

function isEmptyValue(v: unknown): boolean {
  if (v === undefined || v === '') return true;
  if (v instanceof Uint8Array || Array.isArray(v)) return v.length === 0;
  if (v !== null && typeof v === 'object') {
    return kaitaiFieldNames(v).every((n) => {
      const f = (v as Record<string, unknown>)[n];
      return f === undefined || ((f instanceof Uint8Array || Array.isArray(f)) && f.length === 0);
    });
  }
  return false;
}

/** A path segment: a property name or an array index. */
type Segment = string | number;

function joinPath(parent: string, seg: Segment): string {
  if (parent === '') return String(seg);
  return typeof seg === 'number' ? `${parent}[${seg}]` : `${parent}.${seg}`;
}

class Walker {
  private nodes = 0;
  private compared = 0;
  private exhausted = false;
  private deduplicated = 0;
  private readonly differences: Difference[] = [];
  private readonly quirks: QuirkHit[] = [];
  private readonly bothThrew: BothThrew[] = [];
  /** parent shape → segment (name, or `[]` for elements) → nodes visited. */
  private readonly shapeCounts = new Map<string, Map<string, number>>();
  private readonly seenPointers = new Set<string>();
  /** Kaitai's root KaitaiStream (for the stale-bits quirk). */
  kaitaiRootIo: unknown;

  constructor(
    private readonly budget: number,
    private readonly maxDifferences: number,
  ) {}

  report(): CompareReport {
    const shapes = new Map<string, number>();
    for (const [parent, children] of this.shapeCounts) {
      for (const [seg, n] of children) shapes.set(seg === '[]' ? `${parent}[]` : parent === '' ? seg : `${parent}.${seg}`, n);
    }
    return {
      compared: this.compared,
      nodes: this.nodes,
      budgetExhausted: this.exhausted,
      deduplicated: this.deduplicated,
      differences: this.differences,
      quirks: this.quirks,
      bothThrew: this.bothThrew,
      shapes,
    };
  }

  private differ(path: string, kind: Difference['kind'], ours: string, kaitai: string): void {
    if (this.differences.length < this.maxDifferences) this.differences.push({ path, kind, ours, kaitai });
  }

  /** Compares the outcomes of reading the same property on both sides. */
  compareOutcomes(parentPath: string, seg: Segment, parentShape: string, ours: Outcome, kaitai: Outcome): void {
    if (!kaitai.ok) this.clearKaitaiBits(joinPath(parentPath, seg));
    if (!ours.ok && !isQcow2FormatError(ours.error)) {
      this.differ(joinPath(parentPath, seg), 'foreign-error', showError(ours.error), kaitai.ok ? show(kaitai.value) : showError(kaitai.error));
      return;
    }
    if (!ours.ok && !kaitai.ok) {
      this.bothThrew.push({ path: joinPath(parentPath, seg), ours: showError(ours.error), kaitai: showError(kaitai.error) });
      return;
    }
    if (!ours.ok && kaitai.ok) {
      const quirk = this.explainOursThrew(ours.error as Error, kaitai.value);
      const path = joinPath(parentPath, seg);
      if (quirk !== undefined) this.quirks.push({ path, quirk, detail: (ours.error as Error).message });
      else this.differ(path, 'only-ours-threw', showError(ours.error), show(kaitai.value));
      return;
    }
    if (ours.ok && !kaitai.ok) {
      this.differ(joinPath(parentPath, seg), 'only-kaitai-threw', show(ours.value), showError(kaitai.error));
      return;
    }
    this.compareValues(parentPath, seg, parentShape, (ours as { value: unknown }).value, (kaitai as { value: unknown }).value);
  }

  /** Which documented quirk (if any) explains ours throwing where Kaitai returned `kValue`. */
  private explainOursThrew(e: Error, kValue: unknown): KaitaiQuirk | undefined {
    const detail = (e as { detail?: string }).detail ?? e.message;
    // ByteReader.at() (only used by pos: instances): "position P is outside the N-byte region it
    // points into" - P is past the end or not a safe integer; Kaitai clamped and read nothing.
    if (/^position \S+ is outside/.test(detail) && isEmptyValue(kValue)) return 'kaitai-seek-clamps';
    // ByteReader.ensure(): "needs N byte(s) at …"; checkSize(): "size N is not a valid byte count".
    const needs = /^needs (\d+) byte\(s\)/.exec(detail) ?? /^size (\S+) is not a valid byte count/.exec(detail);
    if (needs !== null && Number(needs[1]) >= TWO_31) return 'kaitai-length-int32';
    return undefined;
  }

  private clearKaitaiBits(path: string): void {
    const io = this.kaitaiRootIo as { bitsLeft?: number; alignToByte?: () => void } | undefined;
    if (io !== undefined && typeof io.bitsLeft === 'number' && io.bitsLeft !== 0 && typeof io.alignToByte === 'function') {
      this.quirks.push({ path, quirk: 'kaitai-stale-bits', detail: `cleared ${io.bitsLeft} buffered bit(s) of Kaitai's root stream` });
      io.alignToByte();
    }
  }

  /** Counts one node; false (and the walk stops) when the budget is spent. */
  private visit(parentShape: string, seg: Segment): boolean {
    if (this.nodes >= this.budget) {
      this.exhausted = true;
      return false;
    }
    this.nodes++;
    const key = typeof seg === 'number' ? '[]' : seg;
    let children = this.shapeCounts.get(parentShape);
    if (children === undefined) this.shapeCounts.set(parentShape, (children = new Map()));
    children.set(key, (children.get(key) ?? 0) + 1);
    return true;
  }

  /**
   * Compares two values found at `parentPath` + `seg`. Paths of leaves are only built when they
   * differ; `parentShape` is the parent's path with array indices erased (the key of `shapes`).
   */
  private compareValues(parentPath: string, seg: Segment, parentShape: string, a: unknown, b: unknown): void {
    if (!this.visit(parentShape, seg)) return;
    if (a instanceof Uint8Array) {
      this.compared++;
      if (!(b instanceof Uint8Array) || a.length !== b.length) return this.differ(joinPath(parentPath, seg), 'bytes', show(a), show(b));
      for (let i = 0; i < a.length; i++) {
        if (a[i] !== b[i]) return this.differ(joinPath(parentPath, seg), 'bytes', `byte ${i} = ${a[i]}`, `byte ${i} = ${b[i]}`);
      }
      return;
    }
    if (a === null || typeof a !== 'object') {
      this.compared++;
      if (typeof a !== typeof b || (a !== b && !(Number.isNaN(a) && Number.isNaN(b)))) this.differ(joinPath(parentPath, seg), 'value', show(a), show(b));
      return;
    }
    const path = joinPath(parentPath, seg);
    const shape = parentShape === '' ? String(seg) : typeof seg === 'number' ? `${parentShape}[]` : `${parentShape}.${seg}`;
    if (Array.isArray(a)) {
      if (!Array.isArray(b)) return this.differ(path, 'value', show(a), show(b));
      if (a.length !== b.length) this.differ(path, 'length', show(a), show(b));
      const n = Math.min(a.length, b.length);
      for (let i = 0; i < n && !this.exhausted; i++) this.compareValues(path, i, shape, a[i], b[i]);
      return;
    }
    if (b === null || typeof b !== 'object' || Array.isArray(b) || b instanceof Uint8Array) return this.differ(path, 'value', show(a), show(b));
    this.compareObjects(path, shape, a as Record<string, unknown>, b as Record<string, unknown>);
  }

  private compareObjects(path: string, shape: string, a: Record<string, unknown>, b: Record<string, unknown>): void {
    const names = Object.getOwnPropertyNames(a);
    const kNames = kaitaiFieldNames(b);
    if (kNames.length !== names.length || kNames.some((n) => !Object.prototype.hasOwnProperty.call(a, n))) {
      for (const n of kNames) if (!Object.prototype.hasOwnProperty.call(a, n)) this.differ(`${path}.${n}`, 'missing', '(absent)', 'present');
    }
    for (const name of names) {
      if (this.exhausted) return;
      if (!(name in b)) {
        this.differ(`${path}.${name}`, 'missing', 'present', '(absent)');
        continue;
      }
      const key = pointerKey(a, name);
      if (key !== undefined) {
        if (this.seenPointers.has(key)) {
          this.deduplicated++;
          continue;
        }
        this.seenPointers.add(key);
      }
      let ours: Outcome;
      let kaitai: Outcome;
      try {
        ours = { ok: true, value: a[name] };
      } catch (error) {
        ours = { ok: false, error };
      }
      try {
        kaitai = { ok: true, value: b[name] };
      } catch (error) {
        kaitai = { ok: false, error };
      }
      this.compareOutcomes(path, name, shape, ours, kaitai);
    }
  }
}
