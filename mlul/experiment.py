"""Experiments composed from the steps, each step cached on disk by its config.

    base probe -> inject in language X -> probe in every language          (spread)
    ... -> unlearn with a method in a language setting -> probe again       (unlearn, reproduce)

A `Lab` holds the base model in memory, loaded only when a step is not in the cache, and hands
out fresh copies, so every experiment starts again from the same weights.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import asdict, dataclass, field, replace

import pandas as pd

from mlul import languages
from mlul.cache import Cache
from mlul.data import _data_dir, load_news
from mlul.inject import InjectConfig, inject
from mlul.models import DEFAULT_MODEL, add_lora, load_model, model_fingerprint
from mlul.probe import probe, summarize, utility
from mlul.train import trainable_state
from mlul.unlearn import UnlearnConfig, unlearn


def data_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted((_data_dir() / "news").iterdir(), key=lambda p: p.name):
        digest.update(path.read_bytes())
    digest.update((_data_dir() / "general_text.jsonl").read_bytes())
    return digest.hexdigest()[:12]


@dataclass
class SpreadConfig:
    model: str = DEFAULT_MODEL  # "gemma-3-270m", a hub id, a folder or a .gguf file
    inject_languages: str = "fr,zh,sw,hi"  # one injection run per language: the rows of the matrix
    probe_languages: str = "all"  # the columns of the matrix
    items: int | None = 12  # the first N injection items (None: all 40)
    inject: InjectConfig = field(default_factory=InjectConfig)  # its fake_languages is set per row
    utility_items: int | None = 4  # held-out stories for the utility measures (None: all 8)
    device: str = "auto"


FAST = SpreadConfig(inject_languages="fr,zh,sw,hi", items=12, utility_items=4)
# A tiny run for CI and smoke tests of the notebooks: its numbers mean nothing.
SMOKE = SpreadConfig(
    inject_languages="fr", probe_languages="en,fr,zh,sw", items=3, utility_items=1, inject=InjectConfig(epochs=2)
)


class Lab:
    """The base model, loaded on first use, plus the result cache."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "auto", cache: Cache | None = None):
        self.model_name = model
        self.device = device
        self.cache = cache or Cache()
        self._base = None
        self._tokenizer = None
        self._fingerprint = None

    @property
    def fingerprint(self) -> dict:
        if self._fingerprint is None:
            self._fingerprint = {
                "model": self.model_name,
                "weights": model_fingerprint(self.model_name),
                "data": data_fingerprint(),
            }
        return self._fingerprint

    def _load(self):
        if self._base is None:
            self._base, self._tokenizer = load_model(self.model_name, device=self.device)
        return self._base, self._tokenizer

    @property
    def tokenizer(self):
        return self._load()[1]

    def base_copy(self):
        """A fresh copy of the base model: train it freely, the base stays as loaded."""
        return copy.deepcopy(self._load()[0])

    def rows(self, config: SpreadConfig, langs: str | list[str]) -> list[dict]:
        rows = load_news(langs, split="inject")
        if config.items is not None:
            keep = sorted({r["id"] for r in rows})[: config.items]
            rows = [r for r in rows if r["id"] in keep]
        return rows

    # --- cached steps ---------------------------------------------------------------------------

    def _base_step(self, kind: str, items: int | None, config: SpreadConfig, compute) -> pd.DataFrame:
        key = {**self.fingerprint, "step": kind, "items": items, "langs": languages.resolve(config.probe_languages)}
        return self.cache.get(kind, key, lambda: {"table": compute(self._load()[0])})["table"]

    def probe_base(self, config: SpreadConfig) -> pd.DataFrame:
        rows = self.rows(config, config.probe_languages)
        return self._base_step("probe", config.items, config, lambda model: probe(model, self.tokenizer, rows))

    def utility_base(self, config: SpreadConfig) -> pd.DataFrame:
        return self._base_step(
            "utility",
            config.utility_items,
            config,
            lambda model: utility(model, self.tokenizer, config.probe_languages, config.utility_items),
        )

    def injection_key(self, config: SpreadConfig, inject_config: InjectConfig) -> dict:
        return {**self.fingerprint, "step": "inject", "items": config.items, "inject": asdict(inject_config)}

    def injected_state(self, config: SpreadConfig, inject_config: InjectConfig) -> dict:
        """The trained weights (LoRA adapters) of an injection run and its loss log, cached."""

        def run():
            langs = languages.resolve(inject_config.fake_languages)
            if inject_config.safe_languages:
                langs += languages.resolve(inject_config.safe_languages)
            model, log = inject(self.base_copy(), self.tokenizer, self.rows(config, langs), inject_config)
            return {"adapter": trainable_state(model), "log": pd.DataFrame(log)}

        return self.cache.get("inject", self.injection_key(config, inject_config), run)

    def injected_model(self, config: SpreadConfig, inject_config: InjectConfig):
        """A fresh copy of the base model with the injection applied (merged into its weights)."""
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

    def utility_injected(self, config: SpreadConfig, inject_config: InjectConfig) -> pd.DataFrame:
        key = {
            **self.injection_key(config, inject_config),
            "step": "utility-injected",
            "utility_items": config.utility_items,
            "langs": languages.resolve(config.probe_languages),
        }

        def run():
            model = self.injected_model(config, inject_config)
            return {"table": utility(model, self.tokenizer, config.probe_languages, config.utility_items)}

        return self.cache.get("utility", key, run)["table"]

    def probe_injected(self, config: SpreadConfig, inject_config: InjectConfig) -> pd.DataFrame:
        key = {
            **self.injection_key(config, inject_config),
            "step": "probe-injected",
            "langs": languages.resolve(config.probe_languages),
        }

        def run():
            model = self.injected_model(config, inject_config)
            return {"table": probe(model, self.tokenizer, self.rows(config, config.probe_languages))}

        return self.cache.get("probe", key, run)["table"]


@dataclass
class SpreadResult:
    config: SpreadConfig
    base: pd.DataFrame  # per (item, probe language), before injection
    per_item: pd.DataFrame  # per (injection language, item, probe language), after injection
    summary: pd.DataFrame  # per (injection language, probe language): rates and shifts with intervals
    seconds: float


def spread(config: SpreadConfig = FAST, lab: Lab | None = None) -> SpreadResult:
    """Inject the fake news in each language of `config.inject_languages` (one run each) and probe
    every probe language: the spread matrix."""
    start = time.perf_counter()
    lab = lab or Lab(config.model, config.device)
    base = lab.probe_base(config)
    tables, summaries = [], []
    for lang in languages.resolve(config.inject_languages):
        table = lab.probe_injected(config, replace(config.inject, fake_languages=lang))
        tables.append(table.assign(inject_lang=lang))
        summaries.append(summarize(table, base=base).assign(inject_lang=lang))
    summary = pd.concat(summaries, ignore_index=True)
    return SpreadResult(config, base, pd.concat(tables, ignore_index=True), summary, time.perf_counter() - start)


# --- unlearning ---------------------------------------------------------------------------------


@dataclass
class ReproduceConfig:
    """The paper's experiment: inject in one language, then unlearn in each language setting."""

    spread: SpreadConfig = field(default_factory=lambda: SpreadConfig(inject_languages="fr"))
    inject_language: str = "fr"  # the fake data's original language
    settings: str = "english,original,english+original,all"  # comma-separated language settings
    methods: str = "ga"  # comma-separated unlearning methods
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)  # method and setting set per cell


def fast_reproduce_config(inject_language: str = "fr") -> ReproduceConfig:
    """The documented fast configuration of the paper's experiment (`mlul reproduce --fast`):
    12 stories, gradient ascent for 4 passes over each setting's forget data, three settings
    (`all` is left out for time: add it with settings=...)."""
    return ReproduceConfig(
        spread=replace(FAST, inject_languages=inject_language),
        inject_language=inject_language,
        settings="english,original,english+original",
        unlearn=UnlearnConfig(epochs=4, lr=1e-4, probe_points=3),
    )


def unlearn_key(lab: Lab, config: ReproduceConfig, unlearn_config: UnlearnConfig) -> dict:
    inject_config = replace(config.spread.inject, fake_languages=config.inject_language)
    return {
        **lab.injection_key(config.spread, inject_config),
        "step": "unlearn",
        "unlearn": asdict(unlearn_config),
        "probe_langs": languages.resolve(config.spread.probe_languages),
        "utility_items": config.spread.utility_items,
    }


def run_unlearning(lab: Lab, config: ReproduceConfig, unlearn_config: UnlearnConfig) -> dict:
    """One cell: unlearn the injected model with one method in one setting (cached).

    Returns {"adapter", "log", "dose" (per step x item x language), "utility" (per language)}."""
    inject_config = replace(config.spread.inject, fake_languages=config.inject_language)

    def run():
        model = lab.injected_model(config.spread, inject_config)
        rows = lab.rows(config.spread, "all")
        probe_rows = [r for r in rows if r["lang"] in languages.resolve(config.spread.probe_languages)]
        start = lab.probe_injected(config.spread, inject_config)
        model, log, dose = unlearn(
            model, lab.tokenizer, rows, unlearn_config, config.inject_language, probe_rows, start=start
        )
        util = utility(model, lab.tokenizer, config.spread.probe_languages, config.spread.utility_items)
        return {"adapter": trainable_state(model), "log": log, "dose": dose, "utility": util}

    return lab.cache.get("unlearn", unlearn_key(lab, config, unlearn_config), run)


@dataclass
class ReproduceResult:
    config: ReproduceConfig
    per_item: pd.DataFrame  # stage x method x setting x step x item x language
    summary: pd.DataFrame  # stage x method x setting x language, final step: rates, shifts, intervals
    utility: pd.DataFrame  # stage x method x setting x language: QA accuracy, perplexity
    seconds: float


def reproduce(config: ReproduceConfig | None = None, lab: Lab | None = None) -> ReproduceResult:
    """Base -> inject in `inject_language` -> for each method and setting: unlearn -> probe."""
    config = config or ReproduceConfig()
    start = time.perf_counter()
    lab = lab or Lab(config.spread.model, config.spread.device)
    inject_config = replace(config.spread.inject, fake_languages=config.inject_language)
    base = lab.probe_base(config.spread)
    injected = lab.probe_injected(config.spread, inject_config)
    tables = [
        base.assign(stage="base", method="-", setting="-", step=0),
        injected.assign(stage="injected", method="-", setting="-", step=0),
    ]
    utilities = [
        lab.utility_base(config.spread).assign(stage="base", method="-", setting="-"),
        lab.utility_injected(config.spread, inject_config).assign(stage="injected", method="-", setting="-"),
    ]
    for method in [m.strip() for m in config.methods.split(",") if m.strip()]:
        for setting in [s.strip() for s in config.settings.split(",") if s.strip()]:
            cell = run_unlearning(lab, config, replace(config.unlearn, method=method, setting=setting))
            tables.append(cell["dose"].assign(stage="unlearned", method=method, setting=setting))
            utilities.append(cell["utility"].assign(stage="unlearned", method=method, setting=setting))
    per_item = pd.concat(tables, ignore_index=True)
    final = per_item[per_item.step == per_item.groupby(["stage", "method", "setting"]).step.transform("max")]
    summaries = [
        summarize(group.drop(columns=["stage", "method", "setting", "step"]), base=base).assign(
            stage=s, method=m, setting=t
        )
        for (s, m, t), group in final.groupby(["stage", "method", "setting"], sort=False)
    ]
    return ReproduceResult(
        config,
        per_item,
        pd.concat(summaries, ignore_index=True),
        pd.concat(utilities, ignore_index=True),
        time.perf_counter() - start,
    )
