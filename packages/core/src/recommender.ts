import type { InferenceBackend, InferenceSession } from "./backend.js";
import { MolorecError } from "./errors.js";
import { LoraMixer, type AdapterWeights } from "./lora-mixture.js";
import { entropy, rankByScore, softmax } from "./math.js";
import type { ModelPack } from "./pack.js";
import { buildCandidate, buildPrompt } from "./prompt.js";
import { DEFAULT_REQUEST_LIMITS, parseRecommendRequest, type MixturePolicy, type RequestLimits } from "./request.js";
import { scoreCandidates, type ScoreJob, type ScoreResult, type ScoringStrategy } from "./scoring.js";
import { scoreBatchedJobs } from "./batch-scoring.js";
import { checkScoreJob } from "./scoring-job.js";
import { searchLambda, type LambdaSearchOptions, type LambdaSearchResult } from "./lambda-search.js";

/**
 * Groups of requests for the `information` objective: round-robin into ⌊n / size⌋ groups (at
 * least one), each scored on the candidates of its first request with ≥ 2 candidates.
 */
function informationGroups(
  requests: ReadonlyArray<{ history: string[]; candidates: string[] }>,
  size: number,
): Array<{ candidates: string[]; histories: string[][] }> {
  if (!(Number.isInteger(size) && size >= 2)) throw new MolorecError("INVALID_REQUEST", `groupSize must be an integer ≥ 2, got ${size}`);
  if (requests.length < 2)
    throw new MolorecError(
      "INVALID_REQUEST",
      `the information objective needs at least 2 unlabeled requests (it compares histories), got ${requests.length}`,
    );
  const n = Math.max(1, Math.floor(requests.length / size));
  const groups = Array.from({ length: n }, () => [] as Array<{ history: string[]; candidates: string[] }>);
  requests.forEach((r, i) => groups[i % n]!.push(r));
  return groups.map((members) => {
    const shared = members.find((r) => Array.isArray(r.candidates) && r.candidates.length >= 2);
    if (!shared) throw new MolorecError("INVALID_REQUEST", "the information objective needs requests with at least 2 candidates");
    return { candidates: shared.candidates, histories: members.map((r) => r.history) };
  });
}

/** One ranked candidate of a {@link RecommendResponse}. */
export interface RankedCandidate {
  /** Position of the candidate in the request. */
  index: number;
  title: string;
  /** Length-normalised log-likelihood of the title (higher is better). */
  score: number;
  /** Softmax of the scores over all candidates. */
  probability: number;
}

/** The answer to a {@link RecommendRequest}. */
export interface RecommendResponse {
  domain: string | null;
  mixture: {
    policy: string;
    /** λ of the domain adapter used (general got 1 − λ); null for `base`. */
    lambda: number | null;
    /** Where λ came from. */
    source: "policy" | "calibrated" | "default" | "request" | "adaptive" | "none";
  };
  ranked: RankedCandidate[];
  /** Entropy (nats) of the softmax over all candidates' scores; low means confident. */
  entropy: number;
  promptTokens: number;
  /** Oldest history items left out to fit the pack's history token budget. */
  droppedHistoryItems: number;
}

/**
 * What the entropy-guided policies (`adaptive`, calibration) minimise, on unlabeled requests.
 * `tokens` (default): the mean entropy of the model's next-token distributions along the request's
 * candidate titles (the paper's token-level entropy, teacher-forced on the candidates rather than
 * on greedy generations). `answer`: the same entropy along the one candidate the mixture ranks
 * first — the model's own answer, as the paper measures entropy on what the model generates, so
 * that an adapter trained to reject wrong titles is not penalised for its surprise on them.
 * `candidates`: the entropy of the softmax over the candidates' scores. On the demo pack,
 * `candidates` prefers an adapter that is confidently wrong (docs/results.md).
 */
export type EntropyObjective = "tokens" | "answer" | "candidates";

/** The objectives {@link EntropyObjective} allows. */
export const ENTROPY_OBJECTIVES: readonly EntropyObjective[] = ["tokens", "answer", "candidates"];

/**
 * What {@link Recommender.calibrate} optimises over unlabeled requests: one of the
 * {@link EntropyObjective}s (their mean is minimised), or `information`: the mutual information
 * between a request's history and the candidate it picks, maximised — the entropy of the mean
 * candidate distribution minus the mean entropy (information maximisation, as in test-time
 * adaptation's SHOT), measured on candidate sets shared by groups of requests so that the two
 * entropies are over the same items. Plain entropy minimisation rewards a mixture that is
 * confident about the same candidates whatever the history (a prior, e.g. an adapter that never saw
 * the domain); the marginal term penalises exactly that. Not per request: `adaptive` keeps its
 * entropy objective.
 */
export type CalibrationObjective = EntropyObjective | "information";

/** The objectives {@link CalibrationObjective} allows. */
export const CALIBRATION_OBJECTIVES: readonly CalibrationObjective[] = [...ENTROPY_OBJECTIVES, "information"];

/** Options of {@link Recommender.calibrate}: the λ search's, and the objective. */
export interface CalibrationOptions extends LambdaSearchOptions {
  /** Default: the recommender's {@link RecommenderOptions.entropyObjective}. */
  objective?: CalibrationObjective;
  /**
   * `information` only: requests per shared candidate set (each group is scored on the candidates
   * of its first request). Default 16; fewer than 2 requests per group is refused.
   */
  groupSize?: number;
}

/**
 * A calibration result. `objective` (and each `evaluated[].objective`) is the value minimised: the
 * mean entropy in nats, or, for `information`, minus the mutual information in nats.
 */
export interface CalibrationResult extends LambdaSearchResult {
  objectiveKind: CalibrationObjective;
}

/** Options of {@link createRecommender}. */
export interface RecommenderOptions {
  backend: InferenceBackend;
  pack: ModelPack;
  /** Stricter limits than the pack's (never looser). */
  limits?: Partial<RequestLimits>;
  /** λ values tried by the `adaptive` policy, as rows of one batch. Default 0, 0.25, …, 1. */
  adaptiveLambdas?: number[];
  strategy?: ScoringStrategy;
  maxBatchRows?: number;
  /** Objective of the `adaptive` policy and of {@link Recommender.calibrate}. Default `tokens`. */
  entropyObjective?: EntropyObjective;
}

/** A resolved mixture: the adapter weights of one batch row and its λ. */
export interface ResolvedMixture {
  weights: AdapterWeights;
  lambda: number | null;
  source: RecommendResponse["mixture"]["source"];
}

/** Scores of one request's candidates under several λ, for evaluation and calibration. */
export interface LambdaScores {
  lambdas: number[];
  /** `scores[i][c]`: candidate c under `lambdas[i]`. */
  scores: number[][];
}

/**
 * A recommender over one pack and one backend. Create once, reuse for every request: the
 * session, tokenizer caches and LoRA concatenations are kept.
 *
 * @example
 * ```ts
 * import { createRecommender, loadPack } from "@molorec/core";
 * import { nodeBackend, dirSource } from "@molorec/runtime-node";
 * const rec = await createRecommender({ backend: nodeBackend(), pack: await loadPack(dirSource("pack/")) });
 * const res = await rec.recommend({ history: ["Heat (1995)"], candidates: ["Ronin (1998)", "Babe (1995)"] });
 * ```
 */
export interface Recommender {
  readonly pack: ModelPack;
  readonly backendName: string;
  readonly limits: RequestLimits;
  /** λ values the `adaptive` policy tries. */
  readonly adaptiveLambdas: readonly number[];
  /** What `adaptive` and `calibrate` minimise. */
  readonly entropyObjective: EntropyObjective;
  /** Validates an untrusted request and ranks its candidates. */
  recommend(request: unknown): Promise<RecommendResponse>;
  /**
   * Ranks several untrusted requests in shared model runs (`scoreBatchedJobs`): what a server
   * does with requests that arrive together. Requests are batched with those using the same
   * adapters (a run pays for every adapter any of its rows uses). Each request is validated on its
   * own, so answer `i` is request `i`'s response or its own coded error; scores equal
   * `recommend`'s up to float rounding (≤ 1e-5). With the `naive` strategy, requests are scored
   * one by one.
   *
   * @example
   * ```ts
   * const [a, b] = await rec.recommendBatch([reqA, reqB]);
   * if (a.status === "fulfilled") console.log(a.value.ranked[0]);
   * ```
   */
  recommendBatch(requests: readonly unknown[]): Promise<Array<PromiseSettledResult<RecommendResponse>>>;
  /** Resolves a policy to adapter weights for a domain (throws coded errors). */
  resolveMixture(domain: string | null, policy: MixturePolicy): ResolvedMixture;
  /** Scores candidates under several adapter mixtures (rows of one batch). */
  scoreMixtures(input: { history: string[]; candidates: string[]; mixtures: AdapterWeights[] }): Promise<number[][]>;
  /**
   * Scores candidates under several adapter mixtures and returns, per mixture, the value of the
   * recommender's {@link EntropyObjective} on this request (no labels involved).
   */
  scoreWithEntropy(input: {
    history: string[];
    candidates: string[];
    mixtures: AdapterWeights[];
  }): Promise<{ scores: number[][]; objective: number[] }>;
  /** Scores candidates under several λ of a domain (rows of one batch). */
  scoreLambdas(input: { history: string[]; candidates: string[]; domain: string | null; lambdas: number[] }): Promise<LambdaScores>;
  /**
   * Finds a domain's λ on unlabeled requests (labels are never needed): minimising the mean
   * {@link EntropyObjective}, or maximising the history–pick mutual information
   * (`objective: "information"`, see {@link CalibrationObjective}).
   *
   * @example
   * ```ts
   * const { lambda } = await rec.calibrate("movies", unlabeled, { objective: "information" });
   * ```
   */
  calibrate(
    domain: string,
    requests: Array<{ history: string[]; candidates: string[] }>,
    options?: CalibrationOptions,
  ): Promise<CalibrationResult>;
  close(): Promise<void>;
}

const DEFAULT_ADAPTIVE = [0, 0.25, 0.5, 0.75, 1];

/** Opens the pack's model on the backend and returns a {@link Recommender}. */
export async function createRecommender(options: RecommenderOptions): Promise<Recommender> {
  const { backend, pack } = options;
  const m = pack.manifest;
  let session: InferenceSession;
  try {
    session = await backend.createSession(pack.model, { externalData: pack.externalData });
  } catch (cause) {
    if (cause instanceof MolorecError) throw cause;
    throw new MolorecError(
      "BACKEND_UNAVAILABLE",
      `${backend.name} could not open ${pack.location}/${m.files.model}: ${(cause as Error)?.message ?? cause}`,
      { cause },
    );
  }
  const mixer = new LoraMixer(pack);
  const limits: RequestLimits = {
    maxCandidates: Math.min(options.limits?.maxCandidates ?? Infinity, m.limits.maxCandidates),
    maxHistoryItems: Math.min(options.limits?.maxHistoryItems ?? Infinity, m.limits.maxHistoryItems),
    maxTitleChars: options.limits?.maxTitleChars ?? DEFAULT_REQUEST_LIMITS.maxTitleChars,
  };
  const adaptive = options.adaptiveLambdas ?? DEFAULT_ADAPTIVE;
  const objectiveKind: EntropyObjective = options.entropyObjective ?? "tokens";
  if (!ENTROPY_OBJECTIVES.includes(objectiveKind)) {
    throw new MolorecError(
      "INVALID_REQUEST",
      `entropyObjective must be one of ${ENTROPY_OBJECTIVES.join(", ")}, got ${JSON.stringify(objectiveKind)}`,
    );
  }
  const scoring = { strategy: options.strategy ?? "prefix", maxBatchRows: options.maxBatchRows ?? 64 } as const;
  /** Scoring options that also compute what `kind` reads (token entropies, unless it is `candidates`). */
  const optionsFor = (kind: EntropyObjective) => ({ ...scoring, tokenEntropy: kind !== "candidates" });
  const withEntropy = optionsFor(objectiveKind);

  /** The objective per mixture of one scored request. */
  function objectiveFor(kind: EntropyObjective): (result: ScoreResult) => number[] {
    if (kind === "candidates") return (result) => result.scores.map((s) => entropy(softmax(s)));
    if (kind === "answer") {
      return (result) =>
        result.tokenEntropies!.map((row, m) => {
          const s = result.scores[m]!;
          return row[s.indexOf(Math.max(...s))]!;
        });
    }
    return (result) => result.tokenEntropies!.map((row) => row.reduce((a, b) => a + b, 0) / row.length);
  }
  const objectiveOf = objectiveFor(objectiveKind);

  function domainOf(name: string | null | undefined): string | null {
    if (name == null) return m.defaultDomain;
    if (!(name in m.domains)) {
      throw new MolorecError(
        "UNKNOWN_DOMAIN",
        `domain "${name}" is not in pack ${m.name}; it has: ${Object.keys(m.domains).join(", ") || "no domains"}.`,
        {
          details: { domain: name, known: Object.keys(m.domains) },
        },
      );
    }
    return name;
  }

  function weightsFor(domain: string | null, lambda: number): AdapterWeights {
    const general = m.generalAdapter;
    const specific = domain === null ? null : m.domains[domain]!.adapter;
    if (lambda < 1 && general === null)
      throw new MolorecError("INVALID_MIXTURE", `pack ${m.name} has no general adapter; only λ = 1 ("domain") is possible.`);
    if (lambda > 0 && specific === null)
      throw new MolorecError("INVALID_MIXTURE", `no domain given and pack ${m.name} has no default domain; pass "domain".`);
    const w: Array<readonly [string, number]> = [];
    if (lambda < 1) w.push([general!, 1 - lambda]);
    if (lambda > 0) w.push([specific!, lambda]);
    return w;
  }

  function resolveMixture(domain: string | null, policy: MixturePolicy): ResolvedMixture {
    if (typeof policy === "object") return { weights: weightsFor(domain, policy.lambda), lambda: policy.lambda, source: "request" };
    switch (policy) {
      case "base":
        return { weights: [], lambda: null, source: "none" };
      case "general":
        return { weights: weightsFor(domain, 0), lambda: 0, source: "policy" };
      case "domain":
        return { weights: weightsFor(domain, 1), lambda: 1, source: "policy" };
      case "wa":
        return { weights: weightsFor(domain, 0.5), lambda: 0.5, source: "policy" };
      case "calibrated": {
        if (domain === null) return resolveMixture(null, "general");
        const d = m.domains[domain]!;
        const lambda = d.calibratedLambda ?? d.defaultLambda;
        return { weights: weightsFor(domain, lambda), lambda, source: d.calibratedLambda === undefined ? "default" : "calibrated" };
      }
      default:
        throw new MolorecError("INVALID_MIXTURE", `policy "${policy}" cannot be resolved to one mixture`);
    }
  }

  function jobOf(input: { history: string[]; candidates: string[]; mixtures: AdapterWeights[] }): ScoreJob {
    const prompt = buildPrompt(pack.encoder, m.prompt, input.history);
    const candidateIds = input.candidates.map((c) => buildCandidate(pack.encoder, m.prompt, c));
    return { promptIds: prompt.ids, candidateIds, mixtures: input.mixtures };
  }

  async function scoreMixtures(input: { history: string[]; candidates: string[]; mixtures: AdapterWeights[] }): Promise<number[][]> {
    return (await scoreCandidates(session, pack, mixer, jobOf(input), scoring)).scores;
  }

  /** Scores the mixtures of one request and evaluates `kind` on each. */
  async function scoreObjective(
    input: { history: string[]; candidates: string[]; mixtures: AdapterWeights[] },
    kind: EntropyObjective,
  ): Promise<{ scores: number[][]; objective: number[] }> {
    const res = await scoreCandidates(session, pack, mixer, jobOf(input), optionsFor(kind));
    return { scores: res.scores, objective: objectiveFor(kind)(res) };
  }

  function scoreWithEntropy(input: {
    history: string[];
    candidates: string[];
    mixtures: AdapterWeights[];
  }): Promise<{ scores: number[][]; objective: number[] }> {
    return scoreObjective(input, objectiveKind);
  }

  async function scoreLambdas(input: {
    history: string[];
    candidates: string[];
    domain: string | null;
    lambdas: number[];
  }): Promise<LambdaScores> {
    const domain = domainOf(input.domain);
    const scores = await scoreMixtures({ ...input, mixtures: input.lambdas.map((l) => weightsFor(domain, l)) });
    return { lambdas: input.lambdas, scores };
  }

  /** A validated, tokenized request: its score job and how its scores become the response. */
  interface Prepared {
    job: ScoreJob;
    /** The job needs the entropy objective (the `adaptive` policy). */
    needsObjective: boolean;
    finish(result: ScoreResult): RecommendResponse;
  }

  function prepare(body: unknown): Prepared {
    const req = parseRecommendRequest(body, limits);
    const domain = domainOf(req.domain);
    const prompt = buildPrompt(pack.encoder, m.prompt, req.history);
    const candidateIds = req.candidates.map((c) => buildCandidate(pack.encoder, m.prompt, c));
    const policyName = typeof req.mixture === "object" ? "lambda" : req.mixture;
    const isAdaptive = req.mixture === "adaptive";
    const resolved = isAdaptive ? null : resolveMixture(domain, req.mixture);
    const mixtures = resolved ? [resolved.weights] : adaptive.map((l) => weightsFor(domain, l));

    function finish(result: ScoreResult): RecommendResponse {
      const all = result.scores;
      let scores: number[];
      let mixture: RecommendResponse["mixture"];
      if (!resolved) {
        const objective = objectiveOf(result);
        let best = 0;
        objective.forEach((h, i) => (h < objective[best]! ? (best = i) : 0));
        scores = all[best]!;
        mixture = { policy: policyName, lambda: adaptive[best]!, source: "adaptive" };
      } else {
        scores = all[0]!;
        mixture = { policy: policyName, lambda: resolved.lambda, source: resolved.source };
      }
      const probs = softmax(scores);
      const order = rankByScore(scores).slice(0, req.topK ?? scores.length);
      return {
        domain,
        mixture,
        ranked: order.map((i) => ({ index: i, title: req.candidates[i]!, score: scores[i]!, probability: probs[i]! })),
        entropy: entropy(probs),
        promptTokens: prompt.ids.length,
        droppedHistoryItems: prompt.droppedHistoryItems,
      };
    }
    return { job: { promptIds: prompt.ids, candidateIds, mixtures }, needsObjective: isAdaptive, finish };
  }

  return {
    pack,
    backendName: backend.name,
    limits,
    adaptiveLambdas: adaptive,
    resolveMixture,
    entropyObjective: objectiveKind,
    scoreMixtures,
    scoreWithEntropy,
    scoreLambdas,

    async recommend(body: unknown): Promise<RecommendResponse> {
      const prepared = prepare(body);
      return prepared.finish(await scoreCandidates(session, pack, mixer, prepared.job, prepared.needsObjective ? withEntropy : scoring));
    },

    async recommendBatch(bodies: readonly unknown[]): Promise<Array<PromiseSettledResult<RecommendResponse>>> {
      const out = new Array<PromiseSettledResult<RecommendResponse>>(bodies.length);
      const ready: Array<{ at: number; prepared: Prepared }> = [];
      bodies.forEach((body, at) => {
        try {
          const prepared = prepare(body);
          checkScoreJob(pack, prepared.job);
          ready.push({ at, prepared });
        } catch (reason) {
          out[at] = { status: "rejected", reason };
        }
      });
      const settle = (at: number, f: () => RecommendResponse) => {
        try {
          out[at] = { status: "fulfilled", value: f() };
        } catch (reason) {
          out[at] = { status: "rejected", reason };
        }
      };
      // Rows of one run pay for every adapter any row of it uses (the mixer concatenates them), so
      // requests are batched only with requests that use the same adapters.
      const groups = new Map<string, typeof ready>();
      for (const r of ready) {
        const key = [...new Set(r.prepared.job.mixtures.flatMap((w) => w.filter(([, x]) => x !== 0).map(([name]) => name)))]
          .sort()
          .join("|");
        const group = groups.get(key);
        if (group) group.push(r);
        else groups.set(key, [r]);
      }
      for (const group of groups.values()) {
        if (group.length === 1 || scoring.strategy === "naive") {
          for (const { at, prepared } of group) {
            try {
              const result = await scoreCandidates(session, pack, mixer, prepared.job, prepared.needsObjective ? withEntropy : scoring);
              settle(at, () => prepared.finish(result));
            } catch (reason) {
              out[at] = { status: "rejected", reason };
            }
          }
          continue;
        }
        try {
          const tokenEntropy = withEntropy.tokenEntropy && group.some((r) => r.prepared.needsObjective);
          const { results } = await scoreBatchedJobs(
            session,
            pack,
            mixer,
            group.map((r) => r.prepared.job),
            { maxBatchRows: scoring.maxBatchRows, tokenEntropy },
          );
          group.forEach(({ at, prepared }, i) => settle(at, () => prepared.finish(results[i]!)));
        } catch (reason) {
          for (const { at } of group) out[at] = { status: "rejected", reason };
        }
      }
      return out;
    },

    async calibrate(domain, requests, calibration = {}) {
      domainOf(domain);
      const { objective: kind = objectiveKind, groupSize = 16, ...searchOptions } = calibration;
      if (!CALIBRATION_OBJECTIVES.includes(kind)) {
        throw new MolorecError(
          "INVALID_REQUEST",
          `calibration objective must be one of ${CALIBRATION_OBJECTIVES.join(", ")}, got ${JSON.stringify(kind)}`,
        );
      }
      if (requests.length === 0) throw new MolorecError("INVALID_REQUEST", "calibration needs at least one unlabeled request");
      if (kind === "information") {
        const groups = informationGroups(requests, groupSize);
        const result = await searchLambda(async (lambdas) => {
          const mixtures = lambdas.map((l) => weightsFor(domain, l));
          const total = new Array<number>(lambdas.length).fill(0);
          for (const group of groups) {
            const shared = group.candidates;
            const meanP = lambdas.map(() => new Array<number>(shared.length).fill(0));
            const meanH = new Array<number>(lambdas.length).fill(0);
            for (const history of group.histories) {
              const scores = await scoreMixtures({ history, candidates: shared, mixtures });
              scores.forEach((s, i) => {
                const p = softmax(s);
                p.forEach((q, k) => (meanP[i]![k]! += q / group.histories.length));
                meanH[i]! += entropy(p) / group.histories.length;
              });
            }
            // Minus the group's mutual information, weighted by its share of the requests.
            lambdas.forEach((_, i) => (total[i]! += ((meanH[i]! - entropy(meanP[i]!)) * group.histories.length) / requests.length));
          }
          return total;
        }, searchOptions);
        return { ...result, objectiveKind: kind };
      }
      const result = await searchLambda(async (lambdas) => {
        const sums = new Array<number>(lambdas.length).fill(0);
        for (const r of requests) {
          const { objective } = await scoreObjective({ ...r, mixtures: lambdas.map((l) => weightsFor(domain, l)) }, kind);
          objective.forEach((h, i) => (sums[i]! += h));
        }
        return sums.map((s) => s / requests.length);
      }, searchOptions);
      return { ...result, objectiveKind: kind };
    },

    async close() {
      await session.release();
    },
  };
}
