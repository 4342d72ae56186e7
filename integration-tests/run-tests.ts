// Runs the integration test files, two ways:
//
//   node dist/integration-tests/run-tests.js --each-in-run-vm FILE.test.js...
//     (`make integration-test`, on the build machine) runs each file in its own run-vm session: a
//     fresh emulated host per file where this host's KVM cannot run stock guests, so one host's
//     fault ends one file, not the run, and no session lives long (QEMU TCG's nested faults grow
//     with a session's age: README.md). A session whose emulated host's own kernel panicked in its
//     page-fault entry, triple-faulted saying nothing or froze (emulated-host's exits 122, 121 and
//     125: that host's faults, never a test's) runs once more, announced with "# EMULATED-HOST
//     KERNEL FAULT RERUN". The last lines name each test still failing and end with the whole
//     run's summary.
//
//   node dist/integration-tests/run-tests.js [--retry-of NAME...] FILE.test.js...
//     (one session) runs the files with `node --test` (one at a time, the spec report on stdout, a
//     TAP copy in build/). In the emulated host only, when every failed test failed because a guest
//     triple-faulted or hung in a page-fault storm (the emulated host's own fault,
//     lib/fault-retry.ts), the session names them (RETRY_LINE) and ends with RETRY_IN_FRESH_HOST;
//     --each-in-run-vm then runs those tests once more (--retry-of: them alone, no further retry)
//     in a fresh emulated host, since a host's nested faults grow with its age, announced
//     with "# EMULATED-HOST FAULT RETRY"; it must pass then.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../shim/src/util/paths.js';
import { GUEST_BOOT_LOG } from './lib/guest.js';
import { exactNamePattern, failedTests, failureError, pageFaultStorm, retryable } from './lib/fault-retry.js';

/** integration-tests/emulated-host's codes for the emulated host's own faults: what each was, and its cause as far as known. */
const EMULATED_HOST_OWN_FAULTS: Record<number, { what: string; cause: string }> = {
  121: { what: 'triple-faulted without a word', cause: "QEMU TCG's nested-SVM fault" },
  122: { what: 'panicked in its own page-fault entry', cause: "QEMU TCG's nested-SVM fault" },
  125: { what: 'froze (no heartbeat from its init)', cause: "its kernel's or QEMU's; the stall report above says what it was doing" },
};
/** A session's exit status when its only failures are the emulated host's faults, each named by a RETRY_LINE. */
const RETRY_IN_FRESH_HOST = 3;
const RETRY_LINE = /^# RETRY IN A FRESH EMULATED HOST: (\{.*\})$/gm;
const FAILED_LINE = /^# FAILED: .*(?:\n# {3}.*)*/gm;

function runNodeTest(files: string[], tapPath: string, extra: string[] = []): number {
  const args = ['--test', '--test-concurrency=1', '--test-reporter=spec', '--test-reporter-destination=stdout',
    '--test-reporter=tap', `--test-reporter-destination=${tapPath}`, ...extra, ...files];
  const result = spawnSync(process.execPath, args, { stdio: 'inherit' });
  return result.status ?? 1;
}

/** A rerun passes only if it ran the tests (a pattern matching nothing would pass vacuously). */
function rerunPassed(rc: number, tapPath: string, tests: number): boolean {
  const tap = fs.readFileSync(tapPath, 'utf8');
  const passed = Number(/^# pass (\d+)$/m.exec(tap)?.[1] ?? 0);
  return rc === 0 && passed >= tests && /^# fail 0$/m.test(tap);
}

function buildDir(): string {
  const dir = path.join(repoRoot(), 'build');
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/**
 * One session: the files under `node --test`. In the emulated host, failures that are all its
 * faults are named for a retry in a fresh host (RETRY_IN_FRESH_HOST); `retryOf` (such a retry:
 * that one test) gets none.
 */
function runSession(files: string[], retryOf?: string[]): number {
  const dir = buildDir();
  const stem = files.length === 1 ? path.basename(files[0], '.test.js') : 'all';
  const tapPath = path.join(dir, retryOf === undefined ? `integration-${stem}.tap` : `integration-${stem}-retry.tap`);
  const rc = runNodeTest(files, tapPath, (retryOf ?? []).map((name) => `--test-name-pattern=${exactNamePattern(name)}`));
  if (retryOf !== undefined) {
    const ok = rerunPassed(rc, tapPath, retryOf.length);
    if (!ok) for (const f of failedTests(fs.readFileSync(tapPath, 'utf8')))
      console.log(`# FAILED: '${f.name}' (${path.basename(f.file) || 'no location'}) on its retry in a fresh emulated host: ${failureError(f).replace(/\n/g, '\n#   ')}`);
    if (!ok) console.log(`# FAILED: the retry of ${retryOf.map((n) => `'${n}'`).join(', ')} (${path.basename(files[0])}) in a fresh emulated host (exit status ${rc})`);
    return ok ? 0 : 1;
  }
  const failures = rc === 0 ? [] : failedTests(fs.readFileSync(tapPath, 'utf8'));
  const retry = rc !== 0 && process.env.EMULATED_HOST === '1' ? retryable(failures) : [];
  for (const test of retry) {
    const fault = /triple-fault \(vCPU[^;]*/.exec(test.detail)?.[0];
    const storm = pageFaultStorm(test.detail);
    const cause = fault ? `failed with ${fault}` : storm ? `failed with ${storm}` : 'failed because the guest it shared had triple-faulted in an earlier test';
    console.log(`# EMULATED-HOST FAULT: '${test.name}' (${path.basename(test.file)}) ${cause}: the emulated host (QEMU TCG) corrupts nested guests (integration-tests/README.md)`);
    console.log(`# RETRY IN A FRESH EMULATED HOST: ${JSON.stringify({ file: test.file, name: test.name })}`);
  }
  if (retry.length) return RETRY_IN_FRESH_HOST;
  if (rc !== 0 && !failures.length) console.log(`# FAILED: ${files.map((f) => path.basename(f)).join(', ')} (exit status ${rc}, no failed test in the TAP report)`);
  for (const f of failures)
    console.log(`# FAILED: '${f.name}' (${path.basename(f.file) || 'no location'}, ${f.failureType || 'no failure type'}): ${failureError(f).replace(/\n/g, '\n#   ')}`);
  return rc;
}

/** Runs `run-vm node run-tests.js FILE`, passing its output through and keeping a copy of stdout. */
function runInRunVm(file: string, retryOf: string[] = []): Promise<{ code: number; stdout: string }> {
  const runVm = path.join(repoRoot(), 'integration-tests', 'run-vm');
  const args = [process.argv[1], ...retryOf.flatMap((name) => ['--retry-of', name]), file];
  return new Promise((resolve, reject) => {
    const child = spawn(runVm, [process.execPath, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
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

/** A run-vm session of `file` (or of its tests `retryOf`); one ended by the emulated host's own fault runs once more. */
async function runFileSession(file: string, retryOf?: string[]): Promise<{ code: number; stdout: string; hostFaulted: boolean }> {
  const session = await runInRunVm(file, retryOf);
  const fault = EMULATED_HOST_OWN_FAULTS[session.code];
  if (!fault) return { ...session, hostFaulted: false };
  console.log(`# EMULATED-HOST KERNEL FAULT RERUN: the emulated host running ${path.basename(file)} ${fault.what} ` +
    `(exit status ${session.code}, ${fault.cause}, integration-tests/README.md); running it once more in a fresh one`);
  const again = await runInRunVm(file, retryOf);
  console.log(`# EMULATED-HOST KERNEL FAULT RERUN: ${path.basename(file)} ${again.code === 0 ? 'passed' : `FAILED again (exit status ${again.code})`}`);
  return { ...again, hostFaulted: true };
}

/** Every file in its own run-vm session; the emulated host's faults in it get one retry, in a fresh one. */
async function runEachInRunVm(files: string[]): Promise<number> {
  fs.rmSync(GUEST_BOOT_LOG, { force: true });
  const failedFiles: string[] = [];
  const failedLines: string[] = [];
  let faultRetries = 0;
  let hostFaultReruns = 0;
  const seconds: string[] = [];
  const runStart = Date.now();
  for (const file of files) {
    const fileStart = Date.now();
    const session = await runFileSession(file);
    if (session.hostFaulted) hostFaultReruns++;
    let code = session.code;
    let named: string[] = session.stdout.match(FAILED_LINE) ?? [];
    if (code === RETRY_IN_FRESH_HOST) {
      const names = [...session.stdout.matchAll(RETRY_LINE)].map(([, json]) => (JSON.parse(json) as { name: string }).name);
      faultRetries += names.length;
      const list = names.map((n) => `'${n}'`).join(', ');
      console.log(`# EMULATED-HOST FAULT RETRY: ${list} (${path.basename(file)}): running once more, in a fresh emulated host`);
      const retry = await runFileSession(file, names);
      if (retry.hostFaulted) hostFaultReruns++;
      console.log(`# EMULATED-HOST FAULT RETRY: ${list} ${retry.code === 0 ? 'passed' : 'FAILED again'} on the retry`);
      code = retry.code;
      named = retry.stdout.match(FAILED_LINE) ?? [];
    }
    seconds.push(`${path.basename(file, '.test.js')} ${Math.round((Date.now() - fileStart) / 1000)}`);
    if (code === 0) continue;
    failedFiles.push(path.basename(file));
    failedLines.push(...(named.length ? named : [`# FAILED: ${path.basename(file)}: its session ended with exit status ${code} (see above)`]));
  }
  for (const line of failedLines) console.log(line);
  // Where CI's time went, each file with its retries (seconds): the one line a truncated CI log still shows.
  console.log(`# time per file (s): ${seconds.join(', ')}; ${Math.round((Date.now() - runStart) / 60_000)} min in all`);
  console.log(`integration: ${files.length - failedFiles.length} of ${files.length} files passed` +
    `${failedFiles.length ? ` (failed: ${failedFiles.join(', ')})` : ''}; emulated-host fault retries: ${faultRetries}; ` +
    `emulated-host kernel fault reruns: ${hostFaultReruns}; ${guestBootSummary()}`);
  return failedFiles.length ? 1 : 0;
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const usage = 'usage: run-tests.js [--each-in-run-vm | --retry-of TEST-NAME] FILE.test.js...';
  if (args[0] === '--each-in-run-vm') {
    if (args.length < 2) throw new Error(usage);
    return runEachInRunVm(args.slice(1));
  }
  if (args[0] === '--retry-of') {
    const names: string[] = [];
    let i = 0;
    for (; args[i] === '--retry-of' && i + 1 < args.length; i += 2) names.push(args[i + 1]);
    if (args.length !== i + 1) throw new Error(usage);
    return runSession([args[i]], names);
  }
  if (!args.length) throw new Error(usage);
  return runSession(args);
}

process.exitCode = await main();
