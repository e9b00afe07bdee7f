import { randomBytes } from 'node:crypto';
import * as os from 'node:os';
import { IntegrityError, UserError } from '../repo/errors.js';
import { AD, SNAPSHOTS_PREFIX } from '../repo/format.js';
import { readFences, recordCommitted } from '../repo/fence.js';
import { Repository } from '../repo/repository.js';

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

/**
 * A snapshot record. Version 2 records are stored per VM (see SnapshotCatalog);
 * fields may be added (readers ignore fields they do not know), and a reader
 * refuses a version it does not know.
 */
export interface SnapshotRecord {
  version: 1 | 2;
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

const ID = '[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}';
const ID_RE = new RegExp(`^${ID}$`);
const V1_NAME_RE = new RegExp(`^${SNAPSHOTS_PREFIX}(${ID})$`);
const V2_NAME_RE = new RegExp(`^${SNAPSHOTS_PREFIX}([0-9a-f]{32})/(${ID})$`);

/**
 * Snapshot records, sealed JSON, written last with a no-overwrite put: a record's
 * presence is what makes a snapshot exist; every object it refers to was written
 * before it.
 *
 *   version 1 repositories: `snapshots/<id>`
 *   version 2 repositories: `snapshots/<vm tag>/<id>`, vm tag = hex of the first 16
 *     bytes of keyed BLAKE3(id key, "vm\0" + vm name), sealed with associated data
 *     "pilotlight v2 snapshot\0" + name.
 *
 * A record is checked against its name when read (its id, and in version 2 its vm
 * tag and the associated data), so a record copied, renamed or replayed under a
 * newer id is an IntegrityError naming the object. Per-VM prefixes make a VM's
 * latest snapshot cost one listing of that VM's records (plus reads the local
 * cache does not already hold), whatever other VMs hold.
 */
export class SnapshotCatalog {
  private readonly v2: boolean;

  constructor(private readonly repo: Repository) {
    this.v2 = repo.config.version >= 2;
  }

  /** hex of keyed BLAKE3(id key, "vm\0" + name)[0:16]: names a VM's prefix without leaking its name. */
  vmTag(vm: string): string {
    return this.repo.hasher.hash(Buffer.from(`vm\0${vm}`, 'utf8')).subarray(0, 16).toString('hex');
  }

  objectName(vm: string, id: string): string {
    return this.v2 ? `${SNAPSHOTS_PREFIX}${this.vmTag(vm)}/${id}` : `${SNAPSHOTS_PREFIX}${id}`;
  }

  /** The prefix that lists one VM's records (version 2), or every record (version 1). */
  private prefix(vm?: string): string {
    return this.v2 && vm !== undefined ? `${SNAPSHOTS_PREFIX}${this.vmTag(vm)}/` : SNAPSHOTS_PREFIX;
  }

  /** Parses an object name of this repository's layout: its id, and (version 2) vm tag. */
  private parseName(name: string): { id: string; tag?: string } | null {
    if (this.v2) {
      const m = V2_NAME_RE.exec(name);
      return m ? { tag: m[1]!, id: m[2]! } : null;
    }
    const m = V1_NAME_RE.exec(name);
    return m ? { id: m[1]! } : null;
  }

  /** The object name, plaintext and sealed bytes of a record in this repository's layout (its version set here). */
  encode(record: SnapshotRecord): { name: string; plain: Buffer; sealed: Buffer } {
    const r: SnapshotRecord = { ...record, version: this.v2 ? 2 : 1 };
    if (!ID_RE.test(r.id)) throw new Error(`bad snapshot id ${r.id}`);
    const name = this.objectName(r.vm, r.id);
    const plain = Buffer.from(JSON.stringify(r));
    return { name, plain, sealed: this.repo.sealer.seal([plain], AD.snapshot(name)) };
  }

  /** Writes a record (no-overwrite): the commit point of a backup. */
  async save(record: SnapshotRecord): Promise<void> {
    const { name, plain, sealed } = this.encode(record);
    await this.repo.store.put(name, sealed, { ifNotExists: true, kind: 'metadata' });
    await (await this.repo.cache()).putRecord(name, plain);
    record.version = this.v2 ? 2 : 1;
  }

  /** Reads a version 1 record (`snapshots/<id>`, seal format 1) without the cache: for migrate. */
  async loadV1Name(name: string): Promise<SnapshotRecord> {
    const m = V1_NAME_RE.exec(name);
    if (!m) throw new IntegrityError(`${name}: not a version 1 snapshot record name`);
    const plain = this.repo.sealer.openFormat(1, await this.repo.store.get(name), AD.snapshot(name), name);
    const r = JSON.parse(plain.toString('utf8')) as SnapshotRecord;
    if (r.id !== m[1]) throw new IntegrityError(`${name}: holds the record of snapshot ${r.id} (copied or replayed under another name)`);
    return r;
  }

  /** Names of version 1 records (`snapshots/<id>`) in any repository: what migrate converts. */
  async v1Names(): Promise<string[]> {
    const out: string[] = [];
    for await (const b of this.repo.store.list(SNAPSHOTS_PREFIX)) if (V1_NAME_RE.test(b.name)) out.push(b.name);
    return out.sort();
  }

  /** Reads (or takes from the local cache) and checks the record stored as `name`. */
  async loadName(name: string): Promise<SnapshotRecord> {
    const parsed = this.parseName(name);
    if (!parsed) throw new IntegrityError(`${name}: not a snapshot record name`);
    const cache = await this.repo.cache();
    let bytes = await cache.getRecord(name);
    const fresh = !bytes;
    if (!bytes) bytes = this.repo.sealer.open(await this.repo.store.get(name), AD.snapshot(name), name);
    let r: SnapshotRecord;
    try {
      r = JSON.parse(bytes.toString('utf8')) as SnapshotRecord;
    } catch {
      throw new IntegrityError(`${name}: not a snapshot record (bad JSON)`);
    }
    if (r.version !== 1 && r.version !== 2) throw new UserError(`snapshot ${parsed.id} has record version ${r.version}; upgrade pilotlight`);
    if (r.id !== parsed.id) throw new IntegrityError(`${name}: holds the record of snapshot ${r.id} (copied or replayed under another name)`);
    if (parsed.tag !== undefined && this.vmTag(String(r.vm)) !== parsed.tag) {
      throw new IntegrityError(`${name}: holds a record of vm ${JSON.stringify(r.vm)}, stored under another vm (copied)`);
    }
    if (fresh) await cache.putRecord(name, bytes);
    return r;
  }

  /** A snapshot by full id (pass its vm when known: one request instead of a listing). */
  async load(id: string, vm?: string): Promise<SnapshotRecord> {
    return this.loadName(await this.nameOf(id, vm));
  }

  /** The object name of a stored record: direct in version 1 or with the vm, else found by listing. */
  private async nameOf(id: string, vm?: string): Promise<string> {
    if (!this.v2 || vm !== undefined) return this.objectName(vm ?? '', id);
    for (const name of await this.names()) if (this.parseName(name)!.id === id) return name;
    throw new UserError(`no snapshot ${id} in ${this.repo.location}`);
  }

  /** Record object names of one VM (version 2: one prefix listing), or of all. */
  private async names(vm?: string): Promise<string[]> {
    const out: string[] = [];
    for await (const b of this.repo.store.list(this.prefix(vm))) if (this.parseName(b.name)) out.push(b.name);
    return out.sort();
  }

  /**
   * Ids of every stored record, as listed (not de-duplicated, not checked against
   * fences); with idPrefix, only ids starting with it (`202612`: December 2026). In
   * version 1 the prefix narrows the listing; in version 2 (ids below per-VM
   * prefixes) every record name is listed and filtered.
   */
  async listIds(idPrefix = ''): Promise<string[]> {
    const ids: string[] = [];
    const listPrefix = this.v2 ? SNAPSHOTS_PREFIX : `${SNAPSHOTS_PREFIX}${idPrefix}`;
    for await (const b of this.repo.store.list(listPrefix)) {
      const p = this.parseName(b.name);
      if (p && p.id.startsWith(idPrefix)) ids.push(p.id);
    }
    return ids;
  }

  /**
   * Whether the record is stored (asks the store with a HEAD, not a listing); pass
   * the vm when known. In version 2 without it, the record's full name comes from
   * the local cache (records this host has read); a listing is the last resort.
   */
  async exists(id: string, vm?: string): Promise<boolean> {
    if (!this.v2 || vm !== undefined) return (await this.repo.store.head(this.objectName(vm ?? '', id))) !== null;
    const cached = (await (await this.repo.cache()).recordNames()).find((n) => this.parseName(n)?.id === id);
    if (cached) return (await this.repo.store.head(cached)) !== null;
    return (await this.listIds(id)).includes(id);
  }

  /** Deletes a record (and its cached copy). */
  async delete(id: string, vm?: string): Promise<void> {
    let name: string;
    try {
      name = await this.nameOf(id, vm);
    } catch (err) {
      if (err instanceof UserError) return; // not there: deleting is idempotent
      throw err;
    }
    await this.repo.store.delete(name);
    await (await this.repo.cache()).deleteRecord(name);
  }

  /** Every committed snapshot, oldest first; with vm, only that vm's. Records of fenced backups that no prune accepted are not committed. */
  async list(vm?: string): Promise<SnapshotRecord[]> {
    const fences = await readFences(this.repo.store);
    const out: SnapshotRecord[] = [];
    for (const name of await this.names(vm)) {
      const r = await this.loadName(name);
      if ((vm === undefined || r.vm === vm) && recordCommitted(fences, r.id, r.lease)) out.push(r);
    }
    out.sort((a, b) => (a.time === b.time ? a.id.localeCompare(b.id) : a.time.localeCompare(b.time)));
    return out;
  }

  /** The names of the VMs that have snapshots, sorted. */
  async listVms(): Promise<string[]> {
    const seen = new Map<string, string>();
    for (const name of await this.names()) {
      const p = this.parseName(name)!;
      const key = p.tag ?? name;
      if (p.tag !== undefined && seen.has(key)) continue;
      seen.set(key, (await this.loadName(name)).vm);
    }
    return [...new Set(seen.values())].sort();
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
    // match names first, then read only the records that match
    const names = (await this.names(vm)).filter((n) => this.parseName(n)!.id.startsWith(ref));
    const fences = await readFences(this.repo.store);
    const hits: SnapshotRecord[] = [];
    for (const n of names) {
      const r = await this.loadName(n);
      if ((vm === undefined || r.vm === vm) && recordCommitted(fences, r.id, r.lease)) hits.push(r);
    }
    const exact = hits.find((r) => r.id === ref);
    if (exact) return exact;
    if (hits.length === 1) return hits[0]!;
    if (hits.length > 1) throw new UserError(`snapshot ${ref} is ambiguous: ${hits.map((h) => h.id).join(', ')}`);
    throw new UserError(`no snapshot ${ref}${vm ? ` of vm ${JSON.stringify(vm)}` : ''} in ${this.repo.location}; 'pilotlight snapshots' lists them`);
  }
}
