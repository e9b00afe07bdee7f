/**
 * Webhook alerts: a JSON POST to the configured URL (with the configured headers) on a
 * change of a VM's state: `failure` (its last run failed, after a success or at
 * start), `recovery` (a run succeeded after failures), `rpo_breach` (its newest good
 * snapshot became older than the RPO target) and `rpo_restored`. One alert per state
 * change, never one per run. A POST is retried with backoff and jitter (the one retry
 * policy) on network errors and 5xx/429; an alert that still fails is logged and
 * counted (pilotlight_alerts_total{outcome="failed"}), not queued forever.
 *
 * Body: { event, vm, job, time, message, snapshot?, error?, failedStep?, rpoSeconds?,
 *         rpoTargetSeconds?, host, service: "pilotlight" }
 */
import * as os from 'node:os';
import { withRetry } from '../store/retry.js';
import type { Logger } from './logger.js';
import { errorFields } from './logger.js';
import { metrics } from './metrics.js';

export type AlertEvent = 'failure' | 'recovery' | 'rpo_breach' | 'rpo_restored';

export interface Alert {
  event: AlertEvent;
  vm: string;
  job: string;
  message: string;
  snapshot?: string | null;
  error?: string;
  failedStep?: string;
  rpoSeconds?: number;
  rpoTargetSeconds?: number;
}

export interface WebhookTarget {
  url: string;
  /** Resolved header values (secrets resolved from their references). */
  headers: Record<string, string>;
  attempts: number;
}

class HttpStatusError extends Error {
  constructor(readonly status: number) {
    super(`webhook answered HTTP ${status}`);
  }
}

export class Alerter {
  private readonly failing = new Map<string, boolean>();
  private readonly breached = new Map<string, boolean>();
  private readonly pending = new Set<Promise<void>>();

  constructor(
    private target: WebhookTarget | undefined,
    private readonly log: Logger,
    private readonly retry = { baseDelayMs: 500, maxDelayMs: 30_000 },
  ) {}

  setTarget(t: WebhookTarget | undefined): void {
    this.target = t;
  }

  /** A run's outcome: alerts on the first failure and on the recovery after failures. */
  runOutcome(vm: string, job: string, ok: boolean, details: Omit<Alert, 'event' | 'vm' | 'job' | 'message'> = {}): void {
    const was = this.failing.get(vm) ?? false;
    this.failing.set(vm, !ok);
    if (!ok && !was) this.send({ event: 'failure', vm, job, message: `backup of ${vm} failed${details.failedStep ? ` in step ${details.failedStep}` : ''}: ${details.error ?? 'unknown error'}`, ...details });
    if (ok && was) this.send({ event: 'recovery', vm, job, message: `backup of ${vm} succeeded again`, ...details });
  }

  /** The RPO state: alerts when a VM breaches its target and when it is back within it. */
  rpoState(vm: string, job: string, rpoSeconds: number, targetSeconds: number): void {
    const breach = rpoSeconds > targetSeconds;
    const was = this.breached.get(vm);
    this.breached.set(vm, breach);
    if (breach && was !== true) {
      this.send({ event: 'rpo_breach', vm, job, message: `${vm}: newest good snapshot is ${fmt(rpoSeconds)} old, RPO target ${fmt(targetSeconds)}`, rpoSeconds, rpoTargetSeconds: targetSeconds });
    } else if (!breach && was === true) {
      this.send({ event: 'rpo_restored', vm, job, message: `${vm} is within its RPO target again`, rpoSeconds, rpoTargetSeconds: targetSeconds });
    }
  }

  private send(a: Alert): void {
    const t = this.target;
    this.log.warn({ vm: a.vm, job: a.job, event: a.event, alert: a.message }, 'alert');
    if (!t) return;
    const body = JSON.stringify({ ...a, time: new Date().toISOString(), host: os.hostname(), service: 'pilotlight' });
    const p = withRetry(
      async () => {
        const res = await fetch(t.url, { method: 'POST', headers: { 'content-type': 'application/json', ...t.headers }, body, signal: AbortSignal.timeout(10_000) });
        await res.arrayBuffer().catch(() => undefined);
        if (!res.ok) throw new HttpStatusError(res.status);
      },
      { attempts: t.attempts, ...this.retry },
      {
        retryable: (err) => !(err instanceof HttpStatusError) || err.status >= 500 || err.status === 429,
        onRetry: (err, attempt, delayMs) => this.log.debug({ vm: a.vm, event: a.event, attempt, delayMs, ...errorFields(err) }, 'webhook retry'),
      },
    ).then(
      () => void metrics.alertsSent.inc({ event: a.event, outcome: 'sent' }),
      (err) => {
        metrics.alertsSent.inc({ event: a.event, outcome: 'failed' });
        this.log.error({ vm: a.vm, event: a.event, ...errorFields(err) }, 'webhook alert could not be delivered');
      },
    );
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  /** Waits for alerts in flight (at shutdown), at most `ms`. */
  async flush(ms = 5000): Promise<void> {
    await Promise.race([Promise.allSettled([...this.pending]), new Promise((r) => setTimeout(r, ms).unref())]);
  }
}

function fmt(s: number): string {
  if (!Number.isFinite(s)) return 'never';
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
