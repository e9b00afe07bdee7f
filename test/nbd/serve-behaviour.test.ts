/**
 * `serve nbd` beyond the happy path: every disk an export, the errors the protocol
 * names for bad requests (and the server serving on), out-of-order replies,
 * copy-on-write overlays, a clean SIGTERM, and damage in the repository: a
 * corrupted pack byte gives EIO on the reads that touch it, correct bytes elsewhere,
 * never wrong bytes.
 *
 * Real clients where they can express the case (nbdinfo, qemu-io, nbdcopy); the raw
 * TEST client of test/support/nbd.ts for requests real clients refuse to send.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as P from '../../src/nbd/protocol.js';
import { ok, run, scratch } from '../support/cli.js';
import { biggestDataPack, flipByte } from '../support/damage.js';
import { listFiles } from '../support/files.js';
import { makeImage } from '../support/images.js';
import { RawNbdClient, Serving, nbdUri, startServe as startServeRaw, tool, toolOk } from '../support/nbd.js';

const MiB = 1 << 20;
const CHUNK = 65536;

/** Servers still running when a test fails are stopped at the end (a leaked child would hang the run). */
const started: Serving[] = [];
async function startServe(args: string[], env: Record<string, string>): Promise<Serving> {
  const sv = await startServeRaw(args, env);
  started.push(sv);
  return sv;
}
after(async () => {
  await Promise.all(started.map((sv) => (sv.child.exitCode === null && sv.child.signalCode === null ? sv.stop() : null)));
});

async function treeHash(dir: string): Promise<string> {
  const h = createHash('sha256');
  for (const f of (await listFiles(dir)).sort()) h.update(f).update(await fsp.readFile(f));
  return h.digest('hex');
}

describe('serve nbd: exports, errors, overlay, shutdown', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let repo: string;
  let a: string;
  let b: string;
  let snap: string;

  before(async () => {
    s = await scratch('nbd-behave');
    repo = path.join(s.dir, 'repo');
    a = path.join(s.dir, 'a.img');
    b = path.join(s.dir, 'b.img');
    await makeImage(a, 20 * MiB, [{ offset: 0, length: 2 * MiB, kind: 'random' }, { offset: 16 * MiB, length: MiB, kind: 'text' }], 21);
    await makeImage(b, 4 * MiB, [{ offset: MiB, length: MiB, kind: 'random' }], 22);
    await ok(['init', '--repo', repo], s.env);
    snap = (await ok(['backup', 'file', a, b, '--vm', 'two', '--repo', repo, '--json'], s.env)).json.snapshot;
  });

  after(async () => s.cleanup());

  describe('two disks, read-only', () => {
    let serving: Serving;
    let socket: string;

    before(async () => {
      socket = path.join(s.dir, 'ro.sock');
      serving = await startServe([snap.slice(0, 20), '--vm', 'two', '--listen', `unix:${socket}`, '--repo', repo], s.env);
    });
    after(async () => {
      if (serving) assert.equal(await serving.stop(), 0, serving.stderr());
    });

    it('every disk is an export, by index and by name; nbdinfo --list shows both', async () => {
      assert.deepEqual(
        serving.ready.exports.map((e) => [e.disk, e.size]),
        [
          [0, 20 * MiB],
          [1, 4 * MiB],
        ],
      );
      const list = await toolOk('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${socket}`]);
      const names = (JSON.parse(list.stdout).exports as { 'export-name': string }[]).map((e) => e['export-name']);
      assert.deepEqual(names, ['0', '1']);
      const byName = serving.ready.exports[1]!.names[1]!;
      const r = await toolOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', b, nbdUri(socket, byName)]);
      assert.match(r.stdout, /identical/);
      // the empty name is the first disk
      assert.match((await toolOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', a, nbdUri(socket, '')])).stdout, /identical/);
    });

    it('an unknown export is refused with NBD_REP_ERR_UNKNOWN, and the server keeps serving', async () => {
      const r = await tool('nbdinfo', [nbdUri(socket, 'nope')]);
      assert.notEqual(r.code, 0);
      const c = await RawNbdClient.connect(socket);
      const replies = await c.option(P.NBD_OPT_GO, P.encodeInfoRequest({ name: 'nope', requests: [] }));
      assert.equal(replies[0]!.type, P.NBD_REP_ERR_UNKNOWN);
      assert.match(replies[0]!.data.toString(), /no export "nope"/);
      // same connection, a good export now
      await c.go('1', { structured: true });
      const got = await c.read(MiB, 4096);
      assert.equal(got.error, 0);
      assert.ok(got.data!.equals((await fsp.readFile(b)).subarray(MiB, MiB + 4096)));
      await c.disconnect();
    });

    it('bad requests get the errors the protocol names; the connection and others keep working', async () => {
      const c = await RawNbdClient.connect(socket);
      await c.go('0', { structured: true });
      assert.ok(c.transmissionFlags & P.NBD_FLAG_READ_ONLY);
      assert.ok(c.transmissionFlags & P.NBD_FLAG_CAN_MULTI_CONN);
      const other = await RawNbdClient.connect(socket);
      await other.go('0');
      const write = await c.request(P.NBD_CMD_WRITE, 0, 512, { payload: Buffer.alloc(512, 1) }).reply;
      assert.equal(write.error, P.NBD_EPERM, 'write to a read-only export');
      const zeroes = await c.request(P.NBD_CMD_WRITE_ZEROES, 0, 512).reply;
      assert.equal(zeroes.error, P.NBD_EPERM);
      const past = await c.read(20 * MiB - 100, 200);
      assert.equal(past.error, P.NBD_EINVAL, 'read past the end');
      assert.match(past.message!, /past the end/);
      const noCtx = await c.request(P.NBD_CMD_BLOCK_STATUS, 0, 4096).reply;
      assert.equal(noCtx.error, P.NBD_EINVAL, 'block status without a meta context');
      const unknown = await c.request(42, 0, 0).reply;
      assert.equal(unknown.error, P.NBD_EINVAL);
      const big = await c.read(0, 64 * MiB);
      assert.equal(big.error, P.NBD_EOVERFLOW, 'read larger than the advertised maximum');
      const good = await c.read(100, 1000);
      assert.ok(good.data!.equals((await fsp.readFile(a)).subarray(100, 1100)));
      // simple replies on the other connection
      const simple = await other.read(16 * MiB, 8192);
      assert.ok(simple.data!.equals((await fsp.readFile(a)).subarray(16 * MiB, 16 * MiB + 8192)));
      assert.equal((await other.read(0, 20 * MiB + 1)).error, P.NBD_EINVAL);
      await c.disconnect();
      await other.disconnect();
    });

    it('block status: base:allocation holes are HOLE|ZERO, data is 0; REQ_ONE gives one extent', async () => {
      const c = await RawNbdClient.connect(socket);
      const list = await c.option(P.NBD_OPT_LIST_META_CONTEXT, P.encodeMetaContextRequest({ name: '0', queries: [] }));
      assert.equal(list[0]!.type, P.NBD_REP_ERR_INVALID, 'needs structured replies first');
      await c.go('0', { structured: true, baseAllocation: true });
      const st = await c.request(P.NBD_CMD_BLOCK_STATUS, MiB, 2 * MiB).reply;
      assert.deepEqual(st.extents, [
        { length: MiB, flags: 0 },
        { length: MiB, flags: P.NBD_STATE_HOLE | P.NBD_STATE_ZERO },
      ]);
      const one = await c.request(P.NBD_CMD_BLOCK_STATUS, 3 * MiB, 2 * MiB, { flags: P.NBD_CMD_FLAG_REQ_ONE }).reply;
      assert.deepEqual(one.extents, [{ length: 2 * MiB, flags: 3 }]);
      await c.disconnect();
    });

    it('answers out of order: a hole read sent after a large cold read comes back first', async () => {
      // a server of its own with no chunk cache: the large read must fetch, the hole read never does
      const sock = path.join(s.dir, 'ooo.sock');
      const cold = await startServe([snap, '--vm', 'two', '--cache-mib', '0', '--listen', `unix:${sock}`, '--repo', repo], s.env);
      try {
        const c = await RawNbdClient.connect(sock);
        await c.go('0', { structured: true });
        const big = c.request(P.NBD_CMD_READ, 16 * MiB, MiB);
        const hole = c.request(P.NBD_CMD_READ, 10 * MiB, 4096);
        const [bigR, holeR] = await Promise.all([big.reply, hole.reply]);
        assert.ok(bigR.data!.equals((await fsp.readFile(a)).subarray(16 * MiB, 17 * MiB)));
        assert.ok(holeR.data!.equals(Buffer.alloc(4096)));
        assert.deepEqual(c.order, [hole.cookie, big.cookie]);
        await c.disconnect();
      } finally {
        assert.equal(await cold.stop(), 0, cold.stderr());
      }
    });
  });

  describe('copy-on-write overlay', () => {
    it('writes land in the overlay, never in the repository, and survive a restart; another snapshot refuses it', async () => {
      const overlay = path.join(s.dir, 'ov.img');
      const socket = path.join(s.dir, 'ov.sock');
      const repoBefore = await treeHash(repo);
      const args = [snap, '--vm', 'two', '--disk', '1', '--overlay', overlay, '--listen', `unix:${socket}`, '--repo', repo];
      let serving = await startServe(args, s.env);
      assert.deepEqual(serving.ready.exports.map((e) => [e.disk, e.writable]), [[1, true]]);
      const uri = nbdUri(socket, '1');
      // one write inside a chunk, one across a chunk boundary, one of zeros over data
      await toolOk('qemu-io', ['-f', 'raw', '-c', `write -P 0xab 100000 5000`, '-c', `write -P 0xcd ${2 * CHUNK - 1000} 2000`, '-c', `write -z ${MiB} 4096`, '-c', 'flush', uri]);
      const expected = await fsp.readFile(b);
      expected.fill(0xab, 100000, 105000);
      expected.fill(0xcd, 2 * CHUNK - 1000, 2 * CHUNK + 1000);
      expected.fill(0, MiB, MiB + 4096);
      const out1 = path.join(s.dir, 'ov-out1.img');
      await toolOk('nbdcopy', [uri, out1]);
      assert.ok((await fsp.readFile(out1)).equals(expected), 'reads see the writes');
      assert.equal(await serving.stop(), 0, serving.stderr());
      assert.equal(await treeHash(repo), repoBefore, 'the repository is unchanged');
      assert.ok((await fsp.stat(overlay)).blocks * 512 < 4 * MiB, 'the overlay is sparse');

      serving = await startServe(args, s.env);
      const out2 = path.join(s.dir, 'ov-out2.img');
      await toolOk('nbdcopy', [uri, out2]);
      assert.ok((await fsp.readFile(out2)).equals(expected), 'writes survive a restart');
      assert.equal(await serving.stop(), 0, serving.stderr());

      // the read-only export of the same snapshot still serves the backup, not the overlay
      const roSock = path.join(s.dir, 'ov-ro.sock');
      const ro = await startServe([snap, '--vm', 'two', '--disk', '1', '--listen', `unix:${roSock}`, '--repo', repo], s.env);
      assert.match((await toolOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', b, nbdUri(roSock, '1')])).stdout, /identical/);
      assert.equal(await ro.stop(), 0);

      const other = (await ok(['backup', 'file', b, '--vm', 'other', '--repo', repo, '--json'], s.env)).json.snapshot;
      const refused = await run(['serve', 'nbd', other, '--vm', 'other', '--overlay', overlay, '--listen', `unix:${path.join(s.dir, 'x.sock')}`, '--repo', repo], s.env);
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(refused.stderr, /belongs to snapshot/);
    });
  });

  it('SIGTERM closes open connections cleanly, exits 0, removes the socket', async () => {
    const socket = path.join(s.dir, 'term.sock');
    const serving = await startServe([snap, '--vm', 'two', '--listen', `unix:${socket}`, '--repo', repo], s.env);
    const idle = await RawNbdClient.connect(socket);
    await idle.go('0', { structured: true });
    const busy = await RawNbdClient.connect(socket);
    await busy.go('0', { structured: true });
    const inflight = busy.read(0, 2 * MiB);
    const code = serving.stop();
    const r = await inflight;
    assert.equal(r.error, 0, 'a request in flight at SIGTERM is answered');
    assert.ok(r.data!.equals((await fsp.readFile(a)).subarray(0, 2 * MiB)));
    await idle.closed;
    await busy.closed;
    assert.equal(await code, 0, serving.stderr());
    await assert.rejects(fsp.stat(socket), /ENOENT/);
  });

  it('bad command lines are one-line errors', async () => {
    const r1 = await run(['serve', 'nbd', snap, '--listen', 'nowhere', '--repo', repo], s.env);
    assert.equal(r1.code, 1);
    assert.match(r1.stderr, /--listen takes unix:PATH or HOST:PORT/);
    const r2 = await run(['serve', 'nbd', snap, '--disk', '5', '--listen', `unix:${path.join(s.dir, 'd.sock')}`, '--repo', repo], s.env);
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, /there is no disk 5/);
    const taken = path.join(s.dir, 'taken.sock');
    await fsp.writeFile(taken, '');
    const r3 = await run(['serve', 'nbd', snap, '--listen', `unix:${taken}`, '--repo', repo], s.env);
    assert.equal(r3.code, 1);
    assert.match(r3.stderr, /exists/);
  });
});

describe('serve nbd: a corrupted pack byte', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let image: string;
  let serving: Serving;
  let socket: string;

  before(async () => {
    s = await scratch('nbd-corrupt');
    const repo = path.join(s.dir, 'repo');
    image = path.join(s.dir, 'a.img');
    await makeImage(image, 8 * MiB, [{ offset: 0, length: 4 * MiB, kind: 'random' }], 31);
    await ok(['init', '--repo', repo], s.env);
    await ok(['backup', 'file', image, '--vm', 'c', '--repo', repo], s.env);
    const pack = await biggestDataPack(repo);
    await flipByte(pack.file, Math.floor(pack.size / 2), 0x01);
    socket = path.join(s.dir, 'c.sock');
    serving = await startServe(['latest', '--vm', 'c', '--listen', `unix:${socket}`, '--repo', repo], s.env);
  });

  after(async () => {
    if (serving) await serving.stop();
    await s.cleanup();
  });

  it('EIO on the reads that touch the damaged chunk, the right bytes everywhere else, logged with snapshot and offset', async () => {
    const bytes = await fsp.readFile(image);
    const c = await RawNbdClient.connect(socket);
    await c.go('0', { structured: true });
    const bad: number[] = [];
    for (let o = 0; o < 8 * MiB; o += CHUNK) {
      const r = await c.read(o, CHUNK);
      if (r.error) {
        assert.equal(r.error, P.NBD_EIO);
        bad.push(o);
      } else assert.ok(r.data!.equals(bytes.subarray(o, o + CHUNK)), `chunk at ${o} must be right or refused`);
    }
    assert.equal(bad.length, 1, `exactly one damaged chunk, got ${bad.join(', ')}`);
    // a small read inside it fails too, one beside it does not
    assert.equal((await c.read(bad[0]! + 100, 10)).error, P.NBD_EIO);
    const beside = bad[0]! === 0 ? CHUNK : bad[0]! - 10;
    assert.equal((await c.read(beside, 10)).error, 0);
    await c.disconnect();
    // qemu-io sees an I/O error there, nbdcopy fails instead of copying wrong bytes
    const q = await tool('qemu-io', ['-r', '-f', 'raw', '-c', `read ${bad[0]} 512`, nbdUri(socket, '0')]);
    assert.match(q.stdout + q.stderr, /Input\/output error/);
    const copy = await tool('nbdcopy', [nbdUri(socket, '0'), path.join(s.dir, 'copy.img')]);
    assert.notEqual(copy.code, 0);
    assert.match(serving.stderr(), new RegExp(`snapshot ${serving.ready.snapshot} disk \\S+ offset ${bad[0]}: `));
  });
});
