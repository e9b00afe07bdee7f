/**
 * The vim25 SOAP client against vcsim (govmomi's simulator, a test double of vCenter)
 * started on 127.0.0.1 by test/support/vcsim.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { ThumbprintMismatchError, VimClient, VimConnectionError, VimFault, moref, parseMoRef } from '../../src/source/vsphere/client.js';
import { virtualDisks } from '../../src/source/vsphere/vsphere-source.js';
import { parseXml, safeNumber, int64 } from '../../src/source/vsphere/xml.js';
import { VCSIM_PASSWORD, VCSIM_USER, startVcsim, type Vcsim } from './helpers.js';

let sim: Vcsim;

before(async () => {
  sim = await startVcsim(['-disk-kb', '8192', '-extra-disk-kb', '4096']);
});
after(async () => {
  await sim?.stop();
});

async function login(): Promise<VimClient> {
  const c = await VimClient.connect({ server: sim.url, thumbprint: sim.thumbprint });
  await c.login(VCSIM_USER, VCSIM_PASSWORD);
  return c;
}

test('xsi:type is resolved by namespace, not prefix; 64-bit numbers stay exact', () => {
  const doc = parseXml(
    '<a xmlns="urn:vim25" xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" xmlns:other="urn:other">' +
      '<v XMLSchema-instance:type="ArrayOfVirtualDevice"/><w i:type="xsd:long" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">9007199254740993</w>' +
      '<x other:type="NotXsi"/><y>a &amp; b &lt;c&gt; &#65;</y></a>',
  );
  assert.equal(doc.children[0].xsiType, 'ArrayOfVirtualDevice');
  assert.equal(doc.children[0].xsiTypeNs, 'urn:vim25');
  assert.equal(doc.children[1].xsiType, 'long');
  assert.equal(doc.children[2].xsiType, undefined, 'a "type" attribute in another namespace is not xsi:type');
  assert.equal(doc.children[3].text, 'a & b <c> A');
  assert.equal(int64(doc.children[1].text, 'x'), 9007199254740993n);
  assert.throws(() => safeNumber(doc.children[1].text, 'offset'), /does not fit in a JS number without losing precision/);
  assert.equal(safeNumber('9007199254740991', 'x'), Number.MAX_SAFE_INTEGER);
});

test('connect checks the thumbprint; login, find VMs, list disks by device key', async () => {
  const c = await login();
  try {
    assert.equal(c.serviceContent.apiType, 'VirtualCenter');
    const vms = await c.list('VirtualMachine', ['name']);
    const names = vms.map((v) => v.props.get('name')!.text).sort();
    assert.ok(names.includes('DC0_H0_VM0'), names.join(','));
    const vm = vms.find((v) => v.props.get('name')!.text === 'DC0_H0_VM0')!.obj;
    assert.equal(vm.type, 'VirtualMachine');
    const devices = (await c.properties(vm, ['config.hardware.device'])).get('config.hardware.device');
    assert.equal(devices?.xsiType, 'ArrayOfVirtualDevice');
    const disks = virtualDisks(devices);
    assert.equal(disks.length, 2);
    assert.deepEqual(
      disks.map((d) => [d.name, d.capacity, d.fileName]),
      [
        ['scsi0:0', 8388608n, '[LocalDS_0] DC0_H0_VM0/disk1.vmdk'],
        ['scsi0:1', 4194304n, '[LocalDS_0] DC0_H0_VM0/disk2.vmdk'],
      ],
    );
    // vcsim gives disks keys of its own: nothing may assume 2000
    assert.ok(disks.every((d) => Number.isInteger(d.deviceKey)));
    assert.notDeepEqual(disks.map((d) => d.deviceKey), [2000, 2001]);
  } finally {
    await c.logout();
  }
});

test('a wrong thumbprint is refused before any request; --insecure skips the check; none given is an error', async () => {
  await assert.rejects(
    VimClient.connect({ server: sim.url, thumbprint: '00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33' }),
    (e: unknown) => e instanceof ThumbprintMismatchError && e.actual === sim.thumbprint && /refusing to connect/.test(e.message),
  );
  await assert.rejects(VimClient.connect({ server: sim.url }), (e: unknown) => e instanceof VimConnectionError && e.message.includes(sim.thumbprint));
  const c = await VimClient.connect({ server: sim.url, insecure: true });
  assert.equal(c.thumbprint, sim.thumbprint);
  // lower case without colons is the same thumbprint
  await VimClient.connect({ server: sim.url, thumbprint: sim.thumbprint.replace(/:/g, '').toLowerCase() });
});

test('faults become clear errors: bad password, unknown object, unreachable server', async () => {
  const c = await VimClient.connect({ server: sim.url, thumbprint: sim.thumbprint });
  await assert.rejects(c.login(VCSIM_USER, 'wrong'), (e: unknown) => {
    assert.ok(e instanceof VimFault);
    assert.equal(e.faultType, 'InvalidLogin');
    assert.match(e.message, /vSphere Login failed: InvalidLogin: .*Check --username and the password/);
    return true;
  });
  const ok = await login();
  try {
    await assert.rejects(ok.properties(moref('VirtualMachine', 'vm-999999'), ['name']), (e: unknown) => e instanceof VimFault && /ManagedObjectNotFound/.test(e.message));
    await assert.rejects(
      ok.queryChangedDiskAreas(moref('VirtualMachine', 'vm-1'), moref('VirtualMachineSnapshot', 'snapshot-1'), 2000, 0n, '*'),
      (e: unknown) => e instanceof VimFault && /QueryChangedDiskAreas failed/.test(e.message),
    );
  } finally {
    await ok.logout();
  }
  await assert.rejects(VimClient.connect({ server: 'https://127.0.0.1:1/sdk', insecure: true }), (e: unknown) => e instanceof VimConnectionError && /cannot reach 127\.0\.0\.1:1/.test(e.message));
});

test('ReconfigVM enables CBT; snapshot create/remove through tasks', async () => {
  const c = await login();
  try {
    const vm = (await c.list('VirtualMachine', ['name'])).find((v) => v.props.get('name')!.text === 'DC0_H0_VM1')!.obj;
    const before = (await c.properties(vm, ['config.changeTrackingEnabled'])).get('config.changeTrackingEnabled');
    assert.notEqual(before?.text, 'true');
    await c.waitForTask(await c.reconfigChangeTracking(vm, true), 'ReconfigVM_Task');
    assert.equal((await c.properties(vm, ['config.changeTrackingEnabled'])).get('config.changeTrackingEnabled')?.text, 'true');

    const r = await c.waitForTask(await c.createSnapshot(vm, 'test', 'test snapshot', true), 'CreateSnapshot_Task');
    const snap = parseMoRef(r.result)!;
    assert.equal(snap.type, 'VirtualMachineSnapshot');
    const snapDisks = virtualDisks((await c.properties(snap, ['config.hardware.device'])).get('config.hardware.device'));
    assert.equal(snapDisks.length, 1);
    const current = (await c.properties(vm, ['snapshot'])).get('snapshot');
    assert.ok(current, 'the VM has a snapshot');
    const tree = current.children.find((n) => n.name === 'rootSnapshotList');
    assert.equal(tree?.children.find((n) => n.name === 'quiesced')?.text, 'true', 'quiesce was asked for');
    await c.waitForTask(await c.removeSnapshot(snap), 'RemoveSnapshot_Task');
    const afterRemove = (await c.properties(vm, ['snapshot'])).get('snapshot');
    assert.equal(afterRemove, undefined, 'no snapshot left');
    // removing it again is a task fault, reported as such
    await assert.rejects(c.removeSnapshot(snap).then((t) => c.waitForTask(t, 'RemoveSnapshot_Task')), (e: unknown) => e instanceof VimFault && /ManagedObjectNotFound/.test(e.message));
  } finally {
    await c.logout();
  }
});

test('an expired session (NotAuthenticated) is renewed once and the call retried', async () => {
  const c = await login();
  try {
    // end the session behind the client's back, as a vCenter idle timeout would
    await c.invoke('Logout', { _this: { attributes: { type: 'SessionManager' }, $value: c.serviceContent.sessionManager.value } });
    // (vcsim's property collector answers an unauthenticated call with nothing; CreateContainerView faults)
    const vms = await c.list('VirtualMachine', ['name']);
    assert.ok(vms.length > 0 && vms.every((v) => v.props.get('name')?.text));
    assert.equal(c.reloginCount, 1);
  } finally {
    await c.logout();
  }
  // without credentials (never logged in) NotAuthenticated is reported as it is
  const anon = await VimClient.connect({ server: sim.url, thumbprint: sim.thumbprint });
  await assert.rejects(anon.list('VirtualMachine', ['name']), (e: unknown) => e instanceof VimFault && e.faultType === 'NotAuthenticated');
});
