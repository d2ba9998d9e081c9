/**
 * A raw NBD client for the tests: it sends whatever bytes it is told (well-formed requests, or
 * hostile ones) and decodes what comes back — option replies, simple replies, structured chunks —
 * without trusting any of it, so the same sequence can be played against qcow2-ref serve and
 * qemu-nbd and the answers compared. Written from the protocol document (NetworkBlockDevice/nbd
 * doc/proto.md), independently of src/nbd's encoders, so that it checks them rather than mirrors
 * them. Every wait is bounded by a hang detector.
 */
import { createConnection, type Socket } from 'node:net';

const IHAVEOPT = 0x49484156454f5054n;
const REP_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_MAGIC = 0x67446698;
const STRUCTURED_MAGIC = 0x668e33ef;

/** What one wait may take before the server is declared stalled (a hang detector). */
export const HANG_MS = 60_000;

export class ServerStalled extends Error {
  override readonly name = 'ServerStalled';
}

/** The answer to one transmission request, reassembled from its reply (simple or structured). */
export interface Answer {
  /** 0 on success; the first error otherwise. */
  error: number;
  message?: string;
  /** READ: the bytes, holes filled with zeros (only when every byte was covered). */
  data?: Uint8Array;
  /** BLOCK_STATUS: context id → [length, flags] descriptors. */
  extents: Map<number, [number, number][]>;
  /** Structured chunk types seen, in order. */
  chunks: number[];
}

export interface OptionReply {
  readonly option: number;
  readonly type: number;
  readonly payload: Uint8Array;
}

/** A connected client. */
export class RawNbd {
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  private waiter: (() => void) | undefined;
  private nextCookie = 1n;
  /** Requests sent and not yet fully answered: cookie → type and length. */
  private readonly pending = new Map<bigint, { type: number; offset: bigint; length: number; answer: Answer; covered: number }>();
  structured = false;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (b: Buffer) => {
      this.chunks.push(b);
      this.buffered += b.length;
      this.waiter?.();
    });
    const end = (): void => {
      this.ended = true;
      this.waiter?.();
    };
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', end);
  }

  /** Connects to a Unix socket. */
  static connect(path: string): Promise<RawNbd> {
    return new Promise((resolve, reject) => {
      const s = createConnection(path);
      s.once('connect', () => resolve(new RawNbd(s)));
      s.once('error', reject);
    });
  }

  /** Whether the server closed the connection (and everything it sent has been read). */
  get closed(): boolean {
    return this.ended && this.buffered === 0;
  }

  send(...parts: Uint8Array[]): void {
    if (this.socket.destroyed || !this.socket.writable) return;
    for (const p of parts) this.socket.write(p);
  }

  /** Half-closes (EOF to the server) or destroys the connection. */
  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Exactly `n` bytes, or null when the server closed first. Throws ServerStalled after HANG_MS. */
  async recv(n: number): Promise<Uint8Array | null> {
    const deadline = Date.now() + HANG_MS;
    while (this.buffered < n) {
      if (this.ended) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new ServerStalled(`no answer within ${HANG_MS} ms (waiting for ${n} bytes, have ${this.buffered})`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiter = () => {
          clearTimeout(t);
          r();
        };
      });
      this.waiter = undefined;
    }
    const out = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const c = this.chunks[0]!;
      const k = Math.min(n - at, c.length);
      out.set(c.subarray(0, k), at);
      at += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.buffered -= n;
    return out;
  }

  /** Waits until the server closes the connection, dropping what it sends; throws ServerStalled after HANG_MS. */
  async untilClosed(): Promise<void> {
    while (!this.ended || this.buffered > 0) {
      if (this.buffered > 0) await this.recv(this.buffered);
      else await this.recv(1);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Handshake.

  /** The server's greeting: NBDMAGIC, IHAVEOPT, handshake flags. */
  async greeting(): Promise<number> {
    const g = await this.recv(18);
    if (g === null) throw new Error('closed before the greeting');
    const v = dv(g);
    if (v.getBigUint64(0) !== 0x4e42444d41474943n || v.getBigUint64(8) !== IHAVEOPT) throw new Error('bad greeting');
    return v.getUint16(16);
  }

  sendClientFlags(flags: number): void {
    this.send(u32(flags));
  }

  sendOption(option: number, payload: Uint8Array = new Uint8Array(0), declaredLength = payload.length): void {
    const h = new Uint8Array(16);
    const v = dv(h);
    v.setBigUint64(0, IHAVEOPT);
    v.setUint32(8, option >>> 0);
    v.setUint32(12, declaredLength >>> 0);
    this.send(h, payload);
  }

  /** One option reply, or null when the server closed. */
  async optionReply(): Promise<OptionReply | null> {
    const h = await this.recv(20);
    if (h === null) return null;
    const v = dv(h);
    if (v.getBigUint64(0) !== REP_MAGIC) throw new Error(`bad option reply magic 0x${v.getBigUint64(0).toString(16)}`);
    const len = v.getUint32(16);
    if (len > 64 * 1024 * 1024) throw new Error(`option reply of ${len} bytes`);
    const payload = await this.recv(len);
    if (payload === null) return null;
    return { option: v.getUint32(8), type: v.getUint32(12), payload };
  }

  /** Option replies up to and including the final one (ACK or an error), or null when the server closed. */
  async optionReplies(): Promise<OptionReply[] | null> {
    const out: OptionReply[] = [];
    for (let i = 0; i < 100_000; i++) {
      const r = await this.optionReply();
      if (r === null) return null;
      out.push(r);
      if (r.type === 1 || r.type >= 2 ** 31) return out;
    }
    throw new Error('too many option replies');
  }

  /**
   * The usual handshake: fixed newstyle with NO_ZEROES, optionally structured replies and meta
   * contexts, then NBD_OPT_GO for `name`. Returns the export size and transmission flags.
   */
  async handshake(opts: { structured?: boolean; contexts?: readonly string[]; name?: string } = {}): Promise<{ size: bigint; flags: number; contextIds: Map<string, number> }> {
    await this.greeting();
    this.sendClientFlags(3);
    const contextIds = new Map<string, number>();
    if (opts.structured === true) {
      this.sendOption(8);
      const r = await this.optionReplies();
      if (r === null || r[r.length - 1]!.type !== 1) throw new Error('structured replies refused');
      this.structured = true;
      if (opts.contexts !== undefined) {
        this.sendOption(10, metaPayload(opts.name ?? '', opts.contexts));
        const m = await this.optionReplies();
        if (m === null || m[m.length - 1]!.type !== 1) throw new Error('meta contexts refused');
        for (const x of m.filter((y) => y.type === 4)) contextIds.set(new TextDecoder().decode(x.payload.subarray(4)), dv(x.payload).getUint32(0));
      }
    }
    this.sendOption(7, infoPayload(opts.name ?? '', [3]));
    const rs = await this.optionReplies();
    if (rs === null || rs[rs.length - 1]!.type !== 1) throw new Error(`GO refused: ${rs === null ? 'closed' : rs[rs.length - 1]!.type}`);
    const exp = rs.find((r) => r.type === 3 && dv(r.payload).getUint16(0) === 0)!;
    return { size: dv(exp.payload).getBigUint64(2), flags: dv(exp.payload).getUint16(10), contextIds };
  }

  // -------------------------------------------------------------------------------------------
  // Transmission.

  /** The 28-byte request header (no payload). */
  static requestHeader(type: number, flags: number, cookie: bigint, offset: bigint, length: number, magic = REQUEST_MAGIC): Uint8Array {
    const h = new Uint8Array(28);
    const v = dv(h);
    v.setUint32(0, magic >>> 0);
    v.setUint16(4, flags);
    v.setUint16(6, type);
    v.setBigUint64(8, cookie);
    v.setBigUint64(16, offset);
    v.setUint32(24, length >>> 0);
    return h;
  }

  /** Sends a request (with `data` after the header for a WRITE); returns its cookie. */
  request(type: number, flags: number, offset: bigint, length: number, data?: Uint8Array): bigint {
    const cookie = this.nextCookie++;
    this.pending.set(cookie, { type, offset, length, answer: { error: 0, extents: new Map(), chunks: [] }, covered: 0 });
    this.send(RawNbd.requestHeader(type, flags, cookie, offset, length), ...(data !== undefined ? [data] : []));
    return cookie;
  }

  /** Forgets a request that will get no reply (DISC, or one the server may drop). */
  forget(cookie: bigint): void {
    this.pending.delete(cookie);
  }

  /**
   * Reads replies until the request `cookie` is fully answered; answers to other pending requests
   * read meanwhile are kept. Null when the server closed first. Throws on a malformed reply.
   */
  async answer(cookie: bigint): Promise<Answer | null> {
    const done = this.done.get(cookie);
    if (done !== undefined) {
      this.done.delete(cookie);
      return done;
    }
    for (;;) {
      const c = await this.readOne();
      if (c === null) return null;
      if (c === cookie) {
        const a = this.done.get(cookie)!;
        this.done.delete(cookie);
        return a;
      }
    }
  }

  private readonly done = new Map<bigint, Answer>();

  /** Reads one reply message; returns the cookie it completed, undefined when the request goes on, null when closed. */
  private async readOne(): Promise<bigint | undefined | null> {
    const m = await this.recv(4);
    if (m === null) return null;
    const magic = dv(m).getUint32(0);
    if (magic === SIMPLE_MAGIC) {
      const r = await this.recv(12);
      if (r === null) return null;
      const error = dv(r).getUint32(0);
      const cookie = dv(r).getBigUint64(4);
      const p = this.pending.get(cookie);
      if (p === undefined) throw new Error(`simple reply for unknown cookie ${cookie}`);
      p.answer.error = error;
      if (p.type === 0 && error === 0) {
        const data = await this.recv(p.length);
        if (data === null) return null;
        p.answer.data = data;
      }
      return this.finish(cookie);
    }
    if (magic !== STRUCTURED_MAGIC) throw new Error(`bad reply magic 0x${magic.toString(16)}`);
    const r = await this.recv(16);
    if (r === null) return null;
    const v = dv(r);
    const flags = v.getUint16(0);
    const type = v.getUint16(2);
    const cookie = v.getBigUint64(4);
    const len = v.getUint32(12);
    const p = this.pending.get(cookie);
    if (p === undefined) throw new Error(`chunk for unknown cookie ${cookie}`);
    if (len > 40 * 1024 * 1024) throw new Error(`chunk of ${len} bytes`);
    const payload = await this.recv(len);
    if (payload === null) return null;
    const pv = dv(payload);
    const a = p.answer;
    a.chunks.push(type);
    p.answer.data ??= p.type === 0 ? new Uint8Array(p.length) : undefined;
    switch (type) {
      case 0:
        if (len !== 0) throw new Error('NONE chunk with payload');
        break;
      case 1: {
        const off = pv.getBigUint64(0);
        const n = len - 8;
        if (off < p.offset || off + BigInt(n) > p.offset + BigInt(p.length)) throw new Error('data chunk outside the request');
        a.data!.set(payload.subarray(8), Number(off - p.offset));
        p.covered += n;
        break;
      }
      case 2: {
        const off = pv.getBigUint64(0);
        const n = pv.getUint32(8);
        if (off < p.offset || off + BigInt(n) > p.offset + BigInt(p.length) || n === 0) throw new Error('hole chunk outside the request');
        p.covered += n;
        break;
      }
      case 5: {
        const id = pv.getUint32(0);
        const list: [number, number][] = [];
        for (let i = 4; i + 8 <= len; i += 8) list.push([pv.getUint32(i), pv.getUint32(i + 4)]);
        a.extents.set(id, list);
        break;
      }
      default:
        if ((type & 0x8000) === 0) throw new Error(`unknown chunk type ${type}`);
        if (a.error === 0) a.error = pv.getUint32(0);
        a.message = new TextDecoder().decode(payload.subarray(6, 6 + pv.getUint16(4)));
    }
    if ((flags & 1) === 0) return undefined;
    if (p.type === 0 && a.error === 0 && p.covered !== p.length) throw new Error(`read reply covers ${p.covered} of ${p.length} bytes`);
    return this.finish(cookie);
  }

  private finish(cookie: bigint): bigint {
    const p = this.pending.get(cookie)!;
    this.pending.delete(cookie);
    this.done.set(cookie, p.answer);
    return cookie;
  }
}

function dv(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function u32(x: number): Uint8Array {
  const b = new Uint8Array(4);
  dv(b).setUint32(0, x >>> 0);
  return b;
}

/** NBD_OPT_INFO / NBD_OPT_GO's payload. */
export function infoPayload(name: string, infos: readonly number[]): Uint8Array {
  const n = new TextEncoder().encode(name);
  const b = new Uint8Array(4 + n.length + 2 + 2 * infos.length);
  const v = dv(b);
  v.setUint32(0, n.length);
  b.set(n, 4);
  v.setUint16(4 + n.length, infos.length);
  infos.forEach((x, i) => v.setUint16(6 + n.length + 2 * i, x));
  return b;
}

/** NBD_OPT_{LIST,SET}_META_CONTEXT's payload. */
export function metaPayload(name: string, queries: readonly string[]): Uint8Array {
  const enc = new TextEncoder();
  const n = enc.encode(name);
  const qs = queries.map((q) => enc.encode(q));
  const b = new Uint8Array(4 + n.length + 4 + qs.reduce((s, q) => s + 4 + q.length, 0));
  const v = dv(b);
  v.setUint32(0, n.length);
  b.set(n, 4);
  let at = 4 + n.length;
  v.setUint32(at, qs.length);
  at += 4;
  for (const q of qs) {
    v.setUint32(at, q.length);
    b.set(q, at + 4);
    at += 4 + q.length;
  }
  return b;
}
