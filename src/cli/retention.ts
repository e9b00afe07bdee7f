import { Command } from 'commander';
import { ForgetReport, forgetSnapshots } from '../engine/forget.js';
import { PruneReport, prune } from '../engine/prune.js';
import { UserError } from '../repo/errors.js';
import { defaultHost, SnapshotCatalog } from '../snapshot/snapshot-record.js';
import { protectSnapshot, unprotectSnapshot } from '../snapshot/protection.js';
import { policyFromKeepOptions } from '../snapshot/retention.js';
import { formatBytes, globals, openRepo, parseIntOption, printJson, storeRequests } from './context.js';

interface ForgetCliOptions {
  vm?: string;
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  keepYearly?: number;
  keepWithin?: string;
  tz?: string;
  dryRun?: boolean;
  prune?: boolean;
  allowEmpty?: boolean;
}

function printForget(r: ForgetReport): void {
  for (const v of r.vms) {
    const within = v.withinReference ? `; --keep-within counted back from the newest snapshot, ${v.withinReference}, to ${v.withinCutoff}` : '';
    process.stdout.write(`vm ${v.vm}: keep ${v.kept}, ${r.dryRun ? 'would remove' : 'remove'} ${v.removed} (periods in ${r.tz}${within})\n`);
    for (const d of v.snapshots) {
      const what =
        d.outcome === 'tombstoned'
          ? `forgotten; record locked${d.retainUntil ? ` until ${d.retainUntil}` : ''} (tombstone written)`
          : d.reasons.join(', ');
      process.stdout.write(`  ${d.outcome.padEnd(10)} ${d.id}  ${d.time}${what ? `  ${what}` : ''}\n`);
    }
  }
  const gone = r.removed.length + r.tombstoned.length;
  if (r.dryRun) process.stdout.write(`dry run: nothing was deleted\n`);
  else {
    process.stdout.write(`forgot ${gone} snapshot(s)${r.tombstoned.length ? `, ${r.tombstoned.length} of them behind a tombstone until their Object Lock date` : ''}`);
    process.stdout.write(r.prune === undefined && gone > 0 ? `; run 'pilotlight prune' to free their data\n` : '\n');
  }
  if (r.prune) {
    const p = r.prune as PruneReport;
    process.stdout.write(
      `pruned (GC epoch ${p.epoch}): deleted ${p.deleted.packs} pack(s), ${formatBytes(p.deleted.bytes)}; repacked ${p.repacked.packs} pack(s), ${formatBytes(p.repacked.bytes)}\n`,
    );
  }
  if (r.tombstonesCleared.length) process.stdout.write(`deleted the retained records of ${r.tombstonesCleared.length} earlier forgotten snapshot(s)\n`);
}

export function registerForget(program: Command): void {
  const n = (flag: string) => parseIntOption(flag);
  program
    .command('forget')
    .description('remove snapshots that a retention policy does not keep (per vm); data is freed by prune')
    .argument('[snapshot...]', 'forget exactly these snapshots (ids or unique prefixes) instead of applying a policy')
    .option('--vm <name>', 'only this vm (default: every vm, each on its own)')
    .option('--keep-last <n>', 'keep the n newest snapshots', n('--keep-last'))
    .option('--keep-hourly <n>', 'keep the newest snapshot of each of the last n hours that have one', n('--keep-hourly'))
    .option('--keep-daily <n>', 'keep the newest snapshot of each of the last n days that have one', n('--keep-daily'))
    .option('--keep-weekly <n>', 'keep the newest snapshot of each of the last n ISO weeks that have one', n('--keep-weekly'))
    .option('--keep-monthly <n>', 'keep the newest snapshot of each of the last n months that have one', n('--keep-monthly'))
    .option('--keep-yearly <n>', 'keep the newest snapshot of each of the last n years that have one', n('--keep-yearly'))
    .option('--keep-within <duration>', 'keep every snapshot within this long of the newest one (2d, 12h, 30min, 1y6m)')
    .option('--tz <zone>', 'IANA time zone the periods are counted in (default: the local zone)')
    .option('--dry-run', 'list every snapshot with keep/remove and why; delete nothing')
    .option('--prune', 'prune after forgetting (frees the data no snapshot needs any more)')
    .option('--allow-empty', 'allow a policy that keeps none of a vm\'s snapshots')
    .action(async (ids: string[], opts: ForgetCliOptions, cmd: Command) => {
      const policy = policyFromKeepOptions(opts);
      if (opts.prune && opts.dryRun) throw new UserError('--prune and --dry-run conflict: a dry run deletes nothing, so there is nothing to prune');
      if (opts.allowEmpty && ids.length > 0) throw new UserError('--allow-empty goes with a policy, not with snapshot ids');
      const repo = await openRepo(cmd);
      try {
        const report = await forgetSnapshots(repo, {
          vm: opts.vm,
          policy,
          snapshots: ids,
          tz: opts.tz,
          dryRun: opts.dryRun,
          allowEmpty: opts.allowEmpty,
          ...(opts.prune ? { prune: (r) => prune(r, { log: (l) => process.env.PILOTLIGHT_DEBUG && process.stderr.write(`prune: ${l}\n`) }) } : {}),
        });
        const requests = storeRequests(repo);
        if (globals(cmd).json) printJson({ ...report, ...(requests ? { requests } : {}) });
        else printForget(report);
      } finally {
        await repo.close();
      }
    });
}

export function registerProtect(program: Command): void {
  program
    .command('protect')
    .description('protect a snapshot: forget never removes it until unprotect')
    .argument('<snapshot>', "snapshot id (or unique prefix), or 'latest' with --vm")
    .option('--vm <name>', 'the vm (needed with latest)')
    .option('--note <text>', 'why it is protected (kept in the marker)')
    .action(async (ref: string, opts: { vm?: string; note?: string }, cmd: Command) => {
      const repo = await openRepo(cmd);
      try {
        const snap = await new SnapshotCatalog(repo).resolve(ref, opts.vm);
        const changed = await protectSnapshot(repo, snap, defaultHost(), opts.note);
        if (globals(cmd).json) printJson({ snapshot: snap.id, vm: snap.vm, protected: true, changed });
        else process.stdout.write(`snapshot ${snap.id} of ${snap.vm} ${changed ? 'is now protected' : 'was already protected'}\n`);
      } finally {
        await repo.close();
      }
    });
  program
    .command('unprotect')
    .description('remove the protection of a snapshot (forget may then remove it)')
    .argument('<snapshot>', "snapshot id (or unique prefix), or 'latest' with --vm")
    .option('--vm <name>', 'the vm (needed with latest)')
    .action(async (ref: string, opts: { vm?: string }, cmd: Command) => {
      const repo = await openRepo(cmd);
      try {
        const snap = await new SnapshotCatalog(repo).resolve(ref, opts.vm);
        const changed = await unprotectSnapshot(repo, snap.id);
        if (globals(cmd).json) printJson({ snapshot: snap.id, vm: snap.vm, protected: false, changed });
        else process.stdout.write(`snapshot ${snap.id} of ${snap.vm} ${changed ? 'is no longer protected' : 'was not protected'}\n`);
      } finally {
        await repo.close();
      }
    });
}
