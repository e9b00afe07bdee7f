/**
 * Changed Block Tracking: QueryChangedDiskAreas returns a DiskChangeInfo that may cover
 * only part of the disk (startOffset .. startOffset+length); the caller asks again from
 * where the answer stopped until the whole capacity is covered.
 */
import type { Extent } from '../disk-source.js';
import type { DiskChangeInfo } from './client.js';
import { safeNumber } from './xml.js';

export class CbtProtocolError extends Error {}

/**
 * Loops QueryChangedDiskAreas over [0, capacity). `query(start)` makes one call.
 * Returns sorted, merged byte ranges inside [0, capacity), exact as BigInt, and the number of calls.
 */
export async function queryAllChangedAreas(
  capacity: bigint,
  query: (startOffset: bigint) => Promise<DiskChangeInfo>,
  maxCalls = 1_000_000,
): Promise<{ areas: Array<{ offset: bigint; length: bigint }>; calls: number }> {
  const raw: Array<{ offset: bigint; length: bigint }> = [];
  let start = 0n;
  let calls = 0;
  while (start < capacity) {
    if (++calls > maxCalls) throw new CbtProtocolError(`QueryChangedDiskAreas: no end after ${maxCalls} calls`);
    const info = await query(start);
    if (info.startOffset > start) {
      throw new CbtProtocolError(`QueryChangedDiskAreas answered from offset ${info.startOffset}, asked from ${start}: a gap would be unaccounted for`);
    }
    const end = info.startOffset + info.length;
    if (info.length <= 0n || end <= start) {
      throw new CbtProtocolError(`QueryChangedDiskAreas made no progress at offset ${start} (answer covers ${info.startOffset}+${info.length})`);
    }
    for (const a of info.changedArea) {
      if (a.length <= 0n) continue;
      const s = a.start < 0n ? 0n : a.start;
      const e = a.start + a.length > capacity ? capacity : a.start + a.length;
      if (e > s) raw.push({ offset: s, length: e - s });
    }
    start = end;
  }
  raw.sort((a, b) => (a.offset < b.offset ? -1 : a.offset > b.offset ? 1 : 0));
  const merged: Array<{ offset: bigint; length: bigint }> = [];
  for (const r of raw) {
    const last = merged[merged.length - 1];
    if (last && r.offset <= last.offset + last.length) {
      const e = r.offset + r.length;
      if (e > last.offset + last.length) last.length = e - last.offset;
    } else merged.push({ ...r });
  }
  return { areas: merged, calls };
}

/** Converts exact ranges to the DiskSource's numbers, refusing any that would lose precision. */
export function toExtents(areas: Array<{ offset: bigint; length: bigint }>): Extent[] {
  return areas.map((a) => ({ offset: safeNumber(a.offset, 'changed area offset'), length: safeNumber(a.length, 'changed area length') }));
}
