import type { Readable } from 'node:stream';

/** The peer closed the stream before the bytes asked for arrived. */
export class EndOfStreamError extends Error {
  constructor(readonly wanted: number, readonly got: number) {
    super(got === 0 ? 'connection closed' : `connection closed after ${got} of ${wanted} bytes`);
    this.name = 'EndOfStreamError';
  }
}

/**
 * Reads exact byte counts off a stream (a socket), for either side of an NBD
 * connection: `await read(28)` resolves with exactly 28 bytes. One read at a time.
 * The stream is paused while more than `highWater` bytes wait unread, so a fast peer
 * cannot fill memory (the bound is highWater plus one socket chunk).
 */
export class ByteReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  private failure: Error | null = null;
  private waiting: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;

  constructor(private readonly stream: Readable, private readonly highWater = 1 << 20) {
    stream.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.buffered += d.length;
      if (this.buffered > this.highWater) stream.pause();
      this.pump();
    });
    stream.on('end', () => {
      this.ended = true;
      this.pump();
    });
    stream.on('close', () => {
      this.ended = true;
      this.pump();
    });
    stream.on('error', (e: Error) => {
      this.failure ??= e;
      this.pump();
    });
  }

  /** Bytes received and not yet read. */
  get pending(): number {
    return this.buffered;
  }

  read(n: number): Promise<Buffer> {
    if (this.waiting) return Promise.reject(new Error('ByteReader: one read at a time'));
    if (n === 0) return Promise.resolve(Buffer.alloc(0));
    return new Promise((resolve, reject) => {
      this.waiting = { n, resolve, reject };
      this.pump();
    });
  }

  private take(n: number): Buffer {
    let out: Buffer;
    const first = this.chunks[0]!;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const c = this.chunks[0]!;
        const k = Math.min(c.length, n - at);
        c.copy(out, at, 0, k);
        at += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.buffered -= n;
    if (this.buffered <= this.highWater && this.stream.isPaused()) this.stream.resume();
    return out;
  }

  private pump(): void {
    const w = this.waiting;
    if (!w) return;
    if (this.buffered >= w.n) {
      this.waiting = null;
      w.resolve(this.take(w.n));
      return;
    }
    // a read larger than highWater must not stall on a paused stream
    if (this.stream.isPaused() && !this.ended) this.stream.resume();
    if (this.failure || this.ended) {
      this.waiting = null;
      w.reject(this.failure ?? new EndOfStreamError(w.n, this.buffered));
    }
  }
}
