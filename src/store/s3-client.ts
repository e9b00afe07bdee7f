import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { S3Client, S3ClientConfig } from '@aws-sdk/client-s3';

export interface S3ClientOptions extends Partial<S3ClientConfig> {
  endpoint?: string;
  region?: string;
  forcePathStyle?: boolean;
  /** Keep-alive sockets per protocol (default: the SDK's). */
  maxSockets?: number;
  connectTimeoutMs?: number;
  /** Silence after which an answer that stopped flowing fails (default 60 s). */
  idleTimeoutMs?: number;
  /** No request runs longer than this in total (default 15 min). */
  requestTimeoutMs?: number;
}

/**
 * The one way pilotlight builds an S3 client (repository store, restore to S3, test
 * doubles): endpoint and region from the arguments or AWS_ENDPOINT_URL_S3 / AWS_REGION
 * (us-east-1 for a custom endpoint without one), path-style addressing for a custom
 * endpoint, checksums only when an operation requires them (S3-compatible servers),
 * and a hung server is an error, not a hang (idle and total time limits; without
 * throwOnRequestTimeout the SDK only logs a warning when requestTimeout passes).
 */
export function createS3Client(o: S3ClientOptions = {}): S3Client {
  const { maxSockets, connectTimeoutMs, idleTimeoutMs, requestTimeoutMs, ...config } = o;
  const endpoint = o.endpoint ?? (process.env.AWS_ENDPOINT_URL_S3 || undefined);
  return new S3Client({
    ...config,
    endpoint,
    region: o.region ?? (process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || (endpoint ? 'us-east-1' : undefined)),
    forcePathStyle: o.forcePathStyle ?? (endpoint ? true : undefined),
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: o.requestHandler ?? {
      ...(maxSockets ? { httpAgent: new HttpAgent({ keepAlive: true, maxSockets }), httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets }) } : {}),
      connectionTimeout: connectTimeoutMs ?? 10_000,
      socketTimeout: idleTimeoutMs ?? 60_000,
      requestTimeout: requestTimeoutMs ?? 15 * 60_000,
      throwOnRequestTimeout: true,
    },
  });
}
