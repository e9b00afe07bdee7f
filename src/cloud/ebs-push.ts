/**
 * Pushes one disk image of a pilotlight snapshot into an EBS snapshot with the EBS
 * direct APIs: StartSnapshot (ParentSnapshotId when a previous push exists),
 * PutSnapshotBlock for each 512 KiB block that must be written (base64 SHA-256 checksum,
 * several in flight, under a rate limit, retried on throttling/5xx/network errors), and
 * CompleteSnapshot with the number of blocks written.
 *
 * Which blocks: with no parent, every block holding a non-zero chunk; with a parent,
 * every block holding a chunk that differs between the two pilotlight snapshots, found
 * from the manifests (DiskImage.changedChunks) without reading unchanged data.
 */
import { createHash, randomUUID } from 'node:crypto';
import {
  CompleteSnapshotCommand,
  EBSClient,
  PutSnapshotBlockCommand,
  StartSnapshotCommand,
} from '@aws-sdk/client-ebs';
import { DescribeSnapshotsCommand, EC2Client } from '@aws-sdk/client-ec2';
import type { DiskImage } from '../engine/disk-image.js';
import type { BlobStore } from '../store/blob-store.js';
import { blockCount, blocksOfChunks, chunksPerBlock, EBS_BLOCK_SIZE, readBlocks, volumeSizeGiB } from './blocks.js';
import { getEbsMap, newestEbsMapBefore, putEbsMap, EbsMapRecord } from './ebs-map.js';
import { CloudError, explainAwsError } from './errors.js';
import { RateLimiter } from './rate-limit.js';
import { DEFAULT_CONCURRENCY, DEFAULT_PUT_RATE } from './defaults.js';
import { DEFAULT_RETRY, isThrottle, RetryPolicy, withRetry } from './retry.js';
export { DEFAULT_CONCURRENCY, DEFAULT_PUT_RATE };


export interface PushProgress {
  blocksSent: number;
  bytesSent: number;
  retries: number;
}

export interface PushImageOptions {
  ebs: EBSClient;
  image: DiskImage;
  /** The previous push: its EBS snapshot becomes ParentSnapshotId, its image the diff base. */
  parent?: { image: DiskImage; ebsSnapshotId: string };
  /** The parent's volume size: an unchanged image is only pushed again when it must grow. */
  parentVolumeSizeGiB?: number;
  /** Default: the disk capacity rounded up to GiB (never less than the parent's). */
  volumeSizeGiB?: number;
  /** PutSnapshotBlock requests in flight (default 32). */
  concurrency?: number;
  /** PutSnapshotBlock requests per second for this snapshot (default 1,000, AWS's default limit). */
  ratePerSecond?: number;
  retry?: Partial<RetryPolicy>;
  description?: string;
  tags?: Record<string, string>;
  /** Encrypt the EBS snapshot (with `kmsKeyArn`, or the account's default EBS key). */
  encrypted?: boolean;
  kmsKeyArn?: string;
  /** Minutes AWS keeps the snapshot pending before giving up on it (StartSnapshot Timeout). */
  timeoutMinutes?: number;
  signal?: AbortSignal;
  onProgress?: (p: PushProgress) => void;
}

export interface PushImageResult {
  ebsSnapshotId: string;
  parentEbsSnapshotId?: string;
  volumeSizeGiB: number;
  /** 512 KiB blocks in the disk. */
  totalBlocks: number;
  blocksSent: number;
  bytesSent: number;
  /** Requests repeated after a throttle, 5xx or network error. */
  retries: number;
  throttled: number;
  status: string;
  /**
   * Nothing changed since the parent: no EBS snapshot was created and `ebsSnapshotId` is
   * the parent's, which already holds this image.
   */
  unchanged?: boolean;
  durationMs: number;
}

const unsignedClients = new WeakSet<EBSClient>();

/**
 * PutSnapshotBlock bodies are not part of the SigV4 signature (the EBS API model marks
 * the operation `v4-unsigned-body`; the block's own SHA-256 checksum protects it), but
 * the JS SDK hashes every 512 KiB body for `x-amz-content-sha256` anyway. This sends
 * `UNSIGNED-PAYLOAD` for PutSnapshotBlock instead, which saves one SHA-256 pass over
 * every byte pushed. Set PILOTLIGHT_EBS_SIGNED_PAYLOAD=1 to keep the SDK's behaviour.
 * Idempotent per client.
 */
export function useUnsignedBlockPayload(ebs: EBSClient): void {
  if (process.env.PILOTLIGHT_EBS_SIGNED_PAYLOAD === '1' || unsignedClients.has(ebs)) return;
  unsignedClients.add(ebs);
  ebs.middlewareStack.add(
    (next, context) => async (args) => {
      const req = args.request as { headers?: Record<string, string> };
      if ((context as { commandName?: string }).commandName === 'PutSnapshotBlockCommand' && req.headers) {
        req.headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
      }
      return next(args);
    },
    { step: 'build', name: 'pilotlightUnsignedBlockPayload' },
  );
}

function sha256b64(data: Buffer): string {
  return createHash('sha256').update(data).digest('base64');
}

export async function pushImageToEbs(o: PushImageOptions): Promise<PushImageResult> {
  const t0 = performance.now();
  const { ebs, image, parent } = o;
  const per = chunksPerBlock(image);
  if (typeof (ebs as { middlewareStack?: unknown }).middlewareStack === 'object') useUnsignedBlockPayload(ebs);
  if (parent && parent.image.capacity !== image.capacity) {
    throw new Error(`the parent image is ${parent.image.capacity} bytes and this one ${image.capacity}: an incremental push needs equal capacities`);
  }
  const size = o.volumeSizeGiB ?? volumeSizeGiB(image.capacity);
  if (size * 1024 ** 3 < image.capacity) throw new Error(`a ${size} GiB volume cannot hold a ${image.capacity}-byte disk`);
  const policy: RetryPolicy = { ...DEFAULT_RETRY, ...o.retry };
  const concurrency = Math.max(1, o.concurrency ?? DEFAULT_CONCURRENCY);
  const limiter = new RateLimiter(o.ratePerSecond ?? DEFAULT_PUT_RATE);
  let retries = 0;
  let throttled = 0;
  const onRetry = (err: unknown) => {
    retries++;
    if (isThrottle(err)) throttled++;
  };

  // Look at the first changed chunk before creating anything: with a parent and no change,
  // the parent's EBS snapshot already holds this image, and no new snapshot is made.
  const changedIter = (parent ? image.changedChunks(parent.image) : image.changedChunks())[Symbol.asyncIterator]();
  const firstChanged = await changedIter.next();
  if (firstChanged.done && parent && (o.parentVolumeSizeGiB === undefined || o.parentVolumeSizeGiB >= size)) {
    return {
      ebsSnapshotId: parent.ebsSnapshotId,
      parentEbsSnapshotId: parent.ebsSnapshotId,
      volumeSizeGiB: size,
      totalBlocks: blockCount(image.capacity),
      blocksSent: 0,
      bytesSent: 0,
      retries: 0,
      throttled: 0,
      status: 'completed',
      unchanged: true,
      durationMs: Math.round(performance.now() - t0),
    };
  }
  const changed = (async function* () {
    if (!firstChanged.done) yield firstChanged.value;
    for (let r = await changedIter.next(); !r.done; r = await changedIter.next()) yield r.value;
  })();

  // One token for every attempt: a retried StartSnapshot whose first attempt did reach AWS
  // gets the same snapshot back instead of leaving a second one pending.
  const clientToken = randomUUID();
  let start;
  try {
    start = await withRetry(
      () =>
        ebs.send(
          new StartSnapshotCommand({
            VolumeSize: size,
            ParentSnapshotId: parent?.ebsSnapshotId,
            Description: o.description,
            Tags: o.tags ? Object.entries(o.tags).map(([Key, Value]) => ({ Key, Value })) : undefined,
            Timeout: o.timeoutMinutes ?? 60,
            Encrypted: o.encrypted || o.kmsKeyArn ? true : undefined,
            KmsKeyArn: o.kmsKeyArn,
            ClientToken: clientToken,
          }),
          { abortSignal: o.signal },
        ),
      policy,
      { signal: o.signal, onRetry },
    );
  } catch (err) {
    throw explainAwsError(err, 'ebs:StartSnapshot', parent ? `parent ${parent.ebsSnapshotId}` : undefined);
  }
  const snapshotId = start.SnapshotId!;
  if (start.BlockSize !== undefined && start.BlockSize !== EBS_BLOCK_SIZE) {
    throw new Error(`EBS answered a block size of ${start.BlockSize} bytes; pilotlight writes ${EBS_BLOCK_SIZE}-byte blocks`);
  }

  let blocksSent = 0;
  let bytesSent = 0;
  const inflight = new Set<Promise<void>>();
  let failure: unknown;
  const put = async (index: number, data: Buffer) => {
    const checksum = sha256b64(data);
    try {
      await withRetry(
        async () => {
          await limiter.take();
          await ebs.send(
            new PutSnapshotBlockCommand({
              SnapshotId: snapshotId,
              BlockIndex: index,
              BlockData: data,
              DataLength: EBS_BLOCK_SIZE,
              Checksum: checksum,
              ChecksumAlgorithm: 'SHA256',
            }),
            { abortSignal: o.signal },
          );
        },
        policy,
        { signal: o.signal, onRetry },
      );
    } catch (err) {
      throw explainAwsError(err, 'ebs:PutSnapshotBlock', `${snapshotId} block ${index}`);
    }
    blocksSent++;
    bytesSent += data.length;
    o.onProgress?.({ blocksSent, bytesSent, retries });
  };

  try {
    for await (const block of readBlocks(image, blocksOfChunks(changed, per))) {
      if (failure) break;
      o.signal?.throwIfAborted();
      const p: Promise<void> = put(block.index, block.data).then(
        () => {
          inflight.delete(p);
        },
        (err) => {
          inflight.delete(p);
          failure ??= err;
        },
      );
      inflight.add(p);
      if (inflight.size >= concurrency) await Promise.race(inflight);
    }
    await Promise.all(inflight);
    if (failure) throw failure;
  } catch (err) {
    await Promise.allSettled(inflight);
    const e = err instanceof Error ? err : new Error(String(err));
    e.message +=
      ` — EBS snapshot ${snapshotId} was left pending with ${blocksSent} blocks written; AWS abandons it after its timeout.` +
      ` Run the push again: it starts over from the newest completed push.`;
    (e as { pendingSnapshotId?: string }).pendingSnapshotId = snapshotId;
    throw e;
  }

  let status: string;
  try {
    const done = await withRetry(
      () => ebs.send(new CompleteSnapshotCommand({ SnapshotId: snapshotId, ChangedBlocksCount: blocksSent }), { abortSignal: o.signal }),
      policy,
      { signal: o.signal, onRetry },
    );
    status = done.Status ?? 'completed';
  } catch (err) {
    throw explainAwsError(err, 'ebs:CompleteSnapshot', snapshotId);
  }
  if (status === 'error') throw new CloudError('failed', `EBS snapshot ${snapshotId} ended in the error state after CompleteSnapshot`);
  return {
    ebsSnapshotId: snapshotId,
    parentEbsSnapshotId: parent?.ebsSnapshotId,
    volumeSizeGiB: size,
    totalBlocks: blockCount(image.capacity),
    blocksSent,
    bytesSent,
    retries,
    throttled,
    status,
    durationMs: Math.round(performance.now() - t0),
  };
}

/** Waits until DescribeSnapshots says `completed` (CompleteSnapshot may answer `pending`). */
export async function waitSnapshotCompleted(
  ec2: EC2Client,
  snapshotId: string,
  opts: { intervalMs?: number; timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 60 * 60_000);
  for (;;) {
    let state: string | undefined;
    try {
      const out = await ec2.send(new DescribeSnapshotsCommand({ SnapshotIds: [snapshotId] }), { abortSignal: opts.signal });
      state = out.Snapshots?.[0]?.State;
    } catch (err) {
      throw explainAwsError(err, 'ec2:DescribeSnapshots', snapshotId);
    }
    if (state === 'completed') return;
    if (state === 'error') throw new CloudError('failed', `EBS snapshot ${snapshotId} is in the error state`);
    if (Date.now() > deadline) throw new CloudError('failed', `EBS snapshot ${snapshotId} is still ${state} after the timeout`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 5000));
  }
}

/** What the push needs to know of a pilotlight snapshot. */
export interface PushSnapshotRef {
  id: string;
  vm: string;
  /** ISO 8601. */
  time: string;
  disks: { name: string; capacity: number }[];
}

export interface EbsPushOptions extends Omit<PushImageOptions, 'image' | 'parent'> {
  /** The repository's store: the mapping lives under cloud/ebs/. */
  store: BlobStore;
  snapshot: PushSnapshotRef;
  diskIndex: number;
  openImage(snapshot: PushSnapshotRef | string, diskIndex: number): Promise<DiskImage>;
  /** When given, waits for the EBS snapshot to be completed before recording it. */
  ec2?: EC2Client;
  region?: string;
  /** Push everything again without a parent, even when a previous push is recorded. */
  full?: boolean;
  waitIntervalMs?: number;
}

export interface EbsPushResult extends PushImageResult {
  vm: string;
  diskIndex: number;
  diskName: string;
  snapshot: string;
  /** The pilotlight snapshot of the parent push, when incremental. */
  baseSnapshot?: string;
  /** True when this pilotlight snapshot had already been pushed: nothing was sent. */
  alreadyPushed: boolean;
}

/**
 * `ebs push`: pushes one disk of a pilotlight snapshot, incrementally on top of the newest
 * recorded push, and records the result in the repository.
 */
export async function ebsPush(o: EbsPushOptions): Promise<EbsPushResult> {
  const { store, snapshot, diskIndex } = o;
  const disk = snapshot.disks[diskIndex];
  if (!disk) {
    throw new CloudError('not-found', `snapshot ${snapshot.id} of ${snapshot.vm} has no disk ${diskIndex} (it has ${snapshot.disks.length}); pass --disk 0..${snapshot.disks.length - 1}`);
  }
  const base = { vm: snapshot.vm, diskIndex, diskName: disk.name, snapshot: snapshot.id };
  const existing = await getEbsMap(store, snapshot.vm, diskIndex, snapshot.id);
  if (existing) {
    return {
      ...base,
      ebsSnapshotId: existing.ebsSnapshotId,
      parentEbsSnapshotId: existing.parentEbsSnapshotId,
      baseSnapshot: existing.baseSnapshot,
      volumeSizeGiB: existing.volumeSizeGiB,
      totalBlocks: blockCount(existing.capacity),
      blocksSent: 0,
      bytesSent: 0,
      retries: 0,
      throttled: 0,
      status: 'completed',
      durationMs: 0,
      alreadyPushed: true,
    };
  }
  const parentRec: EbsMapRecord | null = o.full
    ? null
    : await newestEbsMapBefore(store, snapshot.vm, diskIndex, snapshot, { capacity: disk.capacity, region: o.region });
  const image = await o.openImage(snapshot, diskIndex);
  const parentImage = parentRec ? await o.openImage(parentRec.snapshot, diskIndex) : undefined;
  const volume = Math.max(o.volumeSizeGiB ?? volumeSizeGiB(disk.capacity), parentRec?.volumeSizeGiB ?? 0);
  const res = await pushImageToEbs({
    ...o,
    image,
    volumeSizeGiB: volume,
    parent: parentRec && parentImage ? { image: parentImage, ebsSnapshotId: parentRec.ebsSnapshotId } : undefined,
    parentVolumeSizeGiB: parentRec?.volumeSizeGiB,
    description: o.description ?? `pilotlight ${snapshot.vm} disk ${diskIndex} (${disk.name}) snapshot ${snapshot.id}`,
    tags: { 'pilotlight:vm': snapshot.vm, 'pilotlight:snapshot': snapshot.id, 'pilotlight:disk': String(diskIndex), ...o.tags },
  });
  if (o.ec2 && res.status !== 'completed' && !res.unchanged) {
    await waitSnapshotCompleted(o.ec2, res.ebsSnapshotId, { intervalMs: o.waitIntervalMs, signal: o.signal });
    res.status = 'completed';
  }
  await putEbsMap(store, {
    format: 'pilotlight-ebs-map',
    version: 1,
    vm: snapshot.vm,
    diskIndex,
    diskName: disk.name,
    snapshot: snapshot.id,
    snapshotTime: snapshot.time,
    capacity: disk.capacity,
    region: o.region,
    ebsSnapshotId: res.ebsSnapshotId,
    volumeSizeGiB: res.volumeSizeGiB,
    blockSize: EBS_BLOCK_SIZE,
    parentEbsSnapshotId: res.unchanged ? undefined : res.parentEbsSnapshotId,
    baseSnapshot: parentRec?.snapshot,
    ...(res.unchanged ? { unchanged: true } : {}),
    blocksSent: res.blocksSent,
    bytesSent: res.bytesSent,
    completedAt: new Date().toISOString(),
  });
  return { ...base, ...res, baseSnapshot: parentRec?.snapshot, alreadyPushed: false };
}
