"""Edge packs (quantize.py) and the optional graph variants (export_onnx options)."""

from __future__ import annotations

import json
import logging
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from molorec_train.adapters import load_adapter, mixture_feeds
from molorec_train.export import export_onnx, load_model, read_manifest
from molorec_train.fixture import fixture_titles as fake_titles
from molorec_train.graph import ExportError, GraphVariant
from molorec_train.prompt import PromptSpec, candidate_ids, prompt_ids
from molorec_train.quantize import QuantizeOptions, quantize_pack
from molorec_train.recipe import REPO


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def feeds_for(manifest, pack_dir, ids, lam=0.5, past=0):
    m = manifest["model"]
    b, s = ids.shape
    feeds = {
        "input_ids": ids,
        "attention_mask": np.ones((b, past + s), np.int64),
        "position_ids": np.tile(np.arange(past, past + s), (b, 1)),
    }
    for i in range(m["numLayers"]):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = np.zeros((b, m["numKvHeads"], past, m["headDim"]), np.float32)
    targets = [(t["module"], t["inFeatures"], t["outFeatures"]) for t in manifest["lora"]["targets"]]
    adapters = [load_adapter(n, pack_dir / e["path"]) for n, e in manifest["adapters"].items()]
    return feeds | mixture_feeds(targets, adapters, [[1 - lam, lam]] * b)


def candidate_scores(pack_dir, history, candidates, lam=0.5):
    """Mean log-likelihood of each candidate after the prompt, one full pass each (numpy)."""
    from tokenizers import Tokenizer

    manifest = read_manifest(pack_dir)
    spec = PromptSpec(**manifest["prompt"])
    tok = Tokenizer.from_file(str(pack_dir / "tokenizer.json"))
    enc = lambda t: tok.encode(t, add_special_tokens=False).ids  # noqa: E731
    sess = session(pack_dir / manifest["files"]["model"])
    p = prompt_ids(enc, spec, history)
    out = []
    for title in candidates:
        c = candidate_ids(enc, spec, title)
        ids = np.array([p + c[:-1]], np.int64)
        logits = sess.run(["logits"], feeds_for(manifest, pack_dir, ids, lam))[0][0].astype(np.float64)
        rows = logits[len(p) - 1 :]
        lse = np.log(np.exp(rows - rows.max(-1, keepdims=True)).sum(-1)) + rows.max(-1)
        out.append(float(np.mean(rows[np.arange(len(c)), c] - lse)))
    return np.array(out)


def kendall_tau(a, b) -> float:
    n, s = len(a), 0
    for i in range(n):
        for j in range(i + 1, n):
            s += np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
    return s / (n * (n - 1) / 2)


@pytest.fixture(scope="module")
def request_titles():
    titles = fake_titles(40, 7)
    return titles[:8], titles[8:28]


# Tolerances on the tests' tiny random models (large random weights: the worst case for
# quantization); trained packs are judged by NDCG with `molorec eval`.
@pytest.mark.parametrize(
    "options, op, max_diff, min_tau",
    [
        (QuantizeOptions(bits=8), "MatMulNBits", 0.06, 0.95),  # blocks: weight-only int8 with offsets, table included
        (QuantizeOptions(bits=4), "MatMulNBits", 0.5, 0.6),  # blocks, int4 layers (random weights: no grid to land on)
        (QuantizeOptions(bits=8, method="dynamic"), "MatMulInteger", 0.15, 0.85),  # weights and activations int8
        (QuantizeOptions(bits=8, method="nbits"), "MatMulNBits", 0.08, 0.9),  # weight-only int8
        (QuantizeOptions(bits=4, method="nbits"), "MatMulNBits", 1.0, 0.3),
        (QuantizeOptions(bits=8, method="dynamic", embeddings=True), "DequantizeLinear", 0.2, 0.8),  # + int8 embedding table
        (QuantizeOptions(bits=8, method="nbits", embeddings=True), "MatMulNBits", 0.1, 0.9),  # all weight-only
    ],
    ids=["int8-blocks", "int4-blocks", "int8-dynamic", "int8-nbits", "int4-nbits", "int8-embeddings", "int8-nbits-embeddings"],
)
def test_quantized_pack_is_valid_smaller_and_scores_close(built, tmp_path, request_titles, options, op, max_diff, min_tau, caplog):
    out = tmp_path / "q"
    caplog.set_level(logging.INFO)
    manifest = quantize_pack(built.pack_dir, out, options, log=lambda *_: None)
    assert not [r for r in caplog.records if "skip to quantize" in r.getMessage()]  # onnxruntime's per-node INFO lines are silenced
    src = read_manifest(built.pack_dir)
    # a pack like the source: same contract, adapters and tokenizer copied, a quantization note
    assert {k: v for k, v in manifest.items() if k not in ("quantization", "files")} == {k: v for k, v in src.items() if k != "files"}
    assert manifest["quantization"]["bits"] == options.bits
    for name, entry in manifest["adapters"].items():
        assert (out / entry["path"] / "adapter_model.safetensors").is_file(), name
    assert (out / "tokenizer.json").is_file()
    model = onnx.load(str(out / "model.onnx"))
    assert any(n.op_type == op for n in model.graph.node)
    # onnxruntime's quantizers need the LM head as its own copy of a tied table (quantize.unshare_tied_head)
    limit = 0.6 if options.resolved_method() == "blocks" else 0.8
    assert (out / "model.onnx").stat().st_size < limit * (built.pack_dir / "model.onnx").stat().st_size
    if options.embeddings:  # no float table left behind a Gather
        inits = {i.name: i for i in model.graph.initializer}
        tables = [
            inits[n.input[0]]
            for n in model.graph.node
            if n.op_type == "Gather" and n.input[0] in inits and len(inits[n.input[0]].dims) == 2
        ]
        assert tables and all(t.data_type == onnx.TensorProto.INT8 or t.data_type == onnx.TensorProto.UINT8 for t in tables)
    # the LoRA inputs, KV cache and logits stay float32 graph inputs and outputs
    sess = session(out / "model.onnx")
    ins = {i.name: i.type for i in sess.get_inputs()}
    for t in manifest["lora"]["targets"]:
        assert ins[t["inputA"]] == ins[t["inputB"]] == "tensor(float)"
    assert ins["lora_scale"] == "tensor(float)"
    assert [o.type for o in sess.get_outputs()] == ["tensor(float)"] * len(sess.get_outputs())

    history, candidates = request_titles
    ref = candidate_scores(built.pack_dir, history, candidates)
    got = candidate_scores(out, history, candidates)
    assert np.max(np.abs(got - ref)) < max_diff
    assert kendall_tau(got, ref) >= min_tau


def test_quantize_rejects_bad_input(built, tmp_path):
    with pytest.raises(ExportError, match="expected 8 or 4"):
        quantize_pack(built.pack_dir, tmp_path / "a", QuantizeOptions(bits=3), log=lambda *_: None)
    with pytest.raises(ExportError, match="int8 only"):
        quantize_pack(built.pack_dir, tmp_path / "b", QuantizeOptions(bits=4, method="dynamic"), log=lambda *_: None)
    with pytest.raises(ExportError, match="embedding-bits"):
        quantize_pack(built.pack_dir, tmp_path / "e", QuantizeOptions(embedding_bits=2), log=lambda *_: None)
    with pytest.raises(ExportError, match="must differ"):
        quantize_pack(built.pack_dir, built.pack_dir, QuantizeOptions(), log=lambda *_: None)
    with pytest.raises(ExportError, match="no molorec.json"):
        quantize_pack(tmp_path, tmp_path / "c", QuantizeOptions(), log=lambda *_: None)
    quantize_pack(built.pack_dir, tmp_path / "q", QuantizeOptions(), log=lambda *_: None)
    with pytest.raises(ExportError, match="already quantized"):
        quantize_pack(tmp_path / "q", tmp_path / "qq", QuantizeOptions(), log=lambda *_: None)


@pytest.mark.skipif(not (REPO / "packages/runtime-node/dist/cli.js").is_file(), reason="the Node runtime is not built (pnpm build)")
def test_node_runtime_loads_a_quantized_pack(built, tmp_path, request_titles):
    out = tmp_path / "q4"
    quantize_pack(built.pack_dir, out, QuantizeOptions(bits=4), log=lambda *_: None)
    history, candidates = request_titles
    req = tmp_path / "request.json"
    req.write_text(json.dumps({"history": history, "candidates": candidates[:5], "mixture": "wa"}))
    proc = subprocess.run(
        [
            "node",
            str(REPO / "packages/runtime-node/bin/molorec.js"),
            "recommend",
            "--pack",
            str(out),
            "--request",
            str(req),
            "--json",
            "--ep",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert len(res["ranked"]) == 5


def test_graph_variants_equal_the_pack_graph(built, tmp_path):
    """Block-causal mask, num_logits_to_keep and token_logprobs change the interface, not the numbers."""
    manifest = read_manifest(built.pack_dir)
    targets = [(t["module"], t["inFeatures"], t["outFeatures"]) for t in manifest["lora"]["targets"]]
    model = load_model(built.model_dir)
    export_onnx(model, targets, tmp_path / "block.onnx", attention="block")
    export_onnx(model, targets, tmp_path / "head.onnx", logits_to_keep=True, token_logprobs=True)
    ids = np.random.default_rng(0).integers(2, manifest["model"]["vocabSize"], (2, 9))
    feeds = feeds_for(manifest, built.pack_dir, ids, lam=0.3)
    ref = session(built.pack_dir / "model.onnx").run(None, feeds)

    block = session(tmp_path / "block.onnx").run(None, {**feeds, "attention_mask": np.tril(np.ones((9, 9), np.int64))[None].repeat(2, 0)})
    for got, want in zip(block, ref):
        np.testing.assert_allclose(got, want, atol=1e-5)

    head = session(tmp_path / "head.onnx")
    targets_ids = np.roll(ids, -1, axis=1)
    logits = ref[0].astype(np.float64)
    logp = logits - (np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) + logits.max(-1, keepdims=True))
    want_lp = np.take_along_axis(logp, targets_ids[..., None], -1)[..., 0]
    for k in (0, 1, 4):
        out = head.run(None, {**feeds, "num_logits_to_keep": np.array([k], np.int64), "target_ids": targets_ids})
        kept = slice(None) if k == 0 else slice(9 - k, None)
        np.testing.assert_allclose(out[0], ref[0][:, kept], atol=1e-5)
        np.testing.assert_allclose(out[-1], want_lp[:, kept], atol=1e-4)
        for got, want in zip(out[1:-1], ref[1:]):  # the KV cache is the whole sequence's
            np.testing.assert_allclose(got, want, atol=1e-5)


def test_quantize_a_pack_with_the_scoring_head(built, tmp_path):
    from molorec_train.export import export_pack
    from molorec_train.quantize import max_logit_diff

    head = tmp_path / "head"
    export_pack(built.model_dir, head, built.adapters, variant=GraphVariant(logits_to_keep=True, token_logprobs=True), log=lambda *_: None)
    out = tmp_path / "q"
    quantize_pack(head, out, QuantizeOptions(bits=8, embeddings=True), log=lambda *_: None)
    names = {i.name for i in session(out / "model.onnx").get_inputs()}
    assert {"num_logits_to_keep", "target_ids"} <= names  # the head survives quantization
    assert 0 < max_logit_diff(head, out) < 1.0
    assert max_logit_diff(head, built.pack_dir) < 1e-4  # same weights, with and without the head


def test_blocks_land_back_on_a_gguf_grid():
    """Q4_1 blocks (d·q + m, q in 0..15) come back exactly in 4 bits, Q8_0 blocks (d·q, |q| ≤ 127) in
    8; other weights within half a step."""
    from molorec_train.block_quant import quantize_blocks

    rng = np.random.default_rng(0)
    # GGUF keeps d and m in float16 and computes d·q + m in float32
    d = rng.uniform(1e-3, 1e-2, (64, 6, 1)).astype(np.float16).astype(np.float32)
    m = rng.uniform(-0.05, 0.0, (64, 6, 1)).astype(np.float16).astype(np.float32)
    q = rng.integers(0, 16, (64, 6, 32))
    q[..., 0], q[..., 1] = 0, 15
    q41 = (d * q + m).astype(np.float32).reshape(64, 192)
    assert np.max(np.abs(quantize_blocks(q41, 4, 32).dequantize() - q41)) <= 1e-6 * np.abs(q41).max()
    q8 = rng.integers(-127, 128, (64, 6, 32))
    q8[..., 0] = 127
    q80 = (d * q8).astype(np.float32).reshape(64, 192)
    assert np.max(np.abs(quantize_blocks(q80, 8, 32).dequantize() - q80)) <= 1e-6 * np.abs(q80).max()
    w = rng.standard_normal((16, 64)).astype(np.float32)
    b = quantize_blocks(w, 4, 32)
    assert np.all(np.abs(b.dequantize() - w).reshape(16, 2, 32).max(-1) <= b.scale * 0.5 + 1e-6)
    with pytest.raises(ExportError, match="multiple of the block size"):
        quantize_blocks(w[:, :40], 4, 32)


def test_blocks_store_a_tied_table_once(tmp_path):
    """With tied embeddings the embedding Gather and the LM head read one packed table, and the
    pack scores like float32 through both (a tiny Qwen2, whose embeddings are tied)."""
    from conftest import build

    from molorec_train.export import export_pack
    from molorec_train.pack_scorer import PackScorer, ranking_drift

    built = build(tmp_path / "src", "qwen2")
    export_pack(built.model_dir, tmp_path / "fp32", built.adapters, log=lambda *_: None)
    quantize_pack(tmp_path / "fp32", tmp_path / "q8", QuantizeOptions(bits=8), log=lambda *_: None)
    model = onnx.load(str(tmp_path / "q8" / "model.onnx"))
    shape = read_manifest(tmp_path / "fp32")["model"]
    vocab = shape["vocabSize"]
    tables = [i for i in model.graph.initializer if i.dims and i.dims[0] == vocab and i.data_type == onnx.TensorProto.UINT8]
    assert len(tables) == 1
    assert not [i for i in model.graph.initializer if sorted(i.dims) == sorted([vocab, shape["hiddenSize"]])]
    titles = fake_titles(60, 3)
    requests = [{"history": titles[i : i + 5], "candidates": titles[i + 5 : i + 15]} for i in range(0, 40, 10)]
    drift = ranking_drift(PackScorer(tmp_path / "fp32"), PackScorer(tmp_path / "q8"), requests)
    assert drift.top1 == 1.0 and drift.spearman >= 0.97

    # --webgpu: the head reads the same 8-bit table dequantized at load (no 8-bit MatMulNBits,
    # which onnxruntime-web's WebGPU lacks), with the same scores.
    quantize_pack(tmp_path / "fp32", tmp_path / "web", QuantizeOptions(bits=4, head_at_load=True), log=lambda *_: None)
    quantize_pack(tmp_path / "fp32", tmp_path / "q4", QuantizeOptions(bits=4), log=lambda *_: None)
    web = onnx.load(str(tmp_path / "web" / "model.onnx"))
    bits = [a.i for n in web.graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "bits"]
    assert bits and set(bits) == {4}
    same = ranking_drift(PackScorer(tmp_path / "q4"), PackScorer(tmp_path / "web"), requests)
    assert same.max_score_diff <= 1e-5
