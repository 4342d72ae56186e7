// The task service against the real guest agent run on this host (with crun), through a Pod that
// talks to it directly (no VM): containerd's call sequences, FIFO stdio, exit ordering and codes.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type { AgentClient } from '../agent/client.js';
import { isRoot, type RunningAgent, startAgent } from '../agent/testing/agent-harness.js';
import { haveStaticBusybox, makeBusyboxRootfs, ociSpec } from '../agent/testing/busybox-oci.js';
import { encodeJsonAny, OCI_PROCESS_TYPE_URL, service as protoService, TASK_SERVICE_V3 } from '../containerd/protos.js';
import type { TaskMethod, TaskRequest } from '../containerd/task-api.js';
import type { ContainerRequest, Pod } from '../pod/types.js';
import { Code, RpcError } from '../rpc/errors.js';
import { DECODE_OPTIONS } from '../rpc/service.js';
import { createLogger } from '../util/log.js';
import { Status } from './process.js';
import { watchForgottenTasks } from './forgotten-tasks.js';
import { TaskService } from './task-service.js';

/** A Pod whose "VM" is the agent on this host: containers use the host rootfs path as is. */
function hostAgentPod(client: AgentClient): Pod {
  return {
    id: 'host-agent',
    createContainer: (req: ContainerRequest) => client.createContainer(req.id, { ...req.spec, root: { path: req.rootfs } }, req.stdio),
    startContainer: (id) => client.startContainer(id),
    execProcess: (id, execId, spec, stdio) => client.execProcess(id, execId, spec, stdio),
    attachStdio: (id, execId, which) => client.attachStdio(id, execId, which),
    signalProcess: (id, execId, signal, all) => client.signalProcess(id, execId, signal, { all }),
    waitProcess: (id, execId) => client.waitProcess(id, execId),
    resizePty: (id, execId, size) => client.resizePty(id, execId, size),
    closeStdin: (id, execId) => client.closeStdin(id, execId),
    stats: (id) => client.stats(id),
    pauseContainer: (id) => client.pauseContainer(id),
    resumeContainer: (id) => client.resumeContainer(id),
    deleteProcess: (id, execId) => client.deleteProcess(id, execId),
    deleteContainer: (id) => client.deleteContainer(id),
    updateContainer: (id, resources) => client.updateContainer(id, resources),
    checkpoint: () => Promise.reject(new Error('no VM to save: the agent runs on this host')),
    ended: new Promise(() => undefined),
    status: () => ({ vmState: 'running' }),
    injectNmi: () => {
      throw new Error('no VM: the agent runs on this host');
    },
    shutdown: async () => client.close(),
  };
}

/** A request as the transports hand it to the service: every field present (protobuf defaults for the rest). */
function request<M extends TaskMethod>(method: M, fields: Partial<TaskRequest<M>>): TaskRequest<M> {
  const type = protoService(TASK_SERVICE_V3).methods[method].resolvedRequestType!;
  return type.toObject(type.fromObject(fields), DECODE_OPTIONS) as TaskRequest<M>;
}

const skip = !isRoot ? 'needs root' : !haveStaticBusybox() ? 'busybox-static is not installed' : undefined;

describe('TaskService with the agent on this host', { skip }, () => {
  let agent: RunningAgent;
  let client: AgentClient;
  let dir: string;
  let rootfs: string;
  let service: TaskService;
  const events: Array<{ topic: string; type: string; event: Record<string, unknown> }> = [];
  let shutdowns = 0;

  before(async () => {
    agent = await startAgent({ isolated: true });
    client = await agent.client(30_000);
    dir = fs.mkdtempSync('/tmp/stencil-task-service-');
    rootfs = makeBusyboxRootfs(path.join(dir, 'rootfs'));
    service = new TaskService({
      namespace: 'test',
      createPod: async () => hostAgentPod(client),
      events: { publish: (topic, type, event) => events.push({ topic, type, event }) },
      logger: createLogger({ level: 'error' }),
      onShutdown: () => shutdowns++,
    });
  });

  after(async () => {
    await service?.close();
    await agent?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  let n = 0;
  /** A bundle with config.json (root.path = the shared busybox rootfs) and containerd-style FIFOs. */
  function bundle(args: string[], opts: { stdin?: boolean; terminal?: boolean } = {}) {
    const id = `t${++n}`;
    const b = path.join(dir, id);
    fs.mkdirSync(b);
    const spec = ociSpec(rootfs, { args, terminal: opts.terminal });
    fs.writeFileSync(path.join(b, 'config.json'), JSON.stringify(spec));
    const fifo = (name: string) => {
      const p = path.join(b, name);
      execFileSync('mkfifo', [p]);
      return p;
    };
    const paths = { stdin: opts.stdin ? fifo('stdin') : '', stdout: fifo('stdout'), stderr: opts.terminal ? '' : fifo('stderr') };
    // The client (ctr) opens its FIFO ends before Create.
    const out = reader(paths.stdout);
    const err = paths.stderr ? reader(paths.stderr) : Promise.resolve('');
    const stdinFd = opts.stdin ? fs.openSync(paths.stdin, fs.constants.O_RDWR) : undefined;
    return { id, bundle: b, paths, out, err, stdinFd };
  }

  function reader(p: string): Promise<string> {
    const sock = new net.Socket({ fd: fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK), readable: true, writable: false });
    return new Promise((resolve, reject) => {
      let text = '';
      sock.on('data', (d: Buffer) => (text += d.toString()));
      sock.on('end', () => resolve(text));
      sock.on('error', reject);
    });
  }

  async function rejectsCode(p: Promise<unknown>, code: number) {
    await assert.rejects(p, (err: unknown) => {
      assert.ok(err instanceof RpcError, String(err));
      assert.equal(err.code, code, err.message);
      return true;
    });
  }

  it('runs ctr run\'s sequence: Create, Wait before Start, Start, exit after output, State STOPPED, Delete', async () => {
    const t = bundle(['sh', '-c', 'echo hi; echo oops >&2; exit 3']);
    events.length = 0;
    const created = await service.create(request('Create', { id: t.id, bundle: t.bundle, rootfs: [], ...t.paths, terminal: false }));
    assert.ok((created.pid ?? 0) > 0);
    assert.equal((await service.state(request('State', { id: t.id, execId: '' }))).status, Status.Created);
    const waited = service.wait(request('Wait', { id: t.id, execId: '' }));
    await service.start(request('Start', { id: t.id, execId: '' }));
    const exit = await waited;
    assert.equal(exit.exitStatus, 3);
    assert.ok(exit.exitedAt instanceof Date);
    // The FIFO write ends are closed, so the readers reach EOF (ctr waits for that before Delete).
    assert.equal(await t.out, 'hi\n');
    assert.equal(await t.err, 'oops\n');
    const state = await service.state(request('State', { id: t.id, execId: '' }));
    assert.equal(state.status, Status.Stopped);
    assert.equal(state.exitStatus, 3);
    await rejectsCode(service.kill(request('Kill', { id: t.id, execId: '', signal: 9, all: false })), Code.NotFound);
    const deleted = await service.delete(request('Delete', { id: t.id, execId: '' }));
    assert.equal(deleted.exitStatus, 3);
    assert.deepEqual(
      events.map((e) => e.type),
      ['TaskCreate', 'TaskStart', 'TaskExit', 'TaskDelete'],
    );
    const taskExit = events[2]!.event;
    assert.equal(taskExit.id, t.id, 'TaskExit.id of the init process is the container id');
    await rejectsCode(service.state(request('State', { id: t.id, execId: '' })), Code.NotFound);
    await rejectsCode(service.delete(request('Delete', { id: t.id, execId: '' })), Code.NotFound);
  });

  it('relays a stdin FIFO and closes the process stdin on CloseIO', async () => {
    const t = bundle(['cat'], { stdin: true });
    await service.create(request('Create', { id: t.id, bundle: t.bundle, rootfs: [], ...t.paths, terminal: false }));
    const waited = service.wait(request('Wait', { id: t.id, execId: '' }));
    await service.start(request('Start', { id: t.id, execId: '' }));
    // As ctr does it: write, close its end, then CloseIO.
    fs.writeSync(t.stdinFd!, 'data\n');
    fs.closeSync(t.stdinFd!);
    await service.closeIO(request('CloseIO', { id: t.id, execId: '', stdin: true }));
    assert.equal((await waited).exitStatus, 0);
    assert.equal(await t.out, 'data\n');
    await service.delete(request('Delete', { id: t.id, execId: '' }));
  });

  it('execs a second process that sees the first one\'s files; kill gives 128+signal; exec exits come before the init exit', async () => {
    const t = bundle(['sh', '-c', 'echo from-init > /tmp/shared-file; exec sleep 1000']);
    await service.create(request('Create', { id: t.id, bundle: t.bundle, rootfs: [], ...t.paths, terminal: false }));
    await service.start(request('Start', { id: t.id, execId: '' }));
    const execOut = path.join(t.bundle, 'exec-stdout');
    execFileSync('mkfifo', [execOut]);
    const out = reader(execOut);
    const spec = encodeJsonAny(OCI_PROCESS_TYPE_URL, { args: ['sh', '-c', 'while [ ! -f /tmp/shared-file ]; do sleep 0.1; done; cat /tmp/shared-file'], cwd: '/', env: ['PATH=/bin:/usr/bin'], user: { uid: 0, gid: 0 } });
    await service.exec(request('Exec', { id: t.id, execId: 'e1', terminal: false, stdin: '', stdout: execOut, stderr: '', spec }));
    await rejectsCode(service.exec(request('Exec', { id: t.id, execId: 'e1', terminal: false, stdin: '', stdout: '', stderr: '', spec })), Code.AlreadyExists);
    assert.equal((await service.state(request('State', { id: t.id, execId: 'e1' }))).status, Status.Created);
    const execWait = service.wait(request('Wait', { id: t.id, execId: 'e1' }));
    await service.start(request('Start', { id: t.id, execId: 'e1' }));
    assert.equal((await execWait).exitStatus, 0);
    assert.equal(await out, 'from-init\n');
    await service.delete(request('Delete', { id: t.id, execId: 'e1' }));
    await rejectsCode(service.state(request('State', { id: t.id, execId: 'e1' })), Code.NotFound);
    await rejectsCode(service.delete(request('Delete', { id: t.id, execId: '' })), Code.FailedPrecondition);
    const waited = service.wait(request('Wait', { id: t.id, execId: '' }));
    await service.kill(request('Kill', { id: t.id, execId: '', signal: 9, all: false }));
    assert.equal((await waited).exitStatus, 137);
    await service.delete(request('Delete', { id: t.id, execId: '' }));
  });

  it("gives an exec's terminal the size sent between Exec and Start (as containerd's CRI does for kubectl exec -t)", async () => {
    const t = bundle(['sleep', '1000']);
    await service.create(request('Create', { id: t.id, bundle: t.bundle, rootfs: [], ...t.paths, terminal: false }));
    await service.start(request('Start', { id: t.id, execId: '' }));
    const execOut = path.join(t.bundle, 'tty-stdout');
    execFileSync('mkfifo', [execOut]);
    const out = reader(execOut);
    // crun exec applies consoleSize only after it has let the process run (its parent sets the
    // pty's size once the child is released), so on a loaded host the first instant can see 0x0:
    // the process looks for up to 2 s, then reports what it has.
    // (busybox's `stty size` of a 0x0 pty prints nothing on stdout, an error on stderr, and exits 0.)
    const waitForSize = 'i=0; while [ $i -lt 20 ] && [ -z "$(stty size 2>/dev/null)" ]; do sleep 0.1; i=$((i+1)); done; stty size';
    const spec = encodeJsonAny(OCI_PROCESS_TYPE_URL, { args: ['sh', '-c', waitForSize], terminal: true, cwd: '/', env: ['PATH=/bin:/usr/bin'], user: { uid: 0, gid: 0 } });
    await service.exec(request('Exec', { id: t.id, execId: 'tty', terminal: true, stdin: '', stdout: execOut, stderr: '', spec }));
    await service.resizePty(request('ResizePty', { id: t.id, execId: 'tty', width: 91, height: 27 }));
    const execWait = service.wait(request('Wait', { id: t.id, execId: 'tty' }));
    await service.start(request('Start', { id: t.id, execId: 'tty' }));
    assert.equal((await execWait).exitStatus, 0);
    assert.equal(await out, '27 91\r\n');
    await service.delete(request('Delete', { id: t.id, execId: 'tty' }));
    const waited = service.wait(request('Wait', { id: t.id, execId: '' }));
    await service.kill(request('Kill', { id: t.id, execId: '', signal: 9, all: false }));
    await waited;
    await service.delete(request('Delete', { id: t.id, execId: '' }));
  });

  it('kills and deletes a running task whose bundle has gone (containerd gave up on this daemon): the forgotten-task watch', async () => {
    const t = bundle(['sleep', '1000']);
    events.length = 0;
    await service.create(request('Create', { id: t.id, bundle: t.bundle, rootfs: [], ...t.paths, terminal: false }));
    await service.start(request('Start', { id: t.id, execId: '' }));
    let warnings = '';
    const logger = createLogger({ level: 'warn', stream: new Writable({ write: (chunk: Buffer, _e, done) => ((warnings += chunk.toString()), done()) }) });
    const stop = watchForgottenTasks({ service, logger, intervalMs: 50 });
    try {
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(service.containerIds(), [t.id], 'a task whose bundle is there was dropped');
      fs.renameSync(t.bundle, `${t.bundle}.gone`);
      for (let i = 0; i < 200 && service.containerIds().length > 0; i++) await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(service.containerIds(), []);
      assert.deepEqual(events.map((e) => e.type), ['TaskCreate', 'TaskStart', 'TaskExit', 'TaskDelete']);
      assert.equal(events[2]!.event.exitStatus, 128 + 9);
      assert.match(warnings, /containerd no longer knows this task \(its bundle is gone\)/);
      assert.equal(service.taskCount, 0);
    } finally {
      stop();
    }
  });

  it('refuses bad requests with the codes containerd understands, and stays usable', async () => {
    await rejectsCode(service.create(request('Create', { id: '../x', bundle: dir, rootfs: [] })), Code.InvalidArgument);
    await rejectsCode(service.create(request('Create', { id: 'nobundle', bundle: path.join(dir, 'missing'), rootfs: [] })), Code.InvalidArgument);
    const t = bundle(['true']);
    await rejectsCode(service.create(request('Create', { id: t.id, bundle: t.bundle, rootfs: [], stdout: 'tcp://x', stderr: '', stdin: '' })), Code.InvalidArgument);
    await service.create(request('Create', { id: t.id, bundle: t.bundle, rootfs: [], ...t.paths, terminal: false }));
    await rejectsCode(service.create(request('Create', { id: t.id, bundle: t.bundle, rootfs: [], ...t.paths })), Code.AlreadyExists);
    await rejectsCode(service.exec(request('Exec', { id: t.id, execId: 'bad', spec: { typeUrl: OCI_PROCESS_TYPE_URL, value: Buffer.from('{nope') } })), Code.InvalidArgument);
    // A task not yet started cannot be checkpointed; a restore needs a checkpoint written by Stencil.
    await rejectsCode(service.checkpoint(request('Checkpoint', { id: t.id, path: path.join(dir, 'cp') })), Code.FailedPrecondition);
    fs.mkdirSync(path.join(dir, 'not-a-checkpoint'));
    // (No stdio FIFOs: their readers would stay open, as nothing ever writes to them.)
    await rejectsCode(
      service.create(request('Create', { id: 'restored', bundle: t.bundle, rootfs: [], checkpoint: path.join(dir, 'not-a-checkpoint') })),
      Code.InvalidArgument,
    );
    // Deleting a created (never started) task is allowed.
    await service.delete(request('Delete', { id: t.id, execId: '' }));
    assert.equal(service.taskCount, 0);
    await service.shutdown(request('Shutdown', { id: t.id, now: false }));
    await new Promise((r) => setImmediate(r));
    assert.equal(shutdowns, 1);
  });
});
