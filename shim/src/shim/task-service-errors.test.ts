// Every layer's typed error keeps its code on the way to containerd: the task service is called
// the way the ttrpc and gRPC servers call it (encoded request, invokeMethod), with a Pod whose
// calls fail the way the pod, hypervisor and agent layers fail. No VM or agent needed.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigError } from '../../../runtime-config/src/config.js';
import { AgentCallError } from '../agent/errors.js';
import { encodeJsonAny, OCI_PROCESS_TYPE_URL } from '../containerd/protos.js';
import { taskServiceDefinitions } from '../containerd/task-api.js';
import { VmStateError } from '../hypervisor/errors.js';
import { MicroVm } from '../hypervisor/microvm.js';
import { PodVmError, validateContainerId } from '../pod/pod-vm.js';
import type { Pod } from '../pod/types.js';
import { Code, codeName, RpcError } from '../rpc/errors.js';
import { invokeMethod, type ServiceDefinition } from '../rpc/service.js';
import { createLogger } from '../util/log.js';
import { TaskService } from './task-service.js';

/** A Pod that creates containers (doing nothing) and fails as `overrides` say. */
function scriptedPod(overrides: Partial<Pod>): Pod {
  const unscripted = () => Promise.reject(new Error('not scripted'));
  return {
    id: 'scripted',
    createContainer: async () => 1,
    startContainer: unscripted,
    execProcess: unscripted,
    attachStdio: async () => ({}),
    signalProcess: unscripted,
    waitProcess: () => new Promise(() => undefined),
    resizePty: unscripted,
    closeStdin: unscripted,
    stats: unscripted,
    pauseContainer: unscripted,
    resumeContainer: unscripted,
    updateContainer: unscripted,
    deleteProcess: unscripted,
    deleteContainer: async () => undefined,
    checkpoint: unscripted,
    ended: new Promise(() => undefined),
    status: () => ({ vmState: 'running' }),
    injectNmi: () => {
      throw new Error('not scripted');
    },
    shutdown: async () => undefined,
    ...overrides,
  };
}

describe('task service: the layers’ error codes reach containerd', () => {
  let dir: string;
  let bundle: string;
  let kernel: string;
  const services: TaskService[] = [];

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-task-errors-'));
    bundle = path.join(dir, 'bundle');
    fs.mkdirSync(path.join(bundle, 'rootfs'), { recursive: true });
    fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ ociVersion: '1.1.0', root: { path: 'rootfs' } }));
    kernel = path.join(dir, 'vmlinux');
    fs.writeFileSync(kernel, Buffer.alloc(4096));
  });
  after(async () => {
    for (const s of services) await s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** The containerd.task.v3.Task definition over a service whose pod comes from `createPod`. */
  function serve(createPod: () => Promise<Pod>, onShutdown = () => undefined): ServiceDefinition {
    const service = new TaskService({
      namespace: 'test',
      createPod,
      events: { publish: () => undefined },
      logger: createLogger({ level: 'error' }),
      onShutdown,
    });
    services.push(service);
    return taskServiceDefinitions(service).find((d) => d.name === 'containerd.task.v3.Task')!;
  }

  function call(def: ServiceDefinition, method: string, request: Record<string, unknown>): Promise<Uint8Array> {
    const type = def.methods[method].requestType;
    const payload = type.encode(type.fromObject(request)).finish();
    return invokeMethod(def, method, payload, { service: def.name, method, metadata: {}, signal: new AbortController().signal });
  }

  async function failsWith(p: Promise<unknown>, code: number, message: RegExp): Promise<void> {
    await assert.rejects(p, (err: unknown) => {
      assert.ok(err instanceof RpcError, String(err));
      assert.equal(codeName(err.code), codeName(code), err.message);
      assert.match(err.message, message);
      return true;
    });
  }

  it('a container id the shim accepts and the pod layer refuses: InvalidArgument', async () => {
    const id = 'c'.repeat(100); // the shim takes up to 128 characters, the pod (agent) 64
    const def = serve(async () => scriptedPod({ createContainer: async (req) => (validateContainerId(req.id), 1) }));
    await failsWith(call(def, 'Create', { id, bundle }), Code.InvalidArgument, /^create task c+: invalid container id .*at most 64/);
  });

  it('a VM setting the VMM refuses (too many vCPUs): InvalidArgument, not Unavailable', async () => {
    const spec = { name: 'too-big', vcpus: 300, memoryBytes: 64 * 2 ** 20, kernel, cmdline: '', memoryDir: dir, memoryBacking: 'tmpfs' as const, virtioRng: false };
    const def = serve(async () => (MicroVm.create(spec), scriptedPod({})));
    await failsWith(call(def, 'Create', { id: 't1', bundle }), Code.InvalidArgument, /^cannot start the pod VM: vcpus must be 1\.\.254, got 300$/);
  });

  it('a configuration error: InvalidArgument; any other boot failure: Unavailable', async () => {
    const config = serve(() => Promise.reject(new ConfigError('/etc/x.toml', ['/etc/x.toml: runtime.bogus: unknown key'])));
    await failsWith(call(config, 'Create', { id: 't1', bundle }), Code.InvalidArgument, /runtime\.bogus: unknown key/);
    const other = serve(() => Promise.reject(new Error('disk on fire')));
    await failsWith(call(other, 'Create', { id: 't1', bundle }), Code.Unavailable, /^cannot start the pod VM: disk on fire$/);
  });

  it('agent and hypervisor errors in later calls keep their codes; untyped ones are Internal', async () => {
    const def = serve(async () =>
      scriptedPod({
        startContainer: () => Promise.reject(new AgentCallError('NOT_FOUND', 'container "t1" not found', { rpc: 'StartContainer', containerId: 't1' })),
        signalProcess: () => Promise.reject(new AgentCallError('RUNTIME', 'crun kill failed', { rpc: 'SignalProcess', containerId: 't1' })),
      }),
    );
    await call(def, 'Create', { id: 't1', bundle });
    await failsWith(call(def, 'Start', { id: 't1' }), Code.NotFound, /^start task t1: agent StartContainer\(t1\): container "t1" not found$/);
    await failsWith(call(def, 'Kill', { id: 't1', signal: 9 }), Code.Internal, /crun kill failed/);
    // Pause needs a running init: Start failed, so the service itself refuses first.
    await failsWith(call(def, 'Pause', { id: 't1' }), Code.FailedPrecondition, /it is not running/);
  });

  it('a kill that finds the guest hung, which ends the pod: SIGKILL succeeds with the task exited 255; another signal finds it finished', async () => {
    const hungPod = () => {
      let end!: (why: string) => void;
      const ended = new Promise<string>((resolve) => (end = resolve));
      const why = 'the guest of pod p stopped answering (agent SignalProcess(t1): no answer within 60000 ms, nor a ping within 10000 ms)';
      // As PodVm does it: the pod ends first, then the request that found the guest hung fails.
      return scriptedPod({ ended, signalProcess: () => (end(why), Promise.reject(new PodVmError('UNAVAILABLE', why))) });
    };
    const killed = serve(async () => hungPod());
    await call(killed, 'Create', { id: 't1', bundle });
    await call(killed, 'Kill', { id: 't1', signal: 9 });
    const exit = killed.methods.Wait.responseType.decode(await call(killed, 'Wait', { id: 't1' })) as unknown as { exitStatus: number };
    assert.equal(exit.exitStatus, 255);
    const termed = serve(async () => hungPod());
    await call(termed, 'Create', { id: 't1', bundle });
    await failsWith(call(termed, 'Kill', { id: 't1', signal: 15 }), Code.NotFound, /^init of t1: process already finished \(the guest of pod p stopped answering/);
  });

  it("a Start after the pod's VM ended under a created task: FailedPrecondition naming the end, not 'already started'", async () => {
    let end!: (why: string) => void;
    const ended = new Promise<string>((resolve) => (end = resolve));
    const def = serve(async () => scriptedPod({ ended }));
    await call(def, 'Create', { id: 't6', bundle });
    end('the VM of pod p ended on its own: triple-fault');
    await new Promise((r) => setImmediate(r));
    await failsWith(call(def, 'Start', { id: 't6' }), Code.FailedPrecondition, /^cannot start init of t6: it exited \(255\) before it was started: the VM of pod p ended on its own: triple-fault$/);
  });

  it("a Delete of a task still being created (containerd's Create gave up) cancels it: Canceled, no container, and the deferred Shutdown then runs", async () => {
    let bootPod!: (pod: Pod) => void;
    const created: string[] = [];
    let shutdowns = 0;
    const def = serve(
      () => new Promise<Pod>((resolve) => (bootPod = resolve)),
      () => void shutdowns++,
    );
    const creating = call(def, 'Create', { id: 't3', bundle });
    await new Promise((r) => setTimeout(r, 20)); // the create now waits for its pod's VM
    const deleting = call(def, 'Delete', { id: 't3' });
    await call(def, 'Shutdown', { id: 't3' }); // a create is still in flight: the shim stays
    await new Promise((r) => setImmediate(r));
    assert.equal(shutdowns, 0);
    bootPod(scriptedPod({ createContainer: async (req) => (created.push(req.id), 1) }));
    await failsWith(creating, Code.Canceled, /^task t3: create cancelled by a Delete of the task$/);
    const response = def.methods.Delete.responseType.decode(await deleting) as unknown as { exitStatus: number };
    assert.equal(response.exitStatus, 137);
    assert.deepEqual(created, [], 'no container made for a cancelled create');
    await new Promise((r) => setImmediate(r));
    assert.equal(shutdowns, 1, 'the Shutdown that came during the create ran once it rolled back');
    await failsWith(call(def, 'Delete', { id: 't3' }), Code.NotFound, /t3/);
  });

  it('a hypervisor state error from a pod call: FailedPrecondition', async () => {
    const def = serve(async () =>
      scriptedPod({
        startContainer: async () => 1,
        pauseContainer: () => Promise.reject(new VmStateError('cannot pause VM scripted: it is exited', 'ESTATE')),
      }),
    );
    await call(def, 'Create', { id: 't2', bundle });
    await call(def, 'Start', { id: 't2' });
    await failsWith(call(def, 'Pause', { id: 't2' }), Code.FailedPrecondition, /^pause task t2: cannot pause VM scripted: it is exited$/);
  });

  it("an exec whose Start fails: its output FIFO reaches EOF (containerd 1.6's client waits for it) and its Wait returns", async () => {
    const def = serve(async () =>
      scriptedPod({
        startContainer: async () => 1,
        execProcess: () => Promise.reject(new AgentCallError('UNAVAILABLE', 'the VM has ended', { rpc: 'ExecProcess', containerId: 't5' })),
      }),
    );
    await call(def, 'Create', { id: 't5', bundle });
    await call(def, 'Start', { id: 't5' });
    const fifo = path.join(dir, 'e1-stdout');
    execFileSync('mkfifo', [fifo]);
    // As a client does: the read end first, without waiting for a writer.
    const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    try {
      const spec = encodeJsonAny(OCI_PROCESS_TYPE_URL, { args: ['true'], cwd: '/' });
      await call(def, 'Exec', { id: 't5', execId: 'e1', stdout: fifo, spec });
      const waiting = call(def, 'Wait', { id: 't5', execId: 'e1' });
      assert.throws(() => fs.readSync(reader, Buffer.alloc(16)), /EAGAIN/, 'the shim holds the write end while the exec waits for Start');
      await failsWith(call(def, 'Start', { id: 't5', execId: 'e1' }), Code.Unavailable, /the VM has ended/);
      // The shim's end closes once its stream has ended (a tick or so later).
      let eof = false;
      for (let i = 0; i < 100 && !eof; i++) {
        try {
          eof = fs.readSync(reader, Buffer.alloc(16)) === 0;
        } catch {
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      assert.ok(eof, 'no EOF on the output FIFO within 2 s of the failed Start');
      const exit = def.methods.Wait.responseType.decode(await waiting) as unknown as { exitStatus: number };
      assert.equal(exit.exitStatus, 255);
      await failsWith(call(def, 'Start', { id: 't5', execId: 'e1' }), Code.FailedPrecondition, /already started/);
      await call(def, 'Delete', { id: 't5', execId: 'e1' });
    } finally {
      fs.closeSync(reader);
    }
  });
});
