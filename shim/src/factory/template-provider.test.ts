// The template VmProvider on this host's /dev/kvm, with a tiny guest (a CPL3 loop) standing in for
// the pod VM: a VM whose spec matches a template is restored from it (and counted), a miss follows
// the policy ('fail' names what did not match, 'boot' boots and warns), disks always boot.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { MicroVm } from '../hypervisor/microvm.js';
import { tinyElfKernel } from '../hypervisor/testing/tiny-kernel.js';
import type { VmSpec } from '../hypervisor/types.js';
import { createLogger } from '../util/log.js';
import { templateSpecOf, templateVmProvider, TemplateMissError } from './template-provider.js';
import { TemplateStore } from './template-store.js';

// 1: jmp 1b
const SPIN = [0xeb, 0xfe];

describe('templateVmProvider', () => {
  let dir: string;
  let spec: VmSpec;
  let store: TemplateStore;
  const warnings: string[] = [];
  const logger = createLogger({
    level: 'info',
    stream: new Writable({
      write(chunk: Buffer, _enc, done) {
        warnings.push(chunk.toString());
        done();
      },
    }),
  });

  before(async () => {
    dir = fs.mkdtempSync(path.join('/dev/shm', 'stencil-provider-test-'));
    const kernel = path.join(dir, 'vmlinux');
    const initrd = path.join(dir, 'initrd');
    fs.writeFileSync(kernel, tinyElfKernel(SPIN));
    fs.writeFileSync(initrd, 'not really an initramfs');
    spec = {
      name: 'provider-test',
      vcpus: 1,
      memoryBytes: 32 * 2 ** 20,
      kernel,
      initrd,
      cmdline: 'console=ttyS0',
      memoryDir: dir,
      memoryBacking: 'tmpfs',
      virtioRng: true,
    };
    store = new TemplateStore(path.join(dir, 'templates'));
    await store.create(templateSpecOf(spec), async (workDir) => {
      const vm = MicroVm.create({ ...spec, name: 'template', memoryDir: workDir });
      vm.start();
      await vm.pause();
      vm.saveSnapshot(workDir);
      await vm.destroy();
    });
  });

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('restores a VM whose spec matches a template, and counts the clone', async () => {
    const provide = templateVmProvider({ store, onMiss: 'fail', logger });
    const vm = await provide({ ...spec, name: 'clone-1', memoryDir: '/nonexistent' });
    try {
      vm.start();
      await vm.pause();
      assert.equal(vm.memoryPath.startsWith(store.root), true, `clone memory ${vm.memoryPath}`);
    } finally {
      await vm.destroy();
    }
    assert.equal(store.list()[0]!.clonesServed, 1);
    assert.ok(warnings.some((w) => /pod VM cloned from a template/.test(w)));
  });

  it("refuses a VM no template matches with 'fail', naming it and what to do", async () => {
    const provide = templateVmProvider({ store, onMiss: 'fail', logger });
    await assert.rejects(
      async () => provide({ ...spec, memoryBytes: 48 * 2 ** 20 }),
      (err: unknown) => {
        assert.ok(err instanceof TemplateMissError, String(err));
        assert.equal(err.code, 'FAILED_PRECONDITION');
        assert.match(err.message, /no template matches VM provider-test \(1 vCPU, 48 MiB, kernel .*vmlinux/);
        assert.match(err.message, /stencil pool init/);
        return true;
      },
    );
    assert.equal(store.misses(), 1);
  });

  it("boots a VM no template matches with 'boot', with a warning", async () => {
    const provide = templateVmProvider({ store, onMiss: 'boot', logger });
    const vm = await provide({ ...spec, vcpus: 2, name: 'cold-1' });
    try {
      assert.equal(vm.state, 'created');
      assert.equal(path.dirname(vm.memoryPath), dir, 'a cold VM has its own RAM file');
    } finally {
      await vm.destroy();
    }
    assert.ok(warnings.some((w) => /warn.*no template matches VM cold-1 \(2 vCPU.*booting it from scratch.*2 misses so far/.test(w)), warnings.join(''));
  });

  it('always boots VMs with disks (a template cannot know their host files)', async () => {
    const disk = path.join(os.tmpdir(), `stencil-provider-disk-${process.pid}`);
    fs.writeFileSync(disk, Buffer.alloc(1 << 20));
    try {
      const vm = await templateVmProvider({ store, onMiss: 'boot', logger })({ ...spec, name: 'with-disk', disks: [{ path: disk, readOnly: true }] });
      await vm.destroy();
      await assert.rejects(async () => templateVmProvider({ store, onMiss: 'fail' })({ ...spec, disks: [{ path: disk, readOnly: true }] }), TemplateMissError);
    } finally {
      fs.rmSync(disk, { force: true });
    }
  });
});
