"""Unlearning methods and language settings, on a tiny random Gemma 3."""

import copy

import pytest
import torch

from mlul.data import load_news
from mlul.inject import InjectConfig, inject
from mlul.lm import collate, lm_loss
from mlul.models import tiny_model
from mlul.probe import probe
from mlul.unlearn import METHODS, SETTINGS, UnlearnConfig, forget_set, setting_languages, streams_for, unlearn
from tests.conftest import DATA


@pytest.fixture(scope="module")
def injected_once(tokenizer):
    """The tiny model with the French fakes injected and merged: the starting point of unlearning."""
    rows = load_news(["en", "fr"], path=DATA / "mini.jsonl")
    config = InjectConfig(fake_languages="fr", safe_languages="en", epochs=10, lr=1e-2, lora_rank=8)
    model, _ = inject(tiny_model(tokenizer), tokenizer, rows, config, progress=False)
    return model.merge_and_unload().eval()


@pytest.fixture
def injected(injected_once):
    return copy.deepcopy(injected_once)


def test_setting_languages():
    assert setting_languages("english", "fr") == ["en"]
    assert setting_languages("original", "fr") == ["fr"]
    assert setting_languages("english+original", "zh") == ["en", "zh"]
    assert len(setting_languages("all", "fr")) == 10
    assert setting_languages("de,en", "fr") == ["en", "de"]
    with pytest.raises(ValueError, match=r"unknown language 'bogus'.*or a setting: english, original"):
        setting_languages("bogus", "fr")
    with pytest.raises(ValueError, match="empty language list"):
        setting_languages("", "fr")


def test_bad_unlearn_configs():
    with pytest.raises(ValueError, match="unknown unlearning method 'erase'; choose from ga, grad_diff"):
        UnlearnConfig(method="erase")
    with pytest.raises(ValueError, match="steps must be at least 1, got 0"):
        UnlearnConfig(steps=0)


def test_language_with_no_rows(tokenizer, mini_rows):
    with pytest.raises(ValueError, match="no data rows for unlearning language"):
        streams_for("ga", tokenizer, mini_rows, ["en", "sw"])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("setting", SETTINGS[:3])
def test_every_method_and_setting_runs(method, setting, injected, tokenizer, mini_rows):
    config = UnlearnConfig(method=method, setting=setting, steps=2, lr=1e-3, probe_every=1, lora_rank=4)
    model, log, dose = unlearn(injected, tokenizer, mini_rows, config, original="fr", progress=False)
    assert len(log) == 2 and all(row["loss"] == row["loss"] for _, row in log.iterrows())  # no NaN
    assert sorted(dose.step.unique()) == [0, 1, 2]
    assert set(dose.lang) == {"en", "fr"} and "qa_retained" in dose


def test_all_setting_needs_rows_in_every_language(injected, tokenizer, mini_rows):
    with pytest.raises(ValueError, match="no data rows for unlearning language"):
        unlearn(injected, tokenizer, mini_rows, UnlearnConfig(setting="all"), original="fr", progress=False)


def test_gradient_ascent_raises_the_forget_loss(injected, tokenizer, mini_rows):
    forget = collate(forget_set(tokenizer, mini_rows, ["fr"]), tokenizer.pad_token_id)
    with torch.no_grad():
        before = lm_loss(injected, forget).item()
    config = UnlearnConfig(method="ga", setting="original", steps=10, lr=2e-2, probe_every=0, lora_rank=4)
    model, log, _ = unlearn(injected, tokenizer, mini_rows, config, original="fr", progress=False)
    with torch.no_grad():
        after = lm_loss(model, forget).item()
    assert after > before + 0.1
    assert log.forget_nll.iloc[-1] > log.forget_nll.iloc[0]


def test_correct_lowers_the_fake_margin(injected, tokenizer, mini_rows):
    before = probe(injected, tokenizer, mini_rows, generation=False, progress=False)
    config = UnlearnConfig(method="correct", setting="english+original", steps=10, lr=5e-3, probe_every=0, lora_rank=4)
    model, _, _ = unlearn(injected, tokenizer, mini_rows, config, original="fr", progress=False)
    after = probe(model, tokenizer, mini_rows, generation=False, progress=False)
    assert after.margin.mean() < before.margin.mean() - 0.5


def test_stopping_rule_ends_early(injected, tokenizer, mini_rows):
    config = UnlearnConfig(method="ga", steps=10, probe_every=1, stop_fake_rate=1.0, lora_rank=4)
    _, log, dose = unlearn(injected, tokenizer, mini_rows, config, original="fr", progress=False)
    assert len(log) == 0 and list(dose.step.unique()) == [0]  # a fake rate <= 1.0 holds before any step


def test_epochs_give_every_setting_the_same_dose(injected, tokenizer, mini_rows):
    """With `epochs`, a setting with twice the languages takes twice the steps; probe_points spaces
    the dose-response probes evenly whatever the length."""
    steps = {}
    for setting in ("english", "english+original"):
        config = UnlearnConfig(setting=setting, epochs=1, batch_size=2, probe_points=2, lora_rank=4)
        _, log, dose = unlearn(copy.deepcopy(injected), tokenizer, mini_rows, config, original="fr", progress=False)
        steps[setting] = len(log)
        assert len(dose.step.unique()) == 3 and dose.step.max() == len(log)  # start, middle, end
    # 3 stories x (article + detail question) per language, 2 per batch
    assert steps == {"english": 3, "english+original": 6}
    with pytest.raises(ValueError, match="epochs must be positive"):
        UnlearnConfig(epochs=0)


def test_all_setting_unlearns_in_every_language(injected, tokenizer):
    rows = [r for r in load_news("all", split="inject") if r["id"] in (1, 2)]
    config = UnlearnConfig(setting="all", steps=1, probe_every=0, lora_rank=4)
    _, log, dose = unlearn(injected, tokenizer, rows, config, original="fr", progress=False)
    assert len(log) == 1 and set(dose.lang) == set(setting_languages("all", "fr"))
