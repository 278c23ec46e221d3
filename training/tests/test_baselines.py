"""Baselines: metrics by hand, popularity and random scorers, SASRec on an obvious pattern, CLI."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from molorec_train import cli
from molorec_train.baselines import (
    SASRecBaseline,
    SASRecConfig,
    evaluate,
    expected_random,
    metrics_from_ranks,
    ndcg_at,
    popularity_counts,
    popularity_scorer,
    random_scorer,
    rank_of_label,
    run_baselines,
    training_sequences,
)
from molorec_train.data import Options, prepare_all, read_jsonl


def case(cands: list[str], label: int, history: list[str] | None = None) -> dict:
    return {"history_ids": history or ["h"], "candidate_ids": cands, "label": label}


def test_metrics_by_hand() -> None:
    assert rank_of_label([0.1, 0.9, 0.5], 1) == 0
    assert rank_of_label([0.1, 0.9, 0.5], 2) == 1
    assert rank_of_label([0.1, 0.9, 0.5], 0) == 2
    assert rank_of_label([1.0, 1.0, 1.0], 0) == 2  # ties count against the positive
    assert ndcg_at(0, 1) == 1.0 and ndcg_at(1, 1) == 0.0
    assert ndcg_at(1, 3) == pytest.approx(1 / math.log2(3)) and ndcg_at(2, 3) == 0.5 and ndcg_at(3, 3) == 0.0
    m = metrics_from_ranks([0, 1, 2, 5])
    assert m["ndcg@1"] == 0.25
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(3) + 0.5) / 4)
    assert m["hr@3"] == 0.75 and m["cases"] == 4
    e = expected_random(20)
    assert e["ndcg@1"] == 0.05 and e["hr@3"] == 0.15
    assert e["ndcg@3"] == pytest.approx((1 + 1 / math.log2(3) + 0.5) / 20)
    # evaluate() wires scores to labels
    cases = [case(["a", "b", "c"], 1), case(["a", "b", "c"], 0)]
    got = evaluate(lambda cs: [[0.0, 1.0, 0.5] for _ in cs], cases)
    assert got["ndcg@1"] == 0.5 and got["ndcg@3"] == pytest.approx((1 + 0.5) / 2)


def test_popularity_ranking() -> None:
    train = [
        {"history_ids": ["a", "b"], "target_id": "c"},
        {"history_ids": ["a"], "target_id": "b"},
        {"history_ids": ["c", "a"], "target_id": "a"},
    ]
    counts = popularity_counts(train, maxlen=10)
    assert counts == {"a": 4, "b": 2, "c": 2}
    cases = [case(["b", "x", "a"], 2), case(["x", "b", "a"], 1)]
    scores = popularity_scorer(counts, seed=0)(cases)
    assert scores[0][2] > scores[0][0] > scores[0][1]  # a (4) > b (2) > x (0)
    assert [rank_of_label(s, c["label"]) for s, c in zip(scores, cases)] == [0, 1]
    # unseen items tie at 0 and are ordered at random, deterministically with the seed
    cold = [case([str(i) for i in range(20)], 0) for _ in range(300)]
    s1, s2 = popularity_scorer(counts, 1)(cold), popularity_scorer(counts, 1)(cold)
    assert s1 == s2
    assert 0.0 < evaluate(popularity_scorer(counts, 1), cold)["ndcg@1"] < 0.12


def test_popularity_counts_each_training_interaction_once() -> None:
    """Sliding windows repeat an item in every later window's history: counting histories would
    weigh the first item of a long sequence up to maxlen + 1 times, the last one once."""
    seq = ["a", "b", "c", "d", "e"]
    windows = [{"history_ids": seq[max(0, k - 3) : k], "target_id": seq[k]} for k in range(1, len(seq))]
    other = [{"history_ids": ["e"], "target_id": "a"}, {"history_ids": ["e", "a"], "target_id": "f"}]
    assert training_sequences(windows + other, maxlen=3) == [seq, ["e", "a", "f"]]
    assert popularity_counts(windows + other, maxlen=3) == {"a": 2, "b": 1, "c": 1, "d": 1, "e": 2, "f": 1}


def test_random_is_seeded_and_near_chance() -> None:
    cases = [case([str(i) for i in range(20)], i % 20) for i in range(2000)]
    a, b = evaluate(random_scorer(0), cases), evaluate(random_scorer(0), cases)
    assert a == b
    assert a["ndcg@1"] == pytest.approx(0.05, abs=0.02) and a["hr@3"] == pytest.approx(0.15, abs=0.03)
    assert evaluate(random_scorer(1), cases) != a


def write_successor_domain(root: Path, n_items: int = 100, n_users: int = 150, length: int = 12, seed: int = 0) -> None:
    """Item i is always followed by item i+1 (mod n_items)."""
    rng = random.Random(seed)
    d = root / "succ"
    d.mkdir(parents=True)
    (d / "items.tsv").write_text("item_id\ttitle\n" + "".join(f"{i}\tItem {i}\n" for i in range(n_items)))
    rows = []
    for u in range(n_users):
        s = rng.randrange(n_items)
        rows.append({"user": str(u), "items": [str((s + k) % n_items) for k in range(length)]})
    (d / "sequences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def succ_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("succ")
    write_successor_domain(root)
    prepare_all(root, root / "out", ["succ"], ["succ"], Options(seed=0, cold_fraction=0.25, negatives=19), log=lambda _: None)
    return root / "out"


def test_sasrec_chains_rebuild_sequences() -> None:
    seq = [str(i) for i in range(25)]
    train = [{"history_ids": seq[max(0, t - 10) : t], "target_id": seq[t]} for t in range(1, 25)]
    train += [{"history_ids": ["3", "4"], "target_id": "9"}]  # a new sequence
    model = SASRecBaseline(seq, SASRecConfig(maxlen=10))
    assert model.chains(train) == [[int(x) + 1 for x in seq], [4, 5, 10]]
    inp, pos = model.epoch_chunks(model.chains(train), random.Random(0))
    # every transition is trained exactly once per epoch
    pairs = sorted((a, b) for i, p in zip(inp, pos) for a, b in zip(i, p) if b)
    assert pairs == sorted([(k + 1, k + 2) for k in range(24)] + [(4, 5), (5, 10)])
    assert all(len(i) == 10 for i in inp)


def test_sasrec_learns_successor_pattern(succ_prepared: Path) -> None:
    cfg = SASRecConfig(dim=32, epochs=20, batch_size=64, lr=3e-3, dropout=0.1)
    res = run_baselines(succ_prepared, "succ", ("warm",), seed=0, only=("random", "sasrec"), sasrec_config=cfg, progress=lambda _: None)
    rows = {r["baseline"]: r for r in res["splits"]["warm"]["results"]}
    assert res["splits"]["warm"]["cases"] == len(read_jsonl(succ_prepared / "succ" / "test_warm.jsonl"))
    assert rows["sasrec"]["ndcg@1"] > 0.6, rows
    assert rows["random"]["ndcg@1"] < 0.2
    assert rows["sasrec"]["best_epoch"] >= 1 and rows["sasrec"]["config"]["epochs"] == 20


def test_cli_baselines(succ_prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "res.json"
    rc = cli.main(
        ["baselines", "--prepared", str(succ_prepared), "--domain", "succ", "--split", "both", "--epochs", "2", "--json", str(out)]
    )
    text = capsys.readouterr().out
    assert rc == 0 and "sasrec epoch 2/2" in text and "popularity" in text and "succ cold" in text
    res = json.loads(out.read_text())
    assert set(res["splits"]) == {"warm", "cold"} and res["splits"]["cold"]["cases"] > 0
    assert [r["baseline"] for r in res["splits"]["cold"]["results"]] == ["random", "popularity", "sasrec"]
    rc = cli.main(["baselines", "--prepared", str(succ_prepared), "--domain", "nope"])
    assert rc == 2 and "prepare-data" in capsys.readouterr().err
