import type { DiskImage } from '../engine/disk-image.js';

/** EBS snapshots are made of 512 KiB blocks (EBS direct APIs, `BlockSize`). */
export const EBS_BLOCK_SIZE = 512 * 1024;
export const GIB = 1024 * 1024 * 1024;

/** pilotlight chunks per EBS block (8 for 64 KiB chunks). */
export function chunksPerBlock(image: DiskImage): number {
  if (image.chunkSize <= 0 || EBS_BLOCK_SIZE % image.chunkSize !== 0) {
    throw new Error(`chunk size ${image.chunkSize} does not divide the EBS block size ${EBS_BLOCK_SIZE}`);
  }
  return EBS_BLOCK_SIZE / image.chunkSize;
}

/** 512 KiB blocks needed to hold `capacity` bytes (the last one zero-padded). */
export function blockCount(capacity: number): number {
  return Math.ceil(capacity / EBS_BLOCK_SIZE);
}

/** Smallest EBS volume size (GiB) that holds `capacity` bytes. */
export function volumeSizeGiB(capacity: number): number {
  return Math.max(1, Math.ceil(capacity / GIB));
}

/** Block indexes (ascending, each once) holding the given ascending chunk indexes. */
export async function* blocksOfChunks(chunks: AsyncIterable<number>, perBlock: number): AsyncGenerator<number> {
  let last = -1;
  for await (const c of chunks) {
    const b = Math.floor(c / perBlock);
    if (b < last) throw new Error(`chunk indexes are not ascending (${c} after block ${last})`);
    if (b !== last) {
      last = b;
      yield b;
    }
  }
}

export interface ImageBlock {
  index: number;
  /** Exactly EBS_BLOCK_SIZE bytes; the part past the disk's capacity is zeros. */
  data: Buffer;
}

/**
 * Reads whole 512 KiB blocks of `image` for the given ascending block indexes: all the
 * chunks of each block are read (unchanged chunks of a changed block too, since EBS
 * writes whole blocks), holes become zeros, and the last block is padded with zeros.
 */
export async function* readBlocks(image: DiskImage, blocks: AsyncIterable<number> | Iterable<number>): AsyncGenerator<ImageBlock> {
  const per = chunksPerBlock(image);
  const nChunks = Math.ceil(image.capacity / image.chunkSize);
  async function* only(): AsyncGenerator<number> {
    for await (const b of blocks) {
      const end = Math.min((b + 1) * per, nChunks);
      for (let c = b * per; c < end; c++) yield c;
    }
  }
  let cur: ImageBlock | null = null;
  for await (const ch of image.chunks({ only: only() })) {
    const b = Math.floor(ch.index / per);
    if (!cur || cur.index !== b) {
      if (cur) yield cur;
      cur = { index: b, data: Buffer.alloc(EBS_BLOCK_SIZE) };
    }
    if (ch.data) {
      const at = (ch.index % per) * image.chunkSize;
      if (ch.data.length > EBS_BLOCK_SIZE - at) throw new Error(`chunk ${ch.index} is longer than the chunk size`);
      ch.data.copy(cur.data, at);
    }
  }
  if (cur) yield cur;
}
