import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { mappingUsage, mapsFileId, processesMapping } from './clone-usage.js';
import { TemplateError, TemplateStore } from './template-store.js';
import type { TemplateSpec } from './template-spec.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-templates-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

let n = 0;
function fixture() {
  const root = path.join(dir, `store-${n++}`);
  const kernel = path.join(root + '-in', 'vmlinux');
  const initrd = path.join(root + '-in', 'initrd');
  fs.mkdirSync(path.dirname(kernel), { recursive: true });
  fs.writeFileSync(kernel, 'kernel v1');
  fs.writeFileSync(initrd, 'initrd v1');
  const spec: TemplateSpec = { kernel, initrd, vcpus: 1, memoryBytes: 256 << 20, cmdline: 'console=ttyS0', devices: 'rng,vsock' };
  return { root, spec, store: new TemplateStore(root) };
}

/** Stands in for the VMM's save: writes the three files a template holds. */
async function fakeSave(workDir: string) {
  for (const name of ['memory', 'state', 'config']) fs.writeFileSync(path.join(workDir, name), `${name}\n`);
}

describe('TemplateStore', () => {
  it('builds once, then finds the same template; files 0600; clones counted', async () => {
    const { store, spec } = fixture();
    assert.equal(store.find(spec), undefined);
    let builds = 0;
    const first = await store.create(spec, async (d) => {
      builds++;
      await fakeSave(d);
    });
    assert.equal(first.built, true);
    const again = await store.create(spec, async () => assert.fail('built twice'));
    assert.equal(again.built, false);
    assert.equal(builds, 1);
    const found = store.find(spec);
    assert.equal(found?.key, first.record.key);
    for (const f of ['memory', 'state', 'config', 'template.json']) assert.equal(fs.statSync(path.join(found!.dir, f)).mode & 0o777, 0o600, f);
    assert.equal(fs.statSync(found!.dir).mode & 0o777, 0o700);
    store.recordClone(found!.key);
    store.recordClone(found!.key);
    assert.equal(store.get(found!.key).clonesServed, 2);
    assert.equal(store.find({ ...spec, vcpus: 2 }), undefined, 'another vCPU count is another template');
    assert.equal(store.find({ ...spec, cmdline: 'console=ttyS0 x' }), undefined, 'another command line is another template');
  });

  it('two processes asking for the same template at once build it once', async () => {
    const { root, spec } = fixture();
    const script = path.join(dir, 'racer.mjs');
    const storeModule = path.join(path.dirname(fileURLToPath(import.meta.url)), 'template-store.js');
    fs.writeFileSync(
      script,
      `import fs from 'node:fs';
       import { TemplateStore } from ${JSON.stringify(storeModule)};
       const [root, spec, log] = [process.argv[2], JSON.parse(process.argv[3]), process.argv[4]];
       const { built } = await new TemplateStore(root).create(spec, async (d) => {
         fs.appendFileSync(log, 'build\\n');
         await new Promise((r) => setTimeout(r, 1500));
         for (const f of ['memory', 'state', 'config']) fs.writeFileSync(d + '/' + f, f);
       });
       process.stdout.write(String(built));`,
    );
    const log = path.join(dir, `builds-${n}.log`);
    const run = () =>
      new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, [script, root, JSON.stringify(spec), log]);
        let out = '';
        child.stdout.on('data', (d) => (out += d));
        child.stderr.on('data', (d) => (out += d));
        child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(out))));
      });
    const results = await Promise.all([run(), run()]);
    assert.deepEqual(results.sort(), ['false', 'true']);
    assert.equal(fs.readFileSync(log, 'utf8'), 'build\n');
  });

  it('a failed build leaves nothing, and names the template', async () => {
    const { store, spec, root } = fixture();
    await assert.rejects(
      store.create(spec, async (d) => {
        fs.writeFileSync(path.join(d, 'memory'), 'partial');
        throw new Error('ENOSPC: no space left on device, write');
      }),
      (err: TemplateError) => err.code === 'build-failed' && /building template [0-9a-f]{20} failed: ENOSPC/.test(err.message),
    );
    await assert.rejects(store.create(spec, async (d) => fs.writeFileSync(path.join(d, 'memory'), 'x')), /the VMM did not write state/);
    assert.deepEqual(fs.readdirSync(root).filter((f) => !f.startsWith('.locks') && f !== '.digests.json'), []);
    assert.deepEqual(store.list(), []);
  });

  it('a changed or missing kernel/initramfs makes the template stale: never found, refused by get', async () => {
    const { store, spec } = fixture();
    const { record } = await store.create(spec, fakeSave);
    assert.equal(record.stale, undefined);
    fs.writeFileSync(spec.initrd, 'initrd v2 (new agent)');
    assert.equal(store.find(spec), undefined);
    assert.throws(() => store.get(record.key), (err: TemplateError) => err.code === 'stale' && /initramfs .* changed/.test(err.message));
    assert.match(store.list()[0].stale ?? '', /changed/);
    fs.rmSync(spec.kernel);
    assert.match(store.get(record.key, { allowStale: true }).stale ?? '', /kernel .* is gone \(ENOENT\)/);
  });

  it('removes a template; a process still mapping its memory keeps the data', async () => {
    const { store, spec } = fixture();
    const { record } = await store.create(spec, fakeSave);
    const fd = fs.openSync(path.join(record.dir, 'memory'), 'r');
    await store.remove(record.key);
    assert.throws(() => store.get(record.key), (err: TemplateError) => err.code === 'not-found');
    assert.equal(fs.readFileSync(fd, 'utf8'), 'memory\n');
    fs.closeSync(fd);
    assert.throws(() => store.get('nonsense'), (err: TemplateError) => err.code === 'invalid');
  });

  it('clears build directories of dead builders', async () => {
    const { store, spec, root } = fixture();
    fs.mkdirSync(path.join(root, '.build-0123456789abcdef0123-999999999'), { recursive: true });
    await store.create(spec, fakeSave);
    assert.ok(!fs.readdirSync(root).some((f) => f.startsWith('.build-')));
  });
});

/** A process opening `file` and mapping it MAP_PRIVATE (mmap.ACCESS_COPY), reading every page and writing 16 of them; run through `runner` (e.g. in another mount namespace) if given. */
async function privateMapper(file: string, runner: string[] = []) {
  const script = `import mmap, sys, time
f = open(sys.argv[1], 'rb')
m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
s = sum(m[i] for i in range(0, len(m), 4096))
for i in range(16): m[i * 4096] = 2
print('ready', flush=True)
time.sleep(60)`;
  const [cmd, ...args] = [...runner, 'python3', '-c', script, file];
  const child = spawn(cmd, args);
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  await new Promise((resolve, reject) => {
    child.stdout.once('data', resolve);
    child.once('exit', (code) => reject(new Error(`the mapper exited ${code}: ${stderr}`)));
  });
  return child;
}

describe('clone memory usage (smaps)', () => {
  it('separates shared template pages from pages a private mapping wrote', async () => {
    const file = path.join(dir, 'template-memory');
    fs.writeFileSync(file, Buffer.alloc(64 * 4096, 1));
    const child = await privateMapper(file);
    try {
      const usage = processesMapping(file).find((u) => u.pid === child.pid);
      assert.ok(usage, 'the mapping process is found');
      assert.deepEqual(
        { rss: usage.rssBytes, shared: usage.sharedBytes, private: usage.privateBytes },
        { rss: 64 * 4096, shared: 48 * 4096, private: 16 * 4096 },
      );
    } finally {
      child.kill('SIGKILL');
    }
    assert.equal(mappingUsage(999999999, mapsFileId(file)!), undefined);
    assert.equal(mapsFileId(path.join(dir, 'no-such-file')), undefined);
  });

  // A pod's daemon has its own mount namespace, and /proc/<pid>/maps names a file by the path the
  // reader would see it: a chroot'ed reader or a bind mount gives another path for the same file.
  it('finds a mapping of the file through another path in another mount namespace', { skip: process.getuid?.() !== 0 && 'needs root (unshare --mount)' }, async () => {
    const file = path.join(dir, 'template-memory-ns');
    fs.writeFileSync(file, Buffer.alloc(64 * 4096, 1));
    const elsewhere = path.join(dir, 'bound-elsewhere');
    const child = await privateMapper(path.join(elsewhere, path.basename(file)), [
      'unshare', '--mount', '--propagation', 'private', 'sh', '-c', `mkdir -p "$1" && mount --bind "$2" "$1" && shift 2 && exec "$@"`, 'sh', elsewhere, dir,
    ]);
    try {
      const maps = fs.readFileSync(`/proc/${child.pid}/maps`, 'utf8');
      assert.ok(!maps.includes(file) && maps.includes(path.join(elsewhere, path.basename(file))), `the mapping shows under the other path:\n${maps}`);
      const usage = processesMapping(file).find((u) => u.pid === child.pid);
      assert.ok(usage, 'the mapping process is found by the file, not by its path');
      assert.equal(usage.privateBytes, 16 * 4096);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
