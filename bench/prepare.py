"""Derived models for the scoring benchmark (bench/scoring.mjs), cached under --out.

From the pack alone: quantized packs (molorec_train.quantize), MatMul micro-graphs of the
pack's weight shapes (for the arithmetic floor) and the list of weight shapes.
From the transformers checkpoint (--hf-model) as well: the block-causal graph variant (packed
scoring), the num_logits_to_keep and token_logprobs variants (graph.py), a merged pack (adapters folded in at the calibrated λ,
same LoRA inputs) and a graph without LoRA inputs. For the fixture pack, whose checkpoint is not
kept, the checkpoint is rebuilt from its seeds (molorec_train.fixture) and checked against the
pack's weights.

Prints one JSON object (paths, or the reason a model is missing) on the last stdout line.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))

from molorec_train.export import export_onnx, load_model, read_manifest, write_manifest  # noqa: E402
from molorec_train.quantize import QuantizeOptions, quantize_pack  # noqa: E402

QUANT_VARIANTS = {
    "int8": QuantizeOptions(bits=8),
    "int8-nbits": QuantizeOptions(bits=8, method="nbits"),
    "int4": QuantizeOptions(bits=4),
    "int4-acc4": QuantizeOptions(bits=4, accuracy_level=4),
}


def log(msg: str) -> None:
    print(f"[prepare] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet():
    """Keeps library chatter (progress bars, export warnings) off the benchmark's output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield


def file_key(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def weight_shapes(model_path: Path) -> list[dict]:
    """[K, N] of every MatMul with a constant weight, in graph order; the logits one is the LM head."""
    m = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name: list(i.dims) for i in m.graph.initializer}
    out = []
    for node in m.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits and len(inits[node.input[1]]) == 2:
            k, n = inits[node.input[1]]
            out.append({"K": k, "N": n, "lmHead": node.output[0] == "logits"})
    return out


def lm_head_weight(model_path: Path) -> np.ndarray | None:
    m = onnx.load(str(model_path))
    inits = {i.name: i for i in m.graph.initializer}
    for node in m.graph.node:
        if node.op_type == "MatMul" and node.output[0] == "logits" and node.input[1] in inits:
            return numpy_helper.to_array(inits[node.input[1]])
    return None


def matmul_graph(k: int, n: int, path: Path) -> int:
    """X[T, K] times R distinct weights [K, N], summed: R MatMuls per run amortise run overhead."""
    r = int(min(64, max(2, np.ceil(4e6 / (k * n * 4)))))
    rng = np.random.default_rng(0)
    inits, nodes, outs = [], [], []
    for i in range(r):
        inits.append(numpy_helper.from_array((rng.standard_normal((k, n)) * 0.05).astype(np.float32), f"W{i}"))
        nodes.append(helper.make_node("MatMul", ["X", f"W{i}"], [f"Y{i}"]))
        outs.append(f"Y{i}")
    nodes.append(helper.make_node("Sum", outs, ["Y"]))
    graph = helper.make_graph(
        nodes,
        f"matmul_{k}x{n}",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", n])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # onnxruntime-node 1.30 reads IR ≤ 13
    onnx.save(model, str(path))
    return r


def rebuild_fixture_checkpoint(pack: Path, out: Path) -> Path:
    """The fixture pack's transformers checkpoint, rebuilt from the seeds in fixture.py."""
    from molorec_train.fixture import fixture_base_model

    if not (out / "config.json").is_file():
        with quiet():
            fixture_base_model(out)
    return out


def check_checkpoint(model, pack_model: Path) -> str | None:
    """None when the checkpoint's LM head equals the pack's, else why not."""
    w = lm_head_weight(pack_model)
    if w is None:
        return "cannot find the pack's LM head weight to compare"
    ref = model.lm_head.weight.detach().numpy().T
    if w.shape != ref.shape:
        return f"LM head shapes differ: pack {list(w.shape)}, checkpoint {list(ref.shape)}"
    diff = float(np.max(np.abs(w - ref)))
    return None if diff <= 1e-6 else f"LM head weights differ from the pack's (max |diff| {diff:.3g}): not this pack's base model"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pack", required=True, type=Path)
    ap.add_argument(
        "--hf-model",
        type=Path,
        action="append",
        default=[],
        help="transformers checkpoint of the pack's base model (repeatable: the first that matches the pack is used)",
    )
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--quant", default=",".join(QUANT_VARIANTS))
    ap.add_argument("--no-hf", action="store_true", help="skip everything that needs the transformers checkpoint")
    args = ap.parse_args()

    pack = args.pack.resolve()
    manifest = read_manifest(pack)
    model_path = pack / manifest["files"]["model"]
    args.out = args.out.resolve()
    cache = args.out / f"{manifest['name']}-{file_key(model_path)}"
    cache.mkdir(parents=True, exist_ok=True)
    res: dict = {"cache": str(cache), "weights": weight_shapes(model_path), "quantized": {}, "matmul": []}
    t0 = time.time()

    # Quantized packs (need only the pack).
    for name in [q for q in args.quant.split(",") if q]:
        out = cache / f"pack-{name}"
        if not (out / "molorec.json").is_file():
            log(f"quantizing the pack ({name})")
            shutil.rmtree(out, ignore_errors=True)
            with quiet():
                quantize_pack(pack, out, QUANT_VARIANTS[name])
        res["quantized"][name] = str(out)

    # MatMul micro-graphs of the pack's weight shapes, plus one large shape for the peak.
    shapes = sorted({(w["K"], w["N"]) for w in res["weights"]} | {(1024, 1024)})
    for k, n in shapes:
        path = cache / f"matmul-{k}x{n}.onnx"
        meta = path.with_suffix(".json")
        if not meta.is_file():
            meta.write_text(json.dumps({"R": matmul_graph(k, n, path)}))
        res["matmul"].append({"K": k, "N": n, "R": json.loads(meta.read_text())["R"], "path": str(path)})

    # Everything that needs the transformers checkpoint: the given one if it is this pack's base
    # model, else (fixture pack only) the fixture's, rebuilt from its seeds.
    candidates = [("given", p.resolve()) for p in args.hf_model if (p / "config.json").is_file()]
    if manifest["name"] == "tiny-fixture":
        candidates.append(("rebuilt from the fixture's seeds", None))
    hf, problems = None, []
    if args.no_hf:
        problems.append("--no-hf given")
        candidates = []
    elif not candidates:
        where = ", ".join(str(p) for p in args.hf_model) or "(none given)"
        problems.append(
            f"no transformers checkpoint (config.json) at {where}: pass --hf-model DIR (the recipe writes artifacts/recipe/base, and packs/demo-base with --base-out)"
        )
    if candidates:
        import torch

        torch.set_num_threads(1)  # the machine is shared; exports are not timed
    for source, path in candidates:
        if path is None:
            path = rebuild_fixture_checkpoint(pack, args.out / "tiny-fixture-hf")
        with quiet():
            model = load_model(path)
        why = check_checkpoint(model, model_path)
        if why is None:
            hf, res["hfSource"] = path, source
            break
        problems.append(f"{path}: {why}")
    if hf is None:
        res["hfMissing"] = "; ".join(problems)
    else:
        res["hfModel"] = str(hf)
        targets = [(t["module"], t["inFeatures"], t["outFeatures"]) for t in manifest["lora"]["targets"]]
        variants = (
            ("block", {"attention": "block"}),
            ("keep", {"logits_to_keep": True}),
            ("head", {"logits_to_keep": True, "token_logprobs": True}),
        )
        for name, kw in variants:
            path = cache / f"model-{name}.onnx"
            if not path.is_file():
                log(f"exporting the {name} graph variant")
                with quiet():
                    export_onnx(model, targets, path, **kw)
            res[f"{name}Model"] = str(path)
        # The no-LoRA graph and the merged pack keep the pack graph's interface (scoring head or not, KV cache),
        # so that they differ from the pack only in how adapters are applied.
        import onnx

        pack_inputs = {i.name for i in onnx.load(str(pack / manifest["files"]["model"]), load_external_data=False).graph.input}
        head_kw = {"logits_to_keep": True, "token_logprobs": True} if {"num_logits_to_keep", "target_ids"} <= pack_inputs else {}
        kv_cache = manifest["model"].get("kvCache", "concat")
        suffix = ("-head" if head_kw else "") + ("-grouped" if kv_cache == "grouped" else "")
        head_kw["kv_cache"] = kv_cache
        path = cache / f"model-nolora{suffix}.onnx"
        if not path.is_file():
            log("exporting a graph without LoRA inputs")
            with quiet():
                export_onnx(model, [], path, **head_kw)
        res["noLoraModel"] = str(path)
        # The merged pack: calibrated λ of the default domain folded into the weights.
        domain = manifest.get("defaultDomain")
        if domain is not None and manifest.get("generalAdapter"):
            d = manifest["domains"][domain]
            lam = d.get("calibratedLambda", d.get("defaultLambda", 0.5))
            weights = {manifest["generalAdapter"]: 1 - lam, d["adapter"]: lam}
            out = cache / f"pack-merged-{lam:.4f}{suffix}"
            if not (out / "molorec.json").is_file():
                from molorec_train.reference import merged_model

                log(f"exporting the merged pack (λ = {lam:.4f})")
                adapters = {n: pack / e["path"] for n, e in manifest["adapters"].items()}
                shutil.rmtree(out, ignore_errors=True)
                shutil.copytree(
                    pack, out, ignore=shutil.ignore_patterns(manifest["files"]["model"], *manifest["files"].get("modelExternalData", []))
                )
                with quiet():
                    merged = merged_model(hf, adapters, weights)
                    export_onnx(merged, targets, out / manifest["files"]["model"], **head_kw)
                m2 = read_manifest(out)
                m2["name"] = f"{manifest['name']}-merged"
                m2["merged"] = {"domain": domain, "lambda": lam, "weights": weights}
                write_manifest(out, m2)
            res["merged"] = {"pack": str(out), "domain": domain, "lambda": lam, "weights": [[k, v] for k, v in weights.items()]}
        else:
            res["mergedMissing"] = "the pack has no general adapter or default domain"
    log(f"ready in {time.time() - t0:.1f}s ({cache})")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
