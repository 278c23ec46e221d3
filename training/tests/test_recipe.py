"""The recipe end to end at micro scale, and the per-module (AdaMerging) reference's baking."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from molorec_train.adamerging import premixed_adapter
from molorec_train.adapters import load_adapter
from molorec_train.fixture import fixture_titles as fake_titles
from molorec_train.recipe import REPO, RecipeConfig, run_recipe
from molorec_train.report import render
from molorec_train.train import BaseModelConfig, LoraTrainConfig, PretrainConfig, collate, pack_blocks


def write_sequence_domain(root: Path, name: str, n_items: int, n_users: int, seed: int) -> None:
    rng = random.Random(seed)
    d = root / name
    d.mkdir(parents=True)
    titles = fake_titles(n_items, seed)
    (d / "items.tsv").write_text("item_id\ttitle\n" + "".join(f"i{i}\t{t}\n" for i, t in enumerate(titles)))
    with (d / "sequences.jsonl").open("w") as f:
        for u in range(n_users):
            start = rng.randrange(n_items)
            items = [f"i{(start + k) % n_items}" for k in range(rng.randint(5, 9))]
            f.write(json.dumps({"user": f"u{u}", "items": items}) + "\n")


def test_collate_puts_the_loss_on_answer_tokens_only():
    ids, mask, labels = collate([([5, 6, 7], [8, 0]), ([5], [9, 9, 0])], pad=1)
    assert ids.tolist() == [[5, 6, 7, 8, 0], [5, 9, 9, 0, 1]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert labels.tolist() == [[-100, -100, -100, 8, 0], [-100, 9, 9, 0, -100]]


def test_pack_blocks_separates_documents_and_drops_the_tail():
    assert pack_blocks([[1, 2], [3]], block=2, eos=0) == [[1, 2], [0, 3]]


def test_premixed_adapter_equals_the_per_module_mixture(built, tmp_path):
    general = load_adapter("general", built.adapters["general"])
    domain = load_adapter("domain:test", built.adapters["domain:test"])
    modules = sorted(set(general.weights) | set(domain.weights))
    lambdas = {m: (i + 1) / (len(modules) + 1) for i, m in enumerate(modules)}
    mixed = load_adapter("mixed", premixed_adapter(general, domain, lambdas, tmp_path / "mixed"))
    assert mixed.scaling == 1.0
    for m, lam in lambdas.items():
        want = 0
        for ad, w in ((general, 1 - lam), (domain, lam)):
            if m in ad.weights:
                a, b = ad.weights[m]
                want = want + w * ad.scaling * (b @ a)
        a, b = mixed.weights[m]
        np.testing.assert_allclose(mixed.scaling * (b @ a), want, rtol=1e-5, atol=1e-6)


def micro_config() -> RecipeConfig:
    """The scratch recipe at micro scale: general domains gen-a and gen-b, target tgt, tiny models and step counts."""
    return RecipeConfig(
        general=("gen-a", "gen-b"),
        targets=("tgt",),
        max_test=6,
        calibration_prompts=4,
        vocab_size=300,
        base=BaseModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1, vocab_size=300),
        pretrain=PretrainConfig(steps=4, batch_size=2, block_size=32, warmup=1),
        general_lora=LoraTrainConfig(steps=2, batch_size=2, rank=2, alpha=4),
        domain_lora=LoraTrainConfig(steps=2, batch_size=2, rank=2, alpha=4),
        max_general_examples_per_domain=50,
        max_pretrain_sequences_per_domain=50,
        title_passes=1,
        sasrec_epochs=1,
    )


@pytest.mark.skipif(not (REPO / "packages/runtime-node/dist/cli.js").is_file(), reason="the Node runtime is not built (pnpm build)")
def test_recipe_runs_end_to_end_at_micro_scale(tmp_path):
    data = tmp_path / "data"
    for i, name in enumerate(["gen-a", "gen-b", "tgt"]):
        write_sequence_domain(data, name, n_items=60, n_users=40, seed=i)
    cfg = micro_config()
    torch.manual_seed(0)
    results = run_recipe(
        data, tmp_path / "work", cfg, pack_out=tmp_path / "pack", base_out=tmp_path / "base", lora_jobs=2, log=lambda *_: None
    )
    cell = results["table"]["tgt/warm"]
    for key in (
        "random",
        "popularity",
        "sasrec",
        "general",
        "domain",
        "wa",
        "calibrated",
        "adaptive",
        "per-module",
        "calibrated-candidates",
        "adaptive-candidates",
    ):
        assert key in cell, key
    assert cell["calibrated"]["count"] == 6
    manifest = json.loads((tmp_path / "pack/molorec.json").read_text())
    assert 0.0 <= manifest["domains"]["tgt"]["calibratedLambda"] <= 1.0
    assert "tgt@permodule" in manifest["domains"]
    from molorec_train.export import load_model

    assert load_model(tmp_path / "base").config.hidden_size == 32  # the pack's base, loadable by transformers
    # LoRAs trained in worker processes equal one trained again here, alone
    from safetensors.numpy import load_file

    from molorec_train.recipe import LoraJob, run_lora_job
    from molorec_train.train import load_encoder

    work = tmp_path / "work"
    _, eos, pad = load_encoder(work / "tokenizer")
    job = LoraJob("tgt", ("tgt",), replace(cfg.domain_lora, seed=cfg.seed + 2), cfg.seed + 2, None)
    run_lora_job(
        job,
        prepared=str(work / "prepared"),
        tok_dir=str(work / "tokenizer"),
        base_dir=str(work / "base"),
        loras=str(tmp_path / "again"),
        spec=replace(cfg.prompt, endTokenId=eos),
        pad=pad,
        log=lambda *_: None,
    )
    a, b = load_file(str(work / "loras/tgt/adapter_model.safetensors")), load_file(str(tmp_path / "again/tgt/adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    md = render(results, cfg, quick=True)
    assert "| Calibrated λ (token entropy, per domain) |" in md and "tgt/cold NDCG@1" in md
    assert "| Calibrated λ (candidate-score entropy, per domain) |" in md
    # the candidate-entropy row is evaluated at the λ its own calibration found
    assert cell["calibrated-candidates"]["lambda"] == pytest.approx(results["candidate_lambdas"]["tgt"])
    assert cell["calibrated"]["lambda"] == pytest.approx(manifest["domains"]["tgt"]["calibratedLambda"], abs=1e-4)
    # The stored λ chosen by the information objective instead: the same work folder, steps 6-9 again.
    info_cfg = replace(cfg, calibration_objective="information")
    info = run_recipe(data, work, info_cfg, lora_jobs=1, log=lambda *_: None)
    cal = json.loads((work / "calibration-tgt.json").read_text())
    assert cal["entropyObjective"] == "information" and all(e["objective"] <= 1e-9 for e in cal["evaluated"])  # minus an MI
    assert info["table"]["tgt/warm"]["calibrated"]["lambda"] == pytest.approx(cal["lambda"], abs=1e-4)
    assert "| Calibrated λ (mutual information, per domain) |" in render(info, info_cfg, quick=True)
    # LoRAs trained with other settings are never silently reused.
    with pytest.raises(ValueError, match="rank_weight 0.0, not 1.0"):
        run_recipe(data, work, replace(cfg, domain_lora=replace(cfg.domain_lora, rank_weight=1.0)), log=lambda *_: None)


def test_stale_lora_reports_settings_that_differ(tmp_path):
    from molorec_train.recipe import stale_lora

    assert stale_lora(tmp_path, LoraTrainConfig()) is None  # no record
    (tmp_path / "training.json").write_text(json.dumps({"config": {"steps": 600, "seed": 2}}))  # predates rank_weight
    assert stale_lora(tmp_path, LoraTrainConfig(steps=600, seed=2)) is None
    assert stale_lora(tmp_path, LoraTrainConfig(steps=600, seed=2, rank_weight=1.0)) == "rank_weight 0.0, not 1.0"
    assert stale_lora(tmp_path, LoraTrainConfig(steps=300, seed=2)) == "steps 600, not 300"


def test_report_rerun_keeps_the_hand_written_part(tmp_path):
    from molorec_train import report

    path = tmp_path / "results.md"
    path.write_text("old generated table\n\n" + report.KEEP_MARKER + "\n\n## Notes by hand\n")
    orig = report.render
    try:
        report.render = lambda results, cfg, quick: "# new table\n"
        report.write_report({}, None, path)
    finally:
        report.render = orig
    text = path.read_text()
    assert text.startswith(report.begin("scratch") + "\n# new table\n" + report.end("scratch")) and "old generated" not in text
    assert text.endswith(report.KEEP_MARKER + "\n\n## Notes by hand\n")
    # the other recipe's block goes first; each rerun replaces its own block only
    try:
        report.render = lambda results, cfg, quick: f"# {getattr(cfg, 'pretrained', None)} run {results['n']}\n"
        smollm2 = type("Cfg", (), {"pretrained": "smollm2"})()
        report.write_report({"n": 1}, smollm2, path)
        report.write_report({"n": 2}, None, path)
        report.write_report({"n": 3}, smollm2, path)
    finally:
        report.render = orig
    text = path.read_text()
    assert text.index("# smollm2 run 3") < text.index("# None run 2") < text.index(report.KEEP_MARKER)
    assert "run 1" not in text and "new table" not in text and text.endswith("## Notes by hand\n")


def test_listwise_term_teaches_the_lora_to_rank(built, tmp_path):
    """rank_weight > 0 adds the cross-entropy of the target over its sampled candidates, scored as
    the runtime scores: here the generative answers are always title B, the ranking cases always
    put title A first, so only a LoRA trained with the term learns to rank A above the others."""
    from molorec_train.ranking import Case, candidate_scores, listwise_loss
    from molorec_train.reference import merged_model
    from molorec_train.train import train_lora

    rng = np.random.default_rng(0)
    title = lambda: [int(t) for t in rng.integers(3, 300, 4)] + [0]  # noqa: E731
    a, b = title(), title()
    prompts = [[int(t) for t in rng.integers(3, 300, 12)] for _ in range(16)]
    examples = [(p, b) for p in prompts]
    cases = [Case("d", p, [a, *[title() for _ in range(5)]]) for p in prompts]
    losses = {}
    for w in (0.0, 1.0):
        cfg = LoraTrainConfig(
            steps=40, batch_size=4, rank=4, alpha=8, lr=1e-2, seed=0, rank_weight=w, rank_batch=4, targets=("q_proj", "v_proj")
        )
        train_lora(built.model_dir, examples, cfg, tmp_path / str(w), pad=1, log=lambda *_: None, ranking=cases)
        with torch.no_grad():
            losses[w] = float(
                listwise_loss(candidate_scores(merged_model(built.model_dir, {"d": tmp_path / str(w)}, {"d": 1.0}), cases, pad=1))
            )
    assert losses[1.0] < 0.5 * losses[0.0], losses
    with pytest.raises(ValueError, match="ranking cases"):
        train_lora(built.model_dir, examples, LoraTrainConfig(steps=1, rank_weight=1.0), tmp_path / "x", pad=1, log=lambda *_: None)


def test_report_reproduce_line_carries_the_recipe_options():
    from molorec_train.recipe import RecipeConfig
    from molorec_train.report import _options

    cfg = RecipeConfig()
    assert _options(cfg) == ""
    cfg = replace(
        cfg,
        general_lora=replace(cfg.general_lora, rank_weight=0.5),
        domain_lora=replace(cfg.domain_lora, rank_weight=1.0),
        calibration_objective="information",
    )
    assert _options(cfg) == " --rank-weight 1 --general-rank-weight 0.5 --calibration-objective information"


def test_pretrained_report_reproduces_its_flags_and_lists_only_scored_policies():
    from molorec_train.recipe import smollm2_config
    from molorec_train.report import _options, _table

    assert _options(smollm2_config()) == ""
    cfg = replace(smollm2_config(), eval_cases=100, compare_objectives=("information",), permodule=False, adaptive=False)
    assert _options(cfg) == " --eval-cases 100 --compare-objectives 'information' --no-permodule --no-adaptive"
    cell = {"domain": {"ndcg1": 0.2, "ndcg3": 0.3}}
    lines = _table({"a/warm": cell, "a/cold": {}}, [("S", "domain"), ("Adaptive", "adaptive")])
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["S"]  # a row only for what was scored


def test_shortcut_variants_undo_one_training_shortcut_each():
    from molorec_train.recipe import shortcut_variants, smollm2_config

    cfg = smollm2_config()
    variants = shortcut_variants(cfg)
    assert list(variants) == ["steps480", "history160", "all-layers"]
    steps, history, layers = variants["steps480"][1], variants["history160"][1], variants["all-layers"][1]
    assert (steps.steps, steps.max_history_tokens) == (480, 96) and (history.steps, history.max_history_tokens) == (160, 160)
    assert layers.top_layers == 0 and variants["all-layers"][0] == "LoRA on every layer, not the top 10"
    # nothing else changes
    assert replace(steps, steps=160) == replace(history, max_history_tokens=96) == replace(layers, top_layers=10) == cfg.domain_lora
    # histories already as long as served, LoRA already on every layer: only the steps variant
    full = replace(cfg, domain_lora=replace(cfg.domain_lora, max_history_tokens=160, top_layers=0))
    assert list(shortcut_variants(full)) == ["steps480"]


def test_the_recipe_is_a_list_of_steps_that_skip_what_is_done(tmp_path):
    from molorec_train.recipe import RecipeRun, RecipeStep, run_steps, scratch_steps

    names = [s.name.split(".")[0] for s in scratch_steps(RecipeConfig())]
    assert names == [str(i) for i in range(1, 10)]
    ran: list[str] = []
    steps = [
        RecipeStep("a", lambda r: True, lambda r: ran.append("a")),
        RecipeStep("b", lambda r: False, lambda r: ran.append("b")),
    ]
    run = RecipeRun(tmp_path, tmp_path, RecipeConfig(), log=lambda *_: None)
    run_steps(steps, run)
    assert ran == ["b"] and run.cached == ["a"] and set(run.times) == {"a", "b"}


def test_users_fraction_keeps_whole_sequences():
    from molorec_train.recipe import users_fraction

    def windows(user: str, n: int, maxlen: int = 3) -> list[dict]:
        seq = [f"{user}{k}" for k in range(n)]
        return [{"history_ids": seq[max(0, k - maxlen) : k], "target_id": seq[k]} for k in range(1, n)]

    rows = windows("a", 6) + windows("b", 3) + windows("c", 5) + windows("d", 2)
    kept = users_fraction(rows, 0.5, random.Random(0))
    users = {r["target_id"][0] for r in kept}
    assert len(users) == 2
    assert kept == [r for r in rows if r["target_id"][0] in users]  # every window of a kept user, in order
    assert len(users_fraction(rows, 0.01, random.Random(0))) > 0


def check_few_shot(results: dict, work: Path) -> None:
    """The stand-in recipe's step 10: the 30 % LoRA installed, its rows beside the 100 % ones."""
    few = results["few_shot"]["tgt/warm"]
    assert {"G", "100% alone", "100% calibrated", "30% alone", "30% WA", "30% calibrated"} <= set(few)
    paired = few["30%: WA vs alone, paired"]  # the discordant cases are the whole NDCG@1 difference
    assert paired["wa_only"] - paired["alone_only"] == round((few["30% WA"]["ndcg1"] - few["30% alone"]["ndcg1"]) * few["30% WA"]["count"])
    assert "tgt@users30" in json.loads((work / "pack/molorec.json").read_text())["domains"]


def check_adaptive_cases(results: dict, cfg, scored: list[str]) -> None:
    """`adaptive_cases=3`: the adaptive grid on the first 3 cases only, compared with the rest on those."""
    from molorec_train.report import render

    lines = [json.loads(x) for x in scored]
    assert len(lines) > 3 and sum("lambda=0.25" in x["scores"] and "lambda=0.25" in x["tokens"] for x in lines) == 3
    assert all("lambda=1" in x["scores"] for x in lines)  # the table's rows on every case
    cell, sample = results["table"]["tgt/warm"], results["adaptive_sample"]["tgt/warm"]
    assert cell["adaptive"]["count"] == 3 and cell["domain"]["count"] == len(lines)
    assert sample["adaptive"] == cell["adaptive"] and sample["domain"]["count"] == sample["popularity"]["count"] == 3
    md = render(results, cfg, quick=True)
    assert "### Adaptive λ beside the other rows" in md and "(3 cases)" in md and "--adaptive-cases 3" in md


def check_shortcuts(results: dict, md: str, work: Path) -> None:
    """The stand-in recipe's step 12: each shortcut-undone LoRA trained as asked, scored on the recipe's cases."""
    sc = results["shortcuts"]
    # quick: 4 steps, 48-token histories (64 served), LoRA on the top layer of 2
    assert set(sc["variants"]) == {"tgt", "tgt@steps12", "tgt@history64", "tgt@all-layers"}
    saved = json.loads((work / "loras/tgt@steps12/training.json").read_text())
    assert saved["config"]["steps"] == 12 and saved["seconds"] > 0
    assert json.loads((work / "loras/tgt@history64/training.json").read_text())["config"]["max_history_tokens"] == 64
    cell, table = sc["cells"]["tgt/warm"], results["table"]["tgt/warm"]
    assert cell["tgt"]["ndcg1"] == pytest.approx(table["domain"]["ndcg1"])  # the recipe's LoRA: its λ-1 row, same cases
    # LoRA on every layer: its own pack (LoRA inputs on both layers, no fan-out); the others in the recipe's
    layers = json.loads((work / "pack@all-layers/molorec.json").read_text())
    assert {t["module"].split(".")[2] for t in layers["lora"]["targets"]} == {"0", "1"} and "sharedLayers" not in layers["model"]
    assert set(layers["domains"]) == {"tgt@all-layers"} and layers["generalAdapter"] == "general"
    assert {"tgt@steps12", "tgt@history64"} <= set(json.loads((work / "pack/molorec.json").read_text())["domains"])
    assert "tgt@all-layers" not in json.loads((work / "pack/molorec.json").read_text())["domains"]
    for name in ("tgt@steps12", "tgt@history64", "tgt@all-layers"):
        m = cell[name]
        assert m["count"] == cell["tgt"]["count"] == table["random"]["cases"]
        assert m["variant_only"] - m["recipe_only"] == round((m["ndcg1"] - cell["tgt"]["ndcg1"]) * m["count"])
    assert "### Training shortcuts" in md and "12 steps (24 windows), not 4" in md and "--shortcuts tgt" in md
    assert "| LoRA on every layer, not the top 1 " in md and "`pack@all-layers`" in md


def check_edge_and_why(results: dict, md: str, work: Path) -> None:
    """The stand-in recipe's steps 11 (the edge student) and its "why" measurements."""
    cell = results["table"]["tgt/warm"]
    assert "edge" not in cell  # packs/edge has no domain "tgt"
    # the edge student of the stand-in's mixture: packs/demo's tokenizer, scored on the same cases
    assert cell["edge-smollm2"]["count"] == cell["random"]["cases"]
    student = json.loads((work / "edge/pack/molorec.json").read_text())
    assert student["model"]["vocabSize"] == json.loads((REPO / "packs/demo/molorec.json").read_text())["model"]["vocabSize"]
    assert student["quantization"]["bits"] == json.loads((REPO / "packs/edge/molorec.json").read_text())["quantization"]["bits"]
    assert results["edge_bytes"]["edge-smollm2"] > 0
    assert "--distill-edge" in md and "| Edge-size student of this recipe's calibrated mixture" in md
    why = results["explain"]["cells"]["tgt/warm"]
    assert why["cases"] == cell["random"]["cases"] and set(why["rows"]) == {"base", "G (λ 0)", "WA (λ 0.5)", "S (λ 1)"}
    assert why["rows"]["S (λ 1)"]["ndcg1"] == pytest.approx(cell["domain"]["ndcg1"])  # read from the same scores as the table
    assert "### Why, measured on the same cases" in md and "item co-occurrence, no titles" in md


@pytest.mark.skipif(not (REPO / "packages/runtime-node/dist/cli.js").is_file(), reason="the Node runtime is not built (pnpm build)")
def test_the_pretrained_recipe_runs_end_to_end_on_a_stand_in_checkpoint(tmp_path):
    """`recipe --base smollm2 --quick`'s steps on a tiny Llama checkpoint standing in for SmolLM2."""
    from molorec_train import tiny
    from molorec_train.recipe import smollm2_quick_config
    from molorec_train.report import render

    data = tmp_path / "data"
    for i, name in enumerate(["gen-a", "gen-b", "tgt"]):
        write_sequence_domain(data, name, n_items=60, n_users=40, seed=i)
    ckpt = tmp_path / "checkpoint"
    tiny.train_bpe_tokenizer(fake_titles(60, 0) + ["Given the items a user interacted with, History: Next item:"], 300, ckpt)
    tiny.make_model(ckpt, vocab_size=300, seed=3)
    cfg = replace(
        smollm2_quick_config(),
        general=("gen-a", "gen-b"),
        targets=("tgt",),
        checkpoint=str(ckpt),
        few_shot=("tgt",),
        few_shot_fractions=(0.3,),
        distill_edge=True,
        shortcuts=("tgt",),
    )
    # first the essential rows (no comparison objectives, no per-module reference, no few-shot; the
    # adaptive rows on the first 3 cases only) ...
    first_cfg = replace(cfg, compare_objectives=(), permodule=False, few_shot=(), distill_edge=False, shortcuts=(), adaptive_cases=3)
    first = run_recipe(data, tmp_path / "work", first_cfg, lora_jobs=1, log=lambda *_: None)
    assert "per-module" not in first["table"]["tgt/warm"] and "calibrated-candidates" not in first["table"]["tgt/warm"]
    scored = (tmp_path / "work/eval/tgt-warm.rows.jsonl").read_text().splitlines()
    check_adaptive_cases(first, first_cfg, scored)
    # ... then the rest: only the rows the cases lack are scored (the earlier rows are kept as scored)
    results = run_recipe(data, tmp_path / "work", cfg, lora_jobs=1, log=lambda *_: None)
    cell = results["table"]["tgt/warm"]
    for old, new in zip(scored, (tmp_path / "work/eval/tgt-warm.rows.jsonl").read_text().splitlines()):
        old, new = json.loads(old), json.loads(new)
        assert all(new["scores"][k] == v for k, v in old["scores"].items()) and "per-module" in new["scores"]
    assert first["table"]["tgt/warm"]["domain"] == cell["domain"] and results["adaptive_sample"] == {}
    assert {"random", "popularity", "sasrec"} <= set(cell)
    for key in ("base", "general", "domain", "wa", "calibrated", "adaptive", "per-module"):
        assert key in cell and cell[key]["count"] == cell["random"]["cases"], key
    assert {"calibrated-candidates", "calibrated-information", "adaptive-candidates"} <= set(cell)
    assert "demo-1m" not in cell  # packs/demo has no domain "tgt"
    manifest = json.loads((tmp_path / "work/pack/molorec.json").read_text())
    assert {t["module"].split(".")[2] for t in manifest["lora"]["targets"]} == {"1"}  # the top layer only (of 2)
    assert (tmp_path / "work/base").is_symlink()
    check_few_shot(results, tmp_path / "work")
    md = render(results, cfg, quick=True)
    assert "Few-shot plug-in" in md
    check_edge_and_why(results, md, tmp_path / "work")
    check_shortcuts(results, md, tmp_path / "work")
    assert "--base smollm2" in md and "| Base model, no adapter (zero-shot) |" in md and "### The targets, as measured" in md
    # the policies equal the runtime's own eval of the same pack and cases
    import subprocess

    out = tmp_path / "eval.json"
    subprocess.run(
        ["node", str(REPO / "packages/runtime-node/bin/molorec.js"), "eval", "--pack", str(tmp_path / "work/pack"), "--domain", "tgt"]
        + ["--data", str(tmp_path / "work/prepared/tgt"), "--split", "warm", "--mixture", "base,general,domain,wa,calibrated,adaptive"]
        + ["--ep", "cpu", "--out", str(out)],
        check=True,
        capture_output=True,
    )
    for row in json.loads(out.read_text())["results"]:
        assert cell[row["policy"]]["ndcg1"] == pytest.approx(row["ndcg1"]) and cell[row["policy"]]["ndcg3"] == pytest.approx(row["ndcg3"])
    # scripts/calibrate.mjs finds the λ `molorec calibrate` finds
    cli_out = tmp_path / "calibrate.json"
    subprocess.run(
        ["node", str(REPO / "packages/runtime-node/bin/molorec.js"), "calibrate", "--pack", str(tmp_path / "work/pack"), "--domain", "tgt"]
        + ["--data", str(tmp_path / "work/prepared/tgt"), "--n", "4", "--ep", "cpu", "--out", str(cli_out)],
        check=True,
        capture_output=True,
    )
    assert json.loads(cli_out.read_text())["lambda"] == pytest.approx(
        json.loads((tmp_path / "work/calibration-tgt.json").read_text())["lambda"]
    )
    # an interrupted run resumes: every step is done, nothing is redone
    again = run_recipe(data, tmp_path / "work", cfg, lora_jobs=1, log=lambda *_: None)
    assert len(again["cached_steps"]) == len(again["step_seconds"])


def test_add_domain_plugs_a_domain_into_a_copy_with_capped_cases_and_a_title_cap(built, tmp_path):
    from molorec_train.recipe import add_domain

    data = tmp_path / "data"
    write_sequence_domain(data, "newdom", n_items=60, n_users=80, seed=5)
    lines: list[str] = []
    node = (REPO / "packages/runtime-node/dist/cli.js").is_file()
    out = add_domain(
        data,
        "newdom",
        built.pack_dir,
        built.model_dir,
        tmp_path / "work",
        out=tmp_path / "pack2",
        steps=2,
        max_test=7,
        max_title_tokens="auto",
        calibrate="tokens" if node else None,
        calibration_prompts=4,
        log=lines.append,
    )
    assert out == (tmp_path / "pack2").resolve()
    assert "newdom" not in json.loads((built.pack_dir / "molorec.json").read_text())["domains"]  # the source pack is untouched
    manifest = json.loads((out / "molorec.json").read_text())
    assert manifest["domains"]["newdom"]["adapter"] == "domain:newdom"
    assert (out / manifest["adapters"]["domain:newdom"]["path"] / "adapter_model.safetensors").is_file()
    for split in ("warm", "cold"):
        assert sum(1 for _ in (tmp_path / f"work/prepared/newdom/test_{split}.jsonl").open()) <= 7
    assert manifest["prompt"]["maxTitleTokens"] >= json.loads((built.pack_dir / "molorec.json").read_text())["prompt"]["maxTitleTokens"]
    if node:
        assert 0.0 <= manifest["domains"]["newdom"]["calibratedLambda"] <= 1.0
    text = "\n".join(lines)
    assert f"node {REPO}/packages/runtime-node/bin/molorec.js eval --pack {out}" in text  # runs from any folder
    with pytest.raises(FileExistsError):
        add_domain(data, "newdom", built.pack_dir, built.model_dir, tmp_path / "work", out=tmp_path / "pack2", log=lines.append)


def test_title_token_cap_follows_the_domains_titles():
    from molorec_train.prompt import PromptSpec
    from molorec_train.recipe import title_token_cap

    encode = lambda text: text.split()  # noqa: E731
    spec = PromptSpec(maxTitleTokens=4)
    titles = [" ".join(["w"] * n) for n in range(1, 11)] * 3
    assert title_token_cap(titles, encode, spec, "auto", lambda *_: None) == 9  # the 90th percentile
    assert title_token_cap(titles, encode, spec, "keep", lambda *_: None) == 4
    assert title_token_cap(titles, encode, spec, "6", lambda *_: None) == 6
    assert title_token_cap(["w"] * 5, encode, spec, "auto", lambda *_: None) == 4  # never lowered


def test_wa_vs_alone_counts_the_discordant_cases():
    from molorec_train.recipe import wa_vs_alone

    line = lambda wa, alone: {"scores": {"lambda=0.5": wa, "lambda=1": alone}}  # noqa: E731
    scored = [
        (line([1, 0], [0, 1]), 0),  # only WA ranks the positive first
        (line([1, 0], [1, 0]), 0),  # both
        (line([0, 1], [1, 0]), 0),  # only alone
        (line([0, 1], [0, 1]), 1),  # both
        (line([1, 0], [0, 1]), 0),  # only WA
    ]
    assert wa_vs_alone(scored) == {"wa_only": 2, "alone_only": 1}


def test_a_mixture_on_fewer_cases_is_held_to_the_baselines_on_its_cases():
    from molorec_train.report import targets

    row = lambda v, n=6: {"ndcg1": v, "count": n}  # noqa: E731
    cell = {k: row(v) for k, v in {"general": 0.3, "domain": 0.3, "calibrated": 0.3, "random": 0.05, "sasrec": 0.1}.items()}
    table = {"a/warm": {**cell, "popularity": row(0.2), "adaptive": row(0.25, 3)}}
    below = targets(table)[1]
    assert "**met**" in below  # 0.25 above popularity's 0.2 over all 6 cases ...
    sample = {"a/warm": {"popularity": row(0.3, 3), "random": row(0.0, 3), "adaptive": row(0.25, 3)}}
    below = targets(table, sample)[1]
    assert "**not met**" in below and "adaptive 0.250 in a/warm (popularity 0.300, random 0.000 on the same 3 cases)" in below


@pytest.mark.parametrize(
    "device, says",
    [("gpu", "is not a torch device"), ("mps", "trains on cpu or cuda"), ("cuda", None), ("cuda:99", None)],
)
def test_device_is_refused_before_any_step_when_torch_cannot_use_it(tmp_path, capsys, device, says):
    import torch

    from molorec_train import cli

    if device.startswith("cuda"):  # what this machine lacks: a CUDA torch, a GPU, or a 100th GPU
        if torch.cuda.is_available() and device == "cuda":
            pytest.skip("this machine trains on cuda")
        says = "CPU-only build" if torch.version.cuda is None else "sees no GPU" if not torch.cuda.is_available() else "CUDA device(s)"
    with pytest.raises(SystemExit) as e:
        cli.main(["recipe", "--base", "smollm2", "--data", str(tmp_path), "--work", str(tmp_path / "work"), "--device", device])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "argument --device: " in err and says in err
    assert not (tmp_path / "work").exists()  # refused before the data step
    assert cli.torch_device("cpu") == "cpu"
