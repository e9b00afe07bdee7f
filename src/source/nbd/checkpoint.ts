/**
 * QEMU checkpoints as change tokens, and the rule that decides whether a dirty bitmap
 * may stand for "what changed since the parent snapshot".
 *
 * The token a snapshot records for a disk names the checkpoint that starts at this
 * snapshot: the dirty bitmap that records every write made after it. Bitmap names are
 * the identity: pilotlight's own (--qmp) are unique (`pilotlight-<time>-<random>`);
 * for bitmaps made by hand or by libvirt, a name must not be reused for a new bitmap.
 *
 *   qemu:checkpoint=NAME[&granularity=BYTES][&node=NODE]
 *
 * A later run trusts bitmap B as its change list only when B is the parent's
 * checkpoint, the server offers it, QEMU does not mark it inconsistent (in use) and
 * its granularity is the one recorded. Anything else is a full read of the allocated
 * extents, deduplicated against the parent, with the reason.
 */
export interface CheckpointToken {
  checkpoint: string;
  granularity?: number;
  node?: string;
}

const PREFIX = 'qemu:';

export function encodeCheckpoint(t: CheckpointToken): string {
  const p = new URLSearchParams({ checkpoint: t.checkpoint });
  if (t.granularity !== undefined) p.set('granularity', String(t.granularity));
  if (t.node !== undefined) p.set('node', t.node);
  return PREFIX + p.toString();
}

/** The token, or undefined when `token` is not a QEMU checkpoint (another source's, or none). */
export function decodeCheckpoint(token: string | undefined): CheckpointToken | undefined {
  if (!token?.startsWith(PREFIX)) return undefined;
  const p = new URLSearchParams(token.slice(PREFIX.length));
  const checkpoint = p.get('checkpoint');
  if (!checkpoint) return undefined;
  const g = p.get('granularity');
  const granularity = g !== null && /^\d+$/.test(g) ? Number(g) : undefined;
  return { checkpoint, ...(granularity ? { granularity } : {}), ...(p.get('node') ? { node: p.get('node')! } : {}) };
}

/** What is known of the bitmap this run may read. */
export interface BitmapState {
  name: string;
  /** The checkpoint the bitmap records writes since (default: its name). */
  since?: string;
  /** The NBD export offers qemu:dirty-bitmap:NAME. */
  offered: boolean;
  /** From QMP; undefined when only NBD is available. */
  granularity?: number;
  inconsistent?: boolean;
  busy?: boolean;
  /** QMP found no bitmap of this name on the node at all. */
  missingOnNode?: boolean;
}

export type BitmapVerdict = { use: true; reason: string } | { use: false; reason: string };

/**
 * Whether `bitmap` holds every write since the parent snapshot whose token is `since`.
 * `dirtyBoundaries` are the dirty extents (to catch a bitmap finer than recorded when
 * QMP cannot tell the granularity); `capacity` ends the last one.
 */
export function judgeBitmap(
  since: string | undefined,
  hasParent: boolean,
  bitmap: BitmapState,
  dirty: { offset: number; length: number }[] | undefined,
  capacity: number,
): BitmapVerdict {
  const parent = hasParent ? decodeCheckpoint(since) : undefined;
  const b = JSON.stringify(bitmap.name);
  if (!hasParent) return { use: false, reason: `no parent snapshot of this disk: allocated extents (base:allocation); checkpoint ${b} starts here` };
  if (!parent) {
    return { use: false, reason: `the parent snapshot has no QEMU checkpoint for this disk: allocated extents (base:allocation), deduplicated against the parent` };
  }
  const p = JSON.stringify(parent.checkpoint);
  const fallback = (why: string): BitmapVerdict => ({ use: false, reason: `${why}: read all allocated extents (base:allocation), deduplicated against the parent` });
  const from = bitmap.since ?? bitmap.name;
  if (parent.checkpoint !== from) {
    return fallback(`bitmap ${b}${bitmap.since ? ` (since checkpoint ${JSON.stringify(from)})` : ''} belongs to another checkpoint than the parent snapshot's (${p})`);
  }
  if (bitmap.missingOnNode) return fallback(`bitmap ${b} (the parent snapshot's checkpoint) no longer exists on the node (removed, or lost when QEMU restarted: a bitmap on a raw disk is not persistent)`);
  if (bitmap.inconsistent) return fallback(`bitmap ${b} is marked inconsistent (its in-use flag was left set: QEMU stopped without flushing it)`);
  if (bitmap.busy) return fallback(`bitmap ${b} is busy (another block job uses it)`);
  if (!bitmap.offered) {
    return fallback(
      `bitmap ${b} (the parent snapshot's checkpoint) is not offered by the export: it is missing, or marked in use/inconsistent (QEMU stopped without flushing it; qemu-nbd -B refuses such a bitmap)`,
    );
  }
  if (parent.granularity !== undefined && bitmap.granularity !== undefined && parent.granularity !== bitmap.granularity) {
    return fallback(`bitmap ${b} has granularity ${bitmap.granularity}, the checkpoint was recorded with ${parent.granularity} (the bitmap was re-created)`);
  }
  if (parent.granularity !== undefined && dirty) {
    const g = parent.granularity;
    const off = dirty.find((e) => e.offset % g !== 0 || ((e.offset + e.length) % g !== 0 && e.offset + e.length !== capacity));
    if (off) return fallback(`bitmap ${b} has a dirty extent at ${off.offset}+${off.length}, finer than the recorded granularity ${g} (the bitmap was re-created)`);
  }
  return { use: true, reason: `dirty bitmap ${b} (checkpoint of the parent snapshot)` };
}
