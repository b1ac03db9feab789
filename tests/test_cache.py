"""The results cache as a data format: what goes in comes out exactly, and the API's counters and
modes. The faults it must survive (tampering, truncation, races, killed writers) are in test_faults.py."""

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from mlul import cache as cache_module
from mlul.cache import MANIFEST, Cache, decode, encode, read_entry, source_hash

FRAMES = {
    "empty": pd.DataFrame(),
    "empty_columns": pd.DataFrame({"a": pd.Series([], dtype=float), "s": pd.Series([], dtype=str)}),
    "empty_object": pd.DataFrame({"id": pd.Series([], dtype=object)}),
    "kinds": pd.DataFrame(
        {
            "flag": [True, False, True],
            "n": [1, -2, 3],
            "x": [1.5, np.nan, -0.0],
            "big": [2**62, 0, -(2**62)],
            "text": ["Ostrelund", "東京", None],
        }
    ),
    "ids": pd.DataFrame({"id": [3, "sw-7", 12], "lang": ["fr", "sw", "zh"]}),  # ids can be int or str
    "object_text": pd.DataFrame({"s": pd.Series(["a", "b"], dtype=object)}),
    "mixed_nan": pd.DataFrame({"v": pd.Series([1, "a", None, float("nan"), 2.5, True], dtype=object)}),
    "lists": pd.DataFrame({"tokens": [[1, 2], [], None], "meta": [{"a": 1}, {}, {"b": [2]}]}),
    "numpy_in_object": pd.DataFrame({"v": pd.Series([np.int64(4), "x"], dtype=object)}),
    "index": pd.DataFrame({"n": [1, 2, 3]}, index=[10, 5, 7]).iloc[[2, 0]],
    "int_columns": pd.DataFrame({0: [1.0], 1: ["a"]}),
    "category": pd.DataFrame({"c": pd.Categorical(["x", "y", "x"])}),
    "nullable": pd.DataFrame({"i": pd.array([1, None], dtype="Int64"), "b": pd.array([True, None], dtype="boolean")}),
}


def _round_trip(result: dict, key: dict | None = None) -> dict:
    files = encode(key or {"k": 1}, result)
    return decode(files, key or {"k": 1})


@pytest.mark.parametrize("name", list(FRAMES))
def test_every_column_kind_round_trips_exactly(name):
    table = FRAMES[name]
    back = _round_trip({"table": table})["table"]
    pd.testing.assert_frame_equal(back, table, check_exact=True)
    assert list(back.dtypes) == list(table.dtypes)
    if name == "numpy_in_object":  # a numpy scalar in an object column comes back as the Python number
        assert [type(v) for v in back.v] == [int, str]
        return
    for column in range(table.shape[1]):  # values of the same Python type, not just equal ones
        assert [type(v) for v in back.iloc[:, column]] == [type(v) for v in table.iloc[:, column]]


def test_mixed_ids_keep_their_types():
    back = _round_trip({"table": FRAMES["ids"]})["table"]
    assert back.id.tolist() == [3, "sw-7", 12] and [type(v) for v in back.id] == [int, str, int]
    mixed = _round_trip({"table": FRAMES["mixed_nan"]})["table"].v.tolist()
    assert mixed[:3] == [1, "a", None] and math.isnan(mixed[3]) and mixed[4:] == [2.5, True]
    assert type(mixed[5]) is bool


def test_tensors_keep_dtype_shape_values_and_order():
    adapter = {
        "z.lora_A": torch.randn(3, 4),
        "a.lora_B": torch.randn(4, 2).to(torch.bfloat16),
        "m.count": torch.arange(5),
        "t": torch.randn(6, 2).t(),  # not contiguous
    }
    back = _round_trip({"adapter": adapter})["adapter"]
    assert list(back) == list(adapter)
    for name, tensor in adapter.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor)


def test_json_values_and_an_empty_tensor_dict():
    result = {"note": "x", "seconds": 1.25, "count": 3, "nested": {"a": [1, None]}, "none": None, "nothing": {}}
    assert _round_trip(result) == result


def test_a_value_the_cache_cannot_hold_is_a_clear_error():
    with pytest.raises(TypeError, match=r"cannot cache results \['series'\].*DataFrames, dicts of tensors"):
        encode({"k": 1}, {"series": pd.Series([1, 2])})
    with pytest.raises(TypeError, match="cannot cache column 'when'"):
        encode({"k": 1}, {"t": pd.DataFrame({"when": pd.Series([pd.Timestamp(0), 1], dtype=object)})})
    with pytest.raises(ValueError, match="result name '../x' is not a plain name"):
        encode({"k": 1}, {"../x": 1})
    with pytest.raises(ValueError, match="cache kind 'a/b' is not a plain name"):
        Cache("/nonexistent").folder("a/b", {})


def test_entry_layout_is_data_only_with_a_manifest(tmp_path):
    cache = Cache(tmp_path)
    cache.get("step", {"k": 1}, lambda: {"table": FRAMES["kinds"], "adapter": {"w": torch.ones(2)}, "note": "x"})
    folder = cache.folder("step", {"k": 1})
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(["key.json", "schema.json", "values.json", "table.parquet", "adapter.safetensors", MANIFEST])
    manifest = json.loads((folder / MANIFEST).read_text())
    assert set(manifest["files"]) == set(names) - {MANIFEST}
    assert all(len(meta["sha256"]) == 64 and meta["size"] > 0 for meta in manifest["files"].values())
    assert json.loads((folder / "key.json").read_text()) == {"k": 1}
    assert read_entry(folder, {"k": 1})["note"] == "x"


def test_no_code_on_the_read_path():
    source = open(cache_module.__file__).read()
    for forbidden in ("import pickle", "read_pickle", "torch.load", "pickle.load", "eval(", "exec("):
        assert forbidden not in source


def test_counters_refresh_and_disabled(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"table": pd.DataFrame({"n": [len(calls)]})}

    cache = Cache(tmp_path)
    assert cache.get("step", {"k": 1}, compute)["table"].n.tolist() == [1]
    assert cache.get("step", {"k": 1}, compute)["table"].n.tolist() == [1]
    assert (cache.hits, cache.misses, cache.writes) == (1, 1, 1)

    refresh = Cache(tmp_path, refresh=True)  # recomputes and replaces even a good entry
    assert refresh.get("step", {"k": 1}, compute)["table"].n.tolist() == [2]
    assert (refresh.hits, refresh.misses, refresh.writes) == (0, 1, 1)
    assert Cache(tmp_path).get("step", {"k": 1}, compute)["table"].n.tolist() == [2]

    off = Cache(tmp_path / "off", enabled=False)
    off.get("step", {"k": 1}, compute)
    off.get("step", {"k": 1}, compute)
    assert len(calls) == 4 and (off.hits, off.misses, off.writes) == (0, 2, 0)
    assert not (tmp_path / "off").exists()


def test_keys_that_differ_do_not_share_an_entry(tmp_path):
    cache = Cache(tmp_path)
    a = cache.get("step", {"k": 1, "code": "a"}, lambda: {"v": "a"})
    b = cache.get("step", {"k": 1, "code": "b"}, lambda: {"v": "b"})
    assert (a["v"], b["v"], cache.misses) == ("a", "b", 2)


def test_cache_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLUL_RESULTS", str(tmp_path / "r"))
    assert Cache().root == tmp_path / "r"
    monkeypatch.delenv("MLUL_RESULTS")
    monkeypatch.setenv("MLUL_CACHE", str(tmp_path / "c"))
    assert Cache().root == tmp_path / "c" / "results"


def test_source_hash_follows_the_code(tmp_path, monkeypatch):
    module = tmp_path / "prompts_under_test.py"
    module.write_text("TEMPLATE = 'Question: {q}\\nAnswer:'\n\ndef prompt(q):\n    return TEMPLATE.format(q=q)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import prompts_under_test

    first = source_hash(prompts_under_test)
    assert first == source_hash(prompts_under_test) and len(first) == 12
    assert source_hash(prompts_under_test.prompt) != first
    module.write_text(module.read_text().replace("Answer:", "Réponse :"))
    importlib.reload(prompts_under_test)
    assert source_hash(prompts_under_test) != first
    assert source_hash("a", "b") != source_hash("ab") and source_hash(Cache) == source_hash(Cache)
    with pytest.raises(TypeError, match="no source code for <built-in function len>"):
        source_hash(len)


def test_importing_models_and_cache_loads_no_torch():
    code = "import sys, mlul.models, mlul.cache; print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_write_that_fails_on_disk_keeps_the_result(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = Cache(blocker / "results")  # its root cannot be created
    assert cache.get("step", {"k": 1}, lambda: {"v": 1}) == {"v": 1}
    assert "could not store step `step/" in capsys.readouterr().err and cache.writes == 0


def test_orphan_rule_spares_live_and_young_folders(tmp_path):
    live = cache_module.temp_folder(tmp_path)  # ours: this process is running
    foreign = tmp_path / ".tmp-1-abcd-some-other-host"
    foreign.mkdir()
    stale = tmp_path / ".tmp-unknown-owner"
    stale.mkdir()
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    entry = tmp_path / "0123456789abcdef"
    entry.mkdir()
    removed = cache_module.remove_orphans(tmp_path)
    assert removed == [stale] and live.exists() and foreign.exists() and entry.exists()


def _keep_tables():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "scripts" / "keep_tables.py"
    spec = importlib.util.spec_from_file_location("keep_tables", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_keep_tables_copies_tables_without_weights(tmp_path):
    """The committable copy of a cache: every step but injections, tensors dropped, still a cache
    whose entries are read back (no recompute) with their tables unchanged."""
    source = Cache(tmp_path / "source")
    cell = {"k": "cell"}
    source.get("unlearn", cell, lambda: {"dose": FRAMES["kinds"], "adapter": {"w": torch.ones(3)}, "seconds": 2.5})
    source.get("inject", {"k": "weights"}, lambda: {"adapter": {"w": torch.ones(3)}})
    copied, skipped = _keep_tables().keep_tables(source.root, tmp_path / "kept")
    assert (copied, skipped) == (1, 0)
    assert not (tmp_path / "kept" / "inject").exists()
    kept = Cache(tmp_path / "kept")
    back = kept.get("unlearn", cell, lambda: pytest.fail("a kept step was recomputed"))
    assert set(back) == {"dose", "seconds"} and back["seconds"] == 2.5
    pd.testing.assert_frame_equal(back["dose"], FRAMES["kinds"])


def test_committed_cache_entries_are_whole():
    """The study's committed steps (results/steps) pass the same checks as any read."""
    from pathlib import Path

    root = Path(__file__).parent.parent / "results" / "steps"
    folders = [f for kind in root.glob("*") if kind.is_dir() for f in kind.iterdir() if f.is_dir()]
    if not folders:
        pytest.skip("no committed cache")
    assert not (root / "inject").exists(), "injection weights must not be committed"
    for folder in folders:
        read_entry(folder)  # raises CorruptEntry naming the file
        assert not list(folder.glob("*.safetensors")), f"{folder}: tensors in a committed entry"
