// The real-containerd harness, validated with Debian's runc (io.containerd.runc.v2) on containerd 1.6
// and 2.1: ctr run (output, exit status, stdin), the leak report, and stop()'s cleanup. The same
// scenarios run against Stencil's shim in the shim tests; runc is the reference behaviour.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CONTAINERD_VERSIONS, ContainerdInstance } from '../lib/containerd.js';

const RUNC = 'io.containerd.runc.v2';

for (const version of CONTAINERD_VERSIONS) {
  describe(`containerd ${version} with runc`, () => {
    let c: ContainerdInstance;
    let image: string;

    before(async () => {
      c = await ContainerdInstance.start({ version });
      image = await c.importBusybox();
      process.stdout.write(`# containerd ${c.packageVersion} at ${c.dir}, snapshotter ${c.snapshotter}\n`);
    });
    after(async () => {
      await c?.stop();
    });

    it('ctr run --rm echo hi prints hi and exits 0', async () => {
      const r = await c.ctr(['run', '--rm', '--runtime', RUNC, image, 't1', 'echo', 'hi']);
      assert.equal(r.stdout, 'hi\n', r.stderr);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(await c.leaks(), []);
    });

    it("sh -c 'exit 3' exits 3", async () => {
      const r = await c.ctr(['run', '--rm', '--runtime', RUNC, image, 't1', 'sh', '-c', 'exit 3']);
      assert.equal(r.code, 3, r.stderr);
      assert.deepEqual(await c.leaks(), []);
    });

    it('stdin round-trips through cat', async () => {
      const r = await c.ctr(['run', '--rm', '--runtime', RUNC, image, 't1', 'cat'], {
        input: 'data\n',
        closeInputWhen: /data\n/,
      });
      assert.equal(r.stdout, 'data\n', r.stderr);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(await c.leaks(), []);
    });

    it('leaks() reports a running task (shim, task, container, mounts) until it is deleted', async () => {
      const run = await c.ctr(['run', '-d', '--runtime', RUNC, image, 'bg', 'sleep', '1000']);
      assert.equal(run.code, 0, run.stderr);
      const during = await c.leaks();
      const has = (re: RegExp) => assert.ok(during.some((l) => re.test(l)), `${re} not in leaks():\n${during.join('\n')}`);
      has(/^shim process \d+: .*containerd-shim-runc-v2/);
      has(/^process \d+: (sleep 1000|runc init)$/); // the container process (maybe before its exec)
      has(/^task bg \d+ RUNNING$/);
      has(/^container bg$/);
      has(/^active snapshot bg$/);
      has(/^mount .*\/bg\/rootfs /);
      has(/^socket \/run\/containerd\/s\/[0-9a-f]{64}$/);

      assert.equal((await c.ctr(['tasks', 'kill', '-s', 'SIGKILL', 'bg'])).code, 0);
      // The task is stopped once Wait would return: poll ctr task ls.
      for (let i = 0; i < 100 && !/bg\s+\d+\s+STOPPED/.test((await c.ctr(['tasks', 'ls'])).stdout); i++) await sleep(100);
      assert.equal((await c.ctr(['tasks', 'delete', 'bg'])).code, 0);
      assert.equal((await c.ctr(['containers', 'delete', 'bg'])).code, 0);
      assert.deepEqual(await c.waitNoLeaks(), []);
    });

    it('stop() kills a running shim and its container, unmounts and removes everything', async () => {
      const other = await ContainerdInstance.start({ version });
      try {
        await other.importBusybox();
        assert.equal((await other.ctr(['run', '-d', '--runtime', RUNC, image, 'left', 'sleep', '1000'])).code, 0);
        assert.ok((await other.leaks()).length > 0);
      } finally {
        const report = await other.stop();
        assert.ok(report.killed.some((k) => /containerd-shim-runc-v2/.test(k)), `stop() report: ${JSON.stringify(report)}`);
        assert.ok(report.unmounted.some((m) => m.endsWith('/left/rootfs')), `stop() report: ${JSON.stringify(report)}`);
      }
      assert.deepEqual(await other.leaks(), []);
      assert.equal(fs.existsSync(other.dir), false);
    });
  });
}
