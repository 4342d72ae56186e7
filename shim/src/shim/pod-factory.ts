// Starts a pod's VM from the runtime configuration (the one place the shim picks a Pod
// implementation): cloned from a matching template when [factory] is enabled, else booted.
import fs from 'node:fs';
import type { FactoryConfig, HypervisorConfig } from '../../../runtime-config/src/config.js';
import { podShapeFromConfig, podSizeForSandbox, TEMPLATE_ANNOTATION, templatesAllowed } from '../factory/pod-shape.js';
import { templateVmProvider } from '../factory/template-provider.js';
import { TemplateStore } from '../factory/template-store.js';
import { PodVm } from '../pod/pod-vm.js';
import type { Pod, PodIncoming, PodRestore } from '../pod/types.js';
import type { Logger } from '../util/log.js';

export interface PodBootOptions {
  /** Names the VM, its RAM file and the guest hostname. */
  vmName: string;
  stateDir: string;
  hypervisor: HypervisorConfig;
  factory: FactoryConfig;
  /** [runtime] agent_request_timeout_ms (PodVmOptions.callTimeoutMs). */
  agentRequestTimeoutMs?: number;
  /** [runtime] sandbox_pause (PodVmOptions.sandboxPause). */
  sandboxPause?: 'agent' | 'image';
  /** The pod's network namespace (CNI's), joined to the VM's NIC. */
  networkNamespace?: string;
  /** The pod's net.* sysctls, set with the guest's first setup (PodVmOptions.networkSysctls). */
  networkSysctls?: Record<string, string>;
  /** The first container's OCI annotations (CRI's sandbox resources size the VM). */
  annotations?: Record<string, string>;
  /** The VM of a checkpoint instead of a new one (PodVmOptions.restore). */
  restore?: PodRestore;
  /** The running VM another shim daemon migrates here (PodVmOptions.incoming). */
  incoming?: PodIncoming;
  logger: Logger;
}

export async function bootPod(options: PodBootOptions): Promise<Pod> {
  const { hypervisor: hv } = options;
  // The one shape function `stencil pool init` uses too: its templates are the ones looked up here.
  const shape = podShapeFromConfig(hv, podSizeForSandbox(hv, options.annotations));
  const fromTemplate = options.factory.enabled && templatesAllowed(options.annotations);
  if (options.factory.enabled && !fromTemplate) options.logger.info(`${TEMPLATE_ANNOTATION}=off: the pod's VM boots on its own, sharing no template pages`);
  // Like Kata's state dirs: created on first use (the tmpfs under it is the host's /dev/shm).
  if (hv.memoryBacking === 'tmpfs') fs.mkdirSync(hv.memoryDir, { recursive: true, mode: 0o700 });
  const started = Date.now();
  const pod = await PodVm.boot({
    id: options.vmName,
    stateDir: options.stateDir,
    ...shape,
    memoryDir: hv.memoryDir,
    memoryBacking: hv.memoryBacking,
    logger: options.logger,
    callTimeoutMs: options.agentRequestTimeoutMs,
    sandboxPause: options.sandboxPause,
    networkNamespace: options.networkNamespace,
    networkSysctls: options.networkSysctls,
    restore: options.restore,
    incoming: options.incoming,
    vmProvider: fromTemplate
      ? templateVmProvider({ store: new TemplateStore(options.factory.templateDir), onMiss: options.factory.onMiss, logger: options.logger })
      : undefined,
  });
  options.logger.info('pod VM ready', { vm: options.vmName, vcpus: shape.vcpus, memoryBytes: shape.memoryBytes, startMs: Date.now() - started });
  return pod;
}
