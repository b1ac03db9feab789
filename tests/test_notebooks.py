"""Every notebook runs top to bottom, headless, in the tiny CI configuration (MLUL_SMOKE=1).

They use the real default model; a cell that raises fails the test."""

import pytest

from mlul.notebooks import execute, notebook_paths
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared_results(tmp_path_factory):
    """One result cache for all notebooks, as a user would have: later notebooks reuse steps."""
    return tmp_path_factory.mktemp("notebook-results")


@pytest.mark.parametrize("path", notebook_paths(ROOT / "notebooks"), ids=lambda p: p.stem)
def test_notebook_runs(path, shared_results, monkeypatch):
    monkeypatch.setenv("MLUL_RESULTS", str(shared_results))
    notebook = execute(path, smoke=True, save=False)
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_every_notebook_opens_with_colab_and_ends_with_exercises():
    for path in notebook_paths(ROOT / "notebooks"):
        text = path.read_text()
        assert "colab.research.google.com/github" in text, path
        if not path.stem.startswith(("00", "06")):
            assert "### Exercise" in text and "<details>" in text, path
