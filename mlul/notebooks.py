"""Run the course notebooks top to bottom, headless, with nbclient.

mlul notebooks                 # execute every notebook in notebooks/ and save its outputs
mlul notebooks --smoke         # the small configuration CI uses (MLUL_SMOKE=1); outputs not saved

A saved notebook records in its metadata (`mlul.fingerprint`) the hash of the code and data that
produced its outputs; `stale()` lists the notebooks whose outputs are older than the code.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import time
from pathlib import Path

import mlul

PACKAGE = Path(mlul.__file__).parent


def notebook_paths(folder: str | Path = "notebooks") -> list[Path]:
    paths = sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no numbered notebooks (00_*.ipynb ...) in {folder}")
    return paths


def fingerprint(notebook) -> str:
    """The hash of what a notebook's outputs depend on: the package's code and data files, and the
    notebook's code cells. Prose is left out, so that a sentence can be corrected to quote the
    outputs without re-running them."""
    digest = hashlib.sha256()
    for file in sorted(PACKAGE.rglob("*")):
        if file.is_file() and file.suffix in (".py", ".jsonl", ".json") and "__pycache__" not in file.parts:
            digest.update(file.relative_to(PACKAGE).as_posix().encode() + b"\0" + file.read_bytes())
    for cell in notebook.cells:
        if cell.cell_type == "code":
            digest.update(cell.source.encode() + b"\0")
    return digest.hexdigest()[:16]


def stale(folder: str | Path = "notebooks") -> list[str]:
    """The notebooks whose recorded fingerprint differs from the current code, data and cells."""
    import nbformat

    out = []
    for path in notebook_paths(folder):
        notebook = nbformat.read(path, as_version=4)
        if notebook.metadata.get("mlul", {}).get("fingerprint") != fingerprint(notebook):
            out.append(path.name)
    return out


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_LOCAL_PATH = re.compile(r"(/(?:root|home|Users|tmp|work|private|var)/[^\s'\"]*)")
PROGRESS_BAR = re.compile(r"\d+%\s*\|")  # tqdm's "42%|" and mlul's "42% |"


def clean(notebook) -> None:
    """Drop what must not be committed: stderr streams (progress bars, warnings), progress-bar
    widgets (and their saved state), and local file paths in text outputs (shown as their last part)."""
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                continue
            data = output.get("data", {})
            if WIDGET_VIEW in data and PROGRESS_BAR.search(data.get("text/plain", "")):
                continue  # a progress bar
            if output.get("output_type") == "stream":
                output["text"] = _LOCAL_PATH.sub(lambda m: Path(m.group(1)).name, output["text"])
            if "text/plain" in data:
                data["text/plain"] = _LOCAL_PATH.sub(lambda m: Path(m.group(1)).name, data["text/plain"])
            kept.append(output)
        cell["outputs"] = kept
    prune_widget_state(notebook)


def prune_widget_state(notebook) -> None:
    """Keep the saved state of the widgets the outputs still show, and of the models those refer
    to; a dropped progress bar leaves none of its models behind in the notebook's metadata."""
    saved = notebook.metadata.get("widgets", {}).get(WIDGET_STATE)
    if not saved:
        return
    state = saved.get("state", {})
    todo = [
        o["data"][WIDGET_VIEW]["model_id"]
        for c in notebook.cells
        for o in c.get("outputs", [])
        if WIDGET_VIEW in o.get("data", {})
    ]
    keep: set[str] = set()
    while todo:
        model = todo.pop()
        if model in keep or model not in state:
            continue
        keep.add(model)
        todo += re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(state[model]))
    saved["state"] = {k: v for k, v in state.items() if k in keep}
    if not keep:
        del notebook.metadata["widgets"]


def head_commit(folder: str | Path) -> str | None:
    """The git commit checked out at `folder`, if it is in a clone."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def pin(notebook, commit: str) -> None:
    """Point the set-up cell's Colab install at `commit`."""
    for cell in notebook.cells:
        if cell.cell_type == "code" and cell.source.startswith("# Set-up."):
            cell.source = re.sub(r'^COMMIT = "[^"]*"', f'COMMIT = "{commit}"', cell.source, flags=re.M)


def execute(path: str | Path, smoke: bool = False, save: bool = True, timeout: int = 3600):
    """Execute one notebook in its own folder; a cell that raises raises here (CellExecutionError).

    `smoke` sets MLUL_SMOKE=1 for the kernel: the notebooks read it and choose a tiny configuration.
    A saved notebook is cleaned (`clean`) and stamped with its `fingerprint`."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    commit = head_commit(path.parent) if save else None
    if commit:
        pin(notebook, commit)
    env = {"MLUL_SMOKE": "1" if smoke else "0", "TQDM_DISABLE": "1" if save else os.environ.get("TQDM_DISABLE", "")}
    previous = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    start = time.perf_counter()
    try:
        NotebookClient(
            notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value
    if save:
        clean(notebook)
        notebook.metadata["mlul"] = {
            "fingerprint": fingerprint(notebook),
            "executed": datetime.date.today().isoformat(),
            "seconds": round(time.perf_counter() - start),
            "command": "mlul notebooks",
        }
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
