// Containers run by the guest agent binary on this host (over --unix, no VM) with crun. They
// need root, crun and busybox-static; on a host with the legacy/hybrid cgroup layout the agent
// runs in a private mount namespace with cgroup2 mounted at /sys/fs/cgroup, as in the guest.
// Skipped only where the host forbids the namespaces crun needs (namespacesForbidden, below).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { finished } from 'node:stream/promises';
import { after, before, describe, it } from 'node:test';
import { isRoot, readAll, rejectsWith, type RunningAgent, startAgent } from './testing/agent-harness.js';
import type { AgentClient } from './client.js';
import type { AgentInputStream, AgentOutputStream } from './stdio.js';
import { haveStaticBusybox, makeBusyboxRootfs, ociProcess, ociSpec } from './testing/busybox-oci.js';

/**
 * The one condition under which these tests are skipped: the host forbids what crun and the
 * isolated agent need as root, namely new mount/UTS/IPC/PID/network/cgroup namespaces and a cgroup2
 * mount (EPERM, e.g. in an unprivileged container). Returns that reason, or undefined when allowed.
 * Everything else (crun or busybox-static missing: `make deps` installs both; crun failing) fails.
 */
function namespacesForbidden(): string | undefined {
  const mountCgroup2 = 'test "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs || { umount -l /sys/fs/cgroup; mount -t cgroup2 cgroup2 /sys/fs/cgroup; }';
  const r = spawnSync('unshare', ['--mount', '--uts', '--ipc', '--pid', '--net', '--cgroup', '--fork', '--propagation', 'private', 'sh', '-c', mountCgroup2], {
    encoding: 'utf8',
  });
  if (r.status === 0) return undefined;
  if (/Operation not permitted|Permission denied/.test(r.stderr)) return `this host forbids namespaces or a cgroup2 mount: ${r.stderr.trim()}`;
  throw new Error(`probing namespaces for crun failed (exit ${r.status}): ${r.stderr || r.error?.message}`);
}

const crunSkip = !isRoot ? 'not root' : namespacesForbidden();
if (crunSkip) console.log(`# skipping container tests: ${crunSkip}`);
else {
  assert.ok(fs.existsSync('/usr/bin/crun'), 'crun is not installed (make deps installs it)');
  assert.ok(haveStaticBusybox(), 'busybox-static is not installed (make deps installs it)');
}

describe('containers (crun)', { skip: crunSkip }, () => {
  let agent: RunningAgent;
  let client: AgentClient;
  let rootfs: string;
  let n = 0;
  const newId = () => `c${++n}`;
  const spec = (args: string[], terminal = false) => ociSpec(rootfs, { args, terminal });

  before(async () => {
    rootfs = makeBusyboxRootfs(fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-rootfs-')));
    agent = await startAgent({ isolated: true });
    client = await agent.client();
  });
  after(async () => {
    client?.close();
    await agent?.stop();
    if (process.env.STENCIL_TEST_AGENT_LOG) console.log(agent?.log());
    fs.rmSync(rootfs, { recursive: true, force: true });
  });

  /** Creates, attaches and starts; resolves with the exit and the collected output. */
  async function run(args: string[], stdin?: Buffer) {
    const id = newId();
    await client.createContainer(id, spec(args), { stdin: !!stdin, stdout: true, stderr: true });
    const io = await client.attachStdio(id, '', { stdin: !!stdin, stdout: true, stderr: true });
    const out = readAll(io.stdout!);
    const err = readAll(io.stderr!);
    const pid = await client.startContainer(id);
    assert.ok(pid > 1);
    if (stdin) io.stdin!.end(stdin);
    const exit = await client.waitProcess(id, '', { timeoutMs: 60_000 });
    const result = { id, exit, stdout: await out, stderr: await err };
    await client.deleteContainer(id);
    return result;
  }

  it('runs echo hello: stdout exactly "hello\\n", stderr separate, exit 0', async () => {
    const r = await run(['sh', '-c', 'echo hello; echo oops >&2']);
    assert.equal(r.stdout.toString(), 'hello\n');
    assert.equal(r.stderr.toString(), 'oops\n');
    assert.equal(r.exit.exitStatus, 0);
    assert.equal(r.exit.oomKilled, false);
    assert.ok(Math.abs(r.exit.exitedAt.getTime() - Date.now()) < 60_000);
  });

  it('reports the exit code', async () => {
    assert.equal((await run(['sh', '-c', 'exit 7'])).exit.exitStatus, 7);
  });

  it('round-trips 1 MiB of random bytes through cat (stdin EOF closes the pipe)', async () => {
    const data = crypto.randomBytes(2 ** 20);
    const r = await run(['cat'], data);
    assert.equal(r.exit.exitStatus, 0);
    assert.equal(r.stdout.length, data.length);
    assert.ok(r.stdout.equals(data), 'stdout differs from stdin');
  });

  it('keeps the output of a process that exits before anyone attaches', async () => {
    const id = newId();
    await client.createContainer(id, spec(['sh', '-c', 'seq 1 2000; echo tail >&2']), { stdout: true, stderr: true });
    await client.startContainer(id);
    const exit = await client.waitProcess(id, '', { timeoutMs: 30_000 });
    assert.equal(exit.exitStatus, 0);
    const { stdout, stderr } = await client.attachStdio(id, '', { stdout: true, stderr: true });
    const expected = Array.from({ length: 2000 }, (_, i) => `${i + 1}\n`).join('');
    assert.equal((await readAll(stdout!)).toString(), expected);
    assert.equal((await readAll(stderr!)).toString(), 'tail\n');
    await client.deleteContainer(id);
  });

  it('DETACH lets go of stdio without losing a byte or ending it: output goes on over a new attach, stdin stays open', async () => {
    const id = newId();
    await client.createContainer(id, spec(['sh', '-c', 'read a; seq 1 200000; read b; echo "got $b"']), { stdin: true, stdout: true });
    const first = await client.attachStdio(id, '', { stdin: true, stdout: true });
    const chunks: Buffer[] = [];
    let bytes = 0;
    first.stdout!.on('data', (d: Buffer) => {
      chunks.push(d);
      bytes += d.length;
    });
    await client.startContainer(id);
    first.stdin!.write('go\n');
    for (let i = 0; i < 500 && bytes < 100_000; i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(bytes >= 100_000, `only ${bytes} bytes of output arrived`);
    // Mid-flood: the first attach ends after the last byte the agent read; the rest waits in the pipe.
    await Promise.all([(first.stdin as AgentInputStream).detach(), (first.stdout as AgentOutputStream).detach()]);
    await finished(first.stdout!);
    const second = await client.attachStdio(id, '', { stdin: true, stdout: true });
    const rest = readAll(second.stdout!);
    second.stdin!.end('more\n');
    assert.equal((await client.waitProcess(id, '', { timeoutMs: 60_000 })).exitStatus, 0);
    const expected = Array.from({ length: 200000 }, (_, i) => `${i + 1}\n`).join('') + 'got more\n';
    const all = Buffer.concat([...chunks, await rest]).toString();
    assert.ok(all === expected, `output differs after the re-attach (${all.length} bytes, ${expected.length} expected)`);
    await client.deleteContainer(id);
  });

  it('backpressures a flooding process instead of buffering its output', async () => {
    const id = newId();
    await client.createContainer(id, spec(['yes', 'flood']), { stdout: true });
    const { stdout } = await client.attachStdio(id, '', { stdout: true });
    await client.startContainer(id);
    // Read a little, then stop reading for a while.
    const first = await new Promise<Buffer>((resolve) => stdout!.once('data', resolve));
    assert.match(first.toString(), /^flood\n/);
    stdout!.pause();
    const rss = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${agent.proc.pid}/status`, 'utf8'))![1]);
    await new Promise((r) => setTimeout(r, 500));
    const before = rss();
    await new Promise((r) => setTimeout(r, 1500));
    const grown = rss() - before;
    assert.ok(grown < 1024, `the agent grew by ${grown} KiB while the reader was paused`);
    assert.ok(stdout!.readableLength < 4 * 2 ** 20, `${stdout!.readableLength} bytes buffered on the host`);
    // Reading again gets data flowing again.
    let more = 0;
    stdout!.on('data', (d: Buffer) => (more += d.length));
    stdout!.resume();
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(more > 100_000, `only ${more} bytes after resuming`);
    // Delete kills the flood; the stream then ends (EOF after what was in the pipe).
    const ended = finished(stdout!);
    await client.deleteContainer(id);
    await ended;
  });

  it('execs processes in a running container, with their own stdio and status', async () => {
    const id = newId();
    await client.createContainer(id, spec(['sleep', '1000']), {});
    await client.startContainer(id);
    const pid = await client.execProcess(id, 'e1', ociProcess({ args: ['sh', '-c', 'echo exec-out; echo exec-err >&2; exit 3'] }), {
      stdout: true,
      stderr: true,
    });
    assert.ok(pid > 1);
    const io = await client.attachStdio(id, 'e1', { stdout: true, stderr: true });
    const [out, err, exit] = await Promise.all([readAll(io.stdout!), readAll(io.stderr!), client.waitProcess(id, 'e1')]);
    assert.equal(out.toString(), 'exec-out\n');
    assert.equal(err.toString(), 'exec-err\n');
    assert.equal(exit.exitStatus, 3);
    // Exec ids are unique while the record exists; DeleteProcess frees it.
    await rejectsWith(client.execProcess(id, 'e1', ociProcess({ args: ['true'] }), {}), (e) => assert.equal(e.code, 'ALREADY_EXISTS'));
    await client.deleteProcess(id, 'e1');
    await rejectsWith(client.waitProcess(id, 'e1'), (e) => assert.equal(e.code, 'NOT_FOUND'));
    // stdin of an exec.
    await client.execProcess(id, 'e2', ociProcess({ args: ['sh', '-c', 'read x; echo "got $x"'] }), { stdin: true, stdout: true });
    const io2 = await client.attachStdio(id, 'e2', { stdin: true, stdout: true });
    io2.stdin!.end('line\n');
    assert.equal((await readAll(io2.stdout!)).toString(), 'got line\n');
    assert.equal((await client.waitProcess(id, 'e2')).exitStatus, 0);
    // A failing exec reports crun's error and leaves no record.
    await rejectsWith(client.execProcess(id, 'e3', ociProcess({ args: ['/no/such/binary'] }), {}), (e) => {
      assert.equal(e.code, 'RUNTIME');
      assert.match(e.message, /ExecProcess\(c\d+\/e3\)/);
    });
    await rejectsWith(client.waitProcess(id, 'e3'), (e) => assert.equal(e.code, 'NOT_FOUND'));
    // Killed by a signal: 128 + signal (an exec is not the namespace's init, so it can die of it).
    await client.execProcess(id, 'e4', ociProcess({ args: ['sh', '-c', 'kill -9 $$'] }), {});
    assert.equal((await client.waitProcess(id, 'e4')).exitStatus, 137);
    await client.deleteContainer(id);
  });

  it('signals the init process, one process or all of them', async () => {
    const id = newId();
    await client.createContainer(id, spec(['sh', '-c', 'trap "exit 42" TERM; while :; do sleep 0.1; done']), {});
    await client.startContainer(id);
    await new Promise((r) => setTimeout(r, 300));  // let the trap be installed
    await client.signalProcess(id, '', 'SIGTERM');
    assert.equal((await client.waitProcess(id, '', { timeoutMs: 20_000 })).exitStatus, 42);
    await rejectsWith(client.signalProcess(id, '', 'SIGTERM'), (e) => assert.equal(e.code, 'FAILED_PRECONDITION'));
    await client.deleteContainer(id);

    const id2 = newId();
    await client.createContainer(id2, spec(['sleep', '1000']), {});
    await client.startContainer(id2);
    await client.execProcess(id2, 'x', ociProcess({ args: ['sleep', '1000'] }), {});
    await client.signalProcess(id2, '', 'SIGKILL', { all: true });
    const [a, b] = await Promise.all([client.waitProcess(id2, ''), client.waitProcess(id2, 'x')]);
    assert.equal(a.exitStatus, 137);
    assert.equal(b.exitStatus, 137);
    await client.deleteContainer(id2);
  });

  it('gives a terminal process a pty that can be resized', async () => {
    const id = newId();
    await client.createContainer(id, spec(['sh', '-c', 'tty; stty size; read x; echo "in:$x"'], true), { terminal: true, stdin: true, stdout: true });
    await client.resizePty(id, '', { width: 100, height: 40 });
    const io = await client.attachStdio(id, '', { terminal: true, stdin: true, stdout: true, stderr: true });
    assert.equal(io.stderr, undefined);
    let text = '';
    io.stdout!.on('data', (d: Buffer) => (text += d.toString().replace(/\r/g, '')));
    const out = finished(io.stdout!);
    await client.startContainer(id);
    // Type only once the size is printed (the tty echoes input, which would interleave).
    for (let i = 0; i < 200 && !/40 100\n/.test(text); i++) await new Promise((r) => setTimeout(r, 25));
    assert.match(text, /^\/dev\/pts\/\d+\n40 100\n$/);
    io.stdin!.write('typed\n');
    assert.equal((await client.waitProcess(id, '', { timeoutMs: 20_000 })).exitStatus, 0);
    await out;
    assert.match(text, /typed\nin:typed\n$/);
    io.stdin!.destroy();
    await rejectsWith(client.resizePty(id, 'nope', { width: 1, height: 1 }), (e) => assert.equal(e.code, 'NOT_FOUND'));
    await client.deleteContainer(id);

    // An exec with a terminal of its own.
    const id2 = newId();
    await client.createContainer(id2, spec(['sleep', '1000']), {});
    await client.startContainer(id2);
    await client.execProcess(id2, 't', ociProcess({ args: ['sh', '-c', 'sleep 0.3; stty size; tty'], terminal: true }), {
      terminal: true,
      stdout: true,
    });
    await client.resizePty(id2, 't', { width: 33, height: 11 });
    const { stdout } = await client.attachStdio(id2, 't', { terminal: true, stdout: true });
    const [out2, exit2] = await Promise.all([readAll(stdout!), client.waitProcess(id2, 't', { timeoutMs: 20_000 })]);
    assert.equal(exit2.exitStatus, 0);
    assert.match(out2.toString().replace(/\r/g, ''), /^11 33\n\/dev\/pts\/\d+\n$/);
    await rejectsWith(client.resizePty(id2, '', { width: 1, height: 1 }), (e) => assert.equal(e.code, 'FAILED_PRECONDITION'));
    await client.deleteContainer(id2);
  });

  it('closes stdin without an attached stream, and refuses to forget a running exec', async () => {
    const id = newId();
    await client.createContainer(id, spec(['sleep', '1000']), {});
    await client.startContainer(id);
    await client.execProcess(id, 'cat', ociProcess({ args: ['cat'] }), { stdin: true });
    await rejectsWith(client.deleteProcess(id, 'cat'), (e) => assert.equal(e.code, 'FAILED_PRECONDITION'));
    await client.closeStdin(id, 'cat');
    assert.equal((await client.waitProcess(id, 'cat', { timeoutMs: 20_000 })).exitStatus, 0);
    await client.closeStdin(id, 'cat');  // idempotent
    await rejectsWith(client.openStdin(id, 'cat'), (e) => assert.equal(e.code, 'FAILED_PRECONDITION'));
    await rejectsWith(client.openOutput(id, 'cat', 'stderr'), (e) => assert.equal(e.code, 'FAILED_PRECONDITION'));
    await client.deleteProcess(id, 'cat');
    await client.deleteContainer(id);
  });

  it('pauses and resumes a container with the cgroup freezer, and reports stats', async () => {
    const id = newId();
    await client.createContainer(id, spec(['sleep', '1000']), {});
    await client.startContainer(id);
    const stats = await client.stats(id);
    assert.match(stats.cgroup, /^\/sys\/fs\/cgroup\/.+/);
    assert.ok(stats.cpu.usageUsec >= 0);
    // The cgroup as the agent sees it (it may have a mount namespace of its own).
    const cgroupDir = path.join(`/proc/${agent.proc.pid}/root`, stats.cgroup);
    const frozen = () => fs.readFileSync(path.join(cgroupDir, 'cgroup.freeze'), 'utf8').trim();
    await client.pauseContainer(id);
    assert.equal(frozen(), '1');
    await rejectsWith(client.pauseContainer(id), (e) => assert.equal(e.code, 'FAILED_PRECONDITION'));
    await rejectsWith(client.execProcess(id, 'p', ociProcess({ args: ['true'] }), {}), (e) => assert.equal(e.code, 'FAILED_PRECONDITION'));
    await client.resumeContainer(id);
    assert.equal(frozen(), '0');
    // Delete kills everything, answers pending waits, then forgets the container.
    const waiting = client.waitProcess(id, '');
    await client.deleteContainer(id);
    assert.equal((await waiting).exitStatus, 137);
    await rejectsWith(client.stats(id), (e) => assert.equal(e.code, 'NOT_FOUND'));
    assert.equal(fs.existsSync(cgroupDir), false, 'the cgroup was left behind');
  });

  it("holds a pod's sandbox with the agent's own pause process: its namespaces, hostname and cgroup; joined by a crun container; stats, freeze, exec refused, SIGTERM ends it with 0, delete removes its cgroup", async () => {
    const id = newId();
    const parent = `/stencil-pause-test-${process.pid}`;
    const pid = await client.createContainer(id, {}, {}, { pause: { namespaces: ['pid', 'ipc', 'uts', 'mount', 'cgroup'], hostname: 'pod-host', cgroup: `${parent}/${id}` } });
    try {
      assert.equal(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'), '/pause\0');
      assert.match(fs.readFileSync(`/proc/${pid}/status`, 'utf8'), new RegExp(`^NSpid:\\s+${pid}\\s+1$`, 'm'), 'not the init of a pid namespace of its own');
      const ns = (p: number, type: string) => fs.readlinkSync(`/proc/${p}/ns/${type}`);
      for (const type of ['pid', 'ipc', 'uts', 'mnt', 'cgroup']) assert.notEqual(ns(pid, type), ns(agent.proc.pid!, type), `${type} namespace not its own`);
      assert.equal(ns(pid, 'net'), ns(agent.proc.pid!, 'net'), "the network namespace is the guest's");
      const stats = await client.stats(id);
      assert.equal(stats.cgroup, `/sys/fs/cgroup${parent}/${id}`);
      const cgroupDir = path.join(`/proc/${agent.proc.pid}/root`, stats.cgroup);
      assert.deepEqual(fs.readFileSync(path.join(cgroupDir, 'cgroup.procs'), 'utf8').trim().split('\n'), [String(pid)]);
      assert.equal(await client.startContainer(id), pid);
      await rejectsWith(client.startContainer(id), (e) => assert.match(e.message, /the container is running, not created/));

      // A container of the pod joins its IPC and UTS namespaces by path, as the shim's guest spec has it.
      const app = newId();
      const appSpec = spec(['hostname']);
      (appSpec.linux as { namespaces: unknown[] }).namespaces = [{ type: 'pid' }, { type: 'mount' }, { type: 'ipc', path: `/proc/${pid}/ns/ipc` }, { type: 'uts', path: `/proc/${pid}/ns/uts` }];
      delete appSpec.hostname;
      await client.createContainer(app, appSpec, { stdout: true });
      const io = await client.attachStdio(app, '', { stdout: true });
      const out = readAll(io.stdout!);
      await client.startContainer(app);
      assert.equal((await client.waitProcess(app, '', { timeoutMs: 30_000 })).exitStatus, 0);
      assert.equal((await out).toString(), 'pod-host\n');
      await client.deleteContainer(app);

      await rejectsWith(client.execProcess(id, 'e', ociProcess({ args: ['true'] }), {}), (e) => {
        assert.equal(e.code, 'FAILED_PRECONDITION');
        assert.match(e.message, /the pod's sandbox is the agent's pause process, which runs nothing else/);
      });
      await rejectsWith(client.updateContainer(id, { memory: { limit: 1 << 30 } }), (e) => assert.equal(e.code, 'FAILED_PRECONDITION'));
      await client.pauseContainer(id);
      assert.equal(fs.readFileSync(path.join(cgroupDir, 'cgroup.freeze'), 'utf8').trim(), '1');
      await client.resumeContainer(id);
      assert.equal(fs.readFileSync(path.join(cgroupDir, 'cgroup.freeze'), 'utf8').trim(), '0');
      const waiting = client.waitProcess(id, '');
      await client.signalProcess(id, '', 'SIGTERM');
      assert.equal((await waiting).exitStatus, 0, 'pause ends with 0 on SIGTERM');
      await client.deleteContainer(id);
      assert.equal(fs.existsSync(cgroupDir), false, 'the cgroup was left behind');
      await rejectsWith(client.stats(id), (e) => assert.equal(e.code, 'NOT_FOUND'));
    } finally {
      await client.deleteContainer(id).catch(() => {});
      fs.rmdirSync(path.join(`/proc/${agent.proc.pid}/root/sys/fs/cgroup`, parent));
    }
  });

  it('refuses a pause holder with an unknown namespace, a cgroup path that is not clean and absolute, or stdio, by name', async () => {
    const cases: Array<[Parameters<AgentClient['createContainer']>[3], Parameters<AgentClient['createContainer']>[2], RegExp]> = [
      [{ pause: { namespaces: ['ipc', 'network'] } }, {}, /pause holder: unknown namespace "network"/],
      [{ pause: { namespaces: [], cgroup: 'k8s.io/x' } }, {}, /pause holder: cgroup "k8s.io\/x" is not a clean absolute path/],
      [{ pause: { namespaces: [], cgroup: '/k8s.io/../x' } }, {}, /cgroup "\/k8s.io\/..\/x" is not a clean/],
      [{ pause: { namespaces: [] } }, { stdout: true }, /pause holder: it has no stdio/],
    ];
    for (const [opts, stdio, message] of cases) {
      const id = newId();
      await rejectsWith(client.createContainer(id, {}, stdio, opts), (e) => {
        assert.equal(e.code, 'INVALID_ARGUMENT');
        assert.match(e.message, message);
      });
      await rejectsWith(client.stats(id), (e) => assert.equal(e.code, 'NOT_FOUND'));
    }
  });

  it('updates the memory and pids limits of a container (crun update), checked through Stats', async (t) => {
    const id = newId();
    await client.createContainer(id, spec(['sleep', '1000']), {});
    // The cgroup as the agent sees it: on a host whose memory and pids controllers are bound to
    // cgroup v1 hierarchies, the agent's cgroup2 mount has neither (the VM test covers them).
    const cgroupDir = path.join(`/proc/${agent.proc.pid}/root`, (await client.stats(id)).cgroup);
    const missing = ['memory.max', 'pids.max'].filter((f) => !fs.existsSync(path.join(cgroupDir, f)));
    if (missing.length) {
      await client.deleteContainer(id);
      t.skip(`the container's cgroup has no ${missing.join(', ')} on this host`);
      return;
    }
    // A created container can be updated before it starts.
    await client.updateContainer(id, { pids: { limit: 100 } });
    await client.startContainer(id);
    let stats = await client.stats(id);
    assert.equal(stats.pids.limit, 100);
    assert.equal(stats.memory.limit, 0, 'the spec sets no memory limit');
    await client.updateContainer(id, { memory: { limit: 33554432 }, pids: { limit: 42 } });
    stats = await client.stats(id);
    assert.equal(stats.memory.limit, 33554432);
    assert.equal(stats.pids.limit, 42);
    assert.equal(fs.readFileSync(path.join(cgroupDir, 'memory.max'), 'utf8').trim(), '33554432');
    // What the resources do not name stays; a paused container can be updated too.
    await client.pauseContainer(id);
    await client.updateContainer(id, { pids: { limit: 17 } });
    await client.resumeContainer(id);
    stats = await client.stats(id);
    assert.equal(stats.memory.limit, 33554432);
    assert.equal(stats.pids.limit, 17);
    // A refused update leaves the limits as they were.
    await rejectsWith(client.updateContainer(id, { unified: { 'cgroup.nosuch': '1' } }), (e) => assert.equal(e.code, 'RUNTIME'));
    stats = await client.stats(id);
    assert.equal(stats.memory.limit, 33554432);
    assert.equal(stats.pids.limit, 17);
    await client.deleteContainer(id);
  });

  it('refuses updates of unknown or stopped containers and resources that are not a JSON object', async () => {
    await rejectsWith(client.updateContainer('no-such-container', { pids: { limit: 5 } }), (e) => {
      assert.equal(e.code, 'NOT_FOUND');
      assert.match(e.message, /UpdateContainer: container "no-such-container" not found/);
    });
    const id = newId();
    await client.createContainer(id, spec(['sleep', '1000']), {});
    await client.startContainer(id);
    for (const bad of [[{ pids: { limit: 5 } }], 'a string', null]) {
      await rejectsWith(client.updateContainer(id, bad as object), (e) => {
        assert.equal(e.code, 'INVALID_ARGUMENT');
        assert.match(e.message, /resources_json is not a JSON object/);
      });
    }
    // crun's own refusal comes back with its message (a cgroup file that does not exist).
    await rejectsWith(client.updateContainer(id, { unified: { 'cgroup.nosuch': '1' } }), (e) => {
      assert.equal(e.code, 'RUNTIME');
      assert.match(e.message, new RegExp(`UpdateContainer\\(${id}\\): UpdateContainer ${id}: .*cgroup\\.nosuch`));
    });
    // The resources file does not outlive the call.
    assert.equal(fs.existsSync(path.join(agent.dir, 'state', 'containers', id, 'resources.json')), false);
    await client.signalProcess(id, '', 'SIGKILL');
    assert.equal((await client.waitProcess(id, '', { timeoutMs: 20_000 })).exitStatus, 137);
    await rejectsWith(client.updateContainer(id, { pids: { limit: 5 } }), (e) => {
      assert.equal(e.code, 'FAILED_PRECONDITION');
      assert.match(e.message, /the container is stopped, not running/);
    });
    await client.deleteContainer(id);
  });

  it("starts an init through crun's exec FIFO, but with `crun start` (run from the agent's sealed copy) for a spec with poststart hooks (they run); an init gone before its start is refused by name", async () => {
    const plain = newId();
    await client.createContainer(plain, spec(['sleep', '1000']), {});
    const pid = await client.startContainer(plain);
    await agent.logShows(new RegExp(`container ${plain}: started through its exec FIFO`));
    let comm = '';
    for (let i = 0; i < 200 && comm !== 'sleep'; i++, await new Promise((r) => setTimeout(r, 10))) comm = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    assert.equal(comm, 'sleep', 'the init did not exec its process');
    await client.deleteContainer(plain);

    const hooked = newId();
    const marker = path.join(os.tmpdir(), `stencil-poststart-${process.pid}-${hooked}`);
    // The hook's parent is `crun start`: its executable shows that crun ran from the agent's sealed copy.
    const hook = { path: '/bin/sh', args: ['sh', '-c', `echo "ran from $(readlink /proc/$PPID/exe)" > ${marker}`] };
    const withHook = { ...spec(['sleep', '1000']), hooks: { poststart: [hook] } };
    await client.createContainer(hooked, withHook, {});
    try {
      await client.startContainer(hooked);
      await agent.logShows(new RegExp(`container ${hooked}: crun start `));
      assert.doesNotMatch(agent.log(), new RegExp(`container ${hooked}: started through its exec FIFO`));
      assert.equal(fs.readFileSync(marker, 'utf8'), 'ran from /memfd:stencil-crun (deleted)\n', 'the poststart hook did not run, or crun did not run from the sealed copy');
    } finally {
      fs.rmSync(marker, { force: true });
      await client.deleteContainer(hooked);
    }

    const gone = newId();
    const initPid = await client.createContainer(gone, spec(['true']), {});
    process.kill(initPid, 'SIGKILL'); // the created init, waiting on the FIFO
    await client.waitProcess(gone, '', { timeoutMs: 30_000 });
    await rejectsWith(client.startContainer(gone), (e) => assert.match(e.message, /not created|no longer waits/));
    await client.deleteContainer(gone);
  });

  it('refuses a second create with the same id and reports crun failures', async () => {
    const id = newId();
    await client.createContainer(id, spec(['sleep', '1000']), {});
    await rejectsWith(client.createContainer(id, spec(['true']), {}), (e) => assert.equal(e.code, 'ALREADY_EXISTS'));
    await rejectsWith(client.startContainer(id).then(() => client.startContainer(id)), (e) =>
      assert.equal(e.code, 'FAILED_PRECONDITION'),
    );
    await client.deleteContainer(id);
    await rejectsWith(client.createContainer(newId(), '{not json', {}), (e) => assert.equal(e.code, 'RUNTIME'));
    const bad = spec(['true']);
    (bad.root as { path: string }).path = '/no/such/rootfs';
    const badId = newId();
    await rejectsWith(client.createContainer(badId, bad, {}), (e) => {
      assert.equal(e.code, 'RUNTIME');
      assert.equal(e.containerId, badId);
    });
    await rejectsWith(client.startContainer(badId), (e) => assert.equal(e.code, 'NOT_FOUND'));
    assert.equal((await client.ping()).protocolVersion, 1);
  });

  it('sets up the guest: hostname, entropy and mounts', async () => {
    const target = path.join(agent.dir, 'mnt', 'scratch');
    await client.setupGuest({
      hostname: 'stencil-unit',
      entropy: crypto.randomBytes(64),
      mounts: [{ source: 'tmpfs', target, fstype: 'tmpfs', options: ['nosuid', 'size=1m'] }],
    });
    // The agent has its own mount and UTS namespaces: look through its eyes.
    const mounts = fs.readFileSync(`/proc/${agent.proc.pid}/mountinfo`, 'utf8');
    assert.ok(mounts.includes(` ${target} `), `${target} is not mounted in the agent's namespace`);
    assert.notEqual(os.hostname(), 'stencil-unit', 'the host hostname changed');
    const r = await run(['hostname']);  // the container has a UTS namespace of its own
    assert.equal(r.stdout.toString(), 'stencil-test\n');
    await rejectsWith(client.setupGuest({ mounts: [{ source: 'x', target: 'relative', fstype: 'tmpfs' }] }), (e) =>
      assert.equal(e.code, 'INVALID_ARGUMENT'),
    );
    await rejectsWith(client.setupGuest({ entropy: Buffer.alloc(5000) }), (e) => assert.equal(e.code, 'INVALID_ARGUMENT'));
  });

  it('configures the pod NIC over rtnetlink: MAC, MTU, its addresses only, up, then the routes; names what the kernel refuses', async () => {
    const inAgentNet = (...args: string[]) => {
      const r = spawnSync('nsenter', ['-t', String(agent.proc.pid), '-n', ...args], { encoding: 'utf8' });
      assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    // A veth stands in for the VM's virtio-net; an address of the template's time must go.
    inAgentNet('ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'peer0');
    inAgentNet('ip', 'link', 'set', 'peer0', 'up');
    inAgentNet('ip', 'addr', 'add', '10.9.9.9/24', 'dev', 'eth0');
    const eth0 = { name: 'eth0', mac: '02:42:0a:f0:07:02', mtu: 1400, addresses: ['10.240.7.2/24', 'fd00:7::2/64'] };
    const routes = [
      { destination: 'default', gateway: '10.240.7.1', device: 'eth0' },
      { destination: '10.250.0.0/16', gateway: '', device: 'eth0' },
    ];
    await client.setupGuest({ interfaces: [eth0], routes });
    const link = inAgentNet('ip', '-o', 'link', 'show', 'eth0');
    assert.match(link, /link\/ether 02:42:0a:f0:07:02/);
    assert.match(link, /mtu 1400/);
    assert.match(link, /<[^>]*\bUP\b[^>]*>/);
    const addrs = inAgentNet('ip', '-o', 'addr', 'show', 'dev', 'eth0');
    assert.match(addrs, /inet 10\.240\.7\.2\/24/);
    assert.match(addrs, /inet6 fd00:7::2\/64/);
    assert.doesNotMatch(addrs, /10\.9\.9\.9/);
    const table = inAgentNet('ip', 'route', 'show');
    assert.match(table, /default via 10\.240\.7\.1 dev eth0/);
    assert.match(table, /10\.250\.0\.0\/16 dev eth0 scope link/);
    // Again (a pod set up twice): the same state, no "File exists".
    await client.setupGuest({ interfaces: [eth0], routes });
    assert.equal(inAgentNet('ip', '-o', '-4', 'addr', 'show', 'dev', 'eth0').trim().split('\n').length, 1);
    const refused: Array<[Parameters<AgentClient['setupGuest']>[0], RegExp]> = [
      [{ interfaces: [{ ...eth0, name: 'eth9' }] }, /SetupGuest: network: eth9: No such device/],
      [{ routes: [{ destination: '10.1.0.0/16', gateway: '192.0.2.1', device: 'eth0' }] }, /route to 10\.1\.0\.0\/16 via 192\.0\.2\.1: Network (is )?unreachable/],
      [{ routes: [{ destination: 'default', gateway: 'fd00:7::1', device: 'eth9' }] }, /route to default: device eth9: No such device/],
      [{ routes: [{ destination: '10.1.0.0/16', gateway: 'fd00:7::1', device: 'eth0' }] }, /mixes IPv4 and IPv6/],
      [{ interfaces: [{ ...eth0, addresses: ['10.240.7.2/33'] }] }, /address "10\.240\.7\.2\/33" is not an IPv4 or IPv6 CIDR/],
    ];
    for (const [req, message] of refused)
      await rejectsWith(client.setupGuest(req), (e) => assert.match(e.message, message));
  });

  it('writes the pod\'s net.* sysctls in its network namespace, and refuses other keys naming them', async () => {
    const read = (key: string) =>
      spawnSync('nsenter', ['-t', String(agent.proc.pid), '-n', 'cat', `/proc/sys/${key}`], { encoding: 'utf8' }).stdout.trim();
    const hostValue = fs.readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8').trim();
    await client.setupGuest({ sysctls: { 'net.ipv4.ip_unprivileged_port_start': '0', 'net/ipv4/conf/lo/forwarding': '1' } });
    assert.equal(read('net/ipv4/ip_unprivileged_port_start'), '0');
    assert.equal(read('net/ipv4/conf/lo/forwarding'), '1');
    assert.equal(fs.readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8').trim(), hostValue, 'the host\'s value changed');
    const bad: Array<[Record<string, string>, RegExp]> = [
      [{ 'kernel.hostname': 'x' }, /sysctl "kernel\.hostname" is not a net\.\* key/],
      [{ 'net.ipv4..ip_forward': '1' }, /not a net\.\* key/],
      [{ 'net/../kernel/hostname': 'x' }, /not a net\.\* key/],
      [{ 'net.ipv4.ip_forward': '1\n' }, /net\.ipv4\.ip_forward: the value .* line break/],
      [{ 'net.ipv4.no_such_knob': '1' }, /sysctl net\.ipv4\.no_such_knob = "1": No such file/],
    ];
    for (const [sysctls, message] of bad)
      await rejectsWith(client.setupGuest({ sysctls }), (e) => {
        assert.equal(e.code, 'INVALID_ARGUMENT', e.message);
        assert.match(e.message, message);
      });
  });
});
