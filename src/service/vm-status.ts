/**
 * The service's per-VM status record (docs/FORMAT.md "Service status"): what `status`
 * shows without the service running. One object per VM, sealed like snapshot records
 * (an error message may name paths or hosts):
 *
 *   service/status/<vm tag>   sealed JSON VmStatus (AD "pilotlight v2 service status\0" + name),
 *                             rewritten after every run
 *
 * The VM is named by its tag (as its snapshot prefix is), not its name.
 */
import type { Repository } from '../repo/repository.js';
import { SnapshotCatalog } from '../snapshot/snapshot-record.js';
import { isNotFound } from '../store/blob-store.js';

export const STATUS_PREFIX = 'service/status/';

export interface VmStatus {
  format: 'pilotlight-vm-status';
  version: 1;
  vm: string;
  job: string;
  rpoTargetSeconds: number;
  host: string;
  lastRun: {
    started: string;
    finished: string;
    result: 'success' | 'partial' | 'failure';
    snapshot: string | null;
    failedStep?: string;
    error?: string;
    attempts: number;
  };
  lastSuccess?: { time: string; snapshot: string };
  lastError?: { time: string; error: string; failedStep?: string };
  consecutiveFailures: number;
}

export function statusName(repo: Repository, vm: string): string {
  return `${STATUS_PREFIX}${new SnapshotCatalog(repo).vmTag(vm)}`;
}

function ad(name: string): Buffer {
  return Buffer.from(`pilotlight v2 service status\0${name}`);
}

/** Reads a status object by its name (the AD binds the record to its name). */
export async function readStatusObject(repo: Repository, name: string): Promise<VmStatus | null> {
  try {
    const bytes = repo.sealer.open(await repo.store.get(name), ad(name), name);
    return JSON.parse(bytes.toString('utf8')) as VmStatus;
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

export async function readVmStatus(repo: Repository, vm: string): Promise<VmStatus | null> {
  const s = await readStatusObject(repo, statusName(repo, vm));
  return s && s.vm === vm ? s : null;
}

export async function writeVmStatus(repo: Repository, s: VmStatus): Promise<void> {
  const name = statusName(repo, s.vm);
  await repo.store.put(name, repo.sealer.seal([Buffer.from(JSON.stringify(s))], ad(name)), { kind: 'metadata' });
}
