// The shim daemon's log stream on containerd's `log` FIFO (the bundle's, its stderr). containerd
// is the FIFO's only reader: while it restarts there is none, and a write fails with EPIPE. Node's
// own process.stderr is destroyed by that first EPIPE, so every later log line, the VM's fault
// reports included, would be lost for good although the next containerd opens the same FIFO again.
// This stream drops what it cannot write while no one reads, says how much once someone does, and
// waits (never blocks) while a slow reader leaves the pipe full.
import fs from 'node:fs';
import { Writable } from 'node:stream';

/** What waits for a full pipe at most; beyond it lines are dropped (and counted). */
const MAX_PENDING_BYTES = 1 << 20;
const RETRY_MS = 50;

export class LogFifoStream extends Writable {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private retry: NodeJS.Timeout | undefined;
  /** Lines dropped since the last one written (no reader, or more pending than allowed). */
  private lost = 0;
  /** The first pending buffer is the rest of a line partly written. */
  private partialHead = false;

  constructor(private readonly fd: number) {
    super({ decodeStrings: true });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
    if (this.pendingBytes + chunk.length > MAX_PENDING_BYTES) this.lost++;
    else {
      this.pending.push(chunk);
      this.pendingBytes += chunk.length;
      if (!this.retry) this.flush();
    }
    done();
  }

  override _final(done: (error?: Error | null) => void): void {
    if (this.retry) clearTimeout(this.retry);
    this.retry = undefined;
    this.flush();
    done();
  }

  private flush(): void {
    if (this.lost > 0 && this.pending.length > 0) {
      const note = Buffer.from(`${JSON.stringify({ level: 'warn', message: 'shim log lines lost while containerd did not read them', lost: this.lost })}\n`);
      this.pending.splice(this.partialHead ? 1 : 0, 0, note);
      this.pendingBytes += note.length;
      this.lost = 0;
    }
    while (this.pending.length > 0) {
      const head = this.pending[0]!;
      let written: number;
      try {
        written = fs.writeSync(this.fd, head);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return this.retryLater();
        // EPIPE: containerd is away (a restart); anything else: the FIFO is unusable. Either way
        // these lines have no reader, and the next write tries again.
        this.lost += this.pending.length;
        this.pending = [];
        this.pendingBytes = 0;
        this.partialHead = false;
        return;
      }
      this.pendingBytes -= written;
      if (written < head.length) {
        this.pending[0] = head.subarray(written);
        this.partialHead = true;
        return this.retryLater();
      }
      this.pending.shift();
      this.partialHead = false;
    }
  }

  private retryLater(): void {
    this.retry = setTimeout(() => {
      this.retry = undefined;
      this.flush();
    }, RETRY_MS);
    this.retry.unref();
  }
}
