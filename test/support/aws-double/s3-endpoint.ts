/**
 * The S3 endpoint the cloud tests use: the real Ceph RGW started by scripts/rgw.sh when
 * it is running (or PILOTLIGHT_TEST_S3_ENDPOINT + keys), else the in-memory S3 TEST
 * DOUBLE (s3-double.ts). Tests print which one they used. Never starts or stops RGW:
 * that belongs to scripts/rgw.sh.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { createS3Client } from '../../../src/cloud/s3-image-upload.js';
import { startS3Double } from './s3-double.js';

export interface TestS3 {
  kind: 'rgw' | 's3-double';
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** A fresh bucket for this test file. */
  bucket: string;
  client(): S3Client;
  close(): Promise<void>;
}

function repoRoot(): string {
  // dist*/test/support/aws-double/s3-endpoint.js -> repository root
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) dir = path.dirname(dir);
  if (path.basename(dir).startsWith('dist')) dir = path.dirname(dir);
  while (!existsSync(path.join(dir, 'scripts'))) dir = path.dirname(dir);
  return dir;
}

function rgwEnv(): Record<string, string> | null {
  if (process.env.PILOTLIGHT_TEST_S3_ENDPOINT) {
    return {
      AWS_ENDPOINT_URL_S3: process.env.PILOTLIGHT_TEST_S3_ENDPOINT,
      AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID ?? '',
      AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY ?? '',
    };
  }
  if (process.env.PILOTLIGHT_TEST_S3 === 'double') return null;
  const script = path.join(repoRoot(), 'scripts', 'rgw.sh');
  if (!existsSync(script)) return null;
  try {
    execFileSync(script, ['status'], { stdio: 'ignore', timeout: 15_000 });
    const out = execFileSync(script, ['env'], { encoding: 'utf8', timeout: 15_000 });
    const env: Record<string, string> = {};
    for (const m of out.matchAll(/^export (\w+)=(.*)$/gm)) env[m[1]] = m[2];
    return env.AWS_ENDPOINT_URL_S3 ? env : null;
  } catch {
    return null;
  }
}

export async function testS3(): Promise<TestS3> {
  const bucket = `pl-cloud-${randomBytes(4).toString('hex')}`;
  const env = rgwEnv();
  let t: Omit<TestS3, 'bucket' | 'client'>;
  if (env) {
    t = {
      kind: 'rgw',
      endpoint: env.AWS_ENDPOINT_URL_S3,
      accessKeyId: env.AWS_ACCESS_KEY_ID,
      secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
      region: 'us-east-1',
      close: async () => {},
    };
  } else {
    const d = await startS3Double();
    t = { kind: 's3-double', endpoint: d.endpoint, accessKeyId: d.accessKeyId, secretAccessKey: d.secretAccessKey, region: 'us-east-1', close: () => d.close() };
  }
  const clients: S3Client[] = [];
  const client = () => {
    const c = createS3Client({ endpoint: t.endpoint, region: t.region, credentials: { accessKeyId: t.accessKeyId, secretAccessKey: t.secretAccessKey } });
    clients.push(c);
    return c;
  };
  await client().send(new CreateBucketCommand({ Bucket: bucket }));
  const close = t.close;
  return {
    ...t,
    bucket,
    client,
    close: async () => {
      for (const c of clients) c.destroy();
      await close();
    },
  };
}
