/**
 * Walks NBD_CMD_BLOCK_STATUS over a whole export in bounded requests and keeps, per
 * meta context, the byte ranges whose flags a predicate selects (dirty blocks of a
 * bitmap, data of base:allocation).
 *
 * A server may answer a context with extents covering less than asked, or (for the
 * last extent) a little more: each round advances to the smallest end every context
 * covered, clipping the others, and asks again from there. Adjacent selected ranges
 * are merged as they arrive, so memory is one Extent per selected run of blocks.
 */
import type { Extent } from '../source/disk-source.js';
import type { NbdClient } from './client.js';
import { NbdProtocolError } from './protocol.js';

/** Bytes asked for per request: 1 GiB (a 32-bit length, aligned to any block size). */
export const BLOCK_STATUS_REQUEST = 1 << 30;

export interface ContextQuery {
  id: number;
  /** Keeps an extent whose flags this accepts. */
  keep(flags: number): boolean;
}

export interface BlockStatusWalk {
  /** Selected ranges per context id, sorted, merged, inside [0, size). */
  extents: Map<number, Extent[]>;
  requests: number;
}

export async function walkBlockStatus(client: NbdClient, queries: ContextQuery[], size = client.size, request = BLOCK_STATUS_REQUEST): Promise<BlockStatusWalk> {
  const out = new Map<number, Extent[]>(queries.map((q) => [q.id, []]));
  let pos = 0;
  let requests = 0;
  while (pos < size) {
    const len = Math.min(request, size - pos);
    const answer = await client.blockStatus(pos, len);
    requests++;
    let advance = Infinity;
    const spans = new Map<number, { offset: number; length: number; flags: number }[]>();
    for (const q of queries) {
      const exts = answer.get(q.id);
      if (!exts || exts.length === 0) throw new NbdProtocolError(`block status at ${pos}: no answer for meta context ${q.id}`);
      let at = pos;
      const list: { offset: number; length: number; flags: number }[] = [];
      for (const e of exts) {
        if (e.length === 0) throw new NbdProtocolError(`block status at ${pos}: an extent of length 0`);
        list.push({ offset: at, length: e.length, flags: e.flags });
        at += e.length;
      }
      spans.set(q.id, list);
      advance = Math.min(advance, at, size);
    }
    for (const q of queries) {
      const acc = out.get(q.id)!;
      for (const s of spans.get(q.id)!) {
        if (s.offset >= advance) break;
        if (!q.keep(s.flags)) continue;
        const end = Math.min(s.offset + s.length, advance);
        const last = acc[acc.length - 1];
        if (last && last.offset + last.length === s.offset) last.length = end - last.offset;
        else acc.push({ offset: s.offset, length: end - s.offset });
      }
    }
    pos = advance;
  }
  return { extents: out, requests };
}
