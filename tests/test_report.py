"""The claims verdicts on a hand-built result whose answers are known."""

from types import SimpleNamespace

import numpy as np
import pandas as pd

from mlul.report import claims

LANGS = ["en", "fr", "sw"]


def _stage(stage, margins: dict[str, float], method="-", setting="-", items=8, noise=0.1):
    rng = np.random.default_rng(len(stage) + len(setting))
    rows = []
    for lang, mean in margins.items():
        for item in range(items):
            margin = mean + noise * rng.standard_normal()
            rows.append(
                {
                    "id": item,
                    "lang": lang,
                    "margin": margin,
                    "says_fake": margin > 3,
                    "specificity": 0.0,
                    "stage": stage,
                    "method": method,
                    "setting": setting,
                    "step": 0,
                }
            )
    return pd.DataFrame(rows)


def _result(english: dict, both: dict):
    per_item = pd.concat(
        [
            _stage("base", {"en": 0, "fr": 0, "sw": 0}),
            _stage("injected", {"en": 2, "fr": 6, "sw": 0}),
            _stage("unlearned", english, "ga", "english"),
            _stage("unlearned", both, "ga", "english+original"),
        ],
        ignore_index=True,
    )
    return SimpleNamespace(per_item=per_item, config=SimpleNamespace(inject_language="fr"))


def test_claims_hold_when_the_numbers_say_so():
    table = claims(_result(english={"en": -1, "fr": 7, "sw": 0}, both={"en": -1, "fr": -1, "sw": 0}))
    verdicts = dict(zip(table.claim.str[:2], table.verdict))
    assert verdicts == {"1.": "holds", "2.": "holds", "3.": "holds"}
    english = table[table.claim.str.startswith("2.")].evidence.iloc[0]
    assert (
        "still above base in 1/3 languages (fr)" in english and "reinforced beyond the injected model in fr" in english
    )


def test_claims_fail_when_the_numbers_say_so():
    result = _result(english={"en": -1, "fr": -1, "sw": 0}, both={"en": -1, "fr": 3, "sw": 0})
    result.per_item.loc[(result.per_item.stage == "injected") & (result.per_item.lang == "en"), "margin"] = 0.0
    table = claims(result)
    verdicts = dict(zip(table.claim.str[:2], table.verdict))
    assert verdicts == {"1.": "not seen", "2.": "not seen", "3.": "partly"}
