import * as os from 'node:os';
import { Worker } from 'node:worker_threads';
import { Repository } from '../repo/repository.js';
import { ChunkWork } from './chunk-work.js';
import { youngGenerationAfterWorkerStart } from '../runtime/gc-pacer.js';

/**
 * Jobs up to this many bytes of chunk data run in the calling thread: starting a
 * worker thread (loading its modules, native addons and the hasher) costs more
 * CPU than hashing, compressing and sealing this much.
 */
export const INLINE_MAX_BYTES = 32 << 20;

export interface WorkerSetup {
  encryptionKey: Uint8Array | null;
  idKey: Uint8Array;
  zstdLevel: number;
  /** Seal format of new blobs (and of blobs to decode when an item does not say). */
  blobSeal: 1 | 2;
}

/** A blob inside a transferred buffer. */
export interface BlobRef {
  offset: number;
  length: number;
}


export type WorkerRequest =
  /** Chunks laid end to end from `base` (room before them for the encoded blobs: ENCODE_HEADROOM per chunk). */
  | { op: 'hash'; seq: number; buf: ArrayBuffer; base: number; lengths: number[] }
  | { op: 'encode'; seq: number; which: number[]; codec: number }
  | {
      op: 'decode';
      seq: number;
      /** Moved to the worker; or shared (a restore's read buffer), the data then being `shared` bytes of it. */
      data: ArrayBuffer | SharedArrayBuffer;
      shared?: { offset: number; length: number };
      items: DecodeItem[];
      runs?: boolean;
      into?: { buf: SharedArrayBuffer; offsets: number[] };
    }
  | { op: 'hashPlain'; seq: number; items: Uint8Array[] };

export type WorkerReply =
  | { op: 'hashed'; seq: number; ids: Uint8Array; isZero: boolean[] }
  /** The stored blobs, written from the start of the batch buffer. */
  | { op: 'encoded'; seq: number; blobs: BlobRef[]; buf: ArrayBuffer }
  | { op: 'decoded'; seq: number; plain: ArrayBuffer | null; refs: ((BlobRef & { runs?: number[] }) | { error: string })[] }
  | { op: 'hashedPlain'; seq: number; ids: Uint8Array[] }
  | { op: 'error'; seq: number; message: string };

/**
 * A blob to decode: where it is in the data, what it should hash to, a name for
 * errors, (format 2) its type and seal format, and (when known) its plaintext
 * length, which lets it be decompressed in place.
 */
export type DecodeItem = BlobRef & { id: Uint8Array; what: string; type?: number; seal?: 1 | 2; plainLength?: number };

/** A verified plaintext and, when asked for, its non-zero runs ([start, length, ...]). */
export interface DecodedBlob {
  data: Buffer;
  runs: number[];
}

type Reply<K extends WorkerReply['op']> = Extract<WorkerReply, { op: K }>;

/**
 * Worker threads for hashing, compression, encryption and verification; one per
 * core by default. Bulk bytes cross threads as transferred ArrayBuffers (moved,
 * never copied): a batch buffer goes to a worker for hashing and comes back with
 * the encoded blobs written over its plaintexts.
 */
export class WorkerPool {
  private readonly workers: Worker[] = [];
  private readonly load: number[];
  private readonly waiting = new Map<number, { resolve: (r: WorkerReply) => void; reject: (e: Error) => void; w: number }>();
  private readonly setup: WorkerSetup;
  private nextSeq = 1;
  private dead: Error | null = null;
  private inline: Promise<ChunkWork> | null = null;
  /** The calling thread's own ChunkWork when it decodes beside the workers (`mainDecodes`). */
  private mainWork: Promise<ChunkWork> | null = null;

  /** Threads start on first use: a command that ends up reading no data (a diff, an unchanged disk) starts none. */
  constructor(
    repo: Repository,
    readonly size = defaultWorkers(),
    /**
     * The calling thread decodes too, whenever every worker already has
     * MAIN_DECODES_AFTER decodes queued: a restore's main thread mostly waits on
     * I/O, so one worker fewer (its isolate is ~35 MB of RSS) keeps the cores as busy.
     */
    private readonly mainDecodes = false,
  ) {
    this.setup = {
      encryptionKey: repo.master.encryptionKey ? new Uint8Array(repo.master.encryptionKey) : null,
      idKey: new Uint8Array(repo.master.idKey),
      zstdLevel: 1,
      blobSeal: repo.blobSeal,
    };
    this.load = new Array<number>(size).fill(0);
  }

  /**
   * Says how many bytes of chunk data the job will process, before its first
   * request: a small job runs in this thread and starts no worker.
   */
  plan(bytes: number): void {
    if (this.workers.length === 0 && bytes <= INLINE_MAX_BYTES) this.inline ??= ChunkWork.create(this.setup);
  }

  private worker(i: number): Worker {
    while (this.workers.length < this.size) {
      const w = new Worker(new URL('./chunk-worker.js', import.meta.url), { workerData: this.setup });
      w.once('online', youngGenerationAfterWorkerStart);
      w.on('message', (reply: WorkerReply) => this.onReply(reply));
      w.on('error', (err) => this.fail(err));
      w.on('exit', (code) => {
        if (code !== 0) this.fail(new Error(`worker thread exited with code ${code}`));
      });
      this.workers.push(w);
    }
    return this.workers[i]!;
  }

  private fail(err: Error): void {
    this.dead ??= err;
    for (const [, p] of this.waiting) p.reject(err);
    this.waiting.clear();
  }

  private onReply(reply: WorkerReply): void {
    const p = this.waiting.get(reply.seq);
    if (!p) return;
    this.waiting.delete(reply.seq);
    this.load[p.w]!--;
    if (reply.op === 'error') p.reject(new Error(reply.message));
    else p.resolve(reply);
  }

  /** The least busy worker's index. */
  pick(): number {
    let best = 0;
    for (let i = 1; i < this.load.length; i++) if (this.load[i]! < this.load[best]!) best = i;
    return best;
  }

  private call<R extends WorkerReply>(w: number, req: WorkerRequest, transfer: ArrayBuffer[] = []): Promise<R> {
    if (this.dead) return Promise.reject(this.dead);
    if (this.inline) return this.inline.then((work) => work.handle(req).reply as R);
    return new Promise<R>((resolve, reject) => {
      this.waiting.set(req.seq, { resolve: resolve as (r: WorkerReply) => void, reject, w });
      this.load[w]!++;
      this.worker(w).postMessage(req, transfer);
    });
  }

  /**
   * Hashes the chunks of a batch on worker `w` (which keeps the buffer: `buf` is
   * detached here). Follow with `encode` on the same worker and seq.
   */
  async hash(w: number, buf: ArrayBuffer, base: number, lengths: number[]): Promise<{ seq: number; ids: Buffer; isZero: boolean[] }> {
    const seq = this.nextSeq++;
    const r = await this.call<Reply<'hashed'>>(w, { op: 'hash', seq, buf, base, lengths }, [buf]);
    return { seq, ids: Buffer.from(r.ids.buffer, r.ids.byteOffset, r.ids.byteLength), isZero: r.isZero };
  }

  /**
   * Encodes chunks `which` (ascending) of a held batch; returns the batch buffer
   * and their stored forms, views into it (written over the plaintexts: valid
   * until the buffer is reused).
   */
  async encode(w: number, seq: number, which: number[], codec: number): Promise<{ blobs: Buffer[]; buf: ArrayBuffer }> {
    const r = await this.call<Reply<'encoded'>>(w, { op: 'encode', seq, which, codec });
    return { blobs: r.blobs.map((b) => Buffer.from(r.buf, b.offset, b.length)), buf: r.buf };
  }

  /**
   * Opens, decompresses and verifies blobs held in `data` at the given places.
   * `data` is moved to the worker when it owns its whole ArrayBuffer, else copied.
   */
  async decode(data: Buffer, items: DecodeItem[]): Promise<(Buffer | { error: string })[]> {
    return (await this.decodeBlobs(data, items)).map((d) => ('error' in d ? d : d.data));
  }

  /**
   * As decode, with options: `runs` finds each plaintext's non-zero 4 KiB runs
   * (zero-runs.ts) in the worker; with `into`, item k's plaintext is written at
   * `into.offsets[k]` of that shared buffer (nothing allocated or moved; every
   * item needs its plainLength then). `data` backed by a SharedArrayBuffer is
   * read in place by the worker (neither copied nor moved): the caller keeps it
   * unchanged until this resolves.
   */
  async decodeBlobs(
    data: Buffer,
    items: DecodeItem[],
    options: { runs?: boolean; into?: { buf: SharedArrayBuffer; offsets: number[] } } = {},
  ): Promise<(DecodedBlob | { error: string })[]> {
    const { runs, into } = options;
    const seq = this.nextSeq++;
    let req: WorkerRequest;
    const transfer: ArrayBuffer[] = [];
    if (data.buffer instanceof SharedArrayBuffer) {
      req = { op: 'decode', seq, data: data.buffer, shared: { offset: data.byteOffset, length: data.byteLength }, items, runs, ...(into ? { into } : {}) };
    } else {
      const own = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength;
      const ab = own ? (data.buffer as ArrayBuffer) : data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
      req = { op: 'decode', seq, data: ab, items, runs, ...(into ? { into } : {}) };
      transfer.push(ab);
    }
    const w = this.pick();
    let r: Reply<'decoded'>;
    if (this.mainDecodes && !this.inline && !this.dead && this.load[w]! >= MAIN_DECODES_AFTER) {
      const work = await (this.mainWork ??= ChunkWork.create(this.setup));
      r = work.handle(req).reply as Reply<'decoded'>;
    } else r = await this.call<Reply<'decoded'>>(w, req, transfer);
    const plain = r.plain ?? into!.buf;
    return r.refs.map((ref) => ('error' in ref ? ref : { data: Buffer.from(plain, ref.offset, ref.length), runs: ref.runs ?? [] }));
  }

  async hashPlain(items: Uint8Array[]): Promise<Buffer[]> {
    const r = await this.call<Reply<'hashedPlain'>>(this.pick(), { op: 'hashPlain', seq: this.nextSeq++, items });
    return r.ids.map((id) => Buffer.from(id));
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

/** Decodes queued on the least busy worker before the calling thread (mainDecodes) takes one itself. */
const MAIN_DECODES_AFTER = 2;

export function defaultWorkers(): number {
  const env = Number(process.env.PILOTLIGHT_WORKERS);
  if (Number.isInteger(env) && env > 0) return env;
  return Math.max(1, os.availableParallelism());
}
