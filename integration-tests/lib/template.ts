// One pod template shared by the tests of a run: built by the first test file that needs it (in
// the emulated host's tmpfs, which lives for the whole `make integration-test`), reused after.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildPodTemplate } from '../../shim/src/factory/pod-template.js';
import { templateSpecOf, templateVmProvider } from '../../shim/src/factory/template-provider.js';
import { type TemplateRecord, TemplateStore } from '../../shim/src/factory/template-store.js';
import type { VmProvider } from '../../shim/src/hypervisor/types.js';
import { podVmSpec, type PodVmShape } from '../../shim/src/pod/vm-spec.js';
import type { Logger } from '../../shim/src/util/log.js';
import { builtGuestArtifacts } from '../../shim/src/util/paths.js';

export const TEST_TEMPLATE_DIR = '/dev/shm/stencil-test-templates';

/** The shape of the test pods (lib/pod.ts bootTestPod's size). */
export function testPodShape(overrides: Partial<PodVmShape> = {}): PodVmShape {
  const { kernel, initrd } = builtGuestArtifacts();
  return { kernel, initrd, vcpus: 1, memoryBytes: 512 * 2 ** 20, ...overrides };
}

/** The template spec a pod of `shape` looks up (host paths do not matter to it). */
export function templateSpecForShape(shape: PodVmShape) {
  return templateSpecOf(
    podVmSpec(shape, { name: 'x', memoryDir: os.tmpdir(), memoryBacking: 'tmpfs', sharedDir: os.tmpdir(), vsockPath: '/x', guestCid: 3 }),
  );
}

export function testTemplateStore(): TemplateStore {
  fs.mkdirSync(TEST_TEMPLATE_DIR, { recursive: true, mode: 0o700 });
  return new TemplateStore(TEST_TEMPLATE_DIR);
}

/** The template for `shape` in `store`, built unless it has one; `built` says whether it was. */
export async function ensureTemplate(store: TemplateStore, shape: PodVmShape, logger?: Logger): Promise<{ record: TemplateRecord; built: boolean; ms: number }> {
  const started = Date.now();
  const { record, built } = await store.create(templateSpecForShape(shape), (dir, _inputs, progress) => buildPodTemplate(shape, dir, progress, logger));
  return { record, built, ms: Date.now() - started };
}

/** The test template for `shape`, built unless this run has one. */
export function ensureTestTemplate(shape = testPodShape(), logger?: Logger): Promise<{ record: TemplateRecord; built: boolean; ms: number }> {
  return ensureTemplate(testTemplateStore(), shape, logger);
}

/** A VmProvider cloning from the test templates; a miss fails the pod. */
export function cloningProvider(logger?: Logger): VmProvider {
  return templateVmProvider({ store: testTemplateStore(), onMiss: 'fail', logger });
}

export const templateFile = (record: TemplateRecord, name: 'memory' | 'state' | 'config') => path.join(record.dir, name);
