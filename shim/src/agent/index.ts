// The guest agent's client side: see client.ts (calls), stdio.ts (streams), port-stream.ts
// (forwarded TCP connections), vsock.ts (transport).
export * from './client.js';
export * from './errors.js';
export { connectUnix, connectVsock, DEFAULT_AGENT_PORT, VsockConnectError } from './vsock.js';
export { MAX_FRAME_PAYLOAD } from './framing.js';
