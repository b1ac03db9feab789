"""A disk cache of experiment steps, keyed by everything that determines their result.

An entry is a folder named by the hash of its key, and it holds data only, never code:

    <root>/<kind>/<key hash>/
        key.json            the key, to check it is the step asked for
        schema.json         each result's format (and which table columns are JSON text)
        values.json         the results that are plain JSON values
        <name>.parquet      each DataFrame (pyarrow)
        <name>.safetensors  each dict of tensors
        manifest.json       written last: the size and sha256 of every file above

A read checks the whole entry against its manifest before using any of it. An entry without a
manifest, with a file whose checksum differs, with a file that does not parse, or with a file its
manifest does not list (a planted `table.pkl`) is reported on stderr, recomputed and replaced.

A write goes to a temporary folder beside the entry (`.tmp-<pid>-<token>-<host>`) that is then
renamed into place, so readers see a whole entry or none. When two processes finish the same step,
the first rename wins and the second discards its copy. Temporary folders of killed processes are
removed by the next write in the same folder.
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import io
import json
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from mlul.models import cache_dir

VERSION = 2  # bump when a change to mlul changes what a cached step would compute
FORMAT = 1  # the layout of an entry (above)
MANIFEST = "manifest.json"
TEMP_PREFIX = ".tmp-"
ORPHAN_AGE = 3600.0  # seconds; a temporary folder lives only while one entry is written
MAX_MANIFEST_BYTES = 1 << 24
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class CorruptEntry(Exception):
    """A cache entry that must not be used; the message says why."""


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps({"v": VERSION, **key}, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_hash(*objects: object) -> str:
    """A short hash of the source code of functions, classes or modules (strings count as themselves):
    the code part of a cache key, so editing what computes a step recomputes it."""
    digest = hashlib.sha256()
    for obj in objects:
        if isinstance(obj, str):
            text = obj
        else:
            try:
                text = inspect.getsource(obj)
            except (TypeError, OSError) as err:
                raise TypeError(
                    f"source_hash: no source code for {obj!r} ({err}); pass functions, classes, modules or strings"
                ) from err
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


class Cache:
    """Results of experiment steps on disk. `enabled=False` computes every step and stores nothing;
    `refresh=True` computes every step and replaces what is stored (this repairs a bad entry).

    Counters: `hits` (steps read), `misses` (steps computed), `writes` (steps computed in this
    process that are now stored, by this process or by another that finished first)."""

    def __init__(self, root: str | Path | None = None, enabled: bool = True, refresh: bool = False):
        self.root = Path(root or os.environ.get("MLUL_RESULTS") or cache_dir() / "results")
        self.enabled = enabled
        self.refresh = refresh
        self.hits = 0
        self.misses = 0
        self.writes = 0

    def folder(self, kind: str, key: dict) -> Path:
        if not NAME.fullmatch(kind):
            raise ValueError(f"cache kind {kind!r} is not a plain name (letters, digits, '_', '.', '-')")
        return self.root / kind / key_hash(key)

    def get(self, kind: str, key: dict, compute: Callable[[], dict]) -> dict:
        """The stored result for `key`, or `compute()`'s, stored first.

        A result is a dict of DataFrames, dicts of tensors and JSON-able values.
        """
        folder = self.folder(kind, key)
        replace = self.refresh
        if self.enabled and not self.refresh:
            try:
                result = _read_current(folder, key)
            except CorruptEntry as err:
                print(f"mlul: cached step `{kind}/{folder.name}` is corrupt ({err}): recomputing", file=sys.stderr)
                replace = True
            else:
                if result is not None:
                    self.hits += 1
                    return result
        self.misses += 1
        result = compute()
        if self.enabled:
            files = encode(key, result)  # a result the cache cannot hold is a bug: let it show
            try:
                folder.parent.mkdir(parents=True, exist_ok=True)
                remove_orphans(folder.parent)
                publish(files, folder, replace)
            except OSError as err:
                print(
                    f"mlul: could not store step `{kind}/{folder.name}` in {self.root} ({err}); "
                    "the result is used but not cached",
                    file=sys.stderr,
                )
            else:
                self.writes += 1
        return result


# --- encoding: results <-> files -----------------------------------------------------------------


def encode(key: dict, result: dict) -> dict[str, bytes]:
    """The files of an entry (all but its manifest) for `result`."""
    files, schema, values = {}, {}, {}
    for name, value in result.items():
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ValueError(f"result name {name!r} is not a plain name (letters, digits, '_', '.', '-')")
        if isinstance(value, pd.DataFrame):
            file = f"{name}.parquet"
            files[file], json_columns = encode_table(value)
            schema[name] = {"format": "table", "file": file, "json_columns": json_columns}
        elif _is_tensor_dict(value):
            file = f"{name}.safetensors"
            files[file] = encode_tensors(value)
            schema[name] = {"format": "tensors", "file": file, "keys": list(value)}
        else:
            values[name] = value
            schema[name] = {"format": "value"}
    try:
        files["values.json"] = json.dumps(values).encode()
    except TypeError as err:
        raise TypeError(
            f"cannot cache results {sorted(values)}: {err}; the cache holds DataFrames, dicts of tensors and JSON values"
        ) from err
    files["schema.json"] = json.dumps(schema, indent=1).encode()
    files["key.json"] = json.dumps(key, indent=1, sort_keys=True, default=str).encode()
    return files


def decode(files: dict[str, bytes], key: dict | None = None) -> dict:
    """The result stored in an entry's files; raises CorruptEntry naming the file that is wrong."""
    stored_key, schema, values = (_parse_json(files, name) for name in ("key.json", "schema.json", "values.json"))
    if key is not None and stored_key != json.loads(json.dumps(key, sort_keys=True, default=str)):
        raise CorruptEntry("key.json is for another step")
    if not isinstance(schema, dict) or not isinstance(values, dict):
        raise CorruptEntry("schema.json or values.json is not a JSON object")
    result = {}
    for name, spec in schema.items():
        file = spec.get("file", "values.json") if isinstance(spec, dict) else "schema.json"
        try:
            if spec["format"] == "table":
                result[name] = decode_table(files[file], spec["json_columns"])
            elif spec["format"] == "tensors":
                result[name] = decode_tensors(files[file], spec["keys"])
            elif spec["format"] == "value":
                result[name] = values[name]
            else:
                raise CorruptEntry(f"schema.json has an unknown format {spec['format']!r} for {name!r}")
        except CorruptEntry:
            raise
        except Exception as err:  # any parser's error: pyarrow, safetensors, json, a malformed schema
            raise CorruptEntry(f"{file} does not parse: {_first_line(err)}") from err
    return result


def encode_table(table: pd.DataFrame) -> tuple[bytes, list[int]]:
    """Parquet bytes of `table` and the positions of its columns stored as JSON text.

    Parquet needs one type per column, so object columns (ids that are ints in some rows and
    strings in others, lists, None among strings) are stored as one JSON document per cell."""
    json_columns = [i for i, dtype in enumerate(table.dtypes) if pd.api.types.is_object_dtype(dtype)]
    if json_columns:
        table = table.copy()
        for i in json_columns:
            try:
                cells = [json.dumps(v, default=_json_scalar) for v in table.iloc[:, i]]
            except TypeError as err:
                raise TypeError(f"cannot cache column {table.columns[i]!r}: {err}") from err
            table.isetitem(i, pd.Series(cells, index=table.index, dtype=str))
    buffer = io.BytesIO()
    table.to_parquet(buffer, engine="pyarrow")
    return buffer.getvalue(), json_columns


def decode_table(blob: bytes, json_columns: list[int]) -> pd.DataFrame:
    table = pd.read_parquet(io.BytesIO(blob), engine="pyarrow")
    for i in json_columns:
        cells = [json.loads(v) for v in table.iloc[:, i]]
        table.isetitem(i, pd.Series(cells, index=table.index, dtype=object))
    return table


def encode_tensors(tensors: dict) -> bytes:
    from safetensors.torch import save

    return save({name: t.detach().cpu().contiguous() for name, t in tensors.items()})


def decode_tensors(blob: bytes, keys: list[str]) -> dict:
    from safetensors.torch import load

    tensors = load(blob)
    if set(tensors) != set(keys):
        raise CorruptEntry("the tensors stored are not those schema.json lists")
    return {k: tensors[k] for k in keys}


def _is_tensor_dict(value: object) -> bool:
    torch = sys.modules.get("torch")  # no tensor exists unless torch was imported: no need to import it here
    return (
        torch is not None
        and isinstance(value, dict)
        and bool(value)
        and all(isinstance(v, torch.Tensor) for v in value.values())
    )


def _json_scalar(value: object) -> object:
    if hasattr(value, "item") and hasattr(value, "dtype"):  # numpy scalars in object columns
        return value.item()
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON")


def _parse_json(files: dict[str, bytes], name: str) -> object:
    if name not in files:
        raise CorruptEntry(f"{name} is missing")
    try:
        return json.loads(files[name])
    except ValueError as err:
        raise CorruptEntry(f"{name} does not parse: {err}") from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# --- reading an entry ----------------------------------------------------------------------------


def read_entry(folder: Path, key: dict | None = None) -> dict:
    """The result stored in `folder`, checked against its manifest. Raises FileNotFoundError when
    there is no entry (or it vanished while being read), CorruptEntry when it must not be used."""
    with _entry_files(folder) as (names, read):
        if MANIFEST not in names:
            raise CorruptEntry(f"no {MANIFEST}: an interrupted or foreign write")
        manifest = _parse_json({MANIFEST: read(MANIFEST, MAX_MANIFEST_BYTES)}, MANIFEST)
        try:
            listed = {name: (int(m["size"]), str(m["sha256"])) for name, m in manifest["files"].items()}
            version = manifest["format"]
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise CorruptEntry(f"{MANIFEST} does not parse ({_first_line(err)})") from err
        if version != FORMAT:
            raise CorruptEntry(f"written in format {version!r}, this mlul reads format {FORMAT}")
        unexpected = sorted(set(names) - set(listed) - {MANIFEST})
        if unexpected:
            raise CorruptEntry(f"{unexpected[0]} is not in its manifest")
        files = {}
        for name, (size, sha256) in listed.items():
            if name not in names:
                raise CorruptEntry(f"{name} is missing")
            blob = read(name, size)
            if len(blob) != size or hashlib.sha256(blob).hexdigest() != sha256:
                raise CorruptEntry(f"checksum mismatch in {name}")
            files[name] = blob
    return decode(files, key)


def _read_current(folder: Path, key: dict, attempts: int = 3) -> dict | None:
    """`read_entry`, or None when there is no entry. A read that loses a race with a replacement
    (the entry renamed away mid-read) is tried again on the new entry."""
    for _ in range(attempts):
        try:
            return read_entry(folder, key)
        except FileNotFoundError:
            if not folder.exists():
                return None
    return None


@contextmanager
def _entry_files(folder: Path) -> Iterator[tuple[list[str], Callable[[str, int], bytes]]]:
    """The names in `folder` and a reader of its files (at most `limit` bytes each).

    Where the OS allows it, every file is opened through one handle on the folder, so a concurrent
    replacement (a rename of the whole folder) cannot mix the files of two entries."""
    if os.open in os.supports_dir_fd and os.listdir in os.supports_fd:
        try:
            dir_fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as err:
            if isinstance(err, FileNotFoundError):
                raise
            raise CorruptEntry(f"the entry cannot be read ({err.strerror})") from err
        try:
            yield os.listdir(dir_fd), lambda name, limit: _read_file(name, limit, dir_fd)
        finally:
            os.close(dir_fd)
    else:
        yield os.listdir(folder), lambda name, limit: _read_file(str(folder / name), limit, None)


def _read_file(path: str, limit: int, dir_fd: int | None) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0), dir_fd=dir_fd)
    except OSError as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise CorruptEntry(f"{os.path.basename(path)} cannot be opened ({err.strerror})") from err
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise CorruptEntry(f"{os.path.basename(path)} is not a regular file")
        return f.read(limit + 1)  # one byte more than expected shows a file that grew


# --- writing an entry ----------------------------------------------------------------------------


def publish(files: dict[str, bytes], folder: Path, replace: bool = False) -> None:
    """Write an entry with `files` and its manifest to `folder`, atomically.

    Without `replace`, an entry another process stored first is kept (the same step gives the same
    result). With it, the entry in place is renamed away first, then deleted."""
    tmp = temp_folder(folder.parent)
    old = None
    try:
        for name, blob in files.items():
            (tmp / name).write_bytes(blob)
        (tmp / MANIFEST).write_text(json.dumps(manifest(files), indent=1))  # last: the entry is complete
        if replace:
            old = folder.parent / temp_name()
            try:
                os.rename(folder, old)
            except FileNotFoundError:
                old = None
        try:
            os.rename(tmp, folder)
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing left there after a successful rename
        if old is not None:
            _remove(old)


def manifest(files: dict[str, bytes]) -> dict:
    return {
        "format": FORMAT,
        "files": {
            name: {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()} for name, blob in files.items()
        },
    }


def temp_name() -> str:
    """A fresh temporary name that says which process owns it: `.tmp-<pid>-<token>-<host>`."""
    return f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{socket.gethostname()}"


def temp_folder(parent: Path) -> Path:
    """A new, empty temporary folder in `parent`, which `remove_orphans` removes if its process dies."""
    path = parent / temp_name()
    path.mkdir()
    return path


def remove_orphans(parent: Path, max_age: float = ORPHAN_AGE) -> list[Path]:
    """Delete the temporary folders and files in `parent` whose process (on this host) is no longer
    running, or that are older than `max_age` seconds (another host, an unknown owner)."""
    try:
        entries = list(os.scandir(parent))
    except FileNotFoundError:
        return []
    removed = []
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX) or not _is_orphan(entry, max_age):
            continue
        _remove(Path(entry.path))
        removed.append(Path(entry.path))
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _is_orphan(entry: os.DirEntry, max_age: float) -> bool:
    owner = entry.name[len(TEMP_PREFIX) :].split("-", 2)  # pid, token, host (see temp_name)
    if len(owner) == 3 and owner[0].isdigit() and owner[2] == socket.gethostname() and not _running(int(owner[0])):
        return True
    try:
        age = time.time() - entry.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return False
    return age > max_age


def _running(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate the process there: rely on the age alone
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
