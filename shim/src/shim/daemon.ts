// The long-lived shim daemon of one pod (spawned by `start`, never by containerd): serves the task
// service on the pod's socket over ttrpc or gRPC, publishes events to containerd, runs the pod's VM,
// and exits after a Shutdown that finds no tasks (or on SIGTERM), removing its socket.
//
// `start` (the native launcher, shim/launcher/) binds the socket and passes it down (or, run by
// hand, the daemon binds it before loading the rest of the shim), then waits only until the daemon
// has read its configuration (daemon-report.ts); connections arriving meanwhile are held paused
// and served, over ttrpc or gRPC (grpc-js gets them through its connection injector), once the
// task service is up. Stencil's PodAdmin service
// (`stencil pod ...`) is served over ttrpc on the same socket either way (rpc/protocol-sniff.ts).
//
// A daemon may also be the destination of a pod migration (pod-migration.ts): spawned by the pod's
// current daemon with STENCIL_SHIM_INCOMING set, it receives the VM, the tasks and, last, the
// shim socket and containerd's connections.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { daemonConfig } from './daemon-report.js';
import { daemonArgv, INCOMING_ENV, type ShimFlags } from './flags.js';
import { watchForgottenTasks } from './forgotten-tasks.js';
import { memoryFileName } from '../hypervisor/types.js';

/**
 * With no task for this long, the daemon exits: a `start` whose Create never came, or a connection
 * containerd gave up on without a Shutdown (containerd 2.1's gRPC race, see README).
 */
const IDLE_EXIT_MS = 30_000;

/** `loadedAhead`: a spare daemon given this pod (spare.ts), with how long it had waited. */
export async function serve(flags: ShimFlags, bundle: string, loadedAhead?: { waitedMs: number }): Promise<void> {
  // stderr is the bundle's `log` FIFO; containerd restarts break it: never die of EPIPE. The
  // logger writes to it through LogFifoStream, which goes on once the next containerd reads it.
  process.stderr.on('error', () => undefined);
  process.stdout.on('error', () => undefined);
  const incoming = process.env[INCOMING_ENV];
  delete process.env[INCOMING_ENV];
  // First the configuration: the launcher (and so containerd) waits for it.
  const { config, source, protocol } = daemonConfig(flags);
  const early = incoming ? undefined : await listenEarly(flags.socket, flags.socketFd);

  const [{ createLogger }, { LogFifoStream }, address, { bootPod }, { removeStateDir }, { TaskService }, { EventPublisher }, { networkNamespaceOf }, migration, { confineVmmThreads }, { podNetworkSysctls }] =
    await loadDaemonModules();
  const logger = createLogger({ level: flags.debug ? 'debug' : config.runtime.logLevel, stream: new LogFifoStream(2), json: true }).child({
    shim: 'stencil',
    namespace: flags.namespace,
    pod: flags.id,
  });
  logger.info('shim daemon starting', { pid: process.pid, protocol, config: source, socket: flags.socket, incoming, spare: loadedAhead });
  // Every VM of this daemon (booted, cloned, restored, migrated in) runs confined VMM threads.
  confineVmmThreads(config.hypervisor);

  const key = address.podKey(flags.address, flags.namespace, address.groupId(bundle, flags.id));
  // A migrated pod's VM, state and RAM file get names of their own: the source's are still in use.
  const generation = incoming ? `-m${process.pid}` : '';
  const podBootOptions = () => ({
    vmName: address.podVmName(key) + generation,
    stateDir: address.podStateDir(config.runtime.stateDir, key) + generation,
    hypervisor: config.hypervisor,
    factory: config.factory,
    agentRequestTimeoutMs: config.runtime.agentRequestTimeoutMs,
    sandboxPause: config.runtime.sandboxPause,
    logger,
  });
  const events = new EventPublisher({ address: process.env.TTRPC_ADDRESS ?? `${flags.address}.ttrpc`, namespace: flags.namespace, logger });
  let closeServer: (() => Promise<void>) | undefined;
  let exiting = false;
  let idleTimer: NodeJS.Timeout | undefined;

  const service = new TaskService({
    namespace: flags.namespace,
    logger,
    events,
    createPod: ({ spec, restore }) =>
      bootPod({
        ...podBootOptions(),
        restore,
        networkNamespace: networkNamespaceOf(spec),
        networkSysctls: podNetworkSysctls(spec),
        annotations: (spec.annotations ?? {}) as Record<string, string>,
      }),
    failpoints: config.runtime.failpoints,
    onShutdown: () => void exit('shutdown requested'),
    onIdle: (idle) => {
      clearTimeout(idleTimer);
      if (idle) idleTimer = setTimeout(() => void exit(`no tasks for ${IDLE_EXIT_MS / 1000} s`), IDLE_EXIT_MS);
    },
  });

  const stopForgottenTaskWatch = watchForgottenTasks({ service, logger });

  let listening = early?.server;
  /** After a pod migration handed everything to another daemon: the socket and the pod are its. */
  function exitAfterHandOver(): void {
    exiting = true;
    logger.info('shim daemon exiting', { why: 'the pod migrated to another shim daemon' });
    void events.close().finally(() => void flushLogsAndExit());
  }

  /** Exits 0 once the logger has written everything out (at most 500 ms later). */
  async function flushLogsAndExit(): Promise<never> {
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 500);
      logger.on('finish', () => {
        clearTimeout(t);
        resolve();
      });
      logger.end();
    });
    process.exit(0);
  }

  async function exit(why: string): Promise<void> {
    if (exiting) return;
    exiting = true;
    logger.info('shim daemon exiting', { why });
    stopForgottenTaskWatch();
    let step = 'closing the server';
    // containerd's `delete` leaves the socket to a daemon that still listens: this one removes it
    // on every way out, the forced one too (20 pods ending at once under emulation outlast the
    // grace), and with it what its pod had on disk: the mounts go with the daemon's mount
    // namespace, not the directories and the RAM file they were in.
    const force = setTimeout(() => {
      logger.error('shim daemon forced out', { why: `still ${step} after ${config.runtime.exitGraceMs} ms` });
      address.removeDaemonSocket(flags.socket);
      const { stateDir, vmName } = podBootOptions();
      fs.rmSync(path.join(config.hypervisor.memoryDir, memoryFileName(vmName)), { force: true });
      void removeStateDir(stateDir)
        .then((kept) => kept.length && logger.error('the forced exit left the pod state directory', { kept }))
        .finally(() => process.exit(1));
    }, config.runtime.exitGraceMs);
    try {
      await closeServer?.();
      step = 'shutting the pod down';
      await service.close();
      step = 'closing the event publisher';
      await events.close();
    } catch (err) {
      logger.error('error while exiting', { err: String(err) });
    }
    address.removeDaemonSocket(flags.socket);
    clearTimeout(force);
    await flushLogsAndExit();
  }

  process.on('SIGTERM', () => void exit('SIGTERM'));
  process.on('SIGINT', () => void exit('SIGINT'));
  process.on('uncaughtException', (err) => {
    logger.error('uncaught exception', { err: err.stack ?? String(err) });
    void exit('uncaught exception');
  });

  const { taskServiceDefinitions } = await import('../containerd/task-api.js');
  const definitions = taskServiceDefinitions(service);
  // Stencil's own callers (`stencil pod ...`) speak ttrpc whatever containerd speaks.
  const { TtrpcServer } = await import('../ttrpc/server.js');
  const ttrpc = new TtrpcServer({ logger });
  // containerd's connections, when they are ttrpc: only those can be handed to another daemon.
  const ttrpcServer = protocol === 'grpc' ? undefined : ttrpc;
  const { podAdminDefinition } = await import('./admin-api.js');
  ttrpc.addService(
    podAdminDefinition({
      migrate: (req) =>
        migration.migratePodOut(
          {
            service,
            ttrpc: ttrpcServer,
            listening: listening!,
            logger,
            exitAfterHandOver,
            // The same daemon, configured as this one (the launcher's pipes are gone).
            daemonArgv: daemonArgv({ ...flags, protocol, config: source === 'defaults' ? '' : source, socketFd: -1, optionsFd: -1, reportFd: -1 }),
          },
          req.to,
        ),
      status: async () => {
        const pod = await service.currentPod()?.catch(() => undefined);
        const vm = pod?.status();
        return { pid: process.pid, vmState: vm?.vmState ?? 'none', monitor: vm?.monitor ?? '', containers: service.containerIds() };
      },
    }),
  );
  let accept: (socket: net.Socket) => void;
  let closeTransport: () => Promise<void>;
  if (protocol === 'grpc') {
    const { GrpcServer } = await import('../rpc/grpc-server.js');
    const { acceptByProtocol } = await import('../rpc/protocol-sniff.js');
    const grpc = new GrpcServer({ logger });
    for (const def of definitions) grpc.addService(def);
    accept = acceptByProtocol({ grpc: await grpc.acceptor(), ttrpc: (socket) => ttrpc.accept(socket) });
    closeTransport = async () => void (await Promise.all([grpc.close(), ttrpc.close()]));
  } else {
    for (const def of definitions) ttrpc.addService(def);
    accept = (socket) => ttrpc.accept(socket);
    closeTransport = () => ttrpc.close();
  }
  // server.close() completes only once every connection is gone, which the transport's close() does.
  closeServer = async () => {
    const server = listening;
    await Promise.all([server ? new Promise<void>((resolve) => server.close(() => resolve())) : undefined, closeTransport()]);
  };
  const serveOne = (socket: net.Socket) => {
    accept(socket);
    socket.resume();
  };
  if (incoming) {
    if (!ttrpcServer) throw new Error('a pod migration needs the ttrpc transport');
    const ttrpc = ttrpcServer;
    migration.receivePodMigration({
      service,
      ttrpc,
      logger,
      receivePod: (tasks, onListening) => {
        const containers = migration.containersOf(tasks);
        // The sandbox's namespace (CNI's), whose tap the VM keeps.
        const networkNamespace = containers.map((c) => networkNamespaceOf(c.spec)).find(Boolean);
        return bootPod({ ...podBootOptions(), networkNamespace, incoming: { uri: incoming, containers, onListening } });
      },
      serveListening: (server) => {
        listening = server;
        server.on('connection', (socket: net.Socket) => ttrpc.accept(socket));
      },
      abandon: (why) => {
        // The source still serves the pod and its socket; the containers' rootfs mounts are its.
        logger.error('pod migration abandoned here', { why });
        service.releaseMigrated();
        void service.close().finally(() => process.exit(1));
      },
    });
    return;
  }
  const held = early!;
  held.server.removeAllListeners('connection');
  held.server.on('connection', serveOne);
  held.held.splice(0).forEach(serveOne);
  idleTimer = setTimeout(() => void exit(`no task created within ${IDLE_EXIT_MS / 1000} s`), IDLE_EXIT_MS);
}

/** What the daemon loads after its report (the launcher and containerd wait for it): all of the shim but the CLI. */
function loadDaemonModules() {
  return Promise.all([
    import('../util/log.js'),
    import('../util/log-fifo.js'),
    import('./address.js'),
    import('./pod-factory.js'),
    import('../pod/pod-vm-options.js'),
    import('./task-service.js'),
    import('../containerd/events.js'),
    import('../network/pod-network.js'),
    import('./pod-migration.js'),
    import('../hypervisor/native.js'),
    import('../pod/guest-spec.js'),
  ]);
}

/** Loads, ahead of a pod, what serve() loads for one, the KVM addon included (spare.ts). */
export async function preloadDaemon(): Promise<void> {
  const [, , , , , , , , , native] = await loadDaemonModules();
  native.loadAddon();
  const [, , , , , protos, agent, envelope, { compileProtoTypes }] = await Promise.all([
    import('../containerd/task-api.js'),
    import('../ttrpc/server.js'),
    import('./admin-api.js'),
    import('../rpc/grpc-server.js'),
    import('../rpc/protocol-sniff.js'),
    import('../containerd/protos.js'),
    import('../agent/protocol.js'),
    import('../ttrpc/envelope.js'),
    import('../util/proto.js'),
  ]);
  // The .proto files parsed and the types of a pod's first calls compiled, as those calls would:
  // the task service's, the task events' and the agent's (not the metrics an Any carries in Stats).
  const { Hello, HelloReply, Request, Response } = agent.agentTypes();
  compileProtoTypes([...protos.taskCallTypes(), Hello, HelloReply, Request, Response]);
  envelope.decodeRequest(envelope.encodeRequest({ service: 'warm', method: 'up', payload: Buffer.alloc(0), timeoutNano: 0 }));
  envelope.decodeResponse(envelope.encodeErrorResponse(2, 'warm'));
}

/**
 * Serves the ttrpc socket `start` bound and passed as `fd` (or binds it, mode 0600, when run by
 * hand) and holds connections until the service is ready.
 */
async function listenEarly(socket: string, fd: number): Promise<{ server: net.Server; held: net.Socket[] }> {
  const held: net.Socket[] = [];
  const server = net.createServer({ pauseOnConnect: true });
  server.on('connection', (s) => held.push(s));
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`cannot listen on ${socket}${fd >= 0 ? ` (fd ${fd})` : ''}: ${err.message}`)));
    if (fd >= 0) server.listen({ fd }, () => resolve());
    else server.listen(socket, () => resolve());
  });
  if (fd < 0) fs.chmodSync(socket, 0o600);
  return { server, held };
}
