// The process that takes a TtrpcServer's connections over in server.test.ts: it gets the listening
// server and each connection (with its ConnectionHandover) through Node's IPC channel, as a
// migrating shim daemon's successor does, and answers Wait and State as itself.
import type net from 'node:net';
import { service, TASK_SERVICE_V2 } from '../../containerd/protos.js';
import { type AnyRpcHandler, serviceDefinition } from '../../rpc/service.js';
import { Code, RpcError } from '../../rpc/errors.js';
import { type ConnectionHandover, TtrpcServer } from '../server.js';

const handlers: Record<string, AnyRpcHandler> = {};
for (const m of service(TASK_SERVICE_V2).methodsArray) handlers[m.name] = async () => Promise.reject(new RpcError(Code.Unimplemented, m.name));
handlers.Wait = async (req: { id: string }) => ({ exitStatus: req.id === 'seven' ? 7 : 0, exitedAt: new Date() });
handlers.State = async (req: { id: string }) => ({ id: req.id, pid: process.pid, status: 2 });
const server = new TtrpcServer();
server.addService(serviceDefinition(service(TASK_SERVICE_V2), handlers));

process.on('message', (msg: { kind: string; state?: ConnectionHandover }, handle?: net.Server | net.Socket) => {
  if (msg.kind === 'server') server.serve(handle as net.Server);
  else if (msg.kind === 'connection') server.adopt(handle as net.Socket, msg.state!);
  else if (msg.kind === 'exit') void server.close().then(() => process.exit(0));
  process.send!({ kind: 'ack', of: msg.kind });
});
process.send!({ kind: 'ready' });
