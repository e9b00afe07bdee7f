/**
 * The 15-minute incremental of the series: a copy of the last state with 40
 * scattered writes (about 14 MiB, 1% of the allocated data or less), as a busy
 * server writes between two 15-minute backups (database pages, logs, metadata),
 * and its change list at 64 KiB granularity. Seeded, so every run writes the
 * same bytes; cached beside the series.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, readSync, renameSync, statSync, writeFileSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import type { SeriesState } from '../make-series.js';

const WRITES = 40;
const BLOCK = 65536;
/** Write sizes, cycled: 4 KiB database pages up to 1 MiB log and file bursts (40 writes: 13.8 MiB). */
const SIZES = [4096, 8192, 65536, 262144, 1048576, 16384, 131072, 524288, 32768, 1048576];

export function quarterHourState(seriesDir: string, last: SeriesState): SeriesState {
  const name = `${last.name}q`;
  const image = path.join(seriesDir, `${name}.img`);
  const changes = path.join(seriesDir, `${name}.changes`);
  const meta = path.join(seriesDir, `${name}.json`);
  if (!existsSync(image) || !existsSync(meta)) {
    const tmp = `${image}.tmp`;
    const cp = spawnSync('cp', ['--sparse=always', path.join(seriesDir, last.image), tmp]);
    if (cp.status !== 0) throw new Error(`cp: ${cp.stderr}`);
    const fd = openSync(tmp, 'r+');
    // Seeded: positions from a hash chain, bytes from an AES-CTR stream (half text-like, half random).
    const key = createHash('sha256').update('pilotlight bench 15-minute change').digest();
    const stream = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
    const probe = Buffer.alloc(BLOCK);
    const touched = new Set<number>();
    let h = key;
    let written = 0;
    for (let i = 0; i < WRITES; i++) {
      const len = SIZES[i % SIZES.length]!;
      // a position in allocated, non-zero data (a running system rewrites what it has)
      let off = 0;
      for (let tries = 0; tries < 1000; tries++) {
        h = createHash('sha256').update(h).digest();
        off = Math.floor((h.readUInt32LE(0) * 2 ** 20 + (h.readUInt32LE(4) >>> 12)) % Math.max(1, last.capacity - len) / 4096) * 4096;
        readSync(fd, probe, 0, BLOCK, off - (off % BLOCK));
        if (probe.some((b) => b !== 0)) break;
      }
      let bytes = stream.update(Buffer.alloc(len));
      if (i % 2 === 0) bytes = Buffer.from(bytes.toString('base64').slice(0, len)); // compressible, like logs
      writeSync(fd, bytes, 0, len, off);
      written += len;
      for (let b = Math.floor(off / BLOCK); b <= Math.floor((off + len - 1) / BLOCK); b++) touched.add(b);
    }
    closeSync(fd);
    const blocks = [...touched].sort((a, b) => a - b);
    writeFileSync(changes, blocks.map((b) => `${b * BLOCK} ${BLOCK}`).join('\n') + '\n');
    renameSync(tmp, image);
    const st: SeriesState = {
      ...last,
      name,
      index: last.index + 1,
      image: `${name}.img`,
      allocatedBytes: statSync(image).blocks * 512,
      parent: last.name,
      changes: `${name}.changes`,
      changedBytes: blocks.length * BLOCK,
      steps: [`${WRITES} scattered writes of 4 KiB to 1 MiB (${(written / 2 ** 20).toFixed(1)} MiB written, half compressible): a 15-minute change`],
    };
    writeFileSync(meta, JSON.stringify(st, null, 2) + '\n');
  }
  return JSON.parse(readFileSync(meta, 'utf8')) as SeriesState;
}
