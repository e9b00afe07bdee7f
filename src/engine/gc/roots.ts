import { FenceState, recordCommitted } from '../../repo/fence.js';
import { Repository } from '../../repo/repository.js';
import { SnapshotCatalog, SnapshotRecord } from '../../snapshot/snapshot-record.js';
import { ListingError } from './listing.js';
import { Marker } from './mark.js';

/**
 * The roots: committed snapshot records. Read three times by a prune (before
 * marking, after publishing its epoch, after waiting for backups); each read
 * marks what records that appeared since reference. A record seen once and
 * missing from a later listing must really be gone (a HEAD says so), else the
 * listing is short and the prune stops.
 */
export class Roots {
  private readonly seen = new Set<string>();
  /** Records marked: id -> lease (for fence decisions). */
  readonly marked = new Map<string, string | undefined>();
  private readonly catalog: SnapshotCatalog;

  constructor(
    private readonly repo: Repository,
    private readonly marker: Marker,
  ) {
    this.catalog = new SnapshotCatalog(repo);
  }

  /** Lists, checks and marks; returns the record ids listed. */
  async read(fences: FenceState, opts: { first: boolean; packsExist: boolean }): Promise<string[]> {
    let ids: string[];
    try {
      ids = await this.catalog.listIds();
    } catch (err) {
      throw new ListingError(`listing snapshot records failed (${(err as Error).message})`);
    }
    const listed = new Set(ids);
    if (listed.size !== ids.length) throw new ListingError('the listing of snapshot records returned a name twice (a repeated page?)');
    if (listed.size === 0 && opts.packsExist) {
      throw new ListingError('no snapshot record was listed while the repository holds packs: a listing error, or every snapshot was forgotten; refusing to delete everything');
    }
    // what must be listed: what earlier reads saw, what this host's cache holds, and the newest
    // records listed a second way (a listing cut short loses the tail: the newest ids)
    const expected = new Set(this.seen);
    if (opts.first) for (const n of await this.cachedRecordIds()) expected.add(n);
    for (const month of recentMonths()) for (const id of await this.catalog.listIds(month)) expected.add(id);
    for (const id of expected) {
      if (listed.has(id)) continue;
      if (await this.catalog.exists(id)) throw new ListingError(`snapshot record ${id} exists but the listing did not return it (a short listing)`);
      this.seen.delete(id);
    }
    for (const id of [...listed].sort()) {
      if (this.seen.has(id)) continue;
      this.seen.add(id);
      const r: SnapshotRecord = await this.catalog.load(id);
      if (r.parent && !listed.has(r.parent) && !this.seen.has(r.parent) && (await this.catalog.exists(r.parent))) {
        throw new ListingError(`snapshot record ${r.parent} (the parent of ${r.id}) exists but the listing did not return it (a short listing)`);
      }
      if (!recordCommitted(fences, r.id, r.lease)) continue;
      await this.marker.markRecord(r);
      this.marked.set(r.id, r.lease);
    }
    return [...listed];
  }

  private async cachedRecordIds(): Promise<string[]> {
    const cache = await this.repo.cache();
    return (await cache.recordNames()).map((n) => n.slice(n.lastIndexOf('/') + 1)); // snapshots/<id>, or snapshots/<vm tag>/<id>
  }
}

/** Id prefixes (YYYYMM) of this month and the last, by the UTC clock. */
function recentMonths(): string[] {
  const now = new Date();
  const prev = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 1));
  const fmt = (d: Date) => `${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, '0')}`;
  return [fmt(now), fmt(prev)];
}
