/**
 * src/nbd/client.ts against real qemu-nbd, cross-checked with an independent client
 * (libnbd's nbdinfo --map) and with the image's bytes (qemu-img convert).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { walkBlockStatus } from '../../src/nbd/block-status.js';
import { NbdClient } from '../../src/nbd/client.js';
import { BASE_ALLOCATION, NBD_STATE_ZERO } from '../../src/nbd/protocol.js';
import { parseNbdUri } from '../../src/nbd/uri.js';
import { scratch } from '../support/cli.js';
import { qemuImg, qemuIo, rawCopy, sh, startQemuNbd, type Daemon } from '../support/qemu.js';

const MiB = 1 << 20;

/** nbdinfo --map: the ranges of `context` whose type has `bit` set (or clear, with want=false). */
async function nbdinfoMap(uri: string, context: string, keep: (type: number) => boolean): Promise<{ offset: number; length: number }[]> {
  const map = JSON.parse(await sh('nbdinfo', [`--map=${context}`, '--json', uri])) as { offset: number; length: number; type: number }[];
  const out: { offset: number; length: number }[] = [];
  for (const e of map) {
    if (!keep(e.type)) continue;
    const last = out[out.length - 1];
    if (last && last.offset + last.length === e.offset) last.length += e.length;
    else out.push({ offset: e.offset, length: e.length });
  }
  return out;
}

describe('NBD client against qemu-nbd', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let server: Daemon;
  let uri: string;
  let image: string;

  before(async () => {
    s = await scratch('nbd-client');
    image = path.join(s.dir, 'd.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', image, String(48 * MiB + 4096));
    await qemuImg('bitmap', '--add', image, 'b1');
    const rnd = path.join(s.dir, 'rnd');
    await fsp.writeFile(rnd, randomBytes(5 * MiB));
    const cmds = [`write -s ${rnd} 0 5M`, 'write -z 8M 1M', 'write -P 0x5a 20M 100k', `write -s ${rnd} 33M 3M`, 'write -P 0x11 48M 4k'];
    for (let i = 0; i < 40; i++) cmds.push(`write -P ${i} ${10 * MiB + i * 131072} 4k`); // many small dirty runs
    await qemuIo(image, cmds);
    server = await startQemuNbd(image, path.join(s.dir, 'nbd.sock'), 'vda', ['b1']);
    uri = `nbd+unix:///vda?socket=${path.join(s.dir, 'nbd.sock')}`;
  });

  after(async () => {
    await server.stop();
    await s.cleanup();
  });

  it('negotiates the meta contexts and reports the same extents as nbdinfo, whatever the request size', async () => {
    const c = await NbdClient.connect(parseNbdUri(uri), { metaContexts: [BASE_ALLOCATION, 'qemu:dirty-bitmap:b1', 'qemu:dirty-bitmap:nope'], listQuery: 'qemu:dirty-bitmap:' });
    try {
      assert.equal(c.size, 48 * MiB + 4096);
      assert.deepEqual([...c.contexts.keys()].sort(), [BASE_ALLOCATION, 'qemu:dirty-bitmap:b1']);
      assert.deepEqual(c.offered, ['qemu:dirty-bitmap:b1']);
      const alloc = c.contexts.get(BASE_ALLOCATION)!;
      const dirty = c.contexts.get('qemu:dirty-bitmap:b1')!;
      const queries = [
        { id: alloc, keep: (f: number) => (f & NBD_STATE_ZERO) === 0 },
        { id: dirty, keep: (f: number) => (f & 1) !== 0 },
      ];
      const big = await walkBlockStatus(c, queries);
      const small = await walkBlockStatus(c, queries, c.size, 1 * MiB);
      assert.ok(small.requests >= 48, `${small.requests} bounded requests`);
      assert.deepEqual(small.extents, big.extents);
      assert.deepEqual(big.extents.get(dirty), await nbdinfoMap(uri, 'qemu:dirty-bitmap:b1', (t) => (t & 1) !== 0));
      assert.deepEqual(big.extents.get(alloc), await nbdinfoMap(uri, BASE_ALLOCATION, (t) => (t & 2) === 0));
      assert.ok(big.extents.get(dirty)!.length > 40);
    } finally {
      await c.disconnect();
    }
  });

  it('reads the whole disk with many requests in flight, byte-identical to qemu-img convert', async () => {
    const ref = path.join(s.dir, 'ref.raw');
    await rawCopy(image, ref);
    const want = await fsp.readFile(ref);
    const c = await NbdClient.connect(parseNbdUri(uri));
    try {
      const got = Buffer.alloc(c.size);
      const piece = 768 * 1024 + 512; // unaligned pieces, all in flight at once
      const reads: Promise<void>[] = [];
      for (let off = 0; off < c.size; off += piece) {
        const n = Math.min(piece, c.size - off);
        reads.push(c.read(off, n, got.subarray(off, off + n)));
      }
      await Promise.all(reads);
      assert.ok(got.equals(want));
      // larger than the server's maximum request: split by the client
      const whole = Buffer.alloc(c.size);
      await c.read(0, c.size, whole);
      assert.ok(whole.equals(want));
      await assert.rejects(c.read(c.size - 10, 20, Buffer.alloc(20)), RangeError);
    } finally {
      await c.disconnect();
    }
    await assert.rejects(c.read(0, 10, Buffer.alloc(10)), /closed/);
  });

  it('connects over TCP (nbd://HOST:PORT/EXPORT) too', async () => {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const tcp = await startQemuNbd(image, port, 'vda', ['b1']);
    try {
      const c = await NbdClient.connect(parseNbdUri(`nbd://127.0.0.1:${port}/vda`), { metaContexts: ['qemu:dirty-bitmap:b1'] });
      const buf = Buffer.alloc(4096);
      await c.read(48 * MiB, 4096, buf);
      assert.ok(buf.every((b) => b === 0x11));
      assert.ok(c.contexts.has('qemu:dirty-bitmap:b1'));
      await c.disconnect();
    } finally {
      await tcp.stop();
    }
  });
});
