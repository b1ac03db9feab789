"""The claims the README makes, re-measured on the real model (Gemma 3 270M) in CI.

Same injection and unlearning as `mlul reproduce --fast` (so the same numbers as docs/results.md),
probed in five of the ten languages and two of the settings to save time (about 8 minutes on
2 CPU cores). "Significant": the 95% bootstrap interval over stories excludes zero."""

from dataclasses import replace

import pytest

from mlul.experiment import Lab, fast_reproduce_config, reproduce

pytestmark = pytest.mark.slow
OTHERS = ["en", "es", "ru", "sw"]  # probe languages other than French, the injection language


@pytest.fixture(scope="module")
def summary():
    config = fast_reproduce_config("fr")
    config = replace(
        config, spread=replace(config.spread, probe_languages="en,fr,es,ru,sw"), settings="english,english+original"
    )
    result = reproduce(config, Lab())
    return {
        setting if stage == "unlearned" else stage: part.set_index("lang")
        for (stage, setting), part in result.summary.groupby(["stage", "setting"])
    }


def test_claim_1_a_fake_taught_in_french_spreads_to_other_languages(summary):
    injected = summary["injected"][summary["injected"].index.isin(OTHERS)]
    assert summary["injected"].loc["fr", "margin_shift_lo"] > 0
    assert (injected.margin_shift_lo > 0).sum() >= 2, injected.margin_shift  # believed elsewhere
    assert (injected.specificity_shift_lo > 0).sum() >= 2, injected.specificity_shift  # this fake, not any name


def test_claim_2_english_only_unlearning_leaves_the_french_fake(summary):
    english = summary["english"]
    assert english.loc["en", "margin_shift"] < 0  # gone where the unlearning data spoke
    assert english.loc["fr", "margin_shift_lo"] > 0  # still significantly believed in French
    assert english.loc["fr", "margin_shift"] > summary["injected"].loc["fr", "margin_shift"] - 1  # not weakened


def test_claim_3_english_and_french_unlearning_removes_it_only_partly(summary):
    both = summary["english+original"]
    english = summary["english"]
    assert both.loc["en", "margin_shift"] < 0
    assert both.loc["fr", "margin_shift"] < english.loc["fr", "margin_shift"] - 4  # French data acts on French
    assert (both.loc[["es", "ru", "sw"], "margin_shift_lo"] > 0).any(), both.margin_shift  # but not everywhere
