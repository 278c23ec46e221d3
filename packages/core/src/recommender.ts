import type { InferenceBackend, InferenceSession } from "./backend.js";
import { scoreBatchedJobs } from "./batch-scoring.js";
import { type CalibrationOptions, type CalibrationResult, calibrateLambda } from "./calibration.js";
import { MolorecError } from "./errors.js";
import { validateSession } from "./graph-check.js";
import { LoraMixer, type AdapterWeights } from "./lora-mixture.js";
import {
  type CalibrationObjective,
  checkObjective,
  ENTROPY_OBJECTIVES,
  type EntropyObjective,
  needsTokenEntropies,
  objectiveValues,
} from "./objectives.js";
import type { ModelPack } from "./pack.js";
import { type MixturePolicy, type MixtureSource, mixtureWeights, type ResolvedMixture, resolveDomain, resolvePolicy } from "./policies.js";
import { buildCandidate, buildPrompt } from "./prompt.js";
import { type Prepared, prepareRequest, type RequestEnv, recommendMany } from "./recommend-requests.js";
import { DEFAULT_REQUEST_LIMITS, type RequestLimits } from "./request.js";
import { scoreCandidates, type ScoringOptions, type ScoringStrategy } from "./scoring.js";
import type { ScoreJob } from "./scoring-job.js";

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
    source: MixtureSource;
  };
  ranked: RankedCandidate[];
  /** Entropy (nats) of the softmax over all candidates' scores; low means confident. */
  entropy: number;
  promptTokens: number;
  /** Oldest history items left out to fit the pack's history token budget. */
  droppedHistoryItems: number;
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
   * Scores candidates under several adapter mixtures and returns, per mixture, the value of an
   * {@link EntropyObjective} on this request (no labels involved): the recommender's, unless
   * `objective` names another.
   */
  scoreWithEntropy(
    input: { history: string[]; candidates: string[]; mixtures: AdapterWeights[] },
    objective?: EntropyObjective,
  ): Promise<{ scores: number[][]; objective: number[] }>;
  /** Scores candidates under several λ of a domain (rows of one batch). */
  scoreLambdas(input: { history: string[]; candidates: string[]; domain: string | null; lambdas: number[] }): Promise<LambdaScores>;
  /**
   * Finds a domain's λ on unlabeled requests (labels are never needed): minimising the mean
   * {@link EntropyObjective}, or maximising the history–pick mutual information
   * (`objective: "information"`, see {@link CalibrationObjective}). {@link calibrateLambda} on
   * this recommender.
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

/** Candidates to score under mixtures, after a history (before tokenization). */
type MixturesInput = { history: string[]; candidates: string[]; mixtures: AdapterWeights[] };

/** Opens the pack's model on the backend and returns a {@link Recommender}. */
export async function createRecommender(options: RecommenderOptions): Promise<Recommender> {
  const { backend, pack } = options;
  const session = await openSession(backend, pack);
  const mixer = new LoraMixer(pack);
  try {
    // The graph against the manifest (names, then a 1-token probe) before anything reports healthy.
    await validateSession(session, pack, mixer);
  } catch (e) {
    await session.release();
    throw e;
  }
  const env: RequestEnv = {
    pack,
    limits: recommenderLimits(pack, options.limits),
    adaptiveLambdas: options.adaptiveLambdas ?? DEFAULT_ADAPTIVE,
    entropyObjective: checkObjective(options.entropyObjective ?? "tokens", ENTROPY_OBJECTIVES, "entropyObjective"),
  };
  const scoring: ScoringOptions = { strategy: options.strategy ?? "prefix", maxBatchRows: options.maxBatchRows ?? 64 };
  /** Scores a job, with the token entropies `objective` reads when one is given. */
  const score = (job: ScoreJob, objective: EntropyObjective | null) =>
    scoreCandidates(session, pack, mixer, job, { ...scoring, tokenEntropy: objective !== null && needsTokenEntropies(objective) });
  const scoreRequest = (p: Prepared) => score(p.job, p.needsObjective ? env.entropyObjective : null);
  const scoreRequests = async (ps: Prepared[]) => {
    const tokenEntropy = ps.some((p) => p.needsObjective) && needsTokenEntropies(env.entropyObjective);
    const jobs = ps.map((p) => p.job);
    return (await scoreBatchedJobs(session, pack, mixer, jobs, { maxBatchRows: scoring.maxBatchRows, tokenEntropy })).results;
  };
  const jobOf = (input: MixturesInput): ScoreJob => ({
    promptIds: buildPrompt(pack.encoder, pack.manifest.prompt, input.history).ids,
    candidateIds: input.candidates.map((c) => buildCandidate(pack.encoder, pack.manifest.prompt, c)),
    mixtures: input.mixtures,
  });

  const rec: Recommender = {
    pack,
    backendName: backend.name,
    limits: env.limits,
    adaptiveLambdas: env.adaptiveLambdas,
    entropyObjective: env.entropyObjective,
    resolveMixture(domain, policy) {
      const resolved = resolvePolicy({ manifest: pack.manifest, domain, adaptiveLambdas: env.adaptiveLambdas }, policy);
      if (resolved.byObjective) throw new MolorecError("INVALID_MIXTURE", `policy "${String(policy)}" cannot be resolved to one mixture`);
      return resolved.rows[0]!;
    },
    scoreMixtures: async (input) => (await score(jobOf(input), null)).scores,
    async scoreWithEntropy(input, objective = env.entropyObjective) {
      const result = await score(jobOf(input), objective);
      return { scores: result.scores, objective: objectiveValues(objective, result) };
    },
    async scoreLambdas(input) {
      const domain = resolveDomain(pack.manifest, input.domain);
      const mixtures = input.lambdas.map((l) => mixtureWeights(pack.manifest, domain, l));
      return { lambdas: input.lambdas, scores: await rec.scoreMixtures({ ...input, mixtures }) };
    },
    async recommend(body) {
      const prepared = prepareRequest(env, body);
      return prepared.finish(await scoreRequest(prepared));
    },
    // Requests that share adapters share runs, unless the strategy is the naive reference.
    recommendBatch: (bodies) =>
      recommendMany(env, bodies, { one: scoreRequest, many: scoring.strategy === "naive" ? null : scoreRequests }),
    calibrate: (domain, requests, calibration) => calibrateLambda(rec, domain, requests, calibration),
    async close() {
      await session.release();
    },
  };
  return rec;
}

async function openSession(backend: InferenceBackend, pack: ModelPack): Promise<InferenceSession> {
  try {
    return await backend.createSession(pack.model, { externalData: pack.externalData, modelBytes: pack.modelBytes });
  } catch (cause) {
    if (cause instanceof MolorecError) throw cause;
    throw new MolorecError(
      "BACKEND_UNAVAILABLE",
      `${backend.name} could not open ${pack.location}/${pack.manifest.files.model}: ${(cause as Error)?.message ?? cause}`,
      { cause },
    );
  }
}

/** The pack's request limits, lowered (never raised) by the caller's. */
function recommenderLimits(pack: ModelPack, limits: Partial<RequestLimits> | undefined): RequestLimits {
  return {
    maxCandidates: Math.min(limits?.maxCandidates ?? Infinity, pack.manifest.limits.maxCandidates),
    maxHistoryItems: Math.min(limits?.maxHistoryItems ?? Infinity, pack.manifest.limits.maxHistoryItems),
    maxTitleChars: limits?.maxTitleChars ?? DEFAULT_REQUEST_LIMITS.maxTitleChars,
  };
}
