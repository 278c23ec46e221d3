"""docs/results.md from a recipe's results.json: the table in the paper's form, plainly read."""

from __future__ import annotations

import math
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


PRETRAINED_ROWS = [
    ("Random", "random"),
    ("Popularity", "popularity"),
    ("SASRec", "sasrec"),
    ("1 M demo pack (`packs/demo`, trained from scratch; calibrated)", "demo-1m"),
    ("`packs/edge`: the Worker's student of the 1 M listwise teacher", "edge"),
    ("Edge-size student of this recipe's calibrated mixture (`--distill-edge`: packs/edge's student recipe)", "edge-smollm2"),
    ("Base model, no adapter (zero-shot)", "base"),
    ("G (general LoRA)", "general"),
    ("S (domain LoRA)", "domain"),
    ("WA (λ = 0.5)", "wa"),
    ("Calibrated λ (token entropy, per domain)", "calibrated"),
    ("Calibrated λ (candidate-score entropy, per domain)", "calibrated-candidates"),
    ("Calibrated λ (mutual information, per domain)", "calibrated-information"),
    ("Adaptive λ (token entropy, per request)", "adaptive"),
    ("Adaptive λ (candidate-score entropy, per request)", "adaptive-candidates"),
    ("Per-module λ (AdaMerging reference)", "per-module"),
]
# The LLM mixtures the targets hold to "above popularity and random in every cell".
MIXTURES = ("wa", "calibrated", "calibrated-candidates", "calibrated-information", "adaptive", "adaptive-candidates", "per-module")


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
    if getattr(cfg, "pretrained", None):
        out += _pretrained_options(cfg)
    return out


def _pretrained_options(cfg) -> str:
    """The `--base` recipe's own flags that `cfg` departs from (what a reader must pass to get this table)."""
    out = f" --eval-cases {cfg.eval_cases}" if cfg.eval_cases else ""
    if tuple(cfg.compare_objectives) != ("candidates", "information"):
        out += f" --compare-objectives '{','.join(cfg.compare_objectives)}'"
    out += "" if cfg.permodule else " --no-permodule"
    out += "" if cfg.adaptive else " --no-adaptive"
    if cfg.adaptive and getattr(cfg, "adaptive_cases", None):
        out += f" --adaptive-cases {cfg.adaptive_cases}"
    if cfg.few_shot:
        out += f" --few-shot {','.join(cfg.few_shot)}"
    if getattr(cfg, "distill_edge", False):
        out += " --distill-edge"
    if getattr(cfg, "shortcuts", ()):
        out += f" --shortcuts {','.join(cfg.shortcuts)}"
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


def targets(table: dict, sample: dict | None = None) -> list[str]:
    """The recipe issue's targets (NDCG@1), each with its verdict as measured. A mixture scored on
    fewer cases (`sample`: every row on those cases) is held to popularity and random on its cases."""
    n1 = lambda cell, key: metric(table[cell].get(key), "ndcg1")  # noqa: E731

    def on_sample(c: str, key: str) -> bool:
        own = (sample or {}).get(c, {})
        return key in own and own[key].get("count") == table[c][key].get("count")

    def ref(c: str, key: str, baseline: str) -> float:
        return metric(sample[c][baseline], "ndcg1") if on_sample(c, key) else n1(c, baseline)

    needed = ("general", "domain", "calibrated", "popularity", "random", "sasrec")
    cells = [c for c in table if all(n1(c, k) is not None for k in needed)]
    lines = []
    ge = gt = 0
    for c in cells:
        best = max(n1(c, "general"), n1(c, "domain"))
        ge += n1(c, "calibrated") >= best
        gt += n1(c, "calibrated") > best
    met = ge >= 3 and gt >= 1
    lines.append(
        f"- `calibrated` ≥ the better single adapter in ≥ 3 of 4 cells and strictly better in one: **{'met' if met else 'not met'}** "
        f"(≥ in {ge} of {len(cells)}, strictly better in {gt})."
    )
    below = [
        f"{key} {n1(c, key):.3f} in {c} (popularity {ref(c, key, 'popularity'):.3f}, random {ref(c, key, 'random'):.3f}"
        + (f" on the same {table[c][key]['count']} cases)" if on_sample(c, key) else ")")
        for c in cells
        for key in MIXTURES
        if n1(c, key) is not None and n1(c, key) <= max(ref(c, key, "popularity"), ref(c, key, "random"))
    ]
    lines.append(
        f"- every LLM mixture above popularity and random in every cell: **{'met' if not below else 'not met'}**"
        + (f" (at or below: {'; '.join(below)})." if below else ".")
    )
    cold = [c for c in cells if c.endswith("/cold")]
    warm = [c for c in cells if c.endswith("/warm")]
    cold_ok = [c for c in cold if n1(c, "calibrated") >= 2 * n1(c, "sasrec")]
    lines.append(
        f"- cold start ≥ 2× SASRec: **{'met' if len(cold_ok) == len(cold) else 'not met'}** ("
        + "; ".join(f"{c} {n1(c, 'calibrated'):.3f} vs 2 × {n1(c, 'sasrec'):.3f}" for c in cold)
        + ")."
    )
    warm_ok = [c for c in warm if n1(c, "calibrated") >= 0.9 * n1(c, "sasrec")]
    ratio = lambda c: f"{n1(c, 'calibrated') / n1(c, 'sasrec'):.0%}" if n1(c, "sasrec") else "—"  # noqa: E731
    lines.append(
        f"- warm start within 10 % of SASRec or above: **{'met' if len(warm_ok) == len(warm) else 'not met'}** ("
        + "; ".join(f"{c} {n1(c, 'calibrated'):.3f} vs SASRec {n1(c, 'sasrec'):.3f} ({ratio(c)})" for c in warm)
        + ")."
    )
    return lines


def render(results: dict, cfg, quick: bool) -> str:
    if getattr(cfg, "pretrained", None):
        return render_pretrained(results, cfg, quick)
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
    steps, wall = _steps(results)
    n_cases = {c: table[c].get("calibrated", {}).get("count") for c in cells}
    return f"""## The 1 M-parameter recipe: a base trained from scratch (`packs/demo`)

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

### Where the mixture does and does not help

{chr(10).join(verdicts)}

### Reproduce

```sh
scripts/setup.sh
.venv/bin/molorec-train recipe --data ../shared/data --work artifacts/recipe{" --quick" if quick else ""}{_options(cfg)} --pack-out packs/demo --base-out packs/demo-base --report docs/results.md
```

Machine: {cpu_name()}, {os.cpu_count()} cores. Wall time: {wall}.

| step | time |
|---|---|
{steps}
"""


def _table(table: dict, rows: list[tuple[str, str]]) -> list[str]:
    """Rows × cells of NDCG@1 and NDCG@3; a row scored on fewer cases than the cell's `calibrated`
    (the adaptive rows with `--adaptive-cases`) says on how many."""
    cells = list(table)
    lines = ["| | " + " | ".join(f"{c} NDCG@1 | {c} NDCG@3" for c in cells) + " |", "|---|" + "---|" * (2 * len(cells))]
    for label, key in rows:
        vals = []
        for c in cells:
            row = table[c].get(key)
            full = (table[c].get("calibrated") or {}).get("count")
            fewer = f" ({row['count']} cases)" if row and full and row.get("count", full) < full else ""
            for k in ("ndcg1", "ndcg3"):
                v = metric(row, k)
                vals.append("—" if v is None else f"{v:.4f}{fewer}")
        if any(v != "—" for v in vals):  # a policy this run did not score (e.g. --no-adaptive) gets no row
            lines.append(f"| {label} | " + " | ".join(vals) + " |")
    return lines


def _steps(results: dict) -> tuple[str, str]:
    cached = set(results.get("cached_steps", []))
    steps = "\n".join(
        f"| {k} | {'reused from the work folder' if k in cached else f'{v / 60:.1f} min'} |" for k, v in results["step_seconds"].items()
    )
    wall = f"{results['wall_seconds'] / 60:.1f} min" + (
        f" (steps {', '.join(k.split('.')[0] for k in results['step_seconds'] if k in cached)} reused from an earlier run in the same work folder)"
        if cached
        else ""
    )
    return steps, wall


def _few_shot(few: dict) -> str:
    """The few-shot table (NDCG@1 / NDCG@3 per cell): each fraction's LoRA alone, at λ = 0.5, calibrated."""
    if not few:
        return ""
    cells = list(few)
    labels = list(dict.fromkeys(k for c in cells for k in few[c]))
    lines = ["| NDCG@1 / NDCG@3 | " + " | ".join(cells) + " |", "|---|" + "---|" * len(cells)]
    for label in labels:
        vals = []
        for c in cells:
            row = few[c].get(label)
            if row is not None and "wa_only" in row:
                vals.append(f"{row['wa_only']} only WA first / {row['alone_only']} only alone first")
                continue
            lam = "" if row is None or row.get("lambda") is None else f" (λ {row['lambda']:.2f})"
            vals.append("—" if row is None else f"{row['ndcg1']:.4f} / {row['ndcg3']:.4f}{lam}")
        lines.append(f"| {label} | " + " | ".join(vals) + " |")
    return (
        "### Few-shot plug-in: a domain LoRA from a fraction of its training users, alone and mixed with G\n\n" + "\n".join(lines) + "\n\n"
    )


# The rows compared with the adaptive ones on the cases those were scored on.
ADAPTIVE_SAMPLE_ROWS = [
    row
    for row in PRETRAINED_ROWS
    if row[1] in ("popularity", "sasrec", "base", "general", "domain", "wa") or row[1].startswith(("calibrated", "adaptive"))
]


def _adaptive_sample(sample: dict) -> str:
    """Every row on the cases the adaptive rows were scored on (`--adaptive-cases`), when fewer than all."""
    if not sample:
        return ""
    n = ", ".join(f"{c} {next((r['count'] for r in sample[c].values() if 'count' in r), '—')}" for c in sample)
    return (
        f"### Adaptive λ beside the other rows, on the cases its rows were scored on ({n})\n\n"
        + "\n".join(_table(sample, ADAPTIVE_SAMPLE_ROWS))
        + "\n\nThe first cases of the same seeded order as the table above (`--adaptive-cases`): the adaptive rows need"
        " λ 0.25 and 0.75 and every grid λ's token entropy (full-vocabulary logits), about twice the cost of the other rows.\n\n"
    )


def _shortcuts(sc: dict) -> str:
    """The training-shortcut table: the recipe's domain LoRA alone beside each LoRA trained with one
    shortcut undone, NDCG@1 per cell on the same cases, paired counts and training wall time."""
    if not sc or not sc.get("cells"):
        return ""
    cells = [c for c in sc["cells"] if sc["cells"][c]]
    rows = []
    for key, v in sc["variants"].items():
        vals = []
        for c in cells:
            m = sc["cells"][c].get(key)
            if m is None:
                vals.append("—")
                continue
            paired = f" ({m['variant_only']} only it first / {m['recipe_only']} only the recipe's)" if "variant_only" in m else ""
            vals.append(f"{m['ndcg1']:.3f}{paired}")
        seconds = "—" if v.get("seconds") is None else f"{v['seconds'] / 60:.0f} min"
        rows.append([v["what"], *vals, seconds])
    n = {c: next(iter(sc["cells"][c].values()))["count"] for c in cells}
    own = "; ".join(
        f"{v['what']}: scored from a pack of its own, `{v['pack']}`, whose graph takes LoRA inputs on the layers it wraps"
        for v in sc["variants"].values()
        if v.get("pack")
    )
    return (
        "### Training shortcuts: what each costs (domain LoRA alone, λ 1, NDCG@1)\n\n"
        + "\n".join(_md_table(["LoRA", *(f"{c} ({n[c]} cases)" for c in cells), "training (wall)"], rows))
        + "\n\nEach row retrains the domain LoRA with one shortcut of the recipe undone (same data, seed and every other"
        " setting) and scores it alone on the first cases of the seeded order, the same cases for every row"
        + (f" ({own})" if own else "")
        + ". Training wall time includes running the frozen lower layers once per window where the LoRA leaves them out; each was measured under"
        " whatever else ran on this machine then, so compare them loosely.\n\n"
    )


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---|" + "---|" * (len(header) - 1), *("| " + " | ".join(r) + " |" for r in rows)]


def _warm_why(explain: dict, table: dict) -> list[str]:
    """The warm-start measurements: popularity, co-occurrence, and each LLM row with and without popularity."""
    cells = [c for c in explain["cells"] if c.endswith("/warm") and c in table]
    if not cells:
        return []
    cell = lambda c: explain["cells"][c]  # noqa: E731
    n1 = lambda c, k: f"{metric(table[c].get(k), 'ndcg1'):.3f}" if table[c].get(k) else "—"  # noqa: E731
    windows = list(cell(cells[0])["cooccurrence"])
    rows = [
        ["positive is the most popular candidate", *(f"{cell(c)['positive_most_popular']:.0%}" for c in cells)],
        ["popularity / SASRec", *(f"{n1(c, 'popularity')} / {n1(c, 'sasrec')}" for c in cells)],
        [
            f"item co-occurrence, no titles (within {' / '.join(map(str, windows))} steps)",
            *(" / ".join(f"{v:.3f}" for v in cell(c)["cooccurrence"].values()) for c in cells),
        ],
    ]
    for label in cell(cells[0])["rows"]:
        prof = [cell(c)["rows"].get(label) for c in cells]
        rows.append(
            [
                f"{label}: alone → + popularity; ρ with popularity",
                *(
                    "—"
                    if p is None
                    else f"{p['ndcg1']:.3f} → {p['fused_ndcg1']:.3f}; ρ {p['rho_popularity']:.2f}"
                    if p["rho_popularity"] is not None
                    else f"{p['ndcg1']:.3f} → {p['fused_ndcg1']:.3f}"
                    for p in prof
                ),
            ]
        )
    domains = explain["domains"]
    seen = "; ".join(
        f"{t}: each domain LoRA saw {d['lora_windows']:,} of {d['train_windows']:,} training windows once, SASRec all of them"
        + (f" for {d['sasrec_epochs']} epochs" if d.get("sasrec_epochs") else "")
        for t, d in domains.items()
    )
    return [
        "**Warm start.** NDCG@1 on the warm cells' cases. _+ popularity_: z(LLM score) + w · z(log training count) per case, w chosen",
        "on the other half of the cases (no case scored under a weight fitted on its own label); ρ: Spearman between the row's",
        "scores and the candidates' log training counts within a case, averaged. Item co-occurrence scores a candidate by how often",
        "it followed the history's items in the training sequences (title-blind).",
        "",
        *_md_table(["NDCG@1", *cells], rows),
        "",
        f"Training seen: {seen}.",
        "",
    ]


def _mixture_why(explain: dict) -> list[str]:
    """The mixture measurements: per λ, the mean candidate score and the positive's margin beside NDCG@1."""
    cells = list(explain["cells"])
    labels = [k for k in next(iter(explain["cells"].values()), {}).get("rows", {}) if k != "base"]
    if not labels:
        return []
    rows = []
    for label in labels:
        vals = []
        for c in cells:
            p = explain["cells"][c]["rows"].get(label)
            vals.append("—" if p is None else f"{p['ndcg1']:.3f} / {p['mean_score']:.2f} / {p['margin']:.2f}")
        rows.append([label, *vals])
    curve = "; ".join(
        f"{t}: " + ", ".join(f"{k.replace('lambda=', 'λ ')} {v:.3f}" for k, v in d["calibration"].items())
        for t, d in explain["domains"].items()
        if d.get("calibration")
    )
    return [
        "**The mixture.** Per λ and cell: NDCG@1 / mean candidate score (mean log-prob per title token) / the positive's",
        "score minus the negatives' mean. The calibration objective (token entropy on the unlabeled valid prompts, nats) along",
        f"λ: {curve}.",
        "",
        *_md_table(["NDCG@1 / mean score / margin", *cells], rows),
        "",
    ]


def _edge(sizes: dict) -> str:
    if not sizes:
        return ""
    names = {"edge": "`packs/edge`", "edge-smollm2": "the student of this recipe's mixture"}
    return (
        "Edge pack sizes (model, adapters, tokenizer, manifest): "
        + ", ".join(f"{names[k]} {v / 1e6:.2f} MB" for k, v in sizes.items())
        + ".\n\n"
    )


def _why(explain: dict | None, table: dict) -> str:
    if not explain or not explain.get("cells"):
        return ""
    lines = ["### Why, measured on the same cases", "", *_warm_why(explain, table), *_mixture_why(explain)]
    return "\n".join(lines) + "\n"


def _noise(n_cases: dict) -> str:
    """How far apart two NDCG@1 values of the table must be to mean anything: one standard error of a
    hit rate near 0.2 on the smallest cell (a difference within two of them is noise)."""
    n = min((k for k in n_cases.values() if k), default=0)
    if not n:
        return ""
    se = math.sqrt(0.2 * 0.8 / n)
    return f"With at least {n} cases per cell, one standard error of an NDCG@1 near 0.2 is ±{se:.3f}: differences below ~{2 * se:.2f} are within noise.\n\n"


def render_pretrained(results: dict, cfg, quick: bool) -> str:
    table = results["table"]
    cells = list(table)
    lam = results.get("calibrated_lambdas", {})
    lam_text = "; ".join(f"{t}: " + ", ".join(f"{o} {v:.3f}" for o, v in obj.items()) for t, obj in lam.items())
    c = cfg.domain_lora
    steps, wall = _steps(results)
    n_cases = {cell: table[cell].get("calibrated", {}).get("count") for cell in cells}
    po = cfg.prompt_options
    quick_flag = " --quick" if quick else ""
    return f"""## The recipe on a pretrained base: {cfg.pretrained} (`recipe --base {cfg.pretrained}`)

{"> **Quick mode** (CI-sized): a tiny stand-in model, few steps, few cases — these numbers only show the pipeline runs." if quick else ""}

Target domains: {", ".join(cfg.targets)} (general domains: {", ".join(cfg.general)}). Each test
case ranks 1 positive among {cfg.negatives + 1} candidates (negatives drawn from the same pool
as the positive, fixed by seed {cfg.seed} and saved). *Warm*: positives seen in training; *cold*:
positives among the ~20 % of items held out from all training. Cases per cell: {", ".join(f"{k} {n}" for k, n in n_cases.items())}.
Every LLM row is scored through the TypeScript runtime (onnxruntime-node, CPU; `scripts/eval-rows.mjs` scores each
mixture once per case and the recipe reads every policy from those scores); baselines on the same saved cases in Python.
λ is the weight of the domain LoRA. Base model: {cfg.pretrained}, titles capped at {po.maxTitleTokens} tokens, histories at
{po.maxHistoryTokens}. LoRAs (rank {c.rank}, alpha {c.alpha:g}, every linear layer of the top {c.top_layers or "all"} decoder layers): general
{cfg.general_lora.steps} steps, each domain {c.steps} steps of {c.batch_size} prompts (lr {c.lr:g}; training prompts keep the newest
history titles within {c.max_history_tokens} tokens), the generative loss on the next title{_listwise(cfg)}.

{chr(10).join(_table(table, PRETRAINED_ROWS))}

{_noise(n_cases)}Calibrated λ per domain on {cfg.calibration_prompts} unlabeled valid prompts (no labels; `molorec calibrate`), by objective: {lam_text}.
The pack stores the **{cfg.calibration_objective}** λ (`calibrated`).{" Adaptive rows choose per request among λ ∈ {0, 0.25, 0.5, 0.75, 1}." if getattr(cfg, "adaptive", True) else ""}

{_edge(results.get("edge_bytes") or {})}{_adaptive_sample(results.get("adaptive_sample") or {})}{_few_shot(results.get("few_shot") or {})}{_shortcuts(results.get("shortcuts") or {})}### The targets, as measured (NDCG@1)

{chr(10).join(targets(table, results.get("adaptive_sample")))}

{_why(results.get("explain"), table)}
### Reproduce

```sh
scripts/setup.sh
.venv/bin/molorec-train recipe --base {cfg.pretrained} --data ../shared/data{quick_flag}{_options(cfg)} --report docs/results.md
```

Machine: {cpu_name()}, {os.cpu_count()} cores. Wall time: {wall}.

| step | time |
|---|---|
{steps}
"""


# Everything after this line in an existing report is written by hand and kept by reruns.
KEEP_MARKER = "<!-- Hand-written below this line: a rerun of the recipe regenerates everything above and keeps the rest. -->"


KINDS = ("smollm2", "scratch")  # the order of the generated blocks in the report


def begin(kind: str) -> str:
    return f"<!-- recipe {kind}: begin (generated: a rerun of this recipe replaces this block) -->"


def end(kind: str) -> str:
    return f"<!-- recipe {kind}: end -->"


def write_report(results: dict, cfg, path: Path, quick: bool = False) -> None:
    """Writes the recipe's generated block into ``path``: the block of the same recipe (``--base``) is
    replaced, the other recipe's block and the hand-written part below ``KEEP_MARKER`` are kept. A
    report without blocks (older runs) is replaced above ``KEEP_MARKER``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = "smollm2" if getattr(cfg, "pretrained", None) else "scratch"
    block = f"{begin(kind)}\n{render(results, cfg, quick).rstrip()}\n{end(kind)}\n"
    old = path.read_text() if path.is_file() else ""
    if begin(kind) in old and end(kind) in old:
        a, b = old.index(begin(kind)), old.index(end(kind)) + len(end(kind)) + 1
        path.write_text(old[:a] + block + old[b:])
        return
    other = next((k for k in KINDS if k != kind and begin(k) in old), None)
    if other is not None:  # smollm2's block first, then scratch's
        at = old.index(begin(other)) if KINDS.index(kind) < KINDS.index(other) else old.index(end(other)) + len(end(other)) + 1
        path.write_text(old[:at] + (block + "\n" if at == old.index(begin(other)) else "\n" + block) + old[at:])
        return
    kept = old[old.index(KEEP_MARKER) :] if KEEP_MARKER in old else ""
    path.write_text(block + ("\n" + kept if kept else ""))
