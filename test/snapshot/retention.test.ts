/**
 * Retention policy on a table of cases: which snapshots a policy keeps, and why.
 * Times are real instants; zones are real IANA zones through Intl (Node's ICU).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RetentionPolicy, applyPolicy, parseDuration, subtractDuration } from '../../src/snapshot/retention.js';
import { isoWeek, zonedParts, zonedToInstant } from '../../src/snapshot/zoned-time.js';

const snaps = (times: string[]) => times.map((time, i) => ({ id: `s${String(i).padStart(3, '0')}`, time }));
/** Which of the given times are kept (as times), and the reasons by time. */
function kept(times: string[], policy: RetentionPolicy, tz: string, now = '2030-01-01T00:00:00Z') {
  const r = applyPolicy(snaps(times), policy, { tz, now: Date.parse(now) });
  return {
    keep: r.decisions.filter((d) => d.keep).map((d) => d.time).sort(),
    reasons: Object.fromEntries(r.decisions.map((d) => [d.time, d.reasons])),
    result: r,
  };
}

interface Case {
  name: string;
  times: string[];
  policy: RetentionPolicy;
  tz: string;
  now?: string;
  keep: string[];
}

const cases: Case[] = [
  {
    name: 'several snapshots in one hour: the newest of the hour is kept',
    times: ['2026-06-01T10:00:00Z', '2026-06-01T10:15:00Z', '2026-06-01T10:45:00Z', '2026-06-01T11:05:00Z'],
    policy: { hourly: 2 },
    tz: 'UTC',
    keep: ['2026-06-01T10:45:00Z', '2026-06-01T11:05:00Z'],
  },
  {
    name: 'several snapshots in one day; empty days do not count',
    times: ['2026-06-01T08:00:00Z', '2026-06-01T20:00:00Z', '2026-06-04T09:00:00Z', '2026-06-04T23:00:00Z', '2026-06-05T01:00:00Z'],
    policy: { daily: 2 },
    tz: 'UTC',
    keep: ['2026-06-04T23:00:00Z', '2026-06-05T01:00:00Z'],
  },
  {
    name: 'days are local days: 23:30 UTC is already the next day in Berlin',
    times: ['2026-06-01T21:30:00Z', '2026-06-01T22:30:00Z'], // 23:30 and 00:30 CEST
    policy: { daily: 5 },
    tz: 'Europe/Berlin',
    keep: ['2026-06-01T21:30:00Z', '2026-06-01T22:30:00Z'],
  },
  {
    name: 'the same two instants are one UTC day',
    times: ['2026-06-01T21:30:00Z', '2026-06-01T22:30:00Z'],
    policy: { daily: 5 },
    tz: 'UTC',
    keep: ['2026-06-01T22:30:00Z'],
  },
  {
    name: 'Berlin autumn DST: the repeated hour 02:00-03:00 is two hourly periods',
    // 2026-10-25: 02:30 CEST = 00:30Z, 02:30 CET = 01:30Z; 02:10 CEST = 00:10Z
    times: ['2026-10-25T00:10:00Z', '2026-10-25T00:30:00Z', '2026-10-25T01:30:00Z'],
    policy: { hourly: 10 },
    tz: 'Europe/Berlin',
    keep: ['2026-10-25T00:30:00Z', '2026-10-25T01:30:00Z'],
  },
  {
    name: 'Berlin autumn DST: the 25-hour day is one daily period',
    times: ['2026-10-24T22:05:00Z', '2026-10-25T12:00:00Z', '2026-10-25T22:55:00Z'], // 00:05 CEST .. 23:55 CET on the 25th
    policy: { daily: 1 },
    tz: 'Europe/Berlin',
    keep: ['2026-10-25T22:55:00Z'],
  },
  {
    name: 'Berlin spring DST: the 23-hour day is one daily period, the next day starts at 22:00Z',
    times: ['2026-03-28T23:01:00Z', '2026-03-29T21:59:00Z', '2026-03-29T22:01:00Z'], // 00:01 CET 29th, 23:59 CEST 29th, 00:01 CEST 30th
    policy: { daily: 5 },
    tz: 'Europe/Berlin',
    keep: ['2026-03-29T21:59:00Z', '2026-03-29T22:01:00Z'],
  },
  {
    name: 'New York spring DST: 01:30 EST and 03:30 EDT are one hour apart but two local hours',
    times: ['2026-03-08T06:30:00Z', '2026-03-08T07:30:00Z'],
    policy: { hourly: 5 },
    tz: 'America/New_York',
    keep: ['2026-03-08T06:30:00Z', '2026-03-08T07:30:00Z'],
  },
  {
    name: 'New York autumn DST: 01:15 EDT and 01:45 EST are two periods, two 01:xx EST one',
    times: ['2026-11-01T05:15:00Z', '2026-11-01T06:20:00Z', '2026-11-01T06:45:00Z'],
    policy: { hourly: 5 },
    tz: 'America/New_York',
    keep: ['2026-11-01T05:15:00Z', '2026-11-01T06:45:00Z'],
  },
  {
    name: 'New York: daily periods are New York days (04:30Z is the evening before)',
    times: ['2026-07-01T03:30:00Z', '2026-07-01T04:30:00Z', '2026-07-01T12:00:00Z'],
    policy: { daily: 1 },
    tz: 'America/New_York',
    keep: ['2026-07-01T12:00:00Z'],
  },
  {
    name: 'weekly: ISO weeks start on Monday (Sunday 2026-06-07 and Monday 2026-06-08 differ)',
    times: ['2026-06-06T12:00:00Z', '2026-06-07T12:00:00Z', '2026-06-08T12:00:00Z'],
    policy: { weekly: 2 },
    tz: 'UTC',
    keep: ['2026-06-07T12:00:00Z', '2026-06-08T12:00:00Z'],
  },
  {
    name: 'weekly across a year end: 2026-12-31 and 2027-01-01 are both in ISO week 2026-W53',
    times: ['2026-12-31T12:00:00Z', '2027-01-01T12:00:00Z', '2027-01-04T12:00:00Z'],
    policy: { weekly: 5 },
    tz: 'UTC',
    keep: ['2027-01-01T12:00:00Z', '2027-01-04T12:00:00Z'],
  },
  {
    name: 'monthly and yearly',
    times: ['2024-12-31T10:00:00Z', '2025-01-15T10:00:00Z', '2025-01-20T10:00:00Z', '2025-02-01T10:00:00Z', '2025-12-30T10:00:00Z'],
    policy: { monthly: 2, yearly: 2 },
    tz: 'UTC',
    keep: ['2024-12-31T10:00:00Z', '2025-02-01T10:00:00Z', '2025-12-30T10:00:00Z'],
  },
  {
    name: 'rules add up: last 1 + daily 2',
    times: ['2026-06-01T10:00:00Z', '2026-06-02T10:00:00Z', '2026-06-03T09:00:00Z', '2026-06-03T10:00:00Z'],
    policy: { last: 1, daily: 2 },
    tz: 'UTC',
    keep: ['2026-06-02T10:00:00Z', '2026-06-03T10:00:00Z'],
  },
  {
    name: 'keep-within counts back from the newest snapshot, not from now',
    times: ['2020-01-01T00:00:00Z', '2020-01-09T00:00:00Z', '2020-01-10T00:00:00Z', '2020-01-10T06:00:00Z'],
    policy: { within: parseDuration('2d') },
    tz: 'UTC',
    now: '2030-01-01T00:00:00Z',
    keep: ['2020-01-09T00:00:00Z', '2020-01-10T00:00:00Z', '2020-01-10T06:00:00Z'],
  },
  {
    name: 'keep-within 1d across the Berlin spring change is a calendar day (23 hours)',
    // newest 2026-03-29 12:00 CEST = 10:00Z; one calendar day back = 2026-03-28 12:00 CET = 11:00Z
    times: ['2026-03-28T10:59:00Z', '2026-03-28T11:01:00Z', '2026-03-29T10:00:00Z'],
    policy: { within: parseDuration('1d') },
    tz: 'Europe/Berlin',
    keep: ['2026-03-28T11:01:00Z', '2026-03-29T10:00:00Z'],
  },
  {
    name: 'keep-within 24h across the same change is 24 hours',
    times: ['2026-03-28T09:59:00Z', '2026-03-28T10:01:00Z', '2026-03-29T10:00:00Z'],
    policy: { within: parseDuration('24h') },
    tz: 'Europe/Berlin',
    keep: ['2026-03-28T10:01:00Z', '2026-03-29T10:00:00Z'],
  },
  {
    name: 'a future timestamp is kept and takes neither a period nor the keep-within reference',
    times: ['2026-06-01T10:00:00Z', '2026-06-02T10:00:00Z', '2027-06-02T10:00:00Z'],
    policy: { daily: 1, within: parseDuration('1h') },
    tz: 'UTC',
    now: '2026-06-03T00:00:00Z',
    keep: ['2026-06-02T10:00:00Z', '2027-06-02T10:00:00Z'],
  },
  {
    name: 'zero counts keep nothing',
    times: ['2026-06-01T10:00:00Z'],
    policy: { last: 0, daily: 0 },
    tz: 'UTC',
    keep: [],
  },
  {
    name: 'the bench policy: every snapshot of a day, hourly for a week, daily for a month',
    times: Array.from({ length: 24 * 40 }, (_, i) => new Date(Date.parse('2026-01-01T00:00:00Z') + i * 3_600_000).toISOString()),
    policy: { within: parseDuration('1d'), hourly: 168, daily: 31 },
    tz: 'UTC',
    // 24 within the day (+1: the cutoff is exclusive, 24 h before the newest is not kept by within but by hourly),
    // 168 hourly (the newest 168 hours), then 31 days of which 7 are already kept by hourly: 24 more days.
    keep: [
      ...Array.from({ length: 168 }, (_, i) => new Date(Date.parse('2026-02-09T23:00:00Z') - i * 3_600_000).toISOString()),
      ...Array.from({ length: 24 }, (_, i) => new Date(Date.parse('2026-02-02T23:00:00Z') - i * 86_400_000).toISOString()),
    ].sort(),
  },
];

describe('retention policy table', () => {
  for (const c of cases) {
    it(c.name, () => {
      const { keep } = kept(c.times, c.policy, c.tz, c.now);
      assert.deepEqual(keep, [...c.keep].sort());
    });
  }

  it('names every rule that keeps a snapshot', () => {
    const { reasons } = kept(['2026-10-25T00:30:00Z', '2026-10-25T01:30:00Z'], { last: 1, hourly: 2, daily: 1, weekly: 1, monthly: 1, yearly: 1 }, 'Europe/Berlin');
    assert.deepEqual(reasons['2026-10-25T01:30:00Z'], ['last 1/1', 'hourly 2026-10-25T02+01:00', 'daily 2026-10-25', 'weekly 2026-W43', 'monthly 2026-10', 'yearly 2026']);
    assert.deepEqual(reasons['2026-10-25T00:30:00Z'], ['hourly 2026-10-25T02+02:00']);
  });

  it('ties in time are ordered by id, so the choice is stable', () => {
    const r = applyPolicy(
      [
        { id: 'b', time: '2026-06-01T10:00:00Z' },
        { id: 'a', time: '2026-06-01T10:00:00Z' },
      ],
      { hourly: 1 },
      { tz: 'UTC', now: Date.parse('2027-01-01T00:00:00Z') },
    );
    assert.deepEqual(r.decisions.map((d) => [d.id, d.keep]), [['b', true], ['a', false]]);
  });

  it('reports the keep-within reference and cutoff', () => {
    const { result } = kept(['2026-06-01T10:00:00Z', '2026-06-03T10:00:00Z'], { within: parseDuration('1d12h') }, 'UTC');
    assert.equal(result.withinReference, '2026-06-03T10:00:00.000Z');
    assert.equal(result.withinCutoff, '2026-06-01T22:00:00.000Z');
  });
});

describe('durations and zones', () => {
  it('parses durations and refuses bad ones with one line', () => {
    assert.deepEqual(parseDuration('1y2m3w4d5h6min'), { years: 1, months: 2, weeks: 3, days: 4, hours: 5, minutes: 6, text: '1y2m3w4d5h6min' });
    assert.equal(parseDuration('30min').minutes, 30);
    assert.equal(parseDuration('2m').months, 2);
    for (const bad of ['', '0d', '5', '1d2y', '-1d', '1.5d', '3 days', 'min']) {
      assert.throws(() => parseDuration(bad), (e: Error) => e.name === 'UserError' && /bad duration/.test(e.message) && !e.message.includes('\n'), bad);
    }
  });

  it('refuses unknown zones with one line', () => {
    assert.throws(
      () => applyPolicy(snaps(['2026-06-01T10:00:00Z']), { last: 1 }, { tz: 'Mars/Olympus', now: Date.now() }),
      (e: Error) => e.name === 'UserError' && /unknown time zone "Mars\/Olympus"/.test(e.message),
    );
  });

  it('zonedToInstant inverts zonedParts, and resolves gaps and repeats', () => {
    for (const tz of ['Europe/Berlin', 'America/New_York', 'Asia/Kolkata', 'Australia/Lord_Howe', 'UTC']) {
      for (let t = Date.parse('2026-01-01T00:00:00Z'); t < Date.parse('2027-01-01T00:00:00Z'); t += 3_600_000 * 7 + 60_000) {
        const p = zonedParts(t, tz);
        const back = zonedToInstant(p, tz);
        // equal, or the earlier of two instants with the same wall time (the repeated hour)
        assert.ok(back === t || (back < t && zonedParts(back, tz).hour === p.hour && t - back <= 3_600_000), `${tz} ${new Date(t).toISOString()}`);
      }
    }
    // 02:30 on 2026-03-29 does not exist in Berlin: moved forward to 03:30 CEST = 01:30Z
    assert.equal(new Date(zonedToInstant({ year: 2026, month: 3, day: 29, hour: 2, minute: 30, second: 0 }, 'Europe/Berlin')).toISOString(), '2026-03-29T01:30:00.000Z');
    // 02:30 on 2026-10-25 exists twice: the first (CEST) one
    assert.equal(new Date(zonedToInstant({ year: 2026, month: 10, day: 25, hour: 2, minute: 30, second: 0 }, 'Europe/Berlin')).toISOString(), '2026-10-25T00:30:00.000Z');
  });

  it('subtracts calendar months on the local calendar', () => {
    const t = Date.parse('2026-04-15T10:00:00Z'); // 12:00 CEST
    assert.equal(new Date(subtractDuration(t, parseDuration('1m'), 'Europe/Berlin')).toISOString(), '2026-03-15T11:00:00.000Z'); // 12:00 CET
  });

  it('ISO weeks', () => {
    assert.deepEqual(isoWeek(2026, 12, 31), { year: 2026, week: 53 });
    assert.deepEqual(isoWeek(2027, 1, 3), { year: 2026, week: 53 });
    assert.deepEqual(isoWeek(2027, 1, 4), { year: 2027, week: 1 });
    assert.deepEqual(isoWeek(2024, 12, 30), { year: 2025, week: 1 });
    assert.deepEqual(isoWeek(2021, 1, 3), { year: 2020, week: 53 });
    assert.deepEqual(isoWeek(2026, 6, 8), { year: 2026, week: 24 });
  });
});
