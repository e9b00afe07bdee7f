/**
 * CLI for the NBD source: `backup nbd URI [URI...]` (QEMU dirty bitmaps as the change
 * list). Parses options and prints; the source lives in src/source/nbd/.
 */
import { Command } from 'commander';
import { runBackup } from '../engine/backup.js';
import type { NbdSource } from '../source/nbd/nbd-source.js';
import { addAfterBackupOptions, afterBackup, interruptSignal, printBackupReport } from './commands.js';
import { globals, openRepo } from './context.js';
import { terminalProgress } from './progress.js';

interface NbdBackupOptions {
  vm: string;
  bitmap?: string;
  checkpoint?: string;
  sinceCheckpoint?: string;
  qmp?: string;
  parent: string;
  ebsShadow?: boolean;
  region?: string;
}

export function registerNbdBackup(backup: Command): void {
  const cmd = backup
    .command('nbd')
    .description('back up disks served over NBD (qemu-nbd, qemu-storage-daemon, libvirt pull-mode backups), one per URI, reading QEMU dirty bitmaps as the change list')
    .argument('<uri...>', 'nbd+unix:///EXPORT?socket=PATH or nbd://HOST:PORT/EXPORT, one per disk, in order')
    .requiredOption('--vm <name>', 'the VM these disks belong to')
    .option('--bitmap <name>', "dirty bitmap holding every write since the parent snapshot's checkpoint (qemu:dirty-bitmap:NAME)")
    .option('--checkpoint <name>', 'the bitmap (checkpoint) that records writes from this backup on (default: --bitmap); alone, on a first backup')
    .option('--since-checkpoint <name>', "the checkpoint --bitmap records writes since, when the bitmap is named otherwise (libvirt's backup-vda)")
    .option('--qmp <socket>', 'QMP socket of the qemu or qemu-storage-daemon serving the disks: pilotlight adds, exports and removes the bitmaps itself')
    .option('--parent <snapshot>', "parent snapshot: 'auto' (latest of the vm), 'none', or an id", 'auto');
  addAfterBackupOptions(cmd).action(async (uris: string[], opts: NbdBackupOptions, c: Command) => {
    const g = globals(c);
    const repo = await openRepo(c);
    const { signal, dispose } = interruptSignal();
    let source: NbdSource | undefined;
    try {
      const { NbdSource } = await import('../source/nbd/nbd-source.js');
      source = await NbdSource.open({
        vm: opts.vm,
        uris,
        bitmap: opts.bitmap,
        checkpoint: opts.checkpoint,
        sinceCheckpoint: opts.sinceCheckpoint,
        qmp: opts.qmp,
        log: g.json ? undefined : (m) => process.stderr.write(`pilotlight: ${m}\n`),
      });
      const report = await runBackup(repo, source, { parent: opts.parent, progress: g.json ? undefined : terminalProgress('backup'), signal, sourceKind: 'nbd' });
      await source.committed();
      await source.close();
      const extra = await afterBackup(repo, report, opts);
      printBackupReport(repo, report, { ...extra, ...(source.notes.length ? { notes: source.notes } : {}) }, g.json);
    } finally {
      dispose();
      await source?.close().catch((e: Error) => {
        process.stderr.write(`pilotlight: ${e.message}\n`);
        process.exitCode = process.exitCode || 1;
      });
      await repo.close();
    }
  });
}
