"""PEFT LoRA adapters as the pack stores them, and the concatenated-rank mixture math.

The mixture ``W = W0 + Σ_k λ_k s_k B_k A_k`` is fed to the graph as one LoRA of rank Σ r_k:
``A = [A_1; A_2; ...]``, ``B = [B_1 | B_2 | ...]`` and a per-row scale ``[λ_1 s_1]*r_1 ++ ...``.
A module an adapter does not wrap gets zero blocks. "No adapter" is rank 1 with scale 0.
This mirrors packages/core/src/lora-mixture.ts; both are held to transformers + PEFT by tests.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from .graph import ExportError

PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class Adapter:
    name: str
    rank: int
    alpha: float
    scaling: float
    target_modules: list[str]
    # module path -> (A [r, in], B [out, r])
    weights: dict[str, tuple[np.ndarray, np.ndarray]]
    config: dict


def _module_path(key: str) -> tuple[str, str] | None:
    if not key.startswith(PEFT_PREFIX):
        return None
    rest = key[len(PEFT_PREFIX) :]
    for part in ("lora_A", "lora_B"):
        marker = f".{part}."
        if marker in rest:
            module, tail = rest.split(marker, 1)
            return module, part if tail in ("weight", "default.weight") else ""
    return None


def load_adapter(name: str, folder: str | Path) -> Adapter:
    """Reads a PEFT LoRA folder (adapter_config.json + adapter_model.safetensors)."""
    folder = Path(folder)
    cfg_path, w_path = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise ExportError(f"adapter {name!r}: {p} is missing (expected a PEFT LoRA folder saved with save_pretrained)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ExportError(f"adapter {name!r}: peft_type {cfg.get('peft_type')!r} is not LORA")
    if cfg.get("use_dora"):
        raise ExportError(f"adapter {name!r}: DoRA adapters are not supported")
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise ExportError(f"adapter {name!r}: rank_pattern/alpha_pattern are not supported; train with one rank and alpha")
    if cfg.get("modules_to_save"):
        raise ExportError(f"adapter {name!r}: modules_to_save ({cfg['modules_to_save']}) would change base weights; not supported")
    rank, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    scaling = alpha / math.sqrt(rank) if cfg.get("use_rslora") else alpha / rank
    tensors = load_file(str(w_path))
    parts: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        mp = _module_path(key)
        if mp is None or not mp[1]:
            raise ExportError(f"adapter {name!r}: unexpected tensor {key!r} (only LoRA A/B weights are supported)")
        parts.setdefault(mp[0], {})[mp[1]] = value.astype(np.float32)
    weights: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for module, ab in sorted(parts.items()):
        if set(ab) != {"lora_A", "lora_B"}:
            raise ExportError(f"adapter {name!r}: module {module} lacks lora_A or lora_B")
        a, b = ab["lora_A"], ab["lora_B"]
        if a.shape[0] != rank or b.shape[1] != rank:
            raise ExportError(f"adapter {name!r}: module {module} has rank {a.shape[0]}, config says {rank}")
        weights[module] = (a, b)
    targets = cfg.get("target_modules") or []
    if isinstance(targets, str):
        targets = [targets]
    return Adapter(name, rank, alpha, scaling, sorted(targets), weights, cfg)


def mixture_feeds(
    targets: list[tuple[str, int, int]],
    adapters: list[Adapter],
    row_weights: list[list[float]],
) -> dict[str, np.ndarray]:
    """Graph feeds for one batch: ``row_weights[b][k]`` is λ of ``adapters[k]`` on row b.

    ``targets`` are (module, in_features, out_features) in the graph's order.
    """
    if not adapters:
        feeds = {}
        for module, fin, fout in targets:
            feeds[f"lora.{module}.A"] = np.zeros((1, fin), np.float32)
            feeds[f"lora.{module}.B"] = np.zeros((fout, 1), np.float32)
        feeds["lora_scale"] = np.zeros((len(row_weights), 1), np.float32)
        return feeds
    rank = sum(a.rank for a in adapters)
    feeds: dict[str, np.ndarray] = {}
    for module, fin, fout in targets:
        a_cat = np.zeros((rank, fin), np.float32)
        b_cat = np.zeros((fout, rank), np.float32)
        off = 0
        for ad in adapters:
            if module in ad.weights:
                a, b = ad.weights[module]
                a_cat[off : off + ad.rank] = a
                b_cat[:, off : off + ad.rank] = b
            off += ad.rank
        feeds[f"lora.{module}.A"] = a_cat
        feeds[f"lora.{module}.B"] = b_cat
    scale = np.zeros((len(row_weights), rank), np.float32)
    for row, weights in enumerate(row_weights):
        if len(weights) != len(adapters):
            raise ValueError(f"row {row}: {len(weights)} weights for {len(adapters)} adapters")
        off = 0
        for ad, lam in zip(adapters, weights):
            scale[row, off : off + ad.rank] = lam * ad.scaling
            off += ad.rank
    feeds["lora_scale"] = scale
    return feeds
