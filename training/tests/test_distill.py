"""Distillation at micro scale: a tiny random teacher pack → a 1-layer student pack."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from molorec_train import tiny
from molorec_train.distill import Case, DistillConfig, candidate_scores, distill, distill_loss
from molorec_train.export import export_pack
from molorec_train.fixture import fixture_titles as fake_titles
from molorec_train.prompt import PromptSpec
from molorec_train.reference import candidate_log_likelihoods
from molorec_train.train import LINEAR_TARGETS, load_encoder


def write_prepared_domain(root: Path, name: str, n_items: int, n_rows: int, seed: int) -> None:
    rng = random.Random(seed)
    d = root / name
    d.mkdir(parents=True)
    titles = fake_titles(n_items, seed)
    (d / "items.tsv").write_text(
        "item_id\ttitle\theld_out\n" + "".join(f"i{i}\t{t}\t{int(i >= n_items - 5)}\n" for i, t in enumerate(titles))
    )
    with (d / "train.jsonl").open("w") as f:
        for _ in range(n_rows):
            start = rng.randrange(n_items - 5)
            ids = [f"i{(start + k) % (n_items - 5)}" for k in range(rng.randint(2, 4))]
            f.write(
                json.dumps(
                    {
                        "history": [titles[int(i[1:])] for i in ids[:-1]],
                        "history_ids": ids[:-1],
                        "target": titles[int(ids[-1][1:])],
                        "target_id": ids[-1],
                    }
                )
                + "\n"
            )


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    base = root / "base"
    tiny.train_bpe_tokenizer(fake_titles(200, 1) + ["Given the items History:\n- Next item: predict"], 300, base)
    tiny.make_model(base, vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=1, seed=3)
    general = tiny.make_lora(base, root / "general", targets=["q_proj", "v_proj"], rank=2, alpha=4, seed=11)
    dom = tiny.make_lora(base, root / "dom", targets=["q_proj", "down_proj"], rank=2, alpha=4, seed=12)
    _, eos, _ = load_encoder(base)
    spec = PromptSpec(maxTitleTokens=8, maxHistoryTokens=48, endTokenId=eos)
    export_pack(base, root / "pack", {"general": general, "domain:dom": dom}, prompt=spec, domain_lambdas={"dom": 0.7}, log=lambda *_: None)
    write_prepared_domain(root / "prepared", "dom", n_items=40, n_rows=60, seed=5)
    return root


def test_candidate_scores_match_the_reference(teacher):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(teacher / "base", dtype=torch.float32, local_files_only=True).eval()
    cases = [Case("d", [5, 6, 7, 8], [[9, 10, 0], [11, 0]]), Case("d", [5, 6], [[12, 13, 14, 0], [9, 0]])]
    with torch.no_grad():
        got = candidate_scores(model, cases, pad=1).numpy()
    for row, c in zip(got, cases):
        want = [np.mean(ll) for ll in candidate_log_likelihoods(model, c.prompt, c.candidates)]
        np.testing.assert_allclose(row, want, rtol=1e-4, atol=1e-5)


def test_distill_loss_is_zero_kl_for_identical_scores():
    s = torch.tensor([[-1.0, -2.0, -3.0]])
    loss, kl = distill_loss(s, s.clone(), alpha=0.0, temperature=2.0)
    assert abs(float(kl)) < 1e-7 and abs(float(loss)) < 1e-6


def test_no_teacher_loss_is_the_ground_truth_term_alone():
    s = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.1, -4.0]])
    t = torch.tensor([[-3.0, -1.0, -2.0], [-1.0, -1.0, -1.0]])
    ce = torch.nn.functional.cross_entropy(s, torch.zeros(2, dtype=torch.long))
    for teacher, weight in ((None, 1.0), (t, 0.0)):
        loss, kl = distill_loss(s, teacher, alpha=0.7, temperature=2.0, kl_weight=weight)
        assert float(loss) == pytest.approx(0.7 * float(ce)) and float(kl) == 0.0
    loss, kl = distill_loss(s, t, alpha=0.7, temperature=2.0)
    assert float(kl) > 0 and float(loss) == pytest.approx(4 * float(kl) + 0.7 * float(ce), rel=1e-6)


def test_no_teacher_baseline_never_runs_the_teacher(teacher, tmp_path, monkeypatch):
    import molorec_train.distill as dm

    calls = {"n": 0}
    real = dm.candidate_scores

    def counting(model, cases, pad):
        if not model.training:
            calls["n"] += 1
        return real(model, cases, pad)

    cfg = DistillConfig(layers=1, hidden=16, steps=6, lora_steps=2, batch_size=2, negatives=3, kl_weight=0.0, lora_rank=2, lora_alpha=4)
    monkeypatch.setattr(dm, "mean_kl", lambda *a, **k: 0.0)
    monkeypatch.setattr(dm, "candidate_scores", counting)
    summary = dm.distill(
        teacher / "base", teacher / "pack", teacher / "prepared", ["dom"], tmp_path / "base-student", cfg, eval_cases=4, log=lambda *_: None
    )
    assert calls["n"] == 0  # only the training student scored candidates
    assert summary["withTeacher"] is False
    assert json.loads((tmp_path / "base-student/molorec.json").read_text())["name"].endswith("-noteacher-1l")


def test_distill_writes_a_valid_pack_that_moves_toward_the_teacher(teacher, tmp_path):
    import onnxruntime as ort

    cfg = DistillConfig(
        layers=1, hidden=16, steps=30, lora_steps=4, batch_size=4, negatives=4, alpha=0.1, lr=3e-3, lora_rank=2, lora_alpha=4
    )
    summary = distill(
        teacher / "base", teacher / "pack", teacher / "prepared", ["dom"], tmp_path / "student", cfg, eval_cases=12, log=lambda *_: None
    )
    assert summary["lossLast"] < summary["lossFirst"]
    assert summary["klAfterBase"] < summary["klBefore"]
    assert summary["teacherLambdas"] == {"dom": 0.7}

    manifest = json.loads((tmp_path / "student/molorec.json").read_text())
    assert manifest["model"]["numLayers"] == 1 and manifest["model"]["hiddenSize"] == 16
    assert summary["studentInit"] == "fresh"
    assert manifest["domains"]["dom"] == {"adapter": "domain:dom", "defaultLambda": 0.5, "calibratedLambda": 1.0}
    assert manifest["generalAdapter"] == "general"
    assert manifest["prompt"]["maxTitleTokens"] == 8
    for entry in manifest["adapters"].values():
        assert (tmp_path / "student" / entry["path"] / "adapter_model.safetensors").is_file()
        assert sorted(entry["targetModules"]) == sorted(LINEAR_TARGETS)

    sess = ort.InferenceSession(str(tmp_path / "student/model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {}
    for inp in sess.get_inputs():
        if inp.name == "input_ids":
            feeds[inp.name] = np.array([[5, 6, 7]], np.int64)
        elif inp.name == "attention_mask":
            feeds[inp.name] = np.ones((1, 3), np.int64)
        elif inp.name == "position_ids":
            feeds[inp.name] = np.arange(3, dtype=np.int64)[None]
        elif inp.name == "lora_scale":
            feeds[inp.name] = np.zeros((1, 1), np.float32)
        elif inp.name.startswith("lora."):
            t = next(t for t in manifest["lora"]["targets"] if inp.name in (t["inputA"], t["inputB"]))
            shape = (1, t["inFeatures"]) if inp.name == t["inputA"] else (t["outFeatures"], 1)
            feeds[inp.name] = np.zeros(shape, np.float32)
        elif "past" in inp.name:
            m = manifest["model"]
            feeds[inp.name] = np.zeros((1, m["numKvHeads"], 0, m["headDim"]), np.float32)
        elif inp.name == "num_logits_to_keep":  # the student is exported with the scoring head
            feeds[inp.name] = np.zeros(1, np.int64)
        elif inp.name == "target_ids":
            feeds[inp.name] = np.zeros((1, 3), np.int64)
    assert {"num_logits_to_keep", "target_ids"} <= set(feeds)
    logits = sess.run(None, feeds)[0]
    assert logits.shape[-1] == manifest["model"]["vocabSize"] and np.isfinite(logits).all()


def test_a_runtime_teacher_with_another_tokenizer_teaches_a_student(teacher, tmp_path):
    """`distill --student-pack`: the teacher pack is scored through the TS runtime (scripts/eval-rows.mjs)
    on a pool of training cases, the student speaks its own tokenizer and prompt."""
    from molorec_train.distill import model_teacher, teacher_models
    from molorec_train.distill_runtime import RuntimeTeacher, distill_from_runtime
    from molorec_train.prompt import candidate_ids, prompt_ids

    # the student's own world: another tokenizer (other vocabulary size), another base, a pack carrying both
    sbase = tmp_path / "student-base"
    tiny.train_bpe_tokenizer(fake_titles(200, 1) + ["Given the items History:\n- Next item: predict"], 280, sbase)
    tiny.make_model(sbase, vocab_size=280, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=1, seed=4)
    _, s_eos, _ = load_encoder(sbase)
    s_spec = PromptSpec(maxTitleTokens=6, maxHistoryTokens=40, endTokenId=s_eos)
    lora = tiny.make_lora(sbase, tmp_path / "s-general", targets=["q_proj"], rank=2, alpha=4, seed=13)
    export_pack(sbase, tmp_path / "student-pack", {"general": lora}, prompt=s_spec, log=lambda *_: None)

    cfg = DistillConfig(layers=1, steps=30, lora_steps=4, batch_size=4, negatives=4, alpha=0.1, lr=3e-3, lora_rank=2, lora_alpha=4)
    rt = RuntimeTeacher(teacher / "pack", cases_per_domain=20, shards=1)
    work = tmp_path / "work"
    summary = distill_from_runtime(
        rt, tmp_path / "student-pack", sbase, teacher / "prepared", ["dom"], tmp_path / "out", cfg, work, eval_cases=6, log=lambda *_: None
    )
    # the stored scores are the teacher's: the PyTorch merged teacher (λ 0.7) on the same titles, target first
    pool = [json.loads(x) for x in (work / "teacher-dom.cases.jsonl").read_text().splitlines()]
    stored = {x["i"]: x["scores"]["teacher"] for x in map(json.loads, (work / "teacher-dom.scores.jsonl").read_text().splitlines())}
    assert len(pool) == 26 and set(stored) == set(range(26))
    models, _ = teacher_models(teacher / "base", teacher / "pack", ["dom"])
    t_spec = PromptSpec(**json.loads((teacher / "pack/molorec.json").read_text())["prompt"])
    t_encode, _, t_pad = load_encoder(teacher / "pack")
    for i in (0, 7, 25):
        case = Case(
            "dom", prompt_ids(t_encode, t_spec, pool[i]["history"]), [candidate_ids(t_encode, t_spec, c) for c in pool[i]["candidates"]]
        )
        ref = model_teacher(models["dom"], t_pad if t_pad is not None else t_spec.endTokenId)([case])[0]
        assert np.allclose(stored[i], ref.numpy(), atol=1e-4)
    assert summary["teacherLambdas"] == {"dom": 0.7}
    assert summary["klAfterBase"] < summary["klBefore"]
    assert summary["studentInit"].startswith("teacher-base first 1 layers of")
    manifest = json.loads((tmp_path / "out/molorec.json").read_text())
    assert manifest["model"]["vocabSize"] == 280 and manifest["prompt"]["maxTitleTokens"] == 6
    assert (tmp_path / "out/tokenizer.json").read_bytes() == (tmp_path / "student-pack/tokenizer.json").read_bytes()


def test_a_changed_pool_drops_the_stale_teacher_scores(tmp_path):
    from molorec_train.distill_runtime import write_teacher_cases

    cases, scores = tmp_path / "c.jsonl", tmp_path / "s.jsonl"
    write_teacher_cases([(["a"], ["b", "c"])], cases, scores)
    scores.write_text('{"i": 0, "scores": {"teacher": [0, 1]}}\n')
    write_teacher_cases([(["a"], ["b", "c"])], cases, scores)
    assert scores.exists()  # the same pool: its scores are kept (an interrupted run resumes)
    write_teacher_cases([(["a"], ["c", "b"])], cases, scores)
    assert not scores.exists()
