// virtio-vsock (hybrid mode) end to end: a real guest kernel's AF_VSOCK sockets against host Unix
// sockets. Host -> guest: connect to <uds>, "CONNECT <port>\n", "OK <hostport>\n". Guest -> host:
// the guest connects to CID 2 port P and the VMM connects to <uds>_P.
//
// busybox has no vsock tool, so the guest side is integration-tests/lib/vsock-tool.c, compiled
// statically here and appended to the guest's initramfs as a second cpio archive (the kernel
// unpacks concatenated archives in order). One VM serves every case: its script runs the
// guest-initiated checks, prints "vsock-ready", and keeps an echo server on port 5000 until the
// host connects to port 5999.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MicroVm } from '../../shim/src/hypervisor/microvm.js';
import type { VmExit } from '../../shim/src/hypervisor/types.js';
import { builtGuestArtifacts, repoRoot } from '../../shim/src/util/paths.js';
import { BOOT_TIMEOUT_MS, ConsoleCapture, guestSpec, withTimeout } from '../lib/guest.js';

const GUEST_CID = 3;
const MiB = 2 ** 20;

/** A newc cpio archive holding the given files at the root (mode 0755). */
function cpio(files: Array<{ name: string; data: Buffer }>): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const pad = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
  const entry = (name: string, mode: number, data: Buffer) => {
    const fields = [ino++, mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, name.length + 1, 0];
    const header = Buffer.from('070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join(''), 'ascii');
    const nameBuf = Buffer.from(name + '\0', 'ascii');
    parts.push(header, nameBuf, pad(header.length + nameBuf.length), data, pad(data.length));
  };
  for (const f of files) entry(f.name, 0o100755, f.data);
  entry('TRAILER!!!', 0, Buffer.alloc(0));
  return Buffer.concat(parts);
}

/** The built initramfs plus /vsock-tool. */
function initrdWithTool(dir: string): string {
  const tool = path.join(dir, 'vsock-tool');
  execFileSync('gcc', ['-static', '-O2', '-Wall', '-o', tool, path.join(repoRoot(), 'integration-tests/lib/vsock-tool.c')]);
  const base = fs.readFileSync(builtGuestArtifacts().initrd);
  // An uncompressed archive must start 4-byte aligned; the kernel skips zero padding.
  const padding = Buffer.alloc((512 - (base.length % 512)) % 512);
  const out = path.join(dir, 'initrd-vsock.img');
  fs.writeFileSync(out, Buffer.concat([base, padding, cpio([{ name: 'vsock-tool', data: fs.readFileSync(tool) }])]));
  return out;
}

/** A deterministic, non-repeating-looking payload. */
function pattern(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 131 + (i >> 8) * 17 + seed * 59) & 0xff;
  return b;
}

interface GuestConnection {
  socket: net.Socket;
  /** The handshake line without its newline ('' if the VMM closed the connection instead). */
  line: string;
  /** Bytes that arrived after the line. */
  rest: Buffer;
}

/** Connects to <uds> and asks for guest port `port`; resolves after "OK ..." or the close. */
async function connectToGuest(uds: string, port: number): Promise<GuestConnection> {
  const socket = net.connect(uds);
  await once(socket, 'connect');
  socket.write(`CONNECT ${port}\n`);
  let buf = Buffer.alloc(0);
  return withTimeout(
    new Promise<GuestConnection>((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        const nl = buf.indexOf(10);
        if (nl >= 0) {
          cleanup();
          resolve({ socket, line: buf.subarray(0, nl).toString(), rest: buf.subarray(nl + 1) });
        }
      };
      const onEnd = () => {
        cleanup();
        resolve({ socket, line: '', rest: buf });
      };
      const onError = (err: Error) => {
        cleanup();
        reject(err);
      };
      const cleanup = () => {
        socket.off('data', onData);
        socket.off('end', onEnd);
        socket.off('close', onEnd);
        socket.off('error', onError);
      };
      socket.on('data', onData);
      socket.on('end', onEnd);
      socket.on('close', onEnd);
      socket.on('error', onError);
    }),
    30_000,
    `no answer to CONNECT ${port}`,
  );
}

/** Sends `data` (then half-closes) and collects everything until the peer's EOF. */
async function exchange(conn: GuestConnection, data: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [conn.rest];
  const done = new Promise<Buffer>((resolve, reject) => {
    conn.socket.on('data', (c: Buffer) => chunks.push(c));
    conn.socket.on('end', () => resolve(Buffer.concat(chunks)));
    conn.socket.on('error', reject);
  });
  conn.socket.end(data);
  return withTimeout(done, 120_000, 'echo did not complete');
}

describe('virtio-vsock (hybrid Unix-socket mode)', () => {
  let dir = '';
  let uds = '';
  let vm: MicroVm | undefined;
  let console_: ConsoleCapture;
  const servers: net.Server[] = [];
  const hostReceived = new Map<number, number>();  // bytes each guest->host connection delivered

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-vsock-'));
    uds = path.join(dir, 'v.sock');
    // Guest -> host: an echo server on host port 6000 (<uds>_6000); nothing on 7000.
    const echo = net.createServer((s) => {
      const id = hostReceived.size;
      hostReceived.set(id, 0);
      s.on('data', (c: Buffer) => hostReceived.set(id, (hostReceived.get(id) ?? 0) + c.length));
      s.on('error', () => {});
      s.pipe(s);
    });
    echo.listen(`${uds}_6000`);
    await once(echo, 'listening');
    servers.push(echo);

    const script = [
      '/vsock-tool listen 5000 &',
      '/vsock-tool echo-client 2 6000 16 1',
      `/vsock-tool echo-client 2 6000 ${MiB} 2`,
      '/vsock-tool parallel 20 2 6000 65536 | grep parallel',
      '/vsock-tool connect-expect-fail 2 7000',
      'echo vsock-ready',
      '/vsock-tool wait 5999',
    ].join('\n');
    vm = MicroVm.create(guestSpec(script, { initrd: initrdWithTool(dir), vsock: { guestCid: GUEST_CID, udsPath: uds } }));
    console_ = new ConsoleCapture(vm);
    vm.start();
    await console_.waitFor(/vsock-ready/, BOOT_TIMEOUT_MS + 300_000);
  });

  after(async () => {
    let exit: VmExit | undefined;
    try {
      if (vm) {
        try {
          // Release the guest (its script waits for a connection to port 5999), then let it power off.
          const c = await connectToGuest(uds, 5999).catch(() => undefined);
          c?.socket.destroy();
          exit = await withTimeout(vm.waitExit(), 60_000, 'guest did not power off', console_).catch(() => undefined);
        } finally {
          await vm.destroy();
          process.stdout.write(`# --- guest console ---\n${console_.text.replace(/^/gm, '# ')}\n`);
        }
        assert.equal(exit?.reason, 'poweroff');
        assert.equal(fs.existsSync(uds), false, 'the VMM removed its Unix socket');
      }
    } finally {
      for (const s of servers) s.close(); // even after a failed check: a listening server keeps this file's process alive
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('host -> guest: CONNECT/OK handshake, then an echo', async () => {
    const conn = await connectToGuest(uds, 5000);
    assert.match(conn.line, /^OK \d+$/);
    const reply = await exchange(conn, Buffer.from('hello through vsock\n'));
    assert.equal(reply.toString(), 'hello through vsock\n');
  });

  it('host -> guest: 1 MiB each way, byte-identical', async () => {
    const conn = await connectToGuest(uds, 5000);
    assert.match(conn.line, /^OK \d+$/);
    const data = pattern(MiB, 1);
    const reply = await exchange(conn, data);
    assert.equal(reply.length, data.length);
    assert.ok(reply.equals(data), 'echoed bytes differ');
  });

  it('host -> guest: 20 concurrent connections', async () => {
    const conns = await Promise.all(Array.from({ length: 20 }, () => connectToGuest(uds, 5000)));
    const ports = new Set(conns.map((c) => c.line));
    assert.equal(ports.size, 20, `each connection gets its own host port: ${[...ports].join(', ')}`);
    const replies = await Promise.all(conns.map((c, i) => exchange(c, pattern(64 * 1024 + i, i + 7))));
    replies.forEach((r, i) => assert.ok(r.equals(pattern(64 * 1024 + i, i + 7)), `connection ${i} echoed wrong bytes`));
  });

  it('host -> guest: a port nobody listens on is refused (connection closed, no OK)', async () => {
    const conn = await connectToGuest(uds, 7001);
    assert.equal(conn.line, '');
    conn.socket.destroy();
  });

  it('guest -> host: connects to <uds>_<port> and echoes', () => {
    assert.match(console_.text, /echo-client 6000 ok 16\b/);
  });

  it('guest -> host: 1 MiB each way, byte-identical', () => {
    assert.match(console_.text, new RegExp(`echo-client 6000 ok ${MiB}\\b`));
    assert.ok([...hostReceived.values()].includes(MiB), 'the host received exactly 1 MiB on one connection');
  });

  it('guest -> host: 20 concurrent connections', () => {
    assert.match(console_.text, /parallel ok 20 of 20/);
  });

  it('guest -> host: a port nobody listens on is refused', () => {
    assert.match(console_.text, /connect 7000 refused: Connection reset by peer/);
  });
});
