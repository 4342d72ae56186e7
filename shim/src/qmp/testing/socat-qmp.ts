// Test support: a QMP session driven through socat (`socat - UNIX-CONNECT:PATH`), the way a
// user scripts QEMU and StratoVirt monitors. Commands go in one line at a time; each waits for
// its reply, and events are collected on the side.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { socketAcceptsConnections } from '../server.js';

export type QmpMessage = Record<string, unknown> & {
  return?: unknown;
  error?: { class: string; desc: string };
  event?: string;
  data?: Record<string, unknown>;
};

export class SocatQmp {
  readonly events: QmpMessage[] = [];
  greeting!: QmpMessage;
  private readonly child: ChildProcessWithoutNullStreams;
  private buffered = '';
  private replies: QmpMessage[] = [];
  private waiters: Array<() => void> = [];
  private closed = false;

  private constructor(socketPath: string) {
    this.child = spawn('socat', ['-', `UNIX-CONNECT:${socketPath}`]);
    this.child.stdout.on('data', (chunk: Buffer) => this.receive(chunk.toString('utf8')));
    this.child.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  /** Connects (once the socket exists), reads the greeting and negotiates capabilities. */
  static async connect(socketPath: string, timeoutMs = 20_000): Promise<SocatQmp> {
    await waitForSocket(socketPath, timeoutMs);
    const session = new SocatQmp(socketPath);
    session.greeting = await session.next(timeoutMs);
    const reply = await session.execute('qmp_capabilities');
    if (reply.error) throw new Error(`qmp_capabilities: ${reply.error.desc}`);
    return session;
  }

  /** Sends a raw line (for malformed input) and returns the next reply. */
  async send(line: string, timeoutMs = 20_000): Promise<QmpMessage> {
    this.child.stdin.write(line + '\n');
    return this.next(timeoutMs);
  }

  execute(command: string, args?: object, timeoutMs = 20_000): Promise<QmpMessage> {
    return this.send(JSON.stringify(args === undefined ? { execute: command } : { execute: command, arguments: args }), timeoutMs);
  }

  /** The return value of a command that must succeed. */
  async ok(command: string, args?: object): Promise<unknown> {
    const reply = await this.execute(command, args);
    if (reply.error) throw new Error(`${command}: ${reply.error.class}: ${reply.error.desc}`);
    return reply.return;
  }

  /** Polls query-migrate until its status is final; returns that reply's return value. */
  async waitMigration(timeoutMs = 30_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const info = (await this.ok('query-migrate')) as Record<string, unknown>;
      if (['completed', 'failed', 'cancelled'].includes(info.status as string)) return info;
      if (Date.now() > deadline) throw new Error(`migration still ${String(info.status)} after ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** Resolves with the first event named `name` seen so far or later. */
  async waitEvent(name: string, timeoutMs = 20_000): Promise<QmpMessage> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.find((e) => e.event === name);
      if (found) return found;
      if (this.closed) throw new Error(`QMP connection closed without a ${name} event`);
      await this.wait(deadline, `event ${name}`);
    }
  }

  close(): void {
    this.child.stdin.end();
  }

  private async next(timeoutMs: number): Promise<QmpMessage> {
    const deadline = Date.now() + timeoutMs;
    while (this.replies.length === 0) {
      if (this.closed) throw new Error('QMP connection closed before a reply');
      await this.wait(deadline, 'a QMP reply');
    }
    return this.replies.shift()!;
  }

  private wait(deadline: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} within the timeout`)), Math.max(0, deadline - Date.now()));
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  private receive(text: string): void {
    this.buffered += text;
    let newline: number;
    while ((newline = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, newline).trim();
      this.buffered = this.buffered.slice(newline + 1);
      if (!line) continue;
      const message = JSON.parse(line) as QmpMessage;
      if (message.event) this.events.push(message);
      else this.replies.push(message);
    }
    this.wake();
  }
}

async function waitForSocket(socketPath: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await socketAcceptsConnections(socketPath);
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`QMP socket ${socketPath} did not appear within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
