"""Every interval, test and multiplicity correction in one place.

Thin wrappers over scipy.stats and statsmodels. Stories are the unit of analysis: a per-story value
(a margin, a margin shift, a says-fake flag) is averaged over seeds first (`story_means`), then tested
across stories. Rates get exact Clopper-Pearson intervals and exact McNemar tests; shifts get t (or
BCa) intervals with a Wilcoxon p beside them; families of languages get Holm's correction.

Coverage of the 95% intervals at n = 12 stories (20000 simulations; tests/test_stats.py repeats it
with 2000): the t interval covers 0.947 (normal), 0.957 (t(4)), 0.940 (centred lognormal, sigma 0.3,
skewness ~1) and 0.921 (sigma 0.5, skewness ~1.75); BCa covers only 0.88-0.91 in the same cases (0.90-0.94
at n = 40), so 't' is the default.
"""

from __future__ import annotations

import gc
import zlib

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import special, stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

LEVEL = 0.95
ALTERNATIVES = ("two-sided", "greater", "less")
METHODS = ("t", "bca")
N_RESAMPLES = 9999


def _check(alternative: str, method: str = "t") -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"unknown alternative {alternative!r}; choose from {', '.join(ALTERNATIVES)}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def _clean(values: ArrayLike) -> np.ndarray:
    """A 1-D float array without NaNs (a story that was not scored is not a zero)."""
    x = np.asarray(values, dtype=float).ravel()
    return x[~np.isnan(x)]


def _degenerate(estimate: float, alternative: str) -> tuple[float, float, float]:
    """(lo, hi, p) when every value is the same: the limit of the t-test as the spread goes to 0.
    scipy returns p = 0 for a constant nonzero sample but NaN for all zeros; an exact zero shift is p = 1."""
    lo = -np.inf if alternative == "less" else estimate
    hi = np.inf if alternative == "greater" else estimate
    if alternative == "two-sided":
        p = 0.0 if estimate != 0 else 1.0
    elif alternative == "greater":
        p = 0.0 if estimate > 0 else 1.0
    else:
        p = 0.0 if estimate < 0 else 1.0
    return lo, hi, p


def sigmoid(x: ArrayLike) -> np.ndarray:
    """P(prefer fake) = sigmoid(margin): a bounded reading of a margin in nats."""
    return special.expit(np.asarray(x, dtype=float))


# ---------------------------------------------------------------- rates


def rate_interval(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Clopper-Pearson exact interval of a rate; 0 of 12 gives (0, 0.26), never (0, 0). n == 0 -> (nan, nan)."""
    if n == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def mcnemar_exact(before: ArrayLike, after: ArrayLike) -> dict:
    """Exact McNemar test of paired bools over the same stories.

    'b' counts stories that were True before and False after, 'c' the reverse; 'p' is the exact two-sided
    binomial p on the discordant pairs (1 when there are none); 'change' = mean(after) - mean(before)."""
    before, after = np.asarray(before, dtype=bool).ravel(), np.asarray(after, dtype=bool).ravel()
    if before.shape != after.shape:
        raise ValueError(f"before and after must be paired: {before.size} vs {after.size} values")
    n = before.size
    a, b = int(np.sum(before & after)), int(np.sum(before & ~after))
    c, d = int(np.sum(~before & after)), int(np.sum(~before & ~after))
    p = float(mcnemar([[a, b], [c, d]], exact=True).pvalue) if n else float("nan")
    change = float(after.mean() - before.mean()) if n else float("nan")
    return {"n": n, "b": b, "c": c, "p": p, "change": change}


# ---------------------------------------------------------------- shifts


def story_means(frame: pd.DataFrame, value: str, story: str = "id", seed: str | None = "seed") -> pd.Series:
    """One value per story: the mean over seeds (if the seed column exists), so stories are the unit.

    Averaging within (story, seed) first gives each seed equal weight when a seed has several rows.
    The result is conditional on the seeds that were run: the seed's own effect, shared by every story,
    is not in the spread between stories."""
    if value not in frame:
        raise KeyError(f"no column {value!r}; columns are {', '.join(map(str, frame.columns))}")
    if seed is not None and seed in frame:
        return frame.groupby([story, seed], sort=False)[value].mean().groupby(level=0, sort=False).mean()
    return frame.groupby(story, sort=False)[value].mean()


def mean_interval(
    values: ArrayLike,
    level: float = LEVEL,
    alternative: str = "two-sided",
    method: str = "t",
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
) -> tuple[np.ndarray, np.ndarray]:
    """Interval of the mean along the last axis: a t interval, or a BCa bootstrap interval with `seed`.
    Vectorised, so a coverage simulation is one call on a (simulations, n) array."""
    _check(alternative, method)
    x = np.asarray(values, dtype=float)
    if method == "t":
        ci = stats.ttest_1samp(x, 0.0, axis=-1, alternative=alternative).confidence_interval(level)
    else:
        ci = stats.bootstrap(
            (x,),
            np.mean,
            axis=-1,
            confidence_level=level,
            alternative=alternative,
            method="BCa",
            n_resamples=n_resamples,
            rng=np.random.default_rng(seed),
        ).confidence_interval
    return ci.low, ci.high


def _describe(kind: str, level: float, alternative: str) -> str:
    return f"{kind}, {alternative}, {level:.0%} interval"


def shift_test(
    values: ArrayLike,
    level: float = LEVEL,
    alternative: str = "two-sided",
    method: str = "t",
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
) -> dict:
    """Test of paired per-story values (e.g. margin after - margin before) against 0.

    Returns n, mean, median, the interval lo-hi of the mean (one-sided alternatives give a half-open
    interval with inf), p of the one-sample t-test, p_wilcoxon of the signed-rank test (exact for small
    n; nan when every value is 0 or n < 2) and a `test` label. method 't' (the default, it holds its
    coverage at n = 12) uses the t interval; 'bca' the BCa bootstrap interval with `seed`, p still from t."""
    _check(alternative, method)
    x = _clean(values)
    n = x.size
    label = _describe(
        "one-sample t" if method == "t" else f"BCa bootstrap ({n_resamples} resamples, seed {seed}), p from t",
        level,
        alternative,
    )
    out = {
        "n": n,
        "mean": float(x.mean()) if n else float("nan"),
        "median": float(np.median(x)) if n else float("nan"),
        "lo": float("nan"),
        "hi": float("nan"),
        "p": float("nan"),
        "p_wilcoxon": float("nan"),
        "test": label,
    }
    if n < 2:
        return out
    if np.ptp(x) == 0:
        out["lo"], out["hi"], out["p"] = _degenerate(out["mean"], alternative)
    else:
        out["p"] = float(stats.ttest_1samp(x, 0.0, alternative=alternative).pvalue)
        lo, hi = mean_interval(x, level, alternative, method, seed, n_resamples)
        out["lo"], out["hi"] = float(lo), float(hi)
    if np.any(x != 0):
        out["p_wilcoxon"] = float(stats.wilcoxon(x, alternative=alternative).pvalue)
    return out


def two_sample_test(
    treated: ArrayLike, control: ArrayLike, level: float = LEVEL, alternative: str = "two-sided"
) -> dict:
    """Welch's t-test of treated stories against control stories (independent sets).

    'diff' = mean(treated) - mean(control), with the interval lo-hi of that difference; n < 2 on either
    side gives nan fields."""
    _check(alternative)
    t, c = _clean(treated), _clean(control)
    out = {
        "n": t.size,
        "n_control": c.size,
        "diff": float(t.mean() - c.mean()) if t.size and c.size else float("nan"),
        "median": float(np.median(t) - np.median(c)) if t.size and c.size else float("nan"),
        "lo": float("nan"),
        "hi": float("nan"),
        "p": float("nan"),
        "test": _describe("Welch two-sample t, treated vs control stories", level, alternative),
    }
    if t.size < 2 or c.size < 2:
        return out
    if np.ptp(t) == 0 and np.ptp(c) == 0:
        out["lo"], out["hi"], out["p"] = _degenerate(out["diff"], alternative)
        return out
    res = stats.ttest_ind(t, c, equal_var=False, alternative=alternative)
    ci = res.confidence_interval(level)
    out["lo"], out["hi"], out["p"] = float(ci.low), float(ci.high), float(res.pvalue)
    return out


def equivalence_upper(values: ArrayLike, margin: float, level: float = LEVEL) -> dict:
    """One-sided test that the mean is below `margin` (e.g. "the fake is removed": the shift from base
    stays under 2 nats). 'upper' is the one-sided `level` t upper bound of the mean, 'below' is
    upper < margin, and 'p' is the p of H0: mean >= margin (below exactly when p < 1 - level)."""
    x = _clean(values)
    out = {
        "n": x.size,
        "mean": float(x.mean()) if x.size else float("nan"),
        "upper": float("nan"),
        "margin": float(margin),
        "below": False,
        "p": float("nan"),
        "test": f"one-sided t, H0 mean >= {margin:g}, {level:.0%} upper bound",
    }
    if x.size < 2:
        return out
    if np.ptp(x) == 0:
        out["upper"], out["p"] = out["mean"], 0.0 if out["mean"] < margin else 1.0
    else:
        res = stats.ttest_1samp(x, margin, alternative="less")
        out["upper"], out["p"] = float(res.confidence_interval(level).high), float(res.pvalue)
    out["below"] = bool(out["upper"] < margin)
    return out


# ---------------------------------------------------------------- families


def holm(pvalues: ArrayLike, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down correction: (reject, adjusted p). NaNs stay NaN, are never rejected and are not
    counted in the family."""
    p = np.asarray(pvalues, dtype=float).ravel()
    reject, adjusted = np.zeros(p.size, dtype=bool), np.full(p.size, np.nan)
    tested = ~np.isnan(p)
    if tested.any():
        # statsmodels' Holm calls gc.collect() on every call, which takes ~0.2 s once torch is loaded;
        # freezing the objects that exist already makes that collection scan only the new ones.
        gc.freeze()
        try:
            reject[tested], adjusted[tested], _, _ = multipletests(p[tested], alpha=alpha, method="holm")
        finally:
            gc.unfreeze()
    return reject, adjusted


def _cell_seed(seed: int, group) -> int:
    """A different, reproducible bootstrap seed per cell, from the group's name rather than its position."""
    return (seed * 1_000_003 + zlib.crc32(str(group).encode())) % 2**32


def per_group_tests(
    frame: pd.DataFrame,
    value: str,
    by: str = "lang",
    alternative: str = "two-sided",
    control: pd.DataFrame | None = None,
    level: float = LEVEL,
    method: str = "t",
    correct: bool = True,
    story: str = "id",
    seed: int = 0,
) -> pd.DataFrame:
    """One row per group (language): `shift_test` of the story means of `value`, or with `control`,
    `two_sample_test` of the treated story means against the control frame's story means of the same group
    ('mean' is then the difference). 'p_holm' is Holm-corrected across the groups of this call (equal to 'p'
    when correct=False) and 'significant' is p_holm < 1 - level.

    Columns: by, n, mean, median, lo, hi, p, p_holm, significant, test (plus p_wilcoxon, or n_control)."""
    _check(alternative, method)
    rows = []
    for group, part in frame.groupby(by, sort=False):
        treated = story_means(part, value, story)
        if control is None:
            res = shift_test(treated, level, alternative, method, _cell_seed(seed, group))
        else:
            res = two_sample_test(treated, story_means(control[control[by] == group], value, story), level, alternative)
            res["mean"] = res.pop("diff")
        rows.append({by: group, **res})
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=[by, "n", "mean", "median", "lo", "hi", "p", "p_holm", "significant", "test"])
    out["p_holm"] = holm(out.p)[1] if correct else out.p
    out["significant"] = out.p_holm < 1 - level  # NaN compares False: an untested cell is not significant
    family = f"Holm over {int(out.p.notna().sum())} {by} groups" if correct else "uncorrected"
    out["test"] = out.test + f"; {family}"
    first = [by, "n", "mean", "median", "lo", "hi", "p", "p_holm", "significant", "test"]
    return out[first + [c for c in out.columns if c not in first]]


def per_group_rates(
    frame: pd.DataFrame,
    value: str = "says_fake",
    by: str = "lang",
    base: pd.DataFrame | None = None,
    story: str = "id",
    seed: str | None = "seed",
    level: float = LEVEL,
    correct: bool = True,
) -> pd.DataFrame:
    """One row per group: the rate of the bool column `value` with its exact interval (rate, lo, hi over
    k of n rows), and with `base` the exact McNemar test of the change, paired by story (and seed when both
    frames have one): rate_before, change, b, c, p, p_holm, significant.

    With several seeds the (story, seed) pairs are not independent; the exact p is then approximate."""
    rows = []
    for group, part in frame.groupby(by, sort=False):
        scored = part[value].dropna().astype(bool)
        k, n = int(scored.sum()), int(scored.size)
        lo, hi = rate_interval(k, n, level)
        row = {by: group, "k": k, "n": n, "rate": k / n if n else float("nan"), "lo": lo, "hi": hi}
        if base is not None:
            keys = [story] + ([seed] if seed is not None and seed in part and seed in base else [])
            pairs = part[keys + [value]].merge(base[base[by] == group][keys + [value]], on=keys, suffixes=("", "_base"))
            if pairs.duplicated(keys).any():
                raise ValueError(f"several rows per {keys} in group {group!r}; pass a seed column to pair on")
            res = mcnemar_exact(pairs[f"{value}_base"], pairs[value])
            row |= {"rate_before": pairs[f"{value}_base"].astype(bool).mean(), **{f: res[f] for f in "bcp"}}
            row["change"] = res["change"]
        rows.append(row)
    out = pd.DataFrame(rows)
    if base is not None and not out.empty:
        out["p_holm"] = holm(out.p)[1] if correct else out.p
        out["significant"] = out.p_holm < 1 - level
    return out
