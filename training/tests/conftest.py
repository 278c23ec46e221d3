from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from molorec_train import tiny
from molorec_train.export import export_pack
from molorec_train.graph import GraphVariant

WORDS = "the star night city blue river garden red song quiet storm golden road ocean paper light".split()


def fake_titles(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS).capitalize() for _ in range(rng.randint(1, 4))) + f" ({1950 + rng.randint(0, 70)})" for _ in range(n)
    ]


@dataclass
class Built:
    model_dir: Path
    adapters: dict[str, Path]
    pack_dir: Path


def build(root: Path, architecture: str) -> Built:
    tok_dir = root / "model"
    tiny.train_bpe_tokenizer(fake_titles(300, 1) + ["History:\n- Next item: predict"], 300, tok_dir)
    tiny.make_model(tok_dir, architecture=architecture, vocab_size=300, seed=3)
    general = tiny.make_lora(tok_dir, root / "general", targets=["q_proj", "v_proj"], rank=4, alpha=8, seed=11)
    domain = tiny.make_lora(
        tok_dir, root / "domain", targets=["q_proj", "k_proj", "o_proj", "gate_proj", "down_proj"], rank=6, alpha=3, seed=12
    )
    adapters = {"general": general, "domain:test": domain}
    export_pack(tok_dir, root / "pack", adapters, name=f"tiny-{architecture}", variant=GraphVariant(), log=lambda *_: None)
    return Built(tok_dir, adapters, root / "pack")


@pytest.fixture(scope="session", params=["llama", "qwen2"])
def built(request, tmp_path_factory) -> Built:
    return build(tmp_path_factory.mktemp(request.param), request.param)
