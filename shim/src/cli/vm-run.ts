// `stencil vm run`: boot a VM (or restore one) with its console on this terminal; exit when the
// guest does, or on QMP `quit` (--qmp). Memory flags map one to one to QEMU's memory-backend-file
// (mem-path=FILE -> --memory-path FILE, share=on|off -> --memory-share on|off, readonly=on ->
// --memory-readonly), and --incoming to QEMU's -incoming (file:DIR, tcp:HOST:PORT, unix:PATH,
// defer), see README.
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../../../runtime-config/src/config.js';
import { parseSize } from '../../../runtime-config/src/size.js';
import { DEFAULT_CMDLINE, MicroVm } from '../hypervisor/microvm.js';
import { confineVmmThreads } from '../hypervisor/native.js';
import { type ExitReason, memoryFileName } from '../hypervisor/types.js';
import { parseQmpChardev, type QmpHandle, serveQmp } from '../qmp/serve.js';
import { type MigrationUri, parseMigrationUri } from '../qmp/vm-commands.js';
import { MicroVmMonitor, type MonitorOptions, type RestoreSource } from '../qmp/vm-monitor.js';
import { builtGuestArtifacts } from '../util/paths.js';
import { createLogger } from '../util/log.js';

export interface VmRunOptions {
  config?: string;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  memory?: string;
  vcpus?: number;
  memoryDir?: string;
  name?: string;
  qmp?: string;
  incoming?: string;
  memoryPath?: string;
  memoryShare?: string;
  memoryReadonly?: boolean;
}

export interface VmRunEnd {
  reason: ExitReason | 'quit';
  detail: string;
}

/** Exit reasons that mean the guest (or a QMP client) ended the VM on purpose. */
export const CLEAN_EXITS = new Set(['reboot', 'poweroff', 'quit']);

type Incoming = { kind: 'defer' } | { kind: 'file'; dir: string } | { kind: 'live'; uri: MigrationUri };

function parseIncoming(value: string): Incoming {
  if (value === 'defer') return { kind: 'defer' };
  if (value.startsWith('file:') && path.isAbsolute(value.slice(5))) return { kind: 'file', dir: value.slice(5) };
  if (value.startsWith('tcp:') || value.startsWith('unix:')) {
    try {
      return { kind: 'live', uri: parseMigrationUri(value) };
    } catch (err) {
      throw new Error(`--incoming ${value}: ${(err as Error).message}`, { cause: err });
    }
  }
  throw new Error(`--incoming ${value}: expected file:/ABSOLUTE/DIR, tcp:HOST:PORT, unix:PATH or defer (then migrate-incoming over QMP)`);
}

/** The RAM file flags, checked together: which combinations QEMU's file backend means and Stencil runs. */
function memoryBackend(opts: VmRunOptions, incoming: boolean): { file?: string; shared: boolean } {
  const file = opts.memoryPath;
  if (file === undefined) {
    if (opts.memoryShare !== undefined || opts.memoryReadonly) throw new Error('--memory-share and --memory-readonly need --memory-path FILE');
    return { shared: false };
  }
  if (!path.isAbsolute(file)) throw new Error(`--memory-path ${file}: must be an absolute path`);
  const share = opts.memoryShare ?? 'off';  // QEMU's default
  if (share !== 'on' && share !== 'off') throw new Error(`--memory-share ${share}: expected on or off`);
  const shared = share === 'on';
  if (opts.memoryReadonly && shared) {
    throw new Error('--memory-readonly with --memory-share on would leave the guest no writable RAM; use --memory-share off (copy-on-write)');
  }
  if (!incoming && !shared) {
    throw new Error(`--memory-path ${file} with --memory-share off maps an existing file copy-on-write, which only a restore does (--incoming); a VM booting into the file needs --memory-share on`);
  }
  return { file, shared };
}

/** Command-line flags override the configuration file, which overrides the built-in defaults. */
export async function vmRun(opts: VmRunOptions): Promise<VmRunEnd> {
  const qmp = opts.qmp !== undefined ? parseQmpChardev(opts.qmp) : undefined;
  const incoming = opts.incoming !== undefined ? parseIncoming(opts.incoming) : undefined;
  if (incoming?.kind === 'defer' && !qmp) throw new Error('--incoming defer needs --qmp: the state arrives with migrate-incoming');
  const memory = memoryBackend(opts, incoming !== undefined);
  if (incoming?.kind === 'live' && memory.file) throw new Error('--memory-path does not apply to a live incoming migration: its RAM is created in --memory-dir');
  const memoryBytes = opts.memory !== undefined ? parseSize(opts.memory, '--memory') : undefined;
  const name = opts.name ?? `vm-${process.pid}`;
  confineVmmThreads(loadConfig({ path: opts.config }).config.hypervisor);
  // A restore takes vCPUs and memory size from the snapshot; given ones must match it.
  const restore = (source: RestoreSource) =>
    MicroVm.restore(name, {
      ...(source.kind === 'dir' ? { restoreFrom: source.dir } : { restoreState: source.state }),
      memoryPath: memory.file,
      memoryShared: memory.shared,
      vcpus: opts.vcpus,
      memoryBytes,
    });

  // A live migration's RAM is created here; vCPUs and memory size come from the stream (given
  // ones must match it).
  const incomingOptions = () => {
    const { hypervisor: cfg } = loadConfig({ path: opts.config }).config;
    const memoryDir = opts.memoryDir ?? cfg.memoryDir;
    fs.mkdirSync(memoryDir, { recursive: true, mode: 0o700 });
    return { memoryDir, memoryName: memoryFileName(name), restore: { vcpus: opts.vcpus, memoryBytes } };
  };
  const restoreIncoming: MonitorOptions['restoreIncoming'] = (stream) => MicroVm.fromIncoming(name, stream);

  let vm: MicroVm | undefined;
  if (!incoming) vm = bootVm(opts, name, memoryBytes, memory.file);
  else if (incoming.kind === 'file') vm = restore({ kind: 'dir', dir: incoming.dir });

  let current = vm;
  const attach = (v: MicroVm) => {
    current = v;
    v.console.pipe(process.stdout, { end: false });
  };
  const stdin = process.stdin;
  const forwardInput = (data: Buffer) => current?.writeConsole(data);
  let handle: QmpHandle | undefined;
  const stopOnSignal = () => void (handle ? handle.monitor.shutDown() : current?.destroy());
  // Without QMP, a live incoming migration that fails ends `vm run` with its error.
  let incomingFailed: ((err: Error) => void) | undefined;
  const incomingFailure = new Promise<never>((_, reject) => (incomingFailed = reject));
  incomingFailure.catch(() => {});
  const monitorOptions: MonitorOptions = {
    restore,
    onVm: attach,
    incomingOptions,
    restoreIncoming,
    logger: createLogger({ level: process.env.STENCIL_LOG_LEVEL ?? 'warn' }),
    onMigrationStatus: (status, error) => {
      if (!qmp && incoming?.kind === 'live' && (status === 'failed' || status === 'cancelled')) {
        incomingFailed!(new Error(`incoming migration ${status}${error ? `: ${error}` : ''}`));
      }
    },
  };
  try {
    if (qmp) {
      handle = await serveQmp(vm, qmp.path, monitorOptions);
    } else if (incoming?.kind === 'live') {
      const monitor = new MicroVmMonitor(undefined, monitorOptions);
      handle = { monitor, ended: monitor.ended, close: async () => {} };
    } else {
      attach(vm!);
    }
    if (incoming?.kind === 'live') handle!.monitor.migrateIncoming(incoming.uri, new Set());
    if (stdin.isTTY) stdin.setRawMode(true);
    stdin.on('data', forwardInput);
    process.once('SIGINT', stopOnSignal);
    process.once('SIGTERM', stopOnSignal);
    vm?.start();
    const end = handle ? await Promise.race([handle.ended, incomingFailure]) : { by: 'exit' as const, exit: await vm!.waitExit() };
    if (end.by === 'quit') return { reason: 'quit', detail: 'QMP quit' };
    return (await current?.destroy()) ?? end.exit;
  } catch (err) {
    await (handle ? handle.monitor.shutDown() : vm?.destroy());
    throw err;
  } finally {
    await handle?.close();
    stdin.off('data', forwardInput);
    if (stdin.isTTY) stdin.setRawMode(false);
    stdin.pause();
    process.off('SIGINT', stopOnSignal);
    process.off('SIGTERM', stopOnSignal);
  }
}

function bootVm(opts: VmRunOptions, name: string, memoryBytes: number | undefined, memoryFile: string | undefined): MicroVm {
  const { hypervisor: cfg } = loadConfig({ path: opts.config }).config;
  let kernel = opts.kernel ?? (cfg.kernel || undefined);
  let initrd = opts.initrd ?? (cfg.initrd || undefined);
  if (!kernel || !initrd) {
    const built = builtGuestArtifacts();
    kernel ??= built.kernel;
    initrd ??= built.initrd;
  }
  const memoryDir = opts.memoryDir ?? cfg.memoryDir;
  if (cfg.memoryBacking === 'tmpfs' && !memoryFile) fs.mkdirSync(memoryDir, { recursive: true, mode: 0o700 });
  const cmdline = [DEFAULT_CMDLINE, cfg.kernelParams, opts.cmdline].filter(Boolean).join(' ');
  return MicroVm.create(
    {
      name,
      vcpus: opts.vcpus ?? cfg.defaultVcpus,
      memoryBytes: memoryBytes ?? cfg.defaultMemory,
      kernel,
      initrd,
      cmdline,
      memoryDir,
      memoryBacking: cfg.memoryBacking,
      virtioRng: true,
    },
    { memoryFile },
  );
}
