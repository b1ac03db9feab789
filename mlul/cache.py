"""A disk cache of experiment steps, keyed by everything that determines their result.

Each entry is a folder named by the hash of its key; it is written to a temporary folder and
renamed into place, so an interrupted run leaves either a complete entry or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from mlul.models import cache_dir

VERSION = 1  # bump when a change to mlul changes what a cached step would compute


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps({"v": VERSION, **key}, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Cache:
    def __init__(self, root: str | Path | None = None, enabled: bool = True):
        self.root = Path(root or os.environ.get("MLUL_RESULTS") or cache_dir() / "results")
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def folder(self, kind: str, key: dict) -> Path:
        return self.root / kind / key_hash(key)

    def get(self, kind: str, key: dict, compute: Callable[[], dict]) -> dict:
        """The stored result for `key`, or `compute()`'s, stored first.

        A result is a dict of DataFrames, tensors dicts and JSON-able values.
        """
        folder = self.folder(kind, key)
        if self.enabled and (folder / "key.json").is_file():
            self.hits += 1
            return _read(folder)
        self.misses += 1
        result = compute()
        if self.enabled:
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
            _write(tmp, result)
            (tmp / "key.json").write_text(
                json.dumps(key, indent=1, sort_keys=True, default=str)
            )  # last: marks complete
            if folder.exists():
                shutil.rmtree(folder)
            tmp.rename(folder)
        return result


def _write(folder: Path, result: dict) -> None:
    values = {}
    for name, value in result.items():
        if isinstance(value, pd.DataFrame):
            value.to_pickle(folder / f"{name}.pkl")
        elif isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
            torch.save(value, folder / f"{name}.pt")
        else:
            values[name] = value
    (folder / "values.json").write_text(json.dumps(values, default=str))


def _read(folder: Path) -> dict:
    result = json.loads((folder / "values.json").read_text())
    for path in folder.glob("*.pkl"):
        result[path.stem] = pd.read_pickle(path)
    for path in folder.glob("*.pt"):
        result[path.stem] = torch.load(path, weights_only=True)
    return result
