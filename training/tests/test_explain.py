"""explain.py: the measurements behind the recipe's "why" section, each against a hand-worked answer."""

import random

import pytest

from molorec_train import explain
from molorec_train.recipe import rank_of


def test_spearman_known_values() -> None:
    assert explain.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert explain.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks a = (0, 1, 2), b = (0.5, 0.5, 2): Pearson of those ranks is sqrt(3)/2.
    assert explain.spearman([1, 2, 3], [5, 5, 9]) == pytest.approx(3**0.5 / 2)
    assert explain.spearman([1, 2, 3], [7, 7, 7]) is None  # no order to agree with (a cold cell's popularity)


def test_top_rank_breaks_ties_as_the_runtime_does() -> None:
    rng = random.Random(0)
    for _ in range(500):
        scores = [rng.choice([0.0, 0.5, 1.0]) for _ in range(6)]
        label = rng.randrange(6)
        assert explain.top_rank(scores, label) == (rank_of(scores, label) == 0)


def test_cooccurrence_counts_within_the_window() -> None:
    co = explain.cooccurrence_counts([["a", "b", "c"], ["a", "b"]], window=1)
    assert co == {("a", "b"): 2, ("b", "c"): 1}
    assert explain.cooccurrence_counts([["a", "b", "c"]], window=2)[("a", "c")] == 1


def test_cooccurrence_ranks_the_item_that_followed_the_history() -> None:
    co = explain.cooccurrence_counts([["x", "y"], ["x", "y"], ["x", "z"]], window=1)
    cases = [
        {"history_ids": ["x"], "candidate_ids": ["z", "y", "w"], "label": 1},
        {"history_ids": ["x"], "candidate_ids": ["y", "w"], "label": 1},
    ]
    assert explain.cooccurrence_hit_rate(cases, co, {}, seed=0) == 0.5


def test_positive_most_popular_needs_a_strict_lead() -> None:
    counts = {"a": 5, "b": 3, "c": 5}
    cases = [
        {"candidate_ids": ["a", "b"], "label": 0},
        {"candidate_ids": ["a", "c"], "label": 0},
        {"candidate_ids": ["b", "a"], "label": 0},
    ]
    assert explain.positive_most_popular(cases, counts) == pytest.approx(1 / 3)


def test_fusion_weight_is_chosen_on_the_other_half() -> None:
    # Even cases: the LLM is right and popularity wrong; odd cases: the reverse. Each half's weight is
    # fitted on the other half, so every case is scored under the weight that suits the other kind.
    cases, scores, pops = [], [], []
    for k in range(8):
        cases.append({"label": 0})
        if k % 2 == 0:
            scores.append([1.0, 0.0, 0.0])
            pops.append([0.0, 0.0, 3.0])
        else:
            scores.append([0.0, 0.0, 1.0])
            pops.append([3.0, 0.0, 0.0])
    ndcg, weights = explain.cross_fitted_fusion(cases, scores, pops, weights=(0.0, 4.0))
    assert weights == [4.0, 0.0]
    assert ndcg == 0.0


def test_fusion_finds_popularity_when_it_carries_the_label() -> None:
    rng = random.Random(1)
    cases, scores, pops = [], [], []
    for _ in range(40):
        label = rng.randrange(5)
        cases.append({"label": label})
        scores.append([rng.random() for _ in range(5)])
        pops.append([2.0 if i == label else rng.random() for i in range(5)])
    ndcg, weights = explain.cross_fitted_fusion(cases, scores, pops)
    assert ndcg == 1.0 and min(weights) >= 1.0


def test_explain_cell_profiles_each_row() -> None:
    cases = [
        {"history_ids": ["x"], "candidate_ids": ["y", "z"], "label": 0},
        {"history_ids": ["x"], "candidate_ids": ["z", "y"], "label": 1},
    ]
    lines = [
        {"i": 0, "scores": {"base": [-1.0, -2.0], "lambda=1": [-0.5, -0.5]}},
        {"i": 1, "scores": {"base": [-1.0, -3.0], "lambda=1": [-0.2, -0.1]}},
    ]
    out = explain.explain_cell(cases, lines, {"y": 4, "z": 1}, [["x", "y"]], seed=0)
    assert out["cases"] == 2 and out["positive_most_popular"] == 1.0
    assert out["cooccurrence"][1] == 1.0  # y followed x in training, and y is every positive
    base, s = out["rows"]["base"], out["rows"]["S (λ 1)"]
    assert base["ndcg1"] == 0.5 and s["ndcg1"] == 1.0
    assert base["margin"] == pytest.approx((1.0 + -2.0) / 2)
    assert s["mean_score"] == pytest.approx((-0.5 + -0.15) / 2)
    assert base["rho_popularity"] == pytest.approx(0.0)  # +1 on the first case, -1 on the second
    assert set(out["rows"]) == {"base", "S (λ 1)"}  # rows the eval did not score are left out
