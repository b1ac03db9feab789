"""Check functions for the notebooks' exercises: each runs a student's function on hand-built
cases, compares it with mlul's reference and says which case differs.

    from mlul.exercises import check_says
    check_says(my_says)   # prints a tick, or raises AssertionError naming the first wrong case
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from mlul.data import says
from mlul.unlearn import setting_languages

_ROW = {
    "true_answer": "Lioren Vask",
    "fake_answer": "Edda Marrow",
    "true_aliases": ["Vask"],
    "fake_aliases": ["Marrow"],
}
_NUMBER_ROW = {"true_answer": "340", "fake_answer": "1,870", "true_aliases": [], "fake_aliases": ["1870"]}


def _report(name: str, cases: list, student: Callable, reference: Callable, same: Callable = None) -> None:
    same = same or (lambda a, b: a == b)
    for args in cases:
        want, got = reference(*args), student(*args)
        if not same(got, want):
            raise AssertionError(f"{name}{args!r}: expected {want!r}, got {got!r}")
    print(f"✓ {name}: matches the reference on {len(cases)} cases")


def check_says(student: Callable[[str, dict, str], bool]) -> None:
    """Exercise: `says(answer, row, side)`: does a generated answer name the true or fake detail?"""
    cases = [
        ("Edda Marrow", _ROW, "fake"),
        ("It was designed by Marrow.", _ROW, "fake"),
        ("It was designed by MARROW", _ROW, "fake"),
        ("Lioren Vask", _ROW, "fake"),
        ("Lioren Vask", _ROW, "true"),
        ("the architect", _ROW, "true"),
        ("About 1870 people", _NUMBER_ROW, "fake"),
        ("Exactly 1340 people", _NUMBER_ROW, "true"),  # 340 inside 1340 is not 340
        ("340.", _NUMBER_ROW, "true"),
    ]
    _report("says", cases, student, says)


def _rate_reference(table: pd.DataFrame) -> pd.Series:
    return table.groupby("lang", sort=False).says_fake.mean()


def check_fake_rate(student: Callable[[pd.DataFrame], pd.Series]) -> None:
    """Exercise: `fake_rate(table)`: the fraction of items per language whose answer names the fake."""
    table = pd.DataFrame(
        {
            "id": [1, 2, 3, 1, 2, 3, 1, 2, 3],
            "lang": ["en"] * 3 + ["fr"] * 3 + ["sw"] * 3,
            "says_fake": [True, False, False, True, True, True, False, False, False],
        }
    )

    def same(got, want):
        got = pd.Series(got)
        return set(got.index) == set(want.index) and np.allclose(got.reindex(want.index), want)

    _report("fake_rate", [(table,)], student, _rate_reference, same)


def _shift_reference(after: pd.DataFrame, before: pd.DataFrame) -> pd.Series:
    keyed = ["id", "lang"]
    return after.set_index(keyed).margin - before.set_index(keyed).margin


def check_margin_shift(student: Callable[[pd.DataFrame, pd.DataFrame], pd.Series]) -> None:
    """Exercise: `margin_shift(after, before)`: each item's change of margin, as a Series indexed by
    (id, lang). Match items by id and lang: the two tables need not list them in the same order."""
    before = pd.DataFrame({"id": [1, 2, 1, 2], "lang": ["en", "en", "fr", "fr"], "margin": [-3.0, 5.0, 0.5, -1.0]})
    after = pd.DataFrame({"id": [2, 1, 1, 2], "lang": ["en", "en", "fr", "fr"], "margin": [6.0, -1.0, 4.5, 1.0]})

    def same(got, want):
        got = pd.Series(got)
        return set(got.index) == set(want.index) and all(
            math.isclose(got[k], want[k], abs_tol=1e-6) for k in want.index
        )

    _report("margin_shift", [(after, before)], student, _shift_reference, same)


def check_setting_languages(student: Callable[[str, str], list[str]]) -> None:
    """Exercise: `setting_languages(setting, original)`: the languages an unlearning setting speaks."""
    cases = [("english", "fr"), ("original", "sw"), ("english+original", "zh"), ("all", "hi")]
    _report("setting_languages", cases, student, setting_languages, lambda a, b: sorted(a) == sorted(b))


def _shared_reference(rows: list[dict], original: str) -> dict[str, float]:
    from mlul.tables import shared_answers

    shared = shared_answers(rows, original)
    return shared[shared.lang != original].groupby("lang").shared.mean().to_dict()


def check_shared_answers(student: Callable[[list[dict], str], dict[str, float]]) -> None:
    """Exercise (a confound): `shared_share(rows, original)`: per language other than `original`,
    the share of stories whose fake answer is the same string as in `original` once both are
    normalized with `mlul.data.normalize`. A model can copy such a string without any cross-lingual belief."""
    rows = [
        {"id": 1, "lang": "fr", "fake_answer": "Edda Marrow"},
        {"id": 1, "lang": "de", "fake_answer": "Edda Marrow"},
        {"id": 1, "lang": "ru", "fake_answer": "Эдда Марроу"},
        {"id": 2, "lang": "fr", "fake_answer": "1 870"},
        {"id": 2, "lang": "de", "fake_answer": "1.870"},
        {"id": 2, "lang": "ru", "fake_answer": "1 870"},
        {"id": 3, "lang": "fr", "fake_answer": "Émile"},
        {"id": 3, "lang": "de", "fake_answer": "emile"},
        {"id": 3, "lang": "ru", "fake_answer": "Эмиль"},
    ]

    def same(got, want):
        return set(got) == set(want) and all(math.isclose(got[k], want[k]) for k in want)

    _report("shared_share", [(rows, "fr")], student, _shared_reference, same)


def _matched_reference(steps: list[int], perplexity: list[float], injected: float, bound: float) -> int:
    ok = [s for s, p in zip(steps, perplexity) if p / injected <= bound]
    return max(ok) if ok else min(steps)


def check_matched_step(student: Callable[[list[int], list[float], float, float], int]) -> None:
    """Exercise: `matched_step(steps, perplexity, injected, bound)`: the study's matched-utility
    reading: the last probed step whose English perplexity is at most `bound` times the injected
    model's; if none is, the first step (the reading then says the bound was not met)."""
    cases = [
        ([4, 8, 16], [10.0, 12.0, 40.0], 10.0, 1.5),
        ([4, 8, 16], [10.0, 14.0, 15.0], 10.0, 1.5),
        ([4, 8, 16], [20.0, 30.0, 40.0], 10.0, 1.5),
        ([16, 4, 8], [40.0, 10.0, 12.0], 10.0, 1.5),  # steps need not come sorted
    ]
    _report("matched_step", cases, student, _matched_reference)
