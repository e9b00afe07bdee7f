/**
 * Prometheus metrics of the service, in prom-client's default registry (other modules,
 * e.g. the NBD server's pilotlight_nbd_*, register there too). Served at /metrics by
 * http.ts. Names follow the Prometheus conventions: base units (seconds, bytes),
 * `_total` for counters.
 */
import { createRequire } from 'node:module';
import { Counter, Gauge, Histogram, collectDefaultMetrics, register } from 'prom-client';

function once<T>(name: string, make: () => T): T {
  return (register.getSingleMetric(name) as T | undefined) ?? make();
}

const version = (() => {
  try {
    return (createRequire(import.meta.url)('../../../package.json') as { version: string }).version;
  } catch {
    return 'unknown';
  }
})();

export const metrics = {
  rpoSeconds: once('pilotlight_rpo_seconds', () => new Gauge({ name: 'pilotlight_rpo_seconds', help: 'Age of the newest good snapshot of the VM (seconds); +Inf when it has none', labelNames: ['vm', 'job'] })),
  rpoTargetSeconds: once('pilotlight_rpo_target_seconds', () => new Gauge({ name: 'pilotlight_rpo_target_seconds', help: 'RPO target of the VM (seconds)', labelNames: ['vm', 'job'] })),
  lastSuccess: once(
    'pilotlight_backup_last_success_timestamp_seconds',
    () => new Gauge({ name: 'pilotlight_backup_last_success_timestamp_seconds', help: 'Time of the newest good snapshot of the VM (Unix seconds)', labelNames: ['vm', 'job'] }),
  ),
  runs: once('pilotlight_backup_runs_total', () => new Counter({ name: 'pilotlight_backup_runs_total', help: 'Backup runs by result: success, partial (committed, a later step failed), failure, busy (another process holds the VM lease), overrun (skipped: the previous run was still going)', labelNames: ['vm', 'result'] })),
  duration: once(
    'pilotlight_backup_duration_seconds',
    () => new Histogram({ name: 'pilotlight_backup_duration_seconds', help: 'Duration of backup runs (seconds)', labelNames: ['vm'], buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200] }),
  ),
  bytesRead: once('pilotlight_backup_read_bytes_total', () => new Counter({ name: 'pilotlight_backup_read_bytes_total', help: 'Bytes read from sources', labelNames: ['vm'] })),
  bytesNew: once('pilotlight_backup_new_bytes_total', () => new Counter({ name: 'pilotlight_backup_new_bytes_total', help: 'Bytes of new chunks (before compression)', labelNames: ['vm'] })),
  bytesStored: once('pilotlight_backup_stored_bytes_total', () => new Counter({ name: 'pilotlight_backup_stored_bytes_total', help: 'Bytes stored in the repository for new chunks (compressed, encrypted)', labelNames: ['vm'] })),
  ebsLag: once('pilotlight_ebs_shadow_lag_seconds', () => new Gauge({ name: 'pilotlight_ebs_shadow_lag_seconds', help: 'Age of the newest snapshot pushed to EBS minus the age of the newest snapshot (seconds)', labelNames: ['vm', 'job'] })),
  storeRequests: once('pilotlight_store_requests_total', () => new Counter({ name: 'pilotlight_store_requests_total', help: 'Repository store requests by kind', labelNames: ['repository', 'kind'] })),
  running: once('pilotlight_backups_running', () => new Gauge({ name: 'pilotlight_backups_running', help: 'Backups running now' })),
  alertsSent: once('pilotlight_alerts_total', () => new Counter({ name: 'pilotlight_alerts_total', help: 'Webhook alerts by event and outcome', labelNames: ['event', 'outcome'] })),
  buildInfo: once('pilotlight_build_info', () => new Gauge({ name: 'pilotlight_build_info', help: 'Build of the running pilotlight (always 1)', labelNames: ['version', 'node'] })),
};

let started = false;

/** Process metrics (CPU, RSS, event loop lag) and the build info; once per process. */
export function startDefaultMetrics(): void {
  if (started) return;
  started = true;
  collectDefaultMetrics({ prefix: 'pilotlight_process_' });
  metrics.buildInfo.set({ version, node: process.version }, 1);
}

export { register };
