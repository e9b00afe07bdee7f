/**
 * An NBD client for reading disks: fixed newstyle handshake, NBD_OPT_INFO (to tell a
 * missing export apart), structured replies, NBD_OPT_SET_META_CONTEXT, NBD_OPT_GO,
 * then NBD_CMD_READ and NBD_CMD_BLOCK_STATUS with any number of requests in flight,
 * and a clean NBD_CMD_DISC. Wire format: src/nbd/protocol.ts (shared with the server).
 *
 * One loop reads every reply off the socket and hands each chunk to the request its
 * cookie names. Memory: the socket reader holds at most 1 MiB unread plus one reply
 * chunk (a read reply is at most the request length, bounded by maxRead).
 */
import * as net from 'node:net';
import { UserError } from '../repo/errors.js';
import { ByteReader, EndOfStreamError } from './byte-reader.js';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_READ,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_EXPORT,
  NBD_OPT_ABORT,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  MAX_PAYLOAD_BYTES,
  NbdProtocolError,
  OPTION_REPLY_HEADER_BYTES,
  SERVER_GREETING_BYTES,
  decodeBlockStatus,
  decodeError,
  decodeInfo,
  decodeMetaContextReplyData,
  decodeOffsetData,
  decodeOffsetHole,
  decodeOptionReplyHeader,
  decodeReplyHeader,
  decodeServerGreeting,
  decodeServerReplyData,
  encodeClientFlags,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  encodeRequest,
  errorName,
  isOptionReplyError,
  isReplyTypeError,
  replyHeaderBytes,
  type Extent as StatusExtent,
} from './protocol.js';
import { describeTarget, type NbdTarget } from './uri.js';

export interface NbdConnectOptions {
  /** Meta contexts to select (`base:allocation`, `qemu:dirty-bitmap:NAME`). */
  metaContexts?: string[];
  /** Before selecting, list the contexts matching this query (`qemu:dirty-bitmap:` lists the bitmaps) into `offered`. */
  listQuery?: string;
  /** Give up connecting after this long (default 10 s). */
  connectTimeoutMs?: number;
}

/** An error the server returned for one request (EIO, EINVAL, ...). */
export class NbdRequestError extends Error {
  constructor(
    readonly what: string,
    readonly error: number,
    readonly serverMessage: string,
  ) {
    super(`${what}: the NBD server answered ${errorName(error)}${serverMessage ? ` (${serverMessage})` : ''}`);
    this.name = 'NbdRequestError';
  }
}

interface Pending {
  what: string;
  onChunk(type: number, payload: Buffer): void;
  /** Called once with the first error, or without one when the reply is done. */
  done(err?: Error): void;
  error?: Error;
}

interface OptionReply {
  type: number;
  data: Buffer;
}

export class NbdClient {
  /** Export size in bytes. */
  size = 0;
  transmissionFlags = 0;
  /** Context name -> id, as the server assigned them (only those it agreed to). */
  readonly contexts = new Map<string, number>();
  /** What `listQuery` found (empty when not asked or the server lists nothing). */
  offered: string[] = [];
  /** Largest payload the server takes in one request (NBD_INFO_BLOCK_SIZE, else 32 MiB). */
  maxRequest = MAX_PAYLOAD_BYTES;
  minBlock = 1;
  private nextCookie = 1n;
  private readonly pending = new Map<bigint, Pending>();
  private failure?: Error;
  private closed = false;
  private loop?: Promise<void>;

  private constructor(
    readonly target: NbdTarget,
    private readonly socket: net.Socket,
    private readonly reader: ByteReader,
  ) {}

  static async connect(target: NbdTarget, opts: NbdConnectOptions = {}): Promise<NbdClient> {
    const socket = await openSocket(target, opts.connectTimeoutMs ?? 10_000);
    const client = new NbdClient(target, socket, new ByteReader(socket));
    try {
      await client.handshake(opts.metaContexts ?? [], opts.listQuery);
    } catch (err) {
      socket.end(encodeOption(NBD_OPT_ABORT)); // a polite goodbye; the server may already be gone
      socket.destroy();
      if (err instanceof EndOfStreamError) {
        throw new UserError(`the NBD server at ${describeTarget(target)} closed the connection during the handshake (is it serving one client at a time and busy?)`);
      }
      if (err instanceof NbdProtocolError) throw new UserError(`${describeTarget(target)}: ${err.message}`);
      throw err;
    }
    client.loop = client.replyLoop();
    return client;
  }

  private get where(): string {
    return `export ${JSON.stringify(this.target.exportName)} at ${describeTarget(this.target)}`;
  }

  // ------------------------------------------------------------ handshake

  private async handshake(metaContexts: string[], listQuery?: string): Promise<void> {
    const { handshakeFlags } = decodeServerGreeting(await this.reader.read(SERVER_GREETING_BYTES));
    if (!(handshakeFlags & NBD_FLAG_FIXED_NEWSTYLE)) throw new NbdProtocolError('the server does not speak fixed newstyle NBD');
    const noZeroes = (handshakeFlags & NBD_FLAG_NO_ZEROES) !== 0;
    this.socket.write(encodeClientFlags(NBD_FLAG_C_FIXED_NEWSTYLE | (noZeroes ? NBD_FLAG_C_NO_ZEROES : 0)));

    const sr = await this.option(NBD_OPT_STRUCTURED_REPLY);
    if (sr[0]?.type !== NBD_REP_ACK) {
      throw new UserError(`the NBD server at ${describeTarget(this.target)} does not support structured replies (needed for block status); use qemu-nbd, qemu-storage-daemon or nbdkit`);
    }

    const name = this.target.exportName;
    const info = await this.option(NBD_OPT_INFO, encodeInfoRequest({ name, requests: [NBD_INFO_BLOCK_SIZE] }));
    const err = info.find((r) => isOptionReplyError(r.type));
    if (err) {
      if (err.type === NBD_REP_ERR_UNKNOWN) {
        const names = await this.listExports();
        throw new UserError(
          `the NBD server at ${describeTarget(this.target)} has no export named ${JSON.stringify(name)}` +
            `${names ? `; it offers: ${names.map((n) => JSON.stringify(n)).join(', ') || 'none it will list'}` : ''} (the export is the URI path)`,
        );
      }
      if (err.type !== NBD_REP_ERR_UNSUP) throw new UserError(`${this.where}: NBD_OPT_INFO refused: ${optionErrorText(err)}`);
    }

    if (listQuery) {
      const replies = await this.option(NBD_OPT_LIST_META_CONTEXT, encodeMetaContextRequest({ name, queries: [listQuery] }));
      this.offered = replies.filter((r) => r.type === NBD_REP_META_CONTEXT).map((r) => decodeMetaContextReplyData(r.data).name);
    }
    if (metaContexts.length) {
      const replies = await this.option(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ name, queries: metaContexts }));
      const bad = replies.find((r) => isOptionReplyError(r.type));
      if (bad) throw new UserError(`${this.where}: meta contexts refused: ${optionErrorText(bad)}`);
      for (const r of replies) {
        if (r.type !== NBD_REP_META_CONTEXT) continue;
        const c = decodeMetaContextReplyData(r.data);
        this.contexts.set(c.name, c.id);
      }
    }

    const go = await this.option(NBD_OPT_GO, encodeInfoRequest({ name, requests: [NBD_INFO_BLOCK_SIZE] }));
    let haveExport = false;
    for (const r of go) {
      if (isOptionReplyError(r.type)) throw new UserError(`${this.where}: NBD_OPT_GO refused: ${optionErrorText(r)}`);
      if (r.type !== NBD_REP_INFO) continue;
      const i = decodeInfo(r.data);
      if (i.type === NBD_INFO_EXPORT && 'size' in i) {
        this.size = i.size;
        this.transmissionFlags = i.transmissionFlags;
        haveExport = true;
      } else if (i.type === NBD_INFO_BLOCK_SIZE && 'maximum' in i) {
        this.minBlock = Math.max(1, i.minimum);
        if (i.maximum > 0) this.maxRequest = Math.min(MAX_PAYLOAD_BYTES, i.maximum);
      }
    }
    if (!haveExport) throw new NbdProtocolError('NBD_OPT_GO ended without NBD_INFO_EXPORT (no export size)');
  }

  /** Export names from NBD_OPT_LIST, or undefined when the server will not list them. */
  private async listExports(): Promise<string[] | undefined> {
    const replies = await this.option(NBD_OPT_LIST);
    if (replies.some((r) => isOptionReplyError(r.type))) return undefined;
    return replies.filter((r) => r.type === NBD_REP_SERVER).map((r) => decodeServerReplyData(r.data).name);
  }

  /** Sends one option and collects its replies up to the final ACK or error. */
  private async option(option: number, data?: Buffer): Promise<OptionReply[]> {
    this.socket.write(encodeOption(option, data));
    const out: OptionReply[] = [];
    for (;;) {
      const h = decodeOptionReplyHeader(await this.reader.read(OPTION_REPLY_HEADER_BYTES));
      if (h.length > 1 << 20) throw new NbdProtocolError(`option reply of ${h.length} bytes`);
      const body = await this.reader.read(h.length);
      if (h.option !== option) throw new NbdProtocolError(`reply for option ${h.option} while waiting for option ${option}`);
      out.push({ type: h.type, data: Buffer.from(body) });
      if (h.type === NBD_REP_ACK || isOptionReplyError(h.type)) return out;
    }
  }

  // ------------------------------------------------------------ transmission

  private async replyLoop(): Promise<void> {
    try {
      for (;;) {
        const magic = await this.reader.read(4);
        const rest = await this.reader.read(replyHeaderBytes(magic) - 4);
        const h = decodeReplyHeader(Buffer.concat([magic, rest]));
        const p = this.pending.get(h.cookie);
        if (!p) throw new NbdProtocolError(`reply for unknown cookie ${h.cookie}`);
        if (h.kind === 'simple') {
          // allowed for commands without data (and for errors)
          this.pending.delete(h.cookie);
          if (h.error) p.done(new NbdRequestError(p.what, h.error, ''));
          else p.done();
          continue;
        }
        // a chunk is at most one read's data plus its offset (or a block status list)
        if (h.length > this.maxRequest + 1024 && h.length > 64 << 20) throw new NbdProtocolError(`reply chunk of ${h.length} bytes`);
        const payload = await this.reader.read(h.length);
        if (isReplyTypeError(h.type)) {
          const e = decodeError(payload, h.type);
          p.error ??= new NbdRequestError(p.what, e.error, e.message);
        } else if (!p.error) {
          try {
            p.onChunk(h.type, payload);
          } catch (err) {
            p.error = err as Error;
          }
        }
        if (h.flags & NBD_REPLY_FLAG_DONE) {
          this.pending.delete(h.cookie);
          p.done(p.error);
        }
      }
    } catch (err) {
      const e = this.closed
        ? new Error(`${this.where}: connection closed`)
        : err instanceof EndOfStreamError
          ? new Error(`${this.where}: the NBD server closed the connection`)
          : (err as Error);
      this.fail(e);
    }
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const [cookie, p] of this.pending) {
      this.pending.delete(cookie);
      p.done(this.failure);
    }
    this.socket.destroy();
  }

  private request(type: number, flags: number, offset: number, length: number, what: string, onChunk: Pending['onChunk']): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new Error(`${this.where}: the connection is closed`));
    const cookie = this.nextCookie++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(cookie, { what, onChunk, done: (err) => (err ? reject(err) : resolve()) });
      this.socket.write(encodeRequest({ flags, type, cookie, offset, length }));
    });
  }

  /**
   * Reads `length` bytes at `offset` into `into` (at its start). Requests larger than
   * the server's maximum are split; every byte must be covered by data or hole chunks.
   */
  async read(offset: number, length: number, into: Uint8Array): Promise<void> {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new RangeError(`read of ${length} bytes at ${offset} is outside ${this.where} (${this.size} bytes)`);
    }
    const parts: Promise<void>[] = [];
    for (let at = 0; at < length; at += this.maxRequest) {
      parts.push(this.readOne(offset + at, Math.min(this.maxRequest, length - at), into.subarray(at)));
    }
    await Promise.all(parts);
  }

  private async readOne(offset: number, length: number, into: Uint8Array): Promise<void> {
    let covered = 0;
    const what = `NBD read of ${length} bytes at ${offset} from ${this.where}`;
    const check = (at: number, n: number) => {
      if (at < offset || at + n > offset + length) throw new NbdProtocolError(`${what}: the server sent ${n} bytes at ${at}, outside the request`);
      covered += n;
    };
    await this.request(NBD_CMD_READ, 0, offset, length, what, (type, payload) => {
      if (type === NBD_REPLY_TYPE_OFFSET_DATA) {
        const d = decodeOffsetData(payload);
        check(d.offset, d.data.length);
        into.set(d.data, d.offset - offset);
      } else if (type === NBD_REPLY_TYPE_OFFSET_HOLE) {
        const h = decodeOffsetHole(payload);
        check(h.offset, h.length);
        into.fill(0, h.offset - offset, h.offset - offset + h.length);
      } else if (type !== NBD_REPLY_TYPE_NONE) {
        throw new NbdProtocolError(`${what}: unexpected reply chunk type ${type}`);
      }
    });
    if (covered !== length) throw new NbdProtocolError(`${what}: the reply covered ${covered} of ${length} bytes`);
  }

  /**
   * One NBD_CMD_BLOCK_STATUS: for each selected context id, the extents the server
   * returned from `offset` (they may cover less than `length`, or a little more).
   */
  async blockStatus(offset: number, length: number): Promise<Map<number, StatusExtent[]>> {
    const out = new Map<number, StatusExtent[]>();
    const what = `NBD block status of ${length} bytes at ${offset} from ${this.where}`;
    await this.request(NBD_CMD_BLOCK_STATUS, 0, offset, length, what, (type, payload) => {
      if (type !== NBD_REPLY_TYPE_BLOCK_STATUS) {
        if (type === NBD_REPLY_TYPE_NONE) return;
        throw new NbdProtocolError(`${what}: unexpected reply chunk type ${type}`);
      }
      const s = decodeBlockStatus(payload);
      if (out.has(s.contextId)) throw new NbdProtocolError(`${what}: two answers for context ${s.contextId}`);
      out.set(s.contextId, s.extents);
    });
    return out;
  }

  /** NBD_CMD_DISC after every reply is in, then closes the socket. Idempotent. */
  async disconnect(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (!this.failure) {
      const cookie = this.nextCookie++;
      await new Promise<void>((resolve) => this.socket.write(encodeRequest({ flags: 0, type: NBD_CMD_DISC, cookie, offset: 0, length: 0 }), () => resolve()));
      await new Promise<void>((resolve) => {
        this.socket.once('close', () => resolve());
        this.socket.end();
        setTimeout(() => {
          this.socket.destroy();
          resolve();
        }, 2000).unref();
      });
    }
    this.socket.destroy();
    await this.loop;
  }

}

function optionErrorText(r: OptionReply): string {
  const names: Record<number, string> = {
    0x80000001: 'unsupported',
    0x80000002: 'forbidden by server policy',
    0x80000003: 'invalid',
    0x80000004: 'not available on this platform',
    0x80000005: 'TLS required',
    0x80000006: 'unknown export',
    0x80000007: 'server shutting down',
    0x80000008: 'block size negotiation required',
    0x80000009: 'request too big',
  };
  const msg = r.data.toString('utf8').trim();
  return `${names[r.type] ?? `error 0x${r.type.toString(16)}`}${msg ? `: ${msg}` : ''}`;
}

function openSocket(target: NbdTarget, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = target.kind === 'unix' ? net.createConnection({ path: target.socket }) : net.createConnection({ host: target.host, port: target.port });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new UserError(`no answer from the NBD server at ${describeTarget(target)} within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.setNoDelay(true);
      resolve(s);
    });
    s.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const why =
        err.code === 'ENOENT'
          ? 'no such socket (is the NBD server running? check ?socket= in the URI)'
          : err.code === 'ECONNREFUSED'
            ? 'connection refused (is the NBD server running and listening there?)'
            : err.code === 'EACCES'
              ? 'permission denied on the socket'
              : err.code === 'ENOTFOUND'
                ? 'unknown host'
                : err.message;
      reject(new UserError(`cannot connect to the NBD server at ${describeTarget(target)}: ${why}`));
    });
  });
}
