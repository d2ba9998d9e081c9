/**
 * One NBD connection, from the server's greeting to the disconnect: the fixed newstyle handshake
 * (options) and the transmission phase (requests and replies), over any byte channel. Platform
 * neutral on purpose: src/io/nbd-server.ts gives it Node sockets, a test can give it a pipe in
 * memory, and nothing here knows which.
 *
 * The rules it follows are the upstream protocol document's (NetworkBlockDevice/nbd doc/proto.md);
 * where that leaves a choice, it does what QEMU's server does (nbd/server.c: nbd_negotiate_options,
 * nbd_negotiate_handle_info, nbd_negotiate_meta_queries, nbd_co_receive_request, nbd_handle_request),
 * so that clients written against qemu-nbd see the same answers, errors included.
 *
 * Untrusted input. Everything the client sends is checked before it is used: magic numbers, option
 * and request lengths (nothing is allocated for a length before it is checked against the limits:
 * NBD_MAX_BUFFER_SIZE for payloads, MAX_OPTION_PAYLOAD for option data that is parsed, anything
 * else is skipped without being stored), offsets against the export size, flags against the
 * command. A violation gets the protocol's error reply, or ends the connection when the protocol
 * offers no way to continue (a bad magic number, a WRITE payload too large to read) — never an
 * exception out of `run`. Memory per connection is bounded: at most MAX_IN_FLIGHT requests and
 * MAX_IN_FLIGHT_BYTES of request data are in flight (QEMU: MAX_NBD_REQUESTS = 16), and no new
 * request is read while the replies already queued exceed the channel's high-water mark, so a
 * client that floods requests without reading replies only stalls itself.
 */
import { isDiskError } from '../disk/index.ts';
import { ModelError } from '../model/index.ts';
import type { MetaContexts, NbdExport } from './export.ts';
import {
  NBD_CMD_BLOCK_STATUS, NBD_CMD_CACHE, NBD_CMD_DISC, NBD_CMD_FLAG_DF, NBD_CMD_FLAG_FAST_ZERO, NBD_CMD_FLAG_FUA, NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE, NBD_CMD_FLUSH, NBD_CMD_READ, NBD_CMD_TRIM, NBD_CMD_WRITE, NBD_CMD_WRITE_ZEROES, NBD_EINVAL, NBD_EIO, NBD_ENOMEM,
  NBD_ENOSPC, NBD_ENOTSUP, NBD_EOVERFLOW, NBD_EPERM, NBD_ESHUTDOWN, NBD_FLAG_C_FIXED_NEWSTYLE, NBD_FLAG_C_NO_ZEROES, NBD_FLAG_SEND_DF,
  NBD_INFO_BLOCK_SIZE, NBD_INFO_DESCRIPTION, NBD_INFO_EXPORT, NBD_INFO_NAME, NBD_MAX_BUFFER_SIZE, NBD_MAX_STRING_SIZE, NBD_MIN_BLOCK,
  NBD_OPTION_HEADER_SIZE, NBD_OPTS_MAGIC, NBD_OPT_ABORT, NBD_OPT_EXPORT_NAME, NBD_OPT_GO, NBD_OPT_INFO, NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT, NBD_OPT_SET_META_CONTEXT, NBD_OPT_STARTTLS, NBD_OPT_STRUCTURED_REPLY, NBD_PREFERRED_BLOCK, NBD_REPLY_FLAG_DONE,
  NBD_REP_ACK, NBD_REP_ERR_INVALID, NBD_REP_ERR_POLICY, NBD_REP_ERR_TOO_BIG, NBD_REP_ERR_UNKNOWN, NBD_REP_ERR_UNSUP, NBD_REP_INFO,
  NBD_REP_META_CONTEXT, NBD_REP_SERVER, NBD_REQUEST_MAGIC, NBD_REQUEST_SIZE, NbdOptionError, commandName, decodeOptionHeader, decodeRequest,
  encodeBlockSizeInfo, encodeBlockStatusChunk, encodeDataChunkHeader, encodeDoneChunk, encodeErrorChunk, encodeExportInfo, encodeGreeting,
  encodeHoleChunk, encodeInfo, encodeMetaContextReply, encodeOptionReply, encodeServerReply, encodeSimpleReply, optionName, parseInfoRequest,
  parseMetaContextRequest, sameBytes, sanitizeName, type NbdRequest,
} from './protocol.ts';

/**
 * A byte stream to one client. Implementations buffer what arrives and apply back-pressure (stop
 * reading from the peer) while more than they need is buffered.
 */
export interface NbdChannel {
  /** Exactly `n` bytes (n ≤ NBD_MAX_BUFFER_SIZE), or null when the stream ended or failed first. */
  read(n: number): Promise<Uint8Array | null>;
  /** Reads and drops `n` bytes without storing them; false when the stream ended first. */
  skip(n: number): Promise<boolean>;
  /**
   * Queues `chunks` to be sent, contiguously. Does nothing once the channel is closed. `sent`, when
   * given, runs once the chunks are handed to the transport or dropped with the channel — the caller
   * may change them from then on — or never, if neither happens.
   */
  write(chunks: readonly Uint8Array[], sent?: () => void): void;
  /** Resolves once the queued output is below the channel's high-water mark (or the channel closed). */
  drained(): Promise<void>;
  /** Sends what is queued, then ends the connection. */
  end(): void;
  /** Whether the stream ended before a read could complete in the middle of a message (for messages). */
  readonly truncated: boolean;
}

/** What a session needs from the server it belongs to. */
export interface NbdServerContext {
  /** The exports, in NBD_OPT_LIST order. */
  readonly exports: readonly NbdExport[];
  /** One line about a client (a protocol violation, a failed request); no trailing newline. */
  log(line: string): void;
}

/** Requests read but not yet answered, per connection (QEMU's MAX_NBD_REQUESTS). */
export const MAX_IN_FLIGHT = 16;
/** Bytes of READ and WRITE data in flight per connection, beyond which no new request is read. */
export const MAX_IN_FLIGHT_BYTES = 64 * 1024 * 1024;

/** Reads of up to this many bytes go into reused buffers (see NbdSession.readBuffer). */
const MAX_SPARE_BUFFER = 1024 * 1024;
/** Bytes of spare read buffers a session keeps: 16 MiB at most per connection (16 reads of 1 MiB in flight). */
const SPARE_BYTES = 16 * 1024 * 1024;
/** Largest option payload that is read and parsed; longer ones (up to NBD_MAX_BUFFER_SIZE) are skipped and refused. */
export const MAX_OPTION_PAYLOAD = 1024 * 1024;
/** Options one handshake may send before the server deems it a denial of service and disconnects. */
export const MAX_OPTIONS = 4096;

/** The end of a connection the protocol calls for (a hard disconnect), with the reason for the log. */
class Disconnect extends Error {
  override readonly name = 'Disconnect';
  constructor(message: string, readonly quiet = false) {
    super(message);
  }
}

/** One client connection. `run` does all of it; `stop` asks it to finish early (server shutdown). */
export class NbdSession {
  private structured = false;
  private exp: NbdExport | undefined;
  private meta: { readonly exp: NbdExport; readonly contexts: MetaContexts; readonly count: number } | undefined;
  private inflight = 0;
  private inflightBytes = 0;
  private wake: (() => void) | undefined;
  private stopping = false;
  /** Requests answered (for tests and logs). */
  requests = 0;
  /** Read buffers whose replies were sent, for the next reads: by size (powers of two), SPARE_BYTES at most in all. */
  private readonly spare = new Map<number, Uint8Array[]>();
  private spareBytes = 0;

  constructor(private readonly channel: NbdChannel, private readonly ctx: NbdServerContext, private readonly label = 'client') {}

  /**
   * Runs the connection to its end: handshake, then requests until the client disconnects, breaks
   * the protocol, or `stop` is called; waits for the requests in flight to be answered; ends the
   * channel. Never rejects.
   */
  async run(): Promise<void> {
    try {
      if (await this.handshake()) await this.transmission();
    } catch (e) {
      if (e instanceof Disconnect) {
        if (!e.quiet) this.ctx.log(`${this.label}: Disconnect client, due to: ${e.message}`);
      } else {
        this.ctx.log(`${this.label}: Disconnect client, due to an internal error: ${(e as Error)?.message ?? String(e)}`);
      }
    } finally {
      await this.settled();
      this.channel.end();
    }
  }

  /** Stops reading requests: the ones in flight are answered, then the connection ends. */
  stop(): void {
    this.stopping = true;
    this.wake?.();
  }

  /** Resolves once no request is in flight. */
  async settled(): Promise<void> {
    while (this.inflight > 0) await new Promise<void>((r) => (this.wake = r));
  }

  // -------------------------------------------------------------------------------------------
  // Handshake (proto.md "Fixed newstyle negotiation"; QEMU's nbd_negotiate_options).

  /** The handshake; true when the client entered the transmission phase. */
  private async handshake(): Promise<boolean> {
    const ch = this.channel;
    ch.write([encodeGreeting()]);
    const cf = await ch.read(4);
    if (cf === null) throw this.ended('client flags');
    let flags = new DataView(cf.buffer, cf.byteOffset, 4).getUint32(0);
    const fixed = (flags & NBD_FLAG_C_FIXED_NEWSTYLE) !== 0;
    const noZeroes = (flags & NBD_FLAG_C_NO_ZEROES) !== 0;
    flags &= ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    // The server "MUST drop the TCP connection if the client sets an unknown flag".
    if (flags !== 0) throw new Disconnect(`Unknown client flags 0x${(flags >>> 0).toString(16)} received`);

    for (let n = 0; n < MAX_OPTIONS; n++) {
      if (this.stopping) return false;
      await ch.drained();
      const h = await ch.read(NBD_OPTION_HEADER_SIZE);
      if (h === null) throw this.ended('option');
      const { magic, option, length } = decodeOptionHeader(h);
      if (magic !== NBD_OPTS_MAGIC) throw new Disconnect('Bad magic received');
      if (length > NBD_MAX_BUFFER_SIZE) throw new Disconnect(`len (${length}) is larger than max len (${NBD_MAX_BUFFER_SIZE})`);
      if (!fixed) {
        // Non-fixed newstyle: only NBD_OPT_EXPORT_NAME exists.
        if (option !== NBD_OPT_EXPORT_NAME) throw new Disconnect(`Unsupported option ${option} (${optionName(option)})`);
        await this.exportName(length, noZeroes);
        return true;
      }
      switch (option) {
        case NBD_OPT_EXPORT_NAME:
          await this.exportName(length, noZeroes);
          return true;
        case NBD_OPT_ABORT:
          // "The server MUST reply with NBD_REP_ACK"; any data is ignored. Then the client hangs up.
          if (!(await ch.skip(length))) return false;
          this.optionReply(option, NBD_REP_ACK);
          return false;
        case NBD_OPT_INFO:
        case NBD_OPT_GO:
          if (await this.withPayload(option, length, (p) => this.info(option, p))) return true;
          break;
        case NBD_OPT_LIST:
          await this.withPayload(option, length, (p) => {
            if (p.length !== 0) throw new NbdOptionError(NBD_REP_ERR_INVALID, `option '${optionName(option)}' has unexpected length`);
            for (const e of this.ctx.exports) this.optionReply(option, NBD_REP_SERVER, encodeServerReply(e.nameBytes, e.descriptionBytes ?? new Uint8Array(0)));
            this.optionReply(option, NBD_REP_ACK);
            return false;
          });
          break;
        case NBD_OPT_STARTTLS:
          await this.withPayload(option, length, (p) => {
            if (p.length !== 0) throw new NbdOptionError(NBD_REP_ERR_INVALID, `option '${optionName(option)}' has unexpected length`);
            throw new NbdOptionError(NBD_REP_ERR_POLICY, 'TLS not configured');
          });
          break;
        case NBD_OPT_STRUCTURED_REPLY:
          await this.withPayload(option, length, (p) => {
            if (p.length !== 0) throw new NbdOptionError(NBD_REP_ERR_INVALID, `option '${optionName(option)}' has unexpected length`);
            if (this.structured) throw new NbdOptionError(NBD_REP_ERR_INVALID, 'structured reply already negotiated');
            this.structured = true;
            this.optionReply(option, NBD_REP_ACK);
            return false;
          });
          break;
        case NBD_OPT_LIST_META_CONTEXT:
        case NBD_OPT_SET_META_CONTEXT:
          await this.withPayload(option, length, (p) => this.metaContext(option, p));
          break;
        default:
          if (!(await ch.skip(length))) throw this.ended('option data');
          this.optionReply(option, NBD_REP_ERR_UNSUP, `Unsupported option ${option >>> 0} (${optionName(option)})`);
      }
    }
    throw new Disconnect(`more than ${MAX_OPTIONS} options`);
  }

  /**
   * Reads an option's payload (skipping and refusing with NBD_REP_ERR_TOO_BIG one longer than
   * MAX_OPTION_PAYLOAD) and hands it to `handle`, which sends the replies and says whether the
   * transmission phase starts. An NbdOptionError from `handle` becomes its error reply.
   */
  private async withPayload(option: number, length: number, handle: (payload: Uint8Array) => boolean): Promise<boolean> {
    if (length > MAX_OPTION_PAYLOAD) {
      if (!(await this.channel.skip(length))) throw this.ended('option data');
      this.optionReply(option, NBD_REP_ERR_TOO_BIG, `option '${optionName(option)}' is too long (${length} bytes)`);
      return false;
    }
    const payload = await this.channel.read(length);
    if (payload === null) throw this.ended('option data');
    try {
      return handle(payload);
    } catch (e) {
      if (!(e instanceof NbdOptionError)) throw e;
      // An option error reply: its message is at most NBD_MAX_STRING_SIZE bytes.
      this.optionReply(option, e.reply, e.message);
      return false;
    }
  }

  private optionReply(option: number, type: number, payload: Uint8Array | string = new Uint8Array(0)): void {
    let bytes = typeof payload === 'string' ? new TextEncoder().encode(payload) : payload;
    if (typeof payload === 'string' && bytes.length > NBD_MAX_STRING_SIZE) bytes = bytes.subarray(0, NBD_MAX_STRING_SIZE);
    this.channel.write([encodeOptionReply(option, type, bytes)]);
  }

  private findExport(name: Uint8Array): NbdExport | undefined {
    return this.ctx.exports.find((e) => sameBytes(e.nameBytes, name));
  }

  private transmissionFlags(exp: NbdExport): number {
    // nbd_negotiate_handle_info / _export_name: NBD_FLAG_SEND_DF once structured replies are on.
    return exp.flags | (this.structured ? NBD_FLAG_SEND_DF : 0);
  }

  /** NBD_OPT_EXPORT_NAME (nbd_negotiate_handle_export_name): no error reply exists, so a failure disconnects. */
  private async exportName(length: number, noZeroes: boolean): Promise<void> {
    if (length > NBD_MAX_STRING_SIZE) throw new Disconnect('Bad length received');
    const name = await this.channel.read(length);
    if (name === null) throw this.ended('export name');
    const exp = this.findExport(name);
    if (exp === undefined) throw new Disconnect('export not found');
    const info = encodeExportInfo(exp.size, this.transmissionFlags(exp));
    this.channel.write(noZeroes ? [info] : [info, new Uint8Array(124)]);
    this.enter(exp);
  }

  /** NBD_OPT_INFO / NBD_OPT_GO (nbd_negotiate_handle_info); true when GO succeeded. */
  private info(option: number, payload: Uint8Array): boolean {
    const req = parseInfoRequest(option, payload);
    const exp = this.findExport(req.name);
    if (exp === undefined) throw new NbdOptionError(NBD_REP_ERR_UNKNOWN, `export '${sanitizeName(req.name)}' not present`);
    if (req.wantName) this.optionReply(option, NBD_REP_INFO, encodeInfo(NBD_INFO_NAME, req.name));
    if (exp.descriptionBytes !== undefined) this.optionReply(option, NBD_REP_INFO, encodeInfo(NBD_INFO_DESCRIPTION, exp.descriptionBytes));
    // Always sent, as qemu-nbd sends it: minimum 1 (qcow2's request alignment), preferred 4096,
    // maximum 32 MiB. With a minimum of 1 no client is told to align, so none is refused for not
    // asking (NBD_REP_ERR_BLOCK_SIZE_REQD is never needed).
    this.optionReply(option, NBD_REP_INFO, encodeInfo(NBD_INFO_BLOCK_SIZE, encodeBlockSizeInfo(NBD_MIN_BLOCK, NBD_PREFERRED_BLOCK, NBD_MAX_BUFFER_SIZE)));
    this.optionReply(option, NBD_REP_INFO, encodeInfo(NBD_INFO_EXPORT, encodeExportInfo(exp.size, this.transmissionFlags(exp))));
    this.optionReply(option, NBD_REP_ACK);
    if (option !== NBD_OPT_GO) return false;
    this.enter(exp);
    return true;
  }

  /** The transmission phase starts on `exp`; contexts chosen for another export are dropped (nbd_check_meta_export). */
  private enter(exp: NbdExport): void {
    this.exp = exp;
    if (this.meta !== undefined && this.meta.exp !== exp) this.meta = undefined;
  }

  /** NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT (nbd_negotiate_meta_queries). */
  private metaContext(option: number, payload: Uint8Array): boolean {
    const set = option === NBD_OPT_SET_META_CONTEXT;
    if (set) {
      // "Issuing this command replaces all previously-set metadata contexts (including when this
      // command fails)".
      this.meta = undefined;
      if (!this.structured) throw new NbdOptionError(NBD_REP_ERR_INVALID, `request option '${optionName(option)}' when structured reply is not negotiated`);
    }
    const req = parseMetaContextRequest(option, payload);
    const exp = this.findExport(req.exportName);
    if (exp === undefined) throw new NbdOptionError(NBD_REP_ERR_UNKNOWN, `export '${sanitizeName(req.exportName)}' not present`);
    let baseAllocation = false;
    let allocationDepth = false;
    if (!set && req.queries.length === 0) {
      baseAllocation = true;
      allocationDepth = exp.allocationDepth;
    }
    for (const q of req.queries) {
      // nbd_meta_base_query / nbd_meta_qemu_query: an empty leaf is a wildcard when listing and
      // selects nothing when setting; unknown namespaces and leaves are ignored.
      if (q === 'base:allocation' || (q === 'base:' && !set)) baseAllocation = true;
      else if (q === 'qemu:allocation-depth' || (q === 'qemu:' && !set)) allocationDepth ||= exp.allocationDepth;
    }
    const contexts: MetaContexts = { baseAllocation, allocationDepth };
    if (baseAllocation) this.optionReply(option, NBD_REP_META_CONTEXT, encodeMetaContextReply(set ? CONTEXT_BASE : 0, 'base:allocation'));
    if (allocationDepth) this.optionReply(option, NBD_REP_META_CONTEXT, encodeMetaContextReply(set ? CONTEXT_DEPTH : 0, 'qemu:allocation-depth'));
    this.optionReply(option, NBD_REP_ACK);
    if (set) this.meta = { exp, contexts, count: (baseAllocation ? 1 : 0) + (allocationDepth ? 1 : 0) };
    return false;
  }

  /** A Disconnect for a stream that ended while `what` was being read (quiet when it ended cleanly between messages). */
  private ended(what: string): Disconnect {
    return this.channel.truncated ? new Disconnect(`Unexpected end-of-file before all bytes were read (${what})`) : new Disconnect('client closed the connection', true);
  }

  // -------------------------------------------------------------------------------------------
  // Transmission (proto.md "Transmission"; QEMU's nbd_co_receive_request, nbd_handle_request).

  private async transmission(): Promise<void> {
    const ch = this.channel;
    const exp = this.exp!;
    for (;;) {
      await this.room(0);
      if (this.stopping) return;
      const h = await ch.read(NBD_REQUEST_SIZE);
      if (h === null) {
        if (ch.truncated) throw this.ended('request');
        return;
      }
      const req = decodeRequest(h);
      if (req.magic !== NBD_REQUEST_MAGIC) throw new Disconnect(`invalid magic (got 0x${(req.magic >>> 0).toString(16)})`);
      // NBD_CMD_DISC: "the server MUST ... close the TCP connection"; no reply, whatever its fields.
      if (req.type === NBD_CMD_DISC) return;

      let checkLength = false;
      let checkReadOnly = false;
      let payload = false;
      let validFlags = NBD_CMD_FLAG_FUA;
      switch (req.type) {
        case NBD_CMD_READ:
          if (this.structured) validFlags |= NBD_CMD_FLAG_DF;
          checkLength = true;
          break;
        case NBD_CMD_WRITE:
          payload = true;
          checkLength = true;
          checkReadOnly = true;
          break;
        case NBD_CMD_TRIM:
          checkReadOnly = true;
          break;
        case NBD_CMD_CACHE:
          checkLength = true;
          break;
        case NBD_CMD_WRITE_ZEROES:
          validFlags |= NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
          checkReadOnly = true;
          break;
        case NBD_CMD_BLOCK_STATUS:
          validFlags |= NBD_CMD_FLAG_REQ_ONE;
          break;
        default:
          // NBD_CMD_FLUSH and unknown commands: FUA only; an unknown one fails in dispatch.
          break;
      }
      if (checkLength && req.length > NBD_MAX_BUFFER_SIZE) {
        this.replyError(req, NBD_EINVAL, `len (${req.length}) is larger than max len (${NBD_MAX_BUFFER_SIZE})`);
        // A WRITE's payload was not read, so the stream cannot be followed any further.
        if (payload) throw new Disconnect(`len (${req.length}) is larger than max len (${NBD_MAX_BUFFER_SIZE})`);
        continue;
      }
      let data: Uint8Array | undefined;
      if (payload) {
        await this.room(req.length);
        data = (await ch.read(req.length)) ?? undefined;
        if (data === undefined) throw this.ended('CMD_WRITE data');
      }
      // Every error found here is answered with EINVAL, as QEMU 7.2's nbd_trip answers whatever
      // nbd_co_receive_request found (it computes -EROFS and -ENOSPC, but replies -EINVAL); the
      // protocol's "SHOULD" EPERM / ENOSPC leaves that choice open.
      if (checkReadOnly && exp.readOnly) {
        this.replyError(req, NBD_EINVAL, 'Export is read-only');
        continue;
      }
      if (req.offset > exp.size || BigInt(req.length) > exp.size - req.offset) {
        this.replyError(req, NBD_EINVAL, `operation past EOF; From: ${req.offset}, Len: ${req.length}, Size: ${exp.size}`);
        continue;
      }
      if ((req.flags & ~validFlags) !== 0) {
        this.replyError(req, NBD_EINVAL, `unsupported flags for command ${commandName(req.type)} (got 0x${req.flags.toString(16)})`);
        continue;
      }
      const cost = req.type === NBD_CMD_READ || req.type === NBD_CMD_WRITE ? req.length : 0;
      if (req.type === NBD_CMD_READ) await this.room(cost);
      this.dispatch(exp, req, data, cost);
    }
  }

  /**
   * Waits until a request of `bytes` bytes of data fits: fewer than MAX_IN_FLIGHT requests in
   * flight, at most MAX_IN_FLIGHT_BYTES of data (or nothing else in flight), and the queued replies
   * below the channel's high-water mark.
   */
  private async room(bytes: number): Promise<void> {
    while (!this.stopping && (this.inflight >= MAX_IN_FLIGHT || (this.inflight > 0 && this.inflightBytes + bytes > MAX_IN_FLIGHT_BYTES))) {
      await new Promise<void>((r) => (this.wake = r));
    }
    await this.channel.drained();
  }

  /** Runs the request on the export (in order with every other request) and sends its reply. */
  private dispatch(exp: NbdExport, req: NbdRequest, data: Uint8Array | undefined, cost: number): void {
    this.inflight++;
    this.inflightBytes += cost;
    void exp.run(() => this.handle(exp, req, data))
      .catch((e: unknown) => {
        this.ctx.log(`${this.label}: request ${commandName(req.type)} failed internally: ${(e as Error)?.message ?? String(e)}`);
      })
      .finally(() => {
        this.inflight--;
        this.inflightBytes -= cost;
        this.requests++;
        const w = this.wake;
        this.wake = undefined;
        w?.();
      });
  }

  /** One request, valid as far as the header can tell; replies (with an error reply for a failure). */
  private async handle(exp: NbdExport, req: NbdRequest, data: Uint8Array | undefined): Promise<void> {
    const fua = (req.flags & NBD_CMD_FLAG_FUA) !== 0;
    const failed = (what: string) => (e: unknown): void => this.replyFailure(req, what, e);
    switch (req.type) {
      case NBD_CMD_READ:
        return this.read(exp, req, fua).catch(failed('reading from file failed'));
      case NBD_CMD_WRITE:
        return exp.write(req.offset, data!, fua).then(() => this.replyOk(req), failed('writing to file failed'));
      case NBD_CMD_WRITE_ZEROES:
        return exp.writeZeroes(req.offset, req.length, {
          noHole: (req.flags & NBD_CMD_FLAG_NO_HOLE) !== 0,
          fastZero: (req.flags & NBD_CMD_FLAG_FAST_ZERO) !== 0,
          fua,
        }).then(() => this.replyOk(req), failed('writing to file failed'));
      case NBD_CMD_TRIM:
        return exp.trim(req.offset, req.length, fua).then(() => this.replyOk(req), failed('discard failed'));
      case NBD_CMD_FLUSH:
        return exp.flush().then(() => this.replyOk(req), failed('flush failed'));
      case NBD_CMD_CACHE:
        // A hint (proto.md NBD_CMD_CACHE): the driver caches what it reads anyway; nothing to do.
        this.replyOk(req);
        return;
      case NBD_CMD_BLOCK_STATUS:
        return this.blockStatus(exp, req).catch(failed("can't get block status"));
      default:
        this.replyError(req, NBD_EINVAL, `invalid request type (${req.type}) received`);
    }
  }

  /** NBD_CMD_READ (nbd_do_cmd_read): sparse with structured replies (holes as OFFSET_HOLE), else all data. */
  private async read(exp: NbdExport, req: NbdRequest, fua: boolean): Promise<void> {
    // "NBD Protocol only documents use of FUA with WRITE", but QEMU flushes first; so do we.
    if (fua) await exp.flush();
    if (req.length === 0) {
      this.channel.write([this.structured ? encodeDoneChunk(req.cookie) : encodeSimpleReply(0, req.cookie)]);
      return;
    }
    const buffer = this.readBuffer(req.length);
    const sent = buffer !== undefined ? () => this.recycle(buffer) : undefined;
    if (this.structured && (req.flags & NBD_CMD_FLAG_DF) === 0) {
      const pieces = await exp.readSparse(req.offset, req.length, buffer);
      const out: Uint8Array[] = [];
      pieces.forEach((p, i) => {
        const flags = i === pieces.length - 1 ? NBD_REPLY_FLAG_DONE : 0;
        if (p.kind === 'hole') out.push(encodeHoleChunk(flags, req.cookie, p.offset, p.length));
        else out.push(encodeDataChunkHeader(flags, req.cookie, p.offset, p.data.length), p.data);
      });
      this.channel.write(out, sent);
      return;
    }
    const data = await exp.read(req.offset, req.length, buffer);
    this.channel.write(this.structured
      ? [encodeDataChunkHeader(NBD_REPLY_FLAG_DONE, req.cookie, req.offset, data.length), data]
      : [encodeSimpleReply(0, req.cookie), data], sent);
  }

  /**
   * A buffer for a read of `length` bytes — the next power of two, at least 4 KiB: a spare one or a
   * new one, handed back by `recycle` once its reply is sent. Reads longer than MAX_SPARE_BUFFER get
   * their own arrays (undefined). Reusing buffers spares a zero-filled allocation per read and its
   * garbage collection — a tenth of the time of 1 MiB sequential reads.
   */
  private readBuffer(length: number): Uint8Array | undefined {
    if (length > MAX_SPARE_BUFFER) return undefined;
    let size = 4096;
    while (size < length) size *= 2;
    const b = this.spare.get(size)?.pop();
    if (b === undefined) return new Uint8Array(size);
    this.spareBytes -= size;
    return b;
  }

  /** Keeps `buffer` (its reply has been sent) for a later read, while the spares stay within SPARE_BYTES. */
  private recycle(buffer: Uint8Array): void {
    if (this.spareBytes + buffer.length > SPARE_BYTES) return;
    let list = this.spare.get(buffer.length);
    if (list === undefined) this.spare.set(buffer.length, (list = []));
    list.push(buffer);
    this.spareBytes += buffer.length;
  }

  /** NBD_CMD_BLOCK_STATUS: one chunk per selected context, base:allocation first, the last one DONE. */
  private async blockStatus(exp: NbdExport, req: NbdRequest): Promise<void> {
    if (req.length === 0) {
      this.replyError(req, NBD_EINVAL, 'need non-zero length');
      return;
    }
    const meta = this.meta;
    if (meta === undefined || meta.count === 0) {
      this.replyError(req, NBD_EINVAL, 'CMD_BLOCK_STATUS not negotiated');
      return;
    }
    const contexts = meta.contexts;
    const r = await exp.blockStatus(req.offset, req.length, contexts, (req.flags & NBD_CMD_FLAG_REQ_ONE) !== 0);
    const out: Uint8Array[] = [];
    if (contexts.baseAllocation) out.push(encodeBlockStatusChunk(contexts.allocationDepth ? 0 : NBD_REPLY_FLAG_DONE, req.cookie, CONTEXT_BASE, r.base));
    if (contexts.allocationDepth) out.push(encodeBlockStatusChunk(NBD_REPLY_FLAG_DONE, req.cookie, CONTEXT_DEPTH, r.depth));
    this.channel.write(out);
  }

  /** Success without data: a simple reply, in both modes (nbd_send_generic_reply). */
  private replyOk(req: NbdRequest): void {
    this.channel.write([encodeSimpleReply(0, req.cookie)]);
  }

  /** An error: a structured error chunk when structured replies are on, else a simple reply. */
  private replyError(req: NbdRequest, error: number, message: string): void {
    this.channel.write([this.structured ? encodeErrorChunk(req.cookie, error, message) : encodeSimpleReply(error, req.cookie)]);
  }

  /** A failed request: the error's NBD errno, with QEMU's message for the command and the error's own words. */
  private replyFailure(req: NbdRequest, what: string, e: unknown): void {
    const errno = nbdErrno(e);
    if (errno === undefined) {
      this.ctx.log(`${this.label}: ${commandName(req.type)} at ${req.offset}: unexpected error: ${(e as Error)?.message ?? String(e)}`);
    }
    this.replyError(req, errno ?? NBD_EIO, `${what}: ${(e as Error)?.message ?? String(e)}`);
  }
}

/** The context ids SET_META_CONTEXT assigns (QEMU's NBD_META_ID_BASE_ALLOCATION, NBD_META_ID_ALLOCATION_DEPTH). */
export const CONTEXT_BASE = 0;
export const CONTEXT_DEPTH = 1;

/**
 * The NBD error for a typed error of the driver or the model (QEMU's system_errno_to_nbd_errno over
 * the errno each carries); undefined for an error of any other kind (a bug, reported as EIO).
 */
export function nbdErrno(e: unknown): number | undefined {
  if (e instanceof ModelError) return fromErrno(-e.errno);
  if (isDiskError(e)) {
    switch (e.code) {
      case 'read-only': return NBD_EPERM;
      case 'range': return NBD_EINVAL;
      case 'closed': return NBD_ESHUTDOWN;
      case 'io': return e.errno !== undefined ? fromErrnoName(e.errno) : NBD_EIO;
      default: return NBD_EIO;
    }
  }
  return undefined;
}

/** system_errno_to_nbd_errno for Linux errno numbers. */
function fromErrno(errno: number): number {
  switch (errno) {
    case 1: case 30: return NBD_EPERM; // EPERM, EROFS
    case 5: return NBD_EIO;
    case 12: return NBD_ENOMEM;
    case 122: case 27: case 28: return NBD_ENOSPC; // EDQUOT, EFBIG, ENOSPC
    case 75: return NBD_EOVERFLOW;
    case 95: return NBD_ENOTSUP;
    case 108: return NBD_ESHUTDOWN;
    default: return NBD_EINVAL;
  }
}

/** system_errno_to_nbd_errno for the errno names Node's file system errors carry. */
function fromErrnoName(name: string): number {
  switch (name) {
    case 'EPERM': case 'EROFS': return NBD_EPERM;
    case 'EIO': return NBD_EIO;
    case 'ENOMEM': return NBD_ENOMEM;
    case 'EDQUOT': case 'EFBIG': case 'ENOSPC': return NBD_ENOSPC;
    case 'EOVERFLOW': return NBD_EOVERFLOW;
    case 'ENOTSUP': case 'EOPNOTSUPP': return NBD_ENOTSUP;
    case 'ESHUTDOWN': return NBD_ESHUTDOWN;
    default: return NBD_EIO;
  }
}
