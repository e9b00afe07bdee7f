/** Worker thread: runs ChunkWork (chunk-work.ts) requests from a WorkerPool. */
import { parentPort, workerData } from 'node:worker_threads';
import { ChunkWork } from './chunk-work.js';
import type { WorkerReply, WorkerRequest, WorkerSetup } from './worker-pool.js';

const work = await ChunkWork.create(workerData as WorkerSetup);

parentPort!.on('message', (msg: WorkerRequest) => {
  try {
    const { reply, transfer } = work.handle(msg);
    parentPort!.postMessage(reply, transfer);
  } catch (err) {
    parentPort!.postMessage({ op: 'error', seq: msg.seq, message: (err as Error).message } satisfies WorkerReply);
  }
});
