"""The exported pack, run by onnxruntime, against transformers + PEFT (merged at the same λ)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from molorec_train.adapters import load_adapter, mixture_feeds
from molorec_train.export import read_manifest
from molorec_train.graph import GraphVariant
from molorec_train.reference import merged_model

TOL = 1e-4


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-12))


class Pack:
    def __init__(self, built):
        self.manifest = read_manifest(built.pack_dir)
        self.session = ort.InferenceSession(str(built.pack_dir / "model.onnx"), providers=["CPUExecutionProvider"])
        m = self.manifest["model"]
        self.layers, self.kv, self.hd = m["numLayers"], m["numKvHeads"], m["headDim"]
        self.targets = [(t["module"], t["inFeatures"], t["outFeatures"]) for t in self.manifest["lora"]["targets"]]
        self.adapters = [load_adapter(n, built.pack_dir / e["path"]) for n, e in self.manifest["adapters"].items()]

    def feeds(self, ids, mask, pos, row_lambdas, past=None):
        """row_lambdas[b] = λ of the domain adapter (general gets 1 − λ); None = no adapter."""
        b = ids.shape[0]
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": pos}
        for i in range(self.layers):
            for j, kind in enumerate(("key", "value")):
                feeds[f"past_key_values.{i}.{kind}"] = (
                    past[2 * i + j] if past is not None else np.zeros((b, self.kv, 0, self.hd), np.float32)
                )
        if row_lambdas is None:
            feeds |= mixture_feeds(self.targets, [], [[] for _ in range(b)])
        else:
            feeds |= mixture_feeds(self.targets, self.adapters, [[1 - lam, lam] for lam in row_lambdas])
        return feeds

    def run(self, ids, mask, pos, row_lambdas, past=None):
        out = self.session.run(None, self.feeds(ids, mask, pos, row_lambdas, past))
        return out[0], out[1:]


@pytest.fixture(scope="session")
def pack(built):
    return Pack(built)


def padded_batch(lengths: list[int], vocab: int, seed: int):
    """Left-padded batch, as a batched prompt would be."""
    rng = np.random.default_rng(seed)
    s = max(lengths)
    ids = np.full((len(lengths), s), 1, np.int64)
    mask = np.zeros((len(lengths), s), np.int64)
    for b, n in enumerate(lengths):
        ids[b, s - n :] = rng.integers(2, vocab, n)
        mask[b, s - n :] = 1
    pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None).astype(np.int64)
    return ids, mask, pos


def reference_logits(built, lam, ids, mask, pos):
    model = merged_model(built.model_dir, built.adapters, {"general": 1 - lam, "domain:test": lam})
    with torch.no_grad():
        return model(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), position_ids=torch.from_numpy(pos)
        ).logits.numpy()


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_padded_batch_matches_transformers_peft(built, pack, lam):
    ids, mask, pos = padded_batch([7, 4, 9], vocab=300, seed=1)
    got, _ = pack.run(ids, mask, pos, [lam] * 3)
    ref = reference_logits(built, lam, ids, mask, pos)
    valid = mask.astype(bool)
    assert rel_err(got[valid], ref[valid]) <= TOL


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_kv_cache_continuation_matches_full_sequence(built, pack, lam):
    ids, mask, pos = padded_batch([12, 9], vocab=300, seed=2)
    split = 8
    head, past = pack.run(ids[:, :split], mask[:, :split], pos[:, :split], [lam, lam])
    tail, _ = pack.run(ids[:, split:], mask, pos[:, split:], [lam, lam], past=past)
    ref = reference_logits(built, lam, ids, mask, pos)
    got = np.concatenate([head, tail], axis=1)
    valid = mask.astype(bool)
    assert rel_err(got[valid], ref[valid]) <= TOL
    # the continuation alone must also be right (not only dominated by the head)
    assert rel_err(tail[valid[:, split:]], ref[:, split:][valid[:, split:]]) <= TOL


def test_per_row_mixtures_equal_separate_merged_runs(built, pack):
    lams = [0.0, 0.3, 1.0]
    ids, mask, pos = padded_batch([6, 6, 6], vocab=300, seed=3)
    ids[:] = ids[0]
    got, _ = pack.run(ids, mask, pos, lams)
    for b, lam in enumerate(lams):
        ref = reference_logits(built, lam, ids[b : b + 1], mask[b : b + 1], pos[b : b + 1])
        assert rel_err(got[b], ref[0]) <= TOL
    assert rel_err(got[0], got[2]) > 1e-2, "adapters must change the output, or this test proves nothing"


def test_no_adapter_is_rank_one_scale_zero_and_equals_base(built, pack):
    ids, mask, pos = padded_batch([5, 3], vocab=300, seed=4)
    got, _ = pack.run(ids, mask, pos, None)
    base = merged_model(built.model_dir, built.adapters, {})
    with torch.no_grad():
        ref = base(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), position_ids=torch.from_numpy(pos)
        ).logits.numpy()
    valid = mask.astype(bool)
    assert rel_err(got[valid], ref[valid]) <= TOL


def test_manifest_describes_graph(built, pack):
    names = {i.name for i in pack.session.get_inputs()}
    for t in pack.manifest["lora"]["targets"]:
        assert t["inputA"] in names and t["inputB"] in names
    assert pack.manifest["lora"]["scaleInput"] in names
    # union of both adapters' modules, on every layer
    assert len(pack.manifest["lora"]["targets"]) == 2 * 6
    rank_dims = {i.shape[0] for i in pack.session.get_inputs() if i.name.endswith(".A")}
    assert rank_dims == {"lora_rank"}


def test_export_rejects_bad_input_with_clear_errors(built, tmp_path):
    from molorec_train.export import export_pack
    from molorec_train.graph import ExportError

    with pytest.raises(ExportError, match="must be 'general' or 'domain:<name>'"):
        export_pack(built.model_dir, tmp_path / "p1", {"movies": built.adapters["general"]}, log=lambda *_: None)
    with pytest.raises(ExportError, match="no config.json"):
        export_pack(tmp_path, tmp_path / "p2", {}, tokenizer_dir=built.model_dir, log=lambda *_: None)
    with pytest.raises(ExportError, match="adapter_config.json is missing"):
        export_pack(built.model_dir, tmp_path / "p3", {"general": tmp_path}, log=lambda *_: None)


@pytest.fixture(scope="session")
def grouped_session(built, tmp_path_factory):
    from molorec_train.export import export_onnx, load_model

    manifest = read_manifest(built.pack_dir)
    targets = [(t["module"], t["inFeatures"], t["outFeatures"]) for t in manifest["lora"]["targets"]]
    path = tmp_path_factory.mktemp("grouped") / "model.onnx"
    export_onnx(load_model(built.model_dir), targets, path, kv_cache="grouped")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("groups,per_group", [(1, 3), (2, 2), (3, 1)])
def test_grouped_kv_cache_shares_a_past_row_per_group(built, pack, grouped_session, groups, per_group):
    """kv_cache="grouped": input row b attends to past row b // (B / Bp); present = this run's
    keys only. Each row's logits equal transformers + PEFT on its whole sequence."""
    lam = 0.4
    rng = np.random.default_rng(groups)
    prompt_len, suffix_len = 7, 4
    prompts = rng.integers(2, 300, (groups, prompt_len))
    ones = np.ones((groups, prompt_len), np.int64)
    pos = np.tile(np.arange(prompt_len), (groups, 1))
    feeds = {"input_ids": prompts, "attention_mask": ones, "position_ids": pos}
    feeds |= mixture_feeds(pack.targets, pack.adapters, [[1 - lam, lam]] * groups)
    empty = np.zeros((groups, pack.kv, 0, pack.hd), np.float32)
    for i in range(pack.layers):
        feeds[f"past_key_values.{i}.key"] = feeds[f"past_key_values.{i}.value"] = empty
    out = grouped_session.run(None, feeds)
    concat_out = pack.session.run(None, feeds)
    for got, want in zip(out[1:], concat_out[1:]):  # an empty past: both present the prompt's keys
        assert np.allclose(got, want, atol=1e-6)

    B = groups * per_group
    suffix = rng.integers(2, 300, (B, suffix_len))
    lengths = [suffix_len - (b % 2) for b in range(B)]  # odd rows end with a padded slot
    mask = np.zeros((B, prompt_len + suffix_len), np.int64)
    for b, n in enumerate(lengths):
        mask[b, : prompt_len + n] = 1
    feeds = {"input_ids": suffix, "attention_mask": mask, "position_ids": np.tile(np.arange(prompt_len, prompt_len + suffix_len), (B, 1))}
    feeds |= mixture_feeds(pack.targets, pack.adapters, [[1 - lam, lam]] * B)
    for i in range(pack.layers):
        feeds[f"past_key_values.{i}.key"], feeds[f"past_key_values.{i}.value"] = out[1 + 2 * i], out[2 + 2 * i]
    logits, *present = grouped_session.run(None, feeds)
    assert present[0].shape == (B, pack.kv, suffix_len, pack.hd)

    full = np.concatenate([np.repeat(prompts, per_group, axis=0), suffix], axis=1)
    ref = reference_logits(built, lam, full, mask, np.tile(np.arange(prompt_len + suffix_len), (B, 1)))[:, prompt_len:]
    for b, n in enumerate(lengths):
        assert rel_err(logits[b, :n], ref[b, :n]) <= TOL


def test_grouped_kv_cache_in_the_manifest(built, tmp_path):
    from molorec_train.export import export_pack

    assert read_manifest(built.pack_dir)["model"]["kvCache"] == "concat"
    m = export_pack(built.model_dir, tmp_path / "g", built.adapters, variant=GraphVariant(kv_cache="grouped"), log=lambda *_: None)
    assert m["model"]["kvCache"] == "grouped"
    names = {
        i.name: i.shape for i in ort.InferenceSession(str(tmp_path / "g" / "model.onnx"), providers=["CPUExecutionProvider"]).get_inputs()
    }
    assert names["past_key_values.0.key"][0] == "past_batch"


@pytest.fixture(scope="session", params=["concat", "grouped"])
def head_session(built, tmp_path_factory, request):
    """The scoring-head variant (num_logits_to_keep + token_logprobs) of each KV-cache layout."""
    from molorec_train.export import export_onnx, load_model

    manifest = read_manifest(built.pack_dir)
    targets = [(t["module"], t["inFeatures"], t["outFeatures"]) for t in manifest["lora"]["targets"]]
    path = tmp_path_factory.mktemp(f"head-{request.param}") / "model.onnx"
    export_onnx(load_model(built.model_dir), targets, path, logits_to_keep=True, token_logprobs=True, kv_cache=request.param)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("keep", [1, 3, 0])
def test_kept_logits_and_full_cache_match_transformers(built, pack, head_session, keep):
    """num_logits_to_keep = k returns the last k positions' logits (0: all) and their target
    log-probabilities, while present still holds every position's keys: a prompt run keeping one
    position (the last layer skipped for the others) continues exactly like the full sequence."""
    lam = 0.6
    ids, mask, pos = padded_batch([9, 6], vocab=300, seed=5)
    split, b = 7, ids.shape[0]
    rng = np.random.default_rng(keep)

    def feeds_for(sl, past, k, row_mask):
        f = pack.feeds(ids[:, sl], row_mask, pos[:, sl], [lam] * b, past)
        return f | {"num_logits_to_keep": np.array([k], np.int64), "target_ids": rng.integers(0, 300, ids[:, sl].shape)}

    ref = reference_logits(built, lam, ids, mask, pos)
    head_feeds = feeds_for(slice(0, split), None, keep, mask[:, :split])
    logits, *present, logp = head_session.run(None, head_feeds)
    kept = split if keep == 0 else keep
    assert logits.shape == (b, kept, ref.shape[-1]) and logp.shape == (b, kept)
    want = ref[:, split - kept : split]
    real = mask[:, split - kept : split].astype(bool)  # left padding has no reference
    assert rel_err(logits[real], want[real]) <= TOL
    top = want.max(-1, keepdims=True)
    log_softmax = want - top - np.log(np.exp(want - top).sum(-1, keepdims=True))
    targets = head_feeds["target_ids"][:, split - kept :]
    want_logp = np.take_along_axis(log_softmax, targets[..., None], -1)[..., 0]
    assert np.max(np.abs(logp[real] - want_logp[real])) <= 1e-4

    # the cache of a pruned run continues to the right logits for the rest of the sequence
    tail_feeds = feeds_for(slice(split, None), [np.ascontiguousarray(p) for p in present], 0, mask)
    tail = head_session.run(["logits"], tail_feeds)[0]
    valid = mask[:, split:].astype(bool)
    assert rel_err(tail[valid], ref[:, split:][valid]) <= TOL


def test_tied_embeddings_are_stored_once(built):
    """A tied LM head reads the embedding table (Gemm transB) instead of a transposed copy."""
    import onnx

    from molorec_train.export import load_model

    model = load_model(built.model_dir)
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    graph = onnx.load(str(built.pack_dir / "model.onnx"))
    vh = sorted(tuple(i.dims) for i in graph.graph.initializer if sorted(i.dims) == sorted(model.lm_head.weight.shape))
    assert len(vh) == (1 if tied else 2)
    assert tied == any(n.op_type == "Gemm" for n in graph.graph.node)


def test_float16_weights_in_one_external_file(built, pack, tmp_path):
    """weights="float16" halves the weights (Cast back to float32 at load); external_data="always"
    puts them in one model.onnx.data listed by the exporter, which onnxruntime reads beside the graph."""
    from molorec_train.export import export_onnx, load_model

    path = tmp_path / "model.onnx"
    files = export_onnx(load_model(built.model_dir), pack.targets, path, weights="float16", external_data="always")
    assert files == ["model.onnx.data"] and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.data"]
    fp32_bytes = (built.pack_dir / "model.onnx").stat().st_size
    assert (tmp_path / "model.onnx.data").stat().st_size < 0.6 * fp32_bytes
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids, mask, pos = padded_batch([7, 4], vocab=300, seed=3)
    got = session.run(None, pack.feeds(ids, mask, pos, [0.5, 0.5]))[0]
    want, _ = pack.run(ids, mask, pos, [0.5, 0.5])
    real = mask.astype(bool)
    assert rel_err(got[real], want[real]) <= 5e-3


@pytest.mark.skipif(os.environ.get("MOLOREC_LARGE") != "1", reason="exports a 2.1 GB model (~12 GB RAM, minutes): MOLOREC_LARGE=1")
def test_a_model_over_2_gib_exports_into_a_loadable_pack(tmp_path):
    """Protobuf caps a file at 2 GiB: the weights go to one model.onnx.data listed in the manifest."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from molorec_train.export import export_pack, read_manifest

    root = large_llama(tmp_path / "large")
    m = export_pack(root, tmp_path / "pack", {}, extra_targets=["q_proj", "v_proj"], log=lambda *_: None)
    assert m["files"]["modelExternalData"] == ["model.onnx.data"]
    assert (tmp_path / "pack" / "model.onnx.data").stat().st_size > 2**31
    assert read_manifest(tmp_path / "pack")["files"]["modelExternalData"] == ["model.onnx.data"]
    session = ort.InferenceSession(str(tmp_path / "pack" / "model.onnx"), providers=["CPUExecutionProvider"])
    model = LlamaForCausalLM.from_pretrained(root).eval()
    ids = np.array([[5, 17, 42, 99, 123, 7]], np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(6)[None]}
    cfg: LlamaConfig = model.config
    for i in range(cfg.num_hidden_layers):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = np.zeros(
                (1, cfg.num_key_value_heads, 0, cfg.hidden_size // cfg.num_attention_heads), np.float32
            )
    targets = [(t["module"], t["inFeatures"], t["outFeatures"]) for t in m["lora"]["targets"]]
    feeds |= mixture_feeds(targets, [], [[]]) | {"num_logits_to_keep": np.zeros(1, np.int64), "target_ids": np.zeros_like(ids)}
    got = session.run(["logits"], feeds)[0]
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).logits.numpy()
    assert rel_err(got, want) <= TOL
    del session
    node_cli_scores_equal_transformers(tmp_path / "pack", model, tmp_path)


def node_cli_scores_equal_transformers(pack, model, tmp_path):
    """The Node CLI opens the pack (the model in place, its external data beside it) and scores
    candidates as transformers does."""
    import json
    import subprocess

    from tokenizers import Tokenizer

    from molorec_train.export import read_manifest
    from molorec_train.prompt import PromptSpec, candidate_ids, prompt_ids
    from molorec_train.recipe import REPO, node_cli
    from molorec_train.reference import candidate_log_likelihoods

    request = {"history": ["a b c", "d e"], "candidates": ["a b", "c d e", "f g", "b"], "mixture": "base"}
    (tmp_path / "request.json").write_text(json.dumps(request))
    proc = subprocess.run(
        [*node_cli("recommend", "--pack", str(pack), "--request", str(tmp_path / "request.json"), "--json", "--ep", "cpu")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr
    got = {r["index"]: r["score"] for r in json.loads(proc.stdout)["ranked"]}
    spec = PromptSpec(**read_manifest(pack)["prompt"])
    tok = Tokenizer.from_file(str(pack / "tokenizer.json"))
    enc = lambda t: tok.encode(t, add_special_tokens=False).ids  # noqa: E731
    with torch.no_grad():
        lps = candidate_log_likelihoods(
            model, prompt_ids(enc, spec, request["history"]), [candidate_ids(enc, spec, c) for c in request["candidates"]]
        )
    want = [float(np.mean(lp)) for lp in lps]
    assert max(abs(got[i] - want[i]) for i in range(len(want))) <= 1e-4


def large_llama(out: Path) -> Path:
    """A random Llama just over 2 GiB in float32 (32 layers of width 1024, vocab 32,000)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from molorec_train import tiny

    tiny.train_bpe_tokenizer(["a b c d e f g"], 300, out)
    cfg = LlamaConfig(
        vocab_size=32000,
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=32,
        num_attention_heads=16,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).eval().save_pretrained(out)
    return out


@pytest.mark.parametrize(
    ("name", "folder"),
    [("domain:movies", "domain-movies"), ("a/b", "a-b"), ("50%off?#x", "50-off--x"), ("tab\there", "tab-here"), ("c:\\x", "c--x")],
)
def test_adapter_folders_are_paths_the_runtimes_accept(name, folder):
    from molorec_train.export import adapter_dir_name

    assert adapter_dir_name(name) == folder
