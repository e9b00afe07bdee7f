/**
 * `backup nbd` against real qemu-nbd: a qcow2 made with qemu-img, persistent bitmaps
 * added with `qemu-img bitmap`, writes made with qemu-io, served with `qemu-nbd -r -B`.
 * Every restore is compared with a raw copy (qemu-img convert) taken at that point.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ok, run, scratch } from '../support/cli.js';
import { sameBytes } from '../support/images.js';
import { crashWhileWriting, imageBitmaps, qemuImg, qemuIo, qemuNbdRefusal, rawCopy, startQemuNbd, type Daemon } from '../support/qemu.js';

const MiB = 1 << 20;
const KiB = 1024;

describe('backup nbd from qemu-nbd with QEMU dirty bitmaps', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let repo: string;
  let image: string;
  let socket: string;
  let uri: string;
  let server: Daemon | undefined;
  let step = 0;
  const snaps: { id: string; copy: string; json: any }[] = [];

  /** Serves the image read-only with these bitmaps, backs it up, stops serving, keeps a raw copy. */
  async function backup(bitmaps: string[], args: string[]): Promise<any> {
    server = await startQemuNbd(image, socket, 'vda', bitmaps);
    try {
      const r = await ok(['backup', 'nbd', uri, '--vm', 'kvm01', '--repo', repo, '--json', ...args], s.env);
      const copy = path.join(s.dir, `copy${++step}.raw`);
      await rawCopy(image, copy);
      snaps.push({ id: r.json.snapshot, copy, json: r.json });
      return r.json;
    } finally {
      await server.stop();
      server = undefined;
    }
  }

  async function writeFile(name: string, bytes: number): Promise<string> {
    const f = path.join(s.dir, name);
    await fsp.writeFile(f, randomBytes(bytes));
    return f;
  }

  before(async () => {
    s = await scratch('qemu-nbd');
    repo = path.join(s.dir, 'repo');
    image = path.join(s.dir, 'vda.qcow2');
    socket = path.join(s.dir, 'nbd.sock');
    uri = `nbd+unix:///vda?socket=${socket}`;
    await ok(['init', '--repo', repo], s.env);
    await qemuImg('create', '-q', '-f', 'qcow2', image, String(64 * MiB));
    await qemuImg('bitmap', '--add', image, 'b1');
    const rnd = await writeFile('r1', 3 * MiB);
    await qemuIo(image, [`write -s ${rnd} 0 3M`, 'write -P 0x11 16M 2M', 'write -P 0x12 40M 100k']);
  });

  after(async () => {
    await server?.stop();
    await s.cleanup();
  });

  it('a first backup reads the allocated extents and records the checkpoint', async () => {
    const r = await backup(['b1'], ['--bitmap', 'b1']);
    assert.equal(r.parent, null);
    assert.equal(r.disks[0].read.kind, 'allocated');
    assert.match(r.disks[0].read.reason, /base:allocation/);
    // allocated: 3 MiB + 2 MiB + 100 KiB in two 64 KiB chunks
    assert.equal(r.bytesScanned, 5 * MiB + 128 * KiB);
    const list = (await ok(['snapshots', '--vm', 'kvm01', '--repo', repo, '--json'], s.env)).json;
    assert.equal(list[0].disks[0].changeToken, 'qemu:checkpoint=b1');
  });

  it('an incremental after clearing the bitmap reads only the dirty extents', async () => {
    // rotation by hand, image not in use: clear the bitmap at the backup's point in time
    await qemuImg('bitmap', '--clear', image, 'b1');
    const rnd = await writeFile('r2', 64 * KiB);
    // 64 KiB at 5 MiB (one granule) and 100 KiB at 20 MiB + 4 KiB (two granules)
    await qemuIo(image, [`write -s ${rnd} 5M 64k`, 'write -P 0x21 20484k 100k']);
    // b2 starts now: this backup's checkpoint for the next run
    await qemuImg('bitmap', '--add', image, 'b2');
    const r = await backup(['b1', 'b2'], ['--bitmap', 'b1', '--checkpoint', 'b2']);
    assert.equal(r.parent, snaps[0]!.id);
    assert.equal(r.disks[0].read.kind, 'changed');
    assert.match(r.disks[0].read.reason, /dirty bitmap "b1"/);
    assert.equal(r.bytesScanned, 3 * 64 * KiB);
  });

  it('the next incremental reads the new checkpoint bitmap only', async () => {
    await qemuImg('bitmap', '--remove', image, 'b1');
    await qemuIo(image, ['write -P 0x31 0 64k', 'write -z 16M 1M', 'write -P 0x32 63M 1M']);
    const r = await backup(['b2'], ['--bitmap', 'b2']);
    assert.equal(r.disks[0].read.kind, 'changed');
    assert.equal(r.bytesScanned, 64 * KiB + 1 * MiB + 1 * MiB);
  });

  it('a bitmap of another checkpoint (re-created under an old name) is not trusted', async () => {
    await qemuImg('bitmap', '--add', image, 'b1');
    await qemuIo(image, ['write -P 0x41 30M 64k']);
    const r = await backup(['b1', 'b2'], ['--bitmap', 'b1']);
    assert.equal(r.disks[0].read.kind, 'allocated');
    assert.match(r.disks[0].read.reason, /belongs to another checkpoint than the parent snapshot's \("b2"\)/);
    // the full read is deduplicated against the parent: only the new chunk is new
    assert.equal(r.chunksNew, 1);
  });

  it('a bitmap left in use by a crashed writer forces a full read with the reason', async () => {
    // the last backup's checkpoint is b1; a writer dies with b1 enabled
    await crashWhileWriting(image, 'write -P 0x51 50M 192k');
    const bm = await imageBitmaps(image);
    assert.ok(bm.find((b) => b.name === 'b1')!.flags.includes('in-use'), JSON.stringify(bm));
    const refusal = await qemuNbdRefusal(image, path.join(s.dir, 'probe.sock'), ['b1']);
    assert.match(refusal ?? '', /inconsistent/, 'qemu-nbd refuses to export an in-use bitmap');
    // so it is served without it; pilotlight must not trust anything and reads it all
    const r = await backup([], ['--bitmap', 'b1']);
    assert.equal(r.disks[0].read.kind, 'allocated');
    assert.match(r.disks[0].read.reason, /in use\/inconsistent/);
    assert.ok(r.bytesScanned > 5 * MiB, `full read of the allocated extents: ${r.bytesScanned}`);
  });

  it('every restore is byte-identical to the image at that time', async () => {
    assert.equal(snaps.length, 5);
    for (const [i, snap] of snaps.entries()) {
      const out = path.join(s.dir, `restored${i}.raw`);
      await ok(['restore', snap.id, '--to', out, '--repo', repo], s.env);
      assert.ok(await sameBytes(snap.copy, out), `restore of backup ${i + 1} differs from the image at that time`);
    }
  });

  it('bad input: unreachable socket, missing export, a bitmap the server does not offer', async () => {
    const before = (await ok(['snapshots', '--repo', repo, '--json'], s.env)).json.length;
    const noSocket = await run(['backup', 'nbd', `nbd+unix:///vda?socket=${s.dir}/none.sock`, '--vm', 'kvm01', '--repo', repo], s.env);
    assert.equal(noSocket.code, 1);
    assert.match(noSocket.stderr, /^pilotlight: cannot connect to the NBD server at unix socket .*none\.sock: no such socket/);
    await qemuImg('bitmap', '--add', image, 'b3'); // b1 and b2 are in use since the crash
    server = await startQemuNbd(image, socket, 'vda', ['b3']);
    try {
      const noExport = await run(['backup', 'nbd', `nbd+unix:///vdb?socket=${socket}`, '--vm', 'kvm01', '--repo', repo], s.env);
      assert.equal(noExport.code, 1);
      assert.match(noExport.stderr, /no export named "vdb"; it offers: "vda"/);
      const noBitmap = await run(['backup', 'nbd', uri, '--vm', 'kvm01', '--bitmap', 'nightly', '--repo', repo], s.env);
      assert.equal(noBitmap.code, 1);
      assert.match(noBitmap.stderr, /offers no dirty bitmap named "nightly" \(it offers: "b3"\); check --bitmap/);
      const badUri = await run(['backup', 'nbd', 'http://x/vda', '--vm', 'kvm01', '--repo', repo], s.env);
      assert.equal(badUri.code, 1);
      assert.match(badUri.stderr, /unknown scheme http:/);
      for (const r of [noSocket, noExport, noBitmap, badUri]) assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    } finally {
      await server.stop();
      server = undefined;
    }
    assert.equal((await ok(['snapshots', '--repo', repo, '--json'], s.env)).json.length, before, 'nothing was committed');
  });
});

describe('backup nbd of a libvirt-style export: the bitmap is named otherwise than its checkpoint', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let repo: string;
  let image: string;
  let socket: string;
  let uri: string;

  async function backup(bitmaps: string[], args: string[]): Promise<{ json: any; copy: string }> {
    const server = await startQemuNbd(image, socket, 'vda', bitmaps);
    try {
      const r = await ok(['backup', 'nbd', uri, '--vm', 'kvm03', '--repo', repo, '--json', ...args], s.env);
      const copy = path.join(s.dir, `copy-${r.json.snapshot}.raw`);
      await rawCopy(image, copy);
      return { json: r.json, copy };
    } finally {
      await server.stop();
    }
  }

  before(async () => {
    s = await scratch('qemu-libvirt');
    repo = path.join(s.dir, 'repo');
    image = path.join(s.dir, 'vda.qcow2');
    socket = path.join(s.dir, 'nbd.sock');
    uri = `nbd+unix:///vda?socket=${socket}`;
    await ok(['init', '--repo', repo], s.env);
    await qemuImg('create', '-q', '-f', 'qcow2', image, String(32 * MiB));
    await qemuIo(image, ['write -P 0x11 0 4M']);
  });

  after(async () => s.cleanup());

  it('first backup records the checkpoint alone; the next reads backup-vda as since that checkpoint', async () => {
    await qemuImg('bitmap', '--add', image, 'ck-0001'); // the checkpoint created with backup 1
    const first = await backup([], ['--checkpoint', 'ck-0001']);
    assert.equal(first.json.disks[0].read.kind, 'allocated');
    await qemuIo(image, ['write -P 0x22 8M 128k']);
    // what libvirt exports for <incremental>ck-0001</incremental>: a copy named backup-vda
    await qemuImg('bitmap', '--add', '--merge', 'ck-0001', image, 'backup-vda');
    await qemuImg('bitmap', '--add', image, 'ck-0002');
    const wrong = await backup(['backup-vda'], ['--bitmap', 'backup-vda', '--since-checkpoint', 'ck-0000', '--checkpoint', 'ck-0002', '--parent', first.json.snapshot]);
    assert.equal(wrong.json.disks[0].read.kind, 'allocated');
    assert.match(wrong.json.disks[0].read.reason, /since checkpoint "ck-0000"\) belongs to another checkpoint than the parent snapshot's \("ck-0001"\)/);
    const second = await backup(['backup-vda'], ['--bitmap', 'backup-vda', '--since-checkpoint', 'ck-0001', '--checkpoint', 'ck-0002', '--parent', first.json.snapshot]);
    assert.equal(second.json.disks[0].read.kind, 'changed');
    assert.equal(second.json.bytesScanned, 128 * KiB);
    for (const b of [first, wrong, second]) {
      const out = path.join(s.dir, `r-${b.json.snapshot}.raw`);
      await ok(['restore', b.json.snapshot, '--to', out, '--repo', repo], s.env);
      assert.ok(await sameBytes(b.copy, out));
    }
    const bad = await run(['backup', 'nbd', uri, '--vm', 'kvm03', '--since-checkpoint', 'x', '--repo', repo], s.env);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /--since-checkpoint needs --bitmap/);
  });
});
