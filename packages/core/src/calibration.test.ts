import { describe, expect, it } from "vitest";
import { type CalibrationProgress, calibrateLambda, type MixtureScorer } from "./calibration.js";
import { isMolorecError, MolorecError } from "./errors.js";
import type { AdapterWeights } from "./lora-mixture.js";
import type { EntropyObjective } from "./objectives.js";
import type { MixturePolicy } from "./policies.js";

/**
 * A scorer without a model: a mixture's weights carry its λ, a history's first title its offset.
 * Each request's entropy objective is (λ − offset)²; each candidate's score is λ times its index
 * when the history is "up", minus that when "down".
 */
function fakeScorer(log: string[] = []): MixtureScorer {
  const lambdaOf = (w: AdapterWeights) => w.find(([name]) => name === "domain")?.[1] ?? 0;
  return {
    entropyObjective: "tokens",
    resolveMixture(domain: string | null, policy: MixturePolicy) {
      if (domain !== "movies") throw new MolorecError("UNKNOWN_DOMAIN", `no ${domain}`);
      const lambda = typeof policy === "object" ? policy.lambda : 0;
      return { weights: [["domain", lambda]], lambda, source: "request" };
    },
    async scoreMixtures({ history, candidates, mixtures }) {
      const sign = history[0] === "down" ? -1 : 1;
      return mixtures.map((w) => candidates.map((_, c) => sign * lambdaOf(w) * c));
    },
    async scoreWithEntropy({ history, mixtures }, objective?: EntropyObjective) {
      log.push(objective ?? "default");
      return { scores: [], objective: mixtures.map((w) => (lambdaOf(w) - Number(history[0])) ** 2) };
    },
  };
}

const code = (p: Promise<unknown>) =>
  p.then(
    () => "ok",
    (e: unknown) => (isMolorecError(e) ? e.code : String(e)),
  );

describe("calibrateLambda", () => {
  it("minimises the mean entropy objective over the requests, in the kind asked for", async () => {
    const log: string[] = [];
    const requests = [0.2, 0.4].map((x) => ({ history: [String(x)], candidates: ["a", "b"] }));
    const res = await calibrateLambda(fakeScorer(log), "movies", requests, { objective: "answer" });
    expect(res.lambda).toBeCloseTo(0.3, 2);
    expect(res.objectiveKind).toBe("answer");
    for (const e of res.evaluated) expect(e.objective).toBeCloseTo(((e.lambda - 0.2) ** 2 + (e.lambda - 0.4) ** 2) / 2, 12);
    expect(new Set(log)).toEqual(new Set(["answer"]));
    await calibrateLambda(fakeScorer(log), "movies", requests, { gridPoints: 3, refineRounds: 0 });
    expect(log.at(-1)).toBe("tokens"); // the scorer's own objective by default
  });

  it("maximises the history–pick information on shared candidates", async () => {
    // Round-robin groups of 2 pair an up and a down history, which pick opposite ends more surely
    // as λ grows: λ = 1 carries the most information.
    const requests = ["up", "up", "down", "down"].map((h) => ({ history: [h], candidates: ["a", "b", "c"] }));
    const res = await calibrateLambda(fakeScorer(), "movies", requests, {
      objective: "information",
      groupSize: 2,
      gridPoints: 3,
      refineRounds: 0,
    });
    expect(res.evaluated.map((e) => e.lambda)).toEqual([0, 0.5, 1]);
    expect(res.evaluated[0]!.objective).toBeCloseTo(0, 12);
    expect(res.evaluated[2]!.objective).toBeLessThan(res.evaluated[1]!.objective);
    expect(res.lambda).toBe(1);
  });

  it("reports progress after every request, batch by batch, ending with every λ it evaluated", async () => {
    const requests = [0.2, 0.4, 0.6].map((x) => ({ history: [String(x)], candidates: ["a", "b"] }));
    const seen: CalibrationProgress[] = [];
    const res = await calibrateLambda(fakeScorer(), "movies", requests, {
      gridPoints: 5,
      refineRounds: 1,
      refinePoints: 5,
      onProgress: (p) => seen.push(p),
    });
    // The grid (5 λ), then one refinement around the best: 5 points, 2 of them new.
    expect(seen.map((p) => `${p.scored}/${p.requests}@${p.lambdas}`)).toEqual(["1/3@5", "2/3@5", "3/3@5", "1/3@2", "2/3@2", "3/3@2"]);
    expect(seen.map((p) => p.lambdasDone)).toEqual([0, 0, 5, 5, 5, 7]);
    expect(seen.at(-1)!.lambdasDone).toBe(res.evaluated.length);
    const groups: CalibrationProgress[] = [];
    const info = ["up", "up", "down", "down"].map((h) => ({ history: [h], candidates: ["a", "b", "c"] }));
    await calibrateLambda(fakeScorer(), "movies", info, {
      objective: "information",
      groupSize: 2,
      gridPoints: 3,
      refineRounds: 0,
      onProgress: (p) => groups.push(p),
    });
    expect(groups.map((p) => `${p.scored}/${p.requests}:${p.lambdasDone}`)).toEqual(["2/4:0", "4/4:3"]);
  });

  it("refuses a calibration it cannot run, domain first", async () => {
    const requests = [{ history: ["0"], candidates: ["a", "b"] }];
    expect(await code(calibrateLambda(fakeScorer(), "books", requests, { objective: "perplexity" as never }))).toBe("UNKNOWN_DOMAIN");
    expect(await code(calibrateLambda(fakeScorer(), "movies", requests, { objective: "perplexity" as never }))).toBe("INVALID_REQUEST");
    expect(await code(calibrateLambda(fakeScorer(), "movies", []))).toBe("INVALID_REQUEST");
    expect(await code(calibrateLambda(fakeScorer(), "movies", requests, { objective: "information" }))).toBe("INVALID_REQUEST");
  });
});
