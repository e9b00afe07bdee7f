/**
 * `pilotlight run`: keeps every configured VM within its RPO target.
 *
 * - Each job ticks on its schedule (schedule.ts); every tick queues the job's VMs.
 * - Never two backups of one VM at once: in this process (a VM whose previous run is
 *   still going is reported as an overrun and not queued again), and across processes
 *   and hosts (the per-VM lease in the repository, src/repo/vm-lease.ts). A run that
 *   finds a snapshot newer than its tick (another host did this interval's backup) is
 *   skipped as fresh.
 * - Bounded parallelism: `service.parallelism` over all jobs, `parallelism` per job.
 * - A failing run is retried with backoff and jitter (`retries`), then reported.
 * - The jobs of one process share one Repository (and so one local cache) per repository.
 * - SIGTERM: running backups are aborted (nothing is committed half-way; the vSphere
 *   snapshot is removed by the source's close) and waited for up to `shutdownGrace`.
 * - SIGHUP: reloads the config; a config with mistakes is refused and the old one kept.
 */
import * as os from 'node:os';
import type { Server } from 'node:http';
import type { EbsPushResult } from '../cloud/ebs-push.js';
import { UserError } from '../repo/errors.js';
import { Repository } from '../repo/repository.js';
import { LeaseBusyError, VmLease } from '../repo/vm-lease.js';
import { SnapshotCatalog, SnapshotRecord } from '../snapshot/snapshot-record.js';
import { StoreMetrics, storeMetrics } from '../store/metered-store.js';
import { openStore } from '../store/open-store.js';
import { withRetry } from '../store/retry.js';
import { Alerter, WebhookTarget } from './alerts.js';
import type { JobConfig, RepositoryConfig, ServiceConfig } from './config-schema.js';
import { LoadedConfig, intervalMs, loadConfig, rpoTargetMs } from './config.js';
import { parseDuration } from './duration.js';
import { startHttp } from './http.js';
import { runBackupJob } from './job.js';
import { Logger, errorFields } from './logger.js';
import { metrics, startDefaultMetrics } from './metrics.js';
import { Schedule, scheduleOf } from './schedule.js';
import { resolveSecret } from './secrets.js';
import { Semaphore } from './semaphore.js';
import { openConfiguredSource } from './sources.js';
import { VmStatus, writeVmStatus } from './vm-status.js';

export type RunResult = 'success' | 'partial' | 'failure' | 'busy' | 'fresh' | 'aborted' | 'overrun';

export interface ServiceOptions {
  configFile: string;
  log: Logger;
  metricsListen?: string;
  /** Lease lifetime (default 120 s; tests shorten it). */
  leaseTtlMs?: number;
  cacheDir?: string;
}

interface VmState {
  vm: string;
  job: string;
  repository: string;
  rpoTargetMs: number;
  ebsShadow: boolean;
  newest: number | null;
  newestId: string | null;
  lastError?: string;
  /** A run of this VM finished in this process (until then a VM without any snapshot is not alerted as an RPO breach: a new VM is not a breach before its first run). */
  ran?: boolean;
}

interface RepoHandle {
  key: string;
  repo: Promise<Repository>;
  seen?: StoreMetrics;
}

function vmKey(repository: string, vm: string): string {
  return `${repository}\u0000${vm}`;
}

export class ProtectionService {
  private loaded!: LoadedConfig;
  private readonly repos = new Map<string, RepoHandle>();
  private readonly states = new Map<string, VmState>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly running = new Map<string, Promise<RunResult>>();
  private readonly jobSems = new Map<string, Semaphore>();
  private global = new Semaphore(4);
  private readonly ac = new AbortController();
  private readonly alerter: Alerter;
  private statusTimer: NodeJS.Timeout | null = null;
  private http: Server | null = null;
  private stopping = false;
  private readonly log: Logger;

  private constructor(private readonly opts: ServiceOptions) {
    this.log = opts.log;
    this.alerter = new Alerter(undefined, this.log);
  }

  get config(): ServiceConfig {
    return this.loaded.config;
  }

  /** Loads the config and opens what it names; does not schedule yet. */
  static async create(opts: ServiceOptions): Promise<ProtectionService> {
    const s = new ProtectionService(opts);
    await s.apply(await loadConfig(opts.configFile));
    startDefaultMetrics();
    return s;
  }

  private async apply(loaded: LoadedConfig): Promise<void> {
    const c = loaded.config;
    const hook = c.alerts?.webhook;
    let target: WebhookTarget | undefined;
    if (hook) {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(hook.headers ?? {})) headers[k] = typeof v === 'string' ? v : await resolveSecret(v, `alerts.webhook.headers.${k}`);
      target = { url: hook.url, headers, attempts: hook.attempts ?? 5 };
    }
    this.loaded = loaded;
    this.alerter.setTarget(target);
    this.global.setLimit(c.service?.parallelism ?? 4);
    const wanted = new Set<string>();
    for (const job of c.jobs) {
      const sem = this.jobSems.get(job.name);
      if (sem) sem.setLimit(job.parallelism ?? 2);
      else this.jobSems.set(job.name, new Semaphore(job.parallelism ?? 2));
      for (const vm of job.vms) {
        const key = vmKey(job.repository, vm);
        wanted.add(key);
        const prev = this.states.get(key);
        const st: VmState = {
          vm,
          job: job.name,
          repository: job.repository,
          rpoTargetMs: rpoTargetMs(job),
          ebsShadow: Boolean(job.ebsShadow),
          newest: prev?.newest ?? null,
          newestId: prev?.newestId ?? null,
          lastError: prev?.lastError,
          ran: prev?.ran,
        };
        this.states.set(key, st);
        metrics.rpoTargetSeconds.set({ vm, job: job.name }, st.rpoTargetMs / 1000);
      }
    }
    for (const [key, st] of [...this.states]) {
      if (wanted.has(key)) continue;
      this.states.delete(key);
      for (const g of [metrics.rpoSeconds, metrics.rpoTargetSeconds, metrics.lastSuccess, metrics.ebsLag]) g.remove({ vm: st.vm, job: st.job });
    }
    // a repository whose settings changed gets a new handle; the old one closes when idle (at stop)
    for (const [name, rc] of Object.entries(c.repositories)) {
      const key = JSON.stringify(rc);
      if (this.repos.get(name)?.key !== key) this.repos.set(name, { key, repo: this.openRepository(name, rc) });
    }
  }

  private async openRepository(name: string, rc: RepositoryConfig): Promise<Repository> {
    const password = rc.password ? await resolveSecret(rc.password, `repositories.${name}.password`) : undefined;
    const store = await openStore(rc.location, { s3Endpoint: rc.s3Endpoint, storageClass: rc.storageClass, ...(rc.spoolDir ? { s3: { spoolDir: rc.spoolDir } } : {}) });
    try {
      const repo = await Repository.open(store, { password, passwordFile: rc.passwordFile }, rc.cacheDir ?? this.opts.cacheDir);
      this.log.info({ repository: name, location: repo.location }, 'repository open');
      return repo;
    } catch (err) {
      await store.close().catch(() => {});
      throw err;
    }
  }

  private async repository(name: string): Promise<Repository> {
    const h = this.repos.get(name);
    if (!h) throw new UserError(`no repository ${name} in the configuration`);
    try {
      return await h.repo;
    } catch (err) {
      // try again on the next run (a repository that was unreachable at start)
      if (this.repos.get(name) === h) this.repos.set(name, { key: h.key, repo: this.openRepository(name, this.config.repositories[name]!) });
      throw err;
    }
  }

  /** Starts the schedules, the status refresh, the metrics endpoint and the signal handlers. */
  async start(): Promise<void> {
    const listen = this.opts.metricsListen ?? this.config.service?.metricsListen;
    if (listen) {
      this.http = await startHttp(listen, () => this.health());
      this.log.info({ listen }, 'metrics at /metrics, health at /healthz');
    }
    this.scheduleAll(true);
    const every = parseDuration(this.config.service?.statusInterval ?? '30s') ?? 30_000;
    const refresh = () => {
      this.statusTimer = setTimeout(() => {
        void this.refreshStatus().finally(() => {
          if (!this.stopping) refresh();
        });
      }, every);
    };
    void this.refreshStatus();
    refresh();
    this.log.info({ jobs: this.config.jobs.map((j) => ({ job: j.name, vms: j.vms.length, schedule: scheduleOf(j).text })), host: os.hostname() }, 'service started');
  }

  health(): { ok: boolean; jobs: number; vms: number; running: number; stopping: boolean } {
    return { ok: !this.stopping, jobs: this.config.jobs.length, vms: this.states.size, running: this.running.size, stopping: this.stopping };
  }

  private scheduleAll(startup: boolean): void {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    for (const job of this.config.jobs) {
      const sched = scheduleOf(job);
      if (startup) this.tick(job.name, sched.previous(Date.now()));
      this.arm(job.name, sched);
    }
  }

  private arm(jobName: string, sched: Schedule): void {
    if (this.stopping) return;
    const now = Date.now();
    const at = sched.next(now);
    const t = setTimeout(() => {
      this.timers.delete(jobName);
      this.tick(jobName, at);
      const job = this.config.jobs.find((j) => j.name === jobName);
      if (job) this.arm(jobName, scheduleOf(job));
    }, at - now);
    this.timers.set(jobName, t);
  }

  /** Queues every VM of a job for the tick at `tickTime`. */
  private tick(jobName: string, tickTime: number): void {
    const job = this.config.jobs.find((j) => j.name === jobName);
    if (!job || this.stopping) return;
    for (const vm of job.vms) void this.runVm(job, vm, tickTime);
  }

  /** Runs every job once (`--once`); true when every VM is within its RPO target afterwards. */
  async runOnce(): Promise<boolean> {
    const now = Date.now() + 1;
    await Promise.all(this.config.jobs.flatMap((job) => job.vms.map((vm) => this.runVm(job, vm, now))));
    await this.refreshStatus();
    let all = true;
    for (const st of this.states.values()) {
      const age = st.newest === null ? Infinity : Date.now() - st.newest;
      const within = age <= st.rpoTargetMs;
      if (!within) all = false;
      this.log.info({ vm: st.vm, job: st.job, snapshot: st.newestId, ageSeconds: Number.isFinite(age) ? Math.round(age / 1000) : null, rpoTargetSeconds: st.rpoTargetMs / 1000, within }, within ? 'within RPO' : 'OUTSIDE RPO');
    }
    return all;
  }

  /** One run of one VM: lease, fresh check, backup job with retries, status, metrics, alerts. */
  runVm(job: JobConfig, vm: string, tickTime: number): Promise<RunResult> {
    const key = vmKey(job.repository, vm);
    if (this.running.has(key)) {
      metrics.runs.inc({ vm, result: 'overrun' });
      this.log.warn({ vm, job: job.name, tick: new Date(tickTime).toISOString() }, 'overrun: the previous run of this VM is still going; this tick is skipped');
      return Promise.resolve('overrun');
    }
    const p = this.runVmNow(job, vm, tickTime).finally(() => this.running.delete(key));
    this.running.set(key, p);
    return p;
  }

  private async runVmNow(job: JobConfig, vm: string, tickTime: number): Promise<RunResult> {
    const releaseGlobal = await this.global.acquire();
    const releaseJob = await (this.jobSems.get(job.name) ?? new Semaphore(1)).acquire();
    metrics.running.inc();
    const started = new Date();
    const state = this.states.get(vmKey(job.repository, vm));
    let lease: VmLease | undefined;
    try {
      if (this.stopping) return 'aborted';
      const repo = await this.repository(job.repository);
      try {
        lease = await VmLease.acquire(repo.store, new SnapshotCatalog(repo).vmTag(vm), { label: vm, ttlMs: this.opts.leaseTtlMs, operation: `pilotlight run, job ${job.name}` });
      } catch (err) {
        if (!(err instanceof LeaseBusyError)) throw err;
        metrics.runs.inc({ vm, result: 'busy' });
        this.log.info({ vm, job: job.name, reason: err.message }, 'skipped: another process is backing this VM up');
        return 'busy';
      }
      const newest = await this.newestOf(repo, vm);
      this.noteNewest(state, newest);
      if (newest && Date.parse(newest.time) >= tickTime) {
        metrics.runs.inc({ vm, result: 'fresh' });
        this.log.debug({ vm, job: job.name, snapshot: newest.id }, 'skipped: a snapshot newer than this tick exists');
        return 'fresh';
      }
      return await this.backupWithRetries(repo, job, vm, state, lease, started);
    } catch (err) {
      // could not even start (repository unreachable): a failure like any other
      metrics.runs.inc({ vm, result: 'failure' });
      this.log.error({ vm, job: job.name, ...errorFields(err) }, 'run failed before the backup started');
      if (state) {
        state.lastError = (err as Error).message;
        state.ran = true;
      }
      this.alerter.runOutcome(vm, job.name, false, { error: (err as Error).message });
      return 'failure';
    } finally {
      await lease?.release().catch((err) => this.log.warn({ vm, ...errorFields(err) }, 'could not release the lease (it expires by itself)'));
      metrics.running.dec();
      releaseJob();
      releaseGlobal();
    }
  }

  private async backupWithRetries(repo: Repository, job: JobConfig, vm: string, state: VmState | undefined, lease: VmLease, started: Date): Promise<RunResult> {
    const src = this.config.sources[vm]!;
    const interval = intervalMs(job);
    const timeoutMs = job.timeout ? parseDuration(job.timeout)! : Math.max(10 * 60_000, 4 * interval);
    const signal = AbortSignal.any([this.ac.signal, lease.signal, AbortSignal.timeout(timeoutMs)]);
    const policy = {
      attempts: job.retries?.attempts ?? 3,
      baseDelayMs: job.retries?.delay ? parseDuration(job.retries.delay)! : Math.min(30_000, Math.max(1000, interval / 10)),
      maxDelayMs: job.retries?.maxDelay ? parseDuration(job.retries.maxDelay)! : Math.max(5 * 60_000, interval),
    };
    let attempts = 0;
    const log = this.log.child({ vm, job: job.name });
    const t0 = performance.now();
    try {
      const result = await withRetry(
        async () => {
          attempts++;
          const { source, kind } = await openConfiguredSource(this.config, vm, src, { readLimitMiBps: job.readLimitMiBps, log: (m) => log.info(m) });
          try {
            return await runBackupJob(repo, source, {
              parent: 'auto',
              // backups run side by side: their worker threads share the cores instead of each taking all
              workers: Math.max(1, Math.floor(os.cpus().length / (this.config.service?.parallelism ?? 4))),
              signal,
              sourceKind: kind,
              verifyUnchangedPercent: job.verifyUnchanged,
              ebsShadow: job.ebsShadow ? (typeof job.ebsShadow === 'object' ? job.ebsShadow : {}) : false,
              retention: job.retention,
            });
          } finally {
            await source.close().catch((err) => log.warn(errorFields(err), 'closing the source failed'));
          }
        },
        policy,
        {
          signal,
          retryable: () => !signal.aborted,
          onRetry: (err, attempt, delayMs) => log.warn({ attempt, delayMs, ...errorFields(err) }, 'backup failed; retrying'),
        },
      );
      const seconds = (performance.now() - t0) / 1000;
      const outcome: RunResult = result.ok ? 'success' : 'partial';
      const b = result.backup;
      metrics.runs.inc({ vm, result: outcome });
      metrics.duration.observe({ vm }, seconds);
      metrics.bytesRead.inc({ vm }, b.bytesScanned);
      metrics.bytesNew.inc({ vm }, b.bytesNew);
      metrics.bytesStored.inc({ vm }, b.bytesStored);
      this.noteNewest(state, { id: b.snapshot, time: new Date(Date.now()).toISOString() });
      if (state) {
        state.lastError = result.error;
        state.ran = true;
      }
      (result.ok ? log.info.bind(log) : log.error.bind(log))(
        { snapshot: b.snapshot, seconds: Number(seconds.toFixed(2)), bytesScanned: b.bytesScanned, bytesNew: b.bytesNew, bytesStored: b.bytesStored, attempts, ...(result.failedStep ? { failedStep: result.failedStep, error: result.error } : {}) },
        result.ok ? 'backup done' : 'backup committed, a later step failed',
      );
      if (result.ebs) this.noteEbs(state, result.ebs);
      await this.recordStatus(repo, job, vm, started, {
        result: outcome,
        snapshot: b.snapshot,
        attempts,
        ...(result.failedStep ? { failedStep: result.failedStep, error: result.error } : {}),
      });
      this.alerter.runOutcome(vm, job.name, result.ok, { snapshot: b.snapshot, failedStep: result.failedStep, error: result.error });
      return outcome;
    } catch (err) {
      if (this.ac.signal.aborted) {
        metrics.runs.inc({ vm, result: 'aborted' });
        log.warn(errorFields(err), 'backup aborted by shutdown; nothing was committed');
        return 'aborted';
      }
      const message = lease.signal.aborted ? `${(err as Error).message} (${String((lease.signal.reason as Error)?.message ?? 'lease lost')})` : (err as Error).message;
      metrics.runs.inc({ vm, result: 'failure' });
      metrics.duration.observe({ vm }, (performance.now() - t0) / 1000);
      log.error({ attempts, ...errorFields(err), error: message }, 'backup failed');
      if (state) {
        state.lastError = message;
        state.ran = true;
      }
      await this.recordStatus(repo, job, vm, started, { result: 'failure', snapshot: null, attempts, error: message });
      this.alerter.runOutcome(vm, job.name, false, { error: message });
      return 'failure';
    }
  }

  private async recordStatus(repo: Repository, job: JobConfig, vm: string, started: Date, run: Omit<VmStatus['lastRun'], 'started' | 'finished'>): Promise<void> {
    const { readVmStatus } = await import('./vm-status.js');
    try {
      const prev = await readVmStatus(repo, vm).catch(() => null);
      const now = new Date().toISOString();
      const ok = run.result !== 'failure';
      const s: VmStatus = {
        format: 'pilotlight-vm-status',
        version: 1,
        vm,
        job: job.name,
        rpoTargetSeconds: rpoTargetMs(job) / 1000,
        host: os.hostname(),
        lastRun: { started: started.toISOString(), finished: now, ...run },
        lastSuccess: run.snapshot ? { time: now, snapshot: run.snapshot } : prev?.lastSuccess,
        lastError: run.error ? { time: now, error: run.error, ...(run.failedStep ? { failedStep: run.failedStep } : {}) } : prev?.lastError,
        consecutiveFailures: ok ? 0 : (prev?.consecutiveFailures ?? 0) + 1,
      };
      await writeVmStatus(repo, s);
    } catch (err) {
      this.log.warn({ vm, ...errorFields(err) }, 'could not write the status record');
    }
  }

  private async newestOf(repo: Repository, vm: string): Promise<SnapshotRecord | null> {
    return new SnapshotCatalog(repo).latest(vm);
  }

  private noteNewest(state: VmState | undefined, rec: { id: string; time: string } | null): void {
    if (!state || !rec) return;
    const t = Date.parse(rec.time);
    if (state.newest === null || t >= state.newest) {
      state.newest = t;
      state.newestId = rec.id;
      metrics.lastSuccess.set({ vm: state.vm, job: state.job }, t / 1000);
    }
    this.publishRpo(state);
  }

  private noteEbs(state: VmState | undefined, pushed: EbsPushResult[]): void {
    if (state && pushed.length) metrics.ebsLag.set({ vm: state.vm, job: state.job }, 0);
  }

  private publishRpo(st: VmState): void {
    const age = st.newest === null ? Infinity : (Date.now() - st.newest) / 1000;
    metrics.rpoSeconds.set({ vm: st.vm, job: st.job }, age);
    if (st.newest !== null || st.ran) this.alerter.rpoState(st.vm, st.job, age, st.rpoTargetMs / 1000);
  }

  /** Re-reads the newest snapshot of every VM (one listing per repository), EBS lag and store counters. */
  async refreshStatus(): Promise<void> {
    const byRepo = new Map<string, VmState[]>();
    for (const st of this.states.values()) byRepo.set(st.repository, [...(byRepo.get(st.repository) ?? []), st]);
    for (const [name, states] of byRepo) {
      try {
        const repo = await this.repository(name);
        const newest = new Map<string, SnapshotRecord>();
        for (const r of await new SnapshotCatalog(repo).list()) newest.set(r.vm, r);
        for (const st of states) {
          this.noteNewest(st, newest.get(st.vm) ?? null);
          if (st.newest === null) this.publishRpo(st);
          if (st.ebsShadow) await this.refreshEbsLag(repo, st, newest.get(st.vm));
        }
        this.countRequests(name, repo);
      } catch (err) {
        this.log.warn({ repository: name, ...errorFields(err) }, 'status refresh failed');
        for (const st of states) this.publishRpo(st);
      }
    }
  }

  private async refreshEbsLag(repo: Repository, st: VmState, newest: SnapshotRecord | undefined): Promise<void> {
    if (!newest) return;
    const { listEbsMaps } = await import('../cloud/ebs-map.js');
    const maps = await listEbsMaps(repo.store, st.vm, 0);
    const last = maps[maps.length - 1];
    const lag = last ? Math.max(0, (Date.parse(newest.time) - Date.parse(last.snapshotTime)) / 1000) : Infinity;
    metrics.ebsLag.set({ vm: st.vm, job: st.job }, lag);
  }

  private countRequests(name: string, repo: Repository): void {
    const h = this.repos.get(name);
    const m = storeMetrics(repo.store);
    if (!h || !m) return;
    for (const kind of ['put', 'get', 'head', 'list', 'delete'] as const) {
      const d = m[kind] - (h.seen?.[kind] ?? 0);
      if (d > 0) metrics.storeRequests.inc({ repository: name, kind }, d);
    }
    h.seen = { ...m, operations: {} };
  }

  /** SIGHUP: a new config replaces the old one (schedules, jobs, alerts) unless it has mistakes. */
  async reload(): Promise<boolean> {
    let loaded: LoadedConfig;
    try {
      loaded = await loadConfig(this.opts.configFile);
    } catch (err) {
      this.log.error(errorFields(err), 'reload refused: the configuration has mistakes; the running one stays');
      return false;
    }
    await this.apply(loaded);
    this.scheduleAll(false);
    this.log.info({ jobs: this.config.jobs.map((j) => ({ job: j.name, vms: j.vms.length, schedule: scheduleOf(j).text })) }, 'configuration reloaded');
    return true;
  }

  /** Stops: no new runs, running backups aborted and waited for (at most graceMs), repositories closed. */
  async stop(graceMs = parseDuration(this.config.service?.shutdownGrace ?? '30s') ?? 30_000): Promise<boolean> {
    if (this.stopping) return true;
    this.stopping = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    if (this.statusTimer) clearTimeout(this.statusTimer);
    const inFlight = [...this.running.values()];
    if (inFlight.length) this.log.info({ running: inFlight.length, graceSeconds: graceMs / 1000 }, 'stopping: aborting running backups');
    this.ac.abort(new UserError('the service is stopping', 130));
    const done = await Promise.race([Promise.allSettled(inFlight).then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), graceMs).unref())]);
    if (!done) this.log.error({ graceSeconds: graceMs / 1000 }, 'backups did not stop within the grace period; leaving them (nothing uncommitted is ever used)');
    await this.alerter.flush();
    if (done) {
      for (const h of this.repos.values()) await (await h.repo.catch(() => null))?.close().catch(() => {});
    }
    this.http?.close();
    this.log.info({ clean: done }, 'service stopped');
    return done;
  }
}
