// Kubernetes-style pods through containerd's CRI (issue 11), on the containerd versions in
// $STENCIL_CRI_VERSIONS (default 1.6 and 2.1), for each runtime handler in $STENCIL_CRI_HANDLERS
// (default "runc", the reference; "stencil" adds Stencil's shim): the calls kubelet makes (lib/cri.ts), the pod network (CNI bridge, portmap),
// exec, logs, stop with a grace period, volumes, DNS, stats, 20 pods at once, and after each
// scenario nothing left behind (leaks(): no shim, mount, netns, veth, CNI state, iptables rule).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { ContainerdInstance, CRI_NAMESPACE } from '../lib/containerd.js';
import { CRI_TIMEOUT_SCALE, type CriClient } from '../lib/cri.js';
import {
  bundleSpec,
  containerConfig,
  criHandlers,
  criStartOptions,
  criVersions,
  execUntilOk,
  parseCriLog,
  podConfig,
  removePod,
  runPod,
  waitContainerState,
  waitFor,
} from '../lib/cri-pods.js';
import { criHostProblem, freePort } from '../lib/cri-host.js';
import { StreamSession } from '../lib/cri-stream.js';
import { ensureShimTemplate, SHIM_TEMPLATE_CONFIG } from '../lib/template.js';
import { logOffset, logSince, podMigrate, podStatus, vmmFaultScenario } from '../lib/ctr-tasks.js';
import { QmpClient } from '../lib/qmp-client.js';

const HANDLERS = criHandlers();
/** A kernel without bridges or veths cannot have pods; said once, and every scenario is skipped. */
const HOST_PROBLEM = criHostProblem();
if (HOST_PROBLEM) process.stdout.write(`# CRI tests skipped: ${HOST_PROBLEM}\n`);
const SLEEP = ['sh', '-c', 'echo started; exec sleep 100000'];
const MIB = 2 ** 20;
/**
 * `make test` leaves Stencil's 20-pods-at-once scenario to `make cri-test` by setting this to the
 * reason: under that load in the emulated host one clone once triple-faulted during its setup, cause
 * not found yet (integration-tests/README.md). Printed as the skip reason.
 */
const SKIP_STENCIL_PARALLEL = process.env.STENCIL_CRI_SKIP_STENCIL_PARALLEL || undefined;
/** A pod's resources (kubelet's sum of its one container's limits): half a CPU, 128 MiB. */
const SIZED = { cpuPeriod: 100_000, cpuQuota: 50_000, memoryLimitInBytes: 128 * MIB };
/** The VM Stencil gives such a pod: the default 1 vCPU and 256 MiB, plus ceil(0.5) vCPU and 128 MiB. */
const SIZED_VM = { vcpus: 2, memoryBytes: 384 * MIB };
/** A persistent TCP server answering every connection with `text` (busybox nc). */
const serve = (port: number, text: string) => ['nc', '-ll', '-p', String(port), '-e', 'echo', text];

/** TCP connect from this process; resolves with everything the server sent before closing. */
function tcpRead(host: string, port: number, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    let got = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`${host}:${port}: no close within ${timeoutMs} ms (got ${JSON.stringify(got)})`));
    }, timeoutMs);
    s.on('data', (d) => (got += d.toString()));
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${host}:${port}: ${e.message}`));
    });
    s.once('close', () => {
      clearTimeout(timer);
      resolve(got);
    });
  });
}

/** tcpRead, again while the connection is refused or reset (a server starting, a pod's VM moving), for up to 20 s (times CRI_TIMEOUT_SCALE). */
async function tcpReadUntilOk(host: string, port: number): Promise<string> {
  const deadline = Date.now() + 20_000 * CRI_TIMEOUT_SCALE;
  for (;;) {
    try {
      const text = await tcpRead(host, port);
      if (text !== '' || Date.now() > deadline) return text;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

function inSubnet(ip: string, subnet: string): boolean {
  const [base, bits] = subnet.split('/');
  const n = (a: string) => a.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
  const mask = 2 ** 32 - 2 ** (32 - Number(bits));
  return net.isIPv4(ip) && Math.floor(n(ip) / 2 ** (32 - Number(bits))) === Math.floor((n(base) & mask) / 2 ** (32 - Number(bits)));
}

for (const version of criVersions()) {
  describe(`containerd ${version} CRI`, { skip: HOST_PROBLEM }, () => {
    let c: ContainerdInstance;
    let cri: CriClient;
    let image: string;
    let logRoot: string;
    /** leaks() once empty, or what is still there after ms (times CRI_TIMEOUT_SCALE). */
    const leftovers = (ms = 10_000) => c.waitNoLeaks(ms * CRI_TIMEOUT_SCALE);

    before(async () => {
      // Stencil's pods are clones of the shim's template (a miss fails the pod, so a pass proves it).
      const configPaths: Record<string, string> = {};
      if (HANDLERS.includes('stencil')) {
        await ensureShimTemplate();
        // The resources scenario's pods: a miss fails them, so passing proves the sized lookup.
        await ensureShimTemplate(undefined, SIZED_VM);
        configPaths.stencil = SHIM_TEMPLATE_CONFIG();
      }
      c = await ContainerdInstance.start({ version, ...criStartOptions(HANDLERS, configPaths) });
      image = await c.importCriImages();
      cri = c.cri();
      logRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-cri-logs-'));
      const net = c.criNetwork!;
      process.stdout.write(`# containerd ${c.packageVersion} at ${c.dir}, snapshotter ${c.snapshotter}, network ${net.name} ${net.subnet} on ${net.bridge}, handlers ${HANDLERS.join(', ')}\n`);
    });
    // A failed scenario's pods must not fail the next ones: remove whatever is left (every
    // scenario removes its own pods and checks, so only a failed one leaves any). A Stencil pod
    // that cannot be stopped (its guest failing the kill) has its shim daemon killed first, as
    // containerd's own recovery from a dead shim then removes it; said loudly.
    afterEach(async () => {
      const left = await cri.listPodSandbox();
      await Promise.all(left.map(async (p) => {
        try {
          await removePod(cri, p.id);
        } catch (err) {
          if (p.runtimeHandler !== 'stencil') throw err;
          const { pid } = await podStatus(c, p.id, CRI_NAMESPACE);
          process.stdout.write(`# afterEach: pod ${p.metadata?.name} (${p.id.slice(0, 12)}) left by the failed scenario could not be removed (${(err as Error).message.slice(0, 300)}): killing its shim daemon ${pid} and removing it again\n`);
          process.kill(pid, 'SIGKILL');
          await removePod(cri, p.id);
        }
      }));
    });
    after(async () => {
      const report = await c?.stop();
      if (report) process.stdout.write(`# stop(): ${JSON.stringify(report)}\n`);
      if (c) assert.deepEqual(await c.leaks(), [], 'after stop()');
      if (logRoot) fs.rmSync(logRoot, { recursive: true, force: true });
    });

    it('Version and the images CRI sees (imported, never pulled)', async () => {
      const v = await cri.version();
      assert.equal(v.runtimeName, 'containerd');
      assert.equal(v.runtimeApiVersion, 'v1');
      const images = await cri.listImages();
      const tags = images.flatMap((i) => i.repoTags);
      assert.ok(tags.includes(image) && tags.includes('stencil.local/pause:3.9'), `ListImages: ${JSON.stringify(tags)}`);
      assert.ok((await cri.imageStatus(image))!.size > 0);
      assert.equal(await cri.imageStatus('stencil.local/absent:1'), null);
    });

    it('stop() after containerd died with a pod running: kills, unmounts and removes it all (netns, veth, portmap rules, CNI cache)', async () => {
      // A second instance beside this one (which has a pod too): its own subnet and bridge.
      const mine = await runPod(cri, 'runc', podConfig('mine', { logRoot }), [containerConfig('c', image, SLEEP)]);
      const other = await ContainerdInstance.start({ version, cri: {} });
      try {
        assert.notEqual(other.criNetwork!.subnet, c.criNetwork!.subnet);
        await other.importCriImages();
        const hostPort = await freePort();
        const ports = other.criNetwork!.portmap ? [{ containerPort: 80, hostPort }] : [];
        await runPod(other.cri(), 'runc', podConfig('orphan', { logRoot, portMappings: ports }), [containerConfig('c', image, SLEEP)]);
        process.kill(other.pid!, 'SIGKILL');
        const during = await other.leaks();
        for (const re of [/^shim process /, /^mount .*\/netns\/cni-/, /^veth /, /^CNI cache entry /, ...(ports.length ? [/^iptables nat: .*--dports/] : [])])
          assert.ok(during.some((l) => re.test(l)), `${re} not in leaks():\n${during.join('\n')}`);
      } finally {
        const report = await other.stop();
        const all = JSON.stringify(report);
        assert.match(all, /containerd-shim-runc-v2/);
        assert.match(all, /\/netns\/cni-/);
        // (The veth goes with the netns: no need to delete it.) portmap's per-pod rules do not.
        if (other.criNetwork!.portmap) assert.match(all, /iptables nat: -A CNI-HOSTPORT-DNAT .*--dports/);
        assert.match(all, /\/var\/lib\/cni\/results\/stencil-cri-\d+-/);
      }
      assert.deepEqual(await other.leaks(), []);
      assert.equal(fs.existsSync(other.dir), false);
      assert.ok(c.criNetwork!.bridgeExists(), "the other instance's cleanup removed this one's bridge");
      assert.equal(c.criNetwork!.veths().length, 1);
      assert.equal((await cri.podSandboxStatus(mine.id)).status.state, 'SANDBOX_READY');
      await removePod(cri, mine.id);
      assert.deepEqual(await leftovers(), []);
    });

    /** A scenario whose failure names a guest lost meanwhile, the emulated host's way (lib/ctr-tasks.ts withVmmFaults). */
    const scenario = vmmFaultScenario(() => c);

    for (const handler of HANDLERS) {
      describe(`handler ${handler}`, () => {
        scenario('a pod of two containers: both running, shared localhost, the pod IP is eth0\'s and in the CNI subnet', async () => {
          const since = logOffset(c);
          const config = podConfig('two', { logRoot });
          // A pod sysctl (Kubernetes' safe set) holds in the pod's network namespace, the VM's for Stencil.
          config.linux!.sysctls = { 'net.ipv4.ip_local_port_range': '20000 30000' };
          const pod = await runPod(cri, handler, config, [
            containerConfig('server', image, serve(7000, 'hello-from-server')),
            containerConfig('client', image, SLEEP),
          ]);
          const sandbox = (await cri.podSandboxStatus(pod.id)).status;
          assert.equal(sandbox.state, 'SANDBOX_READY');
          if (handler === 'stencil' && (process.env.STENCIL_TEST_SANDBOX_PAUSE ?? 'agent') === 'agent') {
            // [runtime] sandbox_pause = "agent" (the default): no crun for the sandbox.
            const held = logSince(c, since).split('\n').some((l) => l.includes('"heldBy":"the agent\'s pause process"') && l.includes(pod.id));
            assert.ok(held, `the shim's log does not say the agent's pause process holds sandbox ${pod.id}`);
          }
          assert.equal(sandbox.runtimeHandler, handler);
          const ip = sandbox.network?.ip ?? '';
          assert.ok(inSubnet(ip, c.criNetwork!.subnet), `pod IP ${ip} not in ${c.criNetwork!.subnet}`);
          const list = await cri.listContainers({ podSandboxId: pod.id });
          assert.deepEqual(list.map((x) => `${x.metadata.name} ${x.state}`).sort(), ['client CONTAINER_RUNNING', 'server CONTAINER_RUNNING']);

          assert.equal(await execUntilOk(cri, pod.containers.client, 'nc 127.0.0.1 7000 </dev/null'), 'hello-from-server\n');
          const eth0 = await cri.execSync(pod.containers.client, ['ip', '-4', '-o', 'addr', 'show', 'eth0']);
          assert.match(eth0.stdout.toString(), new RegExp(`inet ${ip.replace(/\./g, '\\.')}/24 `));
          const range = await cri.execSync(pod.containers.client, ['cat', '/proc/sys/net/ipv4/ip_local_port_range']);
          assert.equal(range.stdout.toString().trim().split(/\s+/).join(' '), '20000 30000');

          // Another pod has its own localhost: the server is not there. It shares its process
          // namespace (Kubernetes' shareProcessNamespace): the pod's pause process is pid 1.
          const sharedPids = { securityContext: { namespaceOptions: { network: 'POD' as const, pid: 'POD' as const, ipc: 'POD' as const } } };
          const otherConfig = podConfig('other', { logRoot });
          otherConfig.linux = { ...otherConfig.linux, ...sharedPids };
          const other = await runPod(cri, handler, otherConfig, [containerConfig('c', image, SLEEP, { linux: sharedPids })]);
          const miss = await cri.execSync(other.containers.c, ['sh', '-c', 'nc -w 2 127.0.0.1 7000 </dev/null']);
          assert.notEqual(miss.exitCode, 0, `another pod reached the server on its localhost: ${miss.stdout}`);
          assert.equal((await cri.execSync(other.containers.c, ['cat', '/proc/1/cmdline'])).stdout.toString(), '/pause\0', "pid 1 of a pod sharing its processes is not the pod's pause");

          if (process.env.STENCIL_CRI_SPEC_DIR) {
            fs.writeFileSync(path.join(process.env.STENCIL_CRI_SPEC_DIR, `cri-spec-sandbox-${version}-${handler}.json`), JSON.stringify(bundleSpec(c, pod.id), null, 2));
            fs.writeFileSync(path.join(process.env.STENCIL_CRI_SPEC_DIR, `cri-spec-app-${version}-${handler}.json`), JSON.stringify(bundleSpec(c, pod.containers.server), null, 2));
          }
          await Promise.all([removePod(cri, pod.id), removePod(cri, other.id)]);
          assert.deepEqual(await cri.listPodSandbox(), []);
          assert.deepEqual(await leftovers(), []);
        });

        scenario('pod to pod, host to pod, PortForward, and a hostPort from the host', async (t) => {
          const hostPort = await freePort();
          const a = await runPod(cri, handler, podConfig('srv', { logRoot, portMappings: [{ protocol: 'TCP', containerPort: 8080, hostPort }] }), [
            containerConfig('srv', image, serve(8080, 'hello-from-a')),
          ]);
          const b = await runPod(cri, handler, podConfig('cli', { logRoot }), [containerConfig('cli', image, SLEEP)]);
          const ipA = (await cri.podSandboxStatus(a.id)).status.network!.ip;
          const ipB = (await cri.podSandboxStatus(b.id)).status.network!.ip;
          assert.notEqual(ipA, ipB);
          assert.equal(await execUntilOk(cri, b.containers.cli, `nc ${ipA} 8080 </dev/null`), 'hello-from-a\n');
          assert.equal(await tcpRead(ipA, 8080), 'hello-from-a\n');
          // PortForward (kubectl port-forward's path): the stream server dials localhost:8080 inside
          // pod A's netns. For a VM pod the shim redirects that into the guest
          // (shim/src/network/port-forward.ts); a port nothing listens on is reset.
          const pf = await StreamSession.open(`${await cri.portForward(a.id, [8080])}?port=8080`, 10_000, { portForward: true });
          await pf.ended(10_000 * CRI_TIMEOUT_SCALE);
          assert.deepEqual([pf.received(0), pf.received(1)], ['hello-from-a\n', '']);
          const closed = await StreamSession.open(`${await cri.portForward(a.id, [8081])}?port=8081`, 10_000, { portForward: true });
          await closed.ended(10_000 * CRI_TIMEOUT_SCALE);
          assert.equal(closed.received(0), '', 'no data from a port nothing listens on');
          assert.notEqual(closed.received(1), '', "containerd reports the failed connection on the port's error channel");
          const portmap = c.criNetwork!.portmap;
          if (portmap) {
            // portmap's DNAT (OUTPUT chain, local destinations): the bridge's address at the hostPort.
            assert.equal(await tcpRead(c.criNetwork!.gateway, hostPort), 'hello-from-a\n');
            const rules = c.criNetwork!.iptablesRules();
            assert.ok(rules.some((r) => r.includes(`--dports ${hostPort}`)), `no portmap rule for ${hostPort}:\n${rules.join('\n')}`);
          }

          await Promise.all([removePod(cri, a.id), removePod(cri, b.id)]);
          assert.deepEqual(await leftovers(), []);
          if (portmap) await assert.rejects(tcpRead(c.criNetwork!.gateway, hostPort, 2000), 'the hostPort still answers after RemovePodSandbox');
          else t.skip('hostPort not tried: this kernel has no iptables nat table (legacy), so the CNI chain has no portmap');
        });

        scenario('ExecSync: stdout, stderr and exit code; a failing command', async () => {
          const pod = await runPod(cri, handler, podConfig('exec', { logRoot }), [containerConfig('c', image, SLEEP)]);
          const r = await cri.execSync(pod.containers.c, ['sh', '-c', 'echo out; echo err >&2; exit 7']);
          assert.deepEqual({ out: r.stdout.toString(), err: r.stderr.toString(), code: r.exitCode }, { out: 'out\n', err: 'err\n', code: 7 });
          const big = await cri.execSync(pod.containers.c, ['sh', '-c', 'seq 1 20000']);
          assert.equal(big.stdout.toString().split('\n').length, 20001);
          assert.equal(big.exitCode, 0);
          const missing = await cri.execSync(pod.containers.c, ['/no/such/binary']).then(
            (x) => `exit ${x.exitCode}`,
            (e: Error) => `error ${e.message}`,
          );
          assert.notEqual(missing, 'exit 0');
          await removePod(cri, pod.id);
          assert.deepEqual(await leftovers(), []);
        });

        scenario('streaming Exec over the stream server: a TTY shell (resize, tty, exit code), and separate stdout/stderr without one; Attach', async () => {
          const config = podConfig('stream', { logRoot });
          const pod = await runPod(cri, handler, config, [
            containerConfig('c', image, SLEEP),
            containerConfig('interactive', image, ['sh'], { stdin: true, tty: true }),
          ]);
          const url = await cri.exec({ containerId: pod.containers.c, cmd: ['sh'], tty: true, stdin: true, stdout: true });
          assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/exec\//);
          const tty = await StreamSession.open(url);
          tty.resize(100, 30);
          // The resize (containerd -> ResizePty) and what we type (the stdin stream) take different
          // paths and either may land first, as with a real kubectl: wait up to 10 s for the size.
          tty.write('i=0; until [ "$(stty size)" = "30 100" ] || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done; stty size; tty; echo $((6 * 7)); exit 5\n');
          const t = await tty.done();
          assert.equal(t.exitCode, 5, JSON.stringify(t.status));
          assert.match(t.stdout, /\r\n30 100\r\n\/dev\/pts\/\d+\r\n42\r\n/);
          assert.equal(t.stderr, '');

          const plain = await StreamSession.open(
            await cri.exec({ containerId: pod.containers.c, cmd: ['sh', '-c', 'echo out; echo err >&2; exit 2'], stdout: true, stderr: true }),
          );
          assert.deepEqual(await plain.done().then((r) => [r.stdout, r.stderr, r.exitCode]), ['out\n', 'err\n', 2]);
          const ok = await StreamSession.open(await cri.exec({ containerId: pod.containers.c, cmd: ['true'], stdout: true }));
          assert.equal((await ok.done()).exitCode, 0);

          // Attach to the TTY container's shell: what we type runs in it.
          const att = await StreamSession.open(await cri.attach({ containerId: pod.containers.interactive, stdin: true, tty: true, stdout: true }));
          att.write('echo attached-$((40 + 2))\n');
          await att.waitFor(/attached-42/);
          att.write('exit 4\n');
          await att.done();
          assert.equal((await waitContainerState(cri, pod.containers.interactive, 'CONTAINER_EXITED')).exitCode, 4);

          await removePod(cri, pod.id);
          assert.deepEqual(await leftovers(), []);
        });

        scenario('logs in CRI format at log_directory/log_path, ReopenContainerLog after a rename; StopContainer: SIGTERM, then SIGKILL after the grace period (137)', async () => {
          const config = podConfig('logs', { logRoot });
          const script = 'echo line1; echo line2 >&2; trap "echo got TERM" TERM; echo waiting; while true; do sleep 0.1; done';
          const pod = await runPod(cri, handler, config, [containerConfig('c', image, ['sh', '-c', script])]);
          const logFile = path.join(config.logDirectory!, 'c/0.log');
          const id = pod.containers.c;
          await waitFor('"waiting" in the log', async () => (fs.existsSync(logFile) && fs.readFileSync(logFile, 'utf8').includes(' waiting\n') ? true : undefined));
          assert.equal((await cri.containerStatus(id)).status.logPath, logFile);
          // kubelet's log rotation: rename, then ReopenContainerLog; what follows goes to a new file.
          fs.renameSync(logFile, `${logFile}.1`);
          await cri.reopenContainerLog(id);
          assert.ok(fs.existsSync(logFile), 'ReopenContainerLog made no new log file');

          const t0 = Date.now();
          await cri.stopContainer(id, 2);
          const took = Date.now() - t0;
          const status = (await cri.containerStatus(id)).status;
          assert.equal(status.state, 'CONTAINER_EXITED');
          assert.equal(status.exitCode, 137, `exit code ${status.exitCode}, reason ${status.reason}`);
          assert.ok(took >= 1900 && took < 15_000 * CRI_TIMEOUT_SCALE, `StopContainer took ${took} ms with a 2 s grace period`);

          const lines = parseCriLog(fs.readFileSync(`${logFile}.1`, 'utf8'));
          // Each stream in order (the two are separate pipes, so not ordered with each other).
          const stream = (name: string) => lines.filter((l) => l.stream === name).map((l) => `${l.tag} ${l.text}`);
          assert.deepEqual(stream('stdout'), ['F line1', 'F waiting']);
          assert.deepEqual(stream('stderr'), ['F line2']);
          assert.ok(lines.every((l) => !Number.isNaN(Date.parse(l.time))), 'a log timestamp does not parse');
          assert.deepEqual(parseCriLog(fs.readFileSync(logFile, 'utf8')).map((l) => `${l.stream} ${l.tag} ${l.text}`), ['stdout F got TERM']);

          // A container that exits by itself: its status and exit code.
          const done = await cri.createContainer(pod.id, containerConfig('done', image, ['sh', '-c', 'echo bye; exit 3']), config);
          await cri.startContainer(done);
          const st = await waitContainerState(cri, done, 'CONTAINER_EXITED');
          assert.equal(st.exitCode, 3);
          assert.match(fs.readFileSync(path.join(config.logDirectory!, 'done/0.log'), 'utf8'), /^\S+ stdout F bye\n$/);

          await cri.removeContainer(id);
          await cri.removeContainer(done);
          assert.deepEqual(await cri.listContainers({ podSandboxId: pod.id }), []);
          await removePod(cri, pod.id);
          assert.deepEqual(await leftovers(), []);
        });

        scenario('volumes: a read-only hostPath, an emptyDir-like dir shared by two containers, /dev/termination-log; CRI\'s /etc/hosts, hostname and resolv.conf', async () => {
          const vol = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-cri-vol-'));
          try {
            const ro = path.join(vol, 'ro');
            const shared = path.join(vol, 'empty-dir');
            fs.mkdirSync(ro);
            fs.mkdirSync(shared);
            fs.writeFileSync(path.join(ro, 'f'), 'from the host\n');
            const dnsConfig = { servers: ['10.96.0.10', '10.96.0.11'], searches: ['default.svc.cluster.local', 'svc.cluster.local'], options: ['ndots:5'] };
            const config = podConfig('vols', { logRoot, hostname: 'vols-host', dnsConfig });
            const mounts = [
              { containerPath: '/ro', hostPath: ro, readonly: true },
              { containerPath: '/shared', hostPath: shared },
            ];
            // kubelet's termination message file: a host file of its own, bind-mounted writable.
            const terminationLog = path.join(vol, 'termination-log');
            fs.writeFileSync(terminationLog, '');
            const writerMounts = [...mounts, { containerPath: '/dev/termination-log', hostPath: terminationLog }];
            const pod = await runPod(cri, handler, config, [
              containerConfig('writer', image, ['sh', '-c', 'echo written-by-writer > /shared/note; exec sleep 100000'], { mounts: writerMounts }),
              containerConfig('reader', image, SLEEP, { mounts }),
            ]);
            const { writer, reader } = pod.containers;

            const r = await cri.execSync(writer, ['cat', '/ro/f']);
            assert.equal(r.stdout.toString(), 'from the host\n');
            const w = await cri.execSync(writer, ['sh', '-c', 'echo x > /ro/new']);
            assert.notEqual(w.exitCode, 0);
            assert.match(w.stderr.toString(), /Read-only file system/);
            assert.equal(fs.existsSync(path.join(ro, 'new')), false);

            assert.equal(await execUntilOk(cri, reader, 'cat /shared/note'), 'written-by-writer\n');
            assert.equal((await cri.execSync(reader, ['sh', '-c', 'echo back > /shared/reply'])).exitCode, 0);
            assert.equal(fs.readFileSync(path.join(shared, 'reply'), 'utf8'), 'back\n');
            assert.equal((await cri.execSync(writer, ['sh', '-c', 'echo the-last-words > /dev/termination-log'])).exitCode, 0);
            assert.equal(fs.readFileSync(terminationLog, 'utf8'), 'the-last-words\n');

            const resolv = (await cri.execSync(reader, ['cat', '/etc/resolv.conf'])).stdout.toString();
            assert.deepEqual(
              resolv.split('\n').filter((l) => l.trim() !== ''),
              ['search default.svc.cluster.local svc.cluster.local', 'nameserver 10.96.0.10', 'nameserver 10.96.0.11', 'options ndots:5'],
            );
            assert.equal((await cri.execSync(reader, ['hostname'])).stdout.toString(), 'vols-host\n');
            const hosts = (await cri.execSync(reader, ['cat', '/etc/hosts'])).stdout.toString();
            assert.match(hosts, /^127\.0\.0\.1\s+localhost/m);
            // The three files are CRI's, bind-mounted from the sandbox's state (the same in both containers).
            const mountsIn = (await cri.execSync(reader, ['cat', '/proc/self/mounts'])).stdout.toString();
            for (const f of ['/etc/hosts', '/etc/hostname', '/etc/resolv.conf']) assert.match(mountsIn, new RegExp(` ${f} `), `${f} is not a mount`);
            assert.equal((await cri.execSync(writer, ['cat', '/etc/resolv.conf'])).stdout.toString(), resolv);

            await removePod(cri, pod.id);
            assert.deepEqual(await leftovers(), []);
          } finally {
            fs.rmSync(vol, { recursive: true, force: true });
          }
        });

        scenario('ContainerStats and ListContainerStats: CPU and memory of a running container', async () => {
          const burn = 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo burnt; exec sleep 100000';
          const pod = await runPod(cri, handler, podConfig('stats', { logRoot }), [containerConfig('c', image, ['sh', '-c', burn])]);
          const id = pod.containers.c;
          const stats = await waitFor('CPU usage in ContainerStats', async () => {
            const s = await cri.containerStats(id);
            return (s.cpu?.usageCoreNanoSeconds?.value ?? 0) > 10_000_000 ? s : undefined;
          }, 30_000, 250);
          assert.equal(stats.attributes?.id, id);
          assert.equal(stats.attributes?.metadata?.name, 'c');
          assert.ok((stats.memory?.workingSetBytes?.value ?? 0) > 0, `memory: ${JSON.stringify(stats.memory)}`);
          assert.ok((stats.cpu?.timestamp ?? 0) > 0 && (stats.memory?.timestamp ?? 0) > 0);
          const listed = await cri.listContainerStats({ podSandboxId: pod.id });
          assert.deepEqual(listed.map((s) => s.attributes?.id), [id]);
          await removePod(cri, pod.id);
          assert.deepEqual(await leftovers(), []);
        });

        scenario("resources: the pod's sum reaches the runtime (a Stencil VM of that size, cloned from a template of it), the container's limits its cgroup", async () => {
          const linux = { resources: SIZED, securityContext: { namespaceOptions: { network: 'POD' as const, pid: 'CONTAINER' as const, ipc: 'POD' as const } } };
          const pod = await runPod(cri, handler, podConfig('sized', { logRoot, resources: SIZED }), [containerConfig('c', image, SLEEP, { linux })]);
          const sandbox = bundleSpec(c, pod.id) as { annotations: Record<string, string> };
          assert.equal(sandbox.annotations['io.kubernetes.cri.sandbox-memory'], String(128 * MIB));
          assert.equal(sandbox.annotations['io.kubernetes.cri.sandbox-cpu-quota'], '50000');
          const app = bundleSpec(c, pod.containers.c) as { linux: { resources: { memory: { limit: number }; cpu: { quota: number; period: number } } } };
          assert.equal(app.linux.resources.memory.limit, 128 * MIB);
          assert.deepEqual([app.linux.resources.cpu.quota, app.linux.resources.cpu.period], [50_000, 100_000]);
          if (handler === 'stencil') {
            const sh = async (cmd: string) => {
              const r = await cri.execSync(pod.containers.c, ['sh', '-c', cmd]);
              assert.equal(r.exitCode, 0, `${cmd}: exit ${r.exitCode}, stdout ${JSON.stringify(r.stdout.toString())}, stderr ${JSON.stringify(r.stderr.toString())}`);
              return r.stdout.toString().trim();
            };
            assert.equal(await sh('nproc'), String(SIZED_VM.vcpus), "the guest's CPUs");
            const memTotalMiB = Number(/MemTotal:\s+(\d+) kB/.exec(await sh('cat /proc/meminfo'))![1]) / 1024;
            // The kernel keeps its own image and reserved pages out of MemTotal.
            assert.ok(memTotalMiB > 300 && memTotalMiB <= 384, `MemTotal ${memTotalMiB} MiB in a 384 MiB VM`);
            const cg = 'p=$(cut -d: -f3 /proc/self/cgroup); cat /sys/fs/cgroup$p/memory.max /sys/fs/cgroup$p/cpu.max';
            assert.deepEqual((await sh(cg)).split('\n'), [String(128 * MIB), '50000 100000'], "the guest cgroup's limits");
          }
          await removePod(cri, pod.id);
          assert.deepEqual(await leftovers(), []);
        });

        if (handler === 'stencil') {
          scenario("a pod whose guest kernel panics (inject-nmi on its QMP monitor): its containers exit 255, the panic is in containerd's log, and the pod is removed with nothing left", async () => {
            const since = logOffset(c);
            const pod = await runPod(cri, handler, podConfig('panicking', { logRoot }), [containerConfig('a', image, SLEEP), containerConfig('b', image, SLEEP)]);
            const status = await podStatus(c, pod.id, CRI_NAMESPACE);
            assert.deepEqual(new Set(status.containers), new Set([pod.id, pod.containers.a, pod.containers.b]), 'one VM runs the sandbox and both containers');
            const qmp = await QmpClient.connect(status.monitor);
            try {
              assert.deepEqual(await qmp.execute('inject-nmi'), {});
            } finally {
              qmp.close();
            }
            for (const name of ['a', 'b']) assert.equal((await waitContainerState(cri, pod.containers[name], 'CONTAINER_EXITED', 60_000)).exitCode, 255, name);
            assert.match(logSince(c, since), /Kernel panic - not syncing: NMI/, "the guest's panic is not in containerd's log (the shim's)");
            await removePod(cri, pod.id);
            assert.deepEqual(await cri.listPodSandbox(), []);
            assert.deepEqual(await leftovers(), []);
          });

          scenario('stencil pod migrate of a pod with CNI networking: the new shim daemon takes the tap over, the pod IP answers from the host before and after, exec reaches the container, nothing is left', async () => {
            const pod = await runPod(cri, handler, podConfig('moving', { logRoot }), [containerConfig('srv', image, serve(8080, 'hello-from-moving'))]);
            const ip = (await cri.podSandboxStatus(pod.id)).status.network!.ip;
            assert.equal(await tcpReadUntilOk(ip, 8080), 'hello-from-moving\n');
            const before = await podStatus(c, pod.id, CRI_NAMESPACE);
            const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-cri-migrate-'));
            try {
              const moved = await podMigrate(c, pod.id, `unix:${path.join(dir, 'vm.sock')}`, CRI_NAMESPACE);
              assert.equal(moved.code, 0, `stencil pod migrate failed: ${moved.stderr}`);
              process.stdout.write(`# CRI pod migrate: ${moved.stdout.trim()}\n`);
              const after = await podStatus(c, pod.id, CRI_NAMESPACE);
              assert.notEqual(after.pid, before.pid, 'the pod is still served by its old daemon');
              assert.equal(after.vmState, 'running');
              // The new VM's queue of the tap gets the frames: the same IP answers, from the moved guest.
              assert.equal(await tcpReadUntilOk(ip, 8080), 'hello-from-moving\n');
              const exec = await cri.execSync(pod.containers.srv, ['sh', '-c', 'ip -4 -o addr show eth0']);
              assert.match(exec.stdout.toString(), new RegExp(`inet ${ip.replace(/\./g, '\\.')}/`));
              for (let i = 0; i < 100 && fs.existsSync(`/proc/${before.pid}`); i++) await new Promise((r) => setTimeout(r, 100));
              assert.equal(fs.existsSync(`/proc/${before.pid}`), false, 'the old shim daemon is still there');
            } finally {
              fs.rmSync(dir, { recursive: true, force: true });
            }
            await removePod(cri, pod.id);
            assert.deepEqual(await leftovers(), []);
          });
        }

        scenario('20 pods at once: all ready with distinct IPs, then all removed, nothing left', async () => {
          const N = 20;
          const t0 = Date.now();
          const pods = await Promise.all(
            Array.from({ length: N }, (_, i) => runPod(cri, handler, podConfig(`many-${i}`, { logRoot }), [containerConfig('c', image, SLEEP)])),
          );
          const started = Date.now() - t0;
          const statuses = await Promise.all(pods.map(async (p) => (await cri.podSandboxStatus(p.id)).status));
          assert.deepEqual(new Set(statuses.map((s) => s.state)), new Set(['SANDBOX_READY']));
          const ips = statuses.map((s) => s.network?.ip ?? '');
          assert.equal(new Set(ips).size, N, `pod IPs: ${ips.join(' ')}`);
          const running = await cri.listContainers({ state: { state: 'CONTAINER_RUNNING' } });
          assert.equal(running.length, N);
          assert.equal(c.criNetwork!.veths().length, N);
          const t1 = Date.now();
          await Promise.all(pods.map((p) => removePod(cri, p.id)));
          process.stdout.write(`# ${N} pods (${handler}): started in ${started} ms, removed in ${Date.now() - t1} ms\n`);
          assert.deepEqual(await cri.listPodSandbox(), []);
          assert.deepEqual(await leftovers(30_000), []);
        }, { skip: handler === 'stencil' ? SKIP_STENCIL_PARALLEL : undefined });
      });
    }
  });
}
