/**
 * A vSphere test lab made of test doubles: vcsim (with DC0_H0_VM0 given an 8 MiB and a
 * 4 MiB disk), the change-id proxy in front of it, live disk files for that VM, and the
 * environment for the fake VDDK library.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ChangeIdProxy, scribble } from '../support/vcsim/changeid-proxy.js';
import { VCSIM_PASSWORD, VCSIM_USER, startVcsim, tempDir, testBinaries, type Vcsim } from './helpers.js';

export const VM = 'DC0_H0_VM0';
export const DISKS = [
  { fileName: '[LocalDS_0] DC0_H0_VM0/disk1.vmdk', size: 8 * 1024 * 1024 },
  { fileName: '[LocalDS_0] DC0_H0_VM0/disk2.vmdk', size: 4 * 1024 * 1024 },
];

export interface Lab {
  dir: string;
  sim: Vcsim;
  proxy: ChangeIdProxy;
  live: string[];
  vddkLibDir: string;
  vddkLog: string;
  vddkEnv: NodeJS.ProcessEnv;
  stop(): Promise<void>;
}

export async function startLab(maxBytesPerCall = 3 * 1024 * 1024): Promise<Lab> {
  const { vddkLibDir, vcsim } = testBinaries();
  const dir = tempDir('vsphere-lab');
  const sim = await startVcsim(['-disk-kb', String(DISKS[0].size / 1024), '-extra-disk-kb', String(DISKS[1].size / 1024)]);
  const vddkRoot = path.join(dir, 'vddk-root');
  mkdirSync(vddkRoot, { recursive: true });
  const proxy = await ChangeIdProxy.start({ upstream: sim.url, vddkRoot, maxBytesPerCall }, path.join(dir, 'proxy'), vcsim);
  const live = DISKS.map((d, i) => {
    const f = path.join(dir, `live-disk${i}.img`);
    writeFileSync(f, Buffer.alloc(0));
    const fd = Buffer.alloc(d.size);
    // some data, some holes
    randomBytes(1024 * 1024).copy(fd, 0);
    randomBytes(512 * 1024).copy(fd, d.size - 512 * 1024);
    writeFileSync(f, fd);
    proxy.setDiskFile(d.fileName, f);
    return f;
  });
  const vddkLog = path.join(dir, 'vddk-calls.log');
  const vddkEnv = {
    FAKE_VDDK_ROOT: vddkRoot,
    FAKE_VDDK_LOG: vddkLog,
    FAKE_VDDK_USER: VCSIM_USER,
    FAKE_VDDK_PASSWORD: VCSIM_PASSWORD,
    FAKE_VDDK_THUMBPRINT: proxy.thumbprint,
    // the CLI's VDDK worker gets only the environment it needs: pass the test double's settings on
    PILOTLIGHT_VDDK_ENV: 'FAKE_VDDK_*',
  };
  return {
    dir,
    sim,
    proxy,
    live,
    vddkLibDir,
    vddkLog,
    vddkEnv,
    stop: async () => {
      await proxy.stop();
      await sim.stop();
      if (!process.env.PILOTLIGHT_KEEP_TEST_DIRS) rmSync(dir, { recursive: true, force: true });
    },
  };
}

export { scribble };
