// The VM a pod runs in, as one function of the pod's settings: pods and the templates they are
// cloned from must describe their VMs identically (same command line, same devices), or a
// template would never match (factory/template-spec.ts keys templates on exactly this).
import { DEFAULT_AGENT_PORT } from '../agent/vsock.js';
import { DEFAULT_CMDLINE } from '../hypervisor/microvm.js';
import type { NetSpec, VmSpec } from '../hypervisor/types.js';

/** The 9p mount tag of the pod's shared directory. */
export const SHARE_TAG = 'stencil-shared';

/** What makes two pods' VMs interchangeable: the same guest, size and agent port. */
export interface PodVmShape {
  kernel: string;
  initrd: string;
  vcpus: number;
  memoryBytes: number;
  /** Extra kernel command-line parameters, appended to the defaults. */
  kernelParams?: string;
  /** The agent's vsock port; default 1024. */
  agentPort?: number;
}

/** Where one VM's host-side pieces are; these may differ between a template and its clones. */
export interface PodVmPlacement {
  name: string;
  memoryDir: string;
  memoryBacking: 'tmpfs' | 'memfd';
  /** Host directory behind the guest's SHARE_TAG. */
  sharedDir: string;
  vsockPath: string;
  guestCid: number;
  /** The pod's tap and its MAC; none: the NIC is on no wire (templates, pods without a network). */
  net?: NetSpec;
}

export function podVmSpec(shape: PodVmShape, at: PodVmPlacement): VmSpec {
  const agentPort = shape.agentPort ?? DEFAULT_AGENT_PORT;
  return {
    name: at.name,
    vcpus: shape.vcpus,
    memoryBytes: shape.memoryBytes,
    kernel: shape.kernel,
    initrd: shape.initrd,
    cmdline: [DEFAULT_CMDLINE, 'stencil_agent=1', agentPort !== DEFAULT_AGENT_PORT ? `stencil_agent_port=${agentPort}` : '', shape.kernelParams ?? '']
      .filter(Boolean)
      .join(' '),
    memoryDir: at.memoryDir,
    memoryBacking: at.memoryBacking,
    virtioRng: true,
    shares: [{ tag: SHARE_TAG, hostPath: at.sharedDir, readOnly: false }],
    vsock: { guestCid: at.guestCid, udsPath: at.vsockPath },
    // Every pod VM has its NIC, wired or not, so one template serves pods with and without a network.
    net: at.net ?? {},
  };
}
