/**
 * Instant access, measured (not a test): on a local directory and on Ceph RGW (S3 on
 * 127.0.0.1, scripts/rgw.sh), in one run on the same image:
 *
 *   - nbdcopy from the `serve nbd` export to a file vs `pilotlight restore` (MB/s of disk);
 *   - 4 KiB random-read latency, one request at a time, p50/p99, with a cold chunk cache
 *     (a fresh server) and warm (the same offsets again).
 *
 *   npm run build && node dist/bench/nbd.js [--size-mib 1024] [--reads 400] [--skip-s3]
 *
 * Prints a markdown table and writes bench/results/nbd.json.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { RawNbdClient, startServe } from '../test/support/nbd.js';
import { Rng, makeImage } from '../test/support/images.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = path.join(ROOT, 'bin', 'pilotlight.js');
const MiB = 1 << 20;

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

function cli(args: string[], env: Record<string, string>): void {
  const r = spawnSync(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`pilotlight ${args.join(' ')}: ${r.stderr}`);
}

function seconds(f: () => void): number {
  const t0 = process.hrtime.bigint();
  f();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

interface Row {
  store: string;
  restoreMBs: number;
  nbdcopyMBs: number;
  coldP50ms: number;
  coldP99ms: number;
  warmP50ms: number;
  warmP99ms: number;
}

async function latencies(socket: string, offsets: number[]): Promise<number[]> {
  const c = await RawNbdClient.connect(socket);
  await c.go('0', { structured: true });
  const out: number[] = [];
  for (const o of offsets) {
    const t0 = process.hrtime.bigint();
    const r = await c.read(o, 4096);
    out.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (r.error) throw new Error(`read at ${o}: error ${r.error}`);
  }
  await c.disconnect();
  return out;
}

async function measure(store: string, repoArgs: string[], env: Record<string, string>, work: string, image: string, size: number, reads: number): Promise<Row> {
  cli(['init', ...repoArgs], env);
  cli(['backup', 'file', image, '--vm', 'bench', ...repoArgs], env);
  const restored = path.join(work, `${store}-restored.img`);
  const restoreS = seconds(() => cli(['restore', 'latest', '--vm', 'bench', '--to', restored, ...repoArgs], env));
  rmSync(restored);
  const socket = path.join(work, `${store}.sock`);
  let serving = await startServe(['latest', '--vm', 'bench', '--listen', `unix:${socket}`, ...repoArgs], env);
  const copy = path.join(work, `${store}-nbdcopy.img`);
  const copyS = seconds(() => execFileSync('nbdcopy', [`nbd+unix:///0?socket=${socket}`, copy]));
  rmSync(copy);
  await serving.stop();
  // cold: a fresh server (empty chunk cache); warm: the same offsets again
  const rng = new Rng(3);
  const offsets = Array.from({ length: reads }, () => Math.floor(rng.int(size - 4096) / 4096) * 4096);
  serving = await startServe(['latest', '--vm', 'bench', '--listen', `unix:${socket}`, ...repoArgs], env);
  const cold = await latencies(socket, offsets);
  const warm = await latencies(socket, offsets);
  await serving.stop();
  return {
    store,
    restoreMBs: size / MiB / restoreS,
    nbdcopyMBs: size / MiB / copyS,
    coldP50ms: pct(cold, 50),
    coldP99ms: pct(cold, 99),
    warmP50ms: pct(warm, 50),
    warmP99ms: pct(warm, 99),
  };
}

async function main(): Promise<void> {
  const size = Number(arg('--size-mib', '1024')) * MiB;
  const reads = Number(arg('--reads', '400'));
  const work = mkdtempSync(path.join(os.tmpdir(), 'pl-bench-nbd-'));
  const image = path.join(work, 'disk.img');
  // half random, a quarter text, a quarter holes: every read below lands on data or a hole
  await makeImage(image, size, [
    { offset: 0, length: size / 2, kind: 'random' },
    { offset: size / 2, length: size / 4, kind: 'text' },
  ]);
  const env = { PILOTLIGHT_PASSWORD: 'bench', PILOTLIGHT_CACHE_DIR: path.join(work, 'cache') };
  const rows: Row[] = [];
  try {
    rows.push(await measure('local', ['--repo', path.join(work, 'repo')], env, work, image, size, reads));
    if (!process.argv.includes('--skip-s3')) {
      execFileSync('bash', [path.join(ROOT, 'scripts', 'rgw.sh'), 'start'], { stdio: 'inherit' });
      const s3env: Record<string, string> = {};
      for (const m of execFileSync('bash', [path.join(ROOT, 'scripts', 'rgw.sh'), 'env'], { encoding: 'utf8' }).matchAll(/^export (\w+)=(.*)$/gm)) s3env[m[1]!] = m[2]!;
      const bucket = `pl-bench-nbd-${Date.now().toString(36)}`;
      const client = new S3Client({
        endpoint: s3env.AWS_ENDPOINT_URL_S3,
        region: s3env.AWS_REGION ?? 'us-east-1',
        credentials: { accessKeyId: s3env.AWS_ACCESS_KEY_ID!, secretAccessKey: s3env.AWS_SECRET_ACCESS_KEY! },
        forcePathStyle: true,
      });
      await client.send(new CreateBucketCommand({ Bucket: bucket }));
      rows.push(await measure('rgw', ['--repo', `s3://${bucket}/r`, '--s3-endpoint', s3env.AWS_ENDPOINT_URL_S3!], { ...env, ...s3env, PILOTLIGHT_CACHE_DIR: path.join(work, 'cache-s3') }, work, image, size, reads));
      spawnSync('bash', [path.join(ROOT, 'scripts', 'rgw.sh'), 'purge-bucket', bucket]);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const f = (n: number) => n.toFixed(n < 10 ? 2 : 0);
  console.log(`\n${size / MiB} MiB image (1/2 random, 1/4 text, 1/4 holes), ${reads} random 4 KiB reads, ${os.cpus().length} cores, node ${process.version}\n`);
  console.log('| store | restore MB/s | nbdcopy MB/s | 4K cold p50 / p99 ms | 4K warm p50 / p99 ms |');
  console.log('|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.store} | ${f(r.restoreMBs)} | ${f(r.nbdcopyMBs)} | ${f(r.coldP50ms)} / ${f(r.coldP99ms)} | ${f(r.warmP50ms)} / ${f(r.warmP99ms)} |`);
  mkdirSync(path.join(ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(path.join(ROOT, 'bench', 'results', 'nbd.json'), JSON.stringify({ date: new Date().toISOString(), size, reads, rows }, null, 2) + '\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
