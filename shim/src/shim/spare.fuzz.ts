// Property-based fuzzing (fast-check) of a spare's handoff decoder (spare.ts decodeHandoff): the
// strings a launcher sends become a pod daemon's flags and environment, so whatever arrives must
// be refused with an Error naming it, or yield a daemon that serves the handed-over socket of this
// spare's containerd with no flag a spare does not take (-config, -protocol, ...). Run by
// scripts/fuzz.sh with STENCIL_FUZZ_JS_RUNS inputs per property.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { decodeHandoff, HANDOFF_MAGIC } from './spare.js';

const numRuns = Number(process.env.STENCIL_FUZZ_JS_RUNS ?? 200);
const CONTAINERD = '/run/containerd/containerd.sock';

// Tokens a launcher sends, ones it never does, and what yargs might read as flags.
const token = fc.oneof(
  fc.constantFrom(
    '-namespace', '-id', '-address', '-publish-binary', '-socket', '-debug', 'k8s.io', 'abc', CONTAINERD, '/usr/bin/containerd',
    'unix:///run/containerd/s/x', '-config', '-config=/tmp/evil.toml', '--config', '-protocol', '-protocol=grpc', '-socket-fd', '-options-fd=0',
    '--', '-', 'serve', 'start', 'delete', '-info', '-v', '-debug=false', '-no-debug', 'PATH=/bin', 'A=', '=x', '__proto__=x', 'constructor=1',
  ),
  fc.string({ maxLength: 12 }),
);

// What containerd's launcher sends for a pod (shim/launcher/spare.c), to be mutated.
const POD = ['-namespace', 'k8s.io', '-id', 'abc', '-address', CONTAINERD, '-publish-binary', '/usr/bin/containerd', '-socket', 'unix:///run/containerd/s/x', '-debug'];

const mutation = fc.record({ op: fc.constantFrom('insert', 'replace', 'delete'), at: fc.nat(), tok: token });

function handoff() {
  return fc
    .record({
      magic: fc.oneof({ weight: 9, arbitrary: fc.constant(HANDOFF_MAGIC) }, { weight: 1, arbitrary: fc.string({ maxLength: 20 }) }),
      cwd: fc.oneof({ weight: 9, arbitrary: fc.constant('/bundle') }, { weight: 1, arbitrary: fc.string({ maxLength: 8 }) }),
      mutations: fc.array(mutation, { maxLength: 4 }),
      count: fc.option(fc.oneof(fc.nat({ max: 14 }).map(String), fc.string({ maxLength: 4 })), { freq: 5 }),
      env: fc.array(token, { maxLength: 4 }),
      fds: fc.oneof({ weight: 9, arbitrary: fc.constant<number[]>([3, 4, 5, 6]) }, { weight: 1, arbitrary: fc.array(fc.integer({ min: -2, max: 40 }), { maxLength: 6 }) }),
    })
    .map(({ magic, cwd, mutations, count, env, fds }) => {
      const flags = [...POD];
      for (const m of mutations) {
        const at = m.at % (flags.length + (m.op === 'insert' ? 1 : 0) || 1);
        if (m.op === 'insert') flags.splice(at, 0, m.tok);
        else if (m.op === 'replace') flags[at] = m.tok;
        else flags.splice(at, 1);
      }
      // Mostly the right count, so the mutated flags get as far as the flag parser.
      return { strings: [magic, cwd, count ?? String(flags.length), ...flags, ...env], fds };
    });
}

describe('spare handoff decoder (property fuzzing)', () => {
  it('refuses with an Error, or hands over exactly the pod of this containerd with the descriptors sent', () => {
    fc.assert(
      fc.property(handoff(), ({ strings, fds }) => {
        let pod;
        try {
          pod = decodeHandoff(strings, fds, CONTAINERD);
        } catch (err) {
          assert.ok(err instanceof Error, `threw a non-Error: ${String(err)}`);
          assert.ok(err.message.length > 0);
          return;
        }
        assert.equal(pod.flags.action, 'serve');
        assert.equal(pod.flags.address, CONTAINERD);
        assert.equal(pod.flags.config, '', 'a handoff set -config');
        assert.equal(pod.flags.protocol, 'ttrpc', 'a handoff set -protocol');
        assert.deepEqual([pod.flags.socketFd, pod.flags.optionsFd, pod.flags.reportFd, pod.logFd], fds);
        assert.ok(pod.cwd.startsWith('/'));
        for (const [name, value] of Object.entries(pod.env)) {
          assert.ok(name.length > 0 && !name.includes('='), `environment name ${JSON.stringify(name)}`);
          assert.equal(typeof value, 'string');
        }
        assert.equal(Object.getPrototypeOf(pod.env), Object.prototype);
      }),
      { numRuns },
    );
  });
});
