/**
 * Token bucket: `take()` resolves when a request may start, at most `ratePerSecond` on
 * average, with bursts of at most `burst` (default a tenth of a second's worth), so that
 * no one-second window sees much more than the rate. Callers are served in order.
 */
export class RateLimiter {
  private tokens: number;
  private last = performance.now();
  private queue: Promise<void> = Promise.resolve();
  readonly burst: number;

  constructor(readonly ratePerSecond: number, burst?: number) {
    if (!(ratePerSecond > 0)) throw new Error(`rate must be > 0 requests per second, not ${ratePerSecond}`);
    this.burst = burst ?? Math.max(1, Math.floor(ratePerSecond / 10));
    this.tokens = this.burst;
  }

  take(): Promise<void> {
    const next = this.queue.then(() => this.acquire());
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async acquire(): Promise<void> {
    for (;;) {
      const now = performance.now();
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.ratePerSecond);
      this.last = now;
      if (this.tokens >= 1) {
        this.tokens -= 1;
        return;
      }
      const waitMs = ((1 - this.tokens) / this.ratePerSecond) * 1000;
      await new Promise((r) => setTimeout(r, Math.max(1, Math.ceil(waitMs))));
    }
  }
}
