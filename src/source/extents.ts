import { promises as fsp } from 'node:fs';
import { UserError } from '../repo/errors.js';
import { Extent } from './disk-source.js';

/**
 * Parses a change list: one `offset length` pair of byte counts per line, as
 * vSphere's QueryChangedDiskAreas gives them (PowerShell's table header
 * `Start Length` and its dashes are accepted; blank lines are ignored).
 * Anything else, or an extent past the end of the disk, is a clear error.
 */
export function parseChangeList(text: string, capacity: number, file: string): Extent[] {
  const out: Extent[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (!line || /^start\s+length$/i.test(line) || /^-+\s+-+$/.test(line)) continue;
    const m = /^(\d+)\s+(\d+)$/.exec(line);
    if (!m) throw new UserError(`${file}:${i + 1}: expected "offset length" in bytes, got ${JSON.stringify(line.slice(0, 80))}`);
    const offset = Number(m[1]);
    const length = Number(m[2]);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length)) {
      throw new UserError(`${file}:${i + 1}: number too large to be exact`);
    }
    if (offset + length > capacity) {
      throw new UserError(`${file}:${i + 1}: extent ${offset}+${length} ends past the end of the disk (${capacity} bytes); is this the change list of another disk?`);
    }
    if (length > 0) out.push({ offset, length });
  }
  return out;
}

export async function readChangeList(file: string, capacity: number): Promise<Extent[]> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    throw new UserError(`cannot read change list ${file}: ${(err as Error).message}`);
  }
  return parseChangeList(text, capacity, file);
}

/**
 * Widens extents to chunk boundaries (the last chunk ends at capacity), sorts and
 * merges them. The result covers every byte of the input, in whole chunks.
 */
export function alignExtents(extents: Extent[], chunkSize: number, capacity: number): Extent[] {
  const widened = extents
    .filter((e) => e.length > 0)
    .map((e) => {
      const start = Math.floor(e.offset / chunkSize) * chunkSize;
      const end = Math.min(Math.ceil((e.offset + e.length) / chunkSize) * chunkSize, capacity);
      return { offset: start, length: end - start };
    })
    .sort((a, b) => a.offset - b.offset);
  const out: Extent[] = [];
  for (const e of widened) {
    const last = out[out.length - 1];
    if (last && e.offset <= last.offset + last.length) {
      last.length = Math.max(last.length, e.offset + e.length - last.offset);
    } else {
      out.push({ ...e });
    }
  }
  return out;
}

export function totalLength(extents: Extent[]): number {
  return extents.reduce((s, e) => s + e.length, 0);
}
