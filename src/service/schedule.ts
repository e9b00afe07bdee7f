/**
 * When a job runs. `every: 15m` ticks at the multiples of the interval since the Unix
 * epoch (00:00, 00:15, ...), so processes on several hosts with the same config tick
 * together and the per-VM lease plus the "already fresh" check give one backup per
 * interval; `cron:` ticks when croner says.
 */
import { Cron } from 'croner';
import type { JobConfig } from './config-schema.js';
import { intervalMs } from './config.js';
import { parseDuration } from './duration.js';

export interface Schedule {
  /** The next tick strictly after `now`. */
  next(now: number): number;
  /** The newest tick at or before `now`. */
  previous(now: number): number;
  readonly intervalMs: number;
  readonly text: string;
}

export function scheduleOf(job: JobConfig): Schedule {
  const every = job.every !== undefined ? parseDuration(job.every) : null;
  const interval = intervalMs(job);
  if (every !== null) {
    return {
      intervalMs: every,
      text: `every ${job.every}`,
      next: (now) => (Math.floor(now / every) + 1) * every,
      previous: (now) => Math.floor(now / every) * every,
    };
  }
  const expr = (job.cron ?? job.every)!;
  const cron = new Cron(expr, { paused: true });
  return {
    intervalMs: interval,
    text: `cron ${expr}`,
    next: (now) => cron.nextRun(new Date(now))?.getTime() ?? now + interval,
    // croner has no "previous" for a pattern: the tick before the next one is one interval earlier for regular patterns
    previous: (now) => (cron.nextRun(new Date(now))?.getTime() ?? now + interval) - interval,
  };
}
