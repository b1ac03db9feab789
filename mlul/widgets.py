"""ipywidgets panels: pick languages, a method and a strength, press run, watch the plot update.

Works in JupyterLab, classic Notebook and Colab. The logic lives in plain methods (`run`), so tests
build a panel and press its buttons without a browser.
"""

from __future__ import annotations

import html
from dataclasses import replace

import ipywidgets as widgets
import pandas as pd
from IPython.display import display

from mlul import languages, plots
from mlul.experiment import FAST, Lab, ReproduceConfig, fit_to_data, run_unlearning
from mlul.tables import language_table
from mlul.unlearn import METHODS, SETTINGS, UnlearnConfig


def _label(code: str) -> str:
    lang = languages.get(code)
    return f"{code} · {lang.name} ({lang.script}, {lang.tier})"


def language_options(codes: list[str] | None = None) -> list[tuple[str, str]]:
    """(label, code) pairs grouped by resource tier, then script (default: the shipped ten)."""
    codes = sorted(
        codes or languages.codes(),
        key=lambda c: (languages.get(c).tier != "high", languages.get(c).script != "Latin", languages.get(c).script),
    )
    return [(_label(c), c) for c in codes]


def language_picker(value=("en", "fr"), description: str = "languages") -> widgets.SelectMultiple:
    return widgets.SelectMultiple(
        options=language_options(),
        value=tuple(value),
        rows=10,
        description=description,
        style={"description_width": "initial"},
        layout=widgets.Layout(width="330px"),
    )


class Playground:
    """Inject a fake in one language, unlearn it with a method in a language setting, and plot
    the fake's belief shift per probe language: injected vs unlearned."""

    def __init__(self, lab: Lab | None = None, config: ReproduceConfig | None = None):
        self.config = config or ReproduceConfig(spread=replace(FAST, inject_languages="fr"))
        self.lab = lab or Lab(self.config.spread.model, self.config.spread.device)
        style = {"description_width": "initial"}
        self.data_path = widgets.Text(
            value=self.config.spread.data or "",
            placeholder="empty: the shipped set; or a path to your .jsonl",
            description="data",
            style=style,
            layout=widgets.Layout(width="420px"),
        )
        self.load_button = widgets.Button(description="Use this data", icon="folder-open")
        self.data_info = widgets.HTML()
        self.inject_language = widgets.Dropdown(description="fake injected in", style=style)
        self.load_button.on_click(lambda _: self.load_data())
        self.method = widgets.Dropdown(
            options=list(METHODS), value=self.config.unlearn.method, description="method", style=style
        )
        self.setting = widgets.Dropdown(
            options=[*SETTINGS, "custom"], value="english", description="unlearn in", style=style
        )
        self.custom_languages = language_picker(("en",), "custom languages")
        self._show_languages()
        self.steps = widgets.IntSlider(value=self.config.unlearn.steps, min=1, max=60, description="steps", style=style)
        self.lr = widgets.FloatLogSlider(
            value=self.config.unlearn.lr, base=10, min=-6, max=-2, description="learning rate", style=style
        )
        self.measure = widgets.Dropdown(
            options=[("belief shift", "margin_shift"), ("fake rate", "fake_rate"), ("prefers fake", "prefer_fake")],
            value="margin_shift",
            description="plot",
            style=style,
        )
        self.run_button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="idle")
        self.status = widgets.HTML()
        # The plot is a PNG in an Image widget: it updates in place in every front end (and in tests).
        self.plot = widgets.Image(format="png", layout=widgets.Layout(max_width="1000px"))
        self.figures = 0  # number of plots drawn so far
        self.last_summary = None
        self.run_button.on_click(lambda _: self.run())
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.data_path, self.load_button]),
                self.data_info,
                widgets.HBox(
                    [
                        widgets.VBox(
                            [self.inject_language, self.method, self.setting, self.steps, self.lr, self.measure]
                        ),
                        self.custom_languages,
                    ]
                ),
                widgets.HBox([self.run_button, self.progress, self.status]),
                self.plot,
            ]
        )

    def load_data(self) -> None:
        """Switch to the data in the path box (empty: the shipped set), validated first."""
        from mlul.data import open_data

        path = self.data_path.value.strip() or None
        try:
            data = open_data(path)
            self.lab.use_data(data)
            spread = replace(self.config.spread, data=None, items=FAST.items, control_items=FAST.control_items)
            self.config = replace(self.config, spread=fit_to_data(spread, data) if path else spread)
            self._show_languages()
        except (ValueError, FileNotFoundError) as err:
            self.data_info.value = f"<span style='color:#b00'>{str(err).splitlines()[0]}</span>"

    def _show_languages(self) -> None:
        data = self.lab.data
        codes = data.languages
        injectable = [c for c in codes if c != "en"]
        self.inject_language.options = [(_label(c), c) for c in injectable]
        if injectable:
            self.inject_language.value = (
                self.config.inject_language if self.config.inject_language in injectable else injectable[0]
            )
        self.custom_languages.options = language_options(codes)
        self.custom_languages.value = ("en",) if "en" in codes else (codes[0],)
        notes = "".join(f"<br>{n}" for n in data.notes)
        self.data_info.value = (
            f"<b>{data.source}</b>: {len(data.item_ids())} stories in {len(codes)} languages "
            f"({', '.join(codes)}){notes}"
        )

    def unlearn_config(self) -> UnlearnConfig:
        setting = ",".join(self.custom_languages.value) if self.setting.value == "custom" else self.setting.value
        if not setting:
            raise ValueError("choose at least one custom language, or another setting")
        return replace(
            self.config.unlearn,
            method=self.method.value,
            setting=setting,
            steps=self.steps.value,
            epochs=None,  # the slider's steps, not passes over the forget data
            lr=self.lr.value,
            probe_every=max(1, self.steps.value // 3),  # three redraws along the way
            probe_points=None,
            probe_steps=None,
        )

    def run(self) -> None:
        self.run_button.disabled = True
        try:
            config = replace(self.config, inject_language=self.inject_language.value)
            unlearn_config = self.unlearn_config()
            steps = unlearn_config.steps
            self._stage(0, steps, "injecting (cached after the first run)")
            inject_config = replace(config.spread.inject, fake_languages=config.inject_language)
            base = self.lab.probe_base(config.spread)
            injected = language_table(self.lab.probe_injected(config.spread, inject_config), base)
            label = f"{unlearn_config.method} in {unlearn_config.setting}"

            def watch(step: int, table: pd.DataFrame | None) -> None:
                self._stage(step, steps, f"unlearning: {label}, step {step} of {steps}")
                if table is not None and 0 < step < steps:  # a probe along the way: redraw
                    self._draw(injected, language_table(table, base), unlearn_config, step)

            cell = run_unlearning(self.lab, config, unlearn_config, watch=watch)
            dose = cell["dose"]
            self._draw(injected, language_table(dose[dose.step == dose.step.max()], base), unlearn_config, steps)
            self._stage(steps, steps, f"<b>done</b>: {label}, {steps} steps")
        except ValueError as err:
            self.status.value = f"<span style='color:#b00'>error: {err}</span>"
        finally:
            self.run_button.disabled = False

    def _draw(self, injected: pd.DataFrame, unlearned: pd.DataFrame, config: UnlearnConfig, step: int) -> None:
        """Injected vs unlearned (after `step` steps) per probe language, drawn into the plot."""
        summary = pd.concat(
            [
                injected.assign(stage="injected", method="-", setting="-"),
                unlearned.assign(stage="unlearned", method=config.method, setting=config.setting),
            ],
            ignore_index=True,
        )
        self.last_summary = summary
        # Between the end points a probe scores belief only: no answers, so no fake rate to draw yet.
        measure = self.measure.value
        if measure not in unlearned or unlearned[measure].isna().all():
            measure = "margin_shift"
        fig = plots.unlearn_by_setting(summary, measures=measure)
        fig.suptitle(f"What remains of the fake after {step} of {config.steps} unlearning steps", fontsize=13)
        self.plot.value = plots.png_bytes(fig)
        self.figures += 1

    def _stage(self, step: int, steps: int, text: str) -> None:
        self.progress.max = steps
        self.progress.value = step
        self.progress.description = f"step {step}/{steps}"
        self.status.value = text

    def _ipython_display_(self) -> None:
        display(self.widget)


# --- exploring a committed study run: no model, no training -----------------------------------


class Explorer:
    """Over a study run's CSVs (`results/study/`, committed): pick the fake's language, method,
    setting and strength (steps) and see the belief shift per probe language at once; compare two
    configurations on one plot; see the forget-utility frontier; read what the model says."""

    def __init__(self, folder: str = "results/study"):
        from pathlib import Path

        folder = Path(folder)
        missing = [name for name in ("frontier.csv", "claims.csv") if not (folder / name).exists()]
        if missing:
            raise FileNotFoundError(
                f"{folder} has no {', '.join(missing)}: give the folder `mlul study --out` wrote "
                "(the repository's results/study/ holds the reported run)"
            )
        self.frontier = pd.read_csv(folder / "frontier.csv")
        answers = folder / "answers.csv"
        self.answers = pd.read_csv(answers) if answers.exists() else None
        style = {"description_width": "initial"}
        self.updating = False  # True while `_options` resets the dropdowns: one redraw, not six
        fakes = list(dict.fromkeys(self.frontier.fake_language))
        self.fake = widgets.Dropdown(options=fakes, description="fake in", style=style)
        self.a = self._config_row("A: method")
        self.b = self._config_row("B (compare): method")
        langs = list(dict.fromkeys(self.frontier.lang))
        self.languages = widgets.SelectMultiple(
            options=language_options(langs), value=tuple(langs), rows=6, description="probe languages", style=style
        )
        self.plot = widgets.Image(format="png")
        self.table = widgets.HTML()
        self.frontier_plot = widgets.Image(format="png")
        self.says = widgets.HTML()
        stories = [] if self.answers is None else sorted(set(self.answers.id.astype(str)), key=lambda i: (len(i), i))
        self.story = widgets.Dropdown(options=stories, description="story", style=style)
        for control in (self.fake, self.languages, self.story, *self.a.values(), *self.b.values()):
            control.observe(lambda _: self.update(), names="value")
        self.fake.observe(lambda _: self._options(), names="value")
        self._options()
        tabs = widgets.Tab(
            children=[
                widgets.VBox([self.plot, self.table]),
                self.frontier_plot,
                widgets.VBox([self.story, self.says]),
            ]
        )
        for k, title in enumerate(("Explore and compare", "Frontier", "What the model says")):
            tabs.set_title(k, title)
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.fake, self.languages]),
                widgets.HBox(list(self.a.values())),
                widgets.HBox(list(self.b.values())),
                tabs,
            ]
        )

    def _config_row(self, label: str) -> dict:
        style = {"description_width": "initial"}
        return {
            "method": widgets.Dropdown(description=label, style=style),
            "setting": widgets.Dropdown(description="setting", style=style),
            "step": widgets.Dropdown(description="steps", style=style),
        }

    def _options(self) -> None:
        part = self.frontier[self.frontier.fake_language == self.fake.value]
        methods = list(dict.fromkeys(part.method))
        settings = list(dict.fromkeys(part.setting))
        steps = sorted(set(int(s) for s in part.step))
        self.updating = True
        for row, off in ((self.a, False), (self.b, True)):
            row["method"].options = (["off"] if off else []) + methods
            row["setting"].options = settings
            row["step"].options = steps
            row["method"].value = "off" if off else methods[0]
            row["setting"].value = settings[min(1, len(settings) - 1) if off else 0]
            row["step"].value = steps[-1]
        self.updating = False
        self.update()

    def selection(self, row: dict) -> pd.DataFrame:
        f = self.frontier
        method, setting, step = row["method"].value, row["setting"].value, row["step"].value
        part = f[
            (f.fake_language == self.fake.value) & (f.method == method) & (f.setting == setting) & (f.step == step)
        ]
        part = part[part.lang.isin(self.languages.value)]
        return part.assign(label=f"{method} in {setting}, {step} steps")

    def injected(self) -> pd.DataFrame:
        f = self.frontier
        part = f[(f.fake_language == self.fake.value) & (f.step == 0) & f.lang.isin(self.languages.value)]
        return part.drop_duplicates("lang").assign(label="injected (before unlearning)")

    def update(self) -> None:
        if self.updating or not self.languages.value:
            return
        rows = [self.injected(), self.selection(self.a)]
        same = all(self.a[k].value == self.b[k].value for k in self.a)
        if self.b["method"].value != "off" and not same:
            rows.append(self.selection(self.b))
        missing = [
            f"{row['method'].value} in {row['setting'].value}"
            for row, part in zip((self.a, self.b), rows[1:])
            if part.empty
        ]
        notes = [f"not in this run: {', '.join(missing)}"] if missing else []
        notes += ["B is the same configuration as A: shown once"] if same else []
        shown = pd.concat(rows, ignore_index=True)
        self.shown = shown
        self.plot.value = plots.png_bytes(plots.compare_shifts(shown, self.fake.value))
        table = shown.pivot_table(index="label", columns="lang", values="shift", sort=False).round(1)
        utility = shown.groupby("label", sort=False).en_perplexity_ratio.first().round(2)
        note = "".join(f"<p><i>{n}</i></p>" for n in notes)
        self.table.value = note + table.assign(**{"English perplexity / injected": utility}).to_html()
        part = self.frontier[
            (self.frontier.fake_language == self.fake.value)
            & (self.frontier.method == self.a["method"].value)
            & (self.frontier.setting == self.a["setting"].value)
        ]
        self.frontier_plot.value = plots.png_bytes(plots.unlearn_frontier(part))
        self.says.value = self.answers_html()

    def answers_html(self) -> str:
        """Greedy answers per probe language: base, injected and configuration A side by side; the
        fake in red, the truth in green."""
        if self.answers is None:
            return "<i>no answers.csv in this run's folder</i>"
        a = self.answers[
            self.answers.fake_language.isin([self.fake.value, "-"]) & self.answers.lang.isin(self.languages.value)
        ]
        method, setting = self.a["method"].value, self.a["setting"].value
        keep = (a.stage != "unlearned") | ((a.method == method) & (a.setting == setting))
        a = a[keep].assign(model=lambda f: f.stage.where(f.stage != "unlearned", f"{method} in {setting}"))

        def mark(row) -> str:
            color = "#b00" if row.says_fake else "#080" if row.says_true else "#444"
            return f"<span style='color:{color}'>{html.escape(str(row.answer))}</span>"

        a = a.assign(answer=[mark(r) for r in a.itertuples()], id=a.id.astype(str))
        story = self.story.value
        table = a[a.id == story].pivot_table(
            index="lang", columns="model", values="answer", aggfunc="first", sort=False
        )
        truth = self.answers[self.answers.id.astype(str) == story].drop_duplicates("lang").set_index("lang")
        if len(table):
            table["true / fake answer"] = [
                f"{html.escape(str(truth.true_answer.get(lang, '')))} / {html.escape(str(truth.fake_answer.get(lang, '')))}"
                for lang in table.index
            ]
        return f"<p>story {story}: red names the fake, green the truth</p>" + table.to_html(escape=False)

    def _ipython_display_(self) -> None:
        display(self.widget)
