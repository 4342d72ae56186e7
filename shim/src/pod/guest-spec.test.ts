import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { guestSpec, hostVolumes, pauseHolder, podNetworkSysctls } from './guest-spec.js';

// The shape of a CRI app container's spec (containerd 1.6/2.1): the pod's namespaces by path,
// CRI's files and a volume as bind mounts of host paths.
function criAppSpec(): Record<string, unknown> {
  return {
    ociVersion: '1.2.0',
    root: { path: 'rootfs' },
    linux: {
      namespaces: [
        { type: 'pid' },
        { type: 'ipc', path: '/proc/4242/ns/ipc' },
        { type: 'uts', path: '/proc/4242/ns/uts' },
        { type: 'mount' },
        { type: 'network', path: '/var/run/netns/cni-1234' },
      ],
    },
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/etc/hosts', type: 'bind', source: '/var/lib/containerd/sandboxes/x/hosts', options: ['rbind', 'rprivate', 'rw'] },
      { destination: '/dev/shm', type: 'bind', source: '/run/containerd/sandboxes/x/shm', options: ['rbind', 'ro'] },
      { destination: '/data', type: 'bind', source: '/srv/data', options: ['rbind', 'ro'] },
      { destination: '/relative', type: 'bind', source: 'relative/path', options: ['rbind'] },
    ],
  };
}

describe('guest spec', () => {
  it('lists the host paths the container binds, with their read-only flag, but not /dev/shm or relative sources', () => {
    assert.deepEqual(hostVolumes(criAppSpec()), [
      { index: 1, source: '/var/lib/containerd/sandboxes/x/hosts', destination: '/etc/hosts', readOnly: false },
      { index: 3, source: '/srv/data', destination: '/data', readOnly: true },
    ]);
  });

  it("drops the host's network namespace, joins the sandbox's other namespaces by guest pid, and rewrites shared sources", () => {
    const spec = criAppSpec();
    const out = guestSpec(spec, { rootfs: '/run/stencil/shared/c1/rootfs', sandboxPid: 17, ociVersion: '1.1.0', volumes: new Map([[1, '/g/hosts'], [3, '/g/data']]) });
    assert.deepEqual((out.linux as { namespaces: unknown[] }).namespaces, [
      { type: 'pid' },
      { type: 'ipc', path: '/proc/17/ns/ipc' },
      { type: 'uts', path: '/proc/17/ns/uts' },
      { type: 'mount' },
    ]);
    const mounts = out.mounts as Array<{ destination: string; source: string; type: string; options?: string[] }>;
    assert.equal(mounts[1].source, '/g/hosts');
    assert.deepEqual(mounts[3].options, ['rbind', 'ro'], 'flags stay');
    assert.equal(mounts[3].source, '/g/data');
    assert.equal(mounts[2].type, 'tmpfs', "/dev/shm is the guest's own tmpfs");
    assert.equal(out.ociVersion, '1.1.0');
    assert.deepEqual(out.root, { path: '/run/stencil/shared/c1/rootfs' });
    assert.equal((spec.root as { path: string }).path, 'rootfs', 'the input is not changed');
  });

  it("moves the net.* sysctls of a pod netns joined by path to the VM, keeping the others in the spec", () => {
    // containerd 2.x gives every sandbox this sysctl; crun would refuse it without a new netns.
    const spec = criAppSpec();
    (spec.linux as Record<string, unknown>).sysctl = { 'net.ipv4.ip_unprivileged_port_start': '0', 'kernel.shm_rmid_forced': '1', 'net/ipv4/conf/eth0.5/rp_filter': '2' };
    assert.deepEqual(podNetworkSysctls(spec), { 'net.ipv4.ip_unprivileged_port_start': '0', 'net/ipv4/conf/eth0.5/rp_filter': '2' });
    const out = guestSpec(spec, { rootfs: '/r', sandboxPid: 3, ociVersion: '1.1.0', volumes: new Map() });
    assert.deepEqual((out.linux as { sysctl: unknown }).sysctl, { 'kernel.shm_rmid_forced': '1' });
    // A container with a network namespace of its own (not the pod's) keeps its sysctls.
    const own = { linux: { namespaces: [{ type: 'network' }], sysctl: { 'net.ipv4.ip_forward': '1' } } };
    assert.deepEqual(podNetworkSysctls(own), {});
    assert.deepEqual((guestSpec(own, { rootfs: '/r', ociVersion: '1.1.0', volumes: new Map() }).linux as { sysctl: unknown }).sysctl, { 'net.ipv4.ip_forward': '1' });
  });

  it('makes namespaces given by path new ones while the pod has no sandbox container', () => {
    const out = guestSpec(criAppSpec(), { rootfs: '/r', ociVersion: '1.1.0', volumes: new Map() });
    assert.deepEqual((out.linux as { namespaces: unknown[] }).namespaces, [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }]);
  });
});

// The shape of containerd's CRI sandbox spec (1.6/2.1): the pause image's /pause, new namespaces
// but the pod's network one by path, the pod hostname and a cgroup path.
function criSandboxSpec(patch: { args?: string[]; cgroupsPath?: string; namespaces?: unknown[]; terminal?: boolean; type?: string } = {}): Record<string, unknown> {
  return {
    ociVersion: '1.2.0',
    hostname: 'pod-a',
    annotations: { 'io.kubernetes.cri.container-type': patch.type ?? 'sandbox', 'io.kubernetes.cri.sandbox-id': 'sb1' },
    process: { args: patch.args ?? ['/pause'], terminal: patch.terminal ?? false },
    linux: {
      cgroupsPath: patch.cgroupsPath,
      namespaces: patch.namespaces ?? [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network', path: '/var/run/netns/cni-1' }],
    },
  };
}

describe('pauseHolder', () => {
  it("holds a CRI sandbox running /pause with the agent's pause process: its new namespaces, hostname and cgroup", () => {
    assert.deepEqual(pauseHolder('sb1', criSandboxSpec({ cgroupsPath: '/kubepods/besteffort/pod1/sb1' })), {
      namespaces: ['pid', 'ipc', 'uts', 'mount'],
      hostname: 'pod-a',
      cgroup: '/kubepods/besteffort/pod1/sb1',
    });
    // containerd's path with no cgroup parent is the bare id, under crun's (the agent's) root cgroup.
    assert.equal(pauseHolder('sb1', criSandboxSpec({ cgroupsPath: 'sb1' }))?.cgroup, '/sb1');
    assert.equal(pauseHolder('sb1', criSandboxSpec())?.cgroup, '/sb1');
    assert.deepEqual(pauseHolder('sb1', criSandboxSpec({ namespaces: [{ type: 'cgroup' }, { type: 'uts' }] }))?.namespaces, ['cgroup', 'uts']);
  });

  it('leaves to crun what the pause process would not honour the same way', () => {
    const crun: Array<[string, Record<string, unknown>]> = [
      ['an app container', criSandboxSpec({ type: 'container' })],
      ['a spec that is not CRI', { ...criSandboxSpec(), annotations: {} }],
      ['another command', criSandboxSpec({ args: ['/pause', '-v'] })],
      ['another binary', criSandboxSpec({ args: ['/bin/sleep'] })],
      ['a terminal', criSandboxSpec({ terminal: true })],
      ['a user namespace', criSandboxSpec({ namespaces: [{ type: 'user' }] })],
      ['a network namespace of its own', criSandboxSpec({ namespaces: [{ type: 'network' }] })],
      ['an IPC namespace joined by path', criSandboxSpec({ namespaces: [{ type: 'ipc', path: '/proc/1/ns/ipc' }] })],
      ["systemd's slice path", criSandboxSpec({ cgroupsPath: 'kubepods-besteffort-pod1.slice:cri-containerd:sb1' })],
      ['a cgroup path going up', criSandboxSpec({ cgroupsPath: '/kubepods/../sb1' })],
      ['a cgroup path with an empty component', criSandboxSpec({ cgroupsPath: '/kubepods//sb1' })],
    ];
    for (const [what, spec] of crun) assert.equal(pauseHolder('sb1', spec), undefined, what);
  });
});
