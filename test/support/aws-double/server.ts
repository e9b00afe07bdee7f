/**
 * The AWS TEST DOUBLE: one Node http server on 127.0.0.1 (random port) that answers
 * the EBS direct API (REST-JSON, paths under /snapshots) and the EC2 Query API
 * (form-encoded POST /) operations pilotlight uses. Tests point the real AWS SDK
 * clients at `endpoint`. It is not AWS and proves nothing about AWS's behaviour beyond
 * what its code states; see README.md in this folder.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { EBSClient } from '@aws-sdk/client-ebs';
import { EC2Client } from '@aws-sdk/client-ec2';
import { EBS_BLOCK_SIZE, handleEbs, lineageIndexes, visibleBlock } from './ebs-double.js';
import { handleEc2 } from './ec2-double.js';
import { AwsDoubleOptions, AwsDoubleState, newState } from './state.js';

export { EBS_BLOCK_SIZE };
export type { AwsDoubleOptions, AwsDoubleState };

export interface AwsDouble {
  endpoint: string;
  state: AwsDoubleState;
  /** Real SDK clients configured for the double (region us-east-1, dummy credentials). */
  ebsClient(): EBSClient;
  ec2Client(): EC2Client;
  /**
   * The full volume image of a completed snapshot as the double holds it (blocks of its
   * lineage, zeros elsewhere), `length` bytes (default the volume size).
   */
  snapshotImage(snapshotId: string, length?: number): Buffer;
  close(): Promise<void>;
}

export const DOUBLE_CREDENTIALS = { accessKeyId: 'AKIDTESTDOUBLE', secretAccessKey: 'test-double-secret' };

export async function startAwsDouble(options: AwsDoubleOptions = {}): Promise<AwsDouble> {
  const state = newState(options);
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const run = path.startsWith('/snapshots') ? handleEbs(state, req, res) : handleEc2(state, req, res);
    run.catch((err) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`test double failure: ${(err as Error).stack}`);
    });
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const clients: { destroy(): void }[] = [];
  const common = {
    endpoint,
    region: 'us-east-1',
    credentials: DOUBLE_CREDENTIALS,
    maxAttempts: 1,
  };
  return {
    endpoint,
    state,
    ebsClient() {
      const c = new EBSClient(common);
      clients.push(c);
      return c;
    },
    ec2Client() {
      const c = new EC2Client(common);
      clients.push(c);
      return c;
    },
    snapshotImage(snapshotId: string, length?: number) {
      const snap = state.snapshots.get(snapshotId);
      if (!snap) throw new Error(`no snapshot ${snapshotId} in the test double`);
      const size = length ?? snap.volumeSize * 1024 * 1024 * 1024;
      const out = Buffer.alloc(size);
      for (const i of lineageIndexes(state, snap)) {
        const b = visibleBlock(state, snap, i)!;
        if (createHash('sha256').update(b.data).digest('base64') !== b.checksum) throw new Error('double corrupted a block');
        const off = i * EBS_BLOCK_SIZE;
        if (off < size) b.data.copy(out, off, 0, Math.min(EBS_BLOCK_SIZE, size - off));
      }
      return out;
    },
    async close() {
      for (const c of clients) c.destroy();
      await Promise.all([...state.importTasks.values()].map((t) => t.done));
      await new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      });
    },
  };
}
