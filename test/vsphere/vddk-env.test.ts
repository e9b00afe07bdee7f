/**
 * The VDDK worker process gets only the environment it needs: never the repository
 * password or cloud credentials. Checked on the live worker process (its
 * /proc/<pid>/environ), started against the FAKE libvixDiskLib.so (test/support/fake-vddk,
 * a test double with VDDK 7/8's ABI, not VMware's library).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { VddkWorker } from '../../src/source/vsphere/vddk-client.js';
import { testBinaries } from './helpers.js';

const SECRETS: Record<string, string> = {
  PILOTLIGHT_PASSWORD: 'repo-secret-1',
  AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE',
  AWS_SECRET_ACCESS_KEY: 'aws-secret-2',
  AWS_SESSION_TOKEN: 'aws-token-3',
  VSPHERE_PASSWORD: 'vsphere-secret-4',
  SOME_OTHER_TOKEN: 'other-5',
};

function environOf(pid: number): Map<string, string> {
  const out = new Map<string, string>();
  for (const kv of readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')) {
    const eq = kv.indexOf('=');
    if (eq > 0) out.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  return out;
}

test('VDDK worker environment: PATH, locale and the library path, never the repository password or AWS keys', async () => {
  const { vddkLibDir } = testBinaries();
  const saved = { ...process.env };
  Object.assign(process.env, SECRETS, { LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8', PILOTLIGHT_VDDK_ENV: 'FAKE_VDDK_*,AWS_SECRET_ACCESS_KEY', FAKE_VDDK_FROM_PARENT: 'x' });
  let w: VddkWorker | undefined;
  try {
    w = await VddkWorker.start({ libDir: vddkLibDir, env: { FAKE_VDDK_LOG: '/dev/null' } });
    const env = environOf(w.pid!);
    for (const name of Object.keys(SECRETS)) assert.equal(env.has(name), false, `${name} reached the VDDK worker`);
    const all = [...env.values()].join('\n');
    for (const value of Object.values(SECRETS)) assert.equal(all.includes(value), false, `a secret value reached the VDDK worker`);
    assert.equal(env.get('PATH'), saved.PATH);
    assert.equal(env.get('LANG'), 'C.UTF-8');
    assert.equal(env.get('LC_ALL'), 'C.UTF-8');
    assert.equal(env.get('LD_LIBRARY_PATH')!.split(':')[0], vddkLibDir);
    assert.equal(env.get('FAKE_VDDK_LOG'), '/dev/null', 'what the caller passed explicitly');
    assert.equal(env.get('FAKE_VDDK_FROM_PARENT'), 'x', 'what PILOTLIGHT_VDDK_ENV names');
  } finally {
    await w?.exit().catch(() => w?.kill());
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
});
