"""The tiny fixture pack (random weights) and its golden candidate scores.

The TypeScript tests read both from test/fixtures, so they need no Python. Golden scores come
from the independent reference (reference.py: transformers + PEFT, one full pass per candidate).
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

from . import tiny
from .export import export_pack
from .graph import GraphVariant
from .prompt import PromptSpec, candidate_ids, prompt_ids
from .reference import candidate_log_likelihoods, candidate_token_entropies, merged_model

ADJ = "Silent Golden Broken Hidden Electric Midnight Crimson Lonely Wild Frozen Distant Secret Little Last Brave".split()
NOUN = "River Garden Empire Signal Harbor Kingdom Mirror Machine Forest Letter Orchestra Island Planet Circus Shadow".split()

# Requests of the golden file: each runs under every mixture below.
REQUESTS = [
    {
        "history": ["The Silent River (1994)", "Electric Garden (2001)", "Midnight Harbor (1987)"],
        "candidates": [
            "Broken Mirror (1999)",
            "The Lonely Planet (2010)",
            "Crimson Empire (1975)",
            "Wild Orchestra (2004)",
            "Frozen Letter (1968)",
        ],
    },
    {
        "history": ["Secret Kingdom (1990)"],
        "candidates": ["Distant Island (1982)", "Little Circus (2015)", "Brave Machine (1999)"],
    },
    {
        # long titles and a long history: exercises title caps and the history budget
        "history": [
            f"{a} {n} of the {a2} {n2} Chronicles, Part {i} (Director's Cut, Extended Edition)"
            for i, (a, n, a2, n2) in enumerate(zip(ADJ, NOUN, reversed(ADJ), reversed(NOUN)))
        ],
        "candidates": ["Golden Shadow (2020)", "Hidden Forest " * 12, "Last Signal (1971)", "Electric Empire (2008)"],
    },
]
MIXTURES = {"base": None, "general": 0.0, "domain": 1.0, "wa": 0.5, "lambda-0.3": 0.3}


# The space rule's golden ids (prompt.py's moveTrailingSpaces), read by packages/core's prompt tests
# with the fixture tokenizer: Python and TypeScript must cut the same pieces.
SPACES_GOLDEN_SPEC = PromptSpec(
    prefix="Given the items a user interacted with:\n", suffix="Next item: ", candidatePrefix="", maxTitleTokens=6, moveTrailingSpaces=True
)
SPACES_GOLDEN_CASES = [
    {"history": ["The Silent River (1994)", "  Electric Garden (2001)"], "candidates": ["Broken Mirror (1999)", "X", " Wild Orchestra"]},
    {"history": ["Secret Kingdom of the Distant Island (1990)"], "candidates": ["Little Circus (2015)"]},
]


def spaces_golden(tokenizer_path: str | Path) -> dict:
    """Prompt and candidate ids of SPACES_GOLDEN_CASES under SPACES_GOLDEN_SPEC."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))

    def encode(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False).ids

    cases = [
        {
            **c,
            "promptIds": prompt_ids(encode, SPACES_GOLDEN_SPEC, c["history"]),
            "candidateIds": [candidate_ids(encode, SPACES_GOLDEN_SPEC, t) for t in c["candidates"]],
        }
        for c in SPACES_GOLDEN_CASES
    ]
    return {
        "about": "molorec-train make-fixture: prompt.py ids with moveTrailingSpaces (fixture tokenizer)",
        "spec": SPACES_GOLDEN_SPEC.to_json(),
        "cases": cases,
    }


def fixture_titles(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(['', 'The '])}{rng.choice(ADJ)} {rng.choice(NOUN)} ({rng.randint(1950, 2023)})" for _ in range(n)]


def fixture_base_model(model_dir: Path) -> None:
    """The fixture's tiny random Llama and its BPE tokenizer (the benchmark builds the same base)."""
    corpus = fixture_titles(2000, 7) + [PromptSpec().prefix, "- \nNext item: "]
    tiny.train_bpe_tokenizer(corpus, 512, model_dir)
    tiny.make_model(
        model_dir,
        architecture="llama",
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        seed=5,
        std=0.15,
    )


def _fixture_model(work: Path) -> tuple[Path, dict[str, Path]]:
    """The tiny random Llama, its tokenizer and two random LoRAs (general, movies) under ``work``."""
    model_dir = work / "model"
    fixture_base_model(model_dir)
    return model_dir, _fixture_loras(model_dir, work, None)


def _fixture_loras(model_dir: Path, work: Path, layers: list[int] | None) -> dict[str, Path]:
    """The fixture's two random LoRAs, on every layer or on ``layers`` only."""
    tag = "" if layers is None else "-top"
    kw = {"layers": layers} if layers is not None else {}
    general = tiny.make_lora(model_dir, work / f"general{tag}", targets=["q_proj", "v_proj", "up_proj"], rank=4, alpha=8, seed=21, **kw)
    domain = tiny.make_lora(
        model_dir, work / f"movies{tag}", targets=["q_proj", "k_proj", "v_proj", "o_proj"], rank=8, alpha=8, seed=22, **kw
    )
    return {"general": general, "domain:movies": domain}


def _golden_cases(model_dir: Path, adapters: dict[str, Path], spec: PromptSpec, encode) -> list[dict]:
    """REQUESTS under every mixture of MIXTURES, scored by transformers + PEFT (reference.py)."""
    models = {
        name: merged_model(model_dir, adapters, {} if lam is None else {"general": 1 - lam, "domain:movies": lam})
        for name, lam in MIXTURES.items()
    }
    cases = []
    for req in REQUESTS:
        p_ids = prompt_ids(encode, spec, req["history"])
        c_ids = [candidate_ids(encode, spec, c) for c in req["candidates"]]
        for mix_name, lam in MIXTURES.items():
            per_token = candidate_log_likelihoods(models[mix_name], p_ids, c_ids)
            scores = [sum(t) / len(t) for t in per_token]
            mixture = mix_name if not mix_name.startswith("lambda-") else {"lambda": lam}
            cases.append(
                {
                    "request": {**req, "domain": "movies", "mixture": mixture},
                    "lambda": lam,
                    "promptIds": p_ids,
                    "candidateIds": c_ids,
                    "tokenLogProbs": per_token,
                    "scores": scores,
                    "tokenEntropies": candidate_token_entropies(models[mix_name], p_ids, c_ids),
                    "ranking": sorted(range(len(scores)), key=lambda i: -scores[i]),
                }
            )
    return cases


def _golden_file(manifest: dict, cases: list[dict]) -> str:
    golden = {
        "about": "Golden candidate scores (and mean next-token entropies along each candidate) for the tiny fixture pack, computed by transformers + PEFT (adapters merged at the given λ of the domain adapter; general gets 1 − λ), one full forward pass per candidate. Regenerate with: molorec-train make-fixture",
        "pack": manifest["name"],
        "cases": cases,
    }
    return json.dumps(golden, indent=1) + "\n"


def build_fixture(
    out_dir: str | Path,
    golden_path: str | Path,
    log=print,
    grouped_dir: str | Path | None = None,
    fanout_dir: str | Path | None = None,
) -> None:
    """Writes the fixture pack (the contract's minimal graph: concat KV cache, no scoring head),
    optionally the same weights as ``grouped_dir`` with the variants core uses when present
    (grouped KV cache, scoring head; one golden file serves both), and the golden scores.
    ``fanout_dir``: the same base with the LoRAs on layer 1 of 2 only, exported with fan-out
    (``model.sharedLayers`` 1), and its own golden scores beside it (``<fanout_dir>.golden.json``)."""
    from tokenizers import Tokenizer

    out_dir, golden_path = Path(out_dir), Path(golden_path)
    spec = PromptSpec(endTokenId=0, maxTitleTokens=16, maxHistoryTokens=96)
    common = dict(name="tiny-fixture", prompt=spec, max_candidates=64, max_history_items=32, log=log)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, adapters = _fixture_model(Path(tmp))
        manifest = export_pack(model_dir, out_dir, adapters, variant=GraphVariant(), **common)  # the contract's minimal graph
        if grouped_dir is not None:
            export_pack(model_dir, Path(grouped_dir), adapters, **common)
        tok = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
        encode = lambda text: tok.encode(text, add_special_tokens=False).ids  # noqa: E731
        cases = _golden_cases(model_dir, adapters, spec, encode)
        if fanout_dir is not None:
            fanout_dir = Path(fanout_dir)
            top = _fixture_loras(model_dir, Path(tmp), [1])
            fan_manifest = export_pack(model_dir, fanout_dir, top, **(common | {"name": "tiny-fixture-fanout"}))
            fan_golden = fanout_dir.with_name(fanout_dir.name + ".golden.json")
            fan_golden.write_text(_golden_file(fan_manifest, _golden_cases(model_dir, top, spec, encode)))
            log(f"wrote {fan_golden}")
    golden_path.parent.mkdir(parents=True, exist_ok=True)
    golden_path.write_text(_golden_file(manifest, cases))
    log(f"wrote {golden_path} ({len(cases)} cases)")
    spaces = golden_path.with_name("prompt-spaces.golden.json")
    spaces.write_text(json.dumps(spaces_golden(out_dir / "tokenizer.json"), indent=1) + "\n")
    log(f"wrote {spaces}")
