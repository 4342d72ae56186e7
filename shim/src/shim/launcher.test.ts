// The native launcher (shim/launcher/launcher.c) answers `start` for a pod whose daemon runs with
// exactly what address.ts names: the same group (JSON.parse's reading of the CRI sandbox id
// annotation, else the task id) and so the same socket and recorded address. Run here without
// `node` on PATH: anything that needed Node (a new daemon, another action) fails saying so.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { groupId, removeDaemonSocket, SOCKET_DIR, socketPath, writeDaemonAddress } from './address.js';
import { repoRoot } from '../util/paths.js';

const SHIM = path.join(repoRoot(), 'bin', 'containerd-shim-stencil-v2');
const NAMESPACE = 'launcher';
const KEY = 'io.kubernetes.cri.sandbox-id';
const isRoot = process.getuid?.() === 0;

describe('containerd-shim-stencil-v2 start, native', { skip: isRoot ? undefined : 'needs root (/run/containerd/s)' }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-launcher-'));
  const address = path.join(dir, 'containerd.sock'); // only hashed into socket names
  const noNode = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-launcher-path-'));
  after(() => {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(noNode, { recursive: true, force: true });
  });
  let bundles = 0;

  function bundleWithSpec(specText: string | Buffer): string {
    const b = path.join(dir, `b${bundles++}`);
    fs.mkdirSync(b);
    fs.writeFileSync(path.join(b, 'config.json'), specText);
    return b;
  }

  /** A listening socket where the pod's daemon would be, with its recorded address. */
  async function fakeDaemon(group: string, containerd = address): Promise<{ address: string; close: () => Promise<void> }> {
    const sock = socketPath(containerd, NAMESPACE, group);
    fs.mkdirSync(SOCKET_DIR, { recursive: true });
    removeDaemonSocket(sock);
    const server = net.createServer((c) => c.destroy());
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    writeDaemonAddress(sock, `unix://${sock}`);
    return {
      address: `unix://${sock}`,
      close: async () => {
        await new Promise<void>((resolve) => server.close(() => resolve()));
        removeDaemonSocket(sock);
      },
    };
  }

  function start(b: string, id: string, args?: string[]) {
    const argv = args ?? ['-namespace', NAMESPACE, '-address', address, '-publish-binary', '/bin/false', '-id', id, 'start'];
    const r = spawnSync(SHIM, argv, { cwd: b, env: { PATH: noNode }, input: 'runtime options', timeout: 30_000 });
    return { status: r.status, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
  }

  function assertAnswered(r: ReturnType<typeof start>, b: string, expected: string) {
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, expected);
    assert.equal(r.stderr, '');
    assert.equal(fs.readFileSync(path.join(b, 'address'), 'utf8'), expected);
  }

  function assertNeededNode(r: ReturnType<typeof start>) {
    assert.equal(r.status, 1);
    assert.match(r.stderr, /cannot run node/);
    assert.equal(r.stdout, '');
  }

  it('answers with the recorded address of the sandbox’s daemon, and of the task’s own without the CRI annotation', async () => {
    const sandbox = 'a'.repeat(64);
    const daemon = await fakeDaemon(sandbox);
    const own = await fakeDaemon('task-1');
    try {
      const b = bundleWithSpec(JSON.stringify({ ociVersion: '1.2.1', annotations: { [KEY]: sandbox, other: 'x' } }, null, 2));
      assertAnswered(start(b, 'c1'), b, daemon.address);
      const plain = bundleWithSpec(JSON.stringify({ ociVersion: '1.2.1', process: { args: ['sh', '-c', `echo "${KEY}"`] } }));
      assertAnswered(start(plain, 'task-1'), plain, own.address);
      // `-name=value` flags and -debug, as Go's flag package takes them.
      const eq = bundleWithSpec('{"annotations":{}}');
      assertAnswered(start(eq, 'task-1', ['-debug', `-namespace=${NAMESPACE}`, '--address', address, '-id=task-1', 'start']), eq, own.address);
    } finally {
      await daemon.close();
      await own.close();
    }
  });

  it('reads the spec as JSON.parse does: the last of duplicate keys, escapes, and no JSON object at all', async () => {
    const groups = ['first', 'second', 'task-2', 'abc', 'é€𝄞'];
    const daemons = Object.fromEntries(await Promise.all(groups.map(async (g) => [g, await fakeDaemon(g)] as const)));
    try {
      const k = JSON.stringify(KEY);
      for (const text of [
        `{"annotations":{${k}:"first",${k}:"second"}}`,
        `{"annotations":{${k}:"first"},"annotations":{${k}:"second"}}`,
        `{"annotations":{${k}:"first"},"annotations":{}}`,
        `{"annotations":{${k}:"first",${k}:7}}`,
        `{"annotations":{${k}:""}}`,
        '{"annotations":{"io.kubernetes.cri.sandbox-id":"\\u0061bc"}}',
        '{"annot\\u0061tions":{"io.kubernetes.cri.sandbox-id":"abc"}}',
        '{"annotations":{"io.kubernetes.cri.sandbox-id":"\\u00e9\\u20ac\\ud834\\udd1e"}}',
        '{"annotations":{"io.kubernetes.cri.sandbox-id":"é€𝄞"}}',
        `{"annotations":{${k}:"abc",}}`, // not JSON
        `[{"annotations":{${k}:"abc"}}]`, // not an object
        `{"annotations":{${k}:"abc"}} x`, // trailing text
        `\ufeff{"annotations":{${k}:"abc"}}`, // a byte-order mark
        `{"annotations":{${k}:"abc","n":01}}`, // a number JSON forbids
      ]) {
        const b = bundleWithSpec(text);
        const group = groupId(b, 'task-2');
        assert.ok(daemons[group], `${text}: group ${group}`);
        assertAnswered(start(b, 'task-2'), b, daemons[group]!.address);
      }
    } finally {
      await Promise.all(Object.values(daemons).map((d) => d.close()));
    }
  });

  it('refuses a sandbox id UTF-8 cannot carry, naming the annotation', () => {
    for (const spec of [`{"annotations":{"${KEY}":"\\ud800"}}`, `{"annotations":{"${KEY}":"a\\u0000"}}`, Buffer.from(`{"annotations":{"${KEY}":"\xff"}}`, 'latin1')]) {
      const r = start(bundleWithSpec(spec), 'task-3');
      assert.equal(r.status, 1);
      assert.match(r.stderr, new RegExp(`annotation ${KEY} is not valid UTF-8`));
    }
  });

  it('names the socket after path.join of the containerd address', async () => {
    const daemon = await fakeDaemon('task-4', path.join(dir, 'containerd.sock'));
    try {
      const b = bundleWithSpec('{}');
      for (const containerd of [`${dir}/./containerd.sock`, `${dir}//x/../containerd.sock`]) {
        assertAnswered(start(b, 'task-4', ['-namespace', NAMESPACE, '-address', containerd, '-id', 'task-4', 'start']), b, daemon.address);
      }
    } finally {
      await daemon.close();
    }
  });

  it('runs Node for a new daemon, other actions and flags it does not know, and a failed start leaves no socket', async () => {
    const b = bundleWithSpec('{"annotations":{}}');
    assertNeededNode(start(b, 'nobody'));
    const sock = socketPath(address, NAMESPACE, 'nobody');
    assert.ok(!fs.existsSync(sock) && !fs.existsSync(`${sock}.address`));
    // Recorded, but its daemon is gone: a new one is needed.
    const stale = socketPath(address, NAMESPACE, 'stale');
    writeDaemonAddress(stale, `unix://${stale}`);
    assertNeededNode(start(b, 'stale'));
    assert.ok(!fs.existsSync(`${stale}.address`));
    const daemon = await fakeDaemon('task-5');
    try {
      const base = ['-namespace', NAMESPACE, '-address', address, '-id', 'task-5'];
      assertNeededNode(start(b, 'task-5', [...base, '-bundle', b, 'delete']));
      assertNeededNode(start(b, 'task-5', [...base, '-bogus', 'x', 'start']));
      assertNeededNode(start(b, 'task-5', [...base, '-id', 'again', 'start']));
      assertNeededNode(start(b, 'task-5', ['-address', address, '-id', 'task-5', 'start'])); // no namespace
      assertAnswered(start(b, 'task-5', [...base, 'start']), b, daemon.address);
    } finally {
      await daemon.close();
    }
  });

  it('answers as address.ts names the pod, for any spec (property test)', async () => {
    const text = fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.constantFrom('abc', 'a'.repeat(64), '', '../x', 'a/b'));
    const annotations = fc.dictionary(fc.oneof(text, fc.constant(KEY)), fc.oneof(text, fc.integer(), fc.constant(null)));
    const spec = fc.record({ ociVersion: fc.constant('1.2.1'), annotations: fc.oneof(annotations, fc.constant(null)), process: fc.jsonValue() }, { requiredKeys: ['ociVersion'] });
    await fc.assert(
      fc.asyncProperty(spec, fc.constantFrom(undefined, 2, '\t'), async (s, indent) => {
        const b = bundleWithSpec(JSON.stringify(s, null, indent));
        const group = groupId(b, 'task-p');
        if (/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]|\0/.test(group)) {
          assert.match(start(b, 'task-p').stderr, /is not valid UTF-8/);
          return;
        }
        const daemon = await fakeDaemon(group);
        try {
          assertAnswered(start(b, 'task-p'), b, daemon.address);
        } finally {
          await daemon.close();
        }
      }),
      { numRuns: 150 },
    );
  });
});
