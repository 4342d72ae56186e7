// Recognizes a `ctr run` lost to containerd 2.1.9's race with gRPC shims (README, Transport):
// containerd creates the shim connection idle and its watcher takes "idle" for "closed", so it logs
// the shim as disconnected right after connecting and cleans it up as dead (closes its client, runs
// the shim's `delete`, which stops the daemon, and removes the bundle) while its Create is on the
// way. ctr's Create then fails in one of three ways (2026-12-02, all with GOMAXPROCS unset), or
// succeeds and the next call fails (the fourth):
//   - the shim received Create after the bundle was gone (build machine 25 of 35, emulated host 2 of 2):
//       failed to create shim task: cannot read the OCI spec <bundle>/config.json: ENOENT ...
//   - the shim was stopped before it answered (build machine 10 of 35):
//       ... connection error: desc = "error reading server preface: connection reset by peer"
//   - containerd closed its own client first (emulated host 19 of 19):
//       ... connection error: desc = "error reading server preface: raw-read unix @-><socket>: use of closed network connection"
//   - the shim answered Create over the connection containerd had already given up, and containerd,
//     having dropped the shim from its task list, answered ctr's next call (emulated host, 2026-12-07):
//       ctr: task <id> not found
// Anything else, or the same error without containerd's disconnect/cleanup lines for that very
// shim, is not the race.

export interface CtrAttempt {
  /** The container id of the attempt (`ctr run ... <id>`), which names the shim in containerd's log. */
  id: string;
  /** The task's bundle: <containerd state>/io.containerd.runtime.v2.task/<namespace>/<id>. */
  bundle: string;
  code: number;
  stderr: string;
  /** containerd's log from the start of the attempt on. */
  log: string;
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The reason the attempt counts as a lost race, or undefined when it does not. */
export function lostGrpcRace(a: CtrAttempt): string | undefined {
  if (a.code === 0) return undefined;
  const id = escape(a.id);
  const steps = [
    new RegExp(`msg="connecting to shim ${id}"[^\\n]*protocol=grpc`),
    new RegExp(`msg="shim disconnected" id=${id} `),
    new RegExp(`msg="cleaning up dead shim" id=${id} `),
  ];
  let from = 0;
  for (const step of steps) {
    const at = a.log.slice(from).search(step);
    if (at < 0) return undefined;
    from += at + 1;
  }
  const bundleGone = new RegExp(`failed to create shim task: cannot read the OCI spec ${escape(a.bundle)}/config\\.json: ENOENT`);
  const connectionGone =
    /failed to create shim task: connection error: desc = "error reading server preface: (?:raw-read unix @->\/run\/containerd\/s\/[0-9a-f]+: )?(connection reset by peer|use of closed network connection)"/;
  if (bundleGone.test(a.stderr)) return 'the shim got Create after containerd had removed the bundle';
  if (new RegExp(`^ctr: task ${id} not found$`, 'm').test(a.stderr)) return 'containerd had dropped the shim by the time ctr went on from Create';
  const gone = connectionGone.exec(a.stderr)?.[1];
  if (gone === 'connection reset by peer') return 'containerd stopped the shim before it answered Create';
  if (gone) return 'containerd closed its connection to the shim before Create was answered';
  return undefined;
}
