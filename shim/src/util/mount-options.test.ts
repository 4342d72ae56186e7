// containerd's mount options split into mount(2)'s flags, propagation and data, as containerd's
// own Linux mounter splits them.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseMountOptions } from './mount-options.js';

describe('parseMountOptions', () => {
  const cases: Array<[string[], { flags: string[]; propagation: string[]; data: string }]> = [
    // An overlay snapshot as containerd's overlayfs snapshotter passes it.
    [['index=off', 'workdir=/s/1/work', 'upperdir=/s/1/fs', 'lowerdir=/s/3/fs:/s/2/fs'], { flags: [], propagation: [], data: 'index=off,workdir=/s/1/work,upperdir=/s/1/fs,lowerdir=/s/3/fs:/s/2/fs' }],
    // A read-only view (containerd's View snapshot of a single layer).
    [['rbind', 'ro'], { flags: ['bind', 'rec', 'ro'], propagation: [], data: '' }],
    [['bind', 'rprivate', 'nosuid', 'nodev'], { flags: ['bind', 'nosuid', 'nodev'], propagation: ['private', 'rec'], data: '' }],
    // Negations clear what came before; order matters as in fstab.
    [['ro', 'rw', 'nosuid', 'suid', 'noexec'], { flags: ['noexec'], propagation: [], data: '' }],
    [['rw', 'ro'], { flags: ['ro'], propagation: [], data: '' }],
    [['noatime', 'atime', 'relatime', 'norelatime', 'strictatime', 'sync', 'async', 'dirsync', 'mand', 'nomand'], { flags: ['strictatime', 'dirsync'], propagation: [], data: '' }],
    // The last propagation wins; defaults and userspace-only options (mount(8)'s own) vanish.
    [['shared', 'rslave', 'defaults', 'x-containerd.foo=1', 'nofail', '', 'size=64m', 'mode=0755'], { flags: [], propagation: ['slave', 'rec'], data: 'size=64m,mode=0755' }],
    [['runbindable'], { flags: [], propagation: ['unbindable', 'rec'], data: '' }],
  ];
  for (const [options, expected] of cases) {
    it(JSON.stringify(options), () => {
      const got = parseMountOptions(options);
      assert.deepEqual({ ...got, flags: [...got.flags].sort() }, { ...expected, flags: [...expected.flags].sort() });
    });
  }

  it('refuses a loop mount, saying so', () => {
    assert.throws(() => parseMountOptions(['loop', 'ro']), /"loop" mount option is not supported/);
  });
});
