// PodVm: a Pod backed by one VM, obtained through a VmProvider (default: a freshly booted
// MicroVm) and driven only through the VirtualMachine interface. It boots the guest with the
// agent, a virtio-vsock device (the agent's control and stdio connections), a virtio-9p share
// and virtio-rng; waits for the agent; sets the guest up (clock, hostname, entropy, the share
// mounted at GUEST_SHARED_DIR).
// A container's rootfs, a host directory, is bind-mounted where the guest sees it as
// GUEST_SHARED_DIR/<container id>/rootfs, and the OCI spec's root.path is rewritten to that.
// Everything else goes straight to the agent.
//
// Host files of a pod live in its state directory:
//   <stateDir>/vsock.sock            the hybrid-vsock socket (host -> guest connections)
//   <stateDir>/qmp.sock              the VM's QMP monitor (query-status, stop, cont, migrate, ...)
//   <stateDir>/mounts/<id>/rootfs    bind mount of container <id>'s rootfs (host only)
//   <stateDir>/shared/               read-only view of mounts/, exported to the guest (tag
//                                    SHARE_TAG); each rootfs mount appears in it read-write
// plus the RAM file <memoryDir>/<pod id>.ram for tmpfs-backed memory. shutdown() removes all of it.
// The guest can write inside a rootfs, but not the directories around it (see mounts.ts).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { AgentClient, ContainerStats, PauseHolder, PingResult, ProcessExit, StdioMode } from '../agent/client.js';
import { AgentCallError } from '../agent/errors.js';
import { DEFAULT_AGENT_PORT } from '../agent/vsock.js';
import { bootMicroVm, MicroVm } from '../hypervisor/microvm.js';
import { type QmpHandle, serveQmp } from '../qmp/serve.js';
import { describeExit, type VirtualMachine, type VmExit } from '../hypervisor/types.js';
import { AgentWaitError, waitForAgent } from './agent-wait.js';
import { podVmSpec, SHARE_TAG } from './vm-spec.js';
import type { Logger } from '../util/log.js';
import { createShareView } from '../util/mounts.js';
import { withDeadline } from '../util/deadline.js';
import { adoptPodNetwork, attachPodNetwork, type PodNetwork } from '../network/pod-network.js';
import { forwardPodPorts, type PortForwarder } from '../network/port-forward.js';
import { ContainerFiles } from './container-files.js';
import { PodVmError } from './pod-errors.js';
import { createStateDir, type PodVmOptions, removeStateDir, validateOptions } from './pod-vm-options.js';
import { guestSpec, pauseHolder, podNetworkSysctls } from './guest-spec.js';
import type { ContainerRequest, Pod, PodMigrationStats, ProcessStdio } from './types.js';
import { receiveVm } from './vm-incoming.js';
import { healthCheckTimeoutMs, UnansweredGuestWatch } from './unanswered-guest.js';
import { type MigrationStatus, type MigrationUri, parseMigrationUri } from '../qmp/vm-commands.js';

export { SHARE_TAG };
/** Where the guest mounts the shared directory. */
export const GUEST_SHARED_DIR = '/run/stencil/shared';
/** 9p mount options in the guest: the largest message the VMM's server takes, mmap support. */
export const SHARE_MOUNT_OPTIONS = ['trans=virtio', 'version=9p2000.L', 'msize=262144', 'cache=mmap'];
/** The lowest guest CID; pods without one get a random CID, so clones of one template differ. */
export const MIN_GUEST_CID = 3;
const MAX_GUEST_CID = 0xfffffffe;
export const DEFAULT_AGENT_TIMEOUT_MS = 180_000;
export const DEFAULT_CALL_TIMEOUT_MS = 60_000;
const CONSOLE_TAIL_BYTES = 64 * 1024;
const ENTROPY_BYTES = 256;

export { PodVmError, validateContainerId, validateId } from './pod-errors.js';
export type { PodVmOptions } from './pod-vm-options.js';

export class PodVm implements Pod {
  readonly id: string;
  readonly stateDir: string;
  /** Host side of the guest's GUEST_SHARED_DIR: a read-only view of mountsDir. */
  readonly sharedDir: string;
  /** Where container root filesystems are mounted on the host. */
  readonly mountsDir: string;
  /** The hybrid-vsock socket: connect, write `CONNECT <port>\n`. */
  readonly vsockPath: string;
  /** The VM's QMP monitor socket (Stencil's own VMM only). */
  readonly qmpPath: string;
  readonly guestCid: number;
  readonly agentPort: number;
  readonly ended: Promise<string>;
  private vm: VirtualMachine | undefined;
  private monitor: QmpHandle | undefined;
  private client: AgentClient | undefined;
  private vmExit: VmExit | undefined;
  /** Why the pod ended while its VM still exists: the guest stopped answering (unanswered-guest.ts). */
  private hung: string | undefined;
  private readonly unanswered: UnansweredGuestWatch;
  private resolveEnded!: (reason: string) => void;
  private stopping: Promise<void> | undefined;
  private lateConnect: Promise<void> | undefined;
  private consoleChunks: Buffer[] = [];
  private consoleBytes = 0;
  private consoleLine = '';
  /** Containers' rootfs and volumes, bound where the guest sees them. */
  private readonly files: ContainerFiles;
  private readonly log: Logger | undefined;
  private network: PodNetwork | undefined;
  /** CRI PortForward into the guest, set up beside the pod's start (not on its path). */
  private portForwarder: Promise<PortForwarder | undefined> | undefined;
  /** The guest pid of the sandbox container (CRI's pause), whose namespaces the others join. */
  private sandboxPid: number | undefined;
  /** The net.* sysctls the guest has been given, so a container's same values cost no agent call. */
  private readonly sysctlsSet = new Map<string, string>();
  /** Told of the QMP monitor's migration states while migrate() waits. */
  private onMigrationStatus: ((status: MigrationStatus, error?: string) => void) | undefined;

  private constructor(private readonly options: PodVmOptions) {
    this.id = options.id;
    this.stateDir = path.resolve(options.stateDir);
    this.sharedDir = path.join(this.stateDir, 'shared');
    this.mountsDir = path.join(this.stateDir, 'mounts');
    this.vsockPath = path.join(this.stateDir, 'vsock.sock');
    this.qmpPath = path.join(this.stateDir, 'qmp.sock');
    this.guestCid = options.guestCid ?? crypto.randomInt(MIN_GUEST_CID, MAX_GUEST_CID + 1);
    this.agentPort = options.agentPort ?? DEFAULT_AGENT_PORT;
    this.log = options.logger?.child({ pod: options.id });
    this.files = new ContainerFiles(this.id, this.mountsDir, this.sharedDir, GUEST_SHARED_DIR, () => this.stopping !== undefined);
    this.ended = new Promise((resolve) => (this.resolveEnded = resolve));
    this.unanswered = new UnansweredGuestWatch(
      (what) => this.guestHung(what),
      healthCheckTimeoutMs(options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS),
      () => this.exitStatsNote(),
    );
  }

  status(): { vmState: string; monitor?: string } {
    return { vmState: this.vm?.state ?? 'none', monitor: this.monitor ? this.qmpPath : undefined };
  }

  injectNmi(): void {
    if (!(this.vm instanceof MicroVm) || this.vm.state !== 'running') throw new PodVmError('FAILED_PRECONDITION', `pod ${this.id}: no running VM to send an NMI to`);
    this.vm.injectNmi();
  }

  /** Boots the VM and waits for its agent. On failure nothing is left behind. */
  static async boot(options: PodVmOptions): Promise<PodVm> {
    validateOptions(options);
    createStateDir(options.id, path.resolve(options.stateDir));
    // The real path: mountinfo, which tells what is mounted below it, shows real paths.
    const pod = new PodVm({ ...options, stateDir: fs.realpathSync(path.resolve(options.stateDir)) });
    try {
      await pod.start();
      return pod;
    } catch (err) {
      await pod.shutdown().catch((cleanupErr: Error) =>
        pod.log?.error('cleanup after a failed boot failed', { error: cleanupErr.message }),
      );
      throw err;
    }
  }

  /**
   * Saves the whole VM, RAM included, into `dir` (which must not exist or be empty): vCPUs pause
   * for the copy and run on afterwards. A template clone's RAM is copied in full (sparsely).
   */
  async checkpoint(dir: string): Promise<void> {
    const vm = this.vm;
    if (!(vm instanceof MicroVm)) throw new PodVmError('FAILED_PRECONDITION', `pod ${this.id}: only Stencil's own VMM saves checkpoints`);
    this.agent();  // refuses a pod that is shut down or whose VM has ended
    const wasRunning = vm.state === 'running';
    if (wasRunning) await vm.pause();
    try {
      vm.saveSnapshotCopy(dir);
    } catch (err) {
      throw new PodVmError('INTERNAL', `pod ${this.id}: cannot save the VM into ${dir}: ${(err as Error).message}`, { cause: err });
    } finally {
      const state: string = vm.state;  // read afresh after the await
      if (wasRunning && state === 'paused') vm.resume();
    }
    this.log?.info('pod VM checkpointed', { dir });
  }

  /** Throws (a PodVmError naming the reason) unless this pod can migrate to `to` now. */
  assertMigratable(to: string): void {
    this.migrationTarget(to);
  }

  async migrate(to: string): Promise<PodMigrationStats> {
    const { monitor, uri } = this.migrationTarget(to);
    try {
      await new Promise<void>((resolve, reject) => {
        this.onMigrationStatus = (status, error) => {
          if (status === 'completed') resolve();
          else if (status === 'failed' || status === 'cancelled') reject(new PodVmError('INTERNAL', `pod ${this.id}: migration to ${to} ${status}${error ? `: ${error}` : ''}`));
        };
        monitor.migrate(uri, new Set());
      });
    } finally {
      this.onMigrationStatus = undefined;
    }
    // The VM runs in the new daemon, which took the tap over (adoptPodNetwork): the redirects are its.
    this.network?.handOver();
    const info = monitor.migrationInfo();
    this.log?.info('pod VM migrated away', { to, info });
    const phases = info?.downtimePhasesMs;
    return {
      totalTimeMs: info?.totalTimeMs ?? 0,
      downtimeMs: info?.downtimeMs ?? 0,
      transferredBytes: info?.transferredBytes ?? 0,
      ...(phases && { downtimePhases: { pauseMs: phases.pause, finalRamMs: phases.finalRam, saveStateMs: phases.saveState, destinationMs: phases.destination } }),
    };
  }

  /** The monitor that runs the migration and the parsed `to`, or why the pod cannot migrate. */
  private migrationTarget(to: string): { monitor: QmpHandle['monitor']; uri: MigrationUri } {
    const monitor = this.monitor?.monitor;
    if (!(this.vm instanceof MicroVm) || !monitor) throw new PodVmError('FAILED_PRECONDITION', `pod ${this.id}: only Stencil's own VMM migrates`);
    if (this.onMigrationStatus) throw new PodVmError('FAILED_PRECONDITION', `pod ${this.id}: a migration is already running`);
    this.agent(); // refuses a pod that is shut down or whose VM has ended
    let uri;
    try {
      uri = parseMigrationUri(to);
    } catch (err) {
      throw new PodVmError('INVALID_ARGUMENT', `pod ${this.id}: ${(err as Error).message}`);
    }
    if (uri.kind !== 'unix' && uri.kind !== 'tcp') throw new PodVmError('INVALID_ARGUMENT', `pod ${this.id}: a pod migrates over tcp: or unix:, not ${to}`);
    return { monitor, uri };
  }

  /** The last ~64 KiB of the guest console. */
  consoleTail(): string {
    return Buffer.concat(this.consoleChunks).toString('latin1').replace(/\r/g, '');
  }

  /** The guest RAM file ('' for memfd). */
  get memoryPath(): string {
    return this.vm?.memoryPath ?? '';
  }

  private async start(): Promise<void> {
    const o = this.options;
    fs.mkdirSync(this.mountsDir, { mode: 0o755 });
    fs.mkdirSync(this.sharedDir, { mode: 0o755 });
    try {
      await createShareView(this.mountsDir, this.sharedDir);
    } catch (err) {
      throw new PodVmError('INTERNAL', `pod ${this.id}: cannot set up the shared directory: ${(err as Error).message}`, { cause: err });
    }
    if (o.networkNamespace) {
      try {
        // A pod migrating here joins the tap its VM already uses; a new one makes its own.
        this.network = o.incoming ? await adoptPodNetwork(o.networkNamespace, this.log) : await attachPodNetwork(o.networkNamespace, this.log);
      } catch (err) {
        throw new PodVmError('INTERNAL', `pod ${this.id}: cannot attach the pod network: ${(err as Error).message}`, { cause: err });
      }
    }
    const net = this.network ? { mac: this.network.guestInterface.mac, backendFd: this.network.tapFd } : undefined;
    if (o.incoming) {
      for (const container of o.incoming.containers) await this.files.share(container);
      // The monitor listens before the VM arrives, so that its setup is not part of the downtime.
      this.monitor = await this.serveMonitor(undefined);
      const t0 = Date.now();
      const vm = await receiveVm({
        name: o.id,
        uri: o.incoming.uri,
        memoryDir: o.memoryDir,
        restore: { vsock: { guestCid: this.guestCid, udsPath: this.vsockPath }, shares: [{ tag: SHARE_TAG, hostPath: this.sharedDir }], net },
        onListening: o.incoming.onListening,
        start: (vm) => {
          this.network?.takeOver();  // its queue of the tap, before the guest's first instruction here
          vm.start();
        },
      });
      this.vm = vm;
      this.monitor.monitor.attachVm(vm);
      this.log?.info('the pod VM arrived and runs', { ms: Date.now() - t0, cid: this.guestCid });
    } else if (o.restore) {
      // The container's files go back where the guest had them before a single instruction runs.
      await this.files.share(o.restore.container);
      this.vm = MicroVm.restore(o.id, {
        restoreFrom: o.restore.vmDir,
        vsock: { guestCid: this.guestCid, udsPath: this.vsockPath },
        shares: [{ tag: SHARE_TAG, hostPath: this.sharedDir }],
        net,
      });
    } else {
      const spec = podVmSpec(o, {
        name: o.id,
        memoryDir: o.memoryDir,
        memoryBacking: o.memoryBacking,
        sharedDir: this.sharedDir,
        vsockPath: this.vsockPath,
        guestCid: this.guestCid,
        net,
      });
      this.vm = await (o.vmProvider ?? bootMicroVm)(spec);
    }
    this.vm.console.on('data', (chunk: Buffer) => this.onConsole(chunk));
    if (this.vm instanceof MicroVm && !this.monitor) this.monitor = await this.serveMonitor(this.vm);
    void this.vm.waitExit().then((exit) => this.onVmExit(exit));
    this.log?.info('starting the pod VM', { vcpus: o.vcpus, memoryBytes: o.memoryBytes, cid: this.guestCid, cmdline: this.vm.cmdline });
    const t0 = Date.now();
    if (!o.incoming) this.vm.start();  // a migrating pod's VM runs already
    this.client = await this.connectAgent(o.agentTimeoutMs ?? DEFAULT_AGENT_TIMEOUT_MS);
    try {
      // The ping first, then the rest in the same flight: the agent answers in order, so a restored
      // or migrated guest's agent sees the order it always has, one guest round trip sooner.
      const ping = this.client.ping();
      ping.catch(() => undefined); // a failed ping fails setUpGuest, which awaits it
      await this.setUpGuest(ping, t0);
    } catch (err) {
      throw this.bootError(`setting up the guest failed: ${(err as Error).message}`, err);
    }
    // Not on the start's critical path: CRI's PortForward only comes once containers run.
    if (this.network) this.portForwarder = forwardPodPorts(this.network.netns, (port) => this.agent().openPort(port), this.log); // never rejects
  }

  /** The guest's clock, entropy and (for a new pod) hostname, shared directory and NIC. */
  private async setUpGuest(pinged: Promise<PingResult>, t0: number): Promise<void> {
    const o = this.options;
    const client = this.client!;
    if (o.incoming) {
      // The guest's clock stood still while the VM moved; its containers run on.
      await client.setupGuest({ time: new Date(), entropy: crypto.randomBytes(ENTROPY_BYTES) });
      await pinged;
      this.log?.info('pod VM migrated here', { ms: Date.now() - t0, containers: o.incoming.containers.map((c) => c.id) });
      return;
    }
    if (o.restore) {
      // The guest's clock stopped at the checkpoint; its container runs on (thawed if frozen).
      await client.setupGuest({ time: new Date(), entropy: crypto.randomBytes(ENTROPY_BYTES) });
      await pinged;
      if (o.restore.paused) await client.resumeContainer(o.restore.container.id);
      this.log?.info('pod VM restored from a checkpoint', { ms: Date.now() - t0, container: o.restore.container.id });
      return;
    }
    await client.setupGuest({
      time: new Date(),
      hostname: o.id.slice(0, 63),
      entropy: crypto.randomBytes(ENTROPY_BYTES),
      mounts: [{ source: SHARE_TAG, target: GUEST_SHARED_DIR, fstype: '9p', options: SHARE_MOUNT_OPTIONS }],
      interfaces: this.network ? [this.network.guestInterface] : [],
      routes: this.network?.routes ?? [],
      sysctls: o.networkSysctls,
    });
    for (const [key, value] of Object.entries(o.networkSysctls ?? {})) this.sysctlsSet.set(key, value);
    this.log?.info('pod VM ready', { ms: Date.now() - t0, agentVersion: (await pinged).agentVersion });
  }

  private onConsole(chunk: Buffer): void {
    this.consoleChunks.push(chunk);
    this.consoleBytes += chunk.length;
    while (this.consoleChunks.length > 1 && this.consoleBytes - this.consoleChunks[0].length >= CONSOLE_TAIL_BYTES) {
      this.consoleBytes -= this.consoleChunks.shift()!.length;
    }
    if (!this.log) return;
    const lines = (this.consoleLine + chunk.toString('latin1')).split('\n');
    this.consoleLine = lines.pop() ?? '';
    if (this.consoleLine.length > 4096) {
      lines.push(this.consoleLine);
      this.consoleLine = '';
    }
    for (const line of lines) this.log.debug(`console: ${line.replace(/\r/g, '')}`);
  }

  private onVmExit(exit: VmExit): void {
    this.vmExit = exit;
    if (this.stopping) return;
    const reason = `the VM of pod ${this.id} ended on its own: ${describeExit(exit)}`;
    this.log?.error(reason, { consoleTail: this.consoleTail().slice(-4096) });
    // Calls waiting for the agent fail now, not at their timeout (a minute for CreateContainer).
    this.client?.close(reason);
    this.resolveEnded(reason);
  }

  private bootError(message: string, cause?: unknown): PodVmError {
    // A clone's console holds only what it printed since its restore: where its vCPUs went says more.
    return new PodVmError('UNAVAILABLE', `pod ${this.id}: ${message}${this.exitStatsNote()}; guest console (last part):\n${this.consoleTail()}`, { cause });
  }

  /**
   * "; VM exits: {...}" for an error about a guest that failed or hung ("" when the VM is gone).
   * The stats are read from KVM's stats fds and the VMM's counters, never by a vCPU ioctl, so a
   * vCPU that never leaves KVM_RUN cannot hold this up.
   */
  private exitStatsNote(): string {
    try {
      if (this.vm instanceof MicroVm && this.vm.state !== 'destroyed') return `; VM exits: ${JSON.stringify(this.vm.exitStats(4))}`;
    } catch {
      /* the VM is gone: nothing to add */
    }
    return '';
  }

  /** The pod's QMP monitor, over its VM or (a VM still to arrive) none yet. */
  private serveMonitor(vm: MicroVm | undefined): Promise<QmpHandle> {
    return serveQmp(vm, this.qmpPath, { logger: this.log, onMigrationStatus: (s, e) => this.onMigrationStatus?.(s, e), vmAttachedLater: !vm });
  }

  /** Connects to the agent, retrying while the guest boots. */
  private async connectAgent(timeoutMs: number): Promise<AgentClient> {
    try {
      const { client, abandoned } = await waitForAgent(this.vm!, {
        vsockPath: this.vsockPath,
        agentPort: this.agentPort,
        timeoutMs,
        callTimeoutMs: this.options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS,
        logger: this.log,
      });
      this.lateConnect = abandoned;
      return client;
    } catch (err) {
      if (err instanceof AgentWaitError) {
        this.lateConnect = err.abandoned;
        throw this.bootError(err.message);
      }
      throw err;
    }
  }

  private agent(): AgentClient {
    if (this.stopping) throw new PodVmError('FAILED_PRECONDITION', `pod ${this.id} is shut down`);
    if (!this.client) throw new PodVmError('FAILED_PRECONDITION', `pod ${this.id} is not running`);
    if (this.vmExit) throw new PodVmError('UNAVAILABLE', `the VM of pod ${this.id} has ended: ${describeExit(this.vmExit)}`);
    if (this.hung) throw new PodVmError('UNAVAILABLE', this.hung);
    return this.client;
  }

  /** An agent request; one that times out may find the guest hung (unanswered-guest.ts), which ends the pod. */
  private request<T>(call: (agent: AgentClient) => Promise<T>): Promise<T> {
    return this.unanswered.request(this.agent(), call);
  }

  /**
   * The guest answers nothing: its vCPUs stop (kept for a look, freed by shutdown()) and the pod
   * ends. Not while the VM is paused on purpose (QMP stop, a migration's last phase): a paused
   * guest cannot answer, and is not hung. The report is taken once the vCPUs are parked, so it
   * names where each one stopped (registers, the code at RIP), the clue to what hung.
   */
  private async guestHung(unanswered: string): Promise<string | undefined> {
    if (this.hung || this.vmExit || this.stopping) return this.hung ?? `pod ${this.id} has ended`;
    if (this.vm && this.vm.state !== 'running') {
      this.log?.warn('the guest did not answer while its VM is not running', { unanswered, vmState: this.vm.state });
      return undefined;
    }
    this.hung = `the guest of pod ${this.id} stopped answering (${unanswered}); its vCPUs are paused`;
    try {
      // Bounded: the pod must end even if a vCPU cannot be parked (the report then lacks it).
      if (this.vm) await withDeadline(this.vm.pause(), 10_000, () => new Error('its vCPUs did not park within 10 s'));
    } catch (err) {
      this.log?.warn('cannot pause the hung guest', { error: (err as Error).message });
    }
    const reason = `${this.hung}${this.exitStatsNote()}`;
    this.hung = reason;
    this.log?.error(reason, { consoleTail: this.consoleTail().slice(-4096) });
    this.client?.close(reason);
    this.resolveEnded(reason);
    return reason;
  }

  /** The agent's version, uptime and the guest's own view of its vsock CID. */
  async ping(): Promise<PingResult> {
    return this.agent().ping();
  }

  // ---- containers ----

  async createContainer(req: ContainerRequest): Promise<number> {
    this.agent(); // refuses a pod that is shut down, ended or hung before anything is shared
    const id = req.id;
    const { terminal, stdin, stdout, stderr } = req.stdio;
    const holdable = this.sandboxPid === undefined && this.options.sandboxPause === 'agent' && !(terminal || stdin || stdout || stderr);
    const pause = holdable ? pauseHolder(id, req.spec) : undefined; // else crun runs the sandbox's /pause
    if (pause) return this.createPauseHolder(req, pause);
    const volumes = await this.files.share(req);
    const guestRootfs = path.posix.join(GUEST_SHARED_DIR, id, 'rootfs');
    const spec = guestSpec(req.spec, {
      rootfs: guestRootfs,
      ociVersion: String(guestOciVersion(req.spec.ociVersion)),
      sandboxPid: this.sandboxPid,
      volumes,
    });
    try {
      await this.setPodSysctls(req.spec);
      const pid = await this.request((a) => a.createContainer(id, spec, req.stdio));
      if (this.sandboxPid === undefined && isSandbox(id, req.spec)) this.sandboxPid = pid;
      this.log?.info('container created', { container: id, pid, rootfs: req.rootfs });
      return pid;
    } catch (err) {
      await this.files.release(id).catch((e: Error) => this.log?.warn('cannot unshare a rootfs', { container: id, error: e.message }));
      throw err;
    }
  }

  /** The spec's net.* sysctls the guest does not have yet (the first SetupGuest gave the sandbox's). */
  private async setPodSysctls(spec: Record<string, unknown>): Promise<void> {
    const sysctls = Object.fromEntries(Object.entries(podNetworkSysctls(spec)).filter(([key, value]) => this.sysctlsSet.get(key) !== value));
    if (!Object.keys(sysctls).length) return;
    await this.request((a) => a.setupGuest({ sysctls }));
    for (const [key, value] of Object.entries(sysctls)) this.sysctlsSet.set(key, value);
  }

  /**
   * The pod's sandbox held by the agent's own pause process (guest-spec.ts pauseHolder): nothing
   * shared, no crun. Its net.* sysctls still go to the guest.
   */
  private async createPauseHolder(req: ContainerRequest, pause: PauseHolder): Promise<number> {
    await this.setPodSysctls(req.spec);
    const pid = await this.request((a) => a.createContainer(req.id, {}, req.stdio, { pause }));
    this.sandboxPid = pid;
    this.log?.info('container created', { container: req.id, pid, heldBy: 'the agent\'s pause process', cgroup: pause.cgroup });
    return pid;
  }

  async deleteContainer(containerId: string): Promise<void> {
    try {
      await this.request((a) => a.deleteContainer(containerId));
    } catch (err) {
      // The agent does not know it (any more): what is left on this side goes anyway.
      if (err instanceof AgentCallError && err.code === 'NOT_FOUND' && this.files.has(containerId)) await this.files.release(containerId);
      throw err;
    }
    await this.files.release(containerId);
    this.log?.info('container deleted', { container: containerId });
  }

  async startContainer(containerId: string): Promise<number> {
    return this.request((a) => a.startContainer(containerId));
  }

  async execProcess(containerId: string, execId: string, processSpec: Record<string, unknown>, stdio: StdioMode): Promise<number> {
    return this.request((a) => a.execProcess(containerId, execId, processSpec, stdio));
  }

  async attachStdio(containerId: string, execId: string, which: StdioMode): Promise<ProcessStdio> {
    return this.agent().attachStdio(containerId, execId, which);
  }

  async signalProcess(containerId: string, execId: string, signal: number, all = false): Promise<void> {
    return this.request((a) => a.signalProcess(containerId, execId, signal, { all }));
  }

  async waitProcess(containerId: string, execId: string): Promise<ProcessExit> {
    return this.agent().waitProcess(containerId, execId);
  }

  async resizePty(containerId: string, execId: string, size: { width: number; height: number }): Promise<void> {
    return this.request((a) => a.resizePty(containerId, execId, size));
  }

  async closeStdin(containerId: string, execId: string): Promise<void> {
    return this.request((a) => a.closeStdin(containerId, execId));
  }

  async stats(containerId: string): Promise<ContainerStats> {
    return this.request((a) => a.stats(containerId));
  }

  async pauseContainer(containerId: string): Promise<void> {
    return this.request((a) => a.pauseContainer(containerId));
  }

  async resumeContainer(containerId: string): Promise<void> {
    return this.request((a) => a.resumeContainer(containerId));
  }

  async updateContainer(containerId: string, resources: object): Promise<void> {
    return this.request((a) => a.updateContainer(containerId, resources));
  }

  async deleteProcess(containerId: string, execId: string): Promise<void> {
    return this.request((a) => a.deleteProcess(containerId, execId));
  }

  // ---- teardown ----

  shutdown(): Promise<void> {
    this.stopping ??= this.teardown();
    return this.stopping;
  }

  private async teardown(): Promise<void> {
    const problems: string[] = [];
    this.client?.close();
    await this.monitor?.close().catch((err: Error) => problems.push(`closing the QMP monitor: ${err.message}`));
    if (this.vm) {
      try {
        await this.vm.destroy();  // RAM file, vsock socket, vCPU threads
      } catch (err) {
        problems.push(`destroying the VM: ${(err as Error).message}`);
      }
    }
    await this.lateConnect;  // ends at once now that the VM's vsock socket is gone
    await (await this.portForwarder)?.close().catch((err: Error) => problems.push(`stopping port forwarding: ${err.message}`));
    await this.network?.detach().catch((err: Error) => problems.push(`detaching the pod network: ${err.message}`));
    await this.files.settled();
    for (const id of this.files.ids()) {
      await this.files.release(id).catch((err: Error) => problems.push(err.message));
    }
    // Anything else mounted below the state directory (there should be nothing) is detached first.
    problems.push(...(await removeStateDir(this.stateDir)));
    if (problems.length) {
      this.log?.error('pod shutdown left something behind', { problems });
      throw new PodVmError('INTERNAL', `pod ${this.id}: shutdown incomplete: ${problems.join('; ')}`);
    }
    this.log?.info('pod shut down');
  }
}

/** CRI's sandbox (pause) container: its namespaces are the pod's. Without CRI's annotations, the pod's first container. */
function isSandbox(id: string, spec: Record<string, unknown>): boolean {
  const a = (spec.annotations ?? {}) as Record<string, string>;
  const type = a['io.kubernetes.cri.container-type'];
  return type === undefined ? true : type === 'sandbox' && (a['io.kubernetes.cri.sandbox-id'] ?? id) === id;
}

/**
 * The guest's crun (Debian bookworm, 1.8) refuses specs newer than runtime-spec 1.1 ("unknown
 * version specified"), while containerd 2.x writes 1.2.x. Later 1.x versions only add optional
 * fields, which crun ignores, so a 1.2+ spec is handed over as 1.1.0.
 */
export function guestOciVersion(version: unknown): unknown {
  const m = typeof version === 'string' ? /^1\.(\d+)\./.exec(version) : null;
  return m && Number(m[1]) >= 2 ? '1.1.0' : version;
}
