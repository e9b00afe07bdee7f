/** The GC property suite on Ceph RGW (S3), fewer runs (PILOTLIGHT_GC_RUNS_RGW raises them). */
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { openStore } from '../../src/store/open-store.js';
import { dropBucket, freshBucket, rgw } from '../support/rgw.js';
import { runProperty } from './property.js';

describe('GC property: RGW', () => {
  let root = '';
  const buckets: string[] = [];
  after(async () => {
    for (const b of buckets) await dropBucket(b);
    if (root) await fsp.rm(root, { recursive: true, force: true });
  });
  it('random backups, forgets, prunes, kills and interleavings never lose a snapshot', async () => {
    const r = await rgw();
    for (const [k, v] of Object.entries(r.env)) process.env[k] = v;
    root = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-gc-prop-rgw-'));
    await runProperty(
      {
        fresh: async () => {
          const bucket = await freshBucket('gc');
          buckets.push(bucket);
          const location = `s3://${bucket}/repo`;
          return { location, store: () => openStore(location, { s3Endpoint: r.endpoint }), cliArgs: ['--s3-endpoint', r.endpoint], env: r.env };
        },
      },
      root,
      Number(process.env.PILOTLIGHT_GC_RUNS_RGW) || 1,
    );
  });
});
