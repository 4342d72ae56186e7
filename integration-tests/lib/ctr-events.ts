// `ctr events` of a private containerd, collected while the tests run: what containerd received
// from the shims (over Events/Forward) and republished, as ctr decodes it.
import { type ChildProcess, spawn } from 'node:child_process';
import { type ContainerdInstance, MARKER } from './containerd.js';

export interface ContainerdEvent {
  namespace: string;
  topic: string;
  /** The event decoded by ctr to JSON (Go field names: container_id, exit_status, ...). */
  body: Record<string, unknown>;
}

// ctr prints `<timestamp> <namespace> <topic> <event as JSON>`; the timestamp has spaces in it.
const LINE = /^(.*?) (\S+) (\/[\w/-]+) ?(.*)$/;

export class EventWatch {
  readonly events: ContainerdEvent[] = [];
  private readonly child: ChildProcess;
  private partial = '';
  private stderr = '';

  private constructor(c: ContainerdInstance) {
    // Without the instance marker: this long-lived ctr is the watcher, not something a scenario
    // left behind (leaks()). It ends with containerd at the latest (its connection breaks).
    const cmd = c.ctrCommand(['events']);
    const env = { ...cmd.env };
    delete env[MARKER];
    this.child = spawn(cmd.file, cmd.args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (d: Buffer) => this.take(d.toString()));
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
  }

  /** Starts `ctr events` and waits until its subscription is in place (an event of its own arrives). */
  static async start(c: ContainerdInstance): Promise<EventWatch> {
    const watch = new EventWatch(c);
    const probe = `events-probe-${process.pid}`;
    for (let i = 0; i < 60; i++) {
      await c.ctr(['namespaces', 'create', probe]);
      await c.ctr(['namespaces', 'remove', probe]);
      if (watch.events.some((e) => e.topic === '/namespaces/create')) return watch;
      if (watch.child.exitCode !== null) throw new Error(`ctr events exited (${watch.child.exitCode}): ${watch.stderr}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    watch.stop();
    throw new Error(`ctr events never reported an event: ${watch.stderr}`);
  }

  /** The task events of one container, in the order containerd published them. */
  taskEvents(containerId: string): ContainerdEvent[] {
    return this.events.filter((e) => e.topic.startsWith('/tasks/') && e.body.container_id === containerId);
  }

  /** Waits until the container's task events include `topic` (or throws, listing what came). */
  async waitFor(containerId: string, topic: string, ms = 15_000): Promise<ContainerdEvent[]> {
    for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) {
      const events = this.taskEvents(containerId);
      if (events.some((e) => e.topic === topic)) return events;
    }
    throw new Error(`no ${topic} event for ${containerId} within ${ms} ms; got ${JSON.stringify(this.taskEvents(containerId))}`);
  }

  stop(): void {
    this.child.kill('SIGKILL');
  }

  private take(text: string): void {
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop()!;
    for (const line of lines) {
      const m = LINE.exec(line.trim());
      if (!m) continue;
      let body: Record<string, unknown>;
      try {
        body = m[4] ? (JSON.parse(m[4]) as Record<string, unknown>) : {};
      } catch {
        body = { unparsed: m[4] };
      }
      this.events.push({ namespace: m[2]!, topic: m[3]!, body });
    }
  }
}
