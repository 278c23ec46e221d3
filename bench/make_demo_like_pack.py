"""A pack with the demo pack's shapes and random weights, to benchmark at demo scale before the
real demo pack exists: Llama, 4 layers, hidden 128, intermediate 384, 4 heads / 2 KV heads,
vocab 4096, LoRA (rank 8) on all 7 linear layers for a general and a domain adapter, a BPE
tokenizer trained on the domain's titles (../shared/data/<domain>/items.tsv).

    .venv/bin/python bench/make_demo_like_pack.py --out bench/.cache/demo-like
    pnpm bench:scoring --pack bench/.cache/demo-like/pack --hf-model bench/.cache/demo-like/model

Scores are meaningless (random weights); costs are those of the demo's shapes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))

from molorec_train import tiny  # noqa: E402
from molorec_train.export import export_pack  # noqa: E402
from molorec_train.prompt import PromptSpec  # noqa: E402

LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "bench/.cache/demo-like")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    ap.add_argument("--domain", default="movies-ml100k")
    args = ap.parse_args()
    items = args.data / args.domain / "items.tsv"
    titles = [line.split("\t", 1)[1].strip() for line in items.read_text().splitlines()[1:] if "\t" in line] if items.is_file() else []
    spec = PromptSpec(maxTitleTokens=24, maxHistoryTokens=256)
    corpus = titles * 3 + [spec.prefix, spec.itemPrefix + spec.itemSuffix + spec.suffix] if titles else None
    if corpus is None:
        from molorec_train.fixture import fixture_titles

        corpus = fixture_titles(5000, 1) + [spec.prefix, "- \nNext item: "]
    model = args.out / "model"
    tiny.train_bpe_tokenizer(corpus, 4096, model)
    tiny.make_model(
        model,
        architecture="llama",
        vocab_size=4096,
        hidden_size=128,
        intermediate_size=384,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        seed=1,
        std=0.05,
    )
    general = tiny.make_lora(model, args.out / "general", targets=LINEARS, rank=8, alpha=16, seed=2, std=0.05)
    domain = tiny.make_lora(model, args.out / "domain", targets=LINEARS, rank=8, alpha=16, seed=3, std=0.05)
    export_pack(
        model,
        args.out / "pack",
        {"general": general, f"domain:{args.domain}": domain},
        name="demo-like-random",
        prompt=PromptSpec(maxTitleTokens=24, maxHistoryTokens=256, endTokenId=0),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
