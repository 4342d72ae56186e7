// Template and clones with the real guest kernel: a guest printing a tick every 200 ms is paused
// and saved (its tmpfs RAM becomes the snapshot's memory, no copy); two clones restored from it
// copy-on-write carry on ticking from where it stopped (timers, console and the interrupt
// controller survive), without booting again, and the template's memory never changes.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { MicroVm } from '../../shim/src/hypervisor/microvm.js';
import { ConsoleCapture, guestSpec, MEMORY_DIR } from '../lib/guest.js';

const sha256 = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const ticks = (text: string) => [...text.matchAll(/tick-(\d+)\r?\n/g)].map((m) => Number(m[1]));

describe('snapshot and restore of the real guest', () => {
  it('clones continue from the saved guest, which never boots again, and the template memory stays unchanged', async () => {
    const spec = guestSpec('i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done');
    const snapshot = fs.mkdtempSync(path.join(MEMORY_DIR, 'snapshot-'));
    try {
      const template = MicroVm.create({ ...spec, memoryDir: snapshot });
      const templateConsole = new ConsoleCapture(template);
      template.start();
      await templateConsole.waitFor(/tick-3\r?\n/);
      await template.pause();
      const last = Math.max(...ticks(templateConsole.text));
      template.saveSnapshot(snapshot);
      assert.throws(() => template.resume(), /cannot run again/);
      await template.destroy();
      assert.deepEqual(fs.readdirSync(snapshot).sort(), ['config', 'memory', 'state']);
      const memoryHash = sha256(path.join(snapshot, 'memory'));

      const clones = ['a', 'b'].map((id) => MicroVm.restore(`${spec.name}-clone-${id}`, { restoreFrom: snapshot }));
      const consoles = clones.map((clone) => new ConsoleCapture(clone));
      for (const clone of clones) clone.start();
      for (const c of consoles) {
        const first = Number((await c.waitFor(/tick-(\d+)\r?\n/, 60_000))[1]);
        assert.ok(first > last && first <= last + 2, `a clone's first tick is ${first}, the template stopped after ${last}`);
        await c.waitFor(new RegExp(`tick-${first + 3}\\r?\\n`), 60_000);  // its timers keep firing
        assert.doesNotMatch(c.text, /init reached|Linux version/, 'a clone booted again');
      }
      for (const clone of clones) await clone.destroy();
      assert.equal(sha256(path.join(snapshot, 'memory')), memoryHash, 'a clone wrote to the template memory');
    } finally {
      fs.rmSync(snapshot, { recursive: true, force: true });
    }
  });
});
