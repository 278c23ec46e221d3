import { rankByScore } from "./math.js";

/** 0-based rank of the labelled candidate under the scores (ties broken by candidate order). */
export function rankOf(scores: ArrayLike<number>, label: number): number {
  return rankByScore(scores).indexOf(label);
}

/** NDCG@k with one relevant item: `1 / log2(rank + 2)` if it ranks in the top k, else 0. */
export function ndcgAtK(rank: number, k: number): number {
  return rank < k ? 1 / Math.log2(rank + 2) : 0;
}

/** HR@k (hit rate): 1 if the relevant item ranks in the top k. */
export function hitRateAtK(rank: number, k: number): number {
  return rank < k ? 1 : 0;
}

/** Running means of ranking metrics over test cases. */
export class RankingMetrics {
  private n = 0;
  private sums = { ndcg1: 0, ndcg3: 0, hr3: 0, mrr: 0 };

  add(rank: number): void {
    this.n++;
    this.sums.ndcg1 += ndcgAtK(rank, 1);
    this.sums.ndcg3 += ndcgAtK(rank, 3);
    this.sums.hr3 += hitRateAtK(rank, 3);
    this.sums.mrr += 1 / (rank + 1);
  }

  get count(): number {
    return this.n;
  }

  summary(): { count: number; ndcg1: number; ndcg3: number; hr3: number; mrr: number } {
    const d = Math.max(this.n, 1);
    return {
      count: this.n,
      ndcg1: this.sums.ndcg1 / d,
      ndcg3: this.sums.ndcg3 / d,
      hr3: this.sums.hr3 / d,
      mrr: this.sums.mrr / d,
    };
  }
}
