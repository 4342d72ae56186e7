// Test support (not used by the runtime): real templates made natively, from a tiny guest that even
// kvm_pvm runs, for tests of what handles templates (the store, the CLI) without a Linux guest.
import { MicroVm } from '../../hypervisor/microvm.js';
import { tinyElfKernel } from '../../hypervisor/testing/tiny-kernel.js';
import type { TemplateBuilder } from '../template-store.js';

// mov ebx, 0x200000; 1: inc qword [rbx]; jmp 1b -- keeps a vCPU busy writing one page.
const COUNTER_LOOP = [0xbb, 0x00, 0x00, 0x20, 0x00, 0x48, 0xff, 0x03, 0xeb, 0xfb];

/** A vmlinux whose guest counts in memory forever (loaded at 16 MiB: give it more RAM than that). */
export const tinyCountingKernel = () => tinyElfKernel(COUNTER_LOOP);

/**
 * Builds a template the way buildPodTemplate does (boot, pause, save into the work directory) but
 * from the spec's kernel alone: the tiny guest has no use for an initramfs and runs no agent.
 */
export const tinyTemplateBuilder: TemplateBuilder = async (workDir, inputs, progress) => {
  const vm = MicroVm.create({
    name: 'tiny-template',
    vcpus: inputs.vcpus,
    memoryBytes: inputs.memoryBytes,
    kernel: inputs.kernel,
    cmdline: inputs.cmdline,
    memoryDir: workDir,
    memoryBacking: 'tmpfs',
    virtioRng: true,
  });
  try {
    progress('booting the template VM');
    vm.start();
    await new Promise((resolve) => setTimeout(resolve, 20));
    progress('pausing');
    await vm.pause();
    progress('saving');
    vm.saveSnapshot(workDir);
  } finally {
    await vm.destroy();
  }
};
