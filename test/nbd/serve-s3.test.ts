/** `serve nbd` from a repository on Ceph RGW (S3 on loopback), checked with the Debian NBD clients. */
import { scratch } from '../support/cli.js';
import { dropBucket, freshBucket, rgw } from '../support/rgw.js';
import { serveChecks } from './serve-checks.js';

serveChecks('S3 on RGW', async () => {
  const r = await rgw();
  const s = await scratch('nbd-s3');
  const bucket = await freshBucket('nbd');
  return {
    repoArgs: ['--repo', `s3://${bucket}/repo`, '--s3-endpoint', r.endpoint],
    env: { ...r.env, ...s.env },
    dir: s.dir,
    cleanup: async () => {
      await dropBucket(bucket);
      await s.cleanup();
    },
  };
});
