/** `serve nbd` from a local-directory repository, checked with the Debian NBD clients. */
import * as path from 'node:path';
import { scratch } from '../support/cli.js';
import { serveChecks } from './serve-checks.js';

serveChecks('local store', async () => {
  const s = await scratch('nbd-local');
  return { repoArgs: ['--repo', path.join(s.dir, 'repo')], env: s.env, dir: s.dir, cleanup: s.cleanup };
});
