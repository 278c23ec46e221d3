"""Distilling a pack that only the TypeScript runtime serves — any base, any tokenizer — into a
student with its own, smaller tokenizer: the edge from a real teacher.

The distillation signal is candidate-level (the KL between the softmax of the teacher's and the
student's scores over the same candidate titles, plus the target's cross-entropy: distill.py), so the
two models need not share a tokenizer or a prompt: each scores the same titles its own way. The
teacher (e.g. the SmolLM2 recipe pack: 135 M parameters, a 49 k vocabulary) is scored once, through
``scripts/eval-rows.mjs`` exactly as it serves requests, on a fixed pool of training cases per domain;
the student (e.g. layers of packs/demo's 1 M base, packs/edge's recipe) then draws its steps from
that pool. Scoring resumes where it stopped.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import read_prepared_items
from .distill import DistillConfig, Teacher, load_student, train_and_export_student
from .export import read_manifest
from .prompt import PromptSpec, candidate_ids, prompt_ids
from .ranking import Case, sample_cases
from .train import load_encoder, read_jsonl, set_threads


@dataclass(frozen=True)
class RuntimeTeacher:
    """The teacher pack and how it is scored."""

    pack: Path
    mixture: str = "calibrated"  # the policy the teacher serves each domain with
    cases_per_domain: int = 600  # the pool the student's steps draw from (each scored once)
    shards: int = 2  # scripts/eval-rows.mjs processes side by side, one thread each
    ep: str = "cpu"


def case_pool(prepared: Path, domain: str, n: int, negatives: int, rng: random.Random) -> list[tuple[list[str], list[str]]]:
    """``n`` (history, candidate titles with the target first) drawn from the domain's training rows,
    negatives never from the cold-start hold-out (as distill.py's cases)."""
    titles, held = read_prepared_items(prepared / domain)
    rows = read_jsonl(prepared / domain / "train.jsonl")
    rng.shuffle(rows)
    pool = sample_cases(rows[: 2 * n], titles, held, negatives, rng)[:n]
    if len(pool) < 2:
        raise ValueError(f"{domain}: not enough training rows with a history")
    return pool


def write_teacher_cases(pool: Sequence[tuple[list[str], list[str]]], cases: Path, scores: Path) -> None:
    """The pool as scripts/eval-rows.mjs cases; scores of a different pool (other settings) are dropped."""
    text = "".join(json.dumps({"history": h, "candidates": c, "label": 0}) + "\n" for h, c in pool)
    if cases.exists() and cases.read_text() == text:
        return
    cases.write_text(text)
    scores.unlink(missing_ok=True)


def score_pool(teacher: RuntimeTeacher, domain: str, cases: Path, out: Path, log: Callable[[str], None]) -> list[list[float]]:
    """The teacher's candidate scores of every case in ``cases``, in order (scored where missing)."""
    from .recipe import read_jsonl_lines, run_eval_rows

    rows = [{"name": "teacher", "domain": domain, "mixture": teacher.mixture}]
    run_eval_rows(teacher.pack, cases, rows, out, entropy_rows=[], shards=teacher.shards, ep=teacher.ep, log=log)
    by_case = {x["i"]: x["scores"]["teacher"] for x in read_jsonl_lines(out)}
    return [by_case[i] for i in range(len(by_case))]


def scored_cases(domain: str, pool, scores: Sequence[Sequence[float]], encode, spec: PromptSpec) -> list[Case]:
    """The pool in the student's token ids, each case carrying the teacher's scores."""
    return [
        Case(domain, prompt_ids(encode, spec, h), [candidate_ids(encode, spec, t) for t in c], teacher=tuple(s))
        for (h, c), s in zip(pool, scores, strict=True)
    ]


def stored_teacher(cases: Sequence[Case]) -> torch.Tensor:
    """A :data:`distill.Teacher` reading the scores the cases carry."""
    if any(c.teacher is None for c in cases):
        raise ValueError("a case without teacher scores")
    return torch.tensor([c.teacher for c in cases], dtype=torch.float32)


def teacher_lambdas(pack: Path, domains: Sequence[str], mixture: str) -> dict[str, float | str]:
    """The teacher's λ per domain under ``mixture`` (as distill.json records it)."""
    m = read_manifest(pack)
    out: dict[str, float | str] = {}
    for d in domains:
        if d not in m["domains"]:
            raise ValueError(f"teacher pack has no domain {d!r} (has {sorted(m['domains'])})")
        entry = m["domains"][d]
        key = {"calibrated": "calibratedLambda", "wa": "defaultLambda"}.get(mixture)
        out[d] = float(entry.get(key, entry.get("defaultLambda", 0.5))) if key else mixture
    return out


def distill_from_runtime(
    teacher: RuntimeTeacher,
    student_pack: Path,
    student_base: Path,
    prepared: Path,
    domains: Sequence[str],
    out: Path,
    cfg: DistillConfig,
    work: Path | None = None,
    eval_cases: int = 32,
    log: Callable[[str], None] = print,
) -> dict:
    """Distils ``teacher`` into a student built from ``student_base`` (its first ``cfg.layers``
    layers) that speaks ``student_pack``'s tokenizer and prompt; writes the student pack to ``out``
    and returns ``distill.json``'s summary. ``eval_cases`` of the pool are held out for the KL."""
    set_threads()
    out = Path(out)
    work = Path(work) if work else out.parent / f"{out.name}.work"
    work.mkdir(parents=True, exist_ok=True)
    spec = PromptSpec(**read_manifest(student_pack)["prompt"])
    encode, _, pad = load_encoder(student_pack)
    pad = spec.endTokenId if pad is None else pad
    rng = random.Random(cfg.seed)
    cases: dict[str, list[Case]] = {}
    held_out: list[Case] = []
    n_eval = max(1, eval_cases // len(domains))
    for d in domains:
        pool = case_pool(prepared, d, teacher.cases_per_domain + n_eval, cfg.negatives, rng)
        files = work / f"teacher-{d}.cases.jsonl", work / f"teacher-{d}.scores.jsonl"
        write_teacher_cases(pool, *files)
        log(f"{d}: the teacher scores {len(pool)} cases ({teacher.mixture}, {teacher.pack})")
        built = scored_cases(d, pool, score_pool(teacher, d, *files, log), encode, spec)
        held_out += built[:n_eval]
        cases[d] = built[n_eval:]
    teachers: dict[str, Teacher] = {d: stored_teacher for d in domains}
    student, init = load_student(student_base, cfg)
    return train_and_export_student(
        student,
        f"{init} of {student_base}",
        teachers,
        teacher_lambdas(teacher.pack, domains, teacher.mixture),
        cases,
        held_out,
        domains,
        cfg,
        pad,
        student_pack,
        spec,
        teacher.pack,
        out,
        work,
        log,
    )
