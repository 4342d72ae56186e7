// serveQmp over MicroVms in this process (the API pod VMs will use), on the real /dev/kvm with a
// tiny guest counting in RAM: snapshots of a memfd-backed VM and of a copy-on-write clone carry
// the counter forward; quit and a VM ending on its own both end the monitor with SHUTDOWN.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { MicroVm } from '../hypervisor/microvm.js';
import { tinyElfKernel } from '../hypervisor/testing/tiny-kernel.js';
import { parseQmpChardev, serveQmp } from './serve.js';
import { SocatQmp } from './testing/socat-qmp.js';

// mov ebx, 0x200000; 1: inc qword [rbx]; jmp 1b
const COUNTER_LOOP = [0xbb, 0x00, 0x00, 0x20, 0x00, 0x48, 0xff, 0x03, 0xeb, 0xfb];
const COUNTER_OFFSET = 0x200000;

function counterIn(memoryFile: string): bigint {
  const fd = fs.openSync(memoryFile, 'r');
  try {
    const b = Buffer.alloc(8);
    fs.readSync(fd, b, 0, 8, COUNTER_OFFSET);
    return b.readBigUInt64LE();
  } finally {
    fs.closeSync(fd);
  }
}

describe('parseQmpChardev', () => {
  it("accepts QEMU's spellings of a listening Unix socket that does not wait", () => {
    assert.deepEqual(parseQmpChardev('unix:/run/vm.sock,server,nowait'), { path: '/run/vm.sock' });
    assert.deepEqual(parseQmpChardev('unix:/run/vm.sock,server=on,wait=off'), { path: '/run/vm.sock' });
  });
  it('refuses what it does not serve, saying what to write', () => {
    assert.throws(() => parseQmpChardev('tcp:localhost:4444,server,nowait'), /only Unix sockets/);
    assert.throws(() => parseQmpChardev('unix:/run/vm.sock,nowait'), /add ',server'/);
    assert.throws(() => parseQmpChardev('unix:/run/vm.sock,server'), /add ',nowait'/);
    assert.throws(() => parseQmpChardev('unix:/run/vm.sock,server,nowait,telnet'), /unknown option 'telnet'/);
    assert.throws(() => parseQmpChardev('unix:/run/vm.sock,server=maybe,nowait'), /'server=maybe' is not on or off/);
  });
});

describe('serveQmp', () => {
  let dir: string;
  let kernel: string;
  before(() => {
    dir = fs.mkdtempSync('/dev/shm/stencil-serve-qmp-');
    kernel = path.join(dir, 'vmlinux');
    fs.writeFileSync(kernel, tinyElfKernel(COUNTER_LOOP));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const spec = (name: string) => ({
    name,
    vcpus: 1,
    memoryBytes: 64 * 2 ** 20,
    kernel,
    cmdline: 'console=ttyS0',
    memoryDir: dir,
    memoryBacking: 'memfd' as const,
    virtioRng: true,
  });
  /** A started VM served on `<name>.sock`, with a socat session to it. */
  async function served(vm: MicroVm, name: string) {
    const socket = path.join(dir, `${name}.sock`);
    const handle = await serveQmp(vm, socket);
    const qmp = await SocatQmp.connect(socket);
    vm.start();
    return { socket, handle, qmp };
  }

  it('snapshots a running memfd VM and a clone of it with their RAM copied; quit ends the monitor', async () => {
    const vm = MicroVm.create(spec('serve-memfd'));
    const { handle, qmp } = await served(vm, 'memfd');
    try {
      await sleep(100);
      // Without stop: migrate pauses the VM itself (STOP), and leaves it paused (postmigrate).
      const first = path.join(dir, 'first');
      await qmp.ok('migrate', { uri: `file:${first}` });
      assert.equal((await qmp.waitMigration()).status, 'completed');
      await qmp.waitEvent('STOP');
      assert.equal(((await qmp.ok('query-status')) as { status: string }).status, 'postmigrate');
      const saved = counterIn(path.join(first, 'memory'));
      assert.ok(saved > 0n, 'the copied RAM lacks the guest counter');

      const clone = MicroVm.restore('serve-clone', { restoreFrom: first });
      const { socket: cloneSocket, handle: cloneHandle, qmp: cloneQmp } = await served(clone, 'clone');
      await sleep(100);
      await cloneQmp.ok('stop');
      const second = path.join(dir, 'second');
      await cloneQmp.ok('migrate', { uri: `file:${second}` });
      assert.equal((await cloneQmp.waitMigration()).status, 'completed');
      assert.ok(counterIn(path.join(second, 'memory')) > saved, "the clone's copy does not show its counter moving on");
      assert.equal(counterIn(path.join(first, 'memory')), saved, 'the clone wrote into the snapshot it came from');

      await cloneQmp.ok('quit');
      assert.deepEqual(await cloneHandle.ended, { by: 'quit' });
      assert.equal(clone.state, 'destroyed');
      await cloneHandle.close();
      assert.ok(!fs.existsSync(cloneSocket));
      cloneQmp.close();
    } finally {
      qmp.close();
      await handle.monitor.shutDown();
      await handle.close();
    }
    assert.equal(vm.state, 'destroyed');
  });

  it('sends a running template through exec: and its clone runs at once (the saved run state)', async () => {
    const ramFile = path.join(dir, 'running-template.ram');
    const stream = path.join(dir, 'running-template.state');
    const template = MicroVm.create(spec('serve-template'), { memoryFile: ramFile });
    const { handle, qmp } = await served(template, 'template');
    const cloneSocket = path.join(dir, 'incoming.sock');
    let restored: MicroVm | undefined;
    const incoming = await serveQmp(undefined, cloneSocket, {
      restore: (source) => (restored = MicroVm.restore('serve-incoming', { restoreState: source.kind === 'state' ? source.state : undefined, memoryPath: ramFile })),
    });
    const cq = await SocatQmp.connect(cloneSocket);
    try {
      await sleep(100);
      await qmp.ok('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
      await qmp.ok('migrate', { uri: `exec:cat >${stream}` });  // no stop: the VM is running
      assert.equal((await qmp.waitMigration()).status, 'completed');
      await qmp.waitEvent('STOP');
      const saved = counterIn(ramFile);
      assert.ok(saved > 0n);

      await cq.ok('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
      await cq.ok('migrate-incoming', { uri: `exec:cat ${stream}` });
      assert.equal((await cq.waitMigration()).status, 'completed');
      await cq.waitEvent('RESUME');
      assert.equal(((await cq.ok('query-status')) as { status: string }).status, 'running');
      assert.equal(restored?.state, 'running');
      const again = await cq.execute('migrate-incoming', { uri: `exec:cat ${stream}` });
      assert.match(again.error?.desc ?? '', /'-incoming' was not specified|already been started/);
      assert.equal(counterIn(ramFile), saved, 'the copy-on-write clone wrote into the RAM file');
    } finally {
      qmp.close();
      cq.close();
      await handle.monitor.shutDown();
      await incoming.monitor.shutDown();
      await Promise.all([handle.close(), incoming.close()]);
    }
    assert.ok(fs.existsSync(ramFile), 'the RAM file given with memoryFile was removed with its VM');
  });

  it('reports a VM that ends without quit with SHUTDOWN', async () => {
    const vm = MicroVm.create(spec('serve-ends'));
    const { handle, qmp } = await served(vm, 'ends');
    try {
      await vm.destroy();
      const end = await handle.ended;
      assert.equal(end.by === 'exit' && end.exit.reason, 'stopped');
      const shutdown = await qmp.waitEvent('SHUTDOWN');
      assert.deepEqual(shutdown.data, { guest: false, reason: 'host-signal' });
      assert.equal(((await qmp.ok('query-status')) as { status: string }).status, 'shutdown');
      const refused = await qmp.execute('cont');
      assert.match(refused.error?.desc ?? '', /Cannot continue a VM in state 'shutdown'/);
    } finally {
      qmp.close();
      await handle.close();
    }
  });

  it('serves before its VM arrives (a pod migrating in): inmigrate, then the VM handed over with attachVm, its end a SHUTDOWN', async () => {
    await assert.rejects(serveQmp(undefined, path.join(dir, 'nothing.sock')), /a monitor without a VM needs a restore function/);
    const socket = path.join(dir, 'later.sock');
    const handle = await serveQmp(undefined, socket, { vmAttachedLater: true });
    const qmp = await SocatQmp.connect(socket);
    try {
      assert.equal(((await qmp.ok('query-status')) as { status: string }).status, 'inmigrate');
      for (const uri of [`file:${dir}`, 'exec:true', `unix:${path.join(dir, 'in.sock')}`]) {
        const refused = await qmp.execute('migrate-incoming', { uri });
        assert.match(refused.error?.desc ?? '', /arrives by its pod's own migration: migrate-incoming is not available/, uri);
      }
      assert.deepEqual(await qmp.ok('query-migrate'), {}, 'a refused migrate-incoming left a migration behind');
      const vm = MicroVm.create(spec('serve-later'));
      handle.monitor.attachVm(vm);
      assert.throws(() => handle.monitor.attachVm(vm), /already has a VM/);
      vm.start();
      assert.equal(((await qmp.ok('query-status')) as { status: string }).status, 'running');
      await vm.destroy();
      assert.equal((await handle.ended).by, 'exit');
      await qmp.waitEvent('SHUTDOWN');
    } finally {
      qmp.close();
      await handle.close();
    }
  });
});
