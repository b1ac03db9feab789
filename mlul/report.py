"""Plain-text tables of results, for the terminal and for docs."""

from __future__ import annotations

import pandas as pd


def format_summary(summary: pd.DataFrame, measures: list[str], index: str | list[str] = "lang") -> str:
    """One line per row of a `probe.summarize` table: each measure with its 95% interval."""
    index = [index] if isinstance(index, str) else index
    out = pd.DataFrame({k: summary[k] for k in index})
    for m in measures:
        if m in summary:
            out[m] = [
                f"{v:.2f} [{lo:.2f}, {hi:.2f}]" for v, lo, hi in zip(summary[m], summary[f"{m}_lo"], summary[f"{m}_hi"])
            ]
    return out.to_string(index=False)


def _changes(stage_rows: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Per language: the mean change of each item's margin from `reference` to `stage_rows`, with
    a bootstrap interval, and the fake rate before and after."""
    from mlul.probe import summarize

    changed = summarize(stage_rows, base=reference).set_index("lang")
    before = reference.groupby("lang").says_fake.mean() if "says_fake" in reference else None
    out = changed[["margin_shift", "margin_shift_lo", "margin_shift_hi"]].copy()
    if "fake_rate" in changed and before is not None:
        out["fake_rate"] = changed.fake_rate
        out["fake_rate_before"] = before.reindex(out.index)
    return out


def claims(result) -> pd.DataFrame:
    """The paper's three claims checked against a `reproduce` result, one row per claim, with the
    numbers behind each verdict. "Significant" means the 95% bootstrap interval over items excludes 0.

    1. spread: after injection in X, other languages' margins rise above the base model's;
    2. English-only unlearning leaves the fake (margin still significantly above base) in some
       language, or reinforces it (margin significantly above the injected model's);
    3. English+X unlearning leaves no language with a margin significantly above base.
    """
    per_item = result.per_item
    original = result.config.inject_language
    final = per_item[per_item.step == per_item.groupby(["stage", "method", "setting"]).step.transform("max")]
    keep = [c for c in ("id", "lang", "margin", "says_fake", "specificity") if c in final]

    def stage(name, method="-", setting="-"):
        part = final[(final.stage == name) & (final.method == method) & (final.setting == setting)]
        return part[keep].reset_index(drop=True)

    base, injected = stage("base"), stage("injected")
    records = []
    spread = _changes(injected, base)
    others = spread.drop(index=original, errors="ignore")
    significant = list(others.index[others.margin_shift_lo > 0])
    records.append(
        {
            "claim": f"1. a fake injected in {original} spreads to other languages",
            "method": "-",
            "verdict": "holds" if significant else "not seen",
            "evidence": f"belief shift significant in {len(significant)}/{len(others)} other languages "
            f"({', '.join(significant) or 'none'}); mean shift {others.margin_shift.mean():+.2f} nats "
            f"(in {original}: {spread.margin_shift.get(original, float('nan')):+.2f})",
        }
    )
    for method in [m for m in dict.fromkeys(final.method) if m != "-"]:
        settings = set(final[final.method == method].setting)
        if "english" in settings:
            english = stage("unlearned", method, "english")
            vs_base, vs_injected = _changes(english, base), _changes(english, injected)
            left = list(vs_base.index[vs_base.margin_shift_lo > 0])
            reinforced = list(vs_injected.index[vs_injected.margin_shift_lo > 0])
            records.append(
                {
                    "claim": "2. English-only unlearning leaves the fake in other languages (or reinforces it)",
                    "method": method,
                    "verdict": "holds" if [c for c in left + reinforced if c != "en"] else "not seen",
                    "evidence": f"still above base in {len(left)}/{len(vs_base)} languages ({', '.join(left) or 'none'}); "
                    f"reinforced beyond the injected model in {', '.join(reinforced) or 'none'}; "
                    f"shift vs base in en {vs_base.margin_shift.get('en', float('nan')):+.2f}, "
                    f"in {original} {vs_base.margin_shift.get(original, float('nan')):+.2f}",
                }
            )
        if "english+original" in settings:
            both = _changes(stage("unlearned", method, "english+original"), base)
            left = list(both.index[both.margin_shift_lo > 0])
            records.append(
                {
                    "claim": f"3. unlearning in English+{original} removes it in all languages",
                    "method": method,
                    "verdict": "holds" if not left else "partly",
                    "evidence": f"still above base in {len(left)}/{len(both)} languages ({', '.join(left) or 'none'}); "
                    f"mean shift vs base {both.margin_shift.mean():+.2f} nats "
                    f"(range {both.margin_shift.min():+.2f} to {both.margin_shift.max():+.2f})",
                }
            )
    return pd.DataFrame(records)


def markdown_grid(summary: pd.DataFrame, measure: str, index: str, digits: int = 2) -> str:
    """A Markdown table, rows `index` x probe languages, each cell `mean [lo, hi]` of `measure`."""
    from mlul import languages

    cells = summary.assign(
        cell=[
            f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
            for v, lo, hi in zip(summary[measure], summary[f"{measure}_lo"], summary[f"{measure}_hi"])
        ]
    )
    grid = cells.pivot(index=index, columns="lang", values="cell")
    grid = grid[[c for c in languages.codes() if c in grid.columns]]
    grid = grid.reindex(list(dict.fromkeys(cells[index])))
    header = f"| {index} | " + " | ".join(grid.columns) + " |"
    rule = "|---" * (len(grid.columns) + 1) + "|"
    body = [f"| {name} | " + " | ".join(row) + " |" for name, row in grid.iterrows()]
    return "\n".join([header, rule, *body])
