// The pod shape of a configuration: the template `stencil pool init` makes from it must be the one
// the shim's bootPod looks up for the same configuration. Needs root (a pod's share view mounts).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { defaultConfig, type HypervisorConfig } from '../../../runtime-config/src/config.js';
import { bootPod } from '../shim/pod-factory.js';
import { createLogger } from '../util/log.js';
import { builtGuestArtifacts } from '../util/paths.js';
import {
  podShapeFromConfig,
  podSizeForSandbox,
  SANDBOX_CPU_PERIOD,
  SANDBOX_CPU_QUOTA,
  SANDBOX_MEMORY,
  TEMPLATE_ANNOTATION,
  templateSpecOfShape,
  templatesAllowed,
} from './pod-shape.js';
import { TemplateMissError } from './template-provider.js';
import { TemplateStore } from './template-store.js';

const dir = fs.mkdtempSync('/dev/shm/stencil-pod-shape-');
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function hypervisor(overrides: Partial<HypervisorConfig> = {}): HypervisorConfig {
  const kernel = path.join(dir, 'vmlinux');
  const initrd = path.join(dir, 'initrd');
  fs.writeFileSync(kernel, 'kernel');
  fs.writeFileSync(initrd, 'initrd');
  return { ...defaultConfig().hypervisor, kernel, initrd, kernelParams: 'quiet=1 foo', defaultVcpus: 2, defaultMemory: 384 * 2 ** 20, memoryDir: dir, ...overrides };
}

describe('podShapeFromConfig', () => {
  it('takes the guest, kernel_params and default size from [hypervisor]; a size overrides vCPUs and memory', () => {
    const hv = hypervisor();
    assert.deepEqual(podShapeFromConfig(hv), { kernel: hv.kernel, initrd: hv.initrd, vcpus: 2, memoryBytes: 384 * 2 ** 20, kernelParams: 'quiet=1 foo' });
    assert.deepEqual(podShapeFromConfig(hv, { vcpus: 4 }), { ...podShapeFromConfig(hv), vcpus: 4 });
    assert.deepEqual(podShapeFromConfig(hv, { memoryBytes: 2 ** 30 }), { ...podShapeFromConfig(hv), memoryBytes: 2 ** 30 });
  });

  it('takes an empty kernel or initrd to mean the built guest (build/guest.json)', () => {
    let built: ReturnType<typeof builtGuestArtifacts> | Error;
    try {
      built = builtGuestArtifacts();
    } catch (err) {
      built = err as Error;
    }
    const hv = hypervisor({ kernel: '', initrd: '' });
    if (built instanceof Error) assert.throws(() => podShapeFromConfig(hv), { message: built.message });
    else assert.deepEqual([podShapeFromConfig(hv).kernel, podShapeFromConfig(hv).initrd], [built.kernel, built.initrd]);
  });

  it('gives the template bootPod looks up: a miss before it exists, a hit after', async () => {
    const hv = hypervisor();
    const store = new TemplateStore(path.join(dir, 'templates'));
    fs.mkdirSync(store.root); // misses are counted in an existing store only
    const factory = { enabled: true, templateDir: store.root, templateDirSize: 2 ** 30, onMiss: 'fail' as const };
    const boot = (n: number) => bootPod({ vmName: `shape-${n}`, stateDir: path.join(dir, `pod-${n}`), hypervisor: hv, factory, logger: createLogger({ level: 'error' }) });
    await assert.rejects(boot(1), TemplateMissError);
    assert.equal(store.misses(), 1);
    // A pod annotated off never looks a template up: it boots (and fails here on the test's
    // kernel, which is no kernel), though on_miss is "fail" and the store has none.
    const privatePod = bootPod({
      vmName: 'shape-private', stateDir: path.join(dir, 'pod-private'), hypervisor: hv, factory,
      annotations: { [TEMPLATE_ANNOTATION]: 'off' }, logger: createLogger({ level: 'error' }),
    });
    await assert.rejects(privatePod, (err: Error) => !(err instanceof TemplateMissError));
    assert.equal(store.misses(), 1, 'no template was looked up');
    // Files that are no snapshot: the restore fails, but only a template that matched gets that far.
    const { record } = await store.create(templateSpecOfShape(podShapeFromConfig(hv)), async (d) => {
      for (const f of ['memory', 'state', 'config']) fs.writeFileSync(path.join(d, f), 'not a snapshot');
    });
    await assert.rejects(boot(2), (err: Error) => !(err instanceof TemplateMissError) && err.message.includes(record.dir));
    assert.equal(store.misses(), 1, 'the second pod found the template');
    for (const n of [1, 2]) assert.equal(fs.existsSync(path.join(dir, `pod-${n}`)), false, 'a failed pod leaves no state');
    // Another size from the same configuration is another template.
    assert.notEqual(store.find(templateSpecOfShape(podShapeFromConfig(hv, { vcpus: 1 }))), record);
  });
});

describe('pod size from CRI sandbox annotations', () => {
  const hv = { defaultVcpus: 1, defaultMemory: 256 * 2 ** 20 } as HypervisorConfig;
  it('adds the pod limits to the default size (Kata-style static sizing)', () => {
    assert.deepEqual(
      podSizeForSandbox(hv, { [SANDBOX_CPU_PERIOD]: '100000', [SANDBOX_CPU_QUOTA]: '150000', [SANDBOX_MEMORY]: String(100 * 2 ** 20 + 1) }),
      { vcpus: 3, memoryBytes: 256 * 2 ** 20 + 102 * 2 ** 20 },
    );
  });
  it('keeps the default size without limits (absent, 0 or -1 = unlimited)', () => {
    assert.deepEqual(podSizeForSandbox(hv, {}), {});
    assert.deepEqual(podSizeForSandbox(hv, { [SANDBOX_CPU_PERIOD]: '100000', [SANDBOX_CPU_QUOTA]: '-1', [SANDBOX_MEMORY]: '0' }), {});
  });
  it('refuses a value that is not an integer, naming the annotation', () => {
    assert.throws(() => podSizeForSandbox(hv, { [SANDBOX_MEMORY]: '1Gi' }), /io\.kubernetes\.cri\.sandbox-memory must be an integer/);
  });
});

describe('io.stencil.template: a pod kept off templates', () => {
  it('allows templates unless the annotation says off; refuses other values by name', () => {
    assert.equal(templatesAllowed({}), true);
    assert.equal(templatesAllowed({ [TEMPLATE_ANNOTATION]: 'on' }), true);
    assert.equal(templatesAllowed({ [TEMPLATE_ANNOTATION]: 'off' }), false);
    for (const bad of ['no', 'OFF', 'false', '0'])
      assert.throws(() => templatesAllowed({ [TEMPLATE_ANNOTATION]: bad }), new RegExp(`io\\.stencil\\.template must be "on" or "off", got "${bad}"`));
  });
});
