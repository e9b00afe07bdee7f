/**
 * Gives tests a running Ceph RADOS Gateway on loopback and fresh buckets in it.
 *
 * `rgw()` starts the server through `scripts/rgw.sh start` when it is not up (the
 * script serialises concurrent starters with a lock), so `npm test` works on its own
 * once the Debian packages are installed. When radosgw is not installed the tests
 * FAIL with a message saying to run `bash scripts/rgw.sh install`: they never skip.
 *
 * Credentials go through explicit client config (and env vars for child processes);
 * nothing is written to ~/.aws.
 */
import { spawnSync, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';

export interface Rgw {
  endpoint: string;
  region: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  /** AWS_* variables for a child process (the CLI). */
  env: Record<string, string>;
  /** A plain client (path style, Content-MD5 only) for checks behind the store's back. */
  client: S3Client;
  script: string;
}

function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, 'utf8')).name === 'pilotlight') return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error('test/support/rgw: cannot find the pilotlight package root');
    dir = up;
  }
}

function onPath(bin: string): boolean {
  return (process.env.PATH ?? '/usr/bin:/bin')
    .split(':')
    .concat(['/usr/bin', '/usr/sbin'])
    .some((d) => d && existsSync(path.join(d, bin)));
}

function runScript(script: string, args: string[], timeoutMs: number) {
  return spawnSync('bash', [script, ...args], { encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'] });
}

let cached: Promise<Rgw> | undefined;

export function rgw(): Promise<Rgw> {
  cached ??= (async () => {
    const script = path.join(repoRoot(), 'scripts', 'rgw.sh');
    const missing = ['radosgw', 'ceph-mon', 'ceph-osd', 'radosgw-admin'].filter((b) => !onPath(b));
    if (missing.length > 0) {
      throw new Error(
        `the S3 tests need a local Ceph RADOS Gateway, but ${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} not installed: ` +
          'run `bash scripts/rgw.sh install` (as root; it apt-gets radosgw ceph-mon ceph-osd ceph-common) and run the tests again',
      );
    }
    if (runScript(script, ['status'], 30_000).status !== 0) {
      const started = runScript(script, ['start'], 600_000);
      if (started.status !== 0) {
        throw new Error(
          `\`bash scripts/rgw.sh start\` failed (exit ${started.status ?? started.signal}):\n${started.stderr}${started.stdout}\n` +
            'look at the logs under /tmp/pilotlight-rgw/log (or $PILOTLIGHT_RGW_DIR/log)',
        );
      }
    }
    const envOut = runScript(script, ['env'], 30_000);
    const env: Record<string, string> = {};
    for (const m of envOut.stdout.matchAll(/^export (\w+)=(.*)$/gm)) env[m[1]] = m[2];
    const endpoint = env.AWS_ENDPOINT_URL_S3;
    if (!endpoint) throw new Error(`\`bash scripts/rgw.sh env\` printed no endpoint: ${envOut.stdout}${envOut.stderr}`);
    const credentials = { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY };
    const region = env.AWS_REGION ?? 'us-east-1';
    const client = new S3Client({
      endpoint,
      region,
      credentials,
      forcePathStyle: true,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    return { endpoint, region, credentials, env, client, script };
  })();
  return cached;
}

/** Creates a bucket with a random name and returns the name. */
export async function freshBucket(label = 't'): Promise<string> {
  const r = await rgw();
  const name = `pl-${label}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`.toLowerCase().slice(0, 63);
  await r.client.send(new CreateBucketCommand({ Bucket: name }));
  return name;
}

/** Deletes a bucket and all its objects (server side, through radosgw-admin). */
export async function dropBucket(name: string): Promise<void> {
  const r = await rgw();
  await promisify(execFile)('bash', [r.script, 'purge-bucket', name], { timeout: 120_000 }).catch(() => {
    // cleanup only: a leftover bucket in a throw-away test server harms nothing
  });
}

/** A loopback TCP port nothing listens on (for "connection refused" tests). */
export async function unusedPort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}
