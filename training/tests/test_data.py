"""prepare-data: reading, splits, cold-start hold-out, negatives, determinism, CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from molorec_train import cli
from molorec_train.data import (
    DataError,
    Example,
    Options,
    clean_title,
    leave_one_out,
    prepare_all,
    prepare_domain,
    read_domain,
    read_items,
    read_jsonl,
    read_prepared_items,
    sample_negatives,
)

REAL_DATA = Path("/work/shared/data")


# ----------------------------------------------------------------------------- synthetic domains


def write_items(folder: Path, titles: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["item_id\ttitle"] + [f"{i}\t{t}" for i, t in titles.items()]
    (folder / "items.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_sequences_domain(root: Path, name: str = "seqdom", n_items: int = 200, n_users: int = 60, seed: int = 1) -> dict[str, list[str]]:
    """Users with distinct random sequences (length 4..14). Item 'e' has an empty title and
    'zz' is not in items.tsv: both must be skipped. Returns {user: cleaned item list}."""
    rng = random.Random(seed)
    titles = {f"i{k}": f"  Item   number\t{k} " for k in range(n_items)}
    titles["e"] = "   "
    write_items(root / name, titles)
    rows, seqs = [], {}
    for u in range(n_users):
        items = rng.sample(list(titles)[:n_items], rng.randint(4, 14))
        raw = items[:2] + ["e", "zz"] + items[2:] if u % 10 == 0 else items
        rows.append({"user": str(u), "items": raw})
        seqs[str(u)] = items
    write_jsonl(root / name / "sequences.jsonl", rows)
    return seqs


def make_examples_domain(root: Path, name: str = "exdom", n_items: int = 120, with_train: bool = True, seed: int = 2) -> list[dict]:
    rng = random.Random(seed)
    titles = {str(k): f"Thing {k}" for k in range(n_items)}
    write_items(root / name, titles)
    rows = []
    splits = (["train"] * 6 + ["valid", "test"]) if with_train else ["valid", "test"]
    for n in range(160):
        hist = rng.sample(list(titles), rng.randint(0, 12))
        target = rng.choice([t for t in titles if t not in hist])
        rows.append({"history": hist, "target": target, "split": splits[n % len(splits)]})
    write_jsonl(root / name / "examples.jsonl", rows)
    return rows


def prepared(out: Path, name: str) -> dict:
    d = out / name
    titles, held = read_prepared_items(d)
    res = {"meta": json.loads((d / "meta.json").read_text()), "titles": titles, "held": held}
    for f in ("train", "valid", "test_warm", "test_cold"):
        res[f] = read_jsonl(d / f"{f}.jsonl") if (d / f"{f}.jsonl").exists() else None
    return res


def check_cases(cases: list[dict], titles: dict[str, str], pool: set[str], negatives: int = 19) -> None:
    for c in cases:
        cands, hist, label = c["candidate_ids"], c["history_ids"], c["label"]
        assert len(cands) == negatives + 1 and len(set(cands)) == len(cands)
        assert 0 <= label < len(cands)
        pos = cands[label]
        negs = [x for j, x in enumerate(cands) if j != label]
        assert pos not in negs
        assert not set(negs) & set(hist), "a negative is in the case's own history"
        assert set(cands) <= pool, "candidate outside the positive's pool"
        assert c["candidates"] == [titles[i] for i in cands]
        assert c["history"] == [titles[i] for i in hist]
        assert 1 <= len(hist) <= 10


# ----------------------------------------------------------------------------- reading


def test_clean_title_and_items(tmp_path: Path) -> None:
    assert clean_title("  a \t b\n\nc  ") == "a b c"
    write_items(tmp_path, {"1": " A  b ", "2": "  ", "3": "C"})
    titles, stats = read_items(tmp_path / "items.tsv")
    assert titles == {"1": "A b", "3": "C"}
    assert stats["items_empty_title"] == 1


@pytest.mark.parametrize(
    "content, match",
    [
        ("id\ttitle\n1\tA\n", "expected header"),
        ("item_id\ttitle\n1\tA\nno-tab-here\n", r"items.tsv:3: expected"),
        ("item_id\ttitle\n1\tA\n1\tB\n", r"items.tsv:3: duplicate item id"),
    ],
)
def test_bad_items_file(tmp_path: Path, content: str, match: str) -> None:
    (tmp_path / "items.tsv").write_text(content)
    with pytest.raises(DataError, match=match):
        read_items(tmp_path / "items.tsv")


def test_bad_domain_folders(tmp_path: Path) -> None:
    write_items(tmp_path / "d", {"1": "A", "2": "B"})
    with pytest.raises(DataError, match="neither sequences.jsonl nor examples.jsonl"):
        read_domain(tmp_path / "d")
    (tmp_path / "d" / "sequences.jsonl").write_text('{"user": "u", "items": ["1", "2"]}\n\n{"user": "v", "items": [1, \n')
    with pytest.raises(DataError, match=r"sequences.jsonl:3: invalid JSON"):
        read_domain(tmp_path / "d")
    (tmp_path / "d" / "sequences.jsonl").write_text('{"user": "u", "items": "1 2"}\n')
    with pytest.raises(DataError, match=r"sequences.jsonl:1: expected a list"):
        read_domain(tmp_path / "d")
    (tmp_path / "d" / "sequences.jsonl").unlink()
    (tmp_path / "d" / "examples.jsonl").write_text(
        '{"history": ["1"], "target": "2", "split": "train"}\n{"history": ["1"], "target": "2", "split": "dev"}\n'
    )
    with pytest.raises(DataError, match=r"examples.jsonl:2: split must be"):
        read_domain(tmp_path / "d")
    with pytest.raises(DataError, match="not a folder"):
        read_domain(tmp_path / "missing")


def test_unknown_ids_are_skipped_with_a_count(tmp_path: Path) -> None:
    seqs = make_sequences_domain(tmp_path)
    raw = read_domain(tmp_path / "seqdom")
    assert raw.stats["unknown_ids_skipped"] == 2 * 6  # 'e' (empty title) and 'zz', users 0,10,..,50
    assert raw.sequences == list(seqs.values())
    assert "e" not in raw.titles and raw.titles["i3"] == "Item number 3"


# ----------------------------------------------------------------------------- splits


def test_leave_one_out_by_hand() -> None:
    seq = ["a", "b", "c", "d", "e", "f"]
    train, valid, test = leave_one_out([seq], max_history=3)
    assert test == [Example(("c", "d", "e"), "f")]
    assert valid == [Example(("b", "c", "d"), "e")]
    assert train == [Example(("a",), "b"), Example(("a", "b"), "c"), Example(("a", "b", "c"), "d")]
    # held-out items are removed from the training part before windowing, not from valid/test
    train, valid, test = leave_one_out([seq], max_history=3, held_out=frozenset({"b"}))
    assert train == [Example(("a",), "c"), Example(("a", "c"), "d")]
    assert test == [Example(("c", "d", "e"), "f")]


def test_sequences_target_split(tmp_path: Path) -> None:
    seqs = make_sequences_domain(tmp_path)
    prepare_all(tmp_path, tmp_path / "out", ["seqdom"], ["seqdom"], Options(seed=0), log=lambda _: None)
    p = prepared(tmp_path / "out", "seqdom")
    titles, held = p["titles"], p["held"]
    universe = {i for s in seqs.values() for i in s}
    assert len(held) == round(0.2 * len(universe)) and held <= universe
    assert p["meta"]["counts"]["held_out"] == len(held)
    # held-out items appear in no training example, as history or target
    for ex in p["train"]:
        assert not held & set(ex["history_ids"]) and ex["target_id"] not in held
        assert ex["history"] == [titles[i] for i in ex["history_ids"]] and ex["target"] == titles[ex["target_id"]]
        assert 1 <= len(ex["history_ids"]) <= 10
    # training = windows of each user's sequence without its last two items (held-out removed)
    expected = []
    for s in seqs.values():
        part = [i for i in s[:-2] if i not in held]
        expected += [(tuple(part[max(0, t - 10) : t]), part[t]) for t in range(1, len(part))]
    assert [(tuple(e["history_ids"]), e["target_id"]) for e in p["train"]] == expected
    # each test case is a user's last item after their (<= 10) previous items; valid the one before
    last = {tuple(s[:-1][-10:]): s[-1] for s in seqs.values()}
    prev = {tuple(s[:-2][-10:]): s[-2] for s in seqs.values()}
    for c in p["test_warm"] + p["test_cold"]:
        assert last[tuple(c["history_ids"])] == c["candidate_ids"][c["label"]]
    for c in p["valid"]:
        assert prev[tuple(c["history_ids"])] == c["candidate_ids"][c["label"]]
    # no test/valid target appears as a training example of the same position
    train_pairs = set(expected)
    for c in p["test_warm"] + p["valid"]:
        assert (tuple(c["history_ids"]), c["candidate_ids"][c["label"]]) not in train_pairs
    # warm / cold split by the positive, with negatives from the matching pool
    assert len(p["test_warm"]) + len(p["test_cold"]) == len(seqs)
    assert p["test_cold"] and all(c["candidate_ids"][c["label"]] in held for c in p["test_cold"])
    assert all(c["candidate_ids"][c["label"]] not in held for c in p["test_warm"] + p["valid"])
    check_cases(p["test_cold"], titles, set(held))
    check_cases(p["test_warm"] + p["valid"], titles, universe - held)
    # label positions are shuffled, not constant
    assert len({c["label"] for c in p["test_warm"]}) > 3


def test_examples_target_and_general(tmp_path: Path) -> None:
    rows = make_examples_domain(tmp_path)
    make_examples_domain(tmp_path, "nogtrain", with_train=False)
    out = tmp_path / "out"
    lines: list[str] = []
    prepare_all(tmp_path, out, ["exdom", "nogtrain"], ["exdom"], Options(seed=3, negatives=9), log=lines.append)
    assert len(lines) == 2 and lines[0].startswith("exdom") and "test_cold=" in lines[0] and "test_cold" not in lines[1]
    p = prepared(out, "exdom")
    held = p["held"]
    kept = [r for r in rows if r["history"]]
    # histories are cut to 10 items first; an example is dropped if a held-out item remains in it
    train_src = [r for r in kept if r["split"] == "train" and r["target"] not in held and not held & set(r["history"][-10:])]
    assert [(e["history_ids"], e["target_id"]) for e in p["train"]] == [(r["history"][-10:], r["target"]) for r in train_src]
    test_src = [r for r in kept if r["split"] == "test"]
    assert p["meta"]["counts"]["cases_skipped_small_pool"] == 0
    assert len(p["test_warm"]) + len(p["test_cold"]) == len(test_src)
    assert sum(r["target"] in held for r in test_src) == len(p["test_cold"])
    check_cases(p["test_cold"], p["titles"], set(held), negatives=9)
    universe = {i for r in kept for i in [*r["history"], r["target"]]}
    check_cases(p["test_warm"] + p["valid"], p["titles"], universe - held, negatives=9)
    # a general domain without train examples trains on valid + test and has no valid/test files
    g = prepared(out, "nogtrain")
    assert g["meta"]["role"] == "general" and not g["held"]
    assert g["valid"] is None and g["test_warm"] is None and g["test_cold"] is None
    src = [r for r in read_jsonl(tmp_path / "nogtrain" / "examples.jsonl") if r["history"]]
    assert len(g["train"]) == len(src)


def test_general_domain_with_train_split(tmp_path: Path) -> None:
    make_examples_domain(tmp_path)
    prepare_all(tmp_path, tmp_path / "out", ["exdom"], [], Options(), log=lambda _: None)
    g = prepared(tmp_path / "out", "exdom")
    assert g["valid"] and g["test_warm"] is None and not g["held"]
    assert sorted(p.name for p in (tmp_path / "out" / "exdom").iterdir()) == ["items.tsv", "meta.json", "train.jsonl", "valid.jsonl"]


def test_determinism_and_caps(tmp_path: Path) -> None:
    make_sequences_domain(tmp_path)
    run = lambda out, **kw: prepare_all(tmp_path, tmp_path / out, ["seqdom"], ["seqdom"], Options(**kw), log=lambda _: None)  # noqa: E731
    run("a", seed=5)
    run("b", seed=5)
    run("c", seed=6)
    files = ["train.jsonl", "valid.jsonl", "test_warm.jsonl", "test_cold.jsonl", "items.tsv"]
    read = lambda out: [(tmp_path / out / "seqdom" / f).read_bytes() for f in files]  # noqa: E731
    assert read("a") == read("b")
    assert read("a") != read("c")
    run("d", seed=5, max_test=7)
    run("e", seed=5, max_test=7)
    assert read("d") == read("e")
    d = prepared(tmp_path / "d", "seqdom")
    a = prepared(tmp_path / "a", "seqdom")
    assert len(d["test_warm"]) == 7 and len(d["valid"]) == 7 and len(d["test_cold"]) == min(7, len(a["test_cold"]))
    assert d["train"] == a["train"]
    assert d["meta"]["options"]["max_test"] == 7 and d["meta"]["counts"]["test_warm_available"] == len(a["test_warm"])


def test_negatives_helper() -> None:
    rng = random.Random(0)
    pool = [str(i) for i in range(30)]
    for _ in range(50):
        excl = set(rng.sample(pool, 10))
        negs = sample_negatives(pool, 19, excl, rng)
        assert negs is not None and len(set(negs)) == 19 and not set(negs) & excl
    assert sample_negatives(pool, 21, set(pool[:10]), rng) is None


def test_small_pool_cases_are_skipped(tmp_path: Path) -> None:
    make_sequences_domain(tmp_path, n_items=30, n_users=20)
    raw = read_domain(tmp_path / "seqdom")
    p = prepare_domain(raw, "target", Options(negatives=19, cold_fraction=0.2))
    assert p.test_cold == [] and p.meta["counts"]["cases_skipped_small_pool"] >= p.meta["counts"]["test_cold_available"] > 0


def test_cli_prepare_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_sequences_domain(tmp_path)
    make_examples_domain(tmp_path)
    rc = cli.main(
        [
            "prepare-data",
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "out"),
            "--targets",
            "seqdom",
            "--max-test",
            "5",
            "--negatives",
            "4",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "seqdom" in out and "exdom" in out
    assert len(read_jsonl(tmp_path / "out" / "seqdom" / "test_warm.jsonl")) == 5
    assert all(len(c["candidate_ids"]) == 5 for c in read_jsonl(tmp_path / "out" / "seqdom" / "test_warm.jsonl"))
    rc = cli.main(["prepare-data", "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--targets", "nope"])
    assert rc == 2 and "nope" in capsys.readouterr().err


@pytest.mark.skipif(not (REAL_DATA / "scientific-amazon2018").is_dir(), reason="shared data not available")
def test_real_scientific(tmp_path: Path) -> None:
    prepare_all(REAL_DATA, tmp_path, ["scientific-amazon2018"], ["scientific-amazon2018"], Options(max_test=100), log=lambda _: None)
    p = prepared(tmp_path, "scientific-amazon2018")
    held = p["held"]
    assert 250 < len(held) < 400 and len(p["train"]) > 5000
    assert all(not held & set(e["history_ids"]) and e["target_id"] not in held for e in p["train"])
    assert len(p["test_warm"]) == 100 and len(p["test_cold"]) == 100
    check_cases(p["test_cold"], p["titles"], set(held))
    check_cases(p["test_warm"], p["titles"], set(p["titles"]) - held)
