import { statSync } from 'node:fs';
import * as path from 'node:path';

/**
 * `--vddk-libdir` takes either the VDDK distribution directory (the one holding
 * `lib64/`, as VMware's samples and nbdkit's vddk plugin take it) or its `lib64/`
 * itself; this returns the directory that holds libvixDiskLib.so.
 */
export function vddkLib64(dir: string): string {
  const resolved = path.resolve(dir);
  if (path.basename(resolved) === 'lib64') return resolved;
  const lib64 = path.join(resolved, 'lib64');
  try {
    if (statSync(lib64).isDirectory()) return lib64;
  } catch {
    // no lib64/ below: take the directory as given
  }
  return resolved;
}
