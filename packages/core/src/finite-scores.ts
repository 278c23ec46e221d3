import { MolorecError } from "./errors.js";

/**
 * Refuses scores that are not finite numbers. They come from a model or adapter whose weights
 * overflow (a finite but huge LoRA scaling, say); answered as they are, they would rank
 * arbitrarily and reach clients as `"score": null`.
 */
export function checkFiniteScores(scores: readonly number[]): void {
  const at = scores.findIndex((s) => !Number.isFinite(s));
  if (at >= 0) {
    throw new MolorecError(
      "INFERENCE_FAILED",
      `the model scored candidate ${at} as ${scores[at]}: the pack's weights overflow for this request. Report it with the request; the pack needs fixing.`,
      { details: { candidate: at } },
    );
  }
}
