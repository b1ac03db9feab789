"""The study: the paper's three claims on every story, several seeds, every language setting and
method at equal cost, along a strength sweep, for more than one fake language.

    development split -> choose the injection strength (never reported)
    per seed: a rotating quarter of the other stories held out as drift controls, the rest injected
      core: fake in `fake_language`, every setting x `core_methods`, all seeds
      rest: `other_methods` (one seed), other fake languages (one seed), the spread matrix (one seed)

Every unlearning cell runs the same optimizer steps with the same batch size (equal cost: equal
forget examples seen) and is probed at `probe_steps` along the way, with its utility: the
forget-utility frontier. Every step is a cached `Lab` step, so an interrupted study resumes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import pandas as pd

from mlul import languages
from mlul.data import item_key
from mlul.experiment import FAST, Lab, Plan, ReproduceConfig, SpreadConfig, _sham, _split, run_unlearning
from mlul.inject import InjectConfig
from mlul.models import DEFAULT_MODEL
from mlul.tables import with_shifts
from mlul.unlearn import METHODS, SETTINGS, UnlearnConfig, setting_languages


def _languages(spec: str) -> list[str]:
    """An axis of languages; an empty one ("") switches that part of the study off."""
    return languages.resolve(spec) if _split(spec) else []


@dataclass
class StudyConfig:
    model: str = DEFAULT_MODEL
    data: str | None = None
    device: str = "auto"
    probe_languages: str = "all"
    utility_items: int = 4  # held-out stories for QA accuracy (plus general text for perplexity)
    # stories: the first `dev_stories` choose the injection strength and are never reported; of the
    # rest (`stories` of them, None: all), each seed holds out a rotating `control_share` as drift controls
    dev_stories: int = 8
    stories: int | None = None
    control_share: float = 0.25
    seeds: int = 3
    # injection: the paper's mixture without the detail question (the test item); the candidates
    # (epochs, learning rate, "lora" or "full" fine-tuning) are tried on the development split, in order. The first whose
    # fake rate in X reaches `manipulation_target` is taken; if none does, the one that moves belief
    # in X most (mean margin shift from base) while English perplexity stays within `max_perplexity_ratio`
    inject: InjectConfig = field(default_factory=lambda: InjectConfig(detail_question=False))
    inject_candidates: tuple[tuple[float, float, str], ...] = (
        (5, 5e-4, "lora"),
        (10, 5e-4, "lora"),
        (10, 1e-3, "lora"),
        (5, 5e-5, "full"),
    )
    manipulation_target: float = 0.8  # share of development stories whose answer in X names the fake
    max_perplexity_ratio: float = 2.0
    # unlearning at equal cost: every cell the same steps and batch size, probed along the way
    steps: int = 16
    probe_steps: tuple[int, ...] = (4, 8, 16)
    unlearn_lr: float = 1e-4
    # the core comparison: every seed
    fake_language: str = "fr"
    settings: str = "english,original,english+original,all"
    core_methods: str = "ga"
    # the rest: `rest_seeds` seeds, in the settings claims 2 and 3 read (and a custom list). The
    # whole grid's compute on a 2-core CPU is in docs/benchmarks.md; widen these axes on a GPU:
    # other_methods "npo,grad_diff,ga_kl,dpo,correct", other_fake_languages "ru,sw", spread_languages "fr,ru,sw,zh"
    rest_seeds: int = 1
    other_methods: str = "npo,grad_diff,dpo"
    other_settings: str = "english,english+original,en+de"
    other_fake_languages: str = "ru"  # a non-Latin script: no answer string shared with English
    other_fake_settings: str = "english,english+original"
    spread_languages: str = "fr"
    detail_question_check: bool = False  # one more injection as before (detail question trained), side by side


class StudyError(ValueError):
    """A bad value on an axis of the study, found before any work."""


def check(config: StudyConfig, lab: Lab) -> None:
    """Every axis checked against the data and the known choices; raises StudyError naming the axis."""
    available = lab.data.languages

    def langs(axis: str, spec: str) -> None:
        if not _split(spec):
            raise StudyError(f"{axis}: empty; give at least one language, e.g. fr")
        try:
            languages.resolve(spec, available=available)
        except ValueError as err:
            raise StudyError(f"{axis} {spec!r}: {err}") from None

    def choices(axis: str, spec: str, valid, check_one=None) -> None:
        values = _split(spec)
        if not values:
            raise StudyError(f"{axis}: empty; choose from {', '.join(valid)}")
        for v in values:
            if check_one is None and v not in valid:
                raise StudyError(f"{axis}: unknown value {v!r}; choose from {', '.join(valid)}")
            if check_one is not None:
                check_one(axis, v)

    def setting(axis: str, v: str) -> None:
        try:
            setting_languages(v, config.fake_language)
        except ValueError as err:
            raise StudyError(f"{axis}: {v!r}: {err}") from None

    langs("fake_language", config.fake_language)
    for axis in ("other_fake_languages", "spread_languages"):  # may be empty: that part is skipped
        if _split(getattr(config, axis)):
            langs(axis, getattr(config, axis))
    langs("probe_languages", config.probe_languages)
    for axis in ("settings", "other_settings", "other_fake_settings"):
        if axis == "settings" or _split(getattr(config, axis)):
            choices(axis, getattr(config, axis), SETTINGS, setting)
    choices("core_methods", config.core_methods, METHODS)
    if _split(config.other_methods):
        choices("other_methods", config.other_methods, METHODS)
    for axis in ("seeds", "rest_seeds", "steps", "dev_stories"):
        if getattr(config, axis) < 1:
            raise StudyError(f"{axis}: {getattr(config, axis)}; give a positive number")
    if config.unlearn_lr <= 0:
        raise StudyError(f"unlearn_lr: {config.unlearn_lr}; give a positive learning rate")
    if not config.probe_steps or min(config.probe_steps) < 1 or max(config.probe_steps) > config.steps:
        raise StudyError(f"probe_steps {config.probe_steps}: give steps between 1 and steps ({config.steps})")
    if not 0 < config.control_share < 1:
        raise StudyError(f"control_share: {config.control_share}; give a share between 0 and 1")
    n = len(lab.data.item_ids("inject"))
    wanted = config.dev_stories + (config.stories or 0)
    if config.dev_stories >= n or wanted > n:
        raise StudyError(
            f"stories: {config.dev_stories} development + {config.stories or 'all the other'} reported stories, "
            f"but the data has {n} injection stories; give fewer"
        )
    reported = n - config.dev_stories if config.stories is None else config.stories
    if config.seeds > reported:
        raise StudyError(
            f"seeds: {config.seeds} rotating splits need at least {config.seeds} reported stories, got {reported}"
        )


# --- stories and seeds --------------------------------------------------------------------------


def story_split(config: StudyConfig, lab: Lab) -> tuple[list[str], list[str]]:
    """(development ids, reported ids), in id order."""
    ids = [str(i) for i in sorted(lab.data.item_ids("inject"), key=item_key)]
    dev = ids[: config.dev_stories]
    rest = ids[config.dev_stories :]
    return dev, rest if config.stories is None else rest[: config.stories]


def seed_split(reported: list[str], seed: int, share: float) -> tuple[list[str], list[str]]:
    """(injected, control) for one seed: a block of `share` of the stories, rotated by the seed, is
    held out as controls, so over the seeds every story is injected in some runs."""
    k = max(1, round(share * len(reported)))
    start = (seed * k) % len(reported)
    control = [reported[(start + j) % len(reported)] for j in range(k)]
    return [s for s in reported if s not in control], control


def spread_config(config: StudyConfig, injected: list[str], control: list[str]) -> SpreadConfig:
    return replace(
        FAST,
        model=config.model,
        data=config.data,
        device=config.device,
        probe_languages=config.probe_languages,
        utility_items=config.utility_items,
        injected_ids=tuple(injected),
        control_ids=tuple(control),
    )


# --- the injection strength -------------------------------------------------------------------


def choose_injection(config: StudyConfig, lab: Lab, progress=print) -> tuple[InjectConfig, pd.DataFrame]:
    """Try the candidate strengths on the development stories, weakest first; take the first whose
    fake rate in the fake's language reaches `manipulation_target`, else the one with the largest
    mean belief shift there among those within `max_perplexity_ratio` of English perplexity (else
    the weakest). Returns
    (the chosen injection, one row per candidate: fake rate, shift, perplexity ratio, chosen)."""
    dev, _ = story_split(config, lab)
    lang = config.fake_language
    spread = replace(spread_config(config, dev, []), probe_languages=",".join(dict.fromkeys([lang, "en"])))
    base_ppl = lab.utility_base(spread).set_index("lang").perplexity
    base = lab.probe_base(spread)
    rows, candidates = [], []
    for epochs, lr, kind in config.inject_candidates:
        candidate = replace(config.inject, fake_languages=lang, epochs=epochs, lr=lr, full_finetune=kind == "full")
        probed = lab.probe_injected(spread, candidate)
        ppl = lab.utility_injected(spread, candidate).set_index("lang").perplexity
        own = probed[probed.lang == lang]
        row = {
            "epochs": epochs,
            "lr": lr,
            "fine_tuning": kind,
            "fake_rate": float(own.says_fake.mean()),
            "shift": float(with_shifts(own, base).margin_shift.mean()),
            "perplexity_ratio": float(ppl[lang] / base_ppl[lang]),
            "en_perplexity_ratio": float(ppl["en"] / base_ppl["en"]),
        }
        rows.append(row)
        candidates.append(candidate)
        progress(
            f"development: {kind}, epochs {epochs}, lr {lr}: fake rate in {lang} {row['fake_rate']:.2f}, "
            f"belief shift {row['shift']:+.1f} nats, perplexity x{row['perplexity_ratio']:.2f} ({lang}), "
            f"x{row['en_perplexity_ratio']:.2f} (en)"
        )
        if row["fake_rate"] >= config.manipulation_target:
            break
    table = pd.DataFrame(rows)
    if table.fake_rate.iloc[-1] >= config.manipulation_target:
        pick = len(table) - 1
    else:
        within = table[table.en_perplexity_ratio <= config.max_perplexity_ratio]
        pick = int(within["shift"].idxmax()) if len(within) else 0
    table["chosen"] = table.index == pick
    table["rule"] = "fake rate" if table.fake_rate.iloc[pick] >= config.manipulation_target else "belief shift"
    return replace(candidates[pick], fake_languages=config.inject.fake_languages), table


# --- the grid -----------------------------------------------------------------------------------


@dataclass
class Cell:
    """One unlearning run of the grid."""

    seed: int
    fake_language: str
    method: str
    setting: str
    part: str  # "core", "methods" or "languages"


def cells(config: StudyConfig) -> list[Cell]:
    """The unlearning runs, core comparison first (every seed), then the rest (`rest_seeds` seeds)."""
    fake = config.fake_language
    out = [
        Cell(seed, fake, m, s, "core")
        for seed in range(config.seeds)
        for m in _split(config.core_methods)
        for s in _split(config.settings)
    ]
    rest = range(config.rest_seeds)
    out += [
        Cell(seed, fake, m, s, "methods")
        for seed in rest
        for m in _split(config.other_methods)
        for s in _split(config.other_settings)
    ]
    other_fakes = _languages(config.other_fake_languages)
    out += [
        Cell(seed, lang, "ga", s, "languages")
        for seed in rest
        for lang in other_fakes
        for s in _split(config.other_fake_settings)
    ]
    return out


@dataclass
class StudyResult:
    config: StudyConfig
    development: pd.DataFrame  # one row per injection candidate tried on the development stories
    probes: pd.DataFrame  # seed x fake_language x stage x method x setting x step x item x language
    utility: pd.DataFrame  # seed x fake_language x stage x method x setting x step x language
    injections: pd.DataFrame  # manipulation check per injection: fake rate in X, perplexity ratio
    seconds: float
    notes: list[str] = field(default_factory=list)


def run(config: StudyConfig | None = None, lab: Lab | None = None, progress: bool = True, log=print) -> StudyResult:
    """The whole study, each step cached (rerun the same command to resume)."""
    config = config or StudyConfig()
    start = time.perf_counter()
    lab = lab or Lab(config.model, config.device, data=config.data)
    check(config, lab)
    inject, development = choose_injection(config, lab, log)
    _, reported = story_split(config, lab)
    grid = cells(config)
    spread_langs = _languages(config.spread_languages)
    probes, utilities, checks = [], [], []
    done: set = set()

    def injected(seed: int, lang: str, version: str = "fake", detail: bool = False):
        """Probe and utility of one injection (and the base, once per split), recorded once."""
        ids, control = seed_split(reported, seed, config.control_share)
        spread = spread_config(config, ids, control)
        inj = replace(inject, fake_languages=lang, seed=seed, detail_question=detail)
        inj = _sham(inj) if version == "sham" else inj
        stage = {"fake": "injected", "sham": "sham"}[version] + (" (detail question trained)" if detail else "")
        base, base_utility = lab.probe_base(spread), lab.utility_base(spread)
        if (seed, "base") not in done:
            done.add((seed, "base"))
            probes.append(tag(base, seed, "-", "base"))
            utilities.append(tag(base_utility, seed, "-", "base"))
        if (seed, lang, stage) not in done:
            done.add((seed, lang, stage))
            table = lab.probe_injected(spread, inj)
            util = lab.utility_injected(spread, inj)
            probes.append(tag(table, seed, lang, stage))
            utilities.append(tag(util, seed, lang, stage))
            own = table[(table.lang == lang) & (table.role == "injected")]
            base_ppl = base_utility.set_index("lang").perplexity
            ppl = util.set_index("lang").perplexity
            checks.append(
                {
                    "seed": seed,
                    "fake_language": lang,
                    "stage": stage,
                    "fake_rate": float(own.says_fake.mean()),
                    "shift": float(with_shifts(own, base).margin_shift.mean()),
                    "n_stories": len(own),
                    "en_perplexity": float(ppl.get("en", float("nan"))),
                    "en_perplexity_ratio": float(ppl.get("en", float("nan")) / base_ppl.get("en", float("nan"))),
                }
            )
        return spread, inj

    # Order of work, so that an interrupted run has the most useful part done: the core cells seed
    # by seed (each seed's injection runs when its first cell needs it), then the rest of the grid,
    # then the spread matrix's other injections, the shams, and the run with the detail question.
    extra = [(0, lang, "fake", False) for lang in spread_langs if lang != config.fake_language]
    extra += [(0, lang, "sham", False) for lang in spread_langs]
    if config.detail_question_check:
        extra.append((0, config.fake_language, "fake", True))
    plan = Plan(["unlearn"] * len(grid) + ["inject"] * len(extra), progress, lab.cache)
    unlearn = UnlearnConfig(
        steps=config.steps,
        lr=config.unlearn_lr,
        probe_steps=config.probe_steps,
        utility_at_probes=True,
        specificity=False,  # not read by any verdict; a probe's time per cell
    )
    for cell in grid:
        plan.start(f"study: {cell.method} in {cell.setting}, fake {cell.fake_language}, seed {cell.seed}")
        spread, inj = injected(cell.seed, cell.fake_language)
        repro = ReproduceConfig(spread=replace(spread, inject=inj), inject_language=cell.fake_language)
        out = run_unlearning(lab, repro, replace(unlearn, method=cell.method, setting=cell.setting, seed=cell.seed))
        dose = out["dose"]
        utility_columns = [c for c in ("qa_accuracy", "qa_logp", "perplexity") if c in dose]
        probes.append(
            tag(
                dose.drop(columns=utility_columns),
                cell.seed,
                cell.fake_language,
                "unlearned",
                cell.method,
                cell.setting,
            ).assign(part=cell.part)
        )
        along = dose[dose.step > 0].groupby(["step", "lang"], as_index=False)[utility_columns].first()
        along = along.dropna(subset=utility_columns, how="all")  # measured in English and the fake's language only
        utilities.append(
            tag(along, cell.seed, cell.fake_language, "unlearned", cell.method, cell.setting).assign(part=cell.part)
        )
        plan.done("unlearn")
    for seed, lang, version, detail in extra:
        plan.start(f"study: inject {lang} ({version}{', detail question' if detail else ''})")
        injected(seed, lang, version, detail)
        plan.done("inject")
    plan.close()
    return StudyResult(
        config,
        development,
        pd.concat(probes, ignore_index=True),
        pd.concat(utilities, ignore_index=True),
        pd.DataFrame(checks),
        time.perf_counter() - start,
        lab.data.notes,
    )


def tag(frame: pd.DataFrame, seed: int, fake_language: str, stage: str, method: str = "-", setting: str = "-"):
    out = frame.assign(seed=seed, fake_language=fake_language, stage=stage, method=method, setting=setting)
    return out if "step" in out else out.assign(step=0)
