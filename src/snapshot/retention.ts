/**
 * Retention policies: which snapshots of one VM a `forget` keeps. Pure: no I/O, no
 * clock (the caller passes `now`), table-tested in test/snapshot/retention.test.ts.
 *
 * Semantics follow restic's `forget`:
 * - Snapshots are walked newest first (by consistency time, then id).
 * - --keep-last N keeps the N newest.
 * - --keep-hourly/daily/weekly/monthly/yearly N: each rule keeps the newest snapshot of
 *   each of the N most recent periods that hold a snapshot (a period without one does not
 *   count). Periods are wall-clock periods in the zone `tz`: a day is a local calendar day
 *   (23 or 25 hours at a DST change), a week is an ISO week (Monday to Sunday), an hour is
 *   a local hour *with its UTC offset*, so the hour that repeats in autumn
 *   (02:00-03:00 CEST, then 02:00-03:00 CET in Europe/Berlin) is two periods, as it is two
 *   real hours.
 * - --keep-within D keeps every snapshot newer than D before the reference time. The
 *   reference is the newest snapshot's time (as restic does), not now: a VM whose backups
 *   stopped keeps its last D of history instead of losing it all as the clock moves on.
 *   Calendar units (y, m, w, d) are subtracted on the local calendar of `tz`
 *   (7d before 12:00 is 12:00 a week ago, even across a DST change); h and min are
 *   absolute.
 * - A snapshot whose time is after `now` (a skewed clock) is always kept ("future") and
 *   takes part neither in the periods nor as the reference: one bad timestamp must not
 *   shift every window and make the real snapshots look old.
 * - The rules add up: a snapshot is kept when any rule keeps it; every rule that does is
 *   listed. Protection and guards are not policy: the engine adds them (forget.ts).
 */
import { UserError } from '../repo/errors.js';
import { ZonedParts, checkZone, formatOffset, isoWeek, zonedParts, zonedToInstant } from './zoned-time.js';

export interface Duration {
  years: number;
  months: number;
  weeks: number;
  days: number;
  hours: number;
  minutes: number;
  /** As the user wrote it. */
  text: string;
}

export interface RetentionPolicy {
  last?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
  within?: Duration;
}

export interface PolicySnapshot {
  id: string;
  /** ISO 8601 consistency time. */
  time: string;
}

export interface PolicyDecision {
  id: string;
  time: string;
  keep: boolean;
  /** The rules that keep it: `last 1/3`, `hourly 2026-10-25T02+01:00`, `daily 2026-10-25`, `within 1d`, `future`. */
  reasons: string[];
}

export interface PolicyResult {
  /** Newest first. */
  decisions: PolicyDecision[];
  /** The time --keep-within counts back from (null when it was not given or nothing is old enough to matter). */
  withinReference: string | null;
  /** The oldest time --keep-within keeps. */
  withinCutoff: string | null;
}

type PeriodRule = 'hourly' | 'daily' | 'weekly' | 'monthly' | 'yearly';
const PERIOD_RULES: PeriodRule[] = ['hourly', 'daily', 'weekly', 'monthly', 'yearly'];

const pad = (n: number, w = 2) => String(n).padStart(w, '0');

function periodKey(rule: PeriodRule, p: ZonedParts): string {
  switch (rule) {
    case 'hourly':
      return `${p.year}-${pad(p.month)}-${pad(p.day)}T${pad(p.hour)}${formatOffset(p.offsetMinutes)}`;
    case 'daily':
      return `${p.year}-${pad(p.month)}-${pad(p.day)}`;
    case 'weekly': {
      const w = isoWeek(p.year, p.month, p.day);
      return `${w.year}-W${pad(w.week)}`;
    }
    case 'monthly':
      return `${p.year}-${pad(p.month)}`;
    case 'yearly':
      return `${p.year}`;
  }
}

/** True when no rule was given at all. */
export function isEmptyPolicy(p: RetentionPolicy): boolean {
  return p.within === undefined && [p.last, ...PERIOD_RULES.map((r) => p[r])].every((v) => v === undefined);
}

/** `1y2m3w4d5h30min` (y years, m months as in restic, w weeks, d days, h hours, min minutes). */
/** The keep options as the CLI flags and the service config name them (keepWithin in parseDuration's syntax). */
export interface KeepOptions {
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  keepYearly?: number;
  keepWithin?: string;
}

/** The policy that keep options describe; only the rules given are set. */
export function policyFromKeepOptions(o: KeepOptions): RetentionPolicy {
  return {
    ...(o.keepLast !== undefined ? { last: o.keepLast } : {}),
    ...(o.keepHourly !== undefined ? { hourly: o.keepHourly } : {}),
    ...(o.keepDaily !== undefined ? { daily: o.keepDaily } : {}),
    ...(o.keepWeekly !== undefined ? { weekly: o.keepWeekly } : {}),
    ...(o.keepMonthly !== undefined ? { monthly: o.keepMonthly } : {}),
    ...(o.keepYearly !== undefined ? { yearly: o.keepYearly } : {}),
    ...(o.keepWithin !== undefined ? { within: parseDuration(o.keepWithin) } : {}),
  };
}

export function parseDuration(text: string): Duration {
  const m = /^(?:(\d+)y)?(?:(\d+)m(?!in))?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)min)?$/.exec(text.trim());
  const bad = () =>
    new UserError(
      `bad duration ${JSON.stringify(text)}: write it like 2d, 12h, 30min, 1y6m (y years, m months, w weeks, d days, h hours, min minutes)`,
    );
  if (!m || text.trim() === '') throw bad();
  const [years, months, weeks, days, hours, minutes] = m.slice(1).map((v) => Number(v ?? 0));
  const d = { years: years!, months: months!, weeks: weeks!, days: days!, hours: hours!, minutes: minutes!, text: text.trim() };
  if ([d.years, d.months, d.weeks, d.days, d.hours, d.minutes].every((v) => v === 0)) throw bad();
  if ([d.years, d.months, d.weeks, d.days, d.hours, d.minutes].some((v) => !Number.isSafeInteger(v) || v > 100_000)) throw bad();
  return d;
}

/** The instant `d` before `t`: calendar units on the local calendar of `tz`, then hours and minutes. */
export function subtractDuration(t: number, d: Duration, tz: string): number {
  const p = zonedParts(t, tz);
  const ms = ((t % 1000) + 1000) % 1000;
  const calendar =
    d.years || d.months || d.weeks || d.days
      ? zonedToInstant(
          { year: p.year - d.years, month: p.month - d.months, day: p.day - d.weeks * 7 - d.days, hour: p.hour, minute: p.minute, second: p.second },
          tz,
          ms,
        )
      : t;
  return calendar - (d.hours * 60 + d.minutes) * 60_000;
}

export interface PolicyOptions {
  tz: string;
  now: number;
}

export function applyPolicy(snapshots: PolicySnapshot[], policy: RetentionPolicy, options: PolicyOptions): PolicyResult {
  const tz = checkZone(options.tz);
  for (const [rule, v] of Object.entries({ last: policy.last, ...Object.fromEntries(PERIOD_RULES.map((r) => [r, policy[r]])) })) {
    if (v !== undefined && (!Number.isSafeInteger(v) || v < 0)) throw new UserError(`--keep-${rule} takes a whole number >= 0, got ${v}`);
  }
  const ordered = snapshots
    .map((s) => {
      const t = Date.parse(s.time);
      if (!Number.isFinite(t)) throw new UserError(`snapshot ${s.id} has an unreadable time ${JSON.stringify(s.time)}`);
      return { ...s, t };
    })
    .sort((a, b) => b.t - a.t || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));

  const present = ordered.filter((s) => s.t <= options.now);
  let withinCutoff: number | null = null;
  let withinReference: number | null = null;
  if (policy.within && present.length > 0) {
    withinReference = present[0]!.t;
    withinCutoff = subtractDuration(withinReference, policy.within, tz);
  }

  const remaining: Record<PeriodRule | 'last', number> = {
    last: policy.last ?? 0,
    hourly: policy.hourly ?? 0,
    daily: policy.daily ?? 0,
    weekly: policy.weekly ?? 0,
    monthly: policy.monthly ?? 0,
    yearly: policy.yearly ?? 0,
  };
  const lastKey: Partial<Record<PeriodRule, string>> = {};
  let lastSeen = 0;

  const decisions: PolicyDecision[] = ordered.map((s) => {
    const reasons: string[] = [];
    if (s.t > options.now) {
      reasons.push('future');
      return { id: s.id, time: s.time, keep: true, reasons };
    }
    if (remaining.last > 0) {
      remaining.last--;
      lastSeen++;
      reasons.push(`last ${lastSeen}/${policy.last}`);
    }
    const parts = zonedParts(s.t, tz);
    for (const rule of PERIOD_RULES) {
      if (remaining[rule] <= 0) continue;
      const key = periodKey(rule, parts);
      if (key !== lastKey[rule]) {
        lastKey[rule] = key;
        remaining[rule]--;
        reasons.push(`${rule} ${key}`);
      }
    }
    if (withinCutoff !== null && s.t > withinCutoff) reasons.push(`within ${policy.within!.text}`);
    return { id: s.id, time: s.time, keep: reasons.length > 0, reasons };
  });
  return {
    decisions,
    withinReference: withinReference === null ? null : new Date(withinReference).toISOString(),
    withinCutoff: withinCutoff === null ? null : new Date(withinCutoff).toISOString(),
  };
}

/** `--keep-daily 7 --keep-within 1d` style text of a policy, for reports. */
export function describePolicy(p: RetentionPolicy): string {
  const parts: string[] = [];
  if (p.last !== undefined) parts.push(`--keep-last ${p.last}`);
  for (const r of PERIOD_RULES) if (p[r] !== undefined) parts.push(`--keep-${r} ${p[r]}`);
  if (p.within) parts.push(`--keep-within ${p.within.text}`);
  return parts.join(' ');
}
