import { describe, expect, it } from "vitest";
import { adaptOrtSession, checkFeeds, ortModelOptions, type OrtSessionLike, type OrtTensorConstructor } from "./ort-session.js";
import { tensor } from "./tensor.js";

class FakeTensor {
  constructor(
    readonly type: string,
    readonly data: Float32Array,
    readonly dims: readonly number[],
  ) {}
}

/** A session whose runs take `delay` ms each and record when they start and end. */
function fakeSession(events: string[], delay = 5): OrtSessionLike {
  let n = 0;
  return {
    inputNames: ["x", "y"],
    outputNames: ["z"],
    async run(feeds: Record<string, unknown>) {
      const id = n++;
      events.push(`start ${id}`);
      await new Promise((r) => setTimeout(r, delay));
      events.push(`end ${id}`);
      return { z: feeds.x };
    },
    async release() {},
  } as OrtSessionLike;
}

const feeds = () => ({ x: tensor("float32", new Float32Array([1]), [1]), y: tensor("float32", new Float32Array([2]), [1]) });

describe("checkFeeds", () => {
  it("names inputs that are not fed and feeds that are not inputs", () => {
    expect(() => checkFeeds(["x", "y"], feeds())).not.toThrow();
    expect(() => checkFeeds(["x", "w"], feeds())).toThrow(
      expect.objectContaining({ code: "INFERENCE_FAILED", details: { missing: ["w"], unknown: ["y"] } }),
    );
  });

  it("refuses zero-sized tensors only where the session cannot take them", () => {
    const empty = { ...feeds(), y: tensor("float32", new Float32Array(0), [1, 0]) };
    expect(() => checkFeeds(["x", "y"], empty)).not.toThrow();
    expect(() => checkFeeds(["x", "y"], empty, false)).toThrow(/zero-sized tensor y \[1, 0\]/);
  });
});

describe("adaptOrtSession", () => {
  it("checks feeds before the runtime sees them, and converts them to its tensors", async () => {
    const events: string[] = [];
    const s = adaptOrtSession(fakeSession(events), FakeTensor as unknown as OrtTensorConstructor, { acceptsEmptyTensors: false });
    expect(s.acceptsEmptyTensors).toBe(false);
    const out = await s.run(feeds());
    expect(out.z).toBeInstanceOf(FakeTensor);
    await expect(s.run({ x: feeds().x })).rejects.toMatchObject({ code: "INFERENCE_FAILED" });
    expect(events).toEqual(["start 0", "end 0"]);
  });

  it("runs one at a time when asked to serialize, and keeps going after a failed run", async () => {
    const events: string[] = [];
    const s = adaptOrtSession(fakeSession(events), FakeTensor as unknown as OrtTensorConstructor, { serialize: true });
    const bad = s.run({ x: feeds().x });
    await Promise.all([s.run(feeds()), bad.catch(() => null), s.run(feeds())]);
    expect(events).toEqual(["start 0", "end 0", "start 1", "end 1"]);
    const free: string[] = [];
    const t = adaptOrtSession(fakeSession(free), FakeTensor as unknown as OrtTensorConstructor);
    await Promise.all([t.run(feeds()), t.run(feeds())]);
    expect(free.slice(0, 2)).toEqual(["start 0", "start 1"]); // unserialized runs overlap
  });
});

describe("ortModelOptions", () => {
  it("passes external data by name, and nothing when there is none", () => {
    const data = new Uint8Array([1, 2]);
    expect(ortModelOptions({ externalData: [{ path: "model.data", data }] })).toEqual({ externalData: [{ path: "model.data", data }] });
    expect(ortModelOptions({ externalData: [] })).toEqual({});
    expect(ortModelOptions(undefined)).toEqual({});
  });
});
