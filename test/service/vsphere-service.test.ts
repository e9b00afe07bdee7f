/**
 * The service on a vSphere source (vcsim + the change-id proxy + the fake VDDK library:
 * test doubles, named as such in test/vsphere/lab.ts): a scheduled backup through the
 * config, and SIGTERM during a backup exits 0 within the deadline with the vSphere
 * snapshot removed and nothing committed half-way (the repository verifies).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { VimClient, moref } from '../../src/source/vsphere/client.js';
import { ok, run, scratch } from '../support/cli.js';
import { unusedPort } from '../support/rgw.js';
import { sample, scrape, startService, waitFor } from '../support/service.js';
import { VCSIM_PASSWORD, VCSIM_USER } from '../vsphere/helpers.js';
import { Lab, VM, scribble, startLab } from '../vsphere/lab.js';

describe('pilotlight run on a vSphere source', () => {
  let lab: Lab;
  let s: Awaited<ReturnType<typeof scratch>>;
  let env: Record<string, string>;

  before(async () => {
    lab = await startLab();
    s = await scratch('svc-vsphere');
    env = { ...s.env, ...(lab.vddkEnv as Record<string, string>), PL_TEST_VC_PW: VCSIM_PASSWORD };
    await ok(['--repo', path.join(s.dir, 'repo'), 'init'], env);
  });
  after(async () => {
    await lab.stop();
    await s.cleanup();
  });

  async function snapshotsOnVm(): Promise<number> {
    const c = await VimClient.connect({ server: lab.proxy.url, thumbprint: lab.proxy.thumbprint });
    await c.login(VCSIM_USER, VCSIM_PASSWORD);
    try {
      const vms = await c.list('VirtualMachine', ['name']);
      const ref = vms.find((v) => v.props.get('name')?.text === VM);
      const snap = (await c.properties(ref?.obj ?? moref('VirtualMachine', 'vm-1'), ['snapshot'])).get('snapshot');
      return snap ? snap.children.filter((n) => n.name === 'rootSnapshotList').length : 0;
    } finally {
      await c.logout().catch(() => {});
    }
  }

  it('backs up on schedule; SIGTERM mid-backup removes the vSphere snapshot and exits 0', async () => {
    const cfg = path.join(s.dir, 'pilotlight.yaml');
    await fsp.writeFile(
      cfg,
      `repositories:\n  main:\n    location: ${s.dir}/repo\n    password: { env: PILOTLIGHT_PASSWORD }\n` +
        `vsphere:\n  lab:\n    server: ${lab.proxy.url}\n    username: ${VCSIM_USER}\n    password: { env: PL_TEST_VC_PW }\n    thumbprint: "${lab.proxy.thumbprint}"\n    vddkLibdir: ${lab.vddkLibDir}\n` +
        `sources:\n  db01:\n    vsphere: { server: lab, vm: ${VM} }\n` +
        `jobs:\n  - name: db\n    repository: main\n    vms: [db01]\n    every: 2s\n    readLimitMiBps: 0.4\n    retries: { attempts: 1 }\n` +
        `service:\n  statusInterval: 500ms\n  shutdownGrace: 15s\n`,
    );
    const port = await unusedPort();
    const svc = startService(['--config', cfg, '--metrics-listen', `127.0.0.1:${port}`, '--log-format', 'json'], env);
    try {
      await waitFor('a first vSphere backup', async () => (sample(await scrape(port), 'pilotlight_backup_runs_total', { vm: 'db01', result: 'success' }) ?? 0) >= 1, 90_000);
      // Keep the guest writing, so that every later backup has changed areas to read at
      // the job's read limit (an incremental with nothing changed is over in a moment,
      // and a SIGTERM would land after it committed).
      let round = 0;
      const writer = setInterval(() => scribble(lab.live[0]!, (1 + (round++ % 6)) * 1024 * 1024, randomBytes(1024 * 1024)), 200);
      try {
        const inBackup = async () => (sample(await scrape(port), 'pilotlight_backups_running', {}) ?? 0) >= 1 && (await snapshotsOnVm()) > 0;
        // in a backup, and still in it a moment later: the SIGTERM lands mid-read
        await waitFor('a backup running for a while', async () => (await inBackup()) && (await sleep(800), await inBackup()), 90_000, 100);
      } finally {
        clearInterval(writer);
      }
      const t = Date.now();
      svc.child.kill('SIGTERM');
      const { code } = await svc.exited;
      assert.equal(code, 0, svc.stderr());
      assert.ok(Date.now() - t < 20_000, 'stopped within the grace period');
    } finally {
      if (svc.child.exitCode === null) svc.child.kill('SIGKILL');
    }
    assert.equal(await snapshotsOnVm(), 0, 'the vSphere snapshot of the aborted backup was removed');
    assert.match(svc.stderr(), /backup aborted by shutdown/);
    assert.ok(!svc.stderr().includes(VCSIM_PASSWORD), 'the vSphere password is in no log line');
    const v = await run(['--repo', path.join(s.dir, 'repo'), 'verify', '--json'], env);
    assert.equal(v.code, 0, v.stderr);
    const snaps = (await ok(['--repo', path.join(s.dir, 'repo'), 'snapshots', '--vm', 'db01', '--json'], env)).json as { source: string }[];
    assert.ok(snaps.length >= 1);
    assert.ok(snaps.every((x) => x.source === 'vsphere'));
  });
});
