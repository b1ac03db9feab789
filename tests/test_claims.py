"""The claims the README makes, re-measured on the real model (Gemma 3 270M) in CI.

The same injection and unlearning as `mlul figures` (the fast configuration: 12 injected and 12
control stories, all ten languages), without the sham injection, which no verdict reads. Each
claim's verdict must equal the one in the committed `results/fast/reproduce/claims.csv` that the
README and docs/preview.md quote, so a change of code or data that changes a finding fails here."""

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from mlul.experiment import Lab, fast_reproduce_config, reproduce
from mlul.report import claims

pytestmark = pytest.mark.slow
COMMITTED = Path(__file__).resolve().parents[1] / "results" / "fast" / "reproduce" / "claims.csv"


@pytest.fixture(scope="module")
def verdicts():
    config = fast_reproduce_config("fr")
    config = replace(config, spread=replace(config.spread, sham=False), settings="english,english+original")
    return claims(reproduce(config, Lab(), progress=False))


def test_every_claim_has_a_verdict_with_its_test(verdicts):
    assert list(verdicts.claim.str[:2]) == ["1.", "2.", "3."]
    assert set(verdicts.verdict) <= {"holds", "fails", "inconclusive"}
    assert verdicts.test.str.len().min() > 40


@pytest.mark.parametrize("number", ["1.", "2.", "3."])
def test_verdict_matches_the_committed_results(verdicts, number):
    committed = pd.read_csv(COMMITTED)
    expected = committed[committed.claim.str.startswith(number)].verdict.iloc[0]
    measured = verdicts[verdicts.claim.str.startswith(number)]
    assert measured.verdict.iloc[0] == expected, measured.evidence.iloc[0]
