"""Prompt and candidate token ids, exactly as packages/core/src/prompt.ts builds them.

Every text piece is tokenized on its own and the ids are concatenated, so titles can be capped
in tokens and the result is identical in Python and TypeScript. Training uses the same
functions, so the served model sees the sequences it was trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

Encode = Callable[[str], list[int]]

DEFAULT_PREFIX = "Given the items a user interacted with, in order, predict the next one.\nHistory:\n"


@dataclass(frozen=True)
class PromptSpec:
    prefix: str = DEFAULT_PREFIX
    itemPrefix: str = "- "
    itemSuffix: str = "\n"
    suffix: str = "Next item: "
    candidatePrefix: str = ""
    maxTitleTokens: int = 32
    maxHistoryTokens: int = 384
    bosTokenId: int | None = None
    endTokenId: int = 0
    scoreNormalization: str = "mean"

    def to_json(self) -> dict:
        return asdict(self)


def _enc(encode: Encode, text: str) -> list[int]:
    return encode(text) if text else []


def title_ids(encode: Encode, spec: PromptSpec, title: str) -> list[int]:
    return _enc(encode, title)[: spec.maxTitleTokens]


def prompt_ids(encode: Encode, spec: PromptSpec, history: Sequence[str]) -> list[int]:
    """Prompt for a history (oldest first); oldest titles are dropped to fit the token budget."""
    if not history:
        raise ValueError("history is empty")
    item_pre, item_suf = _enc(encode, spec.itemPrefix), _enc(encode, spec.itemSuffix)
    items: list[list[int]] = []
    used = 0
    for title in reversed(history):
        ids = item_pre + title_ids(encode, spec, title) + item_suf
        if items and used + len(ids) > spec.maxHistoryTokens:
            break
        items.append(ids)
        used += len(ids)
    out = [] if spec.bosTokenId is None else [spec.bosTokenId]
    out += _enc(encode, spec.prefix)
    for ids in reversed(items):
        out += ids
    return out + _enc(encode, spec.suffix)


def candidate_ids(encode: Encode, spec: PromptSpec, title: str) -> list[int]:
    """The scored continuation: candidate prefix, capped title, end token."""
    return _enc(encode, spec.candidatePrefix) + title_ids(encode, spec, title) + [spec.endTokenId]
