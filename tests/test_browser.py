"""A real browser: JupyterLab on localhost, the playground notebook, the run button, a plot that
updates as training runs.

Needs Debian's chromium (installed by .ci/run) and the Python playwright package."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab on a free localhost port, serving a copy of the playground notebook (the test
    never writes to the repository), with MLUL_SMOKE=1 for a tiny run unless the caller set it (the
    documented screenshot uses MLUL_SMOKE=0, the fast configuration)."""
    root = tmp_path / "lab"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "notebooks" / "06_playground.ipynb", root / "notebooks")
    shutil.copytree(ROOT / "results" / "study", root / "results" / "study")  # the explorer's tables
    (root / "docs").mkdir()
    shutil.copy(ROOT / "docs" / "playground.png", root / "docs")
    # Render every cell, not only those in view, so the widget can be found wherever it lands.
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')  # no pop-up over the page
    port, token = _free_port(), "mlul-test"
    smoke = os.environ.get("MLUL_SMOKE", "1")
    env = {
        **os.environ,
        "MLUL_SMOKE": smoke,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
    }
    if smoke == "1":  # an empty result cache: the run trains, so the plot must update as it does
        env["MLUL_RESULTS"] = str(tmp_path / "results")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            # window.jupyterapp: run cells through JupyterLab's own commands, not by clicking menus
            "--LabApp.expose_app_in_browser=True",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "jupyter.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail(f"JupyterLab did not start: {(tmp_path / 'jupyter.log').read_text()[-2000:]}")
    yield f"{url}/lab/tree/notebooks/06_playground.ipynb?token={token}"
    server.terminate()
    server.wait(30)


def test_playground_runs_in_jupyterlab(jupyterlab, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(jupyterlab)
        page.wait_for_selector(".jp-Notebook", timeout=120_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
        run_button = page.locator(".jupyter-widgets button", has_text="Run")
        page.wait_for_function("window.jupyterapp?.shell.currentWidget?.sessionContext", timeout=120_000)
        # Wait for the kernel, then "Run All Cells" as the menu does; a dialog (kernel chooser, a
        # warning) would block the page, so fail with its text rather than time out behind it.
        page.evaluate(
            """async () => {
                const notebook = window.jupyterapp.shell.currentWidget;
                await notebook.sessionContext.ready;
                await window.jupyterapp.commands.execute("notebook:run-all-cells");
            }"""
        )
        try:
            run_button.wait_for(timeout=300_000)
        except PlaywrightTimeout:
            page.screenshot(path=str(tmp_path / "no-run-button.png"))
            pytest.fail(
                "the playground's Run button never appeared after Run All Cells; "
                f"dialogs: {page.locator('.jp-Dialog').all_inner_texts()}; "
                f"outputs: {page.locator('.jp-OutputArea-output').all_inner_texts()}; "
                f"screenshot: {tmp_path / 'no-run-button.png'}"
            )
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=900_000)
        explore_panels(page, tmp_path)
        drawn = "[...document.querySelectorAll('img.widget-image')].filter(i => i.naturalWidth > 0).length"
        before = page.evaluate(drawn)
        # Each new picture in the playground's plot, with the status line at that moment.
        page.evaluate(
            """() => {
                const img = [...document.querySelectorAll('img.widget-image')].at(-1);
                window.mlulDraws = [];
                new MutationObserver(() => window.mlulDraws.push(
                    [...document.querySelectorAll('.widget-html')].at(-1).innerText
                )).observe(img, {attributes: true, attributeFilter: ['src']});
            }"""
        )
        run_button.click()
        status_line = "[...document.querySelectorAll('.widget-html')].at(-1).innerText"
        page.wait_for_function(f"/done|error/.test({status_line})", timeout=900_000)
        page.wait_for_function(f"{drawn} > {before}", timeout=60_000)
        status = page.locator(".widget-html").last.inner_text()
        draws = page.evaluate("window.mlulDraws")
        page.locator("img.widget-image").last.scroll_into_view_if_needed()
        shot = Path(os.environ.get("MLUL_SCREENSHOT", tmp_path / "playground.png"))
        page.screenshot(path=str(shot), full_page=False)
        browser.close()
    assert "done" in status
    assert shot.stat().st_size > 10_000
    if os.environ.get("MLUL_SMOKE", "1") == "1":  # trained from an empty cache: redrawn along the way
        along = [d for d in draws if "unlearning" in d and "step" in d]
        assert len(set(along)) >= 2, f"the plot did not update as training ran: {draws}"


def explore_panels(page, tmp_path) -> None:
    """The explorer: a new strength redraws the plot and its table; each tab shows its content."""
    plot = "document.querySelector('.widget-tab img.widget-image')"
    page.wait_for_function(f"{plot}?.naturalWidth > 0", timeout=60_000)
    first_plot = f"{plot}.src"  # a blob: URL, new for every new picture
    before = page.evaluate(first_plot)
    steps = page.locator(".widget-dropdown", has_text="steps").first.locator("select")
    options = steps.locator("option").all_inner_texts()
    chosen = options[1]  # the first probed step (options[0] is step 0, the injected model)
    steps.select_option(label=chosen)
    table = "document.querySelector('.widget-tab .widget-html')?.innerText || ''"
    page.wait_for_function(f"({table}).includes('ga in english, {chosen} steps')", timeout=30_000)
    page.wait_for_function(f"{first_plot} !== {before!r}", timeout=30_000)
    for tab, selector in (("Frontier", "img.widget-image"), ("What the model says", ".widget-html table")):
        page.locator(".lm-TabBar-tab", has_text=tab).first.click()
        shown = f"[...document.querySelectorAll('.widget-tab {selector}')].some(e => e.offsetParent !== null)"
        try:
            page.wait_for_function(shown, timeout=30_000)
        except Exception:
            page.screenshot(path=str(tmp_path / "explorer.png"))
            raise AssertionError(f"tab {tab!r} shows no {selector}; screenshot {tmp_path / 'explorer.png'}") from None
