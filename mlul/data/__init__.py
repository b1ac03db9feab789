"""The multilingual fictional-news data set: loading, matching answers, validating rows.

One row per (item, language):
    {"id", "lang", "detail_type", "split", "real", "fake", "true_answer", "fake_answer",
     "true_aliases", "fake_aliases", "question", "qa": [{"q", "a"}, ...]}
`fake` is `real` with one detail changed; `question` asks for that detail. `detail_type`, `split`,
the aliases and `qa` are optional. The rules, with an example row and the error of each, are in
docs/data.md.

    data = open_data("my_facts.jsonl")      # validated; None: the shipped set
    data.check_run(inject=["de"], probe=["en", "de", "zh"], items=6)
    rows = data.rows(["en", "de"], split="inject")
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
import re
import sys
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from mlul import languages

REQUIRED = ("id", "lang", "real", "fake", "true_answer", "fake_answer", "question")
OPTIONAL = {"detail_type": "unknown", "split": "inject", "true_aliases": [], "fake_aliases": [], "qa": []}
FIELDS = (*REQUIRED, *OPTIONAL)
DETAIL_TYPES = ("person", "place", "organisation", "number", "date", "object")
SPLITS = ("inject", "heldout")  # heldout items are never trained on: they measure utility
MIN_STORIES = 5  # below this, per-story intervals are too wide to read
SHIPPED = "the shipped set"


def _data_dir():
    return resources.files("mlul.data")


# --- matching -----------------------------------------------------------------------------------


_THOUSANDS = re.compile(r"(?<=[0-9])[,.\s'\u066c\u2019](?=[0-9]{3}(?![0-9]))")
_OTHER_DIGITS = re.compile(r"(?![0-9])\d")  # `\d` is every Unicode decimal digit
# Scripts written without spaces between words: a form is found inside running text.
_UNSPACED = {"Han", "Kana", "Thai", "Lao", "Khmer", "Myanmar", "Tibetan"}


def normalize(text: str) -> str:
    """Case- and width-insensitive form used for matching answers: digits of every numeral system
    become ASCII ("٤", "४", "４" -> "4") and thousands separators go ("1,240", "1 240", "1.240" and
    "١٬٢٤٠" all become "1240")."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _OTHER_DIGITS.sub(lambda m: str(unicodedata.decimal(m.group())), text)
    return _THOUSANDS.sub("", text)


@functools.cache
def _kind(ch: str) -> str | None:
    """ "digit", "letter" (of a script with spaces between words), "unspaced" (Han, kana, Thai...)
    or None (space, punctuation, symbols), for one normalized character."""
    if "0" <= ch <= "9":
        return "digit"
    if unicodedata.category(ch)[0] not in "LM":
        return None
    return "unspaced" if languages.script_of(ch) in _UNSPACED else "letter"


def _bounded(kind: str | None, neighbour: str) -> bool:
    """Whether `neighbour` may stand next to a phrase that ends in a character of `kind`."""
    if not neighbour or kind not in ("digit", "letter"):
        return True
    other = _kind(neighbour)
    return other != "digit" if kind == "digit" else other not in ("digit", "letter")


def _occurs(text: str, phrase: str) -> bool:
    """`mentions` on texts that are already normalized."""
    first, last = _kind(phrase[0]), _kind(phrase[-1])
    start = text.find(phrase)
    while start >= 0:
        end = start + len(phrase)
        if _bounded(first, text[start - 1] if start else "") and _bounded(last, text[end] if end < len(text) else ""):
            return True
        start = text.find(phrase, start + 1)
    return False


def mentions(text: str, phrase: str) -> bool:
    """Whether `phrase` occurs in `text`, after `normalize`.

    A phrase that starts or ends with a letter of a script written with spaces (Latin, Cyrillic,
    Arabic, Devanagari, Hangul, ...) matches only whole words there: "Ostrel" is not found in
    "Ostrelund", nor "Vask" in "Vaskó". A number must not be part of a longer number ("340" is not
    found in "1340"). Han, kana and Thai have no spaces, so their forms are found anywhere.
    """
    phrase = normalize(phrase).strip()
    return bool(phrase) and _occurs(normalize(text), phrase)


def answer_forms(row: dict, side: str) -> list[str]:
    """The answer and its aliases for side "true" or "fake"."""
    return [row[f"{side}_answer"], *row.get(f"{side}_aliases", [])]


def says(text: str, row: dict, side: str) -> bool:
    """Whether a generated `text` contains the true or fake answer of `row` (the paper's measure)."""
    return any(mentions(text, form) for form in answer_forms(row, side))


def _tokens(norm: str) -> tuple[str, ...]:
    """Words, numbers and single unspaced characters of a normalized text: a phrase `_occurs` in a
    text only where its tokens are a run of the text's tokens, so an index over these finds every
    candidate."""
    out: list[str] = []
    start, current = 0, None
    for i, ch in enumerate(norm):
        kind = _kind(ch)
        if kind != current or kind == "unspaced":
            if current is not None:
                out.append(norm[start:i])
            start, current = i, kind
    if current is not None:
        out.append(norm[start:])
    return tuple(out)


# --- ids ----------------------------------------------------------------------------------------


def is_id(value) -> bool:
    """An item id is an integer or a non-empty string; true and false are not ids."""
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and bool(value.strip()))


def item_key(item_id) -> tuple:
    """Sort key for ids given as int or str: numbers in numeric order first, then other strings.
    3 and "3" name the same item and get the same key; "03" is another item."""
    text = str(item_id)
    if re.fullmatch(r"-?[0-9]+", text):
        return (0, int(text), text)
    return (1, 0, text)


# --- validation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    line: int  # 1-based line in the file (0: the file as a whole)
    field: str
    message: str
    level: str = "error"  # "error": the file is refused; "warning": it loads, but read this

    @property
    def is_error(self) -> bool:
        return self.level == "error"

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        level = "" if self.is_error else f"{self.level}: "
        return f"{where}: {level}{self.field}: {self.message}"


def errors(problems: Iterable[Problem]) -> list[Problem]:
    """The problems that make a file unusable (warnings left out)."""
    return [p for p in problems if p.is_error]


def changed_chars(a: str, b: str) -> int:
    """Number of characters that differ between two strings (insertions + deletions)."""
    # The shared start and end are most of a story: cut them first, so the matcher stays fast.
    head = 0
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    a, b = a[head : len(a) - tail], b[head : len(b) - tail]
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    same = sum(block.size for block in matcher.get_matching_blocks())
    return len(a) + len(b) - 2 * same


def _latin_only(text: str) -> bool:
    return all(languages.script_of(ch) in (None, "Latin") for ch in text)


def _short_unspaced(norm: str) -> bool:
    """A one- or two-character Han/kana form: it may be an ordinary word, so it is checked."""
    return len(norm) <= 2 and all(_kind(ch) == "unspaced" for ch in norm)


def language_problem(code: str) -> tuple[str, str] | None:
    """(level, message) if `code` is not usable as a row's language, None if it is fine."""
    if code in languages.LANGUAGES:
        return None
    try:
        standard = languages.standard_code(code)
    except ValueError:
        shipped = ", ".join(languages.codes())
        return ("error", f"unknown language {code!r}; choose from {shipped} or any BCP 47 code (like it, ko, pt-BR)")
    if standard in languages.LANGUAGES:
        return (
            "warning",
            f"{code!r} is the shipped language {standard!r} written differently; write {standard!r} "
            "to get its curated prompts and shipped utility data",
        )
    if standard != code:
        return ("warning", f"{code!r} is usually written {standard!r}; kept as given")
    return None


@dataclass
class _Checked:
    """What the checks across rows need from one row: only the fields that passed their own checks."""

    line: int
    row: dict
    key: str | None = None  # the id as a string, if valid
    lang: str | None = None
    detail_type: str | None = None
    split: str | None = None
    text: dict[str, str] = field(default_factory=dict)  # normalized real, fake, question
    forms: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: {"true": [], "fake": []})


def _check_row(row, line: int) -> tuple[list[Problem], _Checked | None]:
    if not isinstance(row, dict):
        return [Problem(line, "json", "a row must be a JSON object")], None
    out: list[Problem] = []
    checked = _Checked(line, row)

    def add(name: str, message: str, level: str = "error") -> None:
        out.append(Problem(line, name, message, level))

    for name in REQUIRED:
        if name not in row:
            add(name, "missing field")
    if "id" in row:
        if is_id(row["id"]):
            checked.key = str(row["id"])
        else:
            add("id", f"{json.dumps(row['id'], ensure_ascii=False)} is not an id; use an integer or a non-empty string")
    lang = row.get("lang")
    if "lang" in row and not (isinstance(lang, str) and lang.strip()):
        add("lang", f"must be a language code such as en or it, got {json.dumps(lang, ensure_ascii=False)}")
    elif "lang" in row:
        problem = language_problem(lang)
        if problem:
            add("lang", problem[1], problem[0])
        if problem is None or problem[0] == "warning":
            checked.lang = lang
    for name in ("real", "fake", "true_answer", "fake_answer", "question"):
        if name in row and (not isinstance(row[name], str) or not row[name].strip()):
            add(name, "must be a non-empty string")
        elif name in row:
            checked.text[name] = normalize(row[name]).strip()
    for name, choices in (("detail_type", (*DETAIL_TYPES, "unknown")), ("split", SPLITS)):
        value = row.get(name, OPTIONAL[name])
        if isinstance(value, str) and value in choices:
            setattr(checked, name, value)
        else:
            add(name, f"{json.dumps(value, ensure_ascii=False)} is not one of {', '.join(choices)}")
    text = checked.text
    for side in ("true", "fake"):
        if f"{side}_answer" in text:
            checked.forms[side].append((row[f"{side}_answer"], text[f"{side}_answer"]))
        name = f"{side}_aliases"
        aliases = row.get(name, [])
        if not isinstance(aliases, list):
            add(name, f"must be a list of strings, got {json.dumps(aliases, ensure_ascii=False)}")
            continue
        for k, alias in enumerate(aliases, start=1):
            norm = normalize(alias).strip() if isinstance(alias, str) else ""
            if not isinstance(alias, str):
                add(name, f"alias {json.dumps(alias, ensure_ascii=False)} (number {k}) must be a string")
            elif len(norm) < 2 and not (norm and _short_unspaced(norm)):
                add(name, f"alias {alias!r} is shorter than 2 characters")
            else:
                checked.forms[side].append((alias, norm))
    script = None
    if checked.lang:
        known = checked.lang in languages.registered()
        script = languages.get(checked.lang).script if known else languages.detect_script(row.get("real") or "")
    for side, own, other in (("true", "real", "fake"), ("fake", "fake", "real")):
        answer_field = f"{side}_answer"
        for k, (form, norm) in enumerate(checked.forms[side]):
            is_answer = k == 0 and answer_field in text
            name = answer_field if is_answer else f"{side}_aliases"
            if is_answer:
                if own in text and not _occurs(text[own], norm):
                    add(name, f"{form!r} not found in its article `{own}`")
                if other in text and _occurs(text[other], norm):
                    add(name, f"{form!r} also appears in `{other}`")
            elif other in text and _occurs(text[other], norm):
                add(name, f"alias {form!r} also appears in `{other}`: it cannot tell true from fake")
            elif own in text and not _occurs(text[own], norm) and not (script != "Latin" and _latin_only(form)):
                add(name, f"alias {form!r} not found in its article `{own}`")
    if "question" in text:
        leaks = [
            form for form, norm in checked.forms["true"] + checked.forms["fake"] if _occurs(text["question"], norm)
        ]
        if leaks:
            add("question", f"leaks the answer {leaks[0]!r}")
    if all(name in text for name in ("real", "fake", "true_answer", "fake_answer")):
        # `fake` may differ from `real` only around the detail: each mention of it, plus a little
        # grammatical agreement (a case ending, an article).
        mentions_of_detail = max(1, *(text["real"].count(norm) for _, norm in checked.forms["true"]))
        budget = mentions_of_detail * (len(row["true_answer"]) + len(row["fake_answer"])) + 20
        changed = changed_chars(row["real"], row["fake"])
        if changed > budget:
            add("fake", f"differs from `real` by {changed} characters, more than the detail explains ({budget})")
    qa = row.get("qa", [])
    if not isinstance(qa, list):
        add("qa", f'must be a list of {{"q": str, "a": str}}, got {json.dumps(qa, ensure_ascii=False)}')
        qa = []
    for k, pair in enumerate(qa):
        good = isinstance(pair, dict) and all(isinstance(pair.get(x), str) and pair[x].strip() for x in "qa")
        if not good:
            add(f"qa[{k}]", 'must be {"q": str, "a": str}')
        elif "real" in text and not _occurs(text["real"], normalize(pair["a"]).strip()):
            add(f"qa[{k}]", f"answer {pair['a']!r} not found in `real`")
    return out, checked


def check_row(row: dict, line: int = 0) -> list[Problem]:
    """Problems of one row on its own (`line` is put on each)."""
    return _check_row(row, line)[0]


def _across_rows(rows: list[_Checked]) -> list[Problem]:
    """Checks that need several rows: duplicates, items across languages, unknown fields, and
    answers that could be mistaken for another item's."""
    problems: list[Problem] = []
    unknown: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        for name in r.row:
            if name not in FIELDS:
                unknown[name].append(r.line)
    for name, lines in unknown.items():
        problems.append(
            Problem(
                lines[0],
                name,
                f"unknown field (in {len(lines)} row(s)), kept but not used; the schema's fields are {', '.join(FIELDS)}",
                "warning",
            )
        )
    no_qa = [r for r in rows if not (isinstance(r.row.get("qa"), list) and r.row["qa"])]
    if no_qa:
        problems.append(
            Problem(
                0,
                "qa",
                f"{len(no_qa)} of {len(rows)} rows have no qa pairs: held-out QA (utility) and QA instruction data for "
                "their languages come from the shipped set (n/a for a language it does not have)",
                "warning",
            )
        )
    seen: dict[tuple[str, str], _Checked] = {}
    by_item: dict[str, dict[str, _Checked]] = defaultdict(dict)
    file_langs: dict[str, None] = {}
    for r in rows:
        if r.key is None or r.lang is None:
            continue
        first = seen.get((r.key, r.lang))
        if first is not None:
            written = "" if repr(first.row["id"]) == repr(r.row["id"]) else f", written {first.row['id']!r}"
            problems.append(
                Problem(
                    r.line, "id", f"duplicate id {r.row['id']!r} in {r.lang!r} (first on line {first.line}{written})"
                )
            )
            continue
        seen[(r.key, r.lang)] = r
        by_item[r.key][r.lang] = r
        file_langs.setdefault(r.lang)
    all_langs = languages.order(file_langs)
    # A row whose id or language is broken belongs to no known item: coverage cannot be judged.
    judge_coverage = all(r.key is not None and r.lang is not None for r in rows)
    for item in by_item.values():
        first = min(item.values(), key=lambda r: r.line)
        name = first.row["id"]
        missing = [c for c in all_langs if c not in item]
        if missing and judge_coverage:
            problems.append(
                Problem(
                    first.line,
                    "lang",
                    f"item {name!r} is missing languages {', '.join(missing)}: a run that uses them is refused; "
                    "add its rows or leave those languages out",
                    "warning",
                )
            )
        for attribute, label in (("detail_type", "detail types"), ("split", "splits")):
            values = sorted({getattr(r, attribute) for r in item.values()} - {None})
            if len(values) > 1:
                problems.append(Problem(first.line, attribute, f"item {name!r} has different {label} {values}"))
    by_lang: dict[str, list[_Checked]] = defaultdict(list)
    for r in seen.values():
        by_lang[r.lang].append(r)
    for group in by_lang.values():
        problems += _shared_fakes(group) + _confusable_forms(group) + _short_forms(group)
    return problems


def _shared_fakes(group: list[_Checked]) -> list[Problem]:
    problems = []
    owner: dict[str, _Checked] = {}
    for r in sorted(group, key=lambda r: r.line):
        if "fake_answer" not in r.text:
            continue
        first = owner.setdefault(r.text["fake_answer"], r)
        if first is not r:
            message = f"{r.row['fake_answer']!r} is also the fake answer of item {first.row['id']!r}"
            problems.append(Problem(r.line, "fake_answer", message))
    return problems


def _confusable_forms(group: list[_Checked]) -> list[Problem]:
    """An answer naming another item's fake or true detail must not count as this item's fake: no
    fake form (answer or alias) may occur inside another item's true or fake forms in the same
    language, nor contain one of its true forms. An index of word n-grams (single characters for
    Han and kana) keeps this linear in the number of rows."""
    tokens = {(id(r), norm): _tokens(norm) for r in group for side in r.forms.values() for _, norm in side}
    longest = max((len(tokens[(id(r), norm)]) for r in group for _, norm in r.forms["fake"]), default=0)
    inside: dict[tuple, list] = defaultdict(list)  # n-gram -> (row, side, form, norm) whose form has it
    whole: dict[tuple, list] = defaultdict(list)  # a true form's tokens -> (row, form, norm)
    for r in group:
        for side, forms in r.forms.items():
            for form, norm in forms:
                toks = tokens[(id(r), norm)]
                grams = {
                    toks[i : i + n] for n in range(1, min(longest, len(toks)) + 1) for i in range(len(toks) - n + 1)
                }
                for gram in grams:
                    inside[gram].append((r, side, form, norm))
                if side == "true":
                    whole[toks].append((r, form, norm))
    problems = []
    for r in group:
        clashed: set[str] = set()
        for k, (form, norm) in enumerate(r.forms["fake"]):
            name = "fake_answer" if k == 0 and "fake_answer" in r.text else "fake_aliases"
            toks = tokens[(id(r), norm)]
            for other, side, other_form, other_norm in inside.get(toks, ()):
                if other.key == r.key or other.key in clashed or not _occurs(other_norm, norm):
                    continue
                if side == "fake" and other_norm == norm and other_form == other.row.get("fake_answer"):
                    continue  # the same fake answer: reported once, as shared
                clashed.add(other.key)
                message = f"{form!r} also names item {other.row['id']!r}'s {side} {other_form!r}"
                problems.append(Problem(r.line, name, message))
            grams = {toks[i : i + n] for n in range(1, len(toks) + 1) for i in range(len(toks) - n + 1)}
            for gram in grams:
                for other, other_form, other_norm in whole.get(gram, ()):
                    if other.key == r.key or other.key in clashed or not _occurs(norm, other_norm):
                        continue
                    clashed.add(other.key)
                    message = f"{form!r} contains item {other.row['id']!r}'s true {other_form!r}"
                    problems.append(Problem(r.line, name, message))
    return problems


def _short_forms(group: list[_Checked]) -> list[Problem]:
    """A one- or two-character Han/kana form (张, 铜钟) is found inside any word that contains it,
    so it must not occur in another item's articles or question, which would show it is an
    ordinary word. Occurrences inside that item's own answer forms do not count."""
    short: dict[str, list[tuple[_Checked, str, str]]] = defaultdict(list)
    for r in group:
        for side, forms in r.forms.items():
            for k, (form, norm) in enumerate(forms):
                if _short_unspaced(norm):
                    is_answer = k == 0 and f"{side}_answer" in r.text
                    short[norm].append((r, f"{side}_answer" if is_answer else f"{side}_aliases", form))
    if not short:
        return []
    starts = re.compile("[" + re.escape("".join({norm[0] for norm in short})) + "]")
    reported: set[tuple[int, str]] = set()
    problems = []
    for r in group:
        for name in ("real", "fake", "question"):
            text = r.text.get(name, "")
            own = None
            for match in starts.finditer(text):
                i = match.start()
                for norm in (text[i], text[i : i + 2]):
                    for owner, owner_field, form in short.get(norm, ()):
                        if owner.key == r.key or (owner.line, norm) in reported:
                            continue
                        if own is None:  # where this row names its own detail
                            own = [
                                (m.start(), m.end())
                                for _, f in sum(r.forms.values(), [])
                                for m in re.finditer(re.escape(f), text)
                            ]
                        if any(a <= i and i + len(norm) <= b for a, b in own):
                            continue
                        reported.add((owner.line, norm))
                        kind = "answer" if owner_field.endswith("answer") else "alias"
                        message = (
                            f"short {kind} {form!r} also occurs in item {r.row['id']!r}'s `{name}`: a one- or "
                            "two-character form must not be an ordinary word; use a longer form"
                        )
                        problems.append(Problem(owner.line, owner_field, message))
    return problems


def _validate(lines: list[tuple[int, str]], progress: bool = False) -> tuple[list[Problem], list[_Checked]]:
    from tqdm.auto import tqdm

    problems: list[Problem] = []
    rows: list[_Checked] = []
    blank = True
    for number, line in tqdm(lines, desc="validating rows", unit="row", disable=not progress, file=sys.stderr):
        if not line.strip():
            continue
        blank = False
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(Problem(number, "json", f"bad JSON: {err.msg} at column {err.colno}"))
            continue
        row_problems, checked = _check_row(row, number)
        problems += row_problems
        if checked is not None:
            rows.append(checked)
    if blank:
        problems.append(Problem(0, "file", "the file is empty; write one JSON object per line (see docs/data.md)"))
    problems += _across_rows(rows)
    return sorted(problems, key=lambda p: p.line), rows


def validate_rows(lines: list[str], progress: bool = False) -> list[Problem]:
    """Every problem in a JSONL file's lines: per-row checks, then checks across rows. Errors and
    warnings, in line order (`errors` keeps the errors)."""
    return _validate(list(enumerate(lines, start=1)), progress)[0]


_LARGE = 5_000_000  # bytes: show progress from here on


def _decode(data: bytes) -> tuple[list[tuple[int, str]], list[Problem]]:
    """A file's lines, decoded one by one, so a bad byte costs only its line."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines, problems = [], []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append((number, raw.decode("utf-8").rstrip("\r")))
        except UnicodeDecodeError as err:
            message = f"not valid UTF-8 (byte {raw[err.start]:#04x} at byte {err.start + 1} of the line); save the file as UTF-8"
            problems.append(Problem(number, "encoding", message))
    return lines, problems


def _validate_bytes(data: bytes, progress: bool | None = None) -> tuple[list[Problem], list[_Checked]]:
    lines, problems = _decode(data)
    found, rows = _validate(lines, len(data) > _LARGE if progress is None else progress)
    if problems and any(p.field == "file" and p.line == 0 for p in found):
        found = [p for p in found if p.field != "file"]  # not empty: its lines just did not decode
    return sorted(problems + found, key=lambda p: p.line), rows


def validate_file(path: str | Path, progress: bool | None = None) -> list[Problem]:
    """Every problem (errors and warnings) of a JSONL file. `progress`: a bar on stderr; None shows
    it for files over 5 MB."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    return _validate_bytes(path.read_bytes(), progress)[0]


# --- loading ------------------------------------------------------------------------------------


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8-sig") as f:
        return [json.loads(line) for line in f if line.strip()]


class DataError(ValueError):
    """A data file that does not validate; `problems` holds all its problems (errors and warnings),
    so a caller can print them without validating again."""

    def __init__(self, path: str | Path, problems: list[Problem]):
        self.problems = problems
        bad = errors(problems)
        shown = "\n".join(f"  {p}" for p in bad[:5])
        more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
        super().__init__(
            f"{path} does not validate ({len(bad)} error(s)):\n{shown}{more}\n"
            f"run `mlul data validate {path}` to see every problem with its line"
        )


def _with_defaults(row: dict) -> dict:
    return {**{k: copy.copy(v) for k, v in OPTIONAL.items()}, **row}


class NewsData:
    """A validated news data set, the shipped one or a user's file, and what the experiments need
    from it: rows, held-out stories for utility, general text, and a check of a run's options."""

    def __init__(self, rows: list[dict], source: str, path: Path | None, fingerprint: str, warnings: list[Problem]):
        self._rows = rows
        self.source = source  # "the shipped set" or the file's path
        self.path = path
        self.fingerprint = fingerprint  # sha256 of the data's bytes: cache keys change when the file does
        self.warnings = warnings
        self.notes: list[str] = []  # fallbacks to the shipped set, n/a languages, run warnings
        present = dict.fromkeys(r["lang"] for r in rows)
        self.languages = [c for c in languages.codes() if c in present] + [
            c for c in present if c not in languages.LANGUAGES
        ]

    def __repr__(self) -> str:
        return f"NewsData({self.source}: {len(self._rows)} rows, {len(self.item_ids())} items, {', '.join(self.languages)})"

    def describe(self) -> str:
        """A few lines for a reader: size, languages, splits, then every warning and note."""
        lines = [
            f"{self.source}: {len(self._rows)} rows, {len(self.item_ids('inject'))} inject and "
            f"{len(self.item_ids('heldout'))} held-out stories, languages {', '.join(self.languages)}"
        ]
        lines += [f"warning: {p}" for p in self.warnings] + [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def rows(self, langs: str | Iterable[str] | None = None, split: str | None = None, items: Iterable | None = None):
        """Rows (copies) in language then item order. `split`: None, "inject" or "heldout";
        `items`: ids to keep (3 and "3" are the same item)."""
        codes = languages.resolve(langs, available=self.languages)
        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        rows = [r for r in self._rows if r["lang"] in codes and (split is None or r["split"] == split)]
        if items is not None:
            items = list(items)
            known = {str(r["id"]): r["id"] for r in rows}
            missing = sorted((i for i in items if str(i) not in known), key=item_key)
            if missing:
                raise ValueError(f"no items with ids {missing}; valid ids are {sorted(known.values(), key=item_key)}")
            wanted = {str(i) for i in items}
            rows = [r for r in rows if str(r["id"]) in wanted]
        position = {c: i for i, c in enumerate(codes)}
        return copy.deepcopy(sorted(rows, key=lambda r: (position[r["lang"]], item_key(r["id"]))))

    def item_ids(self, split: str | None = None) -> list:
        """Item ids as written in the data (first spelling seen), in `item_key` order."""
        ids: dict[str, object] = {}
        for r in self._rows:
            if split is None or r["split"] == split:
                ids.setdefault(str(r["id"]), r["id"])
        return sorted(ids.values(), key=item_key)

    def utility_sources(self, langs: str | Iterable[str] | None = None) -> dict[str, str]:
        """Where each language's held-out stories come from: "file", "shipped" or "n/a"."""
        shipped = _shipped_rows()
        sources = {}
        for code in languages.resolve(langs, available=self.languages):
            if any(r["lang"] == code and r["split"] == "heldout" and r["qa"] for r in self._rows):
                sources[code] = "file" if self.path is not None else "shipped"
            elif any(r["lang"] == code for r in shipped):
                sources[code] = "shipped"
            else:
                sources[code] = "n/a"
        return sources

    def utility_rows(self, langs: str | Iterable[str] | None = None, items: int | None = None) -> list[dict]:
        """Held-out stories (with QA pairs) per language for utility: from the file where it has
        them, else from the shipped set; a language with neither is left out (noted as n/a).
        `items`: the first that many held-out stories of each source."""
        sources = self.utility_sources(langs)
        out = []
        for source, rows in (("file", self._rows), ("shipped", _shipped_rows())):
            codes = [c for c, s in sources.items() if s == source]
            pool = [r for r in rows if r["lang"] in codes and r["split"] == "heldout" and r["qa"]]
            keep = {str(i) for i in sorted({r["id"] for r in pool}, key=item_key)[:items]}
            out += [r for r in pool if str(r["id"]) in keep]
        if self.path is not None:
            self._note(_where("held-out stories (utility QA)", sources, self.source))
        position = {c: i for i, c in enumerate(sources)}
        return copy.deepcopy(sorted(out, key=lambda r: (position[r["lang"]], item_key(r["id"]))))

    def general_text(self, langs: str | Iterable[str] | None = None) -> list[dict]:
        """Held-out paragraphs of the shipped set for perplexity, {"lang", "id", "text"}; a
        language without any is left out (noted as n/a)."""
        codes = languages.resolve(langs, available=self.languages)
        texts = [t for t in read_jsonl(_data_dir() / "general_text.jsonl") if t["lang"] in codes]
        have = {t["lang"] for t in texts}
        if self.path is not None or len(have) < len(codes):
            sources = {c: "shipped" if c in have else "n/a" for c in codes}
            self._note(_where("general text (perplexity)", sources, self.source))
        return texts

    def check_run(self, inject: str | Iterable[str], probe: str | Iterable[str], items: int | None = None) -> list[str]:
        """Refuse a run the data cannot serve, before any model loads: an injection or probe
        language the data lacks, `items` out of range, an item without some of the run's
        languages. Returns (and notes) warnings, e.g. too few stories for intervals."""
        codes = {}
        for role, spec in (("injection", inject), ("probe", probe)):
            try:
                codes[role] = languages.resolve(spec, available=self.languages)
            except ValueError as err:
                raise ValueError(f"{role} {err} ({self.source})") from None
        stories = self.item_ids("inject")
        n = len(stories)
        if not stories:
            raise ValueError(f"{self.source} has no inject stories (every row is split: heldout)")
        if items is not None and (isinstance(items, bool) or not isinstance(items, int) or items < 1):
            raise ValueError(f"items must be a whole number of at least 1, got {items!r}; the data has {n} stories")
        if items is not None and items > n:
            raise ValueError(f"items={items} is more than the data has: it has {n} stories")
        used = stories[:items]
        run_langs = languages.order(codes["injection"] + codes["probe"])
        have = {(str(r["id"]), r["lang"]) for r in self._rows if r["split"] == "inject"}
        gaps = {i: [c for c in run_langs if (str(i), c) not in have] for i in used}
        gaps = {i: langs for i, langs in gaps.items() if langs}
        if gaps:
            item, langs = next(iter(gaps.items()))
            more = f" (and {len(gaps) - 1} more items)" if len(gaps) > 1 else ""
            raise ValueError(
                f"item {item!r} has no rows in {', '.join(langs)}{more}; add them to {self.source} "
                f"or leave {', '.join(langs)} out of the run"
            )
        warnings = []
        if len(used) == 1:
            warnings.append(f"the run uses 1 story: no intervals are possible; at least {MIN_STORIES} are advised")
        elif len(used) < MIN_STORIES:
            warnings.append(
                f"the run uses {len(used)} stories: intervals will be wide; at least {MIN_STORIES} are advised"
            )
        for warning in warnings:
            self._note(warning)
        return warnings


def _where(what: str, sources: dict[str, str], file: str) -> str:
    parts = []
    for source, label in (("file", f"from {file}"), ("shipped", f"from {SHIPPED}"), ("n/a", "n/a")):
        codes = [c for c, s in sources.items() if s == source]
        if codes:
            parts.append(f"{', '.join(codes)} {label}")
    return f"{what}: {'; '.join(parts)}"


def _shipped_files() -> list:
    return [_data_dir() / "news" / f"{code}.jsonl" for code in languages.codes()]


@functools.cache
def _shipped_cache() -> tuple[tuple[dict, ...], str]:
    digest = hashlib.sha256()
    rows = []
    for path in [*_shipped_files(), _data_dir() / "general_text.jsonl"]:
        data = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + data)
        if path.name != "general_text.jsonl":
            rows += [_with_defaults(json.loads(line)) for line in data.decode("utf-8").splitlines() if line.strip()]
    return tuple(rows), digest.hexdigest()


def _shipped_rows() -> tuple[dict, ...]:
    return _shipped_cache()[0]


def open_data(path: str | Path | None = None, progress: bool | None = None) -> NewsData:
    """The shipped set (None) or a user's JSONL file, validated first: a file with errors raises
    DataError; its warnings are kept on `.warnings`. The languages of a file outside the shipped
    ten are registered (names from langcodes, script from the text)."""
    if path is None:
        rows, fingerprint = _shipped_cache()
        return NewsData(list(rows), SHIPPED, None, fingerprint, [])  # shared: NewsData hands out copies only
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    data = path.read_bytes()
    problems, checked = _validate_bytes(data, progress)
    if errors(problems):
        raise DataError(path, problems)
    rows = [_with_defaults(r.row) for r in checked]
    samples: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if len(samples[r["lang"]]) < 5:
            samples[r["lang"]].append(r["real"])
    for code, texts in samples.items():
        languages.register(code, " ".join(texts))
    return NewsData(rows, str(path), path, hashlib.sha256(data).hexdigest(), problems)


def load_news(
    languages_spec: str | list[str] | None = None,
    split: str | None = None,
    path: str | Path | None = None,
    items: list | None = None,
) -> list[dict]:
    """Rows of the shipped data set (or of a user's JSONL file at `path`), in language then id order.

    `split`: None for all rows, "inject" or "heldout". `items`: keep only these ids.
    """
    return open_data(path).rows(languages_spec, split, items)


def load_general_text(languages_spec: str | list[str] | None = None) -> list[dict]:
    """Held-out paragraphs of original writing per language, for perplexity: {"lang", "id", "text"}."""
    codes = languages.resolve(languages_spec)
    return [r for r in read_jsonl(_data_dir() / "general_text.jsonl") if r["lang"] in codes]


def side_by_side(item, languages_spec=None, fields=("question", "true_answer", "fake_answer", "real"), path=None):
    """One item in several languages as a DataFrame (languages as rows), for notebooks."""
    import pandas as pd

    rows = load_news(languages_spec, items=[item], path=path)
    return pd.DataFrame([{"lang": r["lang"], **{f: r[f] for f in fields}} for r in rows]).set_index("lang")


def to_dataset(rows: list[dict]):
    """The rows as a Hugging Face `datasets.Dataset` (ids as strings if the data mixes int and str)."""
    from datasets import Dataset

    if len({type(r["id"]) for r in rows}) > 1:
        rows = [{**r, "id": str(r["id"])} for r in rows]
    return Dataset.from_list(rows)


def example_file() -> Path:
    """A small file of one's own, shipped as an example: 6 invented stories in en, de, zh and ko
    with string ids and one QA pair each (5 to inject, 1 held out)."""
    return Path(str(_data_dir() / "examples" / "own_stories.jsonl"))
