// The shim binary's lifecycle as containerd drives it, without a VM: `start` prints only the
// address of a listening daemon (grouping pods by sandbox id), the daemon answers over ttrpc or
// gRPC, exits after Shutdown with no tasks and removes its socket, and `delete` prints a
// DeleteResponse. The pod VM is only booted by Create (covered by the containerd tests).
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { migratePod, podStatus } from '../cli/pod.js';
import { decodeMessage, messageType, TASK_SERVICE_V2, TASK_SERVICE_V3 } from '../containerd/protos.js';
import { TtrpcClient } from '../ttrpc/client.js';
import { isListening, socketPath } from './address.js';
import { spareSocketPath } from './spare.js';
import { repoRoot } from '../util/paths.js';

const SHIM = path.join(repoRoot(), 'bin', 'containerd-shim-stencil-v2');
const isRoot = process.getuid?.() === 0;
const T = (name: string) => messageType(name);
/** What the daemon must never hold (shim/launcher/daemon_spawn.c), by linux/capability.h number. */
const DAEMON_DROPPED_CAPABILITIES: Record<string, number> = {
  linux_immutable: 9, net_broadcast: 11, ipc_owner: 15, sys_module: 16, sys_rawio: 17, sys_chroot: 18, sys_pacct: 20,
  sys_boot: 22, sys_time: 25, sys_tty_config: 26, lease: 28, audit_write: 29, audit_control: 30, setfcap: 31,
  mac_override: 32, mac_admin: 33, syslog: 34, wake_alarm: 35, block_suspend: 36, audit_read: 37, perfmon: 38, bpf: 39,
  checkpoint_restore: 40,
};

describe('containerd-shim-stencil-v2 start / serve / delete', { skip: isRoot ? undefined : 'needs root (/run/containerd/s)' }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-shim-lifecycle-'));
  const address = path.join(dir, 'containerd.sock'); // never dialled: only hashed into the socket name
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  function bundle(id: string, annotations: Record<string, string> = {}): string {
    const b = path.join(dir, id);
    fs.mkdirSync(path.join(b, 'rootfs'), { recursive: true });
    fs.writeFileSync(path.join(b, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', root: { path: 'rootfs' }, annotations }));
    execFileSync('mkfifo', [path.join(b, 'log')]);
    return b;
  }

  /**
   * Runs the shim binary. `sharedRoot`: in a mount namespace whose root mount is shared, as systemd
   * makes it (this machine's is private), which a spare daemon needs (shim/launcher/spare.h).
   */
  function shim(b: string, id: string, action: string, env: NodeJS.ProcessEnv = {}, containerd = address, sharedRoot = false) {
    const args = ['-namespace', 'lifecycle', '-address', containerd, '-publish-binary', '/bin/false', '-id', id, ...(action === 'delete' ? ['-bundle', b] : []), action];
    // containerd holds the log FIFO open read-write.
    const logFd = fs.openSync(path.join(b, 'log'), fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    try {
      const [file, argv] = sharedRoot ? ['unshare', ['--mount', '--propagation', 'shared', SHIM, ...args]] : [SHIM, args];
      return spawnSync(file, argv, { cwd: b, env: { ...process.env, TTRPC_ADDRESS: `${address}.ttrpc`, ...env }, timeout: 30_000 });
    } finally {
      fs.closeSync(logFd);
    }
  }

  /** `start`s a daemon for task `id` and asks it its pid. */
  async function startDaemon(b: string, id: string, containerd = address, env: NodeJS.ProcessEnv = {}, sharedRoot = false): Promise<{ sock: string; shimPid: number }> {
    const r = shim(b, id, 'start', env, containerd, sharedRoot);
    assert.equal(r.status, 0, r.stderr.toString());
    const sock = r.stdout.toString().slice('unix://'.length);
    const client = await TtrpcClient.connect(sock);
    const { shimPid } = await client.invoke<{ shimPid: number }>(TASK_SERVICE_V2, 'Connect', T('containerd.task.v2.ConnectRequest'), { id }, T('containerd.task.v2.ConnectResponse'));
    await client.close();
    return { sock, shimPid };
  }

  /** One malloc arena for all the daemon's threads (daemon_spawn.c), unless the environment chose otherwise. */
  function assertOneMallocArena(pid: number): void {
    const environ = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    const want = `MALLOC_ARENA_MAX=${process.env.MALLOC_ARENA_MAX ?? '1'}`;
    assert.ok(environ.includes(want), `daemon ${pid} lacks ${want}: ${environ.filter((e) => e.startsWith('MALLOC')).join(' ') || 'no MALLOC_ARENA_MAX'}`);
  }

  /** The pid of the spare daemon waiting for containerd's next pod (spare.ts), once it listens. */
  async function waitForSpare(containerd: string, timeoutMs = 60_000): Promise<number> {
    const socket = spareSocketPath(containerd, path.join(repoRoot(), 'dist', 'shim-bundle', 'main.js'));
    for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) {
      if (!(await isListening(socket))) continue;
      // The spare's own flags name the same socket (launcher.c computes it too).
      const listens = (pid: string) => {
        try {
          const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
          return argv.includes('spare') && argv[argv.indexOf('-spare-socket') + 1] === socket;
        } catch {
          return false;
        }
      };
      const pid = fs.readdirSync('/proc').find((p) => /^\d+$/.test(p) && listens(p));
      if (pid) return Number(pid);
    }
    throw new Error(`no spare daemon listening for ${containerd} within ${timeoutMs / 1000} s`);
  }

  /** A stand-in for containerd's socket: a spare stays while something accepts connections there. */
  async function fakeContainerd(name: string): Promise<{ address: string; stop: () => Promise<void> }> {
    const at = path.join(dir, name);
    const server = net.createServer((c) => c.destroy());
    await new Promise<void>((resolve) => server.listen(at, resolve));
    return { address: at, stop: () => new Promise<void>((resolve) => server.close(() => resolve())) };
  }

  async function shutdown(sock: string, id: string) {
    const client = await TtrpcClient.connect(sock);
    await client.invoke(TASK_SERVICE_V2, 'Shutdown', T('containerd.task.v2.ShutdownRequest'), { id }, T('google.protobuf.Empty')).catch(() => undefined);
    await client.close();
    for (let i = 0; i < 100 && fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(!fs.existsSync(sock), `${sock} still exists after Shutdown`);
  }

  it('start prints only a unix:// address, writes it to the bundle, and the daemon serves ttrpc until Shutdown', async () => {
    const b = bundle('p1');
    const r = shim(b, 'p1', 'start');
    assert.equal(r.status, 0, r.stderr.toString());
    const out = r.stdout.toString();
    assert.match(out, /^unix:\/\/\/run\/containerd\/s\/[0-9a-f]{64}$/);
    assert.equal(r.stderr.toString(), '');
    assert.equal(fs.readFileSync(path.join(b, 'address'), 'utf8'), out);
    const sock = out.slice('unix://'.length);
    assert.equal(fs.statSync(sock).mode & 0o777, 0o600);
    // Recorded beside the socket for the pod's later starts, and gone with it.
    assert.equal(fs.readFileSync(`${sock}.address`, 'utf8'), out);
    assert.equal(fs.statSync(`${sock}.address`).mode & 0o777, 0o600);
    const client = await TtrpcClient.connect(sock);
    const connect = await client.invoke<{ shimPid: number; taskPid: number }>(TASK_SERVICE_V2, 'Connect', T('containerd.task.v2.ConnectRequest'), { id: 'p1' }, T('containerd.task.v2.ConnectResponse'));
    assert.ok(connect.shimPid > 0);
    assert.equal(connect.taskPid, 0);
    await assert.rejects(
      client.invoke(TASK_SERVICE_V3, 'State', T('containerd.task.v2.StateRequest'), { id: 'nope' }, T('containerd.task.v2.StateResponse')),
      (e: { code?: number }) => e.code === 5,
    );
    await client.close();
    await shutdown(sock, 'p1');
    assert.ok(!fs.existsSync(`${sock}.address`), 'the recorded address outlived its daemon');
  });

  it('the daemon runs without the capabilities it never needs, in every set, keeps those it uses, in a mount namespace of its own, with one malloc arena', async () => {
    const b = bundle('caps');
    const { sock, shimPid } = await startDaemon(b, 'caps');
    const status = fs.readFileSync(`/proc/${shimPid}/status`, 'utf8');
    const set = (name: string) => BigInt(`0x${new RegExp(`^${name}:\\s*([0-9a-f]+)$`, 'm').exec(status)![1]}`);
    const has = (mask: bigint, cap: number) => (mask >> BigInt(cap)) & 1n;
    const lastCap = Number(fs.readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8'));
    for (const [name, cap] of Object.entries(DAEMON_DROPPED_CAPABILITIES).filter(([, n]) => n <= lastCap)) {
      for (const which of ['CapBnd', 'CapPrm', 'CapEff', 'CapInh']) assert.equal(has(set(which), cap), 0n, `${which} has ${name}`);
    }
    const SYS_ADMIN = 21, NET_ADMIN = 12, DAC_OVERRIDE = 1;
    for (const cap of [SYS_ADMIN, NET_ADMIN, DAC_OVERRIDE]) assert.equal(has(set('CapEff'), cap), 1n, `CapEff lacks capability ${cap}`);
    // Its own mount namespace, whose root mount receives the host's mounts (a slave).
    assert.notEqual(fs.readlinkSync(`/proc/${shimPid}/ns/mnt`), fs.readlinkSync('/proc/self/ns/mnt'));
    const rootMount = (pid: number | 'self') => fs.readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n').find((l) => l.split(' ')[4] === '/') ?? '';
    if (/ shared:\d+/.test(rootMount('self'))) assert.match(rootMount(shimPid), / master:\d+/, `the daemon's root mount is no slave: ${rootMount(shimPid)}`);
    else assert.doesNotMatch(rootMount(shimPid), / shared:\d+/, `the daemon's root mount is shared: ${rootMount(shimPid)}`);
    assertOneMallocArena(shimPid);
    await shutdown(sock, 'caps');
  });

  it('containers with the same sandbox id share one daemon', async () => {
    const sandbox = 'a'.repeat(64);
    const pause = bundle('pause', { 'io.kubernetes.cri.sandbox-id': sandbox, 'io.kubernetes.cri.container-type': 'sandbox' });
    const app = bundle('app', { 'io.kubernetes.cri.sandbox-id': sandbox, 'io.kubernetes.cri.container-type': 'container' });
    const first = shim(pause, 'pause', 'start');
    assert.equal(first.status, 0, first.stderr.toString());
    // The running daemon's address, whatever the configuration says now: it is read only for a new daemon.
    const unreadable = path.join(dir, 'changed.toml');
    fs.writeFileSync(unreadable, '[runtime]\ntransport = "carrier pigeon"\n');
    const second = shim(app, 'app', 'start', { STENCIL_CONFIG: unreadable });
    assert.equal(second.status, 0, second.stderr.toString());
    assert.equal(second.stdout.toString(), first.stdout.toString());
    assert.equal(fs.readFileSync(path.join(app, 'address'), 'utf8'), first.stdout.toString());
    await shutdown(first.stdout.toString().slice('unix://'.length), 'pause');
  });

  it('transport = "grpc" prints bootstrap JSON version 3 and serves containerd.task.v3.Task over gRPC, and PodAdmin over ttrpc on the same socket', async () => {
    const config = path.join(dir, 'grpc.toml');
    fs.writeFileSync(config, '[runtime]\ntransport = "grpc"\n');
    const b = bundle('g1');
    const r = shim(b, 'g1', 'start', { STENCIL_CONFIG: config });
    assert.equal(r.status, 0, r.stderr.toString());
    const boot = JSON.parse(r.stdout.toString()) as { version: number; address: string; protocol: string };
    assert.equal(boot.version, 3);
    assert.equal(boot.protocol, 'grpc');
    const grpc = await import('@grpc/grpc-js');
    const client = new grpc.Client(`unix://${boot.address}`, grpc.credentials.createInsecure());
    const call = (method: string, req: string, res: string, value: object) =>
      new Promise<Record<string, unknown>>((resolve, reject) =>
        client.makeUnaryRequest(
          `/${TASK_SERVICE_V3}/${method}`,
          (o: object) => Buffer.from(T(req).encode(T(req).fromObject(o)).finish()),
          (buf: Buffer) => decodeMessage(res, buf),
          value,
          (err, v) => (err ? reject(err) : resolve(v!)),
        ),
      );
    const shimPid = Number((await call('Connect', 'containerd.task.v2.ConnectRequest', 'containerd.task.v2.ConnectResponse', { id: 'g1' })).shimPid);
    assert.ok(shimPid > 0);
    // Another task of the pod gets the gRPC daemon's address, though the default configuration says ttrpc.
    const again = shim(bundle('g1-app', {}), 'g1', 'start');
    assert.equal(again.status, 0, again.stderr.toString());
    assert.equal(again.stdout.toString(), r.stdout.toString());
    // `stencil pod status` / `migrate` speak ttrpc to the same socket.
    const pod = { pod: 'g1', namespace: 'lifecycle', address };
    assert.deepEqual(await podStatus(pod), { pid: shimPid, vmState: 'none', monitor: '', containers: [] });
    await assert.rejects(migratePod({ ...pod, to: 'unix:/nowhere' }), /pod g1: .*needs containerd to reach this shim over ttrpc/);
    // gRPC still answers after the ttrpc callers.
    assert.equal(Number((await call('Connect', 'containerd.task.v2.ConnectRequest', 'containerd.task.v2.ConnectResponse', { id: 'g1' })).shimPid), shimPid);
    await call('Shutdown', 'containerd.task.v2.ShutdownRequest', 'google.protobuf.Empty', { id: 'g1' }).catch(() => undefined);
    client.close();
    for (let i = 0; i < 100 && fs.existsSync(boot.address); i++) await new Promise((res) => setTimeout(res, 50));
    assert.ok(!fs.existsSync(boot.address));
  });

  it('start fails with a message naming a bad configuration key; nothing is left running', () => {
    const config = path.join(dir, 'bad.toml');
    fs.writeFileSync(config, '[hypervisor]\ndefault_vcpus = "many"\n');
    const b = bundle('bad');
    const r = shim(b, 'bad', 'start', { STENCIL_CONFIG: config });
    assert.equal(r.status, 1);
    assert.match(r.stderr.toString(), /default_vcpus/);
    assert.equal(r.stdout.toString(), '');
    assert.ok(!fs.existsSync(path.join(b, 'address')));
  });

  it('start fails with a message naming node when it is not on PATH; nothing is left behind', () => {
    const bin = fs.mkdtempSync(path.join(dir, 'bin-'));
    const b = bundle('nonode');
    // A containerd of its own, which has no spare daemon (a spare needs no node on PATH).
    const r = shim(b, 'nonode', 'start', { PATH: bin }, path.join(dir, 'no-spare.sock'));
    assert.equal(r.status, 1, r.stderr.toString());
    assert.match(r.stderr.toString(), /cannot run node: No such file or directory/);
    assert.equal(r.stdout.toString(), '');
    assert.ok(!fs.existsSync(path.join(b, 'address')));
    const sock = socketPath(path.join(dir, 'no-spare.sock'), 'lifecycle', 'nonode');
    assert.ok(!fs.existsSync(sock) && !fs.existsSync(`${sock}.address`), 'the failed start left its socket');
  });

  it('a spare daemon takes the next new pod and becomes its daemon as a spawned one would be; the next spare follows, and a start finding it still loading waits for it; it leaves with containerd', async () => {
    const containerd = await fakeContainerd('spare-containerd.sock');
    try {
      const first = await startDaemon(bundle('s1'), 's1', containerd.address, {}, true);
      const spare = await waitForSpare(containerd.address);
      assert.notEqual(spare, first.shimPid);
      assertOneMallocArena(spare);
      // The pod's configuration comes from the environment of its own start, not the spare's.
      const grpc = path.join(dir, 'spare-grpc.toml');
      fs.writeFileSync(grpc, '[runtime]\ntransport = "grpc"\n');
      const b = bundle('s2');
      const r = shim(b, 's2', 'start', { STENCIL_CONFIG: grpc }, containerd.address, true);
      assert.equal(r.status, 0, r.stderr.toString());
      const { pid } = await podStatus({ pod: 's2', namespace: 'lifecycle', address: containerd.address });
      assert.equal(pid, spare, 'the second pod was not given to the spare');
      const out = fs.readFileSync(path.join(b, 'address'), 'utf8');
      assert.equal(r.stdout.toString(), out);
      assert.match(out, /^\{"version":3,"address":"\/run\/containerd\/s\/[0-9a-f]{64}","protocol":"grpc"\}$/);
      // As a spawned daemon: the bundle its working directory, the log its stdout and stderr,
      // back at priority 0 on every thread, ps showing its pod, and the capabilities gone.
      assert.equal(fs.readlinkSync(`/proc/${spare}/cwd`), b);
      for (const fd of [1, 2]) assert.equal(fs.readlinkSync(`/proc/${spare}/fd/${fd}`), path.join(b, 'log'));
      for (const tid of fs.readdirSync(`/proc/${spare}/task`)) {
        const stat = fs.readFileSync(`/proc/${spare}/task/${tid}/stat`, 'utf8');
        assert.equal(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16], '0', `thread ${tid} is not back at nice 0`);
      }
      assert.match(fs.readFileSync(`/proc/${spare}/cmdline`, 'utf8'), /^containerd-shim-stencil-v2 -namespace lifecycle -id s2 serve\0/);
      const status = fs.readFileSync(`/proc/${spare}/status`, 'utf8');
      assert.equal(BigInt(`0x${/^CapBnd:\s*([0-9a-f]+)$/m.exec(status)![1]}`) & (1n << 16n), 0n, 'the daemon can load kernel modules');
      // A start that comes while the next spare still loads (s2's start spawned it just now) waits
      // for it and hands it the pod, rather than spawning a daemon of its own.
      const lock = spareSocketPath(containerd.address, path.join(repoRoot(), 'dist', 'shim-bundle', 'main.js')).replace(/\.sock$/, '.lock');
      const loading = Number(fs.readFileSync(lock, 'utf8'));
      const third = await startDaemon(bundle('s3'), 's3', containerd.address, {}, true);
      assert.equal(third.shimPid, loading, 'the third pod was not given to the spare that was loading');
      await shutdown(third.sock, 's3');
      const next = await waitForSpare(containerd.address);
      assert.ok(next !== spare && next !== loading);
      await shutdown(first.sock, 's1');
      const sock = JSON.parse(out).address as string;
      process.kill(spare, 'SIGTERM');
      for (let i = 0; i < 100 && fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(!fs.existsSync(sock), 'the pod daemon that was a spare left its socket');
      // containerd gone: the spare leaves, its socket with it.
      await containerd.stop();
      const spareSocket = fs.readFileSync(`/proc/${next}/cmdline`, 'utf8').split('\0').at(-4)!;
      for (let i = 0; i < 300 && fs.existsSync(`/proc/${next}`); i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(!fs.existsSync(`/proc/${next}`), 'the spare outlived its containerd by 30 s');
      assert.ok(!fs.existsSync(spareSocket), `the spare left ${spareSocket}`);
    } finally {
      await containerd.stop().catch(() => undefined);
    }
  });

  it('no spare with spare_daemon = false, nor where the root mount is private', async () => {
    const containerd = await fakeContainerd('no-spare-containerd.sock');
    const config = path.join(dir, 'no-spare.toml');
    fs.writeFileSync(config, '[runtime]\nspare_daemon = false\n');
    try {
      const { sock } = await startDaemon(bundle('n1'), 'n1', containerd.address, { STENCIL_CONFIG: config }, true);
      await assert.rejects(waitForSpare(containerd.address, 3_000), /no spare daemon/);
      await shutdown(sock, 'n1');
      // Nor where the root mount is private: later mounts would never reach a spare's namespace.
      const { sock: other } = await startDaemon(bundle('n2'), 'n2', containerd.address);
      await assert.rejects(waitForSpare(containerd.address, 3_000), /no spare daemon/);
      await shutdown(other, 'n2');
    } finally {
      await containerd.stop();
    }
  });

  it('delete removes the socket and recorded address a killed daemon left', async () => {
    const b = bundle('k1');
    const { sock, shimPid } = await startDaemon(b, 'k1');
    process.kill(shimPid, 'SIGKILL');
    for (let i = 0; i < 100 && fs.existsSync(`/proc/${shimPid}`); i++) await new Promise((res) => setTimeout(res, 50));
    assert.ok(fs.existsSync(sock) && fs.existsSync(`${sock}.address`));
    const d = shim(b, 'k1', 'delete');
    assert.equal(d.status, 0, d.stderr.toString());
    assert.match(d.stderr.toString(), new RegExp(`removed ${sock}\n(.|\n)*removed ${sock}\\.address`));
    assert.ok(!fs.existsSync(sock) && !fs.existsSync(`${sock}.address`));
  });

  it('delete exits 0 with a DeleteResponse on stdout, also when there is nothing to clean', () => {
    const b = bundle('d1');
    const r = shim(b, 'd1', 'delete');
    assert.equal(r.status, 0, r.stderr.toString());
    const resp = decodeMessage<{ exitStatus: number; exitedAt: { seconds: number } }>('containerd.task.v2.DeleteResponse', r.stdout);
    assert.equal(resp.exitStatus, 137);
    assert.ok(resp.exitedAt.seconds > 0);
  });
});
