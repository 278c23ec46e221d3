"""Tiny random models, tokenizers and adapters: the fixture pack and the exporter's tests.

Weights are drawn with a large std so that random models still give well-separated scores.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path) -> Path:
    """Byte-level BPE trained with HF tokenizers; writes tokenizer.json and tokenizer_config.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOS,
        "pad_token": PAD,
        "bos_token": None,
        "add_bos_token": False,
        "model_max_length": 512,
        "clean_up_tokenization_spaces": False,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return out_dir / "tokenizer.json"


def make_model(
    out_dir: str | Path,
    *,
    architecture: str = "llama",
    vocab_size: int,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_positions: int = 512,
    eos_token_id: int = 0,
    pad_token_id: int = 1,
    seed: int = 0,
    std: float = 0.2,
) -> torch.nn.Module:
    """A randomly initialised Llama or Qwen2 causal LM saved with save_pretrained."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=None,
        initializer_range=std,
    )
    torch.manual_seed(seed)
    if architecture == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=False))
    elif architecture == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True, use_sliding_window=False))
        with torch.no_grad():  # Qwen2 has q/k/v biases; make them matter in tests
            for layer in model.model.layers:
                for p in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    p.bias.normal_(0, std)
    else:
        raise ValueError(f"unknown architecture {architecture!r}")
    with torch.no_grad():  # non-unit norms so a wrong norm placement shows
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    model.eval()
    model.save_pretrained(out_dir)
    return model


def make_lora(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    targets: list[str],
    rank: int,
    alpha: float,
    seed: int,
    std: float = 0.1,
    layers: list[int] | None = None,
) -> Path:
    """A PEFT LoRA with random A and B (PEFT initialises B to zero, which would test nothing), on
    every layer or on ``layers`` only."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True)
    peft_model = get_peft_model(
        base, LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, layers_to_transform=layers)
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    peft_model.save_pretrained(out_dir)
    return Path(out_dir)
