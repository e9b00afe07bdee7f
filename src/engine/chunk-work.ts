/**
 * The CPU work of backup and restore, for a worker thread (chunk-worker.ts) or,
 * for small jobs, the main thread itself (WorkerPool's inline mode):
 *  hash:   keyed BLAKE3 of each chunk of a batch (zero chunks get the zero id);
 *          the batch buffer is held until `encode`.
 *  encode: compress and seal the chosen chunks of a held batch, then hand the
 *          buffer back (transferred, not copied) for reuse.
 *  decode: open, decompress and verify blobs read from packs, written in place.
 */
import { BlobCodec } from '../repo/blob-codec.js';
import { Codec, Compression } from '../repo/compression.js';
import { BlobType, ID_BYTES } from '../repo/format.js';
import { KeyedHasher, createKeyedHasher } from '../repo/hasher.js';
import { GcPacer } from '../runtime/gc-pacer.js';
import type { BlobRef, WorkerReply, WorkerRequest, WorkerSetup } from './worker-pool.js';
import { nonZeroRuns } from './zero-runs.js';

/** Compression whose next decompression lands where `target` says (decode writes plaintexts in place). */
class TargetedCompression extends Compression {
  target: Uint8Array | null = null;
  override decompress(codec: Codec, data: Uint8Array): Uint8Array {
    const t = this.target;
    this.target = null;
    return t ? this.decompressInto(codec, data, t) : super.decompress(codec, data);
  }
}

function chunkViews(buf: ArrayBuffer, lengths: number[], base = 0): Buffer[] {
  const out: Buffer[] = [];
  let o = base;
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

/** Where each item's plaintext sits in a buffer of plaintexts laid end to end. */
function placed(items: { plainLength?: number }[]): BlobRef[] {
  let o = 0;
  return items.map((it) => {
    const r = { offset: o, length: it.plainLength! };
    o += it.plainLength!;
    return r;
  });
}

/**
 * Bytes of room per chunk that a batch buffer keeps before its first plaintext
 * (WorkerRequest 'hash', `base`): an encoded blob is at most its plaintext plus
 * 1 (codec byte) + 44 (seal format 2) bytes.
 */
export const ENCODE_HEADROOM = 64;

export class ChunkWork {
  private readonly compression: TargetedCompression;
  private readonly codec: BlobCodec;
  private readonly held = new Map<number, { buf: ArrayBuffer; lengths: number[]; base: number; ids: Buffer }>();
  private readonly pacer = new GcPacer();
  private zero = Buffer.alloc(64 * 1024);

  private constructor(
    private readonly hasher: KeyedHasher,
    private readonly setup: WorkerSetup,
  ) {
    this.compression = new TargetedCompression(setup.zstdLevel);
    // each thread seals with its own salted subkeys (FORMAT.md §4.3)
    this.codec = new BlobCodec(setup.encryptionKey ? Buffer.from(setup.encryptionKey) : null, this.compression, hasher, setup.blobSeal);
  }

  static async create(setup: WorkerSetup): Promise<ChunkWork> {
    return new ChunkWork(await createKeyedHasher(setup.idKey), setup);
  }

  /** Runs one request; `transfer` lists the buffers the reply may move to another thread. */
  handle(msg: WorkerRequest): { reply: WorkerReply; transfer: ArrayBuffer[] } {
    const r = this.run(msg);
    this.pacer.made(garbageOf(msg));
    return r;
  }

  /**
   * The one place a backup seals a chunk: compress (or store raw) and seal it as
   * a data blob, written into `dst` at `at`; returns the stored length.
   */
  private sealChunk(chunk: Buffer, c: Codec, id: Buffer, dst: Buffer, at: number): number {
    return this.codec.encodeInto(c, chunk, BlobType.Data, id, dst, at);
  }

  private run(msg: WorkerRequest): { reply: WorkerReply; transfer: ArrayBuffer[] } {
    switch (msg.op) {
      case 'hash': {
        const chunks = chunkViews(msg.buf, msg.lengths, msg.base);
        const ids = Buffer.alloc(chunks.length * ID_BYTES);
        const isZero: boolean[] = [];
        chunks.forEach((c, i) => {
          if (c.length > this.zero.length) this.zero = Buffer.alloc(c.length);
          const z = c.equals(this.zero.subarray(0, c.length));
          isZero.push(z);
          if (!z) this.hasher.hash(c).copy(ids, i * ID_BYTES);
        });
        this.held.set(msg.seq, { buf: msg.buf, lengths: msg.lengths, base: msg.base, ids });
        return { reply: { op: 'hashed', seq: msg.seq, ids, isZero }, transfer: [] };
      }
      case 'encode': {
        const h = this.held.get(msg.seq);
        if (!h) throw new Error(`no batch ${msg.seq} held`);
        this.held.delete(msg.seq);
        // Blobs are written over the batch buffer itself, from its start: the plaintexts
        // begin `base` bytes in (ENCODE_HEADROOM per chunk), so a blob (at most its
        // plaintext plus that headroom) never reaches a plaintext not yet encoded.
        // Nothing is allocated per blob but the cipher's output.
        const chunks = chunkViews(h.buf, h.lengths, h.base);
        const dst = Buffer.from(h.buf);
        const blobs: BlobRef[] = [];
        let at = 0;
        let chunkStart = h.base;
        let next = 0;
        for (const i of msg.which) {
          for (; next <= i; next++) chunkStart += h.lengths[next]!;
          const length = this.sealChunk(chunks[i]!, msg.codec as Codec, h.ids.subarray(i * ID_BYTES, (i + 1) * ID_BYTES), dst, at);
          blobs.push({ offset: at, length });
          at += length;
          // chunkStart is now where chunk i + 1's plaintext begins
          if (at > chunkStart) throw new Error(`encoded blobs overran the plaintext of chunk ${i + 1} (${at} > ${chunkStart})`);
        }
        return { reply: { op: 'encoded', seq: msg.seq, blobs, buf: h.buf }, transfer: [h.buf] };
      }
      case 'decode': {
        const data = msg.shared ? Buffer.from(msg.data, msg.shared.offset, msg.shared.length) : Buffer.from(msg.data);
        const errors = new Map<number, string>();
        // Plaintexts are decompressed straight into place: into the caller's shared
        // buffer (`into`), else into one new buffer when their lengths are known.
        const sized = msg.items.every((it) => it.plainLength !== undefined);
        const own = !msg.into && sized ? new ArrayBuffer(msg.items.reduce((t, it) => t + it.plainLength!, 0)) : null;
        const refs: BlobRef[] | null = msg.into ? msg.into.offsets.map((o, k) => ({ offset: o, length: msg.items[k]!.plainLength! })) : own ? placed(msg.items) : null;
        const dest = msg.into?.buf ?? own;
        const plains: Uint8Array[] = msg.items.map((it, k) => {
          try {
            if (it.offset + it.length > data.length) throw new Error(`${it.what}: range past the end of the data read`);
            this.compression.target = refs && dest ? new Uint8Array(dest, refs[k]!.offset, refs[k]!.length) : null;
            return this.codec.decode(data.subarray(it.offset, it.offset + it.length), it.id, it.what, it.type ?? BlobType.Data, it.seal ?? this.setup.blobSeal);
          } catch (err) {
            errors.set(k, (err as Error).message);
            return new Uint8Array(0);
          } finally {
            this.compression.target = null;
          }
        });
        const packed = refs ? { buf: own, refs } : pack(plains);
        const out = packed.refs.map((r, k) => (errors.has(k) ? { error: errors.get(k)! } : msg.runs ? { ...r, runs: nonZeroRuns(plains[k]!) } : r));
        return { reply: { op: 'decoded', seq: msg.seq, plain: packed.buf, refs: out }, transfer: packed.buf ? [packed.buf] : [] };
      }
      case 'hashPlain': {
        return { reply: { op: 'hashedPlain', seq: msg.seq, ids: msg.items.map((d) => this.hasher.hash(d)) }, transfer: [] };
      }
    }
  }
}

/** Bytes of short-lived buffers a request leaves behind (what it received and the codec's intermediates). */
function garbageOf(msg: WorkerRequest): number {
  switch (msg.op) {
    case 'decode':
      // a shared read buffer is reused, not garbage: only the opened (still compressed) blobs are
      return msg.shared ? msg.shared.length : msg.data.byteLength * 2;
    case 'encode':
      return msg.which.length * 65536; // the cipher's output
    default:
      return 0;
  }
}

