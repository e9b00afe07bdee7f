/**
 * `backup nbd --qmp` against a real qemu-storage-daemon: pilotlight adds, freezes,
 * exports and removes the dirty bitmaps itself. A "VM" writes through the daemon's
 * writable export `rw` with qemu-io; copies of the disk are taken with qemu-img
 * convert when no write is in flight, and every restore is compared with its copy.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { QmpClient } from '../../src/source/nbd/qmp.js';
import { ok, run, scratch } from '../support/cli.js';
import { sameBytes } from '../support/images.js';
import { crashWhileWriting, qemuImg, qemuIo, rawCopy, startStorageDaemon, type StorageDaemon } from '../support/qemu.js';

const MiB = 1 << 20;
const KiB = 1024;

interface QmpBitmap {
  name: string;
  granularity: number;
  recording: boolean;
  inconsistent?: boolean;
}

describe('backup nbd --qmp: bitmap rotation through qemu-storage-daemon', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let repo: string;
  let image: string;
  let sd: StorageDaemon | undefined;
  let uri: string;
  const checks: { id: string; copy: string }[] = [];

  const args = () => ['backup', 'nbd', uri, '--vm', 'kvm02', '--qmp', sd!.qmpSocket, '--repo', repo, '--json'];

  async function bitmaps(): Promise<QmpBitmap[]> {
    const q = await QmpClient.connect(sd!.qmpSocket);
    try {
      const nodes = await q.execute<{ 'node-name': string; 'dirty-bitmaps'?: QmpBitmap[] }[]>('query-named-block-nodes', { flat: true });
      return nodes.find((n) => n['node-name'] === 'disk0')!['dirty-bitmaps'] ?? [];
    } finally {
      q.close();
    }
  }

  async function start(): Promise<void> {
    sd = await startStorageDaemon(image, s.dir);
    uri = `nbd+unix:///disk0?socket=${sd.nbdSocket}`;
  }

  /** A backup with no write in flight, and the copy it must restore to. */
  async function quietBackup(): Promise<any> {
    const r = (await ok(args(), s.env)).json;
    const copy = path.join(s.dir, `copy-${checks.length}.raw`);
    await rawCopy(sd!.rwUri, copy, 'raw');
    checks.push({ id: r.snapshot, copy });
    return r;
  }

  const write = (cmds: string[]) => qemuIo(sd!.rwUri, cmds, 'raw');

  before(async () => {
    s = await scratch('qmp');
    repo = path.join(s.dir, 'repo');
    image = path.join(s.dir, 'disk0.qcow2');
    await ok(['init', '--repo', repo], s.env);
    await qemuImg('create', '-q', '-f', 'qcow2', image, String(64 * MiB));
    await start();
    const rnd = path.join(s.dir, 'rnd');
    await fsp.writeFile(rnd, randomBytes(2 * MiB));
    await write([`write -s ${rnd} 0 2M`, 'write -P 0x11 32M 1M']);
  });

  after(async () => {
    await sd?.stop();
    await s.cleanup();
  });

  it('the first backup reads the allocated extents and leaves one pilotlight bitmap recording', async () => {
    const r = await quietBackup();
    assert.equal(r.disks[0].read.kind, 'allocated');
    assert.equal(r.bytesScanned, 3 * MiB);
    const bm = await bitmaps();
    assert.equal(bm.length, 1, JSON.stringify(bm));
    assert.match(bm[0]!.name, /^pilotlight-/);
    assert.equal(bm[0]!.recording, true);
    assert.equal(bm[0]!.granularity, 65536);
    const rec = (await ok(['snapshots', '--vm', 'kvm02', '--repo', repo, '--json'], s.env)).json[0];
    assert.equal(rec.disks[0].changeToken, `qemu:checkpoint=${bm[0]!.name}&granularity=65536&node=disk0`);
  });

  it('the second backup reads only what was written since, and rotates the bitmap', async () => {
    const before = (await bitmaps())[0]!.name;
    await write(['write -P 0x21 4M 64k', 'write -P 0x22 10M 200k']);
    const r = await quietBackup();
    assert.equal(r.disks[0].read.kind, 'changed');
    assert.equal(r.bytesScanned, 64 * KiB + 256 * KiB);
    const bm = await bitmaps();
    assert.equal(bm.length, 1);
    assert.notEqual(bm[0]!.name, before, 'the old checkpoint is removed, the new one records');
    assert.equal(bm[0]!.recording, true);
  });

  it('writes that keep arriving during a backup are not lost: the next backup has them', async () => {
    let stop = false;
    let writes = 0;
    const writer = (async () => {
      while (!stop) {
        const at = (writes * 7 + 3) % 60;
        await write([`write -P 0x${(0x40 + (writes % 64)).toString(16)} ${at}M 64k`]);
        writes++;
      }
    })();
    try {
      await new Promise((r) => setTimeout(r, 300));
      const r = (await ok(args(), s.env)).json;
      assert.equal(r.disks[0].read.kind, 'changed');
    } finally {
      stop = true;
      await writer;
    }
    assert.ok(writes >= 2, `the writer wrote ${writes} times`);
    const r = await quietBackup();
    assert.equal(r.disks[0].read.kind, 'changed');
  });

  it('a failed run leaves the checkpoint of the last snapshot in place', async () => {
    const before = await bitmaps();
    await write(['write -P 0x61 50M 64k']);
    const failed = await run([...args(), '--parent', '20000101T000000Z-00000000'], s.env);
    assert.notEqual(failed.code, 0);
    assert.deepEqual((await bitmaps()).map((b) => b.name), before.map((b) => b.name), "the failed run's bitmap is removed");
    // a failure after the parent's bitmap was frozen: disk1's export cannot be reached
    const other = path.join(s.dir, 'disk1.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', other, String(8 * MiB));
    const q = await QmpClient.connect(sd!.qmpSocket);
    try {
      await q.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'disk1', file: { driver: 'file', filename: other } });
    } finally {
      q.close();
    }
    const twoDisks = ['backup', 'nbd', uri, `nbd+unix:///disk1?socket=${s.dir}/gone.sock`, '--vm', 'kvm02', '--qmp', sd!.qmpSocket, '--repo', repo];
    const failed2 = await run(twoDisks, s.env);
    assert.equal(failed2.code, 1);
    assert.match(failed2.stderr, /gone\.sock: no such socket/);
    const now = await bitmaps();
    assert.deepEqual(now.map((b) => b.name), before.map((b) => b.name));
    assert.equal(now[0]!.recording, true, "the parent's bitmap records again");
    const r = await quietBackup();
    assert.equal(r.disks[0].read.kind, 'changed');
    assert.equal(r.bytesScanned, 64 * KiB);
  });

  it('a bitmap of another granularity than recorded is not trusted', async () => {
    const [bm] = await bitmaps();
    const q = await QmpClient.connect(sd!.qmpSocket);
    try {
      await q.execute('block-dirty-bitmap-remove', { node: 'disk0', name: bm!.name });
      await q.execute('block-dirty-bitmap-add', { node: 'disk0', name: bm!.name, granularity: 131072, persistent: true });
    } finally {
      q.close();
    }
    await write(['write -P 0x71 20M 64k']);
    const r = await quietBackup();
    assert.equal(r.disks[0].read.kind, 'allocated');
    assert.match(r.disks[0].read.reason, /granularity 131072, the checkpoint was recorded with 65536/);
  });

  it('a bitmap left in use by a crash is marked inconsistent: full read with the reason', async () => {
    await sd!.stop();
    await crashWhileWriting(image, 'write -P 0x81 40M 128k');
    await start();
    const [bm] = await bitmaps();
    assert.equal(bm!.inconsistent, true, JSON.stringify(bm));
    const r = await quietBackup();
    assert.equal(r.disks[0].read.kind, 'allocated');
    assert.match(r.disks[0].read.reason, /inconsistent \(its in-use flag was left set/);
    const after = await bitmaps();
    assert.equal(after.length, 1, 'the inconsistent bitmap is removed after the commit');
    assert.ok(!after[0]!.inconsistent);
    await write(['write -P 0x82 41M 64k']);
    const next = await quietBackup();
    assert.equal(next.disks[0].read.kind, 'changed');
    assert.equal(next.bytesScanned, 64 * KiB);
  });

  it('every quiet backup restores byte-identical to the disk at that time', async () => {
    assert.ok(checks.length >= 6);
    for (const [i, c] of checks.entries()) {
      const out = path.join(s.dir, `restored-${i}.raw`);
      await ok(['restore', c.id, '--to', out, '--repo', repo], s.env);
      assert.ok(await sameBytes(c.copy, out), `restore ${i} differs from its copy`);
    }
  });

  it('a backup without the parent leaves the old checkpoint, and says so', async () => {
    const before = await bitmaps();
    const r = (await ok([...args(), '--parent', 'none'], s.env)).json;
    assert.equal(r.disks[0].read.kind, 'allocated');
    assert.ok(r.notes.some((n: string) => n.includes(`${before[0]!.name}`) && /not this backup's parent checkpoint/.test(n)), JSON.stringify(r.notes));
    assert.equal((await bitmaps()).length, 2);
  });
});
