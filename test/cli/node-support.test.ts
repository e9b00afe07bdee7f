/**
 * The AWS SDK's NodeVersionSupportWarning stays off stderr (Node 20), other
 * warnings still print, and the Node versions said to be supported include the
 * one running.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { SUPPORTED_NODE_MAJORS } from '../../src/cli/node-support.js';
import { ROOT } from '../support/cli.js';

/** Runs a fresh node that makes a real EBS client (as `ebs push` does), then emits a warning of its own. */
function clientStderr(quiet: boolean): string {
  const mod = path.join(ROOT, 'dist', 'src', 'cli', 'node-support.js');
  const script = `
    const { quietSdkNodeVersionWarning } = await import(${JSON.stringify(mod)});
    if (${quiet}) quietSdkNodeVersionWarning();
    const { EBSClient } = await import('@aws-sdk/client-ebs');
    new EBSClient({ region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'y' } });
    process.emitWarning('a real warning still shows');`;
  const env = { ...process.env };
  delete env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, env, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stderr;
}

describe('Node versions', () => {
  it('the SDK version warning is silenced, other warnings are not', () => {
    const quiet = clientStderr(true);
    assert.doesNotMatch(quiet, /NodeVersionSupportWarning/);
    assert.match(quiet, /a real warning still shows/);
    if (Number(process.versions.node.split('.')[0]) < 22) {
      // the SDK does warn on this Node without the switch: the check above is not vacuous
      assert.match(clientStderr(false), /NodeVersionSupportWarning/);
    }
  });

  it('the running Node is a supported version', () => {
    assert.ok((SUPPORTED_NODE_MAJORS as readonly number[]).includes(Number(process.versions.node.split('.')[0])));
  });
});
