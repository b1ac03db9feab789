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
