import pandas as pd
import pytest
import torch

from mlul import exercises
from mlul.data import says
from mlul.lens import language_similarity, layer_margins
from mlul.probe import probe


def test_logit_lens_last_layer_is_the_models_own_margin(tiny, tokenizer, mini_rows):
    lens = layer_margins(tiny, tokenizer, mini_rows)
    assert lens.layer.nunique() == tiny.config.num_hidden_layers + 1
    own = probe(tiny, tokenizer, mini_rows, generation=False, specificity=False, progress=False)
    last = lens[lens.layer == lens.layer.max()].set_index(["id", "lang"]).margin
    expected = own.set_index(["id", "lang"]).margin
    assert torch.allclose(torch.tensor(last.reindex(expected.index).values), torch.tensor(expected.values), atol=1e-3)


def test_language_similarity_is_a_symmetric_lang_table(tiny, tokenizer, mini_rows):
    grid = language_similarity(tiny, tokenizer, mini_rows)
    assert list(grid.index) == ["en", "fr"] and list(grid.columns) == ["en", "fr"]
    assert grid.loc["en", "fr"] == pytest.approx(grid.loc["fr", "en"])
    assert grid.loc["en", "en"] == pytest.approx(1.0, abs=1e-5)


def test_checks_accept_the_reference():
    exercises.check_says(says)
    exercises.check_fake_rate(lambda t: t.groupby("lang").says_fake.mean())
    exercises.check_margin_shift(
        lambda after, before: (
            after.merge(before, on=["id", "lang"], suffixes=("", "_base"))
            .assign(shift=lambda d: d.margin - d.margin_base)
            .set_index(["id", "lang"])["shift"]
        )
    )
    from mlul.unlearn import setting_languages

    exercises.check_setting_languages(setting_languages)


def test_checks_reject_wrong_answers():
    with pytest.raises(AssertionError, match="1340"):
        # Plain substring search: finds "340" inside "1340".
        exercises.check_says(
            lambda text, row, side: any(
                form.lower() in text.lower() for form in [row[f"{side}_answer"], *row[f"{side}_aliases"]]
            )
        )
    with pytest.raises(AssertionError, match="fake_rate"):
        exercises.check_fake_rate(lambda t: t.says_fake.groupby(t.lang).sum())
    with pytest.raises(AssertionError, match="margin_shift"):
        # Forgets to match items by id: subtracts row by row.
        exercises.check_margin_shift(
            lambda after, before: pd.Series(
                after.margin.values - before.margin.values, index=pd.MultiIndex.from_frame(after[["id", "lang"]])
            )
        )
    with pytest.raises(AssertionError, match="english\\+original"):
        exercises.check_setting_languages(
            lambda s, o: (
                ["en"] if s == "english+original" else __import__("mlul.unlearn").unlearn.setting_languages(s, o)
            )
        )
