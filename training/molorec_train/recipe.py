"""The MoLoRec recipe end to end: data → tokenizer → base model → LoRAs → pack → calibration →
evaluation through the TypeScript runtime (the code path users run) → results table.

Every step writes into one work folder and is skipped when its output exists (``--force``
redoes everything), so an interrupted run resumes.
"""

from __future__ import annotations

import json
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
from .export import export_pack, read_manifest, write_manifest
from .prompt import PromptSpec
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


class Step:
    """Prints a header and the time each step took."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.times: dict[str, float] = {}
        self.cached: list[str] = []

    def __call__(self, name: str, done: bool):
        self.log(f"\n== {name}{' (cached)' if done else ''}")
        if done:
            self.cached.append(name)
        return _Timer(self, name)


class _Timer:
    def __init__(self, steps: Step, name: str):
        self.steps, self.name = steps, name

    def __enter__(self):
        self.t = time.time()

    def __exit__(self, *exc):
        self.steps.times[self.name] = time.time() - self.t


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
) -> None:
    """Builds the job's examples and trains its LoRA into ``loras/<name>`` (top-level: runs in a
    worker process). Same examples and seed whether it runs alone or beside other jobs."""
    encode, _, _ = load_encoder(Path(tok_dir))
    rng = random.Random(job.shuffle_seed)
    examples, ranking = [], []
    for d in job.domains:
        rows = read_jsonl(Path(prepared) / d / "train.jsonl")
        if job.max_rows_per_domain is not None:
            rng.shuffle(rows)
            rows = rows[: job.max_rows_per_domain]
        examples += list(iter_examples(rows, encode, spec))
        if job.cfg.rank_weight > 0:
            ranking += domain_cases(Path(prepared), d, rows, job.cfg.rank_negatives, encode, spec, job.cfg.seed)
    extra = f", listwise term ×{job.cfg.rank_weight} on {len(ranking)} cases" if ranking else ""
    log(f"{job.name} LoRA: {len(examples)} examples from {', '.join(job.domains)}{extra}")
    train_lora(Path(base_dir), examples, job.cfg, Path(loras) / job.name, pad, log, name=job.name, ranking=ranking)


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


def run_recipe(
    data_dir: Path,
    work: Path,
    cfg: RecipeConfig,
    *,
    pack_out: Path | None = None,
    base_out: Path | None = None,
    force: bool = False,
    lora_jobs: int | None = None,
    log=print,
) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    if force:
        for sub in ("prepared", "tokenizer", "base", "loras", "pack", "eval", "baselines", "permodule"):
            shutil.rmtree(work / sub, ignore_errors=True)
    step = Step(log)
    started = time.time()
    torch.manual_seed(cfg.seed)
    (work / "config.json").write_text(json.dumps(asdict(cfg), indent=1, default=str) + "\n")

    prepared = work / "prepared"
    with step("1. data: leave-one-out splits, cold-start hold-out, negatives", (prepared / ".done").exists()):
        if not (prepared / ".done").exists():
            opts = data_mod.Options(seed=cfg.seed, negatives=cfg.negatives, max_test=cfg.max_test, max_history=cfg.max_history)
            data_mod.prepare_all(data_dir, prepared, domains=[*cfg.general, *cfg.targets], targets=list(cfg.targets), opts=opts, log=log)
            (prepared / ".done").touch()

    tok_dir = work / "tokenizer"
    all_titles = []
    for d in (*cfg.general, *cfg.targets):
        titles, _ = data_mod.read_prepared_items(prepared / d)
        all_titles += list(titles.values())
    with step("2. tokenizer: byte-level BPE on titles and prompt text", (tok_dir / "tokenizer.json").exists()):
        if not (tok_dir / "tokenizer.json").exists():
            train_tokenizer(all_titles, cfg.prompt, cfg.vocab_size, tok_dir)
    encode, eos, pad = load_encoder(tok_dir)
    spec = replace(cfg.prompt, endTokenId=eos)
    base_cfg = replace(cfg.base, vocab_size=cfg.vocab_size)

    base_dir = work / "base"
    with step(
        "3. base model: pretrain from scratch (titles of all domains + general domains' sequences)", (base_dir / "config.json").exists()
    ):
        if not (base_dir / "config.json").exists():
            rng = random.Random(cfg.seed)
            docs: list[list[int]] = []
            for _ in range(cfg.title_passes):
                docs += [encode(t) for t in title_documents(all_titles, spec, rng)]
            for d in cfg.general:  # never the target domains' interactions
                rows = read_jsonl(prepared / d / "train.jsonl")
                rng.shuffle(rows)
                docs += [p + a for p, a in iter_examples(rows[: cfg.max_pretrain_sequences_per_domain], encode, spec)]
            rng.shuffle(docs)
            blocks = pack_blocks(docs, cfg.pretrain.block_size, eos)
            log(f"pretraining corpus: {len(docs)} documents, {len(blocks)} blocks of {cfg.pretrain.block_size} tokens")
            model = new_base_model(base_cfg, eos, pad, cfg.seed)
            log(f"base model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
            curve = pretrain(model, blocks, cfg.pretrain, log)
            model.save_pretrained(base_dir)
            for f in ("tokenizer.json", "tokenizer_config.json"):
                shutil.copyfile(tok_dir / f, base_dir / f)
            (base_dir / "training.json").write_text(json.dumps({"loss_curve": curve, "blocks": len(blocks)}) + "\n")

    loras = work / "loras"
    adapters: dict[str, Path] = {"general": loras / "general"}
    jobs: list[LoraJob] = [LoraJob("general", tuple(cfg.general), cfg.general_lora, cfg.seed + 1, cfg.max_general_examples_per_domain)]
    for t in cfg.targets:
        adapters[f"domain:{domain_name(t)}"] = loras / t
        jobs.append(LoraJob(t, (t,), replace(cfg.domain_lora, seed=cfg.seed + 2), cfg.seed + 2, None))
    for j in jobs:
        if (loras / j.name / "adapter_config.json").exists() and (why := stale_lora(loras / j.name, j.cfg)):
            raise ValueError(f"{loras / j.name} was trained with another configuration ({why}); pass --force, or another --work folder")
    todo = [j for j in jobs if not (loras / j.name / "adapter_config.json").exists()]
    n_jobs = max(1, min(lora_jobs if lora_jobs is not None else (os.cpu_count() or 1), len(todo) or 1))
    title = "4. LoRAs from the base model: general (general domains' instruction data) + one per target domain (its training split)"
    with step(f"{title}{f', {n_jobs} processes' if n_jobs > 1 else ''}", not todo):
        common = dict(prepared=str(prepared), tok_dir=str(tok_dir), base_dir=str(base_dir), loras=str(loras), spec=spec, pad=pad)
        if n_jobs == 1:
            for j in todo:
                run_lora_job(j, log=log, **common)
        else:
            # One process per LoRA, each single-threaded: on a few cores this beats one job with
            # several threads (small matrices; OpenMP barriers), and the results are the same.
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx, initializer=_single_thread) as pool:
                futures = {pool.submit(run_lora_job, j, **common): j.name for j in todo}
                log(f"training {len(todo)} LoRAs in {n_jobs} processes: {', '.join(futures.values())} (their progress lines interleave)")
                for f in as_completed(futures):
                    f.result()
                    log(f"  LoRA {futures[f]} done")

    pack = work / "pack"
    with step("5. export the model pack", (pack / "molorec.json").exists()):
        if not (pack / "molorec.json").exists():
            # The default graph variant: the scoring head (log p(target) per token, so candidate runs
            # fetch one float per token instead of a vocabulary row) and the grouped KV cache
            # (candidate rows share one copy of the prompt's cache; docs/performance.md).
            export_pack(
                base_dir,
                pack,
                adapters,
                name="molorec-demo",
                prompt=spec,
                extra_targets=LoraTrainConfig().targets,
                log=log,
            )

    how = "mutual-information maximisation" if cfg.calibration_objective == "information" else "entropy minimisation"
    with step(f"6. calibrate λ per domain: {how} on unlabeled valid prompts (TS runtime)", False):
        for t in cfg.targets:
            common = [
                "--pack",
                str(pack),
                "--domain",
                domain_name(t),
                "--data",
                str(prepared / t),
                "--n",
                str(cfg.calibration_prompts),
                "--ep",
                "cpu",
            ]
            # The pack stores the λ of cfg.calibration_objective; the candidate-entropy λ is kept for the comparison rows.
            run_node(
                ["calibrate", *common, "--write", "--objective", cfg.calibration_objective, "--out", str(work / f"calibration-{t}.json")],
                log,
            )
            run_node(["calibrate", *common, "--objective", "candidates", "--out", str(work / f"calibration-candidates-{t}.json")], log)

    with step("7. per-module λ reference (AdaMerging-style: Adam on token entropy, per LoRA module)", False):
        from .adamerging import AdaMergingConfig, add_permodule_domains

        add_permodule_domains(
            pack,
            base_dir,
            {t: prepared / t for t in cfg.targets},
            AdaMergingConfig(prompts=cfg.calibration_prompts, seed=cfg.seed),
            log=log,
        )

    evals = work / "eval"
    evals.mkdir(exist_ok=True)
    with step("8. evaluate through the TS runtime (molorec eval)", False):
        for t in cfg.targets:
            for split in ("warm", "cold"):
                run_node(
                    [
                        "eval",
                        "--pack",
                        str(pack),
                        "--domain",
                        domain_name(t),
                        "--data",
                        str(prepared / t),
                        "--split",
                        split,
                        "--mixture",
                        ",".join(POLICIES),
                        "--ep",
                        "cpu",
                        "--out",
                        str(evals / f"{t}-{split}.json"),
                    ],
                    log,
                )
                run_node(
                    [
                        "eval",
                        "--pack",
                        str(pack),
                        "--domain",
                        f"{domain_name(t)}@permodule",
                        "--data",
                        str(prepared / t),
                        "--split",
                        split,
                        "--mixture",
                        "domain",
                        "--ep",
                        "cpu",
                        "--out",
                        str(evals / f"{t}-{split}-permodule.json"),
                    ],
                    log,
                )
                lam = json.loads((work / f"calibration-candidates-{t}.json").read_text())["lambda"]
                run_node(
                    [
                        "eval",
                        "--pack",
                        str(pack),
                        "--domain",
                        domain_name(t),
                        "--data",
                        str(prepared / t),
                        "--split",
                        split,
                        "--mixture",
                        f"adaptive,{lam}",
                        "--objective",
                        "candidates",
                        "--ep",
                        "cpu",
                        "--out",
                        str(evals / f"{t}-{split}-candidates.json"),
                    ],
                    log,
                )

    with step("9. baselines on the same saved test cases (random, popularity, SASRec)", False):
        from . import baselines as bl

        for t in cfg.targets:
            res = bl.run_baselines(prepared, t, ("warm", "cold"), seed=cfg.seed, epochs=cfg.sasrec_epochs, progress=log)
            (evals / f"{t}-baselines.json").write_text(json.dumps(res, indent=1) + "\n")

    results = collect_results(work, cfg)
    results["wall_seconds"] = time.time() - started
    results["step_seconds"] = step.times
    results["cached_steps"] = step.cached
    (work / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    if pack_out is not None:
        if pack_out.exists():
            shutil.rmtree(pack_out)
        shutil.copytree(pack, pack_out)
        log(f"\ncopied the pack to {pack_out}")
    if base_out is not None:
        # The pack's own base checkpoint: what re-exports (graph variants) and the benchmark's
        # PyTorch rows start from, without rerunning the recipe.
        if base_out.exists():
            shutil.rmtree(base_out)
        shutil.copytree(base_dir, base_out)
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


def add_domain(
    data_dir: Path,
    domain: str,
    pack: Path,
    base_dir: Path,
    work: Path,
    *,
    steps: int = 800,
    seed: int = 0,
    rank_weight: float = 0.0,
    log=print,
) -> None:
    """Plugs an unseen domain into an existing pack: only its domain LoRA is trained."""
    manifest = read_manifest(pack)
    base_cfg = json.loads((base_dir / "config.json").read_text())
    if base_cfg["vocab_size"] != manifest["model"]["vocabSize"] or base_cfg["num_hidden_layers"] != manifest["model"]["numLayers"]:
        raise ValueError(f"{base_dir} is not the base model of {pack} (vocab or layer count differ)")
    prepared = work / "prepared"
    data_mod.prepare_all(data_dir, prepared, domains=[domain], targets=[domain], opts=data_mod.Options(seed=seed), log=log)
    encode, _, pad = load_encoder(pack)
    spec = PromptSpec(**manifest["prompt"])
    rows = read_jsonl(prepared / domain / "train.jsonl")
    examples = list(iter_examples(rows, encode, spec))
    cfg = replace(LoraTrainConfig(steps=steps), seed=seed, rank_weight=rank_weight)
    ranking = domain_cases(prepared, domain, rows, cfg.rank_negatives, encode, spec, seed) if rank_weight > 0 else []
    log(f"{domain} LoRA: {len(examples)} examples{f', listwise term ×{rank_weight} on {len(ranking)} cases' if ranking else ''}")
    graph_targets = {t["module"].rsplit(".", 1)[-1] for t in manifest["lora"]["targets"]}
    if not set(cfg.targets) <= graph_targets:
        cfg = replace(cfg, targets=tuple(sorted(graph_targets & set(cfg.targets))))
    out = work / "loras" / domain
    train_lora(base_dir, examples, cfg, out, pad, log, name=domain, ranking=ranking)
    name = f"domain:{domain_name(domain)}"
    rel = f"adapters/{name.replace(':', '-')}"
    (pack / rel).mkdir(parents=True, exist_ok=True)
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copyfile(out / f, pack / rel / f)
    manifest["adapters"][name] = {
        "path": rel,
        "rank": cfg.rank,
        "alpha": cfg.alpha,
        "scaling": cfg.alpha / cfg.rank,
        "targetModules": sorted(cfg.targets),
    }
    manifest["domains"][domain_name(domain)] = {"adapter": name, "defaultLambda": 0.5}
    write_manifest(pack, manifest)
    log(f"\nadded domain {domain_name(domain)} to {pack}. Next:")
    log(f"  pnpm molorec calibrate --pack {pack} --domain {domain_name(domain)} --data {prepared / domain} --write")
    log(f"  pnpm molorec eval --pack {pack} --domain {domain_name(domain)} --data {prepared / domain} --split warm")
    log(f"  pnpm molorec eval --pack {pack} --domain {domain_name(domain)} --data {prepared / domain} --split cold")
