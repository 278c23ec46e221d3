"""Benchmark data preparation: read a domain folder in the shared layout, split it, save cases.

Input layout (see ../shared/data/README.md), one folder per domain:
  items.tsv         header ``item_id<TAB>title``
  sequences.jsonl   ``{"user": ..., "items": [ids, oldest first]}``            or
  examples.jsonl    ``{"history": [ids], "target": id, "split": "train|valid|test"}``

Decisions (all recorded in each domain's ``meta.json``):
- Titles are cleaned (strip, collapse whitespace); items with an empty title are dropped.
- Item ids that are not in the cleaned ``items.tsv`` (unknown or empty-titled) are *skipped
  with a count*, not an error: they are removed from sequences/histories, and an example whose
  target is unknown is dropped. Malformed lines are an error (``DataError`` with line number).
- Sequences: leave-one-out per user. Last item = test, second-to-last = valid, the items
  before that become training examples as sliding windows (history = the last <= max_history
  items before each position, target = the item at that position). Users with fewer than 3
  items contribute training windows only.
- Examples: the given splits are used; examples with an empty history are dropped;
  histories are cut to their last max_history items.
- A *general* domain produces ``train.jsonl`` (+ ``valid.jsonl``). A general domain without
  any ``train`` example (books-bookcrossing ships only valid/test) uses its valid + test
  examples as training data and has no valid set.
- A *target* domain also gets a cold-start split: ``cold_fraction`` of the domain's
  *interacted* items (items that occur in at least one sequence/example) is held out with the
  seed. No training example contains a held-out item, as history or target:
    * sequences: held-out items are removed from the training part of each user's sequence
      before windowing (every interaction with them is removed; the rest keeps its order);
    * examples: a training example whose history or target contains one is dropped.
  ``test_cold`` = test cases whose positive is held out, ``test_warm`` = the others;
  ``valid`` = valid cases whose positive is not held out (warm). Histories of
  valid/test cases may contain any item.
- Negatives: ``negatives`` per case, uniformly from the pool of the positive (warm: interacted
  items not held out; cold: held-out items; general domains: all interacted items), never the
  positive, never an item of the case's own history, no duplicates. Candidates are shuffled
  with the seed and ``label`` is the positive's index. A case whose pool is too small is
  skipped (counted). Case sets may be capped (``max_test``/``max_valid``), sampled with the
  seed, original order kept.
- Every random choice uses ``random.Random`` seeded from (seed, domain, purpose), so the
  output is a pure function of the inputs and options.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

FORMAT_VERSION = 1
DEFAULT_TARGETS = ("movies-ml100k", "scientific-amazon2018")
OUTPUT_FILES = ("train.jsonl", "valid.jsonl", "test_warm.jsonl", "test_cold.jsonl", "items.tsv", "meta.json")
SPLITS = ("train", "valid", "test")


class DataError(ValueError):
    """Bad input data or options (message says which file and line)."""


@dataclass(frozen=True)
class Options:
    seed: int = 0
    negatives: int = 19
    cold_fraction: float = 0.2
    max_history: int = 10
    max_test: int | None = None
    max_valid: int | None = None  # None: same cap as max_test

    def validate(self) -> None:
        if self.negatives < 1:
            raise DataError(f"negatives must be >= 1, got {self.negatives}")
        if not 0.0 < self.cold_fraction < 1.0:
            raise DataError(f"cold_fraction must be in (0, 1), got {self.cold_fraction}")
        if self.max_history < 1:
            raise DataError(f"max_history must be >= 1, got {self.max_history}")
        for name in ("max_test", "max_valid"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise DataError(f"{name} must be >= 1, got {v}")


@dataclass(frozen=True)
class Example:
    history: tuple[str, ...]
    target: str


@dataclass(frozen=True)
class Case:
    history: tuple[str, ...]
    candidates: tuple[str, ...]
    label: int

    @property
    def positive(self) -> str:
        return self.candidates[self.label]


@dataclass
class RawDomain:
    name: str
    path: Path
    titles: dict[str, str]  # cleaned, in items.tsv order
    form: str  # "sequences" | "examples"
    sequences: list[list[str]] = field(default_factory=list)
    examples: dict[str, list[Example]] = field(default_factory=dict)  # split -> examples
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class PreparedDomain:
    name: str
    role: str  # "general" | "target"
    titles: dict[str, str]
    held_out: frozenset[str]
    train: list[Example]
    valid: list[Case]
    test_warm: list[Case]
    test_cold: list[Case]
    meta: dict


# ----------------------------------------------------------------------------- reading

_WS = re.compile(r"\s+")


def clean_title(title: str) -> str:
    """Strip and collapse every whitespace run (tabs, newlines included) to one space."""
    return _WS.sub(" ", title).strip()


def read_items(path: Path) -> tuple[dict[str, str], dict[str, int]]:
    """Read ``items.tsv`` -> ({item_id: cleaned title}, stats). Empty titles are dropped."""
    titles: dict[str, str] = {}
    empty = 0
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n")
        if header.split("\t")[:2] != ["item_id", "title"]:
            raise DataError(f"{path}:1: expected header 'item_id<TAB>title', got {header[:80]!r}")
        seen: set[str] = set()
        for lineno, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            item_id, sep, title = line.partition("\t")
            item_id = item_id.strip()
            if not sep or not item_id:
                raise DataError(f"{path}:{lineno}: expected 'item_id<TAB>title', got {line[:80]!r}")
            if item_id in seen:
                raise DataError(f"{path}:{lineno}: duplicate item id {item_id!r}")
            seen.add(item_id)
            t = clean_title(title)
            if not t:
                empty += 1
                continue
            titles[item_id] = t
    if not titles:
        raise DataError(f"{path}: no items with a non-empty title")
    return titles, {"items_in_file": len(seen), "items_empty_title": empty, "items": len(titles)}


def _jsonl(path: Path) -> Iterable[tuple[int, dict]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object")
            yield lineno, obj


def _id(value: object, where: str) -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise DataError(f"{where}: item id must be a non-empty string, got {value!r}")


def _ids(value: object, where: str) -> list[str]:
    if not isinstance(value, list):
        raise DataError(f"{where}: expected a list of item ids, got {type(value).__name__}")
    return [_id(v, where) for v in value]


def read_sequences(path: Path, known: dict[str, str]) -> tuple[list[list[str]], dict[str, int]]:
    """Read ``sequences.jsonl``; unknown ids are removed (counted); empty users are skipped."""
    seqs: list[list[str]] = []
    unknown = empty = 0
    for lineno, obj in _jsonl(path):
        where = f"{path}:{lineno}"
        if "items" not in obj:
            raise DataError(f"{where}: missing key 'items'")
        ids = _ids(obj["items"], where)
        kept = [i for i in ids if i in known]
        unknown += len(ids) - len(kept)
        if not kept:
            empty += 1
            continue
        seqs.append(kept)
    return seqs, {
        "users": len(seqs),
        "interactions": sum(map(len, seqs)),
        "unknown_ids_skipped": unknown,
        "users_empty_skipped": empty,
    }


def read_examples(path: Path, known: dict[str, str]) -> tuple[dict[str, list[Example]], dict[str, int]]:
    """Read ``examples.jsonl`` grouped by split. Unknown ids are removed from histories
    (counted); an example with an unknown target or an empty history is dropped (counted)."""
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    unknown = unknown_target = empty = 0
    for lineno, obj in _jsonl(path):
        where = f"{path}:{lineno}"
        for key in ("history", "target", "split"):
            if key not in obj:
                raise DataError(f"{where}: missing key {key!r}")
        split = obj["split"]
        if split not in SPLITS:
            raise DataError(f"{where}: split must be one of {'|'.join(SPLITS)}, got {split!r}")
        hist = _ids(obj["history"], where)
        target = _id(obj["target"], where)
        kept = [i for i in hist if i in known]
        unknown += len(hist) - len(kept)
        if target not in known:
            unknown += 1
            unknown_target += 1
            continue
        if not kept:
            empty += 1
            continue
        out[split].append(Example(tuple(kept), target))
    stats = {f"examples_{s}": len(v) for s, v in out.items()}
    stats.update(unknown_ids_skipped=unknown, examples_unknown_target_dropped=unknown_target, examples_empty_history_dropped=empty)
    return out, stats


def read_domain(folder: Path) -> RawDomain:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    items_path = folder / "items.tsv"
    if not items_path.is_file():
        raise DataError(f"{folder}: missing items.tsv")
    seq_path, ex_path = folder / "sequences.jsonl", folder / "examples.jsonl"
    if seq_path.is_file() and ex_path.is_file():
        raise DataError(f"{folder}: has both sequences.jsonl and examples.jsonl; keep one")
    if not seq_path.is_file() and not ex_path.is_file():
        raise DataError(f"{folder}: has neither sequences.jsonl nor examples.jsonl")
    titles, stats = read_items(items_path)
    raw = RawDomain(folder.name, folder, titles, "sequences" if seq_path.is_file() else "examples")
    if raw.form == "sequences":
        raw.sequences, s = read_sequences(seq_path, titles)
    else:
        raw.examples, s = read_examples(ex_path, titles)
    raw.stats = {**stats, **s}
    return raw


# ----------------------------------------------------------------------------- splitting


def _rng(seed: int, domain: str, purpose: str) -> random.Random:
    # str seeds are hashed with sha512: stable across runs and PYTHONHASHSEED.
    return random.Random(f"{seed}:{domain}:{purpose}")


def sliding_windows(seq: Sequence[str], max_history: int) -> list[Example]:
    """Every position t >= 1: history = seq[max(0, t-max_history):t], target = seq[t]."""
    return [Example(tuple(seq[max(0, t - max_history) : t]), seq[t]) for t in range(1, len(seq))]


def leave_one_out(
    sequences: Sequence[Sequence[str]], max_history: int, held_out: frozenset[str] = frozenset()
) -> tuple[list[Example], list[Example], list[Example]]:
    """(train windows, valid examples, test examples). Held-out items are removed from the
    training part of each sequence before windowing; valid/test histories are untouched."""
    train: list[Example] = []
    valid: list[Example] = []
    test: list[Example] = []
    for seq in sequences:
        if len(seq) >= 3:
            train_part = seq[:-2]
            valid.append(Example(tuple(seq[:-2][-max_history:]), seq[-2]))
            test.append(Example(tuple(seq[:-1][-max_history:]), seq[-1]))
        else:
            train_part = seq
        if held_out:
            train_part = [i for i in train_part if i not in held_out]
        train.extend(sliding_windows(train_part, max_history))
    return train, valid, test


def interacted_items(titles: dict[str, str], examples: Iterable[Example]) -> list[str]:
    """Items that occur in any example, in items.tsv order."""
    used: set[str] = set()
    for ex in examples:
        used.update(ex.history)
        used.add(ex.target)
    return [i for i in titles if i in used]


def choose_held_out(universe: Sequence[str], fraction: float, rng: random.Random) -> frozenset[str]:
    n = round(fraction * len(universe))
    n = min(max(n, 1), len(universe) - 1) if len(universe) >= 2 else 0
    return frozenset(rng.sample(list(universe), n))


def cap(items: list, max_n: int | None, rng: random.Random) -> list:
    """At most max_n elements, sampled with rng, original order kept."""
    if max_n is None or len(items) <= max_n:
        return list(items)
    keep = sorted(rng.sample(range(len(items)), max_n))
    return [items[i] for i in keep]


def sample_negatives(
    pool: Sequence[str], n: int, exclude: set[str], rng: random.Random, pool_set: frozenset[str] | None = None
) -> list[str] | None:
    """n distinct items drawn uniformly from pool minus exclude; None if there are not enough."""
    pool_set = frozenset(pool) if pool_set is None else pool_set
    if len(pool_set) - len(pool_set & exclude) < n:
        return None
    out: list[str] = []
    chosen: set[str] = set()
    tries = 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        item = pool[rng.randrange(len(pool))]
        if item in exclude or item in chosen:
            continue
        out.append(item)
        chosen.add(item)
    if len(out) < n:  # dense exclusions: draw from the explicit remainder
        rest = [i for i in pool if i not in exclude and i not in chosen]
        out += rng.sample(rest, n - len(out))
    return out


def make_cases(examples: Sequence[Example], pool: Sequence[str], negatives: int, rng: random.Random) -> tuple[list[Case], int]:
    """Turn examples into ranking cases. Returns (cases, skipped for a too-small pool)."""
    cases: list[Case] = []
    skipped = 0
    pool_set = frozenset(pool)
    for ex in examples:
        negs = sample_negatives(pool, negatives, set(ex.history) | {ex.target}, rng, pool_set)
        if negs is None:
            skipped += 1
            continue
        cands = [ex.target] + negs
        rng.shuffle(cands)
        cases.append(Case(ex.history, tuple(cands), cands.index(ex.target)))
    return cases, skipped


def all_examples(raw: RawDomain, role: str, max_history: int) -> tuple[list[Example], list[Example], list[Example], list[str]]:
    """(train, valid, test, notes): every example of the domain before any hold-out, which is what
    defines the item universe."""
    if raw.form == "sequences":
        return (*leave_one_out(raw.sequences, max_history), [])
    tr0, va0, te0 = ([Example(ex.history[-max_history:], ex.target) for ex in raw.examples.get(s, [])] for s in SPLITS)
    if role == "general" and not tr0:
        note = "no train-split examples: valid + test examples used as training data, no valid set"
        return tr0 + va0 + te0, [], [], [note]
    return tr0, va0, te0, []


def cold_start_split(
    raw: RawDomain, held: frozenset[str], examples: tuple[list[Example], list[Example], list[Example]], max_history: int
) -> tuple[list[Example], list[Example], list[Example], str]:
    """(train, valid, test, the note for meta.json) with no held-out item in any training example;
    ``examples`` are the domain's (train, valid, test) before the hold-out."""
    if raw.form == "sequences":
        train, valid, test = leave_one_out(raw.sequences, max_history, held)
        return train, valid, test, "cold-start: held-out items removed from the training part of each sequence before windowing"
    train0, valid, test = examples
    train = [ex for ex in train0 if ex.target not in held and not held.intersection(ex.history)]
    return train, valid, test, "cold-start: training examples whose history or target has a held-out item dropped"


def duplicate_titles(titles: dict[str, str]) -> int:
    """How many items share their title with an earlier item."""
    counts: dict[str, int] = {}
    for t in titles.values():
        counts[t] = counts.get(t, 0) + 1
    return sum(c - 1 for c in counts.values() if c > 1)


def split_cases(
    name: str, universe: list[str], held: frozenset[str], va_ex: list[Example], te_ex: list[Example], opts: Options, max_valid: int | None
) -> tuple[list[Case], list[Case], list[Case], dict[str, int], int]:
    """(valid, test_warm, test_cold, examples available per split before the caps, cases skipped for
    a too-small pool): the warm/cold split of the valid and test examples, capped, then each made a
    case with negatives from its own pool."""
    warm_pool = [i for i in universe if i not in held]
    cold_pool = [i for i in universe if i in held]
    va_warm = [ex for ex in va_ex if ex.target not in held]
    te_warm = [ex for ex in te_ex if ex.target not in held]
    te_cold = [ex for ex in te_ex if ex.target in held]
    available = {"valid_available": len(va_warm), "test_warm_available": len(te_warm), "test_cold_available": len(te_cold)}

    va_warm = cap(va_warm, max_valid, _rng(opts.seed, name, "cap_valid"))
    te_warm = cap(te_warm, opts.max_test, _rng(opts.seed, name, "cap_test_warm"))
    te_cold = cap(te_cold, opts.max_test, _rng(opts.seed, name, "cap_test_cold"))
    valid, s_va = make_cases(va_warm, warm_pool, opts.negatives, _rng(opts.seed, name, "neg_valid"))
    test_warm, s_tw = make_cases(te_warm, warm_pool, opts.negatives, _rng(opts.seed, name, "neg_test_warm"))
    test_cold, s_tc = make_cases(te_cold, cold_pool, opts.negatives, _rng(opts.seed, name, "neg_test_cold"))
    return valid, test_warm, test_cold, available, s_va + s_tw + s_tc


def domain_meta(raw: RawDomain, role: str, opts: Options, max_valid: int | None, counts: dict[str, int], notes: list[str]) -> dict:
    """The domain's ``meta.json``."""
    return {
        "format_version": FORMAT_VERSION,
        "domain": raw.name,
        "role": role,
        "source": str(raw.path.resolve()),
        "source_form": raw.form,
        "seed": opts.seed,
        "options": {**asdict(opts), "max_valid": max_valid},
        "source_stats": raw.stats,
        "counts": counts,
        "notes": notes,
    }


def prepare_domain(raw: RawDomain, role: str, opts: Options) -> PreparedDomain:
    """Split one domain. role 'target' adds the cold-start split and the test sets."""
    if role not in ("general", "target"):
        raise DataError(f"role must be 'general' or 'target', got {role!r}")
    opts.validate()
    name, h = raw.name, opts.max_history
    max_valid = opts.max_valid if opts.max_valid is not None else opts.max_test
    counts: dict[str, int] = {}

    tr0, va0, te0, notes = all_examples(raw, role, h)
    universe = interacted_items(raw.titles, [*tr0, *va0, *te0])
    if not universe:
        raise DataError(f"{raw.path}: no interactions with known items")

    held: frozenset[str] = frozenset()
    if role == "target":
        held = choose_held_out(universe, opts.cold_fraction, _rng(opts.seed, name, "held_out"))
        train, va_ex, te_ex, note = cold_start_split(raw, held, (tr0, va0, te0), h)
        notes.append(note)
        counts["train_examples_lost_to_held_out"] = len(tr0) - len(train)
    else:
        train, va_ex, te_ex = tr0, va0, []

    valid, test_warm, test_cold, available, skipped = split_cases(name, universe, held, va_ex, te_ex, opts, max_valid)
    counts.update(available)
    counts.update(
        interacted_items=len(universe),
        held_out=len(held),
        train=len(train),
        valid=len(valid),
        test_warm=len(test_warm),
        test_cold=len(test_cold),
        cases_skipped_small_pool=skipped,
        duplicate_titles=duplicate_titles(raw.titles),
    )
    meta = domain_meta(raw, role, opts, max_valid, counts, notes)
    return PreparedDomain(
        name, role, raw.titles, held, train, valid, test_warm if role == "target" else [], test_cold if role == "target" else [], meta
    )


# ----------------------------------------------------------------------------- saving


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def example_row(ex: Example, titles: dict[str, str]) -> dict:
    return {
        "history": [titles[i] for i in ex.history],
        "history_ids": list(ex.history),
        "target": titles[ex.target],
        "target_id": ex.target,
    }


def case_row(case: Case, titles: dict[str, str]) -> dict:
    return {
        "history": [titles[i] for i in case.history],
        "history_ids": list(case.history),
        "candidates": [titles[i] for i in case.candidates],
        "candidate_ids": list(case.candidates),
        "label": case.label,
    }


def save_domain(p: PreparedDomain, out_dir: Path) -> Path:
    """Write <out_dir>/<domain>/{train,valid,test_warm,test_cold}.jsonl, items.tsv, meta.json.
    Files of an earlier run that this role does not produce are removed."""
    d = Path(out_dir) / p.name
    d.mkdir(parents=True, exist_ok=True)
    for fname in OUTPUT_FILES:
        (d / fname).unlink(missing_ok=True)
    _write_jsonl(d / "train.jsonl", (example_row(ex, p.titles) for ex in p.train))
    files = ["train.jsonl"]
    if p.valid:
        _write_jsonl(d / "valid.jsonl", (case_row(c, p.titles) for c in p.valid))
        files.append("valid.jsonl")
    if p.role == "target":
        _write_jsonl(d / "test_warm.jsonl", (case_row(c, p.titles) for c in p.test_warm))
        _write_jsonl(d / "test_cold.jsonl", (case_row(c, p.titles) for c in p.test_cold))
        files += ["test_warm.jsonl", "test_cold.jsonl"]
    with open(d / "items.tsv", "w", encoding="utf-8") as f:
        f.write("item_id\ttitle\theld_out\n")
        for i, t in p.titles.items():
            f.write(f"{i}\t{t}\t{int(i in p.held_out)}\n")
    files.append("items.tsv")
    meta = {**p.meta, "files": files + ["meta.json"]}
    (d / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return d


# ----------------------------------------------------------------------------- loading saved


def read_prepared_items(domain_dir: Path) -> tuple[dict[str, str], frozenset[str]]:
    """Saved items.tsv -> ({id: title}, held-out ids)."""
    titles: dict[str, str] = {}
    held: set[str] = set()
    path = Path(domain_dir) / "items.tsv"
    with open(path, encoding="utf-8") as f:
        f.readline()
        for lineno, line in enumerate(f, start=2):
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 3:
                raise DataError(f"{path}:{lineno}: expected 3 columns")
            titles[parts[0]] = parts[1]
            if parts[2] == "1":
                held.add(parts[0])
    return titles, frozenset(held)


def read_jsonl(path: Path) -> list[dict]:
    return [obj for _, obj in _jsonl(Path(path))]


# ----------------------------------------------------------------------------- driver


def list_domains(data_dir: Path) -> list[str]:
    return sorted(p.name for p in Path(data_dir).iterdir() if p.is_dir() and (p / "items.tsv").is_file())


def prepare_all(
    data_dir: Path,
    out_dir: Path,
    domains: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    opts: Options = Options(),
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Prepare every domain (default: every folder of data_dir with an items.tsv). Targets
    default to DEFAULT_TARGETS that exist; targets are prepared even if not in domains."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data folder not found")
    opts.validate()
    available = list_domains(data_dir)
    if targets is None:
        targets = [t for t in DEFAULT_TARGETS if t in available]
    for name in [*(domains or []), *targets]:
        if not (data_dir / name).is_dir():
            raise DataError(f"{data_dir / name}: domain folder not found (available: {', '.join(available) or 'none'})")
    names = list(domains) if domains else available
    names += [t for t in targets if t not in names]
    metas = []
    for name in names:
        role = "target" if name in targets else "general"
        p = prepare_domain(read_domain(data_dir / name), role, opts)
        save_domain(p, out_dir)
        c = p.meta["counts"]
        extra = f" test_warm={c['test_warm']} test_cold={c['test_cold']} held_out={c['held_out']}" if role == "target" else ""
        unk = p.meta["source_stats"].get("unknown_ids_skipped", 0)
        log(
            f"{name:24s} {role:7s} items={len(p.titles)} train={c['train']} valid={c['valid']}{extra}"
            + (f" unknown_ids_skipped={unk}" if unk else "")
        )
        metas.append(p.meta)
    return metas
