/**
 * Errors of the cloud paths, each saying what happened, what it means and what to do.
 * `explainAwsError` turns an AWS SDK error into one of these.
 */
export type CloudErrorKind = 'access-denied' | 'quota' | 'not-found' | 'throttled' | 'invalid' | 'failed';

export class CloudError extends Error {
  readonly code: string;
  constructor(
    readonly kind: CloudErrorKind,
    message: string,
    readonly details: { action?: string; awsCode?: string; resource?: string } = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.code = `CLOUD_${kind.toUpperCase().replace(/-/g, '_')}`;
    this.name = 'CloudError';
  }

  toJSON(): Record<string, unknown> {
    return { error: this.code, kind: this.kind, message: this.message, ...this.details };
  }
}

const ACCESS = new Set([
  'AccessDeniedException',
  'AccessDenied',
  'UnauthorizedOperation',
  'AuthFailure',
  'InvalidClientTokenId',
  'UnrecognizedClientException',
  'ExpiredToken',
  'ExpiredTokenException',
  'SignatureDoesNotMatch',
  'InvalidAccessKeyId',
  'OptInRequired',
  'Blocked',
]);
const QUOTA = new Set([
  'ServiceQuotaExceededException',
  'VcpuLimitExceeded',
  'InstanceLimitExceeded',
  'ResourceLimitExceeded',
  'SnapshotLimitExceeded',
  'VolumeLimitExceeded',
  'MaxIOPSLimitExceeded',
  'AMIQuotaExceeded',
  'InsufficientInstanceCapacity',
  'ImportSnapshotLimitExceeded',
]);
const NOT_FOUND = new Set([
  'ResourceNotFoundException',
  'InvalidSnapshot.NotFound',
  'InvalidAMIID.NotFound',
  'InvalidInstanceID.NotFound',
  'InvalidSubnetID.NotFound',
  'InvalidGroup.NotFound',
  'InvalidKeyPair.NotFound',
  'NoSuchBucket',
  'NoSuchKey',
  'NotFound',
]);

/** `action` is the IAM action that was being performed, e.g. `ebs:PutSnapshotBlock`. */
export function explainAwsError(err: unknown, action: string, resource?: string): CloudError {
  if (err instanceof CloudError) return err;
  const e = err as { name?: string; message?: string; Code?: string };
  const code = e?.Code ?? e?.name ?? 'Error';
  const msg = e?.message ?? String(err);
  const on = resource ? ` on ${resource}` : '';
  const details = { action, awsCode: code, resource };
  if (code === 'CredentialsProviderError') {
    return new CloudError(
      'access-denied',
      `no AWS credentials for ${action}: ${msg}. Set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), log in with 'aws sso login', or run where an instance role is attached.`,
      details,
      { cause: err },
    );
  }
  if (/Region is missing/i.test(msg)) {
    return new CloudError('invalid', `no AWS region for ${action}: set AWS_REGION or pass --region.`, details, { cause: err });
  }
  if (ACCESS.has(code)) {
    return new CloudError(
      'access-denied',
      `AWS refused ${action}${on} (${code}: ${msg}). The credentials in use lack this permission or are not valid. ` +
        `Grant ${action} to the IAM user or role (docs/AWS.md lists the whole policy pilotlight needs), check AWS_PROFILE / AWS_REGION, and run the command again.`,
      details,
      { cause: err },
    );
  }
  if (QUOTA.has(code)) {
    return new CloudError(
      'quota',
      `AWS quota reached during ${action}${on} (${code}: ${msg}). Nothing is wrong with the backup; the account hit a service limit. ` +
        `Free capacity (finish or delete pending snapshots, deregister old AMIs, terminate instances) or request an increase in the Service Quotas console, then retry.`,
      details,
      { cause: err },
    );
  }
  if (NOT_FOUND.has(code)) {
    return new CloudError(
      'not-found',
      `${action}${on}: AWS says it does not exist (${code}: ${msg}). Check the region (AWS_REGION) and the id; an EBS snapshot recorded by pilotlight may have been deleted outside pilotlight, ` +
        `in which case push again without it (\`pilotlight ebs push\` starts a full push when no recorded EBS snapshot exists).`,
      details,
      { cause: err },
    );
  }
  if (/Throttl|RequestLimitExceeded|SlowDown/.test(code)) {
    return new CloudError(
      'throttled',
      `AWS kept throttling ${action}${on} after every retry (${code}: ${msg}). Lower the request rate (--rate) or concurrency and retry.`,
      details,
      { cause: err },
    );
  }
  if (/Validation|Invalid|Malformed|Missing|IncorrectState/.test(code)) {
    return new CloudError('invalid', `AWS rejected ${action}${on} (${code}: ${msg}).`, details, { cause: err });
  }
  return new CloudError('failed', `${action}${on} failed (${code}: ${msg}).`, details, { cause: err });
}
