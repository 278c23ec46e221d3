"""The PyTorch rows of bench/peers.mjs: transformers on the float32 checkpoint, in its own process.

Driven over stdio as bench/py_worker.py is (one JSON command per stdin line, one JSON answer per
stdout line); times are measured here around the work only. Rows, on the token ids the driver built:
- ``kv``: exact scores with a KV cache: the prompt once, its cache repeated for the candidates,
  which run batched (up to ``maxBatchRows`` per forward, right-padded) on it — bench/py_worker.py's
  ``torch_prefix`` without adapters.
- ``generate``: the paper's path: the listwise prompt, greedy ``generate`` of up to ``genTokens``
  tokens; the text goes back to the driver, which matches it to the candidates.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

OUT = os.fdopen(os.dup(1), "w", buffering=1)
sys.stdout = sys.stderr  # library chatter must not corrupt the protocol


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


BASELINE_RSS = rss_bytes()  # the bare interpreter, before torch is imported


class Engine:
    def __init__(self, checkpoint: str, threads: int, spec: dict, max_rows: int = 64):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32, local_files_only=True).eval()
        self.tok = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
        self.spec = spec
        self.max_rows = max_rows

    def kv(self, prompt: list[int], cands: list[list[int]]) -> list[float]:
        from kv_scoring import kv_cache_scores

        return kv_cache_scores(
            self.model, prompt, cands, pad_id=self.spec["endTokenId"], max_rows=self.max_rows, normalization=self.spec["scoreNormalization"]
        )

    def generate(self, ids: list[int], gen_tokens: int) -> dict:
        torch, end = self.torch, self.spec["endTokenId"]
        with torch.inference_mode():
            out = self.model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=gen_tokens,
                do_sample=False,
                eos_token_id=end,
                pad_token_id=end,
            )
        new = out[0, len(ids) :].tolist()
        stopped = end in new
        if stopped:
            new = new[: new.index(end)]
        return {"text": self.tok.decode(new), "newTokens": len(new), "truncated": not stopped, "promptTokens": len(ids)}


def main() -> int:
    engine = None
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        try:
            if cmd["cmd"] == "init":
                t0 = time.perf_counter()
                engine = Engine(cmd["checkpoint"], cmd["threads"], cmd["spec"], cmd.get("maxBatchRows", 64))
                import torch
                import transformers

                ans = {
                    "ok": True,
                    "loadMs": (time.perf_counter() - t0) * 1e3,
                    "loadedRss": rss_bytes(),
                    "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__},
                }
            elif cmd["cmd"] == "run":
                r = cmd["request"]
                t0 = time.perf_counter()
                if cmd["row"] == "kv":
                    ans = {"ok": True, "scores": engine.kv(r["promptIds"], r["candidateIds"])}
                elif cmd["row"] == "generate":
                    ans = {"ok": True, "extra": engine.generate(r["listwiseIds"], cmd.get("genTokens", 50))}
                else:
                    raise ValueError(f"unknown row {cmd['row']!r}")
                ans["ms"] = (time.perf_counter() - t0) * 1e3
            elif cmd["cmd"] == "stats":
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
                ans = {"ok": True, "peakRss": peak, "baselineRss": BASELINE_RSS, "rss": rss_bytes()}
            elif cmd["cmd"] == "quit":
                OUT.write(json.dumps({"ok": True}) + "\n")
                break
            else:
                ans = {"ok": False, "error": f"unknown command {cmd['cmd']!r}"}
        except Exception as e:  # report, keep serving
            ans = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        OUT.write(json.dumps(ans) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
