// Pods cloned from a template with the real guest and agent: the template is a pod VM saved once
// its agent answered; each clone is restored copy-on-write from it and gets its own identity when
// it resumes (vsock CID through the device's transport reset, a reseeded RNG, the host's clock, its
// own 9p share, the pod's hostname). Twenty clones must differ in everything a guest could use to tell them apart,
// and the template's memory must never change.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { haveStaticBusybox } from '../../shim/src/agent/testing/busybox-oci.js';
import type { TemplateRecord } from '../../shim/src/factory/template-store.js';
import type { PodVm } from '../../shim/src/pod/pod-vm.js';
import { bootTestPod, printConsole, Rootfses, runContainer } from '../lib/pod.js';
import { QmpClient } from '../lib/qmp-client.js';
import { cloningProvider, ensureTestTemplate, templateFile, testTemplateStore } from '../lib/template.js';

const CLONES = 20;
const sha256 = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

interface CloneFacts {
  bootId: string;
  random: string;
  guestSeconds: number;
  hostBefore: number;
  hostAfter: number;
}

const IDENTITY_SCRIPT = 'cat /proc/sys/kernel/random/boot_id; head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"; echo; date +%s; hostname';
/** The identity container shares the guest's UTS namespace, so `hostname` shows the pod's. */
function inGuestUts(spec: Record<string, unknown>): void {
  delete spec.hostname;
  const linux = spec.linux as { namespaces: Array<{ type: string }> };
  linux.namespaces = linux.namespaces.filter((n) => n.type !== 'uts');
}

describe('pod templates: clones of the real guest', { skip: haveStaticBusybox() ? undefined : 'busybox-static is not installed' }, () => {
  let rootfses: Rootfses;
  let template: TemplateRecord;
  let memoryHash: string;
  const clones: PodVm[] = [];

  before(async () => {
    rootfses = new Rootfses();
    const made = await ensureTestTemplate();
    template = made.record;
    process.stdout.write(`# template ${template.key}: ${made.built ? 'built' : 'reused'} in ${made.ms} ms\n`);
    memoryHash = sha256(templateFile(template, 'memory'));
  });

  after(async () => {
    for (const pod of clones) await pod.shutdown().catch(() => printConsole(pod));
    rootfses?.remove();
  });

  it('is saved with its RAM, state and config, each 0600, and its configuration', () => {
    for (const name of ['memory', 'state', 'config'] as const) {
      assert.equal(fs.statSync(templateFile(template, name)).mode & 0o777, 0o600, `${name} mode`);
    }
    const config = JSON.parse(fs.readFileSync(templateFile(template, 'config'), 'utf8')) as Record<string, unknown>;
    assert.equal(config.vcpus, 1, JSON.stringify(config));
    assert.equal(config.memoryBytes, 512 * 2 ** 20, JSON.stringify(config));
  });

  it(`${CLONES} clones resume without booting, each with its own CID, boot_id, random bytes, hostname and the host's clock`, async () => {
    // Each clone is checked right after it resumes and then shut down: the figures of twenty
    // clones need not be taken at the same time, and in the emulated host a clone left idle for
    // about a minute meets QEMU's emulated-SVM TLB bug (integration-tests/README.md).
    const readyMs: number[] = [];
    const facts: CloneFacts[] = [];
    const cids: number[] = [];
    for (let i = 0; i < CLONES; i++) {
      const started = Date.now();
      const pod = await bootTestPod(`clone${i}`, { vmProvider: cloningProvider() });
      readyMs.push(Date.now() - started);
      clones.push(pod);
      assert.doesNotMatch(pod.consoleTail(), /Linux version|Run \/init/, `clone ${i} booted a kernel`);
      const hostBefore = Date.now();
      const run = await runContainer(pod, `id${i}`, rootfses.make(), { args: ['sh', '-c', IDENTITY_SCRIPT] }, undefined, inGuestUts).catch((err: Error) => {
        printConsole(pod);
        throw new Error(`clone ${i} (${pod.id}): ${err.message}`, { cause: err });
      });
      const hostAfter = Date.now();
      assert.equal(run.exit.exitStatus, 0, run.stderr.toString());
      const [bootId, random, seconds, hostname] = run.stdout.toString().trim().split('\n');
      facts.push({ bootId, random, guestSeconds: Number(seconds), hostBefore, hostAfter });
      assert.equal(hostname, pod.id.slice(0, 63), `clone ${i} kept another hostname`);
      // The guest's own view of its CID is the new one (the transport reset made it re-read it).
      assert.equal((await pod.ping()).guestCid, pod.guestCid, `pod ${pod.id}`);
      cids.push(pod.guestCid);
      if (i < CLONES - 1) await clones.pop()!.shutdown();
    }
    process.stdout.write(`# clone to agent ready (ms): ${readyMs.join(' ')}\n`);
    const distinct = (what: string, values: unknown[]) =>
      assert.equal(new Set(values).size, values.length, `${what} repeat across clones: ${values.join(' ')}`);
    distinct('boot_ids', facts.map((f) => f.bootId));
    distinct('random bytes', facts.map((f) => f.random));
    for (const f of facts) assert.match(f.random, /^[0-9a-f]{64}$/);
    distinct('pod CIDs', cids);
    for (const f of facts) {
      // `date +%s` truncates: the guest clock may read up to 1 s behind the host's at that instant.
      assert.ok(
        f.guestSeconds * 1000 >= f.hostBefore - 2000 && f.guestSeconds * 1000 <= f.hostAfter + 1000,
        `guest clock ${f.guestSeconds} s is not within 1 s of the host's (${f.hostBefore / 1000}..${f.hostAfter / 1000})`,
      );
    }
  });

  it("leaves the template's memory unchanged and counts the clones it served", () => {
    assert.equal(sha256(templateFile(template, 'memory')), memoryHash, 'a clone wrote to the template memory');
    assert.ok(testTemplateStore().get(template.key).clonesServed >= CLONES);
  });

  it("serves QMP on each pod VM's socket in its state directory: stop parks the guest, cont resumes it", async () => {
    const pod = clones[0];
    assert.ok(pod, 'no clone');
    assert.equal(fs.statSync(pod.qmpPath).mode & 0o777, 0o600);
    const qmp = await QmpClient.connect(pod.qmpPath);
    try {
      assert.deepEqual(await qmp.execute('query-status'), { status: 'running', singlestep: false, running: true });
      await qmp.execute('stop');
      await qmp.waitEvent((e) => e.event === 'STOP');
      assert.deepEqual(await qmp.execute('query-status'), { status: 'paused', singlestep: false, running: false });
      await qmp.execute('cont');
      await qmp.waitEvent((e) => e.event === 'RESUME');
      const run = await runContainer(pod, 'after-cont', rootfses.make(), { args: ['echo', 'resumed'] });
      assert.equal(run.stdout.toString(), 'resumed\n');
    } finally {
      qmp.close();
    }
  });

  it('keeps clones running after their template is removed', async () => {
    assert.ok(clones.length > 0, 'no clones to check');
    await testTemplateStore().remove(template.key);
    assert.equal(fs.existsSync(template.dir), false);
    const run = await runContainer(clones[0], 'after-rm', rootfses.make(), { args: ['echo', 'still here'] });
    assert.equal(run.stdout.toString(), 'still here\n');
  });
});
