/**
 * The pilotlight CLI with the cloud commands wired in, for the cloud tests: the core
 * program (src/cli/main.ts buildProgram) plus registerEbs / registerRecover, and
 * `restore` re-registered with restoreToS3. Once src/cli/extensions.ts wires these
 * itself this file is the same as bin/pilotlight.js (the wiring is then idempotent:
 * commands already present are left alone).
 *
 *   node dist/test/support/aws-double/cloud-cli.js --repo DIR ebs push latest --vm NAME
 */
import { Command, CommanderError } from 'commander';
import { registerEbs, registerRecover, restoreToS3 } from '../../../src/cli/cloud.js';
import { registerRestore } from '../../../src/cli/commands.js';
import { pathToFileURL } from 'node:url';
import { buildProgram } from '../../../src/cli/main.js';

export async function cloudProgram(): Promise<Command> {
  const program = await buildProgram();
  const has = (name: string) => program.commands.some((c) => c.name() === name);
  if (!has('ebs')) registerEbs(program);
  if (!has('recover')) registerRecover(program);
  const restore = program.commands.find((c) => c.name() === 'restore');
  // The core registers restore without the S3 hook until extensions.ts passes it on.
  if (restore && !(restore as unknown as { _cloudWired?: boolean })._cloudWired) {
    (program as unknown as { commands: Command[] }).commands = program.commands.filter((c) => c !== restore);
    registerRestore(program, restoreToS3);
    const again = program.commands.find((c) => c.name() === 'restore') as unknown as { _cloudWired?: boolean };
    again._cloudWired = true;
  }
  return program;
}

async function run(argv: string[]): Promise<void> {
  // Mirrors the error printing of src/cli/main.ts main().
  const program = await cloudProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode;
      return;
    }
    const e = err as Error & { exitCode?: number };
    process.stderr.write(`pilotlight: ${e?.message ?? e}\n`);
    if (process.env.PILOTLIGHT_DEBUG) process.stderr.write(`${e?.stack}\n`);
    process.exitCode = e?.name === 'UserError' && e.exitCode ? e.exitCode : 1;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  run(process.argv).catch((err) => {
    process.stderr.write(`pilotlight: ${err?.message ?? err}\n`);
    process.exit(1);
  });
}
