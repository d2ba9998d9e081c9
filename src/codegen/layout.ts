/**
 * Where a type's seq fields are, computed from the spec alone: for every field whose byte offset and
 * size do not depend on the data, its place (and, for a bit field, its shift and width within the
 * big-endian word it belongs to); the length of the fixed prefix every instance starts with; and the
 * value instances that pick the upper or lower part of a bit field at a parameter-dependent split.
 * src/codegen/emit-typescript.ts turns these into the layout, mask and shift constants of
 * generated/qcow2.ts.
 *
 * Conditional fields: the `if:` conditions of a type's seq are split into atoms (what remains after
 * removing `not`, `and` and `or`), and the seq is walked once for every truth assignment of the atoms
 * (skipping assignments that contradict themselves, such as `x > 105` true with `x > 104` false). A
 * field is placed when it has the same place in every assignment in which it is present — e.g. the
 * version-3 header fields (present together), or the extended L2 bitmap word (after 64 bits of word 0
 * whether the entry is compressed or not).
 *
 * Bit fields: a run of consecutive bit fields (Kaitai reads them most significant bit first and aligns
 * to the next byte at the first non-bit field) is one big-endian word of the run's whole bytes; a run
 * longer than 8 bytes is cut into 8-byte words (qcow2 describes its entries as 64-bit words). A field's
 * shift is the number of the word's least significant bit that the field occupies.
 */
import type { Expr } from './expression.ts';
import { type Attr, type KsySpec, type KsyType, KsyError } from './ksy-model.ts';

/** The place of one seq field. */
export interface FieldPlace {
  /** The field's spec id. */
  readonly id: string;
  /** Byte offset from the start of the structure (of the field's word, for a bit field). */
  readonly offset: number;
  /** Size in bytes (of the field's word, for a bit field). */
  readonly size: number;
  /** For a bit field: its lowest bit within the big-endian word, and its width in bits. */
  readonly bits?: { readonly shift: number; readonly width: number };
}

/** A value instance that is the part of a bit field from a parameter-dependent bit upward or below it. */
export interface SubfieldInstance {
  /** The instance's spec id. */
  readonly id: string;
  /** The bit field it is part of (placed, with bits). */
  readonly field: FieldPlace;
  /** 'upper': `field >> split`; 'lower': `field & ((1 << split) - 1)`. */
  readonly part: 'upper' | 'lower';
  /** The split, an expression over the type's params only (value instances substituted). */
  readonly split: Expr;
  /** The params `split` uses. */
  readonly params: readonly string[];
}

/** What layout constants a type gets. */
export interface TypeLayout {
  /** The placed fields, in seq order. */
  readonly fields: readonly FieldPlace[];
  /** Bytes of the leading unconditional, unrepeated fields of static size (undefined if none or not whole bytes). */
  readonly fixedSize?: number;
  /** Value instances that are a parameter-dependent part of a placed bit field. */
  readonly subfields: readonly SubfieldInstance[];
}

/** At most this many distinct condition atoms per type are enumerated (2^12 walks); beyond, conditional fields are not placed. */
const MAX_ATOMS = 12;

const key = (e: Expr): string => JSON.stringify(e);

/** The atoms of a condition: its subexpressions that are not `not`, `and` or `or`. */
function atomsOf(e: Expr, out: Map<string, Expr>): void {
  if (e.k === 'unary' && e.op === 'not') return atomsOf(e.e, out);
  if (e.k === 'binary' && (e.op === 'and' || e.op === 'or')) {
    atomsOf(e.l, out);
    atomsOf(e.r, out);
    return;
  }
  out.set(key(e), e);
}

/** The condition's truth when each atom has the truth `truth` gives it. */
function truthOf(e: Expr, truth: (atom: string) => boolean): boolean {
  if (e.k === 'unary' && e.op === 'not') return !truthOf(e.e, truth);
  if (e.k === 'binary' && e.op === 'and') return truthOf(e.l, truth) && truthOf(e.r, truth);
  if (e.k === 'binary' && e.op === 'or') return truthOf(e.l, truth) || truthOf(e.r, truth);
  return truth(key(e));
}

/**
 * An atom `x >= n`, `x > n`, `x <= n` or `x < n` (x a name or member, n a literal) as "x ≥ threshold"
 * and whether the atom being true means that is true; undefined for any other atom.
 */
function thresholdOf(e: Expr): { subject: string; threshold: number; atLeast: boolean } | undefined {
  if (e.k !== 'binary' || e.r.k !== 'num' || (e.l.k !== 'name' && e.l.k !== 'member')) return undefined;
  const subject = key(e.l);
  const n = e.r.v;
  switch (e.op) {
    case '>=': return { subject, threshold: n, atLeast: true };
    case '>': return { subject, threshold: n + 1, atLeast: true };
    case '<': return { subject, threshold: n, atLeast: false };
    case '<=': return { subject, threshold: n + 1, atLeast: false };
    default: return undefined;
  }
}

/** Whether the threshold atoms' truths agree (x ≥ a true and a ≥ b imply x ≥ b true). */
function consistent(atoms: readonly Expr[], truths: readonly boolean[]): boolean {
  const facts: { subject: string; threshold: number; holds: boolean }[] = [];
  atoms.forEach((a, i) => {
    const t = thresholdOf(a);
    if (t) facts.push({ subject: t.subject, threshold: t.threshold, holds: t.atLeast === truths[i] });
  });
  for (const f of facts) {
    for (const g of facts) {
      if (f.subject === g.subject && f.holds && !g.holds && g.threshold <= f.threshold) return false;
    }
  }
  return true;
}

/** The static size in bits of one element of `a`, or undefined when it depends on the data. */
function staticBits(spec: KsySpec, a: Attr, seen: ReadonlySet<string>): number | undefined {
  if (a.repeat) return undefined;
  if (a.contents) return a.contents.length * 8;
  if (a.size) return a.size.k === 'num' ? a.size.v * 8 : undefined;
  if (a.sizeEos || !a.type) return undefined;
  switch (a.type.kind) {
    case 'int': return a.type.width * 8;
    case 'bits': return a.type.width;
    case 'user': return staticTypeBits(spec, a.type.name, seen);
    default: return undefined;
  }
}

/** The size in bits of a type whose seq is unconditional with static sizes (byte aligned), else undefined. */
function staticTypeBits(spec: KsySpec, name: string, seen: ReadonlySet<string>): number | undefined {
  if (seen.has(name)) return undefined;
  const t = spec.types.get(name);
  if (!t) throw new KsyError(`unknown type '${name}'`);
  let bits = 0;
  for (const a of t.seq) {
    if (a.cond) return undefined;
    const b = staticBits(spec, a, new Set([...seen, name]));
    if (b === undefined) return undefined;
    // A user type or integer after bit fields starts at the next byte.
    bits = a.type?.kind === 'bits' ? bits + b : Math.ceil(bits / 8) * 8 + b;
  }
  return Math.ceil(bits / 8) * 8;
}

/**
 * Places of the fields present in one truth assignment ('unknown' once a size depends on the data).
 * `present` says whether a conditional field is present, or undefined when that cannot be told.
 */
function walk(spec: KsySpec, t: KsyType, present: (a: Attr) => boolean | undefined): Map<string, FieldPlace | 'unknown'> {
  const out = new Map<string, FieldPlace | 'unknown'>();
  let pos: number | undefined = 0; // bits
  let run: { start: number; fields: { id: string; start: number; width: number }[] } | undefined;
  const closeRun = (): void => {
    if (!run || pos === undefined) return;
    const bytes = Math.ceil((pos - run.start) / 8);
    const wordBytes = bytes <= 8 ? bytes : 8;
    for (const f of run.fields) {
      const rel = f.start - run.start;
      const word = Math.floor(rel / (wordBytes * 8));
      const wordStart = word * wordBytes * 8;
      const fits = (bytes <= 8 || bytes % 8 === 0) && rel + f.width <= wordStart + wordBytes * 8;
      out.set(f.id, fits
        ? { id: f.id, offset: run.start / 8 + word * wordBytes, size: wordBytes, bits: { shift: wordStart + wordBytes * 8 - rel - f.width, width: f.width } }
        : 'unknown');
    }
    pos = run.start + bytes * 8;
    run = undefined;
  };
  for (const a of t.seq) {
    const here = a.cond ? present(a) : true;
    if (here === false) continue;
    if (here === undefined) {
      closeRun();
      pos = undefined;
    }
    if (pos === undefined) {
      out.set(a.id, 'unknown');
      continue;
    }
    if (a.type?.kind === 'bits' && !a.repeat) {
      if (a.type.le) {
        closeRun();
        out.set(a.id, 'unknown');
        pos = undefined;
        continue;
      }
      run ??= { start: pos, fields: [] };
      run.fields.push({ id: a.id, start: pos, width: a.type.width });
      pos += a.type.width;
      continue;
    }
    closeRun();
    const bits = staticBits(spec, a, new Set([t.name]));
    if (bits === undefined) {
      out.set(a.id, 'unknown');
      pos = undefined;
      continue;
    }
    out.set(a.id, { id: a.id, offset: pos / 8, size: bits / 8 });
    pos += bits;
  }
  closeRun();
  return out;
}

const samePlace = (x: FieldPlace, y: FieldPlace): boolean =>
  x.offset === y.offset && x.size === y.size && x.bits?.shift === y.bits?.shift && x.bits?.width === y.bits?.width;

/** Expression `e` with the type's value instances replaced by their expressions (for params-only splits). */
function inlineValues(t: KsyType, e: Expr, depth = 0): Expr {
  if (depth > 16) throw new KsyError(`types.${t.name}: value instances refer to each other in a cycle`);
  const go = (x: Expr): Expr => inlineValues(t, x, depth + 1);
  switch (e.k) {
    case 'name': {
      const inst = t.instances.find((i) => i.id === e.name);
      return inst?.kind === 'value' && !inst.cond ? go(inst.value) : e;
    }
    case 'member': return { ...e, obj: go(e.obj) };
    case 'unary': return { ...e, e: go(e.e) };
    case 'binary': return { ...e, l: go(e.l), r: go(e.r) };
    case 'ternary': return { ...e, c: go(e.c), t: go(e.t), f: go(e.f) };
    default: return e;
  }
}

/** The params `e` uses, or undefined when it uses anything else but literals and arithmetic. */
function paramsOnly(t: KsyType, e: Expr): string[] | undefined {
  const used = new Set<string>();
  const ok = (x: Expr): boolean => {
    switch (x.k) {
      case 'num': return true;
      case 'name':
        if (!t.params.some((p) => p.id === x.name)) return false;
        used.add(x.name);
        return true;
      case 'unary': return x.op !== 'not' && ok(x.e);
      case 'binary': return ['+', '-', '*', '<<', '>>', '&', '|'].includes(x.op) && ok(x.l) && ok(x.r);
      default: return false;
    }
  };
  return ok(e) ? [...used] : undefined;
}

/** `1 << s` minus 1 → s; undefined for anything else. */
function lowMaskSplit(e: Expr): Expr | undefined {
  if (e.k !== 'binary' || e.op !== '-' || e.r.k !== 'num' || e.r.v !== 1) return undefined;
  const l = e.l;
  if (l.k !== 'binary' || l.op !== '<<' || l.l.k !== 'num' || l.l.v !== 1) return undefined;
  return l.r;
}

/** The layout of type `name` of `spec` (see the module comment). */
export function layoutOf(spec: KsySpec, name: string): TypeLayout {
  const t = spec.types.get(name);
  if (!t) throw new KsyError(`unknown type '${name}'`);
  const atomMap = new Map<string, Expr>();
  for (const a of t.seq) if (a.cond) atomsOf(a.cond, atomMap);
  const atoms = [...atomMap.values()];
  const atomKeys = [...atomMap.keys()];
  const runs: Map<string, FieldPlace | 'unknown'>[] = [];
  if (atoms.length <= MAX_ATOMS) {
    for (let m = 0; m < 1 << atoms.length; m++) {
      const truths = atoms.map((_, i) => ((m >> i) & 1) === 1);
      if (!consistent(atoms, truths)) continue;
      const truth = (k: string): boolean => truths[atomKeys.indexOf(k)]!;
      runs.push(walk(spec, t, (a) => truthOf(a.cond!, truth)));
    }
  } else {
    // Too many atoms to enumerate: place only what precedes the first conditional field.
    runs.push(walk(spec, t, () => undefined));
  }
  const fields: FieldPlace[] = [];
  for (const a of t.seq) {
    const seen = runs.map((r) => r.get(a.id)).filter((p) => p !== undefined);
    if (seen.length === 0 || seen.some((p) => p === 'unknown')) continue;
    const places = seen as FieldPlace[];
    if (places.every((p) => samePlace(p, places[0]!))) fields.push(places[0]!);
  }

  let prefixBits = 0;
  for (const a of t.seq) {
    if (a.cond) break;
    const b = staticBits(spec, a, new Set([t.name]));
    if (b === undefined) break;
    prefixBits = a.type?.kind === 'bits' ? prefixBits + b : Math.ceil(prefixBits / 8) * 8 + b;
  }
  const fixedSize = prefixBits > 0 && prefixBits % 8 === 0 ? prefixBits / 8 : undefined;

  const subfields: SubfieldInstance[] = [];
  for (const i of t.instances) {
    if (i.kind !== 'value') continue;
    const v = i.value;
    if (v.k !== 'binary' || v.l.k !== 'name') continue;
    const field = fields.find((f) => f.id === (v.l as { name: string }).name && f.bits);
    if (!field) continue;
    let part: 'upper' | 'lower';
    let splitSrc: Expr | undefined;
    if (v.op === '>>') {
      part = 'upper';
      splitSrc = v.r;
    } else if (v.op === '&') {
      part = 'lower';
      splitSrc = lowMaskSplit(v.r);
    } else {
      continue;
    }
    if (!splitSrc) continue;
    const split = inlineValues(t, splitSrc);
    const params = paramsOnly(t, split);
    if (!params || params.length === 0) continue;
    subfields.push({ id: i.id, field, part, split, params });
  }
  return { fields, ...(fixedSize !== undefined ? { fixedSize } : {}), subfields };
}

/**
 * Combined masks of `x_hi` / `x_lo` bit-field pairs in the same word (e.g. an offset split in two):
 * the name `x` and the two fields; pairs whose `x` is itself a field are left out.
 */
export function hiLoPairs(layout: TypeLayout): { readonly id: string; readonly hi: FieldPlace; readonly lo: FieldPlace }[] {
  const out: { id: string; hi: FieldPlace; lo: FieldPlace }[] = [];
  for (const hi of layout.fields) {
    if (!hi.bits || !hi.id.endsWith('_hi')) continue;
    const id = hi.id.slice(0, -3);
    const lo = layout.fields.find((f) => f.id === `${id}_lo`);
    if (!lo?.bits || lo.offset !== hi.offset || lo.size !== hi.size) continue;
    if (layout.fields.some((f) => f.id === id)) continue;
    out.push({ id, hi, lo });
  }
  return out;
}
