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
