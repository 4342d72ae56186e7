// Pods from templates: a VmProvider (hypervisor/types.ts) that restores a pod's VM from the
// matching template, copy-on-write, instead of booting it. A pod whose VM no template matches
// (other vCPUs, memory, kernel, initramfs or command line) gets the configured miss policy:
// 'boot' cold-boots it, warns and counts the miss; 'fail' refuses the pod with an error saying
// what to do. A miss never builds a template: building costs a whole boot on the pod's critical
// path and a burst of pods would all wait for it, so templates are made ahead of time by an admin
// (`stencil pool init`, `stencil template create`), like Kata's `kata-ctl factory init`.
import { ErrorCode, type CodedError } from '../../../common/src/errors.js';
import { bootMicroVm, MicroVm } from '../hypervisor/microvm.js';
import type { VmProvider, VmSpec } from '../hypervisor/types.js';
import type { MissPolicy } from '../../../runtime-config/src/config.js';
import type { Logger } from '../util/log.js';
import type { TemplateSpec } from './template-spec.js';
import type { TemplateStore } from './template-store.js';

/** A pod refused because no template matches its VM and the policy is 'fail'. */
export class TemplateMissError extends Error implements CodedError {
  override name = 'TemplateMissError';
  readonly code = ErrorCode.FailedPrecondition;
}


/** What a template must share with a VM to stand in for it: everything but host-side paths. */
export function templateSpecOf(spec: VmSpec): TemplateSpec {
  if (!spec.initrd) throw new Error(`VM ${spec.name}: templates need an initramfs (the agent lives in it)`);
  const devices = [
    spec.virtioRng ? 'rng' : '',
    spec.vsock ? 'vsock' : '',
    spec.net ? 'net' : '',
    ...(spec.shares ?? []).map((s) => `9p:${s.tag}:${s.readOnly ? 'ro' : 'rw'}`),
    ...(spec.disks ?? []).map((d, i) => `blk${i}:${d.readOnly ? 'ro' : 'rw'}`),
  ].filter(Boolean);
  return { kernel: spec.kernel, initrd: spec.initrd, vcpus: spec.vcpus, memoryBytes: spec.memoryBytes, cmdline: spec.cmdline, devices: devices.join(',') };
}

export function describeTemplateSpec(t: TemplateSpec): string {
  return `${t.vcpus} vCPU, ${t.memoryBytes / 2 ** 20} MiB, kernel ${t.kernel}, initramfs ${t.initrd}, devices ${t.devices}`;
}

export interface TemplateProviderOptions {
  store: TemplateStore;
  onMiss: MissPolicy;
  logger?: Logger;
}

export function templateVmProvider({ store, onMiss, logger }: TemplateProviderOptions): VmProvider {
  return async (spec) => {
    // Disks are host files a template cannot know; such VMs always boot.
    const wanted = templateSpecOf(spec);
    const record = spec.disks?.length ? undefined : store.find(wanted);
    if (record) {
      const started = Date.now();
      const vm = MicroVm.restore(spec.name, {
        restoreFrom: record.dir,
        vsock: spec.vsock ? { guestCid: spec.vsock.guestCid, udsPath: spec.vsock.udsPath } : undefined,
        shares: (spec.shares ?? []).map((s) => ({ tag: s.tag, hostPath: s.hostPath })),
        net: spec.net ? { mac: spec.net.mac, backendFd: spec.net.backendFd } : undefined,
      });
      store.recordClone(record.key);
      logger?.info('pod VM cloned from a template', { vm: spec.name, template: record.key, restoreMs: Date.now() - started });
      return vm;
    }
    const misses = store.recordMiss(wanted);
    const what = `no template matches VM ${spec.name} (${describeTemplateSpec(wanted)})`;
    if (onMiss === 'fail') {
      throw new TemplateMissError(
        `${what} and [factory] on_miss = "fail": create one with \`stencil pool init\` (or \`stencil template create\`) for this configuration, or set on_miss = "boot"`,
      );
    }
    logger?.warn(`${what}: booting it from scratch ([factory] on_miss = "boot"; ${misses} misses so far; \`stencil pool init\` makes the template)`, { vm: spec.name });
    return bootMicroVm(spec);
  };
}
