import { UserError } from '../repo/errors.js';
import { ID_BYTES, PAGE_SLOTS, isZeroId } from '../repo/format.js';
import { Repository } from '../repo/repository.js';
import { ManifestReader, chunkCount } from '../snapshot/manifest.js';
import { DiskRecord, SnapshotRecord } from '../snapshot/snapshot-record.js';
import { DiskChunk, DiskImage } from './disk-image.js';
import { DataIntegrityError, ReadBuffers, fetchBlobs } from './pack-fetch.js';
import { WorkerPool } from './worker-pool.js';

export { DataIntegrityError };

/** Chunks fetched together: 32 x 64 KiB = 2 MiB of disk. */
const WINDOW = 32;
/** Windows in flight ahead of the consumer (their packed bytes are in READS, their plaintexts in slabs). */
const WINDOWS_AHEAD = 4;
/**
 * Shared buffers of one window each for leased chunks: the windows in flight, and
 * five for the consumer (the window it reads, and up to four whose writes are
 * still queued or finishing: restore.ts keeps 8 writes of up to 1 MiB in flight;
 * a consumer that holds more windows than that stalls the fetches until it
 * releases some). 9 x 2 MiB.
 */
const SLABS = WINDOWS_AHEAD + 5;
/** Shared buffers that pack ranges are read into (ranged GETs of at most READ_SIZE), for all windows in flight. */
const READS = 8;
const READ_SIZE = 1 << 20;

/**
 * A DiskImage over one disk of a committed snapshot. Reads are grouped by pack
 * and coalesced into ranged GETs, several in flight, and every chunk is
 * decrypted, decompressed and verified against its id in worker threads.
 */
export class SnapshotImage implements DiskImage {
  readonly capacity: number;
  readonly chunkSize: number;
  private readonly chunks_: number;
  private readonly reader: ManifestReader;
  private leavesP: Promise<Buffer[]> | null = null;

  constructor(
    private readonly repo: Repository,
    private readonly pool: WorkerPool,
    readonly record: SnapshotRecord,
    readonly disk: DiskRecord,
  ) {
    this.capacity = disk.capacity;
    this.chunkSize = disk.chunkSize;
    this.chunks_ = chunkCount(disk.capacity, disk.chunkSize);
    this.reader = new ManifestReader(repo);
  }

  get chunkTotal(): number {
    return this.chunks_;
  }

  leafIds(): Promise<Buffer[]> {
    this.leavesP ??= this.reader.leafIds(Buffer.from(this.disk.root, 'hex'), this.chunks_);
    return this.leavesP;
  }

  /** The chunk ids (32 bytes each) of leaf page `p`: chunks [p*1024, p*1024+1024). */
  async leaf(p: number): Promise<Buffer> {
    return this.reader.leaf((await this.leafIds())[p]!, p, this.chunks_);
  }

  private length(i: number): number {
    return Math.min(this.chunkSize, this.capacity - i * this.chunkSize);
  }

  /** Chunk ids for the given ascending indexes (zero id for holes). */
  async *ids(only?: AsyncIterable<number> | Iterable<number>): AsyncIterable<{ index: number; id: Buffer }> {
    let leafNo = -1;
    let leaf: Buffer | null = null;
    const all = async function* (n: number) {
      for (let i = 0; i < n; i++) yield i;
    };
    for await (const index of only ?? all(this.chunks_)) {
      if (index < 0 || index >= this.chunks_) throw new Error(`chunk index ${index} out of range`);
      const p = Math.floor(index / PAGE_SLOTS);
      if (p !== leafNo) {
        leaf = await this.leaf(p);
        leafNo = p;
      }
      const s = (index - p * PAGE_SLOTS) * ID_BYTES;
      yield { index, id: leaf!.subarray(s, s + ID_BYTES) };
    }
  }

  /**
   * With `lease`, chunk data lives in a few reused shared buffers (SLABS windows:
   * memory stays fixed, nothing for the garbage collector) and every chunk with
   * data must be given back with `release()` once its bytes are no longer needed.
   */
  async *chunks(options: { only?: AsyncIterable<number> | Iterable<number>; lease?: boolean } = {}): AsyncIterable<DiskChunk> {
    // Windows are fetched ahead of the consumer, WINDOWS_AHEAD at a time, in order.
    const ahead: Promise<DiskChunk[]>[] = [];
    const slabs = options.lease ? new SlabPool(SLABS, WINDOW * this.chunkSize) : undefined;
    // a store that cannot read into a buffer returns each body as its own: ranges there stay as long as coalescing makes them (fewer GETs)
    const reads = this.repo.store.capabilities.readsInto ? new ReadBuffers(READS, READ_SIZE) : undefined;
    const start = (slots: { index: number; id: Buffer }[]) => {
      const p = this.fetchWindow(slots, reads, slabs);
      p.catch(() => {}); // observed when it reaches the head
      ahead.push(p);
    };
    let window: { index: number; id: Buffer }[] = [];
    for await (const slot of this.ids(options.only)) {
      window.push(slot);
      if (window.length >= WINDOW) {
        start(window);
        window = [];
        if (ahead.length >= WINDOWS_AHEAD) yield* await ahead.shift()!;
      }
    }
    if (window.length) start(window);
    while (ahead.length) yield* await ahead.shift()!;
  }

  private async fetchWindow(slots: { index: number; id: Buffer }[], reads: ReadBuffers | undefined, slabs?: SlabPool): Promise<DiskChunk[]> {
    const out: DiskChunk[] = slots.map((s) => ({
      index: s.index,
      offset: s.index * this.chunkSize,
      length: this.length(s.index),
      data: null,
    }));
    const wanted = out.map((c, k) => ({ c, k, id: slots[k]!.id })).filter((w) => !isZeroId(w.id));
    if (wanted.length === 0) return out;
    // Leased chunks are decoded into a window buffer at their place in the window.
    const slab = slabs ? await slabs.acquire() : undefined;
    const runs: number[][] = [];
    let got: Awaited<ReturnType<typeof fetchBlobs>>;
    try {
      got = await fetchBlobs(this.repo, this.pool, wanted.map((w) => ({ id: w.id, length: w.c.length })), {
        label: `snapshot ${this.record.id} disk ${this.disk.name}`,
        runs,
        ...(reads ? { reads } : {}),
        ...(slab ? { into: { buf: slab, offsets: wanted.map((w) => w.k * this.chunkSize) } } : {}),
      });
      got.forEach((g) => {
        if (g instanceof DataIntegrityError) throw g;
      });
    } catch (err) {
      if (slab) slabs!.release(slab);
      throw err;
    }
    let holders = wanted.length;
    got.forEach((g, j) => {
      const c = wanted[j]!.c;
      c.data = g as Buffer;
      c.runs = runs[j];
      if (!slab) return;
      let done = false;
      c.release = () => {
        if (done) return;
        done = true;
        if (--holders === 0) slabs!.release(slab);
      };
    });
    return out;
  }

  async *changedChunks(base?: DiskImage): AsyncIterable<number> {
    const leaves = await this.leafIds();
    if (base !== undefined && !(base instanceof SnapshotImage)) throw new Error('changedChunks: base must be a snapshot image');
    if (base && base.capacity !== this.capacity) throw new UserError('the two snapshots\' disks differ in size');
    const baseLeaves = base ? await base.leafIds() : null;
    for (let p = 0; p < leaves.length; p++) {
      if (baseLeaves && leaves[p]!.equals(baseLeaves[p]!)) continue;
      if (!baseLeaves && isZeroId(leaves[p]!)) continue;
      const mine = await this.reader.leaf(leaves[p]!, p, this.chunks_);
      const theirs = baseLeaves ? await this.reader.leaf(baseLeaves[p]!, p, this.chunks_) : null;
      for (let o = 0; o < mine.length; o += ID_BYTES) {
        const a = mine.subarray(o, o + ID_BYTES);
        const changed = theirs ? !a.equals(theirs.subarray(o, o + ID_BYTES)) : !isZeroId(a);
        if (changed) yield p * PAGE_SLOTS + o / ID_BYTES;
      }
    }
  }
}

/** Window-sized shared buffers, handed out in request order and reused. */
class SlabPool {
  private readonly free: SharedArrayBuffer[] = [];
  private readonly waiters: ((s: SharedArrayBuffer) => void)[] = [];
  private made = 0;

  constructor(
    private readonly count: number,
    private readonly size: number,
  ) {}

  acquire(): Promise<SharedArrayBuffer> {
    const s = this.free.pop() ?? (this.made < this.count ? (this.made++, new SharedArrayBuffer(this.size)) : undefined);
    return s ? Promise.resolve(s) : new Promise((resolve) => this.waiters.push(resolve));
  }

  release(s: SharedArrayBuffer): void {
    const w = this.waiters.shift();
    if (w) w(s);
    else this.free.push(s);
  }
}

/** Opens disk `diskIndex` of a snapshot for reading. Close the pool when done. */
export function openDiskImage(repo: Repository, pool: WorkerPool, record: SnapshotRecord, diskIndex: number): SnapshotImage {
  const disk = record.disks[diskIndex];
  if (!disk) {
    throw new UserError(`snapshot ${record.id} has ${record.disks.length} disk(s); there is no disk ${diskIndex}`);
  }
  return new SnapshotImage(repo, pool, record, disk);
}
