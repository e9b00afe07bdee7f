import { Repository } from '../repo/repository.js';
import { ChunkCache } from './chunk-cache.js';
import { DataIntegrityError, fetchBlobs } from './pack-fetch.js';
import { WorkerPool } from './worker-pool.js';

export interface FetcherOptions {
  /** fetchBlobs calls in flight (each with up to FETCHES ranged GETs). */
  batches?: number;
  /** Chunks per fetchBlobs call at most. */
  batchChunks?: number;
  /** Seconds one ranged GET + verify took, and how many chunks it brought. */
  onGroup?: (seconds: number, chunks: number) => void;
  /** A read found its chunk in the cache / had to fetch it. */
  onHit?: () => void;
  onMiss?: () => void;
}

interface Want {
  key: string;
  id: Buffer;
  length: number;
  resolve: (b: Buffer) => void;
  reject: (e: Error) => void;
}

/**
 * Fetches chunks by id for many concurrent readers: a cache hit is served at once;
 * misses that arrive in the same turn of the event loop are fetched together (one
 * fetchBlobs call groups them by pack and coalesces neighbours), a chunk already
 * being fetched is not fetched twice, and demand reads go before read-ahead.
 * Everything put in the cache was verified against its id.
 *
 * Memory: the cache budget, plus at most `batches` x `batchChunks` chunks being
 * fetched (default 4 x 64 x 64 KiB = 16 MiB of plaintext, and their packed bytes).
 */
export class ChunkFetcher {
  private readonly inflight = new Map<string, Promise<Buffer>>();
  private readonly demand: Want[] = [];
  private readonly ahead: Want[] = [];
  private running = 0;
  private scheduled = false;
  private readonly batches: number;
  private readonly batchChunks: number;

  constructor(
    private readonly repo: Repository,
    private readonly pool: WorkerPool,
    readonly cache: ChunkCache,
    private readonly options: FetcherOptions = {},
  ) {
    this.batches = options.batches ?? 4;
    this.batchChunks = options.batchChunks ?? 64;
  }

  /** Chunks queued or being fetched. */
  get pending(): number {
    return this.inflight.size;
  }

  /** The verified bytes of a chunk; rejects with DataIntegrityError when it cannot be served. */
  get(id: Buffer, length: number): Promise<Buffer> {
    const key = id.toString('hex');
    const hit = this.cache.get(key);
    if (hit) {
      this.options.onHit?.();
      return Promise.resolve(hit);
    }
    this.options.onMiss?.();
    return this.inflight.get(key) ?? this.enqueue(key, id, length, this.demand);
  }

  /** Starts fetching a chunk that will probably be read soon (no-op when cached or on its way). */
  prefetch(id: Buffer, length: number): void {
    const key = id.toString('hex');
    if (this.cache.has(key) || this.inflight.has(key)) return;
    this.enqueue(key, id, length, this.ahead).catch(() => {
      // a damaged chunk is reported when it is actually read
    });
  }

  private enqueue(key: string, id: Buffer, length: number, queue: Want[]): Promise<Buffer> {
    const p = new Promise<Buffer>((resolve, reject) => queue.push({ key, id: Buffer.from(id), length, resolve, reject }));
    this.inflight.set(key, p);
    const forget = () => {
      if (this.inflight.get(key) === p) this.inflight.delete(key);
    };
    p.then(forget, forget);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.pump();
      });
    }
    return p;
  }

  private pump(): void {
    while (this.running < this.batches && (this.demand.length || this.ahead.length)) {
      const batch = this.demand.splice(0, this.batchChunks);
      if (batch.length < this.batchChunks) batch.push(...this.ahead.splice(0, this.batchChunks - batch.length));
      this.running++;
      this.run(batch).finally(() => {
        this.running--;
        this.pump();
      });
    }
  }

  private async run(batch: Want[]): Promise<void> {
    let got: (Buffer | DataIntegrityError)[];
    try {
      got = await fetchBlobs(this.repo, this.pool, batch, { label: 'chunk fetch', onGroup: this.options.onGroup });
    } catch (err) {
      for (const w of batch) w.reject(err as Error);
      return;
    }
    got.forEach((g, j) => {
      const w = batch[j]!;
      if (g instanceof Error) w.reject(g);
      else {
        this.cache.set(w.key, g);
        w.resolve(g);
      }
    });
  }
}
