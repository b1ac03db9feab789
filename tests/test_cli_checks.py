"""Every option of the experiment commands is checked before any work: a bad value fails in
well under two seconds with one line that names the option, the value and the valid choices,
and no model is loaded."""

import subprocess
import sys
import time

import pytest

from mlul import cli, unlearn


@pytest.fixture(autouse=True)
def _no_model(monkeypatch):
    """Any attempt to load a model fails the test: the checks must come first."""
    import mlul.models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(mlul.models, "load_model", refuse)


CASES = [
    (["reproduce", "--methods", "gax"], "--methods: unknown value 'gax'; choose from ga, grad_diff"),
    (["reproduce", "--settings", "englsh"], "--settings: unknown value 'englsh'; choose from english"),
    (["reproduce", "--settings", ","], "--settings is empty"),
    (["reproduce", "--inject", "xx"], "--inject 'xx'"),
    (["spread", "--probe", "en,qq"], "--probe 'en,qq'"),
    (["reproduce", "--items", "0"], "--items must be a whole number of at least 1, got 0"),
    (["reproduce", "--items", "-1"], "--items must be a whole number of at least 1, got -1"),
    (["reproduce", "--items", "100000"], "the data has 40 injection stories; give at most 40"),
    (["spread", "--epochs", "0"], "--epochs must be a positive number, got 0"),
    (["spread", "--lr", "0"], "--lr must be a positive number, got 0.0"),
    (["spread", "--lr", "-1"], "--lr must be a positive number, got -1.0"),
    (["reproduce", "--steps", "0"], "--steps must be a whole number of at least 1, got 0"),
    (["reproduce", "--unlearn-lr", "-0.1"], "--unlearn-lr must be a positive number"),
    (["reproduce", "--inject", "en"], "English is the language of the real (safe) stories"),
    (["probe", "--items", "0"], "--items must be a whole number of at least 1, got 0"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_option_is_named_before_any_work(argv, message, capsys):
    start = time.perf_counter()
    assert cli.main(argv) == 2
    assert time.perf_counter() - start < 2.0
    err = capsys.readouterr().err
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_out_that_is_a_file(tmp_path, capsys):
    out = tmp_path / "results.csv"
    out.write_text("mine\n")
    assert cli.main(["spread", "--out", str(out), "--fast"]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err
    assert out.read_text() == "mine\n"  # nothing a user made is lost


def test_unwritable_out_and_cache(tmp_path, capsys, monkeypatch):
    """A path under a file cannot be created, even by root."""
    blocker = tmp_path / "a-file"
    blocker.write_text("mine\n")
    assert cli.main(["spread", "--out", str(blocker / "x"), "--fast"]) == 2
    assert "is not writable" in capsys.readouterr().err
    monkeypatch.setenv("MLUL_CACHE", str(blocker / "cache"))
    monkeypatch.delenv("MLUL_RESULTS", raising=False)
    assert cli.main(["spread", "--out", str(tmp_path / "out"), "--fast"]) == 2
    assert "set MLUL_CACHE to a writable folder" in capsys.readouterr().err
    assert blocker.read_text() == "mine\n"


def test_cli_lists_match_the_library():
    assert cli.METHODS == unlearn.METHODS and cli.SETTINGS == unlearn.SETTINGS
    from mlul import plots

    colors = plots._method_colors(unlearn.METHODS)  # every method its own fixed colour
    assert set(plots.METHOD_COLORS) == set(unlearn.METHODS) and len(set(colors.values())) == len(colors)


def test_missing_model_path_is_one_line(tmp_path, capsys):
    assert cli.main(["spread", "--model", str(tmp_path / "nope"), "--fast", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and err.count("\n") == 1 and "Traceback" not in err


def test_help_and_validate_start_fast():
    """`mlul --help` does not import torch or transformers (they take seconds to import)."""
    code = "import sys; from mlul.cli import main; main(['--help'])"
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True)
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "transformers" not in imported
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mlul.cli", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - start < 3.0  # generous for a loaded CI machine; about 0.3 s here


def test_a_custom_language_list_is_one_setting():
    from mlul.data import open_data
    from mlul.experiment import _split

    args = cli.build_parser().parse_args(["reproduce", "--fast", "--settings", "english,en+de"])
    config = cli._reproduce_config(args, open_data())
    assert _split(config.settings) == ["english", "en+de"]
    assert unlearn.setting_languages("en+de", "fr") == ["en", "de"]
