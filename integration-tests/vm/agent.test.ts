// The guest agent end to end: a VM booted with stencil_agent=1, the agent reached over the
// VMM's hybrid vsock, a busybox rootfs shared from the host over virtio-9p and mounted by
// SetupGuest, containers run by crun inside the guest.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { AgentClient } from '../../shim/src/agent/client.js';
import { haveStaticBusybox, makeBusyboxRootfs, ociSpec } from '../../shim/src/agent/testing.js';
import { connectVsock } from '../../shim/src/agent/vsock.js';
import { MicroVm } from '../../shim/src/hypervisor/microvm.js';
import { BOOT_TIMEOUT_MS, ConsoleCapture, guestSpec, withTimeout } from '../lib/guest.js';

const GUEST_ROOTFS = '/run/stencil/rootfs';
const CALL_TIMEOUT_MS = 120_000;

function readAll(stream: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

describe('guest agent in a VM', { skip: haveStaticBusybox() ? undefined : 'busybox-static is not installed' }, () => {
  let dir: string;
  let vm: MicroVm;
  let console: ConsoleCapture;
  let client: AgentClient;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-agent-vm-'));
    const rootfs = makeBusyboxRootfs(path.join(dir, 'rootfs'));
    const udsPath = path.join(dir, 'vsock.sock');
    vm = MicroVm.create(
      guestSpec(undefined, {
        append: 'stencil_agent=1',
        memoryBytes: 512 * 2 ** 20,
        vsock: { guestCid: 3, udsPath },
        shares: [{ tag: 'rootfs', hostPath: rootfs, readOnly: false }],
      }),
    );
    console = new ConsoleCapture(vm);
    vm.start();
    await console.waitFor(/stencil-agent: .*listening on vsock port 1024/);
    client = await withTimeout(
      AgentClient.connect({ connect: () => connectVsock(udsPath, 1024, 30_000), timeoutMs: CALL_TIMEOUT_MS, connectTimeoutMs: 60_000 }),
      BOOT_TIMEOUT_MS,
      'could not connect to the agent',
      console,
    );
    await client.setupGuest({
      time: new Date(),
      hostname: 'stencil-pod',
      entropy: crypto.randomBytes(256),
      mounts: [{ source: 'rootfs', target: GUEST_ROOTFS, fstype: '9p', options: ['trans=virtio', 'version=9p2000.L'] }],
    });
  });

  after(async () => {
    client?.close();
    await vm?.destroy();
    if (console) process.stdout.write(`# --- guest console ---\n${console.text.replace(/\r/g, '').replace(/^/gm, '# ')}\n`);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  let n = 0;
  async function run(args: string[], stdin?: Buffer) {
    const id = `vm-c${++n}`;
    await client.createContainer(id, ociSpec(GUEST_ROOTFS, { args }), { stdin: !!stdin, stdout: true, stderr: true });
    const io = await client.attachStdio(id, '', { stdin: !!stdin, stdout: true, stderr: true });
    const out = readAll(io.stdout!);
    const err = readAll(io.stderr!);
    await client.startContainer(id);
    if (stdin) io.stdin!.end(stdin);
    const exit = await withTimeout(client.waitProcess(id, ''), CALL_TIMEOUT_MS, `${args.join(' ')} did not exit`, console);
    const result = { exit, stdout: await out, stderr: await err };
    await client.deleteContainer(id);
    return result;
  }

  it('answers Ping over vsock', async () => {
    assert.equal((await client.ping()).protocolVersion, 1);
  });

  it('runs echo hello in a container: stdout exactly "hello\\n", exit 0', async () => {
    const r = await run(['echo', 'hello']);
    assert.equal(r.stdout.toString(), 'hello\n');
    assert.equal(r.stderr.toString(), '');
    assert.equal(r.exit.exitStatus, 0);
  });

  it("reports sh -c 'exit 7' as 7", async () => {
    assert.equal((await run(['sh', '-c', 'exit 7'])).exit.exitStatus, 7);
  });

  it('round-trips 1 MiB of random bytes through cat over stdin and stdout', async () => {
    const data = crypto.randomBytes(2 ** 20);
    const r = await run(['cat'], data);
    assert.equal(r.exit.exitStatus, 0);
    assert.equal(r.stdout.length, data.length);
    assert.ok(r.stdout.equals(data), 'stdout differs from what went into stdin');
  });
});
