// The pod VM a configuration describes, in one place: the shim boots pods of this shape
// (shim/pod-factory.ts) and `stencil pool init` makes templates of it (cli/pool.ts), so a template
// made for a configuration is exactly the one that configuration's pods look up.
import os from 'node:os';
import type { HypervisorConfig } from '../../../runtime-config/src/config.js';
import { PodVmError } from '../pod/pod-vm.js';
import { podVmSpec, type PodVmShape } from '../pod/vm-spec.js';
import { builtGuestArtifacts } from '../util/paths.js';
import type { TemplateSpec } from './template-spec.js';
import { templateSpecOf } from './template-provider.js';

/** A pod size other than the configuration's default_vcpus/default_memory. */
export interface PodSize {
  vcpus?: number;
  memoryBytes?: number;
}

/**
 * The shape of the pod VMs `hv` describes: its kernel and initramfs ("" means the ones `make guest`
 * built, build/guest.json), kernel_params, and default_vcpus/default_memory unless `size` says
 * otherwise. The agent port is the default one, as in every pod the shim starts.
 */
export function podShapeFromConfig(hv: HypervisorConfig, size: PodSize = {}): PodVmShape {
  const built = !hv.kernel || !hv.initrd ? builtGuestArtifacts() : undefined;
  return {
    kernel: hv.kernel || built!.kernel,
    initrd: hv.initrd || built!.initrd,
    vcpus: size.vcpus ?? hv.defaultVcpus,
    memoryBytes: size.memoryBytes ?? hv.defaultMemory,
    kernelParams: hv.kernelParams,
  };
}

/** containerd's CRI annotations on the sandbox spec: the pod's resources (kubelet's sums of its containers'). */
export const SANDBOX_CPU_PERIOD = 'io.kubernetes.cri.sandbox-cpu-period';
export const SANDBOX_CPU_QUOTA = 'io.kubernetes.cri.sandbox-cpu-quota';
export const SANDBOX_MEMORY = 'io.kubernetes.cri.sandbox-memory';
const MEMORY_ALIGN = 2 * 2 ** 20;

/**
 * The size of a CRI pod's VM, as Kata's static sandbox sizing does it: the configured default
 * (room for the guest itself) plus what the pod's containers are limited to, from the sandbox
 * annotations: ceil(quota / period) vCPUs and the memory limit (rounded up to 2 MiB). No (or
 * unlimited) annotations: the default size. A bad value is an error naming the annotation.
 */
export function podSizeForSandbox(hv: HypervisorConfig, annotations: Record<string, string> = {}): PodSize {
  const num = (key: string): number => {
    const v = annotations[key];
    if (v === undefined || v === '') return 0;
    if (!/^-?\d+$/.test(v)) throw new PodVmError('INVALID_ARGUMENT', `sandbox annotation ${key} must be an integer, got ${JSON.stringify(v)}`);
    return Math.max(0, Number(v)); // -1: unlimited
  };
  const period = num(SANDBOX_CPU_PERIOD);
  const quota = num(SANDBOX_CPU_QUOTA);
  const memory = num(SANDBOX_MEMORY);
  const size: PodSize = {};
  if (period > 0 && quota > 0) size.vcpus = hv.defaultVcpus + Math.ceil(quota / period);
  if (memory > 0) size.memoryBytes = hv.defaultMemory + Math.ceil(memory / MEMORY_ALIGN) * MEMORY_ALIGN;
  return size;
}

/**
 * The pod annotation that keeps a pod off templates: `off` boots the pod's VM on its own, sharing
 * no RAM page with any other pod (templates share the pages a clone has not written, which opens
 * the shared-page timing side channel of the CVE-2015-2877 class between pods of one template);
 * `on` or none follows [factory]. Kubernetes passes it once containerd's runtime lists it in
 * `pod_annotations`; `ctr run --annotation io.stencil.template=off` sets it directly.
 */
export const TEMPLATE_ANNOTATION = 'io.stencil.template';

/** Whether the pod may be cloned from a template; a value other than on/off is an error naming it. */
export function templatesAllowed(annotations: Record<string, string> = {}): boolean {
  const v = annotations[TEMPLATE_ANNOTATION];
  if (v === undefined || v === '' || v === 'on') return true;
  if (v === 'off') return false;
  throw new PodVmError('INVALID_ARGUMENT', `annotation ${TEMPLATE_ANNOTATION} must be "on" or "off", got ${JSON.stringify(v)}`);
}

/** The template a pod of `shape` looks up: host-side paths play no part in it, so any will do. */
export function templateSpecOfShape(shape: PodVmShape): TemplateSpec {
  const anywhere = os.tmpdir();
  return templateSpecOf(
    podVmSpec(shape, { name: 'shape', memoryDir: anywhere, memoryBacking: 'tmpfs', sharedDir: anywhere, vsockPath: `${anywhere}/vsock`, guestCid: 3 }),
  );
}
