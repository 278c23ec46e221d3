/** Options of {@link searchLambda}. */
export interface LambdaSearchOptions {
  /** Points of the first, coarse grid over [0, 1] (inclusive). Default 11. */
  gridPoints?: number;
  /** Refinement rounds, each a finer grid around the best point so far. Default 2. */
  refineRounds?: number;
  /** Points per refinement round. Default 5. */
  refinePoints?: number;
}

/** A λ search result: the best λ and every (λ, objective) evaluated, sorted by λ. */
export interface LambdaSearchResult {
  lambda: number;
  objective: number;
  evaluated: Array<{ lambda: number; objective: number }>;
}

function grid(lo: number, hi: number, n: number): number[] {
  if (n === 1) return [(lo + hi) / 2];
  return Array.from({ length: n }, (_, i) => lo + ((hi - lo) * i) / (n - 1));
}

/**
 * Derivative-free minimisation of an objective over λ ∈ [0, 1]: a coarse grid, then finer grids
 * around the best point. `evaluate` receives several λ at once so callers can score them as
 * rows of one batch. Runs on any inference runtime: no autograd needed at the edge.
 */
export async function searchLambda(
  evaluate: (lambdas: number[]) => Promise<number[]>,
  options: LambdaSearchOptions = {},
): Promise<LambdaSearchResult> {
  const { gridPoints = 11, refineRounds = 2, refinePoints = 5 } = options;
  const seen = new Map<number, number>();
  const evalNew = async (ls: number[]) => {
    const fresh = [...new Set(ls.map((l) => Math.round(l * 1e6) / 1e6))].filter((l) => !seen.has(l));
    if (fresh.length === 0) return;
    const values = await evaluate(fresh);
    fresh.forEach((l, i) => seen.set(l, values[i]!));
  };
  const best = () => [...seen].reduce((a, b) => (b[1] < a[1] || (b[1] === a[1] && b[0] < a[0]) ? b : a));
  await evalNew(grid(0, 1, gridPoints));
  let step = 1 / Math.max(gridPoints - 1, 1);
  for (let r = 0; r < refineRounds; r++) {
    const [l] = best();
    await evalNew(grid(Math.max(0, l - step), Math.min(1, l + step), refinePoints));
    step /= (refinePoints - 1) / 2;
  }
  const [lambda, objective] = best();
  return { lambda, objective, evaluated: [...seen].sort((a, b) => a[0] - b[0]).map(([l, o]) => ({ lambda: l, objective: o })) };
}
