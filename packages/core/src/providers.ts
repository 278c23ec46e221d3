import { MolorecError } from "./errors.js";

/**
 * Why one execution provider was not used. `session`: the runtime could not open the model on it;
 * otherwise the stage its backend names for "cannot run here" (checked before opening: no GPU
 * adapter, no provider library).
 */
export interface ProviderFailure {
  stage: string;
  message: string;
}

/** An execution provider to try: why it cannot run here (if it cannot), and how to open the model on it. */
export interface ProviderCandidate<S> {
  name: string;
  unavailable?: string | null;
  open(): Promise<S>;
}

/** The provider that opened the model, and the failures of those tried before it (by provider name). */
export interface ProviderChoice<S> {
  session: S;
  provider: string;
  failures: Record<string, ProviderFailure>;
}

/** Options of {@link openFirstProvider}. */
export interface OpenOptions {
  /** Stage recorded for a candidate that is `unavailable`. Default `"unavailable"`. */
  unavailableStage?: string;
  /** Said after the failures when none opened, e.g. what to install. */
  hint?: string;
  /** More `details` of the error. */
  details?: Record<string, unknown>;
}

/**
 * Tries execution providers in order and returns the first that opens the model. When none does,
 * throws one `BACKEND_UNAVAILABLE` naming every failure (`details.failures`), its cause the last
 * runtime error. A coded error from `open` is the backend's own verdict and is thrown as it is.
 *
 * @example
 * ```ts
 * const { session, provider } = await openFirstProvider("onnxruntime-node", [
 *   { name: "cuda", unavailable: cudaInstalled ? null : "no CUDA libraries", open: () => create("cuda") },
 *   { name: "cpu", open: () => create("cpu") },
 * ]);
 * ```
 */
export async function openFirstProvider<S>(
  runtime: string,
  candidates: ReadonlyArray<ProviderCandidate<S>>,
  options: OpenOptions = {},
): Promise<ProviderChoice<S>> {
  const failures: Record<string, ProviderFailure> = {};
  let cause: unknown;
  for (const candidate of candidates) {
    if (candidate.unavailable) {
      failures[candidate.name] = { stage: options.unavailableStage ?? "unavailable", message: candidate.unavailable };
      continue;
    }
    try {
      return { session: await candidate.open(), provider: candidate.name, failures };
    } catch (e) {
      if (e instanceof MolorecError) throw e;
      cause = e;
      failures[candidate.name] = { stage: "session", message: (e as Error)?.message ?? String(e) };
    }
  }
  const lines = Object.entries(failures).map(([name, f]) => `${name} (${f.stage}): ${f.message}`);
  throw new MolorecError(
    "BACKEND_UNAVAILABLE",
    `${runtime} could not open the model: ${lines.join("; ") || "no execution provider to try"}${options.hint ? `. ${options.hint}` : ""}`,
    { cause, details: { ...options.details, failures } },
  );
}
