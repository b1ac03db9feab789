"""Figures of spread and unlearning. Each function takes a tidy table and returns a Figure."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
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
    "spread": "shift beyond drift (nats)",
    "vs_sham": "shift beyond sham (nats)",
    "control_shift": "control-story drift (nats)",
    "qa_accuracy": "held-out QA accuracy",
    "perplexity": "perplexity on held-out text",
}

TITLES = {
    "fake_rate": "fake rate (exact 95% interval)",
    "spread": "spread: shift minus control-story drift (nats)\n* significant after Holm",
    "vs_sham": "fake minus sham injection (nats)",
    "margin_shift": "belief shift from base (nats)",
}

SHORT_LABELS = {"fake_rate": "fake rate", "margin_shift": "belief shift (nats)", "prefer_fake": "prefers fake"}


def _lang_label(code: str) -> str:
    lang = languages.get(code)
    return f"{code}\n{lang.tier}"


def _order(codes) -> list[str]:
    """Languages in registry order (shipped ten first), then any others in the order given."""
    codes = list(dict.fromkeys(codes))
    known = [c for c in languages.codes() if c in codes]
    return known + [c for c in codes if c not in known]


def _palette(codes) -> dict[str, tuple]:
    """One colour per language: the shipped ten keep theirs, others follow."""
    order = _order([*languages.codes()[:10], *codes])
    colors = sns.color_palette("tab10", 10) + sns.color_palette("husl", max(1, len(order) - 10))
    return dict(zip(order, colors))


def _annotations(grid: pd.DataFrame, summary: pd.DataFrame, measure: str, mark: str | None) -> np.ndarray:
    """Cell labels: the value, its interval for rates, and a star where `mark` is true."""
    cells = summary.set_index(["inject_lang", "lang"])
    labels = np.empty(grid.shape, dtype=object)
    for i, row in enumerate(grid.index):
        for j, col in enumerate(grid.columns):
            if (row, col) not in cells.index or pd.isna(grid.iloc[i, j]):
                labels[i, j] = ""
                continue
            cell = cells.loc[(row, col)]
            if measure in ("fake_rate", "true_rate"):
                labels[i, j] = f"{cell[measure]:.2f}\n[{cell[f'{measure}_lo']:.2f}, {cell[f'{measure}_hi']:.2f}]"
            else:
                star = "*" if mark and bool(cell.get(mark, False)) else ""
                labels[i, j] = f"{cell[measure]:+.1f}{star}"
    return labels


def spread_matrix(summary: pd.DataFrame, measures=("fake_rate", "spread", "vs_sham")) -> plt.Figure:
    """Heatmaps, injection language x probe language, one per measure: the fake rate with its exact
    interval, the spread beyond the drift of control stories (* = significant after Holm across the
    other languages) and the shift beyond the sham injection."""
    measures = [m for m in measures if m in summary and summary[m].notna().any()]
    order = _order(summary.lang)
    rows = _order(summary.inject_lang)
    fig, axes = plt.subplots(
        1, len(measures), figsize=(0.62 * len(order) * len(measures) + 2.2 * len(measures), 0.75 * len(rows) + 2.6)
    )
    for ax, measure in zip(np.atleast_1d(axes), measures):
        grid = summary.pivot(index="inject_lang", columns="lang", values=measure).reindex(index=rows, columns=order)
        rate = measure in ("fake_rate", "prefer_fake", "true_rate")
        limit = np.nanmax(np.abs(grid.to_numpy())) if not rate else 1
        sns.heatmap(
            grid,
            ax=ax,
            annot=_annotations(grid, summary, measure, "spread_significant" if measure == "spread" else None),
            fmt="",
            annot_kws={"fontsize": 7 if rate else 8},
            cmap="Reds" if rate else "RdBu_r",
            vmin=0 if rate else -limit,
            vmax=1 if rate else limit,
            cbar_kws={"label": LABELS.get(measure, measure), "shrink": 0.8},
        )
        ax.set_xlabel("probe language")
        ax.set_ylabel("fake injected in")
        ax.set_title(TITLES.get(measure, measure), fontsize=10)
    fig.suptitle("Spread of a fake fact injected in one language", fontsize=13)
    fig.tight_layout()
    return fig


def _bars(ax, data: pd.DataFrame, measure: str, hue: str, order: list[str], labels: dict | None = None) -> None:
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
        label = (labels or {}).get(h, str(h))
        ax.bar(x, part[measure], width, yerr=err, capsize=2, label=label, color=palette[k])
    ax.set_xticks(np.arange(len(order)), [_lang_label(c) for c in order])
    ax.set_xlabel("probe language (resource tier)")
    ax.set_ylabel(LABELS.get(measure, measure))
    ax.axhline(0, color="black", linewidth=0.6)


def spread_by_language(summary: pd.DataFrame) -> plt.Figure:
    """One panel per injection language: per probe language, the shift on the injected stories
    beside its controls (the drift of control stories, the sham injection), 95% t intervals over
    stories; * marks spread beyond drift that survives Holm's correction."""
    inject_langs = _order(summary.inject_lang)
    order = _order(summary.lang)
    series = [
        ("margin_shift", "injected stories (fake)"),
        ("control_shift", "control stories (drift)"),
        ("sham_shift", "injected stories (sham: the true story)"),
    ]
    series = [(m, label) for m, label in series if m in summary and summary[m].notna().any()]
    fig, axes = plt.subplots(
        len(inject_langs),
        1,
        figsize=(max(8, 0.9 * len(order) + 2), 3.2 * len(inject_langs)),
        sharex=True,
        squeeze=False,
    )
    palette = sns.color_palette("tab10", 3)
    for ax, lang in zip(axes[:, 0], inject_langs):
        part = summary[summary.inject_lang == lang].set_index("lang").reindex(order)
        width = 0.8 / len(series)
        for k, (measure, label) in enumerate(series):
            x = np.arange(len(order)) + (k - (len(series) - 1) / 2) * width
            err = [part[measure] - part[f"{measure}_lo"], part[f"{measure}_hi"] - part[measure]]
            ax.bar(x, part[measure], width, yerr=err, capsize=2, label=label, color=palette[k])
        if "spread_significant" in part:
            top = part[[f"{m}_hi" for m, _ in series]].max(axis=1)
            for j, (flag, y) in enumerate(zip(part.spread_significant.fillna(False), top)):
                if flag:
                    ax.text(j, y, "*", ha="center", va="bottom", fontsize=14)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(f"fake injected in {lang}", fontsize=10)
        ax.set_ylabel("belief shift (nats)")
    axes[-1, 0].set_xticks(np.arange(len(order)), [_lang_label(c) for c in order])
    axes[-1, 0].set_xlabel("probe language (resource tier)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(series), fontsize=8)
    fig.suptitle(
        "Belief shift from base with its controls (95% t intervals over stories; "
        "* spread beyond drift, Holm-corrected)",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.5 / fig.get_figheight(), 1, 1))
    return fig


def unlearn_by_setting(summary: pd.DataFrame, measures=("fake_rate", "margin_shift")) -> plt.Figure:
    """One row of panels per language setting, one column per measure: each probe language,
    the injected model next to each unlearned one (bars: mean over items, 95% bootstrap CI)."""
    measures = [measures] if isinstance(measures, str) else list(measures)
    done = summary[summary.stage == "unlearned"]
    injected = summary[summary.stage == "injected"].assign(method="injected (before unlearning)")
    settings = list(dict.fromkeys(done.setting))
    order = _order(summary.lang)
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
    """`measure` (mean over the injected items) against unlearning steps, one line per probe
    language, one panel per setting. "margin_shift" is each item's margin minus its base-model margin."""
    data = per_item[per_item.stage == "unlearned"].copy()
    if "role" in data:  # the injected stories only: control stories are the drift, not the fake
        data = data[data.role == "injected"]
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
    palette = _palette(curves.lang)
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
    fig.suptitle(f"Dose-response: the fake along {method} unlearning (mean over the injected stories)", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1 - 1.1 / fig.get_figwidth(), 1))
    return fig


def unlearn_utility(utility: pd.DataFrame) -> plt.Figure:
    """QA accuracy and perplexity per language for base, injected and each unlearned model."""
    data = utility.copy()
    data["model"] = np.where(data.stage == "unlearned", data.method + " / " + data.setting, data.stage)
    order = _order(data.lang)
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
    palette = _palette(curves.lang)
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


# One colour per unlearning method, the same in every figure; hues far apart (tab10), so that methods
# plotted together (npo, ga_kl, correct) are not three oranges.
METHOD_COLORS = {
    "ga": "#1f77b4",
    "grad_diff": "#2ca02c",
    "ga_kl": "#9467bd",
    "npo": "#ff7f0e",
    "dpo": "#d62728",
    "correct": "#17becf",
}


def _method_colors(methods) -> dict[str, str]:
    spare = iter(c for c in sns.color_palette("tab10").as_hex() if c not in METHOD_COLORS.values())
    return {m: METHOD_COLORS.get(m) or next(spare, "#7f7f7f") for m in methods}


def unlearn_frontier(frontier: pd.DataFrame, ratio_bound: float = 1.5, margin: float = 2.0) -> plt.Figure:
    """The forget-utility frontier, one panel per language setting: the fake's shift from base
    (mean over stories) against English perplexity (ratio to the injected model), one point per
    probed step; solid: in the fake's language, dashed: mean over the other probe languages."""
    fake = frontier.fake_language.iloc[0]
    settings = list(dict.fromkeys(frontier.setting))
    methods = list(dict.fromkeys(frontier.method))
    colors = _method_colors(methods)
    fig, axes = plt.subplots(1, len(settings), figsize=(3.6 * len(settings) + 1.6, 3.9), sharey=True, squeeze=False)
    for ax, setting in zip(axes[0], settings):
        for method in methods:
            part = frontier[(frontier.setting == setting) & (frontier.method == method)]
            if part.empty:
                continue
            own = part[part.lang == fake].sort_values("step")
            others = part[part.lang != fake].groupby("step", as_index=False)[["shift", "en_perplexity_ratio"]].mean()
            ax.plot(own.en_perplexity_ratio, own["shift"], "-o", ms=3, color=colors[method], label=f"{method}: {fake}")
            ax.plot(
                others.en_perplexity_ratio,
                others["shift"],
                "--s",
                ms=3,
                color=colors[method],
                label=f"{method}: other languages (mean)",
            )
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(mticker.NullFormatter())
        ax.axvline(ratio_bound, color="grey", linewidth=0.8, linestyle=":")
        ax.axhline(margin, color="grey", linewidth=0.8, linestyle=":")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(f"unlearning in: {setting}", fontsize=10)
        ax.set_xlabel("English perplexity / injected model's")
    axes[0][0].set_ylabel(f"belief shift of the {fake} fake from base (nats)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center right")
    fig.suptitle(
        f"Forget-utility frontier (fake injected in {fake}); points: probed steps; dotted: utility bound "
        f"x{ratio_bound} and removal margin {margin} nats",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1 - 2.4 / fig.get_figwidth(), 1))
    return fig


def compare_shifts(rows: pd.DataFrame, fake: str) -> plt.Figure:
    """Belief shift from base per probe language for one or more labelled configurations (a
    `label` column), 95% t intervals over stories: the explorer's and the comparison's view."""
    order = _order(rows.lang)
    fig, ax = plt.subplots(figsize=(1.0 * len(order) + 2.5, 3.6))
    _bars(
        ax,
        rows.rename(columns={"shift": "margin_shift", "shift_lo": "margin_shift_lo", "shift_hi": "margin_shift_hi"}),
        "margin_shift",
        "label",
        order,
    )
    ax.set_ylabel("belief shift from base (nats)")
    ax.set_title(f"The {fake} fake per probe language (bars: mean over stories, 95% t interval)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    fig.tight_layout()
    return fig


def paper_grid(grid: pd.DataFrame) -> plt.Figure:
    """This model's grid (fixed / not fixed / inconclusive per setting x language group) beside the
    paper's teaser grid; a cross marks cells where the two disagree."""
    colors = {"fixed": "#4c9a5a", "not fixed": "#c8553d", "inconclusive": "#b0b0b0", "nothing to fix": "#7a8fb0"}
    settings = list(dict.fromkeys(grid.setting))
    groups = list(dict.fromkeys(grid.group))
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.9 * len(settings) + 2.2))
    for ax, column, title in zip(
        axes, ("cell", "paper"), (f"this model ({grid.method.iloc[0]}, {grid.reading.iloc[0]})", "the paper")
    ):
        for i, setting in enumerate(settings):
            for j, group in enumerate(groups):
                row = grid[(grid.setting == setting) & (grid.group == group)]
                if row.empty:
                    continue
                value = row[column].iloc[0]
                ax.add_patch(plt.Rectangle((j, i), 0.96, 0.92, color=colors[value]))
                text = value if column == "paper" or row.agrees.iloc[0] else f"{value}  \u2717"
                ax.text(j + 0.48, i + 0.46, text, ha="center", va="center", fontsize=9, color="white")
        ax.set_xlim(0, len(groups))
        ax.set_ylim(len(settings), 0)
        ax.set_xticks([j + 0.48 for j in range(len(groups))], [g.replace(" ", "\n", 1) for g in groups], fontsize=9)
        ax.set_yticks([i + 0.46 for i in range(len(settings))], settings if column == "cell" else [""] * len(settings))
        ax.tick_params(length=0)
        ax.set_frame_on(False)
        ax.set_title(title, fontsize=11)
    axes[0].set_ylabel("unlearning in")
    agree = int(grid.agrees.sum())
    fig.suptitle(
        f"Which prompt languages are fixed, fake injected in {grid.fake_language.iloc[0]}: "
        f"{agree} of {len(grid)} cells agree with the paper (\u2717: disagrees)",
        fontsize=12,
    )
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
