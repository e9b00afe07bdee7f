import { DiskSource, SourceDisk } from './disk-source.js';

/**
 * Limits how fast a source is read (bytes per second over all its disks), to spare the
 * production storage a backup reads from. A token bucket with one second of burst.
 */
export class ThrottledSource implements DiskSource {
  private available: number;
  private last = Date.now();
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly inner: DiskSource,
    private readonly bytesPerSecond: number,
  ) {
    this.available = bytesPerSecond;
  }

  get vm(): string {
    return this.inner.vm;
  }

  get consistencyTime(): Date | undefined {
    // the source's consistency point, for a build whose sources have one (retention)
    return (this.inner as { consistencyTime?: Date }).consistencyTime;
  }

  /** Waits until `n` bytes may be read. */
  private take(n: number): Promise<void> {
    const next = this.chain.then(async () => {
      const now = Date.now();
      this.available = Math.min(this.bytesPerSecond, this.available + ((now - this.last) / 1000) * this.bytesPerSecond);
      this.last = now;
      this.available -= n;
      if (this.available < 0) await new Promise((r) => setTimeout(r, (-this.available / this.bytesPerSecond) * 1000));
    });
    this.chain = next;
    return next;
  }

  async disks(): Promise<SourceDisk[]> {
    const disks = await this.inner.disks();
    return disks.map((d) => ({
      name: d.name,
      capacity: d.capacity,
      changeToken: d.changeToken,
      extents: (since, hasParent) => d.extents(since, hasParent),
      read: async (buf, offset, length) => {
        await this.take(length);
        return d.read(buf, offset, length);
      },
    }));
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
