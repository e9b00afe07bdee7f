/**
 * End to end on a real repository: `init --no-encryption` + `backup file IMG --vm NAME`
 * through the CLI, then `ebs push` (first + two incremental), `restore --to FILE`,
 * `restore --to s3://`, `recover ec2` (EBS route and import route), `backup --ebs-shadow`
 * through the CLI (test/support/aws-double/cloud-cli.ts = bin/pilotlight.js for the
 * compiled tree the test runs from), against the AWS
 * TEST DOUBLE and S3 (RGW when running, else the S3 test double). The EBS snapshot
 * chain held by the double is compared byte for byte with the restore of the same
 * pilotlight snapshot.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { EBS_BLOCK_SIZE } from '../../src/cloud/blocks.js';
import { listEbsMaps } from '../../src/cloud/ebs-map.js';
import { Repository } from '../../src/repo/repository.js';
import { FsStore } from '../../src/store/fs-store.js';
import { DOUBLE_CREDENTIALS, startAwsDouble, AwsDouble } from '../support/aws-double/server.js';
import { testS3, TestS3 } from '../support/aws-double/s3-endpoint.js';
import { pseudoRandom } from '../support/memory-disk-image.js';

const MiB = 1024 * 1024;
const CAP = 24 * MiB + 100 * 1024; // not a multiple of 512 KiB
const CLI = fileURLToPath(new URL('../support/aws-double/cloud-cli.js', import.meta.url));

function blocksDiffering(a: Buffer, b: Buffer): number {
  let n = 0;
  for (let off = 0; off < a.length; off += EBS_BLOCK_SIZE) {
    if (!a.subarray(off, off + EBS_BLOCK_SIZE).equals(b.subarray(off, off + EBS_BLOCK_SIZE))) n++;
  }
  return n;
}

describe('cloud paths on a real repository (CLI, AWS test double)', () => {
  let dir: string;
  let dbl: AwsDouble;
  let s3: TestS3;
  let env: NodeJS.ProcessEnv;
  const snaps: { id: string; bytes: Buffer }[] = [];
  const ebsIds: string[] = [];

  const cli = (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      execFile(process.execPath, [CLI, '--repo', path.join(dir, 'repo'), ...args], { env, maxBuffer: 64 * MiB }, (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      });
    });
  const cliJson = async (args: string[]) => {
    const r = await cli([...args, '--json']);
    assert.equal(r.code, 0, `pilotlight ${args.join(' ')} failed: ${r.stderr}`);
    return JSON.parse(r.stdout);
  };

  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-cloud-e2e-'));
    s3 = await testS3();
    dbl = await startAwsDouble({
      pollsToReady: 2,
      s3: { endpoint: s3.endpoint, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey, forcePathStyle: true },
    });
    env = {
      ...process.env,
      PILOTLIGHT_CACHE_DIR: path.join(dir, 'cache'),
      AWS_ENDPOINT_URL_EBS: dbl.endpoint,
      AWS_ENDPOINT_URL_EC2: dbl.endpoint,
      AWS_ENDPOINT_URL_S3: s3.endpoint,
      AWS_REGION: 'us-east-1',
      // The double accepts any signature; the S3 side (RGW) needs its keys.
      AWS_ACCESS_KEY_ID: s3.accessKeyId,
      AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
      AWS_PROFILE: '',
    };
    void DOUBLE_CREDENTIALS;
    await cliJson(['init', '--no-encryption']);

    // Three points in time of one disk image file.
    const img = path.join(dir, 'disk0.raw');
    const d1 = Buffer.alloc(CAP);
    pseudoRandom(3 * MiB, 1).copy(d1, 0);
    pseudoRandom(2 * MiB, 2).copy(d1, 10 * MiB);
    pseudoRandom(CAP - 23 * MiB - 10, 3).copy(d1, 23 * MiB + 10);
    const d2 = Buffer.from(d1);
    d2.write('changed', 5 * 1024);
    d2.write('x', 10 * MiB + 700 * 1024);
    d2.write('new data in a hole', 17 * MiB + 3);
    const d3 = Buffer.from(d2);
    d3.fill(0, 0, 512 * 1024);
    d3.write('tail', CAP - 4);
    for (const d of [d1, d2, d3]) {
      await fsp.writeFile(img, d);
      const b = await cliJson(['backup', 'file', img, '--vm', 'web 01', '--full']);
      snaps.push({ id: b.snapshot, bytes: d });
    }
  });
  after(async () => {
    const c = s3.client();
    const listed = await c.send(new ListObjectsV2Command({ Bucket: s3.bucket })).catch(() => null);
    for (const o of listed?.Contents ?? []) await c.send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: o.Key! })).catch(() => {});
    await dbl.close();
    await s3.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('ebs push: first + two incremental pushes equal the restores byte for byte', async () => {
    for (let i = 0; i < 3; i++) {
      const out = await cliJson(['ebs', 'push', snaps[i].id, '--vm', 'web 01']);
      const r = out.disks[0];
      ebsIds.push(r.ebsSnapshotId);
      const restored = path.join(dir, `restore-${i}.raw`);
      await cliJson(['restore', snaps[i].id, '--to', restored]);
      const file = await fsp.readFile(restored);
      assert.ok(file.equals(snaps[i].bytes), `restore of snapshot ${i} is the image`);
      assert.ok(dbl.snapshotImage(r.ebsSnapshotId, CAP).equals(file), `EBS chain ${i} equals the restore`);
      if (i === 0) {
        assert.equal(r.parentEbsSnapshotId, undefined);
        assert.equal(r.blocksSent, blocksDiffering(snaps[0].bytes, Buffer.alloc(CAP)));
      } else {
        assert.equal(r.parentEbsSnapshotId, ebsIds[i - 1]);
        assert.equal(r.baseSnapshot, snaps[i - 1].id);
        assert.equal(r.blocksSent, blocksDiffering(snaps[i - 1].bytes, snaps[i].bytes));
      }
      assert.equal(r.totalBlocks, Math.ceil(CAP / EBS_BLOCK_SIZE));
    }
    // 3 blocks for the second push, 2 for the third (see the changes above).
    const maps = await (async () => {
      const repo = await Repository.open(new FsStore(path.join(dir, 'repo')), {}, path.join(dir, 'cache-test'));
      try {
        return await listEbsMaps(repo.store, 'web 01', 0);
      } finally {
        await repo.close();
      }
    })();
    assert.deepEqual(maps.map((m) => m.blocksSent).slice(1), [3, 2]);
    assert.deepEqual(maps.map((m) => m.ebsSnapshotId), ebsIds);
    const list = await cliJson(['ebs', 'list', '--vm', 'web 01']);
    assert.equal(list.length, 3);
  });

  it('ebs verify reads the EBS snapshot back and finds a damaged block', async () => {
    const ok = await cliJson(['ebs', 'verify', snaps[2].id, '--vm', 'web 01']);
    assert.equal(ok.ok, true);
    assert.equal(ok.disks[0].blocksCompared, ok.disks[0].blocksListed);
    assert.ok(ok.disks[0].blocksListed >= ok.disks[0].blocksNonZero);
    // Damage block 20 (inside the second data region) of the snapshot that holds it.
    const snap = dbl.state.snapshots.get(ebsIds[0])!;
    const blk = snap.blocks.get(20)!;
    const saved = blk.data;
    blk.data = Buffer.from(saved);
    blk.data[7] ^= 1;
    try {
      // The double's stored checksum no longer matches its data either; compare against ours.
      blk.checksum = (await import('node:crypto')).createHash('sha256').update(blk.data).digest('base64');
      const bad = await cli(['ebs', 'verify', snaps[2].id, '--vm', 'web 01', '--json']);
      assert.equal(bad.code, 3);
      assert.deepEqual(JSON.parse(bad.stdout).disks[0].mismatched, [20]);
    } finally {
      blk.data = saved;
      blk.checksum = (await import('node:crypto')).createHash('sha256').update(saved).digest('base64');
    }
  });

  it('restore --to s3:// writes the same bytes as restore --to FILE', async () => {
    const key = 'restores/web01/disk0.raw';
    const out = await cliJson(['restore', snaps[2].id, '--to', `s3://${s3.bucket}/${key}`]);
    assert.equal(out.size, CAP);
    const got = await s3.client().send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }));
    const bytes = Buffer.from(await got.Body!.transformToByteArray());
    assert.ok(bytes.equals(snaps[2].bytes));
  });

  it('recover ec2 from the newest push: AMI + running instance', async () => {
    const out = await cliJson([
      'recover', 'ec2', '--vm', 'web 01', '--instance-type', 't3.medium', '--subnet', 'subnet-0abc', '--security-group', 'sg-01',
      '--tag', 'drill=yes', '--wait-interval', '0.01',
    ]);
    assert.equal(out.snapshot, snaps[2].id);
    assert.match(out.instanceId, /^i-/);
    assert.equal(out.state, 'running');
    const img = dbl.state.images.get(out.imageId)!;
    assert.equal(img.mappings[0].snapshotId, ebsIds[2]);
    assert.equal(img.bootMode, 'legacy-bios');
    const inst = dbl.state.instances.get(out.instanceId)!;
    assert.equal(inst.state, 'running');
    assert.ok(inst.tags.some((t) => t.key === 'drill' && t.value === 'yes'));
    // Without --json the instance id is printed alone.
    const plain = await cli(['recover', 'ec2', snaps[1].id, '--vm', 'web 01', '--name', 'second', '--instance-type', 't3.small', '--wait-interval', '0.01']);
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stdout.trim(), /^i-[0-9a-f]+$/);
  });

  it('recover ec2 --drill: console output, then the instance is terminated and the AMI deregistered', async () => {
    const refused = await cli(['recover', 'ec2', '--vm', 'web 01', '--drill', '--instance-type', 't3.small']);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /--drill needs --instance-type and --subnet/);
    const out = await cliJson(['recover', 'ec2', '--vm', 'web 01', '--name', 'drill', '--drill', '--instance-type', 't3.small', '--subnet', 'subnet-0150', '--wait-interval', '0.01']);
    assert.equal(out.drill.booted, true);
    assert.match(out.drill.console, /test double/);
    assert.match(out.drill.console, new RegExp(ebsIds[2]));
    assert.equal(out.drill.cleanedUp, true);
    assert.equal(dbl.state.instances.get(out.instanceId)!.state, 'terminated');
    assert.equal(dbl.state.images.has(out.imageId), false);
  });

  it('recover ec2 --via import: S3 + ImportSnapshot + AMI', async () => {
    const out = await cliJson(['recover', 'ec2', snaps[0].id, '--vm', 'web 01', '--via', 'import', '--staging', `s3://${s3.bucket}/stage`, '--name', 'via-import', '--wait-interval', '0.01']);
    assert.equal(out.imports.length, 1);
    assert.ok(dbl.snapshotImage(out.imports[0].snapshotId, CAP).equals(snaps[0].bytes), 'the imported snapshot is the image');
    assert.equal(dbl.state.images.get(out.imageId)!.mappings[0].snapshotId, out.imports[0].snapshotId);
  });

  it('backup --ebs-shadow pushes after the backup, on top of the newest push', async () => {
    const img = path.join(dir, 'disk0.raw');
    const d4 = Buffer.from(snaps[2].bytes);
    d4.write('shadow', 6 * MiB + 1);
    await fsp.writeFile(img, d4);
    const b = await cliJson(['backup', 'file', img, '--vm', 'web 01', '--full', '--ebs-shadow']);
    const pushed = b.ebs[0];
    assert.equal(pushed.snapshot, b.snapshot);
    assert.equal(pushed.parentEbsSnapshotId, ebsIds[2]);
    assert.equal(pushed.blocksSent, 1);
    assert.ok(dbl.snapshotImage(pushed.ebsSnapshotId, CAP).equals(d4));
    snaps.push({ id: b.snapshot, bytes: d4 });
    ebsIds.push(pushed.ebsSnapshotId);
  });

  it('a two-disk VM: both disks pushed, boot + data disk mapped', async () => {
    const a = path.join(dir, 'db-boot.raw');
    const b = path.join(dir, 'db-data.raw');
    const boot = Buffer.concat([pseudoRandom(MiB, 71), Buffer.alloc(3 * MiB)]);
    const data = Buffer.concat([Buffer.alloc(5 * MiB), pseudoRandom(MiB + 512, 72)]); // 6 MiB + 512 bytes
    await fsp.writeFile(a, boot);
    await fsp.writeFile(b, data);
    const snap = (await cliJson(['backup', 'file', a, b, '--vm', 'db'])).snapshot;
    const out = await cliJson(['ebs', 'push', 'latest', '--vm', 'db']);
    assert.equal(out.disks.length, 2);
    assert.deepEqual(out.disks.map((d: { diskIndex: number }) => d.diskIndex), [0, 1]);
    assert.ok(dbl.snapshotImage(out.disks[0].ebsSnapshotId, boot.length).equals(boot));
    assert.ok(dbl.snapshotImage(out.disks[1].ebsSnapshotId, data.length).equals(data));
    assert.equal(out.disks[1].blocksSent, 3);
    const rec = await cliJson(['recover', 'ec2', '--vm', 'db', '--instance-type', 'r6i.large', '--boot-mode', 'uefi', '--root-device', '/dev/xvda', '--wait-interval', '0.01']);
    assert.equal(rec.snapshot, snap);
    const img = dbl.state.images.get(rec.imageId)!;
    assert.deepEqual(img.mappings.map((m) => [m.deviceName, m.snapshotId]), [
      ['/dev/xvda', out.disks[0].ebsSnapshotId],
      ['/dev/sdf', out.disks[1].ebsSnapshotId],
    ]);
    assert.equal(img.bootMode, 'uefi');
    // --disk pushes one disk only; recovering that snapshot then says which disk is missing.
    data.write('more', 100);
    await fsp.writeFile(b, data);
    const snap2 = (await cliJson(['backup', 'file', a, b, '--vm', 'db'])).snapshot;
    const one = await cliJson(['ebs', 'push', snap2, '--vm', 'db', '--disk', '0']);
    assert.equal(one.disks.length, 1);
    assert.equal(one.disks[0].blocksSent, 0, 'the boot disk did not change');
    assert.equal(one.disks[0].unchanged, true);
    assert.equal(one.disks[0].ebsSnapshotId, out.disks[0].ebsSnapshotId, 'no new EBS snapshot for an unchanged disk');
    assert.equal(one.disks[0].parentEbsSnapshotId, out.disks[0].ebsSnapshotId);
    const missing = await cli(['recover', 'ec2', snap2, '--vm', 'db', '--name', 'x']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, new RegExp(`snapshot ${snap2} disk 1 was not pushed to EBS`));
    // Without a snapshot argument, the newest fully pushed one (snap) is used.
    const auto = await cliJson(['recover', 'ec2', '--vm', 'db', '--name', 'auto']);
    assert.equal(auto.snapshot, snap);
  });

  it('clear errors: missing snapshot, missing permission', async () => {
    const missing = await cli(['ebs', 'push', '20990101T000000Z-deadbeef', '--vm', 'web 01']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /no snapshot 20990101T000000Z-deadbeef/);

    // No credentials anywhere (no env keys, an empty HOME without ~/.aws).
    const home = path.join(dir, 'empty-home');
    await fsp.mkdir(home, { recursive: true });
    await cliJson(['ebs', 'push', snaps[0].id, '--vm', 'web 01']); // pushed already when the whole file runs
    const bare = { ...env, HOME: home, AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '', AWS_PROFILE: '', AWS_EC2_METADATA_DISABLED: 'true' };
    const nocreds = await new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile(process.execPath, [CLI, '--repo', path.join(dir, 'repo'), 'ebs', 'push', snaps[0].id, '--vm', 'web 01', '--full'], { env: bare }, (err, _o, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr }),
      ),
    );
    assert.equal(nocreds.code, 0, 'already pushed: nothing to send, no credentials needed');
    const d5 = Buffer.from(snaps[snaps.length - 1].bytes);
    d5.write('nocreds', 9 * MiB);
    await fsp.writeFile(path.join(dir, 'disk0.raw'), d5);
    const b5 = await cliJson(['backup', 'file', path.join(dir, 'disk0.raw'), '--vm', 'web 01']);
    const nocreds2 = await new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile(process.execPath, [CLI, '--repo', path.join(dir, 'repo'), 'ebs', 'push', b5.snapshot, '--vm', 'web 01'], { env: bare }, (err, _o, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr }),
      ),
    );
    assert.equal(nocreds2.code, 1);
    assert.match(nocreds2.stderr, /no AWS credentials for ebs:StartSnapshot/);

    dbl.state.options.deny = ['ec2:RegisterImage'];
    try {
      const denied = await cli(['recover', 'ec2', '--vm', 'web 01', '--name', 'denied', '--json']);
      assert.equal(denied.code, 1);
      assert.match(denied.stderr, /ec2:RegisterImage/);
      assert.match(denied.stderr, /docs\/AWS\.md/);
      assert.equal(JSON.parse(denied.stdout).error, 'CLOUD_ACCESS_DENIED');
    } finally {
      dbl.state.options.deny = [];
    }
  });
});
