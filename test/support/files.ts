import { promises as fsp } from 'node:fs';
import * as path from 'node:path';

/** Every file below `dir` (recursively), sorted; temporary `.tmp-*` files left out. */
export async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for (const e of await fsp.readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (!e.name.startsWith('.tmp-')) out.push(p);
    }
  };
  await walk(dir);
  return out.sort();
}
