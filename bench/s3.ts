/**
 * Backup and restore throughput to S3 (a real Ceph RGW on 127.0.0.1, started with
 * scripts/rgw.sh) beside the same operations on a local directory, in one run on
 * the same image. Prints a markdown table and writes bench/results/s3.json.
 *
 *   npm run build && node dist/bench/s3.js [--image FILE] [--reps N]
 *
 * Default image: web1-0 of the bench series (bench/make-series), else a generated one.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { quietSdkNodeVersionWarning } from '../src/cli/node-support.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = path.join(ROOT, 'bin', 'pilotlight.js');

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

interface Timed {
  seconds: number;
  maxRssMb: number;
  json: any;
}

/** Runs the CLI under GNU time; returns wall seconds, peak RSS and the JSON it printed. */
function timed(args: string[], env: NodeJS.ProcessEnv): Timed {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%M', process.execPath, BIN, ...args], { env, encoding: 'utf8', maxBuffer: 64 << 20 });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`pilotlight ${args.join(' ')} failed:\n${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  const maxRssMb = Number(lines[lines.length - 1]) / 1024;
  return { seconds, maxRssMb, json: args.includes('--json') ? JSON.parse(r.stdout) : null };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** Runs fn over items with at most `n` in flight. */
async function pool<T>(items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]!);
  }));
}

/**
 * RGW on its own, in the same run: every object under the repository's data/ prefix
 * fetched with 4 GETs in flight, then the same bytes PUT to a scratch prefix with 3 in
 * flight (pilotlight's defaults), from this process through the same SDK. What an S3
 * restore or backup cannot beat on this machine, where RGW shares the cores.
 */
async function rgwRates(client: S3Client, bucket: string): Promise<{ bytes: number; getMBps: number; putMBps: number }> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'repo/data/', ContinuationToken: token }));
    for (const o of page.Contents ?? []) if (o.Key) keys.push(o.Key);
    token = page.NextContinuationToken;
  } while (token);
  const bodies: Buffer[] = [];
  let t0 = performance.now();
  await pool(keys, 4, async (k) => {
    const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: k }));
    bodies.push(Buffer.from(await r.Body!.transformToByteArray()));
  });
  const getS = (performance.now() - t0) / 1000;
  const bytes = bodies.reduce((a, b) => a + b.length, 0);
  t0 = performance.now();
  let i = 0;
  await pool(bodies, 3, async (b) => {
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: `scratch/${i++}`, Body: b }));
  });
  const putS = (performance.now() - t0) / 1000;
  return { bytes, getMBps: bytes / 1e6 / getS, putMBps: bytes / 1e6 / putS };
}

async function main(): Promise<void> {
  quietSdkNodeVersionWarning();
  const reps = Number(arg('--reps', '3'));
  let image = arg('--image', path.join(ROOT, 'bench', 'cache', 'series-4G', 'web1-0.img'));
  const work = mkdtempSync(path.join(os.tmpdir(), 'pl-bench-s3-'));
  if (!existsSync(image)) {
    image = path.join(work, 'generated.img');
    execFileSync('truncate', ['-s', '1G', image]);
    execFileSync('sh', ['-c', `head -c 256M /dev/urandom | dd of=${image} conv=notrunc bs=1M status=none`]);
    execFileSync('sh', ['-c', `find ${ROOT}/node_modules -name '*.js' -print0 | xargs -0 cat | head -c 256M | dd of=${image} conv=notrunc bs=1M seek=512 status=none`]);
  }
  execFileSync('bash', [path.join(ROOT, 'scripts', 'rgw.sh'), 'start'], { stdio: 'inherit' });
  const envText = execFileSync('bash', [path.join(ROOT, 'scripts', 'rgw.sh'), 'env'], { encoding: 'utf8' });
  const s3env: Record<string, string> = {};
  for (const m of envText.matchAll(/^export (\w+)=(.*)$/gm)) s3env[m[1]!] = m[2]!;
  const client = new S3Client({
    endpoint: s3env.AWS_ENDPOINT_URL_S3,
    region: s3env.AWS_REGION,
    forcePathStyle: true,
    credentials: { accessKeyId: s3env.AWS_ACCESS_KEY_ID!, secretAccessKey: s3env.AWS_SECRET_ACCESS_KEY! },
  });

  const buckets: string[] = [];
  const rows: { backend: string; rep: number; backupS: number; backupRss: number; restoreS: number; restoreRss: number; objects: number; puts: number }[] = [];
  const rgw: { bytes: number; getMBps: number; putMBps: number }[] = [];
  for (let rep = 1; rep <= reps; rep++) {
    for (const backend of ['local', 's3'] as const) {
      const env = { ...process.env, ...s3env, PILOTLIGHT_PASSWORD: 'bench', PILOTLIGHT_CACHE_DIR: path.join(work, `cache-${backend}-${rep}`) };
      let repo: string;
      if (backend === 's3') {
        const bucket = `pl-bench-${randomBytes(4).toString('hex')}`;
        await client.send(new CreateBucketCommand({ Bucket: bucket }));
        buckets.push(bucket);
        repo = `s3://${bucket}/repo`;
      } else {
        repo = path.join(work, `repo-${rep}`);
      }
      timed(['init', '--repo', repo], env);
      const b = timed(['backup', 'file', image, '--vm', 'bench', '--repo', repo, '--json'], env);
      const out = path.join(work, 'restored.img');
      rmSync(out, { force: true });
      const r = timed(['restore', 'latest', '--vm', 'bench', '--to', out, '--repo', repo], env);
      const same = spawnSync('cmp', [image, out]).status === 0;
      if (!same) throw new Error(`restore from ${backend} differs from the image`);
      rmSync(out, { force: true });
      const st = timed(['stats', '--repo', repo, '--json'], env).json;
      rows.push({
        backend,
        rep,
        backupS: b.seconds,
        backupRss: b.maxRssMb,
        restoreS: r.seconds,
        restoreRss: r.maxRssMb,
        objects: st.objects,
        puts: b.json.requests?.put ?? 0,
      });
      if (backend === 'local') rmSync(repo, { recursive: true, force: true });
      else rgw.push(await rgwRates(client, buckets[buckets.length - 1]!));
      process.stderr.write(`[bench s3] rep ${rep} ${backend}: backup ${b.seconds.toFixed(2)} s, restore ${r.seconds.toFixed(2)} s\n`);
    }
  }
  const allocatedMb = Number(execFileSync('sh', ['-c', `du -B1 ${image} | cut -f1`], { encoding: 'utf8' })) / 1e6;
  const summary = (['local', 's3'] as const).map((backend) => {
    const rs = rows.filter((r) => r.backend === backend);
    return {
      backend,
      backupS: median(rs.map((r) => r.backupS)),
      restoreS: median(rs.map((r) => r.restoreS)),
      backupMBps: allocatedMb / median(rs.map((r) => r.backupS)),
      restoreMBps: allocatedMb / median(rs.map((r) => r.restoreS)),
      backupRss: median(rs.map((r) => r.backupRss)),
      restoreRss: median(rs.map((r) => r.restoreRss)),
      objects: rs[0]!.objects,
      puts: rs[0]!.puts,
    };
  });
  const ratio = (k: 'backupS' | 'restoreS') => median(
    Array.from({ length: reps }, (_, i) => rows.find((r) => r.backend === 's3' && r.rep === i + 1)![k] / rows.find((r) => r.backend === 'local' && r.rep === i + 1)![k]),
  );
  const lines = [
    `### pilotlight to S3 (Ceph RGW 16.2 on 127.0.0.1) and to a local directory: ${new Date().toISOString().slice(0, 16)} UTC`,
    '',
    `Image: ${path.basename(image)}, ${statSync(image).size / 2 ** 30} GiB, ${allocatedMb.toFixed(0)} MB allocated; ${reps} repetition(s), medians; encrypted repository; RGW and pilotlight share the 2 cores.`,
    '',
    '| backend | backup s | backup MB/s | backup peak RSS MB | restore s | restore MB/s | restore peak RSS MB | objects in repo | PUT requests |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...summary.map((s) => `| ${s.backend} | ${s.backupS.toFixed(2)} | ${s.backupMBps.toFixed(0)} | ${s.backupRss.toFixed(0)} | ${s.restoreS.toFixed(2)} | ${s.restoreMBps.toFixed(0)} | ${s.restoreRss.toFixed(0)} | ${s.objects} | ${s.backend === 's3' ? s.puts : '-'} |`),
    '',
    `S3 / local time, paired per repetition: backup ${ratio('backupS').toFixed(2)}x, restore ${ratio('restoreS').toFixed(2)}x. Times are whole commands (start-up included).`,
    '',
    `RGW on its own in the same run (the repository's ${(median(rgw.map((x) => x.bytes)) / 1e6).toFixed(0)} MB of packs, from this process through the same SDK, no pilotlight process running): ` +
      `GET ${median(rgw.map((x) => x.getMBps)).toFixed(0)} MB/s with 4 in flight, PUT ${median(rgw.map((x) => x.putMBps)).toFixed(0)} MB/s with 3 in flight ` +
      `(${(median(rgw.map((x) => x.bytes)) / 1e6 / median(rgw.map((x) => x.getMBps))).toFixed(2)} s and ${(median(rgw.map((x) => x.bytes)) / 1e6 / median(rgw.map((x) => x.putMBps))).toFixed(2)} s for those bytes alone).`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
  mkdirSync(path.join(ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(path.join(ROOT, 'bench', 'results', 's3.json'), JSON.stringify({ image, allocatedMb, reps, rows, summary, rgw }, null, 2) + '\n');
  writeFileSync(path.join(ROOT, 'bench', 'results', 's3.md'), lines.join('\n') + '\n');
  client.destroy();
  for (const b of buckets) execFileSync('bash', [path.join(ROOT, 'scripts', 'rgw.sh'), 'purge-bucket', b], { stdio: 'ignore' });
  rmSync(work, { recursive: true, force: true });
}

main().catch((err) => {
  process.stderr.write(`bench/s3: ${err?.stack ?? err}\n`);
  process.exit(1);
});
