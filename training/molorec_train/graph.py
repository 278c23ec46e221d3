"""An exportable decoder: the HF model's weights behind a forward over flat tensors.

The module re-states the Llama/Qwen2 decoder with plain tensor ops so that the ONNX graph has
exactly the contract of a model pack (DESIGN.md §3): KV cache in and out, and every LoRA-wrapped
Linear taking its A/B from graph inputs with a symbolic rank, scaled per batch row. It reads the
weights of a loaded transformers model and never copies its code paths (caches, mask helpers),
which change between transformers releases; tests hold it equal to transformers + PEFT.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    return f"lora.{module}.A", f"lora.{module}.B"


def kv_input_names(num_layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def kv_output_names(num_layers: int) -> list[str]:
    return [f"present.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


class ExportableDecoder(nn.Module):
    """forward(input_ids, attention_mask, position_ids, *past_kv, *lora_ab, lora_scale).

    - past_kv: for each layer, key then value, ``[batch, kv_heads, past, head_dim]``.
    - lora_ab: for each target module in ``targets`` order, A ``[rank, in]`` then B ``[out, rank]``.
    - lora_scale: ``[batch, rank]``; row b's low-rank term is ``B · diag(scale[b]) · A · x``.

    Returns logits ``[batch, seq, vocab]`` then present key/value per layer.

    Optional variants (not part of the pack contract; benchmarks and future packs): with
    ``attention="block"`` the attention_mask is ``[batch, seq, total]``; with
    ``logits_to_keep=True`` an input ``num_logits_to_keep`` (int64 ``[1]``, 0 = all) trims
    the logits to the last k positions (the last layer then computes queries, attention and
    MLP at those positions only: nothing else reads them); with ``token_logprobs=True`` a last
    input ``target_ids`` ``[batch, seq]`` and a last output ``token_logprobs`` ``[batch, kept]``
    (the log-softmax of the logits at the target ids). core/scoring.ts uses them when a graph
    has them.

    With ``kv_cache="grouped"`` (manifest ``model.kvCache: "grouped"``) the past batch may be any
    divisor ``Bp`` of the input batch ``B``: input row ``b`` attends to past row ``b // (B / Bp)``,
    and ``present`` holds this run's keys/values only (not the past again). A scorer feeds one
    prompt's cache once for all its candidate rows instead of a copy per row, and attention over
    the shared prefix runs as one matrix product per KV head for all rows.
    """

    def __init__(
        self,
        model: nn.Module,
        targets: list[str],
        *,
        attention: str = "padding",
        logits_to_keep: bool = False,
        token_logprobs: bool = False,
        kv_cache: str = "concat",
    ):
        super().__init__()
        if attention not in ATTENTION_MODES:
            raise ExportError(f"attention {attention!r}: expected one of {ATTENTION_MODES}")
        if kv_cache not in KV_CACHE_MODES:
            raise ExportError(f"kv_cache {kv_cache!r}: expected one of {KV_CACHE_MODES}")
        if kv_cache == "grouped" and attention != "padding":
            raise ExportError('kv_cache="grouped" needs attention="padding"')
        self.kv_cache = kv_cache
        # "padding" (the pack contract): attention_mask [batch, total] marks valid keys and
        # causality comes from cache positions. "block": attention_mask [batch, seq, total]
        # says which key each query may see, so one row can hold a prompt plus several
        # candidates that must not see each other (a block-causal packed sequence).
        self.attention = attention
        # With logits_to_keep, an int64 input num_logits_to_keep [1] asks for the logits of the
        # last k positions only (0 = all): a prompt pass needs one position, not the whole prompt.
        self.logits_to_keep = logits_to_keep
        # With token_logprobs, a last int64 input target_ids [batch, seq] and a last output
        # token_logprobs [batch, kept]: log p(target_ids[b, t] | tokens ≤ t), so a scorer can
        # fetch one float per position instead of a vocabulary-sized row of logits.
        self.token_logprobs = token_logprobs
        self.shape = decoder_shape(model)
        self.hf = model.eval()
        cfg = model.config
        self.eps = float(cfg.rms_norm_eps)
        rotary = model.model.rotary_emb
        self.register_buffer("inv_freq", rotary.inv_freq.detach().clone().float(), persistent=False)
        self.rope_scale = float(getattr(rotary, "attention_scaling", 1.0))
        known = {name for name, _ in model.named_modules()}
        for t in targets:
            if t not in known or t.rsplit(".", 1)[-1] not in LORA_LINEAR_NAMES:
                raise ExportError(f"LoRA target {t!r} is not a supported Linear of this model ({', '.join(LORA_LINEAR_NAMES)})")
        self.targets = list(targets)
        self._target_index = {t: i for i, t in enumerate(self.targets)}

    def _linear(self, module_path: str, layer: nn.Linear, x: torch.Tensor, lora: list[torch.Tensor], scale: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.linear(x, layer.weight, layer.bias)
        idx = self._target_index.get(module_path)
        if idx is None:
            return y
        a, b = lora[2 * idx], lora[2 * idx + 1]
        down = torch.matmul(x, a.transpose(0, 1)) * scale.unsqueeze(1)
        return y + torch.matmul(down, b.transpose(0, 1))

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

    def _grouped_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pk: torch.Tensor, pv: torch.Tensor, cap: torch.Tensor
    ) -> torch.Tensor:
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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, *rest: torch.Tensor):
        s = self.shape
        n_kv = 2 * s.num_layers
        keep = targets = None
        if self.token_logprobs:
            targets, rest = rest[-1], rest[:-1]
        if self.logits_to_keep:
            keep, rest = rest[-1], rest[:-1]
        past = rest[:n_kv]
        lora = list(rest[n_kv:-1])
        scale = rest[-1]
        m = self.hf.model

        h = m.embed_tokens(input_ids)
        batch, seq = input_ids.shape[0], input_ids.shape[1]

        freqs = position_ids.unsqueeze(-1).float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.rope_scale).unsqueeze(1)
        sin = (emb.sin() * self.rope_scale).unsqueeze(1)

        if self.attention == "block":
            allowed = (attention_mask > 0).unsqueeze(1).unsqueeze(1)  # [b, 1, 1, seq, total]
        else:
            # Causality is by cache index (as in transformers), padding by attention_mask.
            total = attention_mask.shape[1]
            key_idx = torch.cumsum(torch.ones_like(attention_mask[0]), 0) - 1
            query_idx = torch.cumsum(torch.ones_like(input_ids[0]), 0) - 1 + (total - seq)
            causal = key_idx.unsqueeze(0) <= query_idx.unsqueeze(1)
            allowed = causal.unsqueeze(0) & (attention_mask.unsqueeze(1) > 0)
            allowed = allowed.unsqueeze(1).unsqueeze(1)  # [b, 1, 1, seq, total] for grouped heads

        kept = None
        if keep is not None:
            # Keep positions [seq - k, seq) for 0 < k, all for k = 0 (traced: no Python ints).
            n = torch.ones_like(input_ids[0]).sum()
            want = keep.reshape(-1)[0]
            start = torch.where(want > 0, torch.clamp(n - want, min=0), torch.zeros_like(n))
            kept = torch.arange(start, n, device=h.device)

        rep = s.num_heads // s.num_kv_heads
        grouped = self.kv_cache == "grouped"
        if grouped:
            # hd^-0.5 folded into the queries' rotation (one multiply per run instead of one over
            # the scores per layer), and the mask laid out as a score cap once per run for every layer.
            q_cos_all, q_sin_all = cos * s.head_dim**-0.5, sin * s.head_dim**-0.5
            cap = self._grouped_mask(allowed, past[0].shape[0])
        else:
            q_cos_all, q_sin_all = cos, sin
        last = len(m.layers) - 1
        presents: list[torch.Tensor] = []
        qs = seq
        for i, layer in enumerate(m.layers):
            prefix = f"model.layers.{i}"
            attn = layer.self_attn
            x = _rms_norm(h, layer.input_layernorm.weight, self.eps)
            k = self._linear(f"{prefix}.self_attn.k_proj", attn.k_proj, x, lora, scale)
            v = self._linear(f"{prefix}.self_attn.v_proj", attn.v_proj, x, lora, scale)
            k = k.view(batch, seq, s.num_kv_heads, s.head_dim).transpose(1, 2)
            v = v.view(batch, seq, s.num_kv_heads, s.head_dim).transpose(1, 2)
            k = k * cos + _rotate_half(k) * sin
            q_cos, q_sin = q_cos_all, q_sin_all
            if i == last and kept is not None:
                # Only the kept positions' logits are returned, and the last layer's output at a
                # position feeds nothing but that position's logits: every position needs this
                # layer's keys and values (the cache), only the kept ones its queries, attention
                # and MLP. A prompt run keeping 1 position skips most of a layer.
                h, x = h.index_select(1, kept), x.index_select(1, kept)
                q_cos, q_sin = q_cos.index_select(2, kept), q_sin.index_select(2, kept)
                allowed = allowed.index_select(3, kept)
                qs = kept.shape[0]
                if grouped:
                    cap = self._grouped_mask(allowed, past[0].shape[0])
            q = self._linear(f"{prefix}.self_attn.q_proj", attn.q_proj, x, lora, scale)
            q = q.view(batch, qs, s.num_heads, s.head_dim).transpose(1, 2)
            q = q * q_cos + _rotate_half(q) * q_sin
            if grouped:
                presents += [k, v]
                ctx = self._grouped_attention(q, k, v, past[2 * i], past[2 * i + 1], cap)
            else:
                k = torch.cat((past[2 * i], k), dim=2)
                v = torch.cat((past[2 * i + 1], v), dim=2)
                presents += [k, v]

                # Grouped-query attention without materialising repeated K/V.
                qg = q.reshape(batch, s.num_kv_heads, rep, qs, s.head_dim)
                scores = torch.matmul(qg, k.unsqueeze(2).transpose(-1, -2)) * (s.head_dim**-0.5)
                scores = torch.where(allowed, scores, torch.full_like(scores, MASK_FILL))
                probs = torch.softmax(scores, dim=-1)
                ctx = torch.matmul(probs, v.unsqueeze(2))  # [b, kv, rep, qs, hd]
                ctx = ctx.reshape(batch, s.num_heads, qs, s.head_dim).transpose(1, 2).reshape(batch, qs, s.num_heads * s.head_dim)
            h = h + self._linear(f"{prefix}.self_attn.o_proj", attn.o_proj, ctx, lora, scale)

            mlp = layer.mlp
            x = _rms_norm(h, layer.post_attention_layernorm.weight, self.eps)
            gate = self._linear(f"{prefix}.mlp.gate_proj", mlp.gate_proj, x, lora, scale)
            up = self._linear(f"{prefix}.mlp.up_proj", mlp.up_proj, x, lora, scale)
            h = h + self._linear(f"{prefix}.mlp.down_proj", mlp.down_proj, torch.nn.functional.silu(gate) * up, lora, scale)

        h = _rms_norm(h, m.norm.weight, self.eps)
        if kept is not None and targets is not None:
            targets = targets.index_select(1, kept)
        logits = torch.nn.functional.linear(h, self.hf.lm_head.weight, getattr(self.hf.lm_head, "bias", None))
        if targets is not None:
            logp = torch.log_softmax(logits, dim=-1)
            return (logits, *presents, torch.gather(logp, -1, targets.unsqueeze(-1)).squeeze(-1))
        return (logits, *presents)
