// Host bind mounts of the pod layer, for real (needs root): a rootfs appears under the share
// with its submounts, goes away again, busy mounts are detached lazily, and mountinfo's escaped
// paths are read correctly.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { bindMount, createShareView, makePrivate, MountError, mountFilesystem, mountsUnder, unmountAllUnder, unmountTree } from './mounts.js';

const skip = process.getuid?.() === 0 ? undefined : 'mounting needs root';

describe('pod host mounts', { skip }, () => {
  let dir: string;
  let source: string;

  before(() => {
    dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-mounts-test-')));
    source = path.join(dir, 'source');
    fs.mkdirSync(path.join(source, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(source, 'file'), 'content');
  });
  after(async () => {
    await unmountAllUnder(dir);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('bind-mounts a tree with its submounts and unmounts all of it', async () => {
    const sub = path.join(source, 'sub');
    await bindMount(path.join(dir, 'source'), path.join(dir, 'source'));  // make source a mount point
    fs.mkdirSync(path.join(dir, 'tmpfs-src'), { recursive: true });
    await bindMount(path.join(dir, 'tmpfs-src'), sub);
    fs.writeFileSync(path.join(sub, 'inner'), 'in a submount');
    const target = path.join(dir, 'share with space', 'rootfs');
    fs.mkdirSync(target, { recursive: true });
    await bindMount(source, target);
    assert.equal(fs.readFileSync(path.join(target, 'file'), 'utf8'), 'content');
    assert.equal(fs.readFileSync(path.join(target, 'sub/inner'), 'utf8'), 'in a submount', 'rbind carries submounts');
    assert.deepEqual(mountsUnder(path.join(dir, 'share with space')), [path.join(target, 'sub'), target]);

    // Private: a mount made under the target later does not show up in the source.
    fs.mkdirSync(path.join(target, 'later'));
    await bindMount(path.join(dir, 'tmpfs-src'), path.join(target, 'later'));
    assert.equal(fs.existsSync(path.join(source, 'later', 'inner')), false);

    await unmountTree(target);
    assert.deepEqual(mountsUnder(path.join(dir, 'share with space')), []);
    assert.deepEqual(fs.readdirSync(target), [], 'the mount point is empty again');
    assert.equal(fs.readFileSync(path.join(source, 'file'), 'utf8'), 'content', 'the source is untouched');
    await unmountTree(sub);
    await unmountTree(source);
    assert.deepEqual(mountsUnder(dir), []);
  });

  it('detaches a busy mount lazily', async () => {
    const target = path.join(dir, 'busy');
    fs.mkdirSync(target);
    await bindMount(source, target);
    const fd = fs.openSync(path.join(target, 'file'), 'r');
    try {
      await unmountTree(target);
      assert.deepEqual(mountsUnder(target), []);
      assert.equal(fs.readFileSync(fd, 'utf8'), 'content', 'the open file still works');
    } finally {
      fs.closeSync(fd);
    }
  });

  it('unmounts everything under a directory, deepest first', async () => {
    const top = path.join(dir, 'many');
    for (const d of ['a', 'b']) {
      fs.mkdirSync(path.join(top, d), { recursive: true });
      await bindMount(source, path.join(top, d));
    }
    await bindMount(source, path.join(top, 'a', 'sub'));
    assert.equal(mountsUnder(top).length, 3);
    assert.equal(mountsUnder(top)[0], path.join(top, 'a', 'sub'));
    assert.deepEqual(await unmountAllUnder(top), []);
    assert.deepEqual(mountsUnder(top), []);
  });

  it('gives a read-only view of a directory in which later rootfs mounts appear read-write', async () => {
    const mounts = path.join(dir, 'view-src');
    const view = path.join(dir, 'view');
    fs.mkdirSync(mounts);
    fs.mkdirSync(view);
    await createShareView(mounts, view);
    fs.mkdirSync(path.join(mounts, 'c1', 'rootfs'), { recursive: true });
    await bindMount(source, path.join(mounts, 'c1', 'rootfs'));
    const inView = path.join(view, 'c1', 'rootfs');
    assert.ok(mountsUnder(view).includes(inView), 'the mount propagated into the view');
    await makePrivate(inView);
    assert.equal(fs.readFileSync(path.join(inView, 'file'), 'utf8'), 'content');
    fs.writeFileSync(path.join(inView, 'written-through-view'), 'x');
    assert.equal(fs.readFileSync(path.join(source, 'written-through-view'), 'utf8'), 'x');
    fs.rmSync(path.join(source, 'written-through-view'));
    // Around the rootfs the view is read-only: no new entries, no renames, no symlinks.
    assert.throws(() => fs.writeFileSync(path.join(view, 'new'), ''), /EROFS/);
    assert.throws(() => fs.symlinkSync('/', path.join(view, 'c1', 'link')), /EROFS/);
    assert.throws(() => fs.renameSync(path.join(view, 'c1'), path.join(view, 'c2')), /EROFS|EBUSY/);
    for (const m of [inView, path.join(mounts, 'c1', 'rootfs')]) await unmountTree(m);
    assert.deepEqual(mountsUnder(view), [view]);
    assert.deepEqual(await unmountAllUnder(view), []);
    assert.deepEqual(await unmountAllUnder(mounts), []);
  });

  it("mounts containerd's rootfs entries as containerd does: an overlay with its data, a read-only rbind that stays read-only, flags and propagation", async () => {
    const layers = path.join(dir, 'layers');
    for (const d of ['lower', 'upper', 'work', 'merged', 'ro-view', 'tmp']) fs.mkdirSync(path.join(layers, d), { recursive: true });
    fs.writeFileSync(path.join(layers, 'lower', 'from-lower'), 'lower');
    const merged = path.join(layers, 'merged');
    await mountFilesystem({ type: 'overlay', source: 'overlay', target: merged, options: ['index=off', `workdir=${layers}/work`, `upperdir=${layers}/upper`, `lowerdir=${layers}/lower`] });
    assert.equal(fs.readFileSync(path.join(merged, 'from-lower'), 'utf8'), 'lower');
    fs.writeFileSync(path.join(merged, 'written'), 'x');
    assert.equal(fs.readFileSync(path.join(layers, 'upper', 'written'), 'utf8'), 'x', 'writes go to the upper layer');

    const roView = path.join(layers, 'ro-view');
    await mountFilesystem({ type: 'bind', source: merged, target: roView, options: ['rbind', 'ro', 'rprivate'] });
    assert.equal(fs.readFileSync(path.join(roView, 'from-lower'), 'utf8'), 'lower');
    assert.throws(() => fs.writeFileSync(path.join(roView, 'new'), ''), /EROFS/, 'a read-only bind must stay read-only');
    const info = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === roView) ?? '';
    assert.match(info, / ro[, ]/, info);
    assert.doesNotMatch(info, /shared:/, `rprivate: ${info}`);

    const tmp = path.join(layers, 'tmp');
    await mountFilesystem({ type: 'tmpfs', source: 'stencil-test', target: tmp, options: ['nosuid', 'nodev', 'noexec', 'size=1m', 'mode=0700'] });
    assert.equal(fs.statSync(tmp).mode & 0o777, 0o700, 'tmpfs data (mode=) reached the filesystem');
    assert.match(fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === tmp) ?? '', /nosuid,nodev,noexec/);

    await assert.rejects(mountFilesystem({ type: 'overlay', source: 'overlay', target: merged, options: ['lowerdir=/nonexistent-layer'] }), (err: unknown) => {
      assert.ok(err instanceof MountError);
      assert.match(err.message, /mount -t overlay -o lowerdir=\/nonexistent-layer overlay .*merged: No such file or directory/);
      return true;
    });
    await assert.rejects(mountFilesystem({ type: 'ext4', source: '/img', target: tmp, options: ['loop'] }), /ext4 \/img on .*tmp: the "loop" mount option is not supported/);
    assert.deepEqual(await unmountAllUnder(layers), []);
  });

  it('reports a failed mount with the command and the reason', async () => {
    await assert.rejects(bindMount(path.join(dir, 'missing'), path.join(dir, 'nowhere')), (err: unknown) => {
      assert.ok(err instanceof MountError);
      assert.match(err.message, /mount \[bind,rec\] .*missing .*nowhere: No such file or directory/);
      return true;
    });
  });
});
