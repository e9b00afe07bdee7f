import { BlobExistsError, BlobStore, isNotFound } from '../store/blob-store.js';

/**
 * Fences (`fences/<lease id>`, plaintext JSON): a lease that a prune stopped
 * waiting for (it expired) or that `unlock` removed. A fenced holder commits
 * nothing: it checks its fence before and after putting its snapshot record.
 * The first prune that reads the roots after a fence exists decides it:
 * `fences/<lease id>.decided` lists the records of that lease it accepted as
 * roots; any other record of that lease is not committed (readers hide it).
 * See docs/FORMAT.md, "Fences".
 */
export const FENCES_PREFIX = 'fences/';

export interface FenceInfo {
  lease: string;
  /** 'prune <lease id>' or 'unlock'. */
  by: string;
  reason: string;
  created: string;
}

export interface FenceDecision {
  lease: string;
  epoch: number;
  accepted: string[];
}

export function fenceName(leaseId: string): string {
  return `${FENCES_PREFIX}${leaseId}`;
}

export async function fenceExists(store: BlobStore, leaseId: string): Promise<boolean> {
  return (await store.head(fenceName(leaseId))) !== null;
}

/** Writes a fence (no-overwrite: an existing fence stays as it is). */
export async function writeFence(store: BlobStore, leaseId: string, by: string, reason: string): Promise<void> {
  const info: FenceInfo = { lease: leaseId, by, reason, created: new Date().toISOString() };
  try {
    await store.put(fenceName(leaseId), Buffer.from(JSON.stringify(info)), { ifNotExists: true, kind: 'metadata' });
  } catch (err) {
    if (!(err instanceof BlobExistsError) && (err as { code?: string }).code !== 'BLOB_EXISTS') throw err;
  }
}

export interface FenceState {
  /** Fenced lease ids not yet decided by a prune. */
  undecided: string[];
  /** Decided fences: lease id -> accepted record ids. */
  decided: Map<string, Set<string>>;
}

export async function readFences(store: BlobStore): Promise<FenceState> {
  const fences = new Set<string>();
  const decidedNames: string[] = [];
  for await (const b of store.list(FENCES_PREFIX)) {
    const rest = b.name.slice(FENCES_PREFIX.length);
    if (rest.endsWith('.decided')) decidedNames.push(b.name);
    else fences.add(rest);
  }
  const decided = new Map<string, Set<string>>();
  for (const name of decidedNames) {
    try {
      const d = JSON.parse((await store.get(name)).toString('utf8')) as FenceDecision;
      decided.set(d.lease, new Set(d.accepted));
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
  return { undecided: [...fences].filter((l) => !decided.has(l)), decided };
}

export async function writeDecision(store: BlobStore, d: FenceDecision): Promise<void> {
  try {
    await store.put(`${fenceName(d.lease)}.decided`, Buffer.from(JSON.stringify(d)), { ifNotExists: true, kind: 'metadata' });
  } catch (err) {
    if (!(err instanceof BlobExistsError) && (err as { code?: string }).code !== 'BLOB_EXISTS') throw err;
  }
}

/** Whether a record written under `lease` counts as committed, given the fences. */
export function recordCommitted(state: FenceState, recordId: string, lease: string | undefined): boolean {
  if (!lease) return true;
  const accepted = state.decided.get(lease);
  return accepted === undefined || accepted.has(recordId);
}
