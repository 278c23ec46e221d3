"""LoRA training: the top-layer LoRA with the lower layers cached trains as the uncached one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from molorec_train.train import LoraTrainConfig, answer_loss, collate, lower_hidden_states, train_lora


def _examples(n: int, seed: int) -> list[tuple[list[int], list[int]]]:
    rng = np.random.default_rng(seed)
    return [
        ([int(t) for t in rng.integers(3, 300, rng.integers(4, 14))], [int(t) for t in rng.integers(3, 300, 3)] + [0]) for _ in range(n)
    ]


def test_answer_loss_is_the_models_loss(built):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(built.model_dir, dtype=torch.float32).eval()
    ids, mask, labels = collate(_examples(5, 1), pad=1)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True)
        mine = answer_loss(out.hidden_states[-1], labels, model.lm_head)
    assert float(mine) == pytest.approx(float(out.loss), rel=1e-5)


def test_lower_hidden_states_equal_each_sequence_run_alone(built):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(built.model_dir, dtype=torch.float32).eval()
    seqs = [p + a for p, a in _examples(7, 2)]
    states = lower_hidden_states(model, seqs, first_top=1, pad=1, batch_tokens=40)
    with torch.no_grad():
        for s, h in zip(seqs, states):
            alone = model(input_ids=torch.tensor([s]), output_hidden_states=True).hidden_states[1][0]
            assert h.shape == alone.shape
            torch.testing.assert_close(h, alone, rtol=1e-5, atol=1e-5)


def test_top_layer_lora_trains_the_same_with_the_lower_layers_cached(built, tmp_path):
    examples = _examples(10, 0)
    curves, weights = {}, {}
    for cache in (False, True):
        cfg = LoraTrainConfig(steps=8, batch_size=3, rank=4, alpha=8, lr=1e-2, seed=0, top_layers=1, cache_lower=cache)
        curves[cache] = train_lora(built.model_dir, examples, cfg, tmp_path / str(cache), pad=1, log=lambda *_: None)
        weights[cache] = load_file(str(tmp_path / str(cache) / "adapter_model.safetensors"))
    assert curves[True] == pytest.approx(curves[False], rel=1e-5)
    assert weights[True].keys() == weights[False].keys()
    assert all(".layers.1." in k for k in weights[True])  # the top layer only (of 2)
    for k in weights[True]:
        np.testing.assert_allclose(weights[True][k], weights[False][k], rtol=1e-4, atol=1e-6)
    record = json.loads((tmp_path / "True" / "training.json").read_text())["config"]
    assert record["top_layers"] == 1 and record["cache_lower"] is True


def test_adamerging_greedy_continuation_with_the_kv_cache_equals_without(built):
    from transformers import AutoModelForCausalLM

    from molorec_train.adamerging import token_entropy_loss

    model = AutoModelForCausalLM.from_pretrained(built.model_dir, dtype=torch.float32).eval()
    prompts = [p for p, _ in _examples(4, 3)]
    with torch.no_grad():
        a = token_entropy_loss(model, prompts, pad=1, k=3, kv_cache=False)
        b = token_entropy_loss(model, prompts, pad=1, k=3, kv_cache=True)
    assert float(a) == pytest.approx(float(b), rel=1e-5)
