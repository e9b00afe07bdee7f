import { Command, CommanderError } from 'commander';
import { createRequire } from 'node:module';
import { IntegrityError, UserError } from '../repo/errors.js';
import { DataIntegrityError } from '../engine/snapshot-image.js';
import {
  registerBackupFile,
  registerDiff,
  registerInit,
  registerRestore,
  registerSnapshots,
  registerStats,
} from './commands.js';
import { registerRepair, registerVerify } from './verify-repair.js';
import { registerExtensions } from './extensions.js';
import { registerForget, registerProtect } from './retention.js';
import { registerKey, registerMigrate } from './keys.js';
import { quietSdkNodeVersionWarning } from './node-support.js';
import { registerDrill, registerServe } from './nbd.js';
import { registerGc } from './gc.js';

export async function buildProgram(): Promise<Command> {
  const program = new Command();
  program
    .name('pilotlight')
    .description('disaster recovery and long retention for virtual machine disks')
    .version((createRequire(import.meta.url)('../../../package.json') as { version: string }).version)
    .option('--repo <location>', 'repository: a directory or s3://BUCKET/PREFIX (env PILOTLIGHT_REPO)')
    .option('--password-file <file>', 'file holding the repository password (env PILOTLIGHT_PASSWORD)')
    .option('--password-command <cmd>', 'shell command that prints the repository password (a secret manager)')
    .option('--no-encryption', 'expect an unencrypted repository (otherwise one is refused when a password is given)')
    .option('--s3-endpoint <url>', 'S3-compatible endpoint (env AWS_ENDPOINT_URL_S3)')
    .option('--storage-class <class>', 'S3 storage class for data packs (STANDARD_IA, GLACIER_IR, ...)')
    .option('--cache-dir <dir>', 'local cache directory (env PILOTLIGHT_CACHE_DIR)')
    .option('--spool-dir <dir>', 'S3: where data packs are spooled before upload (env PILOTLIGHT_SPOOL_DIR; default the temporary directory)')
    .option('--json', 'print one JSON document on stdout')
    .showHelpAfterError()
    .exitOverride();
  program.hook('preAction', (_this, action) => {
    const g = action.optsWithGlobals() as { cacheDir?: string; spoolDir?: string };
    if (g.cacheDir) process.env.PILOTLIGHT_CACHE_DIR = g.cacheDir;
    if (g.spoolDir) process.env.PILOTLIGHT_SPOOL_DIR = g.spoolDir;
  });
  registerInit(program);
  const backup = program.command('backup').description('take a snapshot of a VM');
  registerBackupFile(backup);
  registerSnapshots(program);
  const ext = registerExtensions(program, backup);
  registerRestore(program, ext.restoreToS3);
  registerDiff(program);
  registerStats(program);
  registerVerify(program);
  registerForget(program);
  registerProtect(program);
  registerRepair(program);
  registerServe(program);
  registerDrill(program);
  registerGc(program);
  registerKey(program);
  registerMigrate(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  quietSdkNodeVersionWarning();
  const program = await buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode;
      return;
    }
    if (err instanceof UserError) {
      process.stderr.write(`pilotlight: ${err.message}\n`);
      process.exitCode = err.exitCode;
    } else if (err instanceof IntegrityError || err instanceof DataIntegrityError) {
      process.stderr.write(`pilotlight: DATA INTEGRITY: ${err.message}\n`);
      process.exitCode = 3;
    } else {
      const e = err as Error;
      process.stderr.write(`pilotlight: ${e?.message ?? e}\n`);
      if (process.env.PILOTLIGHT_DEBUG) process.stderr.write(`${e?.stack}\n`);
      process.exitCode = 1;
    }
  }
}
