/**
 * The JSON op script: the public, documented format (docs/op-script.md) in which `qcow2-ref run IMAGE
 * SCRIPT` and the conformance harness receive op sequences. A script is a JSON array of op objects;
 * `parseScript` turns it into Op values (src/model/ops.ts) after validating all of it, and
 * `formatScript` writes the canonical text back.
 *
 * Nothing here knows about images: alignment, virtual size and snapshot existence are checked when
 * the ops are applied. What is checked here is everything that can be decided from the text alone.
 */
import { base64Decode, base64Encode } from '../codec/index.ts';
import type { Op } from '../model/index.ts';

/** The largest 64-bit unsigned value a decimal string may give. */
export const MAX_U64 = (1n << 64n) - 1n;

/**
 * The largest number of bytes one write or compress op may carry: QEMU's BDRV_REQUEST_MAX_BYTES
 * (INT_MAX rounded down to 512), the largest single request qemu-io issues.
 */
export const MAX_DATA_BYTES = 2147483136;

/** The longest snapshot name QEMU stores, in UTF-8 bytes (QEMUSnapshotInfo.name is char[256]). */
export const MAX_SNAPSHOT_NAME_BYTES = 255;

/** The op names of the script format, in documentation order, and the Op kind each one becomes. */
export const SCRIPT_OP_NAMES = {
  write: 'write',
  zero: 'writeZeroes',
  discard: 'discard',
  compress: 'writeCompressed',
  'snapshot-create': 'snapshotCreate',
  'snapshot-apply': 'snapshotApply',
  'snapshot-delete': 'snapshotDelete',
  resize: 'resize',
  flush: 'flush',
} as const satisfies Record<string, Op['kind']>;

/** A script op name (`"write"`, `"zero"`, `"snapshot-create"`, …). */
export type ScriptOpName = keyof typeof SCRIPT_OP_NAMES;

/** The fields each op name allows, in canonical output order ("op" first). */
const FIELDS: Readonly<Record<ScriptOpName, readonly string[]>> = {
  write: ['op', 'offset', 'length', 'pattern', 'data'],
  zero: ['op', 'offset', 'length', 'unmap'],
  discard: ['op', 'offset', 'length'],
  compress: ['op', 'offset', 'length', 'pattern', 'data'],
  'snapshot-create': ['op', 'name'],
  'snapshot-apply': ['op', 'name'],
  'snapshot-delete': ['op', 'name'],
  resize: ['op', 'size'],
  flush: ['op'],
};

/**
 * A script that is not valid. The message has one of the forms (docs/op-script.md, "Errors"):
 * `script: <detail>`, `op <index>: <detail>`, `op <index>: field "<field>": <detail>` or
 * `op <index> (<op>): field "<field>": <detail>` — `<index>` 0-based, `(<op>)` present once the
 * op name is known to be valid.
 */
export class ScriptError extends Error {
  override readonly name = 'ScriptError';
  /** 0-based index of the offending op; undefined for errors about the script as a whole. */
  readonly index: number | undefined;
  /** The op name, when it is a valid one. */
  readonly op: ScriptOpName | undefined;
  /** The field, when the problem is in one. */
  readonly field: string | undefined;
  /** The problem alone, without the location prefix. */
  readonly detail: string;

  constructor(where: { index?: number; op?: ScriptOpName; field?: string }, detail: string) {
    let prefix = where.index === undefined ? 'script' : `op ${where.index}`;
    if (where.index !== undefined && where.op !== undefined) prefix += ` (${where.op})`;
    if (where.field !== undefined) prefix += `: field "${where.field}"`;
    super(`${prefix}: ${detail}`);
    this.index = where.index;
    this.op = where.op;
    this.field = where.field;
    this.detail = detail;
  }
}

/** A JSON value shown in an error: JSON text, cut to 60 characters. */
function show(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

const U64_TEXT = 'expected a non-negative integer or decimal string';

/** Reads a u64 field: a safe non-negative JSON integer or a canonical decimal string ≤ 2^64-1. */
function u64(v: unknown, fail: (detail: string) => never): bigint {
  if (typeof v === 'number') {
    if (Number.isInteger(v) && v >= 0 && !Number.isSafeInteger(v)) {
      fail(
        `${U64_TEXT}, got ${show(v)}: JSON numbers above ${Number.MAX_SAFE_INTEGER} may already be rounded; ` +
          `give the value as a decimal string`,
      );
    }
    if (!Number.isSafeInteger(v) || v < 0) fail(`${U64_TEXT}, got ${show(v)}`);
    return BigInt(v);
  }
  if (typeof v === 'string') {
    if (!/^(0|[1-9][0-9]*)$/.test(v)) fail(`${U64_TEXT}, got ${show(v)}`);
    const n = BigInt(v);
    if (n > MAX_U64) fail(`expected at most ${MAX_U64}, got ${show(v)}`);
    return n;
  }
  return fail(`${U64_TEXT}, got ${show(v)}`);
}

/** Strict RFC 4648 §4 base64: standard alphabet, padded, no whitespace, zero pad bits. */
function base64(v: unknown, fail: (detail: string) => never): Uint8Array {
  if (typeof v !== 'string') return fail(`expected a base64 string, got ${show(v)}`);
  if (v.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) {
    return fail(`expected standard padded base64 (RFC 4648 section 4), got ${show(v)}`);
  }
  if ((v.length / 4) * 3 > MAX_DATA_BYTES + 2) {
    return fail(`expected at most ${MAX_DATA_BYTES} bytes (QEMU's largest single request)`);
  }
  // Only the canonical text is accepted (no misplaced '=', no non-zero pad bits).
  const bytes = base64Decode(v);
  if (bytes === undefined) return fail(`expected standard padded base64 (RFC 4648 section 4), got ${show(v)}`);
  return bytes;
}

/** Bytes of the UTF-8 encoding of `v` (a lone surrogate counts 3, as its U+FFFD replacement). */
function utf8Length(v: string): number {
  let n = 0;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < v.length && (v.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function snapshotName(v: unknown, fail: (detail: string) => never): string {
  if (typeof v !== 'string') return fail(`expected a string, got ${show(v)}`);
  if (v.length === 0) return fail('expected a non-empty snapshot name, got ""');
  if (LONE_SURROGATE.test(v)) return fail(`expected well-formed Unicode (no lone surrogates), got ${show(v)}`);
  if (v.includes('\u0000')) return fail(`a snapshot name cannot contain U+0000, got ${show(v)}`);
  const bytes = utf8Length(v);
  if (bytes > MAX_SNAPSHOT_NAME_BYTES) {
    return fail(`expected at most ${MAX_SNAPSHOT_NAME_BYTES} bytes of UTF-8 (QEMU's limit), got ${bytes} bytes`);
  }
  return v;
}

function isScriptOpName(v: unknown): v is ScriptOpName {
  return typeof v === 'string' && Object.hasOwn(SCRIPT_OP_NAMES, v);
}

/** Data of a write or compress: `data` (base64, optional matching `length`) or `length` + `pattern`. */
function payload(o: Record<string, unknown>, fail: (field: string, detail: string) => never): Uint8Array {
  const has = (k: string) => Object.hasOwn(o, k);
  if (has('data') && has('pattern')) return fail('pattern', 'give either "data" or "pattern" with "length", not both');
  if (has('data')) {
    const data = base64(o['data'], (d) => fail('data', d));
    if (has('length')) {
      const length = u64(o['length'], (d) => fail('length', d));
      if (length !== BigInt(data.length)) {
        fail('length', `"data" decodes to ${data.length} bytes, but "length" is ${length}`);
      }
    }
    return data;
  }
  if (!has('pattern')) return fail('data', 'missing: give "data", or "pattern" with "length"');
  if (!has('length')) return fail('length', 'missing (required with "pattern")');
  const length = u64(o['length'], (d) => fail('length', d));
  if (length > BigInt(MAX_DATA_BYTES)) {
    fail('length', `expected at most ${MAX_DATA_BYTES} bytes (QEMU's largest single request), got ${show(o['length'])}`);
  }
  const p = o['pattern'];
  if (typeof p !== 'number' || !Number.isInteger(p) || p < 0 || p > 255) {
    fail('pattern', `expected an integer 0..255, got ${show(p)}`);
  }
  return new Uint8Array(Number(length)).fill(p as number);
}

/** Validates one element of the script array. */
function parseOp(v: unknown, index: number): Op {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new ScriptError({ index }, `expected an object, got ${show(v)}`);
  }
  const o = v as Record<string, unknown>;
  if (!Object.hasOwn(o, 'op')) throw new ScriptError({ index, field: 'op' }, 'missing');
  const name = o['op'];
  if (!isScriptOpName(name)) {
    throw new ScriptError(
      { index, field: 'op' },
      `expected one of ${Object.keys(SCRIPT_OP_NAMES).join(', ')}; got ${show(name)}`,
    );
  }
  const fail = (field: string, detail: string): never => {
    throw new ScriptError({ index, op: name, field }, detail);
  };
  const allowed = FIELDS[name];
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) fail(k, `not a field of ${name} (its fields: ${allowed.join(', ')})`);
  }
  const req = (field: string): unknown => (Object.hasOwn(o, field) ? o[field] : fail(field, 'missing'));
  const num = (field: string): bigint => u64(req(field), (d) => fail(field, d));
  const snap = (): string => snapshotName(req('name'), (d) => fail('name', d));

  switch (name) {
    case 'write':
      return { kind: 'write', offset: num('offset'), data: payload(o, fail) };
    case 'compress':
      return { kind: 'writeCompressed', offset: num('offset'), data: payload(o, fail) };
    case 'zero': {
      const offset = num('offset');
      const length = num('length');
      const unmap = Object.hasOwn(o, 'unmap') ? o['unmap'] : false;
      if (typeof unmap !== 'boolean') fail('unmap', `expected true or false, got ${show(unmap)}`);
      return { kind: 'writeZeroes', offset, length, unmap: unmap as boolean };
    }
    case 'discard':
      return { kind: 'discard', offset: num('offset'), length: num('length') };
    case 'snapshot-create':
      return { kind: 'snapshotCreate', name: snap() };
    case 'snapshot-apply':
      return { kind: 'snapshotApply', name: snap() };
    case 'snapshot-delete':
      return { kind: 'snapshotDelete', name: snap() };
    case 'resize':
      return { kind: 'resize', size: num('size') };
    case 'flush':
      return { kind: 'flush' };
  }
}

/**
 * The ops of an already JSON-parsed script value. Promises: either every element is valid and the
 * ops are returned in order, or a ScriptError for the first invalid element (lowest index; within an
 * element, checks run in the order docs/op-script.md lists) is thrown and nothing is returned.
 */
export function parseScriptValue(value: unknown): Op[] {
  if (!Array.isArray(value)) throw new ScriptError({}, `expected a JSON array of ops, got ${show(value)}`);
  return value.map((v, i) => parseOp(v, i));
}

/**
 * The ops of a script text (docs/op-script.md). Promises: validates the whole script before returning
 * anything, so a caller can apply the result knowing no op will be rejected for its form; throws a
 * ScriptError naming the op index and field otherwise (`script: invalid JSON: …` for bad JSON).
 */
export function parseScript(text: string): Op[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new ScriptError({}, `invalid JSON: ${(e as Error).message}`);
  }
  return parseScriptValue(value);
}

/** A u64 as the canonical script value: a JSON number when exact, else a decimal string. */
function u64Value(n: bigint): number | string {
  return n <= BigInt(Number.MAX_SAFE_INTEGER) && n >= 0n ? Number(n) : n.toString();
}

/** The canonical JSON object of a write/compress payload: `pattern` when all bytes are equal. */
function payloadFields(data: Uint8Array): Record<string, unknown> {
  const first = data[0];
  if (first !== undefined && data.every((b) => b === first)) return { length: data.length, pattern: first };
  return { data: base64Encode(data) };
}

/** The canonical JSON value of one op (field order as in docs/op-script.md). */
function opValue(op: Op): Record<string, unknown> {
  switch (op.kind) {
    case 'write':
      return { op: 'write', offset: u64Value(op.offset), ...payloadFields(op.data) };
    case 'writeCompressed':
      return { op: 'compress', offset: u64Value(op.offset), ...payloadFields(op.data) };
    case 'writeZeroes':
      return { op: 'zero', offset: u64Value(op.offset), length: u64Value(op.length), unmap: op.unmap };
    case 'discard':
      return { op: 'discard', offset: u64Value(op.offset), length: u64Value(op.length) };
    case 'snapshotCreate':
      return { op: 'snapshot-create', name: op.name };
    case 'snapshotApply':
      return { op: 'snapshot-apply', name: op.name };
    case 'snapshotDelete':
      return { op: 'snapshot-delete', name: op.name };
    case 'resize':
      return { op: 'resize', size: u64Value(op.size) };
    case 'flush':
      return { op: 'flush' };
  }
}

/**
 * The canonical script text of `ops`: a JSON array with one op object per line, fields in the
 * documented order, numbers as JSON numbers up to 2^53-1 and decimal strings above, write/compress
 * data as `length`+`pattern` when all bytes are equal (and non-empty), base64 `data` otherwise.
 * Promises: `parseScript(formatScript(ops))` equals `ops`; throws the ScriptError parseScript would
 * give when an op is not expressible (negative or > 2^64-1 values, bad names, oversized data).
 */
export function formatScript(ops: readonly Op[]): string {
  const values = ops.map(opValue);
  parseScriptValue(values); // the same rules as for input: only parseable text is ever produced
  if (values.length === 0) return '[]\n';
  return `[\n${values.map((v) => `  ${JSON.stringify(v)}`).join(',\n')}\n]\n`;
}
