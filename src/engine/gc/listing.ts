import { UserError } from '../../repo/errors.js';
import { BlobStore } from '../../store/blob-store.js';
import { BatchWriter, GcWorkspace } from './workspace.js';

/**
 * Listings are not trusted blindly (restic #4612, duplicacy PR 655): a listing
 * that fails, repeats a name, or disagrees with what the index and the previous
 * epoch say must exist aborts the prune before anything is deleted. This module
 * does the per-listing checks; the cross-checks are in prune.ts.
 */
export class ListingError extends UserError {
  constructor(what: string) {
    super(`prune stopped, nothing deleted: ${what}`, 4);
  }
}

async function* guarded(store: BlobStore, prefix: string): AsyncIterable<{ name: string; size: number }> {
  try {
    for await (const b of store.list(prefix)) yield b;
  } catch (err) {
    throw new ListingError(`listing ${prefix} in ${store.location} failed (${(err as Error).message})`);
  }
}

/** Names under a prefix whose count stays small (index files, snapshots, leases). Repeats abort. */
export async function listNames(store: BlobStore, prefix: string): Promise<string[]> {
  const seen = new Set<string>();
  for await (const b of guarded(store, prefix)) {
    if (seen.has(b.name)) throw new ListingError(`the listing of ${prefix} returned ${b.name} twice (a repeated page?)`);
    seen.add(b.name);
  }
  return [...seen];
}

/** Lists data/ and meta/ into the workspace (any number of packs). Repeats abort. Returns the count. */
export async function listPacks(store: BlobStore, ws: GcWorkspace, prefixes: string[]): Promise<{ count: number; bytes: number }> {
  let yielded = 0;
  let bytes = 0;
  const w = new BatchWriter(ws.db);
  for (const prefix of prefixes) {
    for await (const b of guarded(store, prefix)) {
      const size = Buffer.allocUnsafe(8);
      size.writeBigUInt64LE(BigInt(b.size));
      await w.put(ws.packs, Buffer.from(b.name), size);
      yielded++;
      bytes += b.size;
    }
  }
  await w.flush();
  let unique = 0;
  for await (const _ of ws.packs.keys()) unique++;
  if (unique !== yielded) throw new ListingError(`the pack listing returned ${yielded} names but only ${unique} distinct ones (a repeated page?)`);
  return { count: unique, bytes };
}
