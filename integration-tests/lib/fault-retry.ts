// The one retry the integration tests allow: in the emulated host only, a test that failed because
// a guest triple-faulted, the fault QEMU 7.2's TCG causes in nested guests (QEMU's own guests fail
// the same way there: integration-tests/README.md, "Long-running guests in the emulated host").
// Everything else fails at once. This module reads the
// TAP report of a `node --test` run and picks the failed tests a retry may cover.

/** What the VMM reports for a guest that triple-faulted (vmm-native/src/vm.cc, HandleExit). */
export const EMULATED_HOST_FAULT = /triple-fault \(vCPU \d+ triple-faulted \(KVM_EXIT_SHUTDOWN\)/;
/**
 * The same fault's other face (integration-tests/README.md, "Long-running guests in the emulated
 * host"): a guest that never finishes because a vCPU spins taking page faults that KVM reflects
 * into it, nearly every exit of the VM a reflected #PF. Matched from the exit stats a hung guest's
 * failure carries (lib/guest.ts, the shim's GUEST_STOPPED_ANSWERING report, or an agent request
 * the shim reports as REQUEST_UNANSWERED_BY_LIVE_GUEST): a guest that timed out (never finished,
 * or never printed what a test waited for), stopped answering, or left one request unanswered
 * while its agent answered pings (one vCPU in the storm, the agent on another), with at least
 * MIN_PF_STORM reflected page faults making up at least 90% of its exits. A guest hung any other
 * way is not matched.
 */
const MIN_PF_STORM = 100_000;
/**
 * The shim's report of a pod whose guest stopped answering (shim/src/pod/pod-vm.ts, guestHung),
 * with the VM's exit stats: as a scenario's failure carries it from containerd's log (lib/ctr-tasks.ts).
 */
export const GUEST_STOPPED_ANSWERING = /the guest of pod \S+ stopped answering \(/;
/** An agent request that timed out while the guest answered a ping (shim/src/pod/unanswered-guest.ts). */
export const REQUEST_UNANSWERED_BY_LIVE_GUEST = /no answer within \d+ ms, though the guest answered a ping; VM exits: /;
/** The VM exit counts pageFaultStorm reads: text carrying them may decide a retry. */
export const VM_EXIT_COUNTS = /pf_guest|kvmVcpuStats/;
export function pageFaultStorm(detail: string): string | undefined {
  const hung = [/guest did not finish within \d+ ms|console never showed .* within \d+ ms/, GUEST_STOPPED_ANSWERING, REQUEST_UNANSWERED_BY_LIVE_GUEST];
  if (!hung.some((re) => re.test(detail))) return undefined;
  // The stats may come as JSON inside a JSON log line (quotes escaped).
  const exits = Number(/\\?"exits\\?":(\d+)/.exec(detail.slice(detail.indexOf('kvmVcpuStats')))?.[1] ?? NaN);
  const pf = Number(/\\?"pf_guest\\?":(\d+)/.exec(detail)?.[1] ?? NaN);
  if (!(pf >= MIN_PF_STORM && pf >= 0.9 * exits)) return undefined;
  return `a guest hung in a page-fault storm (${pf} page faults reflected into it, of ${exits} exits)`;
}

/**
 * What a later test of the same file meets when the guest it shares is gone without going through
 * a call that would report the fault: its vsock (the VMM's socket) closes on it.
 */
export const GUEST_GONE = /vsock connect to port \d+ via \S+: the connection closed during the handshake|connection closed before EOF/;

export interface FailedTest {
  name: string;
  /** The compiled test file, from the report's location. */
  file: string;
  failureType: string;
  /** The YAML diagnostics block as reported (the error text included). */
  detail: string;
}

function unescapeTapName(name: string): string {
  return name.replace(/\\([\\#])/g, '$1');
}

/** Failed tests themselves, not the suites failing because of them. */
export function failedTests(tap: string): FailedTest[] {
  const lines = tap.split('\n');
  const out: FailedTest[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = /^(\s*)not ok \d+ - (.*?)(?: # .*)?$/.exec(lines[i]);
    if (!m) continue;
    const indent = m[1];
    const block: string[] = [];
    if (lines[i + 1]?.trimEnd() === `${indent}  ---`) {
      for (i += 2; i < lines.length && lines[i].trimEnd() !== `${indent}  ...`; i++) block.push(lines[i]);
    }
    const detail = block.join('\n');
    const failureType = /failureType: '([^']*)'/.exec(detail)?.[1] ?? '';
    if (failureType === 'subtestsFailed') continue;
    const location = /location: '([^']*?):\d+:\d+'/.exec(detail)?.[1] ?? '';
    out.push({ name: unescapeTapName(m[2]), file: location, failureType, detail });
  }
  return out;
}

/**
 * The failures one retry may cover: all of them, when each is a test (not a hook or a whole file)
 * that failed with the emulated host's guest fault, or that came after such a failure in the same
 * file (its tests share that guest) and failed only because the guest was gone (GUEST_GONE);
 * a guest hung in the same fault's page-fault storm (pageFaultStorm) counts as that fault;
 * otherwise none (a real failure among them must not be hidden behind a rerun of the others).
 */
export function retryable(failures: FailedTest[]): FailedTest[] {
  if (!failures.length) return [];
  const faulted = new Set<string>();
  for (const f of failures) {
    if (f.failureType !== 'testCodeFailure' || !f.file) return [];
    if (EMULATED_HOST_FAULT.test(f.detail) || pageFaultStorm(f.detail)) faulted.add(f.file);
    else if (!faulted.has(f.file) || !GUEST_GONE.test(f.detail)) return [];
  }
  return failures;
}

/** The error a failed test reported (TAP's `error:`, quoted or a block), at most maxChars of it. */
export function failureError(f: FailedTest, maxChars = 800): string {
  const lines = f.detail.split('\n');
  const at = lines.findIndex((l) => /^\s*error: /.test(l));
  if (at < 0) return '(no error reported)';
  const value = lines[at].replace(/^\s*error: /, '');
  let text: string;
  if (/^[|>][-+]?$/.test(value)) {
    const indent = /^\s*/.exec(lines[at])![0].length;
    const block: string[] = [];
    for (let i = at + 1; i < lines.length && (lines[i].trim() === '' || /^\s*/.exec(lines[i])![0].length > indent); i++) block.push(lines[i].trim());
    text = block.join('\n').trim();
  } else {
    text = value.startsWith("'") ? value.slice(1, value.endsWith("'") ? -1 : undefined).replace(/''/g, "'") : value;
  }
  return text.length > maxChars ? `${text.slice(0, maxChars)}... (${text.length - maxChars} more characters in the TAP report)` : text;
}

/** A --test-name-pattern that matches exactly this name. */
export function exactNamePattern(name: string): string {
  return `^${name.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`;
}
