/**
 * Snapshots that `forget` must keep whatever the policy says, besides protected ones:
 *
 * - the parent of a running backup: the backup builds its manifests on the parent's
 *   and records it as its parent (read from the backup leases; a lease that expired is
 *   still honoured until it is removed: a kept snapshot costs space, a lost parent
 *   costs a full read and, with a stale cache, could cost data);
 * - the snapshot each EBS shadow chain was last pushed from: the next `ebs push` diffs
 *   against its manifest (cloud/ebs-map.ts). Kept until a newer one is pushed.
 */
import { listLeases } from '../repo/lease.js';
import { Repository } from '../repo/repository.js';
import { EBS_MAP_PREFIX, EbsMapRecord, encodeSegment } from '../cloud/ebs-map.js';

/** snapshot id -> why it is kept. */
export type GuardMap = Map<string, string[]>;

function add(m: GuardMap, id: string, why: string): void {
  const list = m.get(id);
  if (list) list.push(why);
  else m.set(id, [why]);
}

export interface RunningBackup {
  vm: string | null;
  /** null: not chosen yet (the lease is taken before the parent is looked up), or none. */
  parent: string | null;
  host: string;
  pid: number;
  expired: boolean;
}

/** Backups in progress, from the repository's leases. */
export async function runningBackups(repo: Repository): Promise<RunningBackup[]> {
  const out: RunningBackup[] = [];
  for (const l of await listLeases(repo)) {
    if (l.operation !== 'backup') continue;
    out.push({ vm: l.vm, parent: l.parent, host: l.host, pid: l.pid, expired: l.expired });
  }
  return out;
}

/**
 * Guards for one VM's snapshots (`newest` is the VM's newest snapshot id: what a backup
 * whose lease does not say its parent would pick).
 */
export function runningBackupGuards(backups: RunningBackup[], vm: string, newest: string | null): GuardMap {
  const m: GuardMap = new Map();
  for (const b of backups) {
    const who = `${b.host} pid ${b.pid}${b.expired ? ', lease expired: `pilotlight unlock` removes it' : ''}`;
    if (b.parent) {
      add(m, b.parent, `parent of a running backup (${who})`);
    } else if ((b.vm === null || b.vm === vm) && newest) {
      // The lease does not name a parent (yet): the backup may be about to pick the newest.
      add(m, newest, `newest snapshot while a backup of this vm is choosing its parent (${who})`);
    }
  }
  return m;
}

/** The snapshot each EBS chain (disk, region) of `vm` was last pushed from. */
export async function ebsBaseGuards(repo: Repository, vm: string): Promise<GuardMap> {
  const newest = new Map<string, EbsMapRecord>();
  const prefix = `${EBS_MAP_PREFIX}${encodeSegment(vm)}/`;
  for await (const b of repo.store.list(prefix)) {
    const rec = JSON.parse((await repo.store.get(b.name)).toString('utf8')) as EbsMapRecord;
    if (rec.format !== 'pilotlight-ebs-map' || rec.vm !== vm) continue;
    const chain = `${rec.diskIndex}/${rec.region ?? ''}`;
    const cur = newest.get(chain);
    if (!cur || rec.snapshotTime > cur.snapshotTime || (rec.snapshotTime === cur.snapshotTime && rec.snapshot > cur.snapshot)) newest.set(chain, rec);
  }
  const m: GuardMap = new Map();
  for (const rec of newest.values()) {
    add(m, rec.snapshot, `last pushed to EBS (disk ${rec.diskIndex}${rec.region ? `, ${rec.region}` : ''}, ${rec.ebsSnapshotId}): the next ebs push diffs against it`);
  }
  return m;
}
