/**
 * `pilotlight status`: every protected VM with its newest snapshot, its age against the
 * RPO target, the last error and the EBS shadow state, read from the repository (the
 * snapshot records, the service's status records, the EBS maps): the service need not run.
 */
import { listEbsMaps } from '../cloud/ebs-map.js';
import type { Repository } from '../repo/repository.js';
import { SnapshotCatalog, SnapshotRecord } from '../snapshot/snapshot-record.js';
import { STATUS_PREFIX, VmStatus, readStatusObject, readVmStatus } from './vm-status.js';

export interface VmStatusLine {
  vm: string;
  job: string | null;
  repository: string;
  newestSnapshot: string | null;
  newestTime: string | null;
  ageSeconds: number | null;
  rpoTargetSeconds: number | null;
  withinRpo: boolean | null;
  lastRun: VmStatus['lastRun'] | null;
  lastError: VmStatus['lastError'] | null;
  consecutiveFailures: number;
  ebs: { pushedSnapshot: string; ebsSnapshotId: string; lagSeconds: number } | null;
}

export interface StatusTarget {
  vm: string;
  job?: string;
  rpoTargetSeconds?: number;
}

/** Status of the given VMs (all VMs with snapshots or status records when none given). */
export async function vmStatuses(repo: Repository, repository: string, targets?: StatusTarget[], now = Date.now()): Promise<VmStatusLine[]> {
  const newest = new Map<string, SnapshotRecord>();
  for (const r of await new SnapshotCatalog(repo).list()) newest.set(r.vm, r);
  let list = targets;
  if (!list) {
    const names = new Set(newest.keys());
    for await (const b of repo.store.list(STATUS_PREFIX)) {
      const st = await readStatusObject(repo, b.name).catch(() => null);
      if (st) names.add(st.vm);
    }
    list = [...names].sort().map((vm) => ({ vm }));
  }
  const out: VmStatusLine[] = [];
  for (const t of list) {
    const rec = newest.get(t.vm);
    const st = await readVmStatus(repo, t.vm).catch(() => null);
    const target = t.rpoTargetSeconds ?? st?.rpoTargetSeconds ?? null;
    const age = rec ? Math.max(0, Math.round((now - Date.parse(rec.time)) / 1000)) : null;
    const maps = rec ? await listEbsMaps(repo.store, t.vm, 0) : [];
    const pushed = maps[maps.length - 1];
    out.push({
      vm: t.vm,
      job: t.job ?? st?.job ?? null,
      repository,
      newestSnapshot: rec?.id ?? null,
      newestTime: rec?.time ?? null,
      ageSeconds: age,
      rpoTargetSeconds: target,
      withinRpo: target === null ? null : age !== null && age <= target,
      lastRun: st?.lastRun ?? null,
      lastError: st?.lastError ?? null,
      consecutiveFailures: st?.consecutiveFailures ?? 0,
      ebs:
        pushed && rec
          ? { pushedSnapshot: pushed.snapshot, ebsSnapshotId: pushed.ebsSnapshotId, lagSeconds: Math.max(0, Math.round((Date.parse(rec.time) - Date.parse(pushed.snapshotTime)) / 1000)) }
          : null,
    });
  }
  return out;
}
