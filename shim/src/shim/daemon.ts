// The long-lived shim daemon of one pod (spawned by `start`, never by containerd): serves the task
// service on the pod's socket over ttrpc or gRPC, publishes events to containerd, runs the pod's VM,
// and exits after a Shutdown that finds no tasks (or on SIGTERM), removing its socket.
//
// `start` (and so every container start) waits until the socket listens: `start` binds it and
// passes it down (or, run by hand, the daemon binds it before loading the rest of the shim);
// connections arriving meanwhile are held paused and served, over ttrpc or gRPC (grpc-js gets them
// through its connection injector), once the task service is up.
import fs from 'node:fs';
import net from 'node:net';
import type { ShimFlags } from './flags.js';

/**
 * With no task for this long, the daemon exits: a `start` whose Create never came, or a connection
 * containerd gave up on without a Shutdown (containerd 2.1's gRPC race, see README).
 */
const IDLE_EXIT_MS = 30_000;
const EXIT_GRACE_MS = 10_000;

export async function serve(flags: ShimFlags, bundle: string): Promise<void> {
  // stderr is the bundle's `log` FIFO; containerd restarts break it: never die of EPIPE.
  process.stderr.on('error', () => undefined);
  process.stdout.on('error', () => undefined);
  const early = await listenEarly(flags.socket, flags.socketFd);

  const [{ loadConfig }, { createLogger }, address, { bootPod }, { TaskService }, { EventPublisher }, { networkNamespaceOf }] = await Promise.all([
    import('../../../runtime-config/src/config.js'),
    import('../util/log.js'),
    import('./address.js'),
    import('./pod-factory.js'),
    import('./task-service.js'),
    import('../containerd/events.js'),
    import('../network/pod-network.js'),
  ]);
  const { config, source } = loadConfig({ path: flags.config });
  const logger = createLogger({ level: flags.debug ? 'debug' : config.runtime.logLevel, stream: process.stderr, json: true }).child({
    shim: 'stencil',
    namespace: flags.namespace,
    pod: flags.id,
  });
  logger.info('shim daemon starting', { pid: process.pid, protocol: flags.protocol, config: source, socket: flags.socket });

  const key = address.podKey(flags.address, flags.namespace, address.groupId(bundle, flags.id));
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
        restore,
        vmName: address.podVmName(key),
        stateDir: address.podStateDir(config.runtime.stateDir, key),
        hypervisor: config.hypervisor,
        factory: config.factory,
        networkNamespace: networkNamespaceOf(spec),
        annotations: (spec.annotations ?? {}) as Record<string, string>,
        logger,
      }),
    onShutdown: () => void exit('shutdown requested'),
    onIdle: (idle) => {
      clearTimeout(idleTimer);
      if (idle) idleTimer = setTimeout(() => void exit(`no tasks for ${IDLE_EXIT_MS / 1000} s`), IDLE_EXIT_MS);
    },
  });

  async function exit(why: string): Promise<void> {
    if (exiting) return;
    exiting = true;
    logger.info('shim daemon exiting', { why });
    const force = setTimeout(() => process.exit(1), EXIT_GRACE_MS);
    try {
      await closeServer?.();
      await service.close();
      await events.close();
    } catch (err) {
      logger.error('error while exiting', { err: String(err) });
    }
    fs.rmSync(flags.socket, { force: true });
    clearTimeout(force);
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

  process.on('SIGTERM', () => void exit('SIGTERM'));
  process.on('SIGINT', () => void exit('SIGINT'));
  process.on('uncaughtException', (err) => {
    logger.error('uncaught exception', { err: err.stack ?? String(err) });
    void exit('uncaught exception');
  });

  const { taskServiceDefinitions } = await import('../containerd/task-api.js');
  const definitions = taskServiceDefinitions(service);
  let accept: (socket: net.Socket) => void;
  let closeTransport: () => Promise<void>;
  if (flags.protocol === 'grpc') {
    const { GrpcServer } = await import('../rpc/grpc-server.js');
    const grpc = new GrpcServer({ logger });
    for (const def of definitions) grpc.addService(def);
    accept = await grpc.acceptor();
    closeTransport = () => grpc.close();
  } else {
    const { TtrpcServer } = await import('../ttrpc/server.js');
    const ttrpc = new TtrpcServer({ logger });
    for (const def of definitions) ttrpc.addService(def);
    accept = (socket) => ttrpc.accept(socket);
    closeTransport = () => ttrpc.close();
  }
  // server.close() completes only once every connection is gone, which the transport's close() does.
  closeServer = async () => {
    await Promise.all([new Promise<void>((resolve) => early.server.close(() => resolve())), closeTransport()]);
  };
  const serveOne = (socket: net.Socket) => {
    accept(socket);
    socket.resume();
  };
  early.server.removeAllListeners('connection');
  early.server.on('connection', serveOne);
  early.held.splice(0).forEach(serveOne);
  idleTimer = setTimeout(() => void exit(`no task created within ${IDLE_EXIT_MS / 1000} s`), IDLE_EXIT_MS);
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
