/**
 * TEST DOUBLE of the EBS direct APIs (REST-JSON, API version 2019-11-02), for tests only.
 * It is not AWS: it keeps snapshots in memory and implements the six operations
 * pilotlight uses, following the AWS API reference: 512 KiB blocks, SHA-256 checksum
 * verification, block index bounds, the pending -> completed state machine, the
 * changed-blocks count check on completion, parent snapshots, block tokens.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AwsDoubleState, DoubleSnapshot } from './state.js';

export const EBS_BLOCK_SIZE = 524288;
const GIB = 1024 * 1024 * 1024;

export class EbsError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly reason?: string,
  ) {
    super(message);
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'x-amzn-requestid': randomBytes(8).toString('hex'),
    ...headers,
  });
  res.end(text);
}

export function sendEbsError(res: ServerResponse, err: EbsError): void {
  const body: Record<string, string> = { message: err.message };
  if (err.reason) body.Reason = err.reason;
  sendJson(res, err.status, body, { 'x-amzn-errortype': err.type });
}

const validation = (message: string, reason: string) => new EbsError(400, 'ValidationException', message, reason);
const notFound = (message: string, reason: string) => new EbsError(404, 'ResourceNotFoundException', message, reason);

/** Visible block of `snap` at `index`: its own write, else its parent's, else none (zeros). */
export function visibleBlock(state: AwsDoubleState, snap: DoubleSnapshot, index: number) {
  for (let s: DoubleSnapshot | undefined = snap; s; s = s.parentId ? state.snapshots.get(s.parentId) : undefined) {
    const b = s.blocks.get(index);
    if (b) return { ...b, owner: s.id };
  }
  return undefined;
}

/** Every block index that has data somewhere in the snapshot's lineage, ascending. */
export function lineageIndexes(state: AwsDoubleState, snap: DoubleSnapshot): number[] {
  const set = new Set<number>();
  for (let s: DoubleSnapshot | undefined = snap; s; s = s.parentId ? state.snapshots.get(s.parentId) : undefined) {
    for (const i of s.blocks.keys()) set.add(i);
  }
  return [...set].sort((a, b) => a - b);
}

function lineage(state: AwsDoubleState, snap: DoubleSnapshot): Set<string> {
  const ids = new Set<string>();
  for (let s: DoubleSnapshot | undefined = snap; s; s = s.parentId ? state.snapshots.get(s.parentId) : undefined) ids.add(s.id);
  return ids;
}

function token(snapId: string, index: number, version: number): string {
  return Buffer.from(`${snapId}.${index}.${version}`).toString('base64');
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of req) parts.push(p as Buffer);
  return Buffer.concat(parts);
}

function getSnap(state: AwsDoubleState, id: string): DoubleSnapshot {
  const s = state.snapshots.get(id);
  if (!s) throw notFound(`The snapshot '${id}' does not exist.`, 'SNAPSHOT_NOT_FOUND');
  return s;
}

function checkAllowed(state: AwsDoubleState, action: string): void {
  if (state.options.deny?.includes(`ebs:${action}`)) {
    throw new EbsError(403, 'AccessDeniedException', `User is not authorized to perform: ebs:${action}`, 'UNAUTHORIZED_ACCOUNT');
  }
}

function page(url: URL, all: number[], max: number | undefined): { items: number[]; next?: string } {
  const pageToken = url.searchParams.get('pageToken');
  let start = Number(url.searchParams.get('startingBlockIndex') ?? 0);
  if (pageToken) {
    const t = Number(Buffer.from(pageToken, 'base64').toString());
    if (!Number.isInteger(t)) throw validation('The page token is not valid.', 'INVALID_PAGE_TOKEN');
    start = t;
  }
  const maxResults = Math.min(Number(url.searchParams.get('maxResults') ?? max ?? 10000), 10000);
  if (!(maxResults >= 100)) throw validation('maxResults must be between 100 and 10000.', 'INVALID_PARAMETER_VALUE');
  const from = all.filter((i) => i >= start);
  const items = from.slice(0, maxResults);
  const next = from.length > maxResults ? Buffer.from(String(from[maxResults])).toString('base64') : undefined;
  return { items, next };
}

/** Handles one request whose path starts with /snapshots. */
export async function handleEbs(state: AwsDoubleState, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://double');
  const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  const method = req.method ?? 'GET';
  try {
    if (!req.headers.authorization) throw new EbsError(403, 'AccessDeniedException', 'Missing Authentication Token', 'UNAUTHORIZED_ACCOUNT');

    // POST /snapshots -> StartSnapshot
    if (method === 'POST' && parts.length === 1) {
      checkAllowed(state, 'StartSnapshot');
      state.counters.StartSnapshot++;
      const body = JSON.parse((await readBody(req)).toString() || '{}');
      const size = body.VolumeSize;
      if (!Number.isInteger(size) || size < 1 || size > 65536) throw validation('VolumeSize must be 1..65536 GiB.', 'INVALID_VOLUME_SIZE');
      if (body.ClientToken) {
        const existing = [...state.snapshots.values()].find((s) => s.clientToken === body.ClientToken);
        if (existing) return startResponse(res, existing);
      }
      let parent: DoubleSnapshot | undefined;
      if (body.ParentSnapshotId) {
        parent = state.snapshots.get(body.ParentSnapshotId);
        if (!parent) throw notFound(`The parent snapshot '${body.ParentSnapshotId}' does not exist.`, 'SNAPSHOT_NOT_FOUND');
        if (parent.status !== 'completed') throw validation(`The parent snapshot '${parent.id}' is not completed.`, 'INVALID_DEPENDENCY_REQUEST');
        if (size < parent.volumeSize) throw validation('VolumeSize cannot be smaller than the parent snapshot volume size.', 'INVALID_VOLUME_SIZE');
      }
      const pending = [...state.snapshots.values()].filter((s) => s.status === 'pending').length;
      if (state.options.maxPendingSnapshots !== undefined && pending >= state.options.maxPendingSnapshots) {
        throw new EbsError(402, 'ServiceQuotaExceededException', 'You have reached the limit for concurrent snapshots.', 'DEPENDENCY_SERVICE_QUOTA_EXCEEDED');
      }
      if (body.KmsKeyArn && body.Encrypted !== true) throw validation('KmsKeyArn needs Encrypted set to true.', 'INVALID_PARAMETER_VALUE');
      // An encrypted parent makes the child encrypted (with the parent's key unless another is given).
      const encrypted = body.Encrypted === true || parent?.encrypted === true;
      const snap: DoubleSnapshot = {
        encrypted,
        kmsKeyArn: encrypted ? (body.KmsKeyArn ?? parent?.kmsKeyArn ?? 'arn:aws:kms:us-east-1:123456789012:alias/aws/ebs') : undefined,
        id: `snap-${randomBytes(8).toString('hex').slice(0, 17)}`,
        parentId: parent?.id,
        volumeSize: size,
        status: 'pending',
        startTime: new Date(),
        description: body.Description,
        tags: body.Tags ?? [],
        clientToken: body.ClientToken,
        blocks: new Map(),
        writes: new Set(),
        source: 'ebs-direct',
      };
      state.snapshots.set(snap.id, snap);
      if (state.options.faults?.loseNextStartResponse) {
        state.options.faults.loseNextStartResponse = false;
        throw new EbsError(500, 'InternalServerException', 'Injected failure after the snapshot was created (test double fault: loseNextStartResponse).');
      }
      return startResponse(res, snap);
    }

    // POST /snapshots/completion/{id} -> CompleteSnapshot
    if (method === 'POST' && parts.length === 3 && parts[1] === 'completion') {
      checkAllowed(state, 'CompleteSnapshot');
      state.counters.CompleteSnapshot++;
      await readBody(req);
      const snap = getSnap(state, parts[2]);
      const count = Number(req.headers['x-amz-changedblockscount']);
      if (!Number.isInteger(count) || count < 0) throw validation('x-amz-ChangedBlocksCount is required.', 'INVALID_PARAMETER_VALUE');
      if (snap.status === 'completed') return sendJson(res, 202, { Status: 'completed' });
      if (snap.status !== 'pending') throw validation(`The snapshot '${snap.id}' is in state ${snap.status}.`, 'INVALID_SNAPSHOT_ID');
      if (count !== snap.writes.size) {
        throw validation(
          `ChangedBlocksCount ${count} does not match the ${snap.writes.size} blocks written to ${snap.id}.`,
          'INVALID_PARAMETER_VALUE',
        );
      }
      snap.status = 'completed';
      snap.completedAt = new Date();
      return sendJson(res, 202, { Status: 'completed' });
    }

    if (parts.length >= 2) {
      const snap = getSnap(state, parts[1]);

      // PUT /snapshots/{id}/blocks/{index} -> PutSnapshotBlock
      if (method === 'PUT' && parts.length === 4 && parts[2] === 'blocks') {
        checkAllowed(state, 'PutSnapshotBlock');
        state.inFlightPuts++;
        state.counters.maxInFlightPuts = Math.max(state.counters.maxInFlightPuts, state.inFlightPuts);
        res.once('close', () => void state.inFlightPuts--);
        const data = await readBody(req);
        if (state.options.putLatencyMs) await new Promise((r) => setTimeout(r, state.options.putLatencyMs));
        state.counters.PutSnapshotBlock++;
        const f = state.options.faults;
        if (f?.failPutsAfter !== undefined && state.counters.PutSnapshotBlockOk >= f.failPutsAfter) {
          throw new EbsError(500, 'InternalServerException', 'Injected failure (test double fault: failPutsAfter).');
        }
        if (f?.throttleEvery && state.counters.PutSnapshotBlock % f.throttleEvery === 0) {
          state.counters.throttled++;
          throw new EbsError(400, 'RequestThrottledException', 'Rate exceeded (test double fault: throttleEvery).', 'ACCOUNT_THROTTLED');
        }
        if (f?.serverErrorEvery && state.counters.PutSnapshotBlock % f.serverErrorEvery === 0) {
          throw new EbsError(500, 'InternalServerException', 'Injected failure (test double fault: serverErrorEvery).');
        }
        // Rate limit: PutSnapshotBlock per snapshot per second (fixed one-second windows).
        const limit = state.options.putRatePerSnapshot;
        if (limit) {
          const sec = Math.floor(Date.now() / 1000);
          if (snap.rateWindow?.sec !== sec) snap.rateWindow = { sec, count: 0 };
          if (++snap.rateWindow.count > limit) {
            state.counters.throttled++;
            throw new EbsError(400, 'RequestThrottledException', 'Rate exceeded for PutSnapshotBlock on this snapshot.', 'SNAPSHOT_THROTTLED');
          }
        }
        if (snap.status !== 'pending') throw validation(`The snapshot '${snap.id}' is not in the pending state.`, 'INVALID_SNAPSHOT_ID');
        const index = Number(parts[3]);
        const maxIndex = (snap.volumeSize * GIB) / EBS_BLOCK_SIZE;
        if (!Number.isInteger(index) || index < 0 || index >= maxIndex) {
          throw validation(`Block index ${parts[3]} is outside the volume (0..${maxIndex - 1}).`, 'INVALID_BLOCK');
        }
        const len = Number(req.headers['x-amz-data-length']);
        if (len !== EBS_BLOCK_SIZE || data.length !== EBS_BLOCK_SIZE) {
          throw validation(`Data length must be ${EBS_BLOCK_SIZE} bytes (header ${len}, body ${data.length}).`, 'INVALID_PARAMETER_VALUE');
        }
        if (req.headers['x-amz-checksum-algorithm'] !== 'SHA256') {
          throw validation('ChecksumAlgorithm must be SHA256.', 'INVALID_PARAMETER_VALUE');
        }
        // The EBS model marks PutSnapshotBlock `unsignedPayload`: the body is not signed, the
        // SHA-256 checksum header protects it. A signed payload hash, when sent, must match.
        const payloadHash = req.headers['x-amz-content-sha256'];
        if (payloadHash !== undefined && payloadHash !== 'UNSIGNED-PAYLOAD' && payloadHash !== createHash('sha256').update(data).digest('hex')) {
          throw new EbsError(403, 'AccessDeniedException', 'The x-amz-content-sha256 header does not match the body.', 'UNAUTHORIZED_ACCOUNT');
        }
        state.counters.unsignedPayload += payloadHash === 'UNSIGNED-PAYLOAD' ? 1 : 0;
        const sum = createHash('sha256').update(data).digest('base64');
        if (req.headers['x-amz-checksum'] !== sum) {
          state.counters.checksumRejected++;
          throw validation('The checksum of the block data does not match x-amz-Checksum.', 'INVALID_CHECKSUM');
        }
        snap.blocks.set(index, { data, checksum: sum, version: ++state.blockVersion });
        snap.writes.add(index);
        state.counters.PutSnapshotBlockOk++;
        state.bytesReceived += data.length;
        res.writeHead(201, { 'x-amz-checksum': sum, 'x-amz-checksum-algorithm': 'SHA256', 'content-length': 0 });
        res.end();
        return;
      }

      // GET /snapshots/{id}/blocks -> ListSnapshotBlocks
      if (method === 'GET' && parts.length === 3 && parts[2] === 'blocks') {
        checkAllowed(state, 'ListSnapshotBlocks');
        if (snap.status !== 'completed') throw validation(`The snapshot '${snap.id}' is not completed.`, 'INVALID_SNAPSHOT_ID');
        const { items, next } = page(url, lineageIndexes(state, snap), undefined);
        return sendJson(res, 200, {
          Blocks: items.map((i) => {
            const b = visibleBlock(state, snap, i)!;
            return { BlockIndex: i, BlockToken: token(b.owner, i, b.version) };
          }),
          ExpiryTime: Date.now() / 1000 + 7 * 86400,
          VolumeSize: snap.volumeSize,
          BlockSize: EBS_BLOCK_SIZE,
          ...(next ? { NextToken: next } : {}),
        });
      }

      // GET /snapshots/{second}/changedblocks?firstSnapshotId= -> ListChangedBlocks
      if (method === 'GET' && parts.length === 3 && parts[2] === 'changedblocks') {
        checkAllowed(state, 'ListChangedBlocks');
        if (snap.status !== 'completed') throw validation(`The snapshot '${snap.id}' is not completed.`, 'INVALID_SNAPSHOT_ID');
        const firstId = url.searchParams.get('firstSnapshotId');
        const first = firstId ? getSnap(state, firstId) : undefined;
        if (first) {
          if (first.status !== 'completed') throw validation(`The snapshot '${first.id}' is not completed.`, 'INVALID_SNAPSHOT_ID');
          if (!lineage(state, snap).has(first.id) && !lineage(state, first).has(snap.id)) {
            throw validation('The snapshots are not of the same lineage.', 'UNRELATED_SNAPSHOTS');
          }
        }
        const idx = new Set([...lineageIndexes(state, snap), ...(first ? lineageIndexes(state, first) : [])]);
        const changed = [...idx]
          .sort((a, b) => a - b)
          .filter((i) => {
            if (!first) return true;
            return visibleBlock(state, snap, i)?.version !== visibleBlock(state, first, i)?.version;
          });
        const { items, next } = page(url, changed, undefined);
        return sendJson(res, 200, {
          ChangedBlocks: items.map((i) => {
            const a = first ? visibleBlock(state, first, i) : undefined;
            const b = visibleBlock(state, snap, i);
            return {
              BlockIndex: i,
              ...(a ? { FirstBlockToken: token(a.owner, i, a.version) } : {}),
              ...(b ? { SecondBlockToken: token(b.owner, i, b.version) } : {}),
            };
          }),
          ExpiryTime: Date.now() / 1000 + 7 * 86400,
          VolumeSize: snap.volumeSize,
          BlockSize: EBS_BLOCK_SIZE,
          ...(next ? { NextToken: next } : {}),
        });
      }

      // GET /snapshots/{id}/blocks/{index}?blockToken= -> GetSnapshotBlock
      if (method === 'GET' && parts.length === 4 && parts[2] === 'blocks') {
        checkAllowed(state, 'GetSnapshotBlock');
        state.counters.GetSnapshotBlock++;
        if (snap.status !== 'completed') throw validation(`The snapshot '${snap.id}' is not completed.`, 'INVALID_SNAPSHOT_ID');
        const index = Number(parts[3]);
        const b = visibleBlock(state, snap, index);
        const tok = url.searchParams.get('blockToken');
        if (!b || !tok || tok !== token(b.owner, index, b.version)) {
          throw validation('The block token is not valid for this snapshot and block index.', 'INVALID_BLOCK_TOKEN');
        }
        res.writeHead(200, {
          'content-type': 'application/octet-stream',
          'content-length': b.data.length,
          'x-amz-data-length': String(b.data.length),
          'x-amz-checksum': b.checksum,
          'x-amz-checksum-algorithm': 'SHA256',
        });
        res.end(b.data);
        return;
      }
    }
    throw new EbsError(404, 'UnknownOperationException', `No EBS direct operation for ${method} ${url.pathname}`);
  } catch (err) {
    if (err instanceof EbsError) return sendEbsError(res, err);
    throw err;
  }
}

function startResponse(res: ServerResponse, s: DoubleSnapshot): void {
  sendJson(res, 201, {
    SnapshotId: s.id,
    OwnerId: '123456789012',
    Status: s.status,
    StartTime: s.startTime.getTime() / 1000,
    VolumeSize: s.volumeSize,
    BlockSize: EBS_BLOCK_SIZE,
    Tags: s.tags,
    ...(s.parentId ? { ParentSnapshotId: s.parentId } : {}),
    ...(s.description ? { Description: s.description } : {}),
    ...(s.kmsKeyArn ? { KmsKeyArn: s.kmsKeyArn } : {}),
  });
}
