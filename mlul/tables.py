"""Per-language result tables from per-item probes: shifts, rates and their controls.

`probe.py` measures one model; this module compares two probes of the same stories (before and
after a training step) and summarises per probe language, with the tests of `stats.py`:

- belief shift: each story's margin after minus before, a paired t interval over stories;
- drift control: the same shift on *control* stories that were never trained on; `spread` is the
  shift on trained stories minus the shift on control stories (Welch's t, Holm across languages);
- sham control: the shift after a sham injection (the true story instead of the fake), paired per
  story, so `vs_sham` is what the lie adds beyond training on the story at all;
- rates: exact (Clopper-Pearson) intervals, change from the reference by McNemar's exact test;
- shared vs translated: whether the fake string in a language is letter for letter the injected
  language's, which would let spread be string copying rather than a fact crossing languages.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlul import stats
from mlul.data import normalize


def _key(frame: pd.DataFrame) -> pd.MultiIndex:
    return pd.MultiIndex.from_arrays([frame.id.astype(str), frame.lang])


def with_shifts(after: pd.DataFrame, before: pd.DataFrame) -> pd.DataFrame:
    """`after` with each story's change from `before` (same id and language): margin_shift,
    specificity shifts, per-token margin shift, and the reference's rates as `ref_says_fake`."""
    out = after.copy()
    ref = before.set_index(_key(before))
    index = _key(out)
    out["margin_shift"] = out.margin.to_numpy() - ref.margin.reindex(index).to_numpy()
    for column in ("specificity", "specificity_true"):
        if column in out and column in ref:
            out[f"{column}_shift"] = out[column].to_numpy() - ref[column].reindex(index).to_numpy()
    if {"n_tokens_true", "n_tokens_fake"} <= set(out.columns):
        per_token = out.logp_fake / out.n_tokens_fake - out.logp_true / out.n_tokens_true
        ref_per_token = ref.logp_fake / ref.n_tokens_fake - ref.logp_true / ref.n_tokens_true
        out["per_token_shift"] = per_token.to_numpy() - ref_per_token.reindex(index).to_numpy()
    for column in ("says_fake", "says_true"):
        if column in ref:
            out[f"ref_{column}"] = ref[column].reindex(index).to_numpy()
    return out


def shared_answers(rows: list[dict], original: str) -> pd.DataFrame:
    """Per (id, lang): whether the fake answer is the same string as in the injected language."""
    fake_in_original = {str(r["id"]): normalize(r["fake_answer"]) for r in rows if r["lang"] == original}
    return pd.DataFrame(
        {
            "id": [str(r["id"]) for r in rows],
            "lang": [r["lang"] for r in rows],
            "shared": [normalize(r["fake_answer"]) == fake_in_original.get(str(r["id"])) for r in rows],
        }
    )


def _rate(values: pd.Series, prefix: str) -> dict:
    values = values.dropna().astype(bool)
    lo, hi = stats.rate_interval(int(values.sum()), len(values))
    return {prefix: float(values.mean()) if len(values) else np.nan, f"{prefix}_lo": lo, f"{prefix}_hi": hi}


def _shift(values, prefix: str) -> dict:
    test = stats.shift_test(np.asarray(values, dtype=float))
    return {
        prefix: test["mean"],
        f"{prefix}_lo": test["lo"],
        f"{prefix}_hi": test["hi"],
        f"{prefix}_p": test["p"],
        f"{prefix}_median": test["median"],
    }


def language_table(
    after: pd.DataFrame,
    before: pd.DataFrame,
    original: str | None = None,
    sham: pd.DataFrame | None = None,
    shared: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per probe language: the trained stories' shift from `before` with its controls.

    `after`/`before`: probes with a `role` column ("injected" for stories in the training data,
    "control" for stories that never were); `sham`: the probe after the sham injection;
    `shared`: from `shared_answers`. Holm's correction runs across the probe languages other
    than `original` (the family of claim 1); `spread_significant` marks the survivors.
    """
    shifted = with_shifts(after, before)
    if shared is not None and "shared" not in shifted:
        flags = shared.set_index(_key(shared)).shared
        shifted["shared"] = flags.reindex(_key(shifted)).fillna(False).astype(bool).to_numpy()
    if sham is not None:
        sham_shift = with_shifts(sham, before).set_index(_key(sham)).margin_shift
        shifted["sham_shift"] = sham_shift.reindex(_key(shifted)).to_numpy()
    records = []
    for lang, group in shifted.groupby("lang", sort=False):
        treated = group[group.role == "injected"] if "role" in group else group
        control = group[group.role == "control"] if "role" in group else group.iloc[:0]
        record = {"lang": lang, "n_items": len(treated), "n_control": len(control)}
        record.update(_shift(treated.margin_shift, "margin_shift"))
        record["prob_fake"] = float(stats.sigmoid(treated.margin).mean())
        if "prefers_fake" in treated:  # every probe scores the margin, so this exists at every step
            record.update(_rate(treated.prefers_fake, "prefer_fake"))
        record["prob_fake_ref"] = float(stats.sigmoid(treated.margin - treated.margin_shift).mean())
        if "per_token_shift" in treated:
            record["per_token_shift"] = float(treated.per_token_shift.mean())
        for column in ("specificity_shift", "specificity_true_shift"):
            if column in treated:  # NaN where no other story of the same type exists
                record.update(_shift(treated[column].dropna(), column))
        if "says_fake" in treated and treated.says_fake.notna().any():
            record.update(_rate(treated.says_fake, "fake_rate"))
            record.update(_rate(treated.says_true, "true_rate"))
            if "ref_says_fake" in treated:
                record["fake_rate_ref"] = float(treated.ref_says_fake.mean())
                record["fake_rate_p"] = stats.mcnemar_exact(treated.ref_says_fake, treated.says_fake)["p"]
        if len(control):
            record.update(_shift(control.margin_shift, "control_shift"))
            test = stats.two_sample_test(treated.margin_shift, control.margin_shift)
            record.update(spread=test["diff"], spread_lo=test["lo"], spread_hi=test["hi"], spread_p=test["p"])
        if "sham_shift" in treated and treated.sham_shift.notna().any():
            record.update(_shift(treated.sham_shift.dropna(), "sham_shift"))
            record.update(_shift((treated.margin_shift - treated.sham_shift).dropna(), "vs_sham"))
        if "shared" in treated:
            for name, part in (("shared", treated[treated.shared]), ("translated", treated[~treated.shared])):
                record[f"{name}_n"] = len(part)
                record[f"{name}_shift"] = float(part.margin_shift.mean()) if len(part) else np.nan
        records.append(record)
    table = pd.DataFrame(records)
    if "spread_p" in table:
        family = table.lang != original
        reject, adjusted = stats.holm(table.spread_p.where(family))
        table["spread_p_holm"] = adjusted
        table["spread_significant"] = reject & family.to_numpy() & (table.spread > 0).to_numpy()
    return table


def level_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per language of a single probe: the margin (t interval over stories), the mean
    P(prefers fake) = sigmoid(margin) with its t interval, and the rates with exact intervals."""
    records = []
    for lang, group in table.groupby("lang", sort=False):
        record = {"lang": lang, "n_items": len(group)}
        record.update(_shift(group.margin, "margin"))
        record.update(_shift(stats.sigmoid(group.margin), "prob_fake"))
        if "says_fake" in group:
            record.update(_rate(group.says_fake, "fake_rate"))
            record.update(_rate(group.says_true, "true_rate"))
        records.append(record)
    return pd.DataFrame(records)
