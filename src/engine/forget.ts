/**
 * forget: removes snapshot records that a retention policy (or an explicit list) does
 * not keep, per VM. The blobs they referenced stay until a prune; forget alone only
 * deletes records, so it can never damage another snapshot.
 *
 * Order of a run (nothing is deleted before every check has passed):
 * 1. check the input (policy or ids, zone), list the snapshots (tombstoned ones are
 *    already gone from the list), resolve explicit ids (unknown -> UserError);
 * 2. read protection markers, running backups' leases and the EBS chains' bases;
 * 3. decide per VM; a VM whose snapshots the policy would all remove is refused unless
 *    allowEmpty (protection and guards do not count: they would hide a wrong policy);
 * 4. (not dry run) read protections and leases again, just before deleting, and keep
 *    whatever became protected or a parent meanwhile; delete the records; a record under
 *    Object Lock gets a tombstone instead (forgotten/<id>), so it stays forgotten;
 * 5. retry the records of older tombstones whose retention has lapsed;
 * 6. optionally prune (the caller passes the prune to run).
 */
import { UserError } from '../repo/errors.js';
import { Repository } from '../repo/repository.js';
import { isLocked } from '../store/blob-store.js';
import { protectedIds, readTombstone, removeTombstone, tombstonedIds, writeTombstone } from '../snapshot/protection.js';
import { RetentionPolicy, applyPolicy, describePolicy, isEmptyPolicy } from '../snapshot/retention.js';
import { SnapshotCatalog, SnapshotRecord } from '../snapshot/snapshot-record.js';
import { checkZone, localZone } from '../snapshot/zoned-time.js';
import { GuardMap, RunningBackup, ebsBaseGuards, runningBackupGuards, runningBackups } from './forget-guards.js';

export interface ForgetOptions {
  /** Only this VM's snapshots; default every VM, each on its own. */
  vm?: string;
  /** The policy (give this or `snapshots`). */
  policy?: RetentionPolicy;
  /** Explicit snapshots to forget: ids or unique prefixes. */
  snapshots?: string[];
  /** IANA zone the periods are counted in; default the local zone. */
  tz?: string;
  /** Default: the clock. */
  now?: Date;
  dryRun?: boolean;
  /** Allow a policy that removes every snapshot of a VM. */
  allowEmpty?: boolean;
  /** Run after the records are gone (not in a dry run); its result goes into the report. */
  prune?: (repo: Repository) => Promise<unknown>;
}

export type Outcome = 'keep' | 'remove' | 'removed' | 'tombstoned';

export interface SnapshotDecision {
  id: string;
  vm: string;
  time: string;
  committed: string | null;
  outcome: Outcome;
  /** Every reason it is kept: policy rules, `protected`, guards. Empty when removed. */
  reasons: string[];
  /** For a tombstoned record: until when Object Lock retains it. */
  retainUntil?: string | null;
}

export interface VmForget {
  vm: string;
  /** --keep-within counted back from this time (the VM's newest snapshot not in the future). */
  withinReference: string | null;
  withinCutoff: string | null;
  snapshots: SnapshotDecision[];
  kept: number;
  removed: number;
}

export interface ForgetReport {
  dryRun: boolean;
  tz: string;
  now: string;
  policy: string | null;
  vms: VmForget[];
  removed: string[];
  tombstoned: { id: string; retainUntil: string | null }[];
  /** Records of earlier tombstones deleted now that their retention lapsed. */
  tombstonesCleared: string[];
  prune?: unknown;
}

function mergeGuards(into: Map<string, string[]>, g: GuardMap): void {
  for (const [id, why] of g) into.set(id, [...(into.get(id) ?? []), ...why]);
}

async function guardsFor(repo: Repository, vm: string, records: SnapshotRecord[], backups: RunningBackup[], protectedSet: Set<string>): Promise<Map<string, string[]>> {
  const g = new Map<string, string[]>();
  for (const r of records) if (protectedSet.has(r.id)) g.set(r.id, ['protected']);
  mergeGuards(g, runningBackupGuards(backups, vm, records.length ? records[records.length - 1]!.id : null));
  mergeGuards(g, await ebsBaseGuards(repo, vm));
  return g;
}

export async function forgetSnapshots(repo: Repository, options: ForgetOptions): Promise<ForgetReport> {
  const explicit = options.snapshots ?? [];
  const policy = options.policy;
  if (explicit.length > 0 && policy && !isEmptyPolicy(policy)) {
    throw new UserError('give either snapshot ids or --keep-* options, not both');
  }
  if (explicit.length === 0 && (!policy || isEmptyPolicy(policy))) {
    throw new UserError('forget needs a policy (--keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, --keep-within) or snapshot ids');
  }
  const tz = checkZone(options.tz ?? localZone());
  const now = options.now ?? new Date();
  const catalog = new SnapshotCatalog(repo);
  const all = await catalog.list(options.vm);
  if (options.vm && all.length === 0) throw new UserError(`no snapshot of vm ${JSON.stringify(options.vm)} in ${repo.location}`);
  const wanted = new Set<string>();
  for (const ref of explicit) wanted.add((await catalog.resolve(ref, options.vm)).id);

  const byVm = new Map<string, SnapshotRecord[]>();
  for (const r of all) {
    const list = byVm.get(r.vm) ?? [];
    list.push(r);
    byVm.set(r.vm, list);
  }
  if (explicit.length > 0) {
    for (const [vm, list] of byVm) if (!list.some((r) => wanted.has(r.id))) byVm.delete(vm);
  }

  const [protectedSet, backups] = await Promise.all([protectedIds(repo), runningBackups(repo)]);
  const vms: VmForget[] = [];
  for (const [vm, records] of [...byVm].sort((a, b) => a[0].localeCompare(b[0]))) {
    const guards = await guardsFor(repo, vm, records, backups, protectedSet);
    const recById = new Map(records.map((r) => [r.id, r]));
    let decisions: SnapshotDecision[];
    const res = policy && !isEmptyPolicy(policy) ? applyPolicy(records, policy, { tz, now: now.getTime() }) : null;
    if (res) {
      const policyKeeps = res.decisions.filter((d) => d.keep).length;
      if (policyKeeps === 0 && !options.allowEmpty) {
        throw new UserError(
          `the policy ${describePolicy(policy!)} keeps none of the ${records.length} snapshot(s) of vm ${JSON.stringify(vm)}; pass --allow-empty to forget them all`,
        );
      }
      decisions = res.decisions.map((d) => {
        const reasons = [...d.reasons, ...(guards.get(d.id) ?? [])];
        return { id: d.id, vm, time: d.time, committed: recById.get(d.id)!.committed ?? null, outcome: reasons.length ? 'keep' : 'remove', reasons };
      });
    } else {
      for (const id of wanted) {
        const g = guards.get(id);
        if (recById.has(id) && g) throw new UserError(`snapshot ${id} cannot be forgotten: ${g.join('; ')}${g.includes('protected') ? ` (pilotlight unprotect ${id})` : ''}`);
      }
      decisions = [...records].reverse().map((r) => ({
        id: r.id,
        vm,
        time: r.time,
        committed: r.committed ?? null,
        outcome: wanted.has(r.id) ? 'remove' : 'keep',
        reasons: wanted.has(r.id) ? [] : ['not named'],
      }));
    }
    vms.push({
      vm,
      withinReference: res?.withinReference ?? null,
      withinCutoff: res?.withinCutoff ?? null,
      snapshots: decisions,
      kept: decisions.filter((d) => d.outcome === 'keep').length,
      removed: decisions.filter((d) => d.outcome === 'remove').length,
    });
  }

  const report: ForgetReport = {
    dryRun: options.dryRun ?? false,
    tz,
    now: now.toISOString(),
    policy: policy && !isEmptyPolicy(policy) ? describePolicy(policy) : null,
    vms,
    removed: [],
    tombstoned: [],
    tombstonesCleared: [],
  };
  if (options.dryRun) return report;

  // Just before deleting: whatever became protected or a running backup's parent since
  // the decisions were made is kept after all.
  const [protectedNow, backupsNow] = await Promise.all([protectedIds(repo), runningBackups(repo)]);
  for (const v of vms) {
    const late = runningBackupGuards(backupsNow, v.vm, null);
    for (const d of v.snapshots) {
      if (d.outcome !== 'remove') continue;
      const why = [...(protectedNow.has(d.id) ? ['protected'] : []), ...(late.get(d.id) ?? [])];
      if (why.length) {
        d.outcome = 'keep';
        d.reasons = why;
        v.kept++;
        v.removed--;
      }
    }
  }
  for (const v of vms) {
    for (const d of v.snapshots) {
      if (d.outcome !== 'remove') continue;
      try {
        await catalog.delete(d.id, d.vm);
        d.outcome = 'removed';
        report.removed.push(d.id);
      } catch (err) {
        if (!isLocked(err)) throw err;
        const retainUntil = err.retainUntil ? err.retainUntil.toISOString() : null;
        await writeTombstone(repo, { snapshot: d.id, vm: d.vm, forgotten: new Date().toISOString(), ...(retainUntil ? { retainUntil } : {}) });
        d.outcome = 'tombstoned';
        d.retainUntil = retainUntil;
        report.tombstoned.push({ id: d.id, retainUntil });
      }
    }
  }
  report.tombstonesCleared = await clearLapsedTombstones(repo, new Set(report.tombstoned.map((t) => t.id)));
  if (options.prune) report.prune = await options.prune(repo);
  return report;
}

/**
 * Deletes the records of tombstoned snapshots whose Object Lock retention has lapsed,
 * then their tombstones. `skip`: tombstones written by this run.
 */
export async function clearLapsedTombstones(repo: Repository, skip: Set<string> = new Set()): Promise<string[]> {
  const cleared: string[] = [];
  for (const id of await tombstonedIds(repo)) {
    if (skip.has(id)) continue;
    const t = await readTombstone(repo, id);
    if (t?.retainUntil && Date.parse(t.retainUntil) > Date.now()) continue;
    try {
      await new SnapshotCatalog(repo).delete(id, t?.vm);
    } catch (err) {
      if (isLocked(err)) continue;
      throw err;
    }
    await removeTombstone(repo, id);
    cleared.push(id);
  }
  return cleared;
}
