/**
 * The NBD protocol (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md):
 * constants and pure encoders/decoders for BOTH sides of a connection, so that the
 * server (src/nbd/server.ts) and a client (src/nbd/client.ts) share one definition.
 *
 * Scope: the fixed newstyle handshake, option haggling (EXPORT_NAME, ABORT, LIST, INFO,
 * GO, STRUCTURED_REPLY, LIST/SET_META_CONTEXT), the compact transmission headers
 * (28-byte requests, 16-byte simple replies, 20-byte structured reply chunks) and the
 * structured reply payloads (OFFSET_DATA, OFFSET_HOLE, BLOCK_STATUS, ERROR,
 * ERROR_OFFSET). Extended headers (NBD_OPT_EXTENDED_HEADERS, 64-bit lengths) are named
 * but not encoded: neither side negotiates them.
 *
 * Everything is network byte order (big endian). 64-bit sizes and offsets are decoded
 * to JavaScript numbers and refused above 2^53 (no disk is that large); the request
 * cookie (formerly "handle") is opaque, so it stays a bigint.
 *
 * Nothing here touches a socket: a decoder takes the bytes it needs and returns a
 * value or throws NbdProtocolError. src/nbd/byte-reader.ts reads exact byte counts off
 * a stream for either side.
 */

// ---------------------------------------------------------------- magics

/** "NBDMAGIC": first 8 bytes the server sends (INIT_PASSWD). */
export const NBDMAGIC = 0x4e42444d41474943n;
/** "IHAVEOPT": newstyle negotiation, and the prefix of every client option. */
export const IHAVEOPT = 0x49484156454f5054n;
/** Oldstyle negotiation (not supported by pilotlight, named to recognise it). */
export const OLDSTYLE_MAGIC = 0x00420281861253n;
/** Prefix of every option reply. */
export const REPLY_MAGIC = 0x0003e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
/** Extended headers (not negotiated by pilotlight). */
export const REQUEST_EXT_MAGIC = 0x21e41c71;
export const STRUCTURED_REPLY_EXT_MAGIC = 0x6e8a278c;

// ---------------------------------------------------------------- handshake flags

/** Server handshake flags (16 bits). */
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;

/** Client flags (32 bits). */
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// ---------------------------------------------------------------- transmission flags (16 bits)

export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;
export const NBD_FLAG_BLOCK_STAT_PAYLOAD = 1 << 12;

// ---------------------------------------------------------------- options

export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_PEEK_EXPORT = 4; // withdrawn
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

// ---------------------------------------------------------------- option replies

export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
/** Error replies have bit 31 set. */
export const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = 0x80000001;
export const NBD_REP_ERR_POLICY = 0x80000002;
export const NBD_REP_ERR_INVALID = 0x80000003;
export const NBD_REP_ERR_PLATFORM = 0x80000004;
export const NBD_REP_ERR_TLS_REQD = 0x80000005;
export const NBD_REP_ERR_UNKNOWN = 0x80000006;
export const NBD_REP_ERR_SHUTDOWN = 0x80000007;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = 0x80000008;
export const NBD_REP_ERR_TOO_BIG = 0x80000009;
export const NBD_REP_ERR_EXT_HEADER_REQD = 0x8000000a;

export function isOptionReplyError(type: number): boolean {
  return (type & NBD_REP_FLAG_ERROR) !== 0;
}

// ---------------------------------------------------------------- NBD_REP_INFO types

export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// ---------------------------------------------------------------- commands

export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;
export const NBD_CMD_RESIZE = 8;

/** Command flags (16 bits). */
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;
export const NBD_CMD_FLAG_PAYLOAD_LEN = 1 << 5;

// ---------------------------------------------------------------- structured replies

export const NBD_REPLY_FLAG_DONE = 1 << 0;

export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_BLOCK_STATUS_EXT = 6; // extended headers only
/** Error chunk types have bit 15 set. */
export const NBD_REPLY_TYPE_ERROR = (1 << 15) | 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) | 2;

export function isReplyTypeError(type: number): boolean {
  return (type & (1 << 15)) !== 0;
}

// ---------------------------------------------------------------- base:allocation

export const BASE_ALLOCATION = 'base:allocation';
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;

// ---------------------------------------------------------------- error values (not host errno)

export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

const ERROR_NAMES: Record<number, string> = {
  [NBD_EPERM]: 'EPERM',
  [NBD_EIO]: 'EIO',
  [NBD_ENOMEM]: 'ENOMEM',
  [NBD_EINVAL]: 'EINVAL',
  [NBD_ENOSPC]: 'ENOSPC',
  [NBD_EOVERFLOW]: 'EOVERFLOW',
  [NBD_ENOTSUP]: 'ENOTSUP',
  [NBD_ESHUTDOWN]: 'ESHUTDOWN',
};

/** "EIO", or "error 42" for a value the protocol does not name. */
export function errorName(value: number): string {
  return ERROR_NAMES[value] ?? `error ${value}`;
}

// ---------------------------------------------------------------- sizes and limits

/** Bytes of the server's first message: NBDMAGIC, IHAVEOPT, handshake flags. */
export const SERVER_GREETING_BYTES = 18;
export const CLIENT_FLAGS_BYTES = 4;
export const OPTION_HEADER_BYTES = 16;
export const OPTION_REPLY_HEADER_BYTES = 20;
export const REQUEST_BYTES = 28;
export const SIMPLE_REPLY_BYTES = 16;
export const STRUCTURED_REPLY_HEADER_BYTES = 20;
/** Strings (export names, queries, messages) MUST NOT exceed this. */
export const MAX_STRING_BYTES = 4096;
/** Zero padding after the NBD_OPT_EXPORT_NAME reply unless NO_ZEROES was agreed. */
export const EXPORT_NAME_PADDING = 124;
/** Payload size servers commonly accept (qemu, nbdkit): 32 MiB. */
export const MAX_PAYLOAD_BYTES = 32 * 1024 * 1024;

export class NbdProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NbdProtocolError';
  }
}

// ---------------------------------------------------------------- helpers

function u64(buf: Buffer, at: number, what: string): number {
  const v = buf.readBigUInt64BE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new NbdProtocolError(`${what} ${v} is too large`);
  return Number(v);
}

function need(buf: Buffer, n: number, what: string): void {
  if (buf.length < n) throw new NbdProtocolError(`${what}: ${buf.length} bytes, need ${n}`);
}

function exact(buf: Buffer, n: number, what: string): void {
  if (buf.length !== n) throw new NbdProtocolError(`${what}: ${buf.length} bytes, expected ${n}`);
}

function utf8(s: string, what: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.length > MAX_STRING_BYTES) throw new NbdProtocolError(`${what} is ${b.length} bytes, the limit is ${MAX_STRING_BYTES}`);
  if (b.includes(0)) throw new NbdProtocolError(`${what} contains a NUL character`);
  return b;
}

/** A string preceded by its 32-bit length. */
function lengthPrefixed(s: string, what: string): Buffer {
  const b = utf8(s, what);
  const out = Buffer.alloc(4 + b.length);
  out.writeUInt32BE(b.length, 0);
  b.copy(out, 4);
  return out;
}

/** Reads a 32-bit-length-prefixed string at `at`; returns it and the offset after it. */
function readLengthPrefixed(buf: Buffer, at: number, what: string): [string, number] {
  need(buf, at + 4, what);
  const n = buf.readUInt32BE(at);
  if (n > MAX_STRING_BYTES) throw new NbdProtocolError(`${what} is ${n} bytes, the limit is ${MAX_STRING_BYTES}`);
  need(buf, at + 4 + n, what);
  return [buf.toString('utf8', at + 4, at + 4 + n), at + 4 + n];
}

// ---------------------------------------------------------------- handshake

/** S: "NBDMAGIC", "IHAVEOPT", 16-bit handshake flags. */
export function encodeServerGreeting(handshakeFlags: number): Buffer {
  const b = Buffer.alloc(SERVER_GREETING_BYTES);
  b.writeBigUInt64BE(NBDMAGIC, 0);
  b.writeBigUInt64BE(IHAVEOPT, 8);
  b.writeUInt16BE(handshakeFlags, 16);
  return b;
}

/** C side: the 18-byte greeting; refuses oldstyle and non-NBD peers. */
export function decodeServerGreeting(buf: Buffer): { handshakeFlags: number } {
  exact(buf, SERVER_GREETING_BYTES, 'server greeting');
  if (buf.readBigUInt64BE(0) !== NBDMAGIC) throw new NbdProtocolError('not an NBD server (no NBDMAGIC)');
  const second = buf.readBigUInt64BE(8);
  if (second === OLDSTYLE_MAGIC) throw new NbdProtocolError('the server speaks oldstyle NBD, which is not supported');
  if (second !== IHAVEOPT) throw new NbdProtocolError(`unknown NBD negotiation magic 0x${second.toString(16)}`);
  return { handshakeFlags: buf.readUInt16BE(16) };
}

export function encodeClientFlags(flags: number): Buffer {
  const b = Buffer.alloc(CLIENT_FLAGS_BYTES);
  b.writeUInt32BE(flags >>> 0, 0);
  return b;
}

export function decodeClientFlags(buf: Buffer): number {
  exact(buf, CLIENT_FLAGS_BYTES, 'client flags');
  return buf.readUInt32BE(0);
}

// ---------------------------------------------------------------- options (client -> server)

export interface OptionHeader {
  option: number;
  /** Bytes of option data that follow. */
  length: number;
}

/** C: "IHAVEOPT", 32-bit option, 32-bit length, data. */
export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(OPTION_HEADER_BYTES + data.length);
  b.writeBigUInt64BE(IHAVEOPT, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(data.length, 12);
  data.copy(b, 16);
  return b;
}

export function decodeOptionHeader(buf: Buffer): OptionHeader {
  exact(buf, OPTION_HEADER_BYTES, 'option header');
  if (buf.readBigUInt64BE(0) !== IHAVEOPT) throw new NbdProtocolError('option without IHAVEOPT magic');
  return { option: buf.readUInt32BE(8), length: buf.readUInt32BE(12) };
}

/** NBD_OPT_INFO / NBD_OPT_GO data: export name and the NBD_INFO_* types asked for. */
export interface InfoRequest {
  name: string;
  requests: number[];
}

export function encodeInfoRequest(r: InfoRequest): Buffer {
  const name = lengthPrefixed(r.name, 'export name');
  const b = Buffer.alloc(name.length + 2 + 2 * r.requests.length);
  name.copy(b, 0);
  b.writeUInt16BE(r.requests.length, name.length);
  r.requests.forEach((t, i) => b.writeUInt16BE(t, name.length + 2 + 2 * i));
  return b;
}

export function decodeInfoRequest(data: Buffer): InfoRequest {
  const [name, at] = readLengthPrefixed(data, 0, 'export name');
  need(data, at + 2, 'info request');
  const n = data.readUInt16BE(at);
  exact(data, at + 2 + 2 * n, 'info request');
  const requests: number[] = [];
  for (let i = 0; i < n; i++) requests.push(data.readUInt16BE(at + 2 + 2 * i));
  return { name, requests };
}

/**
 * NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data: export name, number of
 * queries, each query as a length-prefixed string.
 */
export interface MetaContextRequest {
  name: string;
  queries: string[];
}

export function encodeMetaContextRequest(r: MetaContextRequest): Buffer {
  const parts = [lengthPrefixed(r.name, 'export name'), Buffer.alloc(4)];
  parts[1]!.writeUInt32BE(r.queries.length, 0);
  for (const q of r.queries) parts.push(lengthPrefixed(q, 'meta context query'));
  return Buffer.concat(parts);
}

export function decodeMetaContextRequest(data: Buffer): MetaContextRequest {
  let [name, at] = readLengthPrefixed(data, 0, 'export name');
  need(data, at + 4, 'meta context request');
  const n = data.readUInt32BE(at);
  at += 4;
  const queries: string[] = [];
  for (let i = 0; i < n; i++) {
    const [q, next] = readLengthPrefixed(data, at, 'meta context query');
    queries.push(q);
    at = next;
  }
  exact(data, at, 'meta context request');
  return { name, queries };
}

// ---------------------------------------------------------------- option replies (server -> client)

export interface OptionReplyHeader {
  option: number;
  type: number;
  length: number;
}

/** S: REPLY_MAGIC, 32-bit option, 32-bit reply type, 32-bit length, data. */
export function encodeOptionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(OPTION_REPLY_HEADER_BYTES + data.length);
  b.writeBigUInt64BE(REPLY_MAGIC, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(type >>> 0, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, 20);
  return b;
}

export function decodeOptionReplyHeader(buf: Buffer): OptionReplyHeader {
  exact(buf, OPTION_REPLY_HEADER_BYTES, 'option reply header');
  if (buf.readBigUInt64BE(0) !== REPLY_MAGIC) throw new NbdProtocolError('option reply without its magic');
  return { option: buf.readUInt32BE(8), type: buf.readUInt32BE(12), length: buf.readUInt32BE(16) };
}

/** An error reply with a human-readable message as its data. */
export function encodeOptionError(option: number, type: number, message: string): Buffer {
  if (!isOptionReplyError(type)) throw new NbdProtocolError(`0x${type.toString(16)} is not an error reply type`);
  return encodeOptionReply(option, type, utf8(message.slice(0, MAX_STRING_BYTES), 'error message'));
}

/** NBD_REP_SERVER data: length-prefixed name, then a free-form description. */
export function encodeServerReplyData(name: string, description = ''): Buffer {
  return Buffer.concat([lengthPrefixed(name, 'export name'), utf8(description, 'export description')]);
}

export function decodeServerReplyData(data: Buffer): { name: string; description: string } {
  const [name, at] = readLengthPrefixed(data, 0, 'export name');
  return { name, description: data.toString('utf8', at) };
}

/** NBD_REP_META_CONTEXT data: 32-bit context id, then the context name. */
export function encodeMetaContextReplyData(id: number, name: string): Buffer {
  const n = utf8(name, 'meta context name');
  const b = Buffer.alloc(4 + n.length);
  b.writeUInt32BE(id >>> 0, 0);
  n.copy(b, 4);
  return b;
}

export function decodeMetaContextReplyData(data: Buffer): { id: number; name: string } {
  need(data, 4, 'meta context reply');
  return { id: data.readUInt32BE(0), name: data.toString('utf8', 4) };
}

/** What NBD_REP_INFO carries, by its 16-bit type. */
export type Info =
  | { type: typeof NBD_INFO_EXPORT; size: number; transmissionFlags: number }
  | { type: typeof NBD_INFO_NAME; name: string }
  | { type: typeof NBD_INFO_DESCRIPTION; description: string }
  | { type: typeof NBD_INFO_BLOCK_SIZE; minimum: number; preferred: number; maximum: number }
  | { type: number; raw: Buffer };

export function encodeInfo(info: Info): Buffer {
  const head = Buffer.alloc(2);
  head.writeUInt16BE(info.type, 0);
  if ('size' in info) {
    const b = Buffer.alloc(10);
    b.writeBigUInt64BE(BigInt(info.size), 0);
    b.writeUInt16BE(info.transmissionFlags, 8);
    return Buffer.concat([head, b]);
  }
  if ('name' in info) return Buffer.concat([head, utf8(info.name, 'export name')]);
  if ('description' in info) return Buffer.concat([head, utf8(info.description, 'export description')]);
  if ('minimum' in info) {
    const b = Buffer.alloc(12);
    b.writeUInt32BE(info.minimum, 0);
    b.writeUInt32BE(info.preferred, 4);
    b.writeUInt32BE(info.maximum, 8);
    return Buffer.concat([head, b]);
  }
  return Buffer.concat([head, info.raw]);
}

export function decodeInfo(data: Buffer): Info {
  need(data, 2, 'NBD_REP_INFO');
  const type = data.readUInt16BE(0);
  const body = data.subarray(2);
  switch (type) {
    case NBD_INFO_EXPORT:
      exact(body, 10, 'NBD_INFO_EXPORT');
      return { type, size: u64(body, 0, 'export size'), transmissionFlags: body.readUInt16BE(8) };
    case NBD_INFO_NAME:
      return { type, name: body.toString('utf8') };
    case NBD_INFO_DESCRIPTION:
      return { type, description: body.toString('utf8') };
    case NBD_INFO_BLOCK_SIZE:
      exact(body, 12, 'NBD_INFO_BLOCK_SIZE');
      return { type, minimum: body.readUInt32BE(0), preferred: body.readUInt32BE(4), maximum: body.readUInt32BE(8) };
    default:
      return { type, raw: Buffer.from(body) };
  }
}

/**
 * S: the reply to NBD_OPT_EXPORT_NAME (no option-reply header): 64-bit size,
 * 16-bit transmission flags, and 124 zero bytes unless NO_ZEROES was agreed.
 */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(10 + (noZeroes ? 0 : EXPORT_NAME_PADDING));
  b.writeBigUInt64BE(BigInt(size), 0);
  b.writeUInt16BE(transmissionFlags, 8);
  return b;
}

/** C side: the first 10 bytes of the NBD_OPT_EXPORT_NAME reply (read the padding separately). */
export function decodeExportNameReply(buf: Buffer): { size: number; transmissionFlags: number } {
  exact(buf, 10, 'export name reply');
  return { size: u64(buf, 0, 'export size'), transmissionFlags: buf.readUInt16BE(8) };
}

// ---------------------------------------------------------------- transmission: requests

export interface Request {
  flags: number;
  type: number;
  cookie: bigint;
  offset: number;
  length: number;
}

/** C: 28-byte request header (a write's payload follows it). */
export function encodeRequest(r: Request): Buffer {
  const b = Buffer.alloc(REQUEST_BYTES);
  b.writeUInt32BE(REQUEST_MAGIC, 0);
  b.writeUInt16BE(r.flags, 4);
  b.writeUInt16BE(r.type, 6);
  b.writeBigUInt64BE(r.cookie, 8);
  b.writeBigUInt64BE(BigInt(r.offset), 16);
  b.writeUInt32BE(r.length >>> 0, 24);
  return b;
}

export function decodeRequest(buf: Buffer): Request {
  exact(buf, REQUEST_BYTES, 'request');
  const magic = buf.readUInt32BE(0);
  if (magic !== REQUEST_MAGIC) throw new NbdProtocolError(`bad request magic 0x${magic.toString(16)}`);
  return {
    flags: buf.readUInt16BE(4),
    type: buf.readUInt16BE(6),
    cookie: buf.readBigUInt64BE(8),
    offset: u64(buf, 16, 'request offset'),
    length: buf.readUInt32BE(24),
  };
}

// ---------------------------------------------------------------- transmission: replies

/** S: 16-byte simple reply header (a successful read's data follows it). */
export function encodeSimpleReply(cookie: bigint, error: number): Buffer {
  const b = Buffer.alloc(SIMPLE_REPLY_BYTES);
  b.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error >>> 0, 4);
  b.writeBigUInt64BE(cookie, 8);
  return b;
}

export interface StructuredReplyHeader {
  flags: number;
  type: number;
  cookie: bigint;
  /** Bytes of payload that follow. */
  length: number;
}

/** S: 20-byte structured reply chunk header. */
export function encodeStructuredReplyHeader(h: StructuredReplyHeader): Buffer {
  const b = Buffer.alloc(STRUCTURED_REPLY_HEADER_BYTES);
  b.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(h.flags, 4);
  b.writeUInt16BE(h.type, 6);
  b.writeBigUInt64BE(h.cookie, 8);
  b.writeUInt32BE(h.length >>> 0, 16);
  return b;
}

/**
 * C side: a reply starts with a 4-byte magic that says which header follows: read 4
 * bytes, call replyHeaderBytes, read the rest of the header, call decodeReplyHeader.
 */
export function replyHeaderBytes(magic: Buffer): number {
  exact(magic, 4, 'reply magic');
  const m = magic.readUInt32BE(0);
  if (m === SIMPLE_REPLY_MAGIC) return SIMPLE_REPLY_BYTES;
  if (m === STRUCTURED_REPLY_MAGIC) return STRUCTURED_REPLY_HEADER_BYTES;
  throw new NbdProtocolError(`bad reply magic 0x${m.toString(16)}`);
}

export type ReplyHeader =
  | { kind: 'simple'; cookie: bigint; error: number }
  | ({ kind: 'structured' } & StructuredReplyHeader);

/** C side: a whole simple (16-byte) or structured (20-byte) reply header. */
export function decodeReplyHeader(buf: Buffer): ReplyHeader {
  need(buf, 4, 'reply header');
  const m = buf.readUInt32BE(0);
  if (m === SIMPLE_REPLY_MAGIC) {
    exact(buf, SIMPLE_REPLY_BYTES, 'simple reply');
    return { kind: 'simple', error: buf.readUInt32BE(4), cookie: buf.readBigUInt64BE(8) };
  }
  if (m === STRUCTURED_REPLY_MAGIC) {
    exact(buf, STRUCTURED_REPLY_HEADER_BYTES, 'structured reply header');
    return {
      kind: 'structured',
      flags: buf.readUInt16BE(4),
      type: buf.readUInt16BE(6),
      cookie: buf.readBigUInt64BE(8),
      length: buf.readUInt32BE(16),
    };
  }
  throw new NbdProtocolError(`bad reply magic 0x${m.toString(16)}`);
}

/** OFFSET_DATA payload prefix: the 64-bit offset (the data follows it). */
export function encodeOffsetDataPrefix(offset: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(offset), 0);
  return b;
}

/** A whole OFFSET_DATA chunk: header + offset + data (data is copied; prefer header+prefix+data writes for large reads). */
export function encodeOffsetDataChunk(cookie: bigint, flags: number, offset: number, data: Buffer): Buffer {
  return Buffer.concat([
    encodeStructuredReplyHeader({ flags, type: NBD_REPLY_TYPE_OFFSET_DATA, cookie, length: 8 + data.length }),
    encodeOffsetDataPrefix(offset),
    data,
  ]);
}

export function decodeOffsetData(payload: Buffer): { offset: number; data: Buffer } {
  need(payload, 9, 'NBD_REPLY_TYPE_OFFSET_DATA');
  return { offset: u64(payload, 0, 'data offset'), data: payload.subarray(8) };
}

/** A whole OFFSET_HOLE chunk: the range reads as zeros. */
export function encodeOffsetHoleChunk(cookie: bigint, flags: number, offset: number, length: number): Buffer {
  const b = Buffer.alloc(STRUCTURED_REPLY_HEADER_BYTES + 12);
  encodeStructuredReplyHeader({ flags, type: NBD_REPLY_TYPE_OFFSET_HOLE, cookie, length: 12 }).copy(b, 0);
  b.writeBigUInt64BE(BigInt(offset), 20);
  b.writeUInt32BE(length >>> 0, 28);
  return b;
}

export function decodeOffsetHole(payload: Buffer): { offset: number; length: number } {
  exact(payload, 12, 'NBD_REPLY_TYPE_OFFSET_HOLE');
  return { offset: u64(payload, 0, 'hole offset'), length: payload.readUInt32BE(8) };
}

export interface Extent {
  length: number;
  /** NBD_STATE_* bits of the context. */
  flags: number;
}

/** A whole BLOCK_STATUS chunk for one context: context id, then (length, flags) pairs. */
export function encodeBlockStatusChunk(cookie: bigint, flags: number, contextId: number, extents: Extent[]): Buffer {
  const b = Buffer.alloc(STRUCTURED_REPLY_HEADER_BYTES + 4 + 8 * extents.length);
  encodeStructuredReplyHeader({ flags, type: NBD_REPLY_TYPE_BLOCK_STATUS, cookie, length: 4 + 8 * extents.length }).copy(b, 0);
  b.writeUInt32BE(contextId >>> 0, 20);
  extents.forEach((e, i) => {
    b.writeUInt32BE(e.length >>> 0, 24 + 8 * i);
    b.writeUInt32BE(e.flags >>> 0, 28 + 8 * i);
  });
  return b;
}

export function decodeBlockStatus(payload: Buffer): { contextId: number; extents: Extent[] } {
  need(payload, 12, 'NBD_REPLY_TYPE_BLOCK_STATUS');
  if ((payload.length - 4) % 8 !== 0) throw new NbdProtocolError(`NBD_REPLY_TYPE_BLOCK_STATUS of ${payload.length} bytes`);
  const extents: Extent[] = [];
  for (let at = 4; at < payload.length; at += 8) {
    extents.push({ length: payload.readUInt32BE(at), flags: payload.readUInt32BE(at + 4) });
  }
  return { contextId: payload.readUInt32BE(0), extents };
}

/**
 * A whole ERROR (or, with `offset`, ERROR_OFFSET) chunk: 32-bit error, 16-bit message
 * length, message, [64-bit offset]. Error chunks carry NBD_REPLY_FLAG_DONE when they end
 * the reply (the caller decides).
 */
export function encodeErrorChunk(cookie: bigint, flags: number, error: number, message: string, offset?: number): Buffer {
  let msg = utf8(message.slice(0, MAX_STRING_BYTES), 'error message');
  if (msg.length > 0xffff) msg = msg.subarray(0, 0xffff);
  const payload = 6 + msg.length + (offset === undefined ? 0 : 8);
  const b = Buffer.alloc(STRUCTURED_REPLY_HEADER_BYTES + payload);
  const type = offset === undefined ? NBD_REPLY_TYPE_ERROR : NBD_REPLY_TYPE_ERROR_OFFSET;
  encodeStructuredReplyHeader({ flags, type, cookie, length: payload }).copy(b, 0);
  b.writeUInt32BE(error >>> 0, 20);
  b.writeUInt16BE(msg.length, 24);
  msg.copy(b, 26);
  if (offset !== undefined) b.writeBigUInt64BE(BigInt(offset), 26 + msg.length);
  return b;
}

export function decodeError(payload: Buffer, type: number): { error: number; message: string; offset?: number } {
  need(payload, 6, 'error chunk');
  const n = payload.readUInt16BE(4);
  const tail = type === NBD_REPLY_TYPE_ERROR_OFFSET ? 8 : 0;
  exact(payload, 6 + n + tail, 'error chunk');
  const out: { error: number; message: string; offset?: number } = {
    error: payload.readUInt32BE(0),
    message: payload.toString('utf8', 6, 6 + n),
  };
  if (tail) out.offset = u64(payload, 6 + n, 'error offset');
  return out;
}

/** A NONE chunk (length 0): ends a structured reply that had no final chunk to flag. */
export function encodeNoneChunk(cookie: bigint): Buffer {
  return encodeStructuredReplyHeader({ flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_NONE, cookie, length: 0 });
}
