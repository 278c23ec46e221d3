"""The training recipe's model steps: tokenizer, base model pretraining, PEFT LoRAs.

Small pure helpers build token sequences (with prompt.py, so training sees exactly what the
runtime scores); thin wrappers around tokenizers / transformers / peft do the rest.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .prompt import PromptSpec, candidate_ids, prompt_ids
from .ranking import Case, candidate_scores, listwise_loss
from .tiny import EOS, PAD, train_bpe_tokenizer

if TYPE_CHECKING:
    from peft import LoraConfig

LINEAR_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class BaseModelConfig:
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    max_positions: int = 512
    vocab_size: int = 4096


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 3000
    batch_size: int = 16
    block_size: int = 192
    lr: float = 3e-3
    warmup: int = 100
    seed: int = 0


@dataclass(frozen=True)
class LoraTrainConfig:
    steps: int = 800
    batch_size: int = 16
    rank: int = 8
    alpha: float = 16.0
    lr: float = 2e-3
    dropout: float = 0.05
    seed: int = 0
    targets: tuple[str, ...] = tuple(LINEAR_TARGETS)
    # Optional listwise term (not in the paper, whose LoRAs are trained generatively): each step
    # also scores rank_batch training prompts' target + rank_negatives sampled titles as the
    # runtime does and adds rank_weight × the target's cross-entropy over them. 0: off.
    rank_weight: float = 0.0
    rank_batch: int = 4
    rank_negatives: int = 7
    # LoRA on the top `top_layers` decoder layers only (PEFT's layers_to_transform); 0: every layer.
    # With it, the frozen layers below take no gradient, so their outputs are computed once per
    # training example and cached (`cache_lower`): the same training, a fraction of the compute.
    top_layers: int = 0
    cache_lower: bool = True
    # Training prompts keep only the newest history titles that fit this many tokens (None: the
    # pack's maxHistoryTokens): shorter sequences, cheaper steps; the pack still serves the full prompt.
    max_history_tokens: int | None = None


def log_progress(prefix: str, step: int, total: int, loss: float, started: float, log: Callable[[str], None]) -> None:
    elapsed = time.time() - started
    eta = elapsed / max(step, 1) * (total - step)
    log(f"{prefix} step {step}/{total}  loss {loss:.4f}  {elapsed:5.0f}s elapsed, ~{eta:4.0f}s left")


def set_threads() -> None:
    """MOLOREC_TORCH_THREADS overrides torch's thread count: on a machine shared with other
    jobs, 1 thread avoids OpenMP spin-waiting, which otherwise slows training many times over."""
    n = os.environ.get("MOLOREC_TORCH_THREADS")
    if n:
        torch.set_num_threads(max(1, int(n)))


# --- data to token sequences -------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def instruction_example(encode, spec: PromptSpec, history: Sequence[str], target: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids): the answer is the target's scored continuation."""
    return prompt_ids(encode, spec, history), candidate_ids(encode, spec, target)


def title_documents(titles: Sequence[str], spec: PromptSpec, rng: random.Random, per_doc: int = 12) -> list[str]:
    """Titles as history-style lists, in random order: item text without any interaction."""
    shuffled = list(titles)
    rng.shuffle(shuffled)
    return ["".join(f"{spec.itemPrefix}{t}{spec.itemSuffix}" for t in shuffled[i : i + per_doc]) for i in range(0, len(shuffled), per_doc)]


def pack_blocks(docs: Iterable[list[int]], block: int, eos: int) -> list[list[int]]:
    """Concatenate token documents (EOS-separated) and cut into fixed blocks."""
    stream: list[int] = []
    for d in docs:
        stream += d + [eos]
    return [stream[i : i + block] for i in range(0, len(stream) - block + 1, block)]


# --- tokenizer ----------------------------------------------------------------------------


def train_tokenizer(titles: Iterable[str], spec: PromptSpec, vocab_size: int, out_dir: Path) -> Path:
    corpus = list(titles) + [spec.prefix, spec.itemPrefix + "x" + spec.itemSuffix, spec.suffix] * 50
    return train_bpe_tokenizer(corpus, vocab_size, out_dir)


def load_encoder(tokenizer_dir: Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    cache: dict[str, list[int]] = {}

    def encode(text: str) -> list[int]:
        ids = cache.get(text)
        if ids is None:
            ids = cache[text] = tok.encode(text, add_special_tokens=False).ids
        return ids

    return encode, tok.token_to_id(EOS), tok.token_to_id(PAD)


# --- base model ---------------------------------------------------------------------------


def new_base_model(cfg: BaseModelConfig, eos: int, pad: int, seed: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,
        eos_token_id=eos,
        pad_token_id=pad,
        bos_token_id=None,
        initializer_range=0.02,
    )
    return LlamaForCausalLM(config)


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def optimise(
    model: torch.nn.Module,
    params: list[torch.nn.Parameter],
    next_batch: Callable[[random.Random], dict],
    *,
    steps: int,
    optimizer: torch.optim.Optimizer,
    warmup: int,
    seed: int,
    name: str,
    log: Callable[[str], None],
    extra_loss: Callable[[random.Random], torch.Tensor] | None = None,
    loss_of: Callable[[dict], torch.Tensor] | None = None,
) -> list[float]:
    """The training loop shared by pretraining and LoRAs: warmup + cosine schedule, gradient
    clipping, progress every 50 steps. Returns the loss curve (mean per 50 steps).
    ``extra_loss`` adds a term per step (drawn from its own random stream); ``loss_of`` turns a
    batch into its loss (default: the model's own ``.loss``)."""
    rng = random.Random(seed)
    extra_rng = random.Random(seed + 1_000_003)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _cosine(s, steps, warmup))
    model.train()
    curve, running, started = [], 0.0, time.time()
    shown = started
    for step in range(1, steps + 1):
        batch = next_batch(rng)
        loss = loss_of(batch) if loss_of is not None else model(**batch).loss
        if extra_loss is not None:
            loss = loss + extra_loss(extra_rng)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        sched.step()
        optimizer.zero_grad(set_to_none=True)
        running += loss.item()
        if step % 50 == 0 or step == steps:
            n = 50 if step % 50 == 0 else step % 50
            curve.append(running / n)
            log_progress(name, step, steps, running / n, started, log)
            running = 0.0
            shown = time.time()
        elif time.time() - shown > 60:  # slow steps (a large base on CPU): a line a minute
            log_progress(name, step, steps, running / (step % 50), started, log)
            shown = time.time()
    model.eval()
    return curve


def pretrain(
    model: torch.nn.Module,
    blocks: list[list[int]],
    cfg: PretrainConfig,
    log: Callable[[str], None] = print,
) -> list[float]:
    """Causal-LM pretraining on fixed-size blocks; returns the loss curve (per 50 steps)."""
    if not blocks:
        raise ValueError("no pretraining data: the corpus is shorter than one block")
    set_threads()
    params = list(model.parameters())

    def batch(rng: random.Random) -> dict:
        ids = torch.tensor([blocks[rng.randrange(len(blocks))] for _ in range(cfg.batch_size)])
        return {"input_ids": ids, "labels": ids}

    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.95))
    return optimise(model, params, batch, steps=cfg.steps, optimizer=opt, warmup=cfg.warmup, seed=cfg.seed, name="pretrain", log=log)


# --- LoRA ---------------------------------------------------------------------------------


def collate(examples: Sequence[tuple[list[int], list[int]]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask, and labels with the loss on answer tokens only."""
    seqs = [p + a for p, a in examples]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, ((p, a), s) in enumerate(zip(examples, seqs)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        labels[i, len(p) : len(s)] = torch.tensor(a)
    return ids, mask, labels


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder layers of a transformers causal LM (Llama, Qwen2), PEFT-wrapped or not."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.model.layers


class _Stop(Exception):
    pass


@torch.no_grad()
def lower_hidden_states(
    model: torch.nn.Module,
    seqs: Sequence[list[int]],
    first_top: int,
    pad: int,
    device: str = "cpu",
    batch_tokens: int = 4096,
    log: Callable[[str], None] | None = None,
) -> list[torch.Tensor]:
    """The input of decoder layer ``first_top`` (the output of the layers below it) for each
    sequence, ``[len, hidden]`` float32 on the CPU. Batches of similar length, right-padded: causal
    attention never reads the padding, so each row equals its sequence run alone."""
    layer = decoder_layers(model)[first_top]
    grabbed: list[torch.Tensor] = []

    def grab(_module, args, kwargs):
        grabbed.append(args[0] if args else kwargs["hidden_states"])
        raise _Stop

    handle = layer.register_forward_pre_hook(grab, with_kwargs=True)
    out: list[torch.Tensor | None] = [None] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    started, shown, done = time.time(), time.time(), 0
    model.eval()
    try:
        i = 0
        while i < len(order):
            j = i + 1  # sorted by length: the batch's last sequence is its longest
            while j < len(order) and (j - i + 1) * len(seqs[order[j]]) <= batch_tokens:
                j += 1
            chunk = order[i:j]
            width = max(len(seqs[k]) for k in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, k in enumerate(chunk):
                ids[r, : len(seqs[k])] = torch.tensor(seqs[k])
                mask[r, : len(seqs[k])] = 1
            grabbed.clear()
            try:
                model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
            except _Stop:
                pass
            h = grabbed[0].float().cpu()
            for r, k in enumerate(chunk):
                out[k] = h[r, : len(seqs[k])].clone()
            done += len(chunk)
            i = j
            if log is not None and (time.time() - shown > 60 or done == len(seqs)):
                log(f"  lower layers cached for {done}/{len(seqs)} sequences, {time.time() - started:.0f}s")
                shown = time.time()
    finally:
        handle.remove()
    return out  # type: ignore[return-value]


def answer_loss(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module) -> torch.Tensor:
    """The causal-LM loss on the labelled tokens only, with the LM head applied only where a label
    is predicted (what ``model(labels=...).loss`` computes, without a vocabulary row per prompt token)."""
    target = labels[:, 1:]
    rows, cols = (target != -100).nonzero(as_tuple=True)
    logits = head(hidden[rows, cols]).float()
    return torch.nn.functional.cross_entropy(logits, target[rows, cols])


def top_layers_start(cfg: LoraTrainConfig, n_layers: int, name: str) -> int:
    """The first decoder layer the LoRA wraps (0: every layer)."""
    if not 0 <= cfg.top_layers <= n_layers:
        raise ValueError(f"{name}: top_layers {cfg.top_layers} is not in 0..{n_layers}")
    return n_layers - cfg.top_layers if cfg.top_layers else 0


def peft_lora_config(cfg: LoraTrainConfig, first_top: int, n_layers: int) -> LoraConfig:
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        target_modules=list(cfg.targets),
        lora_dropout=cfg.dropout,
        layers_to_transform=list(range(first_top, n_layers)) if cfg.top_layers else None,
    )


def example_batches(
    examples: Sequence[tuple[list[int], list[int]]], batch_size: int, pad: int, device: str
) -> Callable[[random.Random], dict]:
    """Batches of whole sequences for the model's own loss."""

    def batch(rng: random.Random) -> dict:
        ids, mask, labels = collate([examples[rng.randrange(len(examples))] for _ in range(batch_size)], pad)
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}

    return batch


def drawn_examples(n_examples: int, cfg: LoraTrainConfig) -> list[int]:
    """The example indices optimise()'s batches will draw: its stream is ``Random(cfg.seed)``,
    ``batch_size`` draws per step, so only these need their lower layers cached."""
    draws = random.Random(cfg.seed)
    return sorted({draws.randrange(n_examples) for _ in range(cfg.steps * cfg.batch_size)})


def cached_batches(
    examples: Sequence[tuple[list[int], list[int]]], cache: dict[int, torch.Tensor], batch_size: int, pad: int, device: str
) -> Callable[[random.Random], dict]:
    """Batches of cached lower-layer outputs, drawn exactly as ``example_batches`` draws examples."""

    def batch(rng: random.Random) -> dict:
        picks = [rng.randrange(len(examples)) for _ in range(batch_size)]
        _, mask, labels = collate([examples[k] for k in picks], pad)
        hidden = torch.zeros((len(picks), mask.shape[1], cache[picks[0]].shape[1]))
        for r, k in enumerate(picks):
            hidden[r, : len(cache[k])] = cache[k]
        return {"hidden": hidden.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}

    return batch


def top_layers_loss(model: torch.nn.Module, first_top: int) -> Callable[[dict], torch.Tensor]:
    """The answer loss of a cached batch, running only the decoder layers from ``first_top`` up."""
    top = torch.nn.ModuleList(list(decoder_layers(model))[first_top:])
    inner = model.get_base_model()

    def loss_of(b: dict) -> torch.Tensor:
        full = inner.model.layers
        inner.model.layers = top  # the decoder runs the top layers only, on the cached inputs
        try:
            out = inner.model(inputs_embeds=b["hidden"], attention_mask=b["attention_mask"], use_cache=False)
        finally:
            inner.model.layers = full
        return answer_loss(out.last_hidden_state, b["labels"], inner.lm_head)

    return loss_of


def cached_lower_layers(
    base: torch.nn.Module,
    model: torch.nn.Module,
    examples: Sequence[tuple[list[int], list[int]]],
    cfg: LoraTrainConfig,
    first_top: int,
    pad: int,
    device: str,
    name: str,
    log: Callable[[str], None],
) -> tuple[Callable[[random.Random], dict], Callable[[dict], torch.Tensor]]:
    """(batches, loss) for training on the top layers over the frozen lower layers' outputs, run
    once per example the steps will draw (the layers below take no gradient, so they never change)."""
    drawn = drawn_examples(len(examples), cfg)
    n_layers = base.config.num_hidden_layers
    log(f"{name}: LoRA on the top {cfg.top_layers} of {n_layers} layers; caching layers 0-{first_top - 1} for {len(drawn)} examples")
    states = lower_hidden_states(base, [p + a for p, a in (examples[k] for k in drawn)], first_top, pad, device, log=log)
    cache = dict(zip(drawn, states))
    return cached_batches(examples, cache, cfg.batch_size, pad, device), top_layers_loss(model, first_top)


def listwise_term(
    model: torch.nn.Module, ranking: Sequence[Case], cfg: LoraTrainConfig, pad: int, name: str
) -> Callable[[random.Random], torch.Tensor] | None:
    """The optional listwise loss term (``cfg.rank_weight``); None when it is off."""
    if not cfg.rank_weight > 0:
        return None
    if not ranking:
        raise ValueError(f"{name}: rank_weight > 0 needs ranking cases")

    def extra(rng: random.Random) -> torch.Tensor:
        cases = [ranking[rng.randrange(len(ranking))] for _ in range(cfg.rank_batch)]
        return cfg.rank_weight * listwise_loss(candidate_scores(model, cases, pad))

    return extra


def save_lora(model: torch.nn.Module, out_dir: Path, cfg: LoraTrainConfig, curve: list[float]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    # the settings are kept beside the adapter so that a rerun can tell a stale LoRA from a reusable one
    (out_dir / "training.json").write_text(json.dumps({"config": asdict(cfg), "loss_curve": curve}, indent=1) + "\n")


def train_lora(
    base_dir: Path,
    examples: list[tuple[list[int], list[int]]],
    cfg: LoraTrainConfig,
    out_dir: Path,
    pad: int,
    log: Callable[[str], None] = print,
    name: str = "lora",
    ranking: Sequence[Case] = (),
    device: str = "cpu",
) -> list[float]:
    """Trains one PEFT LoRA from the base model on instruction examples; saves it to out_dir.
    With ``cfg.rank_weight > 0``, ``ranking`` (cases with the target first) feeds the listwise term.
    With ``cfg.top_layers``, the LoRA wraps the top layers only (and ``cfg.cache_lower`` runs the
    layers below once per example the steps will draw)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    if not examples:
        raise ValueError(f"{name}: no training examples")
    set_threads()
    torch.manual_seed(cfg.seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, local_files_only=True).to(device)
    n_layers = base.config.num_hidden_layers
    first_top = top_layers_start(cfg, n_layers, name)
    model = get_peft_model(base, peft_lora_config(cfg, first_top, n_layers))
    params = [p for p in model.parameters() if p.requires_grad]

    batch, loss_of = example_batches(examples, cfg.batch_size, pad, device), None
    if cfg.top_layers and cfg.cache_lower and cfg.rank_weight > 0:
        log(f"{name}: the listwise term scores whole sequences: the lower layers are not cached")
    if cfg.top_layers > 0 and cfg.cache_lower and cfg.rank_weight == 0:
        batch, loss_of = cached_lower_layers(base, model, examples, cfg, first_top, pad, device, name, log)
    extra = listwise_term(model, ranking, cfg, pad, name)

    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    curve = optimise(
        model,
        params,
        batch,
        steps=cfg.steps,
        optimizer=opt,
        warmup=max(1, cfg.steps // 20),
        seed=cfg.seed,
        name=name,
        log=log,
        extra_loss=extra,
        loss_of=loss_of,
    )
    save_lora(model, out_dir, cfg, curve)
    return curve


def iter_examples(rows: Iterable[dict], encode, spec: PromptSpec) -> Iterator[tuple[list[int], list[int]]]:
    for r in rows:
        if r.get("history"):
            yield instruction_example(encode, spec, r["history"], r["target"])
