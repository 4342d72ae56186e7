// QEMU's exec: migration transport: the command runs under `sh -c` (so `cat>FILE`, pipes and
// redirections work as they do with QEMU); an outgoing stream goes to its stdin, an incoming one
// is read from its stdout. The command runs in its own process group so a cancel ends the whole
// pipeline it started, and its stderr tail goes into the error when it fails.
import { spawn, type ChildProcess } from 'node:child_process';

const STDERR_TAIL_BYTES = 2048;

export class ExecChannelError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ExecChannelError';
  }
}

/** Writes `data` to `command`'s stdin; resolves when the command exits 0 after reading it. */
export function execSink(command: string, data: Buffer, signal: AbortSignal): Promise<void> {
  const child = spawn('/bin/sh', ['-c', command], { stdio: ['pipe', 'ignore', 'pipe'], detached: true });
  // EPIPE when the command exits without reading everything: its exit status tells the story.
  child.stdin!.on('error', () => {});
  child.stdin!.end(data);
  return finish(child, command, signal).then(() => undefined);
}

/** Reads `command`'s stdout to the end (at most maxBytes); resolves with it once the command exits 0. */
export function execSource(command: string, maxBytes: number, signal: AbortSignal): Promise<Buffer> {
  const child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const chunks: Buffer[] = [];
  let size = 0;
  let tooLong = false;
  child.stdout!.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size > maxBytes) {
      if (!tooLong) killGroup(child);
      tooLong = true;
      return;
    }
    chunks.push(chunk);
  });
  return finish(child, command, signal).then(
    () => {
      if (tooLong) throw new ExecChannelError(`exec command \`${command}\` wrote more than ${maxBytes} bytes`);
      return Buffer.concat(chunks);
    },
    (err: unknown) => {
      if (tooLong) throw new ExecChannelError(`exec command \`${command}\` wrote more than ${maxBytes} bytes`);
      throw err;
    },
  );
}

function finish(child: ChildProcess, command: string, signal: AbortSignal): Promise<void> {
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString('utf8')).slice(-STDERR_TAIL_BYTES);
  });
  const onAbort = () => killGroup(child);
  signal.addEventListener('abort', onAbort, { once: true });
  return new Promise<void>((resolve, reject) => {
    child.once('error', (err) => reject(new ExecChannelError(`exec command \`${command}\`: ${err.message}`)));
    child.once('close', (code, sig) => {
      signal.removeEventListener('abort', onAbort);
      const tail = stderr.trim() ? `: ${stderr.trim()}` : '';
      if (signal.aborted) reject(new ExecChannelError(`exec command \`${command}\` was cancelled`));
      else if (code === 0) resolve();
      else reject(new ExecChannelError(`exec command \`${command}\` ${sig ? `was killed by ${sig}` : `exited with status ${code}`}${tail}`));
    });
  });
}

function killGroup(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // the group is already gone
  }
}
