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


def test_fingerprint_follows_cells_and_clean_drops_debris():
    import nbformat

    from mlul.notebooks import clean, fingerprint

    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("1 + 1"), nbformat.v4.new_markdown_cell("Two.")]
    )
    before = fingerprint(notebook)
    notebook.cells[1].source = "Two, as printed above."
    assert fingerprint(notebook) == before
    notebook.cells[0].source = "1 + 2"
    assert fingerprint(notebook) != before
    notebook.cells[0].outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="probe: 100%|##| 1/1"),
        nbformat.v4.new_output("stream", name="stdout", text="saved /root/.cache/mlul/x.png\n"),
        nbformat.v4.new_output(
            "display_data",
            data={"application/vnd.jupyter.widget-view+json": {"model_id": "1"}, "text/plain": "mlul:  0% |  | 00:00"},
        ),
    ]
    kept = nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "a1"}})
    notebook.cells[0].outputs.append(kept)
    model = {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_b2"], "layout": "IPY_MODEL_c3"}}
    notebook.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {
            "state": {"a1": model, "b2": {"state": {}}, "c3": {"state": {}}, "1": {"state": {}}, "d4": {"state": {}}},
            "version_major": 2,
        }
    }
    clean(notebook)
    assert [o.get("text") for o in notebook.cells[0].outputs] == ["saved x.png\n", None]
    saved = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert set(saved) == {"a1", "b2", "c3"}  # the shown widget and its parts; the bar's models are gone
    notebook.cells[0].outputs.pop()
    clean(notebook)
    assert "widgets" not in notebook.metadata


def test_pin_points_colab_at_the_commit():
    import nbformat

    from mlul.notebooks import pin

    notebook = nbformat.read(notebook_paths(ROOT / "notebooks")[0], as_version=4)
    pin(notebook, "0123abc")
    setup = next(c.source for c in notebook.cells if c.source.startswith("# Set-up."))
    assert 'COMMIT = "0123abc"' in setup and "checkout" in setup


def test_committed_outputs_are_fresh_and_clean():
    """The committed outputs came from the current code and data (`mlul notebooks` re-runs them),
    and carry no progress bars, warnings or local paths."""
    import nbformat

    from mlul.notebooks import _LOCAL_PATH, PROGRESS_BAR, prune_widget_state, stale

    assert stale(ROOT / "notebooks") == [], "outputs older than the code: run `mlul notebooks`"
    for path in notebook_paths(ROOT / "notebooks"):
        notebook = nbformat.read(path, as_version=4)
        saved = notebook.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
        before = len(saved.get("state", {}))
        prune_widget_state(notebook)
        assert len(saved.get("state", {})) == before, (path.name, "widget state of widgets no output shows")
        assert notebook.metadata["mlul"]["command"] == "mlul notebooks", path
        for cell in notebook.cells:
            for output in cell.get("outputs", []):
                assert output.get("name") != "stderr", (path.name, cell.source[:60])
                text = output.get("text", "") + output.get("data", {}).get("text/plain", "")
                assert not _LOCAL_PATH.search(text), (path.name, text[:200])
                assert "Warning" not in text, (path.name, text[:200])
                assert not PROGRESS_BAR.search(text), (path.name, text[:200])
