/**
 * Worker thread: the CPU work of backup and restore.
 *  hash:   keyed BLAKE3 of each chunk of a batch (zero chunks get the zero id);
 *          the batch buffer stays here until `encode` or `release`.
 *  encode: compress and seal the chosen chunks of a held batch, then hand the
 *          buffer back (transferred, not copied) for reuse.
 *  decode: open, decompress and verify blobs read from packs.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { BlobCodec } from '../repo/blob-codec.js';
import { Codec, Compression } from '../repo/compression.js';
import { Sealer } from '../repo/crypto.js';
import { ID_BYTES } from '../repo/format.js';
import { createKeyedHasher } from '../repo/hasher.js';
import type { BlobRef, WorkerReply, WorkerRequest, WorkerSetup } from './worker-pool.js';
import { nonZeroRuns } from './zero-runs.js';

const setup = workerData as WorkerSetup;
const hasher = await createKeyedHasher(setup.idKey);
const sealer = new Sealer(setup.encryptionKey ? Buffer.from(setup.encryptionKey) : null);
const codec = new BlobCodec(sealer, new Compression(setup.zstdLevel), hasher);
const held = new Map<number, { buf: ArrayBuffer; lengths: number[] }>();
let zero = Buffer.alloc(64 * 1024);

function chunkViews(buf: ArrayBuffer, lengths: number[]): Buffer[] {
  const out: Buffer[] = [];
  let o = 0;
  for (const len of lengths) {
    out.push(Buffer.from(buf, o, len));
    o += len;
  }
  return out;
}

/** Packs byte arrays into one new ArrayBuffer, so the reply can move it instead of copying each. */
function pack(parts: Uint8Array[]): { buf: ArrayBuffer; refs: BlobRef[] } {
  const total = parts.reduce((s, p) => s + p.length, 0);
  const buf = new ArrayBuffer(total);
  const view = new Uint8Array(buf);
  const refs: BlobRef[] = [];
  let o = 0;
  for (const p of parts) {
    view.set(p, o);
    refs.push({ offset: o, length: p.length });
    o += p.length;
  }
  return { buf, refs };
}

function handle(msg: WorkerRequest): { reply: WorkerReply; transfer: ArrayBuffer[] } {
  switch (msg.op) {
    case 'hash': {
      const chunks = chunkViews(msg.buf, msg.lengths);
      const ids = Buffer.alloc(chunks.length * ID_BYTES);
      const isZero: boolean[] = [];
      chunks.forEach((c, i) => {
        if (c.length > zero.length) zero = Buffer.alloc(c.length);
        const z = c.equals(zero.subarray(0, c.length));
        isZero.push(z);
        if (!z) hasher.hash(c).copy(ids, i * ID_BYTES);
      });
      held.set(msg.seq, { buf: msg.buf, lengths: msg.lengths });
      return { reply: { op: 'hashed', seq: msg.seq, ids, isZero }, transfer: [] };
    }
    case 'encode': {
      const h = held.get(msg.seq);
      if (!h) throw new Error(`no batch ${msg.seq} held`);
      held.delete(msg.seq);
      const chunks = chunkViews(h.buf, h.lengths);
      const { buf, refs } = pack(msg.which.map((i) => codec.encode(msg.codec as Codec, chunks[i]!)));
      return { reply: { op: 'encoded', seq: msg.seq, blobs: buf, refs, buf: h.buf }, transfer: [buf, h.buf] };
    }
    case 'decode': {
      const data = Buffer.from(msg.data);
      const errors = new Map<number, string>();
      const plains: Uint8Array[] = msg.items.map((it, k) => {
        try {
          if (it.offset + it.length > data.length) throw new Error(`${it.what}: range past the end of the data read`);
          return codec.decode(data.subarray(it.offset, it.offset + it.length), it.id, it.what);
        } catch (err) {
          errors.set(k, (err as Error).message);
          return new Uint8Array(0);
        }
      });
      const { buf, refs } = pack(plains);
      const out = refs.map((r, k) => (errors.has(k) ? { error: errors.get(k)! } : msg.runs ? { ...r, runs: nonZeroRuns(plains[k]!) } : r));
      return { reply: { op: 'decoded', seq: msg.seq, plain: buf, refs: out }, transfer: [buf] };
    }
    case 'hashPlain': {
      return { reply: { op: 'hashedPlain', seq: msg.seq, ids: msg.items.map((d) => hasher.hash(d)) }, transfer: [] };
    }
  }
}

parentPort!.on('message', (msg: WorkerRequest) => {
  try {
    const { reply, transfer } = handle(msg);
    parentPort!.postMessage(reply, transfer);
  } catch (err) {
    parentPort!.postMessage({ op: 'error', seq: msg.seq, message: (err as Error).message } satisfies WorkerReply);
  }
});
