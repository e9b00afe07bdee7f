/**
 * Parent side of the VDDK worker (vddk-worker.ts): starts the child process with
 * LD_LIBRARY_PATH pointing at the VDDK lib64 directory and turns its replies into
 * promises. Errors carry VDDK's own error text.
 */
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ConnectParams } from './vddk-binding.js';
import { vddkLib64 } from './vddk-libdir.js';

export class VddkWorkerError extends Error {
  constructor(
    message: string,
    readonly operation?: string,
    readonly code?: string,
    readonly vddkText?: string,
  ) {
    super(message);
    this.name = 'VddkWorkerError';
  }
}

export interface VddkWorkerOptions {
  /** The VDDK lib64 directory (holds libvixDiskLib.so), or the distribution directory above it. */
  libDir: string;
  /** Passed to VixDiskLib_InitEx as libDir (default: the VDDK root, the parent of a `lib64` libDir). */
  initLibDir?: string | null;
  configFile?: string | null;
  /** Extra environment for the child, passed as given (tests use it for the fake library). */
  env?: NodeJS.ProcessEnv;
}

/** Variables the worker keeps from the parent: the search path, home and temp dirs, time zone, locale. */
const KEPT = new Set(['PATH', 'HOME', 'USER', 'LOGNAME', 'TMPDIR', 'TZ', 'LANG', 'LANGUAGE']);
/** Never passed, even when PILOTLIGHT_VDDK_ENV names them: the worker gets credentials over IPC, per call. */
const SECRET_RE = /^(PILOTLIGHT_PASSWORD|AWS_|VSPHERE_PASSWORD)/;

/**
 * The worker's environment: what VDDK and Node need (KEPT, LC_*, LD_LIBRARY_PATH with
 * the VDDK lib64 directory first), the names or `PREFIX_*` patterns listed in
 * PILOTLIGHT_VDDK_ENV (comma-separated; secrets excepted), and `opts.env` as given.
 * Never the repository password or cloud credentials: the worker loads a closed
 * third-party library and has no use for them.
 */
export function workerEnvironment(parent: NodeJS.ProcessEnv, opts: Pick<VddkWorkerOptions, 'libDir' | 'env'>): NodeJS.ProcessEnv {
  const extra = (parent.PILOTLIGHT_VDDK_ENV ?? '').split(',').map((x) => x.trim()).filter(Boolean);
  const wanted = (name: string) =>
    KEPT.has(name) || name.startsWith('LC_') || extra.some((x) => (x.endsWith('*') ? name.startsWith(x.slice(0, -1)) : name === x));
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(parent)) {
    if (value !== undefined && wanted(name) && !SECRET_RE.test(name)) env[name] = value;
  }
  Object.assign(env, opts.env);
  env.LD_LIBRARY_PATH = [opts.libDir, parent.LD_LIBRARY_PATH].filter(Boolean).join(':');
  return env;
}

export interface OpenedDisk {
  handle: number;
  capacity: bigint;
  transport: string;
}

export class VddkWorker {
  private child: ChildProcess;
  private seq = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; op: string }>();
  private stderr = '';
  private exited = false;

  private constructor(opts: VddkWorkerOptions) {
    const script = fileURLToPath(new URL('./vddk-worker.js', import.meta.url));
    const env = workerEnvironment(process.env, opts);
    this.child = fork(script, [], {
      env,
      serialization: 'advanced',
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    this.child.stderr?.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-4000);
    });
    this.child.on('message', (m: { id: number; ok: boolean; result?: unknown; error?: { message: string; operation?: string; code?: string; vddkText?: string } }) => {
      const w = this.waiting.get(m.id);
      if (!w) return;
      this.waiting.delete(m.id);
      if (m.ok) w.resolve(m.result);
      else w.reject(new VddkWorkerError(m.error!.message, m.error!.operation, m.error!.code, m.error!.vddkText));
    });
    this.child.on('exit', (code, signal) => {
      this.exited = true;
      const why = `VDDK worker process exited (${signal ?? `code ${code}`})${this.stderr ? `: ${this.stderr.trim()}` : ''}`;
      this.exitReason = why;
      for (const w of this.waiting.values()) w.reject(new VddkWorkerError(`${why} during ${w.op}`));
      this.waiting.clear();
    });
  }

  static async start(options: VddkWorkerOptions): Promise<VddkWorker> {
    const opts = { ...options, libDir: vddkLib64(options.libDir) };
    const w = new VddkWorker(opts);
    try {
      await w.call('init', {
        libDir: opts.initLibDir === undefined ? (path.basename(path.resolve(opts.libDir)) === 'lib64' ? path.dirname(path.resolve(opts.libDir)) : path.resolve(opts.libDir)) : opts.initLibDir,
        configFile: opts.configFile ?? null,
      });
    } catch (err) {
      await w.kill();
      throw err;
    }
    return w;
  }

  /** False once the worker process has exited (crashed, killed, or after exit()). */
  get running(): boolean {
    return !this.exited;
  }

  /** Why the process ended, when it did. */
  exitReason?: string;

  get pid(): number | undefined {
    return this.child.pid;
  }

  private call<T>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    if (this.exited) return Promise.reject(new VddkWorkerError(`VDDK worker is not running (${op})`));
    const id = this.seq++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject, op });
      this.child.send({ id, op, ...args });
    });
  }

  prepareForAccess(params: ConnectParams, identity: string): Promise<void> {
    return this.call('prepareForAccess', { params, identity });
  }

  endAccess(params: ConnectParams, identity: string): Promise<void> {
    return this.call('endAccess', { params, identity });
  }

  connect(params: ConnectParams, snapshotRef: string, transport: string | null): Promise<number> {
    return this.call('connect', { params, snapshotRef, transport });
  }

  disconnect(conn: number): Promise<void> {
    return this.call('disconnect', { conn });
  }

  async open(conn: number, path: string): Promise<OpenedDisk> {
    const r = await this.call<{ handle: number; capacity: string; transport: string }>('open', { conn, path });
    return { handle: r.handle, capacity: BigInt(r.capacity), transport: r.transport };
  }

  close(handle: number): Promise<void> {
    return this.call('close', { handle });
  }

  async read(handle: number, offset: bigint | number, length: number): Promise<Uint8Array> {
    const data = await this.call<Uint8Array>('read', { handle, offset: offset.toString(), length });
    if (data.byteLength !== length) throw new VddkWorkerError(`short read: ${data.byteLength} of ${length} bytes at ${offset}`);
    return data;
  }

  /**
   * Allocated byte ranges, via QueryAllocatedBlocks (64 KiB granularity by default),
   * asked in pieces of at most VIXDISKLIB_MAX_CHUNK_NUMBER (512 Ki) chunks as VDDK requires.
   */
  async allocated(handle: number, capacity: bigint, chunkSectors = 128n): Promise<Array<{ offset: bigint; length: bigint }>> {
    const sectors = capacity / 512n;
    const step = 512n * 1024n * chunkSectors;
    const out: Array<{ offset: bigint; length: bigint }> = [];
    for (let start = 0n; start < sectors; start += step) {
      const n = sectors - start < step ? sectors - start : step;
      // VDDK wants whole chunks: round the last piece up, then clip to the capacity
      const whole = ((n + chunkSectors - 1n) / chunkSectors) * chunkSectors;
      const r = await this.call<Array<[string, string]>>('allocated', {
        handle,
        startSector: start.toString(),
        numSectors: (start + whole > sectors && whole !== n ? n : whole).toString(),
        chunk: chunkSectors.toString(),
      });
      for (const [o, l] of r) {
        const offset = BigInt(o) * 512n;
        let length = BigInt(l) * 512n;
        if (offset + length > capacity) length = capacity - offset;
        const last = out[out.length - 1];
        if (last && last.offset + last.length === offset) last.length += length;
        else if (length > 0n) out.push({ offset, length });
      }
    }
    return out;
  }

  /** VixDiskLib_Exit (closing whatever is still open), then the process ends. */
  async exit(): Promise<void> {
    if (this.exited) return;
    const done = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    try {
      await this.call('exit');
    } finally {
      const t = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      await done;
      clearTimeout(t);
    }
  }

  async kill(): Promise<void> {
    if (this.exited) return;
    const done = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGKILL');
    await done;
  }
}
