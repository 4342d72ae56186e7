// A pod's state directory goes with everything below it, never through a mount: a container's
// rootfs bound below it is detached first, and its source keeps its files (needs root).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { bindMount, mountsUnder } from '../util/mounts.js';
import { createStateDir, removeStateDir } from './pod-vm-options.js';

describe('a pod state directory', { skip: process.getuid?.() === 0 ? undefined : 'mounting needs root' }, () => {
  it('is removed with what is mounted below it detached first, the mounts\' sources untouched', async () => {
    const top = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-state-test-')));
    try {
      const source = path.join(top, 'snapshot');
      fs.mkdirSync(source);
      fs.writeFileSync(path.join(source, 'file'), 'kept');
      const stateDir = path.join(top, 'pod');
      createStateDir('p1', stateDir);
      const rootfs = path.join(stateDir, 'mounts', 'c1', 'rootfs');
      fs.mkdirSync(rootfs, { recursive: true });
      fs.mkdirSync(path.join(stateDir, 'shared'));
      await bindMount(source, rootfs);
      assert.deepEqual(await removeStateDir(stateDir), []);
      assert.equal(fs.existsSync(stateDir), false);
      assert.deepEqual(mountsUnder(top), []);
      assert.equal(fs.readFileSync(path.join(source, 'file'), 'utf8'), 'kept', 'a file was removed through the mount');
      assert.deepEqual(await removeStateDir(stateDir), [], 'a missing directory is nothing to remove');
    } finally {
      fs.rmSync(top, { recursive: true, force: true });
    }
  });
});
