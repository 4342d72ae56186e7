// A spare daemon's inputs: its own flags as the launcher writes them, and a handoff's strings and
// descriptors, each refusal naming what is wrong. (The handoff itself, end to end: lifecycle.test.ts.)
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { buildIdentity, decodeHandoff, HANDOFF_MAGIC, parseSpareFlags } from './spare.js';

const FDS = [7, 8, 9, 10];
const CONTAINERD = '/run/containerd/containerd.sock';
const POD = ['-namespace', 'k8s.io', '-id', 'abc', '-address', CONTAINERD, '-publish-binary', '/usr/bin/containerd', '-socket', '/run/containerd/s/x'];

describe('spare daemon', () => {
  it('takes its flags as the launcher writes them, and nothing else', () => {
    assert.deepEqual(parseSpareFlags(['-address', '/c.sock', '-spare-socket', '/run/stencil/spare/k.sock', '-spare-build', '1:2:3.000000004:5', 'spare']), {
      address: '/c.sock',
      socket: '/run/stencil/spare/k.sock',
      build: '1:2:3.000000004:5',
    });
    for (const [argv, message] of [
      [['-address', '/c', '-spare-build', 'b', 'spare'], /-spare-socket is required/],
      [['-address', '/c', '-spare-socket', 's', '-spare-socket', 't', '-spare-build', 'b', 'spare'], /-spare-socket is given more than once/],
      [['-address', '/c', '-spare-socket', 's', '-spare-build', 'b'], /a spare takes/],
      [['-id', 'x', '-spare-socket', 's', '-spare-build', 'b', 'spare'], /a spare takes/],
    ] as const) {
      assert.throws(() => parseSpareFlags([...argv]), message);
    }
  });

  it('identifies a build by its script file: device, inode, mtime to the nanosecond, size', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-spare-'));
    try {
      const file = path.join(dir, 'main.js');
      fs.writeFileSync(file, 'x');
      fs.utimesSync(file, 1, 1_700_000_000.5);
      const st = fs.statSync(file, { bigint: true });
      assert.equal(buildIdentity(file), `${st.dev}:${st.ino}:1700000000.500000000:1`);
      const before = buildIdentity(file);
      fs.writeFileSync(file, 'xy');
      assert.notEqual(buildIdentity(file), before);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('turns a handoff into the daemon flags, environment and working directory of its pod', () => {
    const pod = decodeHandoff([HANDOFF_MAGIC, '/bundle', String(POD.length + 1), ...POD, '-debug', 'PATH=/bin', 'NAMESPACE=k8s.io', 'EMPTY=', 'EQ=a=b'], FDS, CONTAINERD);
    assert.equal(pod.cwd, '/bundle');
    assert.deepEqual(pod.env, { PATH: '/bin', NAMESPACE: 'k8s.io', EMPTY: '', EQ: 'a=b' });
    assert.equal(pod.logFd, 10);
    assert.deepEqual(
      { ...pod.flags },
      {
        action: 'serve',
        namespace: 'k8s.io',
        address: '/run/containerd/containerd.sock',
        publishBinary: '/usr/bin/containerd',
        id: 'abc',
        bundle: '',
        debug: true,
        socket: '/run/containerd/s/x',
        socketFd: 7,
        protocol: 'ttrpc',
        config: '',
        optionsFd: 8,
        reportFd: 9,
      },
    );
  });

  it('refuses a malformed handoff, naming what is wrong', () => {
    const ok = [HANDOFF_MAGIC, '/bundle', String(POD.length), ...POD];
    const cases: Array<[string[], number[], RegExp]> = [
      [['stencil-handoff-2', ...ok.slice(1)], FDS, /another format \("stencil-handoff-2", this spare takes stencil-handoff-1\)/],
      [[], FDS, /another format \(""/],
      [ok, FDS.slice(0, 3), /3 descriptors \(4 expected/],
      [[HANDOFF_MAGIC, 'bundle', ...ok.slice(2)], FDS, /working directory "bundle" is not absolute/],
      [[HANDOFF_MAGIC, '/bundle', 'ten', ...POD], FDS, /flag count "ten"/],
      [[HANDOFF_MAGIC, '/bundle', '99', ...POD], FDS, /flag count "99"/],
      [[HANDOFF_MAGIC, '/bundle', '2', '-config', '/etc/evil.toml'], FDS, /flag "-config" a spare does not take/],
      [[HANDOFF_MAGIC, '/bundle', '2', '-socket-fd', '0'], FDS, /flag "-socket-fd" a spare does not take/],
      [[...ok, 'NOEQUALS'], FDS, /environment entry "NOEQUALS" that is not NAME=value/],
      [[...ok, '=x'], FDS, /environment entry "=x"/],
      [[HANDOFF_MAGIC, '/bundle', '2', '-namespace', 'n'], FDS, /-id is required/],
      // A value that yargs would read as a flag (spare.fuzz.ts found -protocol=grpc slipping in so).
      [[HANDOFF_MAGIC, '/bundle', '4', '-publish-binary', '-config=/etc/evil.toml', '-id', 'x'], FDS, /flag -publish-binary without a value \("-config=\/etc\/evil.toml"\)/],
      [[HANDOFF_MAGIC, '/bundle', '1', '-id'], FDS, /flag -id without a value \(""\)/],
    ];
    for (const [strings, fds, message] of cases) assert.throws(() => decodeHandoff(strings, fds, CONTAINERD), message, JSON.stringify(strings));
    // An environment name that is an Object property's is an entry like any other.
    const env = decodeHandoff([...ok, '__proto__=x', 'constructor=y'], FDS, CONTAINERD).env;
    assert.deepEqual(Object.entries(env), [['__proto__', 'x'], ['constructor', 'y']]);
    assert.equal(Object.getPrototypeOf(env), Object.prototype);
    assert.throws(() => decodeHandoff(ok, FDS, '/run/other/containerd.sock'), /a pod of containerd "\/run\/containerd\/containerd.sock", not of this spare's "\/run\/other\/containerd.sock"/);
  });
});
