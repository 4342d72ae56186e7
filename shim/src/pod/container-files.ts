// The files a pod's containers see through the VM's one 9p share: each container's rootfs and
// the host files and directories it mounts (CRI's /etc/hosts, volumes), bound under mountsDir
// and seen by the guest through sharedDir, a read-only view of it (GUEST_SHARED_DIR/<id>/...).
import fs from 'node:fs';
import path from 'node:path';
import { bindMount, makePrivate, mountsUnder, remountReadOnly, unmountAllUnder, unmountTree } from '../util/mounts.js';
import { hostVolumes } from './guest-spec.js';
import { PodVmError, validateContainerId } from './pod-errors.js';
import type { ContainerRequest } from './types.js';

export class ContainerFiles {
  /** Containers whose rootfs is mounted (or being mounted) under mountsDir. */
  private readonly containers = new Set<string>();
  /** Mounts under way; teardown waits for them. */
  private readonly mounting = new Set<Promise<void>>();

  constructor(
    private readonly podId: string,
    private readonly mountsDir: string,
    private readonly sharedDir: string,
    /** Where the guest mounts the share. */
    private readonly guestDir: string,
    private readonly stopping: () => boolean,
  ) {}

  has(containerId: string): boolean {
    return this.containers.has(containerId);
  }

  ids(): string[] {
    return [...this.containers];
  }

  /** Resolves once no mount is under way. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.mounting]);
  }

  /**
   * Binds a container's rootfs and the host files it mounts under mountsDir, where the guest sees
   * them through the share; returns the guest paths of the volumes by their index in spec.mounts.
   */
  async share(req: ContainerRequest): Promise<Map<number, string>> {
    const id = req.id;
    validateContainerId(id);
    if (this.containers.has(id)) throw new PodVmError('ALREADY_EXISTS', `pod ${this.podId}: container ${id} already exists`);
    if (typeof req.spec !== 'object' || req.spec === null || Array.isArray(req.spec))
      throw new PodVmError('INVALID_ARGUMENT', `pod ${this.podId}: the OCI spec of container ${id} is not a JSON object`);
    let st: fs.Stats;
    try {
      st = fs.statSync(req.rootfs);
    } catch (err) {
      throw new PodVmError('INVALID_ARGUMENT', `pod ${this.podId}: rootfs ${req.rootfs} of container ${id} does not exist: ${(err as Error).message}`);
    }
    if (!st.isDirectory()) throw new PodVmError('INVALID_ARGUMENT', `pod ${this.podId}: rootfs ${req.rootfs} of container ${id} is not a directory`);
    this.containers.add(id);
    const hostRootfs = path.join(this.mountsDir, id, 'rootfs');
    const viewRootfs = path.join(this.sharedDir, id, 'rootfs');
    const volumes = new Map<number, string>();
    const mounting = (async () => {
      fs.mkdirSync(hostRootfs, { recursive: true, mode: 0o755 });
      await bindMount(req.rootfs, hostRootfs);
      if (!mountsUnder(viewRootfs).includes(viewRootfs)) throw new Error(`the mount did not propagate to ${viewRootfs}`);
      await makePrivate(viewRootfs);
      // Host files and directories the container binds (CRI's /etc/hosts, volumes): shared the
      // same way, each under volumes/<index in spec.mounts>.
      for (const v of hostVolumes(req.spec)) {
        const name = path.join('volumes', String(v.index));
        const host = path.join(this.mountsDir, id, name);
        const view = path.join(this.sharedDir, id, name);
        let isDir: boolean;
        try {
          isDir = fs.statSync(v.source).isDirectory();
        } catch (err) {
          throw new Error(`the source ${v.source} of mount ${v.destination} cannot be shared: ${(err as Error).message}`, { cause: err });
        }
        fs.mkdirSync(path.dirname(host), { recursive: true, mode: 0o755 });
        if (isDir) fs.mkdirSync(host, { mode: 0o755 });
        else fs.writeFileSync(host, '', { mode: 0o644, flag: 'wx' });
        await bindMount(v.source, host);
        // Read-only on the host too: the VMM's 9p server then refuses every write.
        if (v.readOnly) await remountReadOnly(host);
        if (!mountsUnder(view).includes(view)) throw new Error(`the mount of ${v.source} did not propagate to ${view}`);
        await makePrivate(view);
        volumes.set(v.index, path.posix.join(this.guestDir, id, name));
      }
      if (this.stopping()) throw new Error('the pod is shutting down');
    })();
    this.mounting.add(mounting);
    try {
      await mounting;
    } catch (err) {
      await this.release(id).catch(() => undefined);
      throw new PodVmError('INTERNAL', `pod ${this.podId}: cannot share the rootfs of container ${id}: ${(err as Error).message}`, { cause: err });
    } finally {
      this.mounting.delete(mounting);
    }
    return volumes;
  }

  /** Unmounts a container's rootfs (its view first) and removes its mount point. */
  async release(containerId: string): Promise<void> {
    if (!this.containers.has(containerId)) return;
    const dir = path.join(this.mountsDir, containerId);
    for (const m of [path.join(this.sharedDir, containerId, 'rootfs'), path.join(dir, 'rootfs')]) {
      if (mountsUnder(m).includes(m)) await unmountTree(m);
    }
    const left = [...(await unmountAllUnder(path.join(this.sharedDir, containerId))), ...(await unmountAllUnder(dir))];
    if (left.length) throw new PodVmError('INTERNAL', `pod ${this.podId}: cannot unmount the rootfs of container ${containerId}: ${left.join('; ')}`);
    // Only empty directories and the empty files volumes were bound on go: nothing can be removed
    // through a mount by mistake.
    const volumesDir = path.join(dir, 'volumes');
    if (fs.existsSync(volumesDir)) {
      for (const entry of fs.readdirSync(volumesDir, { withFileTypes: true })) {
        const p = path.join(volumesDir, entry.name);
        if (entry.isDirectory()) fs.rmdirSync(p);
        else if (fs.statSync(p).size === 0) fs.unlinkSync(p);
      }
      fs.rmdirSync(volumesDir);
    }
    for (const d of [path.join(dir, 'rootfs'), dir]) if (fs.existsSync(d)) fs.rmdirSync(d);
    this.containers.delete(containerId);
  }
}
