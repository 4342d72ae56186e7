// Template and clones with the real guest kernel: a guest printing a tick every 200 ms is paused
// and saved (its tmpfs RAM becomes the snapshot's memory, no copy); two clones restored from it
// copy-on-write carry on ticking from where it stopped (timers, console and the interrupt
// controller survive), without booting again, and the template's memory never changes; twenty
// clones of a guest holding a 64 MiB pattern each find it intact and keep their own writes.
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

  it('20 clones of a guest holding a 64 MiB pattern and a counter: the pattern intact, the counter going on, each its own data', async () => {
    // The guest writes a known 64 MiB pattern into its RAM (the initramfs is RAM), prints its MD5,
    // then counts once a second; a line typed on its console is stored and answered with the
    // pattern's MD5 again and the stored line.
    const script = [
      'yes stencil-template-pattern | head -c 67108864 > /pattern',
      'echo "pattern-$(md5sum < /pattern | cut -c1-32)"',
      'i=0; while true; do echo tick-$i; i=$((i+1)); if read -t 1 line; then echo "$line" > /mine; echo "check $(md5sum < /pattern | cut -c1-32) $(cat /mine)"; fi; done',
    ].join('\n');
    const spec = guestSpec(script);
    const snapshot = fs.mkdtempSync(path.join(MEMORY_DIR, 'snapshot-'));
    try {
      const template = MicroVm.create({ ...spec, memoryDir: snapshot });
      const templateConsole = new ConsoleCapture(template);
      template.start();
      const patternMd5 = (await templateConsole.waitFor(/pattern-([0-9a-f]{32})/, 180_000))[1];
      assert.equal(patternMd5, crypto.createHash('md5').update(Buffer.alloc(64 * 2 ** 20, 'stencil-template-pattern\n')).digest('hex'));
      await templateConsole.waitFor(/tick-2\r?\n/, 60_000);
      await template.pause();
      const last = Math.max(...ticks(templateConsole.text));
      template.saveSnapshot(snapshot);
      await template.destroy();
      const memoryHash = sha256(path.join(snapshot, 'memory'));

      const BATCH = 2;
      for (let first = 0; first < 20; first += BATCH) {
        const batch = Array.from({ length: BATCH }, (_, j) => {
          const i = first + j;
          const clone = MicroVm.restore(`${spec.name}-c${i}`, { restoreFrom: snapshot });
          return { i, clone, console: new ConsoleCapture(clone) };
        });
        try {
          for (const c of batch) c.clone.start();
          await Promise.all(
            batch.map(async ({ i, clone, console: c }) => {
              const tick = Number((await c.waitFor(/tick-(\d+)\r?\n/, 120_000))[1]);
              assert.ok(tick > last && tick <= last + 2, `clone ${i}'s first tick is ${tick}, the template stopped after ${last}`);
              clone.writeConsole(`clone-${i}-data\n`);
              const [, md5] = await c.waitFor(new RegExp(`check ([0-9a-f]{32}) clone-${i}-data\\r?\\n`), 180_000);
              assert.equal(md5, patternMd5, `clone ${i}: the pattern changed`);
              assert.doesNotMatch(c.text, /Linux version|pattern-/, `clone ${i} started over`);
            }),
          );
        } finally {
          for (const c of batch) await c.clone.destroy();
        }
      }
      assert.equal(sha256(path.join(snapshot, 'memory')), memoryHash, 'a clone wrote to the template memory');
    } finally {
      fs.rmSync(snapshot, { recursive: true, force: true });
    }
  });
});
