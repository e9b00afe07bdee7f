import { randomBytes } from 'node:crypto';
import * as os from 'node:os';
import { UserError } from '../repo/errors.js';
import { SNAPSHOTS_PREFIX } from '../repo/format.js';
import { readFences, recordCommitted } from '../repo/fence.js';
import { Repository } from '../repo/repository.js';

/**
 * Snapshot records (`snapshots/<id>`): sealed JSON, written last with a
 * no-overwrite put. A record's presence is what makes a snapshot exist; every
 * object it refers to was written before it.
 */
export interface DiskRecord {
  /** The source's name for the disk (`scsi0:0`, an image file name). */
  name: string;
  capacity: number;
  chunkSize: number;
  /** Manifest root page id (hex); 64 zeros for an all-zero disk. */
  root: string;
  depth: number;
  nonZeroBytes: number;
  /** The source's change-tracking token at this point in time (vSphere changeId). */
  changeToken?: string;
  /** How the disk was read: 'changed' (from the parent) or 'allocated', and why. */
  read: { kind: 'changed' | 'allocated'; reason: string };
}

export interface SnapshotStats {
  bytesScanned: number;
  bytesNew: number;
  bytesStored: number;
  chunksNew: number;
  chunksReused: number;
  chunksZero: number;
  durationMs: number;
}

export interface SnapshotRecord {
  version: 1;
  id: string;
  vm: string;
  time: string;
  parent: string | null;
  host: string;
  source: string;
  disks: DiskRecord[];
  stats: SnapshotStats;
  /** The lease of the backup that wrote it (docs/FORMAT.md, "Fences"). */
  lease?: string;
}

export function newSnapshotId(time: Date): string {
  const stamp = time.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `${stamp}-${randomBytes(4).toString('hex')}`;
}

export function defaultHost(): string {
  return os.hostname();
}

const ID_RE = /^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$/;

export class SnapshotCatalog {
  constructor(private readonly repo: Repository) {}

  async save(record: SnapshotRecord): Promise<void> {
    const name = `${SNAPSHOTS_PREFIX}${record.id}`;
    const bytes = Buffer.from(JSON.stringify(record));
    await this.repo.store.put(name, this.repo.sealer.seal([bytes]), { ifNotExists: true, kind: 'metadata' });
    await (await this.repo.cache()).putRecord(name, bytes);
  }

  async load(id: string): Promise<SnapshotRecord> {
    const name = `${SNAPSHOTS_PREFIX}${id}`;
    const cache = await this.repo.cache();
    let bytes = await cache.getRecord(name);
    if (!bytes) {
      bytes = this.repo.sealer.open(await this.repo.store.get(name), `snapshot ${id}`);
      await cache.putRecord(name, bytes);
    }
    const r = JSON.parse(bytes.toString('utf8')) as SnapshotRecord;
    if (r.version !== 1) throw new UserError(`snapshot ${id} has record version ${r.version}; upgrade pilotlight`);
    return r;
  }

  /**
   * Ids of every stored record, as listed (not de-duplicated, not checked against
   * fences); with idPrefix, only ids starting with it (`202612`: December 2026).
   */
  async listIds(idPrefix = ''): Promise<string[]> {
    const ids: string[] = [];
    for await (const b of this.repo.store.list(`${SNAPSHOTS_PREFIX}${idPrefix}`)) {
      const id = b.name.slice(SNAPSHOTS_PREFIX.length);
      if (ID_RE.test(id)) ids.push(id);
    }
    return ids;
  }

  /** Whether the record is stored (asks the store, not the cache). */
  async exists(id: string): Promise<boolean> {
    return (await this.repo.store.head(`${SNAPSHOTS_PREFIX}${id}`)) !== null;
  }

  /** Deletes a record (and its cached copy). */
  async delete(id: string): Promise<void> {
    const name = `${SNAPSHOTS_PREFIX}${id}`;
    await this.repo.store.delete(name);
    await (await this.repo.cache()).deleteRecord(name);
  }

  /** Every committed snapshot, oldest first; with vm, only that vm's. Records of fenced backups that no prune accepted are not committed. */
  async list(vm?: string): Promise<SnapshotRecord[]> {
    const ids = [...new Set(await this.listIds())].sort();
    const fences = await readFences(this.repo.store);
    const out: SnapshotRecord[] = [];
    for (const id of ids) {
      const r = await this.load(id);
      if ((!vm || r.vm === vm) && recordCommitted(fences, r.id, r.lease)) out.push(r);
    }
    out.sort((a, b) => (a.time === b.time ? a.id.localeCompare(b.id) : a.time.localeCompare(b.time)));
    return out;
  }

  async latest(vm: string): Promise<SnapshotRecord | null> {
    const all = await this.list(vm);
    return all.length ? all[all.length - 1]! : null;
  }

  /** `latest` (needs vm), a full id, or a unique prefix of one. */
  async resolve(ref: string, vm?: string): Promise<SnapshotRecord> {
    if (ref === 'latest') {
      if (!vm) throw new UserError("'latest' needs --vm NAME");
      const r = await this.latest(vm);
      if (!r) throw new UserError(`no snapshot of vm ${JSON.stringify(vm)} in ${this.repo.location}`);
      return r;
    }
    const all = await this.list(vm);
    const hits = all.filter((r) => r.id === ref || r.id.startsWith(ref));
    const exact = hits.find((r) => r.id === ref);
    if (exact) return exact;
    if (hits.length === 1) return hits[0]!;
    if (hits.length > 1) throw new UserError(`snapshot ${ref} is ambiguous: ${hits.map((h) => h.id).join(', ')}`);
    throw new UserError(`no snapshot ${ref}${vm ? ` of vm ${JSON.stringify(vm)}` : ''} in ${this.repo.location}; 'pilotlight snapshots' lists them`);
  }
}
