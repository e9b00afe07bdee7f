/**
 * One backup job for one VM, the same for `backup file`, `backup vsphere` and the
 * service: the backup itself (with its verification sampling: `verifyUnchangedPercent`
 * of the chunks a change list calls unchanged are read and compared with the parent),
 * then the source is released (a vSphere snapshot removed before anything slow), then
 * the optional EBS shadow push, then the optional retention policy. Every step after
 * the commit runs even when an earlier one failed (a failed release does not stop the
 * EBS push); the first failure is the one reported.
 *
 * A failure before the commit throws, as runBackup does: nothing was committed. A
 * failure after the commit does not throw: the result carries the snapshot id AND the
 * step that failed (`failedStep`, `error`), so a scheduler does not redo a backup that
 * succeeded; the CLI exits with EXIT_COMMITTED_STEP_FAILED (4) then.
 */
import { BackupOptions, BackupReport, runBackup } from '../engine/backup.js';
import type { EbsPushResult } from '../cloud/ebs-push.js';
import type { PushSnapshotOptions } from '../cloud/ebs-shadow.js';
import type { Repository } from '../repo/repository.js';
import { SnapshotCatalog } from '../snapshot/snapshot-record.js';
import type { DiskSource } from '../source/disk-source.js';
import { RetentionOutcome, RetentionPolicy, applyRetention } from './retention-step.js';

export type JobStep = 'backup' | 'release-source' | 'ebs-shadow' | 'retention';

export interface JobOptions extends BackupOptions {
  /** Push the committed snapshot to EBS (the standing EBS snapshot: the pilot light). */
  ebsShadow?: PushSnapshotOptions | false;
  retention?: RetentionPolicy;
}

export interface StepOutcome {
  step: JobStep;
  ok: boolean;
  durationMs: number;
  error?: string;
}

export interface JobResult {
  vm: string;
  /** True when every step succeeded. */
  ok: boolean;
  /** The committed snapshot (a result only exists once the backup committed). */
  snapshot: string;
  backup: BackupReport;
  steps: StepOutcome[];
  /** The first step after the commit that failed, and why. */
  failedStep?: JobStep;
  error?: string;
  ebs?: EbsPushResult[];
  retention?: RetentionOutcome;
}

export async function runBackupJob(repo: Repository, source: DiskSource, options: JobOptions = {}): Promise<JobResult> {
  const steps: StepOutcome[] = [];
  const t0 = Date.now();
  const backup = await runBackup(repo, source, options);
  steps.push({ step: 'backup', ok: true, durationMs: Date.now() - t0 });
  const result: JobResult = { vm: backup.vm, ok: true, snapshot: backup.snapshot, backup, steps };
  const step = async <T>(name: JobStep, fn: () => Promise<T>): Promise<T | undefined> => {
    const t = Date.now();
    try {
      const v = await fn();
      steps.push({ step: name, ok: true, durationMs: Date.now() - t });
      return v;
    } catch (err) {
      const message = (err as Error)?.message ?? String(err);
      steps.push({ step: name, ok: false, durationMs: Date.now() - t, error: message });
      result.ok = false;
      if (!result.failedStep) {
        result.failedStep = name;
        result.error = message;
      }
      return undefined;
    }
  };
  // release the source (the vSphere snapshot) before anything slow that follows the commit
  await step('release-source', async () => {
    // a source that must learn of the commit first (NBD: rotate the QEMU dirty bitmaps)
    const committed = (source as { committed?: () => Promise<void> }).committed;
    if (typeof committed === 'function') await committed.call(source);
    await source.close();
  });
  if (options.ebsShadow) {
    const ebsOptions = options.ebsShadow;
    result.ebs = await step('ebs-shadow', async () => {
      const { pushSnapshotToEbs } = await import('../cloud/ebs-shadow.js'); // the AWS SDK loads only when used
      const record = await new SnapshotCatalog(repo).load(backup.snapshot, backup.vm);
      return pushSnapshotToEbs(repo, record, { signal: options.signal, ...ebsOptions });
    });
  }
  if (options.retention) {
    const policy = options.retention;
    result.retention = await step('retention', () => applyRetention(repo, backup.vm, policy));
  }
  return result;
}
