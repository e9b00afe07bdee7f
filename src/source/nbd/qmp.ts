/**
 * A small QMP client (QEMU Machine Protocol: JSON over a unix socket), for qemu and
 * qemu-storage-daemon: reads the greeting, negotiates capabilities (qmp_capabilities),
 * then sends one command at a time and waits for its `return` or `error`. Events
 * (`{"event": ...}`) are ignored. https://www.qemu.org/docs/master/interop/qmp-spec.html
 */
import * as net from 'node:net';
import { UserError } from '../../repo/errors.js';

/** QEMU refused a command: its error class (GenericError, DeviceNotFound) and description. */
export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command}: ${desc}`);
    this.name = 'QmpError';
  }
}

interface Waiter {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

export class QmpClient {
  /** The greeting's version, `7.2.0`. */
  version = '';
  private buffered = '';
  private readonly waiting = new Map<string, Waiter>();
  private nextId = 1;
  private failure?: Error;
  private greeting?: (v: unknown) => void;

  private constructor(
    readonly socketPath: string,
    private readonly socket: net.Socket,
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => this.onData(d));
    socket.on('error', (e) => this.fail(e));
    socket.on('close', () => this.fail(new Error(`QMP socket ${socketPath} closed`)));
  }

  static async connect(socketPath: string, timeoutMs = 10_000): Promise<QmpClient> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection({ path: socketPath });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new UserError(`no QMP greeting on ${socketPath} within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        const why =
          err.code === 'ENOENT'
            ? 'no such socket (start qemu with -qmp unix:PATH,server=on,wait=off, or qemu-storage-daemon with --chardev socket,path=PATH,server=on,wait=off,id=m --monitor chardev=m)'
            : err.code === 'ECONNREFUSED'
              ? 'connection refused (nothing is listening; is QEMU running?)'
              : err.message;
        reject(new UserError(`cannot connect to QMP at ${socketPath}: ${why}`));
      });
    });
    const c = new QmpClient(socketPath, socket);
    try {
      const hello = (await Promise.race([
        new Promise((resolve) => (c.greeting = resolve)),
        new Promise((_, reject) => setTimeout(() => reject(new UserError(`${socketPath} sent no QMP greeting: is it a QMP monitor socket?`)), timeoutMs).unref()),
      ])) as { QMP?: { version?: { qemu?: { major: number; minor: number; micro: number } } } };
      const v = hello.QMP?.version?.qemu;
      if (v) c.version = `${v.major}.${v.minor}.${v.micro}`;
      await c.execute('qmp_capabilities');
    } catch (err) {
      socket.destroy();
      throw err;
    }
    return c;
  }

  private onData(d: string): void {
    this.buffered += d;
    let nl: number;
    while ((nl = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, nl).trim();
      this.buffered = this.buffered.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        this.fail(new Error(`QMP ${this.socketPath}: not JSON: ${line.slice(0, 80)}`));
        return;
      }
      if ('QMP' in msg) {
        this.greeting?.(msg);
        this.greeting = undefined;
        continue;
      }
      if ('event' in msg) continue;
      const id = typeof msg.id === 'string' ? msg.id : undefined;
      const w = id ? this.waiting.get(id) : undefined;
      if (!w) continue;
      this.waiting.delete(id!);
      if ('error' in msg) {
        const e = msg.error as { class?: string; desc?: string };
        w.reject(new QmpError(w.command, e.class ?? 'GenericError', e.desc ?? 'error'));
      } else w.resolve(msg.return);
    }
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const [id, w] of this.waiting) {
      this.waiting.delete(id);
      w.reject(this.failure);
    }
  }

  /** Runs one command; resolves with its `return` value, rejects with QmpError. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    const id = `pl-${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { command, resolve: resolve as (v: unknown) => void, reject });
      this.socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    });
  }

  close(): void {
    this.failure ??= new Error('QMP connection closed');
    this.socket.destroy();
  }
}
