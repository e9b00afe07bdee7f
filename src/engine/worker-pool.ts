import * as os from 'node:os';
import { Worker } from 'node:worker_threads';
import { Repository } from '../repo/repository.js';

export interface WorkerSetup {
  encryptionKey: Uint8Array | null;
  idKey: Uint8Array;
  zstdLevel: number;
}

export type WorkerRequest =
  | { op: 'hash'; seq: number; buf: ArrayBuffer; lengths: number[] }
  | { op: 'encode'; seq: number; which: number[]; codec: number }
  | { op: 'decode'; seq: number; items: { stored: Uint8Array; id: Uint8Array; what: string }[] }
  | { op: 'hashPlain'; seq: number; items: Uint8Array[] };

export type WorkerReply =
  | { op: 'hashed'; seq: number; ids: Uint8Array; isZero: boolean[] }
  | { op: 'encoded'; seq: number; blobs: Uint8Array[]; buf: ArrayBuffer }
  | { op: 'decoded'; seq: number; plains: (Uint8Array | { error: string })[] }
  | { op: 'hashedPlain'; seq: number; ids: Uint8Array[] }
  | { op: 'error'; seq: number; message: string };

/** Worker threads for hashing, compression, encryption and verification; one per core by default. */
export class WorkerPool {
  private readonly workers: Worker[] = [];
  private readonly load: number[] = [];
  private readonly waiting = new Map<number, { resolve: (r: WorkerReply) => void; reject: (e: Error) => void; w: number }>();
  private nextSeq = 1;
  private dead: Error | null = null;

  constructor(repo: Repository, size = defaultWorkers()) {
    const setup: WorkerSetup = {
      encryptionKey: repo.master.encryptionKey ? new Uint8Array(repo.master.encryptionKey) : null,
      idKey: new Uint8Array(repo.master.idKey),
      zstdLevel: 1,
    };
    for (let i = 0; i < size; i++) {
      const w = new Worker(new URL('./chunk-worker.js', import.meta.url), { workerData: setup });
      w.on('message', (reply: WorkerReply) => this.onReply(reply));
      w.on('error', (err) => this.fail(err));
      w.on('exit', (code) => {
        if (code !== 0) this.fail(new Error(`worker thread exited with code ${code}`));
      });
      this.workers.push(w);
      this.load.push(0);
    }
  }

  get size(): number {
    return this.workers.length;
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

  newSeq(): number {
    return this.nextSeq++;
  }

  /** Sends a request to worker `w`; the reply comes back by the request's seq. */
  call<R extends WorkerReply>(w: number, req: WorkerRequest, transfer: ArrayBuffer[] = []): Promise<R> {
    if (this.dead) return Promise.reject(this.dead);
    return new Promise<R>((resolve, reject) => {
      // An encode reuses its batch's hash seq; the hash reply has been taken by then.
      this.waiting.set(req.seq, { resolve: resolve as (r: WorkerReply) => void, reject, w });
      this.load[w]!++;
      this.workers[w]!.postMessage(req, transfer);
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

export function defaultWorkers(): number {
  const env = Number(process.env.PILOTLIGHT_WORKERS);
  if (Number.isInteger(env) && env > 0) return env;
  return Math.max(1, os.availableParallelism());
}
