// What emulated-host.test.ts and its run-tests fixture do to an emulated host (bash, run inside it
// as root) to stand in for QEMU TCG's faults of that host, which no test can cause at will.

/**
 * A triple fault with nothing in the kernel log (emulated-host's 121): the kernel restarts by
 * triple fault (`reboot=t`), and at console level 0 it prints no reason first.
 */
export const SILENT_TRIPLE_FAULT = 'echo 0 >/proc/sys/kernel/printk; sync; busybox reboot -f; sleep 600';

/**
 * A frozen host (emulated-host's 125). The heartbeat is a subshell of the emulated host's init
 * (/init, PID 1), so it has PID 1's command line: stop it, and the harness hears nothing more
 * while the job keeps running.
 */
export const STOP_HEARTBEAT = `
  init="$(tr '\\0' ' ' </proc/1/cmdline)"; stopped=0
  for p in /proc/[0-9]*; do
    pid="\${p#/proc/}"
    [ "$pid" != 1 ] && [ "$(tr '\\0' ' ' <"$p/cmdline" 2>/dev/null)" = "$init" ] && kill -STOP "$pid" && stopped=$((stopped + 1))
  done
  echo "stopped $stopped heartbeat process(es)"; sleep 600`;
