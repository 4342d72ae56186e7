import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Code, RpcError } from '../rpc/errors.js';
import {
  anyTypeName,
  CGROUPS_V2_METRICS_TYPE,
  decodeJsonAny,
  decodeMessage,
  encodeJsonAny,
  encodeMessage,
  messageType,
  OCI_PROCESS_TYPE_URL,
  packAny,
  service,
  TASK_SERVICE_V2,
  TASK_SERVICE_V3,
  timestampFromDate,
  timestampFromNs,
  timestampNow,
  timestampToDate,
  timestampToNs,
  unpackAny,
} from './protos.js';
import { TASK_METHODS, taskServiceDefinitions, type TaskHandlers } from './task-api.js';

describe('containerd protos', () => {
  it('declares all 17 Task RPCs under v2 and v3 over the same messages', () => {
    const v2 = service(TASK_SERVICE_V2);
    const v3 = service(TASK_SERVICE_V3);
    assert.deepEqual(v2.methodsArray.map((m) => m.name).sort(), [...TASK_METHODS].sort());
    for (const m of v3.methodsArray) {
      const twin = v2.methods[m.name];
      assert.equal(m.resolvedRequestType, twin.resolvedRequestType, m.name);
      assert.equal(m.resolvedResponseType, twin.resolvedResponseType, m.name);
    }
  });

  it('encodes field numbers as the reference specifies', () => {
    // StateResponse 4:status enum, 11:exec_id string; Any 1:type_url, 2:value.
    const bytes = encodeMessage('containerd.task.v2.StateResponse', { status: 3, execId: 'e' });
    assert.deepEqual([...bytes], [0x20, 3, 0x5a, 1, 0x65]);
    const create = encodeMessage('containerd.task.v2.CreateTaskRequest', { options: { typeUrl: 'a', value: Buffer.from('b') } });
    assert.deepEqual([...create], [0x52, 6, 0x0a, 1, 0x61, 0x12, 1, 0x62]);
    // TaskExit 5:exited_at Timestamp {1:seconds, 2:nanos}
    const exit = encodeMessage('containerd.events.TaskExit', { exitedAt: new Date(1500) });
    assert.deepEqual([...exit], [0x2a, 8, 0x08, 1, 0x10, 0x80, 0xca, 0xb5, 0xee, 0x01]);
  });

  it('converts Timestamps', () => {
    const d = new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678));
    assert.deepEqual(timestampFromDate(d), { seconds: d.getTime() / 1000 - 0.678, nanos: 678_000_000 });
    assert.equal(timestampToDate(timestampFromDate(d)).getTime(), d.getTime());
    assert.deepEqual(timestampFromDate(new Date(-1)), { seconds: -1, nanos: 999_000_000 });
    assert.deepEqual(timestampFromNs(1_000_000_001_500n), { seconds: 1000, nanos: 1_500 });
    assert.deepEqual(timestampFromNs(-1n), { seconds: -1, nanos: 999_999_999 });
    assert.equal(timestampToNs({ seconds: 1000, nanos: 1_500 }), 1_000_000_001_500n);
    const now = timestampNow();
    assert.ok(Math.abs(now.seconds * 1000 + now.nanos / 1e6 - Date.now()) < 1000);
    assert.throws(() => timestampFromDate(new Date(NaN)), /invalid Date/);
  });

  it('packs and unpacks protobuf Anys with bare type URLs; 64-bit metrics from bigint', () => {
    const any = packAny(CGROUPS_V2_METRICS_TYPE, { pids: { current: 3, limit: 2n ** 64n - 1n }, memory: { usage: 123n } });
    assert.equal(any.typeUrl, 'io.containerd.cgroups.v2.Metrics');
    const back = decodeMessage<{ pids: { limit: string } }>(CGROUPS_V2_METRICS_TYPE, any.value);
    assert.equal(messageType(CGROUPS_V2_METRICS_TYPE).toObject(messageType(CGROUPS_V2_METRICS_TYPE).decode(any.value), { longs: String }).pids.limit, '18446744073709551615');
    assert.ok(back.pids);
    assert.equal(anyTypeName('type.googleapis.com/containerd.events.TaskExit'), 'containerd.events.TaskExit');
    const exit = unpackAny<{ containerId: string }>({ typeUrl: 'type.googleapis.com/containerd.events.TaskOOM', value: packAny('containerd.events.TaskOOM', { containerId: 'c' }).value });
    assert.equal(exit.containerId, 'c');
    assert.throws(() => unpackAny(any, 'containerd.events.TaskExit'), /expected an Any of type containerd.events.TaskExit/);
    assert.throws(() => messageType('containerd.task.v2.Task'), /unknown protobuf message type/);
  });

  it('decodes JSON Anys (exec specs) and names what is wrong', () => {
    const spec = decodeJsonAny<{ args: string[] }>(encodeJsonAny(OCI_PROCESS_TYPE_URL, { args: ['ls', '/'] }), 'exec e1 spec');
    assert.deepEqual(spec.args, ['ls', '/']);
    assert.throws(() => decodeJsonAny(null, 'exec e1 spec'), (err: RpcError) => err.code === Code.InvalidArgument && err.message === 'exec e1 spec is missing');
    assert.throws(() => decodeJsonAny({ typeUrl: OCI_PROCESS_TYPE_URL, value: Buffer.from('{nope') }, 'exec e1 spec'), /exec e1 spec \(types.containerd.io\/.*\/Process\) is not valid JSON/);
    assert.throws(() => decodeJsonAny({ typeUrl: 'x', value: Buffer.from('[1]') }, 'resources'), /resources \(x\) is not a JSON object/);
  });
});

describe('taskServiceDefinitions', () => {
  function handlers(): Record<string, () => Promise<unknown>> {
    return Object.fromEntries(TASK_METHODS.map((m) => [m, async () => ({})]));
  }

  it('builds v2 and v3 definitions from RPC-named or camelCase handlers', async () => {
    const defs = taskServiceDefinitions(handlers() as unknown as TaskHandlers);
    assert.deepEqual(defs.map((d) => d.name), [TASK_SERVICE_V2, TASK_SERVICE_V3]);
    assert.equal(Object.keys(defs[1].methods).length, 17);

    class Service {
      calls: string[] = [];
      constructor() {
        for (const m of TASK_METHODS) {
          const camel = m[0].toLowerCase() + m.slice(1);
          (this as unknown as Record<string, unknown>)[camel] = async function (this: Service, req: { id: string }) {
            this.calls.push(`${camel}:${req.id}`);
            return {};
          };
        }
      }
    }
    const svc = new Service();
    const [v2] = taskServiceDefinitions(svc as unknown as TaskHandlers);
    await v2.methods.CloseIO.handler({ id: 'a' } as never, { service: '', method: '', metadata: {}, signal: new AbortController().signal });
    assert.deepEqual(svc.calls, ['closeIO:a']);
  });

  it('names a missing handler', () => {
    const h = handlers();
    delete h.ResizePty;
    assert.throws(() => taskServiceDefinitions(h as unknown as TaskHandlers), /no handler for ResizePty \(nor resizePty\)/);
  });
});
