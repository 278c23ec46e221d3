"""The paper's own λ: per LoRA module, learned with Adam on token entropy (AdaMerging-style).

The authors keep one (λg, λd) pair per LoRA-wrapped module (softmax over two logits, init
0.5/0.5) and minimise the mean Shannon entropy of the next-token distribution over the first
few generated tokens of unlabeled prompts. Here it is the reference the runtime's
derivative-free, per-domain λ search is compared against.

A per-module mixture cannot be expressed by the graph's per-row scale (shared by all modules),
so the learned mixture is baked into one pre-mixed adapter — A = [Ag; Ad],
B = [λg,m·sg·Bg | λd,m·sd·Bd] per module, scaling 1 — and added to the pack as domain
``<name>@permodule``, served with the ``domain`` policy.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from .adapters import PEFT_PREFIX, Adapter, load_adapter
from .export import read_manifest, write_manifest
from .prompt import PromptSpec, prompt_ids
from .train import load_encoder, read_jsonl


@dataclass(frozen=True)
class AdaMergingConfig:
    prompts: int = 64
    steps: int = 40
    batch_size: int = 16
    lr: float = 0.05
    generated_tokens: int = 3
    seed: int = 0
    # Greedy continuation with the KV cache (one forward of the prompt, then a token at a time)
    # instead of rerunning the whole sequence per token: the same tokens, fewer FLOPs (large bases).
    kv_cache: bool = False


class MixedLinear(torch.nn.Module):
    """A Linear whose weight is W0 + λg·ΔWg + λd·ΔWd with λ = softmax(logits)."""

    def __init__(self, base: torch.nn.Linear, deltas: list[torch.Tensor]):
        super().__init__()
        self.base = base
        self.register_buffer("deltas", torch.stack(deltas))  # [2, out, in]
        self.logits = torch.nn.Parameter(torch.zeros(len(deltas)))

    def lambdas(self) -> torch.Tensor:
        return torch.softmax(self.logits, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.base.weight + torch.einsum("k,koi->oi", self.lambdas(), self.deltas)
        return torch.nn.functional.linear(x, w, self.base.bias)


def _delta(ad: Adapter, module: str, shape: tuple[int, int]) -> torch.Tensor:
    if module not in ad.weights:
        return torch.zeros(shape)
    a, b = ad.weights[module]
    return torch.from_numpy(ad.scaling * (b @ a))


def attach_mixture(model: torch.nn.Module, general: Adapter, domain: Adapter) -> dict[str, MixedLinear]:
    modules = sorted(set(general.weights) | set(domain.weights))
    named = dict(model.named_modules())
    mixed = {}
    for m in modules:
        lin = named[m]
        parent_name, _, child = m.rpartition(".")
        mod = MixedLinear(lin, [_delta(general, m, tuple(lin.weight.shape)), _delta(domain, m, tuple(lin.weight.shape))])
        setattr(named[parent_name], child, mod)
        mixed[m] = mod
    for p in model.parameters():
        p.requires_grad_(False)
    for mod in mixed.values():
        mod.logits.requires_grad_(True)
    return mixed


def token_entropy_loss(model: torch.nn.Module, prompts: list[list[int]], pad: int, k: int, kv_cache: bool = False) -> torch.Tensor:
    """Mean entropy of the next-token distribution over the first k greedily generated tokens."""
    with torch.no_grad():  # greedy continuation under the current mixture
        seqs = [list(p) for p in prompts]
        for s in seqs if kv_cache else []:
            past, feed = None, torch.tensor([s])
            for _ in range(k - 1):
                out = model(input_ids=feed, past_key_values=past, use_cache=True)
                past = out.past_key_values
                s.append(int(out.logits[0, -1].argmax()))
                feed = torch.tensor([[s[-1]]])
        for _ in range(0 if kv_cache else k - 1):
            for s in seqs:
                logits = model(input_ids=torch.tensor([s])).logits[0, -1]
                s.append(int(logits.argmax()))
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):  # left padding keeps the scored positions aligned at the end
        ids[i, width - len(s) :] = torch.tensor(s)
        mask[i, width - len(s) :] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -k:]
    logp = torch.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1).mean()


def learn_permodule_lambdas(
    base_dir: Path,
    general: Adapter,
    domain: Adapter,
    prompts: list[list[int]],
    pad: int,
    cfg: AdaMergingConfig,
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, local_files_only=True).eval()
    mixed = attach_mixture(model, general, domain)
    opt = torch.optim.Adam([m.logits for m in mixed.values()], lr=cfg.lr)
    rng = random.Random(cfg.seed)
    for step in range(1, cfg.steps + 1):
        batch = rng.sample(prompts, min(cfg.batch_size, len(prompts)))
        loss = token_entropy_loss(model, batch, pad, cfg.generated_tokens, cfg.kv_cache)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 10 == 0 or step == cfg.steps:
            lam = torch.stack([m.lambdas()[1] for m in mixed.values()])
            log(
                f"  adamerging step {step}/{cfg.steps}  token entropy {loss.item():.4f}  λd mean {lam.mean():.3f} (min {lam.min():.3f}, max {lam.max():.3f})"
            )
    return {name: float(m.lambdas()[1].detach()) for name, m in mixed.items()}


def premixed_adapter(general: Adapter, domain: Adapter, lambdas: dict[str, float], out_dir: Path) -> Path:
    """Writes the per-module mixture as one PEFT LoRA folder (rank rg + rd, scaling 1)."""
    rank = general.rank + domain.rank
    tensors: dict[str, np.ndarray] = {}
    for module, lam in lambdas.items():
        parts = [(general, 1 - lam), (domain, lam)]
        ref = next(ad.weights[module] for ad, _ in parts if module in ad.weights)
        fin, fout = ref[0].shape[1], ref[1].shape[0]
        a_cat = np.zeros((rank, fin), np.float32)
        b_cat = np.zeros((fout, rank), np.float32)
        off = 0
        for ad, w in parts:
            if module in ad.weights:
                a, b = ad.weights[module]
                a_cat[off : off + ad.rank] = a
                b_cat[:, off : off + ad.rank] = w * ad.scaling * b
            off += ad.rank
        tensors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = a_cat
        tensors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = b_cat
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "adapter_model.safetensors"))
    cfg = dict(domain.config)
    cfg.update(r=rank, lora_alpha=rank, use_rslora=False, target_modules=sorted(set(general.target_modules) | set(domain.target_modules)))
    (out_dir / "adapter_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return out_dir


def add_permodule_domains(
    pack: Path, base_dir: Path, domains: dict[str, Path], cfg: AdaMergingConfig, log: Callable[[str], None] = print
) -> None:
    """For each domain: learn per-module λ on its unlabeled valid prompts; add `<d>@permodule`."""
    manifest = read_manifest(pack)
    spec = PromptSpec(**manifest["prompt"])
    encode, _, pad = load_encoder(pack)
    pad = spec.endTokenId if pad is None else pad  # a pretrained tokenizer: no <|pad|> of our own
    general = load_adapter("general", pack / manifest["adapters"]["general"]["path"])
    for name, prepared_dir in domains.items():
        entry = manifest["domains"][name]
        domain = load_adapter(entry["adapter"], pack / manifest["adapters"][entry["adapter"]]["path"])
        rows = read_jsonl(prepared_dir / "valid.jsonl")[: cfg.prompts]
        prompts = [prompt_ids(encode, spec, r["history"]) for r in rows]  # unlabeled: history only
        log(f"  {name}: per-module λ on {len(prompts)} unlabeled prompts, {len(domain.weights)} modules")
        lambdas = learn_permodule_lambdas(base_dir, general, domain, prompts, pad, cfg, log)
        adapter_name = f"domain:{name}@permodule"
        rel = f"adapters/{adapter_name.replace(':', '-')}"
        out = premixed_adapter(general, domain, lambdas, pack / rel)
        (out / "lambdas.json").write_text(json.dumps(lambdas, indent=1) + "\n")
        rank = general.rank + domain.rank
        manifest["adapters"][adapter_name] = {
            "path": rel,
            "rank": rank,
            "alpha": float(rank),
            "scaling": 1.0,
            "targetModules": sorted(set(general.target_modules) | set(domain.target_modules)),
        }
        manifest["domains"][f"{name}@permodule"] = {
            "adapter": adapter_name,
            "defaultLambda": 1.0,
            "description": f"per-module λ reference for {name} (AdaMerging-style, Adam on token entropy); serve with mixture 'domain'",
        }
    write_manifest(pack, manifest)
