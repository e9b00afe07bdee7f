import { ID_BYTES, PAGE_SLOTS, isZeroId } from '../repo/format.js';
import { ChunkFetcher } from './chunk-fetcher.js';
import { Overlay } from './overlay.js';
import { SnapshotImage } from './snapshot-image.js';

/** A run of bytes of a read: `data` null means zeros (a hole in the snapshot). */
export interface Piece {
  offset: number;
  length: number;
  data: Buffer | null;
}

/** A run of the disk that is all zeros (`zero`) or holds data. */
export interface AllocationExtent {
  length: number;
  zero: boolean;
}

/** A read or write that cannot be served correctly; `offset` is the first byte of the bad chunk. */
export class ChunkReadError extends Error {
  constructor(message: string, readonly offset: number) {
    super(message);
    this.name = 'ChunkReadError';
  }
}

export interface LazyDiskOptions {
  overlay?: Overlay;
  /** Largest read-ahead, in chunks (default 128 = 8 MiB). */
  maxReadAhead?: number;
  /** Where damaged chunks are reported (one line each). */
  log?: (line: string) => void;
}

/** Leaf pages kept (32 KiB each, 64 MiB of disk each). */
const LEAF_PAGES = 64;
/** Sequential streams followed for read-ahead. */
const STREAMS = 16;
const FIRST_READ_AHEAD = 8;

/**
 * Random access to one disk of a snapshot, fetching chunks when they are read
 * (instant access): chunk ids come from the manifest leaf pages (an LRU of 64
 * pages), chunk bytes from the shared ChunkFetcher (verified, cached). Reads that
 * continue where an earlier read ended start a read-ahead that doubles with each
 * sequential read up to maxReadAhead chunks. With an overlay, written chunks are
 * read from it, and writes copy the chunk from the snapshot first (copy-on-write).
 */
export class LazyDisk {
  readonly capacity: number;
  readonly chunkSize: number;
  readonly chunks: number;
  private readonly leaves = new Map<number, Promise<Buffer>>();
  /** End offsets of recent reads and the read-ahead each stream has earned. */
  private readonly streams: { end: number; ahead: number }[] = [];
  private readonly locks = new Map<number, Promise<void>>();
  private readonly maxReadAhead: number;

  constructor(
    readonly image: SnapshotImage,
    private readonly fetcher: ChunkFetcher,
    private readonly options: LazyDiskOptions = {},
  ) {
    this.capacity = image.capacity;
    this.chunkSize = image.chunkSize;
    this.chunks = image.chunkTotal;
    this.maxReadAhead = options.maxReadAhead ?? 128;
  }

  get writable(): boolean {
    return this.options.overlay !== undefined;
  }

  private label(offset: number): string {
    return `snapshot ${this.image.record.id} disk ${this.image.disk.name} offset ${offset}`;
  }

  private chunkLength(i: number): number {
    return Math.min(this.chunkSize, this.capacity - i * this.chunkSize);
  }

  private leaf(p: number): Promise<Buffer> {
    let page = this.leaves.get(p);
    if (page) {
      this.leaves.delete(p);
      this.leaves.set(p, page);
      return page;
    }
    page = this.image.leaf(p);
    page.catch(() => this.leaves.delete(p));
    this.leaves.set(p, page);
    if (this.leaves.size > LEAF_PAGES) this.leaves.delete(this.leaves.keys().next().value!);
    return page;
  }

  /** Ids of chunks first..last (inclusive), zero ids for all-zero chunks. */
  async ids(first: number, last: number): Promise<Buffer[]> {
    const out: Buffer[] = [];
    for (let p = Math.floor(first / PAGE_SLOTS); p * PAGE_SLOTS <= last; p++) {
      let page: Buffer;
      try {
        page = await this.leaf(p);
      } catch (err) {
        throw new ChunkReadError(`${this.label(p * PAGE_SLOTS * this.chunkSize)}: manifest page: ${(err as Error).message}`, p * PAGE_SLOTS * this.chunkSize);
      }
      const lo = Math.max(first, p * PAGE_SLOTS);
      const hi = Math.min(last, p * PAGE_SLOTS + PAGE_SLOTS - 1);
      for (let i = lo; i <= hi; i++) {
        const s = (i - p * PAGE_SLOTS) * ID_BYTES;
        out.push(page.subarray(s, s + ID_BYTES));
      }
    }
    return out;
  }

  private check(offset: number, length: number): void {
    if (offset < 0 || length < 0 || offset + length > this.capacity) {
      throw new RangeError(`range ${offset}+${length} is outside the disk (${this.capacity} bytes)`);
    }
  }

  /** The bytes of [offset, offset+length), as pieces in order; holes as null data. */
  async read(offset: number, length: number): Promise<Piece[]> {
    this.check(offset, length);
    if (length === 0) return [];
    const cs = this.chunkSize;
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + length - 1) / cs);
    const ids = await this.ids(first, last);
    this.readAhead(offset, length, last);
    const parts = ids.map(async (id, k): Promise<Piece> => {
      const i = first + k;
      const start = Math.max(offset, i * cs);
      const end = Math.min(offset + length, (i + 1) * cs);
      const piece = { offset: start, length: end - start };
      const overlay = this.options.overlay;
      if (overlay) {
        await this.locks.get(i);
        if (overlay.has(i)) return { ...piece, data: await overlay.read(start, end - start) };
      }
      if (isZeroId(id)) return { ...piece, data: null };
      const data = await this.chunk(i, id);
      return { ...piece, data: data.subarray(start - i * cs, end - i * cs) };
    });
    const settled = await Promise.allSettled(parts);
    const bad = settled.find((s) => s.status === 'rejected') as PromiseRejectedResult | undefined;
    if (bad) throw bad.reason;
    const pieces: Piece[] = [];
    for (const s of settled as PromiseFulfilledResult<Piece>[]) {
      const prev = pieces[pieces.length - 1];
      if (prev && prev.data === null && s.value.data === null) prev.length += s.value.length;
      else pieces.push(s.value);
    }
    return pieces;
  }

  /** The verified bytes of chunk i (id not zero); ChunkReadError, logged, when it cannot be served. */
  private async chunk(i: number, id: Buffer): Promise<Buffer> {
    try {
      return await this.fetcher.get(id, this.chunkLength(i));
    } catch (err) {
      const e = new ChunkReadError(`${this.label(i * this.chunkSize)}: ${(err as Error).message}`, i * this.chunkSize);
      this.options.log?.(e.message);
      throw e;
    }
  }

  private readAhead(offset: number, length: number, last: number): void {
    if (this.maxReadAhead <= 0) return;
    const end = offset + length;
    let s = this.streams.find((x) => x.end === offset);
    if (!s) {
      this.streams.push({ end, ahead: 0 });
      if (this.streams.length > STREAMS) this.streams.shift();
      return;
    }
    s.end = end;
    s.ahead = Math.min(this.maxReadAhead, s.ahead ? s.ahead * 2 : FIRST_READ_AHEAD);
    const from = last + 1;
    const to = Math.min(this.chunks - 1, last + s.ahead);
    if (from > to) return;
    this.ids(from, to).then(
      (ids) =>
        ids.forEach((id, k) => {
          const i = from + k;
          if (!isZeroId(id) && !this.options.overlay?.has(i)) this.fetcher.prefetch(id, this.chunkLength(i));
        }),
      () => {},
    );
  }

  /** Runs of zero and data chunks covering [offset, offset+length), from the manifest alone. */
  async extents(offset: number, length: number): Promise<AllocationExtent[]> {
    this.check(offset, length);
    if (length === 0) return [];
    const cs = this.chunkSize;
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + length - 1) / cs);
    const ids = await this.ids(first, last);
    const out: AllocationExtent[] = [];
    ids.forEach((id, k) => {
      const i = first + k;
      const start = Math.max(offset, i * cs);
      const end = Math.min(offset + length, (i + 1) * cs);
      const zero = isZeroId(id) && !this.options.overlay?.has(i);
      const prev = out[out.length - 1];
      if (prev && prev.zero === zero) prev.length += end - start;
      else out.push({ length: end - start, zero });
    });
    return out;
  }

  /** Runs fn with chunk i locked against other writes and reads of the overlay. */
  private async locked<T>(i: number, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(i) ?? Promise.resolve();
    const run = prev.then(fn);
    const tail = run.then(
      () => {},
      () => {},
    );
    this.locks.set(i, tail);
    tail.then(() => {
      if (this.locks.get(i) === tail) this.locks.delete(i);
    });
    return run;
  }

  /** Writes to the overlay (copy-on-write); `data` null writes zeros. */
  async write(offset: number, length: number, data: Buffer | null, fua = false): Promise<void> {
    const overlay = this.options.overlay;
    if (!overlay) throw new Error('the disk is read-only (no overlay)');
    this.check(offset, length);
    if (length === 0) return;
    const cs = this.chunkSize;
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + length - 1) / cs);
    const ids = await this.ids(first, last);
    await Promise.all(
      ids.map((id, k) =>
        this.locked(first + k, async () => {
          const i = first + k;
          const start = Math.max(offset, i * cs);
          const end = Math.min(offset + length, (i + 1) * cs);
          const part = data ? data.subarray(start - offset, end - offset) : Buffer.alloc(end - start);
          if (overlay.has(i)) return overlay.write(start, part);
          const len = this.chunkLength(i);
          let whole: Buffer;
          if (end - start === len) whole = part;
          else {
            whole = Buffer.alloc(len);
            if (!isZeroId(id)) (await this.chunk(i, id)).copy(whole);
            part.copy(whole, start - i * cs);
          }
          await overlay.writeChunk(i, whole);
        }),
      ),
    );
    if (fua) await overlay.flush();
  }

  async flush(): Promise<void> {
    await this.options.overlay?.flush();
  }
}
