/**
 * EC2 recovery against the AWS TEST DOUBLE with the real @aws-sdk/client-ec2:
 * RegisterImage from pushed EBS snapshots, RunInstances, wait for running; the import
 * route (S3 object -> ImportSnapshot, read from RGW or the S3 double); clear errors.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import { EBS_BLOCK_SIZE } from '../../src/cloud/blocks.js';
import { pushImageToEbs } from '../../src/cloud/ebs-push.js';
import { importSnapshotFromS3, recoverEc2, registerImage } from '../../src/cloud/ec2-recover.js';
import { CloudError } from '../../src/cloud/errors.js';
import { uploadImageToS3 } from '../../src/cloud/s3-image-upload.js';
import { startAwsDouble, AwsDouble } from '../support/aws-double/server.js';
import { testS3, TestS3 } from '../support/aws-double/s3-endpoint.js';
import { MemoryDiskImage, pseudoRandom } from '../support/memory-disk-image.js';

const MiB = 1024 * 1024;
const fast = { intervalMs: 5, timeoutMs: 10_000 };

describe('recover ec2 (AWS test double)', () => {
  let s3: TestS3;
  let dbl: AwsDouble;
  before(async () => {
    s3 = await testS3();
    dbl = await startAwsDouble({
      pollsToReady: 3,
      s3: { endpoint: s3.endpoint, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey, forcePathStyle: true },
    });
  });
  after(async () => {
    await dbl.close();
    await s3.close();
  });

  it('registers boot + data disks and runs the instance', async () => {
    const boot = new MemoryDiskImage(pseudoRandom(3 * MiB, 21));
    const data = new MemoryDiskImage(Buffer.concat([Buffer.alloc(2 * MiB), pseudoRandom(MiB, 22)]));
    const ebs = dbl.ebsClient();
    const b = await pushImageToEbs({ ebs, image: boot });
    const d = await pushImageToEbs({ ebs, image: data });
    const stages: string[] = [];
    const r = await recoverEc2({
      ec2: dbl.ec2Client(),
      disks: [{ snapshotId: b.ebsSnapshotId, volumeSizeGiB: 8 }, { snapshotId: d.ebsSnapshotId }],
      image: { name: 'pilotlight-web01-test', bootMode: 'uefi', architecture: 'x86_64' },
      launch: { instanceType: 't3.medium', subnetId: 'subnet-0abc', securityGroupIds: ['sg-01', 'sg-02'], keyName: 'ops', tags: { Name: 'web01 drill', env: 'dr' } },
      onStage: (s) => stages.push(s),
      ...fast,
    });
    assert.deepEqual(stages, ['registered', 'image-available', 'launched', 'running']);
    assert.match(r.instanceId!, /^i-/);
    assert.equal(r.state, 'running');
    const img = dbl.state.images.get(r.imageId)!;
    assert.equal(img.state, 'available');
    assert.equal(img.rootDeviceName, '/dev/sda1');
    assert.equal(img.bootMode, 'uefi');
    assert.equal(img.enaSupport, true);
    assert.equal(img.sriovNetSupport, 'simple');
    assert.equal(img.virtualizationType, 'hvm');
    assert.deepEqual(
      img.mappings.map((m) => [m.deviceName, m.snapshotId, m.volumeSize, m.volumeType]),
      [
        ['/dev/sda1', b.ebsSnapshotId, 8, 'gp3'],
        ['/dev/sdf', d.ebsSnapshotId, 1, 'gp3'],
      ],
    );
    const inst = dbl.state.instances.get(r.instanceId!)!;
    assert.equal(inst.instanceType, 't3.medium');
    assert.equal(inst.subnetId, 'subnet-0abc');
    assert.deepEqual(inst.securityGroupIds, ['sg-01', 'sg-02']);
    assert.equal(inst.keyName, 'ops');
    assert.deepEqual(inst.tags, [{ key: 'Name', value: 'web01 drill' }, { key: 'env', value: 'dr' }]);
  });

  it('a re-run reuses the AMI of the same name and snapshots; other snapshots are refused', async () => {
    const s1 = await pushImageToEbs({ ebs: dbl.ebsClient(), image: new MemoryDiskImage(Buffer.alloc(EBS_BLOCK_SIZE, 5)) });
    const s2 = await pushImageToEbs({ ebs: dbl.ebsClient(), image: new MemoryDiskImage(Buffer.alloc(EBS_BLOCK_SIZE, 6)) });
    const a = await registerImage(dbl.ec2Client(), [{ snapshotId: s1.ebsSnapshotId }], { name: 'rerun' });
    const b = await registerImage(dbl.ec2Client(), [{ snapshotId: s1.ebsSnapshotId }], { name: 'rerun' });
    assert.equal(b, a);
    await assert.rejects(registerImage(dbl.ec2Client(), [{ snapshotId: s2.ebsSnapshotId }], { name: 'rerun' }), /already exists .* other snapshots/);
  });

  it('arm64 images default to UEFI boot', async () => {
    const s = await pushImageToEbs({ ebs: dbl.ebsClient(), image: new MemoryDiskImage(Buffer.alloc(EBS_BLOCK_SIZE, 3)) });
    const id = await registerImage(dbl.ec2Client(), [{ snapshotId: s.ebsSnapshotId }], { name: 'arm', architecture: 'arm64' });
    assert.equal(dbl.state.images.get(id)!.bootMode, 'uefi');
    assert.equal(dbl.state.images.get(id)!.architecture, 'arm64');
  });

  it('the import route: S3 object -> ImportSnapshot -> same bytes -> AMI', async () => {
    const disk = Buffer.alloc(6 * MiB + 4096);
    pseudoRandom(MiB, 31).copy(disk, 2 * MiB);
    disk.write('last', disk.length - 4);
    const key = 'import/vm/disk0.raw';
    await uploadImageToS3({ s3: s3.client(), bucket: s3.bucket, key, image: new MemoryDiskImage(disk), partSize: 5 * MiB });
    try {
      const imp = await importSnapshotFromS3(dbl.ec2Client(), { bucket: s3.bucket, key, ...fast });
      assert.match(imp.importTaskId, /^import-snap-/);
      assert.ok(dbl.snapshotImage(imp.snapshotId, disk.length).equals(disk), 'the imported snapshot holds the image');
      const r = await recoverEc2({ ec2: dbl.ec2Client(), disks: [{ snapshotId: imp.snapshotId }], image: { name: 'imported-test' }, ...fast });
      assert.equal(r.instanceId, undefined);
      assert.equal(dbl.state.images.get(r.imageId)!.mappings[0].snapshotId, imp.snapshotId);
    } finally {
      await s3.client().send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: key }));
    }
  });

  it('an import of a missing object fails with the reason', async () => {
    await assert.rejects(importSnapshotFromS3(dbl.ec2Client(), { bucket: s3.bucket, key: 'no/such/object.raw', ...fast }), (e: Error) => {
      assert.ok(e instanceof CloudError);
      assert.match(e.message, /vmimport/);
      return true;
    });
  });

  it('explains a missing snapshot, missing permissions and quota limits', async () => {
    await assert.rejects(registerImage(dbl.ec2Client(), [{ snapshotId: 'snap-0000000000000dead' }], { name: 'x' }), (e: Error) => {
      assert.ok(e instanceof CloudError);
      assert.equal(e.kind, 'not-found');
      assert.match(e.message, /snap-0000000000000dead/);
      return true;
    });
    const denied = await startAwsDouble({ deny: ['ec2:RunInstances'], pollsToReady: 1 });
    try {
      const s = await pushImageToEbs({ ebs: denied.ebsClient(), image: new MemoryDiskImage(Buffer.alloc(EBS_BLOCK_SIZE, 1)) });
      await assert.rejects(
        recoverEc2({ ec2: denied.ec2Client(), disks: [{ snapshotId: s.ebsSnapshotId }], image: { name: 'n' }, launch: { instanceType: 't3.small' }, ...fast }),
        (e: Error) => e instanceof CloudError && e.kind === 'access-denied' && /ec2:RunInstances/.test(e.message) && /UnauthorizedOperation/.test(e.message),
      );
    } finally {
      await denied.close();
    }
    const quota = await startAwsDouble({ maxInstances: 0, pollsToReady: 1 });
    try {
      const s = await pushImageToEbs({ ebs: quota.ebsClient(), image: new MemoryDiskImage(Buffer.alloc(EBS_BLOCK_SIZE, 1)) });
      await assert.rejects(
        recoverEc2({ ec2: quota.ec2Client(), disks: [{ snapshotId: s.ebsSnapshotId }], image: { name: 'n' }, launch: { instanceType: 't3.small' }, ...fast }),
        (e: Error) => e instanceof CloudError && e.kind === 'quota' && /VcpuLimitExceeded/.test(e.message),
      );
    } finally {
      await quota.close();
    }
  });
});
