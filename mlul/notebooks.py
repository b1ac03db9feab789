"""Run the course notebooks top to bottom, headless, with nbclient.

mlul notebooks                 # execute every notebook in notebooks/ and save its outputs
mlul notebooks --smoke         # the small configuration CI uses (MLUL_SMOKE=1); outputs not saved
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def notebook_paths(folder: str | Path = "notebooks") -> list[Path]:
    paths = sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no numbered notebooks (00_*.ipynb ...) in {folder}")
    return paths


def execute(path: str | Path, smoke: bool = False, save: bool = True, timeout: int = 3600):
    """Execute one notebook in its own folder; a cell that raises raises here (CellExecutionError).

    `smoke` sets MLUL_SMOKE=1 for the kernel: the notebooks read it and choose a tiny configuration."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    previous = os.environ.get("MLUL_SMOKE")
    os.environ["MLUL_SMOKE"] = "1" if smoke else "0"
    try:
        NotebookClient(
            notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
    finally:
        if previous is None:
            os.environ.pop("MLUL_SMOKE")
        else:
            os.environ["MLUL_SMOKE"] = previous
    if save:
        nbformat.write(notebook, path)
    return notebook


def smoke_mode() -> bool:
    """Whether the notebooks should run their tiny CI configuration."""
    return os.environ.get("MLUL_SMOKE", "0") not in ("", "0", "false", "False")


def run_all(folder: str | Path = "notebooks", smoke: bool = False, save: bool = True) -> None:
    for path in notebook_paths(folder):
        start = time.perf_counter()
        print(f"running {path} ...", flush=True)
        execute(path, smoke=smoke, save=save)
        print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)


def course_config(model: str = "gemma-3-270m", device: str = "auto"):
    """The configuration every notebook uses: the documented fast one (the figures' and README's
    numbers), or a tiny one when MLUL_SMOKE=1 (CI). Returns (SpreadConfig, ReproduceConfig)."""
    from dataclasses import replace

    from mlul.experiment import FAST, SMOKE, ReproduceConfig, fast_reproduce_config

    if smoke_mode():
        spread_config = replace(SMOKE, model=model, device=device)
        reproduce_config = ReproduceConfig(
            spread=spread_config,
            settings="english,original,english+original",
            unlearn=replace(fast_reproduce_config().unlearn, steps=4, epochs=None, probe_points=2),
        )
        print("MLUL_SMOKE=1: a tiny configuration (3 stories, 4 languages); numbers are not meaningful")
    else:
        spread_config = replace(FAST, model=model, device=device)
        reproduce_config = replace(fast_reproduce_config(), spread=replace(spread_config, inject_languages="fr"))
        print(
            f"the fast configuration: {spread_config.items} stories, probed in {spread_config.probe_languages} languages"
        )
    return spread_config, reproduce_config
