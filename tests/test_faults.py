"""The fault suite of issue 9: what a hostile or careless user, a killed process or a race does,
and the clear error or the recovery mlul gives. One test per case, in sections: the results cache,
the model (loading, fingerprints, the cache folder), then the command line."""

import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from mlul import models
from mlul.cache import MANIFEST, Cache, temp_folder
from mlul.models import CacheError, ModelError


def _step(k: int = 1) -> dict:
    """A step's result, different for every k."""
    generator = torch.Generator().manual_seed(k)
    return {
        "table": pd.DataFrame({"id": [k, f"s{k}"], "lang": ["fr", "sw"], "margin": [k / 3, -k / 7]}),
        "adapter": {"lora_A": torch.randn(4, 8, generator=generator), "lora_B": torch.randn(8, 4, generator=generator)},
        "log": pd.DataFrame({"step": [1, 2], "loss": [2.5, 1.25 * k]}),
        "seconds": 1.5,
    }


def _same(a: dict, b: dict) -> bool:
    return (
        a["table"].equals(b["table"])
        and a["log"].equals(b["log"])
        and list(a["adapter"]) == list(b["adapter"])
        and all(torch.equal(a["adapter"][n], b["adapter"][n]) for n in a["adapter"])
        and a["seconds"] == b["seconds"]
    )


class Counter:
    def __init__(self, k: int = 1):
        self.k = k
        self.calls = 0

    def __call__(self) -> dict:
        self.calls += 1
        return _step(self.k)


@pytest.fixture
def stored(tmp_path):
    """A cache with one good entry of `_step(1)`: (cache root, entry folder)."""
    cache = Cache(tmp_path / "results")
    cache.get("inject", {"k": 1}, Counter())
    return cache.root, cache.folder("inject", {"k": 1})


def _recomputed(root: Path, capsys) -> tuple[Counter, str]:
    """Read the entry again: (the compute it ran, what it printed on stderr)."""
    compute = Counter()
    result = Cache(root).get("inject", {"k": 1}, compute)
    assert _same(result, _step(1))
    return compute, capsys.readouterr().err


def _rewrite_manifest(folder: Path) -> None:
    """Make the manifest agree with the files as they are now (a tamperer who knows the format)."""
    import hashlib

    manifest = json.loads((folder / MANIFEST).read_text())
    for name in manifest["files"]:
        blob = (folder / name).read_bytes()
        manifest["files"][name] = {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    (folder / MANIFEST).write_text(json.dumps(manifest))


# --- the results cache -----------------------------------------------------------------------------


class Payload:
    """Unpickling this runs os.system: what a crafted table.pkl does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_payload_would_run_if_unpickled(tmp_path):
    """The crafted pickle below is a real attack: loading it runs its command."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


def test_crafted_pickle_in_an_old_style_entry_is_never_loaded(tmp_path, capsys):
    cache = Cache(tmp_path / "results")
    folder = cache.folder("probe", {"k": 1})
    folder.mkdir(parents=True)
    marker = tmp_path / "ran"
    (folder / "table.pkl").write_bytes(pickle.dumps(Payload(marker)))
    (folder / "key.json").write_text(json.dumps({"k": 1}))
    (folder / "values.json").write_text("{}")
    compute = Counter()
    result = cache.get("probe", {"k": 1}, compute)
    assert compute.calls == 1 and _same(result, _step(1)) and not marker.exists()
    assert f"cached step `probe/{folder.name}` is corrupt (no manifest.json" in capsys.readouterr().err
    assert not (folder / "table.pkl").exists() and (folder / MANIFEST).is_file()  # replaced by a good entry


def test_crafted_pickle_planted_in_a_good_entry_is_never_loaded(stored, tmp_path, capsys):
    root, folder = stored
    marker = tmp_path / "ran"
    (folder / "table.pkl").write_bytes(pickle.dumps(Payload(marker)))
    compute, err = _recomputed(root, capsys)
    assert compute.calls == 1 and not marker.exists()
    assert "is corrupt (table.pkl is not in its manifest): recomputing" in err
    assert not (folder / "table.pkl").exists()


def test_one_changed_byte_in_a_table_is_reported_and_recomputed(stored, capsys):
    root, folder = stored
    table = folder / "table.parquet"
    blob = bytearray(table.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    table.write_bytes(bytes(blob))
    compute, err = _recomputed(root, capsys)
    assert compute.calls == 1
    assert (
        err.strip()
        == f"mlul: cached step `inject/{folder.name}` is corrupt (checksum mismatch in table.parquet): recomputing"
    )
    again = Counter()
    Cache(root).get("inject", {"k": 1}, again)  # the entry was replaced by a good one
    assert again.calls == 0 and capsys.readouterr().err == ""


def test_truncated_adapter_is_recomputed_not_an_oserror(stored, capsys):
    root, folder = stored
    adapter = folder / "adapter.safetensors"
    adapter.write_bytes(adapter.read_bytes()[: adapter.stat().st_size // 2])
    compute, err = _recomputed(root, capsys)
    assert compute.calls == 1 and "checksum mismatch in adapter.safetensors" in err


def test_a_file_that_does_not_parse_is_recomputed(stored, capsys):
    root, folder = stored
    adapter = folder / "adapter.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:100])
    _rewrite_manifest(folder)  # the checksums pass: only the parser can tell
    compute, err = _recomputed(root, capsys)
    assert compute.calls == 1 and "(adapter.safetensors does not parse:" in err

    (folder / "table.parquet").write_bytes(b"PAR1 not really parquet PAR1")
    _rewrite_manifest(folder)
    compute, err = _recomputed(root, capsys)
    assert compute.calls == 1 and "(table.parquet does not parse:" in err


def test_partial_entry_without_manifest_is_recomputed(stored, capsys):
    root, folder = stored
    (folder / MANIFEST).unlink()  # what a write killed before its last file leaves
    compute, err = _recomputed(root, capsys)
    assert compute.calls == 1 and "(no manifest.json: an interrupted or foreign write)" in err


def test_missing_file_and_wrong_key_are_recomputed(stored, capsys):
    root, folder = stored
    (folder / "log.parquet").unlink()
    compute, err = _recomputed(root, capsys)
    assert compute.calls == 1 and "(log.parquet is missing)" in err

    (folder / "key.json").write_text(json.dumps({"k": 2}))
    _rewrite_manifest(folder)
    compute, err = _recomputed(root, capsys)
    assert compute.calls == 1 and "(key.json is for another step)" in err


def test_a_symlink_in_an_entry_is_not_followed(stored, tmp_path, capsys):
    root, folder = stored
    secret = tmp_path / "secret"
    secret.write_bytes((folder / "values.json").read_bytes())
    (folder / "values.json").unlink()
    (folder / "values.json").symlink_to(secret)
    compute, err = _recomputed(root, capsys)
    assert compute.calls == 1 and "values.json cannot be opened" in err


def test_refresh_repairs_a_bad_entry(stored, capsys):
    """`--no-cache` (refresh) recomputes and replaces, so a bad entry is repaired, not kept."""
    root, folder = stored
    adapter = folder / "adapter.safetensors"
    adapter.write_bytes(b"\0" * 10)
    refresh = Cache(root, refresh=True)
    compute = Counter()
    assert _same(refresh.get("inject", {"k": 1}, compute), _step(1)) and compute.calls == 1
    assert refresh.writes == 1 and capsys.readouterr().err == ""  # it did not even read the bad entry
    again = Counter()
    assert _same(Cache(root).get("inject", {"k": 1}, again), _step(1)) and again.calls == 0


def _writer(root: str, worker: int, keys: int, start, queue) -> None:
    """One of three processes sharing a cache; worker 0 replaces every entry (refresh) while the
    others read and write, so reads race with replacements."""
    import contextlib
    import io

    errors, stderr = [], io.StringIO()
    cache = Cache(root, refresh=worker == 0)
    start.wait()  # all three on the same keys at the same moment
    with contextlib.redirect_stderr(stderr):
        for k in range(keys):
            try:
                result = cache.get("inject", {"k": k}, lambda k=k: _step(k))
                if not _same(result, _step(k)):
                    errors.append(f"key {k}: wrong result")
            except Exception as err:  # the test reports every error, of any kind
                errors.append(f"key {k}: {type(err).__name__}: {err}")
    queue.put((worker, errors, stderr.getvalue(), cache.writes))


def test_three_processes_share_a_cache_without_errors_or_orphans(tmp_path):
    keys = 100
    context = multiprocessing.get_context("spawn")
    queue, start = context.Queue(), context.Barrier(3)
    workers = [context.Process(target=_writer, args=(str(tmp_path), w, keys, start, queue)) for w in range(3)]
    for p in workers:
        p.start()
    reports = [queue.get(timeout=300) for _ in workers]
    for p in workers:
        p.join(timeout=60)
        assert p.exitcode == 0
    for worker, errors, stderr, writes in reports:
        assert errors == [], f"worker {worker}: {errors[:3]}"
        assert stderr == "", f"worker {worker} reported: {stderr[:300]}"
        assert writes >= (keys if worker == 0 else 0)
    cache = Cache(tmp_path)
    for k in range(keys):
        assert _same(cache.get("inject", {"k": k}, lambda: pytest.fail("an entry is missing")), _step(k))
    assert cache.hits == keys
    leftovers = [p.name for p in (tmp_path / "inject").iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == [] and len(list((tmp_path / "inject").iterdir())) == keys


def _dying_writer(parent: str, ready) -> None:
    folder = temp_folder(Path(parent))
    (folder / "table.parquet").write_bytes(b"half a table")
    ready.set()
    time.sleep(600)


def test_orphan_of_a_killed_writer_is_cleaned_and_the_step_resumes(tmp_path):
    cache = Cache(tmp_path)
    cache.get("inject", {"k": 1}, Counter())
    kind = tmp_path / "inject"
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    process = context.Process(target=_dying_writer, args=(str(kind), ready))
    process.start()
    assert ready.wait(120)
    process.kill()
    process.join()
    orphans = [p for p in kind.iterdir() if p.name.startswith(".tmp-")]
    assert len(orphans) == 1
    compute = Counter(2)
    cache.get("inject", {"k": 2}, compute)  # the next write in that folder cleans up
    assert compute.calls == 1 and not orphans[0].exists()
    resumed = Counter()
    assert _same(Cache(tmp_path).get("inject", {"k": 1}, resumed), _step(1)) and resumed.calls == 0


# --- the model: paths, hub ids, fingerprints, the cache folder ------------------------------------


def _saved_model(folder: Path, tokenizer, seed: int = 0) -> Path:
    models.tiny_model(tokenizer, seed=seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", ["./nope", "/tmp/nope-mlul-missing", "~/nope-mlul-missing", "a/b/c", "nope.gguf"])
def test_a_local_path_that_does_not_exist_is_a_clear_error(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    with pytest.raises(
        ModelError, match=f"model path '{name}' does not exist .*pass a folder saved with save_pretrained"
    ):
        models.check_model(name)
    with pytest.raises(ModelError, match="does not exist"):
        models.load_model(name, device="cpu")  # the same error, before any network call
    assert time.perf_counter() - start < 2


def test_a_folder_without_config_is_a_clear_error(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match=r"model folder .* has no config\.json; pass a folder saved with"):
        models.load_model(str(tmp_path), device="cpu")


def test_a_folder_with_config_but_no_weights_is_a_clear_error(tmp_path, tokenizer):
    folder = _saved_model(tmp_path / "m", tokenizer)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(
        ModelError, match=r"has a config\.json but no weights \(\*\.safetensors, \*\.bin.*save_pretrained"
    ):
        models.check_model(str(folder))
    with pytest.raises(ModelError, match="no weights"):
        models.load_model(str(folder), device="cpu")


def test_a_file_that_is_not_gguf_is_a_clear_error(tmp_path):
    path = tmp_path / "weights.txt"
    path.write_text("x")
    with pytest.raises(ModelError, match=r"is not a \.gguf checkpoint"):
        models.check_model(str(path))


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 with an empty Hugging Face cache of our own."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    models.hub_revision.cache_clear()
    yield tmp_path / "hf"
    models.hub_revision.cache_clear()


def test_an_uncached_hub_id_offline_is_a_clear_error(offline_hub):
    start = time.perf_counter()
    with pytest.raises(ModelError) as raised:
        models.load_model("nobody/no-such-model-xyz", device="cpu")
    assert str(raised.value) == (
        "model 'nobody/no-such-model-xyz' is not in the local Hugging Face cache and offline mode is on "
        "(HF_HUB_OFFLINE=1); download it once with a network connection, or pass a local folder, a .gguf file "
        "or 'gemma-3-270m'"
    )
    assert "\n" not in str(raised.value) and time.perf_counter() - start < 2


def _hub_error(monkeypatch, cls):
    from types import SimpleNamespace

    import huggingface_hub

    response = SimpleNamespace(status_code=404, headers={}, request=None)  # what the hub's errors read of one

    def download(repo_id, filename, **kwargs):
        raise cls(f"{cls.__name__}: {repo_id}", response=response)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    models.hub_revision.cache_clear()


def test_a_hub_id_that_does_not_exist_is_a_clear_error(monkeypatch):
    from huggingface_hub.errors import RepositoryNotFoundError

    _hub_error(monkeypatch, RepositoryNotFoundError)
    with pytest.raises(
        ModelError, match=r"^no model 'nobody/no-such-model' on the Hugging Face hub.*check the spelling"
    ):
        models.load_model("nobody/no-such-model", device="cpu")
    with pytest.raises(ModelError, match="no model 'nobody/no-such-model'"):
        models.weights_fingerprint("nobody/no-such-model")


def test_a_gated_model_without_token_says_to_accept_the_licence(monkeypatch):
    from huggingface_hub.errors import GatedRepoError

    _hub_error(monkeypatch, GatedRepoError)
    with pytest.raises(ModelError) as raised:
        models.load_model("google/gemma-3-1b-pt", device="cpu")
    message = str(raised.value)
    assert message.startswith("'google/gemma-3-1b-pt' is a gated model and no token with access was found")
    assert "https://huggingface.co/google/gemma-3-1b-pt" in message and "HF_TOKEN" in message and "\n" not in message


def test_replacing_the_weights_in_a_folder_changes_its_fingerprint(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("MLUL_CACHE", str(tmp_path / "cache"))
    folder = _saved_model(tmp_path / "m", tokenizer, seed=0)
    first = models.weights_fingerprint(str(folder))
    assert first.startswith("sha256:") and first != str(folder)

    reads = []
    real = models._sha256
    monkeypatch.setattr(models, "_sha256", lambda path: reads.append(path) or real(path))
    assert models.weights_fingerprint(str(folder)) == first and reads == []  # remembered: not hashed again

    _saved_model(folder, tokenizer, seed=1)  # new weights, same folder, same file names and sizes
    assert models.weights_fingerprint(str(folder)) != first and reads


def test_same_size_rewrite_with_the_old_mtime_still_changes_the_fingerprint(tmp_path, monkeypatch):
    monkeypatch.setenv("MLUL_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    weights = folder / "model.safetensors"
    weights.write_bytes(b"a" * 1000)
    first = models.weights_fingerprint(str(folder))
    stat = weights.stat()
    weights.write_bytes(b"b" * 1000)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # hide the change from size and mtime
    assert models.weights_fingerprint(str(folder)) != first


def test_a_gguf_file_is_fingerprinted_by_its_contents(tmp_path, monkeypatch):
    monkeypatch.setenv("MLUL_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF one")
    first = models.weights_fingerprint(str(gguf))
    gguf.write_bytes(b"GGUF two")
    assert models.weights_fingerprint(str(gguf)) != first


def test_a_hub_id_is_fingerprinted_by_its_cached_revision_offline(offline_hub):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_hub / "models--someone--small-model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    assert models.weights_fingerprint("someone/small-model") == f"someone/small-model@{commit}"

    newer = "fedcba9876543210fedcba9876543210fedcba98"
    (repo / "refs" / "main").write_text(newer)  # the cache now holds a newer revision
    (repo / "snapshots" / newer).mkdir()
    (repo / "snapshots" / newer / "config.json").write_text("{}")
    models.hub_revision.cache_clear()
    assert models.weights_fingerprint("someone/small-model") == f"someone/small-model@{newer}"


def test_a_read_only_cache_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    folder = blocker / "mlul"  # cannot be created, even by root
    with pytest.raises(
        CacheError, match=rf"the mlul cache folder {folder} is not writable .*set MLUL_CACHE to a writable"
    ):
        models.check_cache_writable(folder)
    monkeypatch.setenv("MLUL_CACHE", str(folder))
    with pytest.raises(CacheError, match="set MLUL_CACHE"):
        models.ensure_converted()  # before the minute of conversion, not after


def test_a_read_only_file_system_is_a_clear_error(tmp_path, monkeypatch):
    import errno
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    with pytest.raises(CacheError, match=rf"{tmp_path} is not writable \(Read-only file system\); set MLUL_CACHE"):
        models.check_cache_writable(tmp_path)
    monkeypatch.undo()
    models.check_cache_writable(tmp_path)  # a writable folder passes


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write a read-only folder")
def test_a_read_only_folder_is_a_clear_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(CacheError, match="is not writable"):
            models.check_cache_writable(folder)
    finally:
        folder.chmod(0o700)


# --- the command line (the lead adds these) -------------------------------------------------------
# Option checks before any work are in tests/test_cli_checks.py (one test per option).


def test_ctrl_c_prints_one_line_and_exits_130(monkeypatch, capsys, tmp_path):
    import mlul.experiment
    from mlul import cli

    def interrupted(config, lab, progress=True):
        lab.cache.writes = 3  # as if three steps had finished before the key press
        raise KeyboardInterrupt

    monkeypatch.setattr(mlul.experiment, "spread", interrupted)
    monkeypatch.setattr(models, "check_model", lambda name: None)
    assert cli.main(["spread", "--fast", "--out", str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err
    assert "interrupted; 3 finished steps are cached, rerun the same command to resume" in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path):
    from mlul import cli

    with pytest.raises(ValueError):
        cli.main(["--debug", "spread", "--items", "0", "--out", str(tmp_path / "o")])


def test_kill_and_resume_gives_identical_numbers(tmp_path):
    """A spread run killed (SIGKILL) after its first steps resumes from the cache and gives the same
    numbers as an uninterrupted run."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(Path(__file__).parents[1])!r}]
        from dataclasses import replace
        from mlul.models import load_tokenizer, tiny_model
        from mlul import experiment
        from test_experiment import TINY, tiny_lab
        tokenizer = load_tokenizer()
        lab = tiny_lab(tiny_model(tokenizer), tokenizer, sys.argv[1])
        result = experiment.spread(replace(TINY, sham=False, inject_languages="fr,de"), lab, progress=False)
        result.summary.to_csv(sys.argv[2], index=False)
        """
    )
    path = tmp_path / "run.py"
    path.write_text(script)
    cache = tmp_path / "cache"
    victim = subprocess.Popen([sys.executable, str(path), str(cache), str(tmp_path / "killed.csv")])
    deadline = time.time() + 120
    while time.time() < deadline and not list(cache.glob("inject/*/manifest.json")):
        time.sleep(0.2)
    victim.kill()
    victim.wait()
    assert list(cache.glob("inject/*/manifest.json")), "the first injection never finished"
    subprocess.run([sys.executable, str(path), str(cache), str(tmp_path / "resumed.csv")], check=True)
    subprocess.run([sys.executable, str(path), str(tmp_path / "fresh"), str(tmp_path / "fresh.csv")], check=True)
    resumed = pd.read_csv(tmp_path / "resumed.csv")
    fresh = pd.read_csv(tmp_path / "fresh.csv")
    pd.testing.assert_frame_equal(resumed, fresh)
    assert not list(cache.rglob(".tmp-*"))
