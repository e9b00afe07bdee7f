import assert from 'node:assert/strict';
import { it } from 'node:test';
import { alignExtents, parseChangeList } from '../../src/source/extents.js';

const MiB = 1 << 20;

it('parses offset/length lines, the PowerShell header, and blank lines', () => {
  const text = '\nStart        Length\n-----        ------\n0 65536\n\n  1048576   4096  \r\n';
  assert.deepEqual(parseChangeList(text, 10 * MiB, 'cl'), [
    { offset: 0, length: 65536 },
    { offset: MiB, length: 4096 },
  ]);
});

it('rejects malformed lines with the line number', () => {
  assert.throws(() => parseChangeList('0 65536\n12 abc\n', MiB, 'cl.txt'), /cl\.txt:2: expected "offset length"/);
  assert.throws(() => parseChangeList('-5 10\n', MiB, 'cl.txt'), /cl\.txt:1/);
  assert.throws(() => parseChangeList('1 2 3\n', MiB, 'cl.txt'), /cl\.txt:1/);
});

it('rejects extents past the end of the disk', () => {
  assert.throws(() => parseChangeList(`${MiB - 10} 11\n`, MiB, 'cl'), /past the end of the disk/);
  assert.doesNotThrow(() => parseChangeList(`${MiB - 10} 10\n`, MiB, 'cl'));
});

it('widens unaligned extents to chunks, merges neighbours, clips at capacity', () => {
  const cs = 65536;
  const cap = 10 * cs + 100; // last chunk is 100 bytes
  assert.deepEqual(
    alignExtents(
      [
        { offset: 5 * cs + 10, length: 1 },
        { offset: 70000, length: 10 },
        { offset: cs - 1, length: 2 },
        { offset: 10 * cs + 50, length: 50 },
        { offset: 6 * cs, length: 1 },
      ],
      cs,
      cap,
    ),
    [
      { offset: 0, length: 2 * cs },
      { offset: 5 * cs, length: 2 * cs },
      { offset: 10 * cs, length: 100 },
    ],
  );
});
