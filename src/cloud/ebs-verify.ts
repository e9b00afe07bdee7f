/**
 * Reads an EBS snapshot back with the EBS direct read APIs (ListSnapshotBlocks,
 * GetSnapshotBlock) and compares it with the pilotlight image it should hold: every
 * block of the image that is not all zeros must be listed, and every listed block (or a
 * random sample of them) must equal the image's block byte for byte (and its checksum).
 * This is the check a user runs once on real AWS (docs/AWS.md).
 */
import { createHash, randomInt } from 'node:crypto';
import { EBSClient, GetSnapshotBlockCommand, ListSnapshotBlocksCommand } from '@aws-sdk/client-ebs';
import type { DiskImage } from '../engine/disk-image.js';
import { blockCount, blocksOfChunks, chunksPerBlock, EBS_BLOCK_SIZE, readBlocks } from './blocks.js';
import { explainAwsError } from './errors.js';
import { DEFAULT_RETRY, withRetry } from './retry.js';

export interface VerifyEbsOptions {
  ebs: EBSClient;
  image: DiskImage;
  ebsSnapshotId: string;
  /** Compare only this many listed blocks, chosen at random (default: all). */
  sample?: number;
  /** GetSnapshotBlock requests in flight (default 8). */
  concurrency?: number;
  signal?: AbortSignal;
}

export interface VerifyEbsReport {
  ebsSnapshotId: string;
  ok: boolean;
  /** Blocks the EBS snapshot lists (its lineage's written blocks). */
  blocksListed: number;
  /** Non-zero blocks of the image. */
  blocksNonZero: number;
  blocksCompared: number;
  bytesRead: number;
  /** Non-zero in the image, not listed in EBS (first 100). */
  missing: number[];
  /** Listed and compared, but different (first 100). */
  mismatched: number[];
  durationMs: number;
}

export async function verifyEbsSnapshot(o: VerifyEbsOptions): Promise<VerifyEbsReport> {
  const t0 = performance.now();
  const { ebs, image, ebsSnapshotId } = o;
  const tokens = new Map<number, string>();
  let next: string | undefined;
  try {
    do {
      const page = await withRetry(
        () => ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: ebsSnapshotId, MaxResults: 10000, NextToken: next }), { abortSignal: o.signal }),
        DEFAULT_RETRY,
        { signal: o.signal },
      );
      if (page.BlockSize !== undefined && page.BlockSize !== EBS_BLOCK_SIZE) throw new Error(`${ebsSnapshotId} has ${page.BlockSize}-byte blocks`);
      for (const b of page.Blocks ?? []) tokens.set(b.BlockIndex!, b.BlockToken!);
      next = page.NextToken;
    } while (next);
  } catch (err) {
    throw explainAwsError(err, 'ebs:ListSnapshotBlocks', ebsSnapshotId);
  }

  const per = chunksPerBlock(image);
  const nonZero: number[] = [];
  for await (const b of blocksOfChunks(image.changedChunks(), per)) nonZero.push(b);
  const missing = nonZero.filter((b) => !tokens.has(b));

  let listed = [...tokens.keys()].sort((a, b) => a - b);
  if (o.sample !== undefined && o.sample < listed.length) {
    const pick = new Set<number>();
    while (pick.size < o.sample) pick.add(listed[randomInt(listed.length)]);
    listed = [...pick].sort((a, b) => a - b);
  }
  const inImage = listed.filter((b) => b < blockCount(image.capacity));
  const beyond = listed.filter((b) => b >= blockCount(image.capacity));

  const mismatched: number[] = [];
  let compared = 0;
  let bytesRead = 0;
  const fetchBlock = async (index: number): Promise<Buffer> => {
    try {
      const out = await withRetry(
        () => ebs.send(new GetSnapshotBlockCommand({ SnapshotId: ebsSnapshotId, BlockIndex: index, BlockToken: tokens.get(index)! }), { abortSignal: o.signal }),
        DEFAULT_RETRY,
        { signal: o.signal },
      );
      const data = Buffer.from(await out.BlockData!.transformToByteArray());
      bytesRead += data.length;
      if (out.Checksum && createHash('sha256').update(data).digest('base64') !== out.Checksum) {
        throw new Error(`block ${index} of ${ebsSnapshotId} does not match its own checksum`);
      }
      return data;
    } catch (err) {
      throw explainAwsError(err, 'ebs:GetSnapshotBlock', `${ebsSnapshotId} block ${index}`);
    }
  };
  const batchSize = Math.max(1, o.concurrency ?? 8);
  let batch: { index: number; data: Buffer }[] = [];
  const flush = async () => {
    const got = await Promise.all(batch.map((b) => fetchBlock(b.index)));
    batch.forEach((b, i) => {
      compared++;
      if (!got[i].equals(b.data)) mismatched.push(b.index);
    });
    batch = [];
  };
  for await (const block of readBlocks(image, inImage)) {
    batch.push(block);
    if (batch.length >= batchSize) await flush();
  }
  for (const index of beyond) batch.push({ index, data: Buffer.alloc(EBS_BLOCK_SIZE) });
  await flush();

  return {
    ebsSnapshotId,
    ok: missing.length === 0 && mismatched.length === 0,
    blocksListed: tokens.size,
    blocksNonZero: nonZero.length,
    blocksCompared: compared,
    bytesRead,
    missing: missing.slice(0, 100),
    mismatched: mismatched.slice(0, 100),
    durationMs: Math.round(performance.now() - t0),
  };
}
