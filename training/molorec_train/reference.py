"""The independent reference: transformers + PEFT, adapters merged into the weights.

Used to check exported packs and to compute golden scores. It shares no code with the graph
(graph.py) or the feeds (adapters.py): PEFT computes each adapter's delta weight, transformers
runs the forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


def merged_model(model_dir: str | Path, adapters: dict[str, str | Path], weights: dict[str, float]) -> torch.nn.Module:
    """Base model with ``W0 + Σ weights[k] · ΔW_k`` where ΔW_k is PEFT's delta for adapter k."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True).eval()
    out = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True).eval()
    active = [(n, p) for n, p in adapters.items() if weights.get(n, 0.0) != 0.0]
    if not active:
        return out
    names = list(adapters)
    peft_model = PeftModel.from_pretrained(base, str(adapters[names[0]]), adapter_name=names[0])
    for n in names[1:]:
        peft_model.load_adapter(str(adapters[n]), adapter_name=n)
    out_modules = dict(out.named_modules())
    with torch.no_grad():
        for name, module in peft_model.base_model.model.named_modules():
            if not hasattr(module, "get_delta_weight") or not hasattr(module, "lora_A"):
                continue
            target = out_modules[name]
            for n, _ in active:
                if n in module.lora_A:
                    target.weight += weights[n] * module.get_delta_weight(n)
    return out


@torch.no_grad()
def candidate_log_likelihoods(model: torch.nn.Module, prompt: Sequence[int], candidates: Sequence[Sequence[int]]) -> list[list[float]]:
    """Per-token log p(candidate token | prompt, earlier candidate tokens), one full pass each."""
    out = []
    for cand in candidates:
        ids = torch.tensor([list(prompt) + list(cand)])
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
        start = len(prompt)
        out.append([float(logp[start - 1 + k, tok]) for k, tok in enumerate(cand)])
    return out


@torch.no_grad()
def candidate_token_entropies(model: torch.nn.Module, prompt: Sequence[int], candidates: Sequence[Sequence[int]]) -> list[float]:
    """Per candidate: mean entropy (nats) of the next-token distributions that predict its tokens."""
    out = []
    for cand in candidates:
        ids = torch.tensor([list(prompt) + list(cand)])
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
        rows = logp[len(prompt) - 1 : len(prompt) - 1 + len(cand)]
        out.append(float(-(rows.exp() * rows).sum(-1).mean()))
    return out
