// A minimal QMP client for driving QEMU itself (the benchmarks' anchor): connect to its monitor
// socket, negotiate, run commands one at a time and wait for events. QEMU writes one JSON object
// per line, so lines are the framing here. (Stencil's own QMP server is shim/src/qmp/.)
import net from 'node:net';

export type QmpMessage = Record<string, unknown>;

export class QmpClient {
  private buffer = '';
  private replyWaiters: Array<{ resolve: (m: QmpMessage) => void; reject: (e: Error) => void }> = [];
  private events: QmpMessage[] = [];
  private eventWaiters: Array<{ match: (e: QmpMessage) => boolean; resolve: (e: QmpMessage) => void }> = [];
  private closed: Error | undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    const fail = (err: Error) => {
      this.closed ??= err;
      for (const w of this.replyWaiters.splice(0)) w.reject(err);
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('the QMP connection closed')));
  }

  /** Connects (retrying until `timeoutMs` while QEMU creates the socket), reads the greeting, negotiates. */
  static async connect(socketPath: string, timeoutMs = 30_000): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect(socketPath);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        const client = new QmpClient(socket);
        const greeting = await client.next();
        if (!('QMP' in greeting)) throw new Error(`unexpected QMP greeting ${JSON.stringify(greeting)}`);
        await client.execute('qmp_capabilities');
        return client;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if ((code !== 'ENOENT' && code !== 'ECONNREFUSED') || Date.now() > deadline)
          throw new Error(`QMP ${socketPath}: ${(err as Error).message}`, { cause: err });
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  }

  /** Runs a command; resolves with its `return` value, rejects with QEMU's error. */
  async execute(command: string, args?: object): Promise<unknown> {
    if (this.closed) throw this.closed;
    const reply = new Promise<QmpMessage>((resolve, reject) => this.replyWaiters.push({ resolve, reject }));
    this.socket.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n');
    const m = await reply;
    if (m.error) throw new Error(`QMP ${command}${args ? ` ${JSON.stringify(args)}` : ''}: ${JSON.stringify(m.error)}`);
    return m.return;
  }

  /** The first event (seen before or after this call) that `match` accepts. */
  waitEvent(match: (e: QmpMessage) => boolean): Promise<QmpMessage> {
    const seen = this.events.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => this.eventWaiters.push({ match, resolve }));
  }

  close(): void {
    this.socket.destroy();
  }

  private next(): Promise<QmpMessage> {
    return new Promise((resolve, reject) => this.replyWaiters.push({ resolve, reject }));
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (!line) continue;
      const m = JSON.parse(line) as QmpMessage;
      if ('event' in m) {
        this.events.push(m);
        this.eventWaiters = this.eventWaiters.filter((w) => (w.match(m) ? (w.resolve(m), false) : true));
      } else {
        this.replyWaiters.shift()?.resolve(m);
      }
    }
  }
}
