// The pod layer's contract (shim -> pod -> hypervisor -> agent). The shim's task service drives
// a pod only through this interface: one Pod per shim daemon, one VM per Pod, any number of
// containers in it. Process ids are the agent's (guest) pids.
import type { Readable, Writable } from 'node:stream';
import type { ContainerStats, ProcessExit, StdioMode } from '../agent/client.js';

export type { ContainerStats, ProcessExit, StdioMode };

export interface ProcessStdio {
  stdin?: Writable;
  stdout?: Readable;
  stderr?: Readable;
}

export interface ContainerRequest {
  /** Container id (containerd's task id). */
  id: string;
  /** The OCI spec from the bundle's config.json; the pod rewrites root.path for the guest. */
  spec: Record<string, unknown>;
  /** Host directory holding the container's root filesystem (e.g. <bundle>/rootfs, already mounted). */
  rootfs: string;
  stdio: StdioMode;
}

/** A pod taken up again from a checkpoint (pod/checkpoint.ts): its saved VM and its one container. */
export interface PodRestore {
  vmDir: string;
  container: ContainerRequest;
  /** The container was frozen when the checkpoint was taken: thaw it. */
  paused: boolean;
}

/** A pod whose running VM arrives from another shim daemon by live migration (pod/vm-incoming.ts). */
export interface PodIncoming {
  /** tcp:HOST:PORT or unix:PATH. */
  uri: string;
  /** The pod's containers: their files are shared again at the same guest paths. */
  containers: ContainerRequest[];
  /** The endpoint listens: the source may send. */
  onListening(): void;
}

/** What a pod migration measured (the VM's live migration, as query-migrate reports it). */
export interface PodMigrationStats {
  totalTimeMs: number;
  downtimeMs: number;
  transferredBytes: number;
  /** Where the downtime went (query-migrate's x-downtime-phases), when the VMM split it. */
  downtimePhases?: PodDowntimePhases;
}

/** A pod migration's downtime in parts (ms): parking the vCPUs, the last dirty pages, the VM's state, the new daemon starting the VM. */
export interface PodDowntimePhases {
  pauseMs: number;
  finalRamMs: number;
  saveStateMs: number;
  destinationMs: number;
}

export interface Pod {
  readonly id: string;
  /** Creates the container; its init process waits for startContainer. Returns the init pid. */
  createContainer(req: ContainerRequest): Promise<number>;
  startContainer(containerId: string): Promise<number>;
  /** Starts an extra process (OCI `process` object) in a running container; returns its pid. */
  execProcess(containerId: string, execId: string, processSpec: Record<string, unknown>, stdio: StdioMode): Promise<number>;
  /** Opens the process's stdio streams; call before start so no output is missed. execId '' = init. */
  attachStdio(containerId: string, execId: string, which: StdioMode): Promise<ProcessStdio>;
  signalProcess(containerId: string, execId: string, signal: number, all?: boolean): Promise<void>;
  /** Resolves when the process has exited (exit code, or 128 + signal). */
  waitProcess(containerId: string, execId: string): Promise<ProcessExit>;
  resizePty(containerId: string, execId: string, size: { width: number; height: number }): Promise<void>;
  closeStdin(containerId: string, execId: string): Promise<void>;
  stats(containerId: string): Promise<ContainerStats>;
  /** Freezes / thaws the container's processes (cgroup freezer); the VM keeps running. */
  pauseContainer(containerId: string): Promise<void>;
  resumeContainer(containerId: string): Promise<void>;
  /** Changes the container's cgroup limits: an OCI `linux.resources` object (containerd's Update). */
  updateContainer(containerId: string, resources: object): Promise<void>;
  /** Forgets an exited exec process. */
  deleteProcess(containerId: string, execId: string): Promise<void>;
  /** Kills every process of the container, forgets it and stops sharing its rootfs. */
  deleteContainer(containerId: string): Promise<void>;
  /** Saves the whole VM, RAM included, into `dir` (absent or empty); the pod runs on. */
  checkpoint(dir: string): Promise<void>;
  /**
   * Live-migrates the pod's VM to a destination daemon listening at `to`. On success the VM here
   * is stopped for good (shutdown() releases it); on failure it runs on.
   */
  migrate?(to: string): Promise<PodMigrationStats>;
  /** Throws, naming the reason, unless migrate(to) could start now (checked before a destination is made). */
  assertMigratable?(to: string): void;
  /** Resolves if the VM ends on its own (crash, poweroff); the reason is in the message. */
  readonly ended: Promise<string>;
  /** The VM's state and its QMP monitor socket, if it has one (`stencil pod status`). */
  status(): { vmState: string; monitor?: string };
  /** Panics the guest kernel with an NMI, as QMP inject-nmi does (the guest runs with unknown_nmi_panic). */
  injectNmi(): void;
  /** Stops the VM and frees every resource (RAM file, sockets, mounts). Idempotent. */
  shutdown(): Promise<void>;
}
