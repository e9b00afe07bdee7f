/**
 * bench/ebs-push: what an incremental EBS push costs after a small change, against the
 * number of 512 KiB blocks in the disk, and the estimated time to a running instance for
 * a 40 GiB disk at the EBS direct API's default rate.
 *
 * Real parts: a real repository made by the CLI (`init --no-encryption`, `backup file`),
 * the real `ebs push` command and @aws-sdk/client-ebs. Not real: AWS. The pushes go to
 * the AWS TEST DOUBLE (test/support/aws-double) on loopback, which enforces the
 * PutSnapshotBlock rate limit per snapshot; AWS-side times (image registration, boot)
 * are assumptions, printed as such and settable with flags.
 *
 *   npx tsc -p . --outDir dist-cloud && node dist-cloud/bench/ebs-push.js [--size-gib 2] [--fill 0.4]
 *       [--rate 1000] [--uplink-mibps 15.2] [--ami-s 30] [--boot-s 60] [--import-min 15]
 *
 * Prints a table and writes bench/results/ebs-push.json.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startAwsDouble } from '../test/support/aws-double/server.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const BLOCK = 512 * 1024;
const CHUNK = 64 * 1024;

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
}

const sizeGiB = arg('size-gib', 2);
const fill = arg('fill', 0.4);
const rate = arg('rate', 1000);
// The origin story: a 40 GiB image took 45 minutes to upload, i.e. ~15.2 MiB/s of uplink.
const uplinkMiBps = arg('uplink-mibps', (40 * 1024) / (45 * 60));
const amiSeconds = arg('ami-s', 30);
const bootSeconds = arg('boot-s', 60);
const importMinutes = arg('import-min', 15);

function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(dir, 'package.json')) && !path.basename(dir).startsWith('dist')) return dir;
    const up = path.dirname(dir);
    if (up === dir) return process.cwd();
    dir = up;
  }
}

const CLI = fileURLToPath(new URL('../test/support/aws-double/cloud-cli.js', import.meta.url));

interface Scenario {
  name: string;
  /** Byte ranges written (offset, length). */
  writes: [number, number][];
}

function rng(seed: number) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

function scenarios(capacity: number, dataEnd: number): Scenario[] {
  const r = rng(42);
  const scattered = (n: number, len: number): [number, number][] =>
    Array.from({ length: n }, () => [Math.floor((r() * (dataEnd - len)) / 4096) * 4096, len] as [number, number]);
  return [
    { name: '100 scattered 4 KiB writes', writes: scattered(100, 4096) },
    { name: 'one 8 MiB sequential write', writes: [[Math.floor(capacity / 3 / BLOCK) * BLOCK + 12288, 8 * MiB]] },
    { name: '1,000 scattered 4 KiB writes', writes: scattered(1000, 4096) },
  ];
}

function distinct(writes: [number, number][], unit: number): number {
  const s = new Set<number>();
  for (const [off, len] of writes) for (let u = Math.floor(off / unit); u <= Math.floor((off + len - 1) / unit); u++) s.add(u);
  return s.size;
}

async function main(): Promise<void> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-bench-ebs-'));
  const dbl = await startAwsDouble({ putRatePerSnapshot: rate });
  const env = {
    ...process.env,
    PILOTLIGHT_CACHE_DIR: path.join(dir, 'cache'),
    AWS_ENDPOINT_URL_EBS: dbl.endpoint,
    AWS_ENDPOINT_URL_EC2: dbl.endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'AKIDTESTDOUBLE',
    AWS_SECRET_ACCESS_KEY: 'test-double-secret',
  };
  const cli = (args: string[]): Promise<any> =>
    new Promise((resolve, reject) =>
      execFile(process.execPath, [CLI, '--repo', path.join(dir, 'repo'), ...args, '--json'], { env, maxBuffer: 256 * MiB }, (err, stdout, stderr) =>
        err ? reject(new Error(`pilotlight ${args.join(' ')}: ${stderr}`)) : resolve(JSON.parse(stdout)),
      ),
    );
  try {
    const capacity = sizeGiB * GiB;
    const img = path.join(dir, 'disk0.raw');
    // A sparse disk whose first `fill` fraction holds incompressible data.
    const dataEnd = Math.floor((capacity * fill) / MiB) * MiB;
    const fh = await fsp.open(img, 'w');
    for (let off = 0; off < dataEnd; off += 16 * MiB) await fh.write(randomBytes(Math.min(16 * MiB, dataEnd - off)), 0, undefined, off);
    await fh.truncate(capacity);
    await fh.close();
    await cli(['init', '--no-encryption']);
    const t0 = Date.now();
    const b0 = await cli(['backup', 'file', img, '--vm', 'bench']);
    const backupMs = Date.now() - t0;
    const first = (await cli(['ebs', 'push', b0.snapshot, '--vm', 'bench', '--rate', String(rate)])).disks[0];
    const diskBlocks = Math.ceil(capacity / BLOCK);
    process.stderr.write(`first push: ${first.blocksSent} blocks in ${first.durationMs} ms (backup ${backupMs} ms)\n`);

    const rows: Record<string, unknown>[] = [];
    for (const sc of scenarios(capacity, dataEnd)) {
      const f = await fsp.open(img, 'r+');
      for (const [off, len] of sc.writes) await f.write(randomBytes(len), 0, len, off);
      await f.close();
      const b = await cli(['backup', 'file', img, '--vm', 'bench']);
      const p = (await cli(['ebs', 'push', b.snapshot, '--vm', 'bench', '--rate', String(rate)])).disks[0];
      const changedBytes = sc.writes.reduce((s, w) => s + w[1], 0);
      rows.push({
        scenario: sc.name,
        bytesWritten: changedBytes,
        chunksChanged: distinct(sc.writes, CHUNK),
        blocksTouched: distinct(sc.writes, BLOCK),
        blocksSent: p.blocksSent,
        bytesSent: p.bytesSent,
        diskBlocks,
        fractionOfDisk: p.blocksSent / diskBlocks,
        pushMs: p.durationMs,
        measuredBlocksPerSecond: p.durationMs > 0 ? Math.round((p.blocksSent / p.durationMs) * 1000) : null,
        parentEbsSnapshotId: p.parentEbsSnapshotId,
      });
    }

    // 40 GiB estimate at the default rate: the push is rate-bound or uplink-bound, whichever is slower.
    const blocks40 = (40 * GiB) / BLOCK;
    // Three bounds, the slowest wins: the API rate, the uplink, and this machine's measured
    // push pipeline (repository read + checksums + HTTP, with the double on the same 2 cores).
    const localMiBps = first.bytesSent / MiB / Math.max(0.001, first.durationMs / 1000);
    const pushSeconds = (blocks: number) => Math.max(blocks / rate, (blocks * BLOCK) / (uplinkMiBps * MiB), (blocks * BLOCK) / (localMiBps * MiB));
    const firstBlocks40 = Math.round(blocks40 * (first.blocksSent / diskBlocks));
    const smallest = rows[0] as { blocksSent: number; scenario: string };
    const estimates = {
      diskGiB: 40,
      diskBlocks: blocks40,
      ratePerSecond: rate,
      uplinkMiBps: Number(uplinkMiBps.toFixed(1)),
      measuredLocalPushMiBps: Number(localMiBps.toFixed(1)),
      assumed: { amiAvailableSeconds: amiSeconds, runningAndBootSeconds: bootSeconds, importMinutes },
      firstPush: { blocks: firstBlocks40, seconds: Math.round(pushSeconds(firstBlocks40)), note: `same non-zero fraction as the bench disk (${(first.blocksSent / diskBlocks).toFixed(2)})` },
      incrementalPush: { scenario: smallest.scenario, blocks: smallest.blocksSent, seconds: Number(pushSeconds(smallest.blocksSent).toFixed(1)) },
      // Pilot light: the EBS snapshot was kept in step after every backup; recovery is RegisterImage + RunInstances.
      pilotLightRecoverySeconds: amiSeconds + bootSeconds,
      // If the last incremental had not been pushed yet when the site went down.
      pilotLightWithLastPushSeconds: Math.round(pushSeconds(smallest.blocksSent) + amiSeconds + bootSeconds),
      // Without a standing snapshot: full push at recovery time.
      fullPushRecoverySeconds: Math.round(pushSeconds(firstBlocks40) + amiSeconds + bootSeconds),
      // The original procedure: upload the whole 40 GiB raw image, then ImportSnapshot.
      importRouteSeconds: Math.round((40 * 1024) / uplinkMiBps + importMinutes * 60 + amiSeconds + bootSeconds),
    };

    const out = {
      bench: 'ebs-push',
      time: new Date().toISOString(),
      machine: { cpus: os.cpus().length, node: process.version },
      target: 'AWS test double on 127.0.0.1 (not AWS): rate limit enforced per snapshot, block size 512 KiB',
      disk: { capacity, sizeGiB, fill, diskBlocks, firstPushBlocks: first.blocksSent, firstPushBytes: first.bytesSent, firstPushMs: first.durationMs, backupMs },
      incremental: rows,
      estimate40GiB: estimates,
    };

    const pad = (s: unknown, n: number) => String(s).padStart(n);
    console.log(`\nEBS push, ${sizeGiB} GiB disk (${diskBlocks} blocks of 512 KiB), ${Math.round(fill * 100)}% non-zero; rate limit ${rate}/s; target: AWS test double\n`);
    console.log(`first push: ${first.blocksSent} blocks, ${(first.bytesSent / MiB).toFixed(0)} MiB, ${(first.durationMs / 1000).toFixed(1)} s`);
    console.log('');
    console.log('| change | bytes written | 64 KiB chunks changed | 512 KiB blocks touched | blocks sent | MiB sent | % of disk blocks | push s |');
    console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
    for (const r of rows as any[]) {
      console.log(
        `| ${r.scenario} | ${pad((r.bytesWritten / 1024).toFixed(0) + ' KiB', 0)} | ${r.chunksChanged} | ${r.blocksTouched} | ${r.blocksSent} | ${(r.bytesSent / MiB).toFixed(1)} | ${(r.fractionOfDisk * 100).toFixed(2)} | ${(r.pushMs / 1000).toFixed(2)} |`,
      );
    }
    const e = estimates;
    console.log(`\n40 GiB disk (${e.diskBlocks} blocks), ${e.ratePerSecond} PutSnapshotBlock/s, uplink ${e.uplinkMiBps} MiB/s (the origin story's 40 GiB in 45 min), this machine's measured push pipeline ${e.measuredLocalPushMiBps} MiB/s; the slowest bound wins:`);
    console.log('| route | what runs at recovery time | estimated minutes to a running instance |');
    console.log('|---|---|---:|');
    console.log(`| pilot light (EBS snapshot kept in step) | RegisterImage + RunInstances (assumed ${amiSeconds} s + ${bootSeconds} s) | ${(e.pilotLightRecoverySeconds / 60).toFixed(1)} |`);
    console.log(`| pilot light, last incremental not yet pushed | push ${e.incrementalPush.blocks} blocks (${e.incrementalPush.seconds} s) + the above | ${(e.pilotLightWithLastPushSeconds / 60).toFixed(1)} |`);
    console.log(`| full EBS push at recovery time | ${e.firstPush.blocks} blocks (${e.firstPush.seconds} s) + the above | ${(e.fullPushRecoverySeconds / 60).toFixed(1)} |`);
    console.log(`| upload to S3 + ImportSnapshot (original procedure) | 40 GiB upload + import (assumed ${importMinutes} min) + the above | ${(e.importRouteSeconds / 60).toFixed(1)} |`);

    const file = path.join(repoRoot(), 'bench', 'results', 'ebs-push.json');
    await fsp.mkdir(path.dirname(file), { recursive: true });
    await fsp.writeFile(file, JSON.stringify(out, null, 2) + '\n');
    console.log(`\nwrote ${path.relative(process.cwd(), file)}`);
  } finally {
    await dbl.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
