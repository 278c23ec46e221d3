"""Classic baselines on the saved benchmark cases: random, popularity, SASRec.

All baselines score the candidates of the very cases saved by ``prepare-data``
(``test_warm.jsonl`` / ``test_cold.jsonl``), so their numbers sit beside the LLM's.

Metrics (one positive per case, 0-based rank r of the positive among the candidates):
NDCG@k = 1/log2(r+2) if r < k else 0; HR@k = 1 if r < k else 0. Ties count against the
positive (r = number of other candidates scoring >= the positive), so a constant scorer
gets 0, never a free win.

SASRec follows Kang & McAuley 2018 (and the reference PyTorch port): item embedding (scaled
by sqrt(d)) + learned positional embedding, dropout, 2 blocks of [LayerNorm -> causal
single-head self-attention (query from the normalised input) -> residual -> LayerNorm ->
point-wise FFN with residual], padding masked after every block, final LayerNorm; trained
with binary cross-entropy on every non-padding position against one negative sampled per
position (uniform over training items not in the sequence), Adam(lr 1e-3, betas 0.9/0.98).
A candidate's score is the dot product of the last position's hidden state with its item
embedding (shared input/output embedding). Training data: the domain's ``train.jsonl``
windows, each as a sequence history + target. Items that never occur in training (the
cold-start items) are never used as negatives either, so their embedding stays at its random
initialisation: the cold-start weakness of ID-based models. The epoch with the best NDCG@3 on
``valid.jsonl`` (when present) is kept.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .data import DataError, read_jsonl, read_prepared_items

BASELINES = ("random", "popularity", "sasrec")


# ----------------------------------------------------------------------------- metrics


def rank_of_label(scores: Sequence[float], label: int) -> int:
    """0-based rank of the positive; ties count against it."""
    s = scores[label]
    return sum(1 for j, v in enumerate(scores) if j != label and v >= s)


def ndcg_at(rank: int, k: int) -> float:
    return 1.0 / math.log2(rank + 2) if rank < k else 0.0


def hr_at(rank: int, k: int) -> float:
    return 1.0 if rank < k else 0.0


def metrics_from_ranks(ranks: Sequence[int]) -> dict[str, float]:
    n = len(ranks)
    if n == 0:
        return {"ndcg@1": float("nan"), "ndcg@3": float("nan"), "hr@3": float("nan"), "cases": 0}
    return {
        "ndcg@1": sum(ndcg_at(r, 1) for r in ranks) / n,
        "ndcg@3": sum(ndcg_at(r, 3) for r in ranks) / n,
        "hr@3": sum(hr_at(r, 3) for r in ranks) / n,
        "cases": n,
    }


def expected_random(num_candidates: int) -> dict[str, float]:
    """Metric values of a uniformly random ranking (exact expectation)."""
    c = num_candidates
    return {"ndcg@1": 1 / c, "ndcg@3": sum(ndcg_at(r, 3) for r in range(min(3, c))) / c, "hr@3": min(3, c) / c}


Scorer = Callable[[list[dict]], list[list[float]]]


def evaluate(scorer: Scorer, cases: list[dict]) -> dict[str, float]:
    scores = scorer(cases)
    return metrics_from_ranks([rank_of_label(s, c["label"]) for s, c in zip(scores, cases)])


# ----------------------------------------------------------------------------- random / popularity


def random_scorer(seed: int) -> Scorer:
    def score(cases: list[dict]) -> list[list[float]]:
        rng = random.Random(f"{seed}:random")
        return [[rng.random() for _ in c["candidate_ids"]] for c in cases]

    return score


def training_sequences(train: list[dict], maxlen: int) -> list[list[str]]:
    """The item sequences behind the saved sliding windows: a window whose history is the tail
    (last min(len, maxlen) items) of the running sequence continues it; any other window starts
    a new one (its history, then its target). Each training interaction appears once."""
    out: list[list[str]] = []
    cur: list[str] = []
    for ex in train:
        hist = list(ex["history_ids"])
        if cur and len(hist) == min(len(cur), maxlen) and hist == cur[-len(hist) :]:
            cur.append(ex["target_id"])
        else:
            if cur:
                out.append(cur)
            cur = hist + [ex["target_id"]]
    if cur:
        out.append(cur)
    return out


def popularity_counts(train: list[dict], maxlen: int) -> dict[str, int]:
    """How often each item was interacted with in training: every interaction once.

    Counting every window's history instead would weigh an item by how many windows it sits in
    (up to ``maxlen`` + 1 times for an item early in a long sequence), not by how popular it is.
    """
    counts: dict[str, int] = {}
    for seq in training_sequences(train, maxlen):
        for i in seq:
            counts[i] = counts.get(i, 0) + 1
    return counts


def popularity_scorer(counts: dict[str, int], seed: int) -> Scorer:
    """Score = count; ties (e.g. every cold item has count 0) broken at random with the seed."""

    def score(cases: list[dict]) -> list[list[float]]:
        rng = random.Random(f"{seed}:popularity")
        return [[counts.get(i, 0) + 0.5 * rng.random() for i in c["candidate_ids"]] for c in cases]

    return score


# ----------------------------------------------------------------------------- SASRec


@dataclass
class SASRecConfig:
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    maxlen: int = 10
    lr: float = 1e-3
    batch_size: int = 256
    epochs: int | None = None  # None: auto_epochs(transitions)
    seed: int = 0
    threads: int = 1  # small matmuls: one thread is as fast and does not fight other jobs


def _torch():
    import torch

    return torch


def build_sasrec(num_items: int, cfg: SASRecConfig):
    """SASRec module; item indices 1..num_items, 0 = padding."""
    torch = _torch()
    nn = torch.nn

    class FFN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l1, self.l2 = nn.Linear(cfg.dim, cfg.dim), nn.Linear(cfg.dim, cfg.dim)
            self.d1, self.d2 = nn.Dropout(cfg.dropout), nn.Dropout(cfg.dropout)

        def forward(self, x):
            return x + self.d2(self.l2(torch.relu(self.d1(self.l1(x)))))

    class SASRec(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.item_emb = nn.Embedding(num_items + 1, cfg.dim, padding_idx=0)
            self.pos_emb = nn.Embedding(cfg.maxlen + 1, cfg.dim, padding_idx=0)
            self.emb_dropout = nn.Dropout(cfg.dropout)
            self.attn_norms = nn.ModuleList(nn.LayerNorm(cfg.dim, eps=1e-8) for _ in range(cfg.blocks))
            self.attns = nn.ModuleList(
                nn.MultiheadAttention(cfg.dim, cfg.heads, dropout=cfg.dropout, batch_first=True) for _ in range(cfg.blocks)
            )
            self.ffn_norms = nn.ModuleList(nn.LayerNorm(cfg.dim, eps=1e-8) for _ in range(cfg.blocks))
            self.ffns = nn.ModuleList(FFN() for _ in range(cfg.blocks))
            self.last_norm = nn.LayerNorm(cfg.dim, eps=1e-8)
            for p in self.parameters():
                if p.dim() > 1:
                    nn.init.xavier_normal_(p)
            with torch.no_grad():
                self.item_emb.weight[0].zero_()
                self.pos_emb.weight[0].zero_()
            L = cfg.maxlen
            self.register_buffer("causal", torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1), persistent=False)

        def hidden(self, seqs):
            """seqs [B, L] left-padded item indices -> hidden states [B, L, d]."""
            keep = (seqs != 0).unsqueeze(-1)
            x = self.item_emb(seqs) * math.sqrt(cfg.dim)
            positions = torch.arange(1, seqs.shape[1] + 1, device=seqs.device).unsqueeze(0) * (seqs != 0)
            x = self.emb_dropout(x + self.pos_emb(positions)) * keep
            mask = self.causal[: seqs.shape[1], : seqs.shape[1]]
            for ln_a, attn, ln_f, ffn in zip(self.attn_norms, self.attns, self.ffn_norms, self.ffns):
                q = ln_a(x)
                out, _ = attn(q, x, x, attn_mask=mask, need_weights=False)
                x = ffn(ln_f(q + out)) * keep
            return self.last_norm(x)

        def forward(self, seqs, pos, neg):
            h = self.hidden(seqs)
            return (h * self.item_emb(pos)).sum(-1), (h * self.item_emb(neg)).sum(-1)

        def score(self, seqs, cands):
            """seqs [B, L], cands [B, C] -> [B, C] scores from the last position."""
            h = self.hidden(seqs)[:, -1, :]
            return (self.item_emb(cands) * h.unsqueeze(1)).sum(-1)

    return SASRec()


def auto_epochs(transitions: int) -> int:
    """Default epochs: about half a million training transitions in all, 20 to 60 epochs
    (movies-ml100k: 20 epochs, ~45 s on one core; scientific-amazon2018: 60, ~50 s)."""
    return max(20, min(60, math.ceil(500_000 / max(transitions, 1))))


def _left_pad(ids: Sequence[int], L: int) -> list[int]:
    ids = list(ids)[-L:]
    return [0] * (L - len(ids)) + ids


class SASRecBaseline:
    def __init__(self, item_ids: Sequence[str], cfg: SASRecConfig) -> None:
        self.cfg = cfg
        self.index = {i: n + 1 for n, i in enumerate(item_ids)}
        self.model = None
        self.log: list[dict] = []

    def _idx(self, ids: Sequence[str]) -> list[int]:
        return [self.index[i] for i in ids if i in self.index]

    def chains(self, train: list[dict]) -> list[list[int]]:
        """The item sequences behind the saved sliding windows (``training_sequences``), as indices."""
        return [c for c in (self._idx(s) for s in training_sequences(train, self.cfg.maxlen)) if len(c) >= 2]

    def epoch_chunks(self, chains: list[list[int]], rng: random.Random) -> tuple[list[list[int]], list[list[int]]]:
        """Cut every sequence into pieces of <= maxlen transitions (consecutive pieces share one
        item, so each transition is trained once per epoch); the cut points move by a random
        offset each epoch, so over epochs a transition is seen with contexts of every length."""
        L = self.cfg.maxlen
        inp: list[list[int]] = []
        pos: list[list[int]] = []
        for c in chains:
            n = len(c)
            starts = [0] + list(range(rng.randrange(L) or L, n - 1, L))
            for a, b in zip(starts, starts[1:] + [n - 1]):
                piece = c[a : b + 1]
                inp.append(_left_pad(piece[:-1], L))
                pos.append(_left_pad(piece[1:], L))
        return inp, pos

    def fit(self, train: list[dict], valid: list[dict] | None = None, progress: Callable[[str], None] = print) -> SASRecBaseline:
        torch = _torch()
        cfg = self.cfg
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, cfg.threads))
        try:
            return self._fit(train, valid, progress)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, train: list[dict], valid: list[dict] | None, progress: Callable[[str], None]) -> SASRecBaseline:
        torch = _torch()
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        rng = random.Random(f"{cfg.seed}:sasrec")
        chains = self.chains(train)
        if not chains:
            raise DataError("SASRec: no training sequences")
        vocab = torch.tensor(sorted({i for c in chains for i in c}))
        self.model = model = build_sasrec(len(self.index), cfg)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
        bce = torch.nn.BCEWithLogitsLoss()
        best, best_state = -1.0, None
        transitions = sum(len(c) - 1 for c in chains)
        epochs = cfg.epochs or auto_epochs(transitions)
        self.epochs = epochs
        eval_every = max(1, epochs // 20)
        progress(f"  sasrec: {len(chains)} sequences, {transitions} transitions, {len(vocab)} training items, {epochs} epochs")
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            model.train()
            inp, pos = self.epoch_chunks(chains, rng)
            inp_t, pos_t = torch.tensor(inp), torch.tensor(pos)
            perm = torch.randperm(len(inp_t), generator=gen)
            total, batches = 0.0, 0
            for start in range(0, len(inp_t), cfg.batch_size):
                b = perm[start : start + cfg.batch_size]
                s, p = inp_t[b], pos_t[b]
                neg = self._negatives(s, p, vocab, gen)
                pl, nl = model(s, p, neg)
                m = p != 0
                loss = bce(pl[m], torch.ones_like(pl[m])) + bce(nl[m], torch.zeros_like(nl[m]))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item()
                batches += 1
            row = {"epoch": epoch, "loss": total / max(batches, 1), "seconds": time.perf_counter() - t0}
            msg = f"  sasrec epoch {epoch}/{epochs} loss {row['loss']:.4f}"
            if valid and (epoch % eval_every == 0 or epoch == epochs):
                v = evaluate(self.score, valid)
                row["valid_ndcg@3"] = v["ndcg@3"]
                msg += f" valid NDCG@1 {v['ndcg@1']:.4f} NDCG@3 {v['ndcg@3']:.4f}"
                if v["ndcg@3"] > best:
                    best, best_state = v["ndcg@3"], {k: t.detach().clone() for k, t in model.state_dict().items()}
            if "valid_ndcg@3" in row or epoch % eval_every == 0:
                progress(msg + f" ({row['seconds']:.1f}s)")
            self.log.append(row)
        if best_state is not None:
            model.load_state_dict(best_state)
            self.best_epoch = max(self.log, key=lambda r: r.get("valid_ndcg@3", -1))["epoch"]
        else:
            self.best_epoch = epochs
        return self

    @staticmethod
    def _negatives(s, p, vocab, gen):
        """One negative per position: uniform over training items, not in the sequence."""
        torch = _torch()
        seq_items = torch.cat([s, p[:, -1:]], dim=1)
        neg = vocab[torch.randint(len(vocab), p.shape, generator=gen)]
        for _ in range(20):
            bad = (neg.unsqueeze(-1) == seq_items.unsqueeze(1)).any(-1) & (p != 0)
            if not bad.any():
                break
            neg[bad] = vocab[torch.randint(len(vocab), (int(bad.sum()),), generator=gen)]
        return neg * (p != 0)

    def score(self, cases: list[dict]) -> list[list[float]]:
        torch = _torch()
        assert self.model is not None, "fit first"
        self.model.eval()
        out: list[list[float]] = []
        L = self.cfg.maxlen
        with torch.no_grad():
            for start in range(0, len(cases), 512):
                chunk = cases[start : start + 512]
                seqs = torch.tensor([_left_pad(self._idx(c["history_ids"]), L) for c in chunk])
                cands = torch.tensor([[self.index[i] for i in c["candidate_ids"]] for c in chunk])
                out.extend(self.model.score(seqs, cands).tolist())
        return out


# ----------------------------------------------------------------------------- driver


def load_domain(prepared: Path, domain: str) -> dict:
    d = Path(prepared) / domain
    if not (d / "meta.json").is_file():
        raise DataError(f"{d}: not a prepared domain (no meta.json); run prepare-data first")
    meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
    titles, held = read_prepared_items(d)
    return {"dir": d, "meta": meta, "titles": titles, "held_out": held, "train": read_jsonl(d / "train.jsonl")}


def load_cases(domain_dir: Path, split: str) -> list[dict]:
    path = Path(domain_dir) / f"test_{split}.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: missing (is this a target domain?)")
    return read_jsonl(path)


def run_baselines(
    prepared: Path,
    domain: str,
    splits: Sequence[str] = ("warm",),
    seed: int = 0,
    epochs: int | None = None,
    only: Sequence[str] = BASELINES,
    progress: Callable[[str], None] = print,
    sasrec_config: SASRecConfig | None = None,
) -> dict:
    """Evaluate baselines on the saved cases. Returns {split: {"cases", "results": [...]}}."""
    for name in only:
        if name not in BASELINES:
            raise DataError(f"unknown baseline {name!r} (choose from {', '.join(BASELINES)})")
    dom = load_domain(prepared, domain)
    cases = {s: load_cases(dom["dir"], s) for s in splits}
    scorers: dict[str, tuple[Scorer, float, dict]] = {}
    if "random" in only:
        scorers["random"] = (random_scorer(seed), 0.0, {})
    if "popularity" in only:
        t0 = time.perf_counter()
        counts = popularity_counts(dom["train"], int(dom["meta"]["options"]["max_history"]))
        scorers["popularity"] = (popularity_scorer(counts, seed), time.perf_counter() - t0, {})
    if "sasrec" in only:
        cfg = replace(sasrec_config or SASRecConfig(maxlen=int(dom["meta"]["options"]["max_history"])), seed=seed)
        if epochs is not None:
            cfg.epochs = epochs
        valid_path = dom["dir"] / "valid.jsonl"
        valid = read_jsonl(valid_path) if valid_path.is_file() else None
        t0 = time.perf_counter()
        progress(f"  sasrec: training on {domain} train.jsonl ({len(dom['train'])} windows)")
        model = SASRecBaseline(list(dom["titles"]), cfg).fit(dom["train"], valid, progress)
        scorers["sasrec"] = (
            model.score,
            time.perf_counter() - t0,
            {"config": {**asdict(cfg), "epochs": model.epochs}, "best_epoch": model.best_epoch},
        )
    out: dict = {"domain": domain, "seed": seed, "splits": {}}
    for split, cs in cases.items():
        n_cand = len(cs[0]["candidate_ids"]) if cs else 0
        rows = []
        for name, (scorer, fit_s, extra) in scorers.items():
            t0 = time.perf_counter()
            ranks = [rank_of_label(s, c["label"]) for s, c in zip(scorer(cs), cs)]
            m = metrics_from_ranks(ranks)
            rows.append(
                {
                    "baseline": name,
                    **m,
                    "fit_seconds": round(fit_s, 2),
                    "eval_seconds": round(time.perf_counter() - t0, 3),
                    **extra,
                    "ranks": ranks,  # per saved case, so that a subset of the cases can be scored too
                }
            )
        out["splits"][split] = {
            "cases": len(cs),
            "candidates": n_cand,
            "random_expected": expected_random(n_cand) if n_cand else None,
            "results": rows,
        }
    return out


def format_table(result: dict) -> str:
    lines = []
    for split, r in result["splits"].items():
        lines.append(f"{result['domain']} {split}: {r['cases']} cases, {r['candidates']} candidates")
        lines.append(f"  {'baseline':<12}{'NDCG@1':>8}{'NDCG@3':>8}{'HR@3':>8}{'fit s':>8}")
        for row in r["results"]:
            lines.append(f"  {row['baseline']:<12}{row['ndcg@1']:>8.4f}{row['ndcg@3']:>8.4f}{row['hr@3']:>8.4f}{row['fit_seconds']:>8.1f}")
        if r["random_expected"]:
            e = r["random_expected"]
            lines.append(f"  {'E[random]':<12}{e['ndcg@1']:>8.4f}{e['ndcg@3']:>8.4f}{e['hr@3']:>8.4f}")
    return "\n".join(lines)


def main_baselines(args: argparse.Namespace) -> int:
    """Entry point of the `baselines` CLI subcommand."""
    splits = ("warm", "cold") if args.split == "both" else (args.split,)
    only = tuple(x.strip() for x in args.only.split(",")) if getattr(args, "only", None) else BASELINES
    progress = lambda line: print(line, flush=True)  # noqa: E731
    result = run_baselines(args.prepared, args.domain, splits, seed=args.seed, epochs=args.epochs, only=only, progress=progress)
    print(format_table(result))
    if getattr(args, "json", None):
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0
