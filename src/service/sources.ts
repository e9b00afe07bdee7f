/**
 * Opens the DiskSource a configured source names, for one run: raw images / block
 * devices (with their change-list files when present) or a vSphere VM (by name or
 * managed object id).
 */
import { promises as fsp } from 'node:fs';
import { UserError } from '../repo/errors.js';
import type { DiskSource } from '../source/disk-source.js';
import { FileSource } from '../source/file-source.js';
import { ThrottledSource } from '../source/throttled-source.js';
import type { ServiceConfig, SourceConfig } from './config-schema.js';
import { resolveSecret } from './secrets.js';

async function exists(p: string): Promise<boolean> {
  return fsp.access(p).then(
    () => true,
    () => false,
  );
}

export async function openConfiguredSource(
  config: ServiceConfig,
  vm: string,
  src: SourceConfig,
  o: { readLimitMiBps?: number; log?: (m: string) => void } = {},
): Promise<{ source: DiskSource; kind: 'file' | 'vsphere' }> {
  let source: DiskSource;
  let kind: 'file' | 'vsphere';
  if ('file' in src) {
    // A change list is used when its file exists (the tool that tracks writes made it for
    // this run, relative to the newest snapshot); otherwise what is allocated is read.
    const lists = src.file.changedExtents ? await Promise.all(src.file.changedExtents.map(async (f) => ((await exists(f)) ? f : undefined))) : undefined;
    source = await FileSource.open(vm, src.file.images, { changedExtents: lists });
    kind = 'file';
  } else {
    const v = src.vsphere;
    if (v.tag || v.folder) throw new UserError(`source ${vm}: selecting vSphere VMs by tag or folder is not supported by this build yet; name the VM (vm: NAME or moref: vm-N)`);
    const server = config.vsphere?.[v.server];
    if (!server) throw new UserError(`source ${vm}: no vSphere server ${v.server}`);
    const password = server.password
      ? await resolveSecret(server.password, `vsphere.${v.server}.password`)
      : server.passwordFile
        ? await resolveSecret({ file: server.passwordFile }, `vsphere.${v.server}.passwordFile`)
        : undefined;
    if (!password) throw new UserError(`vsphere.${v.server}: give password: { env | file | command } or passwordFile`);
    const { VsphereSource } = await import('../source/vsphere/vsphere-source.js');
    source = await VsphereSource.open({
      server: server.server,
      username: server.username,
      password,
      thumbprint: server.thumbprint,
      insecure: server.insecure,
      vm: v.vm,
      vmMoref: v.moref,
      transport: server.transport,
      quiesce: v.quiesce,
      vddkLibDir: server.vddkLibdir,
      log: o.log,
    });
    kind = 'vsphere';
  }
  if (source.vm !== vm) source = new NamedSource(source, vm);
  if (o.readLimitMiBps) source = new ThrottledSource(source, o.readLimitMiBps * 1048576);
  return { source, kind };
}

/** The source under the name the config gives it (the key under `sources:`), which is the VM's name in the repository. */
class NamedSource implements DiskSource {
  constructor(
    private readonly inner: DiskSource,
    readonly vm: string,
  ) {}

  get consistencyTime(): Date | undefined {
    // the source's consistency point, for a build whose sources have one (retention)
    return (this.inner as { consistencyTime?: Date }).consistencyTime;
  }

  disks() {
    return this.inner.disks();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
