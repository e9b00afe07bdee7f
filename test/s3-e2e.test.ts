/**
 * End-to-end on S3: the real CLI in child processes against a real Ceph RADOS Gateway
 * on loopback (test/support/rgw.ts starts it): the full round trip, the number of
 * objects a backup makes, and a backup whose connection to the server is cut midway.
 *
 * The CLI is run from the same build as this file (`<outDir>/src/cli/main.js`), so the
 * test checks the code it was compiled with whatever the outDir.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { makeImage, mutate, sameBytes } from './support/images.js';
import { dropBucket, freshBucket, rgw } from './support/rgw.js';

const MiB = 1 << 20;
const CLI_MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');
/** Written next to the test data: worker threads inherit execArgv, so no `node -e` launcher. */
let launcher = '';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [launcher, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function ok(args: string[], env: Record<string, string>): Promise<Run & { json: any }> {
  const r = await cli(args, env);
  if (r.code !== 0) throw new Error(`pilotlight ${args.join(' ')} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return { ...r, json: args.includes('--json') ? JSON.parse(r.stdout) : undefined };
}

async function countObjects(bucket: string): Promise<number> {
  const r = await rgw();
  let n = 0;
  let token: string | undefined;
  do {
    const page = await r.client.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
    n += page.KeyCount ?? 0;
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return n;
}

/** A TCP proxy in front of RGW that can cut every connection and refuse new ones, then come back on the same port. */
class CuttableProxy {
  private server?: net.Server;
  private readonly sockets = new Set<net.Socket>();
  port = 0;
  bytesUp = 0;
  /** Cut everything once this many request bytes went through (0: never). */
  cutAfter = 0;
  cuts = 0;

  constructor(private readonly target: URL) {}

  async listen(): Promise<void> {
    this.server = net.createServer((client) => this.accept(client));
    await new Promise<void>((res, rej) => {
      this.server!.once('error', rej);
      this.server!.listen(this.port, '127.0.0.1', () => res());
    });
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  private accept(client: net.Socket): void {
    const upstream = net.connect(Number(this.target.port), this.target.hostname);
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (d) => {
      this.bytesUp += d.length;
      if (this.cutAfter > 0 && this.bytesUp >= this.cutAfter) {
        this.cutAfter = 0;
        void this.cut();
      }
    });
    client.pipe(upstream).pipe(client);
  }

  /** Stops listening (new connections are refused) and resets every open connection. */
  async cut(): Promise<void> {
    this.cuts++;
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.resetAndDestroy();
    if (server) await new Promise((res) => server.close(res));
  }

  async close(): Promise<void> {
    await this.cut();
  }
}

describe('pilotlight CLI on S3 (Ceph RGW)', () => {
  let dir: string;
  let env: Record<string, string>;
  let bucket: string;
  let repo: string;
  let endpoint: string;
  const buckets: string[] = [];

  before(async () => {
    const r = await rgw();
    endpoint = r.endpoint;
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-s3e2e-'));
    launcher = path.join(dir, 'pilotlight.mjs');
    await fsp.writeFile(launcher, `const m = await import(${JSON.stringify(pathToFileURL(CLI_MAIN).href)});\nawait m.main(process.argv);\n`);
    env = {
      ...r.env,
      // The endpoint goes by --s3-endpoint below; AWS_ENDPOINT_URL_S3 is tested by its own case.
      AWS_ENDPOINT_URL_S3: '',
      PILOTLIGHT_PASSWORD: 'correct horse battery staple',
      PILOTLIGHT_CACHE_DIR: path.join(dir, 'cache'),
    };
    bucket = await freshBucket('e2e');
    buckets.push(bucket);
    repo = `s3://${bucket}/backups/vm-repo`;
  });

  after(async () => {
    await Promise.all(buckets.map((b) => dropBucket(b)));
    (await rgw()).client.destroy();
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('init, two backups, restore both byte-identical, snapshots, stats with request counts, verify', async () => {
    const disk = path.join(dir, 'disk0.img');
    await makeImage(disk, 64 * MiB + 4096, [
      { offset: 0, length: 6 * MiB, kind: 'random' },
      { offset: 10 * MiB, length: 4 * MiB, kind: 'repeat' },
      { offset: 20 * MiB, length: 8 * MiB, kind: 'text' },
      { offset: 40 * MiB, length: 2 * MiB, kind: 'zero' },
      { offset: 64 * MiB, length: 4096, kind: 'random' },
    ]);
    const s3 = ['--repo', repo, '--s3-endpoint', endpoint];
    await ok(['init', ...s3], env);
    const first = (await ok(['backup', 'file', disk, '--vm', 'web01', '--json', ...s3], env)).json;
    assert.ok(first.requests, 'backup --json reports the S3 requests');
    assert.ok(first.requests.put >= 2, JSON.stringify(first.requests));
    assert.ok(first.requests.bytesUp >= first.bytesStored, 'every stored byte went up');

    const state1 = path.join(dir, 'disk0.state1');
    await fsp.copyFile(disk, state1);
    await mutate(disk, [
      { offset: 1 * MiB + 5, length: 100_000 },
      { offset: 50 * MiB, length: 3 * MiB },
    ]);
    const second = (await ok(['backup', 'file', disk, '--vm', 'web01', '--json', ...s3], env)).json;
    assert.equal(second.parent, first.snapshot);
    assert.ok(second.chunksReused > 0);

    for (const [snap, expected] of [
      [first.snapshot, state1],
      [second.snapshot, disk],
    ] as const) {
      const out = path.join(dir, `restored-${snap}.img`);
      await ok(['restore', snap, '--to', out, ...s3], env);
      assert.ok(await sameBytes(expected, out), `snapshot ${snap} does not restore byte-identical`);
    }

    const snaps = (await ok(['snapshots', '--json', ...s3], env)).json;
    assert.equal((Array.isArray(snaps) ? snaps : snaps.snapshots).length, 2);
    const stats = (await ok(['stats', '--json', ...s3], env)).json;
    assert.equal(stats.snapshots, 2);
    assert.ok(stats.requests && stats.requests.list >= 1, JSON.stringify(stats.requests));
    await ok(['verify', '--read-data', ...s3], env);
  });

  it('AWS_ENDPOINT_URL_S3 works in place of --s3-endpoint', async () => {
    const r = await ok(['snapshots', '--repo', repo], { ...env, AWS_ENDPOINT_URL_S3: endpoint });
    assert.match(r.stdout, /web01/);
  });

  it('backing up 160 MiB of new data makes dozens of objects, not thousands', async (t) => {
    const b = await freshBucket('count');
    buckets.push(b);
    const disk = path.join(dir, 'big.img');
    await makeImage(disk, 160 * MiB, [{ offset: 0, length: 160 * MiB, kind: 'random' }], 7);
    const s3 = ['--repo', `s3://${b}/r`, '--s3-endpoint', endpoint];
    await ok(['init', ...s3], env);
    const t0 = Date.now();
    const res = (await ok(['backup', 'file', disk, '--vm', 'big', '--json', ...s3], env)).json;
    const seconds = (Date.now() - t0) / 1000;
    const objects = await countObjects(b);
    t.diagnostic(`160 MiB new data: ${objects} objects, ${res.requests.put} PUT-class requests, ${(160 / seconds).toFixed(0)} MiB/s`);
    assert.ok(objects >= 10 && objects <= 40, `${objects} objects`);
    await fsp.rm(disk);
  });

  it('a short outage during a backup (server away for 1 s) is ridden out by the retries', async () => {
    const b = await freshBucket('blip');
    buckets.push(b);
    const proxy = new CuttableProxy(new URL(endpoint));
    await proxy.listen();
    try {
      const via = ['--repo', `s3://${b}/r`, '--s3-endpoint', `http://127.0.0.1:${proxy.port}`];
      const disk = path.join(dir, 'blip.img');
      await makeImage(disk, 64 * MiB, [{ offset: 0, length: 64 * MiB, kind: 'random' }], 13);
      await ok(['init', ...via], env);
      proxy.cutAfter = proxy.bytesUp + 24 * MiB;
      const cut = new Promise<void>((resolve) => {
        const timer = setInterval(() => {
          if (proxy.cuts > 0) {
            clearInterval(timer);
            setTimeout(() => void proxy.listen().then(resolve), 1000);
          }
        }, 20);
      });
      const res = (await ok(['backup', 'file', disk, '--vm', 'blip', '--json', ...via], env)).json;
      await cut;
      assert.equal(proxy.cuts, 1);
      assert.ok(res.requests.retries >= 1, `retries: ${JSON.stringify(res.requests)}`);
      assert.ok(res.requests.failed >= 1);
      await ok(['verify', '--read-data', ...via], env);
      await fsp.rm(disk);
    } finally {
      await proxy.close();
    }
  });

  it('a backup whose connection is cut midway fails clearly; the next one completes and verify passes', async (t) => {
    const b = await freshBucket('cut');
    buckets.push(b);
    const proxy = new CuttableProxy(new URL(endpoint));
    await proxy.listen();
    try {
      const via = ['--repo', `s3://${b}/r`, '--s3-endpoint', `http://127.0.0.1:${proxy.port}`];
      const disk = path.join(dir, 'cut.img');
      await makeImage(disk, 96 * MiB, [{ offset: 0, length: 96 * MiB, kind: 'random' }], 11);
      await ok(['init', ...via], env);

      proxy.cutAfter = proxy.bytesUp + 40 * MiB;
      const failed = await cli(['backup', 'file', disk, '--vm', 'cut', ...via], env);
      assert.equal(proxy.cuts, 1, 'the proxy cut the connection during the backup');
      assert.notEqual(failed.code, 0, `backup should fail while the server is unreachable\n${failed.stdout}`);
      assert.match(failed.stderr, new RegExp(`127\\.0\\.0\\.1:${proxy.port}`), failed.stderr);
      assert.match(failed.stderr, /refused|cut|cannot reach/, failed.stderr);
      assert.match(failed.stderr, /run the command again|check that it is running/, failed.stderr);
      assert.ok(!/\n\s+at /.test(failed.stderr), `no stack trace for users:\n${failed.stderr}`);
      t.diagnostic(`the failed backup said: ${failed.stderr.trim()}`);

      await proxy.listen(); // the server is back, on the same address
      const snaps0 = (await ok(['snapshots', '--json', ...via], env)).json;
      assert.equal((Array.isArray(snaps0) ? snaps0 : snaps0.snapshots).length, 0, 'the failed backup committed nothing');
      const done = (await ok(['backup', 'file', disk, '--vm', 'cut', '--json', ...via], env)).json;
      assert.ok(done.snapshot);
      await ok(['verify', '--read-data', ...via], env);
      const out = path.join(dir, 'cut-restored.img');
      await ok(['restore', done.snapshot, '--to', out, ...via], env);
      assert.ok(await sameBytes(disk, out));
      await fsp.rm(disk);
    } finally {
      await proxy.close();
    }
  });
});
