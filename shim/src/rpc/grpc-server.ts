// GrpcServer: serves ServiceDefinitions (rpc/service.ts) over gRPC with @grpc/grpc-js on a Unix
// socket, for containerd 2.x shims that announce protocol "grpc". Messages are (de)serialized by
// protobufjs through invokeMethod, exactly as on the ttrpc side; an RpcError's code and message
// become the gRPC status. grpc-js is loaded only when listen() is called, so importing this
// module costs nothing on paths that never serve gRPC (the shim's `start`).
import fs from 'node:fs';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import type * as Grpc from '@grpc/grpc-js';
import type { Logger } from '../util/log.js';
import { toRpcError } from './errors.js';
import { type CallContext, invokeMethod, type ServiceDefinition } from './service.js';

export interface GrpcServerOptions {
  logger?: Logger;
}

type GrpcModule = typeof Grpc;

async function loadGrpc(): Promise<GrpcModule> {
  const mod = (await import('@grpc/grpc-js')) as GrpcModule & { default?: GrpcModule };
  return mod.Server ? mod : mod.default!;
}

export class GrpcServer {
  private readonly services: ServiceDefinition[] = [];
  private server?: Grpc.Server;
  private socketPath?: string;
  private readonly logger?: Logger;

  constructor(options: GrpcServerOptions = {}) {
    this.logger = options.logger;
  }

  /** Registers a service (before listen). Calls use the path /<def.name>/<Method>. */
  addService(def: ServiceDefinition): void {
    if (this.server) throw new Error(`gRPC: cannot add service ${def.name} after listen()`);
    this.services.push(def);
  }

  /**
   * Listens on the Unix socket `socketPath` (a bare path, as containerd dials it; made absolute
   * and given to grpc-js as unix:///path), mode 0600.
   */
  async listen(socketPath: string): Promise<void> {
    if (this.server) throw new Error('gRPC: already listening');
    const grpc = await loadGrpc();
    const server = new grpc.Server();
    for (const def of this.services) server.addService(...this.grpcService(grpc, def));
    const abs = path.resolve(socketPath);
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(`unix://${abs}`, grpc.ServerCredentials.createInsecure(), (err) => {
        if (err) reject(new Error(`gRPC: cannot listen on ${abs}: ${err.message}`, { cause: err }));
        else resolve();
      });
    });
    this.server = server;
    this.socketPath = abs;
    try {
      fs.chmodSync(abs, 0o600);
    } catch (err) {
      await this.close();
      throw new Error(`gRPC: cannot restrict ${abs} to its owner: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * Serves connections accepted elsewhere (e.g. on a socket inherited from the process that bound
   * it) instead of binding a socket: returns the function to hand each connection to.
   */
  async acceptor(): Promise<(connection: Duplex) => void> {
    if (this.server) throw new Error('gRPC: already serving');
    const grpc = await loadGrpc();
    const server = new grpc.Server();
    for (const def of this.services) server.addService(...this.grpcService(grpc, def));
    const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    this.server = server;
    return (connection) => injector.injectConnection(connection);
  }

  /**
   * Stops the server: waits up to `graceMs` (default 1 s) for calls in progress, then cancels
   * the rest. The socket file is removed.
   */
  async close(graceMs = 1000): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, graceMs);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    if (this.socketPath) fs.rmSync(this.socketPath, { force: true });
  }

  private grpcService(grpc: GrpcModule, def: ServiceDefinition): [Grpc.ServiceDefinition, Grpc.UntypedServiceImplementation] {
    const definition: Record<string, Grpc.MethodDefinition<Buffer, Buffer>> = {};
    const implementation: Grpc.UntypedServiceImplementation = {};
    const identity = (b: Buffer) => b;
    for (const name of Object.keys(def.methods)) {
      definition[name] = {
        path: `/${def.name}/${name}`,
        requestStream: false,
        responseStream: false,
        requestSerialize: identity,
        requestDeserialize: identity,
        responseSerialize: identity,
        responseDeserialize: identity,
        originalName: name,
      };
      implementation[name] = (call: Grpc.ServerUnaryCall<Buffer, Buffer>, callback: Grpc.sendUnaryData<Buffer>) =>
        this.handle(grpc, def, name, call, callback);
    }
    return [definition as Grpc.ServiceDefinition, implementation];
  }

  private handle(
    grpc: GrpcModule,
    def: ServiceDefinition,
    method: string,
    call: Grpc.ServerUnaryCall<Buffer, Buffer>,
    callback: Grpc.sendUnaryData<Buffer>,
  ): void {
    const controller = new AbortController();
    call.on('cancelled', () => controller.abort(new Error(`${def.name}/${method}: cancelled by the client or its deadline`)));
    const metadata: Record<string, string> = Object.create(null);
    for (const [key, value] of Object.entries(call.metadata.getMap())) metadata[key] = Buffer.isBuffer(value) ? value.toString('utf8') : value;
    const ctx: CallContext = { service: def.name, method, metadata, signal: controller.signal };
    invokeMethod(def, method, call.request, ctx).then(
      (payload) => callback(null, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)),
      (error: unknown) => {
        const err = toRpcError(error);
        if (err.code === grpc.status.UNKNOWN || err.code === grpc.status.INTERNAL) {
          this.logger?.debug('gRPC call failed', { service: def.name, method, code: err.codeName, error: err.message });
        }
        callback({ code: err.code, details: err.message, name: err.name, message: err.message });
      },
    );
  }
}
