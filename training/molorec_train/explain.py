"""Why a target is missed, measured on the recipe's own evaluation rows (no new model runs).

Two questions the pretrained recipe's targets raise, each answered from the saved test cases, the
per-case scores of ``scripts/eval-rows.mjs`` and the training split:

* **Warm start** (LLM rows below SASRec, some below popularity): how often the positive is simply
  the most popular candidate; how much the LLM's scores already follow popularity (Spearman ρ with
  log training counts, within each case); whether adding popularity to the LLM's scores closes
  the gap (a fusion whose weight is chosen on the other half of the cases); and what item-to-item
  co-occurrence alone, with no titles at all, reaches. If co-occurrence reaches SASRec and the
  fusion does not, the warm-start signal is collaborative: it lives in item IDs, not in titles.
* **The mixture** (entropy picks an adapter that ranks worse): per λ, the mean candidate score
  (mean log-prob per title token: what the token entropy rewards) beside the positive's margin
  over the negatives (what ranking needs).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

# The eval rows an explanation reads: label → scripts/eval-rows.mjs row name.
LLM_ROWS = {"base": "base", "G (λ 0)": "lambda=0", "WA (λ 0.5)": "lambda=0.5", "S (λ 1)": "lambda=1"}
FUSION_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
COOCCURRENCE_WINDOWS = (1, 3, 10)


def average_ranks(values: Sequence[float]) -> list[float]:
    """0-based ranks, ties sharing their mean rank (as Spearman's ρ needs)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's ρ; None when either side is constant (no order to agree with)."""
    ra, rb = average_ranks(a), average_ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    if not va or not vb:
        return None
    return sum((x - ma) * (y - mb) for x, y in zip(ra, rb)) / math.sqrt(va * vb)


def zscores(values: Sequence[float]) -> list[float]:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((x - m) ** 2 for x in values) / len(values))
    return [(x - m) / sd if sd else 0.0 for x in values]


def top_rank(scores: Sequence[float], label: int) -> bool:
    """The positive ranks first (score descending, then index: the runtime's order)."""
    return all(scores[label] > s if k < label else scores[label] >= s for k, s in enumerate(scores) if k != label)


def cooccurrence_counts(sequences: Sequence[Sequence[str]], window: int) -> dict[tuple[str, str], int]:
    """How often item b follows item a within `window` steps in the training sequences."""
    out: dict[tuple[str, str], int] = {}
    for seq in sequences:
        for i, a in enumerate(seq):
            for b in seq[i + 1 : i + 1 + window]:
                out[(a, b)] = out.get((a, b), 0) + 1
    return out


def cooccurrence_hit_rate(cases: Sequence[Mapping], co: Mapping[tuple[str, str], int], counts: Mapping[str, int], seed: int) -> float:
    """NDCG@1 of scoring a candidate by how often it followed the history's items in training
    (popularity, then a seeded coin, break ties): a title-blind item-to-item baseline."""
    rng = random.Random(f"{seed}:cooccurrence")
    hits = 0
    for c in cases:
        scores = [
            sum(co.get((h, y), 0) for h in c["history_ids"]) + 1e-3 * counts.get(y, 0) + 1e-6 * rng.random() for y in c["candidate_ids"]
        ]
        hits += top_rank(scores, c["label"])
    return hits / max(len(cases), 1)


def log_popularity(case: Mapping, counts: Mapping[str, int]) -> list[float]:
    return [math.log1p(counts.get(i, 0)) for i in case["candidate_ids"]]


def positive_most_popular(cases: Sequence[Mapping], counts: Mapping[str, int]) -> float:
    """Share of cases whose positive has strictly more training interactions than every negative."""
    hits = 0
    for c in cases:
        pop = [counts.get(i, 0) for i in c["candidate_ids"]]
        hits += all(pop[c["label"]] > p for k, p in enumerate(pop) if k != c["label"])
    return hits / max(len(cases), 1)


def fusion_hits(cases: Sequence[Mapping], scores: Sequence[Sequence[float]], pops: Sequence[Sequence[float]], weight: float) -> list[bool]:
    """Per case: does z(LLM score) + weight · z(log popularity) rank the positive first?"""
    return [top_rank([a + weight * b for a, b in zip(zscores(s), zscores(p))], c["label"]) for c, s, p in zip(cases, scores, pops)]


def cross_fitted_fusion(
    cases: Sequence[Mapping], scores: Sequence[Sequence[float]], pops: Sequence[Sequence[float]], weights: Sequence[float] = FUSION_WEIGHTS
) -> tuple[float, list[float]]:
    """NDCG@1 of the LLM + popularity fusion with its weight chosen on the other half of the cases
    (even / odd positions), so that no case scores under a weight picked on its own label. Returns
    the NDCG@1 over all cases and the two weights chosen (the smaller one on ties)."""
    hits = {w: fusion_hits(cases, scores, pops, w) for w in weights}
    total, chosen = 0, []
    for fold in (0, 1):
        fit = [k for k in range(len(cases)) if k % 2 != fold]
        best = max(weights, key=lambda w: (sum(hits[w][k] for k in fit), -w))
        chosen.append(best)
        total += sum(hits[best][k] for k in range(len(cases)) if k % 2 == fold)
    return total / max(len(cases), 1), chosen


def row_profile(cases: Sequence[Mapping], scores: Sequence[Sequence[float]], pops: Sequence[Sequence[float]]) -> dict:
    """One LLM row on one cell: NDCG@1, mean candidate score, the positive's margin over the mean
    negative, mean within-case ρ with log popularity (None when popularity is constant, as on cold
    cells), and the cross-fitted popularity fusion."""
    margins, means, rhos = [], [], []
    for c, s, p in zip(cases, scores, pops):
        neg = [v for k, v in enumerate(s) if k != c["label"]]
        margins.append(s[c["label"]] - sum(neg) / len(neg))
        means.append(sum(s) / len(s))
        rho = spearman(s, p)
        if rho is not None:
            rhos.append(rho)
    fused, weights = cross_fitted_fusion(cases, scores, pops)
    n = max(len(cases), 1)
    return {
        "ndcg1": sum(top_rank(s, c["label"]) for c, s in zip(cases, scores)) / n,
        "mean_score": sum(means) / n,
        "margin": sum(margins) / n,
        "rho_popularity": sum(rhos) / len(rhos) if rhos else None,
        "fused_ndcg1": fused,
        "fusion_weights": weights,
    }


def explain_cell(
    cases: Sequence[Mapping],
    lines: Sequence[Mapping],
    counts: Mapping[str, int],
    sequences: Sequence[Sequence[str]],
    seed: int,
) -> dict:
    """The measurements of one (domain, split) cell. `lines` are eval rows (`{"i", "scores"}`) of
    the cases to explain; `cases` the saved test cases they index; `counts` and `sequences` the
    training split's popularity and item sequences."""
    picked = [cases[x["i"]] for x in lines]
    pops = [log_popularity(c, counts) for c in picked]
    rows = {
        label: row_profile(picked, [x["scores"][name] for x in lines], pops)
        for label, name in LLM_ROWS.items()
        if lines and name in lines[0]["scores"]
    }
    return {
        "cases": len(picked),
        "positive_most_popular": positive_most_popular(picked, counts),
        "cooccurrence": {w: cooccurrence_hit_rate(picked, cooccurrence_counts(sequences, w), counts, seed) for w in COOCCURRENCE_WINDOWS},
        "rows": rows,
    }
