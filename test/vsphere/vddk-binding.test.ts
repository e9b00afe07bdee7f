/**
 * The koffi VDDK binding and worker process, against the FAKE libvixDiskLib.so
 * (test/support/fake-vddk, a test double with VDDK 7/8's ABI, not VMware's library).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { VddkWorker, VddkWorkerError } from '../../src/source/vsphere/vddk-client.js';
import { tempDir, testBinaries, unclosed } from './helpers.js';

const DISK = '[LocalDS_0] vm1/disk1.vmdk';
const SANITISED = '_LocalDS_0__vm1_disk1.vmdk';
const THUMB = 'AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD';

const dirs: string[] = [];
after(() => {
  if (!process.env.PILOTLIGHT_KEEP_TEST_DIRS) for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function fixture() {
  const dir = tempDir('vddk');
  dirs.push(dir);
  const root = path.join(dir, 'root');
  mkdirSync(path.join(root, 'snapshot-7'), { recursive: true });
  const data = randomBytes(4 * 1024 * 1024);
  data.fill(0, 1024 * 1024, 3 * 1024 * 1024); // a hole in the middle
  writeFileSync(path.join(root, 'snapshot-7', SANITISED), data);
  const log = path.join(dir, 'calls.log');
  const env = {
    FAKE_VDDK_ROOT: root,
    FAKE_VDDK_LOG: log,
    FAKE_VDDK_USER: 'op',
    FAKE_VDDK_PASSWORD: 'pw',
    FAKE_VDDK_THUMBPRINT: THUMB,
  };
  return { dir, data, log, env };
}

const params = (over: Record<string, string> = {}) => ({
  vmxSpec: 'moref=vm-42',
  serverName: '127.0.0.1',
  thumbprint: THUMB,
  userName: 'op',
  password: 'pw',
  ...over,
});

test('VDDK worker: open, concurrent reads, allocated blocks, close; every handle closed', async () => {
  const { vddkLibDir } = testBinaries();
  const f = fixture();
  const w = await VddkWorker.start({ libDir: vddkLibDir, env: { ...f.env, FAKE_VDDK_READ_DELAY_US: '20000' } });
  try {
    await w.prepareForAccess(params(), 'pilotlight');
    const conn = await w.connect(params(), 'snapshot-7', 'nbdssl:nbd');
    const disk = await w.open(conn, DISK);
    assert.equal(disk.capacity, BigInt(f.data.length));
    assert.equal(disk.transport, 'nbdssl');
    // 16 reads of 64 KiB in flight at once, plus an unaligned one
    const offsets = Array.from({ length: 16 }, (_, i) => i * 256 * 1024);
    const t0 = Date.now();
    const bufs = await Promise.all(offsets.map((o) => w.read(disk.handle, o, 65536)));
    const elapsed = Date.now() - t0;
    offsets.forEach((o, i) => assert.deepEqual(Buffer.from(bufs[i]), f.data.subarray(o, o + 65536)));
    assert.ok(elapsed < 16 * 20, `reads ran concurrently (${elapsed} ms for 16 reads of 20 ms each)`);
    const odd = await w.read(disk.handle, 1000n, 3000);
    assert.deepEqual(Buffer.from(odd), f.data.subarray(1000, 4000));
    const alloc = await w.allocated(disk.handle, disk.capacity);
    assert.deepEqual(alloc, [
      { offset: 0n, length: 1048576n },
      { offset: 3145728n, length: 1048576n },
    ]);
    await w.close(disk.handle);
    await w.disconnect(conn);
    await w.endAccess(params(), 'pilotlight');
  } finally {
    await w.exit();
  }
  const u = unclosed(f.log);
  assert.deepEqual(u.handles, []);
  assert.deepEqual(u.connections, []);
  assert.ok(u.exited, 'VixDiskLib_Exit was called');
  assert.match(readFileSync(f.log, 'utf8'), /ConnectEx server=127\.0\.0\.1 port=0 vmx=moref=vm-42 .* user=op ro=1 snapshot=snapshot-7 transport=nbdssl:nbd/);
});

test('VDDK worker: errors carry VDDK error text (bad thumbprint, bad login, missing disk, read fault)', async () => {
  const { vddkLibDir } = testBinaries();
  const f = fixture();
  const w = await VddkWorker.start({ libDir: vddkLibDir, env: { ...f.env, FAKE_VDDK_FAIL_READ_AT: String(2 * 1024 * 1024 + 5) } });
  try {
    await assert.rejects(w.connect(params({ thumbprint: '00:11' }), 'snapshot-7', null), (e: unknown) => {
      assert.ok(e instanceof VddkWorkerError);
      assert.equal(e.operation, 'ConnectEx');
      assert.match(e.message, /thumbprint verification failed/);
      assert.match(e.vddkText ?? '', /fake VDDK test double/);
      return true;
    });
    await assert.rejects(w.connect(params({ password: 'nope' }), 'snapshot-7', null), /user name or password is incorrect/);
    const conn = await w.connect(params(), 'snapshot-7', null);
    await assert.rejects(w.open(conn, '[LocalDS_0] vm1/missing.vmdk'), /Open\(\[LocalDS_0\] vm1\/missing\.vmdk\) failed: The system cannot find the file/);
    const disk = await w.open(conn, DISK);
    await assert.rejects(w.read(disk.handle, 2 * 1024 * 1024, 65536), /ReadAsync failed: A file access error occurred/);
    // the handle still works after a failed read
    assert.equal((await w.read(disk.handle, 0, 512)).length, 512);
    await w.close(disk.handle);
    await w.disconnect(conn);
  } finally {
    await w.exit();
  }
  const u = unclosed(f.log);
  assert.deepEqual(u, { handles: [], connections: [], exited: true, initialized: true });
  // every error text VDDK handed out was freed
  const log = readFileSync(f.log, 'utf8');
  assert.equal((log.match(/^GetErrorText/gm) ?? []).length, (log.match(/^FreeErrorText/gm) ?? []).length);
});

test('VDDK worker: exit closes what the caller left open; a missing library is a clear error', async () => {
  const { vddkLibDir } = testBinaries();
  const f = fixture();
  const w = await VddkWorker.start({ libDir: vddkLibDir, env: f.env });
  const conn = await w.connect(params(), 'snapshot-7', null);
  await w.open(conn, DISK);
  await w.exit();
  assert.deepEqual(unclosed(f.log).handles, []);
  assert.deepEqual(unclosed(f.log).connections, []);

  await assert.rejects(VddkWorker.start({ libDir: path.join(f.dir, 'nowhere') }), /cannot load VDDK \(libvixDiskLib\.so\).*--vddk-libdir/);
});

test('--vddk-libdir takes the VDDK distribution directory (holding lib64/) as well as lib64/ itself', async () => {
  const { vddkLibDir } = testBinaries();
  const f = fixture();
  // a distribution layout: DIST/lib64 -> the fake library's directory
  const dist = path.join(f.dir, 'vmware-vix-disklib-distrib');
  mkdirSync(dist);
  symlinkSync(vddkLibDir, path.join(dist, 'lib64'));
  const w = await VddkWorker.start({ libDir: dist, env: f.env });
  const conn = await w.connect(params(), 'snapshot-7', null);
  await w.open(conn, DISK);
  await w.exit();
  // VixDiskLib_InitEx gets the distribution directory as its libDir, as with lib64/ given
  assert.ok(readFileSync(f.log, 'utf8').includes(`InitEx 8.0 libDir=${dist} `), readFileSync(f.log, 'utf8').split('\n')[0]);
});
