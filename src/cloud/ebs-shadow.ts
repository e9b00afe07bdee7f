/**
 * Pushes the disks of one pilotlight snapshot to EBS (incrementally on top of the newest
 * recorded push) and records the EBS snapshot ids in the repository: `ebs push`,
 * `backup --ebs-shadow`, `recover ec2 --push` and the service's EBS shadow step.
 */
import { openDiskImage } from '../engine/snapshot-image.js';
import { WorkerPool } from '../engine/worker-pool.js';
import type { Repository } from '../repo/repository.js';
import { SnapshotCatalog, SnapshotRecord } from '../snapshot/snapshot-record.js';
import { AwsOptions, clientRegion, ebsClient, ec2Client } from './aws-clients.js';
import type { EbsPushResult, PushProgress, PushSnapshotRef } from './ebs-push.js';

export interface PushSnapshotOptions extends AwsOptions {
  rate?: number;
  concurrency?: number;
  full?: boolean;
  timeoutMinutes?: number;
  encrypted?: boolean;
  kmsKeyArn?: string;
  waitIntervalMs?: number;
  /** Stops the push: nothing is recorded, the EBS snapshot is left pending. */
  signal?: AbortSignal;
  onProgress?: (diskIndex: number, p: PushProgress) => void;
}

export function snapshotRef(r: SnapshotRecord): PushSnapshotRef {
  return { id: r.id, vm: r.vm, time: new Date(r.time).toISOString(), disks: r.disks.map((d) => ({ name: d.name, capacity: d.capacity })) };
}

/** Pushes the given disks (every disk when `disks` is undefined), one after the other. */
export async function pushSnapshotToEbs(repo: Repository, record: SnapshotRecord, opts: PushSnapshotOptions = {}, disks?: number[]): Promise<EbsPushResult[]> {
  const { ebsPush } = await import('./ebs-push.js');
  const catalog = new SnapshotCatalog(repo);
  const pool = new WorkerPool(repo);
  const ebs = await ebsClient(opts);
  const ec2 = await ec2Client(opts);
  try {
    const region = await clientRegion(ebs);
    const out: EbsPushResult[] = [];
    for (const diskIndex of disks ?? record.disks.map((_, i) => i)) {
      out.push(
        await ebsPush({
          ebs,
          ec2,
          store: repo.store,
          snapshot: snapshotRef(record),
          diskIndex,
          region,
          ratePerSecond: opts.rate,
          concurrency: opts.concurrency,
          full: opts.full,
          encrypted: opts.encrypted,
          kmsKeyArn: opts.kmsKeyArn,
          timeoutMinutes: opts.timeoutMinutes,
          waitIntervalMs: opts.waitIntervalMs,
          signal: opts.signal,
          openImage: async (s, i) => openDiskImage(repo, pool, typeof s === 'string' ? await catalog.load(s, record.vm) : s.id === record.id ? record : await catalog.load(s.id, s.vm), i),
          onProgress: opts.onProgress ? (p) => opts.onProgress!(diskIndex, p) : undefined,
        }),
      );
    }
    return out;
  } finally {
    ebs.destroy();
    ec2.destroy();
    await pool.close();
  }
}
