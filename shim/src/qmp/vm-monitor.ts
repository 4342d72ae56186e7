// A MicroVm behind QMP: the MonitoredVm that vm-commands.ts drives, with QEMU's run states,
// STOP/RESUME/SHUTDOWN/MIGRATION events, and migration to and from file:DIR (a snapshot directory,
// RAM copied: the VM may run on), exec:CMD (migration-stream.ts: state without RAM, which stays in
// the shared memory file, QEMU's x-ignore-shared templating) and tcp:/unix: (live migration in the
// VMM, vmm-native/src/migration: RAM sent while the guest runs). A monitor may start without a VM
// (`--incoming`): migrate-incoming then builds it with the caller's restore functions.
import fs from 'node:fs';
import path from 'node:path';
import type { MicroVm } from '../hypervisor/microvm.js';
import {
  loadAddon,
  type NativeIncomingOptions,
  type NativeMigrationIncoming,
  type NativeMigrationStatus,
  type SavedVmState,
  type VmExitStats,
} from '../hypervisor/native.js';
import type { VmExit } from '../hypervisor/types.js';
import type { Logger } from '../util/log.js';
import { execSink, execSource } from './exec-channel.js';
import { decodeMigrationStream, encodeMigrationStream, type SavedRunState } from './migration-stream.js';
import { QmpError } from './protocol.js';
import {
  DEFAULT_MIGRATION_PARAMETERS,
  type MigrationCapability,
  type MigrationInfo,
  type MigrationParameters,
  type MigrationStatus,
  type MigrationUri,
  type MonitoredVm,
  type RunState,
} from './vm-commands.js';

/** An incoming migration stream larger than this is refused (it holds state, never RAM). */
export const MAX_INCOMING_STREAM_BYTES = 64 << 20;

/** What a restore is built from: a snapshot directory, or the state an exec: stream carried. */
export type RestoreSource = { kind: 'dir'; dir: string } | { kind: 'state'; state: SavedVmState };

export interface MonitorOptions {
  logger?: Logger;
  /** For a VM waiting for an incoming migration: builds it (not started) from the source. */
  restore?: (source: RestoreSource) => MicroVm;
  /** Called with each VM the monitor builds (an incoming one), before it starts. */
  onVm?: (vm: MicroVm) => void;
  /** For a live incoming migration (tcp:, unix:): where its RAM goes and what it must match ... */
  incomingOptions?: () => NativeIncomingOptions;
  /** ... and the VM built from what arrived (not started). */
  restoreIncoming?: (incoming: NativeMigrationIncoming) => MicroVm;
  /** Every migration status change, with the error of a failed one. */
  onMigrationStatus?: (status: MigrationStatus, error?: string) => void;
  /** Made without a VM, which its owner receives itself and hands over with attachVm (a pod migrating in). */
  vmAttachedLater?: boolean;
}

/** How the monitored VM ended: by `quit`, or on its own (the guest or the host ended it). */
export type MonitorEnd = { by: 'quit' } | { by: 'exit'; exit: VmExit };

type EventSink = (event: string, data?: object) => void;

interface Migration {
  status: MigrationStatus;
  startedAt: number;
  endedAt?: number;
  downtimeMs?: number;
  transferredBytes?: number;
  errorDesc?: string;
  abort: AbortController;
  /** A live migration: the VM sending (its VMM keeps the statistics) ... */
  source?: MicroVm;
  /** ... or the listening end receiving, ... */
  incoming?: NativeMigrationIncoming;
  /** ... and the VM it brings, built while its RAM streams in, until it is adopted. */
  arriving?: MicroVm;
}

const liveUri = (uri: MigrationUri) => (uri.kind === 'tcp' ? `tcp:${uri.host.includes(':') ? `[${uri.host}]` : uri.host}:${uri.port}` : `unix:${(uri as { path: string }).path}`);

export class MicroVmMonitor implements MonitoredVm {
  private vm?: MicroVm;
  private migration?: Migration;
  private incoming: boolean;
  /** QEMU's autostart: a `stop` while waiting for the incoming VM keeps it paused once loaded. */
  private autostart = true;
  private postMigrate = false;
  private ending = false;
  private parameters: MigrationParameters = { ...DEFAULT_MIGRATION_PARAMETERS };
  private emit: EventSink = () => {};
  private resolveEnd!: (end: MonitorEnd) => void;
  readonly ended: Promise<MonitorEnd> = new Promise((resolve) => (this.resolveEnd = resolve));

  constructor(
    vm: MicroVm | undefined,
    private readonly options: MonitorOptions = {},
  ) {
    this.incoming = vm === undefined;
    if (vm) this.adopt(vm);
    else if (!options.restore && !options.vmAttachedLater) throw new Error('a monitor without a VM needs a restore function for the incoming one');
  }

  /** Where events go (QmpServer.emit). */
  setEventSink(sink: EventSink): void {
    this.emit = sink;
  }

  /** The VM, once there is one. */
  get currentVm(): MicroVm | undefined {
    return this.vm;
  }

  /** A monitor made without a VM takes the one that arrived: by its own incoming migration, or handed over (a pod's). */
  attachVm(vm: MicroVm): void {
    if (this.vm) throw new Error('this QMP monitor already has a VM');
    this.incoming = false;
    this.adopt(vm);
  }

  runState(): RunState {
    if (this.ending) return 'shutdown';
    const vm = this.vm;
    if (!vm) return this.incoming ? 'inmigrate' : 'shutdown';
    const active = this.migrationRunning();
    switch (vm.state) {
      case 'created':
        return 'prelaunch';
      case 'running':
        return 'running';
      case 'pausing':
      case 'paused':
        return active ? 'finish-migrate' : this.postMigrate ? 'postmigrate' : 'paused';
      case 'exited':
      case 'destroyed':
        return 'shutdown';
    }
  }

  async stop(): Promise<void> {
    if (!this.vm) {
      this.autostart = false;  // QEMU: stop while inmigrate keeps the loaded VM paused
      this.migration?.arriving?.startOnArrival(false);
      return;
    }
    if (this.vm.state !== 'running') return;
    await this.vm.pause();
    this.emit('STOP');
  }

  cont(): void {
    const vm = this.vm;
    if (!vm) throw new QmpError('GenericError', 'Guest is waiting for an incoming migration');
    if (this.migrationRunning()) throw new QmpError('GenericError', 'a migration is in progress; wait for it or migrate_cancel');
    if (vm.state === 'running') return;
    vm.resume();  // also from 'pausing': a paused start whose vCPUs have not all parked yet
    this.postMigrate = false;
    this.emit('RESUME');
  }

  injectNmi(): void {
    const vm = this.vm;
    if (!vm || (vm.state !== 'running' && vm.state !== 'paused' && vm.state !== 'pausing')) {
      throw new QmpError('GenericError', `cannot inject an NMI into a VM that is ${this.runState()}`);
    }
    vm.injectNmi();
  }

  quit(): void {
    // After the reply: the client sees {"return": {}} and then SHUTDOWN, as from QEMU.
    setImmediate(() => void this.shutDown());
  }

  migrate(uri: MigrationUri, capabilities: ReadonlySet<MigrationCapability>): void {
    const vm = this.vm;
    if (!vm || (vm.state !== 'running' && vm.state !== 'paused' && vm.state !== 'pausing')) {
      throw new QmpError('GenericError', `cannot migrate a VM that is ${this.runState()}`);
    }
    const ignoreShared = capabilities.has('x-ignore-shared');
    if (uri.kind === 'tcp' || uri.kind === 'unix') {
      if (ignoreShared) throw new QmpError('GenericError', 'x-ignore-shared is for exec: (state only); a live migration over tcp:/unix: sends RAM');
      this.runLive(vm, uri, capabilities.has('auto-converge'));
      return;
    }
    if (uri.kind === 'file' && ignoreShared) {
      throw new QmpError('GenericError', 'x-ignore-shared with file: is not supported: file:DIR always holds a copy of guest RAM; use exec:CMD to send the state alone');
    }
    if (uri.kind === 'exec' && !ignoreShared) {
      throw new QmpError('GenericError', 'exec: migration sends no guest RAM: set the x-ignore-shared capability, with RAM in a shared file (--memory-path FILE --memory-share on)');
    }
    if (uri.kind === 'exec' && !vm.sharedMemoryFile) {
      throw new QmpError('GenericError', 'x-ignore-shared: guest RAM is not in a shared memory file (start the VM with --memory-path FILE --memory-share on)');
    }
    const migration = this.begin();
    void this.runOutgoing(vm, uri, migration);
  }

  migrateIncoming(uri: MigrationUri, capabilities: ReadonlySet<MigrationCapability>): void {
    if (this.vm || !this.incoming) throw new QmpError('GenericError', "'-incoming' was not specified on the command line");
    if (this.options.vmAttachedLater) throw new QmpError('GenericError', 'this VM arrives by its pod\'s own migration: migrate-incoming is not available here');
    if (uri.kind === 'tcp' || uri.kind === 'unix') {
      this.runIncomingLive(uri);
      return;
    }
    if (uri.kind === 'exec' && !capabilities.has('x-ignore-shared')) {
      throw new QmpError('GenericError', 'an exec: stream carries no guest RAM: set the x-ignore-shared capability and give the RAM file with --memory-path');
    }
    const migration = this.begin();
    void this.runIncoming(uri, migration);
  }

  cancelMigration(): void {
    const m = this.migration;
    if (!m || (m.status !== 'setup' && m.status !== 'active')) return;
    // Too late once the final state is on its way: the destination may already run the VM.
    if (m.source && !m.source.cancelMigration()) return;
    m.incoming?.cancel();
    this.setStatus(m, 'cancelling');
    m.abort.abort();
  }

  setMigrationParameters(parameters: Partial<MigrationParameters>): void {
    this.parameters = { ...this.parameters, ...parameters };
    const source = this.migrationRunning() ? this.migration?.source : undefined;
    source?.setMigrationLimits({ downtimeLimitMs: this.parameters.downtimeLimitMs, maxBandwidth: this.parameters.maxBandwidth });
  }

  migrationParameters(): MigrationParameters {
    return { ...this.parameters };
  }

  exitStats(): VmExitStats | undefined {
    const vm = this.vm;
    return vm && vm.state !== 'destroyed' ? vm.exitStats(10) : undefined;
  }

  migrationInfo(): MigrationInfo | undefined {
    const m = this.migration;
    if (!m) return undefined;
    const live = m.source?.state !== 'destroyed' ? m.source?.migrationStats() : undefined;
    if (live) {
      return {
        status: m.status,
        totalTimeMs: live.totalTimeMs,
        downtimeMs: live.downtimeMs >= 0 ? live.downtimeMs : undefined,
        expectedDowntimeMs: live.expectedDowntimeMs >= 0 ? live.expectedDowntimeMs : undefined,
        downtimePhasesMs: live.downtimePhasesMs,
        setupTimeMs: live.setupTimeMs >= 0 ? live.setupTimeMs : undefined,
        throttlePercent: live.throttlePercent,
        transferredBytes: live.transferred,
        errorDesc: m.errorDesc,
        ram: {
          total: live.ramTotal,
          remaining: live.remaining,
          normalPages: live.pagesSent,
          zeroPages: live.zeroPages,
          dirtyRate: live.dirtyRate,
          bandwidth: live.bandwidth,
          rounds: live.rounds,
        },
      };
    }
    if (m.incoming && m.status !== 'completed' && m.status !== 'failed' && m.status !== 'cancelled') {
      m.transferredBytes = m.incoming.stats().received;
    }
    return {
      status: m.status,
      totalTimeMs: (m.endedAt ?? Date.now()) - m.startedAt,
      downtimeMs: m.downtimeMs,
      transferredBytes: m.transferredBytes,
      errorDesc: m.errorDesc,
    };
  }

  /** Ends the VM as `quit` does (idempotent). */
  async shutDown(): Promise<void> {
    if (this.ending) return;
    this.ending = true;
    this.migration?.abort.abort();
    if (this.migrationRunning()) this.migration?.source?.cancelMigration();
    this.migration?.incoming?.close();
    void this.migration?.arriving?.destroy();
    this.emit('SHUTDOWN', { guest: false, reason: 'host-qmp-quit' });
    try {
      await this.vm?.destroy();
    } finally {
      this.resolveEnd({ by: 'quit' });
    }
  }

  private migrationRunning(): boolean {
    const status = this.migration?.status;
    return status === 'setup' || status === 'active' || status === 'cancelling';
  }

  private begin(): Migration {
    const migration: Migration = { status: 'setup', startedAt: Date.now(), abort: new AbortController() };
    this.migration = migration;
    this.emit('MIGRATION', { status: 'setup' });
    return migration;
  }

  private adopt(vm: MicroVm): void {
    this.vm = vm;
    this.options.onVm?.(vm);
    void vm.waitExit().then((exit) => {
      if (this.ending) return;
      this.ending = true;
      const reason = exit.reason === 'reboot' ? 'guest-reset' : exit.reason === 'poweroff' ? 'guest-shutdown' : exit.reason === 'stopped' ? 'host-signal' : 'guest-panic';
      this.emit('SHUTDOWN', { guest: reason !== 'host-signal', reason });
      this.resolveEnd({ by: 'exit', exit });
    });
  }

  private fail(migration: Migration, err: unknown): void {
    const status = migration.abort.signal.aborted ? 'cancelled' : 'failed';
    if (status === 'failed') {
      migration.errorDesc = (err as Error).message;
      this.options.logger?.warn('QMP migration failed', { error: migration.errorDesc });
    }
    this.setStatus(migration, status);
  }

  private setStatus(migration: Migration, status: MigrationStatus): void {
    if (migration.status === status) return;
    migration.status = status;
    if (status === 'completed' || status === 'failed' || status === 'cancelled') migration.endedAt ??= Date.now();
    this.emit('MIGRATION', { status });
    this.options.onMigrationStatus?.(status, migration.errorDesc);
  }

  /** tcp:/unix: outgoing: the VMM sends RAM while the guest runs, then pauses it for the last round. */
  private runLive(vm: MicroVm, uri: MigrationUri, autoConverge: boolean): void {
    const migration = this.begin();
    migration.source = vm;
    const wasRunning = vm.state === 'running';
    vm.onMigrationStatus = (status: NativeMigrationStatus) => {
      if (migration !== this.migration) return;
      if (status === 'failed') {
        migration.errorDesc = vm.migrationStats()?.error;
        this.options.logger?.warn('QMP live migration failed', { error: migration.errorDesc });
      }
      if (status === 'completed') {
        this.postMigrate = true;  // QEMU leaves a migrated source paused
        if (wasRunning) this.emit('STOP');
      }
      if (status !== 'none') this.setStatus(migration, status);
    };
    const p = this.parameters;
    try {
      vm.migrate(liveUri(uri), {
        downtimeLimitMs: p.downtimeLimitMs,
        maxBandwidth: p.maxBandwidth,
        maxRounds: p.maxRounds,
        throttle: autoConverge,
        throttleInitial: p.throttleInitial,
        throttleIncrement: p.throttleIncrement,
      });
    } catch (err) {
      this.fail(migration, err);
      throw new QmpError('GenericError', (err as Error).message);
    }
  }

  /** tcp:/unix: incoming: listen, receive, build and start the VM, then tell the source. */
  private runIncomingLive(uri: MigrationUri): void {
    const { incomingOptions, restoreIncoming } = this.options;
    if (!incomingOptions || !restoreIncoming) throw new QmpError('GenericError', 'this monitor cannot receive a live migration');
    const migration = this.begin();
    let incoming: NativeMigrationIncoming;
    const onEvent = (event: string) => {
      if (event === 'accepted') {
        this.setStatus(migration, 'active');
        migration.arriving = this.buildArriving(incoming, migration);
      } else if (event === 'received') {
        const vm = migration.arriving;
        migration.arriving = undefined;
        if (vm) this.adoptIncoming(vm, incoming, migration);
      } else if (event === 'finished') {
        void migration.arriving?.destroy();  // the stream failed before its VM was adopted
        migration.arriving = undefined;
        const stats = incoming.stats();
        migration.transferredBytes = stats.received;
        if (stats.status === 'failed' && migration.status !== 'failed') this.fail(migration, new Error(stats.error));
        else if (stats.status === 'cancelled') this.setStatus(migration, 'cancelled');
        incoming.close();
      }
    };
    try {
      const { NativeMigrationIncoming } = loadAddon();
      incoming = new NativeMigrationIncoming(liveUri(uri), incomingOptions(), onEvent);
      migration.incoming = incoming;
      incoming.start();
    } catch (err) {
      this.fail(migration, err);
      throw new QmpError('GenericError', (err as Error).message);
    }
  }

  /** The arriving VM, built while its RAM streams in; undefined (the stream told to stop) if it cannot be. */
  private buildArriving(incoming: NativeMigrationIncoming, migration: Migration): MicroVm | undefined {
    try {
      if (this.ending) throw new Error('the destination is shutting down');
      const vm = this.options.restoreIncoming!(incoming);
      // It runs the moment its state is in (QEMU's autostart); a `stop` meanwhile takes that back.
      vm.startOnArrival(this.autostart);
      return vm;
    } catch (err) {
      incoming.fail(`building the VM: ${(err as Error).message}`);
      this.fail(migration, err);
      return undefined;
    }
  }

  private adoptIncoming(vm: MicroVm, incoming: NativeMigrationIncoming, migration: Migration): void {
    const run = incoming.stats().sourceRunning && this.autostart;
    try {
      if (!vm.arrived()) {
        // Not started on arrival (a paused source, or a `stop` while it came): start it here.
        if (this.ending) throw new Error('the destination is shutting down');
        vm.start({ paused: !run });  // loads the state that arrived
        incoming.complete();
      }
    } catch (err) {
      void vm.destroy();
      incoming.fail(`starting the VM: ${(err as Error).message}`);  // unless the start on arrival told it already
      this.fail(migration, err);
      return;
    }
    this.attachVm(vm);
    migration.transferredBytes = incoming.stats().received;
    this.setStatus(migration, 'completed');
    if (run) this.emit('RESUME');
  }

  private async runOutgoing(vm: MicroVm, uri: MigrationUri, migration: Migration): Promise<void> {
    const wasRunning = vm.state === 'running';
    try {
      if (wasRunning) {
        await vm.pause();
        this.emit('STOP');
      } else if (vm.state === 'pausing') {
        await vm.whenPaused();  // a paused start (a clone) whose vCPUs are still parking
      }
      if (migration.abort.signal.aborted) throw new Error('cancelled');
      this.setStatus(migration, 'active');
      const pausedAt = Date.now();
      if (uri.kind === 'file') {
        vm.saveSnapshotCopy(uri.dir);
        migration.transferredBytes = directoryBytes(uri.dir);
      } else if (uri.kind === 'exec') {
        const runState: SavedRunState = wasRunning ? 'running' : 'paused';
        const stream = encodeMigrationStream({ runState, vm: vm.saveState() });
        await execSink(uri.command, stream, migration.abort.signal);
        migration.transferredBytes = stream.length;
      }
      migration.downtimeMs = Date.now() - pausedAt;
      this.setStatus(migration, 'completed');
      this.postMigrate = true;  // QEMU leaves a migrated source paused
    } catch (err) {
      this.fail(migration, err);
      const state: string = vm.state;  // read afresh: the awaits above may have changed it
      if (wasRunning && !this.ending && state === 'paused') {
        vm.resume();
        this.emit('RESUME');
      }
    }
  }

  private async runIncoming(uri: MigrationUri, migration: Migration): Promise<void> {
    try {
      this.setStatus(migration, 'active');
      let source: RestoreSource;
      let runState: SavedRunState = 'running';  // a snapshot directory resumes at once (StratoVirt)
      if (uri.kind === 'file') {
        source = { kind: 'dir', dir: uri.dir };
      } else {
        const bytes = await execSource((uri as { command: string }).command, MAX_INCOMING_STREAM_BYTES, migration.abort.signal);
        const content = decodeMigrationStream(bytes);
        migration.transferredBytes = bytes.length;
        runState = content.runState;
        source = { kind: 'state', state: content.vm };
      }
      if (this.ending) return;
      const vm = this.options.restore!(source);
      this.attachVm(vm);
      const run = runState === 'running' && this.autostart;
      vm.start({ paused: !run });
      this.setStatus(migration, 'completed');
      if (run) this.emit('RESUME');
    } catch (err) {
      this.fail(migration, err);
    }
  }
}

/** Bytes a snapshot directory's files take on disk (its memory file is sparse). */
function directoryBytes(dir: string): number {
  let total = 0;
  for (const name of fs.readdirSync(dir)) total += fs.statSync(path.join(dir, name)).blocks * 512;
  return total;
}
