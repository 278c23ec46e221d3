"""One-op ONNX graphs for bench/webgpu-kernels.mjs: the quantized ops the packs use, each alone,
run there on onnxruntime-web's WASM and WebGPU backends and compared.

    .venv/bin/python bench/webgpu_kernels.py --out bench/.cache/webgpu-kernels

Writes <case>.onnx and cases.json (the feeds: shapes and types; values are drawn by the driver).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]


def save(out: Path, name: str, nodes, inputs, inits, microsoft: bool = False) -> None:
    graph = helper.make_graph(nodes, name, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if microsoft else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.save(model, str(out / f"{name}.onnx"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "bench/.cache/webgpu-kernels")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    cases: dict[str, dict] = {}

    def nbits(name: str, k: int, n: int, bits: int, rows: list[int], what: str) -> None:
        blocks = k // 32
        b = rng.integers(0, 256, (n, blocks, 32 * bits // 8), dtype=np.uint8)
        s = (rng.standard_normal((n, blocks)) * 0.05).astype(np.float32)
        node = helper.make_node("MatMulNBits", ["x", "B", "S"], ["y"], domain="com.microsoft", K=k, N=n, bits=bits, block_size=32)
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [*rows, k])
        save(out, name, [node], [x], [numpy_helper.from_array(b, "B"), numpy_helper.from_array(s, "S")], microsoft=True)
        cases[name] = {"what": what, "feeds": {"x": {"type": "float32", "dims": [*rows, k]}}}

    nbits("matmulnbits_4bit", 128, 384, 4, [3, 7], "MatMulNBits, 4-bit, block 32 (the Linear layers of packs/edge and SmolLM2 int4)")
    nbits("matmulnbits_8bit", 576, 1024, 8, [3, 2], "MatMulNBits, 8-bit, block 32 (the tied table / LM head of SmolLM2 int4)")

    table_u8 = rng.integers(0, 256, (2048, 128), dtype=np.uint8)
    table_i8 = rng.integers(-128, 128, (2048, 128), dtype=np.int8)
    ids = {"ids": {"type": "int64", "dims": [2, 5], "max": 2048}}

    def gather_then(name: str, table: np.ndarray, tail: list, inits: list, what: str) -> None:
        nodes = [helper.make_node("Gather", ["W", "ids"], ["q"]), *tail]
        save(
            out,
            name,
            nodes,
            [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 5])],
            [numpy_helper.from_array(table, "W"), *inits],
        )
        cases[name] = {"what": what, "feeds": ids}

    scale = numpy_helper.from_array(np.array(0.01, np.float32), "s")
    gather_then(
        "gather_dequantizelinear_uint8",
        table_u8,
        [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        [scale, numpy_helper.from_array(np.array(128, np.uint8), "z")],
        "Gather uint8 + DequantizeLinear, per-tensor scale and zero point (the embedding table of packs/edge)",
    )
    gather_then(
        "gather_dequantizelinear_int8",
        table_i8,
        [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        [scale, numpy_helper.from_array(np.array(3, np.int8), "z")],
        "Gather int8 + DequantizeLinear, per-tensor scale and zero point",
    )
    gather_then(
        "gather_dequantizelinear_uint8_no_zero_point",
        table_u8,
        [helper.make_node("DequantizeLinear", ["q", "s"], ["y"])],
        [scale],
        "Gather uint8 + DequantizeLinear, per-tensor scale, no zero point",
    )
    gather_then(
        "gather_cast_sub_mul_uint8",
        table_u8,
        [
            helper.make_node("Cast", ["q"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Sub", ["f", "z"], ["c"]),
            helper.make_node("Mul", ["c", "s"], ["y"]),
        ],
        [scale, numpy_helper.from_array(np.array(128.0, np.float32), "z")],
        "Gather uint8 + Cast/Sub/Mul in float32 (plain ops: the same values as DequantizeLinear)",
    )
    (out / "cases.json").write_text(json.dumps(cases, indent=2) + "\n")
    print(f"webgpu_kernels: {len(cases)} graphs in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
