"""The prompt a pack is exported with: template, BOS, end token, chat template, space rule.

``resolve_prompt`` turns :class:`PromptOptions` (the export CLI's flags) into the pack's
:class:`PromptSpec`, reading what it needs from the tokenizer itself:

- **BOS** (``bos="auto"``): the id the tokenizer prepends on its own (``add_special_tokens=True``),
  none when it prepends none (SmolLM2, GPT-2 style); ``"none"`` or an id override it.
- **End token** (``end_token``): ``"eos"`` (the tokenizer's end-of-sequence token), ``"item-suffix"``
  (the first token of ``itemSuffix``: how titles end inside the prompt's history, which a pretrained
  model without adapters has seen), an id, or a token's text.
- **Chat template** (``chat_template=True``): the tokenizer's template renders one user turn holding
  the instruction, the history and the cue, then the assistant header; a candidate is the
  assistant's reply. The render is baked into ``prefix``/``suffix``, so runtimes need no template
  engine.
- **Spaces** (``spaces="auto"``): ``moveTrailingSpaces`` on when it makes the pieces tokenize like
  the running text and off otherwise (prompt.py); ``"move"`` / ``"keep"`` force it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from .graph import ExportError
from .prompt import PromptSpec, candidate_ids, prompt_ids

# Sample titles for checking the space rule against whole-text tokenization.
SAMPLE_TITLES = ("Heat (1995)", "The Matrix (1999)", "Toy Story (1995)", "12 Angry Men (1957)", "Casablanca (1942)")
CHAT_SENTINEL = "\u0000MOLOREC-USER-TURN\u0000"


@dataclass(frozen=True)
class PromptOptions:
    """Overrides of the default template; ``None`` keeps the base spec's value."""

    prefix: str | None = None
    itemPrefix: str | None = None
    itemSuffix: str | None = None
    suffix: str | None = None
    candidatePrefix: str | None = None
    maxTitleTokens: int | None = None
    maxHistoryTokens: int | None = None
    scoreNormalization: str | None = None
    bos: str = "auto"  # auto | none | <id>
    end_token: str = "eos"  # eos | item-suffix | <id> | <token text>
    chat_template: bool = False
    spaces: str = "auto"  # auto | move | keep

    @classmethod
    def from_json_file(cls, path: str | Path) -> PromptOptions:
        """A JSON object with PromptSpec fields (camelCase) and/or the options above."""
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise ExportError(f"{path}: expected a JSON object of prompt fields")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ExportError(f"{path}: unknown prompt fields {unknown}; known: {sorted(known)}")
        return cls(**data)


class TokenizerView:
    """The few things the prompt options need from a ``tokenizer.json`` (+ config)."""

    def __init__(self, tokenizer_dir: str | Path):
        from tokenizers import Tokenizer

        self.dir = Path(tokenizer_dir)
        self.tok = Tokenizer.from_file(str(self.dir / "tokenizer.json"))
        cfg_path = self.dir / "tokenizer_config.json"
        self.config = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def bos(self) -> int | None:
        """The id the tokenizer prepends by itself, if any."""
        plain, special = self.encode("a"), self.tok.encode("a", add_special_tokens=True).ids
        return special[0] if len(special) > len(plain) and special[1:] == plain[: len(special) - 1] else None

    def token_id(self, token: str) -> int | None:
        return self.tok.token_to_id(token)

    def special(self, key: str) -> str | None:
        v = self.config.get(key)
        return v if isinstance(v, str) else (v or {}).get("content") if isinstance(v, dict) else None

    def chat_template(self) -> str | None:
        t = self.config.get("chat_template")
        if isinstance(t, str) and t:
            return t
        jinja = self.dir / "chat_template.jinja"
        return jinja.read_text() if jinja.is_file() else None


def _end_token(view: TokenizerView, spec: PromptSpec, how: str, config_eos: int | None) -> int:
    if how == "eos":
        token = view.special("eos_token")
        eos = view.token_id(token) if token else None
        eos = config_eos if eos is None else eos
        if eos is None:
            raise ExportError("cannot find an end token: set eos_token in tokenizer_config.json, or pass --end-token")
        return eos
    if how == "item-suffix":
        ids = view.encode(spec.itemSuffix)
        if not ids:
            raise ExportError("--end-token item-suffix needs a non-empty itemSuffix")
        return ids[0]
    if how.isdigit():
        return int(how)
    tid = view.token_id(how)
    if tid is None:
        raise ExportError(f"--end-token {how!r} is not a token of this tokenizer (use eos, item-suffix, an id or a token's text)")
    return tid


def _bos(view: TokenizerView, how: str) -> int | None:
    if how == "auto":
        return view.bos()
    if how == "none":
        return None
    if how.isdigit():
        return int(how)
    raise ExportError(f"--bos {how!r}: expected auto, none or a token id")


def chat_wrapped(view: TokenizerView, spec: PromptSpec) -> PromptSpec:
    """``spec`` inside one user turn of the tokenizer's chat template, the candidate as the reply."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    template = view.chat_template()
    if template is None:
        raise ExportError(f"{view.dir} has no chat template (tokenizer_config.json chat_template or chat_template.jinja)")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    rendered = env.from_string(template).render(
        messages=[{"role": "user", "content": CHAT_SENTINEL}],
        add_generation_prompt=True,
        bos_token=view.special("bos_token") or "",
        eos_token=view.special("eos_token") or "",
    )
    if rendered.count(CHAT_SENTINEL) != 1:
        raise ExportError("the chat template did not render the user turn exactly once")
    before, after = rendered.split(CHAT_SENTINEL)
    return replace(spec, prefix=before + spec.prefix, suffix=spec.suffix.rstrip(" ") + after)


def running_text(spec: PromptSpec, history: list[str], candidate: str) -> str:
    items = "".join(spec.itemPrefix + t + spec.itemSuffix for t in history)
    return spec.prefix + items + spec.suffix + spec.candidatePrefix + candidate


def matches_running_text(encode, spec: PromptSpec, titles=SAMPLE_TITLES) -> bool:
    """Do the pieces tokenize like the whole text, for every sample history and candidate?"""
    for i, cand in enumerate(titles):
        history = [t for t in titles if t != cand][: i + 1]
        pieces = prompt_ids(encode, replace(spec, bosTokenId=None), history) + candidate_ids(encode, spec, cand)[:-1]
        if pieces != encode(running_text(spec, history, cand)):
            return False
    return True


def resolve_prompt(
    tokenizer_dir: str | Path, options: PromptOptions = PromptOptions(), base: PromptSpec | None = None, config_eos=None, log=print
) -> PromptSpec:
    """The pack's prompt spec from ``options`` over ``base`` (default template), read against the tokenizer."""
    view = TokenizerView(tokenizer_dir)
    spec = base or PromptSpec()
    fields = {k: getattr(options, k) for k in PromptSpec.__dataclass_fields__ if hasattr(options, k) and getattr(options, k) is not None}
    spec = replace(spec, **fields)
    if options.chat_template:
        spec = chat_wrapped(view, spec)
    spec = replace(spec, bosTokenId=_bos(view, options.bos), endTokenId=_end_token(view, spec, options.end_token, config_eos))
    if options.spaces not in ("auto", "move", "keep"):
        raise ExportError(f"--spaces {options.spaces!r}: expected auto, move or keep")
    if options.spaces == "auto":
        moved = replace(spec, moveTrailingSpaces=True)
        if matches_running_text(view.encode, moved):
            spec = moved
        elif not matches_running_text(view.encode, replace(spec, moveTrailingSpaces=False)):
            log("warning: neither space rule tokenizes the prompt like running text with this tokenizer; keeping spaces where written")
    else:
        spec = replace(spec, moveTrailingSpaces=options.spaces == "move")
    return spec
