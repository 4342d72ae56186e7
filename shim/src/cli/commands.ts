// The `stencil` subcommands: their options (one table for both parsers in stencil.ts) and their
// handlers. A handler imports what it needs when it runs, so choosing one subcommand never loads
// another's modules (the KVM addon, the configuration parser): Node under TCG pays ~0.1-1 s per
// heavy module, and `stencil vm run` is timed against QEMU's whole process.
import type { MigratePodResponse } from '../shim/admin-api.js';

/** `stencil check` exit codes, used by the Makefile to pick where VM tests run. */
export const CHECK_OK = 0;
export const CHECK_FAILED = 1;
export const CHECK_NEEDS_EMULATED_HOST = 2;

export interface OptionSpec {
  type: 'string' | 'number' | 'boolean';
  describe?: string;
  /** Computed only when the option is missing (or for help), so it may load a module. */
  defaultValue?: () => Promise<string | number | boolean>;
}

export type ParsedOptions = Record<string, string | number | boolean | undefined>;

export interface CommandSpec {
  /** The words that select it, e.g. ['vm', 'run']. */
  path: string[];
  describe: string;
  /** By their kebab-case flag names; handlers receive them camelCased (`memory-dir` -> `memoryDir`). */
  options: Record<string, OptionSpec>;
  /** Required operands after the words, in order, e.g. `template rm KEY`; handlers get them by name. */
  positionals?: Array<{ name: string; describe: string }>;
  /** Resolves with the process exit code. */
  run(options: ParsedOptions): Promise<number>;
}

/** A mistake the user can fix (bad input, wrong state); bin/stencil prints just its message. */
export class CliError extends Error {
  override name = 'CliError';
}

export const camelCase = (flag: string) => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

const configuredMemoryDir = async () => (await import('../../../runtime-config/src/config.js')).defaultConfig().hypervisor.memoryDir;

/** Descriptions of the words that group subcommands (`stencil vm ...`). */
export const GROUPS: Record<string, string> = {
  vm: 'run and inspect single VMs',
  pool: "the configuration's pod templates: make them, see how they are used, remove them all",
  template: 'single pod templates',
  pod: "pods that containerd runs with Stencil's shim",
};

const configOption: OptionSpec = { type: 'string', describe: 'configuration.toml (default: $STENCIL_CONFIG, /etc/stencil/configuration.toml)' };
const jsonOption: OptionSpec = { type: 'boolean', describe: 'print one JSON document', defaultValue: async () => false };
// vCPUs as a string: the handler names the exact text it cannot use (yargs would turn it into NaN).
const sizeOptions: Record<string, OptionSpec> = {
  vcpus: { type: 'string', describe: 'vCPUs of the pods (default: [hypervisor] default_vcpus)' },
  memory: { type: 'string', describe: 'memory of the pods, e.g. 512M (default: [hypervisor] default_memory)' },
};
const podAddressOptions: Record<string, OptionSpec> = {
  namespace: { type: 'string', describe: "the pod's containerd namespace", defaultValue: async () => 'default' },
  address: { type: 'string', describe: "containerd's socket", defaultValue: async () => '/run/containerd/containerd.sock' },
};
/** " (pause P, final RAM F, state S, destination D ms)" of a pod migration's downtime, or "" when it was not split. */
function downtimeSplit(r: MigratePodResponse): string {
  const p = r.downtimePhases;
  return p ? ` (pause ${p.pauseMs}, final RAM ${p.finalRamMs}, state ${p.saveStateMs}, destination ${p.destinationMs} ms)` : '';
}
const podPositional = { name: 'pod', describe: "the pod: CRI's sandbox id, or the container id of a pod run by ctr" };
const keyOperand = [{ name: 'key', describe: 'the template key (20 hex digits, from `stencil template list`)' }];

export const COMMANDS: CommandSpec[] = [
  {
    path: ['check'],
    describe: 'probe this host: can its /dev/kvm run stock guests, and what else is missing',
    options: {
      json: { type: 'boolean', describe: 'print the report as JSON', defaultValue: async () => false },
      'memory-dir': { type: 'string', defaultValue: configuredMemoryDir },
    },
    async run(argv) {
      const { runChecks } = await import('../hypervisor/check.js');
      const report = runChecks(String(argv.memoryDir));
      if (argv.json) {
        process.stdout.write(JSON.stringify(report) + '\n');
      } else {
        for (const item of report.items)
          process.stdout.write(`${item.ok ? 'ok  ' : 'FAIL'} ${item.name.padEnd(17)} ${item.detail}\n`);
        process.stdout.write(
          report.needsEmulatedHost
            ? 'result: /dev/kvm here cannot run stock guests; VM tests and the demo use the emulated host\n'
            : 'result: VMs run directly on this host\n',
        );
      }
      const hardFailures = report.items.filter((i) => !i.ok && i.name !== 'kvm-stock-guests');
      return hardFailures.length ? CHECK_FAILED : report.needsEmulatedHost ? CHECK_NEEDS_EMULATED_HOST : CHECK_OK;
    },
  },
  {
    path: ['vm', 'run'],
    describe: 'boot (or restore) a VM with its serial console on stdout; exits when the guest powers off or reboots, or on QMP quit',
    options: {
      kernel: { type: 'string', describe: 'vmlinux or bzImage (default: the built guest kernel)' },
      initrd: { type: 'string', describe: 'initramfs (default: the built guest initramfs)' },
      cmdline: { type: 'string', describe: 'appended to the default kernel command line' },
      config: { type: 'string', describe: 'configuration.toml (default: $STENCIL_CONFIG, /etc/stencil/configuration.toml)' },
      memory: { type: 'string', describe: 'guest RAM, e.g. 256M or 1G (default: configuration, 256M)' },
      vcpus: { type: 'number', describe: 'vCPU count (default: configuration, 1)' },
      'memory-dir': { type: 'string', describe: 'tmpfs directory for the RAM file (default: configuration, /dev/shm/stencil)' },
      name: { type: 'string' },
      qmp: { type: 'string', describe: 'serve QMP (QEMU Machine Protocol) on unix:PATH,server,nowait' },
      incoming: { type: 'string', describe: 'restore instead of booting: file:DIR (a snapshot, runs at once), tcp:HOST:PORT or unix:PATH (wait for a live migration) or defer (wait for QMP migrate-incoming)' },
      'memory-path': { type: 'string', describe: "guest RAM file (QEMU memory-backend-file mem-path); kept after the VM ends" },
      'memory-share': { type: 'string', describe: 'on: map --memory-path shared (the file is the RAM); off (default): copy-on-write (restores only)' },
      'memory-readonly': { type: 'boolean', describe: 'open --memory-path read-only (QEMU readonly=on, rom=off); needs --memory-share off' },
    },
    async run(argv) {
      const { CLEAN_EXITS, vmRun } = await import('./vm-run.js');
      const { describeExit } = await import('../hypervisor/types.js');
      const exit = await vmRun(argv as Parameters<typeof vmRun>[0]);
      process.stderr.write(`stencil: VM exited: ${describeExit(exit)}\n`);
      return CLEAN_EXITS.has(exit.reason) ? 0 : 1;
    },
  },
  {
    path: ['pool', 'init'],
    describe: 'mount the template tmpfs and make the templates the configured pods use (an existing one is kept)',
    options: {
      config: configOption,
      ...sizeOptions,
      shape: { type: 'string', describe: 'several pod sizes as VCPUSxMEMORY, comma-separated, e.g. 1x256M,2x1G' },
    },
    async run(argv) {
      const { initPool } = await import('./pool.js');
      return initPool(argv);
    },
  },
  {
    path: ['pool', 'status'],
    describe: 'the templates, their clones (memory shared and private), pods no template matched, tmpfs usage',
    options: { config: configOption, json: jsonOption },
    async run(argv) {
      const [{ openPool, poolStatus }, { formatStatus }] = await Promise.all([import('./pool.js'), import('./template-report.js')]);
      const status = await poolStatus(openPool(argv.config as string | undefined));
      process.stdout.write(argv.json ? JSON.stringify(status, null, 2) + '\n' : formatStatus(status));
      return 0;
    },
  },
  {
    path: ['pool', 'destroy'],
    describe: 'remove every template (running clones keep their memory), then unmount the tmpfs if Stencil mounted it and it is unused',
    options: { config: configOption },
    async run(argv) {
      const { destroyPool, openPool } = await import('./pool.js');
      return destroyPool(openPool(argv.config as string | undefined));
    },
  },
  {
    path: ['template', 'create'],
    describe: 'make the template for one pod size of the configuration (like `pool init` with one size)',
    options: { config: configOption, ...sizeOptions },
    async run(argv) {
      const { initPool } = await import('./pool.js');
      return initPool(argv);
    },
  },
  {
    path: ['template', 'list'],
    describe: 'list the templates',
    options: { config: configOption, json: jsonOption },
    async run(argv) {
      const [{ openPool, poolStatus }, { formatList }] = await Promise.all([import('./pool.js'), import('./template-report.js')]);
      const { templates } = await poolStatus(openPool(argv.config as string | undefined));
      process.stdout.write(argv.json ? JSON.stringify(templates, null, 2) + '\n' : formatList(templates));
      return 0;
    },
  },
  {
    path: ['template', 'inspect'],
    describe: 'one template as JSON: what it was made from, the VMM configuration it saved, its use',
    positionals: keyOperand,
    options: { config: configOption },
    async run(argv) {
      const { inspectTemplate, openPool } = await import('./pool.js');
      process.stdout.write(JSON.stringify(await inspectTemplate(openPool(argv.config as string | undefined), String(argv.key)), null, 2) + '\n');
      return 0;
    },
  },
  {
    path: ['template', 'rm'],
    describe: 'remove a template (running clones keep their memory)',
    positionals: keyOperand,
    options: { config: configOption },
    async run(argv) {
      const { keptBy, openPool, removeTemplate } = await import('./pool.js');
      const key = String(argv.key);
      const live = await removeTemplate(openPool(argv.config as string | undefined), key);
      process.stdout.write(`removed template ${key}${keptBy(live)}\n`);
      return 0;
    },
  },
  {
    path: ['pod', 'status'],
    describe: "a pod's shim daemon: its pid, the VM's state, the VM's QMP monitor socket and the containers",
    positionals: [podPositional],
    options: {
      ...podAddressOptions,
      json: jsonOption,
    },
    async run(argv) {
      const { podStatus } = await import('./pod.js');
      const r = await podStatus({ pod: String(argv.pod), namespace: String(argv.namespace), address: String(argv.address) });
      process.stdout.write(
        argv.json
          ? JSON.stringify(r) + '\n'
          : `pod ${argv.pod}: shim daemon pid ${r.pid}, VM ${r.vmState}, monitor ${r.monitor || '(none)'}, containers ${r.containers.join(' ') || '(none)'}\n`,
      );
      return 0;
    },
  },
  {
    path: ['pod', 'migrate'],
    describe: "move a running pod's VM, containers running, to a new shim daemon on this host (it then serves containerd in the old one's place)",
    positionals: [podPositional],
    options: {
      to: { type: 'string', describe: 'where the new daemon receives the VM: unix:PATH or tcp:HOST:PORT (loopback)' },
      ...podAddressOptions,
      json: jsonOption,
    },
    async run(argv) {
      if (!argv.to) throw new CliError('--to unix:PATH or --to tcp:HOST:PORT is required');
      const { migratePod } = await import('./pod.js');
      const r = await migratePod({ pod: String(argv.pod), to: String(argv.to), namespace: String(argv.namespace), address: String(argv.address) });
      process.stdout.write(
        argv.json
          ? JSON.stringify(r) + '\n'
          : `pod ${argv.pod} migrated: new shim daemon pid ${r.pid}, total ${r.totalTimeMs} ms, downtime ${r.downtimeMs} ms${downtimeSplit(r)}, ${r.transferredBytes} bytes sent\n`,
      );
      return 0;
    },
  },
];
