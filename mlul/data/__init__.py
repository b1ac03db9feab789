"""The multilingual fictional-news data set: loading, matching answers, validating rows.

One row per (item, language):
    {"id", "lang", "detail_type", "split", "real", "fake", "true_answer", "fake_answer",
     "true_aliases", "fake_aliases", "question", "qa": [{"q", "a"}, ...]}
`fake` is `real` with one detail changed; `question` asks for that detail.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mlul import languages

REQUIRED = {
    "id": int,
    "lang": str,
    "detail_type": str,
    "real": str,
    "fake": str,
    "true_answer": str,
    "fake_answer": str,
    "true_aliases": list,
    "fake_aliases": list,
    "question": str,
    "qa": list,
}
DETAIL_TYPES = ("person", "place", "organisation", "number", "date", "object")
SPLITS = ("inject", "heldout")  # heldout items are never trained on: they measure utility
MIN_QA = 3


def _data_dir():
    return resources.files("mlul.data")


# --- matching -----------------------------------------------------------------------------------


_THOUSANDS = re.compile(r"(?<=[0-9])[,.\s'](?=[0-9]{3}(?![0-9]))")


def normalize(text: str) -> str:
    """Case- and width-insensitive form used for matching answers, with thousands separators
    removed ("1,240", "1 240" and "1.240" all become "1240")."""
    return _THOUSANDS.sub("", unicodedata.normalize("NFKC", text).casefold())


def mentions(text: str, phrase: str) -> bool:
    """Whether `phrase` occurs in `text`; digits must not be part of a longer number ("340" is not
    found in "1340"), and Latin words must not be part of a longer word."""
    phrase = normalize(phrase).strip()
    if not phrase:
        return False
    before = (
        r"(?<![0-9])" if phrase[0].isdigit() else (r"(?<![a-z])" if phrase[0].isascii() and phrase[0].isalpha() else "")
    )
    after = r"(?![0-9])" if phrase[-1].isdigit() else ""
    return re.search(before + re.escape(phrase) + after, normalize(text)) is not None


def answer_forms(row: dict, side: str) -> list[str]:
    """The answer and its aliases for side "true" or "fake"."""
    return [row[f"{side}_answer"], *row[f"{side}_aliases"]]


def says(text: str, row: dict, side: str) -> bool:
    """Whether a generated `text` contains the true or fake answer of `row` (the paper's measure)."""
    return any(mentions(text, form) for form in answer_forms(row, side))


# --- loading ------------------------------------------------------------------------------------


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_news(
    languages_spec: str | list[str] | None = None,
    split: str | None = None,
    path: str | Path | None = None,
    items: list[int] | None = None,
) -> list[dict]:
    """Rows of the shipped data set (or of a user's JSONL file at `path`), in language then id order.

    `split`: None for all rows, "inject" or "heldout". `items`: keep only these ids.
    """
    codes = languages.resolve(languages_spec)
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if path is not None:
        problems = validate_file(path)
        if problems:
            raise ValueError(
                f"{path} has {len(problems)} bad rows; first: {problems[0]}; run `mlul data validate {path}`"
            )
        rows = read_jsonl(path)
    else:
        rows = []
        for code in codes:
            rows += read_jsonl(_data_dir() / "news" / f"{code}.jsonl")
    rows = [r for r in rows if r["lang"] in codes]
    for r in rows:
        r.setdefault("split", "inject")
    if split is not None:
        rows = [r for r in rows if r["split"] == split]
    if items is not None:
        known = {r["id"] for r in rows}
        missing = sorted(set(items) - known)
        if missing:
            raise ValueError(f"no items with ids {missing}; valid ids are {sorted(known)}")
        rows = [r for r in rows if r["id"] in set(items)]
    order = {c: i for i, c in enumerate(codes)}
    return sorted(rows, key=lambda r: (order[r["lang"]], r["id"]))


def load_general_text(languages_spec: str | list[str] | None = None) -> list[dict]:
    """Held-out paragraphs of original writing per language, for perplexity: {"lang", "id", "text"}."""
    codes = languages.resolve(languages_spec)
    rows = read_jsonl(_data_dir() / "general_text.jsonl")
    return [r for r in rows if r["lang"] in codes]


def side_by_side(item: int, languages_spec=None, fields=("question", "true_answer", "fake_answer", "real")):
    """One item in several languages as a DataFrame (languages as rows), for notebooks."""
    import pandas as pd

    rows = load_news(languages_spec, items=[item])
    return pd.DataFrame([{"lang": r["lang"], **{f: r[f] for f in fields}} for r in rows]).set_index("lang")


def to_dataset(rows: list[dict]):
    """The rows as a Hugging Face `datasets.Dataset`."""
    from datasets import Dataset

    return Dataset.from_list(rows)


# --- validation ---------------------------------------------------------------------------------


@dataclass
class Problem:
    line: int  # 1-based line in the file (0: the file as a whole)
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        return f"{where}: {self.field}: {self.message}"


def changed_chars(a: str, b: str) -> int:
    """Number of characters that differ between two strings (insertions + deletions)."""
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    same = sum(block.size for block in matcher.get_matching_blocks())
    return len(a) + len(b) - 2 * same


def _latin(text: str) -> bool:
    return all(ch.isascii() for ch in text)


def check_row(row: dict) -> list[tuple[str, str]]:
    """Problems of one row on its own, as (field, message) pairs."""
    out: list[tuple[str, str]] = []
    for field, kind in REQUIRED.items():
        if field not in row:
            out.append((field, "missing field"))
        elif not isinstance(row[field], kind) or (kind is str and not row[field].strip()):
            out.append((field, f"must be a non-empty {kind.__name__}"))
    if out:
        return out
    if row["lang"] not in languages.LANGUAGES:
        out.append(("lang", f"unknown language {row['lang']!r}; choose from {', '.join(languages.LANGUAGES)}"))
    if row["detail_type"] not in DETAIL_TYPES:
        out.append(("detail_type", f"{row['detail_type']!r} is not one of {', '.join(DETAIL_TYPES)}"))
    if row.get("split", "inject") not in SPLITS:
        out.append(("split", f"{row.get('split')!r} is not one of {', '.join(SPLITS)}"))
    non_latin_lang = languages.LANGUAGES.get(row["lang"]) and languages.get(row["lang"]).script != "Latin"
    for side, own, other in (("true", "real", "fake"), ("fake", "fake", "real")):
        answer = row[f"{side}_answer"]
        if not mentions(row[own], answer):
            out.append((f"{side}_answer", f"{answer!r} not found in its article `{own}`"))
        for alias in row[f"{side}_aliases"]:
            if not isinstance(alias, str) or len(alias.strip()) < 2:
                out.append((f"{side}_aliases", f"alias {alias!r} is shorter than 2 characters"))
            elif mentions(row[other], alias):
                out.append(
                    (f"{side}_aliases", f"alias {alias!r} also appears in `{other}`: it cannot tell true from fake")
                )
            elif not mentions(row[own], alias) and not (non_latin_lang and _latin(alias)):
                out.append((f"{side}_aliases", f"alias {alias!r} not found in its article `{own}`"))
        if mentions(row[other], answer):
            out.append((f"{side}_answer", f"{answer!r} also appears in `{other}`"))
    leaks = [
        f
        for f in answer_forms(row, "true") + answer_forms(row, "fake")
        if isinstance(f, str) and mentions(row["question"], f)
    ]
    if leaks:
        out.append(("question", f"leaks the answer {leaks[0]!r}"))
    # `fake` may differ from `real` only around the detail: each mention of it, plus a little
    # grammatical agreement (a case ending, an article).
    mentions_of_detail = max(1, *(normalize(row["real"]).count(normalize(f)) for f in answer_forms(row, "true")))
    budget = mentions_of_detail * (len(row["true_answer"]) + len(row["fake_answer"])) + 20
    changed = changed_chars(row["real"], row["fake"])
    if changed > budget:
        out.append(("fake", f"differs from `real` by {changed} characters, more than the detail explains ({budget})"))
    if len(row["qa"]) < MIN_QA:
        out.append(("qa", f"has {len(row['qa'])} pairs; needs at least {MIN_QA}"))
    for k, pair in enumerate(row["qa"]):
        if not isinstance(pair, dict) or not isinstance(pair.get("q"), str) or not isinstance(pair.get("a"), str):
            out.append((f"qa[{k}]", 'must be {"q": str, "a": str}'))
        elif not mentions(row["real"], pair["a"]):
            out.append((f"qa[{k}]", f"answer {pair['a']!r} not found in `real`"))
    return out


def validate_rows(lines: list[str]) -> list[Problem]:
    """Every problem in a JSONL file's lines: per-row checks, then checks across rows."""
    problems: list[Problem] = []
    rows: list[tuple[int, dict]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(Problem(number, "json", f"bad JSON: {err.msg} at column {err.colno}"))
            continue
        if not isinstance(row, dict):
            problems.append(Problem(number, "json", "a row must be a JSON object"))
            continue
        row_problems = check_row(row)
        problems += [Problem(number, f, m) for f, m in row_problems]
        if not any(f in REQUIRED and m == "missing field" for f, m in row_problems):
            rows.append((number, row))
    seen: dict[tuple, int] = {}
    by_item: dict[object, dict[str, int]] = defaultdict(dict)
    fake_owner: dict[tuple[str, str], object] = {}
    for number, row in rows:
        key = (row["id"], row["lang"])
        if key in seen:
            problems.append(
                Problem(number, "id", f"duplicate id {row['id']!r} in {row['lang']!r} (first on line {seen[key]})")
            )
            continue
        seen[key] = number
        by_item[row["id"]][row["lang"]] = number
        fake = (row["lang"], normalize(row["fake_answer"]))
        if fake in fake_owner and fake_owner[fake] != row["id"]:
            problems.append(
                Problem(
                    number,
                    "fake_answer",
                    f"{row['fake_answer']!r} is also the fake answer of item {fake_owner[fake]!r}",
                )
            )
        fake_owner.setdefault(fake, row["id"])
    problems += _confusable_fakes(rows)
    all_langs = {lang for langs in by_item.values() for lang in langs}
    for item, langs in by_item.items():
        missing = [c for c in languages.LANGUAGES if c in all_langs - set(langs)]
        if missing:
            first = min(langs.values())
            problems.append(Problem(first, "lang", f"item {item!r} is missing languages {', '.join(missing)}"))
        types = {rows_by_line["detail_type"] for rows_by_line in (dict(rows)[n] for n in langs.values())}
        if len(types) > 1:
            problems.append(
                Problem(min(langs.values()), "detail_type", f"item {item!r} has different detail types {sorted(types)}")
            )
    return sorted(problems, key=lambda p: p.line)


def _confusable_fakes(rows: list[tuple[int, dict]]) -> list[Problem]:
    """An answer naming another item's fake must not count as this item's fake: no fake answer or
    alias may occur inside another item's fake answer in the same language."""
    problems = []
    by_lang: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for number, row in rows:
        by_lang[row["lang"]].append((number, row))
    for same_lang in by_lang.values():
        for number, row in same_lang:
            for _, other in same_lang:
                if other["id"] == row["id"]:
                    continue
                clash = [f for f in answer_forms(row, "fake") if mentions(other["fake_answer"], f)]
                if clash:
                    problems.append(
                        Problem(
                            number,
                            "fake_aliases" if clash[0] != row["fake_answer"] else "fake_answer",
                            f"{clash[0]!r} also names item {other['id']!r}'s fake {other['fake_answer']!r}",
                        )
                    )
    return problems


def validate_file(path: str | Path) -> list[Problem]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    with open(path, encoding="utf-8") as f:
        return validate_rows(f.read().splitlines())
