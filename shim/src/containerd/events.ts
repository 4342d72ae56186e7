// EventPublisher: sends task events to containerd the way its shim libraries do, as ttrpc
// calls of containerd.services.events.ttrpc.v1.Events/Forward on $TTRPC_ADDRESS. Events go out
// strictly in order from one queue; a failed send is retried (up to 5 more times, waiting
// 1 s x attempt, reconnecting when the connection closed) before the event is dropped and
// logged. publish() never rejects: the returned promise tells whether the event was delivered.
import type { Logger } from '../util/log.js';
import { NAMESPACE_KEY_TTRPC } from '../rpc/service.js';
import { TtrpcClient } from '../ttrpc/client.js';
import { EVENTS_PACKAGE, EVENTS_SERVICE, encodeMessage, messageType, packAny, timestampNow } from './protos.js';

export interface EventPublisherOptions {
  /** containerd's ttrpc socket path ($TTRPC_ADDRESS, no "unix://"). */
  address: string;
  /** containerd namespace of the events (Envelope.namespace and call metadata). */
  namespace: string;
  logger?: Logger;
  /** Retries after the first failed attempt (default 5). */
  maxRetries?: number;
  /** Wait before retry n is n x this (default 1000 ms). */
  retryDelayMs?: number;
  /** Timeout of one Forward call and of connecting (default 10 s). */
  callTimeoutMs?: number;
}

const FORWARD_REQUEST_TYPE = 'containerd.services.events.ttrpc.v1.ForwardRequest';

interface QueuedEvent {
  topic: string;
  typeName: string;
  request: Uint8Array;
  done: (delivered: boolean) => void;
}

export class EventPublisher {
  private readonly queue: QueuedEvent[] = [];
  private client?: TtrpcClient;
  private running = false;
  private closed = false;
  private idle: Array<() => void> = [];
  /** Interrupts a retry wait when the publisher is closed. */
  private readonly stop = new AbortController();
  private readonly maxRetries: number;
  private readonly retryDelayMs: number;
  private readonly callTimeoutMs: number;

  constructor(private readonly options: EventPublisherOptions) {
    this.maxRetries = options.maxRetries ?? 5;
    this.retryDelayMs = options.retryDelayMs ?? 1000;
    this.callTimeoutMs = options.callTimeoutMs ?? 10_000;
  }

  /**
   * Queues an event. `typeName` is the message's full name ("containerd.events.TaskExit") or
   * its name in containerd.events ("TaskExit"); `message` is a plain object of that type
   * (camelCase fields, Dates allowed for Timestamps). Throws at once for an unknown type or a
   * topic not starting with "/"; otherwise resolves true once delivered, false if dropped.
   */
  publish(topic: string, typeName: string, message: object): Promise<boolean> {
    if (!topic.startsWith('/')) throw new Error(`event topic ${JSON.stringify(topic)} must start with "/"`);
    const fullName = typeName.includes('.') ? typeName : `${EVENTS_PACKAGE}.${typeName}`;
    messageType(fullName); // throws naming an unknown type
    const request = encodeMessage(FORWARD_REQUEST_TYPE, {
      envelope: {
        timestamp: timestampNow(),
        namespace: this.options.namespace,
        topic,
        event: packAny(fullName, message),
      },
    });
    if (this.closed) {
      this.options.logger?.warn('event dropped: publisher closed', { topic });
      return Promise.resolve(false);
    }
    return new Promise((done) => {
      this.queue.push({ topic, typeName: fullName, request, done });
      void this.run();
    });
  }

  /** Resolves when every event published so far has been delivered or dropped. */
  flush(): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  /**
   * Stops accepting events, waits up to `timeoutMs` (default 5 s) for the queue to drain, drops
   * what is left and closes the connection.
   */
  async close(options: { timeoutMs?: number } = {}): Promise<void> {
    this.closed = true;
    const timeoutMs = options.timeoutMs ?? 5000;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.flush(), new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
    this.stop.abort();
    for (const event of this.queue.splice(0)) {
      this.options.logger?.error('event dropped: publisher closed before it was delivered', { topic: event.topic, type: event.typeName });
      event.done(false);
    }
    await this.client?.close();
    this.client = undefined;
  }

  private async run(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.queue.length) {
        const event = this.queue[0];
        const delivered = await this.deliver(event);
        // close() may have emptied the queue (and settled the event) meanwhile.
        if (this.queue[0] === event) {
          this.queue.shift();
          event.done(delivered);
        }
      }
    } finally {
      this.running = false;
      for (const resolve of this.idle.splice(0)) resolve();
    }
  }

  private async deliver(event: QueuedEvent): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      try {
        const client = await this.connection();
        await client.call(EVENTS_SERVICE, 'Forward', event.request, {
          metadata: { [NAMESPACE_KEY_TTRPC]: this.options.namespace },
          timeoutMs: this.callTimeoutMs,
        });
        return true;
      } catch (err) {
        const message = (err as Error).message;
        if (this.client?.isClosed) this.client = undefined;
        if (attempt >= this.maxRetries || this.stop.signal.aborted) {
          this.options.logger?.error('event dropped: cannot forward it to containerd', {
            topic: event.topic,
            type: event.typeName,
            attempts: attempt + 1,
            error: message,
          });
          return false;
        }
        this.options.logger?.warn('forwarding an event failed; retrying', { topic: event.topic, attempt: attempt + 1, error: message });
        await this.sleep((attempt + 1) * this.retryDelayMs);
      }
    }
  }

  private async connection(): Promise<TtrpcClient> {
    if (this.stop.signal.aborted) throw new Error('event publisher closed');
    if (!this.client || this.client.isClosed) {
      this.client = undefined;
      this.client = await TtrpcClient.connect(this.options.address, { timeoutMs: this.callTimeoutMs });
    }
    return this.client;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const signal = this.stop.signal;
      function done() {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      }
      signal.addEventListener('abort', done, { once: true });
    });
  }
}
