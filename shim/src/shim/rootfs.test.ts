// A rootfs mount's target is a path inside the rootfs: one that climbs out is refused before any
// mount, one that only begins with two dots is an ordinary name.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { mountRootfs } from './rootfs.js';

describe('mountRootfs targets', () => {
  it('refuses a target that leaves the rootfs, and takes "..data" for the name it is', async () => {
    const rootfs = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-rootfs-test-')), 'rootfs');
    try {
      for (const target of ['..', '../etc', 'a/../../etc']) {
        await assert.rejects(mountRootfs([{ type: 'tmpfs', source: 'none', target, options: [] }], rootfs), /leaves the rootfs/, target);
      }
      // Not refused as leaving: it gets as far as mount(2), which fails on the missing directory.
      await assert.rejects(mountRootfs([{ type: 'tmpfs', source: 'none', target: '..data', options: [] }], rootfs), (err: Error) => {
        assert.doesNotMatch(err.message, /leaves the rootfs/);
        assert.match(err.message, /cannot mount tmpfs none on .*\/rootfs\/\.\.data/);
        return true;
      });
    } finally {
      fs.rmSync(path.dirname(rootfs), { recursive: true, force: true });
    }
  });
});
