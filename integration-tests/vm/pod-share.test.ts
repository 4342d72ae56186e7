// A container's rootfs as the pod shares it over virtio-9p, in one real VM: what the container
// writes shows up in the host directory (content, mode, owner), a read-only root stays
// unwritten, and symlinks pointing outside (absolute or through ../..) never reach host files.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { haveStaticBusybox, ociSpec } from '../../shim/src/agent/testing/busybox-oci.js';
import type { PodVm } from '../../shim/src/pod/pod-vm.js';
import { fingerprint, withTimeout } from '../lib/guest.js';
import { bootTestPod, CALL_TIMEOUT_MS, printConsole, readAll, Rootfses, runContainer } from '../lib/pod.js';

/** What identifies a host file's state: mode, owner, size, mtime, content hash. */

describe('pod VM: the container rootfs over virtio-9p', { skip: haveStaticBusybox() ? undefined : 'busybox-static is not installed' }, () => {
  let pod: PodVm;
  let rootfses: Rootfses;
  let n = 0;

  before(async () => {
    rootfses = new Rootfses();
    pod = await bootTestPod('share');
  });

  after(async () => {
    printConsole(pod);
    await pod?.shutdown();
    rootfses?.remove();
  });

  /** Runs `script` with sh as init in `rootfs`; returns stdout, stderr (asserting exit 0). */
  async function sh(rootfs: string, script: string, tweak?: (spec: Record<string, unknown>) => void): Promise<string> {
    const id = `share-${++n}`;
    const spec = ociSpec(rootfs, { args: ['sh', '-c', script] });
    tweak?.(spec);
    const stdio = { stdout: true, stderr: true };
    await pod.createContainer({ id, spec, rootfs, stdio });
    try {
      const io = await pod.attachStdio(id, '', stdio);
      const out = readAll(io.stdout!);
      const err = readAll(io.stderr!);
      await pod.startContainer(id);
      const exit = await withTimeout(pod.waitProcess(id, ''), CALL_TIMEOUT_MS, 'the script did not exit');
      const text = (await out).toString();
      assert.equal(exit.exitStatus, 0, `script failed (${exit.exitStatus}):\n${text}\n${(await err).toString()}`);
      return text;
    } finally {
      await pod.deleteContainer(id);
    }
  }

  it('shows files the container writes on the host, with content, mode and owner', async () => {
    const rootfs = rootfses.make();
    fs.writeFileSync(path.join(rootfs, 'from-host.txt'), 'written on the host\n');
    const out = await sh(
      rootfs,
      [
        'set -e',
        'cat /from-host.txt',
        "printf 'container data\\n' > /written.txt",
        'chmod 640 /written.txt',
        'mkdir -m 750 /made-dir',
        'head -c 300000 /dev/urandom > /made-dir/random.bin',
        'md5sum /made-dir/random.bin | cut -d" " -f1',
        'touch /owned && chown 1234:5678 /owned',
        'ln -s written.txt /link',
        'sync',
      ].join('\n'),
    );
    const [fromHost, md5] = out.trim().split('\n');
    assert.equal(fromHost, 'written on the host');
    assert.equal(fs.readFileSync(path.join(rootfs, 'written.txt'), 'utf8'), 'container data\n');
    assert.equal(fs.statSync(path.join(rootfs, 'written.txt')).mode & 0o7777, 0o640);
    assert.equal(fs.statSync(path.join(rootfs, 'made-dir')).mode & 0o7777, 0o750);
    assert.ok(fs.statSync(path.join(rootfs, 'made-dir')).isDirectory());
    assert.equal(crypto.createHash('md5').update(fs.readFileSync(path.join(rootfs, 'made-dir/random.bin'))).digest('hex'), md5);
    const owned = fs.statSync(path.join(rootfs, 'owned'));
    assert.deepEqual([owned.uid, owned.gid], [1234, 5678]);
    assert.equal(fs.readlinkSync(path.join(rootfs, 'link')), 'written.txt');
  });

  it('creates files as the uid and gid of the container process', async () => {
    const rootfs = rootfses.make();
    await sh(rootfs, 'echo mine > /tmp/by-user; id -u; id -g', (spec) => {
      (spec.process as Record<string, unknown>).user = { uid: 1000, gid: 2000 };
    });
    const st = fs.statSync(path.join(rootfs, 'tmp/by-user'));
    assert.deepEqual([st.uid, st.gid], [1000, 2000]);
  });

  it('keeps a read-only root read-only', async () => {
    const rootfs = rootfses.make();
    const out = await sh(rootfs, 'if touch /should-not-exist 2>/dev/null; then echo writable; else echo read-only; fi', (spec) => {
      (spec.root as Record<string, unknown>).readonly = true;
    });
    assert.equal(out, 'read-only\n');
    assert.equal(fs.existsSync(path.join(rootfs, 'should-not-exist')), false);
  });

  it('never lets symlinks to /etc/shadow or through ../../ read or write outside the share', async () => {
    const rootfs = rootfses.make();
    // A host file right next to the rootfs, and the host's own /etc/shadow.
    const outside = path.join(path.dirname(rootfs), 'outside-secret');
    fs.writeFileSync(outside, 'host secret\n');
    const watched = [outside, '/etc/shadow', '/etc/passwd'];
    const before = watched.map(fingerprint);
    fs.symlinkSync('/etc/shadow', path.join(rootfs, 'abs-shadow'));
    fs.symlinkSync('../../../../../../../../../../etc/shadow', path.join(rootfs, 'up-shadow'));
    fs.symlinkSync('../outside-secret', path.join(rootfs, 'up-secret'));
    fs.symlinkSync('../../..', path.join(rootfs, 'up-dir'));
    const script = [
      // Reads: each target resolves inside the container root, where none of them exists.
      'for f in /abs-shadow /up-shadow /up-secret /up-dir/outside-secret /../outside-secret /../../../etc/shadow; do',
      '  if cat "$f" >/dev/null 2>&1; then echo "read $f"; else echo "no $f"; fi',
      'done',
      '[ -x /up-dir/bin/busybox ] && echo up-dir-is-the-root',  // ../../.. from / is / itself
      // Links the container makes itself.
      'ln -s /etc/shadow /c-shadow && ln -s ../../../outside-secret /c-secret',
      'if cat /c-shadow >/dev/null 2>&1; then echo "read /c-shadow"; else echo "no /c-shadow"; fi',
      // Writes through the links land inside the rootfs.
      'echo pwned-1 > /abs-shadow; echo pwned-2 > /up-secret; echo pwned-3 > /c-secret',
      'sync',
    ].join('\n');
    const out = await sh(rootfs, script);
    assert.deepEqual(out.trim().split('\n'), [
      'no /abs-shadow',
      'no /up-shadow',
      'no /up-secret',
      'no /up-dir/outside-secret',
      'no /../outside-secret',
      'no /../../../etc/shadow',
      'up-dir-is-the-root',
      'no /c-shadow',
    ]);
    assert.deepEqual(watched.map(fingerprint), before, 'a host file outside the share changed');
    assert.equal(fs.readFileSync(path.join(rootfs, 'etc/shadow'), 'utf8'), 'pwned-1\n');
    assert.equal(fs.readFileSync(path.join(rootfs, 'outside-secret'), 'utf8'), 'pwned-3\n');
    // /up-secret -> ../outside-secret from / is /outside-secret too: written twice, last wins.
    assert.equal(fs.readlinkSync(path.join(rootfs, 'up-secret')), '../outside-secret');
  });

  it('runs two containers from one host rootfs, each through its own share', async () => {
    const rootfs = rootfses.make();
    const [a, b] = await Promise.all([
      runContainer(pod, 'twin-a', rootfs, { args: ['sh', '-c', 'echo a > /twin-a; cat /etc/passwd | head -c 4'] }),
      runContainer(pod, 'twin-b', rootfs, { args: ['sh', '-c', 'echo b > /twin-b; cat /etc/passwd | head -c 4'] }),
    ]);
    assert.equal(a.stdout.toString(), 'root');
    assert.equal(b.stdout.toString(), 'root');
    assert.equal(fs.readFileSync(path.join(rootfs, 'twin-a'), 'utf8'), 'a\n');
    assert.equal(fs.readFileSync(path.join(rootfs, 'twin-b'), 'utf8'), 'b\n');
  });
});
