"""The study's numbers: seeds pooled per story, the two readings of every unlearning cell, the
claims, the frontier and the paper's grid.

Pooling: a story's measure is its mean over the seeds in which it had the same role (injected or
control), so stories stay the unit of every test and seeds narrow each story's value (as
`stats.story_means`). A story injected in two seeds and held out in the third is an injected row
and a control row; the base model is the same in every seed.

Two readings of each unlearning cell (all cells run the same steps with the same batch size):
- `equal cost`: at the last step, the same optimizer steps and forget examples seen everywhere;
- `matched utility`: at the last probed step at which English perplexity is at most
  `report.PERPLEXITY_RATIO` times the injected model's (mean over seeds), so no setting is read
  at a point where the model is broken. If no step qualifies, the first probed step is read and
  the claim's utility check then fails it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from mlul import languages, report, stats
from mlul.tables import language_table, with_shifts

KEYS = ["stage", "method", "setting", "step", "role", "id", "lang"]
MEASURES = ("margin", "specificity", "specificity_true", "logp_true", "logp_fake", "n_tokens_true", "n_tokens_fake")
READINGS = ("equal cost", "matched utility")
PAPER_SETTINGS = {
    "english": "English",
    "original": "harmful data's language",
    "all": "multilingual",
    "english+original": "English + harmful data's language",
}
PAPER_GRID = {  # ../shared/PAPER.md, the teaser figure
    "english": ("fixed", "not fixed", "fixed", "not fixed"),
    "original": ("not fixed", "fixed", "not fixed", "fixed"),
    "all": ("not fixed", "not fixed", "not fixed", "not fixed"),
    "english+original": ("fixed", "fixed", "fixed", "fixed"),
}
GROUPS = ("English", "the fake's language", "other high-resource", "low-resource")


def pooled(probes: pd.DataFrame, fake_language: str) -> pd.DataFrame:
    """The probes of one fake language (and the base), one row per (stage, method, setting, step,
    role, story, language), measures averaged over seeds; `says_fake`/`says_true`: in more than half the seeds."""
    part = probes[probes.fake_language.isin([fake_language, "-"])].copy()
    part["id"] = part.id.astype(str)
    groups = part.groupby(KEYS, sort=False)
    out = groups[[c for c in MEASURES if c in part]].mean()
    out["n_seeds"] = groups.seed.nunique()
    for flag in ("says_fake", "says_true"):
        if flag in part:
            share = groups[flag].mean()
            out[flag] = (share > 0.5).where(share.notna())
    out = out.reset_index()
    out["prefers_fake"] = out.margin > 0
    return out


def subset(result, fake_language: str, method: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pooled probes, mean utility) of one fake language, with `method` over the seeds it ran in
    only, so every comparison with the injected model pairs the same seeds."""
    probes, utility = result.probes, result.utility
    if method is not None:
        ran = probes[
            (probes.stage == "unlearned") & (probes.method == method) & (probes.fake_language == fake_language)
        ]
        seeds = set(ran.seed)
        probes = probes[probes.seed.isin(seeds) & ((probes.stage != "unlearned") | (probes.method == method))]
        utility = utility[utility.seed.isin(seeds) & ((utility.stage != "unlearned") | (utility.method == method))]
    return pooled(probes, fake_language), utility_mean(utility, fake_language)


def base_of(per_item: pd.DataFrame) -> pd.DataFrame:
    """The base model's rows, one per (story, language) whatever its role."""
    base = per_item[per_item.stage == "base"]
    return base.drop_duplicates(["id", "lang"])


def utility_mean(utility: pd.DataFrame, fake_language: str) -> pd.DataFrame:
    part = utility[utility.fake_language.isin([fake_language, "-"])]
    keys = ["stage", "method", "setting", "step", "lang"]
    return part.groupby(keys, sort=False)[["perplexity", "qa_accuracy"]].mean().reset_index()


def reading_steps(u: pd.DataFrame) -> pd.DataFrame:
    """Per (method, setting) of a `utility_mean` table: the step of each reading and the English
    perplexity ratio there."""
    injected = u[(u.stage == "injected") & (u.lang == "en")].perplexity.iloc[0]
    en = u[(u.stage == "unlearned") & (u.lang == "en")]
    rows = []
    for (method, setting), part in en.groupby(["method", "setting"], sort=False):
        part = part.sort_values("step")
        ratio = part.perplexity / injected
        ok = part[ratio <= report.PERPLEXITY_RATIO]
        matched = int(ok.step.max()) if len(ok) else int(part.step.min())
        for reading, step in zip(READINGS, (int(part.step.max()), matched)):
            rows.append(
                {
                    "method": method,
                    "setting": setting,
                    "reading": reading,
                    "step": step,
                    "en_perplexity_ratio": float(ratio[part.step == step].iloc[0]),
                    "utility_bound_met": bool(len(ok)) if reading == "matched utility" else None,
                }
            )
    return pd.DataFrame(rows)


def at_reading(per_item: pd.DataFrame, utility: pd.DataFrame, steps: pd.DataFrame, reading: str):
    """(per_item, utility) with each unlearned cell cut at its step for `reading`, and the
    unlearned utility at that step, in the shape `report.claims` reads."""
    chosen = steps[steps.reading == reading].set_index(["method", "setting"]).step
    unlearned = per_item.stage == "unlearned"
    cell_step = chosen.reindex(pd.MultiIndex.from_frame(per_item[["method", "setting"]])).to_numpy()
    keep = ~unlearned | (per_item.step.to_numpy() == cell_step)
    u_unlearned = utility.stage == "unlearned"
    u_step = chosen.reindex(pd.MultiIndex.from_frame(utility[["method", "setting"]])).to_numpy()
    u_keep = ~u_unlearned | (utility.step.to_numpy() == u_step)
    return per_item[keep], utility[u_keep]


def spread_controls(result, fake_language: str, shared: pd.DataFrame | None = None) -> pd.DataFrame:
    """Claim 1's table, per probe language: the shift of the injected stories, the drift of the
    control stories, their difference (Welch's t, Holm), the shift split into stories whose fake
    is the same string as in the fake's language (`shared`) or not (`translated`), and, where the
    sham ran, the shift beyond it (`vs_sham`)."""
    per_item, _ = subset(result, fake_language)
    injected = per_item[(per_item.stage == "injected") & (per_item.method == "-")]
    spread = language_table(injected, base_of(per_item), fake_language, shared=shared)
    # The sham ran in seed 0 only: compare it with seed 0's injection, not the pooled one.
    probes = result.probes
    sham_seeds = set(probes[(probes.stage == "sham") & (probes.fake_language == fake_language)].seed)
    if sham_seeds:
        own = pooled(probes[probes.seed.isin(sham_seeds)], fake_language)
        own_injected = own[(own.stage == "injected") & (own.method == "-")]
        sham = language_table(own_injected, base_of(own), fake_language, sham=own[own.stage == "sham"])
        spread = spread.merge(sham[["lang", *[c for c in sham if c.startswith(("vs_sham", "sham_shift"))]]], on="lang")
    return spread.assign(n_seeds=int(injected.n_seeds.max()), sham_seeds=len(sham_seeds))


CONTROL_COLUMNS = {
    "lang": "language",
    "margin_shift": "shift",
    "control_shift": "drift",
    "spread": "beyond drift",
    "spread_lo": "lo",
    "spread_hi": "hi",
    "spread_p_holm": "Holm p",
    "shared_shift": "shared",
    "translated_shift": "translated",
    "vs_sham": "vs sham",
    "vs_sham_lo": "sham lo",
    "vs_sham_hi": "sham hi",
}


def claims(
    result, fake_language: str, shared: pd.DataFrame | None = None, spread: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The three claims for one fake language, each unlearning claim at both readings; `n_seeds`
    says how many seeds stand behind each row. `spread`: its `spread_controls`, if already made."""
    spread = spread_controls(result, fake_language, shared) if spread is None else spread
    records = [report.claim_spread(spread, fake_language) | {"reading": "-", "n_seeds": int(spread.n_seeds.max())}]
    for method in _methods(result, fake_language):
        per_item, utility = subset(result, fake_language, method)
        steps = reading_steps(utility)
        settings = set(per_item[per_item.stage == "unlearned"].setting)
        n_seeds = int(per_item[per_item.stage == "unlearned"].n_seeds.max())
        for reading in READINGS:
            cut, cut_utility = at_reading(per_item, utility, steps, reading)
            extra = {"reading": reading, "n_seeds": n_seeds}
            if "english" in settings:
                records.append(report.claim_english_only(cut, fake_language, method, cut_utility) | extra)
            if "english+original" in settings:
                records.append(report.claim_english_and_original(cut, fake_language, method, cut_utility) | extra)
    return pd.DataFrame(records).assign(fake_language=fake_language)


DETAIL_STAGE = "injected (detail question trained)"


def detail_question_claim(result, fake_language: str, shared: pd.DataFrame | None = None) -> pd.DataFrame:
    """Claim 1, same test, for the injection that also trains the detail question (the earlier
    design; seed 0 only): one row, or none if that injection did not run."""
    probes = result.probes
    seeds = set(probes[(probes.stage == DETAIL_STAGE) & (probes.fake_language == fake_language)].seed)
    if not seeds:
        return pd.DataFrame()
    per_item = pooled(probes[probes.seed.isin(seeds)], fake_language)
    table = language_table(per_item[per_item.stage == DETAIL_STAGE], base_of(per_item), fake_language, shared=shared)
    row = report.claim_spread(table, fake_language)
    extra = {"reading": "detail question trained", "n_seeds": len(seeds), "per_seed": row["verdict"]}
    return pd.DataFrame([row | extra]).assign(fake_language=fake_language)


def per_seed(result, fake_language: str, shared: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each claim's verdict within each seed alone (its own injection, controls and unlearning
    runs): the pooled intervals treat seeds as fixed, so agreement across seeds is the check on
    seed-to-seed variation. One row per (claim, method, reading), a `per_seed` column such as
    "holds, holds, inconclusive"."""
    seeds = sorted(set(result.probes[result.probes.fake_language == fake_language].seed))
    verdicts = []
    for seed in seeds:
        one = replace(
            result,
            probes=result.probes[result.probes.seed == seed],
            utility=result.utility[result.utility.seed == seed],
        )
        verdicts.append(claims(one, fake_language, shared).assign(seed=seed))
    table = pd.concat(verdicts, ignore_index=True)
    keys = ["claim", "method", "reading"]
    return table.groupby(keys, sort=False).verdict.agg(", ".join).rename("per_seed").reset_index()


def frontier(result, fake_language: str) -> pd.DataFrame:
    """Per (method, setting, step, probe language): the injected stories' mean shift from base
    (t interval over stories) with English perplexity (ratio to the injected model) and mean QA
    accuracy at that step; step 0 is the injected model."""
    rows = []
    for method in _methods(result, fake_language):
        per_item, utility = subset(result, fake_language, method)
        base = base_of(per_item)
        along = set(utility[utility.stage == "unlearned"].lang)  # the languages utility was measured in
        injected_u = utility[(utility.stage == "injected") & utility.lang.isin(along)].set_index("lang")
        unlearned = per_item[(per_item.stage == "unlearned") & (per_item.role == "injected")]
        for (setting, step), part in unlearned.groupby(["setting", "step"], sort=False):
            u = utility[(utility.setting == setting) & (utility.step == step)].set_index("lang")
            u = injected_u if step == 0 else u
            ratio = float(u.perplexity.get("en", np.nan) / injected_u.perplexity.get("en", np.nan))
            for lang, group in with_shifts(part, base).groupby("lang", sort=False):
                test = stats.shift_test(group.margin_shift.to_numpy())
                rows.append(
                    {
                        "method": method,
                        "setting": setting,
                        "step": int(step),
                        "lang": lang,
                        "shift": test["mean"],
                        "shift_lo": test["lo"],
                        "shift_hi": test["hi"],
                        "n_stories": len(group),
                        "n_seeds": int(group.n_seeds.max()),
                        "en_perplexity_ratio": ratio,
                        "qa_accuracy": float(u.qa_accuracy.mean()),
                    }
                )
    return pd.DataFrame(rows).assign(fake_language=fake_language)


def language_groups(fake_language: str, probed: list[str]) -> dict[str, list[str]]:
    others = [c for c in probed if c not in ("en", fake_language)]
    return {
        "English": ["en"],
        "the fake's language": [fake_language],
        "other high-resource": [c for c in others if languages.get(c).tier == "high"],
        "low-resource": [c for c in others if languages.get(c).tier == "low"],
    }


def paper_grid(result, fake_language: str, method: str = "ga", reading: str = "equal cost") -> pd.DataFrame:
    """The paper's teaser grid from this model: setting x prompt-language group, each cell `fixed`
    (every language of the group: upper 95% bound of the shift from base below MARGIN), `not fixed`
    (some language still significantly above base: one-sided t, Holm across the row's languages)
    or `inconclusive`; `nothing to fix` where the injection never moved the group (upper bound of
    the injected model's shift already below MARGIN in every language of it). Beside it the
    paper's cell and whether they agree."""
    per_item, utility = subset(result, fake_language, method)
    base = base_of(per_item)
    cut, cut_utility = at_reading(per_item, utility, reading_steps(utility), reading)
    injected = with_shifts(per_item[(per_item.stage == "injected") & (per_item.role == "injected")], base)
    untouched = {
        lang: stats.equivalence_upper(part.margin_shift.to_numpy(), report.MARGIN)["below"]
        for lang, part in injected.groupby("lang", sort=False)
    }
    rows = []
    for setting in PAPER_GRID:
        kept, _ = report.utility_kept(cut_utility, method, setting)
        after = cut[(cut.stage == "unlearned") & (cut.method == method) & (cut.setting == setting)]
        after = after[after.role == "injected"]
        if after.empty:
            continue
        shifted = with_shifts(after, base)
        langs = list(dict.fromkeys(shifted.lang))
        values = {lang: shifted[shifted.lang == lang].margin_shift.to_numpy() for lang in langs}
        p = [stats.shift_test(values[lang], alternative="greater")["p"] for lang in langs]
        still = dict(zip(langs, stats.holm(p, report.ALPHA)[0]))
        removed = {lang: stats.equivalence_upper(values[lang], report.MARGIN)["below"] for lang in langs}
        for group, paper in zip(GROUPS, PAPER_GRID[setting]):
            members = language_groups(fake_language, langs)[group]
            if not members:
                continue
            if all(untouched.get(c, False) for c in members):
                cell = "nothing to fix"
            elif all(removed[c] for c in members):
                cell = "fixed"
            elif any(still[c] and not removed[c] for c in members):
                cell = "not fixed"
            else:
                cell = "inconclusive"
            rows.append(
                {
                    "setting": setting,
                    "group": group,
                    "languages": ",".join(members),
                    "cell": cell,
                    "paper": paper,
                    "agrees": cell == paper,
                    "utility_kept": kept,  # a cell read where the model is broken says little
                }
            )
    return pd.DataFrame(rows).assign(fake_language=fake_language, method=method, reading=reading)


def detail_question_side_by_side(result, fake_language: str) -> pd.DataFrame:
    """Seed 0, fake in `fake_language`: the mean shift from base per probe language on the injected
    stories, trained without the detail question (the reported runs) and with it (as before).
    Empty unless both injections ran."""
    probes = result.probes[(result.probes.seed == 0) & result.probes.fake_language.isin([fake_language, "-"])]
    base = probes[probes.stage == "base"].assign(id=lambda f: f.id.astype(str))
    columns = {}
    for stage, name in (("injected", "without detail question"), (DETAIL_STAGE, "with it")):
        part = probes[(probes.stage == stage) & (probes.role == "injected")].assign(id=lambda f: f.id.astype(str))
        if part.empty:
            continue
        table = language_table(part, base, fake_language)
        columns[f"shift, {name}"] = table.set_index("lang").margin_shift.round(1)
        columns[f"fake rate, {name}"] = table.set_index("lang").fake_rate.round(2)
    return pd.DataFrame(columns).reset_index() if len(columns) == 4 else pd.DataFrame()


def manipulation_verdict(result) -> str:
    """One sentence: did the chosen injection pass the manipulation check on the development stories?"""
    dev, target = result.development, result.config.manipulation_target
    chosen = dev[dev.chosen].iloc[0]
    name = f"{chosen.fine_tuning} fine-tuning, {chosen.epochs:g} epochs at lr {chosen.lr:g}"
    if chosen.fake_rate >= target:
        return f"**Passes**: {name} reached a fake rate of {chosen.fake_rate:.2f} (aim {target}) on the development stories."
    return (
        f"**Fails**: no candidate strength reached a fake rate of {target} in the greedy answers on the "
        f"development stories (best {dev.fake_rate.max():.2f}). The study goes on with the candidate that moves "
        f"belief most while English perplexity stays within {result.config.max_perplexity_ratio}x of the base "
        f"model's: {name}, belief shift {chosen['shift']:+.1f} nats, fake rate {chosen.fake_rate:.2f}. "
        "Its verdicts are about belief (margins), not about what the model says."
    )


def ran_and_cut(result) -> list[str]:
    """Markdown lines: every part of the grid that ran (cells, seeds, stories) and what the full
    design has that this run did not, with what the cut does to the intervals."""
    from mlul.study import StudyConfig
    from mlul.unlearn import METHODS

    p, design = result.probes, StudyConfig()
    unlearned = p[p.stage == "unlearned"]
    lines = ["## What ran, and what was cut", ""]
    for part, group in unlearned.groupby("part", sort=False):
        cells = group[["seed", "fake_language", "method", "setting"]].drop_duplicates()
        lines.append(
            f"- **{part}**: {len(cells)} unlearning cells; fake in {', '.join(dict.fromkeys(cells.fake_language))}; "
            f"methods {', '.join(dict.fromkeys(cells.method))}; settings {', '.join(dict.fromkeys(cells.setting))}; "
            f"seeds {', '.join(str(s) for s in sorted(set(cells.seed)))}"
        )
    injected = p[p.stage.str.startswith(("injected", "sham"))][["seed", "fake_language", "stage"]].drop_duplicates()
    lines.append(
        "- **injections**: "
        + "; ".join(f"{r.stage} in {r.fake_language} (seed {r.seed})" for r in injected.itertuples())
    )
    ran_methods = set(unlearned.method)
    ran_fakes = set(injected.fake_language)
    cut = [m for m in METHODS if m not in ran_methods]
    # the design's fake languages: French, a non-Latin high-resource one (ru or zh), Swahili
    wanted = [("fr",), ("ru", "zh"), ("sw",)]
    cut_fakes = [" or ".join(w) for w in wanted if not ran_fakes & set(w)]
    shams = set(injected[injected.stage == "sham"].fake_language)
    spread_matrix = sorted(ran_fakes & shams)
    seeds_done = sorted(set(unlearned[unlearned.part == "core"].seed))
    few_seeds = [
        f"the {part} part on {group.seed.nunique()} seed{'s' * (group.seed.nunique() > 1)}, settings "
        f"{', '.join(dict.fromkeys(group.setting))}"
        for part, group in unlearned[unlearned.part != "core"].groupby("part", sort=False)
        if group.seed.nunique() < design.seeds
    ]
    cuts = [
        x
        for x in (
            f"methods {', '.join(cut)} not run" if cut else "",
            f"fake languages {', '.join(cut_fakes)} not injected" if cut_fakes else "",
            "no sham injection" if not shams else "",
            f"the spread matrix has {len(spread_matrix)} of the design's 4 injection languages with a sham "
            f"({', '.join(spread_matrix) or 'none'}; without one: {', '.join(sorted(ran_fakes - shams)) or 'none'})"
            if len(spread_matrix) < 4
            else "",
            f"the core comparison has {len(seeds_done)} of the design's {design.seeds} seeds"
            if len(seeds_done) < design.seeds
            else "",
            "the detail-question side-by-side not run" if not injected.stage.str.contains("detail").any() else "",
            *few_seeds,
        )
        if x
    ]
    lines += [
        "",
        "Cut from the full design (every method on every setting, fakes in fr, ru or zh, and sw, "
        "the spread matrix for four injection languages, each with its sham, at least 3 seeds): "
        + ("; ".join(cuts) or "nothing")
        + ". Rows with fewer seeds have intervals over the same stories but a single injection: "
        "they cannot show seed-to-seed variation (see `per seed` in the claims table), and a claim "
        "1 without a sham rests on the drift controls alone.",
        "",
    ]
    return lines


def _over_seeds(n: int) -> str:
    return f"Pooled over {n} seeds" if n > 1 else "One seed"


def controls_markdown(controls: pd.DataFrame) -> list[str]:
    """Claim 1's controls per fake language, as lines of docs/results.md."""
    from mlul.report import markdown_table

    lines = []
    for fake_language, table in controls.groupby("fake_language", sort=False):
        shown = table[[c for c in CONTROL_COLUMNS if c in table]].rename(columns=CONTROL_COLUMNS)
        lines += [
            f"## Claim 1's controls, per language (fake in {fake_language})",
            "",
            f"{_over_seeds(int(table.n_seeds.max()))}. `shift`: the injected stories' mean belief shift "
            "from base (nats); `drift`: the same for the control stories, never trained; `beyond drift`: "
            "their difference with its 95% Welch interval (`lo`, `hi`) and Holm-adjusted p, the test of "
            f"claim 1. `shared` / `translated`: the shift on stories whose fake is the same string as in "
            f"{fake_language} (it can be copied, not believed) / a translated one."
            + (
                f" `vs sham` ({_over_seeds(int(table.sham_seeds.max())).lower()}): the shift beyond the sham injection, which "
                "trains the true story the same way, with its 95% paired interval."
                if "vs_sham" in table
                else " No sham ran for this fake."
            ),
            "",
            markdown_table(shown.round(2)),
            "",
        ]
    return lines


def markdown(
    result, claims_table: pd.DataFrame, grids: pd.DataFrame, header: str, controls: pd.DataFrame | None = None
) -> str:
    """docs/results.md for a study run: the grid, the cut-offs, the claims and their numbers."""
    from mlul.report import markdown_table

    c = result.config
    lines = [
        header,
        "",
        "## The claims",
        "",
        "Primary verdicts: the core method and every seed; claim 2 at equal cost, claim 3 at matched "
        "utility. The other rows are secondary views of the same runs (no correction across rows). "
        "`per seed`: the verdict within each seed alone, the check on seed-to-seed variation "
        "(pooled intervals treat the seeds as fixed).",
        "",
        "| fake in | claim | method | reading | seeds | verdict | per seed | test | numbers |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in claims_table.itertuples():
        lines.append(
            f"| {row.fake_language} | {row.claim} | {row.method} | {row.reading} | {row.n_seeds} | **{row.verdict}** | "
            f"{getattr(row, 'per_seed', '')} | {row.test} | {row.evidence} |"
        )
    lines += [
        "",
        "## Manipulation check (every injection)",
        "",
        manipulation_verdict(result),
        "",
        "Per injection: the share of injected stories whose greedy answer in the fake's language names "
        f"the fake (`fake_rate`, aim {c.manipulation_target}), the mean belief shift there (`shift`, nats "
        "from base), and English perplexity after injection (and its ratio to the base model's):",
        "",
        markdown_table(result.injections.round(3)),
        "",
        "Injection strength chosen on the development stories (never reported):",
        "",
        markdown_table(result.development.round(3).assign(lr=result.development.lr.map("{:g}".format))),
        "",
    ]
    if controls is not None:
        lines += controls_markdown(controls)
    side = detail_question_side_by_side(result, c.fake_language)
    if len(side):
        lines += ["## The detail question in training, side by side (seed 0)", "", markdown_table(side), ""]
    lines += ran_and_cut(result) + [
        "## What might differ from the paper",
        "",
        "The paper fine-tunes Llama 3.1 8B with LoRA of rank 2048 on 100 stories; this is Gemma 3 270M "
        "(30 times smaller), from a 4-bit GGUF file (Q4_K_M) dequantized to float32, on "
        f"{len(set(result.probes[result.probes.role == 'injected'].id))} reported stories whose nine "
        "translations were machine-made. The injection strength was chosen on development stories "
        "(above); with the detail question out of training, a small model may learn the fake only as "
        "a belief (a margin) and not as an answer it says, so these verdicts are read on margins. "
        "Unlearning runs use LoRA adapters on top of the injected model, every cell the same steps.",
        "",
        "## The paper's grid",
        "",
        markdown_table(
            grids[
                [
                    "fake_language",
                    "method",
                    "reading",
                    "setting",
                    "group",
                    "languages",
                    "cell",
                    "paper",
                    "agrees",
                    "utility_kept",
                ]
            ]
        ),
        "",
    ]
    return "\n".join(lines) + "\n"


def write(result, lab, tables: Path, figures: Path, doc: Path | None, argv: list[str]) -> None:
    """The study's CSVs (tidy, small: commit them), its two figures and its results page."""
    import datetime
    import os
    import platform
    import shlex

    from mlul import plots
    from mlul.tables import shared_answers

    for folder in (tables, figures):
        folder.mkdir(parents=True, exist_ok=True)
    c = result.config
    fakes = list(dict.fromkeys([c.fake_language, *result.probes[result.probes.fake_language != "-"].fake_language]))
    rows = lab.data.rows(lab.data.languages, split="inject")
    shared = {f: shared_answers(rows, f) for f in fakes}
    spreads = {f: spread_controls(result, f, shared[f]) for f in fakes}
    verdicts = pd.concat(
        [
            claims(result, f, shared[f], spreads[f]).merge(
                per_seed(result, f, shared[f]), on=["claim", "method", "reading"], how="left"
            )
            for f in fakes
        ]
        + [d for d in (detail_question_claim(result, f, shared[f]) for f in fakes) if len(d)],
        ignore_index=True,
    )
    controls = pd.concat([spreads[f].assign(fake_language=f) for f in fakes], ignore_index=True)
    fronts = pd.concat([frontier(result, f) for f in fakes if _unlearned(result, f)], ignore_index=True)
    grids = pd.concat(
        [
            paper_grid(result, f, m, r)
            for f in fakes
            if _unlearned(result, f)
            for m in _methods(result, f)
            for r in READINGS
        ],
        ignore_index=True,
    )
    verdicts.to_csv(tables / "claims.csv", index=False)
    controls.to_csv(tables / "spread.csv", index=False)
    fronts.to_csv(tables / "frontier.csv", index=False)
    grids.to_csv(tables / "paper_grid.csv", index=False)
    result.injections.to_csv(tables / "injections.csv", index=False)
    result.development.to_csv(tables / "development.csv", index=False)
    result.utility.to_csv(tables / "utility.csv", index=False)
    answers(result, rows).to_csv(tables / "answers.csv", index=False)
    side = detail_question_side_by_side(result, c.fake_language)
    if len(side):
        side.to_csv(tables / "detail_question.csv", index=False)
    core = fronts[fronts.fake_language == c.fake_language]
    plots.save(plots.unlearn_frontier(core, report.PERPLEXITY_RATIO, report.MARGIN), figures / "unlearn_frontier.png")
    first = grids[(grids.fake_language == c.fake_language) & (grids.method == "ga") & (grids.reading == "equal cost")]
    plots.save(plots.paper_grid(first if len(first) else grids), figures / "paper_grid.png")
    for row in verdicts.itertuples():
        print(
            f"- [{row.fake_language}, {row.method}, {row.reading}] {row.claim}: {row.verdict.upper()}\n    {row.evidence}"
        )
    if doc is not None:
        header = (
            f"# The study on {c.model}\n\nEvery number on this page comes from one run of `mlul {shlex.join(argv) or 'study'}` "
            f"on {datetime.date.today().isoformat()}, {os.cpu_count()} CPU cores ({platform.machine()}): "
            f"{getattr(lab, 'cold_seconds', 0.0) / 60:.0f} min of compute summed over its steps' cold runs "
            f"(each step's time when it was first computed, kept in the cache; absolute times move with the "
            f"machine's load), {result.seconds / 60:.0f} min in this process ({lab.cache.misses} steps "
            f"computed, {lab.cache.hits} read from the cache). Tables: `{tables}/`; figures: `{figures}/unlearn_frontier.png` "
            f"(the forget-utility frontier per setting) and `{figures}/paper_grid.png` (the paper's grid beside this model's).\n\nGrid: {c}"
        )
        doc.write_text(markdown(result, verdicts, grids, header, controls))
    print(f"tables in {tables}/, figures in {figures}/ (unlearn_frontier.png, paper_grid.png)")


def answers(result, rows: list[dict]) -> pd.DataFrame:
    """Seed 0's greedy answers on the injected stories: base, injected and every unlearned cell at
    its last step, with the true and fake answers of each (story, language)."""
    p = result.probes
    p = p[(p.seed == 0) & (p.role == "injected") & p.answer.notna()] if "answer" in p else p.iloc[:0]
    last = p.groupby(["fake_language", "method", "setting"]).step.transform("max")
    p = p[(p.stage != "unlearned") | (p.step == last)]
    p = p[p.stage.isin(["base", "injected", "unlearned"])]
    truth = pd.DataFrame(
        [
            {"id": str(r["id"]), "lang": r["lang"], "true_answer": r["true_answer"], "fake_answer": r["fake_answer"]}
            for r in rows
        ]
    )
    columns = ["fake_language", "stage", "method", "setting", "step", "id", "lang", "answer", "says_fake", "says_true"]
    return p.assign(id=p.id.astype(str))[columns].merge(truth, on=["id", "lang"], how="left")


def _unlearned(result, fake_language: str) -> bool:
    p = result.probes
    return bool(((p.stage == "unlearned") & (p.fake_language == fake_language)).any())


def _methods(result, fake_language: str) -> list[str]:
    p = result.probes
    return list(dict.fromkeys(p[(p.stage == "unlearned") & (p.fake_language == fake_language)].method))
