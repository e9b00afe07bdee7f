/**
 * Two service processes (two "hosts": separate cache directories) on one repository in
 * Ceph RGW, protecting the same VMs every 3 s: each VM is backed up once per interval
 * and never twice at once (per-VM leases in the repository + the fresh check).
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ok, scratch } from '../support/cli.js';
import { makeImage } from '../support/images.js';
import { dropBucket, freshBucket, rgw } from '../support/rgw.js';
import { ServiceProcess, startService, waitFor } from '../support/service.js';

const MiB = 1024 * 1024;
const VMS = ['alpha', 'beta', 'gamma'];
const EVERY = 3000;

describe('two services on one S3 repository', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let bucket: string;
  let env: Record<string, string>;
  let repo: string;

  before(async () => {
    const r = await rgw();
    s = await scratch('two');
    bucket = await freshBucket('svc');
    repo = `s3://${bucket}/repo`;
    env = { ...s.env, ...r.env };
    await ok(['--repo', repo, 'init'], env);
    for (const [i, vm] of VMS.entries()) await makeImage(path.join(s.dir, `${vm}.img`), 2 * MiB, [{ offset: 0, length: MiB, kind: 'random' }], 10 + i);
  });
  after(async () => {
    await dropBucket(bucket);
    await s.cleanup();
  });

  it('each VM once per interval, never twice at once', async () => {
    const cfg = path.join(s.dir, 'pilotlight.yaml');
    await fsp.writeFile(
      cfg,
      `repositories:\n  main:\n    location: ${repo}\n    password: { env: PILOTLIGHT_PASSWORD }\n    s3Endpoint: ${env.AWS_ENDPOINT_URL_S3}\n` +
        `sources:\n${VMS.map((vm) => `  ${vm}: { file: { images: [${s.dir}/${vm}.img] } }`).join('\n')}\n` +
        `jobs:\n  - name: all\n    repository: main\n    vms: [${VMS.join(', ')}]\n    every: 3s\n    parallelism: 3\n    retries: { attempts: 1 }\n`,
    );
    const procs: ServiceProcess[] = [1, 2].map((n) =>
      startService(['--config', cfg, '--log-format', 'json', '--lease-ttl', '20'], { ...env, PILOTLIGHT_CACHE_DIR: path.join(s.dir, `cache-host${n}`) }),
    );
    // run until 3 rounds of backups are done between them (time depends on the machine's load)
    const doneCount = () => procs.map((p) => p.stderr().split('\n').filter((l) => l.includes('"msg":"backup done"')).length);
    await waitFor('3 backups of each VM', async () => doneCount().reduce((a, b) => a + b, 0) >= VMS.length * 3, 90_000, 500);
    for (const p of procs) p.child.kill('SIGTERM');
    const codes = await Promise.all(procs.map((p) => p.exited));
    for (const c of codes) assert.equal(c.code, 0);
    const done = procs.map((p) => p.stderr().split('\n').filter((l) => l.includes('"msg":"backup done"')).length);
    const skipped = procs.map((p) => p.stderr().split('\n').filter((l) => /another process is backing|a snapshot newer than this tick/.test(l) || l.includes('"msg":"skipped')).length);
    assert.ok(done[0]! + done[1]! >= VMS.length * 3, `backups done by the two processes: ${done}`);
    // a record's time is its consistency point (when the backup began reading), committed when it was written
    const all = (await ok(['--repo', repo, 'snapshots', '--json'], env)).json as { vm: string; time: string; committed: string }[];
    for (const vm of VMS) {
      const snaps = all.filter((x) => x.vm === vm).map((x) => ({ start: Date.parse(x.time), end: Date.parse(x.committed) }));
      snaps.sort((a, b) => a.start - b.start);
      assert.ok(snaps.length >= 3, `${vm}: ${snaps.length} snapshots`);
      const windows = snaps.map((x) => Math.floor(x.start / EVERY));
      assert.equal(new Set(windows).size, windows.length, `${vm}: two backups in one interval: ${windows}`);
      for (let i = 1; i < snaps.length; i++) assert.ok(snaps[i]!.start >= snaps[i - 1]!.end, `${vm}: backups ${i - 1} and ${i} overlapped`);
    }
    assert.ok(skipped[0]! + skipped[1]! > 0, 'one process found the other holding the lease or done already');
    const v = await ok(['--repo', repo, 'verify', '--json'], env);
    assert.equal(v.json.ok, true);
  });
});
