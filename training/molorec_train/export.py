"""Export a transformers checkpoint plus PEFT LoRA adapters to a molorec model pack."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from .adapters import Adapter, load_adapter
from .graph import FAST_VARIANT, ExportableDecoder, ExportError, GraphSignature, GraphVariant, decoder_shape, lora_input_names
from .manifest import AdapterEntry, DomainEntry, LoraSpec, LoraTarget, ModelConfig, PackFiles, PackLimits, PackManifest, save_manifest
from .prompt import PromptSpec
from .prompt_options import PromptOptions, resolve_prompt

OPSET = 17
WEIGHT_DTYPES = ("float32", "float16")
# Weights above this go to one external-data file: Node's onnxruntime memory-maps it instead of
# copying it out of the parsed graph (SmolLM2-135M fp32: peak RSS 1.44× the weights instead of
# 1.57×), and a protobuf file cannot exceed 2 GiB anyway. Small packs stay one file (Workers, browsers).
EXTERNAL_DATA_THRESHOLD = 64 * 1024 * 1024


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
    variant: GraphVariant | None = None,
    *,
    weights: str = "float32",
    external_data: str = "auto",
    log=lambda *_: None,
    **variant_options,
) -> list[str]:
    """Writes the decoder graph to ``out_path``; returns the external-data files written beside it
    (relative names, empty when every weight is inside the ``.onnx``).

    ``variant`` (or its fields as keywords: ``attention``, ``kv_cache``, ``logits_to_keep``,
    ``token_logprobs``) picks the optional graph features (graph.GraphVariant); the default is the
    pack contract's minimal graph. ``weights="float16"`` stores large weights as float16 with a Cast
    onnxruntime folds away at load (half the download; float32 arithmetic). ``external_data``:
    ``"auto"`` keeps weights inside the ``.onnx`` up to 64 MiB and otherwise writes them to one
    ``<name>.data`` file (EXTERNAL_DATA_THRESHOLD); ``"always"`` / ``"never"`` force either."""
    if variant is None:
        variant = GraphVariant(**variant_options)
    elif variant_options:
        raise ExportError("pass either a GraphVariant or its fields, not both")
    if weights not in WEIGHT_DTYPES:
        raise ExportError(f"weights {weights!r}: expected one of {WEIGHT_DTYPES}")
    if external_data not in ("auto", "always", "never"):
        raise ExportError(f"external_data {external_data!r}: expected auto, always or never")
    signature = GraphSignature(decoder_shape(model), tuple(targets), variant)
    module = ExportableDecoder(model, signature)
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        # torch writes one loose file per tensor beside a graph over 2 GiB: trace into a scratch
        # folder, then lay the weights out once below.
        raw = Path(tmp) / "traced.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                signature.dummies(),
                str(raw),
                input_names=[i.name for i in signature.inputs()],
                output_names=[o.name for o in signature.outputs()],
                dynamic_axes={i.name: i.axes for i in [*signature.inputs(), *signature.outputs()] if i.axes},
                opset_version=OPSET,
                dynamo=False,
                do_constant_folding=True,
            )
        graph = onnx.load(str(raw), load_external_data=True)
    if module.tied and share_tied_head(graph):
        log("tied embeddings: the LM head reads the embedding table (stored once)")
    if weights == "float16":
        n = store_weights_float16(graph)
        log(f"stored {n} weight tensors as float16")
    return save_graph(graph, out_path, external_data)


def share_tied_head(graph: onnx.ModelProto) -> bool:
    """Points a tied LM head at the embedding table: the exporter folds ``embeddingᵀ`` into a second
    initializer for the head's MatMul (113 MB more for a 49k × 576 table in float32). The head's input
    is ``[batch·seq, hidden]`` (graph.ExportableDecoder._logits), so ``Gemm(transB=1)`` over the
    table itself computes the same product. Returns whether a head was rewired."""
    inits = {i.name: i for i in graph.graph.initializer}
    tables = [i for i in graph.graph.initializer if len(i.dims) == 2]
    for node in graph.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits or len(inits[node.input[1]].dims) != 2:
            continue
        head = inits[node.input[1]]
        rows, cols = head.dims
        for table in tables:
            if list(table.dims) != [cols, rows] or table.name == head.name:
                continue
            if np.array_equal(numpy_helper.to_array(table).T, numpy_helper.to_array(head)):
                gemm = onnx.helper.make_node("Gemm", [node.input[0], table.name], list(node.output), name=node.name or "lm_head", transB=1)
                node.CopyFrom(gemm)
                graph.graph.initializer.remove(head)
                return True
    return False


def weight_bytes(graph: onnx.ModelProto) -> int:
    return sum(numpy_helper.to_array(t).nbytes if not t.raw_data else len(t.raw_data) for t in graph.graph.initializer)


def save_graph(graph: onnx.ModelProto, out_path: Path, external_data: str = "auto") -> list[str]:
    """Saves ``graph``, its weights in one ``<name>.data`` file beside it when needed (see
    export_onnx); returns the external files, relative to the graph's folder."""
    out_path = Path(out_path)
    data_name = f"{out_path.name}.data"
    (out_path.parent / data_name).unlink(missing_ok=True)
    external = external_data == "always" or (external_data == "auto" and weight_bytes(graph) > EXTERNAL_DATA_THRESHOLD)
    if external:
        onnx.save_model(
            graph, str(out_path), save_as_external_data=True, all_tensors_to_one_file=True, location=data_name, size_threshold=1024
        )
        (out_path.parent / data_name).chmod(0o644)  # onnx creates it private; a pack is served and copied like model.onnx
        return [data_name]
    onnx.save_model(graph, str(out_path))
    return []


def store_weights_float16(graph: onnx.ModelProto, min_elements: int = 1024) -> int:
    """Stores float32 initializers of at least ``min_elements`` as float16, each behind a Cast back to
    float32 (onnxruntime folds the Casts at load: half the file, float32 arithmetic). Returns the
    number converted."""
    casts, converted = [], 0
    for init in graph.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            continue
        values = numpy_helper.to_array(init)
        if not np.all(np.isfinite(values.astype(np.float16))):
            raise ExportError(f"weight {init.name} has values beyond float16's range (±65504): export with float32 weights")
        name = init.name
        init.CopyFrom(numpy_helper.from_array(values.astype(np.float16), f"{name}.f16"))
        casts.append(onnx.helper.make_node("Cast", [f"{name}.f16"], [name], to=onnx.TensorProto.FLOAT, name=f"{name}.cast"))
        converted += 1
    nodes = list(graph.graph.node)
    del graph.graph.node[:]
    graph.graph.node.extend(casts + nodes)
    return converted


def _config_eos(model: torch.nn.Module) -> int | None:
    eos = model.config.eos_token_id
    return eos[0] if isinstance(eos, list) else eos


def default_prompt_spec(model: torch.nn.Module, tokenizer_dir: str | Path) -> PromptSpec:
    """The default template with the tokenizer's BOS, its end-of-sequence token and its space rule."""
    return resolve_prompt(tokenizer_dir, PromptOptions(), config_eos=_config_eos(model))


def _copy_adapters(loaded: list[Adapter], sources: Iterable[str | Path], out_dir: Path) -> dict[str, AdapterEntry]:
    entries: dict[str, AdapterEntry] = {}
    for ad, src in zip(loaded, sources):
        rel = f"adapters/{adapter_dir_name(ad.name)}"
        (out_dir / rel).mkdir(parents=True, exist_ok=True)
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copyfile(Path(src) / f, out_dir / rel / f)
        entries[ad.name] = AdapterEntry(rel, ad.rank, ad.alpha, ad.scaling, ad.target_modules)
    return entries


def _copy_tokenizer(tokenizer_dir: Path, out_dir: Path) -> str | None:
    """Copies tokenizer.json (+ tokenizer_config.json); returns the config's name in the pack."""
    shutil.copyfile(tokenizer_dir / "tokenizer.json", out_dir / "tokenizer.json")
    cfg = tokenizer_dir / "tokenizer_config.json"
    if not cfg.is_file():
        return None
    shutil.copyfile(cfg, out_dir / "tokenizer_config.json")
    return "tokenizer_config.json"


def export_pack(
    model_dir: str | Path,
    out_dir: str | Path,
    adapters: dict[str, str | Path],
    *,
    tokenizer_dir: str | Path | None = None,
    name: str | None = None,
    extra_targets: Iterable[str] = (),
    prompt: PromptSpec | PromptOptions | None = None,
    domain_lambdas: dict[str, float] | None = None,
    max_candidates: int = 100,
    max_history_items: int = 50,
    variant: GraphVariant = FAST_VARIANT,
    weights: str = "float32",
    external_data: str = "auto",
    log=print,
) -> dict:
    """Writes a pack to ``out_dir`` and returns its manifest (JSON form).

    ``adapters`` maps adapter names to PEFT folders: ``general`` is the domain-general adapter,
    ``domain:<name>`` a domain-specific one (which also declares domain ``<name>``). ``prompt``: a
    finished spec, or options resolved against the tokenizer (prompt_options.py; default: the
    default template with the tokenizer's BOS, end token and space rule). ``variant`` picks the
    graph (graph.GraphVariant; default the grouped KV cache with the scoring head, the fastest
    the runtimes read); ``weights`` and ``external_data`` as in export_onnx.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else model_dir
    if not (tokenizer_dir / "tokenizer.json").is_file():
        raise ExportError(f"{tokenizer_dir / 'tokenizer.json'} is missing: the pack needs a Hugging Face tokenizer.json")
    for n in adapters:
        if n != "general" and not n.startswith("domain:"):
            raise ExportError(f"adapter name {n!r} must be 'general' or 'domain:<name>'")

    log(f"loading {model_dir}")
    model = load_model(model_dir)
    shape = decoder_shape(model)
    loaded = [load_adapter(n, p) for n, p in adapters.items()]
    targets = resolve_targets(model, loaded, extra_targets)
    if not isinstance(prompt, PromptSpec):
        prompt = resolve_prompt(tokenizer_dir, prompt or PromptOptions(), config_eos=_config_eos(model), log=log)

    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"exporting ONNX graph ({shape.num_layers} layers, {len(targets)} LoRA targets, {weights} weights)")
    external = export_onnx(model, targets, out_dir / "model.onnx", variant, weights=weights, external_data=external_data, log=log)
    del model

    lambdas = domain_lambdas or {}
    domains = {n.split(":", 1)[1]: DomainEntry(n, 0.5, lambdas.get(n.split(":", 1)[1])) for n in adapters if n.startswith("domain:")}
    manifest = PackManifest(
        name=name or model_dir.name,
        model=ModelConfig(
            shape.architecture,
            shape.num_layers,
            shape.num_heads,
            shape.num_kv_heads,
            shape.head_dim,
            shape.hidden_size,
            shape.vocab_size,
            shape.max_positions,
            variant.kv_cache,
            GraphSignature(shape, tuple(targets), variant).shared_layers,
        ),
        files=PackFiles(modelExternalData=external, tokenizerConfig=_copy_tokenizer(tokenizer_dir, out_dir)),
        lora=LoraSpec([LoraTarget(m, fin, fout, *lora_input_names(m)) for m, fin, fout in targets]),
        prompt=prompt,
        adapters=_copy_adapters(loaded, adapters.values(), out_dir),
        generalAdapter="general" if "general" in adapters else None,
        domains=domains,
        defaultDomain=next(iter(domains), None),
        limits=PackLimits(max_candidates, max_history_items),
        export={"weights": weights, "variant": asdict(variant)},
    )
    save_manifest(out_dir, manifest)
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    log(f"wrote {out_dir} ({size / 1e6:.2f} MB)")
    return manifest.to_json()


def write_manifest(pack_dir: str | Path, manifest: dict) -> None:
    Path(pack_dir, "molorec.json").write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(pack_dir: str | Path) -> dict:
    return json.loads(Path(pack_dir, "molorec.json").read_text())
