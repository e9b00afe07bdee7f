/**
 * The retention step of a backup job: forgets the snapshots of one VM that its policy
 * no longer keeps, by calling the retention engine (`forgetSnapshots(repo, options)` in
 * src/engine/forget.ts). This build loads that module on use; a build without it
 * refuses a job with a retention policy (config check and at run time) instead of
 * pretending to keep the policy.
 */
import { UserError } from '../repo/errors.js';
import type { Repository } from '../repo/repository.js';

/** keepLast / keepHourly / keepDaily / keepWeekly / keepMonthly / keepYearly / keepWithin. */
export interface RetentionPolicy {
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  keepYearly?: number;
  keepWithin?: string;
}

export interface RetentionOutcome {
  kept: string[];
  forgotten: string[];
}

type ForgetFn = (repo: Repository, options: Record<string, unknown>) => Promise<unknown>;

const FORGET_MODULE = '../engine/forget.js';

/** The retention engine of this build, or undefined when it has none. */
export async function loadForget(): Promise<ForgetFn | undefined> {
  try {
    const mod = (await import(FORGET_MODULE)) as { forgetSnapshots?: ForgetFn };
    return typeof mod.forgetSnapshots === 'function' ? mod.forgetSnapshots : undefined;
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_MODULE_NOT_FOUND') return undefined;
    throw err;
  }
}

export async function applyRetention(repo: Repository, vm: string, policy: RetentionPolicy, signal?: AbortSignal): Promise<RetentionOutcome> {
  const forget = await loadForget();
  if (!forget) throw new UserError('this build of pilotlight has no retention engine (src/engine/forget.ts): remove the retention policy from the job or upgrade');
  const out = (await forget(repo, { vm, policy, ...policy, signal })) as Partial<RetentionOutcome> & Record<string, unknown>;
  const ids = (v: unknown): string[] => (Array.isArray(v) ? v.map((x) => (typeof x === 'string' ? x : String((x as { id?: string }).id))) : []);
  return { kept: ids(out?.kept ?? out?.keep), forgotten: ids(out?.forgotten ?? out?.removed ?? out?.remove) };
}
