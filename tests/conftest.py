from pathlib import Path

import pytest

from mlul.data import load_news
from mlul.models import load_tokenizer, tiny_model

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer()


@pytest.fixture
def tiny(tokenizer):
    return tiny_model(tokenizer)


@pytest.fixture
def mini_rows():
    """Three hand-written items in English and French."""
    return load_news(["en", "fr"], path=DATA / "mini.jsonl")


def make_tiny_lab(model, tokenizer, root, data=None):
    """A Lab around a tiny random model, with its own result cache under `root`."""
    from mlul.cache import Cache
    from mlul.experiment import Lab

    lab = Lab("tiny", cache=Cache(root), data=data)
    lab._base, lab._tokenizer = model, tokenizer
    lab.fingerprint = {"model": "tiny", "weights": "random-seed-0", "data": lab.data.fingerprint}
    return lab


@pytest.fixture(autouse=True)
def _isolated_results(tmp_path, monkeypatch):
    """Experiment results go to a temporary folder; converted models stay in the shared cache."""
    monkeypatch.setenv("MLUL_RESULTS", str(tmp_path / "results"))
