import { Command, Option } from 'commander';
import { restoreDisk } from '../engine/restore.js';
import { diffSnapshots, repositoryStats } from '../engine/stats.js';
import { UserError } from '../repo/errors.js';
import { SnapshotCatalog } from '../snapshot/snapshot-record.js';
import { FileSource } from '../source/file-source.js';
import { formatBytes, globals, initRepo, openRepo, parseIntOption, printJson, storeRequests } from './context.js';
import { terminalProgress } from './progress.js';
import { runBackupJob } from '../service/job.js';
import { addAfterBackupOptions, afterBackupJobOptions, printJobResult } from './backup-output.js';
import { interruptSignal } from './interrupt.js';

export function registerInit(program: Command): void {
  program
    .command('init')
    .description('create a repository (encrypted unless --no-encryption)')
    .option('--no-encryption', 'store blobs unencrypted (chunk ids stay keyed)')
    .addOption(new Option('--compression <codec>', 'default chunk compression').choices(['zstd', 'lz4', 'none']).default('zstd'))
    .option('--pack-size <MiB>', 'target pack size in MiB', parseIntOption('--pack-size'), 16)
    .option('--immutable-days <n>', 'Object Lock: every object a snapshot needs is retained n days from its write (S3 bucket with Object Lock)', parseIntOption('--immutable-days'))
    .addOption(new Option('--immutable-mode <mode>', 'Object Lock mode: compliance (nobody can delete early) or governance (a bypass permission can)').choices(['compliance', 'governance']).default('compliance'))
    .action(async (opts: { encryption: boolean; compression: 'zstd' | 'lz4' | 'none'; packSize: number; immutableDays?: number; immutableMode: string }, cmd: Command) => {
      if (opts.packSize < 1 || opts.packSize > 1024) throw new UserError('--pack-size must be between 1 and 1024 MiB');
      if (opts.immutableDays !== undefined && opts.immutableDays < 1) throw new UserError('--immutable-days must be at least 1');
      const objectLock = opts.immutableDays !== undefined ? { mode: opts.immutableMode.toUpperCase() as 'COMPLIANCE' | 'GOVERNANCE', days: opts.immutableDays } : undefined;
      const repo = await initRepo(cmd, {
        encrypted: opts.encryption && globals(cmd).encryption !== false,
        compression: opts.compression,
        packSize: opts.packSize * 1048576,
        objectLock,
      });
      try {
        const out = {
          repository: repo.location,
          id: repo.config.id,
          encryption: repo.config.encryption,
          compression: repo.config.compression,
          version: repo.config.version,
          ...(repo.config.objectLock ? { objectLock: repo.config.objectLock } : {}),
        };
        if (globals(cmd).json) printJson(out);
        else {
          const lock = repo.config.objectLock ? `, Object Lock ${repo.config.objectLock.mode} ${repo.config.objectLock.days} days` : '';
          process.stdout.write(`created repository ${repo.config.id} at ${repo.location} (${repo.config.encryption}, ${repo.config.compression}${lock})\n`);
        }
      } finally {
        await repo.close();
      }
    });
}

export function registerBackupFile(backup: Command): void {
  backup
    .command('file')
    .description('back up raw disk images or block devices (one per disk, in order)')
    .argument('<image...>', 'raw image files or block devices')
    .requiredOption('--vm <name>', 'the VM these disks belong to')
    .option('--changed-extents <file...>', 'change list per disk ("offset length" lines, bytes), as QueryChangedDiskAreas gives')
    .option('--full', 'read every byte (ignore holes and change lists)')
    .option('--taken-at <time>', "when the images' content was frozen (ISO 8601; an LVM/ZFS snapshot taken earlier): the snapshot's time. Default: when reading starts")
    .option('--parent <snapshot>', "parent snapshot: 'auto' (latest of the vm), 'none', or an id", 'auto');
  addAfterBackupOptions(backup.commands[backup.commands.length - 1]!).action(
    async (images: string[], opts: { vm: string; changedExtents?: string[]; full?: boolean; parent: string; takenAt?: string; ebsShadow?: boolean; region?: string }, cmd: Command) => {
      const takenAt = opts.takenAt !== undefined ? parseTakenAt(opts.takenAt) : undefined;
      if (opts.changedExtents && opts.changedExtents.length !== images.length) {
        throw new UserError(`${images.length} image(s) but ${opts.changedExtents.length} change list(s): give one per image`);
      }
      const repo = await openRepo(cmd);
      const source = await FileSource.open(opts.vm, images, { changedExtents: opts.changedExtents, full: opts.full, takenAt }).catch(async (e) => {
        await repo.close();
        throw e;
      });
      const { signal, dispose } = interruptSignal();
      try {
        const g = globals(cmd);
        const result = await runBackupJob(repo, source, {
          parent: opts.parent,
          progress: terminalProgress('backup'),
          signal,
          sourceKind: 'file',
          ...afterBackupJobOptions(opts),
        });
        const requests = storeRequests(repo);
        printJobResult(result, g.json === true, requests ? { requests } : {});
      } finally {
        dispose();
        await source.close();
        await repo.close();
      }
    },
  );
}

/** --taken-at: an ISO 8601 time with a zone (Z or an offset), not in the future. */
function parseTakenAt(text: string): Date {
  const t = /(Z|[+-]\d{2}:?\d{2})$/i.test(text.trim()) ? Date.parse(text) : NaN;
  if (!Number.isFinite(t)) throw new UserError(`--taken-at ${JSON.stringify(text)}: give an ISO 8601 time with its zone, e.g. 2026-11-30T14:00:00Z`);
  if (t > Date.now() + 60_000) throw new UserError(`--taken-at ${text} is in the future`);
  return new Date(t);
}

export function registerSnapshots(program: Command): void {
  program
    .command('snapshots')
    .description('list snapshots, oldest first')
    .option('--vm <name>', 'only this vm')
    .action(async (opts: { vm?: string }, cmd: Command) => {
      const repo = await openRepo(cmd);
      try {
        const list = await new SnapshotCatalog(repo).list(opts.vm);
        if (globals(cmd).json) {
          printJson(
            list.map((s) => ({
              id: s.id,
              vm: s.vm,
              time: s.time,
              committed: s.committed ?? null,
              parent: s.parent,
              host: s.host,
              source: s.source,
              disks: s.disks.map((d) => ({ name: d.name, capacity: d.capacity, nonZeroBytes: d.nonZeroBytes, changeToken: d.changeToken ?? null, read: d.read })),
              stats: s.stats,
            })),
          );
        } else {
          for (const s of list) {
            process.stdout.write(`${s.id}  ${s.time}  ${s.vm}  ${s.disks.length} disk(s)  ${s.disks.map((d) => formatBytes(d.capacity)).join(', ')}\n`);
          }
        }
      } finally {
        await repo.close();
      }
    });
}

function parseModeOption(v: string): number {
  if (!/^0?[0-7]{3}$/.test(v)) throw new UserError(`--mode takes octal permission bits such as 0600 or 640, not ${JSON.stringify(v)}`);
  return parseInt(v, 8);
}

export type RestoreToS3 = (repo: unknown, record: unknown, disk: number, url: string, opts: Record<string, unknown>) => Promise<unknown>;

export function registerRestore(program: Command, restoreToS3?: RestoreToS3): void {
  program
    .command('restore')
    .description('write a point-in-time disk image to a file, block device or s3://BUCKET/KEY')
    .argument('<snapshot>', "snapshot id (or unique prefix), or 'latest'")
    .option('--vm <name>', 'the vm (needed with latest)')
    .option('--disk <n>', 'disk index', parseIntOption('--disk'), 0)
    .requiredOption('--to <path>', 'target file, block device, or s3://BUCKET/KEY')
    .option('--since <snapshot>', 'the target already holds this older snapshot: write only what changed')
    .option('--force', 'replace an existing file (the old one stays whole until the new one is complete)')
    .option('--mode <octal>', 'permission bits of a restored file (default 0600)', parseModeOption)
    .action(async (ref: string, opts: { vm?: string; disk: number; to: string; since?: string; force?: boolean; mode?: number }, cmd: Command) => {
      const repo = await openRepo(cmd);
      try {
        const catalog = new SnapshotCatalog(repo);
        const record = await catalog.resolve(ref, opts.vm);
        let report: unknown;
        if (opts.to.startsWith('s3://')) {
          if (!restoreToS3) throw new UserError('restore to s3:// is not available in this build');
          report = await restoreToS3(repo, record, opts.disk, opts.to, { ...globals(cmd), progress: terminalProgress('upload') });
        } else {
          const since = opts.since ? await catalog.resolve(opts.since, opts.vm ?? record.vm) : undefined;
          const r = await restoreDisk(repo, record, opts.disk, opts.to, { force: opts.force, since, mode: opts.mode, progress: terminalProgress('restore') });
          report = r;
          if (!globals(cmd).json) {
            process.stdout.write(
              `restored ${r.vm} disk ${r.disk} of ${r.snapshot} to ${r.to}: ${formatBytes(r.capacity)}, wrote ${formatBytes(r.bytesWritten)}` +
                `${r.since ? ` (changes since ${r.since})` : ''} in ${(r.durationMs / 1000).toFixed(1)} s\n`,
            );
          }
        }
        if (globals(cmd).json) printJson(report);
      } finally {
        await repo.close();
      }
    });
}

export function registerDiff(program: Command): void {
  program
    .command('diff')
    .description('chunks and bytes that differ between two snapshots, per disk')
    .argument('<a>')
    .argument('<b>')
    .option('--vm <name>', 'the vm (needed with latest)')
    .action(async (a: string, b: string, opts: { vm?: string }, cmd: Command) => {
      const repo = await openRepo(cmd);
      try {
        const d = await diffSnapshots(repo, a, b, opts.vm);
        if (globals(cmd).json) printJson(d);
        else {
          process.stdout.write(`${d.a} -> ${d.b}\n`);
          for (const x of d.disks) process.stdout.write(`  ${x.disk}: ${x.status}, ${x.changedChunks} chunks, ${formatBytes(x.changedBytes)}\n`);
        }
      } finally {
        await repo.close();
      }
    });
}

export function registerStats(program: Command): void {
  program
    .command('stats')
    .description('repository size, dedup and compression ratios')
    .action(async (_opts: unknown, cmd: Command) => {
      const repo = await openRepo(cmd);
      try {
        const s = await repositoryStats(repo);
        const requests = storeRequests(repo);
        if (globals(cmd).json) printJson({ ...s, ...(requests ? { requests } : {}) });
        else {
          process.stdout.write(
            `${s.snapshots} snapshot(s) of ${s.vms} vm(s): ${formatBytes(s.logicalBytes)} protected, ${formatBytes(s.storedBytes)} stored in ${s.objects} objects\n` +
              `${s.uniqueChunks} unique chunks; dedup ${s.dedupRatio.toFixed(2)}x, compression ${s.compressionRatio.toFixed(2)}x\n`,
          );
        }
      } finally {
        await repo.close();
      }
    });
}
