/**
 * The cross-runtime conformance suite. Every runtime (Node, workerd, Chromium WASM/WebGPU)
 * runs these same tests against the fixture pack and its golden scores, which were computed
 * by transformers + PEFT (training/molorec_train/fixture.py).
 */
import { describe, expect, it } from "vitest";
import { createRecommender, isMolorecError, type InferenceBackend, type ModelPack, type Recommender } from "@molorec/core";
import { buildCandidate, buildPrompt, entropy, LoraMixer, scoreCandidates, softmax } from "@molorec/core/internal";
import golden from "../fixtures/tiny-pack.golden.json" with { type: "json" };

/** What a runtime supplies to the suite. */
export interface RuntimeUnderTest {
  name: string;
  backend: () => InferenceBackend;
  /** Loads test/fixtures/tiny-pack (or another fixture pack, with its `golden`). */
  loadFixturePack: () => Promise<ModelPack>;
  /** The golden scores of that pack (default test/fixtures/tiny-pack.golden.json). */
  golden?: { cases: unknown[] };
}

interface GoldenCase {
  request: { history: string[]; candidates: string[]; domain: string; mixture: unknown };
  lambda: number | null;
  promptIds: number[];
  candidateIds: number[][];
  scores: number[];
  tokenEntropies: number[];
  ranking: number[];
}

/** Golden tolerance: relative error ≤ 1e-4 (absolute below |score| = 1). */
export function expectClose(got: readonly number[], want: readonly number[], tol = 1e-4): void {
  expect(got.length).toBe(want.length);
  got.forEach((g, i) => {
    const w = want[i]!;
    if (Math.abs(g - w) > tol * Math.max(1, Math.abs(w))) {
      throw new Error(`score ${i}: got ${g}, want ${w} (|diff| ${Math.abs(g - w).toExponential(2)})`);
    }
  });
}

export function conformanceSuite(rt: RuntimeUnderTest): void {
  const cases = (rt.golden ?? golden).cases as GoldenCase[];
  describe(`conformance: ${rt.name}`, () => {
    let pack: ModelPack;
    let rec: Recommender;
    const ready = (async () => {
      pack = await rt.loadFixturePack();
      rec = await createRecommender({ backend: rt.backend(), pack });
    })();

    it("tokenizes prompts and candidates exactly as the Python reference", async () => {
      await ready;
      for (const c of cases) {
        expect(buildPrompt(pack.encoder, pack.manifest.prompt, c.request.history).ids).toEqual(c.promptIds);
        expect(c.request.candidates.map((t) => buildCandidate(pack.encoder, pack.manifest.prompt, t))).toEqual(c.candidateIds);
      }
    });

    it("reproduces the golden candidate scores of transformers + PEFT (≤ 1e-4)", async () => {
      await ready;
      for (const c of cases) {
        const res = await rec.recommend(c.request);
        const byIndex = new Array<number>(c.scores.length);
        for (const r of res.ranked) byIndex[r.index] = r.score;
        expectClose(byIndex, c.scores);
        expect(res.ranked.map((r) => r.index)).toEqual(c.ranking);
        expect(res.entropy).toBeCloseTo(entropy(softmax(c.scores)), 4);
      }
    });

    it("scores with the shared-prefix KV cache exactly as one full pass per candidate", async () => {
      await ready;
      const mixer = new LoraMixer(pack);
      const c = cases[0]!;
      const job = {
        promptIds: c.promptIds,
        candidateIds: c.candidateIds,
        mixtures: [
          [
            ["general", 0.4],
            ["domain:movies", 0.6],
          ] as const,
          [],
        ],
      };
      const session = await rt.backend().createSession(pack.model);
      const prefix = await scoreCandidates(session, pack, mixer, job);
      const naive = await scoreCandidates(session, pack, mixer, job, { strategy: "naive" });
      expect(prefix.runs).toBe(2); // the prompt once, then one batch of all suffixes
      expect(naive.runs).toBe(2 * c.candidateIds.length);
      prefix.scores.forEach((row, m) => expectClose(row, naive.scores[m]!, 1e-5));
      const chunked = await scoreCandidates(session, pack, mixer, job, { maxBatchRows: 3 });
      chunked.scores.forEach((row, m) => expectClose(row, prefix.scores[m]!, 1e-5));
      await session.release();
    });

    it("scores identically when the session cannot take zero-sized tensors (masked 1-token past)", async () => {
      await ready;
      const inner = rt.backend();
      const noEmpty: InferenceBackend = {
        name: `${inner.name} without zero-sized tensors`,
        async createSession(model, options) {
          const s = await inner.createSession(model, options);
          return {
            inputNames: s.inputNames,
            outputNames: s.outputNames,
            acceptsEmptyTensors: false,
            run(feeds, names) {
              for (const [name, t] of Object.entries(feeds))
                if (t.data.length === 0) throw new Error(`zero-sized tensor fed: ${name} [${t.dims}]`);
              return s.run(feeds, names);
            },
            release: () => s.release(),
          };
        },
      };
      for (const strategy of ["prefix", "naive"] as const) {
        const guarded = await createRecommender({ backend: noEmpty, pack, strategy });
        for (const c of cases.slice(0, strategy === "naive" ? 2 : cases.length)) {
          const res = await guarded.recommend(c.request);
          const byIndex = new Array<number>(c.scores.length);
          for (const r of res.ranked) byIndex[r.index] = r.score;
          expectClose(byIndex, c.scores);
        }
        await guarded.close();
      }
    });

    it("gives each batch row its own mixture, equal to separately merged runs", async () => {
      await ready;
      const byRequest = new Map<string, GoldenCase[]>();
      for (const c of cases)
        if (c.lambda !== null) byRequest.set(c.request.history.join("|"), [...(byRequest.get(c.request.history.join("|")) ?? []), c]);
      for (const group of byRequest.values()) {
        const lambdas = group.map((g) => g.lambda!);
        const { scores } = await rec.scoreLambdas({ ...group[0]!.request, lambdas });
        scores.forEach((row, i) => expectClose(row, group[i]!.scores));
      }
    });

    it("reproduces the golden token entropies along each candidate (the `tokens` objective, ≤ 1e-4)", async () => {
      await ready;
      const mixer = new LoraMixer(pack);
      const session = await rt.backend().createSession(pack.model);
      for (const c of cases) {
        const weights = rec.resolveMixture(c.request.domain, c.lambda === null ? "base" : { lambda: c.lambda }).weights;
        const job = { promptIds: c.promptIds, candidateIds: c.candidateIds, mixtures: [weights] };
        const res = await scoreCandidates(session, pack, mixer, job, { tokenEntropy: true });
        expectClose(res.tokenEntropies![0]!, c.tokenEntropies);
        expectClose(res.scores[0]!, c.scores);
      }
      await session.release();
    });

    it("the `answer` objective is the golden token entropy along the top-ranked candidate", async () => {
      await ready;
      const byAnswer = await createRecommender({ backend: rt.backend(), pack, entropyObjective: "answer" });
      for (const c of cases.filter((x) => x.lambda !== null)) {
        const mixtures = [byAnswer.resolveMixture(c.request.domain, { lambda: c.lambda! }).weights];
        const { objective } = await byAnswer.scoreWithEntropy({ ...c.request, mixtures });
        expect(objective[0]).toBeCloseTo(c.tokenEntropies[c.ranking[0]!]!, 4);
      }
      await byAnswer.close();
    });

    it("adaptive mixture picks the λ with the least entropy objective (tokens by default, or candidates)", async () => {
      await ready;
      const req = cases[0]!.request;
      const lambdas = [0, 0.25, 0.5, 0.75, 1];
      const { scores } = await rec.scoreLambdas({ ...req, lambdas });
      const mixtures = lambdas.map((l) => rec.resolveMixture(req.domain, { lambda: l }).weights);
      const { objective } = await rec.scoreWithEntropy({ ...req, mixtures });
      expect(rec.entropyObjective).toBe("tokens");
      const res = await rec.recommend({ ...req, mixture: "adaptive" });
      expect(res.mixture.lambda).toBe(lambdas[objective.indexOf(Math.min(...objective))]);
      expect(res.entropy).toBeCloseTo(entropy(softmax(scores[lambdas.indexOf(res.mixture.lambda!)]!)), 6);

      const byCandidates = await createRecommender({ backend: rt.backend(), pack, entropyObjective: "candidates" });
      const hs = scores.map((s) => entropy(softmax(s)));
      const res2 = await byCandidates.recommend({ ...req, mixture: "adaptive" });
      expect(res2.mixture.lambda).toBe(lambdas[hs.indexOf(Math.min(...hs))]);
      expect(res2.entropy).toBeCloseTo(Math.min(...hs), 6);
      await byCandidates.close();
    });

    // Calibration on unlabeled requests: the distinct golden requests (3, 1 and 15 history titles)
    // and a fourth history, so that groups of 2 make 2 groups with different shared candidates.
    const unlabeled = () => {
      const distinct = cases
        .filter((c) => c.request.mixture === "domain")
        .map((c) => ({ history: c.request.history, candidates: c.request.candidates }));
      return [...distinct, { history: [...distinct[2]!.history].reverse().slice(0, 6), candidates: distinct[1]!.candidates }];
    };

    it("calibrates on an entropy objective: each evaluated value is the mean objective over the requests", async () => {
      await ready;
      const reqs = unlabeled();
      const res = await rec.calibrate("movies", reqs, { objective: "candidates", gridPoints: 3, refineRounds: 0 });
      expect(res.objectiveKind).toBe("candidates");
      expect(res.evaluated.map((e) => e.lambda)).toEqual([0, 0.5, 1]);
      for (const e of res.evaluated) {
        let sum = 0;
        for (const r of reqs) sum += entropy(softmax((await rec.scoreLambdas({ ...r, domain: "movies", lambdas: [e.lambda] })).scores[0]!));
        expect(e.objective).toBeCloseTo(sum / reqs.length, 6);
      }
      expect(res.objective).toBe(Math.min(...res.evaluated.map((e) => e.objective)));
      expect(res.lambda).toBe(res.evaluated.find((e) => e.objective === res.objective)!.lambda);
    });

    it("calibrates on the information objective: minus the history–pick mutual information on shared candidates", async () => {
      await ready;
      const reqs = unlabeled();
      const res = await rec.calibrate("movies", reqs, {
        objective: "information",
        groupSize: 2,
        gridPoints: 3,
        refineRounds: 1,
        refinePoints: 3,
      });
      expect(res.objectiveKind).toBe("information");
      // Round-robin groups of 2: requests 0 and 2 on request 0's candidates, 1 and 3 on request 1's.
      const groups = [
        [reqs[0]!, reqs[2]!],
        [reqs[1]!, reqs[3]!],
      ];
      for (const e of res.evaluated) {
        let total = 0;
        for (const g of groups) {
          const ps: number[][] = [];
          for (const r of g)
            ps.push(
              softmax(
                (await rec.scoreLambdas({ history: r.history, candidates: g[0]!.candidates, domain: "movies", lambdas: [e.lambda] }))
                  .scores[0]!,
              ),
            );
          const mean = ps[0]!.map((_, k) => ps.reduce((a, p) => a + p[k]!, 0) / ps.length);
          const mi = entropy(mean) - ps.reduce((a, p) => a + entropy(p), 0) / ps.length;
          total += (mi * g.length) / reqs.length;
        }
        expect(-e.objective).toBeCloseTo(total, 6);
        expect(-e.objective).toBeGreaterThan(1e-6); // these histories do change the picks
      }
      expect(res.lambda).toBe(res.evaluated.find((e) => e.objective === Math.min(...res.evaluated.map((x) => x.objective)))!.lambda);
      // Requests that share one history carry no information about it, whatever λ.
      const same = reqs.map((r) => ({ ...r, history: reqs[0]!.history }));
      const flat = await rec.calibrate("movies", same, { objective: "information", groupSize: 2, gridPoints: 3, refineRounds: 0 });
      for (const e of flat.evaluated) expect(Math.abs(e.objective)).toBeLessThan(1e-9);
    });

    it("refuses a calibration it cannot run, with coded errors", async () => {
      await ready;
      const reqs = unlabeled();
      const code = (p: Promise<unknown>) =>
        p.then(
          () => "resolved",
          (e: unknown) => (isMolorecError(e) ? e.code : String(e)),
        );
      expect(await code(rec.calibrate("movies", reqs, { objective: "perplexity" as never }))).toBe("INVALID_REQUEST");
      expect(await code(rec.calibrate("movies", reqs.slice(0, 1), { objective: "information" }))).toBe("INVALID_REQUEST");
      expect(await code(rec.calibrate("movies", reqs, { objective: "information", groupSize: 1 }))).toBe("INVALID_REQUEST");
      expect(await code(rec.calibrate("books", reqs, { objective: "information" }))).toBe("UNKNOWN_DOMAIN");
      expect(await code(rec.calibrate("movies", []))).toBe("INVALID_REQUEST");
    });

    it("answers repeated requests identically (no state carried between requests)", async () => {
      await ready;
      const req = { ...cases.find((c) => c.request.history.length > 10)!.request, mixture: "wa" };
      const a = await rec.recommend(req);
      await rec.recommend({ ...cases[1]!.request, mixture: "domain" });
      const b = await rec.recommend(req);
      expect(b).toEqual(a);
      expect(a.droppedHistoryItems).toBeGreaterThan(0); // the long history hit the token budget
    });

    const bad: Array<[string, unknown, string]> = [
      ["not an object", [1, 2], "INVALID_REQUEST"],
      ["missing history", { candidates: ["a"] }, "INVALID_REQUEST"],
      ["empty history", { history: [], candidates: ["a"] }, "EMPTY_HISTORY"],
      ["no candidates", { history: ["a"], candidates: [] }, "NO_CANDIDATES"],
      ["too many candidates", { history: ["a"], candidates: Array.from({ length: 10_000 }, (_, i) => `item ${i}`) }, "TOO_MANY_CANDIDATES"],
      ["history not strings", { history: [1], candidates: ["a"] }, "INVALID_REQUEST"],
      ["blank title", { history: ["a"], candidates: ["  "] }, "INVALID_REQUEST"],
      ["unknown domain", { history: ["a"], candidates: ["b"], domain: "cars" }, "UNKNOWN_DOMAIN"],
      ["bad mixture", { history: ["a"], candidates: ["b"], mixture: "best" }, "INVALID_MIXTURE"],
      ["λ out of range", { history: ["a"], candidates: ["b"], mixture: { lambda: 1.5 } }, "INVALID_MIXTURE"],
      ["unknown field", { history: ["a"], candidates: ["b"], histroy: [] }, "INVALID_REQUEST"],
      ["bad topK", { history: ["a"], candidates: ["b"], topK: 0 }, "INVALID_REQUEST"],
    ];
    it.each(bad)("rejects a bad request (%s) with a coded error", async (_name, body, code) => {
      await ready;
      const err = await rec.recommend(body).then(
        () => null,
        (e: unknown) => e,
      );
      expect(isMolorecError(err)).toBe(true);
      expect((err as { code: string }).code).toBe(code);
      // and the recommender still serves
      const ok = await rec.recommend(cases[1]!.request);
      expect(ok.ranked.length).toBe(cases[1]!.request.candidates.length);
    });
  });
}
