// The pod VM a configuration describes, in one place: the shim boots pods of this shape
// (shim/pod-factory.ts) and `stencil pool init` makes templates of it (cli/pool.ts), so a template
// made for a configuration is exactly the one that configuration's pods look up.
import os from 'node:os';
import type { HypervisorConfig } from '../../../runtime-config/src/config.js';
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

/** The template a pod of `shape` looks up: host-side paths play no part in it, so any will do. */
export function templateSpecOfShape(shape: PodVmShape): TemplateSpec {
  const anywhere = os.tmpdir();
  return templateSpecOf(
    podVmSpec(shape, { name: 'shape', memoryDir: anywhere, memoryBacking: 'tmpfs', sharedDir: anywhere, vsockPath: `${anywhere}/vsock`, guestCid: 3 }),
  );
}
