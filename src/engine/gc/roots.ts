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
  /** Record ids seen by a reading -> their vm. */
  private readonly seen = new Map<string, string>();
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
    // What must be listed, gathered before the listing so that a record committed while it runs
    // is never taken for a missing one: what earlier reads saw, what this host's cache holds,
    // and the newest records listed a second way (a listing cut short loses the tail: the newest ids).
    const cachedNames = opts.first ? await (await this.repo.cache()).recordNames() : [];
    const recent: string[] = [];
    let refs: { id: string; name: string }[];
    try {
      for (const month of recentMonths()) recent.push(...(await this.catalog.listIds(month)));
      refs = await this.catalog.listRefs();
    } catch (err) {
      throw new ListingError(`listing snapshot records failed (${(err as Error).message})`);
    }
    const listed = new Map(refs.map((r) => [r.id, r.name]));
    if (listed.size !== refs.length) throw new ListingError('the listing of snapshot records returned a name twice (a repeated page?)');
    if (listed.size === 0 && opts.packsExist) {
      throw new ListingError('no snapshot record was listed while the repository holds packs: a listing error, or every snapshot was forgotten; refusing to delete everything');
    }
    const short = (id: string) => new ListingError(`snapshot record ${id} exists but the listing did not return it (a short listing)`);
    for (const [id, vm] of [...this.seen]) {
      if (listed.has(id)) continue;
      if (await this.catalog.exists(id, vm)) throw short(id);
      this.seen.delete(id);
    }
    // by object name (a HEAD, whatever the layout); a record forgotten since is no short listing
    for (const name of cachedNames) {
      const id = name.slice(name.lastIndexOf('/') + 1);
      if (!listed.has(id) && (await this.repo.store.head(name))) throw short(id);
    }
    for (const id of recent) if (!listed.has(id) && (await this.catalog.exists(id))) throw short(id);
    for (const [id, name] of [...listed].sort()) {
      if (this.seen.has(id)) continue;
      const r: SnapshotRecord = await this.catalog.loadRef(name);
      this.seen.set(id, r.vm);
      if (r.parent && !listed.has(r.parent) && (await this.catalog.exists(r.parent, r.vm))) {
        throw new ListingError(`snapshot record ${r.parent} (the parent of ${r.id}) exists but the listing did not return it (a short listing)`);
      }
      if (!recordCommitted(fences, r.id, r.lease)) continue;
      await this.marker.markRecord(r);
      this.marked.set(r.id, r.lease);
    }
    return [...listed.keys()];
  }
}

/** Id prefixes (YYYYMM) of this month and the last, by the UTC clock. */
function recentMonths(): string[] {
  const now = new Date();
  const prev = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 1));
  const fmt = (d: Date) => `${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, '0')}`;
  return [fmt(now), fmt(prev)];
}
