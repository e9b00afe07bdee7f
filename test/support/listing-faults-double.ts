/**
 * TEST DOUBLE: a store decorator whose listings misbehave the ways real ones
 * have (restic #4612, duplicacy PR 655): a listing that fails part-way, comes
 * back empty, is cut short without an error, or repeats a page of names.
 * Everything else passes through to the real store.
 */
import { BlobInfo, BlobStore, ByteRange, PutOptions } from '../../src/store/blob-store.js';

export type ListingFault = 'fail' | 'empty' | 'short' | 'duplicate';

export class ListingFaultsDouble implements BlobStore {
  /** prefix -> fault; a listing whose prefix starts with a key misbehaves. */
  readonly faults = new Map<string, ListingFault>();

  constructor(private readonly inner: BlobStore) {}

  get location(): string {
    return this.inner.location;
  }
  get capabilities() {
    return this.inner.capabilities;
  }
  put(name: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    return this.inner.put(name, data, options);
  }
  get(name: string, range?: ByteRange): Promise<Buffer> {
    return this.inner.get(name, range);
  }
  head(name: string): Promise<BlobInfo | null> {
    return this.inner.head(name);
  }
  delete(name: string): Promise<void> {
    return this.inner.delete(name);
  }
  close(): Promise<void> {
    return this.inner.close();
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    const fault = [...this.faults].find(([p]) => prefix.startsWith(p))?.[1];
    if (!fault) {
      yield* this.inner.list(prefix);
      return;
    }
    const all: BlobInfo[] = [];
    for await (const b of this.inner.list(prefix)) all.push(b);
    const half = Math.max(1, Math.floor(all.length / 2));
    switch (fault) {
      case 'empty':
        return;
      case 'fail':
        yield* all.slice(0, half);
        throw new Error('simulated listing failure (HTTP 500 on the second page)');
      case 'short':
        yield* all.slice(0, all.length > 1 ? half : 0);
        return;
      case 'duplicate':
        yield* all;
        yield* all.slice(0, half); // the provider repeated a page
        return;
    }
  }
}
