import { setTimeout as sleep } from 'node:timers/promises';
import { BlobStore } from '../../store/blob-store.js';
import { fenceExists, writeFence } from '../../repo/fence.js';
import { LeaseInfo, leaseExpiryMs, leaseName, readLease } from '../../repo/lease.js';

export type LeaseOutcome = 'ended' | 'acknowledged' | 'fenced';

/**
 * Waits until each lease has ended, acknowledged `epoch` (seenEpoch >= epoch), or
 * expired. Expiry is judged without trusting any clock but this process's
 * monotonic one: a lease is expired when its content (its `seq`) has not changed
 * for the lease expiry while we watched it. An expired lease is fenced before
 * we stop waiting for it, so its holder commits nothing.
 */
export async function waitForLeases(
  store: BlobStore,
  leases: LeaseInfo[],
  epoch: number,
  fencedBy: string,
  pollMs: number,
): Promise<Map<string, LeaseOutcome>> {
  const expiry = leaseExpiryMs();
  const out = new Map<string, LeaseOutcome>();
  const watch = new Map<string, { seq: number; since: number }>();
  for (const l of leases) watch.set(l.id, { seq: l.seq, since: performance.now() });
  while (watch.size > 0) {
    for (const [id, w] of [...watch]) {
      const cur = await readLease(store, leaseName(id));
      if (!cur) {
        out.set(id, (await fenceExists(store, id)) ? 'fenced' : 'ended');
        watch.delete(id);
      } else if (cur.seenEpoch >= epoch) {
        out.set(id, 'acknowledged');
        watch.delete(id);
      } else if (await fenceExists(store, id)) {
        out.set(id, 'fenced');
        watch.delete(id);
      } else if (cur.seq !== w.seq) {
        watch.set(id, { seq: cur.seq, since: performance.now() });
      } else if (performance.now() - w.since >= expiry) {
        await writeFence(store, id, fencedBy, `lease did not change for ${expiry} ms while GC epoch ${epoch} waited for it`);
        out.set(id, 'fenced');
        watch.delete(id);
      }
    }
    if (watch.size > 0) await sleep(pollMs);
  }
  return out;
}

/**
 * Whether a lease is held by a live process: it changes within the expiry.
 * Returns false (and fences it, when asked) if it stays unchanged that long.
 */
export async function leaseIsLive(store: BlobStore, l: LeaseInfo, pollMs: number): Promise<boolean> {
  const start = performance.now();
  while (performance.now() - start < leaseExpiryMs()) {
    const cur = await readLease(store, leaseName(l.id));
    if (!cur) return false;
    if (cur.seq !== l.seq) return true;
    await sleep(pollMs);
  }
  return false;
}
