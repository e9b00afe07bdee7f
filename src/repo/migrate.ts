import { SnapshotCatalog } from '../snapshot/snapshot-record.js';
import { RepoConfig, encodeConfig } from './config.js';
import { UserError } from './errors.js';
import { CONFIG_NAME, KEYS_PREFIX } from './format.js';
import { openKeyFile, writeKeyFile } from './keyfile.js';
import { killPoint } from './kill-point.js';
import { Lease, listLeases } from './lease.js';
import { Repository } from './repository.js';
import { randomBytes } from 'node:crypto';
import * as os from 'node:os';

export interface MigrateReport {
  from: number;
  to: number;
  recordsConverted: number;
  recordsRemoved: number;
  keyReplaced: string | null;
  /** Key files of other passwords that stay version 1 (readable; `key passwd` with each password upgrades it). */
  otherV1Keys: number;
  alreadyDone: boolean;
}

/**
 * Upgrades a version 1 repository to version 2 in place (FORMAT.md §11). Data packs
 * and index files are kept as they are (version 1 seals, readable in a migrated
 * repository); snapshot records move to the per-VM layout; the config switch is the
 * commit point; old objects are removed after it. Every step is idempotent and a
 * kill at any point leaves a repository that opens (as version 1 before the switch,
 * version 2 after): running migrate again finishes the job.
 */
export async function migrateRepository(repo: Repository, password: string | null): Promise<MigrateReport> {
  const from = repo.config.version;
  if (from >= 2 && repo.config.migratedFrom !== 1) {
    return { from, to: from, recordsConverted: 0, recordsRemoved: 0, keyReplaced: null, otherV1Keys: 0, alreadyDone: true };
  }
  const lock = await Lease.acquire(repo.store, 'other');
  try {
    // a lease left by a killed process on this host does not count (a killed migrate is re-run at once)
    const others = (await listLeases(repo)).filter((l) => l.id !== lock.id && !l.expired && !(l.host === os.hostname() && !pidAlive(l.pid)));
    if (others.length) {
      throw new UserError(`another operation holds the repository (${others.map((l) => `${l.operation} on ${l.host} pid ${l.pid}`).join(', ')}); run migrate when it has finished`);
    }
    const v2Config: RepoConfig = { ...repo.config, version: 2, migratedFrom: 1 };
    const v2 = await Repository.fromParts(repo.store, v2Config, repo.master, repo.key);
    const v1Catalog = new SnapshotCatalog(repo);
    const v2Catalog = new SnapshotCatalog(v2);

    // 1. new objects first: every record, again, in the per-VM layout (v1 readers ignore these names)
    const recordsConverted = await convertRecords(repo, v1Catalog, v2Catalog);
    killPoint('migrate:records');

    // 2. the switch: the authenticated version 2 config
    if (from < 2) await repo.store.put(CONFIG_NAME, encodeConfig(v2Config, repo.master));
    killPoint('migrate:config');

    // 3. a version 2 key file for the password in use, then the version 1 one goes
    let keyReplaced: string | null = null;
    if (repo.master.encryptionKey) {
      // a killed run may have written the version 2 key file already: reuse it
      let v2Key = repo.key.version === 2 ? repo.key.name : await findKey(repo, password, 2);
      if (!v2Key) {
        v2Key = `${KEYS_PREFIX}${randomBytes(16).toString('hex')}`;
        await repo.store.put(v2Key, await writeKeyFile(repo.master, password, v2Key, 2), { ifNotExists: true });
      }
      killPoint('migrate:key');
      // the version 1 key file(s) of this password go, once the version 2 one is durable
      for (let old = await findKey(repo, password, 1); old; old = await findKey(repo, password, 1)) {
        await repo.store.delete(old);
        keyReplaced = v2Key;
      }
    }
    let otherV1Keys = 0;
    for await (const k of repo.store.list(KEYS_PREFIX)) {
      const json = JSON.parse((await repo.store.get(k.name)).toString('utf8')) as { version?: number };
      if (json.version === 1) otherV1Keys++;
    }

    // 4. old records go (any written since step 1 is converted first)
    const late = await convertRecords(repo, v1Catalog, v2Catalog);
    let recordsRemoved = 0;
    for (const name of await v1Catalog.v1Names()) {
      await repo.store.delete(name);
      recordsRemoved++;
      killPoint('migrate:cleanup');
    }
    return { from, to: 2, recordsConverted: recordsConverted + late, recordsRemoved, keyReplaced, otherV1Keys, alreadyDone: false };
  } finally {
    await lock.release().catch(() => {});
  }
}

/** Writes the version 2 copy of each version 1 record that has none yet; returns how many. */
async function convertRecords(repo: Repository, v1Catalog: SnapshotCatalog, v2Catalog: SnapshotCatalog): Promise<number> {
  let n = 0;
  for (const name of await v1Catalog.v1Names()) {
    const record = await v1Catalog.loadV1Name(name);
    const { name: target, sealed } = v2Catalog.encode(record);
    if (await repo.store.head(target)) continue;
    await repo.store.put(target, sealed, { ifNotExists: true, kind: 'metadata' });
    n++;
  }
  return n;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A key file of this version that opens with `password` to this repository's master key, if there is one. */
async function findKey(repo: Repository, password: string | null, version: 1 | 2): Promise<string | null> {
  for await (const k of repo.store.list(KEYS_PREFIX)) {
    const bytes = await repo.store.get(k.name);
    if ((JSON.parse(bytes.toString('utf8')) as { version?: number }).version !== version) continue;
    const opened = await openKeyFile(bytes, password, k.name).catch(() => null);
    if (opened && opened.master.idKey.equals(repo.master.idKey)) return k.name;
  }
  return null;
}
