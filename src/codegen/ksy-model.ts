/**
 * Reads a .ksy document (already parsed from YAML) into a typed model of the Kaitai subset the
 * generator supports. Anything outside the subset — an unknown key, u8/s8 (lossy in Kaitai's
 * JavaScript), bit fields wider than 32 bits, nested types, a field without `doc` — is refused with
 * a KsyError naming the path in the spec, so the spec cannot quietly drift out of what both
 * parsers handle exactly.
 */
import { type Expr, parseExpression, ExpressionError } from './expression.ts';

export class KsyError extends Error {
  override readonly name = 'KsyError';
}

export type PrimType =
  | { readonly kind: 'int'; readonly width: 1 | 2 | 4; readonly signed: boolean }
  | { readonly kind: 'bits'; readonly width: number; readonly le: boolean }
  | { readonly kind: 'str' };

export interface UserTypeRef {
  readonly kind: 'user';
  readonly name: string;
  readonly args: readonly Expr[];
}

export type CaseType = PrimType | UserTypeRef;

export interface SwitchType {
  readonly kind: 'switch';
  readonly on: Expr;
  readonly cases: readonly { readonly key: Expr; readonly type: CaseType }[];
}

export type FieldType = CaseType | SwitchType;

export type Repeat =
  | { readonly kind: 'expr'; readonly count: Expr }
  | { readonly kind: 'eos' }
  | { readonly kind: 'until'; readonly cond: Expr };

export type Valid =
  | { readonly kind: 'eq'; readonly value: Expr }
  | { readonly kind: 'any-of'; readonly values: readonly Expr[] }
  | { readonly kind: 'range'; readonly min?: Expr; readonly max?: Expr };

/** A seq attribute, or the reading part of a pos instance. */
export interface Attr {
  readonly id: string;
  readonly path: string;
  readonly doc: string;
  /** Absent for raw byte arrays (`size:` or `size-eos:` without `type:`) and for `contents:`. */
  readonly type?: FieldType;
  readonly contents?: readonly number[];
  readonly size?: Expr;
  readonly sizeEos?: boolean;
  readonly padRight?: number;
  readonly enumName?: string;
  readonly cond?: Expr;
  readonly repeat?: Repeat;
  readonly valid?: Valid;
}

export interface ValueInstance {
  readonly kind: 'value';
  readonly id: string;
  readonly path: string;
  readonly doc: string;
  readonly value: Expr;
  readonly cond?: Expr;
}

export interface PosInstance {
  readonly kind: 'pos';
  readonly id: string;
  readonly path: string;
  readonly doc: string;
  readonly pos: Expr;
  /** `_root._io` when given; otherwise the type's own stream. */
  readonly io?: Expr;
  readonly attr: Attr;
}

export type Instance = ValueInstance | PosInstance;

export interface Param {
  readonly id: string;
  readonly type: 'int' | 'bool';
  readonly doc: string;
}

export interface KsyType {
  readonly name: string;
  readonly doc: string;
  readonly params: readonly Param[];
  readonly seq: readonly Attr[];
  readonly instances: readonly Instance[];
}

export interface KsyEnum {
  readonly name: string;
  readonly entries: readonly { readonly value: number; readonly label: string }[];
}

export interface KsySpec {
  readonly id: string;
  readonly title: string;
  readonly doc: string;
  /** All types, the root (named meta.id) first. */
  readonly types: ReadonlyMap<string, KsyType>;
  readonly enums: ReadonlyMap<string, KsyEnum>;
}

type Yaml = Record<string, unknown>;

function isObj(x: unknown): x is Yaml {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function onlyKeys(obj: Yaml, allowed: readonly string[], path: string): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) {
      throw new KsyError(`${path}: key '${k}' is not supported by src/codegen (supported here: ${allowed.join(', ')})`);
    }
  }
}

function expr(src: unknown, path: string): Expr {
  if (typeof src !== 'string' && typeof src !== 'number' && typeof src !== 'boolean') {
    throw new KsyError(`${path}: expected an expression, got ${JSON.stringify(src)}`);
  }
  try {
    return parseExpression(src);
  } catch (e) {
    if (e instanceof ExpressionError) throw new KsyError(`${path}: ${e.message}`);
    throw e;
  }
}

function docOf(obj: Yaml, path: string): string {
  const d = obj['doc'];
  if (typeof d !== 'string' || d.trim() === '') throw new KsyError(`${path}: every field, instance, param and type needs a one-sentence doc:`);
  return d.trim();
}

/** Splits `name(a, b(c), d)` into the name and top-level argument strings. */
function splitTypeRef(src: string, path: string): { name: string; args: string[] } {
  const m = /^([a-z_][a-z0-9_]*)\s*(?:\((.*)\))?$/s.exec(src.trim());
  if (!m) throw new KsyError(`${path}: cannot read type reference '${src}'`);
  const args: string[] = [];
  if (m[2] !== undefined) {
    let depth = 0;
    let cur = '';
    for (const ch of m[2]) {
      if (ch === '(') depth++;
      if (ch === ')') depth--;
      if (ch === ',' && depth === 0) {
        args.push(cur);
        cur = '';
      } else {
        cur += ch;
      }
    }
    if (cur.trim() !== '') args.push(cur);
  }
  return { name: m[1]!, args };
}

function caseType(src: unknown, path: string, bitEndianLe: boolean): CaseType {
  if (typeof src !== 'string') throw new KsyError(`${path}: expected a type name`);
  const int = /^([us])([1248])$/.exec(src);
  if (int) {
    if (int[2] === '8') {
      throw new KsyError(`${path}: ${src} is not supported: Kaitai's JavaScript reads 64-bit integers into a double and loses bits above 2^53; use the u64 type (hi/lo halves) or bit fields of at most 32 bits`);
    }
    return { kind: 'int', width: Number(int[2]) as 1 | 2 | 4, signed: int[1] === 's' };
  }
  const bits = /^b([0-9]+)(le|be)?$/.exec(src);
  if (bits) {
    const width = Number(bits[1]);
    if (width < 1 || width > 32) throw new KsyError(`${path}: bit field ${src} is wider than 32 bits, which Kaitai's JavaScript cannot read exactly; split it`);
    return { kind: 'bits', width, le: bits[2] === undefined ? bitEndianLe : bits[2] === 'le' };
  }
  if (src === 'str') return { kind: 'str' };
  if (/^(strz|f4|f8|u2le|u4le|s2le|s4le|u2be|u4be|s2be|s4be)$/.test(src)) {
    throw new KsyError(`${path}: type ${src} is not supported by src/codegen`);
  }
  const ref = splitTypeRef(src, path);
  return { kind: 'user', name: ref.name, args: ref.args.map((a, i) => expr(a, `${path}(arg ${i})`)) };
}

const ATTR_KEYS = ['id', 'type', 'size', 'size-eos', 'contents', 'encoding', 'pad-right', 'enum', 'if', 'repeat', 'repeat-expr', 'repeat-until', 'valid', 'doc'];
const INSTANCE_KEYS = ['value', 'pos', 'io', ...ATTR_KEYS.filter((k) => k !== 'id')];

function readAttr(raw: Yaml, id: string, path: string, bitEndianLe: boolean): Attr {
  const typeSrc = raw['type'];
  let type: FieldType | undefined;
  if (isObj(typeSrc)) {
    onlyKeys(typeSrc, ['switch-on', 'cases'], `${path}.type`);
    const cases = typeSrc['cases'];
    if (!isObj(cases)) throw new KsyError(`${path}.type: switch needs cases`);
    type = {
      kind: 'switch',
      on: expr(typeSrc['switch-on'], `${path}.type.switch-on`),
      cases: Object.entries(cases).map(([k, v]) => {
        if (k === '_') throw new KsyError(`${path}.type: a default case '_' is not supported (unmatched sized cases stay raw bytes)`);
        return { key: expr(/^-?[0-9]+$/.test(k) ? Number(k) : k, `${path}.type.cases.${k}`), type: caseType(v, `${path}.type.cases.${k}`, bitEndianLe) };
      }),
    };
  } else if (typeSrc !== undefined) {
    type = caseType(typeSrc, `${path}.type`, bitEndianLe);
  }
  let contents: number[] | undefined;
  if (raw['contents'] !== undefined) {
    const c = raw['contents'];
    if (!Array.isArray(c) || !c.every((b) => Number.isInteger(b) && b >= 0 && b <= 255)) {
      throw new KsyError(`${path}.contents: only a list of byte values is supported`);
    }
    contents = c as number[];
  }
  const encoding = raw['encoding'];
  if (encoding !== undefined && encoding !== 'ASCII') {
    throw new KsyError(`${path}.encoding: only ASCII is supported (bytes map 1:1 to char codes, as in Kaitai's JavaScript)`);
  }
  if (type?.kind === 'str' && encoding === undefined) throw new KsyError(`${path}: str needs encoding: ASCII`);
  const size = raw['size'] === undefined ? undefined : expr(raw['size'], `${path}.size`);
  const sizeEos = raw['size-eos'] === true;
  if ((type === undefined || type.kind === 'str') && contents === undefined && size === undefined && !sizeEos) {
    throw new KsyError(`${path}: byte arrays and strings need size: or size-eos:`);
  }
  let repeat: Repeat | undefined;
  switch (raw['repeat']) {
    case undefined:
      break;
    case 'expr':
      repeat = { kind: 'expr', count: expr(raw['repeat-expr'], `${path}.repeat-expr`) };
      break;
    case 'eos':
      repeat = { kind: 'eos' };
      break;
    case 'until':
      repeat = { kind: 'until', cond: expr(raw['repeat-until'], `${path}.repeat-until`) };
      break;
    default:
      throw new KsyError(`${path}.repeat: '${String(raw['repeat'])}' is not supported`);
  }
  let valid: Valid | undefined;
  const v = raw['valid'];
  if (v !== undefined) {
    if (isObj(v)) {
      onlyKeys(v, ['eq', 'any-of', 'min', 'max'], `${path}.valid`);
      if (v['eq'] !== undefined) valid = { kind: 'eq', value: expr(v['eq'], `${path}.valid.eq`) };
      else if (v['any-of'] !== undefined) {
        const list = v['any-of'];
        if (!Array.isArray(list)) throw new KsyError(`${path}.valid.any-of: expected a list`);
        valid = { kind: 'any-of', values: list.map((x, i) => expr(x, `${path}.valid.any-of[${i}]`)) };
      } else {
        valid = {
          kind: 'range',
          ...(v['min'] !== undefined ? { min: expr(v['min'], `${path}.valid.min`) } : {}),
          ...(v['max'] !== undefined ? { max: expr(v['max'], `${path}.valid.max`) } : {}),
        };
      }
    } else {
      valid = { kind: 'eq', value: expr(v, `${path}.valid`) };
    }
  }
  const padRight = raw['pad-right'];
  if (padRight !== undefined && !(Number.isInteger(padRight) && (padRight as number) >= 0 && (padRight as number) <= 255)) {
    throw new KsyError(`${path}.pad-right: expected a byte value`);
  }
  const enumName = raw['enum'];
  return {
    id,
    path,
    doc: docOf(raw, path),
    ...(type !== undefined ? { type } : {}),
    ...(contents !== undefined ? { contents } : {}),
    ...(size !== undefined ? { size } : {}),
    ...(sizeEos ? { sizeEos } : {}),
    ...(padRight !== undefined ? { padRight: padRight as number } : {}),
    ...(typeof enumName === 'string' ? { enumName } : {}),
    ...(raw['if'] !== undefined ? { cond: expr(raw['if'], `${path}.if`) } : {}),
    ...(repeat !== undefined ? { repeat } : {}),
    ...(valid !== undefined ? { valid } : {}),
  };
}

function readType(name: string, raw: Yaml, path: string, bitEndianLe: boolean): KsyType {
  onlyKeys(raw, ['doc', 'params', 'seq', 'instances'], path);
  const params: Param[] = [];
  const rawParams = raw['params'] ?? [];
  if (!Array.isArray(rawParams)) throw new KsyError(`${path}.params: expected a list`);
  rawParams.forEach((p, i) => {
    const pp = `${path}.params[${i}]`;
    if (!isObj(p)) throw new KsyError(`${pp}: expected a mapping`);
    onlyKeys(p, ['id', 'type', 'doc'], pp);
    const t = p['type'];
    if (t !== 'u1' && t !== 'u2' && t !== 'u4' && t !== 'bool') throw new KsyError(`${pp}.type: only u1, u2, u4 and bool params are supported`);
    params.push({ id: String(p['id']), type: t === 'bool' ? 'bool' : 'int', doc: docOf(p, pp) });
  });
  const rawSeq = raw['seq'] ?? [];
  if (!Array.isArray(rawSeq)) throw new KsyError(`${path}.seq: expected a list`);
  const seq = rawSeq.map((a, i) => {
    const ap = `${path}.seq[${i}]`;
    if (!isObj(a)) throw new KsyError(`${ap}: expected a mapping`);
    onlyKeys(a, ATTR_KEYS, ap);
    if (typeof a['id'] !== 'string') throw new KsyError(`${ap}: every seq attribute needs an id`);
    return readAttr(a, a['id'], `${path}.seq.${a['id']}`, bitEndianLe);
  });
  const rawInst = raw['instances'] ?? {};
  if (!isObj(rawInst)) throw new KsyError(`${path}.instances: expected a mapping`);
  const instances: Instance[] = Object.entries(rawInst).map(([id, r]) => {
    const ip = `${path}.instances.${id}`;
    if (!isObj(r)) throw new KsyError(`${ip}: expected a mapping`);
    onlyKeys(r, INSTANCE_KEYS, ip);
    if (r['value'] !== undefined) {
      onlyKeys(r, ['value', 'if', 'doc'], ip);
      return {
        kind: 'value',
        id,
        path: ip,
        doc: docOf(r, ip),
        value: expr(r['value'], `${ip}.value`),
        ...(r['if'] !== undefined ? { cond: expr(r['if'], `${ip}.if`) } : {}),
      };
    }
    if (r['pos'] === undefined) throw new KsyError(`${ip}: an instance needs value: or pos:`);
    const { pos, io, ...rest } = r;
    return {
      kind: 'pos',
      id,
      path: ip,
      doc: docOf(r, ip),
      pos: expr(pos, `${ip}.pos`),
      ...(io !== undefined ? { io: expr(io, `${ip}.io`) } : {}),
      attr: readAttr(rest, id, ip, bitEndianLe),
    };
  });
  return { name, doc: docOf(raw, path), params, seq, instances };
}

/** Builds the model of a parsed .ksy document, refusing anything outside the supported subset. */
export function readKsy(doc: unknown): KsySpec {
  if (!isObj(doc)) throw new KsyError('spec: expected a mapping at the top level');
  onlyKeys(doc, ['meta', 'doc', 'seq', 'instances', 'types', 'enums'], 'spec');
  const meta = doc['meta'];
  if (!isObj(meta)) throw new KsyError('meta: missing');
  onlyKeys(meta, ['id', 'title', 'file-extension', 'license', 'endian', 'bit-endian'], 'meta');
  if (meta['endian'] !== 'be') throw new KsyError('meta.endian: only be is supported');
  const bitEndianLe = meta['bit-endian'] === 'le';
  const id = String(meta['id']);
  const types = new Map<string, KsyType>();
  types.set(id, readType(id, { doc: doc['doc'], seq: doc['seq'], instances: doc['instances'] }, id, bitEndianLe));
  const rawTypes = doc['types'] ?? {};
  if (!isObj(rawTypes)) throw new KsyError('types: expected a mapping');
  for (const [name, t] of Object.entries(rawTypes)) {
    if (!isObj(t)) throw new KsyError(`types.${name}: expected a mapping`);
    if (types.has(name)) throw new KsyError(`types.${name}: duplicate type name`);
    types.set(name, readType(name, t, `types.${name}`, bitEndianLe));
  }
  const enums = new Map<string, KsyEnum>();
  const rawEnums = doc['enums'] ?? {};
  if (!isObj(rawEnums)) throw new KsyError('enums: expected a mapping');
  for (const [name, e] of Object.entries(rawEnums)) {
    if (!isObj(e)) throw new KsyError(`enums.${name}: expected a mapping`);
    enums.set(name, {
      name,
      entries: Object.entries(e).map(([k, label]) => {
        const value = Number(k);
        if (!Number.isSafeInteger(value)) throw new KsyError(`enums.${name}.${k}: key must be an integer`);
        if (typeof label !== 'string') throw new KsyError(`enums.${name}.${k}: label must be a string`);
        return { value, label };
      }),
    });
  }
  // Every user type reference must resolve, with the right number of arguments.
  const checkRef = (t: FieldType | undefined, path: string): void => {
    if (!t) return;
    const refs = t.kind === 'switch' ? t.cases.map((c) => c.type) : [t];
    for (const r of refs) {
      if (r.kind !== 'user') continue;
      const target = types.get(r.name);
      if (!target) throw new KsyError(`${path}: unknown type '${r.name}'`);
      if (target.params.length !== r.args.length) {
        throw new KsyError(`${path}: type '${r.name}' takes ${target.params.length} argument(s), got ${r.args.length}`);
      }
    }
  };
  for (const t of types.values()) {
    for (const a of t.seq) checkRef(a.type, a.path);
    for (const i of t.instances) if (i.kind === 'pos') checkRef(i.attr.type, i.path);
  }
  return { id, title: typeof meta['title'] === 'string' ? meta['title'] : id, doc: docOf(doc, 'spec'), types, enums };
}

/** `l1_table_offset` → `l1TableOffset`, as kaitai-struct-compiler names JavaScript properties. */
export function lowerCamel(id: string): string {
  return id.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

/** `l1_entry` → `L1Entry`, as kaitai-struct-compiler names JavaScript classes. */
export function upperCamel(id: string): string {
  const l = lowerCamel(id);
  return l.charAt(0).toUpperCase() + l.slice(1);
}
