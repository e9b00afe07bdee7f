/**
 * DiskImage: read access to one disk of one committed snapshot, as the restorer and
 * the cloud recovery paths need it. Every chunk returned was verified against its id.
 */
export interface DiskImage {
  /** Disk size in bytes. */
  readonly capacity: number;
  /** The manifest's chunk size (65536). */
  readonly chunkSize: number;

  /**
   * Chunks in disk order, each exactly chunkSize long except possibly the last.
   * `data` is null for an all-zero chunk (a hole). With `only`, yields just the chunk
   * indexes that iterable gives (ascending).
   */
  chunks(options?: { only?: AsyncIterable<number> | Iterable<number> }): AsyncIterable<DiskChunk>;

  /**
   * Indexes (ascending) of the chunks whose content differs from `base` (another
   * snapshot's image of a disk with the same capacity), found from the manifests
   * alone, without reading data: unchanged manifest pages are skipped whole.
   * With base undefined: every chunk that is not all zeros.
   */
  changedChunks(base?: DiskImage): AsyncIterable<number>;
}

export interface DiskChunk {
  index: number;
  offset: number;
  length: number;
  /** Plaintext bytes, or null when the chunk is all zeros. */
  data: Buffer | null;
  /**
   * Where `data` is not zero, as [start, length, ...] relative to the chunk in 4 KiB
   * granules (zero-runs.ts), when the image found it cheaply; absent means unknown.
   */
  runs?: number[];
  /** Set on chunks with data when they were asked for with `lease`: call once `data` is no longer needed. */
  release?: () => void;
}
