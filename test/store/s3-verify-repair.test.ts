/**
 * verify (trailer cross-check by ranged reads, slices, the verified log) and repair index on
 * S3: the real CLI against Ceph RGW on loopback (test/support/rgw.ts).
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DeleteObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { ok, scratch } from '../support/cli.js';
import { makeImage, sameBytes } from '../support/images.js';
import { dropBucket, freshBucket, rgw } from '../support/rgw.js';

const MiB = 1 << 20;

describe('verify and repair on S3 (Ceph RGW)', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let bucket: string;
  let env: Record<string, string>;
  let args: string[];
  let img: string;
  let snap: string;

  async function keys(prefix: string): Promise<string[]> {
    const r = await rgw();
    const out: string[] = [];
    let token: string | undefined;
    do {
      const page = await r.client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `repo/${prefix}`, ContinuationToken: token }));
      for (const o of page.Contents ?? []) out.push(o.Key!);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out.sort();
  }

  before(async () => {
    const r = await rgw();
    s = await scratch('s3-verify');
    bucket = await freshBucket('verify');
    env = { ...s.env, ...r.env, AWS_ENDPOINT_URL_S3: '' };
    args = ['--repo', `s3://${bucket}/repo`, '--s3-endpoint', r.endpoint];
    img = path.join(s.dir, 'a.img');
    await makeImage(img, 6 * MiB, [{ offset: 0, length: 4 * MiB, kind: 'random' }], 5);
    await ok(['init', ...args, '--pack-size', '1'], env);
    snap = (await ok(['backup', 'file', img, ...args, '--vm', 'a', '--json'], env)).json.snapshot;
  });

  after(async () => {
    await dropBucket(bucket).catch(() => {});
    await s.cleanup();
  });

  it('slices 1/2 and 2/2 read every pack once; the verified log is written; trailers of all packs are checked each time', async () => {
    const a = (await ok(['verify', ...args, '--read-data-subset', '1/2', '--json'], env)).json;
    const b = (await ok(['verify', ...args, '--read-data-subset', '2/2', '--json'], env)).json;
    assert.equal(a.packsRead + b.packsRead, a.packs);
    assert.equal(a.indexEntriesChecked, b.indexEntriesChecked);
    assert.ok(a.indexEntriesChecked > 0);
    assert.equal((await keys('verified/')).length, 1);
    const c = (await ok(['verify', ...args, '--read-data', '--older-than', '1d', '--json'], env)).json;
    assert.equal(c.packsRead, 0, 'everything was verified by the two slices');
  });

  it('repair index after every index object is deleted: the restore is byte-identical, no pack touched', async () => {
    const r = await rgw();
    const packs = [...(await keys('data/')), ...(await keys('meta/'))];
    for (const k of await keys('index/')) await r.client.send(new DeleteObjectCommand({ Bucket: bucket, Key: k }));
    const env2 = { ...env, PILOTLIGHT_CACHE_DIR: path.join(s.dir, 'cache2') };
    const rep = (await ok(['repair', 'index', ...args, '--json'], env2)).json;
    assert.equal(rep.ok, true);
    assert.equal(rep.packsIndexed, packs.length);
    assert.deepEqual([...(await keys('data/')), ...(await keys('meta/'))], packs);
    const out = path.join(s.dir, 'out.img');
    await ok(['restore', snap, ...args, '--to', out], env2);
    assert.ok(await sameBytes(img, out));
    const v = (await ok(['verify', ...args, '--json'], env2)).json;
    assert.equal(v.ok, true, v.problems.join('\n'));
  });
});
