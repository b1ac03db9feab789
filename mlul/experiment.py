"""Experiments composed from the steps, each step cached on disk by everything that determines it.

    base probe -> inject in language X -> probe in every language          (spread)
               -> sham injection (the true story in X) -> probe            (its control)
    ... -> unlearn with a method in a language setting -> probe again       (unlearn, reproduce)

Every probe covers two sets of stories: the *injected* ones (in the training data) and *control*
ones (never trained on), so drift that any training causes is measured beside the effect.

A `Lab` holds the data and the base model (loaded only when a step is not in the cache) and hands
out fresh copies, so every experiment starts again from the same weights. A step's cache key holds
the model's weights hash, the device, dtype and library versions, the data's content hash, the
story ids, the step's config and a hash of the code that computes it: change any of them and the
step is recomputed instead of read.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property

import pandas as pd
from tqdm.auto import tqdm

from mlul import languages
from mlul.cache import Cache, source_hash
from mlul.data import NewsData, item_key, open_data
from mlul.inject import InjectConfig
from mlul.models import DEFAULT_MODEL
from mlul.tables import language_table, shared_answers
from mlul.unlearn import UnlearnConfig


@dataclass
class SpreadConfig:
    model: str = DEFAULT_MODEL  # "gemma-3-270m", a hub id, a folder or a .gguf file
    data: str | None = None  # a JSONL file of your own stories (None: the shipped set)
    inject_languages: str = "fr,zh,sw,hi"  # one injection run per language: the rows of the matrix
    probe_languages: str = "all"  # the columns of the matrix
    items: int | None = 12  # the first N injection stories (None: all)
    control_items: int | None = 12  # the next N stories: never trained on, probed as the drift control
    sham: bool = True  # also run the sham injection (the true story in the injection language)
    inject: InjectConfig = field(default_factory=InjectConfig)  # its fake_languages is set per row
    utility_items: int | None = 4  # held-out stories for the utility measures (None: all)
    device: str = "auto"
    # Explicit story ids (the study's rotating splits); when set they replace items/control_items.
    injected_ids: tuple[str, ...] | None = None
    control_ids: tuple[str, ...] | None = None


FAST = SpreadConfig(inject_languages="fr,zh,sw,hi", items=12, control_items=12, utility_items=4)
# A tiny run for CI and smoke tests of the notebooks: its numbers mean nothing.
SMOKE = SpreadConfig(
    inject_languages="fr",
    probe_languages="en,fr,zh,sw",
    items=3,
    control_items=2,
    sham=False,
    utility_items=1,
    inject=InjectConfig(epochs=2),
)


def fit_to_data(config: SpreadConfig, data: NewsData, items: int | None = None) -> SpreadConfig:
    """A user's (small) file: `items` stories injected (default: two thirds) and the rest, at most
    `config.control_items`, kept as drift controls."""
    n = len(data.item_ids("inject"))
    controls = config.control_items or 0
    items = items if items is not None else n - min(controls, n // 3)
    return replace(
        config, data=str(data.path) if data.path else None, items=items, control_items=min(controls, n - items)
    )


def _code(kind: str) -> str:
    """A hash of the code behind a step: prompt format, matching, scoring, generation, losses."""
    from mlul import data, inject, lm, models, probe, train, unlearn

    matching = (data.normalize, data.mentions, data.answer_forms, data.says)
    prompts = (languages.qa_prompt, languages.answer_text)  # as called now (a notebook may replace them)
    parts = {
        "probe": (probe, lm, languages, *prompts, *matching),
        "utility": (probe, lm, languages, *prompts),
        "inject": (inject, train, lm, languages, *prompts, models.add_lora),
        "unlearn": (unlearn, inject.story_examples, train, lm, probe, languages, *prompts, models.add_lora, *matching),
    }
    return source_hash(*parts[kind])


class Lab:
    """The data, the base model (loaded on first use) and the result cache."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        device: str = "auto",
        cache: Cache | None = None,
        data: str | NewsData | None = None,
    ):
        self.model_name = model
        self.device = device
        self.cache = cache or Cache()
        self._cold: dict[str, float] = {}  # per step used at the top level: its cold compute time
        self._depth = 0
        self._used: list[str] = []  # the top-level steps in the order they were asked for
        self.data = data if isinstance(data, NewsData) else open_data(data)
        self._base = None
        self._tokenizer = None

    def use_data(self, data: str | NewsData | None) -> None:
        """Switch to other stories; the loaded model stays, cache keys follow the new data."""
        self.data = data if isinstance(data, NewsData) else open_data(data)
        self.__dict__.pop("fingerprint", None)

    @cached_property
    def fingerprint(self) -> dict:
        from mlul.models import environment_fingerprint, pick_device, weights_fingerprint

        return {
            "model": self.model_name,
            "weights": weights_fingerprint(self.model_name),
            "env": environment_fingerprint(pick_device(self.device), None),
            # a user's file borrows held-out stories and general text from the shipped set
            "data": self.data.fingerprint
            if self.data.path is None
            else [self.data.fingerprint, open_data().fingerprint],
        }

    def _load(self):
        if self._base is None:
            from mlul.models import load_model

            self._base, self._tokenizer = load_model(self.model_name, device=self.device)
        return self._base, self._tokenizer

    @property
    def tokenizer(self):
        return self._load()[1]

    def base_copy(self):
        """A fresh copy of the base model: train it freely, the base stays as loaded."""
        return copy.deepcopy(self._load()[0])

    # --- stories ---------------------------------------------------------------------------------

    def story_ids(self, config: SpreadConfig) -> tuple[list, list]:
        """(injected ids, control ids): the first `items` injection stories, then `control_items` more
        (or the config's explicit `injected_ids` and `control_ids`)."""
        if config.injected_ids is not None:
            return list(config.injected_ids), list(config.control_ids or ())
        ids = sorted(self.data.item_ids("inject"), key=item_key)
        injected = ids if config.items is None else ids[: config.items]
        rest = ids[len(injected) :]
        control = rest if config.control_items is None else rest[: config.control_items]
        return injected, control

    def rows(self, config: SpreadConfig, langs) -> list[dict]:
        """The injected stories' rows in `langs` (what training sees)."""
        return self.data.rows(langs, split="inject", items=self.story_ids(config)[0])

    def probe_rows(self, config: SpreadConfig) -> list[dict]:
        """Injected and control stories in the probe languages, each row marked with its `role`."""
        injected, control = self.story_ids(config)
        roles = {str(i): "injected" for i in injected} | {str(i): "control" for i in control}
        rows = self.data.rows(self.probe_languages(config), split="inject", items=injected + control)
        return [{**r, "role": roles[str(r["id"])]} for r in rows]

    def probe_languages(self, config: SpreadConfig) -> list[str]:
        return languages.resolve(config.probe_languages, available=self.data.languages)

    # --- cached steps ----------------------------------------------------------------------------

    def _get(self, kind: str, key: dict, compute) -> dict:
        def timed():
            start = time.perf_counter()
            out = compute()
            return {**out, "seconds": time.perf_counter() - start}  # the cold compute time, kept with the result

        self._depth += 1
        try:
            out = self.cache.get(kind, key, timed)
        finally:
            self._depth -= 1
        if self._depth == 0:  # a nested step's time is inside its caller's
            name = kind + json.dumps(key, sort_keys=True, default=str)
            self._cold[name] = float(out.get("seconds", 0.0))
            self._used.append(name)
        return out

    @property
    def cold_seconds(self) -> float:
        """The cold compute time of the steps this Lab used, each counted once, whether it was
        computed now or read from the cache."""
        return self.cold_seconds_since(0)

    def cold_seconds_since(self, mark: int) -> float:
        """The cold compute time of the steps used since `mark` (`len(lab._used)` taken earlier),
        each counted once."""
        return sum(self._cold[name] for name in set(self._used[mark:]))

    def _probe_key(self, config: SpreadConfig, step: str) -> dict:
        injected, control = self.story_ids(config)
        return {
            **self.fingerprint,
            "step": step,
            "code": _code("probe"),
            "items": [str(i) for i in injected],
            "control": [str(i) for i in control],
            "langs": self.probe_languages(config),
        }

    def _probe(self, model, config: SpreadConfig) -> pd.DataFrame:
        from mlul.probe import probe

        rows = self.probe_rows(config)
        return probe(model, self.tokenizer, rows).assign(role=[r["role"] for r in rows])

    def probe_base(self, config: SpreadConfig) -> pd.DataFrame:
        compute = lambda: {"table": self._probe(self._load()[0], config)}  # noqa: E731
        return self._get("probe", self._probe_key(config, "probe-base"), compute)["table"]

    def utility_base(self, config: SpreadConfig) -> pd.DataFrame:
        key = {**self._probe_key(config, "utility-base"), "code": _code("utility"), "utility": config.utility_items}
        return self._get("utility", key, lambda: {"table": self._utility(self._load()[0], config)})["table"]

    def _utility(self, model, config: SpreadConfig) -> pd.DataFrame:
        from mlul.probe import utility

        langs = self.probe_languages(config)
        return utility(
            model,
            self.tokenizer,
            rows=self.data.utility_rows(langs, config.utility_items),
            texts=self.data.general_text(langs),
            languages_spec=langs,
        )

    def injection_key(self, config: SpreadConfig, inject_config: InjectConfig) -> dict:
        return {
            **self.fingerprint,
            "step": "inject",
            "code": _code("inject"),
            "items": [str(i) for i in self.story_ids(config)[0]],
            "inject": asdict(inject_config),
        }

    def injected_state(self, config: SpreadConfig, inject_config: InjectConfig) -> dict:
        """The trained weights (LoRA adapters) of an injection run and its loss log, cached."""

        def run():
            from mlul.inject import inject
            from mlul.train import trainable_state

            langs = languages.resolve(inject_config.fake_languages, available=self.data.languages)
            if inject_config.safe_languages:
                langs += languages.resolve(inject_config.safe_languages, available=self.data.languages)
            model, log = inject(self.base_copy(), self.tokenizer, self.rows(config, langs), inject_config)
            return {"adapter": trainable_state(model), "log": pd.DataFrame(log)}

        return self._get("inject", self.injection_key(config, inject_config), run)

    def injected_model(self, config: SpreadConfig, inject_config: InjectConfig):
        """A fresh copy of the base model with the injection applied (merged into its weights)."""
        from mlul.models import add_lora

        state = self.injected_state(config, inject_config)["adapter"]
        model = self.base_copy()
        if inject_config.full_finetune:
            model.load_state_dict(state, strict=False)
            return model
        model = add_lora(model, rank=inject_config.lora_rank, alpha=inject_config.lora_alpha, seed=inject_config.seed)
        missing = set(state) - {n for n, _ in model.named_parameters()}
        if missing:
            raise RuntimeError(f"cached adapter does not fit the model: {sorted(missing)[:3]}")
        model.load_state_dict(state, strict=False)
        return model.merge_and_unload().eval()

    def _after_injection_key(self, config: SpreadConfig, inject_config: InjectConfig, step: str) -> dict:
        return {**self.injection_key(config, inject_config), **self._probe_key(config, step)}

    def utility_injected(self, config: SpreadConfig, inject_config: InjectConfig) -> pd.DataFrame:
        key = {
            **self._after_injection_key(config, inject_config, "utility-injected"),
            "code": _code("utility"),
            "utility": config.utility_items,
        }
        compute = lambda: {"table": self._utility(self.injected_model(config, inject_config), config)}  # noqa: E731
        return self._get("utility", key, compute)["table"]

    def probe_injected(self, config: SpreadConfig, inject_config: InjectConfig) -> pd.DataFrame:
        key = self._after_injection_key(config, inject_config, "probe-injected")
        compute = lambda: {"table": self._probe(self.injected_model(config, inject_config), config)}  # noqa: E731
        return self._get("probe", key, compute)["table"]


def _sham(inject_config: InjectConfig) -> InjectConfig:
    return replace(inject_config, version="real")


# --- progress -----------------------------------------------------------------------------------

# Rough relative cost of each kind of step on a CPU, for a time estimate that is right from the start.
COST = {"probe": 1.0, "utility": 0.5, "inject": 3.0, "unlearn": 4.0}


class Plan:
    """A progress bar over a run's steps (their kinds), weighted by their cost.

    The time left is estimated from the steps computed so far: a step read from the cache takes
    no time and would make the rest look free (tqdm's own estimate counts it)."""

    def __init__(self, kinds: list[str], progress: bool = True, cache: Cache | None = None):
        self.left = sum(COST[kind] for kind in kinds)
        self.cache = cache
        self.computed_cost = 0.0
        self.computed_seconds = 0.0
        self.bar = tqdm(
            total=self.left,
            desc="mlul",
            unit="step",
            disable=not progress or not kinds,
            file=sys.stderr,
            bar_format="{desc}: {percentage:3.0f}% |{bar:20}| {elapsed} elapsed{postfix}",
        )
        self.bar.set_postfix_str("? left", refresh=False)

    def start(self, what: str) -> None:
        self._began = time.perf_counter()
        self._misses = self.cache.misses if self.cache else 0
        self.bar.set_description_str(f"mlul: {what}")

    def done(self, kind: str) -> None:
        self.left -= COST[kind]
        if self.cache is None or self.cache.misses > self._misses:
            self.computed_cost += COST[kind]
            self.computed_seconds += time.perf_counter() - self._began
        self.bar.set_postfix_str(f"{self.time_left()} left", refresh=False)
        self.bar.update(COST[kind])

    def time_left(self) -> str:
        """The estimate shown: '?' until a step has been computed, then m:ss (or h:mm:ss)."""
        if not self.computed_cost:
            return "?" if self.left else "00:00"
        return tqdm.format_interval(self.computed_seconds / self.computed_cost * self.left)

    def close(self) -> None:
        self.bar.close()


# --- spread -------------------------------------------------------------------------------------


@dataclass
class SpreadResult:
    config: SpreadConfig
    base: pd.DataFrame  # per (item, probe language), before injection
    per_item: pd.DataFrame  # per (injection language, version, item, probe language), after injection
    summary: pd.DataFrame  # per (injection language, probe language): shifts, rates and controls
    seconds: float  # this call's wall time (short when steps come from the cache)
    notes: list[str] = field(default_factory=list)
    cold_seconds: float = 0.0  # the compute its steps took when first run


def spread(config: SpreadConfig = FAST, lab: Lab | None = None, progress: bool = True) -> SpreadResult:
    """Inject the fake news in each language of `config.inject_languages` (one run each, plus its
    sham) and probe every probe language: the spread matrix with its controls."""
    start = time.perf_counter()
    lab = lab or Lab(config.model, config.device, data=config.data)
    mark = len(lab._used)
    inject_langs = languages.resolve(config.inject_languages, available=lab.data.languages)
    plan = Plan(["probe"] + ["inject"] * len(inject_langs) * (2 if config.sham else 1), progress, lab.cache)
    plan.start("probing the base model")
    base = lab.probe_base(config)
    plan.done("probe")
    rows = lab.probe_rows(config)
    tables, summaries = [], []
    for lang in inject_langs:
        inject_config = replace(config.inject, fake_languages=lang)
        plan.start(f"injecting the fake in {lang}, then probing")
        injected = lab.probe_injected(config, inject_config)
        plan.done("inject")
        sham = None
        if config.sham:
            plan.start(f"sham injection (the true story) in {lang}, then probing")
            sham = lab.probe_injected(config, _sham(inject_config))
            plan.done("inject")
            tables.append(sham.assign(inject_lang=lang, version="sham"))
        tables.append(injected.assign(inject_lang=lang, version="fake"))
        summary = language_table(injected, base, lang, sham=sham, shared=shared_answers(rows, lang))
        summaries.append(summary.assign(inject_lang=lang))
    plan.close()
    per_item = pd.concat(tables, ignore_index=True)
    return SpreadResult(
        config,
        base,
        per_item,
        pd.concat(summaries, ignore_index=True),
        time.perf_counter() - start,
        lab.data.notes,
        lab.cold_seconds_since(mark),
    )


# --- unlearning ---------------------------------------------------------------------------------


@dataclass
class ReproduceConfig:
    """The paper's experiment: inject in one language, then unlearn in each language setting.

    `inject_language` is the one place that names the fake's language (it overrides
    `spread.inject_languages`)."""

    spread: SpreadConfig = field(default_factory=SpreadConfig)
    inject_language: str = "fr"  # the fake data's original language
    settings: str = "english,original,english+original,all"  # comma-separated language settings
    methods: str = "ga"  # comma-separated unlearning methods
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)  # method and setting set per cell

    def __post_init__(self) -> None:
        self.spread = replace(self.spread, inject_languages=self.inject_language)


def fast_reproduce_config(inject_language: str = "fr") -> ReproduceConfig:
    """The documented fast configuration of the paper's experiment (`mlul reproduce --fast`):
    12 stories (and 12 control stories), gradient ascent for 4 passes over each setting's forget
    data, three settings (`all` is left out for time: add it with settings=...)."""
    return ReproduceConfig(
        spread=FAST,
        inject_language=inject_language,
        settings="english,original,english+original",
        unlearn=UnlearnConfig(epochs=4, lr=1e-4, probe_points=3),
    )


def unlearn_key(lab: Lab, config: ReproduceConfig, unlearn_config: UnlearnConfig) -> dict:
    inject_config = replace(config.spread.inject, fake_languages=config.inject_language)
    return {
        **lab._after_injection_key(config.spread, inject_config, "unlearn"),
        "code": _code("unlearn"),
        "unlearn": asdict(unlearn_config),
        "utility": config.spread.utility_items,
    }


def run_unlearning(lab: Lab, config: ReproduceConfig, unlearn_config: UnlearnConfig, watch=None) -> dict:
    """One cell: unlearn the injected model with one method in one setting (cached).

    `watch(step, probe table or None)` follows the run as it trains (`unlearn`); a cached cell
    returns at once, without calling it. Returns {"adapter", "log", "dose" (per step x item x language), "utility" (per language)}."""
    inject_config = replace(config.spread.inject, fake_languages=config.inject_language)

    def run():
        from mlul.train import trainable_state
        from mlul.unlearn import unlearn

        model = lab.injected_model(config.spread, inject_config)
        rows = lab.rows(config.spread, lab.data.languages)
        probe_rows = lab.probe_rows(config.spread)
        start = lab.probe_injected(config.spread, inject_config).drop(columns=["role"])
        # Along the run, utility in English and the fake's language only: the frontier's axes, at a
        # fraction of the cost of every language.
        along = replace(config.spread, probe_languages=",".join(dict.fromkeys(["en", config.inject_language])))
        measure_utility = (lambda m: lab._utility(m, along)) if unlearn_config.utility_at_probes else None
        roles = {str(r["id"]): r["role"] for r in probe_rows}

        def with_roles(table: pd.DataFrame) -> pd.DataFrame:
            return table.assign(role=[roles[str(i)] for i in table.id])

        def follow(step: int, table: pd.DataFrame | None) -> None:
            watch(step, None if table is None else with_roles(table))

        model, log, dose = unlearn(
            model,
            lab.tokenizer,
            rows,
            unlearn_config,
            config.inject_language,
            probe_rows,
            start=start,
            utility=measure_utility,
            watch=follow if watch is not None else None,
        )
        dose = with_roles(dose)
        return {
            "adapter": trainable_state(model),
            "log": log,
            "dose": dose,
            "utility": lab._utility(model, config.spread),
        }

    return lab._get("unlearn", unlearn_key(lab, config, unlearn_config), run)


@dataclass
class ReproduceResult:
    config: ReproduceConfig
    per_item: pd.DataFrame  # stage x method x setting x step x item x language
    summary: pd.DataFrame  # stage x method x setting x language, final step: shifts, rates, controls
    utility: pd.DataFrame  # stage x method x setting x language: QA accuracy, perplexity
    seconds: float  # this call's wall time (short when steps come from the cache)
    notes: list[str] = field(default_factory=list)
    cold_seconds: float = 0.0  # the compute its steps took when first run


def _split(spec: str) -> list[str]:
    return [s.strip() for s in spec.split(",") if s.strip()]


def reproduce(config: ReproduceConfig | None = None, lab: Lab | None = None, progress: bool = True) -> ReproduceResult:
    """Base -> inject in `inject_language` (and its sham) -> for each method and setting: unlearn -> probe."""
    config = config or ReproduceConfig()
    start = time.perf_counter()
    lab = lab or Lab(config.spread.model, config.spread.device, data=config.spread.data)
    mark = len(lab._used)
    original = config.inject_language
    inject_config = replace(config.spread.inject, fake_languages=original)
    cells = [(m, s) for m in _split(config.methods) for s in _split(config.settings)]
    plan = Plan(["probe", "inject"] + ["inject"] * config.spread.sham + ["unlearn"] * len(cells), progress, lab.cache)
    plan.start("probing the base model")
    base = lab.probe_base(config.spread)
    plan.done("probe")
    plan.start(f"injecting the fake in {original}, then probing")
    injected = lab.probe_injected(config.spread, inject_config)
    plan.done("inject")
    sham = None
    if config.spread.sham:
        plan.start(f"sham injection in {original}, then probing")
        sham = lab.probe_injected(config.spread, _sham(inject_config))
        plan.done("inject")
    tables = [
        base.assign(stage="base", method="-", setting="-", step=0),
        injected.assign(stage="injected", method="-", setting="-", step=0),
    ]
    utilities = [
        lab.utility_base(config.spread).assign(stage="base", method="-", setting="-"),
        lab.utility_injected(config.spread, inject_config).assign(stage="injected", method="-", setting="-"),
    ]
    for method, setting in cells:
        plan.start(f"unlearning with {method} in {setting}, probing along the way")
        cell = run_unlearning(lab, config, replace(config.unlearn, method=method, setting=setting))
        plan.done("unlearn")
        tables.append(cell["dose"].assign(stage="unlearned", method=method, setting=setting))
        utilities.append(cell["utility"].assign(stage="unlearned", method=method, setting=setting))
    plan.close()
    per_item = pd.concat(tables, ignore_index=True)
    shared = shared_answers(lab.probe_rows(config.spread), original)
    summaries = [language_table(injected, base, original, sham=sham, shared=shared).assign(stage="injected")]
    for method, setting in cells:
        part = per_item[(per_item.method == method) & (per_item.setting == setting)]
        final = part[part.step == part.step.max()].drop(columns=["stage", "method", "setting"])
        summary = language_table(final, base, original, shared=shared)
        from_injected = language_table(final, injected, original)[
            ["lang", "margin_shift", "margin_shift_lo", "margin_shift_hi", "margin_shift_p"]
        ]
        from_injected.columns = ["lang"] + [f"from_injected_{c}" for c in from_injected.columns[1:]]
        summaries.append(
            summary.merge(from_injected, on="lang").assign(stage="unlearned", method=method, setting=setting)
        )
    summary = pd.concat(summaries, ignore_index=True)
    summary[["method", "setting"]] = summary[["method", "setting"]].fillna("-")
    return ReproduceResult(
        config,
        per_item,
        summary,
        pd.concat(utilities, ignore_index=True),
        time.perf_counter() - start,
        lab.data.notes,
        lab.cold_seconds_since(mark),
    )
