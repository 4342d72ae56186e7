// Pod networking without CRI: a network namespace made here the way CNI makes one (a veth pair,
// the pod's end `eth0` with an address and a default route), handed to PodVm as the pod's. The
// shim joins a tap to that veth with tc; the guest's NIC takes the veth's MAC, address and routes.
// Checked for a booted pod and for one cloned from a template (whose NIC was on no wire when the
// template was saved): the guest's view of eth0, TCP host -> pod and pod -> host, and that nothing
// is left in the namespace when the pod goes.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { haveStaticBusybox } from '../../shim/src/agent/testing/busybox-oci.js';
import type { PodVm } from '../../shim/src/pod/pod-vm.js';
import { TAP_NAME } from '../../shim/src/network/pod-network.js';
import { bootTestPod, printConsole, Rootfses, runContainer } from '../lib/pod.js';
import { cloningProvider, ensureTestTemplate } from '../lib/template.js';

const ip = (...args: string[]) => execFileSync('ip', args, { encoding: 'utf8' });

/** A namespace with a veth whose pod end is eth0 (10.251.N.2/24, default via .1). */
class TestNetns {
  readonly name: string;
  readonly path: string;
  readonly hostIf: string;
  readonly hostIp: string;
  readonly podIp: string;
  constructor(n: number) {
    const tag = `${process.pid % 10000}${n}`;
    this.name = `stencil-pn-${tag}`;
    this.path = `/var/run/netns/${this.name}`;
    this.hostIf = `stnpn${tag}`;
    this.hostIp = `10.251.${n}.1`;
    this.podIp = `10.251.${n}.2`;
    ip('netns', 'add', this.name);
    ip('link', 'add', this.hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', this.name);
    ip('addr', 'add', `${this.hostIp}/24`, 'dev', this.hostIf);
    ip('link', 'set', this.hostIf, 'up');
    ip('-n', this.name, 'addr', 'add', `${this.podIp}/24`, 'dev', 'eth0');
    ip('-n', this.name, 'link', 'set', 'eth0', 'up');
    ip('-n', this.name, 'link', 'set', 'lo', 'up');
    ip('-n', this.name, 'route', 'add', 'default', 'via', this.hostIp);
  }
  get mac(): string {
    return ip('-n', this.name, '-j', 'link', 'show', 'eth0').match(/"address":"([0-9a-f:]{17})"/)![1];
  }
  remove(): void {
    try {
      ip('netns', 'delete', this.name); // takes the veth (both ends) with it
    } catch {
      /* already gone */
    }
  }
}

/** Connects to host:port until it answers (the container's listener may not be up yet); its first line. */
async function fetchTcp(host: string, port: number, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await new Promise<string>((resolve, reject) => {
        const s = net.connect({ host, port, timeout: 5000 });
        let data = '';
        // One line is the whole reply (busybox nc may keep its side open after stdin's end).
        s.on('data', (d) => {
          data += d;
          if (data.includes('\n')) {
            s.destroy();
            resolve(data);
          }
        });
        s.on('end', () => resolve(data));
        s.on('timeout', () => s.destroy(new Error('timeout')));
        s.on('error', reject);
      });
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`nothing answered on ${host}:${port} within ${timeoutMs} ms: ${(err as Error).message}`, { cause: err });
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

for (const mode of ['booted', 'cloned from a template'] as const) {
  describe(`pod network (${mode})`, { skip: haveStaticBusybox() ? undefined : 'busybox-static is not installed' }, () => {
    let netns: TestNetns;
    let pod: PodVm | undefined;
    let rootfses: Rootfses;
    let n = 0;
    // As CRI's specs do: the container joins the pod's network namespace by path.
    const joinNetns = (spec: Record<string, unknown>) => {
      const linux = spec.linux as { namespaces: Array<{ type: string; path?: string }> };
      linux.namespaces.push({ type: 'network', path: netns.path });
    };
    const run = (args: string[]) => runContainer(pod!, `net-${++n}`, rootfses.make(), { args }, undefined, joinNetns);

    before(async () => {
      rootfses = new Rootfses();
      netns = new TestNetns(mode === 'booted' ? 1 : 2);
      const overrides = mode === 'booted' ? {} : { vmProvider: cloningProvider() };
      if (mode !== 'booted') await ensureTestTemplate();
      pod = await bootTestPod('net', { ...overrides, networkNamespace: netns.path });
    });

    after(async () => {
      try {
        await pod?.shutdown();
      } finally {
        rootfses.remove();
        netns.remove();
      }
    });

    it("gives the guest's eth0 the veth's MAC, address and default route", async () => {
      try {
        const r = await run(['sh', '-c', 'cat /sys/class/net/eth0/address; ip -4 addr show dev eth0; ip route']);
        const out = r.stdout.toString();
        assert.equal(r.exit.exitStatus, 0, out + r.stderr.toString());
        assert.equal(out.split('\n')[0], netns.mac, out);
        assert.match(out, new RegExp(`inet ${netns.podIp.replace(/\./g, '\\.')}/24`), out);
        assert.match(out, new RegExp(`default via ${netns.hostIp.replace(/\./g, '\\.')} dev eth0`), out);
      } catch (err) {
        printConsole(pod);
        throw err;
      }
    });

    it('carries TCP both ways: the host reaches a listener in the pod, the pod reaches the host', async () => {
      // host -> pod: a container serving one line on 8080
      const id = `server-${++n}`;
      const rootfs = rootfses.make();
      const serving = runContainer(pod!, id, rootfs, { args: ['sh', '-c', 'echo hello-from-the-pod | nc -l -p 8080'] }, undefined, joinNetns);
      // Both awaited at once: a container that fails (its VM gone, say) fails the test with its own error at once.
      const [reply, served] = await Promise.all([fetchTcp(netns.podIp, 8080), serving]);
      assert.equal(reply.trim(), 'hello-from-the-pod');
      assert.equal(served.exit.exitStatus, 0);

      // pod -> host: the test listens on the veth's host end
      let received: (line: string) => void = () => {};
      const got = new Promise<string>((resolve) => (received = resolve));
      const connections = new Set<net.Socket>();
      const server = net.createServer((s) => {
        connections.add(s);
        let data = '';
        s.on('data', (d) => {
          data += d;
          if (!data.includes('\n')) return;
          s.end(); // busybox nc exits once the other side closes
          received(data);
        });
      });
      server.listen(9090, netns.hostIp);
      try {
        const r = await run(['sh', '-c', `echo hello-from-the-guest | nc ${netns.hostIp} 9090`]);
        assert.equal(r.exit.exitStatus, 0, r.stderr.toString());
        assert.equal((await got).trim(), 'hello-from-the-guest');
      } finally {
        // Also when the container failed: an open server or connection would keep this file's process alive.
        server.close();
        for (const c of connections) c.destroy();
      }
    });

    it("leaves the namespace as CNI made it when the pod goes (no tap, no redirect)", async () => {
      await pod!.shutdown();
      pod = undefined;
      const links = ip('-n', netns.name, '-o', 'link', 'show');
      assert.doesNotMatch(links, new RegExp(TAP_NAME), links);
      const qdiscs = execFileSync('tc', ['-n', netns.name, 'qdisc', 'show', 'dev', 'eth0'], { encoding: 'utf8' });
      assert.doesNotMatch(qdiscs, /ingress/, qdiscs);
    });
  });
}
