// The configuration a test's private containerd starts with (lib/containerd.ts): the base
// config.toml and the [timeouts] for slow hosts. CRI's part is lib/cri-host.ts's criConfigToml.
import type { ContainerdVersion } from './containerd.js';

/**
 * containerd's [timeouts] for hosts 10-40x slower than metal, as under TCG, where a shim's cleanup
 * (its `delete` action) takes seconds and a busy shim may miss containerd's 5 s to answer after a
 * restart (containerd would take it for dead).
 */
export function slowHostTimeouts({ shimLoad = '30s' } = {}): string {
  return `[timeouts]\n  "io.containerd.timeout.shim.cleanup" = "30s"\n  "io.containerd.timeout.shim.load" = "${shimLoad}"\n`;
}
export const SLOW_HOST_TIMEOUTS = slowHostTimeouts();

export function configToml(o: {
  version: ContainerdVersion;
  root: string;
  state: string;
  address: string;
  ttrpcAddress: string;
  opt: string;
  logLevel: string;
  cri: boolean;
}): string {
  // CRI (and what only CRI needs) is off unless asked for: the tests drive containerd with ctr.
  // NRI stays off either way (it would listen on the host-wide /var/run/nri/nri.sock).
  const disabled = o.cri
    ? o.version === '1.6'
      ? []
      : ['io.containerd.nri.v1.nri']
    : o.version === '1.6'
      ? ['io.containerd.grpc.v1.cri']
      : [
          'io.containerd.grpc.v1.cri',
          'io.containerd.cri.v1.images',
          'io.containerd.cri.v1.runtime',
          'io.containerd.podsandbox.controller.v1.podsandbox',
          'io.containerd.grpc.v1.sandbox-controllers',
          'io.containerd.nri.v1.nri',
        ];
  const q = (s: string) => JSON.stringify(s);
  return [
    `version = ${o.version === '1.6' ? 2 : 3}`,
    `root = ${q(o.root)}`,
    `state = ${q(o.state)}`,
    `disabled_plugins = [${disabled.map(q).join(', ')}]`,
    '',
    '[grpc]',
    `  address = ${q(o.address)}`,
    '[ttrpc]',
    `  address = ${q(o.ttrpcAddress)}`,
    '[debug]',
    `  level = ${q(o.logLevel)}`,
    '',
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${q(o.opt)}`,
    '',
  ].join('\n');
}
