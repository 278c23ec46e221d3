"""Weight-only block-wise quantization that keeps the ranking: ``quantize --method blocks``.

Each weight matrix ``W [N, K]`` is cut into blocks of ``block`` values along K (per output row, the
layout of llama.cpp's Q4_1/Q8_0 and of onnxruntime's ``MatMulNBits``). A block is stored as unsigned
``bits``-bit codes ``q`` with a float ``scale`` and a float ``offset``::

    w ≈ scale · (q − 2^(bits−1)) + offset

per block, the better (smaller worst error) of two fits: *min/max* (``scale = (max − min)/(2^bits − 1)``,
``offset = min + 2^(bits−1)·scale``: a Q4_1-style grid) and *symmetric* (``scale = max|w| / (2^(bits−1) − 1)``,
``offset = 0``: a Q8_0-style grid). Weights that came from a GGUF of those formats land back on their
own grid, so SmolLM2's Q4_1 layers are stored exactly in 4 bits and its Q8_0 embedding in 8.

In the graph, ``MatMulNBits`` (onnxruntime's fast block kernel, whose own zero point is the fixed
``2^(bits−1)``) computes ``x · (scale·(q − z))ᵀ`` and a small correction adds the offsets:
``(Σ_block x) · offsetᵀ``, a ``[rows, K/block] × [K/block, N]`` product, 1/block of the main one.
A table that a Gather reads (the token embedding; with tied embeddings the same table feeds the LM
head's ``MatMulNBits``) is dequantized row by row with plain ONNX ops, so one packed copy serves both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .graph import ExportError

MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class Blocks:
    """One matrix ``[N, K]`` in blocks: codes ``q [N, K/block, block]`` (uint8, one code per byte),
    ``scale`` and ``offset`` ``[N, K/block]`` float32."""

    q: np.ndarray
    scale: np.ndarray
    offset: np.ndarray
    bits: int

    @property
    def zero(self) -> int:
        return 1 << (self.bits - 1)

    def dequantize(self) -> np.ndarray:
        w = self.scale[..., None] * (self.q.astype(np.float32) - self.zero) + self.offset[..., None]
        return w.reshape(self.q.shape[0], -1)

    def packed(self) -> np.ndarray:
        """``MatMulNBits``' B: ``[N, K/block, block·bits/8]`` bytes, low nibble first for 4 bits."""
        if self.bits == 8:
            return self.q
        return (self.q[..., 0::2] | (self.q[..., 1::2] << 4)).astype(np.uint8)


def quantize_blocks(w: np.ndarray, bits: int, block: int) -> Blocks:
    """``w [N, K]`` (K a multiple of ``block``) in ``bits``-bit blocks; per block the min/max or the
    symmetric grid, whichever has the smaller worst error."""
    if bits not in (4, 8):
        raise ExportError(f"bits {bits}: expected 4 or 8")
    n, k = w.shape
    if k % block:
        raise ExportError(f"K = {k} is not a multiple of the block size {block}")
    wb = w.astype(np.float32).reshape(n, k // block, block)
    levels, zero = (1 << bits) - 1, 1 << (bits - 1)

    lo, hi = wb.min(-1), wb.max(-1)
    s_mm = np.where(hi > lo, (hi - lo) / levels, 1.0).astype(np.float32)
    q_mm = np.clip(np.rint((wb - lo[..., None]) / s_mm[..., None]), 0, levels)
    off_mm = (lo + zero * s_mm).astype(np.float32)

    amax = np.abs(wb).max(-1)
    s_sym = np.where(amax > 0, amax / (zero - 1), 1.0).astype(np.float32)
    q_sym = np.clip(np.rint(wb / s_sym[..., None]) + zero, 1, levels)

    err_mm = np.abs(s_mm[..., None] * (q_mm - zero) + off_mm[..., None] - wb).max(-1)
    err_sym = np.abs(s_sym[..., None] * (q_sym - zero) - wb).max(-1)
    sym = err_sym < err_mm
    q = np.where(sym[..., None], q_sym, q_mm).astype(np.uint8)
    return Blocks(q, np.where(sym, s_sym, s_mm).astype(np.float32), np.where(sym, 0.0, off_mm).astype(np.float32), bits)


class GraphEditor:
    """Adds initializers and nodes to a graph under unique names."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.inits = {i.name: i for i in model.graph.initializer}
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}.q{self.n}"

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        t = numpy_helper.from_array(value, name)
        self.model.graph.initializer.append(t)
        self.inits[name] = t
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str] | None = None, domain: str = "", **attrs) -> str:
        out = outputs or [self.name(op)]
        self.model.graph.node.append(helper.make_node(op, inputs, out, name=self.name(f"{op}_node"), domain=domain, **attrs))
        return out[0]

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.inits[name])

    def drop_unused(self) -> None:
        used = {i for n in self.model.graph.node for i in n.input} | {o.name for o in self.model.graph.output}
        keep = [i for i in self.model.graph.initializer if i.name in used]
        del self.model.graph.initializer[:]
        self.model.graph.initializer.extend(keep)


@dataclass(frozen=True)
class StoredBlocks:
    """A quantized matrix's initializers in the graph."""

    packed: str  # [N, K/block, bytes]
    scales: str  # [N · K/block] (MatMulNBits' layout)
    offsets_t: str  # [K/block, N] (the correction's MatMul)
    n: int
    k: int
    block: int
    bits: int
    has_offsets: bool


def store(ed: GraphEditor, base: str, blocks: Blocks, block: int) -> StoredBlocks:
    n, nb = blocks.scale.shape
    return StoredBlocks(
        ed.const(f"{base}.packed", blocks.packed()),
        ed.const(f"{base}.scales", blocks.scale.reshape(-1)),
        ed.const(f"{base}.offsets_t", np.ascontiguousarray(blocks.offset.T)),
        n,
        nb * block,
        block,
        blocks.bits,
        bool(np.any(blocks.offset)),
    )


def matmul_blocks(ed: GraphEditor, x: str, y: str, sb: StoredBlocks, accuracy_level: int) -> None:
    """``y = x · Wᵀ`` for ``x [..., K]`` through MatMulNBits plus the offset correction."""
    main = ed.name("nbits") if sb.has_offsets else y
    attrs = dict(K=sb.k, N=sb.n, bits=sb.bits, block_size=sb.block, accuracy_level=accuracy_level)
    ed.node("MatMulNBits", [x, sb.packed, sb.scales], [main], domain=MS_DOMAIN, **attrs)
    if not sb.has_offsets:
        return
    blocks = ed.node("Reshape", [x, ed.const("shape", np.array([-1, sb.k // sb.block, sb.block], np.int64))])
    sums = ed.node("ReduceSum", [blocks, ed.const("axis", np.array([-1], np.int64))], keepdims=0)  # [rows, K/block]
    corr = ed.node("MatMul", [sums, sb.offsets_t])  # [rows, N]
    corr = ed.node("Reshape", [corr, ed.node("Shape", [main])])
    ed.node("Add", [main, corr], [y])


def dequantized_table(ed: GraphEditor, sb: StoredBlocks) -> str:
    """The whole table ``[N, K]`` as float32 from its packed codes, with plain ONNX ops over
    initializers only: onnxruntime folds it into one float32 tensor when the session opens (a small
    download, float32 memory), for runtimes without an 8-bit ``MatMulNBits`` (WebGPU)."""
    nb = sb.k // sb.block
    codes = ed.node("Cast", [sb.packed], to=TensorProto.FLOAT)  # [N, nb, block] (8 bits: one code per byte)
    if sb.bits == 4:
        raise ExportError("a dequantized-at-load head needs an 8-bit table (--embedding-bits 8)")
    scale = ed.node("Reshape", [sb.scales, ed.const("table_shape", np.array([sb.n, nb, 1], np.int64))])
    w = ed.node("Mul", [ed.node("Sub", [codes, ed.const("zero", np.array(1 << (sb.bits - 1), np.float32))]), scale])
    if sb.has_offsets:
        off = ed.node("Transpose", [sb.offsets_t], perm=[1, 0])
        w = ed.node("Add", [w, ed.node("Reshape", [off, ed.const("table_shape", np.array([sb.n, nb, 1], np.int64))])])
    return ed.node("Reshape", [w, ed.const("nk", np.array([sb.n, sb.k], np.int64))])


def gather_blocks(ed: GraphEditor, ids: str, y: str, sb: StoredBlocks) -> None:
    """``y = W[ids]`` (rows of the table, ``[..., K]``) from the packed codes, with plain ONNX ops."""
    nb = sb.k // sb.block
    rows = ed.node("Cast", [ed.node("Gather", [sb.packed, ids], axis=0)], to=TensorProto.FLOAT)  # [..., nb, bytes]
    if sb.bits == 4:  # two codes per byte, low nibble first
        hi = ed.node("Floor", [ed.node("Mul", [rows, ed.const("sixteenth", np.array(1 / 16, np.float32))])])
        lo = ed.node("Sub", [rows, ed.node("Mul", [hi, ed.const("sixteen", np.array(16, np.float32))])])
        last = ed.const("last", np.array([-1], np.int64))
        pairs = ed.node("Concat", [ed.node("Unsqueeze", [lo, last]), ed.node("Unsqueeze", [hi, last])], axis=-1)
        rows = ed.node(
            "Reshape",
            [pairs, ed.node("Concat", [ed.node("Shape", [ids]), ed.const("nb_block", np.array([nb, sb.block], np.int64))], axis=0)],
        )
    centred = ed.node("Sub", [rows, ed.const("zero", np.array(1 << (sb.bits - 1), np.float32))])
    table_shape = ed.const("table_shape", np.array([sb.n, nb, 1], np.int64))
    scale = ed.node("Gather", [ed.node("Reshape", [sb.scales, table_shape]), ids], axis=0)  # [..., nb, 1]
    w = ed.node("Mul", [centred, scale])
    if sb.has_offsets:
        off = ed.node("Transpose", [sb.offsets_t], perm=[1, 0])  # [N, nb], folded at load
        off = ed.node("Gather", [ed.node("Reshape", [off, table_shape]), ids], axis=0)
        w = ed.node("Add", [w, off])
    out_shape = ed.node("Concat", [ed.node("Shape", [ids]), ed.const("k", np.array([sb.k], np.int64))], axis=0)
    ed.node("Reshape", [w, out_shape], [y])


@dataclass(frozen=True)
class BlockReport:
    matmuls: int
    tables: int
    max_abs_error: float
    exact_blocks: float  # fraction of blocks reconstructed within 1e-6 relative


def quantize_graph(
    model: onnx.ModelProto, bits: int, block: int, accuracy_level: int, embedding_bits: int | None, log=print, head_at_load: bool = False
) -> BlockReport:
    """Rewrites every MatMul/Gemm with a constant weight (and each embedding Gather) in place.
    ``head_at_load``: a tied LM head reads its table dequantized when the session opens
    (:func:`dequantized_table`) instead of through an 8-bit ``MatMulNBits``, which onnxruntime-web's
    WebGPU cannot run."""
    ed = GraphEditor(model)
    stored: dict[str, StoredBlocks] = {}
    errors: list[float] = []
    exact: list[float] = []

    def blocks_of(table: str, w: np.ndarray, nbits: int) -> StoredBlocks:
        if table not in stored:
            b = quantize_blocks(w, nbits, block)
            err = np.abs(b.dequantize() - w)
            errors.append(float(err.max()))
            tol = 1e-6 * np.abs(w).reshape(b.scale.shape[0], -1, block).max(-1) + 1e-12
            exact.append(float((err.reshape(b.scale.shape[0], -1, block).max(-1) <= tol).mean()))
            stored[table] = store(ed, table, b, block)
        return stored[table]

    old = list(model.graph.node)
    new_nodes: list[onnx.NodeProto] = []
    matmuls = tables = 0
    for node in old:
        w_name = node.input[1] if len(node.input) > 1 else None
        mark = len(model.graph.node)
        if node.op_type == "MatMul" and w_name in ed.inits and len(ed.inits[w_name].dims) == 2:
            w = ed.array(w_name).T  # MatMul's B is [K, N]
            if w.shape[1] % block == 0:
                matmul_blocks(ed, node.input[0], node.output[0], blocks_of(w_name, np.ascontiguousarray(w), bits), accuracy_level)
                matmuls += 1
        elif node.op_type == "Gemm" and embedding_bits and w_name in ed.inits and _attr(node, "transB") == 1 and len(node.input) == 2:
            # The tied LM head (export.share_tied_head): B is the embedding table [V, H] itself, so it
            # shares the table's packed copy (and its bits) with the embedding Gather.
            sb = blocks_of(w_name, ed.array(w_name), embedding_bits)
            if head_at_load and sb.bits == 8:
                ed.node("Gemm", [node.input[0], dequantized_table(ed, sb)], [node.output[0]], transB=1)
            else:
                matmul_blocks(ed, node.input[0], node.output[0], sb, accuracy_level)
            matmuls += 1
        elif node.op_type == "Gather" and node.input[0] in ed.inits and embedding_bits and len(ed.inits[node.input[0]].dims) == 2:
            table = ed.array(node.input[0])
            gather_blocks(ed, node.input[1], node.output[0], blocks_of(node.input[0], table, embedding_bits))
            tables += 1
        if len(model.graph.node) == mark:
            new_nodes.append(node)
        else:  # the appended replacement nodes go where the old node was
            new_nodes.extend(model.graph.node[mark:])
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    if not any(n.domain == MS_DOMAIN for n in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    ed.drop_unused()
    log(f"quantized {matmuls} weight matrices to {bits} bits and {tables} embedding table(s), blocks of {block}")
    return BlockReport(matmuls, tables, max(errors, default=0.0), float(np.mean(exact)) if exact else 1.0)


def _attr(node: onnx.NodeProto, name: str) -> int | None:
    for a in node.attribute:
        if a.name == name:
            return a.i
    return None
