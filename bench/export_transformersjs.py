"""A transformers checkpoint as a transformers.js model folder, for the peers benchmark.

transformers.js (``@huggingface/transformers``) loads ``<folder>/onnx/model.onnx`` (dtype fp32)
beside ``config.json``, ``generation_config.json`` and the tokenizer files, and feeds a decoder
``input_ids``, ``attention_mask``, ``position_ids`` and ``past_key_values.{i}.key/value``
([batch, kv heads, past, head dim]), reading ``logits`` and ``present.{i}.key/value``. No model hub
is reachable here, so the graph is exported locally: molorec's exporter (graph.py) without LoRA
targets, with the contract's minimal variant (concat KV cache, every position's logits), whose
inputs and outputs carry exactly those names. The unused ``lora_scale`` input is removed, so a
generic caller feeds nothing molorec-specific.

    PYTHONPATH=training .venv/bin/python bench/export_transformersjs.py \\
        --checkpoint artifacts/smollm2/checkpoint --out artifacts/peers/transformersjs/smollm2

Prints the folder on the last stdout line. Skips the export when the folder is already complete.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))

from molorec_train.export import export_onnx, load_model  # noqa: E402

FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]


def drop_unused_inputs(model: onnx.ModelProto) -> list[str]:
    """Removes graph inputs that no node reads (the LoRA scale of a graph without LoRA targets)."""
    used = {name for node in model.graph.node for name in node.input}
    for node in model.graph.node:  # inputs read inside subgraphs (If/Loop) count as used
        for attr in node.attribute:
            if attr.g is not None:
                used |= {name for sub in attr.g.node for name in sub.input}
    dropped = [i.name for i in model.graph.input if i.name not in used]
    keep = [i for i in model.graph.input if i.name in used]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    return dropped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="transformers checkpoint folder (config.json, model.safetensors, tokenizer.json)")
    ap.add_argument("--out", required=True, help="the transformers.js model folder to write")
    args = ap.parse_args(argv)
    src, out = Path(args.checkpoint), Path(args.out)
    graph = out / "onnx" / "model.onnx"
    if graph.is_file() and all((out / f).is_file() for f in FILES):
        print(f"[export-transformersjs] {out} is complete", file=sys.stderr)
        print(out)
        return 0
    missing = [f for f in ["config.json", *FILES] if not (src / f).is_file()]
    if missing:
        print(f"[export-transformersjs] {src} lacks {', '.join(sorted(set(missing)))}: run scripts/smollm2-packs.sh", file=sys.stderr)
        return 2
    graph.parent.mkdir(parents=True, exist_ok=True)
    print(f"[export-transformersjs] exporting {src} (float32, concat KV cache, no LoRA inputs)", file=sys.stderr)
    tmp = graph.with_suffix(".tmp.onnx")
    export_onnx(load_model(src), [], tmp, external_data="never")
    model = onnx.load(str(tmp))
    dropped = drop_unused_inputs(model)
    onnx.save(model, str(graph))
    tmp.unlink()
    print(f"[export-transformersjs] removed unused inputs: {', '.join(dropped) or 'none'}", file=sys.stderr)
    for f in FILES:
        shutil.copyfile(src / f, out / f)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
