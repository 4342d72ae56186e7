// StreamSession against a local stand-in for the CRI stream server: the handshake, the channel
// prefixes, fragmented and long (16-bit length) messages, a ping, masked client frames, the
// error channel's exit code, and a refused upgrade.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';
import { test } from 'node:test';
import { Channel, StreamSession } from './cri-stream.js';

/** An unmasked server frame. */
function serverFrame(op: number, payload: Buffer, fin = true): Buffer {
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0, len]) : Buffer.from([0, 126, len >> 8, len & 0xff]);
  head[0] = (fin ? 0x80 : 0) | op;
  return Buffer.concat([head, payload]);
}

/** The masked client frames in `data` (the test's are short, each whole in one chunk). */
function clientFrames(data: Buffer): { op: number; payload: Buffer; masked: boolean }[] {
  const out: { op: number; payload: Buffer; masked: boolean }[] = [];
  for (let off = 0; off < data.length; ) {
    const masked = (data[off + 1] & 0x80) !== 0;
    const len = data[off + 1] & 0x7f;
    const mask = data.subarray(off + 2, off + 6);
    out.push({ op: data[off] & 0x0f, payload: Buffer.from(data.subarray(off + 6, off + 6 + len).map((b, i) => b ^ mask[i % 4])), masked });
    off += 6 + len;
  }
  return out;
}

function withServer(onSocket: (sock: net.Socket) => void, refuse = false): Promise<{ url: string; close: () => void }> {
  const server = http.createServer((_, res) => res.writeHead(404).end('no such token'));
  server.on('upgrade', (req, sock: net.Socket) => {
    if (refuse) return sock.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 4\r\n\r\nnope');
    const accept = crypto.createHash('sha1').update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    sock.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: ${req.headers['sec-websocket-protocol']}\r\n\r\n`,
    );
    onSocket(sock);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/exec/tok`, close: () => server.close() })),
  );
}

test('StreamSession: channels, fragments, a long message, ping, masked stdin, exit code', async () => {
  const long = Buffer.alloc(300, 'x');
  const got: { op: number; payload: string; masked: boolean }[] = [];
  const srv = await withServer((sock) => {
    sock.on('data', (d: Buffer) => {
      for (const f of clientFrames(d)) onFrame(f);
    });
    const onFrame = (f: { op: number; payload: Buffer; masked: boolean }) => {
      got.push({ op: f.op, payload: f.payload.toString('latin1'), masked: f.masked });
      if (f.op !== 2 || f.payload[0] !== Channel.Stdin) return; // the pong
      sock.write(serverFrame(2, Buffer.from([Channel.Stdout]))); // a channel's opening (empty) message
      sock.write(serverFrame(2, Buffer.concat([Buffer.from([Channel.Stdout]), Buffer.from('echo: ')]), false));
      sock.write(serverFrame(0, f.payload.subarray(1)));
      sock.write(serverFrame(2, Buffer.concat([Buffer.from([Channel.Stderr]), long])));
      const status = { status: 'Failure', reason: 'NonZeroExitCode', details: { causes: [{ reason: 'ExitCode', message: '9' }] } };
      sock.write(serverFrame(2, Buffer.concat([Buffer.from([Channel.Error]), Buffer.from(JSON.stringify(status))])));
      sock.end(serverFrame(8, Buffer.from([0x03, 0xe8])));
    };
    sock.write(serverFrame(9, Buffer.from('hi')));
  });
  try {
    const s = await StreamSession.open(srv.url);
    s.write('abc');
    const r = await s.done(5000);
    assert.equal(r.stdout, 'echo: abc');
    assert.equal(r.stderr, long.toString());
    assert.equal(r.exitCode, 9);
    assert.deepEqual(got.slice(0, 2), [
      { op: 10, payload: 'hi', masked: true },
      { op: 2, payload: '\u0000abc', masked: true },
    ]);
  } finally {
    srv.close();
  }
});

test('StreamSession in port-forward mode: the port number leading each channel is taken off', async () => {
  const port = Buffer.from([0x90, 0x1f]); // 8080, little-endian
  const srv = await withServer((sock) => {
    sock.write(serverFrame(2, Buffer.concat([Buffer.from([0]), port])));
    sock.write(serverFrame(2, Buffer.concat([Buffer.from([1]), port])));
    sock.write(serverFrame(2, Buffer.from('\u0000hello')));
    sock.end(serverFrame(2, Buffer.from('\u0000\u0001\u0002')));
  });
  try {
    const s = await StreamSession.open(`${srv.url}?port=8080`, 5000, { portForward: true });
    await s.ended(5000);
    assert.equal(s.received(0), 'hello\u0001\u0002');
    assert.equal(s.received(1), '');
  } finally {
    srv.close();
  }
});

test('StreamSession.open: a refused upgrade rejects with the status', async () => {
  const srv = await withServer(() => undefined, true);
  try {
    await assert.rejects(StreamSession.open(srv.url), /CRI stream http:\/\/127\.0\.0\.1:\d+\/exec\/tok/);
  } finally {
    srv.close();
  }
});
