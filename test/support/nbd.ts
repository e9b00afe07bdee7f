/**
 * Helpers for the NBD tests: start `pilotlight serve nbd` as a child process and
 * wait until it listens, run the Debian NBD tools, and a small raw NBD client.
 *
 * RawNbdClient is a TEST CLIENT built on src/nbd/protocol.ts: the real clients
 * (nbdcopy, nbdinfo, qemu-img, qemu-io) cannot send the malformed or forbidden
 * requests (a write to a read-only export, a read past the end) whose answers the
 * protocol names, nor pipeline requests in a chosen order. Everything a real client
 * can check is checked with the real clients.
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as net from 'node:net';
import { ByteReader } from '../../src/nbd/byte-reader.js';
import * as P from '../../src/nbd/protocol.js';
import { start } from './cli.js';

export interface Serving {
  child: ChildProcess;
  ready: { address: string; snapshot: string; exports: { disk: number; names: string[]; size: number; writable: boolean }[]; metrics: string | null };
  stderr: () => string;
  /** SIGTERM, then the exit code. */
  stop: () => Promise<number | null>;
}

export async function startServe(args: string[], env: Record<string, string>): Promise<Serving> {
  const child = start(['serve', 'nbd', ...args, '--json'], env);
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const ready = await new Promise<Serving['ready']>((resolve, reject) => {
    let out = '';
    const onData = (d: Buffer) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) {
        child.stdout!.off('data', onData);
        try {
          resolve(JSON.parse(out.slice(0, nl)));
        } catch (err) {
          reject(err);
        }
      }
    };
    child.stdout!.on('data', onData);
    exited.then((code) => reject(new Error(`serve nbd exited ${code} before listening: ${stderr}`)));
  });
  return {
    child,
    ready,
    stderr: () => stderr,
    stop: async () => {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

export interface ToolResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a Debian tool (nbdcopy, nbdinfo, qemu-img, qemu-io) to completion. */
export function tool(cmd: string, args: string[], timeoutMs = 120_000): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

export async function toolOk(cmd: string, args: string[]): Promise<ToolResult> {
  const r = await tool(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
  return r;
}

export function nbdUri(socket: string, exportName: string): string {
  return `nbd+unix:///${encodeURIComponent(exportName)}?socket=${socket}`;
}

/** The runs `nbdinfo --map --json` prints: [{offset, length, type}] with type's bit 0 = hole, bit 1 = zero. */
export async function nbdMap(uri: string): Promise<{ offset: number; length: number; type: number }[]> {
  const r = await toolOk('nbdinfo', ['--map', '--json', uri]);
  return JSON.parse(r.stdout);
}

/** Bytes qemu-io `read -v` printed (its hex dump), or the error it printed. */
export function parseQemuIoDump(out: string): Map<number, number> {
  const bytes = new Map<number, number>();
  for (const line of out.split('\n')) {
    const m = /^([0-9a-f]{8}):((?: {1,2}[0-9a-f]{2})+)/.exec(line);
    if (!m) continue;
    const base = parseInt(m[1]!, 16);
    m[2]!.trim().split(/\s+/).forEach((h, i) => bytes.set(base + i, parseInt(h, 16)));
  }
  return bytes;
}

export interface RawReply {
  error: number;
  /** Read data reassembled from OFFSET_DATA / OFFSET_HOLE chunks, or a simple reply's data. */
  data: Buffer | null;
  extents: P.Extent[] | null;
  message: string | null;
}

/** A minimal TEST client (see the file comment): handshake, pipelined requests matched by cookie. */
export class RawNbdClient {
  private reader!: ByteReader;
  private cookie = 1n;
  private readonly waiting = new Map<bigint, { req: P.Request; resolve: (r: RawReply) => void; reply: RawReply; got: number }>();
  readonly order: bigint[] = [];
  closed: Promise<void> = Promise.resolve();
  size = 0;
  transmissionFlags = 0;
  structured = false;

  private constructor(readonly socket: net.Socket) {}

  static async connect(path: string): Promise<RawNbdClient> {
    const socket = net.connect(path);
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const c = new RawNbdClient(socket);
    c.reader = new ByteReader(socket);
    c.closed = new Promise((resolve) => socket.on('close', () => resolve()));
    socket.on('error', () => {});
    P.decodeServerGreeting(await c.reader.read(P.SERVER_GREETING_BYTES));
    socket.write(P.encodeClientFlags(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES));
    return c;
  }

  /** Sends an option and collects its replies up to ACK or an error. */
  async option(option: number, data?: Buffer): Promise<{ type: number; data: Buffer }[]> {
    this.socket.write(P.encodeOption(option, data));
    const out: { type: number; data: Buffer }[] = [];
    for (;;) {
      const h = P.decodeOptionReplyHeader(await this.reader.read(P.OPTION_REPLY_HEADER_BYTES));
      const d = await this.reader.read(h.length);
      out.push({ type: h.type, data: d });
      if (h.type === P.NBD_REP_ACK || P.isOptionReplyError(h.type)) return out;
    }
  }

  /** Structured replies (optional), base:allocation (optional), GO; starts reading replies. */
  async go(name: string, opts: { structured?: boolean; baseAllocation?: boolean } = {}): Promise<void> {
    if (opts.structured) {
      const r = await this.option(P.NBD_OPT_STRUCTURED_REPLY);
      this.structured = r[0]!.type === P.NBD_REP_ACK;
    }
    if (opts.baseAllocation) await this.option(P.NBD_OPT_SET_META_CONTEXT, P.encodeMetaContextRequest({ name, queries: [P.BASE_ALLOCATION] }));
    const replies = await this.option(P.NBD_OPT_GO, P.encodeInfoRequest({ name, requests: [] }));
    const last = replies[replies.length - 1]!;
    if (last.type !== P.NBD_REP_ACK) throw new Error(`GO ${name}: reply 0x${last.type.toString(16)} ${last.data.toString()}`);
    for (const r of replies) {
      if (r.type !== P.NBD_REP_INFO) continue;
      const info = P.decodeInfo(r.data);
      if ('size' in info) {
        this.size = info.size;
        this.transmissionFlags = info.transmissionFlags;
      }
    }
    this.readReplies().catch(() => {});
  }

  private async readReplies(): Promise<void> {
    for (;;) {
      const magic = await this.reader.read(4);
      const rest = await this.reader.read(P.replyHeaderBytes(magic) - 4);
      const h = P.decodeReplyHeader(Buffer.concat([magic, rest]));
      const w = this.waiting.get(h.cookie);
      if (!w) throw new Error(`reply for unknown cookie ${h.cookie}`);
      if (h.kind === 'simple') {
        w.reply.error = h.error;
        if (h.error === 0 && w.req.type === P.NBD_CMD_READ) w.reply.data = await this.reader.read(w.req.length);
        this.finish(h.cookie);
        continue;
      }
      const payload = await this.reader.read(h.length);
      if (h.type === P.NBD_REPLY_TYPE_OFFSET_DATA) {
        const d = P.decodeOffsetData(payload);
        w.reply.data ??= Buffer.alloc(w.req.length);
        d.data.copy(w.reply.data, d.offset - w.req.offset);
      } else if (h.type === P.NBD_REPLY_TYPE_OFFSET_HOLE) {
        w.reply.data ??= Buffer.alloc(w.req.length);
        const hole = P.decodeOffsetHole(payload);
        w.reply.data.fill(0, hole.offset - w.req.offset, hole.offset - w.req.offset + hole.length);
      } else if (h.type === P.NBD_REPLY_TYPE_BLOCK_STATUS) {
        w.reply.extents = P.decodeBlockStatus(payload).extents;
      } else if (P.isReplyTypeError(h.type)) {
        const e = P.decodeError(payload, h.type);
        w.reply.error = e.error;
        w.reply.message = e.message;
      }
      if (h.flags & P.NBD_REPLY_FLAG_DONE) {
        if (w.reply.error) w.reply.data = null;
        else if (w.req.type === P.NBD_CMD_READ) w.reply.data ??= Buffer.alloc(0);
        this.finish(h.cookie);
      }
    }
  }

  private finish(cookie: bigint): void {
    const w = this.waiting.get(cookie)!;
    this.waiting.delete(cookie);
    this.order.push(cookie);
    w.resolve(w.reply);
  }

  /** Sends a request (pipelined: several may be outstanding); resolves with its reply. */
  request(type: number, offset: number, length: number, opts: { flags?: number; payload?: Buffer } = {}): { cookie: bigint; reply: Promise<RawReply> } {
    const req: P.Request = { flags: opts.flags ?? 0, type, cookie: this.cookie++, offset, length };
    const reply = new Promise<RawReply>((resolve) =>
      this.waiting.set(req.cookie, { req, resolve, reply: { error: 0, data: null, extents: null, message: null }, got: 0 }),
    );
    this.socket.write(opts.payload ? Buffer.concat([P.encodeRequest(req), opts.payload]) : P.encodeRequest(req));
    return { cookie: req.cookie, reply };
  }

  read(offset: number, length: number): Promise<RawReply> {
    return this.request(P.NBD_CMD_READ, offset, length).reply;
  }

  async disconnect(): Promise<void> {
    this.socket.write(P.encodeRequest({ flags: 0, type: P.NBD_CMD_DISC, cookie: 0n, offset: 0, length: 0 }));
    this.socket.end();
    await this.closed;
  }
}
