import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import { isMolorecError } from "./errors.js";
import { loadPack, type ModelPack } from "./pack.js";
import { adapterSetKey, type Prepared, prepareRequest, type RequestEnv, recommendMany } from "./recommend-requests.js";
import { DEFAULT_REQUEST_LIMITS } from "./request.js";
import type { ScoreResult } from "./scoring-job.js";

// The fixture pack's manifest and tokenizer; scores come from a stand-in (no model is run).
const fixture = fileURLToPath(new URL("../../../test/fixtures/tiny-pack", import.meta.url));
let env: RequestEnv;
beforeAll(async () => {
  const pack: ModelPack = await loadPack({ location: fixture, readBytes: async (p) => new Uint8Array(await readFile(join(fixture, p))) });
  env = { pack, limits: DEFAULT_REQUEST_LIMITS, adaptiveLambdas: [0, 0.5, 1], entropyObjective: "candidates" };
});

/** Candidate c scores −c under every mixture but row `sure`, where candidate 1 is a sure pick. */
const fakeResult = (p: Prepared, sure = -1): ScoreResult => ({
  scores: p.job.mixtures.map((_, m) => p.job.candidateIds.map((_, c) => (m === sure ? (c === 1 ? 50 : -50) : -c))),
  tokenLogProbs: [],
  runs: 1,
});

describe("prepareRequest", () => {
  it("answers from the row the policy chooses: adaptive takes the least entropy, with its λ", () => {
    const p = prepareRequest(env, { history: ["a"], candidates: ["x", "y", "z"], mixture: "adaptive", topK: 2 });
    expect(p.needsObjective).toBe(true);
    expect(p.job.mixtures).toHaveLength(3);
    const res = p.finish(fakeResult(p, 2));
    expect(res.mixture).toEqual({ policy: "adaptive", lambda: 1, source: "adaptive" });
    expect(res.ranked.map((r) => r.index)).toEqual([1, 0]);
    expect(res.domain).toBe("movies");
  });

  it("answers a fixed policy from its one row", () => {
    const p = prepareRequest(env, { history: ["a"], candidates: ["x", "y"], mixture: { lambda: 0.2 } });
    expect(p.needsObjective).toBe(false);
    expect(p.finish(fakeResult(p)).mixture).toEqual({ policy: "lambda", lambda: 0.2, source: "request" });
  });
});

describe("recommendMany", () => {
  const bodies = [
    { history: ["a"], candidates: ["x", "y"], mixture: "domain" },
    { history: ["b"], candidates: ["x"], mixture: "general" },
    { history: [], candidates: ["x"] },
    { history: ["c"], candidates: ["y", "x"], mixture: { lambda: 1 } },
    { history: ["d"], candidates: ["z"], mixture: "base" },
  ];

  it("scores requests of one adapter set together and the rest alone, each with its own answer or error", async () => {
    const calls: string[] = [];
    const out = await recommendMany(env, bodies, {
      one: async (p) => {
        calls.push(`one:${adapterSetKey(p.job.mixtures)}`);
        return fakeResult(p);
      },
      many: async (ps) => {
        calls.push(`many:${ps.length}`);
        return ps.map((p) => fakeResult(p));
      },
    });
    expect(calls.sort()).toEqual(["many:2", "one:", "one:general"]);
    expect(out.map((o) => o.status)).toEqual(["fulfilled", "fulfilled", "rejected", "fulfilled", "fulfilled"]);
    const rejected = out[2] as PromiseRejectedResult;
    expect(isMolorecError(rejected.reason) && rejected.reason.code).toBe("EMPTY_HISTORY");
  });

  it("scores one by one without `many`, and a failed run fails only its own batch", async () => {
    const calls: number[] = [];
    const out = await recommendMany(env, bodies, {
      one: async (p) => {
        calls.push(p.job.candidateIds.length);
        if (p.job.mixtures[0]!.length === 0) throw new Error("run failed");
        return fakeResult(p);
      },
      many: null,
    });
    expect(calls).toHaveLength(4);
    expect(out.map((o) => o.status)).toEqual(["fulfilled", "fulfilled", "rejected", "fulfilled", "rejected"]);
    expect((out[4] as PromiseRejectedResult).reason.message).toBe("run failed");
  });
});

describe("adapterSetKey", () => {
  it("names the adapters a job's rows use, whatever their order, weights and zero-weight entries", () => {
    expect(
      adapterSetKey([
        [
          ["b", 0.5],
          ["a", 0.5],
        ],
        [["a", 1]],
        [],
      ]),
    ).toBe("a|b");
    expect(
      adapterSetKey([
        [
          ["a", 1],
          ["b", 0],
        ],
      ]),
    ).toBe("a");
    expect(adapterSetKey([[]])).toBe("");
  });
});
