import { Command } from 'commander';
import { prune } from '../engine/prune.js';
import { UserError } from '../repo/errors.js';
import { writeFence } from '../repo/fence.js';
import { listLeases } from '../repo/lease.js';
import { formatBytes, globals, openRepo, printJson, storeRequests } from './context.js';

/** `5%`, `0.05`, `5` (percent) -> a fraction. */
export function parsePercent(v: string): number {
  const m = /^(\d+(?:\.\d+)?)%?$/.exec(v.trim());
  if (!m) throw new UserError(`--max-unused takes a percentage like 5%, got ${JSON.stringify(v)}`);
  const n = Number(m[1]) / 100;
  if (n < 0 || n > 1) throw new UserError(`--max-unused must be between 0% and 100%, got ${v}`);
  return n;
}

/** `500M`, `10G`, `1T`, plain bytes. */
export function parseSize(v: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B)?$/i.exec(v.trim());
  if (!m) throw new UserError(`--max-repack-size takes a size like 10G or 500M, got ${JSON.stringify(v)}`);
  const mult = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 }[m[2]!.toUpperCase() as ''];
  return Math.floor(Number(m[1]) * mult);
}

export function registerGc(program: Command): void {
  program
    .command('prune')
    .description('delete unreferenced data and repack sparse packs; safe while backups run')
    .option('--max-unused <percent>', 'repack packs with more unused space than this', '5%')
    .option('--max-repack-size <size>', 'repack at most this much live data (e.g. 10G)')
    .option('--dry-run', 'report what would be deleted and repacked; change nothing')
    .action(async (opts: { maxUnused: string; maxRepackSize?: string; dryRun?: boolean }, cmd: Command) => {
      const maxUnused = parsePercent(opts.maxUnused);
      const maxRepackBytes = opts.maxRepackSize !== undefined ? parseSize(opts.maxRepackSize) : undefined;
      const repo = await openRepo(cmd);
      try {
        const g = globals(cmd);
        const r = await prune(repo, { maxUnused, maxRepackBytes, dryRun: opts.dryRun, log: (s) => process.env.PILOTLIGHT_DEBUG && process.stderr.write(`prune: ${s}\n`) });
        const requests = storeRequests(repo);
        if (g.json) printJson({ ...r, ...(requests ? { requests } : {}) });
        else {
          const verb = r.dryRun ? 'would delete' : 'deleted';
          process.stdout.write(
            `${r.dryRun ? 'dry run: ' : `GC epoch ${r.epoch}: `}${r.snapshots} snapshot(s), ${r.blobs.live} live blobs (${formatBytes(r.blobs.liveBytes)}) in ${r.packs.listed} packs (${formatBytes(r.packs.bytes)})\n` +
              `  ${verb} ${r.deleted.packs} pack(s), ${formatBytes(r.deleted.bytes)} (${r.orphans.deleted} orphan(s) of crashed backups; ${r.orphans.kept} kept for running ones)\n` +
              `  ${r.dryRun ? 'would repack' : 'repacked'} ${r.repacked.packs} pack(s), ${formatBytes(r.repacked.bytes)}${r.dryRun ? '' : `: ${r.repacked.blobsCopied} blobs copied into ${r.repacked.packsWritten} new pack(s)`}\n` +
              `  index files: ${r.indexFiles.listed} listed, ${r.indexFiles.superseded} ${r.dryRun ? 'to supersede' : `superseded by ${r.indexFiles.written}`}\n` +
              (r.leases.waitedFor ? `  waited for ${r.leases.waitedFor} backup(s): ${r.leases.acknowledged} acknowledged, ${r.leases.ended} ended, ${r.leases.fenced.length} fenced\n` : ''),
          );
        }
      } finally {
        await repo.close();
      }
    });

  program
    .command('locks')
    .description('list leases: the backups and prunes working on the repository')
    .action(async (_o: unknown, cmd: Command) => {
      const repo = await openRepo(cmd);
      try {
        const leases = await listLeases(repo);
        if (globals(cmd).json) printJson(leases);
        else if (leases.length === 0) process.stdout.write('no leases\n');
        else
          for (const l of leases) {
            process.stdout.write(
              `${l.id}  ${l.operation}${l.vm ? ` ${l.vm}` : ''}  ${l.host} pid ${l.pid}  refreshed ${l.refreshed}  ${l.expired ? 'EXPIRED' : `expires ${l.expires}`}  epoch ${l.seenEpoch}${l.parent ? `  parent ${l.parent}` : ''}\n`,
            );
          }
      } finally {
        await repo.close();
      }
    });

  program
    .command('unlock')
    .description('remove expired leases (a live one only with --force); the holder is fenced and commits nothing')
    .option('--force', 'also remove leases that have not expired (their backups will fail)')
    .action(async (opts: { force?: boolean }, cmd: Command) => {
      const repo = await openRepo(cmd);
      try {
        const leases = await listLeases(repo);
        const removed: string[] = [];
        for (const l of leases) {
          if (!l.expired && !opts.force) continue;
          if (!l.expired) process.stderr.write(`pilotlight: warning: removing live lease ${l.id} (${l.operation} on ${l.host}, pid ${l.pid}); that process will fail and commit nothing\n`);
          await writeFence(repo.store, l.id, 'unlock', l.expired ? 'expired' : 'removed with --force');
          await repo.store.delete(l.name);
          removed.push(l.id);
        }
        const kept = leases.length - removed.length;
        if (globals(cmd).json) printJson({ removed, kept });
        else process.stdout.write(`removed ${removed.length} lease(s)${kept ? `; ${kept} live lease(s) kept (--force removes them)` : ''}\n`);
      } finally {
        await repo.close();
      }
    });
}
