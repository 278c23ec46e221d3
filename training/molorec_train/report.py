"""docs/results.md from a recipe's results.json: the table in the paper's form, plainly read."""

from __future__ import annotations

import os
import platform
from pathlib import Path

ROWS = [
    ("Random", "random"),
    ("Popularity", "popularity"),
    ("SASRec", "sasrec"),
    ("G (general LoRA)", "general"),
    ("S (domain LoRA)", "domain"),
    ("WA (λ = 0.5)", "wa"),
    ("Calibrated λ (token entropy, per domain)", "calibrated"),
    ("Adaptive λ (token entropy, per request)", "adaptive"),
    ("Calibrated λ (candidate-score entropy, per domain)", "calibrated-candidates"),
    ("Adaptive λ (candidate-score entropy, per request)", "adaptive-candidates"),
    ("Per-module λ (AdaMerging reference)", "per-module"),
]


def metric(row: dict | None, key: str) -> float | None:
    if row is None:
        return None
    return row.get(key.replace("ndcg", "ndcg@").replace("hr", "hr@")) if key not in row else row[key]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _listwise(cfg) -> str:
    w = {"general": cfg.general_lora.rank_weight, "domain": cfg.domain_lora.rank_weight}
    if not any(w.values()):
        return " only (as in the paper)"
    c = cfg.domain_lora
    return (
        f" plus the listwise term (target vs {c.rank_negatives} sampled titles of {c.rank_batch} prompts per step, scored as the runtime scores; "
        f"weight {w['general']:g} for the general LoRA, {w['domain']:g} for the domain LoRAs; training/README.md)"
    )


def _options(cfg) -> str:
    """The recipe flags that reproduce `cfg`'s non-default options."""
    out = ""
    if cfg.domain_lora.rank_weight:
        out += f" --rank-weight {cfg.domain_lora.rank_weight:g}"
    if cfg.general_lora.rank_weight:
        out += f" --general-rank-weight {cfg.general_lora.rank_weight:g}"
    if cfg.calibration_objective != "tokens":
        out += f" --calibration-objective {cfg.calibration_objective}"
    return out


def _calibration_text(cfg, lam, lam_c) -> str:
    if cfg.calibration_objective == "information":
        return f"""Calibrated λ per domain on {cfg.calibration_prompts} unlabeled valid prompts (no labels), stored in the pack: maximising
the **mutual information** between a request's history and the candidate it picks (entropy of the
mean candidate distribution minus the mean entropy, groups of 16 prompts scored on shared
candidates; `--calibration-objective information`): {lam}; for comparison, minimising the
**candidate-score entropy** (entropy of the softmax over the candidates' scores): {lam_c}.
The adaptive rows minimise the token entropy per request."""
    return f"""Calibrated λ per domain, minimising on {cfg.calibration_prompts} unlabeled valid prompts (no labels) either
the **token entropy** (mean entropy of the next-token distributions along the request's candidate
titles: the paper's token-level objective, and the runtime's default; stored in the pack): {lam};
or the **candidate-score entropy** (entropy of the softmax over the candidates' scores): {lam_c}."""


def render(results: dict, cfg, quick: bool) -> str:
    table = results["table"]
    cells = list(table)
    head = "| | " + " | ".join(f"{c} NDCG@1 | {c} NDCG@3" for c in cells) + " |"
    sep = "|---|" + "---|" * (2 * len(cells))
    lines = [head, sep]
    info = cfg.calibration_objective == "information"
    for label, key in ROWS:
        if key == "calibrated" and info:
            label = "Calibrated λ (mutual information, per domain)"
        vals = []
        for c in cells:
            row = table[c].get(key)
            for k in ("ndcg1", "ndcg3"):
                v = metric(row, k)
                vals.append("—" if v is None else f"{v:.4f}")
        lines.append(f"| {label} | " + " | ".join(vals) + " |")

    verdicts = []
    for c in cells:
        t = table[c]
        g, s, cal = (metric(t.get(k), "ndcg1") for k in ("general", "domain", "calibrated"))
        if None in (g, s, cal):
            continue
        best_single = max(g, s)
        word = "beats" if cal > best_single else ("ties" if cal == best_single else "does not beat")
        verdicts.append(
            f"- **{c}**: calibrated {cal:.4f} {word} the better single adapter ({'G' if g >= s else 'S'} {best_single:.4f}); "
            f"vs popularity {metric(t.get('popularity'), 'ndcg1'):.4f}, SASRec {metric(t.get('sasrec'), 'ndcg1'):.4f}."
        )
    lam = ", ".join(f"{k}: {v:.3f}" for k, v in results["lambdas"].items() if v is not None)
    lam_c = ", ".join(f"{k}: {v:.3f}" for k, v in results.get("candidate_lambdas", {}).items())
    cached = set(results.get("cached_steps", []))
    steps = "\n".join(
        f"| {k} | {'reused from the work folder' if k in cached else f'{v / 60:.1f} min'} |" for k, v in results["step_seconds"].items()
    )
    wall = f"{results['wall_seconds'] / 60:.1f} min" + (
        f" (steps {', '.join(k.split('.')[0] for k in results['step_seconds'] if k in cached)} reused from an earlier run in the same work folder)"
        if cached
        else ""
    )
    n_cases = {c: table[c].get("calibrated", {}).get("count") for c in cells}
    return f"""# Results: the MoLoRec recipe on real data

{"> **Quick mode** (CI-sized): tiny model, few steps, few cases — these numbers only show the pipeline runs." if quick else ""}

Target domains: {", ".join(cfg.targets)} (general domains: {", ".join(cfg.general)}). Each test
case ranks 1 positive among {cfg.negatives + 1} candidates (negatives drawn from the same pool
as the positive, fixed by seed {cfg.seed} and saved). *Warm*: positives seen in training; *cold*:
positives among the ~20 % of items held out from all training. Cases per cell: {", ".join(f"{c} {n}" for c, n in n_cases.items())}.
LLM rows are evaluated through the TypeScript runtime (`molorec eval`, onnxruntime-node CPU);
baselines on the same saved cases in Python. λ is the weight of the domain LoRA.
LoRAs (rank {cfg.domain_lora.rank}, all linear layers): general {cfg.general_lora.steps} steps, each domain {cfg.domain_lora.steps} steps of {cfg.domain_lora.batch_size} prompts, the
generative loss on the next title{_listwise(cfg)}.

{chr(10).join(lines)}

{_calibration_text(cfg, lam, lam_c)}

## Where the mixture does and does not help

{chr(10).join(verdicts)}

## Reproduce

```sh
scripts/setup.sh
.venv/bin/molorec-train recipe --data ../shared/data --work artifacts/recipe{" --quick" if quick else ""}{_options(cfg)} --pack-out packs/demo --base-out packs/demo-base --report docs/results.md
```

Machine: {cpu_name()}, {os.cpu_count()} cores. Wall time: {wall}.

| step | time |
|---|---|
{steps}
"""


# Everything after this line in an existing report is written by hand and kept by reruns.
KEEP_MARKER = "<!-- Hand-written below this line: a rerun of the recipe regenerates everything above and keeps the rest. -->"


def write_report(results: dict, cfg, path: Path, quick: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = ""
    if path.is_file():
        old = path.read_text()
        if KEEP_MARKER in old:
            kept = old[old.index(KEEP_MARKER) :]
    path.write_text(render(results, cfg, quick) + ("\n" + kept if kept else ""))
