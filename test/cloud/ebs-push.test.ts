/**
 * EBS push against the AWS TEST DOUBLE (test/support/aws-double), with the real
 * @aws-sdk/client-ebs. Images are MemoryDiskImage test doubles here; repo-e2e.test.ts
 * runs the same checks on a real repository.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PutSnapshotBlockCommand, CompleteSnapshotCommand, StartSnapshotCommand, ListChangedBlocksCommand, ListSnapshotBlocksCommand, GetSnapshotBlockCommand } from '@aws-sdk/client-ebs';
import { EBS_BLOCK_SIZE } from '../../src/cloud/blocks.js';
import { ebsPush, PushSnapshotRef, pushImageToEbs } from '../../src/cloud/ebs-push.js';
import { listEbsMaps, getEbsMap, encodeSegment, decodeSegment, newestEbsMapBefore, putEbsMap, EbsMapRecord } from '../../src/cloud/ebs-map.js';
import { CloudError } from '../../src/cloud/errors.js';
import { FsStore } from '../../src/store/fs-store.js';
import { startAwsDouble, AwsDouble } from '../support/aws-double/server.js';
import { MemoryDiskImage, pseudoRandom } from '../support/memory-disk-image.js';

const MiB = 1024 * 1024;
// Not a multiple of 512 KiB: the last block is padded with zeros.
const CAPACITY = 24 * MiB + 100 * 1024;

/** A sparse disk: data in a few regions, zeros elsewhere. */
function baseDisk(): Buffer {
  const b = Buffer.alloc(CAPACITY);
  pseudoRandom(3 * MiB, 1).copy(b, 0);
  pseudoRandom(2 * MiB, 2).copy(b, 10 * MiB);
  pseudoRandom(CAPACITY - 23 * MiB - 10, 3).copy(b, 23 * MiB + 10); // reaches the end
  return b;
}

/** Blocks that hold a byte differing between a and b. */
function blocksDiffering(a: Buffer, b: Buffer): number {
  let n = 0;
  for (let off = 0; off < a.length; off += EBS_BLOCK_SIZE) {
    if (!a.subarray(off, off + EBS_BLOCK_SIZE).equals(b.subarray(off, off + EBS_BLOCK_SIZE))) n++;
  }
  return n;
}

function nonZeroBlocks(a: Buffer): number {
  return blocksDiffering(a, Buffer.alloc(a.length));
}

class Repo {
  images = new Map<string, MemoryDiskImage>();
  snaps = new Map<string, PushSnapshotRef>();
  add(id: string, time: string, bytes: Buffer): PushSnapshotRef {
    this.images.set(id, new MemoryDiskImage(bytes));
    const s = { id, vm: 'web 01', time, disks: [{ name: 'scsi0:0', capacity: bytes.length }] };
    this.snaps.set(id, s);
    return s;
  }
  openImage = async (s: PushSnapshotRef | string) => this.images.get(typeof s === 'string' ? s : s.id)!;
}

describe('ebs push (AWS test double)', () => {
  let dbl: AwsDouble;
  let dir: string;
  before(async () => {
    dbl = await startAwsDouble({ putRatePerSnapshot: 1000 });
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-ebs-'));
  });
  after(async () => {
    await dbl.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('first push and two incremental pushes reassemble byte for byte; blocks sent follow the change', async () => {
    const store = new FsStore(path.join(dir, 'chain'));
    const repo = new Repo();
    const ebs = dbl.ebsClient();
    const d1 = baseDisk();
    const d2 = Buffer.from(d1);
    d2.write('changed', 5 * 1024); // block 0
    d2.write('x', 10 * MiB + 700 * 1024); // inside data region 2
    d2.write('new data in a hole', 17 * MiB + 3); // was zero
    const d3 = Buffer.from(d2);
    d3.fill(0, 0, 512 * 1024); // a block becomes zeros: must be written as zeros
    d3.write('tail', CAPACITY - 4); // in the padded last block

    const s1 = repo.add('s1', '2026-01-01T00:00:00.000Z', d1);
    const s2 = repo.add('s2', '2026-01-01T00:15:00.000Z', d2);
    const s3 = repo.add('s3', '2026-01-01T00:30:00.000Z', d3);

    const r1 = await ebsPush({ ebs, store, snapshot: s1, diskIndex: 0, openImage: repo.openImage });
    assert.equal(r1.parentEbsSnapshotId, undefined);
    assert.equal(r1.blocksSent, nonZeroBlocks(d1));
    assert.equal(r1.totalBlocks, Math.ceil(CAPACITY / EBS_BLOCK_SIZE));
    assert.ok(dbl.snapshotImage(r1.ebsSnapshotId, CAPACITY).equals(d1), 'first push reassembles to the image');
    assert.equal(dbl.state.counters.unsignedPayload, r1.blocksSent, 'block bodies are sent unsigned (the EBS model says unsignedPayload)');

    const r2 = await ebsPush({ ebs, store, snapshot: s2, diskIndex: 0, openImage: repo.openImage });
    assert.equal(r2.parentEbsSnapshotId, r1.ebsSnapshotId);
    assert.equal(r2.baseSnapshot, 's1');
    assert.equal(r2.blocksSent, 3);
    assert.equal(r2.blocksSent, blocksDiffering(d1, d2));
    assert.equal(r2.bytesSent, 3 * EBS_BLOCK_SIZE);
    assert.ok(dbl.snapshotImage(r2.ebsSnapshotId, CAPACITY).equals(d2), 'second push reassembles');

    const r3 = await ebsPush({ ebs, store, snapshot: s3, diskIndex: 0, openImage: repo.openImage });
    assert.equal(r3.parentEbsSnapshotId, r2.ebsSnapshotId);
    assert.equal(r3.blocksSent, blocksDiffering(d2, d3));
    assert.equal(r3.blocksSent, 2);
    assert.ok(dbl.snapshotImage(r3.ebsSnapshotId, CAPACITY).equals(d3), 'third push reassembles');
    // Beyond the capacity the volume reads zeros.
    const vol = dbl.snapshotImage(r3.ebsSnapshotId, CAPACITY + 4 * MiB);
    assert.ok(vol.subarray(CAPACITY).equals(Buffer.alloc(4 * MiB)));

    // The double's own ListChangedBlocks agrees with what was sent.
    const changed = await ebs.send(new ListChangedBlocksCommand({ FirstSnapshotId: r2.ebsSnapshotId, SecondSnapshotId: r3.ebsSnapshotId }));
    assert.equal(changed.ChangedBlocks?.length, 2);
    assert.equal(changed.BlockSize, EBS_BLOCK_SIZE);

    // A newer snapshot with the same content: no new EBS snapshot, the previous one is recorded.
    const s4 = repo.add('s4', '2026-01-01T00:45:00.000Z', Buffer.from(d3));
    const starts = dbl.state.counters.StartSnapshot;
    const r4 = await ebsPush({ ebs, store, snapshot: s4, diskIndex: 0, openImage: repo.openImage });
    assert.equal(r4.unchanged, true);
    assert.equal(r4.ebsSnapshotId, r3.ebsSnapshotId);
    assert.equal(dbl.state.counters.StartSnapshot, starts, 'no StartSnapshot');
    assert.equal((await getEbsMap(store, 'web 01', 0, 's4'))?.ebsSnapshotId, r3.ebsSnapshotId);
    const maps = await listEbsMaps(store, 'web 01', 0);
    assert.deepEqual(maps.map((m) => [m.snapshot, m.ebsSnapshotId, m.parentEbsSnapshotId]), [
      ['s1', r1.ebsSnapshotId, undefined],
      ['s2', r2.ebsSnapshotId, r1.ebsSnapshotId],
      ['s3', r3.ebsSnapshotId, r2.ebsSnapshotId],
      ['s4', r3.ebsSnapshotId, undefined],
    ]);
    // Pushing the same snapshot again sends nothing.
    const again = await ebsPush({ ebs, store, snapshot: s3, diskIndex: 0, openImage: repo.openImage });
    assert.equal(again.alreadyPushed, true);
    assert.equal(again.ebsSnapshotId, r3.ebsSnapshotId);
    assert.equal(again.blocksSent, 0);
  });

  it('reads back through ListSnapshotBlocks + GetSnapshotBlock with checksums', async () => {
    const ebs = dbl.ebsClient();
    const d = baseDisk();
    const r = await pushImageToEbs({ ebs, image: new MemoryDiskImage(d) });
    const out = Buffer.alloc(CAPACITY);
    let token: string | undefined;
    do {
      const page = await ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: r.ebsSnapshotId, MaxResults: 100, NextToken: token }));
      for (const b of page.Blocks ?? []) {
        const got = await ebs.send(new GetSnapshotBlockCommand({ SnapshotId: r.ebsSnapshotId, BlockIndex: b.BlockIndex!, BlockToken: b.BlockToken! }));
        const data = Buffer.from(await got.BlockData!.transformToByteArray());
        assert.equal(got.Checksum, createHash('sha256').update(data).digest('base64'));
        const off = b.BlockIndex! * EBS_BLOCK_SIZE;
        data.copy(out, off, 0, Math.min(EBS_BLOCK_SIZE, CAPACITY - off));
      }
      token = page.NextToken;
    } while (token);
    assert.ok(out.equals(d));
  });

  it('the double rejects a wrong checksum, out-of-range blocks, a wrong changed-blocks count and writes after completion', async () => {
    const ebs = dbl.ebsClient();
    const { SnapshotId } = await ebs.send(new StartSnapshotCommand({ VolumeSize: 1 }));
    const data = Buffer.alloc(EBS_BLOCK_SIZE, 7);
    const good = createHash('sha256').update(data).digest('base64');
    const bad = createHash('sha256').update('other').digest('base64');
    const putBlock = (i: number, checksum: string, body = data) =>
      ebs.send(new PutSnapshotBlockCommand({ SnapshotId, BlockIndex: i, BlockData: body, DataLength: body.length, Checksum: checksum, ChecksumAlgorithm: 'SHA256' }));
    await assert.rejects(putBlock(0, bad), (e: Error) => e.name === 'ValidationException' && /checksum/i.test(e.message));
    await assert.rejects(putBlock(2048, good), (e: Error) => e.name === 'ValidationException' && (e as { Reason?: string }).Reason === 'INVALID_BLOCK');
    await assert.rejects(putBlock(1, createHash('sha256').update(data.subarray(1)).digest('base64'), data.subarray(1)), /Data length/);
    await putBlock(2047, good);
    await assert.rejects(ebs.send(new CompleteSnapshotCommand({ SnapshotId, ChangedBlocksCount: 2 })), /ChangedBlocksCount 2/);
    const done = await ebs.send(new CompleteSnapshotCommand({ SnapshotId, ChangedBlocksCount: 1 }));
    assert.equal(done.Status, 'completed');
    await assert.rejects(putBlock(3, good), /not in the pending state/);
    assert.ok(dbl.state.counters.checksumRejected >= 1);
  });

  it('resumes after an interrupted push from the newest completed push', async () => {
    const d = await startAwsDouble({ faults: {} });
    try {
      const store = new FsStore(path.join(dir, 'resume'));
      const repo = new Repo();
      const ebs = d.ebsClient();
      const d1 = baseDisk();
      const d2 = Buffer.from(d1);
      for (let k = 0; k < 10; k++) d2.write('change', k * 2 * MiB + 77);
      const d3 = Buffer.from(d2);
      d3.write('later', 20 * MiB);
      const s1 = repo.add('s1', '2026-01-02T00:00:00.000Z', d1);
      const s2 = repo.add('s2', '2026-01-02T00:15:00.000Z', d2);
      const s3 = repo.add('s3', '2026-01-02T00:30:00.000Z', d3);
      const r1 = await ebsPush({ ebs, store, snapshot: s1, diskIndex: 0, openImage: repo.openImage });

      // An outage after 4 more accepted blocks interrupts the push of s2.
      d.state.options.faults = { failPutsAfter: d.state.counters.PutSnapshotBlockOk + 4 };
      await assert.rejects(
        ebsPush({ ebs, store, snapshot: s2, diskIndex: 0, openImage: repo.openImage, retry: { attempts: 2, baseDelayMs: 1 }, concurrency: 2 }),
        (e: Error & { pendingSnapshotId?: string }) => /left pending/.test(e.message) && Boolean(e.pendingSnapshotId),
      );
      assert.equal(await getEbsMap(store, 'web 01', 0, 's2'), null, 'an interrupted push records nothing');
      const pending = [...d.state.snapshots.values()].filter((s) => s.status === 'pending');
      assert.equal(pending.length, 1);

      // The outage is over; s3 comes next (s2 is never retried): it pushes on top of s1.
      d.state.options.faults = {};
      const r3 = await ebsPush({ ebs, store, snapshot: s3, diskIndex: 0, openImage: repo.openImage });
      assert.equal(r3.parentEbsSnapshotId, r1.ebsSnapshotId);
      assert.equal(r3.baseSnapshot, 's1');
      assert.equal(r3.blocksSent, blocksDiffering(d1, d3));
      assert.ok(d.snapshotImage(r3.ebsSnapshotId, CAPACITY).equals(d3));

      // Retrying s2 itself also works, again from s1 (the newest completed push older than s2).
      const r2 = await ebsPush({ ebs, store, snapshot: s2, diskIndex: 0, openImage: repo.openImage });
      assert.equal(r2.parentEbsSnapshotId, r1.ebsSnapshotId);
      assert.ok(d.snapshotImage(r2.ebsSnapshotId, CAPACITY).equals(d2));
    } finally {
      await d.close();
    }
  });

  it('encrypts with a KMS key; children of an encrypted parent stay encrypted', async () => {
    const ebs = dbl.ebsClient();
    const d1 = baseDisk();
    const d2 = Buffer.from(d1);
    d2.write('enc', 100);
    const key = 'arn:aws:kms:us-east-1:123456789012:key/1111-2222';
    const a = await pushImageToEbs({ ebs, image: new MemoryDiskImage(d1), kmsKeyArn: key });
    const b = await pushImageToEbs({ ebs, image: new MemoryDiskImage(d2), parent: { image: new MemoryDiskImage(d1), ebsSnapshotId: a.ebsSnapshotId } });
    assert.equal(dbl.state.snapshots.get(a.ebsSnapshotId)!.kmsKeyArn, key);
    assert.equal(dbl.state.snapshots.get(b.ebsSnapshotId)!.encrypted, true);
    assert.equal(b.blocksSent, 1);
    assert.ok(dbl.snapshotImage(b.ebsSnapshotId, CAPACITY).equals(d2));
  });

  it('retries throttling and 5xx answers; a retried StartSnapshot reuses its client token', async () => {
    const d = await startAwsDouble({ faults: { throttleEvery: 4, serverErrorEvery: 7, loseNextStartResponse: true } });
    try {
      const disk = baseDisk();
      const r = await pushImageToEbs({ ebs: d.ebsClient(), image: new MemoryDiskImage(disk), retry: { baseDelayMs: 1, maxDelayMs: 5 } });
      assert.ok(r.retries > 0 && r.throttled > 0, `retries ${r.retries}, throttled ${r.throttled}`);
      assert.ok(d.snapshotImage(r.ebsSnapshotId, CAPACITY).equals(disk));
      assert.equal(d.state.counters.StartSnapshot, 2, 'StartSnapshot was retried');
      assert.equal(d.state.snapshots.size, 1, 'the retry got the same snapshot back, none left pending');
    } finally {
      await d.close();
    }
  });

  it('stays under the configured PutSnapshotBlock rate', async () => {
    // the double throttles above 60/s: twice the rate asked for, so timers bunched by a
    // loaded machine cannot trip it; the duration check below is what proves the pacing
    const d = await startAwsDouble({ putRatePerSnapshot: 60 });
    try {
      const disk = Buffer.alloc(40 * EBS_BLOCK_SIZE, 1);
      const r = await pushImageToEbs({ ebs: d.ebsClient(), image: new MemoryDiskImage(disk), ratePerSecond: 30, concurrency: 8 });
      assert.equal(r.blocksSent, 40);
      assert.equal(d.state.counters.throttled, 0, 'the double never had to throttle');
      assert.ok(r.durationMs >= 900, `40 blocks at 30/s took ${r.durationMs} ms`);
      d.state.options.putLatencyMs = 20;
      const fast = await pushImageToEbs({ ebs: d.ebsClient(), image: new MemoryDiskImage(Buffer.alloc(40 * EBS_BLOCK_SIZE, 2)), ratePerSecond: 1e6, concurrency: 8 });
      assert.equal(fast.blocksSent, 40);
      assert.ok(d.state.counters.maxInFlightPuts > 1 && d.state.counters.maxInFlightPuts <= 8, `in flight at once: ${d.state.counters.maxInFlightPuts}`);
    } finally {
      await d.close();
    }
  });

  it('explains missing permissions and quota limits', async () => {
    const d = await startAwsDouble({ deny: ['ebs:PutSnapshotBlock'], maxPendingSnapshots: 1 });
    try {
      const image = new MemoryDiskImage(baseDisk());
      await assert.rejects(pushImageToEbs({ ebs: d.ebsClient(), image }), (e: Error) => {
        assert.ok(e instanceof CloudError);
        assert.equal(e.kind, 'access-denied');
        assert.match(e.message, /ebs:PutSnapshotBlock/);
        assert.match(e.message, /docs\/AWS\.md/);
        return true;
      });
      // One snapshot is now pending: the quota of 1 is reached.
      await assert.rejects(pushImageToEbs({ ebs: d.ebsClient(), image }), (e: Error) => e instanceof CloudError && e.kind === 'quota' && /Service Quotas/.test(e.message));
    } finally {
      await d.close();
    }
  });

  it('finds the parent push without reading every record (time-ordered snapshot ids)', async () => {
    const store = new FsStore(path.join(dir, 'many'));
    const rec = (i: number): EbsMapRecord => {
      const t = new Date(Date.UTC(2026, 0, 1, 0, 15 * i));
      const id = `${t.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}-${(0xa0000000 + i).toString(16)}`;
      return {
        format: 'pilotlight-ebs-map', version: 1, vm: 'db', diskIndex: 0, diskName: 'd', snapshot: id, snapshotTime: t.toISOString(),
        capacity: i === 38 ? 1 : 100, ebsSnapshotId: `snap-${i}`, volumeSizeGiB: 1, blockSize: EBS_BLOCK_SIZE, blocksSent: 1, bytesSent: 1, completedAt: t.toISOString(),
      };
    };
    for (let i = 0; i < 60; i++) await putEbsMap(store, rec(i));
    let gets = 0;
    const counting = Object.assign(Object.create(store), { get: (n: string, r?: never) => (gets++, store.get(n, r)) }) as FsStore;
    const target = rec(40);
    // 38 has another capacity: skipped; 39 is the parent. 40 itself never counts.
    const p = await newestEbsMapBefore(counting, 'db', 0, { id: target.snapshot, time: target.snapshotTime }, { capacity: 100 });
    assert.equal(p?.ebsSnapshotId, 'snap-39');
    assert.ok(gets <= 2, `read ${gets} records`);
    const none = await newestEbsMapBefore(counting, 'db', 0, { id: rec(0).snapshot, time: rec(0).snapshotTime });
    assert.equal(none, null);
  });

  it('encodes any VM name into blob name segments reversibly', () => {
    for (const s of ['web 01', 'a_b', 'ünï/cødé', '.hidden', 'plain-name.1']) {
      const enc = encodeSegment(s);
      assert.match(enc, /^[A-Za-z0-9._-]+$/);
      assert.ok(!enc.startsWith('.'));
      assert.equal(decodeSegment(enc), s);
    }
  });
});
