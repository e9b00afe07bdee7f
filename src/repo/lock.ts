import { randomBytes } from 'node:crypto';
import * as os from 'node:os';
import { LOCKS_PREFIX } from './format.js';
import { Repository } from './repository.js';

/**
 * Locks (`locks/<id>`, plaintext JSON): who is working on the repository.
 * Backups take shared locks; a future prune takes an exclusive one and waits for
 * shared locks to go, treating a lock not refreshed for 30 minutes as stale.
 * Locks are refreshed every 5 minutes while held.
 */
export interface LockInfo {
  kind: 'shared' | 'exclusive';
  operation: string;
  host: string;
  pid: number;
  created: string;
  refreshed: string;
  /** A backup's VM and the parent snapshot it builds on (forget never removes that parent while the lock lives). */
  vm?: string;
  parent?: string | null;
}

export const LOCK_REFRESH_MS = 5 * 60_000;
export const LOCK_STALE_MS = 30 * 60_000;

export class RepoLock {
  private timer: NodeJS.Timeout | null = null;

  private constructor(
    private readonly repo: Repository,
    readonly name: string,
    private info: LockInfo,
  ) {}

  static async acquire(repo: Repository, kind: LockInfo['kind'], operation: string, subject: { vm?: string; parent?: string | null } = {}): Promise<RepoLock> {
    const now = new Date().toISOString();
    const info: LockInfo = { kind, operation, host: os.hostname(), pid: process.pid, created: now, refreshed: now, ...subject };
    const name = `${LOCKS_PREFIX}${randomBytes(16).toString('hex')}`;
    const lock = new RepoLock(repo, name, info);
    await lock.write(true);
    lock.timer = setInterval(() => {
      lock.info = { ...lock.info, refreshed: new Date().toISOString() };
      lock.write(false).catch(() => {});
    }, LOCK_REFRESH_MS);
    lock.timer.unref();
    return lock;
  }

  private async write(first: boolean): Promise<void> {
    await this.repo.store.put(this.name, Buffer.from(JSON.stringify(this.info)), { ifNotExists: first, kind: 'metadata' });
  }

  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.repo.store.delete(this.name);
  }
}

export async function listLocks(repo: Repository): Promise<(LockInfo & { name: string; stale: boolean })[]> {
  const out: (LockInfo & { name: string; stale: boolean })[] = [];
  for await (const b of repo.store.list(LOCKS_PREFIX)) {
    try {
      const info = JSON.parse((await repo.store.get(b.name)).toString('utf8')) as LockInfo;
      out.push({ ...info, name: b.name, stale: Date.now() - Date.parse(info.refreshed) > LOCK_STALE_MS });
    } catch {
      // a lock deleted while listing, or unreadable: not ours to judge here
    }
  }
  return out;
}
