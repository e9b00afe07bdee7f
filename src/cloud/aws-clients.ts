/**
 * The one way pilotlight builds its AWS clients: EBS (direct APIs), EC2, and S3
 * (src/store/s3-client.ts, re-exported). The SDK modules load on first use: they cost
 * about a second and ~90 MB, which commands that do not touch AWS must not pay.
 */
import type { EBSClient } from '@aws-sdk/client-ebs';
import type { EC2Client } from '@aws-sdk/client-ec2';
import type { S3Client } from '@aws-sdk/client-s3';
import { UserError } from '../repo/errors.js';
import type { S3ClientOptions } from '../store/s3-client.js';

/** An S3 client built by src/store/s3-client.ts, loaded on first use like the others. */
export async function s3Client(o: S3ClientOptions = {}): Promise<S3Client> {
  const { createS3Client } = await import('../store/s3-client.js');
  return createS3Client(o);
}

export interface AwsOptions {
  /** Default AWS_REGION / AWS_DEFAULT_REGION / the profile; us-east-1 with a custom endpoint. */
  region?: string;
  /** EBS direct API endpoint (tests; env AWS_ENDPOINT_URL_EBS). */
  ebsEndpoint?: string;
  /** EC2 API endpoint (tests; env AWS_ENDPOINT_URL_EC2). */
  ec2Endpoint?: string;
}

function region(o: AwsOptions, endpoint: string | undefined): string | undefined {
  return o.region ?? (process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || (endpoint ? 'us-east-1' : undefined));
}

export async function ebsClient(o: AwsOptions = {}): Promise<EBSClient> {
  const { EBSClient } = await import('@aws-sdk/client-ebs');
  // pilotlight retries PutSnapshotBlock itself (with backoff and a rate limit), so the SDK does not.
  const endpoint = o.ebsEndpoint ?? (process.env.AWS_ENDPOINT_URL_EBS || undefined);
  return new EBSClient({ region: region(o, endpoint), endpoint, maxAttempts: 1 });
}

export async function ec2Client(o: AwsOptions = {}): Promise<EC2Client> {
  const { EC2Client } = await import('@aws-sdk/client-ec2');
  const endpoint = o.ec2Endpoint ?? (process.env.AWS_ENDPOINT_URL_EC2 || undefined);
  return new EC2Client({ region: region(o, endpoint), endpoint });
}

/** The region a client resolved, or a UserError saying how to give one. */
export async function clientRegion(client: { config: { region: () => Promise<string> } }): Promise<string> {
  return client.config.region().catch(() => {
    throw new UserError('no AWS region: set AWS_REGION (or a region in the AWS profile) or pass --region');
  });
}
