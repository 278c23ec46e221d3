"""Candidate ranking in torch, exactly as the runtime scores: shared by distillation and by the
optional listwise term of LoRA training.

A case is a prompt and its candidates (target first). A candidate's score is the mean log-prob
of its tokens, end token included (prompt.py's ``prompt_ids`` / ``candidate_ids``), the number
the TypeScript runtime ranks by; the listwise loss is the cross-entropy of the target under the
softmax over its case's scores.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import read_prepared_items
from .prompt import PromptSpec, candidate_ids, prompt_ids


@dataclass(frozen=True)
class Case:
    domain: str
    prompt: list[int]
    candidates: list[list[int]]  # target first
    # The teacher's candidate scores when computed ahead (a teacher served by the TS runtime: distill_runtime.py).
    teacher: tuple[float, ...] | None = None


def sample_cases(
    rows: Sequence[dict], titles: dict[str, str], held: frozenset[str], negatives: int, rng: random.Random
) -> list[tuple[list[str], list[str]]]:
    """(history, candidate titles with the target first) for each row with a history."""
    pool = sorted(i for i in titles if i not in held)
    out = []
    for r in rows:
        if not r.get("history"):
            continue
        excluded = set(r.get("history_ids") or []) | {r.get("target_id")}
        excluded_titles = set(r["history"]) | {r["target"]}
        negs: list[str] = []
        tries = 0
        while len(negs) < negatives and tries < negatives * 20:
            tries += 1
            i = pool[rng.randrange(len(pool))]
            t = titles[i]
            if i in excluded or t in excluded_titles or t in negs:
                continue
            negs.append(t)
        out.append((list(r["history"]), [r["target"], *negs]))
    return out


def candidate_scores(model: torch.nn.Module, cases: Sequence[Case], pad: int) -> torch.Tensor:
    """[len(cases), n_candidates] mean log-prob of each candidate's tokens (end token included)."""
    seqs, spans = [], []
    for c in cases:
        for cand in c.candidates:
            seqs.append(c.prompt + cand)
            spans.append((len(c.prompt), len(cand)))
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    logits = model(input_ids=ids, attention_mask=mask).logits  # right padding: causal rows unaffected
    # positions predicting candidate tokens: start-1 .. start+len-2
    rows, cols, toks, seg = [], [], [], []
    for i, (start, n) in enumerate(spans):
        for k in range(n):
            rows.append(i)
            cols.append(start - 1 + k)
            toks.append(int(ids[i, start + k]))
            seg.append(i)
    rows_t, cols_t, toks_t = torch.tensor(rows), torch.tensor(cols), torch.tensor(toks)
    logp = torch.log_softmax(logits[rows_t, cols_t].float(), dim=-1).gather(1, toks_t[:, None])[:, 0]
    seg_t = torch.tensor(seg)
    sums = torch.zeros(len(seqs), dtype=logp.dtype).index_add(0, seg_t, logp)
    counts = torch.tensor([n for _, n in spans], dtype=logp.dtype)
    return (sums / counts).view(len(cases), -1)


def listwise_loss(scores: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the target (column 0) under the softmax over each row's candidates."""
    return F.cross_entropy(scores, torch.zeros(scores.shape[0], dtype=torch.long))


def build_cases(
    domain: str,
    rows: Sequence[dict],
    titles: dict[str, str],
    held: frozenset[str],
    negatives: int,
    encode,
    spec: PromptSpec,
    rng: random.Random,
) -> list[Case]:
    """Token-id cases for training rows: the target + ``negatives`` titles sampled from the
    domain's items, never the cold-start hold-out (which training must not see)."""
    return [
        Case(domain, prompt_ids(encode, spec, h), [candidate_ids(encode, spec, t) for t in cands])
        for h, cands in sample_cases(rows, titles, held, negatives, rng)
    ]


def domain_cases(prepared: Path, domain: str, rows: Sequence[dict], negatives: int, encode, spec: PromptSpec, seed: int) -> list[Case]:
    """``build_cases`` with the domain's items read from its prepared folder."""
    titles, held = read_prepared_items(Path(prepared) / domain)
    return build_cases(domain, rows, titles, held, negatives, encode, spec, random.Random(seed))
