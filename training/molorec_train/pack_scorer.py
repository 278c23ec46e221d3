"""Candidate scores of a pack in Python (onnxruntime), for checks that need no TypeScript.

The prompt runs once, its KV cache serves every candidate in one batch, as packages/core does;
either graph variant works (grouped KV cache and scoring head when present). ``quantize`` compares a
quantized pack with its float32 source through it (``ranking_drift``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .adapters import load_adapter, mixture_feeds
from .export import read_manifest
from .prompt import PromptSpec, candidate_ids, prompt_ids

REPO = Path(__file__).resolve().parents[2]
CATALOGUE = REPO / "examples" / "catalogue-movies.json"


class PackScorer:
    def __init__(self, pack_dir: str | Path, threads: int | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.dir = Path(pack_dir)
        self.manifest = read_manifest(self.dir)
        self.spec = PromptSpec(**self.manifest["prompt"])
        self.tok = Tokenizer.from_file(str(self.dir / self.manifest["files"]["tokenizer"]))
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.dir / self.manifest["files"]["model"]), so, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.targets = [(t["module"], t["inFeatures"], t["outFeatures"]) for t in self.manifest["lora"]["targets"]]
        self.adapters = {n: load_adapter(n, self.dir / e["path"]) for n, e in self.manifest["adapters"].items()}
        self.grouped = self.manifest["model"]["kvCache"] == "grouped"

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def _lora(self, lam: float | None, rows: int) -> dict:
        general, domain = self.manifest.get("generalAdapter"), self.manifest.get("defaultDomain")
        if lam is None or domain is None:
            return mixture_feeds(self.targets, [], [[] for _ in range(rows)])
        ads = [self.adapters[general], self.adapters[self.manifest["domains"][domain]["adapter"]]] if general else None
        if ads is None:
            return mixture_feeds(self.targets, [self.adapters[self.manifest["domains"][domain]["adapter"]]], [[lam]] * rows)
        return mixture_feeds(self.targets, ads, [[1 - lam, lam]] * rows)

    def _past(self, rows: int, length: int, present: list[np.ndarray] | None) -> dict:
        m = self.manifest["model"]
        feeds = {}
        for i in range(m["numLayers"]):
            for j, kind in enumerate(("key", "value")):
                if present is None:
                    feeds[f"past_key_values.{i}.{kind}"] = np.zeros((rows, m["numKvHeads"], length, m["headDim"]), np.float32)
                else:
                    p = present[2 * i + j]
                    feeds[f"past_key_values.{i}.{kind}"] = p if self.grouped else np.repeat(p, rows, axis=0)
        return feeds

    def score(self, history: list[str], candidates: list[str], lam: float | None = None) -> np.ndarray:
        """Each candidate's score (the pack's normalisation) after the history's prompt."""
        prompt = prompt_ids(self.encode, self.spec, history)
        cands = [candidate_ids(self.encode, self.spec, t) for t in candidates]
        p = len(prompt)
        feeds = {"input_ids": np.array([prompt], np.int64), "attention_mask": np.ones((1, p), np.int64), "position_ids": np.arange(p)[None]}
        feeds |= self._past(1, 0, None) | self._lora(lam, 1)
        if "num_logits_to_keep" in self.inputs:
            feeds["num_logits_to_keep"] = np.array([1], np.int64)
        if "target_ids" in self.inputs:
            feeds["target_ids"] = np.zeros((1, p), np.int64)
        if "row_source" in self.inputs:  # a fan-out graph (GraphVariant.fan_out), each row its own source
            feeds["row_source"] = np.arange(1)
        present_names = [o for o in self.outputs if o.startswith("present.")]
        out = self.session.run(["logits", *present_names], feeds)
        first = out[0][0, -1].astype(np.float64)
        first_lp = first - (np.log(np.exp(first - first.max()).sum()) + first.max())

        n, length = len(cands), max(len(c) for c in cands) - 1
        scores = [[first_lp[c[0]]] for c in cands]
        if length > 0:
            ids = np.zeros((n, length), np.int64)
            targets = np.zeros((n, length), np.int64)
            mask = np.zeros((n, p + length), np.int64)
            mask[:, :p] = 1
            for r, c in enumerate(cands):
                ids[r, : len(c) - 1], targets[r, : len(c) - 1] = c[:-1], c[1:]
                mask[r, p : p + len(c) - 1] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": np.tile(np.arange(p, p + length), (n, 1))}
            feeds |= self._past(n, p, out[1:]) | self._lora(lam, n)
            if "num_logits_to_keep" in self.inputs:
                feeds["num_logits_to_keep"] = np.array([0], np.int64)
            if "row_source" in self.inputs:
                feeds["row_source"] = np.arange(n)
            if "token_logprobs" in self.outputs:
                lp = self.session.run(["token_logprobs"], feeds | {"target_ids": targets})[0]
            else:
                logits = self.session.run(["logits"], feeds)[0].astype(np.float64)
                lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
                lp = np.take_along_axis(logits, targets[..., None], -1)[..., 0] - lse
            for r, c in enumerate(cands):
                scores[r] += list(lp[r, : len(c) - 1])
        agg = np.sum if self.spec.scoreNormalization == "sum" else np.mean
        return np.array([agg(s) for s in scores])


def sample_requests(n: int, seed: int = 0, history: int = 10, candidates: int = 20) -> list[dict]:
    """``n`` requests drawn from examples/catalogue-movies.json (well-known film titles)."""
    titles = [i["title"] for i in json.loads(CATALOGUE.read_text())["items"]]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        picked = rng.sample(titles, history + candidates)
        out.append({"history": picked[:history], "candidates": picked[history:]})
    return out


def read_requests(path: str | Path, n: int) -> list[dict]:
    """The first ``n`` requests of a JSONL file (``history`` and ``candidates`` per line; prepare-data's cases work)."""
    out = []
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                out.append({"history": r["history"], "candidates": r["candidates"]})
            if len(out) == n:
                break
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass(frozen=True)
class Drift:
    requests: int
    spearman: float  # mean over requests of the rank correlation of the candidates' scores
    top1: float  # fraction of requests whose best candidate is the same
    max_score_diff: float

    def ok(self, min_spearman: float = 0.98, min_top1: float = 0.95) -> bool:
        return self.spearman >= min_spearman and self.top1 >= min_top1


def ranking_drift(reference: PackScorer, other: PackScorer, requests: list[dict], lam: float | None = None, log=None) -> Drift:
    rho, same, diff = [], 0, 0.0
    for i, r in enumerate(requests):
        a, b = reference.score(r["history"], r["candidates"], lam), other.score(r["history"], r["candidates"], lam)
        rho.append(_spearman(a, b))
        same += int(np.argmax(a) == np.argmax(b))
        diff = max(diff, float(np.max(np.abs(a - b))))
        if log and (i + 1) % 20 == 0:
            log(f"  drift: {i + 1}/{len(requests)} requests")
    return Drift(len(requests), float(np.mean(rho)), same / len(requests), diff)
