"""Distilled edge packs: a smaller student Llama learns the teacher pack's candidate ranking.

Teacher, per domain d: the teacher base with ``W0 + (1-λ_d)·ΔW_general + λ_d·ΔW_d`` merged
(reference.merged_model), λ_d the pack's calibrated λ (else its default λ), adapters read from the
pack's ``adapters/`` folders — exactly the model the runtime serves with ``--mixture calibrated``.

Student: a Llama of the same family and tokenizer with fewer layers (``--layers``) and/or a
smaller width (``--hidden``). When the width equals the teacher's, it is initialised from the
teacher *base* checkpoint's embeddings, first ``layers`` decoder layers and final norm (unmerged
weights; the LM head is tied); otherwise it is initialised fresh (random).

Signal, for each training row (prepared ``train.jsonl``: history + target) of a domain: the
candidates are the target + K negatives sampled from the domain's items (not held out for the
cold-start test, not in the history). Both models score every candidate exactly as the runtime
does — prompt.py's ``prompt_ids`` / ``candidate_ids``, mean log-prob of the candidate tokens
including the end token. Loss = T²·KL(softmax(t/T) ‖ softmax(s/T)) + alpha·CE(target | softmax(s)).

Pack structure (the decision): the plug-in structure is kept, with real adapters.
  1. the full student base is trained on the mixed distillation data (all domains, each batch
     from one domain and scored by that domain's teacher);
  2. ``general`` = a PEFT LoRA on the student base trained on all domains' signal;
  3. ``domain:<d>`` = a PEFT LoRA on the student base trained on domain d's signal alone.
The student's domain LoRA therefore carries the whole domain mixture on its own, so every
domain gets ``calibratedLambda = 1.0`` (the teacher's λ is recorded in ``distill.json``); the
general LoRA serves the "general" mixture and domains plugged in later. With ``lora_steps = 0``
the adapters are PEFT's default init (B = 0, an exact "no change"): a *baked* pack where the
student base alone carries everything.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import read_prepared_items
from .export import export_pack, read_manifest
from .prompt import PromptSpec
from .ranking import Case, build_cases, candidate_scores
from .reference import merged_model
from .train import LINEAR_TARGETS, _cosine, load_encoder, read_jsonl, set_threads

# A teacher of one domain: [len(cases), candidates] scores (target first), as the runtime scores them.
Teacher = Callable[[Sequence[Case]], torch.Tensor]


def model_teacher(model: torch.nn.Module, pad: int) -> Teacher:
    """A PyTorch teacher scoring cases in the student's own token ids (same tokenizer)."""
    return lambda cases: candidate_scores(model, cases, pad)


@dataclass(frozen=True)
class DistillConfig:
    layers: int = 2
    hidden: int | None = None  # None: the teacher's width
    steps: int = 300
    lora_steps: int = 60  # per LoRA (general, then each domain); 0: baked (B = 0 adapters)
    batch_size: int = 4  # prompts per step; each brings 1 + negatives candidates
    negatives: int = 7
    alpha: float = 0.5
    temperature: float = 1.0
    # 0: the no-teacher baseline (same student, init and data; ground truth only), for the table
    kl_weight: float = 1.0
    lr: float = 1e-3
    lora_lr: float = 2e-3
    lora_rank: int = 4
    lora_alpha: float = 8.0
    max_rows_per_domain: int = 20000
    seed: int = 0


def distill_loss(
    student: torch.Tensor, teacher: torch.Tensor | None, alpha: float, temperature: float, kl_weight: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, KL) for [B, C] scores with the target at column 0. Without a teacher (``None``, or
    ``kl_weight`` 0) the loss is the ground-truth term alone and the KL is reported as 0."""
    ce = F.cross_entropy(student, torch.zeros(student.shape[0], dtype=torch.long))
    if teacher is None or kl_weight == 0:
        return alpha * ce, torch.zeros(())
    t = temperature
    p_t = torch.softmax(teacher / t, dim=-1)
    kl = (p_t * (torch.log_softmax(teacher / t, dim=-1) - torch.log_softmax(student / t, dim=-1))).sum(-1).mean()
    return kl_weight * t * t * kl + alpha * ce, kl


@torch.no_grad()
def mean_kl(
    student: torch.nn.Module,
    teachers: dict[str, Teacher],
    cases: Sequence[Case],
    pad: int,
    temperature: float = 1.0,
    chunk: int = 8,
) -> float:
    """Mean KL(teacher ‖ student) of the candidate distributions over ``cases``."""
    was = student.training
    student.eval()
    total, n = 0.0, 0
    for i in range(0, len(cases), chunk):
        part = cases[i : i + chunk]
        for d in sorted({c.domain for c in part}):
            sub = [c for c in part if c.domain == d]
            _, kl = distill_loss(candidate_scores(student, sub, pad), teachers[d](sub), 0.0, temperature)
            total += float(kl) * len(sub)
            n += len(sub)
    student.train(was)
    return total / max(n, 1)


def run_distill_steps(
    model: torch.nn.Module,
    teachers: dict[str, Teacher],
    cases: dict[str, list[Case]],
    steps: int,
    lr: float,
    cfg: DistillConfig,
    pad: int,
    log: Callable[[str], None],
    name: str,
    seed: int,
) -> list[float]:
    """Trains the model's trainable parameters; each step's batch comes from one domain."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine(s, steps, max(1, steps // 20)))
    rng = random.Random(seed)
    domains = sorted(cases)
    model.train()
    losses, started = [], time.time()
    for step in range(1, steps + 1):
        d = domains[(step - 1) % len(domains)]
        batch = [cases[d][rng.randrange(len(cases[d]))] for _ in range(cfg.batch_size)]
        t_scores = None
        if cfg.kl_weight > 0:  # the no-teacher baseline never runs the teacher
            with torch.no_grad():
                t_scores = teachers[d](batch)
        loss, _ = distill_loss(candidate_scores(model, batch, pad), t_scores, cfg.alpha, cfg.temperature, cfg.kl_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 25 == 0 or step == steps:
            recent = losses[-25:]
            log(f"{name} step {step}/{steps}  loss {sum(recent) / len(recent):.4f}  {time.time() - started:5.0f}s")
    model.eval()
    return losses


# --- models -------------------------------------------------------------------------------


def teacher_models(teacher_base: Path, teacher_pack: Path, domains: Sequence[str]) -> tuple[dict[str, torch.nn.Module], dict[str, float]]:
    m = read_manifest(teacher_pack)
    general = m.get("generalAdapter")
    teachers, lambdas = {}, {}
    for d in domains:
        if d not in m["domains"]:
            raise ValueError(f"teacher pack has no domain {d!r} (has {sorted(m['domains'])})")
        entry = m["domains"][d]
        lam = float(entry.get("calibratedLambda", entry.get("defaultLambda", 0.5)))
        adapters = {entry["adapter"]: teacher_pack / m["adapters"][entry["adapter"]]["path"]}
        weights = {entry["adapter"]: lam}
        if general is not None:
            adapters[general] = teacher_pack / m["adapters"][general]["path"]
            weights[general] = 1.0 - lam
        teachers[d] = merged_model(teacher_base, adapters, weights).eval()
        for p in teachers[d].parameters():
            p.requires_grad_(False)
        lambdas[d] = lam
    return teachers, lambdas


def new_student(teacher: torch.nn.Module, layers: int, hidden: int | None, seed: int) -> tuple[torch.nn.Module, str]:
    """A smaller Llama; from the teacher's first layers when the width matches, else fresh."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tc = teacher.config
    h = hidden or tc.hidden_size
    if layers < 1 or layers > tc.num_hidden_layers:
        raise ValueError(f"--layers must be in 1..{tc.num_hidden_layers}")
    if h % tc.num_attention_heads:
        raise ValueError(f"--hidden {h} is not a multiple of the {tc.num_attention_heads} heads")
    cfg = LlamaConfig(
        vocab_size=tc.vocab_size,
        hidden_size=h,
        intermediate_size=int(round(tc.intermediate_size * h / tc.hidden_size)),
        num_hidden_layers=layers,
        num_attention_heads=tc.num_attention_heads,
        num_key_value_heads=tc.num_key_value_heads,
        max_position_embeddings=tc.max_position_embeddings,
        tie_word_embeddings=bool(getattr(tc, "tie_word_embeddings", True)),
        eos_token_id=tc.eos_token_id,
        pad_token_id=tc.pad_token_id,
        bos_token_id=None,
        initializer_range=0.02,
        rms_norm_eps=tc.rms_norm_eps,
        rope_theta=getattr(tc, "rope_theta", 10000.0),
    )
    torch.manual_seed(seed)
    student = LlamaForCausalLM(cfg)
    if h != tc.hidden_size:
        return student, "fresh"
    state = {k: v for k, v in teacher.state_dict().items() if not k.startswith("model.layers.") or int(k.split(".")[2]) < layers}
    missing, unexpected = student.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"student init: missing {missing}, unexpected {unexpected}")
    return student, f"teacher-base first {layers} layers"


def _train_lora(
    base_dir: Path, out_dir: Path, teachers, cases, steps: int, cfg: DistillConfig, pad: int, log, name: str, seed: int
) -> list[float]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, local_files_only=True)
    model = get_peft_model(
        base, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=list(LINEAR_TARGETS), lora_dropout=0.0)
    )
    losses = run_distill_steps(model, teachers, cases, steps, cfg.lora_lr, cfg, pad, log, name, seed) if steps > 0 else []
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    return losses


# --- driver -------------------------------------------------------------------------------


def distill_cases(
    prepared: Path,
    domains: Sequence[str],
    cfg: DistillConfig,
    eval_cases: int,
    encode: Callable[[str], list[int]],
    spec: PromptSpec,
    rng: random.Random,
    log: Callable[[str], None],
) -> tuple[dict[str, list[Case]], list[Case]]:
    """(training cases per domain, held-out cases for the KL): each domain's first cases, an
    equal share of ``eval_cases``, are held out. The domains draw from one ``rng`` in order."""
    cases: dict[str, list[Case]] = {}
    held_out: list[Case] = []
    for d in domains:
        titles, held = read_prepared_items(prepared / d)
        rows = read_jsonl(prepared / d / "train.jsonl")
        rng.shuffle(rows)
        rows = rows[: cfg.max_rows_per_domain]
        built = build_cases(d, rows, titles, held, cfg.negatives, encode, spec, rng)
        if len(built) < 2:
            raise ValueError(f"{d}: not enough training rows with a history")
        n_eval = min(eval_cases // len(domains), len(built) // 4) or 1
        held_out += built[:n_eval]
        cases[d] = built[n_eval:]
        log(f"{d}: {len(cases[d])} training cases, {n_eval} held out for KL")
    return cases, held_out


def load_student(teacher_base: Path, cfg: DistillConfig) -> tuple[torch.nn.Module, str]:
    """The student built from the teacher base checkpoint (unmerged); the base is freed on return."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(teacher_base, dtype=torch.float32, local_files_only=True)
    return new_student(base, cfg.layers, cfg.hidden, cfg.seed)


def save_student_base(student: torch.nn.Module, teacher_pack: Path, student_dir: Path) -> None:
    """The student as a checkpoint folder, with the teacher pack's tokenizer files beside it."""
    student.save_pretrained(student_dir)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if (teacher_pack / f).is_file():
            shutil.copyfile(teacher_pack / f, student_dir / f)


def train_student_loras(
    student_dir: Path,
    work: Path,
    teachers: dict[str, Teacher],
    cases: dict[str, list[Case]],
    held_out: Sequence[Case],
    domains: Sequence[str],
    cfg: DistillConfig,
    pad: int,
    log: Callable[[str], None],
) -> tuple[dict[str, Path], dict[str, list[float]], dict[str, float]]:
    """(adapter folders, loss curves, held-out KL per domain): the general LoRA on every domain's
    signal, then each domain's LoRA on its own, scored at λ = 1 as the pack will serve it."""
    adapters = {"general": work / "loras" / "general"}
    lora_losses = {
        "general": _train_lora(student_dir, adapters["general"], teachers, cases, cfg.lora_steps, cfg, pad, log, "general", cfg.seed + 1)
    }
    kl_domain = {}
    for i, d in enumerate(domains):
        path = work / "loras" / f"domain-{d}"
        lora_losses[d] = _train_lora(
            student_dir, path, teachers, {d: cases[d]}, cfg.lora_steps, cfg, pad, log, f"domain:{d}", cfg.seed + 2 + i
        )
        adapters[f"domain:{d}"] = path
        mixed = merged_model(student_dir, {"domain": path}, {"domain": 1.0})
        kl_domain[d] = mean_kl(mixed, teachers, [c for c in held_out if c.domain == d], pad, cfg.temperature)
        log(f"held-out KL {d} (student base + its domain LoRA, λ = 1): {kl_domain[d]:.4f}")
    return adapters, lora_losses, kl_domain


def student_pack_name(manifest: dict, cfg: DistillConfig) -> str:
    return f"{manifest.get('name', 'molorec')}-{'distilled' if cfg.kl_weight > 0 else 'noteacher'}-{cfg.layers}l"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / max(1, len(values))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def distill_summary(
    cfg: DistillConfig,
    teacher_pack: Path,
    lambdas: dict[str, float],
    init: str,
    kl: tuple[float, float, dict[str, float]],
    base_losses: Sequence[float],
    lora_losses: dict[str, list[float]],
    pack_bytes: int,
) -> dict:
    """``distill.json``: ``kl`` is (before training, after the student base, per domain after its LoRA)."""
    kl_before, kl_base, kl_domain = kl
    return {
        "config": asdict(cfg),
        "teacherPack": str(teacher_pack),
        "teacherLambdas": lambdas,
        "studentInit": init,
        "baked": cfg.lora_steps == 0,
        "withTeacher": cfg.kl_weight > 0,
        "klBefore": kl_before,
        "klAfterBase": kl_base,
        "klAfterDomainLora": kl_domain,
        "lossFirst": _mean(base_losses[:10]),
        "lossLast": _mean(base_losses[-10:]),
        "loraLossCurves": lora_losses,
        "packBytes": pack_bytes,
    }


def distill(
    teacher_base: Path,
    teacher_pack: Path,
    prepared: Path,
    domains: Sequence[str],
    out: Path,
    cfg: DistillConfig = DistillConfig(),
    work: Path | None = None,
    eval_cases: int = 32,
    log: Callable[[str], None] = print,
) -> dict:
    """Distils the teacher pack into a student pack at ``out``; returns a summary (also saved
    as ``out/distill.json``)."""
    set_threads()
    teacher_base, teacher_pack, prepared, out = Path(teacher_base), Path(teacher_pack), Path(prepared), Path(out)
    work = Path(work) if work else out.parent / f"{out.name}.work"
    work.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(teacher_pack)
    spec = PromptSpec(**manifest["prompt"])
    encode, _, pad = load_encoder(teacher_pack)
    if pad is None:
        pad = spec.endTokenId
    cases, held_out = distill_cases(prepared, domains, cfg, eval_cases, encode, spec, random.Random(cfg.seed), log)

    log("building the teachers (general + domain LoRAs merged at the pack's λ)")
    models, lambdas = teacher_models(teacher_base, teacher_pack, domains)
    teachers = {d: model_teacher(m, pad) for d, m in models.items()}
    student, init = load_student(teacher_base, cfg)
    return train_and_export_student(
        student, init, teachers, lambdas, cases, held_out, domains, cfg, pad, teacher_pack, spec, teacher_pack, out, work, log
    )


def train_and_export_student(
    student: torch.nn.Module,
    init: str,
    teachers: dict[str, Teacher],
    lambdas: dict[str, float],
    cases: dict[str, list[Case]],
    held_out: list[Case],
    domains: Sequence[str],
    cfg: DistillConfig,
    pad: int,
    tokenizer_from: Path,
    spec: PromptSpec,
    teacher_pack: Path,
    out: Path,
    work: Path,
    log: Callable[[str], None],
) -> dict:
    """Trains the student base on every domain's teacher, then its LoRAs, and exports the pack (with
    `tokenizer_from`'s tokenizer and `spec`'s prompt) to ``out``; returns ``distill.json``'s summary."""
    log(f"student: {cfg.layers} layers, hidden {student.config.hidden_size} ({init})")
    kl_before = mean_kl(student, teachers, held_out, pad, cfg.temperature)
    log(f"held-out KL(teacher ‖ student) before: {kl_before:.4f}")
    base_losses = run_distill_steps(student, teachers, cases, cfg.steps, cfg.lr, cfg, pad, log, "student", cfg.seed)
    kl_base = mean_kl(student, teachers, held_out, pad, cfg.temperature)
    log(f"held-out KL after the student base: {kl_base:.4f}")

    student_dir = work / "student-base"
    save_student_base(student, tokenizer_from, student_dir)
    del student
    adapters, lora_losses, kl_domain = train_student_loras(student_dir, work, teachers, cases, held_out, domains, cfg, pad, log)

    if out.exists():
        shutil.rmtree(out)
    export_pack(
        student_dir,
        out,
        dict(adapters),
        tokenizer_dir=tokenizer_from,
        name=student_pack_name(read_manifest(teacher_pack), cfg),
        prompt=spec,
        extra_targets=LINEAR_TARGETS,
        domain_lambdas={d: 1.0 for d in domains},
        log=log,
    )
    summary = distill_summary(
        cfg, teacher_pack, lambdas, init, (kl_before, kl_base, kl_domain), base_losses, lora_losses, folder_bytes(out)
    )
    (out / "distill.json").write_text(json.dumps(summary, indent=1) + "\n")
    log(
        f"{'distilled' if cfg.kl_weight > 0 else 'no-teacher (ground truth only)'} pack: {out} ({summary['packBytes'] / 1e6:.2f} MB); KL {kl_before:.4f} → {kl_base:.4f}"
    )
    return summary
