import * as v8 from 'node:v8';
import * as vm from 'node:vm';

/**
 * Bounds the memory that dead buffers hold. V8 collects an isolate's garbage
 * when its JavaScript heap fills or its external memory has grown by about
 * 64 MiB since the last collection; the chunk pipelines make megabytes of
 * short-lived buffers a second while their JavaScript heaps stay small, so every
 * thread (main and each worker) would otherwise sit on about 64 MiB of dead
 * ArrayBuffers. A pacer runs a young-generation collection (a scavenge: about a
 * millisecond, the buffers die young) after every `every` bytes of such buffers.
 *
 * The collector is reached through V8's `--expose-gc` flag set at run time,
 * which makes `gc` available in new contexts. Where that is refused the pacer
 * does nothing and memory is what V8's own heuristics give.
 */
type GcFn = (options?: { type?: 'major' | 'minor'; execution?: 'sync' }) => void;

let gcFn: GcFn | null | undefined;

function collector(): GcFn | null {
  if (gcFn !== undefined) return gcFn;
  try {
    v8.setFlagsFromString('--expose-gc');
    gcFn = vm.runInNewContext('gc') as GcFn;
    if (typeof gcFn !== 'function') gcFn = null;
  } catch {
    gcFn = null;
  }
  return gcFn;
}

/** One full, synchronous collection, where V8 lets us ask for one; else nothing. */
export function collectFully(): void {
  // no options: a full collection ({ type: 'major' } left WebAssembly memory in place, measured)
  collector()?.();
}

export class GcPacer {
  private since = 0;
  private readonly gc = collector();

  constructor(private readonly every = 4 << 20) {}

  /** Counts `bytes` of buffers made (and soon dead); collects when `every` is reached. */
  made(bytes: number): void {
    this.since += bytes;
    if (this.since < this.every || !this.gc) return;
    this.since = 0;
    this.gc({ type: 'minor' });
  }
}

/**
 * Bounds garbage that lives long enough to be promoted to the old generation, which V8
 * lets grow by tens of MB before its first full collection. An S3 request's SDK objects
 * (middleware stack, headers, parsers: about 40 KB) live as long as the request, longer
 * than the main thread's small young generation keeps them: a restore's 460 GETs grew the
 * heap from 15 to 32 MB (peak RSS 160-171 MB). Every `every` events the pacer looks at the
 * heap, and when it has grown by `grow` bytes since the last full collection it runs one
 * (about 10-15 ms; two or three in such a restore: peak RSS 148-153 MB, no change in time).
 */
export class HeapGrowthPacer {
  private events = 0;
  private base = v8.getHeapStatistics().used_heap_size;
  private readonly gc = collector();

  constructor(
    private readonly every = 16,
    private readonly grow = 6 << 20,
  ) {}

  /** Counts one event (a request); collects when the heap has grown by `grow` since the last collection. */
  tick(): void {
    if (++this.events < this.every || !this.gc) return;
    this.events = 0;
    const used = v8.getHeapStatistics().used_heap_size;
    if (used - this.base < this.grow) {
      this.base = Math.min(this.base, used); // V8 collected by itself
      return;
    }
    this.gc();
    this.base = v8.getHeapStatistics().used_heap_size;
  }
}

let smallYoungGeneration = false;

/**
 * Keeps the main thread's young generation at its first size (two 1 MiB semispaces)
 * instead of letting V8 double it up to 2 x 16 MiB as objects survive: that is about
 * 10 MB of peak RSS on a backup (a first backup of the bench's 730 MB: 146-151 ->
 * 135-136 MB, no change in time; docs/DECISIONS.md, "Memory"). The CLI calls it first
 * thing (bin/pilotlight.js). V8 puts the growth factor back to its minimum of 2 when
 * it configures a new isolate, so WorkerPool calls `youngGenerationAfterWorkerStart`
 * once each worker thread runs.
 */
export function keepYoungGenerationSmall(): void {
  smallYoungGeneration = true;
  v8.setFlagsFromString('--semi-space-growth-factor=1');
}

/** Sets the growth factor again after a worker thread's isolate was configured (see keepYoungGenerationSmall). */
export function youngGenerationAfterWorkerStart(): void {
  if (smallYoungGeneration) v8.setFlagsFromString('--semi-space-growth-factor=1');
}
