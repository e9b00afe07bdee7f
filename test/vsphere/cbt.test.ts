/**
 * The QueryChangedDiskAreas loop against the change-id proxy (a test double in front of
 * vcsim that answers from real disk files and covers only part of a disk per answer).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { queryAllChangedAreas, CbtProtocolError } from '../../src/source/vsphere/cbt.js';
import { VimClient, VimFault, parseMoRef, type MoRef } from '../../src/source/vsphere/client.js';
import { virtualDisks } from '../../src/source/vsphere/vsphere-source.js';
import { VCSIM_PASSWORD, VCSIM_USER } from './helpers.js';
import { DISKS, VM, scribble, startLab, type Lab } from './lab.js';

let lab: Lab;
let c: VimClient;
let vm: MoRef;

before(async () => {
  lab = await startLab(3 * 1024 * 1024);
  c = await VimClient.connect({ server: lab.proxy.url, thumbprint: lab.proxy.thumbprint });
  await c.login(VCSIM_USER, VCSIM_PASSWORD);
  vm = (await c.list('VirtualMachine', ['name'])).find((v) => v.props.get('name')!.text === VM)!.obj;
});
after(async () => {
  await c?.logout();
  await lab?.stop();
});

async function snapshot() {
  const r = await c.waitForTask(await c.createSnapshot(vm, 'cbt-test', '', false), 'CreateSnapshot_Task');
  const snap = parseMoRef(r.result)!;
  const disks = virtualDisks((await c.properties(snap, ['config.hardware.device'])).get('config.hardware.device'));
  return { snap, disks };
}

test('the loop covers the whole disk when each answer covers only part of it', async () => {
  const s1 = await snapshot();
  const d0 = s1.disks[0];
  assert.equal(d0.fileName, DISKS[0].fileName);
  assert.ok(d0.changeId, 'the proxy put a changeId on the snapshot backing');
  const calls0 = lab.proxy.calls.length;
  const all = await queryAllChangedAreas(d0.capacity, (start) => c.queryChangedDiskAreas(vm, s1.snap, d0.deviceKey, start, '*'));
  assert.equal(all.calls, 3, '8 MiB in answers of 3 MiB');
  assert.deepEqual(lab.proxy.calls.slice(calls0).map((x) => x.startOffset), [0, 3 * 1048576, 6 * 1048576]);
  assert.deepEqual(all.areas, [
    { offset: 0n, length: 1048576n },
    { offset: 8n * 1048576n - 524288n, length: 524288n },
  ]);
  await c.waitForTask(await c.removeSnapshot(s1.snap), 'RemoveSnapshot_Task');

  // the guest writes across an answer boundary and in the middle
  scribble(lab.live[0], 3 * 1048576 - 4096, randomBytes(8192));
  scribble(lab.live[0], 5 * 1048576 + 100, randomBytes(10));
  const s2 = await snapshot();
  const d0b = s2.disks[0];
  assert.notEqual(d0b.changeId, d0.changeId);
  const changed = await queryAllChangedAreas(d0b.capacity, (start) => c.queryChangedDiskAreas(vm, s2.snap, d0b.deviceKey, start, d0.changeId!));
  assert.deepEqual(changed.areas, [
    { offset: 3n * 1048576n - 65536n, length: 131072n },
    { offset: 5n * 1048576n, length: 65536n },
  ]);
  // the second disk did not change
  const d1 = s2.disks[1];
  const s1d1 = s1.disks[1];
  const none = await queryAllChangedAreas(d1.capacity, (start) => c.queryChangedDiskAreas(vm, s2.snap, d1.deviceKey, start, s1d1.changeId!));
  assert.deepEqual(none.areas, []);
  assert.equal(none.calls, 2);

  // a CBT reset: the old change id is refused with a fault that says so
  lab.proxy.resetChangeTracking(DISKS[0].fileName);
  await assert.rejects(
    queryAllChangedAreas(d0b.capacity, (start) => c.queryChangedDiskAreas(vm, s2.snap, d0b.deviceKey, start, d0.changeId!)),
    (e: unknown) => e instanceof VimFault && e.faultType === 'FileFault' && /change id .* is not valid/.test(e.message),
  );
  await c.waitForTask(await c.removeSnapshot(s2.snap), 'RemoveSnapshot_Task');
});

test('protocol errors in answers are caught (no progress, gap), areas are clipped and merged', async () => {
  await assert.rejects(
    queryAllChangedAreas(1000n, async (s) => ({ startOffset: s, length: 0n, changedArea: [] })),
    (e: unknown) => e instanceof CbtProtocolError && /no progress/.test(e.message),
  );
  await assert.rejects(
    queryAllChangedAreas(1000n, async (s) => ({ startOffset: s + 10n, length: 100n, changedArea: [] })),
    /a gap would be unaccounted for/,
  );
  const r = await queryAllChangedAreas(1n << 60n, async (s) =>
    s === 0n
      ? { startOffset: 0n, length: 1n << 59n, changedArea: [{ start: 0n, length: 100n }, { start: 50n, length: 100n }] }
      : { startOffset: s, length: 1n << 59n, changedArea: [{ start: (1n << 60n) - 10n, length: 100n }] },
  );
  assert.deepEqual(r.areas, [
    { offset: 0n, length: 150n },
    { offset: (1n << 60n) - 10n, length: 10n },
  ]);
});
