/**
 * `pilotlight run` as a real process on generated images and a local repository, with
 * intervals of a few seconds: schedules, overruns, a failing source (one webhook alert,
 * RPO growing, recovery), SIGHUP, /metrics through a Prometheus text parser, secrets kept
 * out of the logs, SIGTERM during a backup (exit 0 within the deadline, repository
 * verifies); `--once` exit codes; a committed backup whose EBS step fails (exit 4).
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ok, run, scratch } from '../support/cli.js';
import { makeImage } from '../support/images.js';
import { unusedPort } from '../support/rgw.js';
import { Hook, ServiceProcess, sample, scrape, startService, waitFor, webhookReceiver } from '../support/service.js';

const MiB = 1024 * 1024;
const REPO_PW = 'repo-secret-horse-battery-8271';
const HOOK_TOKEN = 'hook-token-5f1e9a0c77';

function config(dir: string, hookPort: number, hupEvery: string): string {
  return `
repositories:
  main:
    location: ${dir}/repo
    password: { env: PL_TEST_REPO_PW }
sources:
  steady: { file: { images: [${dir}/steady.img] } }
  flaky: { file: { images: [${dir}/flaky.img] } }
  slow: { file: { images: [${dir}/slow.img] } }
  hup: { file: { images: [${dir}/hup.img] } }
jobs:
  - name: steady
    repository: main
    vms: [steady, flaky]
    every: 2s
    rpo: 3s
    retries: { attempts: 1 }
  - name: slow
    repository: main
    vms: [slow]
    every: 1s
    readLimitMiBps: 2
    retries: { attempts: 1 }
  - name: hup
    repository: main
    vms: [hup]
    every: ${hupEvery}
alerts:
  webhook:
    url: http://127.0.0.1:${hookPort}/hook
    headers: { Authorization: { env: PL_TEST_HOOK_TOKEN }, X-Team: storage }
    attempts: 3
service:
  parallelism: 4
  statusInterval: 300ms
  shutdownGrace: 10s
`;
}

describe('pilotlight run', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let env: Record<string, string>;
  let hook: Hook;
  let port: number;
  let svc: ServiceProcess;
  let cfg: string;
  let startedAt = 0;

  before(async () => {
    s = await scratch('service');
    env = { ...s.env, PILOTLIGHT_PASSWORD: REPO_PW, PL_TEST_REPO_PW: REPO_PW, PL_TEST_HOOK_TOKEN: `Bearer ${HOOK_TOKEN}` };
    await ok(['--repo', path.join(s.dir, 'repo'), 'init'], env);
    await makeImage(path.join(s.dir, 'steady.img'), 2 * MiB, [{ offset: 0, length: MiB, kind: 'random' }], 1);
    await makeImage(path.join(s.dir, 'flaky.img'), 2 * MiB, [{ offset: 0, length: MiB, kind: 'random' }], 2);
    await makeImage(path.join(s.dir, 'slow.img'), 8 * MiB, [{ offset: 0, length: 8 * MiB, kind: 'random' }], 3);
    await makeImage(path.join(s.dir, 'hup.img'), MiB, [{ offset: 0, length: MiB, kind: 'text' }], 4);
    hook = await webhookReceiver();
    port = await unusedPort();
    cfg = path.join(s.dir, 'pilotlight.yaml');
    await fsp.writeFile(cfg, config(s.dir, hook.port, '1h'));
    startedAt = Date.now();
    svc = startService(['--config', cfg, '--metrics-listen', `127.0.0.1:${port}`, '--log-format', 'json'], env);
  });

  after(async () => {
    if (svc.child.exitCode === null) svc.child.kill('SIGKILL');
    await hook.close();
    await s.cleanup();
  });

  const runs = async (vm: string, result: string) => sample(await scrape(port), 'pilotlight_backup_runs_total', { vm, result }) ?? 0;

  it('backs up on schedule', async () => {
    await waitFor('3 backups of steady', async () => (await runs('steady', 'success')) >= 3, 40_000);
  });

  it('a failing source alerts once, its RPO grows, then it recovers with one recovery alert', async () => {
    await waitFor('a first backup of flaky', async () => (await runs('flaky', 'success')) >= 1);
    await fsp.rename(path.join(s.dir, 'flaky.img'), path.join(s.dir, 'flaky.away'));
    await waitFor('3 failed runs of flaky', async () => (await runs('flaky', 'failure')) >= 3, 30_000);
    const rpo1 = sample(await scrape(port), 'pilotlight_rpo_seconds', { vm: 'flaky' })!;
    await new Promise((r) => setTimeout(r, 1500));
    const rpo2 = sample(await scrape(port), 'pilotlight_rpo_seconds', { vm: 'flaky' })!;
    assert.ok(rpo2 > rpo1 && rpo2 > 3, `the RPO of a failing VM grows: ${rpo1} -> ${rpo2}`);
    const failures = () => hook.received.filter((h) => h.body.vm === 'flaky' && h.body.event === 'failure');
    await waitFor('the failure alert', async () => failures().length >= 1);
    assert.equal(failures().length, 1, 'one alert for the state change, not one per failed run');
    assert.equal(failures()[0]!.headers.authorization, `Bearer ${HOOK_TOKEN}`, 'the header secret was resolved from its reference');
    assert.equal(failures()[0]!.headers['x-team'], 'storage');
    assert.match(String(failures()[0]!.body.error), /flaky\.img/);
    await fsp.rename(path.join(s.dir, 'flaky.away'), path.join(s.dir, 'flaky.img'));
    const recovered = () => hook.received.filter((h) => h.body.vm === 'flaky' && h.body.event === 'recovery');
    await waitFor('the recovery alert', async () => recovered().length >= 1, 20_000);
    const rpo3 = await waitFor('the RPO back under its target', async () => {
      const v = sample(await scrape(port), 'pilotlight_rpo_seconds', { vm: 'flaky' })!;
      return v < 3 ? v : undefined;
    });
    assert.ok(rpo3 < rpo2, 'the RPO falls after the recovery');
    assert.equal(failures().length, 1);
    assert.equal(recovered().length, 1);
    assert.ok(hook.received.some((h) => h.body.vm === 'flaky' && h.body.event === 'rpo_breach'), 'the RPO breach was alerted too');
  });

  it('a slow source overruns: reported, never two backups of one VM at once', async () => {
    await waitFor('2 backups of slow', async () => (await runs('slow', 'success')) >= 2, 40_000);
    assert.ok((await runs('slow', 'overrun')) >= 1, 'the overrun is counted');
    assert.match(svc.stderr(), /overrun/);
  });

  it('SIGHUP applies a changed schedule', async () => {
    // schedules tick on multiples of their interval: a test that spans the top of an hour may see that tick's run too
    const hourTicks = Math.floor(Date.now() / 3_600_000) - Math.floor(startedAt / 3_600_000);
    const hupRuns = await runs('hup', 'success');
    assert.ok(hupRuns >= 1 && hupRuns <= 1 + hourTicks, `every: 1h: only the start-up run (and the top of the hour's, if one passed): ${hupRuns} runs, ${hourTicks} ticks`);
    await fsp.writeFile(cfg, config(s.dir, hook.port, '1s'));
    svc.child.kill('SIGHUP');
    await waitFor('3 more backups of hup after the reload', async () => (await runs('hup', 'success')) >= 4, 30_000);
    assert.match(svc.stderr(), /configuration reloaded/);
  });

  it('/metrics parses as Prometheus text format; /healthz answers', async () => {
    const m = await scrape(port);
    const names = new Set(m.map((f) => f.name));
    for (const n of [
      'pilotlight_rpo_seconds',
      'pilotlight_rpo_target_seconds',
      'pilotlight_backup_last_success_timestamp_seconds',
      'pilotlight_backup_runs_total',
      'pilotlight_backup_duration_seconds',
      'pilotlight_backup_read_bytes_total',
      'pilotlight_backup_new_bytes_total',
      'pilotlight_backup_stored_bytes_total',
      'pilotlight_store_requests_total',
      'pilotlight_build_info',
    ]) {
      assert.ok(names.has(n), `${n} is exported`);
    }
    assert.equal(sample(m, 'pilotlight_rpo_target_seconds', { vm: 'steady' }), 3);
    assert.equal(sample(m, 'pilotlight_build_info', {}), 1);
    assert.ok((sample(m, 'pilotlight_backup_read_bytes_total', { vm: 'steady' }) ?? 0) >= 3 * MiB);
    assert.ok((sample(m, 'pilotlight_store_requests_total', { repository: 'main', kind: 'put' }) ?? 0) > 0);
    const h = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(h.status, 200);
    assert.equal(((await h.json()) as { ok: boolean }).ok, true);
  });

  it('logs are JSON lines and hold no secret', () => {
    const lines = svc.stderr().split('\n').filter(Boolean);
    assert.ok(lines.length > 10);
    for (const l of lines) assert.doesNotThrow(() => JSON.parse(l), `not a JSON line: ${l}`);
    assert.ok(!svc.stderr().includes(REPO_PW), 'the repository password is in no log line');
    assert.ok(!svc.stderr().includes(HOOK_TOKEN), 'the webhook token is in no log line');
  });

  it('SIGTERM during a backup exits 0 within the deadline and the repository verifies', async () => {
    await waitFor('a backup of slow running', async () => (sample(await scrape(port), 'pilotlight_backups_running', {}) ?? 0) >= 1 && /"vm":"slow"/.test(svc.stderr()));
    const t = Date.now();
    svc.child.kill('SIGTERM');
    const { code } = await svc.exited;
    const took = Date.now() - t;
    assert.equal(code, 0);
    assert.ok(took < 10_000 + 5_000, `stopped in ${took} ms (grace 10 s)`);
    const v = await run(['--repo', path.join(s.dir, 'repo'), 'verify', '--json'], env);
    assert.equal(v.code, 0, v.stderr);
    assert.equal(JSON.parse(v.stdout).ok, true);
    // the slow VM's backups never overlapped: each snapshot's reading interval ends before the next begins
    const snaps = (await ok(['--repo', path.join(s.dir, 'repo'), 'snapshots', '--vm', 'slow', '--json'], env)).json as { time: string; stats: { durationMs: number } }[];
    assert.ok(snaps.length >= 2);
    for (let i = 1; i < snaps.length; i++) {
      const prevEnd = Date.parse(snaps[i - 1]!.time);
      const start = Date.parse(snaps[i]!.time) - snaps[i]!.stats.durationMs;
      assert.ok(start >= prevEnd - 5, `backup ${i} of slow started ${prevEnd - start} ms before the previous one committed`);
    }
    // steady: runs happened on the 2 s schedule (no two in one interval)
    const steady = (await ok(['--repo', path.join(s.dir, 'repo'), 'snapshots', '--vm', 'steady', '--json'], env)).json as { time: string }[];
    const ticks = steady.map((x) => Math.floor(Date.parse(x.time) / 2000));
    assert.equal(new Set(ticks).size, ticks.length, 'one backup of steady per 2 s interval');
  });

  it('status reads every VM from the repository, without the service', async () => {
    const st = await ok(['status', '--config', cfg, '--json'], env).catch(async () => run(['status', '--config', cfg, '--json'], env));
    const lines = JSON.parse(st.stdout) as { vm: string; newestSnapshot: string | null; rpoTargetSeconds: number; lastRun: { result: string } | null }[];
    assert.deepEqual(lines.map((l) => l.vm).sort(), ['flaky', 'hup', 'slow', 'steady']);
    for (const l of lines) assert.ok(l.newestSnapshot, `${l.vm} has a snapshot`);
    assert.equal(lines.find((l) => l.vm === 'steady')!.rpoTargetSeconds, 3);
    assert.equal(lines.find((l) => l.vm === 'flaky')!.lastRun!.result, 'success');
  });

  it('--once: exit 0 when every VM is within its RPO, 5 when one is not', async () => {
    const once = path.join(s.dir, 'once.yaml');
    const base = `repositories:\n  main:\n    location: ${s.dir}/repo\n    password: { env: PL_TEST_REPO_PW }\nsources:\n  steady: { file: { images: [${s.dir}/steady.img] } }\n  gone: { file: { images: [${s.dir}/gone.img] } }\n`;
    await fsp.writeFile(once, `${base}jobs:\n  - { name: a, repository: main, vms: [steady], every: 15m }\n`);
    const r1 = await run(['run', '--config', once, '--once'], env);
    assert.equal(r1.code, 0, r1.stderr);
    await fsp.writeFile(once, `${base}jobs:\n  - { name: a, repository: main, vms: [steady, gone], every: 15m, retries: { attempts: 1 } }\n`);
    const r2 = await run(['run', '--config', once, '--once'], env);
    assert.equal(r2.code, 5, r2.stderr);
    assert.match(r2.stderr, /OUTSIDE RPO/);
  });

  it('--once with a retention policy forgets what the policy no longer keeps (keepLast: 2 after three runs)', async () => {
    const cfgFile = path.join(s.dir, 'keep.yaml');
    await makeImage(path.join(s.dir, 'kept.img'), MiB, [{ offset: 0, length: MiB, kind: 'text' }], 9);
    await fsp.writeFile(
      cfgFile,
      `repositories:\n  main:\n    location: ${s.dir}/repo\n    password: { env: PL_TEST_REPO_PW }\nsources:\n  kept: { file: { images: [${s.dir}/kept.img] } }\n` +
        `jobs:\n  - { name: k, repository: main, vms: [kept], every: 15m, retention: { keepLast: 2 } }\n`,
    );
    const made: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await run(['run', '--config', cfgFile, '--once'], env);
      assert.equal(r.code, 0, r.stderr);
      const list = (await ok(['--repo', path.join(s.dir, 'repo'), 'snapshots', '--vm', 'kept', '--json'], env)).json as { id: string }[];
      made.push(list[list.length - 1]!.id);
    }
    const left = ((await ok(['--repo', path.join(s.dir, 'repo'), 'snapshots', '--vm', 'kept', '--json'], env)).json as { id: string }[]).map((x) => x.id);
    assert.deepEqual(left, made.slice(1), 'the two newest are kept, the oldest forgotten');
  });

  it('a committed backup whose EBS shadow step fails reports the snapshot and the step, exit 4', async () => {
    const noAws = { AWS_REGION: '', AWS_DEFAULT_REGION: '', AWS_CONFIG_FILE: path.join(s.dir, 'none'), AWS_SHARED_CREDENTIALS_FILE: path.join(s.dir, 'none'), AWS_ENDPOINT_URL_EBS: '' };
    const r = await run(['--repo', path.join(s.dir, 'repo'), '--json', 'backup', 'file', path.join(s.dir, 'steady.img'), '--vm', 'steady', '--ebs-shadow'], { ...env, ...noAws });
    assert.equal(r.code, 4, r.stderr);
    const out = JSON.parse(r.stdout) as { snapshot: string; ok: boolean; failedStep: string };
    assert.equal(out.ok, false);
    assert.equal(out.failedStep, 'ebs-shadow');
    assert.match(r.stderr, new RegExp(`snapshot ${out.snapshot} was committed, but the ebs-shadow step failed`));
    const list = (await ok(['--repo', path.join(s.dir, 'repo'), 'snapshots', '--vm', 'steady', '--json'], env)).json as { id: string }[];
    assert.ok(list.some((x) => x.id === out.snapshot), 'the snapshot is in the repository');
  });
});
