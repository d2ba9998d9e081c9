/**
 * The crash simulator (src/crash): which crash states it enumerates, and that it can fail — a write
 * log with a deliberately broken order (mapping before refcount, refcount decrease before unmapping,
 * a missing barrier, a lost write, a write of foreign bytes) is caught with the named violation,
 * while the model's own log of the same ops is not. The property over random op sequences is
 * test/unit/crash-property.test.ts; QEMU's logs, test/qemu/crash-qemu.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { crashPoints, crashStates, epochsOf, judgeRun, modelWriteLog, validateWriteLog, WriteLogError, type CrashRun, type WriteLog } from '../../src/crash/index.ts';
import { createImage, hostBytes, type HostIO, type Op } from '../../src/model/index.ts';
import { RawDisk } from '../../src/oracle/index.ts';

const CS = 4096;
const SIZE = 1n << 20n;
const DATA = new Uint8Array(CS).fill(7);

/** A fresh image (4 KiB clusters, 1 MiB) and the oracle of its empty disk. */
function fresh(): { image: ReturnType<typeof createImage>['image']; initial: RawDisk } {
  return { image: createImage({ size: SIZE, clusterSize: CS }).image, initial: new RawDisk({ size: SIZE, clusterSize: BigInt(CS) }) };
}

/** A big-endian u64 of `b` at `at`. */
function u64(b: Uint8Array, at: number): bigint {
  return new DataView(b.buffer, b.byteOffset).getBigUint64(at);
}

/** Where the first refcount block of `image` lies (refcount table entry 0). */
function refblockOf(base: Uint8Array, reftableOffset: bigint): bigint {
  return u64(base, Number(reftableOffset));
}

const isWriteIn = (h: HostIO, from: bigint, len: number): boolean => h.kind === 'write' && h.offset >= from && h.offset < from + BigInt(len);

/** `log` with `host` replaced; guest ranges kept where the caller keeps lengths, else given. */
function withHost(log: WriteLog, host: HostIO[], guest = log.guest): WriteLog {
  return { ...log, writer: `${log.writer} (broken)`, host, guest };
}

describe('crash states', () => {
  const log: WriteLog = {
    writer: 'hand-made',
    base: new Uint8Array(4096),
    host: [
      { kind: 'write', offset: 0n, bytes: new Uint8Array(1024).fill(1) },
      { kind: 'write', offset: 1024n, bytes: new Uint8Array(512).fill(2) },
      { kind: 'flush' },
      ...Array.from({ length: 10 }, (_, i): HostIO => ({ kind: 'write', offset: BigInt(i * 512), bytes: new Uint8Array(512).fill(10 + i) })),
    ],
    guest: [],
  };

  it('cuts the log into epochs at its flushes', () => {
    expect(epochsOf(log.host)).toEqual([{ start: 0, end: 2 }, { start: 3, end: 13 }]);
  });

  it('gives every subset of a small epoch, and the prefixes plus samples of a large one', () => {
    const points = crashPoints(log, { exhaustiveUpTo: 4, samples: 5 });
    const first = points.filter((p) => p.epochStart === 0);
    expect(first.map((p) => p.persisted)).toEqual([[], [0], [1], [0, 1]]);
    expect(first.map((p) => p.how)).toEqual(['prefix', 'prefix', 'subset', 'prefix']);
    const second = points.filter((p) => p.epochStart === 3);
    expect(second.filter((p) => p.how === 'prefix').map((p) => p.persisted.length)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(second.filter((p) => p.how === 'sampled')).toHaveLength(5);
    // The same seed gives the same states; another seed other samples.
    expect(crashPoints(log, { exhaustiveUpTo: 4, samples: 5, seed: 9 })).toEqual(crashPoints(log, { exhaustiveUpTo: 4, samples: 5, seed: 9 }));
    expect(crashPoints(log, { exhaustiveUpTo: 4, samples: 5, seed: 9 })).not.toEqual(crashPoints(log, { exhaustiveUpTo: 4, samples: 5, seed: 10 }));
  });

  it('spaces the prefixes of a huge epoch evenly, the empty and the whole one among them', () => {
    const huge: WriteLog = { writer: 'huge', base: new Uint8Array(512), host: Array.from({ length: 100 }, (_, i): HostIO => ({ kind: 'write', offset: BigInt(i), bytes: new Uint8Array(1) })), guest: [] };
    const prefixes = crashPoints(huge, { exhaustiveUpTo: 4, samples: 0, prefixes: 5 }).map((p) => p.persisted.length);
    expect(prefixes).toEqual([0, 25, 50, 75, 100]);
  });

  it('builds each state from everything before its epoch and its persisted subset, in log order', () => {
    const states = [...crashStates(log, { exhaustiveUpTo: 4, samples: 0 })];
    const s = states.find((x) => x.point.epochStart === 3 && x.point.persisted.length === 2)!;
    const b = hostBytes(s.image);
    expect([b[0], b[511], b[512], b[1023], b[1024], b[1535], b[1536]]).toEqual([10, 10, 11, 11, 2, 2, 0]);
    const alone = states.find((x) => x.point.epochStart === 0 && x.point.persisted.join() === '1')!;
    expect([...hostBytes(alone.image).subarray(0, 1536)].every((v, i) => v === (i < 1024 ? 0 : 2))).toBe(true);
  });

  it('tears writes at sector granularity: a torn write keeps whole sectors, each entirely old or new', () => {
    const big: WriteLog = { writer: 'torn', base: new Uint8Array(8192), host: Array.from({ length: 10 }, (_, i): HostIO => ({ kind: 'write', offset: BigInt(i * 16), bytes: new Uint8Array(4096).fill(i + 1) })), guest: [] };
    let torn = 0;
    for (const s of crashStates(big, { exhaustiveUpTo: 2, samples: 40, tornWrites: true, seed: 3 })) {
      if (s.point.torn === undefined) continue;
      torn++;
      const b = hostBytes(s.image);
      // Each 512-byte sector holds bytes of one write or of several — never a byte no write wrote.
      expect(b.every((v) => v <= 10)).toBe(true);
      for (const [i, sectors] of s.point.torn) expect(sectors.every((sec) => sec * 512 < 16 * i + 4096 && (sec + 1) * 512 > 16 * i)).toBe(true);
    }
    expect(torn).toBeGreaterThan(5);
  });

  it('refuses a log whose guest ranges overlap or leave the host log', () => {
    const op: Op = { kind: 'flush' };
    expect(() => validateWriteLog({ ...log, guest: [{ op, start: 0, end: 3, ok: true }, { op, start: 2, end: 4, ok: true }] })).toThrow(WriteLogError);
    expect(() => validateWriteLog({ ...log, guest: [{ op, start: 0, end: 14, ok: true }] })).toThrow(/guest op 0 \(flush\) has host range \[0, 14\)/);
    expect(() => validateWriteLog({ ...log, guest: [{ op, start: 0, end: 3, ok: true }, { op, start: 3, end: 13, ok: true }] })).not.toThrow();
  });
});

describe('broken orders are caught, each with its named violation', () => {
  const { image, initial } = fresh();
  const base = hostBytes(image.file);
  const refblock = refblockOf(base, image.header.refcountTableOffset);
  const write: Op = { kind: 'write', offset: 0n, data: DATA };
  const ops: Op[] = [write, { kind: 'flush' }, { kind: 'discard', offset: 0n, length: BigInt(CS) }, { kind: 'flush' }];
  const log = modelWriteLog(image, ops);
  const run = (l: WriteLog): CrashRun => ({ log: l, initial });
  // The data cluster: where the guest data was written; its L2 table: the cluster written as zeros first.
  const dataAt = log.host.findIndex((h) => h.kind === 'write' && h.bytes.length === CS && h.bytes[0] === 7);
  const data = log.host[dataAt] as Extract<HostIO, { kind: 'write' }>;
  const l2 = (log.host.find((h) => h.kind === 'write' && h.bytes.length === CS && h.bytes.every((v) => v === 0)) as Extract<HostIO, { kind: 'write' }>).offset;
  const [w, , d] = log.guest;

  it('the model\'s own log: no violation', () => {
    validateWriteLog(log);
    const v = judgeRun(run(log), { exhaustiveUpTo: 8 });
    expect(v.states).toBeGreaterThan(10);
    expect(v.violating).toBe(0);
  });

  it('a missing barrier: the write without its flushes', () => {
    const host = log.host.filter((h, i) => !(i >= w!.start && i < w!.end && h.kind === 'flush'));
    const removed = log.host.length - host.length;
    const guest = log.guest.map((g, i) => (i === 0 ? { ...g, end: g.end - removed } : { ...g, start: g.start - removed, end: g.end - removed }));
    const v = judgeRun(run(withHost(log, host, guest)), { exhaustiveUpTo: 10 });
    // The first state found: the L1 entry persisted before the L2 table it points at.
    expect(v.byKind.corruption).toBeGreaterThan(0);
    expect(v.first?.violations[0]?.message).toMatch(/^check: \d+ corruption\(s\)/);
  });

  it('mapping before refcount: the data cluster\'s refcount increase moved after its L2 entry', () => {
    const range = log.host.slice(w!.start, w!.end);
    const lastIndex = (f: (h: HostIO) => boolean): number => range.reduce((at, h, i) => (f(h) ? i : at), -1);
    const inc = lastIndex((h) => isWriteIn(h, refblock, CS));
    const map = lastIndex((h) => isWriteIn(h, l2, CS) && h.kind === 'write' && h.bytes.length === 8);
    expect(inc).toBeLessThan(map);
    const moved = [...range.slice(0, inc), ...range.slice(inc + 1, map + 1), range[inc]!, ...range.slice(map + 1)];
    const v = judgeRun(run(withHost(log, [...moved, ...log.host.slice(w!.end)])), { exhaustiveUpTo: 8 });
    expect(v.byKind.corruption).toBeGreaterThan(0);
    expect(v.first?.violations.map((x) => x.kind)).toContain('corruption');
  });

  it('refcount decrease before unmapping: the discard\'s refcount write moved before its L2 write', () => {
    const range = log.host.slice(d!.start, d!.end);
    const unmap = range.findIndex((h) => isWriteIn(h, l2, CS));
    const dec = range.findIndex((h) => isWriteIn(h, refblock, CS));
    expect(unmap).toBeLessThan(dec);
    const moved = [range[dec]!, ...range.filter((_, i) => i !== dec)];
    const v = judgeRun(run(withHost(log, [...log.host.slice(0, d!.start), ...moved, ...log.host.slice(d!.end)])), { exhaustiveUpTo: 8 });
    expect(v.byKind.corruption).toBeGreaterThan(0);
    expect(v.first?.violations[0]?.message).toMatch(/refcount=0 reference=1/);
  });

  it('a lost write: the data write dropped from a flushed log', () => {
    // Without the discard after it, which would make zeros a state the guest saw.
    const short = modelWriteLog(image, [write, { kind: 'flush' }]);
    const at = short.host.findIndex((h) => h.kind === 'write' && h.bytes.length === CS && h.bytes[0] === 7);
    const host = short.host.filter((_, i) => i !== at);
    const guest = short.guest.map((g, i) => (i === 0 ? { ...g, end: g.end - 1 } : { ...g, start: g.start - 1, end: g.end - 1 }));
    expect(judgeRun(run(short), { exhaustiveUpTo: 8 }).first).toBeUndefined();
    const v = judgeRun(run(withHost(short, host, guest)), { exhaustiveUpTo: 8 });
    expect(v.byKind['lost-flushed-write']).toBeGreaterThan(0);
    // (The file also ends before the data cluster now, which check reports as a corruption too.)
  });

  it('foreign bytes: one byte of the data write changed', () => {
    const bytes = data.bytes.slice();
    bytes[700] = 99;
    const host = log.host.map((h, i) => (i === dataAt ? { ...data, bytes } : h));
    const v = judgeRun(run(withHost(log, host)), { exhaustiveUpTo: 8 });
    expect(v.byKind['foreign-sector']).toBeGreaterThan(0);
    expect(v.first?.violations[0]?.message).toMatch(/guest sector 1 reads as no state/);
  });
});
