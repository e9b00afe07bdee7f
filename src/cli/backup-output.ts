import { Command } from 'commander';
import { EXIT_COMMITTED_STEP_FAILED } from '../service/exit-codes.js';
import type { JobOptions, JobResult } from '../service/job.js';
import { formatBytes, printJson } from './context.js';

/** Options that any `backup` subcommand takes for what follows a committed backup. */
export function addAfterBackupOptions(cmd: Command): Command {
  return cmd
    .option('--ebs-shadow', 'after the backup, push the snapshot to EBS (keeps a standing EBS snapshot: the pilot light)')
    .option('--region <region>', 'AWS region for --ebs-shadow (default AWS_REGION)');
}

export function afterBackupJobOptions(opts: { ebsShadow?: boolean; region?: string }): Pick<JobOptions, 'ebsShadow'> {
  return { ebsShadow: opts.ebsShadow ? { region: opts.region } : false };
}

/**
 * Prints a backup job's result: the report, and when a step after the commit failed,
 * the committed snapshot id with the failed step (stderr), exit code 4.
 */
export function printJobResult(r: JobResult, json: boolean, extra: Record<string, unknown> = {}, detail = true): void {
  const b = r.backup;
  if (json) printJson({ ...b, ...extra, ebs: r.ebs, retention: r.retention, steps: r.steps, ok: r.ok, failedStep: r.failedStep, error: r.error });
  else {
    process.stdout.write(
      `snapshot ${b.snapshot} of ${b.vm}${b.parent ? ` (parent ${b.parent})` : ''}: ` +
        `scanned ${formatBytes(b.bytesScanned)}, new ${formatBytes(b.bytesNew)} stored as ${formatBytes(b.bytesStored)}` +
        (detail ? `, ${b.chunksNew} new / ${b.chunksReused} reused / ${b.chunksZero} zero chunks` : '') +
        ` in ${(b.durationMs / 1000).toFixed(1)} s\n`,
    );
    for (const d of b.disks) process.stdout.write(`  ${d.name}: ${formatBytes(d.capacity)}, ${d.read.kind}: ${d.read.reason}\n`);
    if (r.ebs) process.stdout.write(`  pushed to EBS: ${JSON.stringify(r.ebs)}\n`);
    if (r.retention) process.stdout.write(`  retention: kept ${r.retention.kept.length}, forgot ${r.retention.forgotten.length}\n`);
    if (Array.isArray(extra.notes)) for (const n of extra.notes) process.stdout.write(`  note: ${String(n)}\n`);
  }
  if (r.failedStep) {
    process.stderr.write(`pilotlight: snapshot ${r.snapshot} was committed, but the ${r.failedStep} step failed: ${r.error}\n`);
    process.exitCode = EXIT_COMMITTED_STEP_FAILED;
  }
}
