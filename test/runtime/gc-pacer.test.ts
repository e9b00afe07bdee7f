import assert from 'node:assert/strict';
import { it } from 'node:test';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import * as v8 from 'node:v8';
import { HeapGrowthPacer } from '../../src/runtime/gc-pacer.js';

/** Major collections seen while `fn` runs (perf_hooks 'gc' entries, delivered after a tick). */
async function majorCollections(fn: () => void): Promise<number> {
  let majors = 0;
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if ((e as unknown as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors++;
  });
  obs.observe({ entryTypes: ['gc'] });
  fn();
  await new Promise((r) => setTimeout(r, 50));
  obs.disconnect();
  return majors;
}

function used(): number {
  return v8.getHeapStatistics().used_heap_size;
}

it('HeapGrowthPacer: once the heap has grown by its threshold, the next check runs a full collection and the garbage is gone', async () => {
  const pacer = new HeapGrowthPacer(4, 4 << 20);
  let garbage: object[][] = [];
  for (let i = 0; i < 200; i++) garbage.push(Array.from({ length: 1000 }, (_, k) => ({ k, s: `x${k}` })));
  garbage = [];
  assert.equal(garbage.length, 0);
  const before = used();
  const majors = await majorCollections(() => {
    for (let i = 0; i < 3; i++) pacer.tick(); // not yet a check
  });
  assert.equal(majors, 0, 'no collection before `every` events');
  const majors2 = await majorCollections(() => pacer.tick());
  assert.ok(majors2 >= 1, 'the 4th event checks the heap, finds it grown and collects');
  assert.ok(used() < before - (4 << 20), `heap used ${used()} after, ${before} before`);
});

it('HeapGrowthPacer: a heap that has not grown by the threshold is left to V8', async () => {
  const pacer = new HeapGrowthPacer(2, 1 << 30);
  const majors = await majorCollections(() => {
    for (let i = 0; i < 20; i++) pacer.tick();
  });
  assert.equal(majors, 0);
});
