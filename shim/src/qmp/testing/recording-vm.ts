// A MonitoredVm for QMP tests without a VM: its run state changes as the commands ask, and every
// call is recorded.
import type { VmExitStats } from '../../hypervisor/native.js';
import {
  DEFAULT_MIGRATION_PARAMETERS,
  type MigrationCapability,
  type MigrationInfo,
  type MigrationParameters,
  type MigrationUri,
  type MonitoredVm,
  type RunState,
} from '../vm-commands.js';

/** A VM whose state changes as the commands ask, recording every call. */
export class RecordingVm implements MonitoredVm {
  state: RunState = 'running';
  calls: string[] = [];
  migration?: MigrationInfo;
  lastUri?: MigrationUri;
  lastCapabilities?: ReadonlySet<MigrationCapability>;
  runState() {
    return this.state;
  }
  async stop() {
    this.calls.push('stop');
    this.state = 'paused';
  }
  async cont() {
    this.calls.push('cont');
    this.state = 'running';
  }
  quit() {
    this.calls.push('quit');
  }
  injectNmi() {
    this.calls.push('inject-nmi');
  }
  migrate(uri: MigrationUri, capabilities: ReadonlySet<MigrationCapability>) {
    this.calls.push('migrate');
    this.lastUri = uri;
    this.lastCapabilities = capabilities;
    this.migration = { status: 'active' };
  }
  migrateIncoming(uri: MigrationUri, capabilities: ReadonlySet<MigrationCapability>) {
    this.calls.push('migrate-incoming');
    this.lastUri = uri;
    this.lastCapabilities = capabilities;
    this.migration = { status: 'active' };
  }
  cancelMigration() {
    this.calls.push('cancel');
    if (this.migration) this.migration = { status: 'cancelled' };
  }
  migrationInfo() {
    return this.migration;
  }
  parameters: MigrationParameters = { ...DEFAULT_MIGRATION_PARAMETERS };
  setMigrationParameters(parameters: Partial<MigrationParameters>) {
    this.calls.push('set-parameters');
    this.parameters = { ...this.parameters, ...parameters };
  }
  migrationParameters() {
    return this.parameters;
  }
  exitStats(): VmExitStats | undefined {
    return this.stats;
  }
  stats?: VmExitStats;
}
