"""No function in the training package or its tests is longer than MAX_LINES, unless a ``# long:``
comment says why: right above its ``def`` (or above its first decorator), or as its first body line.
Long functions hide the steps a reader needs named; the comment makes each exception a decision."""

from __future__ import annotations

import ast
from pathlib import Path

MAX_LINES = 80
MARK = "# long:"
ROOT = Path(__file__).resolve().parents[1]
CHECKED = (ROOT / "molorec_train", ROOT / "tests")

Function = ast.FunctionDef | ast.AsyncFunctionDef


def first_line(node: ast.stmt) -> int:
    """A statement's first line, counting its decorators."""
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)])


def has_reason(lines: list[str], fn: Function) -> bool:
    """Whether a ``# long: <reason>`` comment sits right above the function or its first body statement."""
    candidates = {first_line(fn) - 1, fn.lineno - 1, first_line(fn.body[0]) - 1}  # 1-based numbers of the lines above
    for number in candidates:
        text = lines[number - 1].strip() if 1 <= number <= len(lines) else ""
        if text.startswith(MARK) and text[len(MARK) :].strip():
            return True
    return False


def long_functions(source: str, max_lines: int = MAX_LINES) -> list[tuple[str, int, int]]:
    """(name, ``def`` line, length) of every function, nested ones and methods included, longer than
    ``max_lines`` (from its ``def`` line to its last line) without a reason; in source order."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > max_lines and not has_reason(lines, node):
                found.append((node.name, node.lineno, length))
    return sorted(found, key=lambda f: f[1])


def checked_files() -> list[Path]:
    return sorted(p for folder in CHECKED for p in folder.glob("*.py"))


def test_no_function_is_longer_than_max_lines_without_a_reason():
    files = checked_files()
    assert Path(__file__).resolve() in files and ROOT / "molorec_train" / "train.py" in files  # the walk sees both folders
    offenders = [
        f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)"
        for path in files
        for name, line, length in long_functions(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, (
        f"functions longer than {MAX_LINES} lines: split them, or put a '{MARK} <reason>' comment right above the def:\n  "
        + "\n  ".join(offenders)
    )


def function_source(name: str, n_lines: int, indent: str = "", decorator: str | None = None, async_: bool = False) -> str:
    """A function ``n_lines`` long, from its ``def`` line to its last line."""
    head = f"{indent}{decorator}\n" if decorator else ""
    body = f"{indent}    x = 1\n" * (n_lines - 1)
    return f"{head}{indent}{'async ' if async_ else ''}def {name}():\n{body}"


def test_the_checker_flags_a_long_function_and_only_that():
    source = function_source("short", 80) + "\n\n" + function_source("long", 81)
    assert long_functions(source) == [("long", 83, 81)]
    assert long_functions(function_source("f", 5), max_lines=4) == [("f", 1, 5)]
    assert long_functions(function_source("f", 5), max_lines=5) == []


def test_the_checker_sees_methods_nested_async_and_decorated_functions():
    method = "class C:\n" + function_source("method", 81, indent="    ")
    assert long_functions(method) == [("method", 2, 81)]
    nested = "def outer():\n" + function_source("inner", 81, indent="    ")
    assert [name for name, _, _ in long_functions(nested)] == ["outer", "inner"]
    assert long_functions(function_source("coro", 81, async_=True)) == [("coro", 1, 81)]
    assert long_functions(function_source("wrapped", 81, decorator="@staticmethod")) == [("wrapped", 2, 81)]


def test_a_long_comment_with_a_reason_excuses_a_function():
    body = function_source("f", 81)
    assert long_functions("# long: one end-to-end scenario\n" + body) == []
    as_first_body_line = body.replace(":\n", ":\n    # long: one end-to-end scenario\n", 1)
    assert long_functions(as_first_body_line) == []
    above_decorator = "# long: one scenario\n" + function_source("f", 81, decorator="@staticmethod")
    assert long_functions(above_decorator) == []


def test_a_long_comment_without_a_reason_or_out_of_place_does_not():
    body = function_source("f", 81)
    assert long_functions("# long:\n" + body) == [("f", 2, 81)]  # no reason given
    assert long_functions("# long: a reason\n\n" + body) == [("f", 3, 81)]  # not right above the def
    assert long_functions("# this is long: a reason\n" + body) == [("f", 2, 81)]
    nested_reason = body + "    # long: the reason of another function\n    y = 2\n"
    assert long_functions(nested_reason) == [("f", 1, 83)]
