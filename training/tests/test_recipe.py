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


@pytest.mark.skipif(not (REPO / "packages/runtime-node/dist/cli.js").is_file(), reason="the Node runtime is not built (pnpm build)")
def test_recipe_runs_end_to_end_at_micro_scale(tmp_path):
    data = tmp_path / "data"
    for i, name in enumerate(["gen-a", "gen-b", "tgt"]):
        write_sequence_domain(data, name, n_items=60, n_users=40, seed=i)
    cfg = RecipeConfig(
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
    assert text.startswith("# new table\n") and "old generated" not in text
    assert text.endswith(report.KEEP_MARKER + "\n\n## Notes by hand\n")


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
