"""Prompt and candidate token ids, exactly as packages/core/src/prompt.ts builds them.

Every text piece is tokenized on its own and the ids are concatenated, so titles can be capped
in tokens and the result is identical in Python and TypeScript. Training uses the same
functions, so the served model sees the sequences it was trained on.

Spaces (``moveTrailingSpaces``): byte-level BPE tokenizers (GPT-2, Llama 3, Qwen, SmolLM) read a
space as the start of the word after it (`` Heat`` is one token), so ``"- "`` and ``"Heat"``
tokenized apart give a lone space token and a title without its space, a sequence the model never
saw in running text. With ``moveTrailingSpaces``, the trailing spaces of a template piece that a
title follows (``itemPrefix``; ``suffix`` and ``candidatePrefix`` before a candidate) are tokenized
as the start of that title instead: ``"- "`` + ``"Heat"`` becomes ``"-"`` + ``" Heat"``, exactly the
running text's tokens. docs/pack-format.md states the rule; tests hold it to whole-text tokenization.
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
    moveTrailingSpaces: bool = False

    def to_json(self) -> dict:
        return asdict(self)


def _enc(encode: Encode, text: str) -> list[int]:
    return encode(text) if text else []


def split_trailing_spaces(text: str) -> tuple[str, str]:
    """``"Next item: "`` -> ``("Next item:", " ")``."""
    body = text.rstrip(" ")
    return body, text[len(body) :]


def title_ids(encode: Encode, spec: PromptSpec, title: str, lead: str = "") -> list[int]:
    """A title's ids, cut to ``maxTitleTokens``; ``lead``: spaces moved in from the piece before it."""
    return _enc(encode, lead + title)[: spec.maxTitleTokens]


def _before_title(spec: PromptSpec, text: str) -> tuple[str, str]:
    """A template piece that a title follows: (what is tokenized as the piece, what the title takes)."""
    return split_trailing_spaces(text) if spec.moveTrailingSpaces else (text, "")


def prompt_ids(encode: Encode, spec: PromptSpec, history: Sequence[str]) -> list[int]:
    """Prompt for a history (oldest first); oldest titles are dropped to fit the token budget."""
    if not history:
        raise ValueError("history is empty")
    pre_text, lead = _before_title(spec, spec.itemPrefix)
    item_pre, item_suf = _enc(encode, pre_text), _enc(encode, spec.itemSuffix)
    items: list[list[int]] = []
    used = 0
    for title in reversed(history):
        ids = item_pre + title_ids(encode, spec, title, lead) + item_suf
        if items and used + len(ids) > spec.maxHistoryTokens:
            break
        items.append(ids)
        used += len(ids)
    out = [] if spec.bosTokenId is None else [spec.bosTokenId]
    out += _enc(encode, spec.prefix)
    for ids in reversed(items):
        out += ids
    return out + _enc(encode, _before_title(spec, spec.suffix)[0])


def candidate_ids(encode: Encode, spec: PromptSpec, title: str) -> list[int]:
    """The scored continuation: candidate prefix, capped title, end token (spaces the prompt's
    suffix gave away come first)."""
    pre_text, lead = _before_title(spec, _before_title(spec, spec.suffix)[1] + spec.candidatePrefix)
    return _enc(encode, pre_text) + title_ids(encode, spec, title, lead) + [spec.endTokenId]
