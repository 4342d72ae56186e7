// The guest's cgroup v2 statistics (from the agent) as containerd's io.containerd.cgroups.v2.Metrics,
// so `ctr task metrics` and CRI's ListContainerStats understand them.
import type { ContainerStats } from '../pod/types.js';
import { CGROUPS_V2_METRICS_TYPE, packAny, type AnyMessage } from '../containerd/protos.js';

export function cgroupsV2Metrics(s: ContainerStats): AnyMessage {
  return packAny(CGROUPS_V2_METRICS_TYPE, {
    pids: { current: s.pids.current, limit: s.pids.limit },
    cpu: {
      usageUsec: s.cpu.usageUsec,
      userUsec: s.cpu.userUsec,
      systemUsec: s.cpu.systemUsec,
      nrPeriods: s.cpu.nrPeriods,
      nrThrottled: s.cpu.nrThrottled,
      throttledUsec: s.cpu.throttledUsec,
    },
    memory: {
      anon: s.memory.anon,
      file: s.memory.file,
      usage: s.memory.current,
      usageLimit: s.memory.limit,
      swapUsage: s.memory.swapCurrent,
      maxUsage: s.memory.peak,
    },
    memoryEvents: { oom: s.memory.oomEvents, oomKill: s.memory.oomKillEvents },
    io: { usage: [{ rbytes: s.io.readBytes, wbytes: s.io.writeBytes, rios: s.io.readIos, wios: s.io.writeIos }] },
  });
}
