/** The QEMU checkpoint token and the rule that decides when a dirty bitmap may be trusted; NBD URIs. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeCheckpoint, encodeCheckpoint, judgeBitmap } from '../../src/source/nbd/checkpoint.js';
import { parseNbdUri } from '../../src/nbd/uri.js';
import { UserError } from '../../src/repo/errors.js';

const cap = 10 * 65536 + 1000;

describe('QEMU checkpoint tokens', () => {
  it('round-trips names with any characters, and refuses what is not a checkpoint', () => {
    const t = { checkpoint: 'ck 1&x=y/ü', granularity: 65536, node: 'disk0' };
    assert.deepEqual(decodeCheckpoint(encodeCheckpoint(t)), t);
    assert.deepEqual(decodeCheckpoint('qemu:checkpoint=b1'), { checkpoint: 'b1' });
    assert.equal(decodeCheckpoint('52 3c 8a/17'), undefined, 'a vSphere change id');
    assert.equal(decodeCheckpoint(undefined), undefined);
    assert.equal(decodeCheckpoint('qemu:granularity=4'), undefined);
  });

  it('trusts a bitmap only when it is the parent snapshot checkpoint, intact', () => {
    const since = encodeCheckpoint({ checkpoint: 'b1', granularity: 65536 });
    const ok = judgeBitmap(since, true, { name: 'b1', offered: true, granularity: 65536 }, [{ offset: 65536, length: 131072 }], cap);
    assert.equal(ok.use, true);
    // the last extent may end at the capacity, off the granularity
    assert.equal(judgeBitmap(since, true, { name: 'b1', offered: true }, [{ offset: 9 * 65536, length: 65536 + 1000 }], cap).use, true);
    const cases: [Parameters<typeof judgeBitmap>, RegExp][] = [
      [[since, false, { name: 'b1', offered: true }, [], cap], /no parent snapshot/],
      [['52 3c/17', true, { name: 'b1', offered: true }, [], cap], /parent snapshot has no QEMU checkpoint/],
      [[since, true, { name: 'b2', offered: true }, [], cap], /belongs to another checkpoint than the parent snapshot's \("b1"\)/],
      [[since, true, { name: 'backup-vda', since: 'ck7', offered: true }, [], cap], /since checkpoint "ck7"\) belongs to another checkpoint/],
      [[since, true, { name: 'b1', offered: false }, undefined, cap], /not offered by the export: it is missing, or marked in use/],
      [[since, true, { name: 'b1', offered: false, missingOnNode: true }, undefined, cap], /no longer exists on the node/],
      [[since, true, { name: 'b1', offered: false, inconsistent: true }, undefined, cap], /marked inconsistent/],
      [[since, true, { name: 'b1', offered: false, busy: true }, undefined, cap], /busy/],
      [[since, true, { name: 'b1', offered: true, granularity: 131072 }, [], cap], /granularity 131072, the checkpoint was recorded with 65536/],
      [[since, true, { name: 'b1', offered: true }, [{ offset: 4096, length: 4096 }], cap], /finer than the recorded granularity 65536/],
    ];
    for (const [args, re] of cases) {
      const v = judgeBitmap(...args);
      assert.equal(v.use, false, re.source);
      assert.match(v.reason, re);
      assert.match(v.reason, /allocated extents|checkpoint "b1" starts here/);
    }
    assert.equal(judgeBitmap(since, true, { name: 'backup-vda', since: 'b1', offered: true }, [], cap).use, true);
  });
});

describe('NBD URIs', () => {
  it('parses the unix and tcp forms', () => {
    assert.deepEqual(parseNbdUri('nbd+unix:///vda?socket=/run/x.sock'), { kind: 'unix', socket: '/run/x.sock', exportName: 'vda', uri: 'nbd+unix:///vda?socket=/run/x.sock' });
    assert.deepEqual(parseNbdUri('nbd://10.0.0.5/my%20disk'), { kind: 'tcp', host: '10.0.0.5', port: 10809, exportName: 'my disk', uri: 'nbd://10.0.0.5/my%20disk' });
    assert.equal((parseNbdUri('nbd://[::1]:10900/') as { host: string; port: number }).host, '::1');
    assert.equal((parseNbdUri('nbd://h:10900/') as { port: number }).port, 10900);
  });

  it('refuses what it cannot use, saying what to write', () => {
    for (const [u, re] of [
      ['nbd+unix:///vda', /needs \?socket=PATH/],
      ['nbd+unix://host/vda?socket=/x', /three slashes/],
      ['nbds://h/vda', /TLS is not supported/],
      ['/dev/nbd0', /not an NBD URI/],
      ['file:///x', /unknown scheme file:/],
    ] as const) {
      assert.throws(() => parseNbdUri(u), (e: Error) => e instanceof UserError && re.test(e.message), u);
    }
  });
});
