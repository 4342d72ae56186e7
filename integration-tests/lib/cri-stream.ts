// The client side of CRI's streaming (the URL that Exec, Attach and PortForward return): a
// minimal WebSocket client (RFC 6455, over node:http's upgrade) speaking Kubernetes' channel
// protocol v4.channel.k8s.io, which the CRI stream server of containerd offers beside SPDY. Each
// binary message starts with its channel. Exec and attach: 0 stdin, 1 stdout, 2 stderr, 3 error
// (a JSON Status when the process ends: its exit code), 4 resize (JSON {Width, Height}). Port
// forwarding (URL?port=P): channel 0 carries the connection's data both ways, 1 its errors, and
// the server's first message on each starts with the port (16 bits, little-endian).
//
//   const url = await cri.exec({ containerId, cmd: ['sh'], tty: true, stdin: true, stdout: true });
//   const s = await StreamSession.open(url);
//   s.resize(100, 30);
//   s.write('stty size; exit 3\n');
//   const r = await s.done();   // { stdout, stderr, exitCode: 3, status }
import crypto from 'node:crypto';
import http from 'node:http';
import type { Duplex } from 'node:stream';
import { withDeadline } from '../../shim/src/util/deadline.js';

const PROTOCOL = 'v4.channel.k8s.io';
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
enum Op {
  Continuation = 0,
  Text = 1,
  Binary = 2,
  Close = 8,
  Ping = 9,
  Pong = 10,
}
export enum Channel {
  Stdin = 0,
  Stdout = 1,
  Stderr = 2,
  Error = 3,
  Resize = 4,
}

export interface StreamResult {
  stdout: string;
  stderr: string;
  /** The process's exit code: 0 on a Success status, else the ExitCode cause of the Failure. */
  exitCode: number | undefined;
  /** The error channel's JSON Status, as sent. */
  status: { status?: string; message?: string; reason?: string; details?: { causes?: { reason?: string; message?: string }[] } } | undefined;
}

/** One client frame: FIN set, masked (clients must mask), the given opcode. */
function frame(op: Op, payload: Buffer): Buffer {
  const mask = crypto.randomBytes(4);
  const len = payload.length;
  const head = len < 126 ? Buffer.alloc(2) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  head[0] = 0x80 | op;
  if (len < 126) head[1] = 0x80 | len;
  else if (len < 65536) {
    head[1] = 0x80 | 126;
    head.writeUInt16BE(len, 2);
  } else {
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  const body = Buffer.alloc(len);
  for (let i = 0; i < len; i++) body[i] = payload[i] ^ mask[i % 4];
  return Buffer.concat([head, mask, body]);
}

export class StreamSession {
  private buf = Buffer.alloc(0);
  private fragments: Buffer[] = [];
  private readonly out = new Map<number, Buffer[]>();
  /** Port forwarding: channels whose leading port number has been taken off. */
  private readonly portSeen = new Set<number>();
  private closed = false;
  /** The server sent its Close frame: the session is over, whatever the TCP connection does next. */
  private serverClosed = false;
  private readonly finished: Promise<void>;
  private listeners: (() => void)[] = [];

  private constructor(
    private readonly sock: Duplex,
    head: Buffer,
    private readonly portForward: boolean,
  ) {
    this.finished = new Promise((resolve, reject) => {
      sock.on('data', (d: Buffer) => this.onData(d));
      sock.once('close', () => {
        this.closed = true;
        this.notify();
        resolve();
      });
      sock.once('error', (e: NodeJS.ErrnoException) => {
        // The server closes the TCP connection right after its Close frame (RFC 6455 lets it);
        // our Close reply then meets a closed socket, whose RST may be read before its FIN.
        // After the server's Close that is the end of the session, not a failure.
        if (this.serverClosed && (e.code === 'ECONNRESET' || e.code === 'EPIPE')) {
          this.closed = true;
          this.notify();
          resolve();
          return;
        }
        reject(new Error(`CRI stream: ${e.message}`, { cause: e }));
      });
    });
    if (head.length > 0) this.onData(head);
  }

  /** Upgrades `url` (http://host:port/exec/<token> or /attach/<token>) to a WebSocket session. */
  static open(url: string, timeoutMs = 10_000, o: { portForward?: boolean } = {}): Promise<StreamSession> {
    const key = crypto.randomBytes(16).toString('base64');
    return new Promise((resolve, reject) => {
      const req = http.request(url, {
        method: 'GET',
        headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': key, 'Sec-WebSocket-Protocol': PROTOCOL },
        timeout: timeoutMs,
      });
      req.once('timeout', () => req.destroy(new Error(`no upgrade within ${timeoutMs} ms`)));
      req.once('error', (e) => reject(new Error(`CRI stream ${url}: ${e.message}`, { cause: e })));
      req.once('response', (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.once('end', () => reject(new Error(`CRI stream ${url}: HTTP ${res.statusCode} instead of an upgrade: ${body.trim()}`)));
      });
      req.once('upgrade', (res, sock, head) => {
        const accept = crypto.createHash('sha1').update(key + GUID).digest('base64');
        if (res.headers['sec-websocket-accept'] !== accept) return reject(new Error(`CRI stream ${url}: bad Sec-WebSocket-Accept`));
        if (res.headers['sec-websocket-protocol'] !== PROTOCOL)
          return reject(new Error(`CRI stream ${url}: server chose protocol ${JSON.stringify(res.headers['sec-websocket-protocol'])}, not ${PROTOCOL}`));
        sock.setTimeout(0);
        resolve(new StreamSession(sock, head, o.portForward ?? false));
      });
      req.end();
    });
  }

  private notify(): void {
    for (const l of this.listeners.splice(0)) l();
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    for (;;) {
      if (this.buf.length < 2) return;
      const fin = (this.buf[0] & 0x80) !== 0;
      const op = this.buf[0] & 0x0f;
      const masked = (this.buf[1] & 0x80) !== 0;
      let len = this.buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2));
        off = 10;
      }
      const maskKey = masked ? this.buf.subarray(off, off + 4) : undefined;
      if (masked) off += 4;
      if (this.buf.length < off + len) return;
      const payload = Buffer.from(this.buf.subarray(off, off + len));
      if (maskKey) for (let i = 0; i < len; i++) payload[i] ^= maskKey[i % 4];
      this.buf = this.buf.subarray(off + len);
      this.onFrame(fin, op, payload);
    }
  }

  private onFrame(fin: boolean, op: number, payload: Buffer): void {
    if (op === Op.Ping) {
      if (!this.closed && !this.sock.writableEnded) this.sock.write(frame(Op.Pong, payload));
      return;
    }
    if (op === Op.Close) {
      this.serverClosed = true;
      // One Close reply, whatever the server sends after its first Close.
      if (!this.closed && !this.sock.writableEnded) this.sock.end(frame(Op.Close, payload.subarray(0, 2)));
      return;
    }
    if (op !== Op.Binary && op !== Op.Text && op !== Op.Continuation) return;
    this.fragments.push(payload);
    if (!fin) return;
    const msg = Buffer.concat(this.fragments.splice(0));
    if (msg.length === 0) return;
    // The server opens each channel with an empty message (the channel byte alone), or, when
    // forwarding a port, with the port number.
    const ch = msg[0];
    let data = msg.subarray(1);
    if (this.portForward && !this.portSeen.has(ch) && data.length >= 2) {
      this.portSeen.add(ch);
      data = data.subarray(2);
    }
    if (data.length > 0) this.out.set(ch, [...(this.out.get(ch) ?? []), data]);
    this.notify();
  }

  /** What a channel has received so far. */
  received(ch: number): string {
    return Buffer.concat(this.out.get(ch) ?? []).toString();
  }

  /** Resolves once stdout matches `re` (e.g. a prompt); rejects after timeoutMs or when the stream ends first. */
  waitFor(re: RegExp, timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`CRI stream: no ${re} in stdout within ${timeoutMs} ms: ${JSON.stringify(this.received(Channel.Stdout))}`)), timeoutMs);
      const check = () => {
        if (re.test(this.received(Channel.Stdout))) {
          clearTimeout(timer);
          resolve();
        } else if (this.closed) {
          clearTimeout(timer);
          reject(new Error(`CRI stream ended without ${re} in stdout: ${JSON.stringify(this.received(Channel.Stdout))}`));
        } else this.listeners.push(check);
      };
      check();
    });
  }

  /** Sends on a channel: stdin by default (port forwarding: channel 0, the connection's data). */
  write(data: string | Buffer, ch: number = Channel.Stdin): void {
    this.sock.write(frame(Op.Binary, Buffer.concat([Buffer.from([ch]), Buffer.from(data)])));
  }

  /** The terminal's size (TTY sessions). */
  resize(width: number, height: number): void {
    this.sock.write(frame(Op.Binary, Buffer.concat([Buffer.from([Channel.Resize]), Buffer.from(JSON.stringify({ Width: width, Height: height }))])));
  }

  /** Waits for the server to end the session (the process exited); its output and exit code. */
  async done(timeoutMs = 30_000): Promise<StreamResult> {
    await this.ended(timeoutMs);
    const errText = this.received(Channel.Error);
    const status = errText ? (JSON.parse(errText) as StreamResult['status']) : undefined;
    let exitCode: number | undefined;
    if (status?.status === 'Success') exitCode = 0;
    else {
      const cause = status?.details?.causes?.find((c) => c.reason === 'ExitCode');
      if (cause?.message !== undefined) exitCode = Number(cause.message);
    }
    return { stdout: this.received(Channel.Stdout), stderr: this.received(Channel.Stderr), exitCode, status };
  }

  /** Waits until the server ends the session; rejects (closing it) after timeoutMs. */
  async ended(timeoutMs = 30_000): Promise<void> {
    await withDeadline(this.finished, timeoutMs, () => {
      this.sock.destroy();
      return new Error(`CRI stream: not ended within ${timeoutMs} ms; stdout so far ${JSON.stringify(this.received(Channel.Stdout))}`);
    });
  }

  /** Closes the session from this side. */
  close(): void {
    if (!this.closed && !this.sock.writableEnded) this.sock.end(frame(Op.Close, Buffer.from([0x03, 0xe8])));
  }
}
