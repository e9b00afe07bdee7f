import { UserError } from '../repo/errors.js';
import { Repository } from '../repo/repository.js';
import { SnapshotRecord } from '../snapshot/snapshot-record.js';
import { ChunkCache } from '../engine/chunk-cache.js';
import { ChunkFetcher } from '../engine/chunk-fetcher.js';
import { ChunkReadError, LazyDisk } from '../engine/lazy-disk.js';
import { Overlay } from '../engine/overlay.js';
import { openDiskImage } from '../engine/snapshot-image.js';
import { WorkerPool } from '../engine/worker-pool.js';
import { nbdMetrics } from './metrics.js';
import { NBD_EIO } from './protocol.js';
import { ListenSpec, NbdError, NbdExport, NbdServer } from './server.js';

export const DEFAULT_CACHE_BYTES = 256 * 1024 * 1024;

export interface ServeOptions {
  /** Serve only this disk (default: every disk of the snapshot). */
  disk?: number;
  /** Copy-on-write overlay file for the served disk (`disk`, default 0); without it exports are read-only. */
  overlay?: string;
  /** Budget of the verified-chunk cache shared by all exports (default 256 MiB). */
  cacheBytes?: number;
  /** Largest read-ahead in chunks (default 128 = 8 MiB; 0 turns it off). */
  maxReadAhead?: number;
  workers?: number;
  log?: (line: string) => void;
}

export interface ServedExport {
  disk: number;
  names: string[];
  size: number;
  writable: boolean;
}

export interface ServingSnapshot {
  address: string;
  snapshot: string;
  vm: string;
  exports: ServedExport[];
  server: NbdServer;
  cache: ChunkCache;
  /** Stops the server (in-flight requests finish), syncs overlays, stops the workers. */
  close(): Promise<void>;
}

/** The NBD view of a lazily fetched disk: a damaged chunk is EIO on the reads that touch it. */
function diskExport(disk: LazyDisk, names: string[], description: string): NbdExport {
  const io = <T>(p: Promise<T>): Promise<T> =>
    p.catch((err: Error) => {
      throw err instanceof ChunkReadError ? new NbdError(NBD_EIO, err.message) : err;
    });
  return {
    names,
    description,
    size: disk.capacity,
    writable: disk.writable,
    preferredBlockSize: disk.chunkSize,
    read: (offset, length) => io(disk.read(offset, length)),
    extents: (offset, length) => io(disk.extents(offset, length)),
    write: disk.writable ? (offset, length, data, fua) => io(disk.write(offset, length, data, fua)) : undefined,
    flush: () => disk.flush(),
  };
}

/**
 * Serves the disks of a snapshot over NBD (instant access): each disk is an export
 * named by its index and by its name ("" selects the first). Chunks are fetched
 * when read, verified, and kept in one cache for every export and connection.
 *
 * Memory bound: cacheBytes (256 MiB default) + chunks being fetched (16 MiB of
 * plaintext and their packed bytes) + per connection 64 MiB of read replies in
 * flight + 2 MiB of manifest leaf pages per disk + the overlay bitmap (2 MiB per TiB).
 */
export async function serveSnapshot(
  repo: Repository,
  record: SnapshotRecord,
  listen: ListenSpec,
  options: ServeOptions = {},
): Promise<ServingSnapshot> {
  if (options.disk !== undefined && !record.disks[options.disk]) {
    throw new UserError(`snapshot ${record.id} has ${record.disks.length} disk(s); there is no disk ${options.disk}`);
  }
  const indexes = options.disk !== undefined ? [options.disk] : record.disks.map((_, i) => i);
  const overlayDisk = options.disk ?? 0;
  const pool = new WorkerPool(repo, options.workers);
  const cache = new ChunkCache(options.cacheBytes ?? DEFAULT_CACHE_BYTES);
  const fetcher = new ChunkFetcher(repo, pool, cache, {
    onGroup: (seconds, chunks) => {
      nbdMetrics.chunkFetchSeconds.observe(seconds);
      nbdMetrics.chunksFetched.inc(chunks);
      nbdMetrics.cacheBytes.set(cache.bytes);
    },
    onHit: () => nbdMetrics.cacheHits.inc(),
    onMiss: () => nbdMetrics.cacheMisses.inc(),
  });
  const overlays: Overlay[] = [];
  try {
    await repo.cache(); // the index is loaded before the first client waits for it
    const exports: NbdExport[] = [];
    const served: ServedExport[] = [];
    const taken = new Set<string>();
    for (const i of indexes) {
      const image = openDiskImage(repo, pool, record, i);
      let overlay: Overlay | undefined;
      if (options.overlay && i === overlayDisk) {
        overlay = await Overlay.open(options.overlay, { snapshot: record.id, disk: i, capacity: image.capacity, chunkSize: image.chunkSize });
        overlays.push(overlay);
      }
      await image.leafIds(); // a damaged manifest is an error now, not on the first read
      const disk = new LazyDisk(image, fetcher, { overlay, maxReadAhead: options.maxReadAhead, log: options.log });
      const names = [String(i), image.disk.name].filter((n) => !taken.has(n) && (taken.add(n), true));
      exports.push(diskExport(disk, names, `${record.vm} disk ${i} (${image.disk.name}) of snapshot ${record.id}`));
      served.push({ disk: i, names, size: image.capacity, writable: disk.writable });
    }
    const server = new NbdServer({ exports, log: options.log });
    const address = await server.listen(listen);
    return {
      address,
      snapshot: record.id,
      vm: record.vm,
      exports: served,
      server,
      cache,
      close: async () => {
        try {
          await server.close();
        } finally {
          for (const o of overlays) await o.close().catch((err: Error) => options.log?.(`overlay ${o.file}: ${err.message}`));
          await pool.close();
        }
      },
    };
  } catch (err) {
    for (const o of overlays) await o.close().catch(() => {});
    await pool.close();
    throw err;
  }
}
