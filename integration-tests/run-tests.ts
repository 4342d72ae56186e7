// Runs the integration test files, two ways:
//
//   node dist/integration-tests/run-tests.js --each-in-run-vm FILE.test.js...
//     (`make integration-test`, on the build machine) runs each file in its own run-vm session: a
//     fresh emulated host per file where this host's KVM cannot run stock guests, so one host's
//     fault ends one file, not the run, and no session lives long (QEMU TCG's nested faults grow
//     with a session's age: README.md). A session whose emulated host's own kernel panicked in its
//     page-fault entry (emulated-host's exit 122, that host's fault, never a test's) runs once
//     more, announced with "# EMULATED-HOST KERNEL PANIC RERUN". The last lines name each test
//     still failing and end with the whole run's summary.
//
//   node dist/integration-tests/run-tests.js FILE.test.js...
//     (one session) runs the files with `node --test` (one at a time, the spec report on stdout, a
//     TAP copy in build/). In the emulated host only, when every failed test failed because a guest
//     triple-faulted or hung in a page-fault storm (the emulated host's own fault,
//     lib/fault-retry.ts), each such test runs once
//     more, announced with "# EMULATED-HOST FAULT RETRY"; it must pass then.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../shim/src/util/paths.js';
import { GUEST_BOOT_LOG } from './lib/guest.js';
import { exactNamePattern, failedTests, failureError, pageFaultStorm, retryable } from './lib/fault-retry.js';

/** integration-tests/emulated-host's code for its own kernel's panic in page-fault entry. */
const EMULATED_HOST_KERNEL_PANIC = 122;
const FAULT_RETRIES = /^emulated-host fault retries: (\d+)$/m;
const FAILED_LINE = /^# FAILED: .*(?:\n# {3}.*)*/gm;

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

function buildDir(): string {
  const dir = path.join(repoRoot(), 'build');
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/** One session: the files under `node --test`, with the emulated host's triple-fault retry. */
function runSession(files: string[]): number {
  const dir = buildDir();
  const stem = files.length === 1 ? path.basename(files[0], '.test.js') : 'all';
  const tapPath = path.join(dir, `integration-${stem}.tap`);
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
      const storm = pageFaultStorm(test.detail);
      const cause = fault ? `failed with ${fault}` : storm ? `failed with ${storm}` : 'failed because the guest it shared had triple-faulted in an earlier test';
      console.log(`# EMULATED-HOST FAULT RETRY: '${test.name}' (${path.basename(test.file)}) ${cause}: ` +
        'the emulated host (QEMU TCG) corrupts nested guests (integration-tests/README.md); running it once more');
      const retryTap = path.join(dir, `integration-${stem}-retry-${retries}.tap`);
      const ok = rerunPassed(runNodeTest([test.file], retryTap, [`--test-name-pattern=${exactNamePattern(test.name)}`]), retryTap);
      console.log(`# EMULATED-HOST FAULT RETRY: '${test.name}' ${ok ? 'passed' : 'FAILED again'} on its retry`);
      if (!ok) {
        status = 1;
        failedAgain.push(test);
      }
    }
    if (retry.length) failures = failedAgain;
  }
  if (status !== 0 && !failures.length) console.log(`# FAILED: ${files.map((f) => path.basename(f)).join(', ')} (exit status ${rc}, no failed test in the TAP report)`);
  for (const f of failures)
    console.log(`# FAILED: '${f.name}' (${path.basename(f.file) || 'no location'}, ${f.failureType || 'no failure type'}): ${failureError(f).replace(/\n/g, '\n#   ')}`);
  console.log(`emulated-host fault retries: ${retries}`);
  return status;
}

/** Runs `run-vm node run-tests.js FILE`, passing its output through and keeping a copy of stdout. */
function runInRunVm(file: string): Promise<{ code: number; stdout: string }> {
  const runVm = path.join(repoRoot(), 'integration-tests', 'run-vm');
  return new Promise((resolve, reject) => {
    const child = spawn(runVm, [process.execPath, process.argv[1], file], { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => {
      process.stdout.write(d);
      stdout += d.toString();
    });
    child.on('error', (err) => reject(new Error(`cannot start ${runVm}: ${err.message}`)));
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout }));
  });
}

function guestBootSummary(): string {
  let lines: string[] = [];
  try {
    lines = fs.readFileSync(GUEST_BOOT_LOG, 'utf8').split('\n');
  } catch { /* no guest booted through lib/guest.ts */ }
  const retries = lines.filter((l) => l.startsWith('retry')).length;
  const boots = lines.filter((l) => l.startsWith('boot')).length;
  return `nested boot retries: ${retries} (of ${boots} guest boots by lib/guest.ts; see ${path.relative(repoRoot(), GUEST_BOOT_LOG)})`;
}

/** Every file in its own run-vm session; a session ended by the emulated host's kernel panic runs once more. */
async function runEachInRunVm(files: string[]): Promise<number> {
  fs.rmSync(GUEST_BOOT_LOG, { force: true });
  const failedFiles: string[] = [];
  const failedLines: string[] = [];
  let faultRetries = 0;
  let panicReruns = 0;
  for (const file of files) {
    let session = await runInRunVm(file);
    if (session.code === EMULATED_HOST_KERNEL_PANIC) {
      panicReruns++;
      console.log(`# EMULATED-HOST KERNEL PANIC RERUN: the emulated host running ${path.basename(file)} panicked in its own ` +
        "page-fault entry (QEMU TCG's nested-SVM fault, integration-tests/README.md); running the file once more in a fresh one");
      session = await runInRunVm(file);
      console.log(`# EMULATED-HOST KERNEL PANIC RERUN: ${path.basename(file)} ${session.code === 0 ? 'passed' : `FAILED again (exit status ${session.code})`}`);
    }
    faultRetries += Number(FAULT_RETRIES.exec(session.stdout)?.[1] ?? 0);
    if (session.code === 0) continue;
    failedFiles.push(path.basename(file));
    const named = session.stdout.match(FAILED_LINE) ?? [];
    failedLines.push(...(named.length ? named : [`# FAILED: ${path.basename(file)}: its session ended with exit status ${session.code} (see above)`]));
  }
  for (const line of failedLines) console.log(line);
  console.log(`integration: ${files.length - failedFiles.length} of ${files.length} files passed` +
    `${failedFiles.length ? ` (failed: ${failedFiles.join(', ')})` : ''}; emulated-host fault retries: ${faultRetries}; ` +
    `emulated-host kernel panic reruns: ${panicReruns}; ${guestBootSummary()}`);
  return failedFiles.length ? 1 : 0;
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const eachInRunVm = args[0] === '--each-in-run-vm';
  const files = eachInRunVm ? args.slice(1) : args;
  if (!files.length) throw new Error('usage: run-tests.js [--each-in-run-vm] FILE.test.js...');
  return eachInRunVm ? runEachInRunVm(files) : runSession(files);
}

process.exitCode = await main();
