/**
 * Defaults of the AWS recovery paths, in a module of their own so the CLI can show
 * them in --help without loading the AWS SDK.
 */

/** PutSnapshotBlock requests per second per snapshot: the EBS direct API's default limit. */
export const DEFAULT_PUT_RATE = 1000;
/** PutSnapshotBlock requests in flight. */
export const DEFAULT_CONCURRENCY = 32;

export const IMAGE_DEFAULTS = {
  architecture: 'x86_64',
  rootDeviceName: '/dev/sda1',
  bootMode: 'legacy-bios',
  enaSupport: true,
  sriovNetSupport: 'simple',
  volumeType: 'gp3',
  deleteOnTermination: true,
} as const;
