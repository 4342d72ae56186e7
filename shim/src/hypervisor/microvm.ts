// Stencil's own VMM (the C++ addon) behind the VirtualMachine interface.
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { fromNative, InvalidVmConfigError, VmStateError } from './errors.js';
import {
  loadAddon,
  type NativeEvent,
  type NativeMigrationIncoming,
  type NativeMigrationParameters,
  type NativeMigrationStats,
  type NativeMigrationStatus,
  type NativeRestoreConfig,
  type NativeVm,
  type SavedVmState,
  type VmExitStats,
} from './native.js';
import { type ExitReason, memoryFileName, type VirtualMachine, type VmExit, type VmProvider, type VmSpec, type VmState } from './types.js';

/**
 * Defaults a Kata/Firecracker user would expect: serial console, keyboard-controller reset; a
 * panic ends the VM after 1 s, and an NMI from the host (QMP inject-nmi) panics the guest.
 */
export const DEFAULT_CMDLINE = 'console=ttyS0 quiet reboot=k panic=1 unknown_nmi_panic pci=off tsc=reliable no_timer_check';

export class MicroVm implements VirtualMachine {
  readonly console = new PassThrough();
  readonly memoryPath: string;
  readonly cmdline: string;
  private native: NativeVm | undefined;
  private current: VmState = 'created';
  private pauseWaiters: Array<() => void> = [];
  /** Each status of an outgoing live migration, as it changes. */
  onMigrationStatus?: (status: NativeMigrationStatus) => void;
  private readonly exited: Promise<VmExit>;
  private resolveExit!: (exit: VmExit) => void;

  /**
   * @param sharedMemoryFile the RAM file when it is mapped shared and outlives the VM (QEMU's
   *   mem-path with share=on): what a migration with x-ignore-shared leaves out.
   */
  private constructor(
    readonly name: string,
    makeNative: (onEvent: (type: NativeEvent, a?: unknown, b?: unknown) => void) => NativeVm,
    readonly sharedMemoryFile?: string,
  ) {
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
    try {
      this.native = makeNative((type, a, b) => this.onEvent(type, a, b));
    } catch (err) {
      throw fromNative(err);
    }
    const info = this.native.info();
    this.memoryPath = info.memoryPath;
    this.cmdline = info.cmdline;
  }

  /**
   * memoryFile: guest RAM is this exact file (created; it must not exist), mapped shared and left
   * behind when the VM ends (QEMU's memory-backend-file mem-path with share=on); it overrides
   * spec.memoryDir/memoryBacking.
   */
  static create(spec: VmSpec, options: { memoryFile?: string } = {}): MicroVm {
    validateSpec(spec);
    const memoryFile = options.memoryFile;
    if (memoryFile !== undefined && (!path.isAbsolute(memoryFile) || memoryFile.endsWith('/'))) {
      throw new InvalidVmConfigError(`memory file "${memoryFile}" must be an absolute file path`, 'EINVALID_ARGUMENT');
    }
    const { NativeVm } = loadAddon();
    return new MicroVm(
      spec.name,
      (onEvent) =>
        new NativeVm(
          {
            vcpus: spec.vcpus,
            memoryBytes: spec.memoryBytes,
            memoryBacking: memoryFile ? 'tmpfs' : spec.memoryBacking,
            memoryDir: memoryFile ? path.dirname(memoryFile) : spec.memoryDir,
            memoryFileName: memoryFile ? path.basename(memoryFile) : memoryFileName(spec.name),
            kernel: spec.kernel,
            initrd: spec.initrd ?? '',
            cmdline: spec.cmdline,
            virtioRng: spec.virtioRng,
            disks: (spec.disks ?? []).map((d) => ({ path: d.path, readOnly: d.readOnly, serial: d.serial ?? '' })),
            shares: (spec.shares ?? []).map((s) => ({ tag: s.tag, hostPath: s.hostPath, readOnly: s.readOnly })),
            vsock: spec.vsock ? { guestCid: spec.vsock.guestCid, udsPath: spec.vsock.udsPath } : undefined,
            net: spec.net ? { mac: spec.net.mac, backendFd: spec.net.backendFd } : undefined,
            keepMemoryFile: memoryFile !== undefined,
          },
          onEvent,
        ),
      memoryFile,
    );
  }

  /**
   * A VM restored from a snapshot directory (vmm-native/src/snapshot): its configuration comes
   * from the snapshot, RAM is the snapshot's memory file mapped copy-on-write. 'created' until
   * start(); start({ paused: true }) keeps it parked until resume().
   */
  static restore(name: string, config: NativeRestoreConfig): MicroVm {
    const { NativeVm } = loadAddon();
    return new MicroVm(name, (onEvent) => new NativeVm(config, onEvent), config.memoryShared ? config.memoryPath : undefined);
  }

  /**
   * The VM an incoming live migration brings, built once the stream is accepted
   * (NativeMigrationIncoming 'accepted') while its RAM still streams in: configuration and RAM
   * come from the stream; 'created' until start(), which needs its final state ('received').
   */
  static fromIncoming(name: string, incoming: NativeMigrationIncoming): MicroVm {
    const { NativeVm } = loadAddon();
    return new MicroVm(name, (onEvent) => new NativeVm({ incoming }, onEvent));
  }

  get state(): VmState {
    return this.current;
  }

  /**
   * An arriving VM (fromIncoming): with autostart it runs as soon as its state is received, if
   * its source ran, without waiting for JavaScript; arrived() then tells.
   */
  startOnArrival(autostart: boolean): void {
    this.expect('created', 'arm the start of');
    this.call((n) => n.startOnArrival(autostart));
  }

  /**
   * At the incoming migration's 'received': true if the VM already runs (startOnArrival);
   * false if start() is still to be called. Throws if the start on arrival failed.
   */
  arrived(): boolean {
    let result = { started: false, error: '' };
    this.call((n) => (result = n.arrival()));
    if (result.error) throw new VmStateError(`VM ${this.name}: ${result.error}`, 'ESTATE');
    if (result.started && this.current === 'created') this.current = 'running';
    return result.started;
  }

  start(options: { paused?: boolean } = {}): void {
    this.expect('created', 'start');
    this.call((n) => n.start(options));
    this.current = options.paused ? 'pausing' : 'running';
  }

  /**
   * Template mode: saves this paused VM into `dir` (state + config; its tmpfs RAM file becomes
   * dir/memory without a copy). The VM cannot run again; clones come from MicroVm.restore.
   */
  saveSnapshot(dir: string): void {
    this.expect('paused', 'save a snapshot of');
    this.call((n) => n.saveSnapshot(dir));
  }

  /**
   * Copy mode: saves this paused VM into `dir` (created; it must not exist or be empty) with its
   * RAM copied sparsely into dir/memory. The VM stays paused and may resume.
   */
  saveSnapshotCopy(dir: string): void {
    this.expect('paused', 'save a snapshot of');
    this.call((n) => n.saveSnapshot(dir, { copyMemory: true }));
  }

  /** This paused VM's state and configuration without RAM; it stays paused and may resume. */
  saveState(): SavedVmState {
    this.expect('paused', 'save the state of');
    let saved: SavedVmState | undefined;
    this.call((n) => (saved = n.saveState()));
    return saved!;
  }

  pause(): Promise<void> {
    this.expect('running', 'pause');
    this.current = 'pausing';
    const parked = new Promise<void>((resolve) => this.pauseWaiters.push(resolve));
    this.call((n) => n.pause());
    return parked;
  }

  /** Resolves once a pause (or a paused start) has parked every vCPU; at once if it has already. */
  whenPaused(): Promise<void> {
    if (this.current === 'paused') return Promise.resolve();
    this.expect('pausing', 'wait for the pause of');
    return new Promise<void>((resolve) => this.pauseWaiters.push(resolve));
  }

  resume(): void {
    if (this.current !== 'paused' && this.current !== 'pausing') this.expect('paused', 'resume');
    this.call((n) => n.resume());
    this.current = 'running';
  }

  /**
   * An NMI on every vCPU (QMP inject-nmi). The guest kernel is told unknown_nmi_panic
   * (DEFAULT_CMDLINE), so it panics, printing where it was, and the VM ends: how an operator
   * ends a hung guest with a trace, as with QEMU's inject-nmi and a kdump-ready guest.
   */
  injectNmi(): void {
    if (this.current !== 'running' && this.current !== 'paused' && this.current !== 'pausing') this.expect('running', 'inject an NMI into');
    this.call((n) => n.injectNmi());
  }

  /**
   * Live migration to tcp:HOST:PORT or unix:PATH, in the background: RAM goes while the guest
   * runs, then the VM pauses for the last round. On completion the VM stays paused (the
   * destination runs it); on failure or cancel it runs on as before.
   */
  migrate(uri: string, parameters: NativeMigrationParameters = {}): void {
    if (this.current !== 'running' && this.current !== 'paused') this.expect('running', 'migrate');
    this.call((n) => n.migrate(uri, parameters));
  }

  /** True if cancelled (or none runs); false when too late: the final state is on its way. */
  cancelMigration(): boolean {
    let cancelled = true;
    this.call((n) => (cancelled = n.migrateCancel()));
    return cancelled;
  }

  migrationStats(): NativeMigrationStats | undefined {
    let stats: NativeMigrationStats | undefined;
    this.call((n) => (stats = n.migrationStats()));
    return stats;
  }

  setMigrationLimits(limits: Pick<NativeMigrationParameters, 'downtimeLimitMs' | 'maxBandwidth'>): void {
    this.call((n) => n.setMigrationLimits(limits));
  }

  writeConsole(data: Buffer | string): void {
    this.call((n) => n.sendConsoleInput(Buffer.from(data)));
  }

  /** VM exit counts and boot timings so far (read them before destroy()). */
  exitStats(topN = 10): VmExitStats {
    let stats: VmExitStats | undefined;
    this.call((n) => (stats = n.stats(topN)));
    return stats!;
  }

  waitExit(): Promise<VmExit> {
    return this.exited;
  }

  async destroy(): Promise<VmExit> {
    if (this.native) {
      const native = this.native;
      if (this.current === 'created') this.resolveExit({ reason: 'stopped', detail: 'never started' });
      native.stop();  // joins the vCPU threads; the exited event is queued for the JS thread
      const exit = await this.exited;
      native.destroy();  // frees RAM (and its tmpfs file) and closes every fd
      this.native = undefined;
      this.current = 'destroyed';
      this.console.end();
      return exit;
    }
    return this.exited;
  }

  private onEvent(type: NativeEvent, a?: unknown, b?: unknown): void {
    switch (type) {
      case 'console':
        this.console.write(a as Buffer);
        break;
      case 'paused':
        if (this.current === 'pausing') this.current = 'paused';
        for (const w of this.pauseWaiters.splice(0)) w();
        break;
      case 'migration':
        // A completed migration leaves the source paused (its vCPUs parked for the last round).
        if (a === 'completed' && this.current === 'running') this.current = 'paused';
        this.onMigrationStatus?.(a as NativeMigrationStatus);
        break;
      case 'exited':
        if (this.current !== 'destroyed') this.current = 'exited';
        for (const w of this.pauseWaiters.splice(0)) w();
        this.resolveExit({ reason: a as ExitReason, detail: String(b ?? '') });
        break;
    }
  }

  private expect(state: VmState, op: string): void {
    if (this.current !== state) throw new VmStateError(`cannot ${op} VM ${this.name}: it is ${this.current}`, 'ESTATE');
  }

  private call(f: (n: NativeVm) => void): void {
    if (!this.native) throw new VmStateError(`VM ${this.name} has been destroyed`, 'ESTATE');
    try {
      f(this.native);
    } catch (err) {
      throw fromNative(err);
    }
  }
}

const VM_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/**
 * The VM name becomes a file name (the RAM file) and appears in logs, so it is held to a safe
 * character set here. Every limit (vCPUs, memory size, vsock CID) is the addon's to check: it
 * names the field and the limit in its error, which reaches the caller as InvalidVmConfigError.
 */
export function validateSpec(spec: VmSpec): void {
  if (!VM_NAME_RE.test(spec.name)) throw new InvalidVmConfigError(`VM name "${spec.name}" must be [A-Za-z0-9_.-]+`, 'EINVALID_ARGUMENT');
}

/** The default way to obtain a pod's VM: boot a fresh MicroVm (templates will add restore). */
export const bootMicroVm: VmProvider = (spec) => MicroVm.create(spec);
