// virtio-blk end to end: the guest reads and writes host files as /dev/vda (rw) and /dev/vdb (ro).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { assertScriptSucceeded, runInGuest } from '../lib/guest.js';

describe('virtio-blk', () => {
  it('reads and writes a read-write disk and refuses writes to a read-only one', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-blk-'));
    try {
      const rw = path.join(dir, 'rw.img');
      const ro = path.join(dir, 'ro.img');
      const image = Buffer.alloc(4 * 2 ** 20);
      image.write('stencil-disk-rw', 0);
      fs.writeFileSync(rw, image);
      image.write('stencil-disk-ro', 0);
      fs.writeFileSync(ro, image);
      const script = [
        'head -c 15 /dev/vda; echo',
        'head -c 15 /dev/vdb; echo',
        'cat /sys/block/vda/serial; echo',
        'cat /sys/block/vdb/ro',
        'printf guest-wrote-this | dd of=/dev/vda bs=512 seek=2048 conv=fsync 2>/dev/null && echo write-ok',
        'printf nope | dd of=/dev/vdb bs=512 seek=1 conv=fsync 2>/dev/null && echo ro-write-succeeded || echo ro-write-refused',
      ].join('\n');
      const run = await runInGuest(script, {
        disks: [
          { path: rw, readOnly: false, serial: 'stencil-rw' },
          { path: ro, readOnly: true },
        ],
      });
      assertScriptSucceeded(run);
      assert.deepEqual(run.output.trim().split('\n'), [
        'stencil-disk-rw',
        'stencil-disk-ro',
        'stencil-rw',
        '1',
        'write-ok',
        'ro-write-refused',
      ]);
      const after = fs.readFileSync(rw);
      assert.equal(after.subarray(2048 * 512, 2048 * 512 + 16).toString(), 'guest-wrote-this');
      assert.equal(fs.readFileSync(ro).subarray(512, 516).toString(), '\0\0\0\0');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
