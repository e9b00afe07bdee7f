/**
 * Calendar arithmetic in an IANA time zone, through Intl.DateTimeFormat only (the
 * zone rules are the ones Node's ICU carries; nothing here is a hand-written table).
 *
 * - zonedParts: the wall-clock fields and UTC offset of an instant in a zone.
 * - zonedToInstant: the instant of a wall-clock time in a zone. A time that does not
 *   exist (the hour skipped in spring) moves forward by the gap, as a wall clock does;
 *   a time that exists twice (the hour repeated in autumn) is its first occurrence.
 */
import { UserError } from '../repo/errors.js';

export interface ZonedParts {
  year: number;
  month: number; // 1..12
  day: number;
  hour: number;
  minute: number;
  second: number;
  /** Minutes east of UTC at this instant (+60 for CET, +120 for CEST, -300 for EST). */
  offsetMinutes: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

/** The local zone of this process (TZ, else the system's). */
export function localZone(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone;
}

function formatter(tz: string): Intl.DateTimeFormat {
  let f = formatters.get(tz);
  if (!f) {
    try {
      f = new Intl.DateTimeFormat('en-US', {
        timeZone: tz,
        hourCycle: 'h23',
        year: 'numeric',
        month: 'numeric',
        day: 'numeric',
        hour: 'numeric',
        minute: 'numeric',
        second: 'numeric',
        timeZoneName: 'longOffset',
      });
    } catch {
      throw new UserError(`unknown time zone ${JSON.stringify(tz)}: give an IANA zone name such as Europe/Berlin, America/New_York or UTC`);
    }
    formatters.set(tz, f);
  }
  return f;
}

/** Throws the one-line UserError for a zone name ICU does not know; returns its canonical name. */
export function checkZone(tz: string): string {
  return formatter(tz).resolvedOptions().timeZone;
}

export function zonedParts(t: Date | number, tz: string): ZonedParts {
  const parts = formatter(tz).formatToParts(typeof t === 'number' ? new Date(t) : t);
  const get = (type: string) => parts.find((p) => p.type === type)?.value ?? '';
  const off = /^GMT(?:([+-])(\d{1,2})(?::(\d{2}))?)?$/.exec(get('timeZoneName'));
  if (!off) throw new Error(`cannot read the UTC offset of ${tz} from ${JSON.stringify(get('timeZoneName'))}`);
  const offsetMinutes = off[1] ? (off[1] === '-' ? -1 : 1) * (Number(off[2]) * 60 + Number(off[3] ?? 0)) : 0;
  return {
    year: Number(get('year')),
    month: Number(get('month')),
    day: Number(get('day')),
    hour: Number(get('hour')),
    minute: Number(get('minute')),
    second: Number(get('second')),
    offsetMinutes,
  };
}

/** Milliseconds of a wall-clock time read as if it were UTC (fields may overflow: Date.UTC normalises). */
function wallAsUtc(p: Omit<ZonedParts, 'offsetMinutes'>, ms = 0): number {
  return Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second, ms);
}

export function zonedToInstant(p: Omit<ZonedParts, 'offsetMinutes'>, tz: string, ms = 0): number {
  const wall = wallAsUtc(p, ms);
  // Offsets differ by at most a day; two candidates (the offsets just before and after)
  // cover every transition.
  const before = zonedParts(wall - 86_400_000, tz).offsetMinutes;
  const after = zonedParts(wall + 86_400_000, tz).offsetMinutes;
  const candidates = [...new Set([before, after])]
    .map((o) => wall - o * 60_000)
    .filter((t) => {
      const q = zonedParts(t, tz);
      return wallAsUtc(q, ms) === wall;
    })
    .sort((a, b) => a - b);
  if (candidates.length > 0) return candidates[0]!;
  // In a gap: the wall time does not exist; move it forward by the gap.
  return wall - before * 60_000;
}

/** ISO 8601 week of a civil date: { year, week } (weeks start on Monday; week 1 holds the first Thursday). */
export function isoWeek(year: number, month: number, day: number): { year: number; week: number } {
  const d = new Date(Date.UTC(year, month - 1, day));
  const dow = (d.getUTCDay() + 6) % 7; // Monday 0
  d.setUTCDate(d.getUTCDate() - dow + 3); // the Thursday of this week
  const weekYear = d.getUTCFullYear();
  const dayOfYear = Math.round((d.getTime() - Date.UTC(weekYear, 0, 1)) / 86_400_000); // 0-based
  const week = Math.floor(dayOfYear / 7) + 1;
  return { year: weekYear, week };
}

/** "+02:00" / "-05:00" / "+05:30". */
export function formatOffset(minutes: number): string {
  const sign = minutes < 0 ? '-' : '+';
  const m = Math.abs(minutes);
  return `${sign}${String(Math.floor(m / 60)).padStart(2, '0')}:${String(m % 60).padStart(2, '0')}`;
}
