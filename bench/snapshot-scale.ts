/**
 * Starting a backup of one VM (and `snapshots --vm`) when the repository holds many
 * snapshot records of other VMs: format version 1 (every record listed and read to
 * find the parent) against version 2 (records per VM, one prefix listed). Local
 * directory and S3 (Ceph RGW on 127.0.0.1, scripts/rgw.sh). Records of the other VMs
 * are written synthetically through the catalog (SnapshotCatalog.save, as a backup
 * commits them), spread over 1,000 VMs; the measured commands run through the CLI in
 * a fresh process with the local cache warm (as on a backup host), and again cold.
 *
 *   npm run build && node dist/bench/snapshot-scale.js [--records 100000] [--backends local,s3]
 *
 * Prints a markdown table; writes bench/results/snapshot-scale.json and .md.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Repository } from '../src/repo/repository.js';
import { SnapshotCatalog, SnapshotRecord } from '../src/snapshot/snapshot-record.js';
import { openStore } from '../src/store/open-store.js';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { dropBucket, rgw } from '../test/support/rgw.js';
import { makeImage } from '../test/support/images.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = path.join(ROOT, 'bin', 'pilotlight.js');
const PASSWORD = 'bench';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

function cli(args: string[], env: NodeJS.ProcessEnv): { seconds: number; json: any } {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(process.execPath, [BIN, ...args], { env, encoding: 'utf8', maxBuffer: 256 << 20 });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`pilotlight ${args.join(' ')} failed:\n${r.stderr}`);
  return { seconds, json: args.includes('--json') ? JSON.parse(r.stdout) : null };
}

function syntheticRecord(i: number, start: number): SnapshotRecord {
  const time = new Date(start + i * 1000);
  const stamp = time.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return {
    version: 2,
    id: `${stamp}-${randomBytes(4).toString('hex')}`,
    vm: `other-${String(i % 1000).padStart(4, '0')}`,
    time: time.toISOString(),
    parent: null,
    host: 'bench',
    source: 'file',
    disks: [],
    stats: { bytesScanned: 0, bytesNew: 0, bytesStored: 0, chunksNew: 0, chunksReused: 0, chunksZero: 0, durationMs: 0 },
  };
}

/** Writes `n` records of other VMs through the catalog, 32 at a time. */
async function fill(location: string, cacheDir: string, version: 1 | 2, n: number, s3Endpoint?: string): Promise<number> {
  const store = await openStore(location, { s3Endpoint });
  const repo = await Repository.init(store, { encrypted: true, password: PASSWORD, version });
  const t0 = Date.now();
  const full = await Repository.open(await openStore(location, { s3Endpoint }), { password: PASSWORD }, cacheDir);
  await repo.close();
  const catalog = new SnapshotCatalog(full);
  const start = Date.UTC(2026, 0, 1);
  let next = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      for (let i = next++; i < n; i = next++) await catalog.save(syntheticRecord(i, start));
    }),
  );
  await full.close();
  return (Date.now() - t0) / 1000;
}

interface Row {
  backend: string;
  layout: string;
  records: number;
  fillSeconds: number;
  firstBackupS: number;
  secondBackupS: number;
  secondBackupRequests: unknown;
  snapshotsVmS: number;
  snapshotsVmColdS: number | null;
}

async function main(): Promise<void> {
  const counts = arg('--records', '1000,100000').split(',').map(Number);
  const backends = arg('--backends', 'local,s3').split(',');
  const work = mkdtempSync(path.join(os.tmpdir(), "fmt2-bench-scale-"));
  const image = path.join(work, 'target.img');
  await makeImage(image, 4 << 20, [{ offset: 0, length: 1 << 20, kind: 'random' }], 7);
  const rows: Row[] = [];
  const buckets: string[] = [];
  try {
    for (const backend of backends) {
      const r = backend === 's3' ? await rgw() : null;
      if (r) Object.assign(process.env, r.env); // the in-process writer opens the store too
      for (const records of counts) {
        for (const version of [1, 2] as const) {
          const tag = `${backend}-v${version}-${records}`;
          let location = path.join(work, tag);
          if (r) {
            // not pl-*: other test runs on this shared RGW sweep those
            const b = `fmt2-scale-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
            await r.client.send(new CreateBucketCommand({ Bucket: b }));
            buckets.push(b);
            location = `s3://${b}/repo`;
          }
          const cacheDir = path.join(work, `cache-${tag}`);
          process.stderr.write(`${tag}: writing ${records} records...\n`);
          const fillSeconds = await fill(location, cacheDir, version, records, r?.endpoint);
          const env = { ...process.env, ...(r?.env ?? {}), PILOTLIGHT_PASSWORD: PASSWORD, PILOTLIGHT_CACHE_DIR: cacheDir };
          const g = ['--repo', location];
          const first = cli(['backup', 'file', image, '--vm', 'target', '--json', ...g], env);
          const second = cli(['backup', 'file', image, '--vm', 'target', '--json', ...g], env);
          if (second.json.parent !== first.json.snapshot) throw new Error(`${tag}: wrong parent ${second.json.parent}`);
          const snaps = cli(['snapshots', '--vm', 'target', '--json', ...g], env);
          if (snaps.json.length !== 2) throw new Error(`${tag}: ${snaps.json.length} snapshots of target`);
          // cold: a new cache dir (index files and the target's records read again)
          // (not for v1 on S3 at scale: it GETs every record of every VM, minutes of requests)
          const skipCold = version === 1 && backend === 's3' && records > 1000;
          const cold = skipCold ? null : cli(['snapshots', '--vm', 'target', '--json', ...g], { ...env, PILOTLIGHT_CACHE_DIR: `${cacheDir}-cold` });
          rows.push({
            backend,
            layout: `v${version}`,
            records,
            fillSeconds,
            firstBackupS: first.seconds,
            secondBackupS: second.seconds,
            secondBackupRequests: second.json.requests ? { list: second.json.requests.list, get: second.json.requests.get, total: second.json.requests.total } : null,
            snapshotsVmS: snaps.seconds,
            snapshotsVmColdS: cold ? cold.seconds : null,
          });
          process.stderr.write(`${JSON.stringify(rows[rows.length - 1])}\n`);
        }
      }
    }
  } finally {
    for (const b of buckets) await dropBucket(b);
    rmSync(work, { recursive: true, force: true });
  }
  const lines = [
    `# Backup start with many snapshot records of other VMs (${new Date().toISOString()}, ${os.cpus().length} cores, Node ${process.version})`,
    '',
    'Wall seconds of whole CLI runs (a 4 MiB image with 1 MiB of data, so the run is mostly start-up and finding the parent).',
    '',
    '| backend | layout | other records | backup (no parent) s | backup (parent) s | its LIST / GET requests | snapshots --vm s | snapshots --vm, cold cache s |',
    '|---|---|---:|---:|---:|---|---:|---:|',
    ...rows.map((x) => {
      const q = x.secondBackupRequests as { list?: number; get?: number } | null;
      return `| ${x.backend} | ${x.layout} | ${x.records} | ${x.firstBackupS.toFixed(2)} | ${x.secondBackupS.toFixed(2)} | ${q ? `${q.list} / ${q.get}` : '-'} | ${x.snapshotsVmS.toFixed(2)} | ${x.snapshotsVmColdS === null ? 'not run (every record GET)' : x.snapshotsVmColdS.toFixed(2)} |`;
    }),
    '',
  ];
  const md = lines.join('\n');
  process.stdout.write(md);
  writeFileSync(path.join(ROOT, 'bench', 'results', `snapshot-scale-${backends.join('-')}.md`), md);
  writeFileSync(path.join(ROOT, 'bench', 'results', `snapshot-scale-${backends.join('-')}.json`), JSON.stringify({ date: new Date().toISOString(), rows }, null, 2) + '\n');
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack}\n`);
  process.exit(1);
});
