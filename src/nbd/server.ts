import { promises as fsp } from 'node:fs';
import * as net from 'node:net';
import { UserError } from '../repo/errors.js';
import { ByteReader, EndOfStreamError } from './byte-reader.js';
import { nbdMetrics } from './metrics.js';
import * as P from './protocol.js';

/** A run of bytes a read returns; `data` null means zeros. */
export interface ReadPiece {
  offset: number;
  length: number;
  data: Buffer | null;
}

/** What the server serves: a byte range with reads, allocation status, and optionally writes. */
export interface NbdExport {
  /** Names a client may ask for (the first is listed by NBD_OPT_LIST). */
  names: string[];
  description: string;
  size: number;
  writable: boolean;
  /** Preferred request size (the chunk size). */
  preferredBlockSize: number;
  read(offset: number, length: number): Promise<ReadPiece[]>;
  /** Runs of zeros and of data covering the range, in order. */
  extents(offset: number, length: number): Promise<{ length: number; zero: boolean }[]>;
  /** `data` null writes zeros. */
  write?(offset: number, length: number, data: Buffer | null, fua: boolean): Promise<void>;
  flush?(): Promise<void>;
}

/** An error with the NBD error value to send (EIO, EINVAL, ...). */
export class NbdError extends Error {
  constructor(readonly nbdErrno: number, message: string) {
    super(message);
    this.name = 'NbdError';
  }
}

export type ListenSpec = { unix: string } | { host: string; port: number };

/** `unix:PATH`, `HOST:PORT` or `[V6]:PORT`. */
export function parseListen(spec: string): ListenSpec {
  if (spec.startsWith('unix:')) {
    const path = spec.slice(5);
    if (!path) throw new UserError('--listen unix:PATH needs a path');
    return { unix: path };
  }
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(spec);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port < 65536)) throw new UserError(`--listen takes unix:PATH or HOST:PORT, got ${JSON.stringify(spec)}`);
  return { host: m[1] ?? m[2]!, port };
}

export interface ServerOptions {
  exports: NbdExport[];
  /** Lines for the operator (connections refused, protocol errors). */
  log?: (line: string) => void;
  /** Requests one connection may have in flight (default 32). */
  maxInFlight?: number;
}

/** Largest request payload and read reply (also advertised as NBD_INFO_BLOCK_SIZE maximum). */
export const MAX_REQUEST_BYTES = 32 * 1024 * 1024;
/** Option data longer than this is discarded with NBD_REP_ERR_TOO_BIG. */
const MAX_OPTION_BYTES = 64 * 1024;
/** Bytes of read replies one connection may have in flight (its share of the memory bound). */
const MAX_INFLIGHT_BYTES = 64 * 1024 * 1024;
const ZEROS = Buffer.alloc(1 << 20);
const BASE_ALLOCATION_ID = 1;
const KNOWN_CMD_FLAGS = P.NBD_CMD_FLAG_FUA | P.NBD_CMD_FLAG_NO_HOLE | P.NBD_CMD_FLAG_REQ_ONE;

const COMMAND_NAMES: Record<number, string> = {
  [P.NBD_CMD_READ]: 'read',
  [P.NBD_CMD_WRITE]: 'write',
  [P.NBD_CMD_DISC]: 'disc',
  [P.NBD_CMD_FLUSH]: 'flush',
  [P.NBD_CMD_TRIM]: 'trim',
  [P.NBD_CMD_CACHE]: 'cache',
  [P.NBD_CMD_WRITE_ZEROES]: 'write_zeroes',
  [P.NBD_CMD_BLOCK_STATUS]: 'block_status',
};

/**
 * A fixed-newstyle NBD server (src/nbd/protocol.ts has the wire format): options
 * EXPORT_NAME, ABORT, LIST, INFO, GO, STRUCTURED_REPLY, LIST_META_CONTEXT and
 * SET_META_CONTEXT (base:allocation); commands READ, BLOCK_STATUS, DISC, and on a
 * writable export WRITE, WRITE_ZEROES, FLUSH (FUA). Requests of one connection
 * run concurrently and are answered as they finish (out of order); any number of
 * connections share the exports (CAN_MULTI_CONN: there is one cache per export
 * behind all of them). A bad request gets the error the protocol names; a
 * connection that breaks the protocol is closed; neither disturbs the others.
 *
 * Memory per connection: at most maxInFlight requests and 64 MiB of read replies
 * being assembled, plus the socket buffers (the server stops reading requests
 * while the client is not reading replies).
 */
export class NbdServer {
  private readonly server: net.Server;
  private readonly connections = new Set<Connection>();
  private closing = false;
  private unixPath: string | null = null;
  readonly byName = new Map<string, NbdExport>();

  constructor(readonly options: ServerOptions) {
    for (const e of options.exports) for (const n of e.names) if (!this.byName.has(n)) this.byName.set(n, e);
    this.server = net.createServer((socket) => this.accept(socket));
  }

  get isClosing(): boolean {
    return this.closing;
  }

  log(line: string): void {
    this.options.log?.(line);
  }

  /** The export a name selects; the empty name selects the first export. */
  find(name: string): NbdExport | undefined {
    return name === '' ? this.options.exports[0] : this.byName.get(name);
  }

  /** Starts listening; resolves with the address ("unix:/path" or "127.0.0.1:10809"). */
  async listen(spec: ListenSpec): Promise<string> {
    if ('unix' in spec) {
      if (await fsp.lstat(spec.unix).catch(() => null)) throw new UserError(`${spec.unix} exists; remove it or pick another socket path`);
    }
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', (err: NodeJS.ErrnoException) =>
        reject(err.code === 'EADDRINUSE' || err.code === 'EACCES' ? new UserError(`cannot listen on ${describe(spec)}: ${err.message}`) : err),
      );
      if ('unix' in spec) this.server.listen(spec.unix, () => resolve());
      else this.server.listen(spec.port, spec.host, () => resolve());
    });
    if ('unix' in spec) {
      this.unixPath = spec.unix;
      return `unix:${spec.unix}`;
    }
    const a = this.server.address() as net.AddressInfo;
    return `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  }

  private accept(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const c = new Connection(this, socket);
    this.connections.add(c);
    nbdMetrics.connections.inc();
    nbdMetrics.connectionsTotal.inc();
    socket.on('close', () => {
      this.connections.delete(c);
      nbdMetrics.connections.dec();
    });
    c.run().catch((err: Error) => {
      this.log(`nbd: connection ${c.peer}: ${err.message}`);
      socket.destroy();
    });
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /**
   * Stops accepting, lets every connection finish the requests it has in flight,
   * closes them (waiting up to `graceMs`, then cutting them), removes the socket file.
   */
  async close(graceMs = 10_000): Promise<void> {
    this.closing = true;
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    await Promise.race([
      Promise.all([...this.connections].map((c) => c.shutdown())),
      new Promise((resolve) => setTimeout(resolve, graceMs).unref()),
    ]);
    for (const c of this.connections) c.socket.destroy();
    await stopped;
    if (this.unixPath) await fsp.rm(this.unixPath, { force: true });
  }
}

function describe(spec: ListenSpec): string {
  return 'unix' in spec ? `unix:${spec.unix}` : `${spec.host}:${spec.port}`;
}

function errnoOf(err: unknown): number {
  if (err instanceof NbdError) return err.nbdErrno;
  if (err instanceof RangeError) return P.NBD_EINVAL;
  return P.NBD_EIO;
}

/** One client connection: the handshake, then the transmission phase. */
class Connection {
  readonly peer: string;
  private readonly reader: ByteReader;
  private structured = false;
  private noZeroes = false;
  /** Export whose base:allocation context was selected with SET_META_CONTEXT. */
  private metaExport: string | null = null;
  private baseAllocation = false;
  private inTransmission = false;
  private stopping = false;
  private readonly inflight = new Set<Promise<void>>();
  private inflightBytes = 0;
  private ended: Promise<void>;

  constructor(
    private readonly server: NbdServer,
    readonly socket: net.Socket,
  ) {
    this.peer = socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'unix';
    this.reader = new ByteReader(socket);
    socket.setNoDelay?.(true);
    socket.on('error', () => {});
    this.ended = new Promise((resolve) => socket.on('close', () => resolve()));
  }

  /** Finishes in-flight requests and closes (during the handshake: closes at once). */
  async shutdown(): Promise<void> {
    this.stopping = true;
    if (!this.inTransmission) this.socket.end();
    else {
      await Promise.all(this.inflight);
      this.socket.end();
    }
    await this.ended;
  }

  private send(...parts: Buffer[]): void {
    if (this.socket.destroyed) return;
    this.socket.cork();
    for (const p of parts) this.socket.write(p);
    this.socket.uncork();
  }

  async run(): Promise<void> {
    this.send(P.encodeServerGreeting(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES));
    let flags: number;
    try {
      flags = P.decodeClientFlags(await this.reader.read(P.CLIENT_FLAGS_BYTES));
    } catch (err) {
      if (err instanceof EndOfStreamError) return;
      throw err;
    }
    if (flags & ~(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES)) {
      throw new Error(`unknown client flags 0x${flags.toString(16)}`);
    }
    this.noZeroes = (flags & P.NBD_FLAG_C_NO_ZEROES) !== 0;
    const exp = await this.negotiate();
    if (!exp) {
      this.socket.end();
      return;
    }
    this.inTransmission = true;
    await this.transmission(exp);
  }

  // ------------------------------------------------------------ handshake

  private reply(option: number, type: number, data?: Buffer): void {
    this.send(P.encodeOptionReply(option, type, data));
  }

  private refuse(option: number, type: number, message: string): void {
    this.send(P.encodeOptionError(option, type, message));
  }

  private transmissionFlags(e: NbdExport): number {
    let f = P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_CAN_MULTI_CONN;
    if (e.writable) f |= P.NBD_FLAG_SEND_FLUSH | P.NBD_FLAG_SEND_FUA | P.NBD_FLAG_SEND_WRITE_ZEROES;
    else f |= P.NBD_FLAG_READ_ONLY;
    return f;
  }

  /** Option haggling; resolves with the export chosen, or null when the client aborted. */
  private async negotiate(): Promise<NbdExport | null> {
    for (;;) {
      let head: P.OptionHeader;
      try {
        head = P.decodeOptionHeader(await this.reader.read(P.OPTION_HEADER_BYTES));
      } catch (err) {
        if (err instanceof EndOfStreamError) return null;
        throw err;
      }
      const { option, length } = head;
      if (length > MAX_OPTION_BYTES) {
        if (length > 16 * MAX_OPTION_BYTES) throw new Error(`option ${option} with ${length} bytes of data`);
        await this.reader.read(length);
        this.refuse(option, P.NBD_REP_ERR_TOO_BIG, `option data of ${length} bytes is too large`);
        continue;
      }
      const data = await this.reader.read(length);
      if (this.server.isClosing || this.stopping) {
        if (option === P.NBD_OPT_EXPORT_NAME) return null;
        this.refuse(option, P.NBD_REP_ERR_SHUTDOWN, 'the server is shutting down');
        continue;
      }
      switch (option) {
        case P.NBD_OPT_EXPORT_NAME: {
          const name = data.toString('utf8');
          const e = this.server.find(name);
          if (!e) {
            // the protocol has no error reply for EXPORT_NAME: the server MUST close
            this.server.log(`nbd: ${this.peer} asked for unknown export ${JSON.stringify(name)}`);
            return null;
          }
          if (this.metaExport !== null && this.metaExport !== name) this.baseAllocation = false;
          this.send(P.encodeExportNameReply(e.size, this.transmissionFlags(e), this.noZeroes));
          return e;
        }
        case P.NBD_OPT_ABORT:
          this.reply(option, P.NBD_REP_ACK);
          return null;
        case P.NBD_OPT_LIST:
          if (length) {
            this.refuse(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
            break;
          }
          for (const e of this.server.options.exports) {
            this.reply(option, P.NBD_REP_SERVER, P.encodeServerReplyData(e.names[0]!, e.description));
          }
          this.reply(option, P.NBD_REP_ACK);
          break;
        case P.NBD_OPT_STRUCTURED_REPLY:
          if (length) {
            this.refuse(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
            break;
          }
          this.structured = true;
          this.reply(option, P.NBD_REP_ACK);
          break;
        case P.NBD_OPT_INFO:
        case P.NBD_OPT_GO: {
          let req: P.InfoRequest;
          try {
            req = P.decodeInfoRequest(data);
          } catch (err) {
            this.refuse(option, P.NBD_REP_ERR_INVALID, (err as Error).message);
            break;
          }
          const e = this.server.find(req.name);
          if (!e) {
            this.refuse(option, P.NBD_REP_ERR_UNKNOWN, `no export ${JSON.stringify(req.name)}; exports: ${[...this.server.byName.keys()].join(', ')}`);
            break;
          }
          this.reply(option, P.NBD_REP_INFO, P.encodeInfo({ type: P.NBD_INFO_EXPORT, size: e.size, transmissionFlags: this.transmissionFlags(e) }));
          if (req.requests.includes(P.NBD_INFO_NAME)) this.reply(option, P.NBD_REP_INFO, P.encodeInfo({ type: P.NBD_INFO_NAME, name: e.names[0]! }));
          if (req.requests.includes(P.NBD_INFO_DESCRIPTION)) {
            this.reply(option, P.NBD_REP_INFO, P.encodeInfo({ type: P.NBD_INFO_DESCRIPTION, description: e.description }));
          }
          this.reply(
            option,
            P.NBD_REP_INFO,
            P.encodeInfo({ type: P.NBD_INFO_BLOCK_SIZE, minimum: 1, preferred: e.preferredBlockSize, maximum: MAX_REQUEST_BYTES }),
          );
          this.reply(option, P.NBD_REP_ACK);
          if (option === P.NBD_OPT_GO) {
            if (this.metaExport !== null && this.metaExport !== req.name) this.baseAllocation = false;
            return e;
          }
          break;
        }
        case P.NBD_OPT_LIST_META_CONTEXT:
        case P.NBD_OPT_SET_META_CONTEXT:
          this.metaContext(option, data);
          break;
        default:
          this.refuse(option, P.NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
      }
    }
  }

  private metaContext(option: number, data: Buffer): void {
    if (!this.structured) {
      this.refuse(option, P.NBD_REP_ERR_INVALID, 'negotiate structured replies before meta contexts');
      return;
    }
    let req: P.MetaContextRequest;
    try {
      req = P.decodeMetaContextRequest(data);
    } catch (err) {
      this.refuse(option, P.NBD_REP_ERR_INVALID, (err as Error).message);
      return;
    }
    if (!this.server.find(req.name)) {
      this.refuse(option, P.NBD_REP_ERR_UNKNOWN, `no export ${JSON.stringify(req.name)}`);
      return;
    }
    const list = option === P.NBD_OPT_LIST_META_CONTEXT;
    const wanted = list
      ? req.queries.length === 0 || req.queries.some((q) => q === 'base:' || q === P.BASE_ALLOCATION)
      : req.queries.includes(P.BASE_ALLOCATION);
    if (!list) {
      this.metaExport = req.name;
      this.baseAllocation = wanted;
    }
    if (wanted) this.reply(option, P.NBD_REP_META_CONTEXT, P.encodeMetaContextReplyData(list ? 0 : BASE_ALLOCATION_ID, P.BASE_ALLOCATION));
    this.reply(option, P.NBD_REP_ACK);
  }

  // ------------------------------------------------------------ transmission

  private async transmission(e: NbdExport): Promise<void> {
    const max = this.server.options.maxInFlight ?? 32;
    for (;;) {
      while (this.inflight.size >= max || this.inflightBytes >= MAX_INFLIGHT_BYTES) await Promise.race(this.inflight);
      if (this.socket.writableNeedDrain) await new Promise((resolve) => this.socket.once('drain', resolve).once('close', resolve));
      if (this.stopping || this.socket.destroyed) break;
      let req: P.Request;
      try {
        req = P.decodeRequest(await this.reader.read(P.REQUEST_BYTES));
      } catch (err) {
        if (err instanceof EndOfStreamError) break;
        throw err;
      }
      let payload: Buffer | null = null;
      if (req.type === P.NBD_CMD_WRITE) {
        if (req.length > MAX_REQUEST_BYTES) {
          // keep the stream in step, then refuse
          for (let left = req.length; left > 0; left -= Math.min(left, 1 << 20)) await this.reader.read(Math.min(left, 1 << 20));
          this.error(req, P.NBD_EOVERFLOW, `write of ${req.length} bytes is larger than ${MAX_REQUEST_BYTES}`);
          continue;
        }
        payload = await this.reader.read(req.length);
      }
      if (req.type === P.NBD_CMD_DISC) break;
      if (this.stopping) {
        this.error(req, P.NBD_ESHUTDOWN, 'the server is shutting down');
        continue;
      }
      const bytes = req.type === P.NBD_CMD_READ ? req.length : 0;
      this.inflightBytes += bytes;
      const p = this.handle(e, req, payload).finally(() => {
        this.inflightBytes -= bytes;
        this.inflight.delete(p);
      });
      this.inflight.add(p);
    }
    await Promise.all(this.inflight);
    this.socket.end();
  }

  private count(req: P.Request, result: string): void {
    nbdMetrics.requests.inc({ command: COMMAND_NAMES[req.type] ?? String(req.type), result });
  }

  private error(req: P.Request, errno: number, message: string): void {
    this.count(req, P.errorName(errno));
    if (this.structured && req.type === P.NBD_CMD_READ) {
      this.send(P.encodeErrorChunk(req.cookie, P.NBD_REPLY_FLAG_DONE, errno, message));
    } else if (this.structured && req.type === P.NBD_CMD_BLOCK_STATUS) {
      this.send(P.encodeErrorChunk(req.cookie, P.NBD_REPLY_FLAG_DONE, errno, message));
    } else {
      this.send(P.encodeSimpleReply(req.cookie, errno));
    }
  }

  private ok(req: P.Request): void {
    this.count(req, 'ok');
    this.send(P.encodeSimpleReply(req.cookie, 0));
  }

  private async handle(e: NbdExport, req: P.Request, payload: Buffer | null): Promise<void> {
    try {
      if (req.flags & ~KNOWN_CMD_FLAGS) throw new NbdError(P.NBD_EINVAL, `unsupported command flags 0x${req.flags.toString(16)}`);
      const inRange = req.offset + req.length <= e.size;
      switch (req.type) {
        case P.NBD_CMD_READ: {
          if (req.length > MAX_REQUEST_BYTES) {
            throw new NbdError(this.structured ? P.NBD_EOVERFLOW : P.NBD_EINVAL, `read of ${req.length} bytes is larger than ${MAX_REQUEST_BYTES}`);
          }
          if (!inRange) throw new NbdError(P.NBD_EINVAL, `read ${req.offset}+${req.length} is past the end (${e.size})`);
          const pieces = await e.read(req.offset, req.length);
          this.sendRead(req, pieces);
          return;
        }
        case P.NBD_CMD_BLOCK_STATUS: {
          if (!this.baseAllocation) throw new NbdError(P.NBD_EINVAL, 'no meta context was selected');
          if (req.length === 0 || !inRange) throw new NbdError(P.NBD_EINVAL, `block status ${req.offset}+${req.length} is outside the export (${e.size})`);
          let extents = (await e.extents(req.offset, req.length)).map((x) => ({
            length: x.length,
            flags: x.zero ? P.NBD_STATE_HOLE | P.NBD_STATE_ZERO : 0,
          }));
          if (req.flags & P.NBD_CMD_FLAG_REQ_ONE) extents = extents.slice(0, 1);
          this.count(req, 'ok');
          this.send(P.encodeBlockStatusChunk(req.cookie, P.NBD_REPLY_FLAG_DONE, BASE_ALLOCATION_ID, extents));
          return;
        }
        case P.NBD_CMD_WRITE:
        case P.NBD_CMD_WRITE_ZEROES:
        case P.NBD_CMD_TRIM: {
          if (!e.writable || !e.write) throw new NbdError(P.NBD_EPERM, 'the export is read-only');
          if (req.type === P.NBD_CMD_TRIM) throw new NbdError(P.NBD_EINVAL, 'trim is not supported');
          if (!inRange) throw new NbdError(P.NBD_ENOSPC, `write ${req.offset}+${req.length} is past the end (${e.size})`);
          await e.write(req.offset, req.length, req.type === P.NBD_CMD_WRITE ? payload : null, (req.flags & P.NBD_CMD_FLAG_FUA) !== 0);
          nbdMetrics.bytesWritten.inc(req.length);
          this.ok(req);
          return;
        }
        case P.NBD_CMD_FLUSH:
          await e.flush?.();
          this.ok(req);
          return;
        default:
          throw new NbdError(P.NBD_EINVAL, `command ${req.type} is not supported`);
      }
    } catch (err) {
      const errno = errnoOf(err);
      if (errno === P.NBD_EIO) nbdMetrics.chunkErrors.inc();
      if (!(err instanceof NbdError) && !(err instanceof RangeError)) {
        this.server.log(`nbd: ${COMMAND_NAMES[req.type] ?? req.type} ${req.offset}+${req.length}: ${(err as Error).stack ?? err}`);
      }
      this.error(req, errno, (err as Error).message);
    }
  }

  private sendRead(req: P.Request, pieces: ReadPiece[]): void {
    nbdMetrics.bytesServed.inc(req.length);
    this.count(req, 'ok');
    if (!this.structured) {
      const parts = [P.encodeSimpleReply(req.cookie, 0)];
      for (const p of pieces) {
        if (p.data) parts.push(p.data);
        else for (let left = p.length; left > 0; left -= ZEROS.length) parts.push(ZEROS.subarray(0, Math.min(left, ZEROS.length)));
      }
      this.send(...parts);
      return;
    }
    if (pieces.length === 0) {
      this.send(P.encodeNoneChunk(req.cookie));
      return;
    }
    const parts: Buffer[] = [];
    pieces.forEach((p, j) => {
      const flags = j === pieces.length - 1 ? P.NBD_REPLY_FLAG_DONE : 0;
      if (p.data) {
        parts.push(
          P.encodeStructuredReplyHeader({ flags, type: P.NBD_REPLY_TYPE_OFFSET_DATA, cookie: req.cookie, length: 8 + p.length }),
          P.encodeOffsetDataPrefix(p.offset),
          p.data,
        );
      } else parts.push(P.encodeOffsetHoleChunk(req.cookie, flags, p.offset, p.length));
    });
    this.send(...parts);
  }
}
