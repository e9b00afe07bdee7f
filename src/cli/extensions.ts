import { Command } from 'commander';
import { registerEbs, registerRecover, restoreToS3 } from './cloud.js';
import { registerDoctor, registerVsphereBackup } from './vsphere.js';

/**
 * Commands that live with their own layer (vSphere source, AWS recovery). They are
 * registered here so main.ts stays a list of what the CLI offers.
 */
export async function registerExtensions(
  program: Command,
  backup: Command,
): Promise<{ restoreToS3?: (repo: unknown, record: unknown, disk: number, url: string, opts: Record<string, unknown>) => Promise<unknown> }> {
  registerVsphereBackup(backup);
  registerDoctor(program);
  registerEbs(program);
  registerRecover(program);
  return { restoreToS3 };
}
