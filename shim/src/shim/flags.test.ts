import assert from 'node:assert/strict';
import { it } from 'node:test';
import { daemonArgv, FlagError, parseFlags } from './flags.js';

it('parses containerd 1.6 start and delete argv (Go flag syntax)', () => {
  const start = parseFlags(['-namespace', 'k8s.io', '-address', '/run/containerd/containerd.sock', '-publish-binary', '/usr/bin/containerd', '-id', 'abc', '-debug', 'start']);
  assert.deepEqual(
    { action: start.action, ns: start.namespace, addr: start.address, pub: start.publishBinary, id: start.id, debug: start.debug },
    { action: 'start', ns: 'k8s.io', addr: '/run/containerd/containerd.sock', pub: '/usr/bin/containerd', id: 'abc', debug: true },
  );
  const del = parseFlags(['-namespace', 'default', '-address', '/a', '-publish-binary', '/b', '-id', 'x', '-bundle', '/run/b/x', 'delete']);
  assert.equal(del.action, 'delete');
  assert.equal(del.bundle, '/run/b/x');
  assert.equal(del.debug, false);
});

it('accepts -x v, --x v and -x=v', () => {
  const f = parseFlags(['--namespace', 'n', '-id=t1', '-address=/s', 'start']);
  assert.equal(f.namespace, 'n');
  assert.equal(f.id, 't1');
  assert.equal(f.address, '/s');
});

it('answers -info before validating anything else', () => {
  assert.equal(parseFlags(['-info']).action, 'info');
});

it('refuses unknown flags, unknown actions and missing ids with a message naming them', () => {
  assert.throws(() => parseFlags(['-namespace', 'n', '-id', 'x', '-bogus', '1', 'start']), (e: Error) => e instanceof FlagError && /-bogus/.test(e.message));
  assert.throws(() => parseFlags(['-namespace', 'n', '-id', 'x', 'explode']), /unknown action "explode"/);
  assert.throws(() => parseFlags(['-namespace', 'n', 'start']), /-id is required/);
  assert.throws(() => parseFlags(['-namespace', 'n', '-id', 'a', '-id', 'b', 'start']), /more than once/);
  assert.throws(() => parseFlags(['-namespace', 'n', '-id', 'a']), /-socket is required/);
});

it('daemonArgv gives the flags parseFlags reads back (the daemon a pod migration spawns)', () => {
  const launched = parseFlags(['-namespace', 'k8s.io', '-id', 'p', '-address', '/c.sock', '-publish-binary', '/bin/ctd', '-socket', '/run/containerd/s/x', '-socket-fd', '3', '-options-fd', '4', '-report-fd', '5', '-debug', 'serve']);
  assert.deepEqual([launched.optionsFd, launched.reportFd, launched.socketFd], [4, 5, 3]);
  const relaunch = { ...launched, protocol: 'grpc' as const, config: '/etc/stencil/x.toml', socketFd: -1, optionsFd: -1, reportFd: -1 };
  assert.deepEqual(parseFlags(daemonArgv(relaunch)), relaunch);
  assert.throws(() => parseFlags(['-namespace', 'n', '-id', 'a', '-socket', '/s', '-report-fd', 'five', 'serve']), /-report-fd must be a file descriptor number/);
});
