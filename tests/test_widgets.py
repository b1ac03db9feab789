"""The playground's logic without a browser: build the panel, press its buttons."""

from dataclasses import replace

import pytest

from mlul import widgets
from mlul.experiment import ReproduceConfig, SpreadConfig
from mlul.inject import InjectConfig
from mlul.unlearn import UnlearnConfig
from tests.conftest import make_tiny_lab


@pytest.fixture
def tiny_lab(tiny, tokenizer, tmp_path):
    return make_tiny_lab(tiny, tokenizer, tmp_path / "cache")


@pytest.fixture
def playground(tiny_lab):
    config = ReproduceConfig(
        spread=SpreadConfig(
            model="tiny",
            inject_languages="fr",
            probe_languages="en,fr",
            items=2,
            utility_items=1,
            inject=InjectConfig(epochs=1, qa_pairs=False),
        ),
        unlearn=UnlearnConfig(steps=2, probe_every=1),
    )
    return widgets.Playground(tiny_lab, config)


def test_language_options_are_grouped_by_tier_then_script():
    codes = [code for _, code in widgets.language_options()]
    tiers = [widgets.languages.get(c).tier for c in codes]
    assert sorted(codes) == sorted(widgets.languages.codes())
    assert tiers == sorted(tiers, key=lambda t: t != "high")  # high-resource first
    assert codes[0] == "en"


def test_run_button_draws_a_plot_and_reports(playground):
    assert playground.figures == 0
    playground.run_button.click()
    assert playground.figures == 2, playground.status.value  # after step 1 of 2, then at the end
    assert "done" in playground.status.value
    assert playground.progress.value == playground.progress.max
    summary = playground.last_summary
    assert set(summary.stage) == {"injected", "unlearned"}
    assert set(summary.lang) == {"en", "fr"}
    assert bytes(playground.plot.value).startswith(b"\x89PNG")  # the plot, drawn in place


def test_the_plot_and_the_progress_bar_follow_the_training(playground):
    drawn = []  # (step drawn, progress bar's value and maximum at that moment, status)
    draw = playground._draw

    def spy(injected, unlearned, config, step):
        drawn.append((step, playground.progress.value, playground.progress.max, playground.status.value))
        draw(injected, unlearned, config, step)

    playground._draw = spy
    playground.steps.value = 3  # probed every step: redrawn after steps 1 and 2, then at the end
    playground.run_button.click()
    assert [(step, value, top) for step, value, top, _ in drawn] == [(1, 1, 3), (2, 2, 3), (3, 3, 3)]
    assert "step 1 of 3" in drawn[0][3] and "done" in playground.status.value
    unlearned = playground.last_summary[playground.last_summary.stage == "unlearned"]
    assert unlearned.margin_shift.notna().all()  # a belief-only probe along the way still has its shift
    drawn.clear()
    playground.run_button.click()  # now cached: the result comes back at once, drawn once
    assert [step for step, *_ in drawn] == [3]


def test_the_steps_slider_sets_the_steps_even_when_the_config_counts_passes(playground):
    playground.config = replace(playground.config, unlearn=replace(playground.config.unlearn, epochs=4, probe_points=3))
    playground.steps.value = 5
    config = playground.unlearn_config()
    assert (config.steps, config.epochs, config.probe_points, config.probe_every) == (5, None, None, 1)


def test_changing_method_and_setting_changes_the_run(playground):
    playground.method.value = "npo"
    playground.setting.value = "custom"
    playground.custom_languages.value = ("fr",)
    config = playground.unlearn_config()
    assert (config.method, config.setting) == ("npo", "fr")
    playground.run_button.click()
    assert set(playground.last_summary[playground.last_summary.stage == "unlearned"].method) == {"npo"}


def test_empty_custom_setting_is_reported_not_raised(playground):
    playground.setting.value = "custom"
    playground.custom_languages.value = ()
    playground.run_button.click()
    assert "choose at least one custom language" in playground.status.value
    assert playground.figures == 0 and not playground.run_button.disabled


def test_data_picker_lists_the_languages_of_the_chosen_file(playground):
    from tests.conftest import DATA

    playground.data_path.value = str(DATA / "own_stories.jsonl")
    playground.load_data()
    assert "en, de, zh, ko" in playground.data_info.value
    assert [code for _, code in playground.inject_language.options] == ["de", "zh", "ko"]
    assert playground.config.spread.items + playground.config.spread.control_items == 5
    playground.data_path.value = str(DATA / "no-such-file.jsonl")
    playground.load_data()
    assert "no-such-file" in playground.data_info.value and "color:#b00" in playground.data_info.value
    playground.data_path.value = ""
    playground.load_data()
    assert "10 languages" in playground.data_info.value


@pytest.mark.parametrize("measure", ["fake_rate", "prefer_fake"])
def test_every_plot_measure_draws_along_the_way_and_at_the_end(playground, measure):
    playground.measure.value = measure
    playground.steps.value = 3
    playground.run_button.click()
    assert "done" in playground.status.value and playground.figures == 3, playground.status.value
    assert playground.last_summary[measure].notna().any()  # the end point has answers for the fake rate
