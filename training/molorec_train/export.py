"""Export a transformers checkpoint plus PEFT LoRA adapters to a molorec model pack."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch

from .adapters import Adapter, load_adapter
from .graph import (
    ExportableDecoder,
    ExportError,
    decoder_shape,
    kv_input_names,
    kv_output_names,
    lora_input_names,
)
from .prompt import PromptSpec

PACK_FORMAT_VERSION = 1
OPSET = 17


def adapter_dir_name(name: str) -> str:
    """`domain:movies` -> `domain-movies` (file-system safe, stable).

    Characters the runtimes refuse in pack paths (they would change meaning once a path is
    part of a URL: `\\ : % ? #`, control characters) become `-` too.
    """
    safe = re.sub(r"[\\/:%?#\x00-\x1f\x7f]", "-", name)
    if not safe or safe.startswith("."):
        raise ExportError(f"adapter name {name!r} is not usable as a folder name")
    return safe


def load_model(model_dir: str | Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"{model_dir} has no config.json: pass a local transformers checkpoint folder")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True)
    return model.eval()


def resolve_targets(model: torch.nn.Module, adapters: Iterable[Adapter], extra_names: Iterable[str] = ()) -> list[tuple[str, int, int]]:
    """Module paths to wrap: those any adapter has weights for, plus every Linear whose name
    ends in one of ``extra_names`` (so later plug-in adapters may target them)."""
    wanted: set[str] = set()
    for ad in adapters:
        wanted |= set(ad.weights)
    extra = set(extra_names)
    linears = {name: mod for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    for name in linears:
        if name.rsplit(".", 1)[-1] in extra:
            wanted.add(name)
    missing = sorted(w for w in wanted if w not in linears)
    if missing:
        raise ExportError(f"adapter modules not found as Linear layers of the model: {missing[:5]}")
    if not wanted:
        raise ExportError("no LoRA target modules: pass at least one adapter or --targets")
    order = [name for name, _ in model.named_modules() if name in wanted]
    return [(n, linears[n].in_features, linears[n].out_features) for n in order]


def export_onnx(
    model: torch.nn.Module,
    targets: list[tuple[str, int, int]],
    out_path: Path,
    *,
    attention: str = "padding",
    logits_to_keep: bool = False,
    token_logprobs: bool = False,
    kv_cache: str = "concat",
) -> None:
    """Writes the decoder graph. The defaults give the pack contract (DESIGN.md §3);
    ``attention="block"`` (a ``[batch, seq, total]`` attention_mask, for packed block-causal
    sequences), ``logits_to_keep`` (an extra ``num_logits_to_keep`` input) and ``token_logprobs``
    (a ``target_ids`` input and a ``token_logprobs`` output) are optional variants; see
    graph.ExportableDecoder. Runtimes use the last two when present and work without them."""
    shape = decoder_shape(model)
    module = ExportableDecoder(
        model, [t[0] for t in targets], attention=attention, logits_to_keep=logits_to_keep, token_logprobs=token_logprobs, kv_cache=kv_cache
    )
    batch, seq, past, rank = 2, 3, 4, 2
    g = torch.Generator().manual_seed(0)
    if attention == "block":
        mask = torch.tril(torch.ones(seq, past + seq, dtype=torch.int64), diagonal=past).unsqueeze(0).repeat(batch, 1, 1)
    else:
        mask = torch.ones(batch, past + seq, dtype=torch.int64)
    args: list[torch.Tensor] = [
        torch.randint(0, shape.vocab_size, (batch, seq), generator=g),
        mask,
        torch.arange(past, past + seq).unsqueeze(0).repeat(batch, 1),
    ]
    for _ in range(shape.num_layers):
        args += [
            torch.randn(1 if kv_cache == "grouped" else batch, shape.num_kv_heads, past, shape.head_dim, generator=g) for _ in range(2)
        ]
    lora_names: list[str] = []
    for module_path, fin, fout in targets:
        args += [torch.randn(rank, fin, generator=g) * 0.01, torch.randn(fout, rank, generator=g) * 0.01]
        lora_names += list(lora_input_names(module_path))
    args.append(torch.ones(batch, rank))
    extra_inputs = []
    if logits_to_keep:
        args.append(torch.tensor([1], dtype=torch.int64))
        extra_inputs.append("num_logits_to_keep")
    if token_logprobs:
        args.append(torch.randint(0, shape.vocab_size, (batch, seq), generator=g))
        extra_inputs.append("target_ids")

    input_names = [
        "input_ids",
        "attention_mask",
        "position_ids",
        *kv_input_names(shape.num_layers),
        *lora_names,
        "lora_scale",
        *extra_inputs,
    ]
    output_names = ["logits", *kv_output_names(shape.num_layers), *(["token_logprobs"] if token_logprobs else [])]
    dyn: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "seq"},
        "attention_mask": {0: "batch", 1: "seq", 2: "total_seq"} if attention == "block" else {0: "batch", 1: "total_seq"},
        "position_ids": {0: "batch", 1: "seq"},
        "lora_scale": {0: "batch", 1: "lora_rank"},
        "logits": {0: "batch", 1: "logits_seq" if logits_to_keep else "seq"},
    }
    if token_logprobs:
        dyn["target_ids"] = {0: "batch", 1: "seq"}
        dyn["token_logprobs"] = {0: "batch", 1: "logits_seq" if logits_to_keep else "seq"}
    grouped = kv_cache == "grouped"
    for n in kv_input_names(shape.num_layers):
        dyn[n] = {0: "past_batch" if grouped else "batch", 2: "past_seq"}
    for n in kv_output_names(shape.num_layers):
        dyn[n] = {0: "batch", 2: "seq" if grouped else "total_seq"}
    for n in lora_names:
        dyn[n] = {0: "lora_rank"} if n.endswith(".A") else {1: "lora_rank"}

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(args),
            str(out_path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dyn,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )


def _token_id(tokenizer_json: dict, token: str | None) -> int | None:
    if token is None:
        return None
    for t in tokenizer_json.get("added_tokens", []):
        if t.get("content") == token:
            return int(t["id"])
    vocab = tokenizer_json.get("model", {}).get("vocab", {})
    return int(vocab[token]) if isinstance(vocab, dict) and token in vocab else None


def default_prompt_spec(model: torch.nn.Module, tokenizer_json: dict, tokenizer_config: dict | None) -> PromptSpec:
    eos = None
    if tokenizer_config:
        tok = tokenizer_config.get("eos_token")
        eos = _token_id(tokenizer_json, tok if isinstance(tok, str) else (tok or {}).get("content"))
    if eos is None:
        cfg_eos = model.config.eos_token_id
        eos = cfg_eos[0] if isinstance(cfg_eos, list) else cfg_eos
    if eos is None:
        raise ExportError("cannot find an end token: set eos_token in tokenizer_config.json or eos_token_id in config.json")
    return PromptSpec(endTokenId=int(eos))


def export_pack(
    model_dir: str | Path,
    out_dir: str | Path,
    adapters: dict[str, str | Path],
    *,
    tokenizer_dir: str | Path | None = None,
    name: str | None = None,
    extra_targets: Iterable[str] = (),
    prompt: PromptSpec | None = None,
    domain_lambdas: dict[str, float] | None = None,
    max_candidates: int = 100,
    max_history_items: int = 50,
    scoring_head: bool = False,
    kv_cache: str = "concat",
    log=print,
) -> dict:
    """Writes a pack to ``out_dir`` and returns its manifest.

    ``adapters`` maps adapter names to PEFT folders: ``general`` is the domain-general adapter,
    ``domain:<name>`` a domain-specific one (which also declares domain ``<name>``).
    ``scoring_head`` adds the optional ``num_logits_to_keep`` and ``target_ids`` inputs and the
    ``token_logprobs`` output (export_onnx); runtimes whose core predates them cannot run it.
    ``kv_cache="grouped"`` exports the grouped KV cache (graph.ExportableDecoder; manifest
    ``model.kvCache``): candidate runs share one copy of the prompt's cache.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else model_dir
    tok_path = tokenizer_dir / "tokenizer.json"
    if not tok_path.is_file():
        raise ExportError(f"{tok_path} is missing: the pack needs a Hugging Face tokenizer.json")
    for n in adapters:
        if n != "general" and not n.startswith("domain:"):
            raise ExportError(f"adapter name {n!r} must be 'general' or 'domain:<name>'")

    log(f"loading {model_dir}")
    model = load_model(model_dir)
    shape = decoder_shape(model)
    loaded = [load_adapter(n, p) for n, p in adapters.items()]
    targets = resolve_targets(model, loaded, extra_targets)

    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"exporting ONNX graph ({shape.num_layers} layers, {len(targets)} LoRA targets)")
    export_onnx(model, targets, out_dir / "model.onnx", logits_to_keep=scoring_head, token_logprobs=scoring_head, kv_cache=kv_cache)

    shutil.copyfile(tok_path, out_dir / "tokenizer.json")
    tok_cfg_path = tokenizer_dir / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text()) if tok_cfg_path.is_file() else None
    if tok_cfg is not None:
        shutil.copyfile(tok_cfg_path, out_dir / "tokenizer_config.json")
    spec = prompt or default_prompt_spec(model, json.loads(tok_path.read_text()), tok_cfg)

    adapter_entries: dict[str, dict] = {}
    for ad, src in zip(loaded, adapters.values()):
        rel = f"adapters/{adapter_dir_name(ad.name)}"
        (out_dir / rel).mkdir(parents=True, exist_ok=True)
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copyfile(Path(src) / f, out_dir / rel / f)
        adapter_entries[ad.name] = {
            "path": rel,
            "rank": ad.rank,
            "alpha": ad.alpha,
            "scaling": ad.scaling,
            "targetModules": ad.target_modules,
        }
    lambdas = domain_lambdas or {}
    domains = {
        n.split(":", 1)[1]: {
            "adapter": n,
            "defaultLambda": 0.5,
            **({"calibratedLambda": lambdas[n.split(":", 1)[1]]} if n.split(":", 1)[1] in lambdas else {}),
        }
        for n in adapters
        if n.startswith("domain:")
    }
    manifest = {
        "format": "molorec-pack",
        "formatVersion": PACK_FORMAT_VERSION,
        "name": name or model_dir.name,
        "dtype": "float32",
        "model": {
            "architecture": shape.architecture,
            "numLayers": shape.num_layers,
            "numHeads": shape.num_heads,
            "numKvHeads": shape.num_kv_heads,
            "headDim": shape.head_dim,
            "hiddenSize": shape.hidden_size,
            "vocabSize": shape.vocab_size,
            "maxPositions": shape.max_positions,
            "kvCache": kv_cache,
        },
        "files": {
            "model": "model.onnx",
            "modelExternalData": [],
            "tokenizer": "tokenizer.json",
            "tokenizerConfig": "tokenizer_config.json" if tok_cfg is not None else None,
        },
        "lora": {
            "targets": [
                {"module": m, "inFeatures": fin, "outFeatures": fout, "inputA": f"lora.{m}.A", "inputB": f"lora.{m}.B"}
                for m, fin, fout in targets
            ],
            "scaleInput": "lora_scale",
        },
        "adapters": adapter_entries,
        "generalAdapter": "general" if "general" in adapters else None,
        "domains": domains,
        "defaultDomain": next(iter(domains), None),
        "prompt": spec.to_json(),
        "limits": {"maxCandidates": max_candidates, "maxHistoryItems": max_history_items},
    }
    write_manifest(out_dir, manifest)
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    log(f"wrote {out_dir} ({size / 1e6:.2f} MB)")
    return manifest


def write_manifest(pack_dir: str | Path, manifest: dict) -> None:
    Path(pack_dir, "molorec.json").write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(pack_dir: str | Path) -> dict:
    return json.loads(Path(pack_dir, "molorec.json").read_text())
