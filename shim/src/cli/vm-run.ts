// `stencil vm run`: boot a VM with its console on this terminal; exit when the guest does.
import fs from 'node:fs';
import { loadConfig } from '../../../runtime-config/src/config.js';
import { DEFAULT_CMDLINE, MicroVm } from '../hypervisor/microvm.js';
import type { VmExit } from '../hypervisor/types.js';
import { builtGuestArtifacts } from '../util/paths.js';
import { parseSize } from '../../../runtime-config/src/size.js';

export interface VmRunOptions {
  config?: string;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  memory?: string;
  vcpus?: number;
  memoryDir?: string;
  name?: string;
}

/** Exit reasons that mean the guest shut itself down on purpose. */
export const CLEAN_EXITS = new Set(['reboot', 'poweroff']);

/** Command-line flags override the configuration file, which overrides the built-in defaults. */
export async function vmRun(opts: VmRunOptions): Promise<VmExit> {
  const { hypervisor: cfg } = loadConfig({ path: opts.config }).config;
  let kernel = opts.kernel ?? (cfg.kernel || undefined);
  let initrd = opts.initrd ?? (cfg.initrd || undefined);
  if (!kernel || !initrd) {
    const built = builtGuestArtifacts();
    kernel ??= built.kernel;
    initrd ??= built.initrd;
  }
  const memoryDir = opts.memoryDir ?? cfg.memoryDir;
  if (cfg.memoryBacking === 'tmpfs') fs.mkdirSync(memoryDir, { recursive: true, mode: 0o700 });
  const cmdline = [DEFAULT_CMDLINE, cfg.kernelParams, opts.cmdline].filter(Boolean).join(' ');
  const vm = MicroVm.create({
    name: opts.name ?? `vm-${process.pid}`,
    vcpus: opts.vcpus ?? cfg.defaultVcpus,
    memoryBytes: opts.memory !== undefined ? parseSize(opts.memory, '--memory') : cfg.defaultMemory,
    kernel,
    initrd,
    cmdline,
    memoryDir,
    memoryBacking: cfg.memoryBacking,
    virtioRng: true,
  });
  vm.console.pipe(process.stdout, { end: false });
  const stdin = process.stdin;
  const forwardInput = (data: Buffer) => vm.writeConsole(data);
  if (stdin.isTTY) stdin.setRawMode(true);
  stdin.on('data', forwardInput);
  const stopOnSignal = () => void vm.destroy();
  process.once('SIGINT', stopOnSignal);
  process.once('SIGTERM', stopOnSignal);
  try {
    vm.start();
    await vm.waitExit();
    return await vm.destroy();
  } finally {
    stdin.off('data', forwardInput);
    if (stdin.isTTY) stdin.setRawMode(false);
    stdin.pause();
    process.off('SIGINT', stopOnSignal);
    process.off('SIGTERM', stopOnSignal);
  }
}
