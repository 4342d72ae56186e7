// The QMP commands Stencil serves for a VM, with QEMU's names, arguments and replies, over the
// MonitoredVm interface that the VM runtime implements (run state, stop/cont, snapshot and
// migration). Events (STOP, RESUME, SHUTDOWN) are the runtime's to emit, through QmpServer.emit.
import type { DowntimePhasesMs, VmExitStats } from '../hypervisor/native.js';
import { QmpError } from './protocol.js';
import type { QmpCommand } from './server.js';

/** QEMU's RunState values that a Stencil VM can be in. */
export type RunState = 'prelaunch' | 'running' | 'paused' | 'inmigrate' | 'postmigrate' | 'finish-migrate' | 'shutdown' | 'internal-error';

/** QEMU's MigrationStatus values Stencil reports. */
export type MigrationStatus = 'none' | 'setup' | 'active' | 'completed' | 'failed' | 'cancelling' | 'cancelled';

export interface MigrationInfo {
  status: MigrationStatus;
  /** Milliseconds from start to the end (or to now while running). */
  totalTimeMs?: number;
  /** VM downtime in milliseconds, once completed. */
  downtimeMs?: number;
  /** Bytes of state (and RAM, when it is sent) written so far. */
  transferredBytes?: number;
  errorDesc?: string;
  /** Live migration (tcp:, unix:) only. */
  expectedDowntimeMs?: number;
  /** Where the downtime went, once completed (QMP `x-downtime-phases`). */
  downtimePhasesMs?: DowntimePhasesMs;
  setupTimeMs?: number;
  throttlePercent?: number;
  ram?: {
    total: number;
    remaining: number;
    /** Pages sent in full and as zero runs (QEMU's normal and duplicate). */
    normalPages: number;
    zeroPages: number;
    /** Bytes per second: what the guest dirtied, what the link carried, in the last round. */
    dirtyRate: number;
    bandwidth: number;
    rounds: number;
  };
}

/** Live migration tuning, with QEMU's parameter names in the QMP commands. */
export interface MigrationParameters {
  /** QEMU downtime-limit (ms). */
  downtimeLimitMs: number;
  /** QEMU max-bandwidth (bytes per second); 0: unlimited. */
  maxBandwidth: number;
  /** QEMU cpu-throttle-initial / cpu-throttle-increment (percent), with auto-converge. */
  throttleInitial: number;
  throttleIncrement: number;
  /** Stencil's x-max-rounds: dirty-page rounds before auto-converge throttles (or the migration fails). */
  maxRounds: number;
}

export const DEFAULT_MIGRATION_PARAMETERS: MigrationParameters = {
  downtimeLimitMs: 50,
  maxBandwidth: 0,
  throttleInitial: 20,
  throttleIncrement: 10,
  maxRounds: 30,
};

const PARAMETER_NAMES: Record<string, { key: keyof MigrationParameters; max: number }> = {
  'downtime-limit': { key: 'downtimeLimitMs', max: 2_000_000 },
  'max-bandwidth': { key: 'maxBandwidth', max: Number.MAX_SAFE_INTEGER },
  'cpu-throttle-initial': { key: 'throttleInitial', max: 99 },
  'cpu-throttle-increment': { key: 'throttleIncrement', max: 99 },
  'x-max-rounds': { key: 'maxRounds', max: 100_000 },
};

/** Where a snapshot or migration stream goes to or comes from (`migrate`'s `uri`). */
export type MigrationUri =
  | { kind: 'file'; dir: string }
  | { kind: 'exec'; command: string }
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'unix'; path: string };

/** x-ignore-shared: RAM stays in the shared file (exec:); auto-converge: throttle a guest that outruns the link. */
export const MIGRATION_CAPABILITIES = ['x-ignore-shared', 'auto-converge'] as const;
export type MigrationCapability = (typeof MIGRATION_CAPABILITIES)[number];

export interface MonitoredVm {
  runState(): RunState;
  stop(): Promise<void>;
  cont(): void | Promise<void>;
  /** Ends the VM after the reply is sent. */
  quit(): void;
  /** An NMI on every vCPU (QEMU's inject-nmi on x86). */
  injectNmi(): void;
  /** Starts an outgoing migration/snapshot in the background; query it with migrationInfo(). */
  migrate(uri: MigrationUri, capabilities: ReadonlySet<MigrationCapability>): void;
  /** Starts loading state for a VM started with `--incoming defer`. */
  migrateIncoming(uri: MigrationUri, capabilities: ReadonlySet<MigrationCapability>): void;
  cancelMigration(): void;
  migrationInfo(): MigrationInfo | undefined;
  /** Parameters for the next live migration; the downtime limit and bandwidth cap also apply to a running one. */
  setMigrationParameters(parameters: Partial<MigrationParameters>): void;
  migrationParameters(): MigrationParameters;
  /** Where the VM's time went (VM exits, KVM's counters); undefined before a VM exists. */
  exitStats(): VmExitStats | undefined;
}

export function parseMigrationUri(uri: string): MigrationUri {
  const colon = uri.indexOf(':');
  const scheme = colon < 0 ? uri : uri.slice(0, colon);
  const rest = colon < 0 ? '' : uri.slice(colon + 1);
  switch (scheme) {
    case 'file':
      if (!rest.startsWith('/')) throw new QmpError('GenericError', `migration URI '${uri}': file: needs an absolute directory`);
      return { kind: 'file', dir: rest };
    case 'exec':
      if (!rest.trim()) throw new QmpError('GenericError', `migration URI '${uri}': exec: needs a command`);
      return { kind: 'exec', command: rest };
    case 'unix':
      if (!rest) throw new QmpError('GenericError', `migration URI '${uri}': unix: needs a socket path`);
      return { kind: 'unix', path: rest };
    case 'tcp': {
      // tcp:HOST:PORT, HOST may be a bracketed IPv6 address.
      const match = /^(\[[^\]]+\]|[^:]*):(\d{1,5})$/.exec(rest);
      const port = match ? Number(match[2]) : NaN;
      if (!match || port < 1 || port > 65535) {
        throw new QmpError('GenericError', `migration URI '${uri}': expected tcp:HOST:PORT`);
      }
      return { kind: 'tcp', host: match[1].replace(/^\[|\]$/g, '') || '0.0.0.0', port };
    }
    default:
      throw new QmpError('GenericError', `unknown migration protocol: ${uri}`);
  }
}

function queryMigrateReply(info: MigrationInfo | undefined): object {
  if (!info || info.status === 'none') return {};
  const reply: Record<string, unknown> = { status: info.status };
  if (info.totalTimeMs !== undefined) reply['total-time'] = Math.round(info.totalTimeMs);
  if (info.downtimeMs !== undefined) reply.downtime = Math.round(info.downtimeMs);
  if (info.expectedDowntimeMs !== undefined) reply['expected-downtime'] = Math.round(info.expectedDowntimeMs);
  if (info.downtimePhasesMs) {
    const p = info.downtimePhasesMs;
    // The VMM measures each phase in microseconds: a destination that starts the VM in tens of them
    // must not read as 0.
    const ms = (v: number) => Math.round(v * 1000) / 1000;
    reply['x-downtime-phases'] = { pause: ms(p.pause), 'final-ram': ms(p.finalRam), 'save-state': ms(p.saveState), destination: ms(p.destination) };
  }
  if (info.setupTimeMs !== undefined) reply['setup-time'] = Math.round(info.setupTimeMs);
  if (info.throttlePercent) reply['cpu-throttle-percentage'] = info.throttlePercent;
  if (info.ram) {
    reply.ram = {
      transferred: info.transferredBytes ?? 0,
      remaining: info.ram.remaining,
      total: info.ram.total,
      duplicate: info.ram.zeroPages,
      normal: info.ram.normalPages,
      'normal-bytes': info.ram.normalPages * 4096,
      'dirty-pages-rate': Math.round(info.ram.dirtyRate / 4096),
      mbps: Math.round((info.ram.bandwidth * 8) / 1e6),
      'dirty-sync-count': info.ram.rounds,
      'page-size': 4096,
    };
  } else if (info.transferredBytes !== undefined) {
    reply.ram = { transferred: info.transferredBytes };
  }
  if (info.errorDesc !== undefined) reply['error-desc'] = info.errorDesc;
  return reply;
}

function parseMigrationParameters(args: Record<string, unknown>): Partial<MigrationParameters> {
  const out: Partial<MigrationParameters> = {};
  for (const [name, value] of Object.entries(args)) {
    const spec = PARAMETER_NAMES[name];
    if (typeof value !== 'number' || value < 0 || value > spec.max) {
      throw new QmpError('GenericError', `Parameter '${name}' expects an integer in 0..${spec.max}`);
    }
    out[spec.key] = value;
  }
  return out;
}

/** The command table for one VM. Capabilities set by migrate-set-capabilities live per VM. */
export function vmCommands(vm: MonitoredVm): Record<string, QmpCommand> {
  const capabilities = new Set<MigrationCapability>();
  const migrationRunning = () => {
    const status = vm.migrationInfo()?.status;
    return status === 'setup' || status === 'active' || status === 'cancelling';
  };
  return {
    'query-status': {
      run: () => {
        const status = vm.runState();
        return { status, singlestep: false, running: status === 'running' };
      },
    },
    stop: { run: () => vm.stop() },
    cont: {
      run: () => {
        const state = vm.runState();
        if (state === 'inmigrate') throw new QmpError('GenericError', 'Guest is waiting for an incoming migration');
        if (state === 'shutdown' || state === 'internal-error') {
          throw new QmpError('GenericError', `Cannot continue a VM in state '${state}'`);
        }
        return vm.cont();
      },
    },
    quit: { run: () => vm.quit() },
    'inject-nmi': { run: () => vm.injectNmi() },
    'migrate-set-capabilities': {
      args: { capabilities: { type: 'array' } },
      run: (args) => {
        if (migrationRunning()) throw new QmpError('GenericError', 'There is a migration process in progress');
        const changes = (args.capabilities as unknown[]).map((entry, i) => {
          const e = entry as { capability?: unknown; state?: unknown } | null;
          if (typeof e !== 'object' || e === null || typeof e.capability !== 'string' || typeof e.state !== 'boolean') {
            throw new QmpError('GenericError', `capabilities[${i}]: expected {"capability": string, "state": boolean}`);
          }
          if (!(MIGRATION_CAPABILITIES as readonly string[]).includes(e.capability)) {
            throw new QmpError('GenericError', `Parameter 'capability' does not accept value '${e.capability}'`);
          }
          return { capability: e.capability as MigrationCapability, state: e.state };
        });
        for (const { capability, state } of changes) {
          if (state) capabilities.add(capability);
          else capabilities.delete(capability);
        }
      },
    },
    'query-migrate-capabilities': {
      run: () => MIGRATION_CAPABILITIES.map((capability) => ({ capability, state: capabilities.has(capability) })),
    },
    migrate: {
      args: {
        uri: { type: 'string' },
        blk: { type: 'boolean', optional: true },
        inc: { type: 'boolean', optional: true },
        detach: { type: 'boolean', optional: true },
        resume: { type: 'boolean', optional: true },
      },
      run: (args) => {
        if (args.blk || args.inc) throw new QmpError('GenericError', 'block migration (blk/inc) is not supported');
        if (args.resume) throw new QmpError('GenericError', 'postcopy resume is not supported');
        if (migrationRunning()) throw new QmpError('GenericError', 'There is a migration process in progress');
        if (vm.runState() === 'inmigrate') throw new QmpError('GenericError', 'Guest is waiting for an incoming migration');
        vm.migrate(parseMigrationUri(args.uri as string), new Set(capabilities));
      },
    },
    'migrate-incoming': {
      args: { uri: { type: 'string' } },
      run: (args) => {
        if (vm.runState() !== 'inmigrate') {
          throw new QmpError('GenericError', "'-incoming' was not specified on the command line");
        }
        const previous = vm.migrationInfo()?.status;
        // A failed or cancelled load may be retried (the VM is still waiting); anything else may not.
        if (previous !== undefined && previous !== 'failed' && previous !== 'cancelled') {
          throw new QmpError('GenericError', 'The incoming migration has already been started');
        }
        vm.migrateIncoming(parseMigrationUri(args.uri as string), new Set(capabilities));
      },
    },
    migrate_cancel: { run: () => vm.cancelMigration() },
    'migrate-set-parameters': {
      args: Object.fromEntries(Object.keys(PARAMETER_NAMES).map((name) => [name, { type: 'integer' as const, optional: true }])),
      run: (args) => vm.setMigrationParameters(parseMigrationParameters(args)),
    },
    'query-migrate-parameters': {
      run: () => {
        const p = vm.migrationParameters();
        return {
          'downtime-limit': p.downtimeLimitMs,
          'max-bandwidth': p.maxBandwidth,
          'cpu-throttle-initial': p.throttleInitial,
          'cpu-throttle-increment': p.throttleIncrement,
          'x-max-rounds': p.maxRounds,
        };
      },
    },
    'query-migrate': { run: () => queryMigrateReply(vm.migrationInfo()) },
    // Stencil's own (x-): the VMM's exit counts and KVM's per-vCPU counters, for a guest that
    // spins or stalls (QEMU answers similar questions with query-stats).
    'x-query-exit-stats': {
      run: () => {
        const stats = vm.exitStats();
        if (!stats) throw new QmpError('GenericError', 'no VM yet (waiting for an incoming migration)');
        return stats;
      },
    },
  };
}
