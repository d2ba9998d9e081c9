/**
 * The NBD protocol's numbers and wire formats, as pure functions over bytes: what the server sends
 * and how it reads what a client sends. Kept apart from the session (session.ts) so that every
 * value the wire carries has one place, checked against the upstream protocol document
 * (NetworkBlockDevice/nbd doc/proto.md: "Values", "Option types", "Option reply types", "Structured
 * reply types", "Request types", "Error values") and against QEMU's server (nbd/server.c), whose
 * behaviour `qcow2-ref serve` reproduces where the document leaves a choice.
 *
 * Everything a client sends is untrusted: the parsers here check every length against the bytes
 * actually present before reading or allocating, and fail only with NbdOptionError (an option the
 * server answers with an error reply) — never with an exception of another type.
 */

// ---------------------------------------------------------------------------------------------
// Magic numbers (proto.md "Newstyle negotiation", "Request message", "Simple reply message",
// "Structured reply chunk message").

/** 'NBDMAGIC', the first 8 bytes the server sends. */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** 'IHAVEOPT': the newstyle handshake magic, also the magic of every option request. */
export const NBD_OPTS_MAGIC = 0x49484156454f5054n;
/** The magic of every option reply (fixed newstyle). */
export const NBD_REP_MAGIC = 0x3e889045565a9n;
/** NBD_REQUEST_MAGIC: every transmission request starts with it. */
export const NBD_REQUEST_MAGIC = 0x25609513;
/** NBD_SIMPLE_REPLY_MAGIC. */
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
/** NBD_STRUCTURED_REPLY_MAGIC. */
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// ---------------------------------------------------------------------------------------------
// Handshake flags (proto.md "Handshake flags", "Client flags").

export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// Transmission flags (proto.md "Transmission flags").
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// ---------------------------------------------------------------------------------------------
// Options (proto.md "Option types").

export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_PEEK_EXPORT = 4;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

// Option replies (proto.md "Option reply types"). Error replies have bit 31 set.
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
const NBD_REP_FLAG_ERROR = 2 ** 31;
export const NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR + 1;
export const NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR + 2;
export const NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR + 3;
export const NBD_REP_ERR_PLATFORM = NBD_REP_FLAG_ERROR + 4;
export const NBD_REP_ERR_TLS_REQD = NBD_REP_FLAG_ERROR + 5;
export const NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR + 6;
export const NBD_REP_ERR_SHUTDOWN = NBD_REP_FLAG_ERROR + 7;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = NBD_REP_FLAG_ERROR + 8;
export const NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR + 9;

// Information types of NBD_REP_INFO (proto.md "NBD_REP_INFO").
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// ---------------------------------------------------------------------------------------------
// Transmission (proto.md "Request types", "Command flags", "Structured reply flags/types").

export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = 2 ** 15 + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = 2 ** 15 + 2;

// Error values (proto.md "Error values").
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

// base:allocation flags (proto.md "base:allocation metadata context").
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;

// ---------------------------------------------------------------------------------------------
// Limits.

/** Longest string (export name, description, query) the protocol allows: NBD_MAX_STRING_SIZE. */
export const NBD_MAX_STRING_SIZE = 4096;
/**
 * Largest request payload (and READ length), and largest option length, QEMU's server accepts:
 * NBD_MAX_BUFFER_SIZE (32 MiB, nbd/nbd-internal.h), also the protocol's "at least 2^25" default
 * maximum payload (proto.md "Size constraints").
 */
export const NBD_MAX_BUFFER_SIZE = 32 * 1024 * 1024;
/** Extents per block status chunk: QEMU's NBD_MAX_BLOCK_STATUS_EXTENTS (1 MiB of descriptors). */
export const NBD_MAX_BLOCK_STATUS_EXTENTS = (1024 * 1024) / 8;
/** The block sizes NBD_INFO_BLOCK_SIZE advertises, as qemu-nbd advertises them for a qcow2 image. */
export const NBD_MIN_BLOCK = 1;
export const NBD_PREFERRED_BLOCK = 4096;

/** Size of the fixed part of a transmission request. */
export const NBD_REQUEST_SIZE = 28;
/** Size of an option request header (magic, option, length). */
export const NBD_OPTION_HEADER_SIZE = 16;

/** Names of the options, for messages (QEMU 7.2's nbd_opt_lookup: options it does not know are '<unknown>'). */
export function optionName(opt: number): string {
  switch (opt) {
    case NBD_OPT_EXPORT_NAME: return 'export name';
    case NBD_OPT_ABORT: return 'abort';
    case NBD_OPT_LIST: return 'list';
    case NBD_OPT_STARTTLS: return 'starttls';
    case NBD_OPT_INFO: return 'info';
    case NBD_OPT_GO: return 'go';
    case NBD_OPT_STRUCTURED_REPLY: return 'structured reply';
    case NBD_OPT_LIST_META_CONTEXT: return 'list meta context';
    case NBD_OPT_SET_META_CONTEXT: return 'set meta context';
    default: return '<unknown>';
  }
}

/** Names of the commands, for messages (QEMU's nbd_cmd_lookup). */
export function commandName(type: number): string {
  switch (type) {
    case NBD_CMD_READ: return 'read';
    case NBD_CMD_WRITE: return 'write';
    case NBD_CMD_DISC: return 'disconnect';
    case NBD_CMD_FLUSH: return 'flush';
    case NBD_CMD_TRIM: return 'trim';
    case NBD_CMD_CACHE: return 'cache';
    case NBD_CMD_WRITE_ZEROES: return 'write zeroes';
    case NBD_CMD_BLOCK_STATUS: return 'block status';
    default: return '<unknown>';
  }
}

// ---------------------------------------------------------------------------------------------
// Encoding what the server sends. All integers are big-endian ("network byte order").

const encoder = new TextEncoder();

/** `text` as UTF-8 bytes. */
export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/** The 18 bytes that open a fixed newstyle handshake: NBDMAGIC, IHAVEOPT, handshake flags. */
export function encodeGreeting(): Uint8Array {
  const b = new Uint8Array(18);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, NBD_MAGIC);
  v.setBigUint64(8, NBD_OPTS_MAGIC);
  // qemu-nbd offers both (nbd_negotiate): NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES.
  v.setUint16(16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
  return b;
}

/** An option reply: header (magic, option, type, length) followed by `payload`. */
export function encodeOptionReply(option: number, type: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const b = new Uint8Array(20 + payload.length);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, NBD_REP_MAGIC);
  v.setUint32(8, option >>> 0);
  v.setUint32(12, type >>> 0);
  v.setUint32(16, payload.length);
  b.set(payload, 20);
  return b;
}

/** An NBD_REP_INFO payload: the information type and its bytes. */
export function encodeInfo(info: number, body: Uint8Array): Uint8Array {
  const b = new Uint8Array(2 + body.length);
  new DataView(b.buffer).setUint16(0, info);
  b.set(body, 2);
  return b;
}

/** NBD_INFO_EXPORT's body (also the reply to NBD_OPT_EXPORT_NAME, without the padding): size and flags. */
export function encodeExportInfo(size: bigint, flags: number): Uint8Array {
  const b = new Uint8Array(10);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, size);
  v.setUint16(8, flags);
  return b;
}

/** NBD_INFO_BLOCK_SIZE's body: minimum, preferred and maximum payload size. */
export function encodeBlockSizeInfo(min: number, preferred: number, max: number): Uint8Array {
  const b = new Uint8Array(12);
  const v = new DataView(b.buffer);
  v.setUint32(0, min);
  v.setUint32(4, preferred);
  v.setUint32(8, max);
  return b;
}

/** An NBD_REP_SERVER payload: name length, name, then the description (nbd_negotiate_send_rep_list). */
export function encodeServerReply(name: Uint8Array, description: Uint8Array): Uint8Array {
  const b = new Uint8Array(4 + name.length + description.length);
  new DataView(b.buffer).setUint32(0, name.length);
  b.set(name, 4);
  b.set(description, 4 + name.length);
  return b;
}

/** An NBD_REP_META_CONTEXT payload: context id and name. */
export function encodeMetaContextReply(id: number, name: string): Uint8Array {
  const n = utf8(name);
  const b = new Uint8Array(4 + n.length);
  new DataView(b.buffer).setUint32(0, id);
  b.set(n, 4);
  return b;
}

/** A simple reply header: magic, error, cookie (the request's 8 bytes, opaque). */
export function encodeSimpleReply(error: number, cookie: Uint8Array): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setUint32(0, NBD_SIMPLE_REPLY_MAGIC);
  v.setUint32(4, error);
  b.set(cookie, 8);
  return b;
}

/**
 * A structured reply chunk header (magic, flags, type, cookie, length) followed by `extra` bytes of
 * room for the chunk's fixed fields, which the caller fills in at offset 20. `length` is the whole
 * payload length, `extra` included.
 */
export function encodeChunkHeader(flags: number, type: number, cookie: Uint8Array, length: number, extra = 0): Uint8Array {
  const b = new Uint8Array(20 + extra);
  const v = new DataView(b.buffer);
  v.setUint32(0, NBD_STRUCTURED_REPLY_MAGIC);
  v.setUint16(4, flags);
  v.setUint16(6, type);
  b.set(cookie, 8);
  v.setUint32(16, length);
  return b;
}

/** An NBD_REPLY_TYPE_OFFSET_DATA chunk's header and offset field; the `dataLength` data bytes follow it on the wire. */
export function encodeDataChunkHeader(flags: number, cookie: Uint8Array, offset: bigint, dataLength: number): Uint8Array {
  const b = encodeChunkHeader(flags, NBD_REPLY_TYPE_OFFSET_DATA, cookie, 8 + dataLength, 8);
  new DataView(b.buffer).setBigUint64(20, offset);
  return b;
}

/** An NBD_REPLY_TYPE_OFFSET_HOLE chunk. */
export function encodeHoleChunk(flags: number, cookie: Uint8Array, offset: bigint, length: number): Uint8Array {
  const b = encodeChunkHeader(flags, NBD_REPLY_TYPE_OFFSET_HOLE, cookie, 12, 12);
  const v = new DataView(b.buffer);
  v.setBigUint64(20, offset);
  v.setUint32(28, length);
  return b;
}

/** An NBD_REPLY_TYPE_NONE chunk with NBD_REPLY_FLAG_DONE (nbd_co_send_chunk_done). */
export function encodeDoneChunk(cookie: Uint8Array): Uint8Array {
  return encodeChunkHeader(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, cookie, 0);
}

/** An NBD_REPLY_TYPE_ERROR chunk with NBD_REPLY_FLAG_DONE and a message (at most NBD_MAX_STRING_SIZE bytes). */
export function encodeErrorChunk(cookie: Uint8Array, error: number, message: string): Uint8Array {
  let msg = utf8(message);
  if (msg.length > NBD_MAX_STRING_SIZE) msg = msg.subarray(0, NBD_MAX_STRING_SIZE);
  const b = encodeChunkHeader(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, cookie, 6 + msg.length, 6 + msg.length);
  const v = new DataView(b.buffer);
  v.setUint32(20, error);
  v.setUint16(24, msg.length);
  b.set(msg, 26);
  return b;
}

/** An NBD_REPLY_TYPE_BLOCK_STATUS chunk: context id, then (length, flags) descriptors. */
export function encodeBlockStatusChunk(flags: number, cookie: Uint8Array, contextId: number, extents: readonly BlockStatusExtent[]): Uint8Array {
  const payload = 4 + 8 * extents.length;
  const b = encodeChunkHeader(flags, NBD_REPLY_TYPE_BLOCK_STATUS, cookie, payload, payload);
  const v = new DataView(b.buffer);
  v.setUint32(20, contextId);
  let at = 24;
  for (const e of extents) {
    v.setUint32(at, e.length);
    v.setUint32(at + 4, e.flags);
    at += 8;
  }
  return b;
}

/** One block status descriptor: a length (1..2^32-1) and the context's status flags. */
export interface BlockStatusExtent {
  length: number;
  readonly flags: number;
}

// ---------------------------------------------------------------------------------------------
// Decoding what the client sends.

/** A transmission request header, decoded (the cookie kept as its 8 opaque bytes). */
export interface NbdRequest {
  readonly magic: number;
  readonly flags: number;
  readonly type: number;
  readonly cookie: Uint8Array;
  readonly offset: bigint;
  readonly length: number;
}

/** The 28-byte request header in `b` (exactly NBD_REQUEST_SIZE bytes). */
export function decodeRequest(b: Uint8Array): NbdRequest {
  const v = new DataView(b.buffer, b.byteOffset, NBD_REQUEST_SIZE);
  return {
    magic: v.getUint32(0),
    flags: v.getUint16(4),
    type: v.getUint16(6),
    cookie: b.slice(8, 16),
    offset: v.getBigUint64(16),
    length: v.getUint32(24),
  };
}

/** An option request header: magic, option, payload length. */
export interface NbdOptionHeader {
  readonly magic: bigint;
  readonly option: number;
  readonly length: number;
}

/** The 16-byte option header in `b`. */
export function decodeOptionHeader(b: Uint8Array): NbdOptionHeader {
  const v = new DataView(b.buffer, b.byteOffset, NBD_OPTION_HEADER_SIZE);
  return { magic: v.getBigUint64(0), option: v.getUint32(8), length: v.getUint32(12) };
}

/**
 * An option the server refuses with an error reply (the connection stays up): `reply` is the error
 * reply type (NBD_REP_ERR_INVALID ...), `message` what QEMU says in its reply's payload.
 */
export class NbdOptionError extends Error {
  override readonly name = 'NbdOptionError';
  constructor(readonly reply: number, message: string) {
    super(message);
  }
}

/** Reads an option's payload field by field, refusing (NBD_REP_ERR_INVALID) any field the payload does not hold. */
class OptionReader {
  private at = 0;
  private readonly view: DataView;

  constructor(private readonly bytes: Uint8Array, private readonly option: number) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  }

  get remaining(): number {
    return this.bytes.length - this.at;
  }

  private need(n: number): void {
    // nbd_opt_read: "Inconsistent lengths in option %s".
    if (n > this.remaining) throw new NbdOptionError(NBD_REP_ERR_INVALID, `Inconsistent lengths in option ${optionName(this.option)}`);
  }

  u16(): number {
    this.need(2);
    const x = this.view.getUint16(this.at);
    this.at += 2;
    return x;
  }

  u32(): number {
    this.need(4);
    const x = this.view.getUint32(this.at);
    this.at += 4;
    return x;
  }

  bytesOf(n: number, checkNul: boolean): Uint8Array {
    this.need(n);
    const b = this.bytes.subarray(this.at, this.at + n);
    this.at += n;
    // nbd_opt_read with check_nul: "Unexpected embedded NUL in option %s".
    if (checkNul && b.includes(0)) throw new NbdOptionError(NBD_REP_ERR_INVALID, `Unexpected embedded NUL in option ${optionName(this.option)}`);
    return b;
  }

  skip(n: number): void {
    this.need(n);
    this.at += n;
  }

  /** nbd_opt_read_name: a 32-bit length (at most NBD_MAX_STRING_SIZE) and that many bytes without NUL. */
  name(): Uint8Array {
    const len = this.u32();
    if (len > NBD_MAX_STRING_SIZE) throw new NbdOptionError(NBD_REP_ERR_INVALID, `Invalid name length: ${len}`);
    return this.bytesOf(len, true);
  }

  /** nbd_reject_length: bytes left over after the option's fields. */
  end(): void {
    if (this.remaining !== 0) throw new NbdOptionError(NBD_REP_ERR_INVALID, `option '${optionName(this.option)}' has unexpected length`);
  }
}

/** What NBD_OPT_INFO / NBD_OPT_GO ask for. */
export interface InfoRequest {
  readonly name: Uint8Array;
  /** Whether NBD_INFO_NAME was requested. */
  readonly wantName: boolean;
  /** Whether NBD_INFO_BLOCK_SIZE was requested. */
  readonly wantBlockSize: boolean;
}

/** The payload of NBD_OPT_INFO / NBD_OPT_GO (nbd_negotiate_handle_info's parsing). */
export function parseInfoRequest(option: number, payload: Uint8Array): InfoRequest {
  const r = new OptionReader(payload, option);
  const name = r.name();
  const count = r.u16();
  let wantName = false;
  let wantBlockSize = false;
  // At most 65535 requests, each checked against the payload before it is read.
  for (let i = 0; i < count; i++) {
    const info = r.u16();
    if (info === NBD_INFO_NAME) wantName = true;
    if (info === NBD_INFO_BLOCK_SIZE) wantBlockSize = true;
  }
  r.end();
  return { name, wantName, wantBlockSize };
}

/** What NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT ask for. */
export interface MetaContextRequest {
  readonly exportName: Uint8Array;
  /** The queries, as text (queries longer than NBD_MAX_STRING_SIZE are skipped, as QEMU skips them). */
  readonly queries: readonly string[];
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: false });

/** The payload of the meta context options (nbd_negotiate_meta_queries' parsing). */
export function parseMetaContextRequest(option: number, payload: Uint8Array): MetaContextRequest {
  const r = new OptionReader(payload, option);
  const exportName = r.name();
  const count = r.u32();
  const queries: string[] = [];
  // Each query needs at least its 4-byte length, so the loop ends within payload.length / 4 rounds
  // whatever `count` says.
  for (let i = 0; i < count; i++) {
    const len = r.u32();
    if (len > NBD_MAX_STRING_SIZE) {
      // nbd_negotiate_meta_query: "length too long" queries are skipped, not refused.
      r.skip(len);
      continue;
    }
    queries.push(utf8Decoder.decode(r.bytesOf(len, true)));
  }
  r.end();
  return { exportName, queries };
}

/** A client-supplied name, as QEMU quotes it in an error reply (nbd_sanitize_name: at most 80 characters). */
export function sanitizeName(name: Uint8Array): string {
  const text = utf8Decoder.decode(name.length > 320 ? name.subarray(0, 320) : name);
  const chars = [...text];
  return chars.length < 80 ? text : `${chars.slice(0, 80).join('')}...`;
}

/** Whether two byte strings are equal. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
