/**
 * The disk images behind fixtures/v1-repo (a version 1 repository made by the
 * release before format 2; fixtures/v1-repo/README.md says how). Regenerated
 * here from the same seeds so tests compare restores byte for byte.
 */
import * as path from 'node:path';
import { ROOT } from './cli.js';
import { makeImage, mutate } from './images.js';

const KiB = 1024;
export const V1_FIXTURE_DIR = path.join(ROOT, 'fixtures', 'v1-repo');
export const V1_PASSWORD = 'pilotlight v1 fixture';
export const V1_VM = 'web01';
export const V1_IMAGE_SIZE = 2 * 1024 * KiB;

/** Snapshot 1's image: 2 MiB, random + text + repeated regions, the rest holes. */
export async function makeV1Image1(file: string): Promise<void> {
  await makeImage(
    file,
    V1_IMAGE_SIZE,
    [
      { offset: 0, length: 192 * KiB, kind: 'random' },
      { offset: 512 * KiB, length: 512 * KiB, kind: 'text' },
      { offset: 1536 * KiB, length: 256 * KiB, kind: 'repeat' },
    ],
    101,
  );
}

/** The change between snapshot 1 and snapshot 2 (applied to image 1 in place). */
export const V1_CHANGES = [
  { offset: 64 * KiB, length: 64 * KiB, kind: 'random' as const },
  { offset: 1152 * KiB, length: 64 * KiB, kind: 'text' as const },
];

/** Snapshot 2's image: image 1 with V1_CHANGES written over it (seed 102). */
export async function makeV1Image2(file: string): Promise<void> {
  await makeV1Image1(file);
  await mutate(file, V1_CHANGES, 102);
}
