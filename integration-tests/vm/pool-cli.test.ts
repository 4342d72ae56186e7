// `stencil pool init|status|destroy` with the real guest: an init killed mid-build leaves nothing
// listed, and the next init removes its leftovers (after its lock goes stale, up to a minute); init
// mounts the template tmpfs and builds the configuration's template (booting the guest until its
// agent answers), a second init builds
// nothing, the shim's own bootPod clones its pods from that template, and destroy removes it and
// unmounts. Host-runnable cases (errors, list, inspect, rm, a full tmpfs): shim/src/cli/pool.test.ts.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { loadConfig } from '../../runtime-config/src/config.js';
import type { PoolStatus } from '../../shim/src/cli/template-report.js';
import type { Pod } from '../../shim/src/pod/types.js';
import { bootPod } from '../../shim/src/shim/pod-factory.js';
import { createLogger } from '../../shim/src/util/log.js';
import { mountAt, unmountAllUnder } from '../../shim/src/util/mounts.js';
import { repoRoot } from '../../shim/src/util/paths.js';
import { BOOT_TIMEOUT_MS, MEMORY_DIR } from '../lib/guest.js';

const STENCIL = path.join(repoRoot(), 'bin', 'stencil');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-pool-cli-'));
const templates = path.join(dir, 'templates');
const config = path.join(dir, 'configuration.toml');
fs.writeFileSync(
  config,
  `[hypervisor]\nmemory_dir = "${MEMORY_DIR}"\ndefault_memory = "256M"\n` +
    `[factory]\ntemplate_dir = "${templates}"\ntemplate_dir_size = "1G"\non_miss = "fail"\n`,
);

function stencil(...args: string[]) {
  const started = Date.now();
  const r = spawnSync(process.execPath, [STENCIL, ...args, '--config', config], { encoding: 'utf8', timeout: BOOT_TIMEOUT_MS });
  process.stdout.write(`# stencil ${args.join(' ')}: exit ${r.status} in ${Date.now() - started} ms\n${`${r.stdout}${r.stderr}`.replace(/^/gm, '# ')}\n`);
  return { code: r.status, stdout: r.stdout, all: `${r.stdout}${r.stderr}` };
}

const status = () => JSON.parse(stencil('pool', 'status', '--json').stdout) as PoolStatus;

describe('stencil pool with the real guest', () => {
  let pod: Pod | undefined;
  let key = '';
  after(async () => {
    await pod?.shutdown();
    assert.deepEqual(await unmountAllUnder(dir), []);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("pool init killed (SIGKILL) while it boots the template VM: nothing half-built is listed; only its work directory (the VM's RAM in it) remains", async () => {
    const child = spawn(process.execPath, [STENCIL, 'pool', 'init', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
    for (let i = 0; i < 600 && !/\[2\/4\]/.test(out) && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(out, /\[2\/4\]/, `pool init never reached its boot step: ${out}`);
    child.kill('SIGKILL');
    assert.equal(await exited, 'SIGKILL', out);
    process.stdout.write(`# pool init killed at: ${out.trim().split('\n').at(-1)}\n`);
    assert.deepEqual(status().templates, [], 'a half-built template is listed');
    const abandoned = fs.readdirSync(templates).filter((n) => n.startsWith('.build-'));
    assert.deepEqual(abandoned, [`.build-${abandoned[0]?.split('-')[1]}-${child.pid}`], 'the killed build leaves only its own work directory (removed by the next build)');
  });

  it('pool init mounts the tmpfs and builds the template, step by step (after the killed one: its leftovers go)', () => {
    const r = stencil('pool', 'init');
    assert.deepEqual(fs.readdirSync(templates).filter((n) => n.startsWith('.build-')), [], "the killed build's work directory is still there");
    assert.equal(r.code, 0, r.all);
    const steps = [...r.stdout.matchAll(/^template 1 vCPU, 256M: \[(\d)\/4\] /gm)].map((m) => Number(m[1]));
    assert.deepEqual(steps, [1, 2, 3, 4], 'one plain line per build step off a terminal');
    const built = /^template ([0-9a-f]{20}) \(1 vCPU, 256M\): built in [\d.]+ s, .+ on the tmpfs$/m.exec(r.stdout);
    assert.ok(built, r.stdout);
    key = built[1];
    assert.match(r.stdout, /: 1 built, 0 already there, in [\d.]+ s$/m);
    assert.deepEqual(mountAt(templates), { fstype: 'tmpfs', source: 'stencil-templates' });
  });

  it('pool status lists it with its size on the tmpfs', () => {
    const s = status();
    assert.deepEqual(s.templates.map((t) => [t.key, t.vcpus, t.memoryBytes, t.stale]), [[key, 1, 256 * 2 ** 20, null]]);
    assert.ok(s.templates[0].sizeBytes > 0);
    assert.equal(s.tmpfs?.mountedByStencil, true);
    assert.equal(s.tmpfs?.sizeBytes, 2 ** 30);
  });

  it('a second pool init builds nothing', () => {
    const r = stencil('pool', 'init');
    assert.equal(r.code, 0, r.all);
    assert.match(r.stdout, new RegExp(`^template ${key} \\(1 vCPU, 256M\\): exists, made \\d+[smhd]\\S* ago; nothing built$`, 'm'));
    assert.match(r.stdout, /: 0 built, 1 already there/);
    assert.doesNotMatch(r.stdout, /booting/);
  });

  it('the shim clones pods of this configuration from it (on_miss = "fail")', async () => {
    const { config: cfg } = loadConfig({ path: config });
    pod = await bootPod({ vmName: 'pool-cli-pod', stateDir: path.join(dir, 'pod'), hypervisor: cfg.hypervisor, factory: cfg.factory, logger: createLogger({ level: 'warn' }) });
    const t = status().templates[0];
    assert.equal(t.clonesServed, 1);
    assert.equal(t.liveClones.processes, 1, 'this process runs the clone');
    assert.ok(t.liveClones.sharedBytes > 0, JSON.stringify(t.liveClones));
    await pod.shutdown();
    pod = undefined;
  });

  it('pool destroy removes the template and unmounts the tmpfs', () => {
    const r = stencil('pool', 'destroy');
    assert.equal(r.code, 0, r.all);
    assert.match(r.stdout, new RegExp(`^removed template ${key} \\(1 vCPU, 256M\\)$`, 'm'));
    assert.match(r.stdout, /: unmounted its tmpfs$/m);
    assert.equal(mountAt(templates), undefined);
  });
});
