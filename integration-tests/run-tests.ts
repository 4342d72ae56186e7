// Runs the integration test files with `node --test` (one at a time, the spec report on stdout,
// a TAP copy in build/integration.tap). In the emulated host only, when every failed test failed
// because a guest triple-faulted (the emulated host's own fault, lib/fault-retry.ts), each such
// test runs once more, announced with "# EMULATED-HOST FAULT RETRY"; it must pass then. The last
// lines name each failure with its error (the spec report's own list can be far above a log's tail)
// and say how many tests were retried.
//   node dist/integration-tests/run-tests.js FILE.test.js...
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../shim/src/util/paths.js';
import { exactNamePattern, failedTests, failureError, retryable } from './lib/fault-retry.js';

function runNodeTest(files: string[], tapPath: string, extra: string[] = []): number {
  const args = ['--test', '--test-concurrency=1', '--test-reporter=spec', '--test-reporter-destination=stdout',
    '--test-reporter=tap', `--test-reporter-destination=${tapPath}`, ...extra, ...files];
  const result = spawnSync(process.execPath, args, { stdio: 'inherit' });
  return result.status ?? 1;
}

/** A rerun passes only if it ran the test (a pattern matching nothing would pass vacuously). */
function rerunPassed(rc: number, tapPath: string): boolean {
  const tap = fs.readFileSync(tapPath, 'utf8');
  const passed = Number(/^# pass (\d+)$/m.exec(tap)?.[1] ?? 0);
  return rc === 0 && passed >= 1 && /^# fail 0$/m.test(tap);
}

function main(): number {
  const files = process.argv.slice(2);
  if (!files.length) throw new Error('usage: run-tests.js FILE.test.js...');
  const dir = path.join(repoRoot(), 'build');
  fs.mkdirSync(dir, { recursive: true });
  const tapPath = path.join(dir, 'integration.tap');
  const rc = runNodeTest(files, tapPath);
  let retries = 0;
  let status = rc;
  let failures = rc === 0 ? [] : failedTests(fs.readFileSync(tapPath, 'utf8'));
  if (rc !== 0 && process.env.EMULATED_HOST === '1') {
    const retry = retryable(failures);
    if (retry.length) status = 0;
    const failedAgain: typeof failures = [];
    for (const test of retry) {
      retries++;
      const fault = /triple-fault \(vCPU[^;]*/.exec(test.detail)?.[0];
      const cause = fault ? `failed with ${fault}` : 'failed because the guest it shared had triple-faulted in an earlier test';
      console.log(`# EMULATED-HOST FAULT RETRY: '${test.name}' (${path.basename(test.file)}) ${cause}: ` +
        'the emulated host (QEMU TCG) corrupts nested guests (integration-tests/README.md); running it once more');
      const retryTap = path.join(dir, `integration-retry-${retries}.tap`);
      const ok = rerunPassed(runNodeTest([test.file], retryTap, [`--test-name-pattern=${exactNamePattern(test.name)}`]), retryTap);
      console.log(`# EMULATED-HOST FAULT RETRY: '${test.name}' ${ok ? 'passed' : 'FAILED again'} on its retry`);
      if (!ok) {
        status = 1;
        failedAgain.push(test);
      }
    }
    if (retry.length) failures = failedAgain;
  }
  for (const f of failures)
    console.log(`# FAILED: '${f.name}' (${path.basename(f.file) || 'no location'}, ${f.failureType || 'no failure type'}): ${failureError(f).replace(/\n/g, '\n#   ')}`);
  console.log(`emulated-host fault retries: ${retries}`);
  return status;
}

process.exitCode = main();
