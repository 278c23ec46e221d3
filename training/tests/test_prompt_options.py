"""The export's prompt options: the space rule, BOS and end token from the tokenizer, chat templates."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from molorec_train.fixture import fixture_titles, spaces_golden
from molorec_train.graph import ExportError
from molorec_train.prompt import PromptSpec, candidate_ids, prompt_ids
from molorec_train.prompt_options import PromptOptions, TokenizerView, matches_running_text, resolve_prompt, running_text
from molorec_train.recipe import REPO

FIXTURE_TOKENIZER = REPO / "test" / "fixtures" / "tiny-pack"


@pytest.fixture(scope="module")
def view() -> TokenizerView:
    return TokenizerView(FIXTURE_TOKENIZER)


def test_the_committed_space_golden_is_what_prompt_py_gives_today():
    committed = json.loads((REPO / "test" / "fixtures" / "prompt-spaces.golden.json").read_text())
    assert committed == spaces_golden(FIXTURE_TOKENIZER / "tokenizer.json")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_moved_spaces_tokenize_like_running_text(view, seed):
    """A byte-level BPE reads " Title" as the start of a word: with the rule the pieces equal the
    whole text's tokens; without it they end in a lone space token."""
    spec = PromptSpec(endTokenId=0, maxTitleTokens=64, moveTrailingSpaces=True)
    titles = fixture_titles(6, seed)
    history, cand = titles[:5], titles[5]
    pieces = prompt_ids(view.encode, spec, history) + candidate_ids(view.encode, spec, cand)[:-1]
    assert pieces == view.encode(running_text(spec, history, cand))
    kept = replace(spec, moveTrailingSpaces=False)
    assert prompt_ids(view.encode, kept, history) + candidate_ids(view.encode, kept, cand)[:-1] != pieces
    assert prompt_ids(view.encode, kept, history)[-1] == view.encode(" ")[0]  # the lone space


def test_resolve_prompt_reads_the_tokenizer(view):
    spec = resolve_prompt(FIXTURE_TOKENIZER, log=lambda *_: None)
    assert spec.moveTrailingSpaces and spec.bosTokenId is None
    assert spec.endTokenId == view.token_id("<|endoftext|>")
    nl = resolve_prompt(FIXTURE_TOKENIZER, PromptOptions(end_token="item-suffix"))
    assert nl.endTokenId == view.encode("\n")[0]
    assert resolve_prompt(FIXTURE_TOKENIZER, PromptOptions(end_token="7", bos="3", spaces="keep")).endTokenId == 7
    forced = resolve_prompt(FIXTURE_TOKENIZER, PromptOptions(bos="3", spaces="keep", suffix="Then:", maxTitleTokens=5))
    assert (forced.bosTokenId, forced.moveTrailingSpaces, forced.suffix, forced.maxTitleTokens) == (3, False, "Then:", 5)
    with pytest.raises(ExportError, match="not a token"):
        resolve_prompt(FIXTURE_TOKENIZER, PromptOptions(end_token="<no such token>"))
    with pytest.raises(ExportError, match="--bos"):
        resolve_prompt(FIXTURE_TOKENIZER, PromptOptions(bos="first"))


def _with_post_processor_and_chat(tmp_path: Path) -> Path:
    """The fixture tokenizer with a BOS-adding post-processor and a ChatML chat template."""
    tok = json.loads((FIXTURE_TOKENIZER / "tokenizer.json").read_text())
    bos = next(t for t in tok["added_tokens"] if t["content"] == "<|pad|>")
    tok["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|pad|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}}],
        "special_tokens": {"<|pad|>": {"id": "<|pad|>", "ids": [bos["id"]], "tokens": ["<|pad|>"]}},
    }
    (tmp_path / "tokenizer.json").write_text(json.dumps(tok))
    chat = "{% for m in messages %}<|pad|>{{ m['role'] }}\n{{ m['content'] }}<|endoftext|>\n{% endfor %}{% if add_generation_prompt %}<|pad|>assistant\n{% endif %}"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>", "chat_template": chat}))
    return tmp_path


def test_bos_from_the_tokenizer_and_a_chat_template(tmp_path):
    folder = _with_post_processor_and_chat(tmp_path)
    view = TokenizerView(folder)
    spec = resolve_prompt(folder, PromptOptions(chat_template=True), log=lambda *_: None)
    assert spec.bosTokenId == view.token_id("<|pad|>")
    assert spec.prefix.startswith("<|pad|>user\n") and spec.suffix == "Next item:<|endoftext|>\n<|pad|>assistant\n"
    assert spec.endTokenId == view.token_id("<|endoftext|>")
    # the special tokens of the rendered template are single ids, and the pieces match running text
    ids = prompt_ids(view.encode, spec, ["The Silent River (1994)"])
    assert ids[1] == view.token_id("<|pad|>") and matches_running_text(view.encode, spec)
    with pytest.raises(ExportError, match="no chat template"):
        resolve_prompt(FIXTURE_TOKENIZER, PromptOptions(chat_template=True))


def test_prompt_options_from_a_json_file(tmp_path):
    f = tmp_path / "prompt.json"
    f.write_text(json.dumps({"suffix": "Recommended:", "end_token": "item-suffix", "chat_template": False}))
    assert PromptOptions.from_json_file(f) == PromptOptions(suffix="Recommended:", end_token="item-suffix")
    f.write_text(json.dumps({"sufix": "typo"}))
    with pytest.raises(ExportError, match="unknown prompt fields"):
        PromptOptions.from_json_file(f)
