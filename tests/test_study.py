"""The study's grid mechanics on a tiny random model: rotating splits, seeds, equal cost, the
frontier, the readings, the paper's grid, bad axes, and resume after a kill."""

import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from mlul import study, study_report
from mlul.inject import InjectConfig
from tests.conftest import make_tiny_lab

TINY = study.StudyConfig(
    model="tiny",
    probe_languages="en,fr,de,sw",
    utility_items=1,
    dev_stories=2,
    stories=6,
    seeds=2,
    inject=InjectConfig(detail_question=False, qa_pairs=False),
    inject_candidates=((1, 5e-4, "lora"), (2, 5e-4, "lora")),
    steps=2,
    probe_steps=(1, 2),
    settings="english,original,english+original",
    core_methods="ga",
    other_methods="npo",
    other_settings="english",
    other_fake_languages="",
    spread_languages="fr",
    detail_question_check=True,
)


@pytest.fixture
def lab(tiny, tokenizer, tmp_path):
    return make_tiny_lab(tiny, tokenizer, tmp_path / "cache")


def test_rotating_controls_cover_every_story_and_never_overlap_the_injected():
    reported = [str(i) for i in range(12)]
    splits = [study.seed_split(reported, seed, 0.25) for seed in range(3)]
    for injected, control in splits:
        assert len(control) == 3 and not set(injected) & set(control)
        assert sorted(injected + control, key=int) == reported
    controls = [c for _, control in splits for c in control]
    assert len(set(controls)) == 9  # a different block each seed
    assert all(any(s in injected for injected, _ in splits) for s in reported)


def test_cells_put_every_seed_on_the_core_and_one_on_the_rest():
    cells = study.cells(replace(TINY, seeds=3, other_fake_languages="sw", other_fake_settings="english"))
    core = [c for c in cells if c.part == "core"]
    assert {c.seed for c in core} == {0, 1, 2} and len(core) == 3 * 3
    rest = [c for c in cells if c.part != "core"]
    assert {c.seed for c in rest} == {0}
    assert {(c.fake_language, c.method) for c in rest} == {("fr", "npo"), ("sw", "ga")}


@pytest.mark.parametrize(
    "change, words",
    [
        ({"settings": "english,englsh"}, ["settings", "englsh"]),
        ({"settings": ""}, ["settings", "empty"]),
        ({"other_settings": "english,en+xx"}, ["other_settings", "en+xx"]),
        ({"other_fake_settings": "englsh"}, ["other_fake_settings", "englsh"]),
        ({"core_methods": "gax"}, ["core_methods", "gax", "npo"]),
        ({"fake_language": "xx"}, ["fake_language", "xx"]),
        ({"other_fake_languages": "qq"}, ["other_fake_languages", "qq"]),
        ({"steps": 0}, ["steps", "0"]),
        ({"unlearn_lr": -1.0}, ["unlearn_lr", "-1"]),
        ({"probe_steps": (1, 5)}, ["probe_steps", "between 1 and steps"]),
        ({"seeds": 0}, ["seeds", "positive"]),
        ({"stories": 100}, ["stories", "100", "give fewer"]),
        ({"seeds": 7}, ["seeds", "7", "at least 7"]),
    ],
)
def test_bad_axes_are_named_before_any_work(lab, change, words):
    lab._base = None  # loading the model would be work: it must not be needed
    with pytest.raises(study.StudyError) as err:
        study.check(replace(TINY, **change), lab)
    for word in words:
        assert word in str(err.value)


def test_the_cli_rejects_a_bad_axis_in_a_second(capsys, monkeypatch):
    from mlul import cli, models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    start = time.perf_counter()
    assert cli.main(["study", "--settings", "english,englsh"]) == 2
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err
    assert "settings" in err and "englsh" in err and "Traceback" not in err


def test_the_cli_maps_every_study_option_to_the_config():
    from mlul import cli

    args = cli.build_parser().parse_args(["study", "--detail-question", "--steps", "8", "--other-settings", "english"])
    config = cli._study_config(args, None)
    assert config.detail_question_check and config.steps == 8 and config.other_settings == "english"
    assert config.probe_steps == (4, 8)
    assert not cli._study_config(cli.build_parser().parse_args(["study"]), None).detail_question_check


@pytest.fixture(scope="module")
def ran(tokenizer, tmp_path_factory):
    """One tiny study for every test that reads its result (it takes minutes even on a tiny model)."""
    from mlul.models import tiny_model

    lab = make_tiny_lab(tiny_model(tokenizer), tokenizer, tmp_path_factory.mktemp("study") / "cache")
    return study.run(TINY, lab, progress=False, log=lambda _: None), lab


@pytest.fixture
def result(ran):
    return ran[0]


def test_study_runs_every_cell_at_equal_cost_with_seeds(result):
    probes = result.probes
    unlearned = probes[probes.stage == "unlearned"]
    # every cell: the same steps, probed at the same points
    assert set(unlearned.groupby(["seed", "method", "setting"]).step.max()) == {TINY.steps}
    assert set(unlearned.step) == {0, 1, 2}
    core = unlearned[unlearned.method == "ga"]
    assert set(core.seed) == {0, 1} and set(unlearned[unlearned.method == "npo"].seed) == {0}
    # the rotating split: a story injected in one seed is a control in the other
    roles = probes[probes.stage == "injected"].groupby(["id", "seed"]).role.first().unstack()
    assert (roles[0] != roles[1]).any()
    assert set(result.injections.stage) == {"injected", "sham", "injected (detail question trained)"}
    assert result.development.chosen.sum() == 1
    along = result.utility[result.utility.stage == "unlearned"]
    assert set(along.step) == {1, 2} and along.perplexity.notna().all()


def test_readings_claims_frontier_and_grid(result):
    per_item, utility = study_report.subset(result, "fr", "ga")
    steps = study_report.reading_steps(utility)
    assert set(steps.reading) == set(study_report.READINGS)
    assert (steps[steps.reading == "equal cost"].step == TINY.steps).all()
    assert per_item.n_seeds.max() == 2  # pooled over the two seeds
    verdicts = study_report.claims(result, "fr")
    assert set(verdicts.verdict) <= {"holds", "fails", "inconclusive"}
    assert {"equal cost", "matched utility"} <= set(verdicts.reading)
    front = study_report.frontier(result, "fr")
    assert set(front.step) == {0, 1, 2} and set(front.method) == {"ga", "npo"}
    assert front[front.step == 0].en_perplexity_ratio.eq(1.0).all()
    grid = study_report.paper_grid(result, "fr")
    assert set(grid.cell) <= {"fixed", "not fixed", "inconclusive", "nothing to fix"}
    # the tiny model never learns the fake: nothing to fix anywhere, not "fixed"
    assert set(grid.cell) == {"nothing to fix"}
    assert set(grid.setting) == {"english", "original", "english+original"}


def test_matched_utility_reads_the_last_step_within_the_bound():
    utility = pd.DataFrame(
        {
            "stage": ["injected", "unlearned", "unlearned", "unlearned"],
            "method": ["-", "ga", "ga", "ga"],
            "setting": ["-", "english", "english", "english"],
            "step": [0, 3, 6, 12],
            "lang": ["en"] * 4,
            "perplexity": [10.0, 12.0, 14.0, 40.0],
            "qa_accuracy": [0.5] * 4,
        }
    )
    steps = study_report.reading_steps(utility).set_index("reading")
    assert steps.loc["equal cost"].step == 12
    assert steps.loc["matched utility"].step == 6 and steps.loc["matched utility"].en_perplexity_ratio == 1.4


def test_write_makes_the_tables_figures_and_page(ran, tmp_path):
    result, lab = ran
    study_report.write(result, lab, tmp_path / "t", tmp_path / "f", tmp_path / "study.md", ["study"])
    for name in ("claims", "spread", "frontier", "paper_grid", "injections", "development", "utility", "answers"):
        assert len(pd.read_csv(tmp_path / "t" / f"{name}.csv"))
    for name in ("unlearn_frontier", "paper_grid"):
        assert (tmp_path / "f" / f"{name}.png").stat().st_size > 10_000
    page = (tmp_path / "study.md").read_text()
    assert "## The claims" in page and "Manipulation check" in page and "detail question" in page
    assert "**Fails**" in page  # the tiny model never names the fake: the check fails, plainly
    assert "## Claim 1's controls, per language (fake in fr)" in page and "| vs sham |" in page
    controls = pd.read_csv(tmp_path / "t" / "spread.csv")
    assert {"control_shift", "spread_p_holm", "shared_shift", "translated_shift", "vs_sham"} <= set(controls)
    claims = pd.read_csv(tmp_path / "t" / "claims.csv")
    detail = claims[claims.reading == "detail question trained"]  # claim 1 for the earlier design, same test
    assert len(detail) == 1 and detail.claim.iloc[0].startswith("1.") and detail.n_seeds.iloc[0] == 1
    side = pd.read_csv(tmp_path / "t" / "detail_question.csv")  # the page's side-by-side, per probe language
    assert set(side.lang) == set(TINY.probe_languages.split(","))
    assert {"fake rate, with it", "shift, with it"} <= set(side)
    cut = next(line for line in page.splitlines() if line.startswith("Cut from the full design"))
    assert "): ." not in cut and "side-by-side not run" not in cut  # TINY runs it


def test_explorer_reads_the_written_tables_without_a_model(ran, tmp_path):
    from mlul.widgets import Explorer

    result, lab = ran
    study_report.write(result, lab, tmp_path / "t", tmp_path / "f", None, ["study"])
    explorer = Explorer(tmp_path / "t")
    first = explorer.plot.value
    assert len(first) > 10_000 and "ga in english" in explorer.table.value
    explorer.b["setting"].value = "english"
    explorer.b["method"].value = "npo"  # compare: a second configuration on the same plot
    assert set(explorer.shown.label) == {
        "injected (before unlearning)",
        "ga in english, 2 steps",
        "npo in english, 2 steps",
    }
    explorer.a["step"].value = 1
    assert "ga in english, 1 steps" in explorer.table.value and explorer.plot.value != first
    explorer.b["method"].value, explorer.b["step"].value = "ga", 1  # B = A: drawn once, not an error
    assert list(explorer.shown.label).count("ga in english, 1 steps") == explorer.shown.lang.nunique()
    assert "same configuration as A" in explorer.table.value
    assert explorer.frontier_plot.value and "red names the fake" in explorer.says.value
    with pytest.raises(FileNotFoundError, match="mlul study --out"):
        Explorer(tmp_path / "nowhere")


def test_choose_injection_falls_back_on_belief_within_the_utility_bound(monkeypatch, lab):
    """No candidate reaches the fake-rate target: the largest belief shift within the perplexity
    bound is chosen, and the table says by which rule."""
    config = replace(TINY, inject_candidates=((1, 1e-4, "lora"), (2, 1e-4, "lora"), (3, 1e-4, "lora")))
    shift = {1: 1.0, 2: 5.0, 3: 9.0}
    ppl = {1: 1.1, 2: 1.5, 3: 4.0}  # the strongest breaks English
    ids = [str(i) for i in study.story_split(config, lab)[0]]

    def probe(spread, inj=None):
        margin = shift[inj.epochs] if inj else 0.0
        return pd.DataFrame({"id": ids, "lang": "fr", "margin": margin, "says_fake": False, "role": "injected"})

    def util(spread, inj=None):
        return pd.DataFrame({"lang": ["fr", "en"], "perplexity": [ppl[inj.epochs] if inj else 1.0] * 2})

    monkeypatch.setattr(lab, "probe_base", probe)
    monkeypatch.setattr(lab, "probe_injected", probe)
    monkeypatch.setattr(lab, "utility_base", util)
    monkeypatch.setattr(lab, "utility_injected", util)
    chosen, table = study.choose_injection(config, lab, progress=lambda _: None)
    assert chosen.epochs == 2 and table.chosen.tolist() == [False, True, False]
    assert set(table.rule) == {"belief shift"}


def test_kill_and_resume_gives_identical_numbers(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(Path(__file__).parents[1])!r}]
        from dataclasses import replace
        from mlul.models import load_tokenizer, tiny_model
        from mlul import study, study_report
        from tests.conftest import make_tiny_lab
        from tests.test_study import TINY
        tokenizer = load_tokenizer()
        lab = make_tiny_lab(tiny_model(tokenizer), tokenizer, sys.argv[1])
        config = replace(TINY, seeds=1, other_methods="", detail_question_check=False, settings="english")
        result = study.run(config, lab, progress=False, log=lambda _: None)
        study_report.frontier(result, "fr").to_csv(sys.argv[2], index=False)
        """
    )
    path = tmp_path / "run.py"
    path.write_text(script)
    cache = tmp_path / "cache"
    victim = subprocess.Popen([sys.executable, str(path), str(cache), str(tmp_path / "killed.csv")])
    deadline = time.time() + 300
    while time.time() < deadline and len(list(cache.glob("*/*/manifest.json"))) < 4:
        time.sleep(0.2)
    victim.kill()
    victim.wait()
    assert list(cache.glob("inject/*/manifest.json")), "no injection finished before the kill"
    assert not list(cache.glob("unlearn/*/manifest.json")), "the kill came too late to test resuming"
    subprocess.run([sys.executable, str(path), str(cache), str(tmp_path / "resumed.csv")], check=True)
    subprocess.run([sys.executable, str(path), str(tmp_path / "fresh"), str(tmp_path / "fresh.csv")], check=True)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "resumed.csv"), pd.read_csv(tmp_path / "fresh.csv"))


def test_cold_seconds_count_each_step_once(lab):
    """The study page's compute time: each step's cold time once, whether computed or read back."""
    spread = study.spread_config(TINY, ["1", "2"], [])
    lab.probe_base(spread)
    first = lab.cold_seconds
    mark = len(lab._used)
    lab.probe_base(spread)  # a cache hit
    assert first > 0 and lab.cold_seconds == first and lab.cache.hits == 1
    assert lab.cold_seconds_since(mark) == first  # a result's own steps, however fast it read them


def test_timing_leads_with_the_cold_time():
    from types import SimpleNamespace

    from mlul.report import timing

    assert timing(SimpleNamespace(cold_seconds=600.0, seconds=3.0)).startswith("10.0 min of compute")
    assert "read back from the result cache" in timing(SimpleNamespace(cold_seconds=600.0, seconds=3.0))
    assert "cache" not in timing(SimpleNamespace(cold_seconds=600.0, seconds=590.0))


def test_what_was_cut_names_the_missing_fakes_methods_and_shams():
    rows = [
        {"stage": "unlearned", "part": "core", "seed": 0, "fake_language": "fr", "method": "ga", "setting": "english"},
        {
            "stage": "unlearned",
            "part": "methods",
            "seed": 0,
            "fake_language": "fr",
            "method": "dpo",
            "setting": "english",
        },
        {"stage": "injected", "part": None, "seed": 0, "fake_language": "fr", "method": "-", "setting": "-"},
        {"stage": "injected", "part": None, "seed": 0, "fake_language": "ru", "method": "-", "setting": "-"},
        {"stage": "sham", "part": None, "seed": 0, "fake_language": "fr", "method": "-", "setting": "-"},
    ]
    result = type("Result", (), {"probes": pd.DataFrame(rows)})()
    cut = "\n".join(study_report.ran_and_cut(result))
    assert "methods grad_diff, ga_kl, npo, correct not run" in cut
    assert "fake languages sw not injected" in cut  # ru stands for the non-Latin high-resource fake
    assert "1 of the design's 4 injection languages with a sham (fr; without one: ru)" in cut
    assert "3 seeds" in cut and "1 of the design's 3 seeds" in cut
