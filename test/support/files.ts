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

/** Every file below `dir` with a SHA-256 of its content: equal fingerprints mean nothing was written or deleted. */
export async function fingerprint(dir: string): Promise<Map<string, string>> {
  const { createHash } = await import('node:crypto');
  const out = new Map<string, string>();
  for (const f of await listFiles(dir)) out.set(path.relative(dir, f), createHash('sha256').update(await fsp.readFile(f)).digest('hex'));
  return out;
}
