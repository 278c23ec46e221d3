import { beforeAll, describe, expect, it } from "vitest";
import type { InferenceBackend } from "./backend.js";
import { checkFiniteScores } from "./finite-scores.js";
import { loadPack, memorySource, type ModelPack } from "./pack.js";
import { createRecommender, type Recommender } from "./recommender.js";
import { cpuBackend, fixtureFiles } from "./test-fixtures.js";

const request = {
  history: ["The Silent River (1994)", "Electric Garden (2001)"],
  candidates: ["Broken Mirror (1999)", "Wild Orchestra (2004)"],
};
const inherited = ["toString", "constructor", "__proto__", "hasOwnProperty", "valueOf"];

let pack: ModelPack;
let rec: Recommender;
beforeAll(async () => {
  pack = await loadPack(memorySource(fixtureFiles("tiny-pack"), "fixture"));
  rec = await createRecommender({ backend: cpuBackend, pack });
});

describe("names a request gives are looked up as the pack's own", () => {
  it.each(inherited)("domain %s is UNKNOWN_DOMAIN, whatever the mixture", async (domain) => {
    for (const mixture of ["calibrated", "domain", "general", "adaptive", { lambda: 0.5 }, "base"]) {
      await expect(rec.recommend({ ...request, domain, mixture })).rejects.toMatchObject({ code: "UNKNOWN_DOMAIN" });
    }
    const [batched] = await rec.recommendBatch([{ ...request, domain, mixture: "domain" }]);
    expect(batched).toMatchObject({ status: "rejected", reason: { code: "UNKNOWN_DOMAIN" } });
    expect(() => rec.resolveMixture(domain, "domain")).toThrow(expect.objectContaining({ code: "UNKNOWN_DOMAIN" }));
    await expect(rec.scoreLambdas({ ...request, domain, lambdas: [1] })).rejects.toMatchObject({ code: "UNKNOWN_DOMAIN" });
    await expect(rec.calibrate(domain, [request])).rejects.toMatchObject({ code: "UNKNOWN_DOMAIN" });
  });

  it("serves a pack whose domain and adapter are called __proto__ as it serves the same pack named normally", async () => {
    const files = fixtureFiles("tiny-pack");
    const text = new TextDecoder()
      .decode(files["molorec.json"])
      .replaceAll('"domain:movies"', '"__proto__"')
      .replaceAll('"movies"', '"__proto__"');
    files["molorec.json"] = new TextEncoder().encode(text);
    const renamed = await loadPack(memorySource(files, "renamed"));
    expect(Object.keys(renamed.manifest.domains)).toEqual(["__proto__"]);
    const r = await createRecommender({ backend: cpuBackend, pack: renamed });
    try {
      for (const mixture of ["domain", "wa", "adaptive"]) {
        const got = await r.recommend({ ...request, domain: "__proto__", mixture });
        const want = await rec.recommend({ ...request, domain: "movies", mixture });
        expect(got.ranked).toEqual(want.ranked);
        expect(got.domain).toBe("__proto__");
      }
    } finally {
      await r.close();
    }
  });
});

describe("non-finite scores", () => {
  it("are refused as INFERENCE_FAILED, not answered as null", async () => {
    let runs = 0;
    // Logits turn NaN after the start-up probe, as overflowing adapter weights would make them.
    const overflowing: InferenceBackend = {
      name: "overflowing",
      async createSession(model, options) {
        const s = await cpuBackend.createSession(model, options);
        return {
          ...s,
          async run(feeds, names) {
            const out = await s.run(feeds, names);
            if (runs++ > 0) (out.logits!.data as Float32Array).fill(Number.NaN);
            return out;
          },
        };
      },
    };
    const r = await createRecommender({ backend: overflowing, pack });
    try {
      await expect(r.recommend(request)).rejects.toMatchObject({ code: "INFERENCE_FAILED" });
    } finally {
      await r.close();
    }
    expect(() => checkFiniteScores([-1, Number.POSITIVE_INFINITY])).toThrow(expect.objectContaining({ details: { candidate: 1 } }));
    expect(() => checkFiniteScores([-1, -2])).not.toThrow();
  });
});
