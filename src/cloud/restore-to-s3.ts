/**
 * `restore SNAP --to s3://BUCKET/KEY`: the raw image of one disk, streamed into one S3
 * object (multipart, holes as zeros). Used by `restore` and by `recover ec2 --via import`.
 */
import type { ProgressSink } from '../engine/backup.js';
import { openDiskImage } from '../engine/snapshot-image.js';
import { WorkerPool } from '../engine/worker-pool.js';
import type { Repository } from '../repo/repository.js';
import type { SnapshotRecord } from '../snapshot/snapshot-record.js';
import { s3Client } from './aws-clients.js';
import type { UploadImageResult } from './s3-image-upload.js';

export interface RestoreToS3Options {
  s3Endpoint?: string;
  progress?: ProgressSink;
  partSize?: number;
  concurrency?: number;
  storageClass?: string;
  signal?: AbortSignal;
}

export interface RestoreToS3Report extends UploadImageResult {
  snapshot: string;
  vm: string;
  disk: number;
  to: string;
}

export async function restoreSnapshotToS3(repo: Repository, record: SnapshotRecord, disk: number, url: string, o: RestoreToS3Options = {}): Promise<RestoreToS3Report> {
  const { parseS3Url, uploadImageToS3 } = await import('./s3-image-upload.js');
  const { bucket, key } = parseS3Url(url);
  const s3 = await s3Client({ endpoint: o.s3Endpoint });
  const pool = new WorkerPool(repo);
  try {
    const image = openDiskImage(repo, pool, record, disk);
    o.progress?.start(image.capacity);
    let last = 0;
    const res = await uploadImageToS3({
      s3,
      bucket,
      key,
      image,
      partSize: o.partSize,
      concurrency: o.concurrency,
      storageClass: o.storageClass,
      signal: o.signal,
      metadata: { 'pilotlight-snapshot': record.id, 'pilotlight-disk': String(disk) },
      onProgress: (done) => {
        o.progress?.advance(done - last);
        last = done;
      },
    });
    return { snapshot: record.id, vm: record.vm, disk, to: url, ...res };
  } finally {
    o.progress?.stop();
    s3.destroy();
    await pool.close();
  }
}
