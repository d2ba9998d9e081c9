/**
 * Guard: the format's header field positions, entry masks and magic have one source — spec/qcow2.ksy
 * through generated/qcow2.ts (HeaderLayout, L1EntryMasks, HEADER_MAGIC, …) — and QEMU's limits one
 * module, src/format/limits.ts. This test scans the TypeScript and .mjs sources of src/, test/,
 * scripts/ and bench/ (code only: comments are blanked, strings kept) and fails when one
 * of the patterns below finds a hand-written copy. Each pattern is shown to match sample lines (a
 * broken regex fails here) and not to match nearby lines that are not copies. Deliberate exceptions
 * are listed in EXCEPTIONS with their reason.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { describe, expect, it } from 'vitest';
import { HeaderLayout } from '../../generated/qcow2.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const SCANNED_DIRS = ['src', 'test', 'scripts', 'bench'];
const SCANNED_EXTENSIONS = ['.ts', '.mjs'];

interface Pattern {
  /** What a match is a copy of. */
  readonly what: string;
  /** Whether a line of code (comments blanked) holds such a copy. */
  readonly test: (line: string) => boolean;
  /** Lines the pattern must match. */
  readonly matches: readonly string[];
  /** Lines it must not match (unrelated uses of similar numbers). */
  readonly ignores: readonly string[];
}

// ------------------------------------------------------------------------- header positions

const HEADER_FIELDS = Object.entries(HeaderLayout).map(([key, f]) => ({ key, id: f.id as string, offset: f.offset as number, size: f.size as number }));
const alternatives = (xs: readonly (string | number)[]): string => [...new Set(xs)].map(String).join('|');
const ANY_OFFSET = alternatives(HEADER_FIELDS.filter((f) => f.offset > 0).map((f) => f.offset));

/** A header field named next to its own offset: a table of header positions. */
const headerTable = new RegExp(HEADER_FIELDS.map((f) => {
  const names = `['"](?:${f.id}|${f.key})['"]`;
  const rows = [
    // ['incompatible_features', 72, …] and [ 'magic', 0 ]
    `\\[\\s*${names}\\s*,\\s*${f.offset}n?\\b`,
    // incompatibleFeatures: [72, 8]
    `\\b(?:${f.id}|${f.key})\\s*:\\s*\\[\\s*${f.offset}\\s*,\\s*${f.size}\\s*\\]`,
  ];
  // incompatible_features: 72 (only for names that cannot be a generic property such as `size`)
  if (f.id.includes('_')) rows.push(`\\b${f.id}\\s*:\\s*${f.offset}n?\\b`);
  return rows.join('|');
}).join('|'));

/** A named constant holding a header field's offset. */
const headerOffsetConstant = new RegExp(
  `\\b(?:const|let|var)\\s+\\w*(?:INCOMPAT|COMPAT|AUTOCLEAR|FEATURE|REFCOUNT_ORDER|HEADER_LENGTH|COMPRESSION_TYPE|CRYPT|CLUSTER_BITS|L1_SIZE|L1_TABLE|REFCOUNT_TABLE|SNAPSHOTS|BACKING_FILE|VERSION|MAGIC)\\w*_OFFSET\\s*=\\s*(?:${ANY_OFFSET})n?\\b`);

/** The accessor forms that read or write `size` big-endian bytes at the literal offset `offset`. */
function accessAt(offset: number, size: number): string {
  const n = size === 8 ? 'n?' : '';
  const [at, be, write] = size === 8 ? ['u64|getBigUint64|setBigUint64|readBigUInt64BE', 'be64', 'writeBigUInt64BE']
    : size === 4 ? ['u32|getUint32|setUint32|readUInt32BE', 'be32', 'writeUInt32BE']
      : ['u8|getUint8|setUint8|readUInt8', 'be8', 'writeUInt8'];
  return [
    // offset first: p.u32(100, v), dv.getUint32(100), buf.readUInt32BE(100), dv.setBigUint64(72, v)
    `\\.(?:${at})\\(\\s*${offset}${n}\\s*[,)]`,
    // buffer first: be32(b, 100), be64(b, 72)
    `\\b${be}\\(\\s*[\\w.]+\\s*,\\s*${offset}\\s*\\)`,
    // value first (Node's Buffer): b.writeUInt32BE(v, 100), b.writeBigUInt64BE(v, 72)
    `\\.${write}\\((?:[^,()]|\\([^()]*\\))+,\\s*${offset}\\s*\\)`,
    // poke(path, 72, be64(v))
    ...(size === 1 ? [] : [`\\bpoke\\(\\s*[\\w.]+\\s*,\\s*${offset}${n}\\s*,\\s*${be}\\(`]),
  ].join('|');
}

/**
 * Header offsets below this are also field offsets of snapshot entries, extensions and bitmap
 * directory entries: an access there counts only when the line names the header field too.
 */
const DISTINCT_OFFSET = 40;

/**
 * A big-endian read or write of a header field at its literal offset with the field's width: at
 * offsets from 40 on any such access, below only on a line that names the field (e.g.
 * `const clusterBits = v.getUint32(20)`).
 */
const headerFieldAccess = HEADER_FIELDS.filter((f) => f.offset > 0).map((f) => {
  const access = new RegExp(accessAt(f.offset, f.size));
  const named = new RegExp(`\\b(?:${f.key}|${f.id})\\b`);
  return (line: string): boolean => access.test(line) && (f.offset >= DISTINCT_OFFSET || named.test(line));
});

const re = (regex: RegExp) => (line: string): boolean => regex.test(line);

const PATTERNS: Record<string, Pattern> = {
  'header-table': {
    what: 'a table of header field positions (use HeaderLayout)',
    test: re(headerTable),
    matches: [
      "    ['incompatible_features', 72, 8, 'flags'],",
      "  incompatibleFeatures: [72, 8],",
      '  header_length: 100,',
      "    ['version', 4],",
    ],
    ignores: ['  size: 24n * MiB,', '  { offset: 0, size: 24 },', "  header_length: 112,", "['version', 3]"],
  },
  'header-offset-constant': {
    what: 'a constant holding a header field offset (use HeaderLayout.<field>.offset)',
    test: re(headerOffsetConstant),
    matches: ['const INCOMPAT_OFFSET = 72n;', 'const COMPRESSION_TYPE_OFFSET = 104;'],
    ignores: ['const L1_TABLE_OFFSET = 0x30000n;', 'const INCOMPAT_OFFSET = BigInt(HeaderLayout.incompatibleFeatures.offset);'],
  },
  'header-field-access': {
    what: 'a big-endian access to a header field at its literal offset (use HeaderLayout)',
    test: (line) => headerFieldAccess.some((t) => t(line)),
    matches: [
      '    poke: (p) => p.u32(100, 0x7fffffff),',
      '  const version = be32(b, 4);',
      '    incompatibleFeatures: v2 ? 0n : be64(b, 72),',
      '  if (c.dirty === true) dv.setBigUint64(72, dv.getBigUint64(72) | 1n);',
      '    expect(after.readBigUInt64BE(88)).toBe(0n);',
      '        b.writeBigUInt64BE(b.readBigUInt64BE(72) & ~4n, 72);',
      '      b.writeUInt32BE(0, 100);',
      '      await poke(p, 72, be64(1n));',
      '    compressionType: be8(b, 104),',
      '  const clusterBits = v.getUint32(20);',
      '    expect(view.getBigUint64(24)).toBe(size);',
    ],
    ignores: [
      '  const payloadSector = BigInt(dv.getUint32(104));', // LUKS header: 104 is no 4-byte header field
      '    const len = be32(area, at + 4);',
      '  p.u64(L.size.offset, v);',
      '  const x = dv.getUint32(12);',
      '    const dateSec = dv.getUint32(16);', // snapshot entry: 16 is backing_file_size's offset in the header
      '    view.setUint32(4, e.data.length);', // header extension length
      '    const vmClockNsec = dv.getBigUint64(24);',
    ],
  },
  'entry-offset-mask': {
    what: 'L1E_OFFSET_MASK / L2E_OFFSET_MASK / BME_TABLE_ENTRY_OFFSET_MASK (use L1EntryMasks.l2Offset, L2EntryMasks.hostOffset, …)',
    test: re(/\b0x0*fffffffffffe00n?\b/i),
    matches: ['const L1_OFFSET_MASK = 0x00fffffffffffe00n;', 'x & 0xfffffffffffe00n', 'x & 0x00FFFFFFFFFFFE00n'],
    ignores: ['x & 0xfffffffffffe0n', 'x & 0x00fffffffffffe001n'],
  },
  'reftable-offset-mask': {
    what: 'REFT_OFFSET_MASK (use RefcountTableEntryMasks.refblockOffset)',
    test: re(/\b0xfffffffffffffe00n?\b/i),
    matches: ['const REFT_OFFSET_MASK = 0xfffffffffffffe00n;'],
    ignores: ['const X = 0xffffffffffffff00n;'],
  },
  'reserved-mask': {
    what: 'L1E_RESERVED_MASK / L2E_STD_RESERVED_MASK / BME_TABLE_ENTRY_RESERVED_MASK (use <Entry>Masks.reserved)',
    test: re(/\b0x(?:7f|3f|ff)000000000001f[ef]n?\b/i),
    matches: ['const L1_RESERVED_MASK = 0x7f000000000001ffn;', 'const L2_RESERVED_MASK = 0x3f000000000001fen;', '0xff000000000001fen'],
    ignores: ['0x7f00000000000000n', '0x1ffn'],
  },
  'descriptor-mask': {
    what: 'the compressed descriptor bits 0..61 (use l2EntryParamMasks / L2EntryMasks)',
    test: re(/\b0x3fffffffffffffffn?\b/i),
    matches: ['const DESCRIPTOR = 0x3fffffffffffffffn;'],
    ignores: ['const X = 0x3ffffffffffffffn;', 'const Y = 0x7fffffffffffffffn;'],
  },
  'lo-half-offset-mask': {
    what: 'the low word of an entry offset mask (use the generated masks and shifts)',
    test: re(/&\s*~?\s*\(?\s*0xfffffe00n?\b|\b0xfffffe00n?\s*&/i),
    matches: ['const off = lo & 0xfffffe00;', 'x = (0xfffffe00 & lo) >>> 0;'],
    ignores: ['const n = 0xfffffe00;', 'x & 0xfffffe001'],
  },
  'copied-flag': {
    what: 'QCOW_OFLAG_COPIED as 1n << 63n (use L1EntryMasks.copied / L2EntryMasks.copied)',
    test: re(/\bcopied\b[^?\n]*\?\s*\(?\s*1n\s*<<\s*63n|\b\w*(?:COPIED|OFLAG)\w*\s*=\s*\(?\s*1n\s*<<\s*63n|\bword\s*>>\s*63n/),
    matches: ['  let word = (entry.copied ? 1n << 63n : 0n);', 'const COPIED = 1n << 63n;', 'export const QCOW_OFLAG_COPIED = 1n << 63n;', '  const copied = (e.word >> 63n) !== 0n;'],
    ignores: ['const INT64_SIGN = 1n << 63n;', '  if (offset >= 1n << 63n) {', 'const INT64_MAX = (1n << 63n) - 1n;'],
  },
  'compressed-flag': {
    what: 'QCOW_OFLAG_COMPRESSED as 1n << 62n (use L2EntryMasks.compressed)',
    test: re(/\bcompressed\b[^?\n]*\?\s*\(?\s*1n\s*<<\s*62n|\b\w*(?:COMPRESSED|OFLAG)\w*\s*=\s*\(?\s*1n\s*<<\s*62n|\bword\s*&\s*\(\s*1n\s*<<\s*62n\s*\)/),
    matches: ['  let w = entry.compressed ? 1n << 62n : 0n;', 'const COMPRESSED = 1n << 62n;', '  return (e.word & (1n << 62n)) !== 0n;'],
    ignores: ['  fc.constant({ at: 1n << 62n, min: 1 }),'],
  },
  'magic-u32': {
    what: 'QCOW_MAGIC as a number (use HEADER_MAGIC_U32)',
    test: re(/\b0x514649fbn?\b|\b1363560955\b/i),
    matches: ['const QCOW_MAGIC = 0x514649fb;', 'while (m === 0x514649fbn) m = next();', 'if (v === 1363560955) {'],
    ignores: ['const X = 0x514649fc;'],
  },
  'magic-bytes': {
    what: 'the magic as bytes or a string (use HEADER_MAGIC)',
    test: re(/\b0x51\s*,\s*0x46\s*,\s*0x49\s*,\s*0xfb\b|['"`]QFI/i),
    matches: ['const QCOW2_MAGIC = [0x51, 0x46, 0x49, 0xfb];', "if (head.toString('latin1', 0, 3) === 'QFI') {", 'bytes.set([0x51,0x46,0x49,0xFB]);'],
    ignores: ["const title = 'the magic is not QFI\\\\xfb';", 'const x = [0x51, 0x46, 0x49, 0xfc];'],
  },
};

type PatternName = keyof typeof PATTERNS;

/**
 * Deliberate exceptions: repository-relative file → the patterns it may match, with the reason.
 * generated/ and src/format/limits.ts are not scanned at all (they are the sources).
 */
const EXCEPTIONS: Record<string, { readonly patterns: readonly PatternName[] | 'all'; readonly reason: string }> = {
  'test/unit/no-format-literals.test.ts': { patterns: 'all', reason: 'holds the patterns and the sample lines they must match' },
  'test/unit/spec-constants.test.ts': { patterns: 'all', reason: "expected values written from QEMU's qcow2.h/qcow2.rst, the oracle for the generated constants" },
  'test/unit/entries.test.ts': {
    patterns: ['entry-offset-mask', 'reftable-offset-mask', 'reserved-mask'],
    reason: "expected decodings of all-ones entries, written from QEMU's masks (an independent check of the decoders)",
  },
  'test/unit/u64-exact.test.ts': {
    patterns: ['entry-offset-mask', 'header-field-access'],
    reason: "expected values written by hand: the exact offset of an all-ones L2 entry (QEMU's L2E_OFFSET_MASK), the size read at byte 24",
  },
  'test/qemu/open-validation.test.ts': {
    patterns: ['header-field-access'],
    reason: "ports of QEMU iotest 080 and friends, which poke header bytes at QEMU's literal offsets (test inputs run through qemu-img too)",
  },
  'test/qemu/check-060.test.ts': { patterns: ['header-field-access'], reason: "port of QEMU iotest 060, which pokes the incompatible features at QEMU's literal offset 72" },
};

/** `text` with every comment blanked (newlines kept); string and template literals are kept. */
export function codeOnly(text: string): string {
  let out = '';
  let i = 0;
  let state: 'code' | 'line' | 'block' | "'" | '"' | '`' = 'code';
  while (i < text.length) {
    const c = text[i]!;
    const next = text[i + 1];
    if (state === 'code') {
      if (c === '/' && next === '/') { state = 'line'; out += '  '; i += 2; continue; }
      if (c === '/' && next === '*') { state = 'block'; out += '  '; i += 2; continue; }
      if (c === "'" || c === '"' || c === '`') state = c;
      out += c;
      i++;
      continue;
    }
    if (state === 'line') {
      if (c === '\n') { state = 'code'; out += c; } else out += ' ';
      i++;
      continue;
    }
    if (state === 'block') {
      if (c === '*' && next === '/') { state = 'code'; out += '  '; i += 2; continue; }
      out += c === '\n' ? c : ' ';
      i++;
      continue;
    }
    // Inside a string: keep it, honour escapes; a quote string ends at its line's end at the latest.
    if (c === '\\') { out += c + (next ?? ''); i += 2; continue; }
    if (c === state || (c === '\n' && state !== '`')) state = 'code';
    out += c;
    i++;
  }
  return out;
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name === 'node_modules' || e.name.startsWith('.')) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...sourceFiles(p));
    else if (SCANNED_EXTENSIONS.some((x) => e.name.endsWith(x))) out.push(p);
  }
  return out;
}

/** Every match of every pattern in the scanned files, as `file:line: pattern: text`, exceptions left out. */
function findings(): string[] {
  const out: string[] = [];
  for (const dir of SCANNED_DIRS) {
    for (const file of sourceFiles(join(ROOT, dir))) {
      const rel = relative(ROOT, file).split(sep).join('/');
      if (rel === 'src/format/limits.ts') continue;
      const allowed = EXCEPTIONS[rel]?.patterns;
      if (allowed === 'all') continue;
      const lines = codeOnly(readFileSync(file, 'utf8')).split('\n');
      lines.forEach((line, i) => {
        for (const [name, p] of Object.entries(PATTERNS)) {
          if (allowed?.includes(name) !== true && p.test(line)) out.push(`${rel}:${i + 1}: ${name}: ${line.trim()}`);
        }
      });
    }
  }
  return out;
}

describe('no hand-written format positions, masks or magic outside generated/ and src/format/limits.ts', () => {
  for (const [name, p] of Object.entries(PATTERNS)) {
    it(`pattern ${name} matches its samples and ignores the near misses`, () => {
      for (const line of p.matches) expect(p.test(codeOnly(line)), `should match: ${line}`).toBe(true);
      for (const line of p.ignores) expect(p.test(codeOnly(line)), `should not match: ${line}`).toBe(false);
    });
  }

  it('comments are not scanned, strings are', () => {
    expect(codeOnly("const a = 1; // 0x514649fb\n/* 'QFI' */ const b = 'QFI';")).toBe("const a = 1;              \n            const b = 'QFI';");
    expect(codeOnly("const u = 'http://x'; // y")).toBe("const u = 'http://x';     ");
  });

  it('every exception names a scanned file and patterns that exist', () => {
    for (const [file, e] of Object.entries(EXCEPTIONS)) {
      expect(readFileSync(join(ROOT, file), 'utf8').length).toBeGreaterThan(0);
      if (e.patterns !== 'all') for (const name of e.patterns) expect(Object.keys(PATTERNS)).toContain(name);
      expect(e.reason.length).toBeGreaterThan(10);
    }
  });

  it('the scanned sources have none', () => {
    expect(findings()).toEqual([]);
  });
});
