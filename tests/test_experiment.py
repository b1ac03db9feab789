"""Experiments on the tiny model: controls in every result, cache keys that cannot go stale,
claims with three outcomes, own data through the same path."""

from dataclasses import replace

import pytest

from mlul import experiment, languages, report
from mlul.experiment import ReproduceConfig, SpreadConfig
from mlul.inject import InjectConfig
from mlul.unlearn import UnlearnConfig
from tests.conftest import make_tiny_lab

TINY = SpreadConfig(
    model="tiny",
    inject_languages="fr",
    probe_languages="en,fr,de",
    items=3,
    control_items=2,
    utility_items=1,
    inject=InjectConfig(epochs=1, qa_pairs=False),
)


tiny_lab = make_tiny_lab


@pytest.fixture
def lab(tiny, tokenizer, tmp_path):
    return tiny_lab(tiny, tokenizer, tmp_path / "cache")


def test_spread_carries_drift_and_sham_controls(lab):
    result = experiment.spread(TINY, lab, progress=False)
    injected, control = lab.story_ids(TINY)
    assert len(injected) == 3 and len(control) == 2 and not set(injected) & set(control)
    roles = result.per_item.groupby("role").id.nunique().to_dict()
    assert roles == {"injected": 3, "control": 2}
    assert set(result.per_item.version) == {"fake", "sham"}
    row = result.summary.set_index("lang").loc["en"]
    for column in (
        "margin_shift",
        "control_shift",
        "spread",
        "spread_p_holm",
        "sham_shift",
        "vs_sham",
        "fake_rate_lo",
        "fake_rate_hi",
        "shared_n",
        "translated_n",
        "prob_fake",
    ):
        assert column in result.summary, column
    assert row.n_items == 3 and row.n_control == 2
    assert row.fake_rate_hi > 0  # an exact interval, never [0, 0]
    assert result.summary.set_index("lang").spread_p_holm.isna()["fr"]  # the injected language is not in the family


def test_control_stories_are_never_trained_on(lab, monkeypatch):
    seen = []
    import mlul.inject

    real = mlul.inject.injection_set

    def spy(tokenizer, rows, config):
        seen.extend(str(r["id"]) for r in rows)
        return real(tokenizer, rows, config)

    monkeypatch.setattr(mlul.inject, "injection_set", spy)
    lab.injected_state(TINY, replace(TINY.inject, fake_languages="fr"))
    injected, control = lab.story_ids(TINY)
    assert set(seen) == {str(i) for i in injected}


def test_a_changed_prompt_template_is_a_cache_miss(lab, monkeypatch):
    experiment.spread(replace(TINY, sham=False), lab, progress=False)
    hits, misses = lab.cache.hits, lab.cache.misses
    experiment.spread(replace(TINY, sham=False), lab, progress=False)
    assert lab.cache.hits > hits and lab.cache.misses == misses  # all from the cache
    original = languages.qa_prompt

    def new_template(code, question):  # noqa: ARG001 - a different prompt format
        return original(code, question) + " "

    import mlul.probe

    monkeypatch.setattr(languages, "qa_prompt", new_template)
    monkeypatch.setattr(mlul.probe, "qa_prompt", new_template)
    experiment.spread(replace(TINY, sham=False), lab, progress=False)
    assert lab.cache.misses > misses


def test_code_fingerprint_follows_the_source():
    assert experiment._code("probe") == experiment._code("probe")
    assert experiment._code("probe") != experiment._code("inject")


def test_reproduce_gives_verdicts_with_their_tests(lab):
    config = ReproduceConfig(
        spread=replace(TINY, sham=False),
        inject_language="fr",
        settings="english,english+original",
        unlearn=UnlearnConfig(steps=2, probe_every=1),
    )
    result = experiment.reproduce(config, lab, progress=False)
    assert result.config.spread.inject_languages == "fr"  # one source of truth for the fake's language
    assert {"injected", "control"} == set(result.per_item.role)
    unlearned = result.summary[result.summary.stage == "unlearned"]
    assert {"control_shift", "from_injected_margin_shift"} <= set(unlearned.columns)
    verdicts = report.claims(result)
    assert len(verdicts) == 3
    assert set(verdicts.verdict) <= {"holds", "fails", "inconclusive"}
    assert verdicts.test.str.contains("Holm|equivalence|difference").all()


def test_own_data_file_runs_and_its_hash_is_in_the_key(tiny, tokenizer, tmp_path):
    from mlul.data import read_jsonl

    rows = [r for r in read_jsonl(experiment.__file__.replace("experiment.py", "data/news/en.jsonl"))][:6]
    rows += [r for r in read_jsonl(experiment.__file__.replace("experiment.py", "data/news/de.jsonl"))][:6]
    import json

    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({**r, "id": f"story-{r['id']}"}, ensure_ascii=False) + "\n" for r in rows))
    config = replace(
        TINY, data=str(path), inject_languages="de", probe_languages="en,de", items=3, control_items=2, sham=False
    )
    lab = tiny_lab(tiny, tokenizer, tmp_path / "cache", data=str(path))
    result = experiment.spread(config, lab, progress=False)
    assert set(result.summary.lang) == {"en", "de"}
    assert result.per_item.id.astype(str).str.startswith("story-").all()
    first = lab.data.fingerprint
    path.write_text(path.read_text().replace('story-1"', 'story-1b"'))
    assert tiny_lab(tiny, tokenizer, tmp_path / "cache", data=str(path)).data.fingerprint != first


def test_the_time_left_counts_only_computed_steps(tmp_path, monkeypatch):
    from mlul.cache import Cache

    clock = iter([0.0, 0.0, 60.0])  # starts of a cached probe and of an injection, its end at 60 s
    monkeypatch.setattr(experiment.time, "perf_counter", lambda: next(clock))
    cache = Cache(tmp_path)
    plan = experiment.Plan(["probe", "inject", "inject"], progress=False, cache=cache)
    assert plan.time_left() == "?"
    plan.start("probe")
    plan.done("probe")  # read from the cache: misses unchanged
    assert plan.time_left() == "?"  # a cached step says nothing about the time of the rest
    plan.start("inject")
    cache.misses += 1  # as Cache.get does when it computes
    plan.done("inject")
    assert plan.time_left() == "01:00"  # the other injection, at the same rate
