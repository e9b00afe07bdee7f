import assert from 'node:assert/strict';
import { it } from 'node:test';
import { BatchWriter, PRESENT, ScratchDb } from '../../src/engine/scratch-db.js';

it('scratch DB: a set member written with an empty value is stored as one byte (classic-level leaks empty values), and reads as present', async () => {
  const db = await ScratchDb.open('test');
  try {
    const t = db.table('s');
    const w = new BatchWriter(t, 3);
    for (let i = 0; i < 10; i++) await w.put(Buffer.from([i]), Buffer.alloc(0));
    await w.put(Buffer.from('kept'), Buffer.from('value'));
    await w.flush();
    const values: Buffer[] = [];
    for await (const [, v] of t.iterator()) values.push(v);
    assert.equal(values.length, 11);
    assert.equal(values.filter((v) => v.length === 0).length, 0, 'no empty value reached LevelDB');
    assert.equal(values.filter((v) => v.equals(PRESENT)).length, 10);
    assert.notEqual(await t.get(Buffer.from([3])), undefined);
    assert.deepEqual(await t.get(Buffer.from('kept')), Buffer.from('value'));
  } finally {
    await db.close();
  }
});
