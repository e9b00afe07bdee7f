/**
 * The non-zero runs of a chunk at file-system block granularity, so that a
 * restore leaves every all-zero 4 KiB block inside a chunk as a hole (as
 * `cp --sparse=always` and `qemu-img convert` do) and writes only the rest.
 */
export const HOLE_GRANULE = 4096;

const zero = new Uint8Array(HOLE_GRANULE);

/**
 * Flat [start, length, start, length, ...] of the runs of `data` that are not
 * all zeros, in granules (the last one may be short), relative to the start of
 * `data`. Empty when `data` is all zeros.
 */
export function nonZeroRuns(data: Uint8Array, granule = HOLE_GRANULE): number[] {
  const runs: number[] = [];
  let runStart = -1;
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const z = granule === HOLE_GRANULE ? zero : new Uint8Array(granule);
  for (let o = 0; o < data.length; o += granule) {
    const end = Math.min(o + granule, data.length);
    // Most blocks of a disk have a non-zero first or last byte: no compare needed.
    const nonZero = data[o] !== 0 || data[end - 1] !== 0 || buf.compare(z, 0, end - o, o, end) !== 0;
    if (nonZero) {
      if (runStart < 0) runStart = o;
    } else if (runStart >= 0) {
      runs.push(runStart, o - runStart);
      runStart = -1;
    }
  }
  if (runStart >= 0) runs.push(runStart, data.length - runStart);
  return runs;
}
