// One pod template shared by the tests of a run: built by the first test file that needs it (in
// the emulated host's tmpfs, which lives for the whole `make integration-test`), reused after.
import fs from 'node:fs';
import path from 'node:path';
import { buildPodTemplate } from '../../shim/src/factory/pod-template.js';
import { type PodSize, podShapeFromConfig, templateSpecOfShape } from '../../shim/src/factory/pod-shape.js';
import { templateVmProvider } from '../../shim/src/factory/template-provider.js';
import { type TemplateRecord, TemplateStore } from '../../shim/src/factory/template-store.js';
import { ensureTmpfs } from '../../shim/src/factory/tmpfs.js';
import type { VmProvider } from '../../shim/src/hypervisor/types.js';
import { defaultConfig } from '../../runtime-config/src/config.js';
import type { PodVmShape } from '../../shim/src/pod/vm-spec.js';
import type { Logger } from '../../shim/src/util/log.js';
import { builtGuestArtifacts, repoRoot } from '../../shim/src/util/paths.js';

export const TEST_TEMPLATE_DIR = '/dev/shm/stencil-test-templates';

/** The shape of the test pods (lib/pod.ts bootTestPod's size). */
export function testPodShape(overrides: Partial<PodVmShape> = {}): PodVmShape {
  const { kernel, initrd } = builtGuestArtifacts();
  return { kernel, initrd, vcpus: 1, memoryBytes: 512 * 2 ** 20, ...overrides };
}

export function testTemplateStore(): TemplateStore {
  fs.mkdirSync(TEST_TEMPLATE_DIR, { recursive: true, mode: 0o700 });
  return new TemplateStore(TEST_TEMPLATE_DIR);
}

/** The template for `shape` in `store`, built unless it has one; `built` says whether it was. */
export async function ensureTemplate(store: TemplateStore, shape: PodVmShape, logger?: Logger): Promise<{ record: TemplateRecord; built: boolean; ms: number }> {
  const started = Date.now();
  const { record, built } = await store.create(templateSpecOfShape(shape), (dir, _inputs, progress) => buildPodTemplate(shape, dir, progress, logger));
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

// ---- the shim's templates (containerd tests, benchmarks) ----

/** The shim's template directory in tests: its own tmpfs, outside /dev/shm and /run/stencil (leak checks watch those). */
export const SHIM_TEMPLATE_DIR = '/run/stencil-test-templates';

/** A Stencil configuration file's text: templates from SHIM_TEMPLATE_DIR, a miss fails unless `onMiss` says otherwise. */
export function shimConfig(o: { memory?: string; onMiss?: 'boot' | 'fail'; transport?: string; failpoints?: boolean; agentRequestTimeoutMs?: number; exitGraceMs?: number } = {}): string {
  return [
    '[hypervisor]',
    o.memory ? `default_memory = "${o.memory}"` : '',
    '[factory]',
    `template_dir = "${SHIM_TEMPLATE_DIR}"`,
    `on_miss = "${o.onMiss ?? 'fail'}"`,
    '[runtime]',
    o.transport ? `transport = "${o.transport}"` : '',
    o.failpoints ? 'failpoints = true' : '',
    o.agentRequestTimeoutMs ? `agent_request_timeout_ms = ${o.agentRequestTimeoutMs}` : '',
    o.exitGraceMs ? `exit_grace_ms = ${o.exitGraceMs}` : '',
    // Which process holds a CRI sandbox ("agent" or "image"), to run the scenarios with either.
    process.env.STENCIL_TEST_SANDBOX_PAUSE ? `sandbox_pause = "${process.env.STENCIL_TEST_SANDBOX_PAUSE}"` : '',
    // For a closer look at a run (the guest's console and the agent's log are debug lines).
    process.env.STENCIL_TEST_SHIM_LOG_LEVEL ? `log_level = "${process.env.STENCIL_TEST_SHIM_LOG_LEVEL}"` : '',
  ]
    .filter(Boolean)
    .join('\n') + '\n';
}

/** Writes shimConfig(o) to build/<name> and returns its path. */
export function writeShimConfig(name: string, o: Parameters<typeof shimConfig>[0] = {}): string {
  const file = path.join(repoRoot(), 'build', name);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, shimConfig(o));
  return file;
}

/** The default shim configuration for tests (templates on, a miss fails). */
export const SHIM_TEMPLATE_CONFIG = () => writeShimConfig('shim-templates.toml');

/** The pod shape the shim uses with the default [hypervisor] settings (shim/src/shim/pod-factory.ts), at `size`. */
export function shimPodShape(size: PodSize = {}): PodVmShape {
  return podShapeFromConfig(defaultConfig().hypervisor, size);
}

/** The template the shim clones with the default configuration (pods of `size`), in SHIM_TEMPLATE_DIR (a tmpfs). */
export async function ensureShimTemplate(logger?: Logger, size: PodSize = {}): Promise<{ record: TemplateRecord; built: boolean; ms: number }> {
  await ensureTmpfs(SHIM_TEMPLATE_DIR, 2 * 2 ** 30);
  return ensureTemplate(new TemplateStore(SHIM_TEMPLATE_DIR), shimPodShape(size), logger);
}

