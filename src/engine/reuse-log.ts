import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ID_BYTES } from '../repo/format.js';
import { INDEX_ENTRY_BYTES, IndexEntry, decodeLocation, encodeLocation } from '../repo/index-file.js';

const FLUSH_BYTES = 1 << 20;

/**
 * The blobs one backup run reused from the repository (found in the index, not
 * written by this run), with where the index put them: an append-only temporary
 * file (77 bytes a blob), so memory stays at one 1 MiB buffer whatever the run
 * reuses. When a GC epoch condemns a pack, the run scans it and stores again
 * what it reused from that pack.
 */
export class ReuseLog {
  private buf: Buffer[] = [];
  private bufBytes = 0;
  private file: string | null = null;
  private writing: Promise<void> = Promise.resolve();
  count = 0;

  private async path(): Promise<string> {
    if (!this.file) {
      const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pilotlight-reuse-'));
      this.file = path.join(dir, 'log');
    }
    return this.file;
  }

  add(e: IndexEntry): void {
    const b = Buffer.allocUnsafe(INDEX_ENTRY_BYTES);
    e.id.copy(b, 0);
    encodeLocation(e, b, ID_BYTES);
    this.buf.push(b);
    this.bufBytes += b.length;
    this.count++;
    if (this.bufBytes >= FLUSH_BYTES) void this.flush();
  }

  flush(): Promise<void> {
    const chunk = this.buf;
    this.buf = [];
    this.bufBytes = 0;
    if (chunk.length === 0) return this.writing;
    this.writing = this.writing.then(async () => fsp.appendFile(await this.path(), Buffer.concat(chunk)));
    return this.writing;
  }

  /** Every entry logged so far. */
  async *entries(): AsyncIterable<IndexEntry> {
    await this.flush();
    if (!this.file) return;
    const fh = await fsp.open(this.file, 'r');
    try {
      const block = Buffer.allocUnsafe(INDEX_ENTRY_BYTES * 8192);
      for (let pos = 0; ; ) {
        const { bytesRead } = await fh.read(block, 0, block.length, pos);
        if (bytesRead <= 0) break;
        const whole = bytesRead - (bytesRead % INDEX_ENTRY_BYTES);
        for (let o = 0; o < whole; o += INDEX_ENTRY_BYTES) {
          yield { id: Buffer.from(block.subarray(o, o + ID_BYTES)), ...decodeLocation(block, o + ID_BYTES) };
        }
        pos += whole;
        if (whole === 0) break;
      }
    } finally {
      await fh.close();
    }
  }

  async close(): Promise<void> {
    await this.writing.catch(() => {});
    if (this.file) await fsp.rm(path.dirname(this.file), { recursive: true, force: true });
  }
}
