/**
 * End to end, with test doubles only: vcsim (vCenter simulator) + the change-id proxy
 * (CBT from real disk files) + the fake libvixDiskLib.so, and pilotlight's real engine.
 *
 * A first full backup (CBT gets enabled), an incremental, a CBT reset (fallback to "*"),
 * a read failing in the middle (the vSphere snapshot is still removed, every VDDK handle
 * closed, nothing committed), a backup after that, and after each success restores of
 * both disks compared byte for byte with the disk files at snapshot time.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { runBackup } from '../../src/engine/backup.js';
import { Repository } from '../../src/repo/repository.js';
import { openStore } from '../../src/store/open-store.js';
import { VimClient, parseMoRef, type MoRef } from '../../src/source/vsphere/client.js';
import { VsphereSource } from '../../src/source/vsphere/vsphere-source.js';
import { VCSIM_PASSWORD, VCSIM_USER, cliDriver, runCli, unclosed } from './helpers.js';
import { DISKS, VM, scribble, startLab, type Lab } from './lab.js';

const REPO_PASSWORD = 'e2e repository password';

let lab: Lab;
let repoDir: string;
let passwordFile: string;

function cli(args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<string> {
  return runCli(lab.dir, args, extraEnv);
}

function expected(): Buffer[] {
  return lab.live.map((f) => readFileSync(f));
}

async function restoreAndCompare(want: Buffer[], label: string): Promise<void> {
  await Promise.all(
    DISKS.map(async (_, i) => {
      const to = path.join(lab.dir, `restore-${label}-${i}.img`);
      await cli(['--repo', repoDir, '--password-file', passwordFile, 'restore', 'latest', '--vm', VM, '--disk', String(i), '--to', to]);
      const got = readFileSync(to);
      assert.equal(got.length, want[i].length, `${label}: disk ${i} size`);
      assert.ok(got.equals(want[i]), `${label}: restored disk ${i} differs from the disk file at snapshot time`);
    }),
  );
}

/** Runs fn with a session on vcsim itself (not through the proxy) and the test VM. */
async function vcsimClient<T>(fn: (c: VimClient, vm: MoRef) => Promise<T>): Promise<T> {
  const c = await VimClient.connect({ server: lab.sim.url, thumbprint: lab.sim.thumbprint });
  await c.login(VCSIM_USER, VCSIM_PASSWORD);
  try {
    const vm = (await c.list('VirtualMachine', ['name'])).find((v) => v.props.get('name')!.text === VM)!.obj;
    return await fn(c, vm);
  } finally {
    await c.logout();
  }
}

async function vmHasSnapshot(): Promise<boolean> {
  return vcsimClient(async (c, vm) => (await c.properties(vm, ['snapshot'])).get('snapshot') !== undefined);
}

/** Checks the fake VDDK's call log (from `since`, a byte offset) for anything left open. */
function assertVddkClean(since = 0): void {
  const u = unclosed(lab.vddkLog, since);
  assert.deepEqual(u.handles, [], 'every VDDK disk handle was closed');
  assert.deepEqual(u.connections, [], 'every VDDK connection was disconnected');
  assert.ok(u.exited, 'VixDiskLib_Exit was called for every InitEx');
  const log = readFileSync(lab.vddkLog, 'utf8').slice(since);
  assert.equal((log.match(/^PrepareForAccess/gm) ?? []).length, (log.match(/^EndAccess/gm) ?? []).length, 'EndAccess for every PrepareForAccess');
}

function backupArgs(): string[] {
  return [
    '--repo', repoDir, '--password-file', passwordFile, '--json',
    'backup', 'vsphere',
    '--server', lab.proxy.url, '--vm', VM, '--username', VCSIM_USER,
    '--thumbprint', lab.proxy.thumbprint, '--vddk-libdir', lab.vddkLibDir,
  ];
}

before(async () => {
  lab = await startLab(3 * 1024 * 1024);
  repoDir = path.join(lab.dir, 'repo');
  passwordFile = path.join(lab.dir, 'repo-password');
  writeFileSync(passwordFile, REPO_PASSWORD);
  const repo = await Repository.init(await openStore(repoDir), { encrypted: true, password: REPO_PASSWORD });
  await repo.close();
});

after(async () => {
  await lab?.stop();
});

test('vSphere end to end: full, incremental, CBT reset, failing read, restores', async () => {
  const env = { ...lab.vddkEnv, VSPHERE_PASSWORD: VCSIM_PASSWORD };

  // 1. first backup through the CLI: CBT is off on the VM and gets enabled; everything allocated is read
  let want = expected();
  const r1 = JSON.parse(await cli(backupArgs(), env));
  assert.equal(r1.vm, VM);
  assert.equal(r1.disks.length, 2);
  assert.deepEqual(r1.disks.map((d: { name: string }) => d.name), ['scsi0:0', 'scsi0:1']);
  for (const d of r1.disks) assert.equal(d.read.kind, 'allocated');
  assert.equal(r1.vsphere.cbtEnabledNow, true);
  assert.match(r1.vsphere.notes.join('\n'), /Changed Block Tracking was off on DC0_H0_VM0: enabled it/);
  assert.equal(r1.bytesScanned, 1.5 * 1024 * 1024 * 2, 'only the allocated areas were read');
  assert.equal(await vmHasSnapshot(), false, 'the backup snapshot was removed');
  assertVddkClean();
  await restoreAndCompare(want, 'full');

  // the change ids are in the snapshot record
  const snaps = JSON.parse(await cli(['--repo', repoDir, '--password-file', passwordFile, '--json', 'snapshots', '--vm', VM]));
  assert.equal(snaps.length, 1);
  for (const d of snaps[0].disks) assert.match(d.changeToken, /^[0-9a-f ]+-[0-9a-f ]+\/\d+$/);

  // 2. the guest writes; an incremental reads only what changed
  scribble(lab.live[0], 2 * 1024 * 1024 + 12345, randomBytes(100_000));
  scribble(lab.live[1], 0, randomBytes(4096));
  want = expected();
  const qBefore = lab.proxy.calls.length;
  const r2 = JSON.parse(await cli([...backupArgs(), '--verify-unchanged', '5'], env));
  assert.equal(r2.parent, r1.snapshot);
  assert.deepEqual(r2.disks.map((d: { read: { kind: string } }) => d.read.kind), ['changed', 'changed']);
  assert.equal(r2.vsphere.cbtEnabledNow, false);
  assert.ok(r2.bytesScanned <= 3 * 65536, `incremental scanned ${r2.bytesScanned} bytes`);
  const since = lab.proxy.calls.slice(qBefore).filter((c) => c.changeId !== '*');
  assert.ok(since.length >= 3, 'QueryChangedDiskAreas was called in a loop with the stored change ids');
  assert.equal(await vmHasSnapshot(), false);
  assertVddkClean();
  await restoreAndCompare(want, 'incremental');

  // 3. CBT reset on the first disk: its change id is refused, "*" is read instead and the reason reported
  lab.proxy.resetChangeTracking(DISKS[0].fileName);
  scribble(lab.live[0], 7 * 1024 * 1024, randomBytes(70_000));
  want = expected();
  {
    const repo = await Repository.open(await openStore(repoDir), { password: REPO_PASSWORD });
    const source = await VsphereSource.open({
      server: lab.proxy.url, username: VCSIM_USER, password: VCSIM_PASSWORD, thumbprint: lab.proxy.thumbprint,
      vm: VM, vddkLibDir: lab.vddkLibDir, vddkEnv: lab.vddkEnv,
    });
    try {
      const r3 = await runBackup(repo, source, { sourceKind: 'vsphere' });
      assert.equal(r3.disks[0].read.kind, 'allocated');
      assert.match(r3.disks[0].read.reason, /^change id refused: .*another change-tracking epoch.*CBT was reset.*"\*"/);
      assert.equal(r3.disks[1].read.kind, 'changed');
      assert.equal(r3.chunksNew <= 3, true, `a full read of disk 0 is deduplicated against the parent (${r3.chunksNew} new chunks)`);
    } finally {
      await source.close();
      await repo.close();
    }
  }
  assert.equal(await vmHasSnapshot(), false);
  assertVddkClean();
  await restoreAndCompare(want, 'after-reset');

  // 4. a read fails in the middle: the run fails with VDDK's text, nothing is committed,
  //    and the vSphere snapshot is removed all the same
  const wantBefore = want;
  scribble(lab.live[0], 4 * 1024 * 1024, randomBytes(300_000));
  {
    const repo = await Repository.open(await openStore(repoDir), { password: REPO_PASSWORD });
    const source = await VsphereSource.open({
      server: lab.proxy.url, username: VCSIM_USER, password: VCSIM_PASSWORD, thumbprint: lab.proxy.thumbprint,
      vm: VM, vddkLibDir: lab.vddkLibDir, vddkEnv: { ...lab.vddkEnv, FAKE_VDDK_FAIL_READ_AT: String(4 * 1024 * 1024 + 200_000) },
    });
    try {
      assert.equal(await vmHasSnapshot(), true, 'the snapshot exists while the backup runs');
      await assert.rejects(runBackup(repo, source, { sourceKind: 'vsphere' }), /A file access error occurred/);
    } finally {
      await source.close();
      await repo.close();
    }
  }
  assert.equal(await vmHasSnapshot(), false, 'the snapshot was removed after the failed read');
  assertVddkClean();
  assert.match(readFileSync(lab.vddkLog, 'utf8'), /Read fault injected/);
  await restoreAndCompare(wantBefore, 'after-failure'); // latest is still the last good snapshot

  // 5. the next run recovers; this time vSphere refuses the second disk's change id
  //    (same epoch, a fault from QueryChangedDiskAreas): that disk falls back to "*"
  const last = JSON.parse(await cli(['--repo', repoDir, '--password-file', passwordFile, '--json', 'snapshots', '--vm', VM])).at(-1);
  lab.proxy.rejectChangeId(last.disks[1].changeToken);
  // ... and a snapshot left over by a crashed pilotlight run is pointed out
  const leftover = await vcsimClient(async (c, vm) => parseMoRef((await c.waitForTask(await c.createSnapshot(vm, 'pilotlight 2020-01-01T00:00:00.000Z', 'left over', false), 'CreateSnapshot_Task')).result)!);
  want = expected();
  const r5 = JSON.parse(await cli(backupArgs(), env));
  assert.match(r5.vsphere.notes.join('\n'), new RegExp(`still has snapshot "pilotlight 2020-01-01T00:00:00.000Z" \\(${leftover.value}, created `));
  await vcsimClient(async (c) => c.waitForTask(await c.removeSnapshot(leftover), 'RemoveSnapshot_Task'));
  assert.deepEqual(r5.disks.map((d: { read: { kind: string } }) => d.read.kind), ['changed', 'allocated']);
  assert.match(r5.disks[1].read.reason, /^change id refused: FileFault: .*is not valid for this disk.*"\*"/);
  assert.equal(await vmHasSnapshot(), false);
  assertVddkClean();
  await restoreAndCompare(want, 'recovered');
});

test('a wrong thumbprint stops the CLI before login; nothing is left behind', async () => {
  const args = backupArgs();
  args[args.indexOf('--thumbprint') + 1] = lab.sim.thumbprint; // vcsim's, not the proxy's
  const opsBefore = lab.proxy.operations.length;
  await assert.rejects(cli(args, { ...lab.vddkEnv, VSPHERE_PASSWORD: VCSIM_PASSWORD }), /refusing to connect/);
  assert.equal(lab.proxy.operations.length, opsBefore, 'no SOAP request reached the server');
  assert.equal(await vmHasSnapshot(), false);
});

test('Ctrl-C during the reads: the CLI stops, removes the vSphere snapshot and closes VDDK', async () => {
  scribble(lab.live[0], 1024 * 1024, randomBytes(2 * 1024 * 1024));
  const driver = cliDriver(lab.dir);
  const logBefore = readFileSync(lab.vddkLog, 'utf8').length;
  const child = spawn(process.execPath, [...driver, ...backupArgs()], {
    env: { ...process.env, ...lab.vddkEnv, VSPHERE_PASSWORD: VCSIM_PASSWORD, FAKE_VDDK_READ_DELAY_US: '2000000' },
    detached: true, // its own process group, like a terminal job
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  // wait until reads are in flight
  const t0 = Date.now();
  while (!/ReadAsync/.test(readFileSync(lab.vddkLog, 'utf8').slice(logBefore))) {
    if (Date.now() - t0 > 30000) throw new Error(`no read started: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(await vmHasSnapshot(), true);
  process.kill(-child.pid!, 'SIGINT'); // Ctrl-C: the whole group, VDDK worker included
  const code = await exited;
  assert.notEqual(code, 0, 'the interrupted run fails');
  assert.match(stderr, /SIGINT: stopping/);
  assert.equal(await vmHasSnapshot(), false, 'the snapshot was removed after Ctrl-C');
  assertVddkClean();
  const snaps = JSON.parse(await cli(['--repo', repoDir, '--password-file', passwordFile, '--json', 'snapshots', '--vm', VM]));
  assert.equal(snaps.length, 4, 'nothing was committed by the interrupted run');
});

test('the VDDK worker crashes mid-backup: the run fails with the reason and the snapshot is still removed', async () => {
  scribble(lab.live[1], 2 * 1024 * 1024, randomBytes(100_000));
  const repo = await Repository.open(await openStore(repoDir), { password: REPO_PASSWORD });
  const source = await VsphereSource.open({
    server: lab.proxy.url, username: VCSIM_USER, password: VCSIM_PASSWORD, thumbprint: lab.proxy.thumbprint,
    vm: VM, vddkLibDir: lab.vddkLibDir, vddkEnv: { ...lab.vddkEnv, FAKE_VDDK_CRASH_READ_AT: String(2 * 1024 * 1024 + 5000) },
  });
  try {
    await assert.rejects(runBackup(repo, source, { sourceKind: 'vsphere' }), /VDDK worker process exited \(SIGABRT\)/);
  } finally {
    await source.close();
    await repo.close();
  }
  assert.match(source.notes.join('\n'), /VDDK handles could not be closed cleanly/);
  assert.equal(await vmHasSnapshot(), false, 'the snapshot was removed after the crash');
});

test('CBT loses a change: --verify-unchanged 100 catches it and that disk is read in full', async () => {
  scribble(lab.live[0], 512 * 1024, randomBytes(1000)); // this change will be "lost" by CBT
  scribble(lab.live[0], 6 * 1024 * 1024, randomBytes(1000));
  lab.proxy.loseChanges(DISKS[0].fileName);
  const want = expected();
  const logFrom = readFileSync(lab.vddkLog, 'utf8').length; // the crash test above left handles open on purpose
  const r = JSON.parse(await cli([...backupArgs(), '--verify-unchanged', '100'], { ...lab.vddkEnv, VSPHERE_PASSWORD: VCSIM_PASSWORD }));
  assert.equal(r.disks[0].read.kind, 'allocated');
  assert.match(r.disks[0].read.reason, /change tracking missed changes \(1 of \d+ sampled unchanged chunks differ\)/);
  assert.equal(r.disks[1].read.kind, 'changed');
  assert.equal(await vmHasSnapshot(), false);
  assertVddkClean(logFrom);
  await restoreAndCompare(want, 'cbt-lost-change');
});
