import { MolorecError } from "./errors.js";
import type { ModelPack } from "./pack.js";
import { tensor, type TensorLike } from "./tensor.js";

/**
 * A weighted set of adapters applied to one batch row. Weights are the λ of each adapter;
 * an empty list means the base model.
 */
export type AdapterWeights = ReadonlyArray<readonly [adapter: string, weight: number]>;

interface ConcatenatedLora {
  adapters: string[];
  offsets: number[];
  rank: number;
  /** Graph input name -> tensor, for every LoRA target. */
  weights: Record<string, TensorLike<"float32">>;
}

/**
 * Builds LoRA feeds for the graph: the adapters of a batch are concatenated along the rank
 * (`A = [A1; A2]`, `B = [B1 | B2]`) and each row gets its own scale vector, so rows of one
 * batch can carry different mixtures. Modules an adapter does not wrap get zero blocks;
 * "no adapter" is rank 1 with scale 0 (rank-0 inputs crash WebGPU). Concatenations are cached
 * per adapter set: they only change when a request names different adapters.
 */
export class LoraMixer {
  private readonly cache = new Map<string, ConcatenatedLora>();

  constructor(private readonly pack: ModelPack) {}

  private concatenated(names: string[]): ConcatenatedLora {
    const key = names.join("\u0000");
    const hit = this.cache.get(key);
    if (hit) return hit;
    const adapters = names.map((n) => {
      const a = this.pack.adapters.get(n);
      if (!a)
        throw new MolorecError(
          "INVALID_MIXTURE",
          `adapter "${n}" is not in this pack; it has: ${[...this.pack.adapters.keys()].join(", ") || "none"}.`,
        );
      return a;
    });
    const rank = Math.max(
      1,
      adapters.reduce((s, a) => s + a.rank, 0),
    );
    const offsets: number[] = [];
    let off = 0;
    for (const a of adapters) {
      offsets.push(off);
      off += a.rank;
    }
    const weights: Record<string, TensorLike<"float32">> = {};
    for (const t of this.pack.manifest.lora.targets) {
      const A = new Float32Array(rank * t.inFeatures);
      const B = new Float32Array(t.outFeatures * rank);
      adapters.forEach((ad, k) => {
        const m = ad.modules.get(t.module);
        if (!m) return;
        A.set(m.a, offsets[k]! * t.inFeatures);
        for (let o = 0; o < t.outFeatures; o++) {
          for (let r = 0; r < ad.rank; r++) B[o * rank + offsets[k]! + r] = m.b[o * ad.rank + r]!;
        }
      });
      weights[t.inputA] = tensor("float32", A, [rank, t.inFeatures]);
      weights[t.inputB] = tensor("float32", B, [t.outFeatures, rank]);
    }
    const built = { adapters: names, offsets, rank, weights };
    if (this.cache.size > 16) this.cache.clear();
    this.cache.set(key, built);
    return built;
  }

  /** Feeds for a batch whose row `i` uses `rows[i]`. */
  feeds(rows: readonly AdapterWeights[]): Record<string, TensorLike> {
    const names = [...new Set(rows.flatMap((r) => r.filter(([, w]) => w !== 0).map(([n]) => n)))].sort();
    const lora = this.concatenated(names);
    const scale = new Float32Array(rows.length * lora.rank);
    rows.forEach((row, i) => {
      for (const [name, w] of row) {
        if (!Number.isFinite(w)) throw new MolorecError("INVALID_MIXTURE", `adapter weight for "${name}" must be a finite number`);
        if (w === 0) continue;
        const k = lora.adapters.indexOf(name);
        const ad = this.pack.adapters.get(name)!;
        scale.fill(w * ad.scaling, i * lora.rank + lora.offsets[k]!, i * lora.rank + lora.offsets[k]! + ad.rank);
      }
    });
    return { ...lora.weights, [this.pack.manifest.lora.scaleInput]: tensor("float32", scale, [rows.length, lora.rank]) };
  }
}
