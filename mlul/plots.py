"""Figures of spread and unlearning. Each function takes a tidy table and returns a Figure."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from mlul import languages

LABELS = {
    "fake_rate": "fake rate (answer names the fake)",
    "prefer_fake": "fraction preferring the fake",
    "margin": "margin log P(fake) - log P(true)",
    "margin_shift": "belief shift (margin change vs base, nats)",
    "specificity_shift": "specificity shift (own fake vs other fakes)",
    "qa_accuracy": "held-out QA accuracy",
    "perplexity": "perplexity on held-out text",
}

SHORT_LABELS = {"fake_rate": "fake rate", "margin_shift": "belief shift (nats)", "prefer_fake": "prefers fake"}


def _lang_label(code: str) -> str:
    lang = languages.get(code)
    return f"{code}\n{lang.tier}"


def spread_matrix(summary: pd.DataFrame, measures=("fake_rate", "margin_shift")) -> plt.Figure:
    """Heatmaps, injection language x probe language, one per measure."""
    fig, axes = plt.subplots(1, len(measures), figsize=(6.5 * len(measures), 0.6 * summary.inject_lang.nunique() + 2.6))
    for ax, measure in zip(np.atleast_1d(axes), measures):
        grid = summary.pivot(index="inject_lang", columns="lang", values=measure)
        grid = grid.reindex(
            index=[c for c in languages.codes() if c in grid.index],
            columns=[c for c in languages.codes() if c in grid.columns],
        )
        rate = measure in ("fake_rate", "prefer_fake", "true_rate")
        sns.heatmap(
            grid,
            ax=ax,
            annot=True,
            fmt=".2f" if rate else ".1f",
            cmap="Reds" if rate else "RdBu_r",
            vmin=0 if rate else None,
            vmax=1 if rate else None,
            center=None if rate else 0,
            cbar_kws={"label": LABELS.get(measure, measure)},
        )
        ax.set_xlabel("probe language")
        ax.set_ylabel("fake injected in")
        ax.set_title(LABELS.get(measure, measure))
    fig.suptitle("Spread of a fake fact injected in one language", fontsize=13)
    fig.tight_layout()
    return fig


def _bars(ax, data: pd.DataFrame, measure: str, hue: str, order: list[str]) -> None:
    hues = list(dict.fromkeys(data[hue]))
    width = 0.8 / max(1, len(hues))
    palette = sns.color_palette("tab10", len(hues))
    for k, h in enumerate(hues):
        part = data[data[hue] == h].set_index("lang").reindex(order)
        x = np.arange(len(order)) + (k - (len(hues) - 1) / 2) * width
        err = (
            [part[measure] - part[f"{measure}_lo"], part[f"{measure}_hi"] - part[measure]]
            if f"{measure}_lo" in part
            else None
        )
        ax.bar(x, part[measure], width, yerr=err, capsize=2, label=str(h), color=palette[k])
    ax.set_xticks(np.arange(len(order)), [_lang_label(c) for c in order])
    ax.set_xlabel("probe language (resource tier)")
    ax.set_ylabel(LABELS.get(measure, measure))
    ax.axhline(0, color="black", linewidth=0.6)


def spread_by_language(
    summary: pd.DataFrame, measures=("fake_rate", "margin_shift", "specificity_shift")
) -> plt.Figure:
    """Per probe language, each measure with its 95% interval, one bar per injection language."""
    measures = [m for m in measures if m in summary]
    order = [c for c in languages.codes() if c in set(summary.lang)]
    fig, axes = plt.subplots(len(measures), 1, figsize=(11, 3.4 * len(measures)), sharex=True)
    for k, (ax, measure) in enumerate(zip(np.atleast_1d(axes), measures)):
        _bars(ax, summary, measure, "inject_lang", order)
        ax.set_title(LABELS.get(measure, measure))
        if k < len(measures) - 1:
            ax.set_xlabel("")
    np.atleast_1d(axes)[0].legend(title="fake injected in", ncol=4, fontsize=8)
    fig.suptitle(
        "After injection: what each language says and believes (bars: mean over items, 95% bootstrap CI)", fontsize=12
    )
    fig.tight_layout()
    return fig


def unlearn_by_setting(summary: pd.DataFrame, measures=("fake_rate", "margin_shift")) -> plt.Figure:
    """One row of panels per language setting, one column per measure: each probe language,
    the injected model next to each unlearned one (bars: mean over items, 95% bootstrap CI)."""
    measures = [measures] if isinstance(measures, str) else list(measures)
    done = summary[summary.stage == "unlearned"]
    injected = summary[summary.stage == "injected"].assign(method="injected (before unlearning)")
    settings = list(dict.fromkeys(done.setting))
    order = [c for c in languages.codes() if c in set(summary.lang)]
    fig, axes = plt.subplots(
        len(settings), len(measures), figsize=(7.5 * len(measures), 2.9 * len(settings)), sharex=True, squeeze=False
    )
    for row, setting in enumerate(settings):
        data = pd.concat([injected, done[done.setting == setting]])
        for col, measure in enumerate(measures):
            ax = axes[row][col]
            _bars(ax, data, measure, "method", order)
            ax.set_ylabel(SHORT_LABELS.get(measure, measure))
            ax.set_title(f"unlearning in: {setting}")
            if row < len(settings) - 1:
                ax.set_xlabel("")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title="model", fontsize=8, loc="lower center", ncol=len(labels))
    fig.suptitle("What remains of the fake after unlearning, per language setting", fontsize=13)
    fig.tight_layout(rect=(0, 0.55 / fig.get_figheight(), 1, 1))
    return fig


def unlearn_dose_response(
    per_item: pd.DataFrame, measure: str = "margin_shift", method: str | None = None
) -> plt.Figure:
    """`measure` (mean over items) against unlearning steps, one line per probe language, one
    panel per setting. "margin_shift" is each item's margin minus its base-model margin."""
    data = per_item[per_item.stage == "unlearned"].copy()
    method = method or data.method.iloc[0]
    data = data[data.method == method]
    if measure == "margin_shift":
        base = per_item[per_item.stage == "base"].set_index(["id", "lang"]).margin
        data["margin_shift"] = (
            data.margin.to_numpy() - base.reindex(pd.MultiIndex.from_frame(data[["id", "lang"]])).to_numpy()
        )
    column = {"fake_rate": "says_fake", "prefer_fake": "prefers_fake"}.get(measure, measure)
    curves = data.groupby(["setting", "step", "lang"], sort=False)[column].mean().reset_index()
    settings = list(dict.fromkeys(curves.setting))
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings) + 1.2, 3.8), sharey=True, squeeze=False)
    palette = dict(zip(languages.codes(), sns.color_palette("tab10", 10)))
    for ax, setting in zip(axes[0], settings):
        part = curves[curves.setting == setting]
        for lang, line in part.groupby("lang", sort=False):
            ax.plot(
                line.step,
                line[column],
                marker="o",
                markersize=3,
                color=palette[lang],
                label=f"{lang} ({languages.get(lang).tier})",
                linewidth=2.5 if languages.get(lang).tier == "high" else 1.2,
            )
        ax.set_title(f"unlearning in: {setting}")
        ax.set_xlabel(f"{method} steps")
        ax.axhline(0, color="black", linewidth=0.6)
    axes[0][0].set_ylabel(LABELS.get(measure, measure))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title="probe language", fontsize=8, loc="center right")
    fig.suptitle(f"Dose-response: the fake along {method} unlearning (mean over items)", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1 - 1.1 / fig.get_figwidth(), 1))
    return fig


def unlearn_utility(utility: pd.DataFrame) -> plt.Figure:
    """QA accuracy and perplexity per language for base, injected and each unlearned model."""
    data = utility.copy()
    data["model"] = np.where(data.stage == "unlearned", data.method + " / " + data.setting, data.stage)
    order = [c for c in languages.codes() if c in set(data.lang)]
    fig, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for ax, measure in zip(axes, ("qa_accuracy", "perplexity")):
        _bars(ax, data, measure, "model", order)
        ax.set_title(LABELS[measure])
    axes[0].set_xlabel("")
    axes[1].set_yscale("log")
    axes[0].legend(title="model", ncol=3, fontsize=8)
    fig.suptitle("What unlearning costs: utility per language", fontsize=13)
    fig.tight_layout()
    return fig


def layer_shift(lens: pd.DataFrame) -> plt.Figure:
    """Logit lens: the belief shift (margin change vs base) read off each layer, one line per
    language. `lens` has columns lang, layer and shift (see `mlul.lens.layer_margins`)."""
    curves = lens.groupby(["lang", "layer"], sort=False)["shift"].mean().reset_index()
    fig, ax = plt.subplots(figsize=(7.5, 4))
    palette = dict(zip(languages.codes(), sns.color_palette("tab10", 10)))
    for lang, line in curves.groupby("lang", sort=False):
        ax.plot(line.layer, line["shift"], marker="o", markersize=3, color=palette[lang], label=lang)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("belief shift read at this layer (nats)")
    ax.set_title("Logit lens: at which depth the injected fake wins")
    ax.legend(title="probe language")
    fig.tight_layout()
    return fig


def similarity_map(similarity: pd.DataFrame) -> plt.Figure:
    """Heatmap of a lang x lang similarity table (see `mlul.lens.language_similarity`)."""
    fig, ax = plt.subplots(figsize=(7, 5.8))
    off_diagonal = similarity.to_numpy()[~np.eye(len(similarity), dtype=bool)]
    sns.heatmap(
        similarity,
        ax=ax,
        annot=True,
        fmt=".2f",
        cmap="viridis",
        vmin=off_diagonal.min(),
        vmax=off_diagonal.max(),
        cbar_kws={"label": "cosine similarity (centred)"},
    )
    ax.set_xlabel("language")
    ax.set_ylabel("language")
    ax.set_title("How alike the same story looks inside the model, per language pair")
    fig.tight_layout()
    return fig


def save(fig: plt.Figure, path) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def png_bytes(fig: plt.Figure) -> bytes:
    """The figure as PNG bytes (and closed), e.g. for an ipywidgets Image."""
    buffer = io.BytesIO()
    save(fig, buffer)
    return buffer.getvalue()
