/**
 * The JSON op script (src/script/script.ts, docs/op-script.md): every rejection with its exact
 * message, the round trip parseScript(formatScript(ops)) = ops, exact 64-bit decimal strings, and the
 * canonical text.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Op } from '../../src/model/ops.ts';
import { formatScript, MAX_U64, parseScript, ScriptError } from '../../src/script/script.ts';

const U64 = 'expected a non-negative integer or decimal string';
const OPS_LIST = 'write, zero, discard, compress, snapshot-create, snapshot-apply, snapshot-delete, resize, flush';

/** [script text, exact message]. */
const errorCases: [string, string][] = [
  ['{"op":"write"}', 'script: expected a JSON array of ops, got {"op":"write"}'],
  ['null', 'script: expected a JSON array of ops, got null'],
  ['[1]', 'op 0: expected an object, got 1'],
  ['[{"op":"flush"},[]]', 'op 1: expected an object, got []'],
  ['[{}]', 'op 0: field "op": missing'],
  ['[{"op":5}]', `op 0: field "op": expected one of ${OPS_LIST}; got 5`],
  ['[{"op":"wrte","offset":0}]', `op 0: field "op": expected one of ${OPS_LIST}; got "wrte"`],
  ['[{"op":"Write"}]', `op 0: field "op": expected one of ${OPS_LIST}; got "Write"`],
  ['[{"op":"writeZeroes","offset":0,"length":1}]', `op 0: field "op": expected one of ${OPS_LIST}; got "writeZeroes"`],
  ['[{"op":"flush","offset":0}]', 'op 0 (flush): field "offset": not a field of flush (its fields: op)'],
  [
    '[{"op":"discard","offset":0,"length":1,"unmap":true}]',
    'op 0 (discard): field "unmap": not a field of discard (its fields: op, offset, length)',
  ],
  ['[{"op":"resize","size":1,"__proto__":1}]', 'op 0 (resize): field "__proto__": not a field of resize (its fields: op, size)'],
  ['[{"op":"write","length":1,"pattern":1}]', 'op 0 (write): field "offset": missing'],
  [
    '[{"op":"flush"},{"op":"flush"},{"op":"flush"},{"op":"write","offset":-1,"length":1,"pattern":0}]',
    `op 3 (write): field "offset": ${U64}, got -1`,
  ],
  ['[{"op":"write","offset":1.5,"length":1,"pattern":0}]', `op 0 (write): field "offset": ${U64}, got 1.5`],
  ['[{"op":"write","offset":true,"length":1,"pattern":0}]', `op 0 (write): field "offset": ${U64}, got true`],
  [
    '[{"op":"write","offset":9007199254740992,"length":1,"pattern":0}]',
    `op 0 (write): field "offset": ${U64}, got 9007199254740992: JSON numbers above 9007199254740991 may already be rounded; give the value as a decimal string`,
  ],
  [
    // Already rounded by JSON.parse to 2^53: the message shows what the parser saw.
    '[{"op":"discard","offset":0,"length":9007199254740993}]',
    `op 0 (discard): field "length": ${U64}, got 9007199254740992: JSON numbers above 9007199254740991 may already be rounded; give the value as a decimal string`,
  ],
  ['[{"op":"resize","size":1e300}]', `op 0 (resize): field "size": ${U64}, got 1e+300: JSON numbers above 9007199254740991 may already be rounded; give the value as a decimal string`],
  [
    '[{"op":"write","offset":"18446744073709551616","length":1,"pattern":0}]',
    'op 0 (write): field "offset": expected at most 18446744073709551615, got "18446744073709551616"',
  ],
  ['[{"op":"write","offset":"007","length":1,"pattern":0}]', `op 0 (write): field "offset": ${U64}, got "007"`],
  ['[{"op":"write","offset":"1e3","length":1,"pattern":0}]', `op 0 (write): field "offset": ${U64}, got "1e3"`],
  ['[{"op":"write","offset":" 1","length":1,"pattern":0}]', `op 0 (write): field "offset": ${U64}, got " 1"`],
  ['[{"op":"write","offset":"","length":1,"pattern":0}]', `op 0 (write): field "offset": ${U64}, got ""`],
  ['[{"op":"resize","size":"-5"}]', `op 0 (resize): field "size": ${U64}, got "-5"`],
  ['[{"op":"resize","size":"0x10"}]', `op 0 (resize): field "size": ${U64}, got "0x10"`],
  ['[{"op":"resize","size":null}]', `op 0 (resize): field "size": ${U64}, got null`],
  ['[{"op":"resize"}]', 'op 0 (resize): field "size": missing'],
  ['[{"op":"write","offset":0,"length":1,"pattern":256}]', 'op 0 (write): field "pattern": expected an integer 0..255, got 256'],
  ['[{"op":"write","offset":0,"length":1,"pattern":-1}]', 'op 0 (write): field "pattern": expected an integer 0..255, got -1'],
  ['[{"op":"compress","offset":0,"length":1,"pattern":"7"}]', 'op 0 (compress): field "pattern": expected an integer 0..255, got "7"'],
  ['[{"op":"write","offset":0,"length":1,"pattern":1.5}]', 'op 0 (write): field "pattern": expected an integer 0..255, got 1.5'],
  ['[{"op":"write","offset":0,"pattern":1}]', 'op 0 (write): field "length": missing (required with "pattern")'],
  ['[{"op":"write","offset":0,"length":4}]', 'op 0 (write): field "data": missing: give "data", or "pattern" with "length"'],
  ['[{"op":"compress","offset":0}]', 'op 0 (compress): field "data": missing: give "data", or "pattern" with "length"'],
  [
    '[{"op":"write","offset":0,"data":"AAAA","pattern":1}]',
    'op 0 (write): field "pattern": give either "data" or "pattern" with "length", not both',
  ],
  ['[{"op":"write","offset":0,"data":"AAA"}]', 'op 0 (write): field "data": expected standard padded base64 (RFC 4648 section 4), got "AAA"'],
  ['[{"op":"write","offset":0,"data":"QR=="}]', 'op 0 (write): field "data": expected standard padded base64 (RFC 4648 section 4), got "QR=="'],
  ['[{"op":"write","offset":0,"data":"AA AA"}]', 'op 0 (write): field "data": expected standard padded base64 (RFC 4648 section 4), got "AA AA"'],
  ['[{"op":"write","offset":0,"data":"AA-_"}]', 'op 0 (write): field "data": expected standard padded base64 (RFC 4648 section 4), got "AA-_"'],
  ['[{"op":"write","offset":0,"data":"A=AA"}]', 'op 0 (write): field "data": expected standard padded base64 (RFC 4648 section 4), got "A=AA"'],
  ['[{"op":"write","offset":0,"data":5}]', 'op 0 (write): field "data": expected a base64 string, got 5'],
  ['[{"op":"write","offset":0,"data":"AAAA","length":4}]', 'op 0 (write): field "length": "data" decodes to 3 bytes, but "length" is 4'],
  [
    '[{"op":"write","offset":0,"length":2147483137,"pattern":1}]',
    `op 0 (write): field "length": expected at most 2147483136 bytes (QEMU's largest single request), got 2147483137`,
  ],
  ['[{"op":"zero","offset":0,"length":1,"unmap":1}]', 'op 0 (zero): field "unmap": expected true or false, got 1'],
  ['[{"op":"zero","offset":0}]', 'op 0 (zero): field "length": missing'],
  ['[{"op":"snapshot-create","name":""}]', 'op 0 (snapshot-create): field "name": expected a non-empty snapshot name, got ""'],
  ['[{"op":"snapshot-create","name":1}]', 'op 0 (snapshot-create): field "name": expected a string, got 1'],
  ['[{"op":"snapshot-create"}]', 'op 0 (snapshot-create): field "name": missing'],
  [
    `[{"op":"snapshot-apply","name":"${'é'.repeat(128)}"}]`,
    `op 0 (snapshot-apply): field "name": expected at most 255 bytes of UTF-8 (QEMU's limit), got 256 bytes`,
  ],
  ['[{"op":"snapshot-delete","name":"a\\u0000b"}]', 'op 0 (snapshot-delete): field "name": a snapshot name cannot contain U+0000, got "a\\u0000b"'],
  [
    '[{"op":"snapshot-delete","name":"a\\ud800"}]',
    'op 0 (snapshot-delete): field "name": expected well-formed Unicode (no lone surrogates), got "a\\ud800"',
  ],
];

function messageOf(text: string): string {
  try {
    parseScript(text);
  } catch (e) {
    expect(e).toBeInstanceOf(ScriptError);
    return (e as ScriptError).message;
  }
  return '(accepted)';
}

describe('parseScript rejections', () => {
  it.each(errorCases)('%s', (text, message) => {
    expect(messageOf(text)).toBe(message);
  });

  it('invalid JSON names the parser problem', () => {
    expect(messageOf('[{"op":"flush"},]')).toMatch(/^script: invalid JSON: /);
  });

  it('the error carries index, op and field as values', () => {
    let err: ScriptError | undefined;
    try {
      parseScript('[{"op":"flush"},{"op":"zero","offset":0,"length":"x"}]');
    } catch (e) {
      err = e as ScriptError;
    }
    expect(err?.index).toBe(1);
    expect(err?.op).toBe('zero');
    expect(err?.field).toBe('length');
    expect(err?.detail).toBe(`${U64}, got "x"`);
  });

  it('reports the first bad op even when later ones are bad too', () => {
    expect(messageOf('[{"op":"flush"},{"op":"resize","size":-1},{"op":"nope"}]')).toBe(
      `op 1 (resize): field "size": ${U64}, got -1`,
    );
  });

  it('name limit is 255 UTF-8 bytes, not 255 characters', () => {
    expect(parseScript(`[{"op":"snapshot-create","name":"${'x'.repeat(255)}"}]`)).toHaveLength(1);
    expect(messageOf(`[{"op":"snapshot-create","name":"${'x'.repeat(256)}"}]`)).toBe(
      `op 0 (snapshot-create): field "name": expected at most 255 bytes of UTF-8 (QEMU's limit), got 256 bytes`,
    );
    expect(parseScript(`[{"op":"snapshot-create","name":"${'€'.repeat(85)}"}]`)).toHaveLength(1); // 255 bytes
  });
});

describe('parseScript accepted forms', () => {
  it('reads every op of the documented example', () => {
    const ops = parseScript(`[
      {"op":"write","offset":0,"length":4,"pattern":171},
      {"op":"write","offset":512,"data":"AQID"},
      {"op":"write","offset":"1024","data":"AQID","length":"3"},
      {"op":"zero","offset":0,"length":4096,"unmap":true},
      {"op":"zero","offset":0,"length":4096},
      {"op":"discard","offset":65536,"length":65536},
      {"op":"compress","offset":0,"length":2,"pattern":7},
      {"op":"snapshot-create","name":"s1"},
      {"op":"snapshot-apply","name":"s1"},
      {"op":"snapshot-delete","name":"s1"},
      {"op":"resize","size":1073741824},
      {"op":"flush"},
      {"op":"write","offset":0,"data":""}
    ]`);
    expect(ops).toEqual([
      { kind: 'write', offset: 0n, data: Uint8Array.of(171, 171, 171, 171) },
      { kind: 'write', offset: 512n, data: Uint8Array.of(1, 2, 3) },
      { kind: 'write', offset: 1024n, data: Uint8Array.of(1, 2, 3) },
      { kind: 'writeZeroes', offset: 0n, length: 4096n, unmap: true },
      { kind: 'writeZeroes', offset: 0n, length: 4096n, unmap: false },
      { kind: 'discard', offset: 65536n, length: 65536n },
      { kind: 'writeCompressed', offset: 0n, data: Uint8Array.of(7, 7) },
      { kind: 'snapshotCreate', name: 's1' },
      { kind: 'snapshotApply', name: 's1' },
      { kind: 'snapshotDelete', name: 's1' },
      { kind: 'resize', size: 1073741824n },
      { kind: 'flush' },
      { kind: 'write', offset: 0n, data: new Uint8Array(0) },
    ] satisfies Op[]);
  });

  it('decimal strings are exact above 2^53, up to 2^64-1', () => {
    fc.assert(
      fc.property(fc.bigInt(1n << 53n, MAX_U64), (n) => {
        const ops = parseScript(`[{"op":"discard","offset":"${n}","length":"${MAX_U64 - n}"},{"op":"resize","size":"${n}"}]`);
        expect(ops).toEqual([
          { kind: 'discard', offset: n, length: MAX_U64 - n },
          { kind: 'resize', size: n },
        ]);
      }),
    );
    // 2^53 + 1 is exactly the value a JSON number cannot carry.
    expect(parseScript('[{"op":"resize","size":"9007199254740993"}]')).toEqual([{ kind: 'resize', size: 9007199254740993n }]);
    expect(parseScript('[{"op":"resize","size":"18446744073709551615"}]')).toEqual([{ kind: 'resize', size: MAX_U64 }]);
    expect(parseScript('[{"op":"resize","size":9007199254740991}]')).toEqual([{ kind: 'resize', size: 9007199254740991n }]);
  });
});

const arbU64 = fc.oneof(fc.bigInt(0n, 1n << 20n), fc.bigInt(0n, MAX_U64), fc.constantFrom(0n, (1n << 53n) - 1n, 1n << 53n, MAX_U64));
const arbData = fc.oneof(
  fc.uint8Array({ maxLength: 64 }),
  fc.tuple(fc.nat({ max: 5000 }), fc.integer({ min: 0, max: 255 })).map(([n, b]) => new Uint8Array(n).fill(b)),
);
const arbName = fc
  .string({ unit: 'grapheme', minLength: 1, maxLength: 40 })
  .filter((s) => !s.includes('\u0000') && Buffer.byteLength(s) <= 255);
const arbOp: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('write' as const), offset: arbU64, data: arbData }),
  fc.record({ kind: fc.constant('writeCompressed' as const), offset: arbU64, data: arbData }),
  fc.record({ kind: fc.constant('writeZeroes' as const), offset: arbU64, length: arbU64, unmap: fc.boolean() }),
  fc.record({ kind: fc.constant('discard' as const), offset: arbU64, length: arbU64 }),
  fc.record({ kind: fc.constant('snapshotCreate' as const), name: arbName }),
  fc.record({ kind: fc.constant('snapshotApply' as const), name: arbName }),
  fc.record({ kind: fc.constant('snapshotDelete' as const), name: arbName }),
  fc.record({ kind: fc.constant('resize' as const), size: arbU64 }),
  fc.constant({ kind: 'flush' as const }),
);

describe('formatScript', () => {
  it('round trip: parseScript(formatScript(ops)) equals ops, and the text is a fixed point', () => {
    fc.assert(
      fc.property(fc.array(arbOp, { size: 'max', maxLength: 30 }), (ops) => {
        const text = formatScript(ops);
        const back = parseScript(text);
        expect(back).toEqual(ops);
        expect(formatScript(back)).toBe(text);
      }),
      { numRuns: 300 },
    );
  });

  it('writes the canonical text', () => {
    expect(formatScript([])).toBe('[]\n');
    expect(
      formatScript([
        { kind: 'write', offset: 0n, data: new Uint8Array(65536).fill(171) },
        { kind: 'write', offset: 512n, data: Uint8Array.of(1, 2, 3) },
        { kind: 'write', offset: 0n, data: new Uint8Array(0) },
        { kind: 'writeZeroes', offset: 1n << 60n, length: 4096n, unmap: false },
        { kind: 'writeCompressed', offset: 0n, data: new Uint8Array(2).fill(7) },
        { kind: 'snapshotCreate', name: 's1' },
        { kind: 'resize', size: 9007199254740992n },
        { kind: 'flush' },
      ]),
    ).toBe(
      [
        '[',
        '  {"op":"write","offset":0,"length":65536,"pattern":171},',
        '  {"op":"write","offset":512,"data":"AQID"},',
        '  {"op":"write","offset":0,"data":""},',
        '  {"op":"zero","offset":"1152921504606846976","length":4096,"unmap":false},',
        '  {"op":"compress","offset":0,"length":2,"pattern":7},',
        '  {"op":"snapshot-create","name":"s1"},',
        '  {"op":"resize","size":"9007199254740992"},',
        '  {"op":"flush"}',
        ']',
        '',
      ].join('\n'),
    );
  });

  it('refuses ops the format cannot express, with the parser\'s message', () => {
    expect(() => formatScript([{ kind: 'flush' }, { kind: 'resize', size: -1n }])).toThrow(
      new ScriptError({ index: 1, op: 'resize', field: 'size' }, `${U64}, got "-1"`),
    );
    expect(() => formatScript([{ kind: 'snapshotDelete', name: '' }])).toThrow(
      'op 0 (snapshot-delete): field "name": expected a non-empty snapshot name, got ""',
    );
    expect(() => formatScript([{ kind: 'discard', offset: MAX_U64 + 1n, length: 0n }])).toThrow(
      'op 0 (discard): field "offset": expected at most 18446744073709551615, got "18446744073709551616"',
    );
  });
});
