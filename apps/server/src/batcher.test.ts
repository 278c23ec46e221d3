import type { RecommendResponse } from "@molorec/core";
import { afterEach, describe, expect, it, vi } from "vitest";
import { RequestBatcher, type BatcherOptions } from "./batcher.js";

const response = (body: unknown) => ({ domain: String(body) }) as unknown as RecommendResponse;

function batcher(over: Partial<BatcherOptions> = {}) {
  const batches: unknown[][] = [];
  const rejected: string[] = [];
  let gate: Promise<void> = Promise.resolve();
  let open = () => {};
  const b = new RequestBatcher({
    maxBatch: 4,
    maxWaitMs: 10,
    maxQueue: 8,
    timeoutMs: 0,
    async run(bodies) {
      batches.push(bodies);
      await gate;
      return bodies.map((x) =>
        x === "bad" ? { status: "rejected", reason: new Error("bad") } : { status: "fulfilled", value: response(x) },
      );
    },
    onReject: (r) => rejected.push(r),
    ...over,
  });
  return {
    b,
    batches,
    rejected,
    hold() {
      gate = new Promise((r) => (open = r));
    },
    release: () => open(),
  };
}

afterEach(() => vi.useRealTimers());

describe("RequestBatcher", () => {
  it("batches requests that arrive together, up to maxBatch, and answers each its own", async () => {
    const t = batcher();
    const answers = await Promise.allSettled(["a", "b", "bad", "c", "d", "e"].map((x) => t.b.submit(x)));
    expect(t.batches).toEqual([
      ["a", "b", "bad", "c"],
      ["d", "e"],
    ]);
    expect(answers.map((a) => (a.status === "fulfilled" ? a.value.domain : "error"))).toEqual(["a", "b", "error", "c", "d", "e"]);
  });

  it("waits at most maxWaitMs for a batch to fill while requests arrive close together", async () => {
    vi.useFakeTimers();
    const t = batcher({ maxWaitMs: 50 });
    const p = t.b.submit("a");
    await vi.advanceTimersByTimeAsync(49);
    expect(t.batches).toEqual([]);
    const q = t.b.submit("b");
    await vi.advanceTimersByTimeAsync(1);
    expect(t.batches).toEqual([["a", "b"]]);
    await expect(Promise.all([p, q])).resolves.toHaveLength(2);
  });

  it("does not wait when requests arrive further apart than maxWaitMs (a lone client)", async () => {
    vi.useFakeTimers();
    const t = batcher({ maxWaitMs: 10 });
    for (let i = 0; i < 12; i++) {
      const p = t.b.submit(`r${i}`);
      await vi.advanceTimersByTimeAsync(0);
      if (i >= 3) expect(t.batches.length).toBe(i + 1); // dispatched at once, not after 10 ms
      await vi.advanceTimersByTimeAsync(30);
      await p;
    }
    expect(t.batches.every((b) => b.length === 1)).toBe(true);
  });

  it("runs one request per pass with maxBatch 1, without waiting", async () => {
    const t = batcher({ maxBatch: 1, maxWaitMs: 1000 });
    await Promise.all(["a", "b", "c"].map((x) => t.b.submit(x)));
    expect(t.batches).toEqual([["a"], ["b"], ["c"]]);
  });

  it("refuses past maxQueue with a 503 code and Retry-After, and only then", async () => {
    const t = batcher({ maxBatch: 1, maxQueue: 2, maxWaitMs: 0 });
    t.hold();
    const running = t.b.submit("running");
    await Promise.resolve();
    expect(t.b.inFlight).toBe(1);
    const queued = [t.b.submit("q1"), t.b.submit("q2")];
    expect(t.b.depth).toBe(2);
    const err = await t.b.submit("q3").catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "BACKEND_UNAVAILABLE", details: { reason: "queue_full", queueDepth: 2, maxQueue: 2 } });
    expect((err as { details: { retryAfterSeconds: number } }).details.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(t.rejected).toEqual(["queue_full"]);
    t.release();
    await expect(Promise.all([running, ...queued])).resolves.toHaveLength(3);
    await expect(t.b.submit("after")).resolves.toMatchObject({ domain: "after" });
  });

  it("refuses a request not answered within timeoutMs, and drops it from the queue", async () => {
    const t = batcher({ maxBatch: 1, maxWaitMs: 0, timeoutMs: 30 });
    t.hold();
    const first = t.b.submit("slow").catch((e: unknown) => e);
    const second = t.b.submit("queued").catch((e: unknown) => e);
    expect(await second).toMatchObject({ code: "BACKEND_UNAVAILABLE", details: { reason: "timeout" } });
    expect(await first).toMatchObject({ details: { reason: "timeout" } });
    expect(t.b.depth).toBe(0);
    t.release();
    await new Promise((r) => setTimeout(r, 5));
    expect(t.batches).toEqual([["slow"]]); // the expired request never reached the model
  });

  it("close() answers everything queued, then refuses new requests", async () => {
    const t = batcher({ maxBatch: 2, maxWaitMs: 1000 });
    t.hold();
    const pending = ["a", "b", "c"].map((x) => t.b.submit(x));
    const closed = t.b.close();
    await expect(t.b.submit("late")).rejects.toMatchObject({ details: { reason: "shutting_down" } });
    t.release();
    await closed;
    await expect(Promise.all(pending)).resolves.toHaveLength(3);
    expect(t.b.depth + t.b.inFlight).toBe(0);
  });
});
