"""Exact candidate scores with a transformers KV cache, shared by bench/py_worker.py (``torch-prefix``)
and bench/peers_torch.py (``kv``): the prompt runs once, its cache is repeated for the candidates,
which run batched on it (up to ``max_rows`` per forward, right-padded with ``pad_id``)."""

from __future__ import annotations

import copy


def kv_cache_scores(model, prompt: list[int], cands: list[list[int]], *, pad_id: int, max_rows: int, normalization: str) -> list[float]:
    """Each candidate's summed log-probability (or the mean, unless ``normalization`` is "sum")."""
    import torch

    scores = [0.0] * len(cands)
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([prompt]), use_cache=True)
        first = torch.log_softmax(out.logits[0, -1].double(), -1)
        cache = out.past_key_values
        for start in range(0, len(cands), max_rows):
            idx = list(range(start, min(len(cands), start + max_rows)))
            L = max(len(cands[c]) - 1 for c in idx)
            sums = [float(first[cands[c][0]]) for c in idx]
            if L > 0:
                ids = torch.full((len(idx), L), pad_id, dtype=torch.long)
                for b, c in enumerate(idx):
                    ids[b, : len(cands[c]) - 1] = torch.tensor(cands[c][:-1])
                past = copy.deepcopy(cache)
                past.batch_repeat_interleave(len(idx))
                # right padding: causal attention keeps real tokens from seeing the pads
                logits = model(input_ids=ids, past_key_values=past, use_cache=True).logits
                for b, c in enumerate(idx):
                    n = len(cands[c]) - 1
                    if n:
                        lp = torch.log_softmax(logits[b, :n].double(), -1)
                        sums[b] += float(lp[torch.arange(n), torch.tensor(cands[c][1:])].sum())
            for b, c in enumerate(idx):
                scores[c] = sums[b] / (1 if normalization == "sum" else len(cands[c]))
    return scores
