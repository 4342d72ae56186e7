// Pod migration between shim daemons on this host (`stencil pod migrate POD --to URI`): the pod's
// running VM goes by live migration to a new daemon this one spawns, which then takes over what
// containerd sees of the pod: the shim socket (the listening socket itself) and containerd's open
// connections, with the calls containerd is waiting on (Wait). Containers run on in the VM and
// their output goes on to the same FIFOs; containerd notices nothing but a new shim pid.
//
// The two daemons talk over Node's IPC channel (which passes sockets between processes):
//   source                              destination (spawned, same mount namespace)
//   tasks ─────────────────────────────▶ boots its pod from the incoming VM at URI
//         ◀───────────────────────────── listening
//   quiesce ttrpc, migrate the VM ─────▶ VM runs here, agent reached, tasks adopted
//         ◀───────────────────────────── adopted
//   server socket, connections ────────▶ served here (acknowledged one by one)
//   done, then exit (socket kept)
// Anything failing before `adopted` leaves the pod running in the source, as it was.
import { type ChildProcess, spawn } from 'node:child_process';
import type net from 'node:net';
import type { Logger } from '../util/log.js';
import { Code, RpcError, toRpcError } from '../rpc/errors.js';
import type { ConnectionHandover, TtrpcServer } from '../ttrpc/server.js';
import type { MigratingTask } from './task-migration.js';
export { containersOf } from './task-migration.js';
import type { TaskService } from './task-service.js';
import type { MigratePodResponse } from './admin-api.js';
import { POD_ADMIN_SERVICE } from './admin-api.js';

import { INCOMING_ENV } from './flags.js';

const STEP_TIMEOUT_MS = 120_000;
const QUIESCE_TIMEOUT_MS = 10_000;

export type MigrationMessage =
  | { kind: 'tasks'; tasks: MigratingTask[] }
  | { kind: 'listening' }
  | { kind: 'adopted' }
  | { kind: 'failed'; error: string }
  | { kind: 'server' }
  | { kind: 'connection'; state: ConnectionHandover }
  | { kind: 'ack'; of: string }
  | { kind: 'done' };

const handOverOptions = {
  parked: (_service: string, method: string) => method === 'Wait',
  stays: (service: string) => service === POD_ADMIN_SERVICE,
  timeoutMs: QUIESCE_TIMEOUT_MS,
};

export interface SourceDaemon {
  service: TaskService;
  ttrpc: TtrpcServer | undefined;
  listening: net.Server;
  logger: Logger;
  /** The flags of a daemon like this one (flags.ts daemonArgv), for the destination. */
  daemonArgv: string[];
  /** The daemon has handed everything over: exit without touching the socket or the pod. */
  exitAfterHandOver(): void;
}

/** A child's next message of `kind`, or its failure/exit as an error. */
function nextMessage(child: ChildProcess, kind: string, of?: string): Promise<MigrationMessage> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error(`the new shim daemon sent no '${kind}' within ${STEP_TIMEOUT_MS / 1000} s`)), STEP_TIMEOUT_MS);
    const onMessage = (m: MigrationMessage) => {
      if (m.kind === 'failed') finish(new Error(`the new shim daemon failed: ${m.error}`));
      else if (m.kind === kind && (m.kind !== 'ack' || m.of === of)) finish(undefined, m);
    };
    const onExit = (code: number | null, signal: string | null) => finish(new Error(`the new shim daemon exited (${signal ?? code})`));
    function finish(err?: Error, m?: MigrationMessage) {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(m!);
    }
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}

/** Source side: runs the whole migration; resolves once the new daemon serves containerd. */
export async function migratePodOut(d: SourceDaemon, to: string): Promise<MigratePodResponse> {
  if (!d.ttrpc) throw new RpcError(Code.FailedPrecondition, 'pod migration needs containerd to reach this shim over ttrpc (its gRPC connections cannot be handed to another daemon): [runtime] transport "auto" or "ttrpc"');
  const tasks = d.service.migratingTasks();
  const pod = await d.service.currentPod();
  if (!pod?.migrate) throw new RpcError(Code.FailedPrecondition, 'this pod cannot migrate: it has no VM of Stencil\'s own VMM');
  try {
    pod.assertMigratable?.(to);
  } catch (err) {
    throw toRpcError(err, 'the pod cannot migrate', Code.FailedPrecondition);
  }
  const log = d.logger.child({ migration: to });
  // Same binary, flags and mount namespace (the containers' rootfs mounts live in it).
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...d.daemonArgv], {
    cwd: process.cwd(),
    detached: true,
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    env: { ...process.env, [INCOMING_ENV]: to },
    argv0: 'containerd-shim-stencil-v2', // as the launcher names its daemons: ps shows the shim
  });
  log.info('pod migration: new shim daemon spawned', { pid: child.pid, tasks: tasks.map((t) => t.id) });
  let servingStopped = false;
  let stdioHeld = false;
  let migrated = false;
  try {
    const listening = nextMessage(child, 'listening');
    child.send({ kind: 'tasks', tasks } satisfies MigrationMessage);
    await listening;
    // From here containerd's calls wait in the sockets for whichever daemon serves the pod next.
    await d.ttrpc.quiesce(handOverOptions);
    servingStopped = true;
    // Output read by the agent so far reaches the FIFOs from here; the rest waits in the guest.
    await d.service.holdStdio(true);
    stdioHeld = true;
    const adopted = nextMessage(child, 'adopted');
    // Awaited below; a failure the new daemon reports meanwhile must not go unhandled (that
    // would end this daemon, and the pod with it).
    adopted.catch(() => undefined);
    const stats = await pod.migrate(to);
    migrated = true;
    await adopted;
    // The VM runs in the new daemon: nothing here may report an exit or tear a task down.
    d.service.releaseMigrated();
    const serverAck = nextMessage(child, 'ack', 'server');
    child.send({ kind: 'server' } satisfies MigrationMessage, d.listening);
    await serverAck;
    // Both processes accept on the socket now; what this one still accepts goes over as it is.
    d.listening.removeAllListeners('connection');
    d.listening.on('connection', (socket: net.Socket) =>
      child.send({ kind: 'connection', state: { lastStreamId: 0, requests: [], unread: '' } } satisfies MigrationMessage, socket),
    );
    for (const { socket, state } of d.ttrpc.takeConnections(handOverOptions)) {
      const ack = nextMessage(child, 'ack', 'connection');
      child.send({ kind: 'connection', state } satisfies MigrationMessage, socket);
      await ack;
    }
    child.send({ kind: 'done' } satisfies MigrationMessage);
    child.disconnect();
    child.unref();
    await pod.shutdown().catch((err: Error) => log.error('releasing the migrated pod VM here', { err: err.message }));
    log.info('pod migration: handed over', { pid: child.pid, ...stats });
    setImmediate(() => d.exitAfterHandOver());
    return { pid: child.pid ?? 0, ...stats };
  } catch (err) {
    log.error(migrated ? 'pod migration failed after the VM moved' : 'pod migration failed; the pod runs on here', { err: String(err) });
    if (stdioHeld && !migrated) await d.service.holdStdio(false).catch((e: Error) => log.error('re-attaching stdio', { err: e.message }));
    // The VM left and the new daemon did not take the pod up: its processes are gone, say so.
    if (migrated && !d.service.isMigratedAway) d.service.podLost(`pod migration to ${to} failed after the VM moved: ${(err as Error).message}`);
    if (servingStopped && !d.service.isMigratedAway) d.ttrpc.resumeServing();
    if (child.exitCode === null) child.kill('SIGKILL');
    throw err instanceof RpcError ? err : new RpcError(Code.Internal, `pod migration to ${to}: ${(err as Error).message}`);
  }
}

export interface DestinationDaemon {
  service: TaskService;
  ttrpc: TtrpcServer;
  logger: Logger;
  /** Boots this daemon's pod from the VM arriving at the migration's URI. */
  receivePod(tasks: MigratingTask[], onListening: () => void): Promise<import('../pod/types.js').Pod>;
  /** The listening shim socket, handed over by the source. */
  serveListening(server: net.Server): void;
  /** The migration failed here: exit, leaving the socket alone (the source still serves it). */
  abandon(why: string): void;
}

/** Destination side: follows the source's messages until it has taken everything over. */
export function receivePodMigration(d: DestinationDaemon): void {
  const send = (m: MigrationMessage) => process.send?.(m);
  process.on('message', (m: MigrationMessage, handle?: net.Server | net.Socket) => {
    switch (m.kind) {
      case 'tasks':
        void d
          .receivePod(m.tasks, () => send({ kind: 'listening' }))
          .then((pod) => d.service.adoptMigrated(pod, m.tasks))
          .then(
            () => send({ kind: 'adopted' }),
            (err: Error) => {
              d.logger.error('pod migration: receiving the pod failed', { err: err.message });
              send({ kind: 'failed', error: err.message });
              d.abandon(err.message);
            },
          );
        break;
      case 'server':
        d.serveListening(handle as net.Server);
        send({ kind: 'ack', of: 'server' });
        break;
      case 'connection':
        d.ttrpc.adopt(handle as net.Socket, m.state);
        send({ kind: 'ack', of: 'connection' });
        break;
      case 'done':
        d.logger.info('pod migration: serving the pod', { pid: process.pid });
        process.disconnect?.();
        break;
    }
  });
  // The source gone before the end (killed): nothing was handed over, so nothing stays here.
  process.once('disconnect', () => {
    if (!d.service.taskCount) d.abandon('the source daemon went away before the migration finished');
  });
}
