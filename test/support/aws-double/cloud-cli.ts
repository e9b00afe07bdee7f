/**
 * bin/pilotlight.js for the compiled tree this file is in: bin/pilotlight.js always loads
 * dist/, while tests may be compiled elsewhere (dist-cloud/). Same code path: the core
 * main(), whose src/cli/extensions.ts wires `ebs`, `recover` and `restore --to s3://`.
 *
 *   node dist/test/support/aws-double/cloud-cli.js --repo DIR ebs push latest --vm NAME
 */
import { pathToFileURL } from 'node:url';
import { main } from '../../../src/cli/main.js';

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv).catch((err) => {
    process.stderr.write(`pilotlight: ${err?.message ?? err}\n`);
    process.exit(1);
  });
}
