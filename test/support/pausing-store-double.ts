/**
 * TEST DOUBLE: a store decorator that holds a chosen operation until the test
 * releases it, to force an interleaving of a backup and a prune at one protocol
 * step. `pause(match)` returns a gate: `reached` resolves when the first
 * matching call arrives (it then waits), `release()` lets it (and later matching
 * calls) through.
 */
import { BlobInfo, BlobStore, ByteRange, PutOptions } from '../../src/store/blob-store.js';

export type Op = 'put' | 'get' | 'head' | 'list' | 'delete';

export interface Gate {
  reached: Promise<string>;
  release(): void;
  readonly hit: boolean;
}

interface Rule {
  match: (op: Op, name: string) => boolean;
  onReach: (name: string) => void;
  released: Promise<void>;
  hit: boolean;
}

export class PausingStoreDouble implements BlobStore {
  private rules: Rule[] = [];

  constructor(private readonly inner: BlobStore) {}

  pause(match: (op: Op, name: string) => boolean): Gate {
    let onReach!: (n: string) => void;
    let release!: () => void;
    const reached = new Promise<string>((r) => (onReach = r));
    const released = new Promise<void>((r) => (release = r));
    const rule: Rule = { match, onReach, released, hit: false };
    this.rules.push(rule);
    return {
      reached,
      release: () => {
        this.rules = this.rules.filter((x) => x !== rule);
        release();
      },
      get hit() {
        return rule.hit;
      },
    };
  }

  private async gate(op: Op, name: string): Promise<void> {
    for (const r of this.rules) {
      if (r.match(op, name)) {
        r.hit = true;
        r.onReach(name);
        await r.released;
      }
    }
  }

  get location(): string {
    return this.inner.location;
  }
  get capabilities() {
    return this.inner.capabilities;
  }
  async put(name: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    await this.gate('put', name);
    return this.inner.put(name, data, options);
  }
  async get(name: string, range?: ByteRange): Promise<Buffer> {
    await this.gate('get', name);
    return this.inner.get(name, range);
  }
  async head(name: string): Promise<BlobInfo | null> {
    await this.gate('head', name);
    return this.inner.head(name);
  }
  async *list(prefix: string): AsyncIterable<BlobInfo> {
    await this.gate('list', prefix);
    yield* this.inner.list(prefix);
  }
  async delete(name: string): Promise<void> {
    await this.gate('delete', name);
    return this.inner.delete(name);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
