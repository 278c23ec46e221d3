"""The real model, end to end (opt-in: MOLOREC_SMOLLM2=1; uses artifacts/smollm2 from scripts/smollm2-packs.sh).

Candidate scores of the SmolLM2 packs against transformers (fp32 ≤ 1e-4; int8/int4 exact copies of the
GGUF's weights, so within float rounding), through Python onnxruntime and the Node CLI.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import torch

from molorec_train.pack_scorer import PackScorer, sample_requests
from molorec_train.prompt import PromptSpec, candidate_ids, prompt_ids
from molorec_train.recipe import REPO
from molorec_train.reference import candidate_log_likelihoods

ROOT = REPO / "artifacts" / "smollm2"
pytestmark = pytest.mark.skipif(
    os.environ.get("MOLOREC_SMOLLM2") != "1" or not (ROOT / "int4" / "molorec.json").is_file(),
    reason="the SmolLM2 packs: run scripts/smollm2-packs.sh, then MOLOREC_SMOLLM2=1",
)


@pytest.fixture(scope="module")
def reference():
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ROOT / "checkpoint", dtype=torch.float32, local_files_only=True).eval()
    tok = Tokenizer.from_file(str(ROOT / "fp32" / "tokenizer.json"))
    spec = PromptSpec(**json.loads((ROOT / "fp32" / "molorec.json").read_text())["prompt"])

    def scores(request: dict) -> np.ndarray:
        enc = lambda t: tok.encode(t, add_special_tokens=False).ids  # noqa: E731
        cands = [candidate_ids(enc, spec, c) for c in request["candidates"]]
        with torch.no_grad():
            lps = candidate_log_likelihoods(model, prompt_ids(enc, spec, request["history"]), cands)
        return np.array([np.mean(lp) for lp in lps])

    return scores


@pytest.mark.parametrize("pack, tol", [("fp32", 1e-4), ("int8", 1e-4), ("int4", 1e-4)])
def test_pack_scores_equal_transformers(reference, pack, tol):
    scorer = PackScorer(ROOT / pack)
    for request in sample_requests(3, seed=11):
        got, want = scorer.score(request["history"], request["candidates"]), reference(request)
        assert np.max(np.abs(got - want)) <= tol
        assert np.argmax(got) == np.argmax(want)


def test_node_cli_scores_equal_transformers(reference, tmp_path):
    request = json.loads((REPO / "examples" / "request-base.json").read_text())
    want = reference(request)
    proc = subprocess.run(
        [
            "node",
            str(REPO / "packages/runtime-node/bin/molorec.js"),
            "recommend",
            "--pack",
            str(ROOT / "fp32"),
            "--request",
            str(REPO / "examples" / "request-base.json"),
            "--json",
            "--ep",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    got = {r["index"]: r["score"] for r in json.loads(proc.stdout)["ranked"]}
    assert max(abs(got[i] - want[i]) for i in range(len(want))) <= 1e-4
