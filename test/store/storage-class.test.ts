/**
 * Archive storage classes need a restore request before GET: packs stored there could not be
 * read by a restore. They are refused when the store is opened, before any request is sent.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { openStore } from '../../src/store/open-store.js';
import { run, scratch } from '../support/cli.js';

// nothing listens here: a refusal must come before any request
const NOWHERE = 'http://127.0.0.1:9';

for (const cls of ['GLACIER', 'DEEP_ARCHIVE', 'glacier']) {
  it(`storage class ${cls} is refused for packs, saying why and what to use instead`, async () => {
    await assert.rejects(
      openStore('s3://bucket/repo', { s3Endpoint: NOWHERE, storageClass: cls, retry: { maxAttempts: 1 } }),
      (err: Error) => {
        assert.match(err.message, /restore request|cannot be read|restores could not read/i);
        assert.match(err.message, /GLACIER_IR/);
        assert.match(err.message, /STANDARD_IA/);
        assert.doesNotMatch(err.message, /\n/);
        return true;
      },
    );
  });
}

it('the CLI refuses --storage-class DEEP_ARCHIVE with one line and exit 1, before contacting S3', async () => {
  const s = await scratch('sclass');
  try {
    const r = await run(['init', '--repo', 's3://bucket/repo', '--s3-endpoint', NOWHERE, '--storage-class', 'DEEP_ARCHIVE'], s.env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^pilotlight: .*DEEP_ARCHIVE.*GLACIER_IR.*\n$/);
  } finally {
    await s.cleanup();
  }
});

it('a pack that a lifecycle rule moved to an archive class (InvalidObjectState on GET) is a clear error, not "access denied"', async () => {
  const { S3Store } = await import('../../src/store/s3-store.js');
  const store = new S3Store({ bucket: 'bucket', prefix: 'repo', endpoint: NOWHERE, region: 'us-east-1', forcePathStyle: true });
  try {
    // the error as the AWS SDK raises it for a GET of an archived object (HTTP 403, code InvalidObjectState)
    const sdkError = Object.assign(new Error('The operation is not valid for the object\'s storage class'), {
      name: 'InvalidObjectState',
      $metadata: { httpStatusCode: 403 },
    });
    const e = store.translate(sdkError, 'GetObject repo/data/ab/abcd') as Error & { code: string; retryable: boolean };
    assert.equal(e.code, 'S3_ARCHIVED');
    assert.equal(e.retryable, false);
    assert.match(e.message, /archive storage class/);
    assert.match(e.message, /restore-object/);
    assert.match(e.message, /GLACIER_IR/);
  } finally {
    await store.close();
  }
});
