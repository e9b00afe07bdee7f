/**
 * The retention step of a backup job: forgets the snapshots of one VM that its policy
 * no longer keeps, through the retention engine (`forgetSnapshots` in
 * src/engine/forget.ts, whose guards keep protected snapshots, the parent of a
 * running backup and EBS bases). Forget only removes records; space comes back with a
 * later prune.
 */
import { forgetSnapshots } from '../engine/forget.js';
import type { Repository } from '../repo/repository.js';
import { KeepOptions, policyFromKeepOptions } from '../snapshot/retention.js';

/** As written in the service config (docs/SERVICE.md); keepWithin in the forget syntax (2d, 12h, 30min, 1y6m). */
export interface RetentionPolicy extends KeepOptions {
  /** IANA zone the hours, days, ... are counted in (default the local zone). */
  tz?: string;
}

export interface RetentionOutcome {
  kept: string[];
  forgotten: string[];
}

/** The forget syntax of keepWithin: y years, m months, w weeks, d days, h hours, min minutes. */
export const KEEP_WITHIN_RE = /^(?:(\d+)y)?(?:(\d+)m(?!in))?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)min)?$/;

export async function applyRetention(repo: Repository, vm: string, p: RetentionPolicy): Promise<RetentionOutcome> {
  const report = await forgetSnapshots(repo, { vm, policy: policyFromKeepOptions(p), tz: p.tz });
  const mine = report.vms.filter((v) => v.vm === vm).flatMap((v) => v.snapshots);
  return { kept: mine.filter((s) => s.outcome === 'keep').map((s) => s.id), forgotten: [...report.removed, ...report.tombstoned.map((t) => t.id)] };
}
