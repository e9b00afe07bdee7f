/**
 * A bounded cache of verified, decompressed chunks, keyed by chunk id (so a chunk
 * shared by two disks or two snapshots is held once). Least recently used entries
 * go first when the byte budget is exceeded. Only bytes that were verified against
 * their id are ever put here.
 */
export class ChunkCache {
  private readonly map = new Map<string, Buffer>();
  private bytes_ = 0;
  hits = 0;
  misses = 0;

  constructor(readonly budget: number) {
    if (!(budget >= 0)) throw new Error(`chunk cache budget ${budget}`);
  }

  get bytes(): number {
    return this.bytes_;
  }

  get size(): number {
    return this.map.size;
  }

  /** The chunk, or undefined; counts a hit or a miss. */
  get(key: string): Buffer | undefined {
    const v = this.map.get(key);
    if (v === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.map.delete(key);
    this.map.set(key, v);
    return v;
  }

  /** Without touching recency or the counters. */
  has(key: string): boolean {
    return this.map.has(key);
  }

  set(key: string, value: Buffer): void {
    if (value.length > this.budget) return;
    const old = this.map.get(key);
    if (old) {
      this.bytes_ -= old.length;
      this.map.delete(key);
    }
    // a view into a larger decode buffer would keep all of it alive: hold a copy
    const own = value.byteOffset === 0 && value.byteLength === value.buffer.byteLength ? value : Buffer.from(value);
    this.map.set(key, own);
    this.bytes_ += own.length;
    for (const [k, v] of this.map) {
      if (this.bytes_ <= this.budget) break;
      this.map.delete(k);
      this.bytes_ -= v.length;
    }
  }

  clear(): void {
    this.map.clear();
    this.bytes_ = 0;
  }
}
