// `stencil vm run`: boot a VM with its console on this terminal; exit when the guest does.
import fs from 'node:fs';
import { DEFAULT_CMDLINE, MicroVm } from '../hypervisor/microvm.js';
import type { VmExit } from '../hypervisor/types.js';
import { builtGuestArtifacts } from '../util/paths.js';
import { parseSize } from '../util/size.js';

export interface VmRunOptions {
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  memory: string;
  vcpus: number;
  memoryDir: string;
  name?: string;
}

/** Exit reasons that mean the guest shut itself down on purpose. */
export const CLEAN_EXITS = new Set(['reboot', 'poweroff']);

export async function vmRun(opts: VmRunOptions): Promise<VmExit> {
  let { kernel, initrd } = opts;
  if (!kernel || !initrd) {
    const built = builtGuestArtifacts();
    kernel ??= built.kernel;
    initrd ??= built.initrd;
  }
  fs.mkdirSync(opts.memoryDir, { recursive: true, mode: 0o700 });
  const vm = MicroVm.create({
    name: opts.name ?? `vm-${process.pid}`,
    vcpus: opts.vcpus,
    memoryBytes: parseSize(opts.memory, '--memory'),
    kernel,
    initrd,
    cmdline: opts.cmdline ? `${DEFAULT_CMDLINE} ${opts.cmdline}` : DEFAULT_CMDLINE,
    memoryDir: opts.memoryDir,
    memoryBacking: 'tmpfs',
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
