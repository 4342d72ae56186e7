// virtio-9p end to end: the guest mounts a host directory (9P2000.L) and works in it; what it does
// is checked on the host side. Symlinks pointing out of the share never reach host files.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { assertScriptSucceeded, fingerprint, runInGuest } from '../lib/guest.js';

const MOUNT = 'mkdir -p /mnt/share && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none share /mnt/share';

function scratch(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-p9-'));
  fs.chmodSync(dir, 0o755); // mkdtemp makes it 0700: other guest users could not enter the share
  return dir;
}


describe('virtio-9p shared directory', () => {
  it('shows guest writes on the host with their content, mode and ownership', async () => {
    const share = scratch();
    try {
      fs.writeFileSync(path.join(share, 'from-host.txt'), 'written-by-host\n');
      const m = '/mnt/share';
      const script = [
        'set -e',
        MOUNT,
        `cat ${m}/from-host.txt`,
        `printf 'guest-data\\n' > ${m}/written.txt`,
        `chmod 640 ${m}/written.txt`,
        `mkdir -m 750 ${m}/dir`,
        `head -c 3000000 /dev/urandom > ${m}/dir/big.bin`,
        `md5sum ${m}/dir/big.bin | cut -d' ' -f1`,
        `mv ${m}/dir/big.bin ${m}/dir/moved.bin`,
        `ln -s written.txt ${m}/link`,
        `readlink ${m}/link`,
        `cat ${m}/link`,
        `ln ${m}/written.txt ${m}/hard`,
        `stat -c %h ${m}/written.txt`,
        `touch ${m}/owned && chown 1234:5678 ${m}/owned`,
        `printf 0123456789 > ${m}/trunc && truncate -s 4 ${m}/trunc`,
        `touch -d '2001-02-03 04:05:06' ${m}/dated`,
        // A second guest user: the 9p client attaches as that uid, so the host sees it as owner.
        'mkdir -p /etc && echo "user:x:1000:2000::/tmp:/bin/sh" >> /etc/passwd && echo "grp:x:2000:" >> /etc/group',
        `mkdir ${m}/users && chmod 1777 ${m}/users`,
        `su user -c "echo by-user > ${m}/users/file && mkdir ${m}/users/subdir"`,
        `stat -c '%u:%g %a' ${m}/owned ${m}/users/file`,
        `i=0; while [ $i -lt 300 ]; do : > ${m}/dir/f$i; i=$((i+1)); done`,
        `rm ${m}/dir/f0 ${m}/hard`,
        `ls ${m}/dir | wc -l`,
        `mkdir ${m}/gone && rmdir ${m}/gone`,
        `df -k ${m} | tail -n 1 | awk '{ print ($2 > 0) ? "statfs-ok" : "statfs-bad" }'`,
        'sync',
        `umount ${m}`,
        'echo unmounted',
      ].join('\n');
      const run = await runInGuest(script, { shares: [{ tag: 'share', hostPath: share, readOnly: false }] });
      assertScriptSucceeded(run);
      const lines = run.output.trim().split('\n');
      const md5 = crypto.createHash('md5').update(fs.readFileSync(path.join(share, 'dir/moved.bin'))).digest('hex');
      assert.deepEqual(lines, [
        'written-by-host',
        md5,
        'written.txt',
        'guest-data',
        '2',
        '1234:5678 644',
        '1000:2000 644',
        '300',
        'statfs-ok',
        'unmounted',
      ]);

      const at = (p: string) => path.join(share, p);
      assert.equal(fs.readFileSync(at('written.txt'), 'utf8'), 'guest-data\n');
      assert.equal(fs.statSync(at('written.txt')).mode & 0o7777, 0o640);
      assert.equal(fs.statSync(at('written.txt')).nlink, 1);
      assert.equal(fs.statSync(at('dir')).mode & 0o7777, 0o750);
      assert.equal(fs.statSync(at('dir/moved.bin')).size, 3000000);
      assert.equal(fs.existsSync(at('dir/big.bin')), false);
      assert.equal(fs.readlinkSync(at('link')), 'written.txt');
      assert.equal(fs.readFileSync(at('trunc'), 'utf8'), '0123');
      assert.equal(Math.round(fs.statSync(at('dated')).mtimeMs / 1000), 981173106);
      assert.equal(fs.readdirSync(at('dir')).length, 300);
      assert.equal(fs.existsSync(at('gone')), false);
      for (const [file, uid, gid] of [
        ['owned', 1234, 5678],
        ['users/file', 1000, 2000],
        ['users/subdir', 1000, 2000],
      ] as const) {
        const st = fs.statSync(at(file));
        assert.deepEqual([st.uid, st.gid], [uid, gid], `owner of ${file}`);
      }
      assert.equal(fs.readFileSync(at('users/file'), 'utf8'), 'by-user\n');
    } finally {
      fs.rmSync(share, { recursive: true, force: true });
    }
  });

  it('never lets symlinks in the share reach host files outside it', async () => {
    const base = scratch();
    const share = path.join(base, 'share');
    const secret = path.join(base, 'secret');
    try {
      fs.mkdirSync(share);
      fs.writeFileSync(secret, 'HOST-SECRET\n');
      // Links planted on the host side, as a malicious image layer could.
      fs.symlinkSync(secret, path.join(share, 'host-abs'));
      fs.symlinkSync('../secret', path.join(share, 'host-up'));
      fs.symlinkSync('/', path.join(share, 'host-root'));
      const watched = ['/etc/shadow', '/etc/passwd', secret];
      const before = watched.map(fingerprint);
      const m = '/mnt/share';
      const links = ['shadow', 'up-shadow', 'up-secret', 'host-abs', 'host-up', `host-root${secret}`, 'host-root/etc/shadow'];
      const script = [
        MOUNT,
        `ln -s /etc/shadow ${m}/shadow`,
        `ln -s ../../../../../../../etc/shadow ${m}/up-shadow`,
        `ln -s ../secret ${m}/up-secret`,
        // Reads and writes through each link (any content read is printed for the host to check).
        ...links.map((l) => `(cat ${m}/${l}; echo "pwned" > ${m}/${l}) 2>/dev/null; true`),
        `(cat ${m}/../secret ${m}/host-up/../secret) 2>/dev/null; true`,
        `readlink ${m}/host-abs`,
        `ls ${m} | sort | tr '\\n' ' '; echo '<'`,
        `umount ${m}`,
      ].join('\n');
      const run = await runInGuest(script, { shares: [{ tag: 'share', hostPath: share, readOnly: false }] });
      assertScriptSucceeded(run);
      assert.doesNotMatch(run.output, /HOST-SECRET/);
      assert.doesNotMatch(run.output, /^root:/m, 'a shadow/passwd line leaked into the guest');
      const lines = run.output.trim().split('\n');
      assert.ok(lines.includes(secret), 'readlink shows the host-side target verbatim');
      assert.ok(lines.includes('host-abs host-root host-up shadow up-secret up-shadow <'), lines.join('\n'));
      // Nothing outside the share changed or appeared.
      assert.deepEqual(watched.map(fingerprint), before);
      assert.deepEqual(fs.readdirSync(base).sort(), ['secret', 'share']);
      for (const l of ['shadow', 'up-shadow', 'up-secret', 'host-abs', 'host-up', 'host-root'])
        assert.ok(fs.lstatSync(path.join(share, l)).isSymbolicLink(), `${l} is still a symlink`);
    } finally {
      fs.rmSync(base, { recursive: true, force: true });
    }
  });

  it('refuses every change to a read-only share', async () => {
    const share = scratch();
    try {
      fs.writeFileSync(path.join(share, 'f'), 'original\n', { mode: 0o644 });
      fs.chmodSync(path.join(share, 'f'), 0o644);
      const m = '/mnt/share';
      const attempts = [
        `echo x > ${m}/new`,
        `echo x >> ${m}/f`,
        `rm ${m}/f`,
        `mkdir ${m}/d`,
        `chmod 777 ${m}/f`,
        `mv ${m}/f ${m}/g`,
        `ln -s f ${m}/l`,
        `truncate -s 0 ${m}/f`,
      ];
      const script = [
        MOUNT,
        `cat ${m}/f`,
        ...attempts.map((a, i) => `(${a}) 2>/dev/null && echo "attempt ${i} succeeded" || echo refused`),
        `umount ${m}`,
      ].join('\n');
      const run = await runInGuest(script, { shares: [{ tag: 'share', hostPath: share, readOnly: true }] });
      assertScriptSucceeded(run);
      assert.deepEqual(run.output.trim().split('\n'), ['original', ...attempts.map(() => 'refused')]);
      assert.deepEqual(fs.readdirSync(share), ['f']);
      assert.equal(fs.readFileSync(path.join(share, 'f'), 'utf8'), 'original\n');
      assert.equal(fs.statSync(path.join(share, 'f')).mode & 0o777, 0o644);
    } finally {
      fs.rmSync(share, { recursive: true, force: true });
    }
  });
});
