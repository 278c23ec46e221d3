"""The Python side of the scoring benchmark: a worker that bench/scoring.mjs drives over stdio.

One JSON command per stdin line, one JSON answer per stdout line, so the Node driver can
interleave Python and Node variants run by run (the machine may be loaded; interleaving spreads
the noise evenly). Times are measured here, around the work only (no IPC, no tokenization).

Variants, all on the same prompt and candidate token ids the Node side built:
- ``ort-prefix``: onnxruntime (Python) running core's shared-prefix algorithm (scoring.ts),
  with training/molorec_train/adapters.py feeds (the adapters as graph inputs, per-row scale);
  with ``graph: "head"``, on the num_logits_to_keep + token_logprobs graph variant, as core.
- ``torch-prefix``: transformers (PyTorch), adapters merged with PEFT at the same λ; the prompt
  once, its KV cache repeated for the batched candidate suffixes: the same scores.
- ``torch-generate``: the paper's path: transformers + PEFT-merged weights, a listwise prompt
  (history and the candidates), greedy generation of one title, exact match to a candidate.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))

OUT = os.fdopen(os.dup(1), "w", buffering=1)
sys.stdout = sys.stderr  # library chatter must not corrupt the protocol

from molorec_train.adapters import load_adapter, mixture_feeds  # noqa: E402
from molorec_train.export import read_manifest  # noqa: E402
from molorec_train.prompt import PromptSpec, title_ids  # noqa: E402

RUN_COST_TOKENS = 32  # core's scoring.ts


def plan_runs(lengths: list[int], max_rows: int, run_cost: float) -> list[tuple[int, int]]:
    """core's planRuns: rows sorted longest first → runs minimising padded tokens + run_cost per run."""
    n = len(lengths)
    best = [0.0] + [float("inf")] * n
    frm = [0] * (n + 1)
    for i in range(1, n + 1):
        for j in range(max(0, i - max_rows), i):
            cost = best[j] + run_cost + (i - j) * lengths[j]
            if cost < best[i]:
                best[i], frm[i] = cost, j
    out = []
    i = n
    while i > 0:
        out.insert(0, (frm[i], i))
        i = frm[i]
    return out


class Worker:
    def __init__(
        self, pack: str, hf_model: str | None, threads: int, mixture: list[list], max_batch_rows: int = 64, graphs: dict | None = None
    ):
        import onnxruntime as ort

        self.pack = Path(pack)
        self.man = read_manifest(self.pack)
        m = self.man["model"]
        self.layers, self.kv, self.hd, self.vocab = m["numLayers"], m["numKvHeads"], m["headDim"], m["vocabSize"]
        self.spec = PromptSpec(**self.man["prompt"])
        self.targets = [(t["module"], t["inFeatures"], t["outFeatures"]) for t in self.man["lora"]["targets"]]
        self.adapters = {n: load_adapter(n, self.pack / e["path"]) for n, e in self.man["adapters"].items()}
        self.threads = threads
        self.max_rows = max_batch_rows
        self.mixture = [(n, float(w)) for n, w in mixture]
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(str(self.pack / self.man["files"]["model"]), so, providers=["CPUExecutionProvider"])
        # graph variants (bench/prepare.py), e.g. "head": num_logits_to_keep + token_logprobs
        self.graph_paths = dict(graphs or {})
        self.graphs = {name: ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]) for name, path in self.graph_paths.items()}
        self._lora_cache: dict[tuple, dict] = {}
        self.hf_model = hf_model
        self._torch = None
        self._tok = None

    # ---------------------------------------------------------------- onnxruntime, shared prefix
    def lora_feeds(self, rows: list[list[tuple[str, float]]]) -> dict:
        """Core's LoraMixer: adapters with a non-zero weight on some row, sorted by name, concatenated
        once per set (cached); a per-row scale."""
        names = tuple(sorted({n for r in rows for n, w in r if w != 0}))
        ab = self._lora_cache.get(names)
        if ab is None:
            ads = [self.adapters[n] for n in names]
            ab = mixture_feeds(self.targets, ads, [[1.0] * len(ads)])
            ab.pop("lora_scale")
            self._lora_cache[names] = ab
        rank = max(1, sum(self.adapters[n].rank for n in names))
        scale = np.zeros((len(rows), rank), np.float32)
        for i, row in enumerate(rows):
            weights = dict(row)
            off = 0
            for n in names:
                ad = self.adapters[n]
                scale[i, off : off + ad.rank] = weights.get(n, 0.0) * ad.scaling
                off += ad.rank
        return {**ab, "lora_scale": scale}

    def ort_prefix(self, prompt: list[int], cands: list[list[int]], mixtures: list[list[tuple[str, float]]], graph: str | None = None):
        """core's scorePrefix; on a graph with num_logits_to_keep + token_logprobs, as core uses it."""
        sess = self.graphs[graph] if graph else self.sess
        head = any(o.name == "token_logprobs" for o in sess.get_outputs())  # the pack may have the head too
        P, M = len(prompt), len(mixtures)
        feeds = {
            "input_ids": np.tile(np.asarray(prompt, np.int64), (M, 1)),
            "attention_mask": np.ones((M, P), np.int64),
            "position_ids": np.tile(np.arange(P, dtype=np.int64), (M, 1)),
            **self.lora_feeds(mixtures),
        }
        empty = np.zeros((M, self.kv, 0, self.hd), np.float32)
        for i in range(self.layers):
            feeds[f"past_key_values.{i}.key"] = feeds[f"past_key_values.{i}.value"] = empty
        if head:
            feeds["num_logits_to_keep"] = np.array([1], np.int64)
            feeds["target_ids"] = np.zeros((M, P), np.int64)
        fan_out = any(i.name == "row_source" for i in sess.get_inputs())  # each row its own source, as core's other paths
        if fan_out:
            feeds["row_source"] = np.arange(M)
        names = ["logits"] + [f"present.{i}.{k}" for i in range(self.layers) for k in ("key", "value")]
        out = sess.run(names, feeds)
        last = out[0][:, -1, :].astype(np.float64)
        first_lse = np.log(np.exp(last - last.max(-1, keepdims=True)).sum(-1)) + last.max(-1)
        presents = out[1:]
        N = len(cands)
        scores = np.zeros((M, N))
        # as core: longest suffix first, cut into runs of similar length (bucketByLength, planRuns);
        # a grouped-cache graph (past batch "past_batch") takes the prompt's cache as it is for
        # runs of M × n rows, mixture-major, a concat graph a copy per row
        grouped = next(i for i in sess.get_inputs() if i.name == "past_key_values.0.key").shape[0] == "past_batch"
        if grouped:
            order = sorted(range(N), key=lambda c: -(len(cands[c]) - 1))
            runs = plan_runs([len(cands[c]) - 1 for c in order], max(1, self.max_rows // M), RUN_COST_TOKENS)
            chunks = [[(m, c) for m in range(M) for c in order[start:stop]] for start, stop in runs]
        else:
            pairs = sorted(((m, c) for m in range(M) for c in range(N)), key=lambda p: -(len(cands[p[1]]) - 1))
            runs = plan_runs([len(cands[c]) - 1 for _, c in pairs], self.max_rows, RUN_COST_TOKENS)
            chunks = [pairs[start:stop] for start, stop in runs]
        end = self.spec.endTokenId
        for chunk in chunks:
            B = len(chunk)
            ms = np.array([m for m, _ in chunk])
            L = max(len(cands[c]) - 1 for _, c in chunk)
            sums = np.array([last[m, cands[c][0]] - first_lse[m] for m, c in chunk])
            if L > 0:
                ids = np.full((B, L), end, np.int64)
                mask = np.zeros((B, P + L), np.int64)
                mask[:, :P] = 1
                for b, (_, c) in enumerate(chunk):
                    n = len(cands[c]) - 1
                    ids[b, :n] = cands[c][:n]
                    mask[b, P : P + n] = 1
                feeds = {
                    "input_ids": ids,
                    "attention_mask": mask,
                    "position_ids": np.tile(np.arange(P, P + L, dtype=np.int64), (B, 1)),
                    **self.lora_feeds([mixtures[m] for m in ms]),
                }
                if fan_out:
                    feeds["row_source"] = np.arange(B)
                for i in range(self.layers):
                    feeds[f"past_key_values.{i}.key"] = presents[2 * i] if grouped else presents[2 * i][ms]
                    feeds[f"past_key_values.{i}.value"] = presents[2 * i + 1] if grouped else presents[2 * i + 1][ms]
                if head:
                    feeds["num_logits_to_keep"] = np.array([0], np.int64)
                    targets = ids.copy()
                    for b, (_, c) in enumerate(chunk):
                        targets[b, : len(cands[c]) - 1] = cands[c][1:]
                    feeds["target_ids"] = targets
                    lps = sess.run(["token_logprobs"], feeds)[0].astype(np.float64)
                    for b, (_, c) in enumerate(chunk):
                        sums[b] += lps[b, : len(cands[c]) - 1].sum()
                else:
                    logits = sess.run(["logits"], feeds)[0]
                    # log-softmax only at the positions that score a token
                    rows, cols, toks = [], [], []
                    for b, (_, c) in enumerate(chunk):
                        for k in range(1, len(cands[c])):
                            rows.append(b)
                            cols.append(k - 1)
                            toks.append(cands[c][k])
                    if rows:
                        sel = logits[rows, cols].astype(np.float64)
                        mx = sel.max(-1, keepdims=True)
                        lse = np.log(np.exp(sel - mx).sum(-1)) + mx[:, 0]
                        np.add.at(sums, rows, sel[np.arange(len(rows)), toks] - lse)
            for b, (m, c) in enumerate(chunk):
                scores[m, c] = sums[b] / (1 if self.spec.scoreNormalization == "sum" else len(cands[c]))
        return scores.tolist(), 1 + (len(runs) if any(len(c) > 1 for c in cands) else 0)

    # ---------------------------------------------------------------- transformers (PyTorch)
    def torch_model(self):
        if self._torch is None:
            import torch

            from molorec_train.reference import merged_model

            torch.set_num_threads(self.threads)
            adapters = {n: self.pack / e["path"] for n, e in self.man["adapters"].items()}
            self._torch = merged_model(self.hf_model, adapters, dict(self.mixture))
        return self._torch

    def torch_prefix(self, prompt: list[int], cands: list[list[int]]):
        from kv_scoring import kv_cache_scores

        model = self.torch_model()
        scores = kv_cache_scores(
            model, prompt, cands, pad_id=self.spec.endTokenId, max_rows=self.max_rows, normalization=self.spec.scoreNormalization
        )
        return [scores], 1 + (len(cands) + self.max_rows - 1) // self.max_rows

    def tokenizer(self):
        if self._tok is None:
            from tokenizers import Tokenizer

            self._tok = Tokenizer.from_file(str(self.pack / self.man["files"]["tokenizer"]))
        return self._tok

    def listwise_prompt(self, history: list[str], candidates: list[str]) -> list[int]:
        """The paper's prompt: instruction, history, the candidate list, the cue."""
        tok, s = self.tokenizer(), self.spec
        enc = lambda text: tok.encode(text, add_special_tokens=False).ids if text else []  # noqa: E731
        ids = [] if s.bosTokenId is None else [s.bosTokenId]
        ids += enc(s.prefix)
        pre, suf = enc(s.itemPrefix), enc(s.itemSuffix)
        for t in history:
            ids += pre + title_ids(enc, s, t) + suf
        ids += enc("Candidates:\n")
        for t in candidates:
            ids += pre + title_ids(enc, s, t) + suf
        return ids + enc(s.suffix)

    def torch_generate(self, history: list[str], candidates: list[str]):
        import torch

        model = self.torch_model()
        ids = self.listwise_prompt(history, candidates)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=self.spec.maxTitleTokens + 1,
                do_sample=False,
                eos_token_id=self.spec.endTokenId,
                pad_token_id=self.spec.endTokenId,
            )
        new = out[0, len(ids) :].tolist()
        if self.spec.endTokenId in new:
            new = new[: new.index(self.spec.endTokenId)]
        text = self.tokenizer().decode(new).strip()
        ms = (time.perf_counter() - t0) * 1e3
        match = next((i for i, c in enumerate(candidates) if c.strip() == text), -1)
        return ms, {"promptTokens": len(ids), "newTokens": len(out[0]) - len(ids), "matched": match}

    def profile(self, prompt: list[int], cands: list[list[int]], graph: str | None, repeats: int = 3) -> dict:
        """onnxruntime's own profile of the shared-prefix runs: kernel time by operator type."""
        import collections
        import tempfile

        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
        path = self.graph_paths[graph] if graph else str(self.pack / self.man["files"]["model"])
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        saved = self.graphs.get("profile"), self.sess
        if graph:
            self.graphs["profile"] = sess
        else:
            self.sess = sess
        try:
            t0 = time.perf_counter()
            for _ in range(repeats):
                self.ort_prefix(prompt, cands, [self.mixture], "profile" if graph else None)
            wall = (time.perf_counter() - t0) / repeats * 1e3
        finally:
            self.graphs["profile"], self.sess = saved
        events = json.loads(Path(sess.end_profiling()).read_text())
        by_op: collections.Counter = collections.Counter()
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                by_op[e["args"]["op_name"]] += e["dur"]
        total = sum(by_op.values())
        return {
            "wallMs": wall,
            "kernelMs": total / repeats / 1e3,
            "ops": [{"op": op, "ms": us / repeats / 1e3, "share": us / total} for op, us in by_op.most_common(12)],
        }

    # ---------------------------------------------------------------- protocol
    def handle(self, cmd: dict) -> dict:
        v = cmd["variant"]
        req = cmd["request"]
        if v == "ort-prefix":
            mixtures = [[(n, float(w)) for n, w in mx] for mx in cmd.get("mixtures", [self.mixture])]
            t0 = time.perf_counter()
            scores, runs = self.ort_prefix(req["promptIds"], req["candidateIds"], mixtures, cmd.get("graph"))
            return {"ms": (time.perf_counter() - t0) * 1e3, "scores": scores, "runs": runs}
        if v == "torch-prefix":
            self.torch_model()
            t0 = time.perf_counter()
            scores, runs = self.torch_prefix(req["promptIds"], req["candidateIds"])
            return {"ms": (time.perf_counter() - t0) * 1e3, "scores": scores, "runs": runs}
        if v == "torch-generate":
            ms, info = self.torch_generate(req["history"], req["candidates"])
            return {"ms": ms, "runs": info["newTokens"], **info}
        raise ValueError(f"unknown variant {v!r}")


def main() -> int:
    worker = None
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        try:
            if cmd["cmd"] == "init":
                import onnxruntime
                import torch

                worker = Worker(
                    cmd["pack"], cmd.get("hfModel"), cmd["threads"], cmd["mixture"], cmd.get("maxBatchRows", 64), cmd.get("graphs")
                )
                ans = {
                    "ok": True,
                    "versions": {"python": sys.version.split()[0], "onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
                }
                if worker.hf_model:
                    import transformers

                    ans["versions"]["transformers"] = transformers.__version__
                    worker.torch_model()
            elif cmd["cmd"] == "profile":
                req = cmd["request"]
                ans = {"ok": True, **worker.profile(req["promptIds"], req["candidateIds"], cmd.get("graph"))}
            elif cmd["cmd"] == "run":
                ans = {"ok": True, **worker.handle(cmd)}
            elif cmd["cmd"] == "quit":
                break
            else:
                ans = {"ok": False, "error": f"unknown command {cmd['cmd']!r}"}
        except Exception as e:  # report, keep serving
            ans = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        OUT.write(json.dumps(ans) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
