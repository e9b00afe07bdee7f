import { Command } from 'commander';
import { registerEbs, registerRecover, restoreToS3 } from './cloud.js';
import type { RestoreToS3 } from './commands.js';
import { registerNbdBackup } from './nbd-backup.js';
import { registerDoctor, registerVsphereBackup } from './vsphere.js';

/**
 * Commands that live with their own layer (vSphere source, AWS recovery). They are
 * registered here so main.ts stays a list of what the CLI offers.
 */
export function registerExtensions(program: Command, backup: Command): { restoreToS3: RestoreToS3 } {
  registerVsphereBackup(backup);
  registerNbdBackup(backup);
  registerDoctor(program);
  registerEbs(program);
  registerRecover(program);
  return { restoreToS3 };
}
