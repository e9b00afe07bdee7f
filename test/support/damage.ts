/** Damage in a repository, made on purpose by tests: the largest data pack, a flipped byte. */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { listFiles } from './files.js';

/** The largest pack under REPO/data, and its size. */
export async function biggestDataPack(repo: string): Promise<{ file: string; size: number }> {
  let file = '';
  let size = 0;
  for (const p of await listFiles(path.join(repo, 'data'))) {
    const st = await fsp.stat(p);
    if (st.size > size) [size, file] = [st.size, p];
  }
  if (!file) throw new Error(`no data pack under ${repo}`);
  return { file, size };
}

/** XORs the byte at `pos` of `file` with `mask`. */
export async function flipByte(file: string, pos: number, mask = 0xff): Promise<void> {
  const fh = await fsp.open(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, pos);
    b[0]! ^= mask;
    await fh.write(b, 0, 1, pos);
  } finally {
    await fh.close();
  }
}
