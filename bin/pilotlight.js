#!/usr/bin/env node
import('../dist/src/runtime/gc-pacer.js')
  .then((heap) => {
    heap.keepYoungGenerationSmall(); // before anything else is loaded (gc-pacer.ts says why)
    return import('../dist/src/cli/main.js');
  })
  .then((m) => m.main(process.argv))
  .catch((err) => {
    process.stderr.write(`pilotlight: ${err && err.message ? err.message : err}\n`);
    process.exit(1);
  });
