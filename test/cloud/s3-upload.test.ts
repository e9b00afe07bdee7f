/**
 * Restore to S3 (multipart, holes as zeros, Content-MD5 per part) against the real
 * Ceph RGW when scripts/rgw.sh runs it, else the S3 test double.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DeleteObjectCommand, GetObjectCommand, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { choosePartSize, uploadImageToS3 } from '../../src/cloud/s3-image-upload.js';
import type { DiskChunk, DiskImage } from '../../src/engine/disk-image.js';
import { testS3, TestS3 } from '../support/aws-double/s3-endpoint.js';
import { MemoryDiskImage, pseudoRandom } from '../support/memory-disk-image.js';

const MiB = 1024 * 1024;

describe('restore to S3 (multipart)', () => {
  let s3: TestS3;
  const keys: string[] = [];
  before(async () => {
    s3 = await testS3();
    process.stderr.write(`# S3 endpoint for these tests: ${s3.kind} ${s3.endpoint}\n`);
  });
  after(async () => {
    const c = s3.client();
    for (const Key of keys) await c.send(new DeleteObjectCommand({ Bucket: s3.bucket, Key })).catch(() => {});
    await s3.close();
  });

  it('streams the image into one object byte for byte, holes as zeros, bounded parts', async () => {
    const cap = 17 * MiB + 12345; // odd size: the last chunk and part are short
    const disk = Buffer.alloc(cap);
    pseudoRandom(2 * MiB, 11).copy(disk, MiB);
    pseudoRandom(MiB, 12).copy(disk, 9 * MiB + 7);
    disk.write('end', cap - 3);
    const image = new MemoryDiskImage(disk);
    const key = 'restore/vm1/disk0.raw';
    keys.push(key);
    const seen: number[] = [];
    const r = await uploadImageToS3({ s3: s3.client(), bucket: s3.bucket, key, image, partSize: 5 * MiB, concurrency: 2, onProgress: (d) => seen.push(d) });
    assert.equal(r.size, cap);
    assert.equal(r.partSize, 5 * MiB);
    assert.equal(r.parts, 4);
    assert.ok(r.zeroBytes > 10 * MiB, `holes: ${r.zeroBytes}`);
    assert.equal(seen[seen.length - 1], cap);
    const got = await s3.client().send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }));
    const bytes = Buffer.from(await got.Body!.transformToByteArray());
    assert.equal(bytes.length, cap);
    assert.ok(bytes.equals(disk), 'the object is the image');
  });

  it('aborts the multipart upload when reading the image fails', async () => {
    const key = 'restore/broken.raw';
    const good = new MemoryDiskImage(pseudoRandom(12 * MiB, 5));
    const broken: DiskImage = {
      capacity: good.capacity,
      chunkSize: good.chunkSize,
      changedChunks: (b) => good.changedChunks(b),
      async *chunks(): AsyncIterable<DiskChunk> {
        for await (const c of good.chunks()) {
          if (c.index === 150) throw new Error('chunk 150 failed verification (injected)');
          yield c;
        }
      },
    };
    await assert.rejects(uploadImageToS3({ s3: s3.client(), bucket: s3.bucket, key, image: broken, partSize: 5 * MiB }), /chunk 150/);
    const ups = await s3.client().send(new ListMultipartUploadsCommand({ Bucket: s3.bucket }));
    assert.equal((ups.Uploads ?? []).filter((u) => u.Key === key).length, 0, 'no upload left behind');
  });

  it('chooses parts so that any disk fits in 10,000 parts', () => {
    assert.equal(choosePartSize(40 * 1024 * MiB), 16 * MiB);
    assert.equal(choosePartSize(16 * 1024 * 1024 * MiB), 1678 * MiB); // 16 TiB
    assert.ok(Math.ceil((16 * 1024 * 1024 * MiB) / choosePartSize(16 * 1024 * 1024 * MiB)) <= 10_000);
    assert.equal(choosePartSize(MiB, 1), 5 * MiB);
  });
});
