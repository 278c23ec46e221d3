/**
 * Run planning for the scoring engine: which prompt rows and which candidate rows share a model
 * run. Pure arithmetic on token counts, so that every choice is unit-tested on plain numbers;
 * `batch-scoring.ts` builds the feeds of a plan and executes it.
 */

/** A model run's fixed cost in padded tokens: rows are split into runs of similar length when the padding saved is worth more. */
export const RUN_COST_TOKENS = 32;

/**
 * Multiply-adds per fed token, apart from attention (`token`: projections, the MLP as 8·h² wide,
 * the LM head), and per (fed token, attended key) (`key`): a first-order cost model to plan runs with.
 */
export interface TokenCosts {
  token: number;
  key: number;
}

/** The {@link TokenCosts} of a model's shape. */
export function tokenCosts(model: {
  hiddenSize: number;
  vocabSize: number;
  numLayers: number;
  numHeads: number;
  headDim: number;
}): TokenCosts {
  const { hiddenSize: h, vocabSize: V, numLayers: n, numHeads, headDim } = model;
  return { token: n * 12 * h * h + h * V, key: n * 2 * numHeads * headDim };
}

/** Items `[start, end)` of an ordered list. */
export interface Span {
  start: number;
  end: number;
}

/**
 * Splits rows sorted longest first into consecutive runs of at most `maxRows` rows. With a finite
 * `runCost`, the split minimises padded tokens (`rows × longest` per run) plus `runCost` per run;
 * with `Infinity`, runs are simply filled in order.
 */
export function planRuns(lengths: readonly number[], maxRows: number, runCost: number): Span[] {
  const n = lengths.length;
  const out: Span[] = [];
  if (!Number.isFinite(runCost)) {
    for (let s = 0; s < n; s += maxRows) out.push({ start: s, end: Math.min(n, s + maxRows) });
    return out;
  }
  const best = new Array<number>(n + 1).fill(Infinity);
  const from = new Array<number>(n + 1).fill(0);
  best[0] = 0;
  for (let i = 1; i <= n; i++) {
    for (let j = Math.max(0, i - maxRows); j < i; j++) {
      const cost = best[j]! + runCost + (i - j) * lengths[j]!;
      if (cost < best[i]!) {
        best[i] = cost;
        from[i] = j;
      }
    }
  }
  for (let i = n; i > 0; i = from[i]!) out.unshift({ start: from[i]!, end: i });
  return out;
}

/**
 * Indices of `primary` sorted by it descending, then by `secondary` descending, then by index
 * (stable). Sorted as numeric keys, with loops rather than callbacks: planning runs once per
 * request, and closures created per call were compiled again by V8 on every request (~2 ms of
 * compiler time each, ~10% of a 50-candidate request's CPU on the demo pack).
 */
export function descendingOrder(primary: readonly number[], secondary?: readonly number[]): number[] {
  const n = primary.length;
  let maxP = 0;
  let maxS = 0;
  for (let i = 0; i < n; i++) {
    if (primary[i]! > maxP) maxP = primary[i]!;
    if (secondary && secondary[i]! > maxS) maxS = secondary[i]!;
  }
  const keys = new Float64Array(n);
  for (let i = 0; i < n; i++) keys[i] = ((maxP - primary[i]!) * (maxS + 1) + (secondary ? maxS - secondary[i]! : 0)) * n + i;
  keys.sort();
  const order = new Array<number>(n);
  for (let i = 0; i < n; i++) order[i] = keys[i]! % n;
  return order;
}

/** `values` in `order` (a loop: see {@link descendingOrder} on callbacks). */
function pick<T>(values: readonly T[], order: readonly number[]): T[] {
  const out = new Array<T>(order.length);
  for (let i = 0; i < order.length; i++) out[i] = values[order[i]!]!;
  return out;
}

/** What a plan is made of: per prompt row, its length and the fed length of each of its candidates. */
export interface PlanInput {
  /** Valid tokens of each prompt row (a job's prompt under one of its mixtures). */
  prompts: readonly number[];
  /** `fed[r][c]`: tokens of prompt row r's candidate c that are fed (all but the last, which is only scored). */
  fed: ReadonlyArray<readonly number[]>;
  /** The graph takes one cache row per group of consecutive candidate rows (`kvCache: "grouped"`). */
  grouped: boolean;
  /**
   * A fan-out graph (`model.sharedLayers`): per prompt row, the unit (job) it belongs to. A grouped
   * plan then keeps a unit's rows (a job's mixtures) in the same candidate runs, so that each
   * candidate's shared layers run once for all of them.
   */
  units?: readonly number[];
}

/** Bounds and costs a plan respects. */
export interface PlanLimits {
  /** Most rows of one run, prompt or candidate. */
  maxRows: number;
  /** A run's fixed cost in padded tokens ({@link RUN_COST_TOKENS}); `Infinity`: as few runs as the bounds allow. */
  runCostTokens: number;
  /** Most logits floats one prompt run may return (`rows × width × vocab`); `Infinity` when the graph returns one row each. */
  maxPromptLogits: number;
  /** Most logits floats one candidate run may return (`rows × suffix × vocab`); `Infinity` when it returns log-probs only. */
  maxCandidateLogits: number;
  vocab: number;
  costs: TokenCosts;
}

/** A prompt run: prompt rows, left-padded to the longest (`width`). */
export interface PromptRun {
  rows: number[];
  width: number;
}

/** One row of a candidate run: a candidate of a prompt row's job, on that row's cache. */
export interface CandidateRow {
  prompt: number;
  candidate: number;
}

/**
 * A candidate run. `caches`: the prompt rows whose caches it is fed once each, every one serving
 * the same number of consecutive rows (a grouped-cache graph); null: one cache copy per row.
 */
export interface CandidateRun {
  rows: CandidateRow[];
  caches: number[] | null;
}

/** Which runs score a batch: prompt runs first, then candidate runs on their caches. */
export interface ScoringPlan {
  promptRuns: PromptRun[];
  candidateRuns: CandidateRun[];
  /** Estimated cost of the candidate runs (multiply-adds, {@link TokenCosts}). */
  candidateCost: number;
}

/**
 * A grouped plan is kept unless the per-row plan is estimated this much cheaper: the estimate
 * counts padded tokens and runs, not the per-row cache copies the grouped plan saves.
 */
export const GROUPED_PREFERENCE = 0.85;

/** Plans the prompt runs, then the candidate runs (grouped when the graph takes it and it is not clearly dearer). */
export function planScoring(input: PlanInput, limits: PlanLimits): ScoringPlan {
  const promptRuns = planPromptRuns(input.prompts, limits);
  const perRow = planPerRowRuns(input.prompts, input.fed, limits);
  if (input.grouped) {
    const grouped = planGroupedRuns(input.prompts, input.fed, limits, input.units);
    // Fan-out: the estimate does not count the shared layers run once per unit, only grouped runs do that.
    if (input.units || perRow.cost >= GROUPED_PREFERENCE * grouped.cost)
      return { promptRuns, candidateRuns: grouped.runs, candidateCost: grouped.cost };
  }
  return { promptRuns, candidateRuns: perRow.runs, candidateCost: perRow.cost };
}

/**
 * Prompt rows, longest first, in runs of similar length: rows are left-padded to the longest of
 * their run, and a run is split off when the padding it saves is worth more than a run. A run
 * returns `rows × width × vocab` logits unless the graph keeps the last position only.
 */
export function planPromptRuns(prompts: readonly number[], limits: PlanLimits): PromptRun[] {
  if (prompts.length === 0) return [];
  const order = descendingOrder(prompts);
  const lengths = pick(prompts, order);
  const byLogits = Math.floor(limits.maxPromptLogits / (lengths[0]! * limits.vocab));
  const maxRows = Math.max(1, Math.min(limits.maxRows, byLogits));
  return planRuns(lengths, maxRows, limits.runCostTokens).map(({ start, end }) => ({
    rows: order.slice(start, end),
    width: lengths[start]!,
  }));
}

/**
 * Estimated cost of a candidate run of `rows` rows, suffixes padded to `suffix` tokens after a
 * prompt of `prompt` keys: the run's fixed cost (`runCostTokens` of its padded tokens) plus its
 * padded tokens, each costing its share of the weights and of attention over the prompt (a
 * suffix's own keys are few beside a prompt's, and counting them would tip near-ties of padding
 * towards extra runs, which cost more than the model says). For one prompt this is
 * {@link planRuns}' model, scaled. An infinite run cost becomes a finite one that still dwarfs any
 * run, so that sums of costs still compare (fewest runs first). No suffix: no model run, no cost.
 */
function runCost(rows: number, suffix: number, prompt: number, limits: PlanLimits): number {
  if (suffix === 0) return 0;
  const perToken = limits.costs.token + limits.costs.key * prompt;
  const fixed = Number.isFinite(limits.runCostTokens) ? limits.runCostTokens * perToken : Number.MAX_VALUE / 1e6;
  return fixed + rows * suffix * perToken;
}

/**
 * Candidate rows each on its own cache copy. Two orders are planned, longest suffix first (least
 * suffix padding) and longest prompt first (fewest attended keys); the cheaper plan is returned.
 */
export function planPerRowRuns(
  prompts: readonly number[],
  fed: ReadonlyArray<readonly number[]>,
  limits: PlanLimits,
): { runs: CandidateRun[]; cost: number } {
  const all: CandidateRow[] = [];
  const suffix: number[] = [];
  const prompt: number[] = [];
  for (let p = 0; p < fed.length; p++) {
    for (let c = 0; c < fed[p]!.length; c++) {
      all.push({ prompt: p, candidate: c });
      suffix.push(fed[p]![c]!);
      prompt.push(prompts[p]!);
    }
  }
  let best: { order: number[]; spans: Span[]; cost: number } | null = null;
  for (const order of [descendingOrder(suffix, prompt), descendingOrder(prompt, suffix)]) {
    const plan = cutRuns(pick(suffix, order), pick(prompt, order), limits);
    if (best === null || plan.cost < best.cost) best = { order, ...plan };
  }
  const { order, spans, cost } = best!;
  const rows = pick(all, order);
  return { runs: spans.map(({ start, end }) => ({ rows: rows.slice(start, end), caches: null })), cost };
}

/**
 * Cuts candidate rows (in the given order) into consecutive runs of at most `maxRows`, minimising
 * the estimated cost: per run, (`runCostTokens` + rows × padded suffix) × (token cost + key cost ×
 * the run's longest prompt).
 */
function cutRuns(suffix: readonly number[], prompt: readonly number[], limits: PlanLimits): { spans: Span[]; cost: number } {
  const n = suffix.length;
  const best = new Array<number>(n + 1).fill(Infinity);
  const from = new Array<number>(n + 1).fill(0);
  best[0] = 0;
  for (let i = 1; i <= n; i++) {
    let L = 0;
    let P = 0;
    for (let j = i - 1; j >= Math.max(0, i - limits.maxRows); j--) {
      L = Math.max(L, suffix[j]!);
      P = Math.max(P, prompt[j]!);
      if (j < i - 1 && (i - j) * L * limits.vocab > limits.maxCandidateLogits) break;
      const cost = best[j]! + runCost(i - j, L, P, limits);
      // <=: on a tie the longer run (fewer runs) wins, as in planRuns
      if (cost <= best[i]!) {
        best[i] = cost;
        from[i] = j;
      }
    }
  }
  const spans: Span[] = [];
  for (let i = n; i > 0; i = from[i]!) spans.unshift({ start: from[i]!, end: i });
  return { spans, cost: best[n]! };
}

/**
 * Runs for a grouped-cache graph: a run feeds the caches of some prompt rows once, each serving
 * the same number of consecutive candidate rows. Prompt rows with the same candidate count form a
 * group (longest prompts first); each row's candidates, longest first, are cut at common positions
 * into slices (the cuts of least estimated cost), and slice [a, b) of as many rows as fit
 * `maxRows` forms a run. With `units` (fan-out), rows are grouped by unit size too and a run takes
 * whole units (a unit's rows have one prompt and one candidate list, so they sort side by side).
 */
export function planGroupedRuns(
  prompts: readonly number[],
  fed: ReadonlyArray<readonly number[]>,
  limits: PlanLimits,
  units?: readonly number[],
): { runs: CandidateRun[]; cost: number } {
  const unitSize = new Map<number, number>();
  if (units) for (const u of units) unitSize.set(u, (unitSize.get(u) ?? 0) + 1);
  const sizeOf = (r: number) => (units ? unitSize.get(units[r]!)! : 1);
  const byCount = new Map<string, number[]>();
  fed.forEach((cs, r) => {
    const key = `${cs.length}:${sizeOf(r)}`;
    if (cs.length > 0) byCount.set(key, [...(byCount.get(key) ?? []), r]);
  });
  const runs: CandidateRun[] = [];
  let cost = 0;
  for (const members of byCount.values()) {
    const byPrompt = descendingOrder(members.map((r) => prompts[r]!)).map((i) => members[i]!);
    // A unit larger than a run cannot stay whole: its rows are planned one by one.
    const unit = sizeOf(members[0]!) <= limits.maxRows ? sizeOf(members[0]!) : 1;
    const group = planGroup(byPrompt, prompts, fed, limits, unit);
    runs.push(...group.runs);
    cost += group.cost;
  }
  return { runs, cost };
}

/** The slices of one group of prompt rows with equal candidate counts (see {@link planGroupedRuns}). */
function planGroup(
  members: readonly number[],
  prompts: readonly number[],
  fed: ReadonlyArray<readonly number[]>,
  limits: PlanLimits,
  unit = 1,
): { runs: CandidateRun[]; cost: number } {
  const order = members.map((r) => descendingOrder(fed[r]!));
  const n = order[0]!.length;
  // lead[i][k]: member i's suffix at sorted position k, the longest of any of its slices from k;
  // leadMax[k] the longest over the members.
  const lead = members.map((r, i) => pick(fed[r]!, order[i]!));
  const leadMax = new Array<number>(n).fill(0);
  for (const row of lead) for (let k = 0; k < n; k++) if (row[k]! > leadMax[k]!) leadMax[k] = row[k]!;
  const group: Group = { members, prompts, lead, leadMax, limits, unit };
  const best = new Array<number>(n + 1).fill(Infinity);
  const from = new Array<number>(n + 1).fill(0);
  best[0] = 0;
  for (let end = 1; end <= n; end++) {
    for (let start = end - 1; start >= Math.max(0, end - Math.floor(limits.maxRows / unit)); start--) {
      if (start < end - 1 && unit * (end - start) * leadMax[start]! * limits.vocab > limits.maxCandidateLogits) break;
      const cost = best[start]! + sliceCost(group, start, end - start);
      // <=: on a tie the longer slice (fewer runs) wins, as in planRuns
      if (cost <= best[end]!) {
        best[end] = cost;
        from[end] = start;
      }
    }
  }
  const runs: CandidateRun[] = [];
  for (let end = n; end > 0; end = from[end]!) {
    const start = from[end]!;
    const per = membersPerRun(group, start, end - start);
    const slice: CandidateRun[] = [];
    for (let j = 0; j < members.length; j += per) {
      const caches = members.slice(j, j + per);
      const rows: CandidateRow[] = [];
      for (const [i, prompt] of caches.entries()) for (let k = start; k < end; k++) rows.push({ prompt, candidate: order[j + i]![k]! });
      slice.push({ rows, caches });
    }
    runs.unshift(...slice);
  }
  return { runs, cost: best[n]! };
}

/** One group's planning state (module-level helpers rather than closures: see {@link descendingOrder}). */
interface Group {
  members: readonly number[];
  prompts: readonly number[];
  lead: number[][];
  leadMax: number[];
  limits: PlanLimits;
  /** Members per unit: a run takes a multiple of it. */
  unit: number;
}

/** Member rows per run for a slice of `size` candidates from sorted position `start`. */
function membersPerRun(g: Group, start: number, size: number): number {
  const L = g.leadMax[start]!;
  const byLogits = L > 0 ? Math.floor(g.limits.maxCandidateLogits / (size * L * g.limits.vocab)) : Infinity;
  const per = Math.max(1, Math.min(Math.floor(g.limits.maxRows / size), byLogits));
  return Math.max(g.unit, per - (per % g.unit));
}

/** Estimated cost of a slice: its runs of {@link membersPerRun} members each. */
function sliceCost(g: Group, start: number, size: number): number {
  const per = membersPerRun(g, start, size);
  let cost = 0;
  for (let j = 0; j < g.members.length; j += per) {
    const end = Math.min(g.members.length, j + per);
    let L = 0;
    for (let i = j; i < end; i++) L = Math.max(L, g.lead[i]![start]!);
    cost += runCost((end - j) * size, L, g.prompts[g.members[j]!]!, g.limits);
  }
  return cost;
}
