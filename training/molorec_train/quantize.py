"""Smaller packs: quantize a pack's base weights.

Only constant weights are quantized (the base model's Linear layers, the LM head, optionally the
embedding table); the LoRA A/B and scale stay float32 graph inputs, and so do the KV cache and
logits. The result is a normal pack (same manifest contract, ``dtype`` still describes the float32
inputs and outputs) with a ``quantization`` note in its manifest.

- ``method="blocks"`` (default): weight-only blocks of 32 with a scale and an offset each
  (block_quant.py), int8 or int4, the embedding table in ``embedding_bits``. Weights from a Q4_1 /
  Q8_0 GGUF are stored exactly; the ranking agrees with float32 (``ranking_drift``).
- ``method="dynamic"`` (int8): onnxruntime's dynamic quantization, activations quantized at run
  time (``MatMulInteger``). ``method="nbits"``: onnxruntime's ``MatMulNBits`` quantizer
  (symmetric blocks, no offset). Both are kept for comparison: on SmolLM2-135M they move the
  ranking (docs/bring-your-own-model.md).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .block_quant import quantize_graph
from .export import EXTERNAL_DATA_THRESHOLD, read_manifest, save_graph, weight_bytes, write_manifest
from .graph import ExportError

METHODS = ("blocks", "dynamic", "nbits")


@dataclass(frozen=True)
class QuantizeOptions:
    bits: int = 8
    method: str | None = None  # default: blocks
    block_size: int = 32
    # MatMulNBits accuracy_level: 0 = float32 compute (portable), 4 = int8 compute (fast on x86)
    accuracy_level: int = 0
    per_channel: bool = True
    keep_lm_head: bool = False  # leave the LM head in float32
    # also the token embedding (a Gather of a constant table, weight-only int8): at small sizes
    # the float32 embedding is most of an int8 pack. Method "blocks" always quantizes it (in
    # embedding_bits; with tied embeddings the LM head shares it), unless embedding_bits is 0.
    embeddings: bool = False
    embedding_bits: int = 8
    # blocks: a tied LM head dequantized when the session opens (plain ops, folded by onnxruntime)
    # instead of an 8-bit MatMulNBits, which onnxruntime-web's WebGPU cannot run; float32 head memory.
    head_at_load: bool = False

    def resolved_method(self) -> str:
        method = self.method or "blocks"
        if method not in METHODS:
            raise ExportError(f"quantization method {method!r}: expected one of {METHODS}")
        if self.bits not in (4, 8):
            raise ExportError(f"--bits {self.bits}: expected 8 or 4")
        if method == "dynamic" and self.bits != 8:
            raise ExportError("dynamic quantization is int8 only; use --bits 8, or --method nbits for 4 bits")
        return method


def _const_matmuls(model: onnx.ModelProto) -> tuple[list[str], str | None]:
    """Names of MatMul nodes whose weight is an initializer, and the LM head among them."""
    inits = {i.name for i in model.graph.initializer}
    names, lm_head = [], None
    outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
            names.append(node.name)
            if node.output[0] in outputs or node.output[0] == "logits":
                lm_head = node.name
    return names, lm_head


def unshare_tied_head(model: onnx.ModelProto) -> None:
    """Undoes export.share_tied_head: the head as a MatMul over its own transposed copy of the table."""
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        if node.op_type == "Gemm" and len(node.input) == 2 and node.input[1] in inits and trans_b == 1:
            from onnx import helper, numpy_helper

            copy = numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(inits[node.input[1]]).T), f"{node.input[1]}.head_t")
            model.graph.initializer.append(copy)
            node.CopyFrom(helper.make_node("MatMul", [node.input[0], copy.name], list(node.output), name=node.name))


def _const_gathers(model: onnx.ModelProto) -> list[str]:
    """Names of Gather nodes that read a constant table (the token embedding)."""
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "Gather" and n.input and n.input[0] in inits]


def _ensure_node_names(model: onnx.ModelProto) -> None:
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"


def quantize_model(src: str | Path, dst: str | Path, options: QuantizeOptions = QuantizeOptions(), log=print) -> dict:
    """Quantizes one ONNX decoder file; returns a summary for the manifest."""
    method = options.resolved_method()
    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src), load_external_data=True)
    _ensure_node_names(model)
    matmuls, lm_head = _const_matmuls(model)
    if not matmuls:
        raise ExportError(f"{src}: no MatMul with constant weights to quantize")
    if method == "blocks":
        return _quantize_blocks(model, dst, options, log)
    exclude = [lm_head] if options.keep_lm_head and lm_head else []
    # onnxruntime's quantizers turn Gemm(transB) into MatMul by transposing B in place, which would
    # transpose a tied embedding table under its Gather: give the head its own copy.
    unshare_tied_head(model)
    big = weight_bytes(model) > EXTERNAL_DATA_THRESHOLD
    if method == "dynamic":
        _quantize_dynamic(model, dst, [n for n in matmuls if n not in exclude], options, big)
    else:
        _quantize_nbits(model, dst, exclude, options, big)
    quantized = len(matmuls) - len(exclude)
    log(f"quantized {quantized} MatMul weights ({method}, {options.bits} bits){' (LM head kept float32)' if exclude else ''}")
    summary = {"method": method, "bits": options.bits, "matmuls": quantized, "keepLmHead": bool(exclude), "embeddings": options.embeddings}
    if method == "nbits":
        return summary | {"blockSize": options.block_size, "accuracyLevel": options.accuracy_level}
    return summary | {"perChannel": options.per_channel}


def _quantize_blocks(model: onnx.ModelProto, dst: Path, options: QuantizeOptions, log) -> dict:
    if options.keep_lm_head:
        raise ExportError("--keep-lm-head is for the dynamic and nbits methods; blocks keeps the ranking with the head quantized")
    if options.embedding_bits not in (0, 4, 8):
        raise ExportError(f"--embedding-bits {options.embedding_bits}: expected 8, 4 or 0 (keep float32)")
    report = quantize_graph(
        model,
        options.bits,
        options.block_size,
        options.accuracy_level,
        options.embedding_bits or None,
        log,
        head_at_load=options.head_at_load,
    )
    files = save_graph(model, dst)
    return {
        "method": "blocks",
        "bits": options.bits,
        "embeddingBits": options.embedding_bits,
        "matmuls": report.matmuls,
        "tables": report.tables,
        "blockSize": options.block_size,
        "accuracyLevel": options.accuracy_level,
        "maxWeightError": report.max_abs_error,
        "exactBlocks": round(report.exact_blocks, 6),
        "headAtLoad": options.head_at_load,
        "externalData": files,
    }


def _quantize_dynamic(model: onnx.ModelProto, dst: Path, nodes: list[str], options: QuantizeOptions, big: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        named = Path(tmp) / "named.onnx"
        onnx.save(model, str(named), save_as_external_data=big)
        gathers = _const_gathers(model) if options.embeddings else []
        quantize_dynamic(
            str(named),
            str(dst),
            op_types_to_quantize=["MatMul", *(["Gather"] if gathers else [])],
            nodes_to_quantize=nodes + gathers,
            per_channel=options.per_channel,
            weight_type=QuantType.QInt8,
            use_external_data_format=big,
            extra_options={"MatMulConstBOnly": True},
        )


def _quantize_nbits(model: onnx.ModelProto, dst: Path, exclude: list[str], options: QuantizeOptions, big: bool) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    if options.embeddings:  # weight-only int8 table first (Gather + DequantizeLinear), then the MatMuls
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory() as tmp:
            named, gathered = Path(tmp) / "named.onnx", Path(tmp) / "gathered.onnx"
            onnx.save(model, str(named), save_as_external_data=big)
            quantize_dynamic(
                str(named),
                str(gathered),
                op_types_to_quantize=["Gather"],
                nodes_to_quantize=_const_gathers(model),
                weight_type=QuantType.QInt8,
                use_external_data_format=big,
            )
            model = onnx.load(str(gathered))
    # It logs every graph node at INFO ("skip to quantize /Add_42 ..."): hundreds of lines that say nothing.
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    q = MatMulNBitsQuantizer(
        model,
        bits=options.bits,
        block_size=options.block_size,
        is_symmetric=True,
        accuracy_level=options.accuracy_level,
        nodes_to_exclude=exclude,
        op_types_to_quantize=("MatMul",),
    )
    q.process()
    q.model.save_model_to_file(str(dst), use_external_data_format=big)


def _external_files(model_path: Path) -> list[str]:
    model = onnx.load(str(model_path), load_external_data=False)
    files = set()
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            for entry in init.external_data:
                if entry.key == "location":
                    files.add(entry.value)
    return sorted(files)


def quantize_pack(pack_in: str | Path, pack_out: str | Path, options: QuantizeOptions = QuantizeOptions(), log=print) -> dict:
    """Writes a quantized copy of a pack (tokenizer, adapters and manifest copied) and returns
    its manifest."""
    pack_in, pack_out = Path(pack_in), Path(pack_out)
    if not (pack_in / "molorec.json").is_file():
        raise ExportError(f"{pack_in} has no molorec.json: pass a model pack folder")
    if pack_out.resolve() == pack_in.resolve():
        raise ExportError("--out must differ from --pack (the float32 pack is kept)")
    manifest = read_manifest(pack_in)
    if manifest.get("quantization"):
        raise ExportError(f"{pack_in} is already quantized ({manifest['quantization'].get('method')}); quantize the float32 pack")
    files = manifest["files"]
    skip = {files["model"], *files.get("modelExternalData", [])}
    pack_out.mkdir(parents=True, exist_ok=True)
    for p in pack_in.rglob("*"):
        rel = p.relative_to(pack_in).as_posix()
        if p.is_file() and rel not in skip and rel != "molorec.json":
            (pack_out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, pack_out / rel)
    model_out = pack_out / files["model"]
    summary = quantize_model(pack_in / files["model"], model_out, options, log)
    manifest["files"] = {**files, "modelExternalData": _external_files(model_out)}
    before = sum((pack_in / f).stat().st_size for f in skip)
    after = model_out.stat().st_size + sum((pack_out / f).stat().st_size for f in manifest["files"]["modelExternalData"])
    manifest["quantization"] = {**summary, "modelBytes": after, "float32ModelBytes": before}
    write_manifest(pack_out, manifest)
    log(f"wrote {pack_out}: model {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB")
    return manifest


def max_logit_diff(pack_a: str | Path, pack_b: str | Path, tokens: int = 16, seed: int = 0) -> float:
    """Largest |logit| difference of two packs on one random prompt, base model (no adapter)."""
    import onnxruntime as ort

    from .adapters import mixture_feeds

    out = []
    for pack in (Path(pack_a), Path(pack_b)):
        man = read_manifest(pack)
        m = man["model"]
        sess = ort.InferenceSession(str(pack / man["files"]["model"]), providers=["CPUExecutionProvider"])
        ids = np.random.default_rng(seed).integers(0, m["vocabSize"], (1, tokens))
        feeds = {"input_ids": ids, "attention_mask": np.ones((1, tokens), np.int64), "position_ids": np.arange(tokens)[None]}
        for i in range(m["numLayers"]):
            for kind in ("key", "value"):
                feeds[f"past_key_values.{i}.{kind}"] = np.zeros((1, m["numKvHeads"], 0, m["headDim"]), np.float32)
        targets = [(t["module"], t["inFeatures"], t["outFeatures"]) for t in man["lora"]["targets"]]
        feeds |= mixture_feeds(targets, [], [[]])
        names = {i.name for i in sess.get_inputs()}
        if "num_logits_to_keep" in names:  # packs exported with the scoring head: all logits
            feeds["num_logits_to_keep"] = np.zeros(1, np.int64)
        if "target_ids" in names:
            feeds["target_ids"] = np.zeros((1, tokens), np.int64)
        if "row_source" in names:  # a fan-out graph (GraphVariant.fan_out): one row, its own source
            feeds["row_source"] = np.arange(1)
        out.append(sess.run(["logits"], feeds)[0])
    return float(np.max(np.abs(out[0] - out[1])))


def report_drift(pack_in: Path, pack_out: Path, requests: list[dict], threads: int | None = None, log=print):
    """How far the quantized pack's ranking moved from the float32 pack's (base model), written into
    its manifest's quantization note; a warning when Spearman < 0.98 or top-1 agreement < 95 %."""
    from .pack_scorer import PackScorer, ranking_drift

    log(f"ranking drift vs float32 on {len(requests)} requests (base model, no adapter)")
    drift = ranking_drift(PackScorer(pack_in, threads), PackScorer(pack_out, threads), requests, log=log)
    log(
        f"ranking vs float32: Spearman {drift.spearman:.4f} (mean over requests), top-1 agreement {100 * drift.top1:.1f} %, "
        f"max |score diff| {drift.max_score_diff:.3g}"
    )
    if not drift.ok():
        log(
            "warning: the quantized pack ranks differently from float32 (Spearman < 0.98 or top-1 < 95 %): prefer --method blocks, "
            "8-bit embeddings (--embedding-bits 8), --accuracy-level 0, or --bits 8"
        )
    manifest = read_manifest(pack_out)
    manifest["quantization"]["drift"] = {
        "requests": drift.requests,
        "spearman": round(drift.spearman, 5),
        "top1Agreement": round(drift.top1, 4),
        "maxScoreDiff": round(drift.max_score_diff, 5),
    }
    write_manifest(pack_out, manifest)
    return drift


def main_quantize(args) -> int:
    from .pack_scorer import read_requests, sample_requests

    opts = QuantizeOptions(
        bits=args.bits,
        method=args.method,
        block_size=args.block_size,
        accuracy_level=args.accuracy_level,
        keep_lm_head=args.keep_lm_head,
        embeddings=args.embeddings,
        embedding_bits=args.embedding_bits,
        head_at_load=args.webgpu,
    )
    quantize_pack(args.pack, args.out, opts)
    if args.drift_requests > 0:
        n = args.drift_requests
        requests = read_requests(args.requests, n) if args.requests else sample_requests(n)
        report_drift(Path(args.pack), Path(args.out), requests, threads=args.threads)
    print(json.dumps(read_manifest(args.out)["quantization"]))
    return 0
