import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { LogFifoStream } from './log-fifo.js';

describe('LogFifoStream on a real FIFO', () => {
  let dir: string;
  let fifo: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'log-fifo-'));
    fifo = path.join(dir, 'log');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const openReader = () => fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  function drain(fd: number): string {
    const buf = Buffer.alloc(1 << 16);
    let out = '';
    for (;;) {
      try {
        const n = fs.readSync(fd, buf);
        if (n === 0) return out;
        out += buf.subarray(0, n).toString();
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return out;
        throw e;
      }
    }
  }
  const write = (s: LogFifoStream, text: string) => new Promise<void>((resolve, reject) => s.write(text, (e) => (e ? reject(e) : resolve())));

  it('survives its reader going away (EPIPE), says how many lines it lost, and writes on once a reader is back', async () => {
    let reader = openReader();
    const writer = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    const stream = new LogFifoStream(writer);
    try {
      await write(stream, 'one\n');
      assert.equal(drain(reader), 'one\n');
      fs.closeSync(reader); // containerd killed
      await write(stream, 'two\n');
      await write(stream, 'three\n');
      reader = openReader(); // the next containerd opens the same FIFO
      await write(stream, 'four\n');
      const lines = drain(reader).trim().split('\n');
      assert.equal(lines.length, 2, lines.join('|'));
      assert.deepEqual(JSON.parse(lines[0]!), { level: 'warn', message: 'shim log lines lost while containerd did not read them', lost: 2 });
      assert.equal(lines[1], 'four');
      assert.equal(stream.destroyed, false);
    } finally {
      stream.destroy();
      fs.closeSync(writer);
      fs.closeSync(reader);
    }
  });

  it('waits for a reader that is slow (a full pipe) and delivers every line whole and in order', async () => {
    const reader = openReader();
    const writer = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    const stream = new LogFifoStream(writer);
    try {
      const lines = Array.from({ length: 3000 }, (_, i) => `line ${i} ${'x'.repeat(60)}`);
      for (const l of lines) await write(stream, `${l}\n`); // ~200 KiB: more than the pipe holds
      let got = '';
      for (let i = 0; i < 200 && got.split('\n').length <= lines.length; i++) {
        got += drain(reader);
        await sleep(20);
      }
      assert.deepEqual(got.trim().split('\n'), lines);
    } finally {
      stream.destroy();
      fs.closeSync(writer);
      fs.closeSync(reader);
    }
  });
});
