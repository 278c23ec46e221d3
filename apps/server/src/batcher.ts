import { MolorecError, type RecommendResponse } from "@molorec/core";

/** Why the batcher refused a request. */
export type RejectReason = "queue_full" | "timeout" | "shutting_down";

/** Options of {@link RequestBatcher}. */
export interface BatcherOptions {
  /** Most requests scored in one batch. 1 turns batching off (one request per model pass). */
  maxBatch: number;
  /**
   * How long the first request of a batch may wait for others when the model is idle. It waits
   * only while requests arrive faster than that (the recent mean gap between arrivals is shorter),
   * so a lone client never pays the wait.
   */
  maxWaitMs: number;
  /** Most requests waiting for a batch; one more is refused with 503 + Retry-After. */
  maxQueue: number;
  /** A request not answered this long after it was queued is refused with 503 (0 = never). */
  timeoutMs: number;
  /** Scores a batch: answer `i` for body `i` (core's `Recommender.recommendBatch`). */
  run(bodies: unknown[]): Promise<Array<PromiseSettledResult<RecommendResponse>>>;
  onBatch?(size: number, seconds: number): void;
  onQueueWait?(seconds: number): void;
  onReject?(reason: RejectReason): void;
}

interface Item {
  body: unknown;
  queuedAt: number;
  settled: boolean;
  timer: ReturnType<typeof setTimeout> | null;
  resolve(value: RecommendResponse): void;
  reject(error: unknown): void;
}

/**
 * Collects concurrent requests into batches for one recommender: a batch starts when `maxBatch`
 * requests are waiting, or `maxWaitMs` after the first one arrived at an idle model (at once when
 * requests have been arriving further apart than that), or as soon as the previous batch ends (its
 * waiting requests have waited long enough). One batch runs at a time,
 * so requests that arrive during a batch form the next one. The queue is bounded: past `maxQueue`
 * waiting requests, `submit` rejects at once with `BACKEND_UNAVAILABLE` (HTTP 503) and a
 * `retryAfterSeconds` detail (the HTTP layer's `Retry-After`), never growing memory.
 */
export class RequestBatcher {
  private readonly queue: Item[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  private running = 0;
  private closed = false;
  private idleWaiters: Array<() => void> = [];
  /** Moving average of batch seconds, for Retry-After. */
  private batchSeconds = 0.05;
  /** Moving average of the gap between arrivals (ms), each gap capped at 10 × maxWaitMs. */
  private arrivalGapMs = 0;
  private lastArrival = -1;

  constructor(private readonly options: BatcherOptions) {
    if (!(options.maxBatch >= 1 && options.maxQueue >= 0 && options.maxWaitMs >= 0))
      throw new RangeError("maxBatch ≥ 1, maxQueue ≥ 0, maxWaitMs ≥ 0");
  }

  /** Requests waiting for a batch. */
  get depth(): number {
    return this.queue.length;
  }

  /** Requests in the batch being scored now. */
  get inFlight(): number {
    return this.running;
  }

  /** Seconds a client should wait before retrying when the queue is full. */
  retryAfterSeconds(): number {
    const batchesAhead = Math.ceil((this.queue.length + 1) / this.options.maxBatch) + 1;
    return Math.max(1, Math.ceil(batchesAhead * this.batchSeconds));
  }

  /** Queues a request body; resolves with its response or rejects with its coded error. */
  submit(body: unknown): Promise<RecommendResponse> {
    if (this.closed) return Promise.reject(this.refuse("shutting_down", "the server is shutting down; retry on another replica."));
    if (this.queue.length >= this.options.maxQueue) {
      return Promise.reject(
        this.refuse(
          "queue_full",
          `the server is busy: ${this.queue.length} requests are waiting (the limit is ${this.options.maxQueue}); retry after the Retry-After delay.`,
        ),
      );
    }
    const now = performance.now();
    if (this.lastArrival >= 0)
      this.arrivalGapMs = 0.8 * this.arrivalGapMs + 0.2 * Math.min(now - this.lastArrival, 10 * this.options.maxWaitMs);
    this.lastArrival = now;
    return new Promise<RecommendResponse>((resolve, reject) => {
      const item: Item = { body, queuedAt: now, settled: false, timer: null, resolve, reject };
      if (this.options.timeoutMs > 0) {
        item.timer = setTimeout(() => this.expire(item), this.options.timeoutMs);
      }
      this.queue.push(item);
      this.schedule();
    });
  }

  /** Stops accepting requests and resolves once every queued and running request is answered. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.queue.length > 0 && this.running === 0) void this.dispatch();
    if (this.queue.length === 0 && this.running === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  private refuse(reason: RejectReason, message: string): MolorecError {
    this.options.onReject?.(reason);
    return new MolorecError("BACKEND_UNAVAILABLE", message, {
      details: { reason, queueDepth: this.queue.length, maxQueue: this.options.maxQueue, retryAfterSeconds: this.retryAfterSeconds() },
    });
  }

  private expire(item: Item): void {
    if (item.settled) return;
    const at = this.queue.indexOf(item);
    if (at >= 0) this.queue.splice(at, 1);
    this.settle(item, () =>
      item.reject(
        this.refuse(
          "timeout",
          `the request was not answered within ${this.options.timeoutMs} ms (${at >= 0 ? "still queued" : "its batch is still running"}); retry later.`,
        ),
      ),
    );
    this.notifyIdle();
  }

  private settle(item: Item, f: () => void): void {
    if (item.settled) return;
    item.settled = true;
    if (item.timer) clearTimeout(item.timer);
    f();
  }

  private schedule(): void {
    if (this.running > 0) return; // the running batch's end dispatches the next one
    const moreExpected = this.arrivalGapMs < this.options.maxWaitMs;
    if (this.queue.length >= this.options.maxBatch || !moreExpected || this.closed) {
      void this.dispatch();
    } else if (!this.timer) {
      this.timer = setTimeout(() => void this.dispatch(), this.options.maxWaitMs);
    }
  }

  private async dispatch(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.running > 0 || this.queue.length === 0) return;
    const batch = this.queue.splice(0, this.options.maxBatch);
    this.running = batch.length;
    const started = performance.now();
    for (const item of batch) this.options.onQueueWait?.((started - item.queuedAt) / 1000);
    try {
      const results = await this.options.run(batch.map((i) => i.body));
      batch.forEach((item, i) => {
        const r = results[i];
        if (!r) this.settle(item, () => item.reject(new Error(`the batch answered ${results.length} of ${batch.length} requests`)));
        else if (r.status === "fulfilled") this.settle(item, () => item.resolve(r.value));
        else this.settle(item, () => item.reject(r.reason));
      });
    } catch (error) {
      for (const item of batch) this.settle(item, () => item.reject(error));
    } finally {
      const seconds = (performance.now() - started) / 1000;
      this.batchSeconds = 0.8 * this.batchSeconds + 0.2 * seconds;
      this.options.onBatch?.(batch.length, seconds);
      this.running = 0;
    }
    if (this.queue.length > 0) void this.dispatch();
    else this.notifyIdle();
  }

  private notifyIdle(): void {
    if (this.queue.length > 0 || this.running > 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
