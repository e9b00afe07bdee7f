/** The GC property suite on the local-directory store (PILOTLIGHT_GC_RUNS raises the run count). */
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { FsStore } from '../../src/store/fs-store.js';
import { runProperty } from './property.js';

describe('GC property: local store', () => {
  let root = '';
  after(async () => root && fsp.rm(root, { recursive: true, force: true }));
  it('random backups, forgets, prunes, kills and interleavings never lose a snapshot', async () => {
    root = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-gc-prop-'));
    let n = 0;
    await runProperty(
      {
        fresh: async () => {
          const location = path.join(root, `repo-${n++}`);
          return { location, store: async () => new FsStore(location), cliArgs: [], env: {} };
        },
      },
      root,
      Number(process.env.PILOTLIGHT_GC_RUNS) || 3,
    );
  });
});
