/**
 * The service's per-VM status record (docs/FORMAT.md "Service status"): what `status`
 * shows without the service running. One object per VM, sealed like snapshot records
 * (an error message may name paths or hosts):
 *
 *   service/status/<vm segment>   sealed JSON VmStatus, rewritten after every run
 */
import type { Repository } from '../repo/repository.js';
import { encodeSegment } from '../repo/name-segment.js';
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

export function statusName(vm: string): string {
  return `${STATUS_PREFIX}${encodeSegment(vm)}`;
}

export async function readVmStatus(repo: Repository, vm: string): Promise<VmStatus | null> {
  try {
    const bytes = repo.sealer.open(await repo.store.get(statusName(vm)), `status of ${vm}`);
    return JSON.parse(bytes.toString('utf8')) as VmStatus;
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

export async function writeVmStatus(repo: Repository, s: VmStatus): Promise<void> {
  await repo.store.put(statusName(s.vm), repo.sealer.seal([Buffer.from(JSON.stringify(s))]), { kind: 'metadata' });
}
