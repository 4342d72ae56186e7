// Test support for the agent tests (agent-protocol.test.ts, agent-containers.test.ts, and the
// VM tests' malformed-input cases): the agent binary run on this host over --unix, a raw framed
// connection for hand-made frames, and small helpers. Not used by the shim itself.
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { repoRoot } from '../../util/paths.js';
import { AgentClient } from '../client.js';
import { AgentCallError } from '../errors.js';
import { encodeFrame, type Frame, FrameDecoder } from '../framing.js';
import { agentTypes, encodeMessage } from '../protocol.js';
import { connectUnix } from '../vsock.js';

export const isRoot = process.getuid?.() === 0;

export function agentBinary(): string {
  if (process.env.STENCIL_AGENT_BIN) return process.env.STENCIL_AGENT_BIN;
  // Cached by its input key: instant after the first build.
  return execFileSync(path.join(repoRoot(), 'guest/agent/build.sh'), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}

export interface RunningAgent {
  socket: string;
  dir: string;
  proc: ChildProcess;
  log: () => string;
  /**
   * Waits (up to timeoutMs) until the log matches `re`. The agent logs before it answers, but its
   * log comes over a pipe and its answer over the socket, which the event loop may read first.
   */
  logShows: (re: RegExp, timeoutMs?: number) => Promise<void>;
  client: (timeoutMs?: number) => Promise<AgentClient>;
  stop: () => Promise<void>;
}

// In the private namespace: cgroup2 at /sys/fs/cgroup (like the guest), then the agent.
const ISOLATE = `
if [ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" != cgroup2fs ]; then
  umount -l /sys/fs/cgroup 2>/dev/null
  mount -t cgroup2 cgroup2 /sys/fs/cgroup || exit 97
fi
exec "$@"`;

export async function startAgent(opts: { isolated?: boolean; extraArgs?: string[] } = {}): Promise<RunningAgent> {
  const bin = agentBinary();
  const dir = fs.mkdtempSync('/tmp/stencil-agent-test-');
  const socket = path.join(dir, 'agent.sock');
  const args = ['--unix', socket, '--state-dir', path.join(dir, 'state'), '--log-level', 'debug', ...(opts.extraArgs ?? [])];
  const proc = opts.isolated
    ? spawn('unshare', ['--mount', '--uts', '--net', '--propagation', 'private', 'sh', '-c', ISOLATE, 'agent', bin, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
      })
    : spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let logText = '';
  proc.stdout!.on('data', (d: Buffer) => (logText += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (logText += d.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      (await connectUnix(socket, 1000)).destroy();
      break;
    } catch {
      if (proc.exitCode !== null || Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new Error(`the agent did not start (exit ${proc.exitCode}):\n${logText}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    socket,
    dir,
    proc,
    log: () => logText,
    logShows: async (re, timeoutMs = 10_000) => {
      for (const deadline = Date.now() + timeoutMs; !re.test(logText); await new Promise((r) => setTimeout(r, 10))) {
        if (Date.now() > deadline) throw new Error(`the agent's log never showed ${re} within ${timeoutMs} ms:\n${logText.slice(-3000)}`);
      }
    },
    client: (timeoutMs = 30_000) => AgentClient.connect({ connect: () => connectUnix(socket), timeoutMs }),
    stop: async () => {
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
        if (proc.exitCode === null) proc.kill('SIGKILL');
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A raw framed connection, for malformed-input tests. */
export class RawConn {
  private decoder = new FrameDecoder();
  private frames: Frame[] = [];
  private waiters: Array<() => void> = [];
  closed = false;
  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.frames.push(...this.decoder.push(chunk));
      this.waiters.splice(0).forEach((w) => w());
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiters.splice(0).forEach((w) => w());
    });
    socket.on('error', () => {});
  }
  static async open(socketPath: string): Promise<RawConn> {
    return new RawConn(await connectUnix(socketPath));
  }
  /** Wraps an already open stream (e.g. a hybrid-vsock connection to an agent in a VM), paused or not. */
  static wrap(socket: net.Socket): RawConn {
    const raw = new RawConn(socket);
    socket.resume();
    return raw;
  }
  send(kind: number, payload: Uint8Array = Buffer.alloc(0)): void {
    this.socket.write(encodeFrame(kind, payload));
  }
  async next(timeoutMs = 5000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length === 0) {
      if (this.closed) throw new Error('connection closed');
      if (Date.now() > deadline) throw new Error('no frame');
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
    return this.frames.shift()!;
  }
  async waitClosed(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error('still open');
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

export const T = () => agentTypes();
export type Reply = { version: number; error: { code: string; message: string } | null; agentVersion: string };
export type Resp = { id: string; error: { code: string; message: string } | null } & Record<string, unknown>;
export const hello = (role: number, containerId = '', execId = '') =>
  encodeMessage(T().Hello, { version: 1, role, containerId, execId });
export const request = (id: number, call: Record<string, unknown>) => encodeMessage(T().Request, { id, ...call });

export function readAll(stream: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

export async function rejectsWith(p: Promise<unknown>, check: (err: AgentCallError) => void): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof AgentCallError, `expected an AgentCallError, got ${String(err)}`);
    check(err);
    return true;
  });
}
