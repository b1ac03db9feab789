"""The claims' verdicts on synthetic results whose truth is known: a true effect, a null, a
collapse, and too few stories to tell."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from mlul import report
from mlul.tables import language_table

LANGS = ["en", "fr", "de", "sw"]


def _stage(stage, means: dict, method="-", setting="-", items=12, sd=1.0, seed=0, role="injected", start=0):
    rng = np.random.default_rng(seed)
    rows = []
    for lang, mean in means.items():
        for item in range(start, start + items):
            margin = mean + sd * rng.standard_normal()
            rows.append(
                {
                    "id": item,
                    "lang": lang,
                    "margin": margin,
                    "says_fake": margin > 8,
                    "says_true": False,
                    "stage": stage,
                    "method": method,
                    "setting": setting,
                    "step": 0,
                    "role": role,
                }
            )
    return pd.DataFrame(rows)


def _with_controls(stage, means, control_means=None, **kw):
    control_means = control_means or {lang: 0.0 for lang in means}
    control_kw = {**kw, "seed": kw.get("seed", 0) + 1000}  # independent noise for the control stories
    return pd.concat(
        [_stage(stage, means, **kw), _stage(stage, control_means, role="control", start=100, **control_kw)]
    )


def _utility(english_ppl=40.0):
    rows = []
    for stage, method, setting, ppl in [
        ("base", "-", "-", 36.0),
        ("injected", "-", "-", 40.0),
        ("unlearned", "ga", "english", 41.0),
        ("unlearned", "ga", "english+original", english_ppl),
    ]:
        for lang in LANGS:
            rows.append(
                {
                    "lang": lang,
                    "stage": stage,
                    "method": method,
                    "setting": setting,
                    "perplexity": ppl,
                    "qa_accuracy": 0.5,
                }
            )
    return pd.DataFrame(rows)


def _result(injected, english, both, utility=None, sd=1.0, items=12):
    zero = dict.fromkeys(LANGS, 0.0)
    per_item = pd.concat(
        [
            _with_controls("base", zero, sd=0.0, items=items),
            _with_controls("injected", injected, sd=sd, seed=1, items=items),
            _with_controls("unlearned", english, method="ga", setting="english", sd=sd, seed=2, items=items),
            _with_controls("unlearned", both, method="ga", setting="english+original", sd=sd, seed=3, items=items),
        ],
        ignore_index=True,
    )
    base = per_item[per_item.stage == "base"]
    injected_part = per_item[per_item.stage == "injected"]
    summary = language_table(injected_part, base, "fr").assign(stage="injected")
    return SimpleNamespace(
        per_item=per_item,
        summary=summary,
        utility=utility if utility is not None else _utility(),
        config=SimpleNamespace(inject_language="fr"),
    )


def _verdicts(result) -> dict[str, str]:
    table = report.claims(result)
    assert table.test.str.len().min() > 20  # every verdict names its test and thresholds
    return dict(zip(table.claim.str[:2], table.verdict))


def test_all_three_hold_when_the_effects_are_there():
    result = _result(
        injected={"en": 6, "fr": 12, "de": 6, "sw": 0},
        english={"en": 0, "fr": 12, "de": 5, "sw": 0},
        both={"en": 0, "fr": 0, "de": 0, "sw": 0},
    )
    assert _verdicts(result) == {"1.": "holds", "2.": "holds", "3.": "holds"}
    spread = report.claims(result).evidence.iloc[0]
    assert "significant in 2/3 (en, de)" in spread


def test_no_spread_and_full_removal_by_english_fail_claims_1_and_2():
    result = _result(
        injected={"en": 0, "fr": 12, "de": 0, "sw": 0},
        english={"en": 0, "fr": 0, "de": 0, "sw": 0},
        both={"en": 0, "fr": 0, "de": 0, "sw": 0},
        sd=0.5,
    )
    assert _verdicts(result) == {"1.": "fails", "2.": "fails", "3.": "holds"}


def test_drift_is_not_spread():
    """Every language moves by +5 on the control stories too: that is drift, not spread."""
    means = {"en": 5, "fr": 12, "de": 5, "sw": 5}
    per_item = pd.concat(
        [
            _with_controls("base", dict.fromkeys(LANGS, 0.0), sd=0.0),
            _with_controls("injected", means, control_means={**means, "fr": 5}, seed=1),
        ]
    )
    table = language_table(per_item[per_item.stage == "injected"], per_item[per_item.stage == "base"], "fr")
    assert report.claim_spread(table, "fr")["verdict"] != "holds"
    assert (table.set_index("lang").margin_shift_lo > 0).all()  # without the control it would have looked like spread


def test_a_collapsed_model_is_not_a_removal():
    result = _result(
        injected={"en": 6, "fr": 12, "de": 6, "sw": 0},
        english={"en": 0, "fr": 12, "de": 5, "sw": 0},
        both={"en": 0, "fr": 0, "de": 0, "sw": 0},
        utility=_utility(english_ppl=20_000.0),
    )
    verdicts = report.claims(result)
    assert verdicts.verdict.iloc[2] == "fails"
    assert "perplexity x500" in verdicts.evidence.iloc[2]


def test_a_language_still_above_base_fails_claim_3():
    result = _result(
        injected={"en": 6, "fr": 12, "de": 6, "sw": 0},
        english={"en": 0, "fr": 12, "de": 5, "sw": 0},
        both={"en": 0, "fr": 0, "de": 6, "sw": 0},
    )
    assert _verdicts(result)["3."] == "fails"


@pytest.mark.parametrize("items", [4])
def test_too_few_noisy_stories_are_inconclusive(items):
    result = _result(
        injected={"en": 3, "fr": 12, "de": 3, "sw": 0},
        english={"en": 0, "fr": 6, "de": 3, "sw": 0},
        both={"en": 0, "fr": 1, "de": 1, "sw": 1},
        sd=4.0,
        items=items,
    )
    verdicts = _verdicts(result)
    assert verdicts["1."] == "inconclusive" and verdicts["3."] == "inconclusive", verdicts


def test_claim_1_rarely_fires_under_a_global_null():
    """No spread anywhere, only noise: with Holm across the other languages the rule fires in at
    most about 5% of repeated experiments (it would be far more often without the correction)."""
    fired = 0
    runs = 200
    for seed in range(runs):
        means = {"en": 0, "fr": 10, "de": 0, "sw": 0, "es": 0, "ru": 0}
        per_item = pd.concat(
            [
                _with_controls("base", dict.fromkeys(means, 0.0), sd=0.0),
                _with_controls("injected", means, control_means={**means, "fr": 0}, seed=seed, sd=3.0),
            ]
        )
        table = language_table(per_item[per_item.stage == "injected"], per_item[per_item.stage == "base"], "fr")
        fired += report.claim_spread(table, "fr")["verdict"] == "holds"
    assert fired / runs <= 0.08, fired


def test_changes_names_what_rose_fell_and_stayed():
    """The table the notebooks' prose quotes: French rises from the injected model and stays
    above base; English falls back to base; German does not move."""
    result = _result(
        injected={"en": 6, "fr": 12, "de": 6, "sw": 0},
        english={"en": 0, "fr": 16, "de": 6, "sw": 0},
        both=dict.fromkeys(LANGS, 0.0),
    )
    table = report.changes(result.per_item, "english", LANGS).set_index("lang")
    assert list(table.method.unique()) == ["ga"]
    assert table.loc["fr", "change significant (Holm)"] and table.loc["fr", "change from injected"].startswith("+4")
    assert table.loc["fr", "left significant (Holm)"]
    assert table.loc["en", "change significant (Holm)"] and not table.loc["en", "left significant (Holm)"]
    assert not table.loc["de", "change significant (Holm)"]


def test_dose_response_averages_the_injected_stories_only():
    """Control stories measure drift: mixing them in would halve the curves of the fake."""
    from mlul import plots

    rows = []
    for story, role, margin in (("1", "injected", 6.0), ("2", "injected", 4.0), ("3", "control", 0.0)):
        rows.append(
            {
                "stage": "base",
                "method": "-",
                "setting": "-",
                "step": 0,
                "id": story,
                "lang": "fr",
                "role": role,
                "margin": 0.0,
            }
        )
        for step in (0, 4):
            rows.append(
                {
                    "stage": "unlearned",
                    "method": "ga",
                    "setting": "english",
                    "step": step,
                    "id": story,
                    "lang": "fr",
                    "role": role,
                    "margin": margin - step,
                }
            )
    fig = plots.unlearn_dose_response(pd.DataFrame(rows))
    assert list(fig.axes[0].lines[0].get_ydata()) == [5.0, 1.0]
