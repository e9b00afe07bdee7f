/**
 * Object Lock (WORM) for repositories on S3 buckets that have it: `init --immutable-days N`.
 *
 * What is locked: every object a snapshot needs — config, keys/, data/ and meta/ packs,
 * index/ files and snapshots/ records — each put with mode COMPLIANCE (default) and a
 * retain-until date N days after it was written. Leases/locks, protection markers and
 * tombstones are not locked (they must be removable; none of them holds data).
 * In COMPLIANCE mode no credential, the bucket owner's included, can delete a retained
 * version or shorten its date: a stolen key can hide objects behind delete markers but
 * cannot destroy them. GOVERNANCE (`--immutable-mode governance`) lets a principal with
 * s3:BypassGovernanceRetention delete: weaker, for test buckets.
 *
 * A pack written long ago may be needed by today's snapshot: prune calls
 * extendLiveRetention with what is still live, which pushes every live object's date to
 * now + N days when less than N/2 days are left, and deleteLapsed for what it would
 * delete, which deletes what has lapsed and defers (reports) what has not.
 */
import { CONFIG_NAME, DATA_PREFIX, INDEX_PREFIX, KEYS_PREFIX, META_PREFIX, SNAPSHOTS_PREFIX } from './format.js';
import { UserError } from './errors.js';
import type { Repository } from './repository.js';
import { BlobStore, ObjectLockMode, isLocked, isNotFound } from '../store/blob-store.js';

export interface ObjectLockConfig {
  mode: ObjectLockMode;
  /** Retention period in days (whole days from the CLI; the library takes fractions, which tests use). */
  days: number;
}

const LOCKED_PREFIXES = [KEYS_PREFIX, DATA_PREFIX, META_PREFIX, INDEX_PREFIX, SNAPSHOTS_PREFIX];

/** Whether an object of this name is put under retention. */
export function isLockedName(name: string): boolean {
  return name === CONFIG_NAME || LOCKED_PREFIXES.some((p) => name.startsWith(p));
}

const DAY_MS = 86_400_000;

/** At init: the store must be S3 on a bucket with Object Lock enabled. */
export async function checkObjectLockStore(store: BlobStore, lock: ObjectLockConfig): Promise<void> {
  if (!(lock.days > 0) || !Number.isFinite(lock.days) || lock.days > 36_500) {
    throw new UserError(`--immutable-days must be between 1 and 36500, got ${lock.days}`);
  }
  if (!store.objectLock) {
    throw new UserError(`--immutable-days needs an s3:// repository on a bucket with Object Lock enabled; ${store.location} is not one`);
  }
  if (!(await store.objectLock.bucketLockEnabled())) {
    throw new UserError(
      `the bucket of ${store.location} has no Object Lock: it can only be enabled when a bucket is created ` +
        '(aws s3api create-bucket --object-lock-enabled-for-bucket ...); use such a bucket or init without --immutable-days',
    );
  }
}

/** Makes the store put locked names with a retain-until date (no-op on a store without Object Lock). */
export function applyObjectLock(store: BlobStore, lock: ObjectLockConfig | undefined): void {
  if (!lock || !store.objectLock) return;
  store.objectLock.configure({ mode: lock.mode, periodMs: lock.days * DAY_MS, appliesTo: isLockedName });
}

export interface ExtendReport {
  checked: number;
  extended: number;
  /** Live names that were not found (another process deleted them, or the caller's list is stale). */
  missing: string[];
  retainUntil: string | null;
}

/**
 * Extends the retention of every live object (plus config and keys/, always live) to
 * now + period when less than half the period is left. One HEAD per object, one
 * PutObjectRetention per extension, `concurrency` at a time; memory holds `concurrency`
 * names, whatever the size of `liveNames`.
 */
export async function extendLiveRetention(
  repo: Repository,
  liveNames: Iterable<string> | AsyncIterable<string>,
  options: { concurrency?: number; now?: () => number } = {},
): Promise<ExtendReport> {
  const lock = repo.config.objectLock;
  const control = repo.store.objectLock;
  const report: ExtendReport = { checked: 0, extended: 0, missing: [], retainUntil: null };
  if (!lock || !control) return report;
  const now = options.now ?? Date.now;
  const periodMs = lock.days * DAY_MS;
  const until = new Date(now() + periodMs);
  report.retainUntil = until.toISOString();
  const one = async (name: string) => {
    report.checked++;
    let current: Date | null;
    try {
      current = await control.retainUntil(name);
    } catch (err) {
      if (isNotFound(err)) {
        report.missing.push(name);
        return;
      }
      throw err;
    }
    if (current && current.getTime() - now() >= periodMs / 2) return;
    await control.extend(name, until);
    report.extended++;
  };
  const inFlight = new Set<Promise<void>>();
  const limit = Math.max(1, options.concurrency ?? 16);
  const run = async (name: string) => {
    const p = one(name).finally(() => inFlight.delete(p));
    inFlight.add(p);
    if (inFlight.size >= limit) await Promise.race(inFlight);
  };
  await run(CONFIG_NAME);
  for await (const k of repo.store.list(KEYS_PREFIX)) await run(k.name);
  for await (const n of liveNames as AsyncIterable<string>) await run(n);
  await Promise.all(inFlight);
  return report;
}

export interface DeleteLapsedReport {
  deleted: string[];
  /** Still retained: left in place, to be deleted by a later prune. */
  deferred: { name: string; retainUntil: string | null }[];
}

/** Deletes each name; one still under retention is deferred instead of failing the run. */
export async function deleteLapsed(repo: Repository, names: Iterable<string>): Promise<DeleteLapsedReport> {
  const out: DeleteLapsedReport = { deleted: [], deferred: [] };
  for (const name of names) {
    try {
      await repo.store.delete(name);
      out.deleted.push(name);
    } catch (err) {
      if (!isLocked(err)) throw err;
      out.deferred.push({ name, retainUntil: err.retainUntil ? err.retainUntil.toISOString() : null });
    }
  }
  return out;
}

export interface CondemnedDeletion {
  deleted: number;
  /** Names still under retention: left for a later prune. */
  deferred: { name: string; retainUntil: string | null }[];
  /** The retention extension of what is live (null without Object Lock). */
  extended: ExtendReport | null;
}

/**
 * What prune calls to delete what it condemned (packs, then superseded index files, in the
 * order given). Without Object Lock: plain deletes. With it: deleteLapsed (what is retained
 * is deferred, not an error), then extendLiveRetention over every locked object still
 * listed, except the deferred ones and the records of tombstoned snapshots (which must be
 * allowed to lapse). The caller must not consider its deletion finished while anything is
 * deferred (prune leaves its GC epoch un-ended, and the next prune finishes it).
 */
export async function deleteCondemned(repo: Repository, names: string[], afterFirst?: () => void): Promise<CondemnedDeletion> {
  if (!repo.config.objectLock || !repo.store.objectLock) {
    for (const [i, n] of names.entries()) {
      await repo.store.delete(n);
      if (i === 0) afterFirst?.();
    }
    return { deleted: names.length, deferred: [], extended: null };
  }
  const del = await deleteLapsed(repo, names);
  const skip = new Set(del.deferred.map((d) => d.name));
  const { tombstonedIds } = await import('../snapshot/protection.js');
  const forgotten = await tombstonedIds(repo);
  const store = repo.store;
  async function* live(): AsyncIterable<string> {
    for (const prefix of [DATA_PREFIX, META_PREFIX, INDEX_PREFIX, SNAPSHOTS_PREFIX]) {
      for await (const b of store.list(prefix)) {
        // records are named .../<id> in every format version
        if (skip.has(b.name) || (prefix === SNAPSHOTS_PREFIX && forgotten.has(b.name.slice(b.name.lastIndexOf('/') + 1)))) continue;
        yield b.name;
      }
    }
  }
  const extended = await extendLiveRetention(repo, live());
  return { deleted: del.deleted.length, deferred: del.deferred, extended };
}
