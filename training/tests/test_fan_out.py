"""GraphVariant.fan_out: the layers below the lowest LoRA target run once per source row, and each
batch row continues its source (row_source). Every batch row must get what the same graph without
fan-out computes on its own copy of the source's tokens (held to transformers + PEFT there)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from molorec_train import tiny
from molorec_train.adapters import load_adapter, mixture_feeds
from molorec_train.export import export_onnx, export_pack, load_model, read_manifest
from molorec_train.graph import FAST_VARIANT, ExportError, GraphSignature, decoder_shape, target_layer
from molorec_train.reference import merged_model

TOL = 1e-5


class Fan:
    """A pack whose LoRAs sit on layer 1 of 2 (so layer 0 is shared), and the same weights' graph
    without fan-out."""

    def __init__(self, built, root: Path):
        general = tiny.make_lora(built.model_dir, root / "general", targets=["q_proj", "v_proj"], rank=4, alpha=8, seed=31, layers=[1])
        domain = tiny.make_lora(built.model_dir, root / "domain", targets=["k_proj", "up_proj"], rank=6, alpha=3, seed=32, layers=[1])
        self.paths = {"general": general, "domain:test": domain}
        self.manifest = export_pack(built.model_dir, root / "pack", self.paths, name="fan", log=lambda *_: None)
        self.targets = [(t["module"], t["inFeatures"], t["outFeatures"]) for t in self.manifest["lora"]["targets"]]
        self.adapters = [load_adapter(n, root / "pack" / e["path"]) for n, e in self.manifest["adapters"].items()]
        plain = root / "plain.onnx"
        export_onnx(load_model(built.model_dir), self.targets, plain, replace(FAST_VARIANT, fan_out=False))
        opts = {"providers": ["CPUExecutionProvider"]}
        self.fan = ort.InferenceSession(str(root / "pack" / "model.onnx"), **opts)
        self.plain = ort.InferenceSession(str(plain), **opts)
        m = self.manifest["model"]
        self.layers, self.kv, self.hd = m["numLayers"], m["numKvHeads"], m["headDim"]
        presents = [f"present.{i}.{k}" for i in range(self.layers) for k in ("key", "value")]
        self.outputs = ["logits", *presents, "token_logprobs"]  # token_entropy: tested on its own

    def lora(self, lambdas):
        return mixture_feeds(self.targets, self.adapters, [[1 - lam, lam] for lam in lambdas])


@pytest.fixture(scope="session")
def fan(built, tmp_path_factory):
    return Fan(built, tmp_path_factory.mktemp("fan"))


def left_padded(rows, pad=1):
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad, np.int64)
    mask = np.zeros((len(rows), width), np.int64)
    pos = np.zeros((len(rows), width), np.int64)
    for b, r in enumerate(rows):
        ids[b, width - len(r) :], mask[b, width - len(r) :], pos[b, width - len(r) :] = r, 1, np.arange(len(r))
    return ids, mask, pos


def past(fan, rows, lower=None, upper=None):
    """Past feeds: `lower`/`upper` present lists (key, value per layer), or empty pasts."""
    out = {}
    for i in range(fan.layers):
        for j, kind in enumerate(("key", "value")):
            src = lower if i < 1 else upper
            out[f"past_key_values.{i}.{kind}"] = (
                src[2 * i + j] if src is not None else np.zeros((rows[i < 1], fan.kv, 0, fan.hd), np.float32)
            )
    return out


def test_the_manifest_and_graph_name_the_shared_layers(fan, built):
    assert fan.manifest["model"]["sharedLayers"] == 1
    names = {i.name: i.shape for i in fan.fan.get_inputs()}
    assert names["row_source"] == ["batch"]
    assert names["input_ids"][0] == "sources" and names["past_key_values.0.key"][0] == "past_sources"
    assert names["past_key_values.1.key"][0] == "past_batch"
    # LoRAs on every layer leave nothing to share: the fast graph has no row_source, the manifest no key.
    assert "sharedLayers" not in read_manifest(built.pack_dir)["model"]
    sig = GraphSignature(decoder_shape(load_model(built.model_dir)), (("model.layers.0.self_attn.q_proj", 64, 64),), FAST_VARIANT)
    assert sig.shared_layers == 0 and "row_source" not in [i.name for i in sig.inputs()]
    assert target_layer("model.layers.12.mlp.up_proj") == 12
    with pytest.raises(ExportError, match="not inside a decoder layer"):
        target_layer("lm_head")
    with pytest.raises(ExportError, match='fan_out needs kv_cache="grouped"'):
        replace(FAST_VARIANT, kv_cache="concat")


def prompt_runs(fan, prompts, lambdas):
    """One fan-out prompt run (each prompt a source, continued under every λ) and the plain graph
    on the same rows, each prompt repeated per λ."""
    R, S = len(lambdas), len(prompts)
    ids, mask, pos = left_padded(prompts)
    common = {"num_logits_to_keep": np.array([1], np.int64)}
    tgt = np.zeros_like(ids)
    rep = np.repeat(np.arange(S), R)
    fan_feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "target_ids": tgt, "row_source": rep}
    fan_out = fan.fan.run(fan.outputs, fan_feeds | past(fan, {True: S, False: S * R}) | fan.lora(lambdas * S) | common)
    plain_feeds = {"input_ids": ids[rep], "attention_mask": mask[rep], "position_ids": pos[rep], "target_ids": tgt[rep]}
    plain_out = fan.plain.run(fan.outputs, plain_feeds | past(fan, {True: S * R, False: S * R}) | fan.lora(lambdas * S) | common)
    return fan_out, plain_out, rep


def test_a_prompt_run_fans_each_source_out_to_its_mixtures(fan):
    prompts = [[5, 9, 44, 2, 7, 8, 120], [3, 30, 31, 200]]
    lambdas = [0.0, 0.35, 1.0]
    got, want, rep = prompt_runs(fan, prompts, lambdas)
    assert got[0].shape == want[0].shape == (6, 1, 300)
    assert np.max(np.abs(got[0] - want[0])) <= TOL
    # Layer 0 (shared): one row per source; layer 1: one per batch row.
    assert got[1].shape[0] == 2 and np.max(np.abs(got[1][rep] - want[1])) <= TOL
    assert got[3].shape[0] == 6 and np.max(np.abs(got[3] - want[3])) <= TOL
    # The mixtures differ (the LoRAs are live in the fanned-out layer).
    assert np.max(np.abs(got[0][0] - got[0][2])) > 1e-3


def test_a_candidate_run_on_grouped_caches_matches_per_row_copies(fan):
    """Sources (prompt, candidate), the shared layer's cache once per prompt; batch rows (prompt,
    mixture, candidate) on their (prompt, mixture) cache: log-probs equal the plain graph's."""
    prompts = [[5, 9, 44, 2, 7, 8, 120], [3, 30, 31, 200]]
    lambdas = [0.2, 0.9]
    S, R, C, L = 2, 2, 3, 4
    (_, *fan_present, _), (_, *plain_present, _), _ = prompt_runs(fan, prompts, lambdas)
    rng = np.random.default_rng(4)
    cands = rng.integers(2, 300, (S * C, L))  # source (p, c) = p * C + c
    lengths = [L - (s % 2) for s in range(S * C)]  # some candidates end with a padded slot
    width = fan_present[0].shape[2]
    mask = np.zeros((S * C, width + L), np.int64)
    for s, n in enumerate(lengths):
        p = s // C
        mask[s, width - len(prompts[p]) : width + n] = 1
    pos = np.stack([np.arange(len(prompts[s // C]), len(prompts[s // C]) + L) for s in range(S * C)])
    tgt = rng.integers(0, 300, (S * C, L))
    src = np.array([p * C + c for p in range(S) for _ in range(R) for c in range(C)])
    row_lams = [lam for _ in range(S) for lam in lambdas for _ in range(C)]
    keep = {"num_logits_to_keep": np.array([0], np.int64)}
    feeds = {"input_ids": cands, "attention_mask": mask, "position_ids": pos, "target_ids": tgt, "row_source": src}
    lower, upper = fan_present[:2], fan_present[2:]
    pasts = past(fan, {}, [*lower, None, None], [None, None, *upper])
    got = fan.fan.run(fan.outputs, feeds | pasts | fan.lora(row_lams) | keep)
    plain = {"input_ids": cands[src], "attention_mask": mask[src], "position_ids": pos[src], "target_ids": tgt[src]}
    want = fan.plain.run(fan.outputs, plain | past(fan, {}, plain_present, plain_present) | fan.lora(row_lams) | keep)
    assert got[-1].shape == want[-1].shape == (S * R * C, L)
    for b in range(S * R * C):
        n = lengths[src[b]]
        assert np.max(np.abs(got[-1][b, :n] - want[-1][b, :n])) <= TOL
        assert np.max(np.abs(got[0][b, :n] - want[0][b, :n])) <= TOL


def test_fanned_out_rows_match_transformers_peft(fan, built):
    """The fan-out graph on whole sequences against transformers with the LoRAs merged."""
    seqs = [[5, 9, 44, 2, 7, 8, 120], [3, 30, 31, 200]]
    lambdas = [0.0, 0.7]
    got, _, rep = prompt_runs(fan, seqs, lambdas)
    ids, mask, pos = left_padded(seqs)
    for b, s in enumerate(rep):
        lam = lambdas[b % 2]
        model = merged_model(built.model_dir, fan.paths, {"general": 1 - lam, "domain:test": lam})
        with torch.no_grad():
            ref = model(
                input_ids=torch.from_numpy(ids[s : s + 1]),
                attention_mask=torch.from_numpy(mask[s : s + 1]),
                position_ids=torch.from_numpy(pos[s : s + 1]),
            ).logits.numpy()
        assert np.max(np.abs(got[0][b, -1] - ref[0, -1])) / np.max(np.abs(ref[0, -1])) <= 1e-4


def test_token_entropy_is_the_entropy_of_each_kept_position(fan):
    """The fast variant's token_entropy output: −Σ p log p of the softmax of the logits it returns
    (those are held to transformers above), per kept position."""
    prompts = [[5, 9, 44, 2, 7, 8, 120], [3, 30, 31, 200]]
    ids, mask, pos = left_padded(prompts)
    rep = np.repeat(np.arange(2), 2)
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "target_ids": np.zeros_like(ids), "row_source": rep}
    feeds |= past(fan, {True: 2, False: 4}) | fan.lora([0.1, 0.8] * 2) | {"num_logits_to_keep": np.array([0], np.int64)}
    logits, entropy = fan.fan.run(["logits", "token_entropy"], feeds)
    z = logits.astype(np.float64)
    logp = z - z.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    want = -(np.exp(logp) * logp).sum(-1)
    assert entropy.shape == want.shape == (4, ids.shape[1])
    assert np.max(np.abs(entropy - want)) <= 1e-4
    assert np.all(entropy > 0.1)
