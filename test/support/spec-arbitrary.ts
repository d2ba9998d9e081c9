/**
 * fast-check arbitraries derived from spec/qcow2.ksy itself, not written per structure: the spec
 * model (src/codegen/ksy-model.ts) is interpreted field by field, so a field added to the spec is
 * generated without touching this file.
 *
 * Rules, all read off the spec:
 * - integers honour `valid:` (eq / any-of / min..max, bounds evaluated against earlier fields);
 *   enum fields are biased toward their known values; fast-check's integer bias supplies 0, max
 *   and the boundaries, so 64-bit halves reach all-bits-set and values above 2^53;
 * - a field that is the plain `size:` or `repeat-expr:` of a later field is a length field: the later
 *   field is generated first and the length set from it (unless the length is also passed to the
 *   later field's type as an argument, in which case it is generated first, small);
 * - computed sizes and counts are evaluated and honoured; `if:` conditions are evaluated, or are a
 *   free choice when they depend on `_io` (the end of the stream then has to follow);
 * - repeat-until lists end with an element that satisfies the condition, or at the end of the stream;
 * - byte strings with `pad-right` never end with the pad byte (it would be stripped on decode);
 * - a field that a computed size depends on stays within 64 KiB of its minimum (memory on failure);
 * - `eos` repeats of sub-byte bit fields fill whole bytes.
 */
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import * as generated from '../../generated/qcow2.ts';
import { type Expr, evaluate, namesIn } from '../../src/codegen/expression.ts';
import { type Attr, type CaseType, type KsySpec, type KsyType, readKsy, lowerCamel, upperCamel } from '../../src/codegen/ksy-model.ts';

/** The spec model, read once from spec/qcow2.ksy. */
export const spec: KsySpec = readKsy(parseYaml(readFileSync(new URL('../../spec/qcow2.ksy', import.meta.url), 'utf8')));

type Draw = <T>(arb: fc.Arbitrary<T>) => T;
type Obj = Record<string, unknown>;

/** Largest byte string generated for a computed size; above it the content is zeros plus a marker. */
const RANDOM_BYTES_LIMIT = 4096;

function encoderFor(typeName: string): (v: unknown, p?: unknown) => Uint8Array {
  const fn = (generated as unknown as Record<string, unknown>)[`encode${upperCamel(typeName)}`];
  if (typeof fn !== 'function') throw new Error(`generated/qcow2.ts has no encoder for ${typeName}`);
  return fn as (v: unknown, p?: unknown) => Uint8Array;
}

/** Evaluation environment over a partially generated object of type `t`. */
function envFor(t: KsyType, s: Obj, params: Obj, underscore?: unknown): Parameters<typeof evaluate>[1] {
  const valueOf = (type: KsyType, obj: Obj, p: Obj, name: string): unknown => {
    if (type.seq.some((a) => a.id === name)) return obj[lowerCamel(name)];
    const inst = type.instances.find((i) => i.id === name);
    if (inst?.kind === 'value') {
      if (inst.cond && !evaluate(inst.cond, envFor(type, obj, p))) return undefined;
      return evaluate(inst.value, envFor(type, obj, p));
    }
    if (type.params.some((x) => x.id === name)) return p[lowerCamel(name)];
    throw new Error(`arbitrary: cannot evaluate '${name}' in ${type.name}`);
  };
  const typeOfField = (type: KsyType, name: string): KsyType | undefined => {
    const a = type.seq.find((x) => x.id === name);
    return a?.type?.kind === 'user' ? spec.types.get(a.type.name) : undefined;
  };
  // Track the static type of member chains (only seq fields of user types are needed).
  const typed = new WeakMap<object, KsyType>();
  return {
    name: (name) => {
      if (name === '_') return underscore;
      if (name === '_io') return { eof: false };
      const v = valueOf(t, s, params, name);
      const ft = typeOfField(t, name);
      if (ft && typeof v === 'object' && v !== null) typed.set(v, ft);
      return v;
    },
    member: (obj, name) => {
      if (name === 'to_i') return obj;
      if (typeof obj !== 'object' || obj === null) throw new Error(`arbitrary: member ${name} of a non-object`);
      const ot = typed.get(obj);
      if (!ot) return (obj as Obj)[lowerCamel(name)];
      const v = valueOf(ot, obj as Obj, {}, name);
      const ft = typeOfField(ot, name);
      if (ft && typeof v === 'object' && v !== null) typed.set(v, ft);
      return v;
    },
    enumValue: (enumName, label) => {
      const e = spec.enums.get(enumName)?.entries.find((x) => x.label === label);
      if (!e) throw new Error(`arbitrary: unknown enum ${enumName}::${label}`);
      return e.value;
    },
  };
}

const isPlainName = (e: Expr | undefined): e is { k: 'name'; name: string } => e?.k === 'name';

/** Whether seq field `id` appears in a computed (not plain-name) size expression of `t`. */
function feedsSize(t: KsyType, id: string): boolean {
  return t.seq.some((a) => a.size !== undefined && !isPlainName(a.size) && namesIn(a.size).has(id));
}

/** Seq fields that size a later field and are also passed to its type: generated first, small. */
function smallFields(t: KsyType): Set<string> {
  const out = new Set<string>();
  for (const a of t.seq) {
    if (isPlainName(a.size) && a.type?.kind === 'user' && a.type.args.some((arg) => namesIn(arg).has((a.size as { name: string }).name))) {
      out.add(a.size.name);
    }
  }
  return out;
}

/** Seq fields whose value is the length of a later field, mapped to that later field. */
function lengthFields(t: KsyType): Map<string, Attr> {
  const out = new Map<string, Attr>();
  for (const a of t.seq) {
    const sizeE = a.size;
    const countE = a.repeat?.kind === 'expr' ? a.repeat.count : undefined;
    for (const e of [sizeE, countE]) {
      if (!isPlainName(e) || !t.seq.some((x) => x.id === e.name)) continue;
      const passedAsArg = a.type?.kind === 'user' && a.type.args.some((arg) => namesIn(arg).has(e.name));
      if (!passedAsArg) out.set(e.name, a);
    }
  }
  return out;
}

/**
 * Integers in [min, max], with the boundaries (all bits set, the top bit alone, ±1) drawn often on
 * purpose rather than left to fast-check's bias, so 64-bit halves reach 2^64-1 and values above 2^53.
 */
function withBoundaries(min: number, max: number): fc.Arbitrary<number> {
  const edges = [min, max, min + 1, max - 1, Math.floor((min + max + 1) / 2), 0x200000, 0x80000000]
    .filter((x) => x >= min && x <= max);
  return fc.oneof({ weight: 1, arbitrary: fc.constantFrom(...edges) }, { weight: 3, arbitrary: fc.integer({ min, max }) });
}

class Generator {
  constructor(private readonly draw: Draw) {}

  private bytes(n: number, avoidLast?: number): Uint8Array {
    let out: Uint8Array;
    if (n > RANDOM_BYTES_LIMIT) {
      out = new Uint8Array(n);
      out.set(this.draw(fc.uint8Array({ minLength: 16, maxLength: 16 })), n - 16);
    } else {
      out = this.draw(fc.uint8Array({ minLength: n, maxLength: n }));
    }
    if (avoidLast !== undefined && n > 0 && out[n - 1] === avoidLast) out[n - 1] = avoidLast ^ 1;
    return out;
  }

  private smallLength(): number {
    return this.draw(fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 48 })));
  }

  private intFor(t: KsyType, a: Attr, s: Obj, p: Obj, width: number, signed: boolean): number {
    const v = a.valid;
    const env = envFor(t, s, p);
    if (v?.kind === 'eq') return evaluate(v.value, env) as number;
    if (v?.kind === 'any-of') return this.draw(fc.constantFrom(...v.values.map((x) => evaluate(x, env) as number)));
    const full = signed ? { min: -(2 ** (width - 1)), max: 2 ** (width - 1) - 1 } : { min: 0, max: 2 ** width - 1 };
    if (v?.kind === 'range') {
      const min = v.min ? Math.max(full.min, evaluate(v.min, env) as number) : full.min;
      let max = v.max ? Math.min(full.max, evaluate(v.max, env) as number) : full.max;
      // A field that a later size is computed from stays within 64 KiB of its minimum, so that a
      // failing case shrinks and prints in reasonable memory (header_length may be up to 2 MiB).
      if (feedsSize(t, a.id)) max = Math.min(max, min + 65536);
      return this.draw(withBoundaries(min, max));
    }
    if (a.enumName) {
      const known = spec.enums.get(a.enumName)!.entries.map((x) => x.value);
      return this.draw(fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...known) }, { weight: 1, arbitrary: fc.integer(full) }));
    }
    return this.draw(withBoundaries(full.min, full.max));
  }

  private caseValue(t: KsyType, a: Attr, ct: CaseType, s: Obj, p: Obj): unknown {
    switch (ct.kind) {
      case 'int':
        return this.intFor(t, a, s, p, ct.width * 8, ct.signed);
      case 'bits':
        return ct.width === 1 ? this.draw(fc.boolean()) : this.intFor(t, a, s, p, ct.width, false);
      case 'str':
        throw new Error('str inside a switch');
      case 'user': {
        const target = spec.types.get(ct.name)!;
        const env = envFor(t, s, p);
        const args: Obj = {};
        target.params.forEach((param, i) => {
          args[lowerCamel(param.id)] = evaluate(ct.args[i]!, env);
        });
        return this.value(target, args);
      }
    }
  }

  /** One element of `a` (sizes apply per element). `state.end` is set when the stream must end. */
  private element(t: KsyType, a: Attr, s: Obj, p: Obj, state: { end: boolean }, lengths: Map<string, Attr>): unknown {
    const env = envFor(t, s, p);
    const derivedSize = isPlainName(a.size) && lengths.get(a.size.name) === a;
    const fixedSize = a.size && !derivedSize ? (evaluate(a.size, env) as number) : undefined;
    const rawBytes = (): Uint8Array => {
      if (a.sizeEos) return state.end ? new Uint8Array(0) : this.bytes(this.smallLength(), a.padRight);
      if (fixedSize !== undefined) {
        if (a.padRight !== undefined) return this.bytes(this.draw(fc.integer({ min: 0, max: fixedSize })), a.padRight);
        return this.bytes(fixedSize);
      }
      return this.bytes(this.smallLength(), a.padRight);
    };
    if (!a.type) return rawBytes();
    const ty = a.type;
    if (ty.kind === 'str') return String.fromCharCode(...rawBytes());
    if (ty.kind === 'switch') {
      const on = evaluate(ty.on, env);
      const hit = ty.cases.find((c) => evaluate(c.key, env) === on);
      if (hit) return this.caseValue(t, a, hit.type, s, p);
      return a.size || a.sizeEos ? rawBytes() : undefined;
    }
    return this.caseValue(t, a, ty, s, p);
  }

  /** A value of type `t` with parameters `p`: seq fields only, consistent with the spec. */
  value(t: KsyType, p: Obj): Obj {
    const s: Obj = {};
    const lengths = lengthFields(t);
    const small = smallFields(t);
    const state = { end: false };
    for (const a of t.seq) {
      const key = lowerCamel(a.id);
      if (lengths.has(a.id)) continue; // set when the field it measures is generated
      if (a.cond) {
        const free = namesIn(a.cond).has('_io');
        const present = free ? !state.end && this.draw(fc.boolean().map((b) => b || this.draw(fc.boolean()))) : Boolean(evaluate(a.cond, envFor(t, s, p)));
        if (!present) {
          if (free) state.end = true;
          continue;
        }
      }
      let v: unknown;
      if (small.has(a.id)) {
        v = this.smallLength();
      } else if (a.contents) {
        v = new Uint8Array(a.contents);
      } else if (!a.repeat) {
        v = this.element(t, a, s, p, state, lengths);
      } else {
        const arr: unknown[] = [];
        if (a.repeat.kind === 'expr') {
          const derived = isPlainName(a.repeat.count) && lengths.get(a.repeat.count.name) === a;
          const n = derived ? this.draw(fc.integer({ min: 0, max: 5 })) : (evaluate(a.repeat.count, envFor(t, s, p)) as number);
          for (let i = 0; i < n; i++) arr.push(this.element(t, a, s, p, state, lengths));
        } else if (a.repeat.kind === 'eos') {
          let n = state.end ? 0 : this.draw(fc.integer({ min: 0, max: 12 }));
          if (a.type && a.type.kind !== 'switch' && a.type.kind === 'bits') n -= n % (8 / gcd(a.type.width, 8));
          if (a.type?.kind === 'switch') n = this.alignedSwitchCount(t, a, s, p, n);
          for (let i = 0; i < n; i++) arr.push(this.element(t, a, s, p, state, lengths));
          state.end = true;
        } else {
          const cond = a.repeat.cond;
          const stops = (el: unknown): boolean => Boolean(evaluate(cond, envFor(t, s, p, el)));
          const count = this.draw(fc.integer({ min: 0, max: 4 }));
          for (let i = 0; i < count; i++) {
            const el = this.element(t, a, s, p, state, lengths);
            arr.push(el);
            if (stops(el)) break;
          }
          const last = arr[arr.length - 1];
          const terminated = arr.length > 0 && stops(last);
          if (!terminated && this.draw(fc.boolean())) {
            for (let tries = 0; tries < 32; tries++) {
              const el = this.element(t, a, s, p, state, lengths);
              if (stops(el)) {
                arr.push(el);
                break;
              }
            }
          }
          if (arr.length === 0 || !stops(arr[arr.length - 1])) {
            // Without a terminator the decoder stops at the end of the stream; with no element
            // at all the `if: not _io.eof` guard must have been false instead.
            state.end = true;
            if (arr.length === 0) continue;
          }
        }
        v = arr;
      }
      s[key] = v;
      // Fill the length fields this one determines.
      for (const [lenId, measured] of lengths) {
        if (measured !== a) continue;
        if (isPlainName(a.size) && a.size.name === lenId) s[lowerCamel(lenId)] = this.encodedLength(t, a, v, s, p);
        if (a.repeat?.kind === 'expr' && isPlainName(a.repeat.count) && a.repeat.count.name === lenId) s[lowerCamel(lenId)] = (v as unknown[]).length;
      }
    }
    return s;
  }

  private encodedLength(t: KsyType, a: Attr, v: unknown, s: Obj, p: Obj): number {
    if (v instanceof Uint8Array) return v.length;
    if (typeof v === 'string') return v.length;
    const ty = a.type;
    let ct: CaseType | undefined;
    if (ty?.kind === 'switch') {
      const env = envFor(t, s, p);
      ct = ty.cases.find((c) => evaluate(c.key, env) === evaluate(ty.on, env))?.type;
    } else {
      ct = ty;
    }
    if (ct?.kind !== 'user') throw new Error(`arbitrary: cannot measure ${a.path}`);
    const target = spec.types.get(ct.name)!;
    const env = envFor(t, s, p);
    const args: Obj = {};
    target.params.forEach((param, i) => {
      args[lowerCamel(param.id)] = evaluate((ct as { args: readonly Expr[] }).args[i]!, env);
    });
    return encoderFor(ct.name)(v, args).length;
  }

  /** For an eos repeat over a switch (refcount blocks), round the count to whole bytes of the chosen case. */
  private alignedSwitchCount(t: KsyType, a: Attr, s: Obj, p: Obj, n: number): number {
    const ty = a.type;
    if (ty?.kind !== 'switch') return n;
    const env = envFor(t, s, p);
    const hit = ty.cases.find((c) => evaluate(c.key, env) === evaluate(ty.on, env));
    if (hit?.type.kind === 'bits') return n - (n % (8 / gcd(hit.type.width, 8)));
    return n;
  }
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/** An arbitrary of seq-field values of spec type `typeName` with parameters `params`. */
export function arbitraryOf(typeName: string, params: Obj = {}): fc.Arbitrary<Obj> {
  const t = spec.types.get(typeName);
  if (!t) throw new Error(`no type ${typeName} in the spec`);
  // No shrinking: shrinking a fc.gen() value with hundreds of dependent draws does not terminate in
  // useful time or memory. A failure still prints its seed and path, which replay it exactly.
  return fc.noShrink(fc.gen().map((g) => new Generator((arb) => g(() => arb)).value(t, params)));
}

/** Parameter domains, taken from the header's valid: rules (cluster_bits 9..21, refcount_order 0..6). */
export function arbitraryParams(typeName: string, opts: { maxClusterBits?: number } = {}): fc.Arbitrary<Obj> {
  const t = spec.types.get(typeName)!;
  const header = spec.types.get('header')!;
  const range = (field: string): { min: number; max: number } => {
    const v = header.seq.find((a) => a.id === field)?.valid;
    if (v?.kind !== 'range') throw new Error(`header.${field} has no min/max rule`);
    const num = (e: Expr | undefined, d: number): number => (e?.k === 'num' ? e.v : d);
    return { min: num(v.min, 0), max: num(v.max, 2 ** 32 - 1) };
  };
  const rec: Record<string, fc.Arbitrary<unknown>> = {};
  for (const p of t.params) {
    const key = lowerCamel(p.id);
    if (p.type === 'bool') rec[key] = fc.boolean();
    else if (p.id === 'cluster_bits') {
      const r = range('cluster_bits');
      rec[key] = fc.integer({ min: r.min, max: Math.min(r.max, opts.maxClusterBits ?? r.max) });
    } else if (p.id === 'refcount_order') rec[key] = fc.integer(range('refcount_order'));
    else rec[key] = fc.integer({ min: 0, max: 64 });
  }
  return fc.record(rec) as fc.Arbitrary<Obj>;
}

/** Every spec type name except the root (whose extension area size depends on the whole file). */
export function roundTripTypes(): string[] {
  return [...spec.types.keys()].filter((n) => n !== spec.id);
}
