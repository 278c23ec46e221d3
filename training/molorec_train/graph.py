"""An exportable decoder: the HF model's weights behind a forward over flat tensors.

The module re-states the Llama/Qwen2 decoder with plain tensor ops so that the ONNX graph has
exactly the contract of a model pack (docs/pack-format.md): KV cache in and out, and every
LoRA-wrapped Linear taking its A/B from graph inputs with a symbolic rank, scaled per batch row. It reads the
weights of a loaded transformers model and never copies its code paths (caches, mask helpers),
which change between transformers releases; tests hold it equal to transformers + PEFT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import nn

SUPPORTED_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
LORA_LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MASK_FILL = -1e9
# The grouped graph caps masked scores at this finite value (Min(score, cap)) instead of filling
# them with MASK_FILL: a masked score is then at most -50, where exp(score - max) is a small normal
# float. ~1e9 below the max, onnxruntime's exp() returns subnormals, which x86 handles ~100× slower:
# the prompt run's causal mask (half its scores masked) made Softmax 2–5× slower (measured,
# docs/performance.md). A masked key's weight is at most exp(-50 - best valid score) / Σ, below
# float32's resolution (2^-24) whenever a query's best valid score exceeds -33 (the demo pack's
# lowest over real prompts: -3.5).
GROUPED_MASK_FILL = -50.0
ATTENTION_MODES = ("padding", "block")
KV_CACHE_MODES = ("concat", "grouped")


class ExportError(ValueError):
    """The checkpoint or adapters cannot be exported; the message says what to change."""


@dataclass(frozen=True)
class DecoderShape:
    architecture: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_positions: int


def decoder_shape(model: nn.Module) -> DecoderShape:
    cfg = model.config
    arch = cfg.model_type
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ExportError(f"model_type {arch!r} is not supported; supported: {sorted(SUPPORTED_ARCHITECTURES)}")
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise ExportError(f"hidden_act {cfg.hidden_act!r} is not supported (only silu)")
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    if rope_type == "dynamic":
        raise ExportError("dynamic RoPE scaling depends on sequence length at run time and is not supported")
    if getattr(cfg, "use_sliding_window", False):
        raise ExportError("sliding-window attention is not supported; set use_sliding_window=False")
    num_heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // num_heads
    return DecoderShape(
        architecture=arch,
        num_layers=cfg.num_hidden_layers,
        num_heads=num_heads,
        num_kv_heads=getattr(cfg, "num_key_value_heads", None) or num_heads,
        head_dim=head_dim,
        hidden_size=cfg.hidden_size,
        vocab_size=cfg.vocab_size,
        max_positions=cfg.max_position_embeddings,
    )


def lora_input_names(module: str) -> tuple[str, str]:
    """The graph inputs holding a target module's LoRA A and B."""
    return f"lora.{module}.A", f"lora.{module}.B"


def kv_input_names(num_layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def kv_output_names(num_layers: int) -> list[str]:
    return [f"present.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


@dataclass(frozen=True)
class GraphVariant:
    """Optional graph features beyond the pack contract; runtimes use them when present.

    - ``attention``: ``"padding"`` (the contract: ``attention_mask [batch, total]`` marks valid keys
      and causality comes from cache positions) or ``"block"`` (``[batch, seq, total]``: which key
      each query may see, so one row can hold a prompt plus candidates that must not see each other).
    - ``kv_cache``: ``"concat"`` (past row b serves input row b; present = past + this run) or
      ``"grouped"`` (the past batch may be any divisor Bp of the batch B: input row b attends to
      past row b // (B / Bp), and present holds this run's keys/values only).
    - ``logits_to_keep``: an int64 input ``num_logits_to_keep [1]`` (0 = all) keeps the last k
      positions' logits: a prompt pass needs one position, not the whole prompt.
    - ``token_logprobs``: an input ``target_ids [batch, seq]`` and an output ``token_logprobs
      [batch, kept]`` (log p(target) per position): a scorer fetches one float per token instead of
      a vocabulary-sized row.
    - ``token_entropy`` (with ``token_logprobs``): an output ``token_entropy [batch, kept]``, the
      entropy (nats) of each kept position's next-token distribution, so the token-entropy objective
      needs no vocabulary-sized logits either. onnxruntime runs the whole graph whatever is fetched:
      every run pays for it (an exp, a product and a sum over the log-softmax it already computes;
      not measurable on SmolLM2-135M, docs/performance.md).
    - ``fan_out``: the layers below the first LoRA target (``GraphSignature.shared_layers``; none
      when a target sits in layer 0) run once per *source* row, the rest once per batch row. The
      token inputs (``input_ids``, ``attention_mask``, ``position_ids``, ``target_ids``) and the
      shared layers' past and present have one row per source; an int64 input ``row_source [batch]``
      says which source each batch row continues. Rows that differ only in their LoRA scales (the
      mixtures of one request) then pay for the shared layers once: on SmolLM2-135M with LoRAs on
      the top 10 of 30 layers, two thirds of the layers.
    """

    attention: str = "padding"
    kv_cache: str = "concat"
    logits_to_keep: bool = False
    token_logprobs: bool = False
    token_entropy: bool = False
    fan_out: bool = False

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_MODES:
            raise ExportError(f"attention {self.attention!r}: expected one of {ATTENTION_MODES}")
        if self.kv_cache not in KV_CACHE_MODES:
            raise ExportError(f"kv_cache {self.kv_cache!r}: expected one of {KV_CACHE_MODES}")
        if self.kv_cache == "grouped" and self.attention != "padding":
            raise ExportError('kv_cache="grouped" needs attention="padding"')
        if self.fan_out and self.kv_cache != "grouped":
            # The runtimes plan fan-out runs on grouped caches only (a job's shared-layer cache once per run).
            raise ExportError('fan_out needs kv_cache="grouped"')
        if self.token_entropy and not self.token_logprobs:
            raise ExportError("token_entropy needs token_logprobs (it reuses its log-softmax)")


# The variant packs are exported with unless told otherwise: the grouped KV cache and the scoring
# head rank 20 candidates 1.5× faster than the contract's minimal graph on SmolLM2-135M
# (docs/performance.md), and every runtime in this repository reads them.
# Fan-out only changes a graph whose LoRA targets leave lower layers out (shared_layers > 0).
FAST_VARIANT = GraphVariant(kv_cache="grouped", logits_to_keep=True, token_logprobs=True, token_entropy=True, fan_out=True)

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def target_layer(module: str) -> int:
    """The decoder layer a LoRA target module sits in (``model.layers.<i>.…``)."""
    m = _LAYER.search(module)
    if m is None:
        raise ExportError(f"LoRA target {module!r} is not inside a decoder layer (model.layers.<i>.…)")
    return int(m.group(1))


@dataclass(frozen=True)
class GraphInput:
    name: str
    axes: dict[int, str]


class DecoderInputs(NamedTuple):
    """The graph's inputs by role (what ``forward`` receives positionally, named)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    past: tuple[torch.Tensor, ...]  # key, value per layer
    lora: tuple[torch.Tensor, ...]  # A, B per target module
    lora_scale: torch.Tensor
    keep: torch.Tensor | None  # num_logits_to_keep
    target_ids: torch.Tensor | None
    row_source: torch.Tensor | None = None  # fan-out: the source row of each batch row


@dataclass(frozen=True)
class GraphSignature:
    """Every input and output of an exported decoder, in order, with dynamic axes and dummy values.

    The one place that knows the graph's interface: the exporter names inputs and axes from it,
    the decoder unpacks its positional arguments with it, and tests build feeds from it."""

    shape: DecoderShape
    targets: tuple[tuple[str, int, int], ...]  # (module path, in features, out features)
    variant: GraphVariant = GraphVariant()

    @property
    def shared_layers(self) -> int:
        """Layers computed once per source row (``GraphVariant.fan_out``): those below the lowest
        LoRA target; 0 without fan-out."""
        if not self.variant.fan_out or not self.targets:
            return 0
        return min(target_layer(t) for t, _, _ in self.targets)

    def _rows_axis(self, layer: int, *, past: bool) -> str:
        """The batch axis of a layer's past or present: sources below ``shared_layers``."""
        rows = "sources" if layer < self.shared_layers else "batch"
        return f"past_{rows}" if past and self.variant.kv_cache == "grouped" else rows

    def inputs(self) -> list[GraphInput]:
        v, src = self.variant, "sources" if self.shared_layers else "batch"
        mask_axes = {0: src, 1: "seq", 2: "total_seq"} if v.attention == "block" else {0: src, 1: "total_seq"}
        out = [GraphInput("input_ids", {0: src, 1: "seq"}), GraphInput("attention_mask", mask_axes)]
        out.append(GraphInput("position_ids", {0: src, 1: "seq"}))
        names = kv_input_names(self.shape.num_layers)
        out += [GraphInput(n, {0: self._rows_axis(i // 2, past=True), 2: "past_seq"}) for i, n in enumerate(names)]
        for module, _, _ in self.targets:
            a, b = lora_input_names(module)
            out += [GraphInput(a, {0: "lora_rank"}), GraphInput(b, {1: "lora_rank"})]
        out.append(GraphInput("lora_scale", {0: "batch", 1: "lora_rank"}))
        if v.logits_to_keep:
            out.append(GraphInput("num_logits_to_keep", {}))
        if v.token_logprobs:
            out.append(GraphInput("target_ids", {0: src, 1: "seq"}))
        if self.shared_layers:
            out.append(GraphInput("row_source", {0: "batch"}))
        return out

    def outputs(self) -> list[GraphInput]:
        kept = "logits_seq" if self.variant.logits_to_keep else "seq"
        present_seq = "seq" if self.variant.kv_cache == "grouped" else "total_seq"
        out = [GraphInput("logits", {0: "batch", 1: kept})]
        names = kv_output_names(self.shape.num_layers)
        out += [GraphInput(n, {0: self._rows_axis(i // 2, past=False), 2: present_seq}) for i, n in enumerate(names)]
        if self.variant.token_logprobs:
            out.append(GraphInput("token_logprobs", {0: "batch", 1: kept}))
        if self.variant.token_entropy:
            out.append(GraphInput("token_entropy", {0: "batch", 1: kept}))
        return out

    def unpack(self, args: tuple[torch.Tensor, ...]) -> DecoderInputs:
        n_kv, n_lora = 2 * self.shape.num_layers, 2 * len(self.targets)
        rest = list(args[3 + n_kv + n_lora + 1 :])
        keep = rest.pop(0) if self.variant.logits_to_keep else None
        target_ids = rest.pop(0) if self.variant.token_logprobs else None
        row_source = rest.pop(0) if self.shared_layers else None
        return DecoderInputs(
            args[0],
            args[1],
            args[2],
            tuple(args[3 : 3 + n_kv]),
            tuple(args[3 + n_kv : 3 + n_kv + n_lora]),
            args[3 + n_kv + n_lora],
            keep,
            target_ids,
            row_source,
        )

    def dummies(self, *, batch: int = 2, seq: int = 3, past: int = 4, rank: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Inputs to trace the graph with (a non-zero rank and past, so no axis folds to a constant)."""
        s, v, k = self.shape, self.variant, self.shared_layers
        g = torch.Generator().manual_seed(seed)
        # Fan-out: `batch` sources, each continued by two batch rows (so no axis folds to a constant).
        rows = 2 * batch if k else batch
        if v.attention == "block":
            mask = torch.tril(torch.ones(seq, past + seq, dtype=torch.int64), diagonal=past).unsqueeze(0).repeat(batch, 1, 1)
        else:
            mask = torch.ones(batch, past + seq, dtype=torch.int64)
        args = [
            torch.randint(0, s.vocab_size, (batch, seq), generator=g),
            mask,
            torch.arange(past, past + seq).unsqueeze(0).repeat(batch, 1),
        ]
        for layer in range(s.num_layers):
            past_batch = 1 if v.kv_cache == "grouped" else batch if layer < k else rows
            args += [torch.randn(past_batch, s.num_kv_heads, past, s.head_dim, generator=g) for _ in range(2)]
        for _, fin, fout in self.targets:
            args += [torch.randn(rank, fin, generator=g) * 0.01, torch.randn(fout, rank, generator=g) * 0.01]
        args.append(torch.ones(rows, rank))
        if v.logits_to_keep:
            args.append(torch.tensor([1], dtype=torch.int64))
        if v.token_logprobs:
            args.append(torch.randint(0, s.vocab_size, (batch, seq), generator=g))
        if k:
            args.append(torch.arange(batch).repeat_interleave(2))
        return tuple(args)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


@dataclass(frozen=True)
class _Run:
    """What every layer of one run shares: rotary tables, the mask, the LoRA feeds."""

    batch: int
    seq: int
    qs: int  # query positions (seq, or the kept ones in the last layer)
    cos: torch.Tensor
    sin: torch.Tensor
    q_cos: torch.Tensor  # the queries' rotation (grouped: with hd^-0.5 folded in)
    q_sin: torch.Tensor
    allowed: torch.Tensor  # [B, 1, 1, qs, keys]
    cap: torch.Tensor | None  # grouped layout score cap (_grouped_mask)
    lora: tuple[torch.Tensor, ...]
    scale: torch.Tensor


class ExportableDecoder(nn.Module):
    """The HF model's weights behind ``forward(*inputs)``, inputs and outputs in ``signature`` order.

    - past: per layer, key then value ``[batch, kv_heads, past, head_dim]`` (grouped: ``[Bp, …]``).
    - LoRA: per target module, A ``[rank, in]`` then B ``[out, rank]``; ``lora_scale [batch, rank]``:
      row b's low-rank term is ``B · diag(scale[b]) · A · x``.

    Returns logits ``[batch, kept, vocab]``, present key/value per layer, then ``token_logprobs``
    when the variant has it (see :class:`GraphVariant`).
    """

    def __init__(self, model: nn.Module, signature: GraphSignature):
        super().__init__()
        self.signature = signature
        self.shape = signature.shape
        self.hf = model.eval()
        self.eps = float(model.config.rms_norm_eps)
        rotary = model.model.rotary_emb
        self.register_buffer("inv_freq", rotary.inv_freq.detach().clone().float(), persistent=False)
        self.rope_scale = float(getattr(rotary, "attention_scaling", 1.0))
        known = {name for name, _ in model.named_modules()}
        for t, _, _ in signature.targets:
            if t not in known or t.rsplit(".", 1)[-1] not in LORA_LINEAR_NAMES:
                raise ExportError(f"LoRA target {t!r} is not a supported Linear of this model ({', '.join(LORA_LINEAR_NAMES)})")
        self._target_index = {t: i for i, (t, _, _) in enumerate(signature.targets)}
        self.grouped = signature.variant.kv_cache == "grouped"
        # Tied embeddings: the head reads the embedding table itself (one copy in the graph).
        self.tied = model.lm_head.weight is model.model.embed_tokens.weight

    def _linear(self, module_path: str, layer: nn.Linear, x: torch.Tensor, run: _Run) -> torch.Tensor:
        y = torch.nn.functional.linear(x, layer.weight, layer.bias)
        idx = self._target_index.get(module_path)
        if idx is None:
            return y
        a, b = run.lora[2 * idx], run.lora[2 * idx + 1]
        down = torch.matmul(x, a.transpose(0, 1)) * run.scale.unsqueeze(1)
        return y + torch.matmul(down, b.transpose(0, 1))

    def _allowed(self, inputs: DecoderInputs) -> torch.Tensor:
        """Which key each query may see, ``[b, 1, 1, seq, total]`` (broadcast over heads)."""
        mask, ids = inputs.attention_mask, inputs.input_ids
        if self.signature.variant.attention == "block":
            return (mask > 0).unsqueeze(1).unsqueeze(1)
        # Causality is by cache index (as in transformers), padding by attention_mask.
        total, seq = mask.shape[1], ids.shape[1]
        key_idx = torch.cumsum(torch.ones_like(mask[0]), 0) - 1
        query_idx = torch.cumsum(torch.ones_like(ids[0]), 0) - 1 + (total - seq)
        causal = key_idx.unsqueeze(0) <= query_idx.unsqueeze(1)
        return (causal.unsqueeze(0) & (mask.unsqueeze(1) > 0)).unsqueeze(1).unsqueeze(1)

    def _kept(self, inputs: DecoderInputs) -> torch.Tensor | None:
        """Positions ``[seq - k, seq)`` for 0 < k, all for k = 0 (traced: no Python ints)."""
        if inputs.keep is None:
            return None
        n = torch.ones_like(inputs.input_ids[0]).sum()
        want = inputs.keep.reshape(-1)[0]
        start = torch.where(want > 0, torch.clamp(n - want, min=0), torch.zeros_like(n))
        return torch.arange(start, n, device=inputs.input_ids.device)

    def _run(self, inputs: DecoderInputs, past_batch: torch.Tensor | int) -> _Run:
        freqs = inputs.position_ids.unsqueeze(-1).float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.rope_scale).unsqueeze(1)
        sin = (emb.sin() * self.rope_scale).unsqueeze(1)
        allowed = self._allowed(inputs)
        cap, q_cos, q_sin = None, cos, sin
        if self.grouped:
            # hd^-0.5 folded into the queries' rotation (one multiply per run instead of one over
            # the scores per layer), and the mask laid out as a score cap once per run for every layer.
            q_cos, q_sin = cos * self.shape.head_dim**-0.5, sin * self.shape.head_dim**-0.5
            cap = self._grouped_mask(allowed, past_batch)
        batch, seq = inputs.input_ids.shape[0], inputs.input_ids.shape[1]
        return _Run(batch, seq, seq, cos, sin, q_cos, q_sin, allowed, cap, inputs.lora, inputs.lora_scale)

    def _keep_positions(self, run: _Run, kept: torch.Tensor, past_batch: int) -> _Run:
        """The last layer at the kept positions only: its output there feeds nothing but their
        logits, so every position needs its keys and values (the cache), only the kept ones its
        queries, attention and MLP. A prompt run keeping 1 position skips most of a layer."""
        allowed = run.allowed.index_select(3, kept)
        return replace(
            run,
            qs=kept.shape[0],
            q_cos=run.q_cos.index_select(2, kept),
            q_sin=run.q_sin.index_select(2, kept),
            allowed=allowed,
            cap=self._grouped_mask(allowed, past_batch) if self.grouped else None,
        )

    def _grouped_mask(self, allowed: torch.Tensor, past_batch: int) -> torch.Tensor:
        """``allowed`` ``[B, 1, 1, qs, keys]`` as a score cap in the grouped layout ``[Bp, 1,
        G·rep·qs, keys]`` that ``_grouped_attention`` scores in (rows ordered group row, head in
        group, position): +max float where a key is allowed, ``GROUPED_MASK_FILL`` where not.
        Built once per run for every layer; ``Min(scores, cap)`` masks with one cheap broadcast
        instead of a ``Where`` and a filled tensor per layer."""
        rep = self.shape.num_heads // self.shape.num_kv_heads
        batch, qs, keys = allowed.shape[0], allowed.shape[3], allowed.shape[4]
        a = allowed.reshape(batch, 1, qs, keys).expand(batch, rep, qs, keys)
        a = a.reshape(past_batch, 1, (batch // past_batch) * rep * qs, keys)
        return torch.where(a, torch.tensor(torch.finfo(torch.float32).max), torch.tensor(GROUPED_MASK_FILL))

    def _grouped_attention(self, q, k, v, pk, pv, cap) -> torch.Tensor:
        """Attention of q ``[B, heads, qs, hd]`` (already scaled by hd^-0.5) over a past
        ``[Bp, kv, P, hd]`` shared by groups of ``G = B / Bp`` consecutive rows, then over the rows'
        own k/v ``[B, kv, seq, hd]``; ``cap`` from ``_grouped_mask``. Returns ``[B, qs, hidden]``.

        Scores live in a grouped layout ``[Bp, kv, G·rep·qs, P + seq]``: the past part is one matrix
        product per (past row, KV head) for all its rows, heads and positions, and so is its
        context. The per-row products take all heads of a KV head at once
        (``rep·qs`` rows), which halves the number of small matrix products. No reshape has the past
        length as a dimension (ONNX Reshape reads a 0 as "keep", and the prompt run's past is
        empty)."""
        s = self.shape
        batch, qs, seq = q.shape[0], q.shape[2], k.shape[2]
        kv, rep, hd = s.num_kv_heads, s.num_heads // s.num_kv_heads, s.head_dim
        bp, p = pk.shape[0], pk.shape[2]
        g = batch // bp
        rows = rep * qs

        def to_groups(x: torch.Tensor, width) -> torch.Tensor:  # [B, kv, rep·qs, w] -> [Bp, kv, G·rep·qs, w]
            return x.reshape(bp, g, kv, rows, width).transpose(1, 2).reshape(bp, kv, g * rows, width)

        q_rows = q.reshape(batch, kv, rows, hd)
        own = torch.matmul(q_rows, k.transpose(-1, -2))  # [B, kv, rep·qs, seq]
        scores = torch.cat((torch.matmul(to_groups(q_rows, hd), pk.transpose(-1, -2)), to_groups(own, seq)), dim=-1)
        probs = torch.softmax(torch.minimum(scores, cap), dim=-1)
        past_ctx = torch.matmul(probs[..., :p], pv)
        own_probs = probs[..., p:].reshape(bp, kv, g, rows, seq).transpose(1, 2).reshape(batch, kv, rows, seq)
        ctx = past_ctx + to_groups(torch.matmul(own_probs, v), hd)  # [Bp, kv, G·rep·qs, hd]
        return ctx.reshape(bp, kv, g, rep, qs, hd).permute(0, 2, 4, 1, 3, 5).reshape(batch, qs, s.num_heads * hd)

    def _concat_attention(self, q, k, v, allowed) -> torch.Tensor:
        """Grouped-query attention of q ``[B, heads, qs, hd]`` over the whole ``k``/``v`` ``[B, kv,
        total, hd]``, without materialising repeated K/V. Returns ``[B, qs, hidden]``."""
        s = self.shape
        batch, qs = q.shape[0], q.shape[2]
        qg = q.reshape(batch, s.num_kv_heads, s.num_heads // s.num_kv_heads, qs, s.head_dim)
        scores = torch.matmul(qg, k.unsqueeze(2).transpose(-1, -2)) * (s.head_dim**-0.5)
        scores = torch.where(allowed, scores, torch.full_like(scores, MASK_FILL))
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v.unsqueeze(2))  # [b, kv, rep, qs, hd]
        return ctx.reshape(batch, s.num_heads, qs, s.head_dim).transpose(1, 2).reshape(batch, qs, s.num_heads * s.head_dim)

    def _attention_block(self, i: int, h: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor], run: _Run, kept):
        """One layer's attention half: returns the residual stream (at the kept positions in the
        last layer), this layer's present key/value, and the run (narrowed when positions are kept)."""
        s, attn, prefix = self.shape, self.hf.model.layers[i].self_attn, f"model.layers.{i}.self_attn"
        x = _rms_norm(h, self.hf.model.layers[i].input_layernorm.weight, self.eps)
        k = self._linear(f"{prefix}.k_proj", attn.k_proj, x, run).view(run.batch, run.seq, s.num_kv_heads, s.head_dim).transpose(1, 2)
        v = self._linear(f"{prefix}.v_proj", attn.v_proj, x, run).view(run.batch, run.seq, s.num_kv_heads, s.head_dim).transpose(1, 2)
        k = k * run.cos + _rotate_half(k) * run.sin
        if kept is not None:
            h, x = h.index_select(1, kept), x.index_select(1, kept)
            run = self._keep_positions(run, kept, past[0].shape[0])
        q = self._linear(f"{prefix}.q_proj", attn.q_proj, x, run).view(run.batch, run.qs, s.num_heads, s.head_dim).transpose(1, 2)
        q = q * run.q_cos + _rotate_half(q) * run.q_sin
        if self.grouped:
            present = (k, v)
            ctx = self._grouped_attention(q, k, v, past[0], past[1], run.cap)
        else:
            present = (torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2))
            ctx = self._concat_attention(q, present[0], present[1], run.allowed)
        return h + self._linear(f"{prefix}.o_proj", attn.o_proj, ctx, run), present, run

    def _mlp_block(self, i: int, h: torch.Tensor, run: _Run) -> torch.Tensor:
        layer, prefix = self.hf.model.layers[i], f"model.layers.{i}.mlp"
        x = _rms_norm(h, layer.post_attention_layernorm.weight, self.eps)
        gate = self._linear(f"{prefix}.gate_proj", layer.mlp.gate_proj, x, run)
        up = self._linear(f"{prefix}.up_proj", layer.mlp.up_proj, x, run)
        return h + self._linear(f"{prefix}.down_proj", layer.mlp.down_proj, torch.nn.functional.silu(gate) * up, run)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        head = self.hf.lm_head
        if not self.tied:
            return torch.nn.functional.linear(h, head.weight, getattr(head, "bias", None))
        # One [batch·seq, hidden] × embeddingᵀ product (a Gemm with transB): the exporter would fold
        # a transposed copy of the table into the graph for a 3-D MatMul, storing it twice.
        b, t = h.shape[0], h.shape[1]
        flat = torch.nn.functional.linear(h.reshape(b * t, self.shape.hidden_size), head.weight)
        return flat.reshape(b, t, self.shape.vocab_size)

    def forward(self, *args: torch.Tensor):
        inputs = self.signature.unpack(args)
        kept = self._kept(inputs)
        h = self.hf.model.embed_tokens(inputs.input_ids)
        shared, last = self.signature.shared_layers, self.shape.num_layers - 1
        presents: list[torch.Tensor] = []
        run = self._run(inputs, inputs.past[0].shape[0])
        for i in range(self.shape.num_layers):
            if i == shared and inputs.row_source is not None:
                # Fan-out: every batch row continues its source's residual stream; the token inputs
                # follow it, so the layers from here see what one row per batch row would feed.
                src = inputs.row_source
                h = h.index_select(0, src)
                gathered = [x.index_select(0, src) for x in (inputs.input_ids, inputs.attention_mask, inputs.position_ids)]
                targets = inputs.target_ids.index_select(0, src) if inputs.target_ids is not None else None
                inputs = inputs._replace(input_ids=gathered[0], attention_mask=gathered[1], position_ids=gathered[2], target_ids=targets)
                run = self._run(inputs, inputs.past[2 * i].shape[0])
            past = (inputs.past[2 * i], inputs.past[2 * i + 1])
            h, present, run = self._attention_block(i, h, past, run, kept if i == last else None)
            presents += present
            h = self._mlp_block(i, h, run)
        logits = self._logits(_rms_norm(h, self.hf.model.norm.weight, self.eps))
        if inputs.target_ids is None:
            return (logits, *presents)
        targets = inputs.target_ids if kept is None else inputs.target_ids.index_select(1, kept)
        all_logp = torch.log_softmax(logits, dim=-1)
        logp = torch.gather(all_logp, -1, targets.unsqueeze(-1)).squeeze(-1)
        if not self.signature.variant.token_entropy:
            return (logits, *presents, logp)
        return (logits, *presents, logp, -(torch.exp(all_logp) * all_logp).sum(-1))
