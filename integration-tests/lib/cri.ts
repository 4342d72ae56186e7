// A client for the Kubernetes CRI (runtime.v1) that containerd serves on its gRPC socket when its
// CRI plugin is on (ContainerdInstance.start({cri: ...})): the RuntimeService and ImageService
// calls the CRI tests use, over @grpc/grpc-js with messages from proto/cri/runtime/v1/api.proto
// (a subset of the real API with its field numbers). Plain objects in and out, camelCase fields;
// responses have every declared field (defaults filled in), enums as names ('SANDBOX_READY'),
// 64-bit integers as numbers (nanosecond timestamps lose their last bits), bytes as Buffers.
//
//   const cri = new CriClient(c.address);
//   const { podSandboxId } = await cri.runPodSandbox({ config }, 'runc');
//   ...
//   cri.close();
//
// A failed call rejects with a CriError naming the method, with the gRPC status code and details.
import * as grpc from '@grpc/grpc-js';
import type protobuf from 'protobufjs';
import { loadProtoFiles } from '../../shim/src/util/proto.js';

/** Slow hosts (the emulated host under TCG, a VM per pod) multiply every CRI wait by $STENCIL_CRI_TIMEOUT_SCALE. */
export const CRI_TIMEOUT_SCALE = Number(process.env.STENCIL_CRI_TIMEOUT_SCALE ?? 1) || 1;
const DEFAULT_DEADLINE_MS = 60_000 * CRI_TIMEOUT_SCALE;

export class CriError extends Error {
  constructor(
    readonly method: string,
    readonly code: grpc.status,
    readonly details: string,
    options?: ErrorOptions,
  ) {
    super(`CRI ${method} failed: ${grpc.status[code] ?? code}: ${details}`, options);
  }
}

// ---- the shapes the tests use (see the .proto for what each field means) ----

export type KV = Record<string, string>;
export interface PodSandboxMetadata {
  name: string;
  uid: string;
  namespace: string;
  attempt?: number;
}
export interface PortMapping {
  protocol?: 'TCP' | 'UDP' | 'SCTP';
  containerPort: number;
  hostPort: number;
  hostIp?: string;
}
export interface PodSandboxConfig {
  metadata: PodSandboxMetadata;
  hostname?: string;
  logDirectory?: string;
  dnsConfig?: { servers?: string[]; searches?: string[]; options?: string[] };
  portMappings?: PortMapping[];
  labels?: KV;
  annotations?: KV;
  linux?: { cgroupParent?: string; securityContext?: { namespaceOptions?: NamespaceOption; privileged?: boolean }; sysctls?: KV; resources?: LinuxResources };
}
export interface LinuxResources {
  cpuPeriod?: number;
  cpuQuota?: number;
  cpuShares?: number;
  memoryLimitInBytes?: number;
}
export type NamespaceMode = 'POD' | 'CONTAINER' | 'NODE' | 'TARGET';
export interface NamespaceOption {
  network?: NamespaceMode;
  pid?: NamespaceMode;
  ipc?: NamespaceMode;
  targetId?: string;
}
export interface Mount {
  containerPath: string;
  hostPath: string;
  readonly?: boolean;
  propagation?: 'PROPAGATION_PRIVATE' | 'PROPAGATION_HOST_TO_CONTAINER' | 'PROPAGATION_BIDIRECTIONAL';
}
export interface ContainerConfig {
  metadata: { name: string; attempt?: number };
  image: { image: string };
  command?: string[];
  args?: string[];
  workingDir?: string;
  envs?: { key: string; value: string }[];
  mounts?: Mount[];
  labels?: KV;
  annotations?: KV;
  logPath?: string;
  stdin?: boolean;
  stdinOnce?: boolean;
  tty?: boolean;
  linux?: {
    resources?: LinuxResources;
    securityContext?: { privileged?: boolean; readonlyRootfs?: boolean; namespaceOptions?: NamespaceOption };
  };
}
export type PodSandboxState = 'SANDBOX_READY' | 'SANDBOX_NOTREADY';
export interface PodSandboxStatus {
  id: string;
  metadata: PodSandboxMetadata;
  state: PodSandboxState;
  createdAt: number;
  network: { ip: string; additionalIps: { ip: string }[] } | null;
  linux: { namespaces: { options: NamespaceOption | null } | null } | null;
  labels: KV;
  annotations: KV;
  runtimeHandler: string;
}
export interface PodSandbox {
  id: string;
  metadata: PodSandboxMetadata;
  state: PodSandboxState;
  createdAt: number;
  labels: KV;
  annotations: KV;
  runtimeHandler: string;
}
export type ContainerState = 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';
export interface Container {
  id: string;
  podSandboxId: string;
  metadata: { name: string; attempt: number };
  image: { image: string } | null;
  imageRef: string;
  state: ContainerState;
  createdAt: number;
  labels: KV;
  annotations: KV;
}
export interface ContainerStatus {
  id: string;
  metadata: { name: string; attempt: number };
  state: ContainerState;
  createdAt: number;
  startedAt: number;
  finishedAt: number;
  exitCode: number;
  image: { image: string } | null;
  imageRef: string;
  reason: string;
  message: string;
  labels: KV;
  annotations: KV;
  mounts: Mount[];
  logPath: string;
}
export interface UInt64Value {
  value: number;
}
export interface ContainerStats {
  attributes: { id: string; metadata: { name: string; attempt: number } | null; labels: KV; annotations: KV } | null;
  cpu: { timestamp: number; usageCoreNanoSeconds: UInt64Value | null; usageNanoCores: UInt64Value | null } | null;
  memory: {
    timestamp: number;
    workingSetBytes: UInt64Value | null;
    availableBytes: UInt64Value | null;
    usageBytes: UInt64Value | null;
    rssBytes: UInt64Value | null;
    pageFaults: UInt64Value | null;
    majorPageFaults: UInt64Value | null;
  } | null;
  writableLayer: { timestamp: number; fsId: { mountpoint: string } | null; usedBytes: UInt64Value | null; inodesUsed: UInt64Value | null } | null;
}
export interface Image {
  id: string;
  repoTags: string[];
  repoDigests: string[];
  size: number;
  uid: { value: number } | null;
  username: string;
}

type Service = 'RuntimeService' | 'ImageService';

let root: protobuf.Root | undefined;
function protoRoot(): protobuf.Root {
  root ??= loadProtoFiles(['cri/runtime/v1/api.proto']);
  return root;
}

export class CriClient {
  private readonly client: grpc.Client;

  /** address: containerd's gRPC socket path. deadlineMs: each call's default deadline. */
  constructor(
    readonly address: string,
    private readonly deadlineMs = DEFAULT_DEADLINE_MS,
  ) {
    this.client = new grpc.Client(`unix://${address}`, grpc.credentials.createInsecure());
  }

  close(): void {
    this.client.close();
  }

  /** One unary call: `method` of `service`, request and response types named by the method. */
  async call<T>(service: Service, method: string, request: object, o: { deadlineMs?: number } = {}): Promise<T> {
    const pb = protoRoot();
    const reqType = pb.lookupType(`runtime.v1.${method}Request`);
    const resType = pb.lookupType(`runtime.v1.${method}Response`);
    let message: protobuf.Message;
    try {
      // fromObject takes enum names; verify then checks what it made (e.g. a string for an int).
      message = reqType.fromObject(request);
      const invalid = reqType.verify(message);
      if (invalid) throw new Error(invalid);
    } catch (err) {
      throw new CriError(method, grpc.status.INVALID_ARGUMENT, `request does not fit runtime.v1.${method}Request: ${(err as Error).message}`, { cause: err });
    }
    const body = Buffer.from(reqType.encode(message).finish());
    const deadline = Date.now() + (o.deadlineMs ?? this.deadlineMs);
    const reply = await new Promise<Buffer>((resolve, reject) => {
      this.client.makeUnaryRequest(
        `/runtime.v1.${service}/${method}`,
        (b: Buffer) => b,
        (b: Buffer) => b,
        body,
        new grpc.Metadata(),
        { deadline },
        (err, res) => {
          if (err) reject(new CriError(method, err.code, err.details || err.message, { cause: err }));
          else resolve(res ?? Buffer.alloc(0));
        },
      );
    });
    return resType.toObject(resType.decode(reply), { longs: Number, enums: String, defaults: true, arrays: true, objects: true }) as T;
  }

  // ---- RuntimeService ----

  version(): Promise<{ version: string; runtimeName: string; runtimeVersion: string; runtimeApiVersion: string }> {
    return this.call('RuntimeService', 'Version', { version: 'v1' });
  }

  /** runtimeHandler: the name in containerd's CRI runtimes table ("" = its default). */
  runPodSandbox(config: PodSandboxConfig, runtimeHandler = '', o?: { deadlineMs?: number }): Promise<{ podSandboxId: string }> {
    return this.call('RuntimeService', 'RunPodSandbox', { config, runtimeHandler }, o);
  }

  async stopPodSandbox(podSandboxId: string): Promise<void> {
    await this.call('RuntimeService', 'StopPodSandbox', { podSandboxId });
  }

  async removePodSandbox(podSandboxId: string): Promise<void> {
    await this.call('RuntimeService', 'RemovePodSandbox', { podSandboxId });
  }

  podSandboxStatus(podSandboxId: string, verbose = false): Promise<{ status: PodSandboxStatus; info: KV }> {
    return this.call('RuntimeService', 'PodSandboxStatus', { podSandboxId, verbose });
  }

  async listPodSandbox(filter: { id?: string; state?: { state: PodSandboxState }; labelSelector?: KV } = {}): Promise<PodSandbox[]> {
    return (await this.call<{ items: PodSandbox[] }>('RuntimeService', 'ListPodSandbox', { filter })).items;
  }

  async createContainer(podSandboxId: string, config: ContainerConfig, sandboxConfig: PodSandboxConfig): Promise<string> {
    return (await this.call<{ containerId: string }>('RuntimeService', 'CreateContainer', { podSandboxId, config, sandboxConfig })).containerId;
  }

  async startContainer(containerId: string): Promise<void> {
    await this.call('RuntimeService', 'StartContainer', { containerId });
  }

  /** timeoutSeconds: the grace period before SIGKILL; the call's deadline allows for it. */
  async stopContainer(containerId: string, timeoutSeconds: number): Promise<void> {
    await this.call('RuntimeService', 'StopContainer', { containerId, timeout: timeoutSeconds }, { deadlineMs: this.deadlineMs + timeoutSeconds * 1000 });
  }

  async removeContainer(containerId: string): Promise<void> {
    await this.call('RuntimeService', 'RemoveContainer', { containerId });
  }

  async listContainers(filter: { id?: string; state?: { state: ContainerState }; podSandboxId?: string; labelSelector?: KV } = {}): Promise<Container[]> {
    return (await this.call<{ containers: Container[] }>('RuntimeService', 'ListContainers', { filter })).containers;
  }

  containerStatus(containerId: string, verbose = false): Promise<{ status: ContainerStatus; info: KV }> {
    return this.call('RuntimeService', 'ContainerStatus', { containerId, verbose });
  }

  async reopenContainerLog(containerId: string): Promise<void> {
    await this.call('RuntimeService', 'ReopenContainerLog', { containerId });
  }

  /** timeoutSeconds: 0 = none; the call's deadline allows for it. */
  execSync(containerId: string, cmd: string[], timeoutSeconds = 0): Promise<{ stdout: Buffer; stderr: Buffer; exitCode: number }> {
    return this.call('RuntimeService', 'ExecSync', { containerId, cmd, timeout: timeoutSeconds }, { deadlineMs: this.deadlineMs + timeoutSeconds * 1000 });
  }

  /** A one-time stream server URL for the exec (see lib/cri-stream.ts). */
  async exec(r: { containerId: string; cmd: string[]; tty?: boolean; stdin?: boolean; stdout?: boolean; stderr?: boolean }): Promise<string> {
    return (await this.call<{ url: string }>('RuntimeService', 'Exec', r)).url;
  }

  async attach(r: { containerId: string; stdin?: boolean; tty?: boolean; stdout?: boolean; stderr?: boolean }): Promise<string> {
    return (await this.call<{ url: string }>('RuntimeService', 'Attach', r)).url;
  }

  async portForward(podSandboxId: string, port: number[]): Promise<string> {
    return (await this.call<{ url: string }>('RuntimeService', 'PortForward', { podSandboxId, port })).url;
  }

  async containerStats(containerId: string): Promise<ContainerStats> {
    return (await this.call<{ stats: ContainerStats }>('RuntimeService', 'ContainerStats', { containerId })).stats;
  }

  async listContainerStats(filter: { id?: string; podSandboxId?: string; labelSelector?: KV } = {}): Promise<ContainerStats[]> {
    return (await this.call<{ stats: ContainerStats[] }>('RuntimeService', 'ListContainerStats', { filter })).stats;
  }

  // ---- ImageService ----

  async listImages(image?: string): Promise<Image[]> {
    return (await this.call<{ images: Image[] }>('ImageService', 'ListImages', image ? { filter: { image: { image } } } : {})).images;
  }

  /** null when CRI does not have the image. */
  async imageStatus(image: string): Promise<Image | null> {
    return (await this.call<{ image: Image | null }>('ImageService', 'ImageStatus', { image: { image } })).image;
  }
}
