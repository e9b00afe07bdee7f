/**
 * The retention step of a backup job: forgets the snapshots of one VM that its policy
 * no longer keeps, through the retention engine (`forgetSnapshots(repo, { vm, policy,
 * tz })` in src/engine/forget.ts, whose guards keep protected snapshots, the parent of a
 * running backup and EBS bases). Forget only removes records; space comes back with a
 * later prune. The engine is loaded on use: a build without it refuses a job with a
 * retention policy (at run time, as a failed `retention` step) instead of pretending
 * to keep the policy.
 */
import { UserError } from '../repo/errors.js';
import type { Repository } from '../repo/repository.js';

/** As written in the service config (docs/SERVICE.md); keepWithin in the forget syntax (2d, 12h, 30min, 1y6m). */
export interface RetentionPolicy {
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  keepYearly?: number;
  keepWithin?: string;
  /** IANA zone the hours, days, ... are counted in (default the local zone). */
  tz?: string;
}

export interface RetentionOutcome {
  kept: string[];
  forgotten: string[];
}

/** The forget syntax of keepWithin: y years, m months, w weeks, d days, h hours, min minutes. */
export const KEEP_WITHIN_RE = /^(?:(\d+)y)?(?:(\d+)m(?!in))?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)min)?$/;

interface ForgetReportLike {
  vms: { vm: string; snapshots: { id: string; outcome: string }[] }[];
  removed: string[];
  tombstoned: { id: string }[];
}

interface RetentionEngine {
  forgetSnapshots: (repo: Repository, options: { vm: string; policy: Record<string, unknown>; tz?: string }) => Promise<ForgetReportLike>;
  parseDuration: (text: string) => unknown;
}

// variables, so that this builds (and reports clearly) without the retention engine
const FORGET_MODULE = '../engine/forget.js';
const POLICY_MODULE = '../snapshot/retention.js';

async function loadEngine(): Promise<RetentionEngine | undefined> {
  try {
    const forget = (await import(FORGET_MODULE)) as Partial<RetentionEngine>;
    const policy = (await import(POLICY_MODULE)) as Partial<RetentionEngine>;
    if (typeof forget.forgetSnapshots !== 'function' || typeof policy.parseDuration !== 'function') return undefined;
    return { forgetSnapshots: forget.forgetSnapshots, parseDuration: policy.parseDuration };
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_MODULE_NOT_FOUND') return undefined;
    throw err;
  }
}

export async function applyRetention(repo: Repository, vm: string, p: RetentionPolicy): Promise<RetentionOutcome> {
  const engine = await loadEngine();
  if (!engine) throw new UserError('this build of pilotlight has no retention engine (forget): remove the retention policy from the job, or upgrade');
  const policy: Record<string, unknown> = {};
  const rules: [keyof RetentionPolicy, string][] = [
    ['keepLast', 'last'],
    ['keepHourly', 'hourly'],
    ['keepDaily', 'daily'],
    ['keepWeekly', 'weekly'],
    ['keepMonthly', 'monthly'],
    ['keepYearly', 'yearly'],
  ];
  for (const [from, to] of rules) if (p[from] !== undefined) policy[to] = p[from];
  if (p.keepWithin !== undefined) policy.within = engine.parseDuration(p.keepWithin);
  const report = await engine.forgetSnapshots(repo, { vm, policy, tz: p.tz });
  const mine = report.vms.filter((v) => v.vm === vm).flatMap((v) => v.snapshots);
  return { kept: mine.filter((s) => s.outcome === 'keep').map((s) => s.id), forgotten: [...report.removed, ...report.tombstoned.map((t) => t.id)] };
}
