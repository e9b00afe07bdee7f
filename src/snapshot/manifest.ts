import { BlobType, ID_BYTES, PAGE_SLOTS, isZeroId, zeroId } from '../repo/format.js';
import { RepoWriter } from '../repo/repo-writer.js';
import { Repository } from '../repo/repository.js';

/**
 * Manifests: for each disk, a tree of pages of chunk ids.
 *
 * A disk of N chunks has ceil(N / 1024) leaf pages; leaf page p holds the ids of
 * chunks [p*1024, min((p+1)*1024, N)), 32 bytes each. Level k+1 holds the ids of
 * level-k pages, 1024 per page, until one page remains: its id is the root. The
 * id of an all-zero chunk, and of a page whose ids are all zero, is 32 zero bytes;
 * such pages are never stored. Pages are blobs (type Page) in metadata packs,
 * named by the keyed BLAKE3 of their bytes, so an incremental snapshot stores
 * only the pages on the path from a changed chunk to the root.
 */

export function chunkCount(capacity: number, chunkSize: number): number {
  return Math.ceil(capacity / chunkSize);
}

/** Page counts per level, leaves first; the last is always 1 (for N > 0). */
export function levelSizes(chunks: number): number[] {
  const sizes: number[] = [];
  let n = chunks;
  do {
    n = Math.max(1, Math.ceil(n / PAGE_SLOTS));
    sizes.push(n);
  } while (n > 1);
  return sizes;
}

/** Slots held by page `p` of a level of `total` entries. */
function slotsIn(p: number, total: number): number {
  return Math.min(PAGE_SLOTS, total - p * PAGE_SLOTS);
}

export class ManifestReader {
  constructor(private readonly repo: Repository) {}

  /** Bytes of a page of `slots` ids; a zero id reads as all zeros. Verified against its id. */
  async page(id: Buffer, slots: number): Promise<Buffer> {
    if (isZeroId(id)) return Buffer.alloc(slots * ID_BYTES);
    const bytes = await this.repo.readBlob(id, 'manifest page');
    if (bytes.length !== slots * ID_BYTES) {
      throw new Error(`manifest page ${id.toString('hex')} holds ${bytes.length / ID_BYTES} ids, expected ${slots}`);
    }
    return bytes;
  }

  /** Ids of the leaf pages of a manifest, reading interior pages only. */
  async leafIds(root: Buffer, chunks: number): Promise<Buffer[]> {
    const sizes = levelSizes(chunks);
    let ids = [root];
    for (let level = sizes.length - 1; level >= 1; level--) {
      const childTotal = sizes[level - 1]!;
      const next: Buffer[] = [];
      for (let p = 0; p < ids.length; p++) {
        const page = await this.page(ids[p]!, slotsIn(p, childTotal));
        for (let o = 0; o < page.length; o += ID_BYTES) next.push(page.subarray(o, o + ID_BYTES));
      }
      ids = next;
    }
    return ids;
  }

  /** The chunk ids of leaf page `p` (an array of 32-byte views). */
  async leaf(id: Buffer, p: number, chunks: number): Promise<Buffer> {
    return this.page(id, slotsIn(p, chunks));
  }
}

export interface ManifestResult {
  root: Buffer;
  depth: number;
  /** Bytes of the disk in chunks that are not all zeros. */
  nonZeroBytes: number;
  pagesWritten: number;
}

/**
 * Builds a new manifest from a base (the parent's, for a change list; none, meaning
 * all zeros, otherwise) and the ids of the chunks that were read, given in
 * ascending chunk order. Leaf pages without a change are taken from the base
 * unread.
 */
export class ManifestBuilder {
  private readonly leaves: Buffer[];
  private current = -1;
  private page: Buffer | null = null;
  private before = 0;
  private nonZero: number;
  private pagesWritten = 0;
  private readonly reader: ManifestReader;

  private constructor(
    private readonly repo: Repository,
    private readonly writer: RepoWriter,
    private readonly chunks: number,
    private readonly capacity: number,
    baseLeaves: Buffer[] | null,
    baseNonZero: number,
  ) {
    this.reader = new ManifestReader(repo);
    const leafCount = levelSizes(chunks)[0]!;
    this.leaves = baseLeaves ? baseLeaves.slice() : Array.from({ length: leafCount }, () => zeroId());
    this.nonZero = baseLeaves ? baseNonZero : 0;
  }

  static async create(
    repo: Repository,
    writer: RepoWriter,
    capacity: number,
    base: { root: Buffer; nonZeroBytes: number } | null,
  ): Promise<ManifestBuilder> {
    const chunks = chunkCount(capacity, repo.config.chunkSize);
    const baseLeaves = base ? await new ManifestReader(repo).leafIds(base.root, chunks) : null;
    return new ManifestBuilder(repo, writer, chunks, capacity, baseLeaves, base?.nonZeroBytes ?? 0);
  }

  private chunkLen(i: number): number {
    const cs = this.repo.config.chunkSize;
    return Math.min(cs, this.capacity - i * cs);
  }

  private pageBytes(p: number, page: Buffer): number {
    let total = 0;
    for (let s = 0, o = 0; o < page.length; s++, o += ID_BYTES) {
      if (!isZeroId(page.subarray(o, o + ID_BYTES))) total += this.chunkLen(p * PAGE_SLOTS + s);
    }
    return total;
  }

  /** Sets chunk `index` to `id` (zero id for an all-zero chunk). Indexes must ascend. */
  async set(index: number, id: Buffer): Promise<void> {
    const p = Math.floor(index / PAGE_SLOTS);
    if (p !== this.current) {
      await this.closePage();
      this.current = p;
      this.page = Buffer.from(await this.reader.leaf(this.leaves[p]!, p, this.chunks));
      this.before = this.pageBytes(p, this.page);
    }
    id.copy(this.page!, (index - p * PAGE_SLOTS) * ID_BYTES);
  }

  private async closePage(): Promise<void> {
    if (!this.page) return;
    this.nonZero += this.pageBytes(this.current, this.page) - this.before;
    this.leaves[this.current] = await this.storePage(this.page);
    this.page = null;
  }

  private async storePage(page: Buffer): Promise<Buffer> {
    let zero = true;
    for (let o = 0; o < page.length && zero; o += ID_BYTES) zero = isZeroId(page.subarray(o, o + ID_BYTES));
    if (zero) return zeroId();
    const id = this.repo.hasher.hash(page);
    if (!(await this.writer.known(id)) && this.writer.claim(id)) {
      await this.writer.add(BlobType.Page, id, this.repo.codec.encode(this.repo.defaultCodec, page, BlobType.Page, id), page.length);
      this.pagesWritten++;
    }
    return id;
  }

  async finish(): Promise<ManifestResult> {
    await this.closePage();
    let ids = this.leaves;
    let depth = 1;
    while (ids.length > 1) {
      const next: Buffer[] = [];
      for (let o = 0; o < ids.length; o += PAGE_SLOTS) next.push(await this.storePage(Buffer.concat(ids.slice(o, o + PAGE_SLOTS))));
      ids = next;
      depth++;
    }
    return { root: ids[0]!, depth, nonZeroBytes: this.nonZero, pagesWritten: this.pagesWritten };
  }
}
