/**
 * `doctor vsphere` checks against the test doubles (vcsim + change-id proxy + fake VDDK).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { runDoctor } from '../../src/source/vsphere/doctor.js';
import { VCSIM_PASSWORD, VCSIM_USER, runCli, unclosed } from './helpers.js';
import { VM, startLab, type Lab } from './lab.js';

let lab: Lab;
before(async () => {
  lab = await startLab();
});
after(async () => {
  await lab?.stop();
});

test('doctor: every check passes, including a snapshot and VDDK reads, and it cleans up', async () => {
  const checks = await runDoctor({
    server: lab.proxy.url,
    username: VCSIM_USER,
    password: VCSIM_PASSWORD,
    thumbprint: lab.proxy.thumbprint,
    vm: VM,
    vddkLibDir: lab.vddkLibDir,
    vddkEnv: lab.vddkEnv,
    snapshotTest: true,
  });
  const byName = Object.fromEntries(checks.map((c) => [c.check, c]));
  for (const c of checks) if (c.check !== 'cbt') assert.ok(c.ok, `${c.check}: ${c.detail}`);
  assert.deepEqual(Object.keys(byName), ['connectivity', 'thumbprint', 'api', 'login', 'vm', 'cbt', 'vddk', 'snapshot', 'vddk-read']);
  assert.match(byName.vm.detail, /2 disk\(s\): scsi0:0 key \d+ 8388608 bytes, scsi0:1 key \d+ 4194304 bytes/);
  assert.equal(byName.cbt.ok, false, 'CBT is off on a fresh simulator VM and doctor says so');
  assert.match(byName.cbt.detail, /Changed Block Tracking is off/);
  assert.match(byName.snapshot.detail, /2 of 2 disk\(s\) have a change id/);
  const u = unclosed(lab.vddkLog);
  assert.deepEqual([u.handles, u.connections, u.exited], [[], [], true]);
});

test('doctor: a wrong thumbprint, a wrong password and a missing VDDK are reported as failures', async () => {
  const bad = await runDoctor({ server: lab.proxy.url, username: VCSIM_USER, password: VCSIM_PASSWORD, thumbprint: lab.sim.thumbprint });
  assert.deepEqual(bad.map((c) => [c.check, c.ok]), [['connectivity', true], ['thumbprint', false]]);
  assert.match(bad[1].detail, new RegExp(`certificate thumbprint is ${lab.proxy.thumbprint}`));

  const login = await runDoctor({ server: lab.proxy.url, username: VCSIM_USER, password: 'nope', thumbprint: lab.proxy.thumbprint });
  const l = login.find((c) => c.check === 'login')!;
  assert.equal(l.ok, false);
  assert.match(l.detail, /InvalidLogin/);

  const noVddk = await runDoctor({
    server: lab.proxy.url, username: VCSIM_USER, password: VCSIM_PASSWORD, thumbprint: lab.proxy.thumbprint,
    vddkLibDir: path.join(lab.dir, 'no-vddk-here'),
  });
  const v = noVddk.find((c) => c.check === 'vddk')!;
  assert.equal(v.ok, false);
  assert.match(v.detail, /cannot load VDDK/);

  const unverified = await runDoctor({ server: lab.proxy.url, username: VCSIM_USER, password: VCSIM_PASSWORD });
  assert.deepEqual(unverified.map((c) => [c.check, c.ok]), [['connectivity', true], ['thumbprint', false]], 'no login without a thumbprint');
  assert.match(unverified[1].detail, new RegExp(`the server's is ${lab.proxy.thumbprint}`));

  const down = await runDoctor({ server: 'https://127.0.0.1:1/sdk' });
  assert.deepEqual(down.map((c) => [c.check, c.ok]), [['connectivity', false]]);
});

test('doctor through the CLI: --json and the exit status', async () => {
  const env = { ...lab.vddkEnv, VSPHERE_PASSWORD: VCSIM_PASSWORD };
  const args = ['--json', 'doctor', 'vsphere', '--server', lab.proxy.url, '--thumbprint', lab.proxy.thumbprint, '--username', VCSIM_USER, '--vm', VM, '--vddk-libdir', lab.vddkLibDir];
  // CBT is off on this VM unless a test before enabled it: the exit status follows the checks
  const out = await runCli(lab.dir, args, env).catch((e: { stdout: string; exitCode: number }) => {
    assert.equal(e.exitCode, 1);
    return e.stdout;
  });
  const r = JSON.parse(out) as { ok: boolean; checks: Array<{ check: string; ok: boolean }> };
  assert.deepEqual(r.checks.map((c) => c.check), ['connectivity', 'thumbprint', 'api', 'login', 'vm', 'cbt', 'vddk']);
  assert.ok(r.checks.filter((c) => c.check !== 'cbt').every((c) => c.ok));
  assert.equal(r.ok, r.checks.every((c) => c.ok));
  const wrong = args.map((a, i) => (args[i - 1] === '--thumbprint' ? lab.sim.thumbprint : a));
  await assert.rejects(runCli(lab.dir, wrong, env), (e: { stdout: string; exitCode: number }) => {
    assert.equal(e.exitCode, 1);
    const checks = (JSON.parse(e.stdout) as { checks: Array<{ check: string; ok: boolean }> }).checks;
    assert.deepEqual(checks.map((c) => [c.check, c.ok]), [['connectivity', true], ['thumbprint', false]]);
    return true;
  });
});
