/**
 * Hostile NBD clients against the server (src/io/nbd-server.ts, in this process): a fast-check
 * model run (fc.commands, size 'max') mixing well-formed requests with random and mutated packets
 * from a raw socket — bad magic numbers, random bytes, lengths past the 32 MiB limit, offsets past
 * the end, unknown commands, options and flags, truncated packets, clients that disconnect in the
 * middle of a request or stall in the middle of a header, floods of requests whose replies are
 * not read — while the raw-disk oracle tracks what the well-formed writes did. Checked:
 * - every well-formed request gets its answer (reads equal the oracle; block status never calls
 *   data zeros), every malformed one the protocol's error reply or a closed connection, and a
 *   stalled or hostile client never keeps another connection from being served;
 * - nothing escapes as an internal error (the server logs none) and nothing is left unhandled;
 * - afterwards `qemu-img check` finds the image clean and `qemu-img compare` finds it equal to the
 *   oracle: only well-formed writes changed it.
 * A failure prints fast-check's seed and path and the shrunk command list.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdServer, openDiskFile } from '../../src/io/index.ts';
import { NbdExport, type DiscardMode } from '../../src/nbd/index.ts';
import { RawDisk, writeRawFile } from '../../src/oracle/raw-disk.ts';
import { RawNbd, infoPayload, metaPayload } from '../support/nbd-client.ts';
import { requireTool, runTool } from '../support/nbd.ts';

const dir = mkdtempSync(join(tmpdir(), 'qcow2-nbd-fuzz-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
beforeAll(() => requireTool('qemu-img'));

const RUNS = Number(process.env['QCOW2_NBD_FUZZ_RUNS'] ?? 100);
const KiB = 1024;
const MiB = 1024 * KiB;
const REQUEST_MAGIC = 0x25609513;
const EINVAL = 22;

interface Cfg {
  readonly clusterBits: number;
  readonly size: number;
  readonly discard: DiscardMode;
}

interface Model {
  readonly cfg: Cfg;
  readonly oracle: RawDisk;
  /** Whether a connection is open, and whether it negotiated structured replies and block status. */
  conn: { structured: boolean; blockStatus: boolean } | undefined;
}

interface Real {
  readonly socket: string;
  conn: RawNbd | undefined;
}

const pattern = (length: number, seed: number): Uint8Array => {
  const b = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
};

/** A reader of a second, separate connection: proves the server still serves others. */
async function watchdog(r: Real, m: Model): Promise<void> {
  const c = await RawNbd.connect(r.socket);
  try {
    await c.handshake({ structured: true });
    const k = c.request(0, 0, 0n, 4096);
    const a = await c.answer(k);
    expect(a?.error, 'a second client was not served').toBe(0);
    expect(Buffer.from(a!.data!).equals(Buffer.from(m.oracle.read(0n, 4096)))).toBe(true);
  } finally {
    c.destroy();
  }
}

/** Commands run, by kind (the property asserts every kind ran). */
const tally = new Map<string, number>();

abstract class Cmd implements fc.AsyncCommand<Model, Real> {
  abstract check(m: Readonly<Model>): boolean;
  abstract run(m: Model, r: Real): Promise<void>;
  abstract toString(): string;
}

/** Counts `cmd` under its kind before it runs. */
function counted(cmd: Cmd): Cmd {
  const kind = cmd.toString().replace(/\(.*$/, '');
  const detail = cmd instanceof Request || cmd instanceof Invalid || cmd instanceof Fatal || cmd instanceof BadHandshake ? `${kind}:${(cmd as { type?: string; kind?: string }).type ?? (cmd as { kind: string }).kind}` : kind;
  const run = cmd.run.bind(cmd);
  cmd.run = async (m, r) => {
    tally.set(detail, (tally.get(detail) ?? 0) + 1);
    await run(m, r);
  };
  return cmd;
}

/** A new connection: some junk options first (each must be refused, not fatal), then GO. */
class Connect extends Cmd {
  constructor(readonly structured: boolean, readonly blockStatus: boolean, readonly junk: readonly { option: number; payload: Uint8Array }[]) {
    super();
  }
  check(m: Readonly<Model>): boolean {
    return m.conn === undefined;
  }
  async run(m: Model, r: Real): Promise<void> {
    const c = await RawNbd.connect(r.socket);
    await c.greeting();
    c.sendClientFlags(3);
    for (const j of this.junk) {
      c.sendOption(j.option, j.payload);
      const rs = await c.optionReplies();
      expect(rs, `option ${j.option} closed the connection`).not.toBeNull();
    }
    c.sendOption(8);
    await c.optionReplies();
    c.structured = true;
    if (this.structured && this.blockStatus) {
      c.sendOption(10, metaPayload('', ['base:allocation']));
      const rs = await c.optionReplies();
      expect(rs?.[rs.length - 1]?.type).toBe(1);
    }
    if (!this.structured) {
      // Simple replies: a fresh connection without STRUCTURED_REPLY.
      c.destroy();
      const d = await RawNbd.connect(r.socket);
      await d.handshake({});
      r.conn = d;
      m.conn = { structured: false, blockStatus: false };
      return;
    }
    c.sendOption(7, infoPayload('', [3]));
    const go = await c.optionReplies();
    expect(go?.[go.length - 1]?.type).toBe(1);
    r.conn = c;
    m.conn = { structured: true, blockStatus: this.blockStatus };
  }
  toString(): string {
    return `Connect(${this.structured}, ${this.blockStatus}, [${this.junk.map((j) => `${j.option}:${j.payload.length}`).join(' ')}])`;
  }
}

/** A well-formed request, answered by the oracle. */
class Request extends Cmd {
  constructor(readonly type: 'write' | 'read' | 'zero' | 'trim' | 'flush' | 'status', readonly offset: number, readonly length: number, readonly flags: number, readonly seed: number) {
    super();
  }
  check(m: Readonly<Model>): boolean {
    return m.conn !== undefined && (this.type !== 'status' || m.conn.blockStatus);
  }
  async run(m: Model, r: Real): Promise<void> {
    const c = r.conn!;
    const { offset, length } = this;
    const o = BigInt(offset);
    let k: bigint;
    switch (this.type) {
      case 'write': {
        const data = pattern(length, this.seed);
        k = c.request(1, this.flags & 1, o, length, data);
        m.oracle.apply({ kind: 'write', offset: o, data });
        break;
      }
      case 'read': k = c.request(0, m.conn!.structured ? this.flags & 5 : this.flags & 1, o, length); break;
      case 'zero':
        k = c.request(6, this.flags & 3, o, length);
        m.oracle.apply({ kind: 'writeZeroes', offset: o, length: BigInt(length), unmap: (this.flags & 2) === 0 });
        break;
      case 'trim':
        k = c.request(4, this.flags & 1, o, length);
        if (m.cfg.discard === 'unmap') m.oracle.apply({ kind: 'discard', offset: o, length: BigInt(length) });
        break;
      case 'flush': k = c.request(3, 0, 0n, 0); break;
      case 'status': k = c.request(7, this.flags & 8, o, length); break;
    }
    const a = await c.answer(k);
    expect(a, `${this}: the connection closed`).not.toBeNull();
    expect(a!.error, `${this}: ${a!.message ?? ''}`).toBe(0);
    if (this.type === 'read') expect(Buffer.from(a!.data!).equals(Buffer.from(m.oracle.read(o, length))), `${this}: data`).toBe(true);
    if (this.type === 'status') {
      const ext = [...a!.extents.values()][0]!;
      expect(ext.length).toBeGreaterThan(0);
      if ((this.flags & 8) !== 0) expect(ext.length).toBe(1);
      let at = offset;
      for (const [n, f] of ext) {
        expect(n).toBeGreaterThan(0);
        // NBD_STATE_ZERO is a promise the bytes read as zeros.
        if ((f & 2) !== 0) {
          const upto = Math.min(at + n, m.cfg.size);
          expect(m.oracle.read(BigInt(at), upto - at).every((b) => b === 0), `${this}: ZERO over data at ${at}`).toBe(true);
        }
        at += n;
      }
      expect(at - offset).toBeLessThanOrEqual(length);
    }
  }
  toString(): string {
    return `Request(${this.type}, ${this.offset}, ${this.length}, flags ${this.flags}, seed ${this.seed})`;
  }
}

/** A malformed request the server must refuse with an error reply, keeping the connection. */
class Invalid extends Cmd {
  constructor(readonly kind: 'read-past-end' | 'write-past-end' | 'zero-past-end' | 'trim-past-end' | 'huge-read' | 'bad-flags' | 'unknown-type' | 'status-empty' | 'offset-overflow', readonly n: number) {
    super();
  }
  check(m: Readonly<Model>): boolean {
    return m.conn !== undefined;
  }
  async run(m: Model, r: Real): Promise<void> {
    const c = r.conn!;
    const S = BigInt(m.cfg.size);
    const n = 1 + (this.n % 9000);
    let k: bigint;
    switch (this.kind) {
      case 'read-past-end': k = c.request(0, 0, S - BigInt(n) + 1n, n); break;
      case 'write-past-end': k = c.request(1, 0, S - BigInt(n) + 1n, n, pattern(n, this.n)); break;
      case 'zero-past-end': k = c.request(6, 0, S, n); break;
      case 'trim-past-end': k = c.request(4, 0, S + BigInt(this.n), 1); break;
      case 'huge-read': k = c.request(0, 0, 0n, 32 * MiB + 1 + this.n); break;
      case 'bad-flags': k = c.request(1, 1 << (5 + (this.n % 11)), 0n, n, pattern(n, this.n)); break;
      case 'unknown-type': k = c.request(8 + (this.n % 65000), 0, 0n, 0); break;
      case 'status-empty': k = c.request(7, 0, 0n, m.conn!.blockStatus ? 0 : n); break;
      case 'offset-overflow': k = c.request(0, 0, 0xffffffffffffff00n, 512); break;
    }
    const a = await c.answer(k);
    expect(a, `${this}: the connection closed`).not.toBeNull();
    expect(a!.error, `${this}`).toBe(EINVAL);
  }
  toString(): string {
    return `Invalid(${this.kind}, ${this.n})`;
  }
}

/** Several requests at once (writes, zeros, trims, malformed ones), answers read after all are sent. */
class Burst extends Cmd {
  constructor(readonly items: readonly { kind: 'write' | 'zero' | 'trim' | 'bad'; offset: number; length: number; seed: number }[]) {
    super();
  }
  check(m: Readonly<Model>): boolean {
    return m.conn !== undefined;
  }
  async run(m: Model, r: Real): Promise<void> {
    const c = r.conn!;
    const expected: [bigint, number][] = [];
    for (const it of this.items) {
      const o = BigInt(it.offset);
      if (it.kind === 'write') {
        const data = pattern(it.length, it.seed);
        expected.push([c.request(1, 0, o, it.length, data), 0]);
        m.oracle.apply({ kind: 'write', offset: o, data });
      } else if (it.kind === 'zero') {
        expected.push([c.request(6, 0, o, it.length), 0]);
        m.oracle.apply({ kind: 'writeZeroes', offset: o, length: BigInt(it.length), unmap: true });
      } else if (it.kind === 'trim') {
        expected.push([c.request(4, 0, o, it.length), 0]);
        if (m.cfg.discard === 'unmap') m.oracle.apply({ kind: 'discard', offset: o, length: BigInt(it.length) });
      } else {
        expected.push([c.request(1, 0, BigInt(m.cfg.size), it.length, pattern(it.length, it.seed)), EINVAL]);
      }
    }
    for (const [k, e] of expected) {
      const a = await c.answer(k);
      expect(a, `${this}: closed`).not.toBeNull();
      expect(a!.error).toBe(e);
    }
  }
  toString(): string {
    return `Burst(${this.items.map((i) => `${i.kind}@${i.offset}+${i.length}`).join(' ')})`;
  }
}

/** Many small reads sent without reading a reply, then all of them read: the server must not lose or stall any. */
class Flood extends Cmd {
  constructor(readonly count: number, readonly length: number) {
    super();
  }
  check(m: Readonly<Model>): boolean {
    return m.conn !== undefined;
  }
  async run(m: Model, r: Real): Promise<void> {
    const c = r.conn!;
    const ks: [bigint, bigint][] = [];
    for (let i = 0; i < this.count; i++) {
      const o = BigInt((i * 7919 * 512) % (m.cfg.size - this.length));
      ks.push([c.request(0, 0, o, this.length), o]);
    }
    await watchdog(r, m);
    for (const [k, o] of ks) {
      const a = await c.answer(k);
      expect(a?.error, `${this}: request at ${o}`).toBe(0);
      expect(Buffer.from(a!.data!).equals(Buffer.from(m.oracle.read(o, this.length)))).toBe(true);
    }
  }
  toString(): string {
    return `Flood(${this.count} × ${this.length})`;
  }
}

/** Half a request header, then another client is served, then the rest: nobody waits for the slow one. */
class Stall extends Cmd {
  constructor(readonly cut: number, readonly offset: number, readonly seed: number) {
    super();
  }
  check(m: Readonly<Model>): boolean {
    return m.conn !== undefined;
  }
  async run(m: Model, r: Real): Promise<void> {
    const c = r.conn!;
    const data = pattern(4096, this.seed);
    const o = BigInt(Math.min(this.offset, m.cfg.size - 4096));
    const header = RawNbd.requestHeader(1, 0, 0xabcdefn, o, 4096);
    const cut = 1 + (this.cut % 27);
    c.send(header.subarray(0, cut));
    await new Promise((resolve) => setTimeout(resolve, 5));
    await watchdog(r, m);
    c.send(header.subarray(cut), data);
    m.oracle.apply({ kind: 'write', offset: o, data });
    // Its reply: a simple reply (success) for a cookie the client's bookkeeping does not know.
    const head = await c.recv(16);
    expect(head, 'closed').not.toBeNull();
    const v = new DataView(head!.buffer, head!.byteOffset, 16);
    expect(v.getUint32(0)).toBe(0x67446698);
    expect(v.getUint32(4)).toBe(0);
    expect(v.getBigUint64(8)).toBe(0xabcdefn);
  }
  toString(): string {
    return `Stall(cut ${this.cut}, ${this.offset})`;
  }
}

/** Something that ends the connection: the server must close it (or see it closed) and change nothing. */
class Fatal extends Cmd {
  constructor(readonly kind: 'bad-magic' | 'garbage' | 'huge-write' | 'cut-header' | 'cut-payload' | 'hang-up', readonly bytes: Uint8Array, readonly n: number) {
    super();
  }
  check(m: Readonly<Model>): boolean {
    return m.conn !== undefined;
  }
  async run(m: Model, r: Real): Promise<void> {
    const c = r.conn!;
    r.conn = undefined;
    m.conn = undefined;
    switch (this.kind) {
      case 'bad-magic':
        c.send(RawNbd.requestHeader(1, 0, 1n, 0n, 512, REQUEST_MAGIC ^ (1 << (this.n % 32))), pattern(512, this.n));
        await c.untilClosed();
        return;
      case 'garbage': {
        // Fewer than 28 bytes leave the server waiting for the rest of a header: the client then
        // hangs up; 28 or more are a header with a bad magic number, which the server hangs up on.
        const g = Uint8Array.from(this.bytes);
        if (new DataView(g.buffer).getUint32(0) === REQUEST_MAGIC) g[0] = g[0]! ^ 1;
        c.send(g);
        break;
      }
      case 'huge-write': {
        const k = c.request(1, 0, 0n, 32 * MiB + 1 + this.n);
        const a = await c.answer(k);
        expect(a?.error).toBe(EINVAL);
        await c.untilClosed();
        return;
      }
      case 'cut-header':
        c.send(RawNbd.requestHeader(1, 0, 1n, 0n, 512).subarray(0, 1 + (this.n % 27)));
        break;
      case 'cut-payload':
        c.send(RawNbd.requestHeader(1, 0, 1n, 0n, 4096), pattern(4096, this.n).subarray(0, this.n % 4096));
        break;
      case 'hang-up':
        break;
    }
    c.end();
    await c.untilClosed();
  }
  toString(): string {
    return `Fatal(${this.kind}, ${this.bytes.length} bytes, ${this.n})`;
  }
}

/** A connection whose handshake is hostile: the server must hang up or refuse, never crash. */
class BadHandshake extends Cmd {
  constructor(readonly kind: 'option-magic' | 'huge-option' | 'client-flags' | 'garbage' | 'cut-option' | 'export-name-long', readonly bytes: Uint8Array, readonly n: number) {
    super();
  }
  check(): boolean {
    return true;
  }
  async run(_m: Model, r: Real): Promise<void> {
    const c = await RawNbd.connect(r.socket);
    await c.greeting();
    try {
      switch (this.kind) {
        case 'client-flags':
          c.sendClientFlags(4 << (this.n % 28));
          break;
        case 'garbage':
          c.send(this.bytes);
          c.end();
          break;
        case 'option-magic':
          c.sendClientFlags(1);
          c.send(Uint8Array.from([...this.bytes, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0].slice(0, 16)));
          break;
        case 'huge-option':
          c.sendClientFlags(1);
          c.sendOption(7, new Uint8Array(0), 32 * MiB + 1 + this.n);
          break;
        case 'cut-option':
          c.sendClientFlags(1);
          c.sendOption(7, infoPayload('', [3]).subarray(0, this.n % 8), 12);
          c.end();
          break;
        case 'export-name-long':
          c.sendClientFlags(1);
          c.sendOption(1, new Uint8Array(4097 + (this.n % 1000)));
          break;
      }
      await c.untilClosed();
    } finally {
      c.destroy();
    }
  }
  toString(): string {
    return `BadHandshake(${this.kind}, ${this.bytes.length} bytes, ${this.n})`;
  }
}

/** The client says goodbye (NBD_CMD_DISC). */
class Disconnect extends Cmd {
  check(m: Readonly<Model>): boolean {
    return m.conn !== undefined;
  }
  async run(m: Model, r: Real): Promise<void> {
    const c = r.conn!;
    c.send(RawNbd.requestHeader(2, 0, 7n, 0n, 0));
    await c.untilClosed();
    r.conn = undefined;
    m.conn = undefined;
  }
  toString(): string {
    return 'Disconnect';
  }
}

function commandsArb(cfg: Cfg): fc.Arbitrary<Iterable<fc.AsyncCommand<Model, Real>>> {
  const size = cfg.size;
  const cs = 1 << cfg.clusterBits;
  const range = fc.tuple(fc.integer({ min: 0, max: size - 1 }), fc.oneof(fc.integer({ min: 1, max: 3 * cs }), fc.integer({ min: 1, max: 300 * KiB })))
    .map(([o, n]) => [o, Math.max(1, Math.min(n, size - o))] as const);
  const junk = fc.oneof(
    fc.record({ option: fc.integer({ min: 11, max: 0xffffffff }), payload: fc.uint8Array({ maxLength: 300 }) }),
    fc.record({ option: fc.constantFrom(3, 5, 6, 8, 9, 10), payload: fc.uint8Array({ maxLength: 40 }) }),
  );
  const cmds: fc.Arbitrary<fc.AsyncCommand<Model, Real>>[] = [
    ...Array.from({ length: 3 }, () => fc.tuple(fc.boolean(), fc.boolean(), fc.array(junk, { maxLength: 4 })).map(([s, b, j]) => new Connect(s || b, b, j))),
    // Well-formed requests are the most frequent command (the array is weighted by repetition).
    ...Array.from({ length: 6 }, () => fc.tuple(fc.constantFrom('write', 'read', 'zero', 'trim', 'flush', 'status') as fc.Arbitrary<Request['type']>, range, fc.integer({ min: 0, max: 15 }), fc.nat())
      .map(([t, [o, n], f, s]) => new Request(t, o, n, f, s))),
    ...Array.from({ length: 2 }, () => fc.tuple(fc.constantFrom('read-past-end', 'write-past-end', 'zero-past-end', 'trim-past-end', 'huge-read', 'bad-flags', 'unknown-type', 'status-empty', 'offset-overflow') as fc.Arbitrary<Invalid['kind']>, fc.nat())
      .map(([k, n]) => new Invalid(k, n))),
    fc.array(fc.tuple(fc.constantFrom('write', 'zero', 'trim', 'bad') as fc.Arbitrary<'write' | 'zero' | 'trim' | 'bad'>, range, fc.nat()).map(([kind, [offset, length], seed]) => ({ kind, offset, length: kind === 'bad' ? Math.min(length, 4096) : length, seed })), { minLength: 2, maxLength: 40 })
      .map((items) => new Burst(items)),
    fc.tuple(fc.integer({ min: 17, max: 400 }), fc.constantFrom(512, 4096, 65536)).map(([n, l]) => new Flood(n, l)),
    fc.tuple(fc.nat(), fc.integer({ min: 0, max: size }), fc.nat()).map(([c, o, s]) => new Stall(c, o, s)),
    fc.tuple(fc.constantFrom('bad-magic', 'garbage', 'huge-write', 'cut-header', 'cut-payload', 'hang-up') as fc.Arbitrary<Fatal['kind']>, fc.uint8Array({ minLength: 4, maxLength: 200 }), fc.nat())
      .map(([k, b, n]) => new Fatal(k, b, n)),
    fc.tuple(fc.constantFrom('option-magic', 'huge-option', 'client-flags', 'garbage', 'cut-option', 'export-name-long') as fc.Arbitrary<BadHandshake['kind']>, fc.uint8Array({ minLength: 1, maxLength: 64 }), fc.nat())
      .map(([k, b, n]) => new BadHandshake(k, b, n)),
    fc.constant(null).map(() => new Disconnect()),
  ];
  return fc.commands(cmds.map((a) => a.map((c) => counted(c as Cmd))), { size: 'max', maxCommands: 60 });
}

const cfgArb: fc.Arbitrary<Cfg> = fc.record({
  clusterBits: fc.constantFrom(12, 16),
  size: fc.constantFrom(4 * MiB, 6 * MiB + 512 * KiB),
  discard: fc.constantFrom<DiscardMode>('ignore', 'unmap'),
});

let runNo = 0;

describe('hostile NBD clients', () => {
  it('never crash or stall the server, and change the image only through well-formed writes', async () => {
    await fc.assert(
      fc.asyncProperty(cfgArb.chain((cfg) => commandsArb(cfg).map((cmds) => ({ cfg, cmds }))), async ({ cfg, cmds }) => {
        const n = runNo++;
        const image = join(dir, `f${n}.qcow2`);
        expect(runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${1 << cfg.clusterBits}`, image, String(cfg.size)]).status).toBe(0);
        const disk = await openDiskFile(image, { readOnly: false, discardPassthrough: cfg.discard === 'unmap', writeback: true, syncIo: true });
        const log: string[] = [];
        const socket = join(dir, `f${n}.sock`);
        const server = await NbdServer.listen([new NbdExport(disk, { discard: cfg.discard, multiConn: true })], { socketPath: socket, persistent: true, shared: 0, log: (l) => log.push(l) });
        const model: Model = { cfg, oracle: new RawDisk({ size: BigInt(cfg.size), clusterSize: BigInt(1 << cfg.clusterBits) }), conn: undefined };
        const real: Real = { socket, conn: undefined };
        try {
          await fc.asyncModelRun(() => ({ model, real }), cmds);
          await watchdog(real, model);
        } finally {
          real.conn?.destroy();
          await server.shutdown();
          await disk.close();
        }
        expect(log.filter((l) => /internal|unexpected error/.test(l)), log.join('\n')).toEqual([]);
        expect(runTool('qemu-img', ['check', image]).status).toBe(0);
        const raw = join(dir, `f${n}.raw`);
        writeRawFile(model.oracle, raw);
        const cmp = runTool('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', image, raw]);
        expect(cmp.status, cmp.stdout).toBe(0);
        rmSync(image, { force: true });
        rmSync(raw, { force: true });
      }),
      { numRuns: RUNS, includeErrorInReport: true },
    );
    const report = [...tally.entries()].sort().map(([k, n]) => `${k}: ${n}`).join('\n');
    if (process.env['QCOW2_NBD_FUZZ_STATS'] === '1') console.log(report);
    // Every kind of command ran (the property is not vacuous).
    for (const kind of ['Connect', 'Request:write', 'Request:read', 'Request:zero', 'Request:trim', 'Request:status', 'Invalid:bad-flags', 'Burst', 'Flood', 'Stall', 'Fatal:garbage', 'Fatal:cut-payload', 'BadHandshake:garbage', 'Disconnect']) {
      expect(tally.get(kind) ?? 0, `${kind}\n${report}`).toBeGreaterThan(0);
    }
  });
});
