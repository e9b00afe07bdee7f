/**
 * The mapping pilotlight snapshot -> EBS snapshot, kept in the repository.
 *
 * One small JSON object per completed push, under
 *   cloud/ebs/<vm>/<disk index>/<pilotlight snapshot id>
 * written with put(ifNotExists) once CompleteSnapshot succeeded, so it never names an
 * EBS snapshot that is not whole. A push that was interrupted leaves no record; the next
 * push starts from the newest recorded one (its EBS snapshot is the ParentSnapshotId
 * and its pilotlight snapshot is the base that changed blocks are computed against).
 *
 * Name segments: characters outside [A-Za-z0-9.-] (and `_` itself) are written as
 * `_xx` (two lowercase hex digits per UTF-8 byte), so any VM name fits the BlobStore
 * naming rule and the encoding is reversible. See docs/AWS.md.
 */
import { BlobExistsError, BlobStore, isNotFound } from '../store/blob-store.js';

export const EBS_MAP_PREFIX = 'cloud/ebs/';

export interface EbsMapRecord {
  format: 'pilotlight-ebs-map';
  version: 1;
  vm: string;
  diskIndex: number;
  diskName: string;
  /** pilotlight snapshot id and time of the image pushed. */
  snapshot: string;
  snapshotTime: string;
  /** Disk capacity in bytes. */
  capacity: number;
  region?: string;
  ebsSnapshotId: string;
  volumeSizeGiB: number;
  blockSize: number;
  /** The EBS snapshot this one was pushed on top of, and the pilotlight snapshot it holds. */
  parentEbsSnapshotId?: string;
  baseSnapshot?: string;
  /** True when nothing changed since baseSnapshot: ebsSnapshotId is that push's snapshot. */
  unchanged?: boolean;
  blocksSent: number;
  bytesSent: number;
  completedAt: string;
}

import { decodeSegment, encodeSegment } from '../repo/name-segment.js';

export { decodeSegment, encodeSegment } from '../repo/name-segment.js';

export function ebsMapPrefix(vm: string, diskIndex: number): string {
  return `${EBS_MAP_PREFIX}${encodeSegment(vm)}/${diskIndex}/`;
}

export function ebsMapName(vm: string, diskIndex: number, snapshot: string): string {
  return ebsMapPrefix(vm, diskIndex) + encodeSegment(snapshot);
}

function parse(bytes: Buffer, name: string): EbsMapRecord {
  const rec = JSON.parse(bytes.toString('utf8')) as EbsMapRecord;
  if (rec.format !== 'pilotlight-ebs-map' || rec.version !== 1 || typeof rec.ebsSnapshotId !== 'string') {
    throw new Error(`${name} is not a pilotlight EBS map record (version 1); it may come from a newer pilotlight`);
  }
  return rec;
}

/**
 * Records a completed push. Idempotent for the same EBS snapshot; a record naming a
 * different EBS snapshot for the same pilotlight snapshot is kept and an error says so.
 */
export async function putEbsMap(store: BlobStore, rec: EbsMapRecord): Promise<void> {
  const name = ebsMapName(rec.vm, rec.diskIndex, rec.snapshot);
  try {
    await store.put(name, Buffer.from(JSON.stringify(rec, null, 1) + '\n'), { ifNotExists: true, kind: 'metadata' });
  } catch (err) {
    if (!(err instanceof BlobExistsError) && (err as { code?: string }).code !== 'BLOB_EXISTS') throw err;
    const old = parse(await store.get(name), name);
    if (old.ebsSnapshotId !== rec.ebsSnapshotId) {
      throw new Error(
        `snapshot ${rec.snapshot} of ${rec.vm} disk ${rec.diskIndex} is already recorded as EBS snapshot ${old.ebsSnapshotId}; ` +
          `${rec.ebsSnapshotId} was pushed concurrently and is not recorded (delete it with \`aws ec2 delete-snapshot --snapshot-id ${rec.ebsSnapshotId}\`)`,
      );
    }
  }
}

export async function getEbsMap(store: BlobStore, vm: string, diskIndex: number, snapshot: string): Promise<EbsMapRecord | null> {
  const name = ebsMapName(vm, diskIndex, snapshot);
  try {
    return parse(await store.get(name), name);
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

/** Every record of one disk of one VM, oldest pilotlight snapshot first. */
export async function listEbsMaps(store: BlobStore, vm: string, diskIndex: number): Promise<EbsMapRecord[]> {
  const out: EbsMapRecord[] = [];
  for await (const b of store.list(ebsMapPrefix(vm, diskIndex))) {
    out.push(parse(await store.get(b.name), b.name));
  }
  return out.sort((a, b) => a.snapshotTime.localeCompare(b.snapshotTime) || a.snapshot.localeCompare(b.snapshot));
}

/** pilotlight snapshot ids start with their UTC time (`20261126T071306Z-1e4e3a29`). */
const TIME_ORDERED_ID = /^[0-9]{8}T[0-9]{6}Z-/;

/**
 * The newest record whose pilotlight snapshot is older than `before` (by time), with
 * the same capacity, in `region` when given: the parent of the next push.
 *
 * One LIST, then records are read newest first and the search stops at the first match
 * when every name is a time-ordered snapshot id (so a push does not read every record of
 * years of 15-minute backups); otherwise every record is read.
 */
export async function newestEbsMapBefore(
  store: BlobStore,
  vm: string,
  diskIndex: number,
  before: { time: string; id: string },
  filter: { capacity?: number; region?: string } = {},
): Promise<EbsMapRecord | null> {
  const ok = (r: EbsMapRecord) =>
    r.snapshot !== before.id &&
    r.snapshotTime <= before.time &&
    (filter.capacity === undefined || r.capacity === filter.capacity) &&
    (filter.region === undefined || r.region === undefined || r.region === filter.region);
  const names: { name: string; id: string }[] = [];
  for await (const b of store.list(ebsMapPrefix(vm, diskIndex))) {
    names.push({ name: b.name, id: decodeSegment(b.name.slice(b.name.lastIndexOf('/') + 1)) });
  }
  if (names.length > 0 && names.every((n) => TIME_ORDERED_ID.test(n.id)) && TIME_ORDERED_ID.test(before.id)) {
    names.sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
    // Ids order by their time to the second; within one second the random suffix does not
    // order them, so every record of the second of the first match is compared by time.
    let best: EbsMapRecord | null = null;
    for (const n of names) {
      const second = n.id.slice(0, 16);
      if (second > before.id.slice(0, 16)) continue;
      if (best && second < best.snapshot.slice(0, 16)) break;
      const rec = parse(await store.get(n.name), n.name);
      if (ok(rec) && (!best || rec.snapshotTime > best.snapshotTime || (rec.snapshotTime === best.snapshotTime && rec.snapshot > best.snapshot))) best = rec;
    }
    return best;
  }
  const all = await listEbsMaps(store, vm, diskIndex);
  const hits = all.filter(ok);
  return hits.length ? hits[hits.length - 1] : null;
}
