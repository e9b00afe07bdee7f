import { packObjectName } from '../repo/format.js';
import { IndexEntry } from '../repo/index-file.js';
import { Repository } from '../repo/repository.js';
import { isNotFound } from '../store/blob-store.js';
import { WorkerPool } from './worker-pool.js';

/** Blobs of one pack closer than this are fetched in one ranged GET. */
export const COALESCE_GAP = 256 * 1024;
/** Ranged GETs in flight per call. */
export const FETCHES = 4;

/**
 * Shared read buffers of `size` bytes, handed out in request order and reused: a
 * restore reads its pack ranges into them (the local store reads in place) and the
 * workers decode from them where they are, so no buffer is made, faulted in,
 * moved or collected per read. At most `count` x `size` bytes of packed data are
 * held, whatever the number of windows in flight.
 */
export class ReadBuffers {
  private readonly free: Uint8Array[] = [];
  private readonly waiters: ((b: Uint8Array) => void)[] = [];
  private made = 0;

  constructor(
    readonly count: number,
    readonly size: number,
  ) {}

  acquire(): Promise<Uint8Array> {
    const b = this.free.pop() ?? (this.made < this.count ? (this.made++, new Uint8Array(new SharedArrayBuffer(this.size))) : undefined);
    return b ? Promise.resolve(b) : new Promise((resolve) => this.waiters.push(resolve));
  }

  release(b: Uint8Array): void {
    const w = this.waiters.shift();
    if (w) w(b);
    else this.free.push(b);
  }
}

export class DataIntegrityError extends Error {
  constructor(message: string, readonly chunkIds: string[]) {
    super(message);
    this.name = 'DataIntegrityError';
  }
}

export interface BlobWanted {
  id: Buffer;
  /** Plaintext length the blob must have. */
  length: number;
}

export interface FetchOptions {
  /** Prefix of error messages ("snapshot X disk Y"). */
  label: string;
  /** Ranged GETs in flight (default FETCHES). */
  fetches?: number;
  /** Called with the seconds each ranged GET + decode took (metrics). */
  onGroup?: (seconds: number, blobs: number) => void;
  /** Blob k's plaintext is written at `offsets[k]` of this shared buffer (and returned as a view of it). */
  into?: { buf: SharedArrayBuffer; offsets: number[] };
  /** When given, runs[k] is set to blob k's non-zero 4 KiB runs ([start, length, ...], zero-runs.ts), found in the worker. */
  runs?: number[][];
  /** Read pack ranges into these buffers (ranged GETs are then at most their size). */
  reads?: ReadBuffers;
}

/**
 * Reads blobs by id: looks them up in the local index, groups them by pack,
 * coalesces neighbours into ranged GETs (several in flight), and decrypts,
 * decompresses and verifies each against its id in the worker pool. The result is
 * per blob, in the order asked: its bytes, or the DataIntegrityError that says why
 * it cannot be served (not in the index, pack unreadable, does not verify, wrong
 * length). One damaged blob never poisons the others of its GET. A pack that is
 * not found is looked up again after catching up with the GC epochs (a prune
 * may have repacked its blobs), and blobs that moved are read from their new pack.
 */
export async function fetchBlobs(
  repo: Repository,
  pool: WorkerPool,
  wanted: BlobWanted[],
  options: FetchOptions,
): Promise<(Buffer | DataIntegrityError)[]> {
  const out: (Buffer | DataIntegrityError)[] = new Array(wanted.length);
  if (wanted.length === 0) return out;
  const { gone, unindexed } = await fetchSome(repo, pool, wanted, [...wanted.keys()], out, options);
  if (gone.length === 0 && unindexed.length === 0) return out;
  // A pack that is gone: a prune may have repacked its live blobs since this host's cache
  // was read. Catch up with the GC epochs and fetch the blobs that moved from where they are now.
  await repo.refreshIndex();
  const now = await (await repo.cache()).getMany(gone.map((g) => wanted[g.k]!.id));
  const moved: number[] = [];
  const stuck: number[] = [];
  gone.forEach((g, i) => (now[i] && !now[i]!.packId.equals(g.packId) ? moved : stuck).push(g.k));
  if (moved.length) await fetchSome(repo, pool, wanted, moved, out, options);
  // still where the pack is gone: the cache may have kept a location the prune deleted while
  // another survives in an index file it loaded before (LocalCache.rebuild): reload once
  const again = [...stuck, ...unindexed];
  if (again.length && (await repo.rebuildIndexOnce())) await fetchSome(repo, pool, wanted, again, out, options);
  return out;
}

/** Fetches blobs `ks` of `wanted` into `out`; returns those whose pack was not found, with that pack. */
async function fetchSome(
  repo: Repository,
  pool: WorkerPool,
  wanted: BlobWanted[],
  ks: number[],
  out: (Buffer | DataIntegrityError)[],
  options: FetchOptions,
): Promise<{ gone: { k: number; packId: Buffer }[]; unindexed: number[] }> {
  const entries = await (await repo.cache()).getMany(ks.map((k) => wanted[k]!.id));
  const located: { k: number; e: IndexEntry }[] = [];
  const unindexed: number[] = [];
  entries.forEach((e, i) => {
    const k = ks[i]!;
    if (e) located.push({ k, e });
    else {
      unindexed.push(k);
      const hex = wanted[k]!.id.toString('hex');
      out[k] = new DataIntegrityError(`${options.label}: chunk ${hex} is not in the index; run 'pilotlight verify'`, [hex]);
    }
  });
  located.sort((a, b) => a.e.packId.compare(b.e.packId) || a.e.offset - b.e.offset);
  const groups: { k: number; e: IndexEntry }[][] = [];
  for (const l of located) {
    const g = groups[groups.length - 1];
    const prev = g?.[g.length - 1]?.e;
    const fits = !options.reads || (g !== undefined && l.e.offset + l.e.length - g[0]!.e.offset <= options.reads.size);
    if (g && prev && fits && prev.packId.equals(l.e.packId) && l.e.offset - (prev.offset + prev.length) <= COALESCE_GAP && l.e.offset >= prev.offset) {
      g.push(l);
    } else groups.push([l]);
  }
  const gone: { k: number; packId: Buffer }[] = [];
  const queue = groups.slice();
  const work = async () => {
    for (let g = queue.shift(); g; g = queue.shift()) await fetchGroup(repo, pool, g, wanted, out, options, gone);
  };
  await Promise.all(Array.from({ length: Math.min(options.fetches ?? FETCHES, queue.length) }, work));
  return { gone, unindexed };
}

async function fetchGroup(
  repo: Repository,
  pool: WorkerPool,
  group: { k: number; e: IndexEntry }[],
  wanted: BlobWanted[],
  out: (Buffer | DataIntegrityError)[],
  options: FetchOptions,
  gone: { k: number; packId: Buffer }[],
): Promise<void> {
  const started = process.hrtime.bigint();
  const first = group[0]!.e;
  const end = group.reduce((m, g) => Math.max(m, g.e.offset + g.e.length), 0);
  const name = packObjectName(first.type, first.packId.toString('hex'));
  const length = end - first.offset;
  // a blob longer than a read buffer (none are: blobs are at most a chunk and its seal) is read on its own
  const readBuf = options.reads && length <= options.reads.size ? await options.reads.acquire() : undefined;
  try {
    let bytes: Buffer | undefined;
    try {
      bytes = await repo.store.get(name, { offset: first.offset, length, ...(readBuf ? { into: readBuf } : {}) });
    } catch (err) {
      for (const g of group) {
        if (isNotFound(err)) gone.push({ k: g.k, packId: g.e.packId });
        const hex = g.e.id.toString('hex');
        out[g.k] = new DataIntegrityError(`${options.label}: cannot read pack ${name}: ${(err as Error).message}`, [hex]);
      }
    }
    if (bytes) {
      const items = group.map((g) => ({
        offset: g.e.offset - first.offset,
        length: g.e.length,
        id: g.e.id,
        plainLength: wanted[g.k]!.length, // decompressed in place; another length fails the decode
        type: g.e.type,
        seal: g.e.seal,
        what: `chunk ${g.e.id.toString('hex')} in ${name}`,
      }));
      const into = options.into ? { buf: options.into.buf, offsets: group.map((g) => options.into!.offsets[g.k]!) } : undefined;
      const plains = await pool.decodeBlobs(bytes, items, { runs: options.runs !== undefined, into });
      plains.forEach((p, j) => {
        const g = group[j]!;
        const hex = g.e.id.toString('hex');
        const expected = wanted[g.k]!.length;
        if ('error' in p) out[g.k] = new DataIntegrityError(`${options.label}: ${p.error}`, [hex]);
        else if (p.data.length !== expected) out[g.k] = new DataIntegrityError(`${options.label}: chunk ${hex} has ${p.data.length} bytes, expected ${expected}`, [hex]);
        else {
          out[g.k] = p.data;
          if (options.runs) options.runs[g.k] = p.runs;
        }
      });
    }
  } finally {
    if (readBuf) options.reads!.release(readBuf);
  }
  options.onGroup?.(Number(process.hrtime.bigint() - started) / 1e9, group.length);
}
