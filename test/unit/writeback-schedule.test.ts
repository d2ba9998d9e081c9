/**
 * scheduleEpochs (src/disk/writeback.ts) on hand-made operation logs: each ordering rule of its
 * module comment, and which writes are merged. The crash properties check the result end to end;
 * these name the rule that broke.
 */
import { describe, expect, it } from 'vitest';
import { DirectWrites, scheduleEpochs } from '../../src/disk/writeback.ts';
import type { HostIO } from '../../src/model/index.ts';

const w = (offset: number, length: number, fill = 1): HostIO => ({ kind: 'write', offset: BigInt(offset), bytes: new Uint8Array(length).fill(fill) });
const flush: HostIO = { kind: 'flush' };
const freeing: HostIO = { kind: 'flush', ordersLater: true };

/** Each epoch as [offset, length] pairs of its writes. */
function shape(epochs: HostIO[][]): [number, number][][] {
  return epochs.map((e) => e.map((op) => {
    if (op.kind !== 'write') throw new Error(`unexpected ${op.kind}`);
    return [Number(op.offset), op.bytes.length];
  }));
}

describe('scheduleEpochs', () => {
  it('rule 1: a write after its own operation\'s barrier goes into a later epoch', () => {
    expect(shape(scheduleEpochs([[w(0, 2), flush, w(65536, 8)]]))).toEqual([[[0, 2]], [[65536, 8]]]);
  });

  it('independent operations share epochs: many allocating writes cost the flushes of one', () => {
    const ops = [0, 1, 2].map((i) => [w(i * 2, 2), flush, w(65536 + i * 131072, 8)]);
    const epochs = scheduleEpochs(ops);
    expect(epochs.length).toBe(2);
    expect(epochs[1]!.length).toBe(3);
  });

  it('rule 2: a later write to the same page never goes into an earlier epoch', () => {
    // The second operation's write to page 16 has no barrier before it, but page 16 was last
    // written in epoch 1.
    expect(shape(scheduleEpochs([[w(0, 2), flush, w(65536, 8)], [w(65544, 8)]]))).toEqual([[[0, 2]], [[65536, 16]]]);
  });

  it('rule 3: nothing after a truncate goes into an earlier epoch', () => {
    const epochs = scheduleEpochs([[w(0, 2), flush, w(65536, 8)], [{ kind: 'truncate', length: 1n << 20n }], [w(4096 * 100, 8)]]);
    expect(epochs.map((e) => e.map((op) => op.kind))).toEqual([['write'], ['write', 'truncate', 'write']]);
  });

  it('rule 4: after a freeing barrier, a later operation\'s writes follow everything before it', () => {
    const plain = scheduleEpochs([[w(65536, 8), flush, w(0, 2)], [w(8 * 65536, 4096)]]);
    expect(plain[0]!.length).toBe(2);
    const freed = scheduleEpochs([[w(65536, 8), freeing, w(0, 2)], [w(8 * 65536, 4096)]]);
    expect(shape(freed)).toEqual([[[65536, 8]], [[0, 2], [8 * 65536, 4096]]]);
  });

  it('merges small writes that touch into one (later bytes win), and issues data writes as they are', () => {
    const data = w(131072, 61440);
    const epochs = scheduleEpochs([[w(0, 2, 1), w(2, 2, 2), w(1, 2, 3)], [data, w(131072 + 61440, 4096)]]);
    expect(shape(epochs)).toEqual([[[0, 4], [131072, 61440], [131072 + 61440, 4096]]]);
    const merged = epochs[0]![0]!;
    expect(merged.kind === 'write' && [...merged.bytes]).toEqual([1, 3, 3, 2]);
    // The copy-on-write's bytes are not copied into a merged buffer.
    expect(epochs[0]![1]).toBe(data);
  });
});

describe('DirectWrites: which writes of a write-back disk go at once', () => {
  const kinds = (io: readonly HostIO[]): string[] => io.map((op) => (op.kind === 'write' ? `w${op.offset}` : op.kind));

  it('a data-sized write before its change\'s first barrier goes now; small writes and writes after a barrier wait', () => {
    const d = new DirectWrites();
    const { now, later } = d.split([w(0, 2), w(65536, 65536), flush, w(8192, 8), w(1 << 20, 4096)]);
    expect(kinds(now)).toEqual(['w65536']);
    expect(kinds(later)).toEqual(['w0', 'flush', 'w8192', `w${1 << 20}`]);
  });

  it('a write to a page something deferred touches waits (the deferred one would land after it)', () => {
    const d = new DirectWrites();
    d.split([w(0, 2), flush, w(131072, 4096)]);
    expect(d.split([w(131072 + 2048, 4096)]).now).toEqual([]);
    expect(d.split([w(262144, 4096)]).now.length).toBe(1);
    d.reset();
    expect(d.split([w(131072, 4096)]).now.length).toBe(1);
  });

  it('a write whose pages another operation of its change touches waits', () => {
    const d = new DirectWrites();
    expect(d.split([w(65536, 4096), { kind: 'zero', offset: 65536n + 1024n, length: 512n }]).now).toEqual([]);
  });

  it('after a deferred freeing barrier, a truncate or a wide zero, nothing goes early until reset', () => {
    for (const first of [
      [w(0, 8), freeing, w(131072, 2)],
      [{ kind: 'truncate', length: 1n << 30n } as HostIO],
      [{ kind: 'zero', offset: 0n, length: 1n << 30n } as HostIO],
    ]) {
      const d = new DirectWrites();
      d.split(first);
      expect(d.split([w(1 << 24, 65536)]).now).toEqual([]);
      d.reset();
      expect(d.split([w(1 << 24, 65536)]).now.length).toBe(1);
    }
  });

  it('a change with a truncate sends nothing early, even before it', () => {
    const d = new DirectWrites();
    expect(d.split([w(1 << 24, 65536), { kind: 'truncate', length: 1n << 30n }]).now).toEqual([]);
  });
});
