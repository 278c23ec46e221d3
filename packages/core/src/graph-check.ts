import type { InferenceSession } from "./backend.js";
import { isMolorecError, MolorecError } from "./errors.js";
import type { LoraMixer } from "./lora-mixture.js";
import { kvNames, type PackManifest } from "./manifest.js";
import type { ModelPack } from "./pack.js";
import { int64, tensor, type TensorLike } from "./tensor.js";

/** Graph inputs a pack's graph may have without the manifest saying so (scoring shortcuts). */
const OPTIONAL_INPUTS = ["num_logits_to_keep", "target_ids"] as const;
const KV_OUTPUT = /^present\.(\d+)\.(key|value)$/;

function mismatch(pack: ModelPack, what: string, details: Record<string, unknown> = {}): MolorecError {
  return new MolorecError(
    "MALFORMED_PACK",
    `${pack.location}/${pack.manifest.files.model} does not match ${pack.location}/molorec.json: ${what}. The manifest describes another model, or the graph was exported with other settings; re-export the pack with \`molorec-train export\`.`,
    { details: { file: pack.manifest.files.model, ...details } },
  );
}

/** The graph inputs the manifest implies, each of which molorec feeds on every run. */
export function expectedInputs(manifest: PackManifest): string[] {
  const names = ["input_ids", "attention_mask", "position_ids"];
  for (let i = 0; i < manifest.model.numLayers; i++) names.push(kvNames.pastKey(i), kvNames.pastValue(i));
  for (const t of manifest.lora.targets) names.push(t.inputA, t.inputB);
  names.push(manifest.lora.scaleInput);
  if (manifest.model.sharedLayers > 0) names.push("row_source");
  return names;
}

/** The graph outputs the manifest implies. */
export function expectedOutputs(manifest: PackManifest): string[] {
  const names = ["logits"];
  for (let i = 0; i < manifest.model.numLayers; i++) names.push(kvNames.presentKey(i), kvNames.presentValue(i));
  return names;
}

/**
 * Checks the session's input and output names against the manifest: every input molorec will feed
 * exists, every input the graph has is one molorec feeds (an input nobody feeds fails every run),
 * the KV cache has exactly `numLayers` layers, and `target_ids` comes with `token_logprobs`.
 * Throws `MALFORMED_PACK` naming the first difference.
 */
export function checkGraphNames(session: InferenceSession, pack: ModelPack): void {
  const m = pack.manifest;
  const inputs = new Set(session.inputNames);
  const outputs = new Set(session.outputNames);
  const wanted = expectedInputs(m);
  const missing = wanted.filter((n) => !inputs.has(n));
  if (missing.length) {
    throw mismatch(
      pack,
      `the graph has no input ${missing.slice(0, 3).join(", ")}${missing.length > 3 ? ` (and ${missing.length - 3} more)` : ""} (numLayers ${m.model.numLayers}, ${m.lora.targets.length} LoRA targets)`,
      {
        missingInputs: missing.slice(0, 20),
      },
    );
  }
  const known = new Set<string>([...wanted, ...OPTIONAL_INPUTS]);
  const extra = session.inputNames.filter((n) => !known.has(n));
  if (extra.length) {
    throw mismatch(
      pack,
      `the graph has inputs the manifest does not account for: ${extra.slice(0, 3).join(", ")}${extra.length > 3 ? ", …" : ""} (numLayers ${m.model.numLayers})`,
      {
        unexpectedInputs: extra.slice(0, 20),
      },
    );
  }
  const missingOut = expectedOutputs(m).filter((n) => !outputs.has(n));
  if (missingOut.length)
    throw mismatch(pack, `the graph has no output ${missingOut.slice(0, 3).join(", ")}`, { missingOutputs: missingOut.slice(0, 20) });
  const deeper = session.outputNames.filter((n) => Number(KV_OUTPUT.exec(n)?.[1] ?? -1) >= m.model.numLayers);
  if (deeper.length)
    throw mismatch(pack, `the graph returns ${deeper[0]}, but model.numLayers is ${m.model.numLayers}`, {
      unexpectedOutputs: deeper.slice(0, 20),
    });
  if (inputs.has("target_ids") !== outputs.has("token_logprobs"))
    throw mismatch(pack, "the graph has one of input target_ids and output token_logprobs without the other");
}

function dimsOf(t: TensorLike | undefined): readonly number[] {
  return t && Array.isArray(t.dims) ? t.dims : [];
}

/**
 * One model run of a single token on a one-slot past that `attention_mask` hides, with the base
 * model's LoRA feeds, fed exactly as scoring feeds it. Checks what names cannot show: the logits'
 * last axis is `model.vocabSize` and finite, the KV cache has `numKvHeads` × `headDim`, and the
 * cache pairs with rows as `model.kvCache` says (a concat graph returns the past plus the token,
 * 2 positions; a grouped one the token only). A fan-out graph (`model.sharedLayers` K > 0) runs
 * one source as two rows: layers below K must return one row, the others two. A run the graph
 * refuses (LoRA shapes, KV shapes) is a pack error too. Throws `MALFORMED_PACK`.
 */
export async function probeGraph(session: InferenceSession, pack: ModelPack, mixer: LoraMixer): Promise<void> {
  const { numLayers, numKvHeads, headDim, vocabSize, kvCache, sharedLayers } = pack.manifest.model;
  const token = pack.manifest.prompt.bosTokenId ?? pack.manifest.prompt.endTokenId;
  const inputs = new Set(session.inputNames);
  const rows = sharedLayers > 0 ? 2 : 1;
  const pastOf = (n: number) => tensor("float32", new Float32Array(n * numKvHeads * headDim), [n, numKvHeads, 1, headDim]);
  const feeds: Record<string, TensorLike> = {
    input_ids: int64([token], [1, 1]),
    attention_mask: int64([0, 1], [1, 2]),
    position_ids: int64([0], [1, 1]),
    ...mixer.feeds(rows === 2 ? [[], []] : [[]]),
  };
  for (let i = 0; i < numLayers; i++) {
    const past = pastOf(i < sharedLayers ? 1 : rows);
    feeds[kvNames.pastKey(i)] = past;
    feeds[kvNames.pastValue(i)] = past;
  }
  if (inputs.has("num_logits_to_keep")) feeds.num_logits_to_keep = int64([1], [1]);
  if (inputs.has("target_ids")) feeds.target_ids = int64([token], [1, 1]);
  if (sharedLayers > 0) feeds.row_source = int64([0, 0], [2]);
  // Per layer: the rows its present must have (the first and last layer; around the split when fanning out).
  const want = new Map<string, number>([
    [kvNames.presentKey(0), sharedLayers > 0 ? 1 : rows],
    [kvNames.presentValue(numLayers - 1), rows],
  ]);
  if (sharedLayers > 0) {
    want.set(kvNames.presentKey(sharedLayers - 1), 1);
    want.set(kvNames.presentKey(sharedLayers), rows);
  }
  const fetch = ["logits", ...want.keys()];
  let out: Record<string, TensorLike>;
  try {
    out = await session.run(feeds, fetch);
  } catch (cause) {
    if (isMolorecError(cause)) throw cause;
    throw mismatch(pack, `a 1-token probe run built from the manifest failed: ${(cause as Error)?.message ?? cause}`);
  }
  const logits = out.logits;
  const ld = dimsOf(logits);
  if (ld.length !== 3 || ld[0] !== rows || ld[1] !== 1 || ld[2] !== vocabSize || logits!.data.length !== rows * vocabSize) {
    throw mismatch(
      pack,
      `the probe run returned logits of shape [${ld.join(", ")}], expected [${rows}, 1, ${vocabSize}] (model.vocabSize)`,
      {
        logitsShape: [...ld],
        vocabSize,
      },
    );
  }
  const data = logits!.data as Float32Array;
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i]!))
      throw mismatch(pack, `the probe run's logits hold ${data[i]} (token ${i}): the model's weights are not finite`);
  }
  const positions = kvCache === "grouped" ? 1 : 2;
  for (const [name, n] of want) {
    const d = dimsOf(out[name]);
    if (d.length !== 4 || d[0] !== n || d[1] !== numKvHeads || d[3] !== headDim) {
      throw mismatch(
        pack,
        `the probe run returned ${name} of shape [${d.join(", ")}], expected [${n}${sharedLayers > 0 ? ` (model.sharedLayers ${sharedLayers})` : ""}, ${numKvHeads} (numKvHeads), positions, ${headDim} (headDim)]`,
      );
    }
    if (d[2] !== positions) {
      throw mismatch(
        pack,
        `${name} holds ${d[2]} positions after one token on a one-slot past; a "${kvCache}" KV cache (model.kvCache) holds ${positions}`,
      );
    }
  }
}

/**
 * Validates an open session against its pack before anything is served: {@link checkGraphNames},
 * then {@link probeGraph}.
 */
export async function validateSession(session: InferenceSession, pack: ModelPack, mixer: LoraMixer): Promise<void> {
  checkGraphNames(session, pack);
  await probeGraph(session, pack, mixer);
}
