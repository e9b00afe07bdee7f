/**
 * What a restore target holds, recorded in a sidecar file beside it
 * (`IMAGE.pilotlight`; for a block device, under the cache root's `targets/`).
 *
 * A sidecar rather than an extended attribute: Node has no xattr API, several
 * file systems an image may live on (NFS exports, some FUSE mounts) drop or
 * refuse user xattrs, a block device node's xattrs live on /dev's tmpfs and vanish
 * at reboot, and a sidecar can be read by a person (`cat`). Losing it is safe:
 * `--since` then refuses and asks for a full restore.
 *
 * The record says which repository, snapshot and disk the target holds, and a
 * fingerprint of the target taken right after the restore finished: size, inode,
 * mtime and ctime (a file target; a boot or any write moves mtime and ctime, and
 * ctime cannot be set back), and a SHA-256 of sampled blocks (every target; the
 * only check for a block device, whose node's times do not move on writes). The
 * sample covers the first 4 MiB (partition tables, boot and file-system
 * superblocks, which a mount rewrites), the last 1 MiB (a backup GPT) and 256
 * blocks of 4 KiB spread evenly; it cannot see a change that touches none of
 * them on a block device.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { UserError } from '../repo/errors.js';

export interface TargetFingerprint {
  size: number;
  /** File targets only. */
  ino?: number;
  mtimeNs?: string;
  ctimeNs?: string;
  sampleSha256: string;
}

export interface TargetRecord {
  version: 1;
  repository: string;
  vm: string;
  snapshot: string;
  disk: number;
  diskName: string;
  capacity: number;
  /** 'complete': the target holds `snapshot`. 'updating': a --since update to `updatingTo` started and has not finished. */
  state: 'complete' | 'updating';
  updatingTo?: string;
  fingerprint?: TargetFingerprint;
  time: string;
}

const SAMPLE_HEAD = 4 << 20;
const SAMPLE_TAIL = 1 << 20;
const SAMPLE_BLOCKS = 256;
const SAMPLE_BLOCK = 4096;

/** Where the record of `target` is kept. */
export function recordPath(target: string, isDevice: boolean, cacheRoot: string): string {
  if (!isDevice) return `${target}.pilotlight`;
  return path.join(cacheRoot, 'targets', `${Buffer.from(path.resolve(target)).toString('hex')}.json`);
}

export async function readRecord(file: string): Promise<TargetRecord | null> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    const r = JSON.parse(text) as TargetRecord;
    if (r.version !== 1 || typeof r.snapshot !== 'string') throw new Error('unknown layout');
    return r;
  } catch (err) {
    throw new UserError(`${file} is not a pilotlight target record (${(err as Error).message}); delete it and restore in full with --force`);
  }
}

/** Writes the record durably: a temporary file beside it, fsynced, renamed over, and the directory fsynced. */
export async function writeRecord(file: string, record: TargetRecord): Promise<void> {
  await fsp.mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  const fh = await fsp.open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(JSON.stringify(record, null, 2) + '\n');
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fsp.rename(tmp, file);
  await syncDir(path.dirname(file));
}

export async function syncDir(dir: string): Promise<void> {
  const d = await fsp.open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

/** Fingerprint of an open target of `size` bytes. */
export async function fingerprint(fh: fsp.FileHandle, size: number, isDevice: boolean): Promise<TargetFingerprint> {
  const h = createHash('sha256');
  const buf = Buffer.alloc(SAMPLE_HEAD);
  const readAt = async (offset: number, length: number) => {
    const n = Math.max(0, Math.min(length, size - offset));
    const { bytesRead } = await fh.read(buf, 0, n, offset);
    h.update(buf.subarray(0, bytesRead));
  };
  await readAt(0, SAMPLE_HEAD);
  await readAt(Math.max(0, size - SAMPLE_TAIL), SAMPLE_TAIL);
  const step = Math.floor(size / SAMPLE_BLOCKS / SAMPLE_BLOCK) * SAMPLE_BLOCK;
  if (step > 0) for (let i = 0; i < SAMPLE_BLOCKS; i++) await readAt(i * step, SAMPLE_BLOCK);
  const fp: TargetFingerprint = { size, sampleSha256: h.digest('hex') };
  if (!isDevice) {
    const st = await fh.stat({ bigint: true });
    fp.ino = Number(st.ino);
    fp.mtimeNs = st.mtimeNs.toString();
    fp.ctimeNs = st.ctimeNs.toString();
  }
  return fp;
}

/** What differs between a recorded fingerprint and the target now, or null when nothing does. */
export function fingerprintChange(was: TargetFingerprint, now: TargetFingerprint): string | null {
  if (was.size !== now.size) return `its size changed (${was.size} -> ${now.size} bytes)`;
  if (was.ino !== undefined && was.ino !== now.ino) return 'it was replaced by another file (inode changed)';
  if (was.mtimeNs !== undefined && was.mtimeNs !== now.mtimeNs) return 'it was written since (modification time changed)';
  if (was.ctimeNs !== undefined && was.ctimeNs !== now.ctimeNs) return 'it was changed since (inode change time moved)';
  if (was.sampleSha256 !== now.sampleSha256) return 'its content changed (sampled blocks differ)';
  return null;
}
