/**
 * Protection markers and tombstones: small sealed JSON objects beside the snapshot
 * records, which stay immutable.
 *
 * - `protect/<snapshot id>`: the snapshot is protected; `forget` never removes it.
 *   Written by `protect` with a no-overwrite put, deleted by `unprotect`.
 * - `forgotten/<snapshot id>`: the snapshot was forgotten, but its record could not be
 *   deleted yet (Object Lock: the record is retained until a date). Listings skip it,
 *   so it does not come back; a later forget deletes the record once the date has
 *   passed, then the tombstone.
 *
 * Neither is ever put under Object Lock (see docs/FORMAT.md, "Protection markers and
 * tombstones").
 */
import { Repository } from '../repo/repository.js';
import { BlobExistsError, isNotFound } from '../store/blob-store.js';

export const PROTECT_PREFIX = 'protect/';
export const FORGOTTEN_PREFIX = 'forgotten/';

export interface ProtectionMarker {
  kind: 'pilotlight-protect';
  version: 1;
  snapshot: string;
  vm: string;
  protected: string;
  host: string;
  note?: string;
}

export interface Tombstone {
  kind: 'pilotlight-tombstone';
  version: 1;
  snapshot: string;
  vm: string;
  forgotten: string;
  /** The record's Object Lock date, when it was known. */
  retainUntil?: string;
}

/** Associated data of a marker or tombstone: its name, so that one copied under another snapshot's name does not open. */
function adOf(name: string): Buffer {
  return Buffer.from(`pilotlight retention marker\0${name}`);
}

async function readSealed<T>(repo: Repository, name: string, what: string): Promise<T | null> {
  try {
    return JSON.parse(repo.sealer.open(await repo.store.get(name), adOf(name), what).toString('utf8')) as T;
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

async function listIds(repo: Repository, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const b of repo.store.list(prefix)) out.push(b.name.slice(prefix.length));
  return out;
}

/** Ids of every protected snapshot (one LIST). */
export async function protectedIds(repo: Repository): Promise<Set<string>> {
  return new Set(await listIds(repo, PROTECT_PREFIX));
}

/** Ids of every tombstoned snapshot (one LIST). */
export async function tombstonedIds(repo: Repository): Promise<Set<string>> {
  return new Set(await listIds(repo, FORGOTTEN_PREFIX));
}

export async function readProtection(repo: Repository, id: string): Promise<ProtectionMarker | null> {
  return readSealed<ProtectionMarker>(repo, PROTECT_PREFIX + id, `protection marker of ${id}`);
}

/** Protects a snapshot; returns false when it already was. */
export async function protectSnapshot(repo: Repository, snap: { id: string; vm: string }, host: string, note?: string): Promise<boolean> {
  const marker: ProtectionMarker = {
    kind: 'pilotlight-protect',
    version: 1,
    snapshot: snap.id,
    vm: snap.vm,
    protected: new Date().toISOString(),
    host,
    ...(note ? { note } : {}),
  };
  try {
    await repo.store.put(PROTECT_PREFIX + snap.id, repo.sealer.seal([Buffer.from(JSON.stringify(marker))], adOf(PROTECT_PREFIX + snap.id)), { ifNotExists: true, kind: 'metadata' });
    return true;
  } catch (err) {
    if (err instanceof BlobExistsError || (err as { code?: string }).code === 'BLOB_EXISTS') return false;
    throw err;
  }
}

/** Removes a protection; returns false when there was none. */
export async function unprotectSnapshot(repo: Repository, id: string): Promise<boolean> {
  if (!(await repo.store.head(PROTECT_PREFIX + id))) return false;
  await repo.store.delete(PROTECT_PREFIX + id);
  return true;
}

export async function writeTombstone(repo: Repository, t: Omit<Tombstone, 'kind' | 'version'>): Promise<void> {
  const body: Tombstone = { kind: 'pilotlight-tombstone', version: 1, ...t };
  try {
    await repo.store.put(FORGOTTEN_PREFIX + t.snapshot, repo.sealer.seal([Buffer.from(JSON.stringify(body))], adOf(FORGOTTEN_PREFIX + t.snapshot)), { ifNotExists: true, kind: 'metadata' });
  } catch (err) {
    if (err instanceof BlobExistsError || (err as { code?: string }).code === 'BLOB_EXISTS') return;
    throw err;
  }
}

export async function readTombstone(repo: Repository, id: string): Promise<Tombstone | null> {
  return readSealed<Tombstone>(repo, FORGOTTEN_PREFIX + id, `tombstone of ${id}`);
}

export async function removeTombstone(repo: Repository, id: string): Promise<void> {
  await repo.store.delete(FORGOTTEN_PREFIX + id);
}
