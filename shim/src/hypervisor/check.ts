// `stencil check`: what this host can do, found by probing rather than guessing.
import fs from 'node:fs';
import { loadAddon } from './native.js';
import { builtGuestArtifacts, commandOnPath } from '../util/paths.js';

export interface CheckItem {
  name: string;
  ok: boolean;
  detail: string;
}

export interface CheckReport {
  items: CheckItem[];
  /** The local /dev/kvm can run a stock Linux guest at a usable speed. */
  kvmRunsStockGuests: boolean;
  /** Tests and the demo must run inside the emulated host (QEMU TCG, nested KVM). */
  needsEmulatedHost: boolean;
}

export function runChecks(memoryDir: string): CheckReport {
  const items: CheckItem[] = [];
  const probe = loadAddon().probeKvm();
  items.push({
    name: 'kvm',
    ok: probe.available,
    detail: probe.available ? `/dev/kvm opens, API version ${probe.apiVersion}` : probe.error,
  });
  items.push({
    name: 'kvm-stock-guests',
    ok: probe.runsStockGuests,
    detail: probe.runsStockGuests
      ? `guest kernel mode runs natively (${probe.detail})`
      : `this KVM cannot run stock guests: ${probe.detail || 'probe failed'}` +
        (readKvmModule() ? ` (hypervisor module: ${readKvmModule()})` : ''),
  });
  items.push(tmpfsCheck(memoryDir));
  items.push(guestArtifactsCheck());
  items.push(hostToolsCheck());
  const needsEmulatedHost = !probe.runsStockGuests;
  if (needsEmulatedHost) {
    const qemu = commandOnPath('qemu-system-x86_64');
    items.push({
      name: 'emulated-host',
      ok: qemu !== '',
      detail: qemu
        ? `VM tests and the demo will run inside an emulated host (QEMU TCG -cpu max, nested KVM) via ${qemu}`
        : 'qemu-system-x86_64 is missing: install Debian package qemu-system-x86 (make does this)',
    });
  }
  return { items, kvmRunsStockGuests: probe.runsStockGuests, needsEmulatedHost };
}

function readKvmModule(): string {
  for (const m of ['kvm_pvm', 'kvm_intel', 'kvm_amd']) if (fs.existsSync(`/sys/module/${m}`)) return m;
  return '';
}

function tmpfsCheck(dir: string): CheckItem {
  const parent = fs.existsSync(dir) ? dir : '/dev/shm';
  try {
    const st = fs.statfsSync(parent);
    const free = st.bavail * st.bsize;
    const isTmpfs = st.type === 0x01021994;
    return {
      name: 'memory-dir',
      ok: isTmpfs && free > 0,
      detail: `${parent}: ${isTmpfs ? 'tmpfs' : 'NOT tmpfs'}, ${(free / 2 ** 30).toFixed(1)} GiB free`,
    };
  } catch (err) {
    return { name: 'memory-dir', ok: false, detail: `${parent}: ${(err as Error).message}` };
  }
}

function guestArtifactsCheck(): CheckItem {
  try {
    const a = builtGuestArtifacts();
    const missing = [a.kernel, a.initrd].filter((f) => !fs.existsSync(f));
    return missing.length
      ? { name: 'guest-image', ok: false, detail: `missing ${missing.join(', ')} (run 'make guest')` }
      : { name: 'guest-image', ok: true, detail: `kernel ${a.kernel}, initramfs ${a.initrd}` };
  } catch (err) {
    return { name: 'guest-image', ok: false, detail: (err as Error).message };
  }
}

/** The util-linux programs the shim runs: nsenter (pod-network.ts's inNetns, for port forwarding's iptables). */
const SHIM_HOST_TOOLS = ['nsenter'];

function hostToolsCheck(): CheckItem {
  const missing = SHIM_HOST_TOOLS.filter((t) => !commandOnPath(t));
  return missing.length
    ? { name: 'host-tools', ok: false, detail: `missing ${missing.join(', ')} on PATH (Debian package util-linux)` }
    : { name: 'host-tools', ok: true, detail: SHIM_HOST_TOOLS.join(', ') };
}
