"""The command line, model loading and the converted-model cache."""

import shutil

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
    assert models.pick_dtype(torch.device("cpu"), "bfloat16") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        models.pick_dtype(torch.device("cpu"), "float8")
    assert models.pick_device("cpu").type == "cpu"


def test_local_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        models.resolve_model_path(str(tmp_path))


def test_hub_id_is_passed_through():
    assert models.resolve_model_path("google/gemma-3-270m") == "google/gemma-3-270m"


def test_offline_hub_id_fails_with_advice(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="needs a network connection"):
        models.load_model("nobody/no-such-model-xyz")


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
