import { createRequire } from 'node:module';
import { Extent } from './disk-source.js';

/**
 * lseek(2) through koffi: SEEK_DATA/SEEK_HOLE to find the allocated extents of a
 * sparse file, and SEEK_END for the size of a block device. Node's fs has no lseek.
 * Returns null where the file system or platform cannot answer (the caller reads
 * everything instead; all-zero chunks still become holes).
 */
const SEEK_END = 2;
const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const ENXIO = 6;

type Lseek = (fd: number, offset: bigint | number, whence: number) => bigint | number;
let lseekFn: Lseek | null | undefined;
let errnoFn: (() => number) | null = null;

function lseek(): Lseek | null {
  if (lseekFn !== undefined) return lseekFn;
  lseekFn = null;
  if (process.platform !== 'linux') return null;
  try {
    const koffi = createRequire(import.meta.url)('koffi') as {
      load(name: string): { func(sig: string): Lseek };
      errno(): number;
    };
    lseekFn = koffi.load('libc.so.6').func('int64_t lseek(int fd, int64_t offset, int whence)');
    errnoFn = () => koffi.errno();
  } catch {
    lseekFn = null;
  }
  return lseekFn;
}

export function seekEnd(fd: number): number | null {
  const f = lseek();
  if (!f) return null;
  const r = Number(f(fd, 0, SEEK_END));
  return r >= 0 ? r : null;
}

/** The data extents of an open file, or null when SEEK_DATA is not supported. */
export function allocatedExtents(fd: number, size: number): Extent[] | null {
  const f = lseek();
  if (!f) return null;
  const out: Extent[] = [];
  let pos = 0;
  while (pos < size) {
    const data = Number(f(fd, pos, SEEK_DATA));
    if (data < 0) {
      if (errnoFn?.() === ENXIO) break;
      return null;
    }
    if (data >= size) break;
    let hole = Number(f(fd, data, SEEK_HOLE));
    if (hole < 0) return null;
    hole = Math.min(hole, size);
    out.push({ offset: data, length: hole - data });
    pos = hole;
  }
  return out;
}
