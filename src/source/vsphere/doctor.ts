/**
 * `pilotlight doctor vsphere`: checks, one by one, what a vSphere backup needs, so a
 * user can verify a real vCenter and a real VDDK before the first backup:
 * connectivity, certificate thumbprint, login, the VM and its disks, CBT state,
 * (optionally) a snapshot create/remove with change ids, and loading VDDK
 * (optionally opening each disk of that snapshot through it).
 */
import { VimClient, fetchThumbprint, parseMoRef, serverUrl, thumbprintOf, type MoRef } from './client.js';
import { VddkWorker } from './vddk-client.js';
import { virtualDisks } from './vsphere-source.js';
import { text } from './xml.js';

export interface DoctorOptions {
  server: string;
  username?: string;
  password?: string;
  thumbprint?: string;
  insecure?: boolean;
  vm?: string;
  vmMoref?: string;
  vddkLibDir?: string;
  transport?: string;
  /** Create and remove a snapshot (and open its disks through VDDK when vddkLibDir is set). */
  snapshotTest?: boolean;
  vddkEnv?: NodeJS.ProcessEnv;
}

export interface DoctorCheck {
  check: string;
  ok: boolean;
  detail: string;
}

export async function runDoctor(o: DoctorOptions): Promise<DoctorCheck[]> {
  const out: DoctorCheck[] = [];
  const add = (check: string, ok: boolean, detail: string) => out.push({ check, ok, detail });
  const url = serverUrl(o.server);

  // 1. connectivity and certificate
  let seen = '';
  if (url.protocol === 'https:') {
    try {
      seen = await fetchThumbprint(url);
      add('connectivity', true, `TLS connection to ${url.host} works`);
    } catch (err) {
      add('connectivity', false, (err as Error).message);
      return out;
    }
    if (o.thumbprint) {
      const want = thumbprintOf({ fingerprint: o.thumbprint });
      add('thumbprint', want === seen, want === seen ? `certificate SHA-1 thumbprint matches (${seen})` : `certificate thumbprint is ${seen}, not ${want}: do not proceed unless the certificate was renewed`);
      if (want !== seen && !o.insecure) return out;
    } else {
      add('thumbprint', !!o.insecure, `no --thumbprint given; the server's is ${seen}: verify it out of band and pass it with --thumbprint`);
      // never send the password to a server whose certificate nobody vouched for
      if (!o.insecure) return out;
    }
  } else {
    add('connectivity', true, `${url.href} is plain HTTP: use this only with a test double`);
  }

  // 2. login
  let client: VimClient | undefined;
  try {
    client = await VimClient.connect({ server: o.server, thumbprint: o.thumbprint ?? seen, insecure: o.insecure });
    add('api', true, `${client.serviceContent.fullName} (${client.serviceContent.apiType}, API ${client.serviceContent.apiVersion})`);
  } catch (err) {
    add('api', false, (err as Error).message);
    return out;
  }
  if (!o.username || o.password === undefined) {
    add('login', false, 'no --username / password given: login and permissions not checked');
    return out;
  }
  try {
    await client.login(o.username, o.password);
    add('login', true, `logged in as ${o.username}`);
  } catch (err) {
    add('login', false, (err as Error).message);
    return out;
  }

  try {
    // 3. VM, disks and CBT
    let vm: MoRef | undefined;
    if (o.vm || o.vmMoref) {
      try {
        if (o.vmMoref) vm = { type: 'VirtualMachine', value: o.vmMoref };
        else {
          const found = (await client.list('VirtualMachine', ['name'])).filter((x) => text(x.props.get('name')) === o.vm);
          if (found.length !== 1) throw new Error(found.length ? `${found.length} VMs are named ${o.vm}: use --vm-moref` : `no VM named ${o.vm} (or no permission to see it)`);
          vm = found[0].obj;
        }
        const p = await client.properties(vm, ['name', 'config.changeTrackingEnabled', 'config.hardware.device']);
        const disks = virtualDisks(p.get('config.hardware.device'));
        add('vm', true, `${text(p.get('name'))} (${vm.value}): ${disks.length} disk(s): ${disks.map((d) => `${d.name} key ${d.deviceKey} ${d.capacity} bytes`).join(', ')}`);
        const cbt = text(p.get('config.changeTrackingEnabled')) === 'true';
        add('cbt', cbt, cbt ? 'Changed Block Tracking is enabled' : 'Changed Block Tracking is off: the first backup enables it (needs the VirtualMachine.Config.ChangeTracking privilege)');
      } catch (err) {
        add('vm', false, (err as Error).message);
        vm = undefined;
      }
    }

    // 4. VDDK
    let worker: VddkWorker | undefined;
    if (o.vddkLibDir) {
      try {
        worker = await VddkWorker.start({ libDir: o.vddkLibDir, initLibDir: null, env: o.vddkEnv });
        add('vddk', true, `libvixDiskLib.so loaded from ${o.vddkLibDir} and initialised (worker pid ${worker.pid})`);
      } catch (err) {
        add('vddk', false, (err as Error).message);
      }
    } else {
      add('vddk', false, 'no --vddk-libdir given: VDDK not checked');
    }

    // 5. snapshot + change ids + opening the disks through VDDK
    if (o.snapshotTest && vm) {
      let snap: MoRef | undefined;
      try {
        const r = await client.waitForTask(await client.createSnapshot(vm, 'pilotlight doctor', 'pilotlight doctor: removed at once', false), 'CreateSnapshot_Task');
        snap = parseMoRef(r.result)!;
        const disks = virtualDisks((await client.properties(snap, ['config.hardware.device'])).get('config.hardware.device'));
        const withIds = disks.filter((d) => d.changeId).length;
        add('snapshot', true, `created ${snap.value}; ${withIds} of ${disks.length} disk(s) have a change id`);
        if (worker) {
          const params = {
            vmxSpec: `moref=${vm.value}`,
            serverName: client.url.hostname,
            thumbprint: client.thumbprint,
            userName: o.username,
            password: o.password,
            port: client.url.port ? Number(client.url.port) : 0,
          };
          let conn: number | undefined;
          try {
            conn = await worker.connect(params, snap.value, o.transport ?? 'nbdssl:nbd');
            for (const d of disks) {
              const h = await worker.open(conn, d.fileName);
              await worker.read(h.handle, 0, 512);
              await worker.close(h.handle);
            }
            add('vddk-read', true, `opened and read every disk of the snapshot through VDDK (${o.transport ?? 'nbdssl:nbd'})`);
          } catch (err) {
            add('vddk-read', false, (err as Error).message);
          } finally {
            if (conn !== undefined) await worker.disconnect(conn).catch(() => undefined);
          }
        }
      } catch (err) {
        add('snapshot', false, (err as Error).message);
      } finally {
        if (snap) {
          try {
            await client.waitForTask(await client.removeSnapshot(snap), 'RemoveSnapshot_Task');
          } catch (err) {
            add('snapshot-remove', false, `${(err as Error).message}: remove snapshot ${snap.value} by hand`);
          }
        }
      }
    }
    await worker?.exit();
  } finally {
    await client.logout().catch(() => undefined);
  }
  return out;
}
