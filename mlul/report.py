"""The paper's claims as verdicts (`holds`, `fails`, `inconclusive`), each naming its test and
thresholds, and plain-text tables of results.

Thresholds, in one place:
- ALPHA: significance level of every test; Holm's correction runs across probe languages inside
  each claim, so a claim's family-wise error is at most ALPHA.
- MARGIN: "removed" and "no spread" are equivalence statements: the one-sided 95% upper bound of the
  mean shift is below MARGIN nats. With few stories the bound is wide, and the verdict is then
  `inconclusive` rather than a generous `holds`.
- PERPLEXITY_RATIO, QA_DROP: a removal counts only if the model still works: English perplexity at
  most PERPLEXITY_RATIO times the injected model's, and QA accuracy (mean over languages) at most
  QA_DROP below the injected model's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlul import stats
from mlul.tables import with_shifts

ALPHA = 0.05
MARGIN = 2.0  # nats
PERPLEXITY_RATIO = 1.5
QA_DROP = 0.10


def format_summary(summary: pd.DataFrame, measures: list[str], index: str | list[str] = "lang") -> str:
    """One line per row of a summary table: each measure with its 95% interval."""
    index = [index] if isinstance(index, str) else index
    out = pd.DataFrame({k: summary[k] for k in index})
    for m in measures:
        if m in summary:
            out[m] = [
                f"{v:.2f} [{lo:.2f}, {hi:.2f}]" for v, lo, hi in zip(summary[m], summary[f"{m}_lo"], summary[f"{m}_hi"])
            ]
    return out.to_string(index=False)


def timing(result) -> str:
    """How long a result's steps took to compute when first run, and how long this call took."""
    cold, now = result.cold_seconds, result.seconds
    text = f"{cold / 60:.1f} min of compute when its steps were first run on this machine"
    if now < 0.5 * cold:
        text += f" (this call: {now:.0f} s, the steps read back from the result cache)"
    return text


def _verdict(claim: str, method: str, verdict: str, test: str, evidence: str) -> dict:
    return {"claim": claim, "method": method, "verdict": verdict, "test": test, "evidence": evidence}


def _fmt(test: dict) -> str:
    return f"{test['mean']:+.1f} [{test['lo']:+.1f}, {test['hi']:+.1f}]"


def claim_spread(table: pd.DataFrame, original: str) -> dict:
    """Claim 1 from a `tables.language_table` of the injection in `original`.

    holds: the injection took (the shift in `original` is significantly positive) and in at least
    one other language the shift on injected stories exceeds the drift on control stories
    (Welch's t, Holm across the other languages, alpha ALPHA); fails: it took, and in every other
    language the 95% interval of that difference lies below MARGIN; otherwise inconclusive."""
    claim = f"1. a fake injected in {original} spreads to other languages"
    test = (
        f"per language: trained-story shift minus control-story drift, Welch's t, Holm across the other "
        f"languages at alpha {ALPHA}; 'no spread' = 95% upper bound below {MARGIN} nats"
    )
    own = table.set_index("lang").loc[original]
    others = table[table.lang != original]
    took = own.margin_shift_lo > 0
    if "spread" not in table:
        return _verdict(claim, "-", "inconclusive", test, "no control stories were probed: drift cannot be ruled out")
    survivors = list(others.lang[others.spread_significant])
    cells = ", ".join(f"{r.lang} {r.spread:+.1f} [{r.spread_lo:+.1f}, {r.spread_hi:+.1f}]" for r in others.itertuples())
    evidence = (
        f"shift in {original} {own.margin_shift:+.1f} [{own.margin_shift_lo:+.1f}, {own.margin_shift_hi:+.1f}]; "
        f"spread beyond drift significant in {len(survivors)}/{len(others)} ({', '.join(survivors) or 'none'}); {cells}"
    )
    if took and survivors:
        verdict = "holds"
    elif took and (others.spread_hi < MARGIN).all():
        verdict = "fails"
    else:
        verdict = "inconclusive"
    if not took:
        evidence = f"the injection did not take in {original}; " + evidence
    return _verdict(claim, "-", verdict, test, evidence)


def _final(per_item: pd.DataFrame, stage: str, method: str = "-", setting: str = "-") -> pd.DataFrame:
    part = per_item[(per_item.stage == stage) & (per_item.method == method) & (per_item.setting == setting)]
    part = part[part.step == part.step.max()]
    return part[part.role == "injected"] if "role" in part else part


def _by_story(frame: pd.DataFrame, lang: str, column: str = "margin_shift") -> pd.Series:
    part = frame[frame.lang == lang]
    return part.set_index(part.id.astype(str))[column]


def changes(per_item: pd.DataFrame, setting: str, langs: list[str]) -> pd.DataFrame:
    """Per unlearning method in `setting` and language: the change of the belief shift from the
    injected model and the shift left from base, each with its 95% t interval over stories and a
    two-sided p, Holm-adjusted across `langs` within each method: the table prose about
    "rises", "falls" and "still above base" must quote."""
    base, injected = _final(per_item, "base"), _final(per_item, "injected")
    records = []
    for method in [m for m in dict.fromkeys(per_item.method) if m != "-"]:
        after = _final(per_item, "unlearned", method, setting)
        if after.empty:
            continue
        vs_injected, vs_base = with_shifts(after, injected), with_shifts(after, base)
        rows = []
        for lang in langs:
            change = stats.shift_test(_by_story(vs_injected, lang).to_numpy())
            left = stats.shift_test(_by_story(vs_base, lang).to_numpy())
            rows.append({"method": method, "lang": lang, "change": change, "left": left})
        change_sig = stats.holm([r["change"]["p"] for r in rows], ALPHA)[0]
        left_sig = stats.holm([r["left"]["p"] for r in rows], ALPHA)[0]
        for r, c_sig, l_sig in zip(rows, change_sig, left_sig):
            records.append(
                {
                    "method": r["method"],
                    "lang": r["lang"],
                    "change from injected": _fmt(r["change"]),
                    "change significant (Holm)": bool(c_sig),
                    "left from base": _fmt(r["left"]),
                    "left significant (Holm)": bool(l_sig),
                }
            )
    return pd.DataFrame(records)


def injection_took(per_item: pd.DataFrame, original: str) -> tuple[bool, str]:
    """The manipulation check: after injection the shift from base in `original` is significantly
    positive (one-sided t). Without it there is nothing to unlearn, and claims 2 and 3 cannot be read."""
    shifted = with_shifts(_final(per_item, "injected"), _final(per_item, "base"))
    test = stats.shift_test(_by_story(shifted, original).to_numpy(), alternative="greater")
    return bool(test["p"] < ALPHA), f"injection in {original}: shift {test['mean']:+.1f} (one-sided p {test['p']:.3g})"


def utility_kept(utility: pd.DataFrame | None, method: str, setting: str) -> tuple[bool | None, str]:
    """Whether an unlearned model still works, against the injected model (see the module doc)."""
    if utility is None or utility.empty:
        return None, "utility not measured"
    injected = utility[utility.stage == "injected"].set_index("lang")
    after = utility[(utility.stage == "unlearned") & (utility.method == method) & (utility.setting == setting)]
    after = after.set_index("lang")
    if "en" not in after.index or "en" not in injected.index:
        return None, "no English utility text"
    ratio = after.perplexity["en"] / injected.perplexity["en"]
    common = after.index.intersection(injected.index)  # the languages measured in both
    qa_drop = injected.qa_accuracy[common].mean() - after.qa_accuracy[common].mean()
    kept = bool(ratio <= PERPLEXITY_RATIO and qa_drop <= QA_DROP)
    text = (
        f"English perplexity x{ratio:.2f} of the injected model's (bound {PERPLEXITY_RATIO}), "
        f"QA accuracy {-qa_drop:+.2f} (bound -{QA_DROP:.2f})"
    )
    return kept, text


def claim_english_only(per_item: pd.DataFrame, original: str, method: str, utility=None) -> dict:
    """Claim 2: English-only unlearning leaves the fake in other languages.

    Difference in differences over the same stories: d = (change in `original`) - (change in
    English), each change from the injected model. holds: d > 0 (one-sided t, alpha ALPHA) and the
    fake is still significantly above base in `original`; fails: the 95% interval of d lies below
    0 (`original` falls at least as much as English) or the fake is back within MARGIN of base in
    every language; otherwise inconclusive. The utility at the point read is reported, not gated
    (a fake left in `original` by a run that also damaged English is still left); the study's
    matched-utility reading asks the same at a strength where English is intact. Languages it
    *reinforces* (change from the injected model significantly > 0, Holm) are listed."""
    claim = "2. English-only unlearning leaves the fake in other languages (or reinforces it)"
    test = (
        f"difference in differences ({original} change minus English change from the injected model), "
        f"one-sided paired t at alpha {ALPHA}; reinforcement: change > 0, one-sided t, Holm across languages"
    )
    base, injected = _final(per_item, "base"), _final(per_item, "injected")
    after = _final(per_item, "unlearned", method, "english")
    vs_injected, vs_base = with_shifts(after, injected), with_shifts(after, base)
    change_x, change_en = _by_story(vs_injected, original), _by_story(vs_injected, "en")
    did = (change_x - change_en.reindex(change_x.index)).dropna()
    did_test = stats.shift_test(did.to_numpy())
    one_sided = stats.shift_test(did.to_numpy(), alternative="greater")
    left = stats.shift_test(_by_story(vs_base, original).to_numpy(), alternative="greater")
    langs = list(dict.fromkeys(after.lang))
    rise = [stats.shift_test(_by_story(vs_injected, lang).to_numpy(), alternative="greater")["p"] for lang in langs]
    reinforced = [lang for lang, r in zip(langs, stats.holm(rise, ALPHA)[0]) if r]
    removed = all(stats.equivalence_upper(_by_story(vs_base, lang).to_numpy(), MARGIN)["below"] for lang in langs)
    evidence = (
        f"change from injected: en {_fmt(stats.shift_test(change_en.to_numpy()))}, "
        f"{original} {_fmt(stats.shift_test(change_x.to_numpy()))}; difference {_fmt(did_test)} "
        f"(one-sided p {one_sided['p']:.3g}); {original} vs base {left['mean']:+.1f} (one-sided p {left['p']:.3g}); "
        f"reinforced in {', '.join(reinforced) or 'none'}"
    )
    evidence += f"; {utility_kept(utility, method, 'english')[1]}"
    took, took_text = injection_took(per_item, original)
    if not took:
        verdict, evidence = "inconclusive", f"the injection did not take ({took_text}); " + evidence
    elif one_sided["p"] < ALPHA and left["p"] < ALPHA:
        verdict = "holds"
    elif did_test["hi"] < 0 or removed:
        verdict = "fails"
    else:
        verdict = "inconclusive"
    return _verdict(claim, method, verdict, test, evidence)


def claim_english_and_original(per_item: pd.DataFrame, original: str, method: str, utility=None) -> dict:
    """Claim 3: unlearning in English + `original` removes the fake in all languages.

    Removed in a language: the one-sided 95% upper bound of the shift from base is below MARGIN
    (an equivalence test; all languages must pass, an intersection-union test needing no
    correction). holds: removed everywhere and utility kept; fails: some language still there
    (significantly above base, one-sided t, Holm, and not removed: a shift proven smaller than
    MARGIN counts as removed even if above 0; the paper grid reads cells the same way), or removal
    only with utility lost; otherwise inconclusive."""
    claim = f"3. unlearning in English+{original} removes it in all languages"
    test = (
        f"equivalence per language: one-sided 95% upper bound of the shift from base below {MARGIN} nats, "
        f"every language; 'still there': shift > 0, one-sided t, Holm, and not removed; utility: English perplexity <= "
        f"{PERPLEXITY_RATIO}x injected, QA accuracy drop <= {QA_DROP}"
    )
    base = _final(per_item, "base")
    after = _final(per_item, "unlearned", method, "english+original")
    vs_base = with_shifts(after, base)
    langs = list(dict.fromkeys(after.lang))
    bounds = {lang: stats.equivalence_upper(_by_story(vs_base, lang).to_numpy(), MARGIN) for lang in langs}
    above = [stats.shift_test(_by_story(vs_base, lang).to_numpy(), alternative="greater")["p"] for lang in langs]
    removed = [lang for lang in langs if bounds[lang]["below"]]
    still = [lang for lang, r in zip(langs, stats.holm(above, ALPHA)[0]) if r and lang not in removed]
    kept, utility_text = utility_kept(utility, method, "english+original")
    evidence = (
        f"removed (upper bound < {MARGIN}) in {len(removed)}/{len(langs)} ({', '.join(removed) or 'none'}); "
        f"still significantly above base in {', '.join(still) or 'none'}; upper bounds "
        + ", ".join(f"{lang} {b['upper']:+.1f}" for lang, b in bounds.items())
        + f"; {utility_text}"
    )
    took, took_text = injection_took(per_item, original)
    if not took:
        verdict, evidence = "inconclusive", f"the injection did not take ({took_text}); " + evidence
    elif still or (len(removed) == len(langs) and kept is False):
        verdict = "fails"
    elif len(removed) == len(langs) and kept:
        verdict = "holds"
    else:
        verdict = "inconclusive"
    return _verdict(claim, method, verdict, test, evidence)


def claims(result, spread_table: pd.DataFrame | None = None) -> pd.DataFrame:
    """The three claims checked against a `reproduce` result, one row per claim (and method), each
    with its verdict, its test and thresholds, and the numbers behind it."""
    per_item, original = result.per_item, result.config.inject_language
    utility = getattr(result, "utility", None)
    if spread_table is None:
        spread_table = result.summary[result.summary.stage == "injected"]
    records = [claim_spread(spread_table, original)]
    for method in [m for m in dict.fromkeys(per_item.method) if m != "-"]:
        settings = set(per_item[per_item.method == method].setting)
        if "english" in settings:
            records.append(claim_english_only(per_item, original, method, utility))
        if "english+original" in settings:
            records.append(claim_english_and_original(per_item, original, method, utility))
    return pd.DataFrame(records)


def markdown_grid(
    summary: pd.DataFrame, measure: str, index: str, digits: int = 1, mark: str | None = None, order=None
) -> str:
    """A Markdown table, rows `index` x probe languages, each cell `mean [lo, hi]` of `measure`;
    cells whose boolean column `mark` is true are bold (e.g. significant after Holm)."""

    def cell(row) -> str:
        value = row[measure]
        if pd.isna(value):
            return "n/a"
        text = f"{value:.{digits}f}"
        if f"{measure}_lo" in row and not pd.isna(row[f"{measure}_lo"]):
            text += f" [{row[f'{measure}_lo']:.{digits}f}, {row[f'{measure}_hi']:.{digits}f}]"
        return f"**{text}**" if mark and bool(row.get(mark, False)) else text

    cells = summary.assign(cell=[cell(row) for _, row in summary.iterrows()])
    grid = cells.pivot(index=index, columns="lang", values="cell")
    columns = list(dict.fromkeys(order or cells.lang))
    grid = grid[[c for c in columns if c in grid.columns]].reindex(list(dict.fromkeys(cells[index])))
    header = f"| {index} | " + " | ".join(grid.columns) + " |"
    rule = "|---" * (len(grid.columns) + 1) + "|"
    body = [
        f"| {name} | " + " | ".join("" if isinstance(v, float) else v for v in row) + " |"
        for name, row in grid.iterrows()
    ]
    return "\n".join([header, rule, *body])


def shared_split(summary: pd.DataFrame, index: str = "inject_lang") -> pd.DataFrame:
    """Per injection language, over the *other* probe languages: the mean shift where the fake
    string is letter for letter the injected language's (shared) and where it is not
    (translated), with the number of (story, language) cells of each."""
    records = []
    for name, part in summary.groupby(index, sort=False):
        others = part[part.lang != name]
        record = {index: name}
        for kind in ("shared", "translated"):
            n = others[f"{kind}_n"].fillna(0)
            record[f"{kind}_cells"] = int(n.sum())
            record[f"{kind}_shift"] = (
                float((others[f"{kind}_shift"].fillna(0) * n).sum() / n.sum()) if n.sum() else np.nan
            )
        records.append(record)
    return pd.DataFrame(records)


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|---" * len(frame.columns) + "|"
    body = [
        "| " + " | ".join("n/a" if pd.isna(v) else str(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body])


def _model_names(summary: pd.DataFrame) -> pd.DataFrame:
    return summary.assign(
        model=[
            s if s != "unlearned" else f"{m} / {t}" for s, m, t in zip(summary.stage, summary.method, summary.setting)
        ]
    )


def results_markdown(spread, reproduce, header: str) -> str:
    """docs/preview.md from one run of `mlul figures`: every number below comes from its tables."""
    order = list(dict.fromkeys(spread.summary.lang))
    verdicts = claims(reproduce, spread.summary[spread.summary.inject_lang == reproduce.config.inject_language])
    lines = [header, "", "## The claims", "", "| claim | method | verdict | test | numbers |", "|---|---|---|---|---|"]
    for row in verdicts.itertuples():
        lines.append(f"| {row.claim} | {row.method} | **{row.verdict}** | {row.test} | {row.evidence} |")
    s = spread.summary
    lines += [
        "",
        "## 1. Learning: the spread matrix",
        "",
        "Spread beyond drift: the belief shift on the injected stories minus the shift on the control stories "
        "(never trained on), nats, Welch 95% interval; **bold**: significant after Holm's correction across the "
        "probe languages other than the injected one (the injected language itself is not in the family).",
        "",
        markdown_grid(s, "spread", "inject_lang", mark="spread_significant", order=order),
        "",
        "Belief shift from base on the injected stories (t interval over stories):",
        "",
        markdown_grid(s, "margin_shift", "inject_lang", order=order),
        "",
        "Drift: the same shift on the control stories:",
        "",
        markdown_grid(s, "control_shift", "inject_lang", order=order),
        "",
    ]
    if "vs_sham" in s and s.vs_sham.notna().any():
        lines += [
            "Fake minus sham (the sham trains the *true* story in the injection language; paired per story):",
            "",
            markdown_grid(s, "vs_sham", "inject_lang", order=order),
            "",
        ]
    lines += [
        "Fake rate (the greedy answer names the fake; Clopper-Pearson exact interval):",
        "",
        markdown_grid(s, "fake_rate", "inject_lang", digits=2, order=order),
        "",
        "Shared vs translated answers: mean belief shift over the other probe languages, split by whether the "
        "fake string there is letter for letter the injected language's:",
        "",
        markdown_table(shared_split(s).round(2)),
        "",
    ]
    r = _model_names(reproduce.summary)
    lines += [
        f"## 2. Unlearning: fake injected in {reproduce.config.inject_language}",
        "",
        "Belief shift from base on the injected stories:",
        "",
        markdown_grid(r, "margin_shift", "model", order=order),
        "",
        "Change from the injected model (negative: unlearned):",
        "",
        markdown_grid(r[r.stage == "unlearned"], "from_injected_margin_shift", "model", order=order),
        "",
        "Drift of the control stories from base:",
        "",
        markdown_grid(r, "control_shift", "model", order=order),
        "",
        "Fake rate (exact interval):",
        "",
        markdown_grid(r, "fake_rate", "model", digits=2, order=order),
        "",
    ]
    u = _model_names(reproduce.utility)
    for measure, digits in (("perplexity", 0), ("qa_accuracy", 2)):
        grid = u.pivot_table(index="model", columns="lang", values=measure, sort=False)
        grid = grid[[c for c in order if c in grid.columns]]
        lines += [f"Utility, {measure.replace('_', ' ')}:", "", markdown_table(grid.round(digits).reset_index()), ""]
    return "\n".join(lines) + "\n"
