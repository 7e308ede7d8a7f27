"""The notebooks as a person sees them: JupyterLab on loopback, driven in Debian's Chromium by
Playwright. Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from .conftest import HOST, REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian's chromium is not installed (apt-get install chromium)",
    ),
]
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed"
)


# some prompt changed since `before`: the run has begun
STARTED = (
    "before => [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]"
    ".some((p, i) => p.textContent !== before[i])"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, bare_controller):
    """JupyterLab on 127.0.0.1 with a token, serving a copy of the notebooks; stopped at the end."""
    root = tmp_path_factory.mktemp("lab")
    for name in ("main.ipynb", "worker.ipynb"):
        shutil.copy(REPO / "notebooks" / name, root / name)
    # every cell rendered (no windowing), so the test sees every prompt and output
    settings = root / ".settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "IMGDIST_OUT_DIR": str(root / "results"),
        "IMGDIST_BENCH_RUNS": "2",
        "IMGDIST_ENGINE_FILE": str(bare_controller.engine_connection_file),
        "IMGDIST_LABEL": "browser-worker",
    }
    log = (root / "lab.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/api/status", params={"token": token}, timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                pytest.fail(
                    f"JupyterLab did not start within 60 s; log:\n{(root / 'lab.log').read_text()[-2000:]}"
                )
            time.sleep(0.2)
        yield url, token, root
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait(10)
        log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield chromium
        finally:
            chromium.close()


def open_notebook(browser, lab, notebook: str):
    """A new page with `notebook` open in JupyterLab and its kernel idle."""
    url, token, _ = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    # ?reset: a fresh workspace, so only this notebook is open
    page.goto(f"{url}/lab/tree/{notebook}?reset&token={token}", timeout=60_000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000, state="attached")
    page.wait_for_function(
        "() => document.querySelector('#jp-main-statusbar')?.textContent.includes('Idle')",
        timeout=60_000,
    )
    dialogs = page.locator(".jp-Dialog")
    assert dialogs.count() == 0, dialogs.all_text_contents()
    # JupyterLab's "get notified about news?" toast would sit on the screenshots
    page.add_style_tag(content=".Toastify { display: none !important; }")
    return page


def run_menu(page, item: str, cells: slice, timeout_s: float = 240) -> None:
    """Choose Run > `item` and wait until the code cells in `cells` have all run."""
    prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt")
    before = prompts.all_text_contents()
    for _attempt in range(5):  # the menu may not answer while the page is still settling
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.click(f".lm-Menu-itemLabel:text-is('{item}')")
        try:
            page.wait_for_function(STARTED, arg=before, timeout=10_000)
            break
        except sync_api.TimeoutError:
            continue
    else:
        pytest.fail(f"Run > {item} did not start")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        texts = prompts.all_text_contents()[cells]
        if texts and all(re.fullmatch(r"\[\d+\]:", t.strip()) for t in texts):
            return
        page.wait_for_timeout(500)
    pytest.fail(f"Run > {item} did not finish within {timeout_s} s; prompts: {texts}")


def select_last_cell(page) -> None:
    """Select the notebook's last cell with the keyboard (clicks can land on an unrendered cell)."""
    cells = page.locator(".jp-Cell")
    last = cells.last
    for _ in range(3 * cells.count()):
        if "jp-mod-active" in (last.get_attribute("class") or ""):
            return
        if not page.locator(".jp-Notebook.jp-mod-commandMode:focus-within").count():
            cells.first.locator(".jp-InputArea-prompt").first.click()
            page.keyboard.press("Escape")
        page.keyboard.press("j")
    pytest.fail("could not select the last cell")


def shrink(png: Path, keep_rows: float) -> None:
    """Keep the top `keep_rows` of a screenshot, so the README's copy stays small."""
    import cv2

    image = cv2.imread(str(png))
    cv2.imwrite(
        str(png), image[: int(image.shape[0] * keep_rows)], [cv2.IMWRITE_PNG_COMPRESSION, 9]
    )


def assert_no_errors(page) -> None:
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    texts = [t for t in errors.all_text_contents() if "Traceback" in t or "Error" in t]
    assert texts == []


def assert_readable_outputs(page) -> None:
    """No output a person reads holds a traceback or a page of log text."""
    texts = page.locator(".jp-OutputArea-output").all_text_contents()
    assert texts, "no outputs rendered"
    assert [t[:300] for t in texts if "Traceback" in t] == []
    assert [len(t) for t in texts if len(t) > 20_000] == []


def wait_for_widget_text(page, *needles: str, timeout_ms: int) -> None:
    """Wait until one HTML widget's text holds every one of `needles`."""
    page.wait_for_function(
        "needles => [...document.querySelectorAll('.widget-html')].some("
        "e => needles.every(n => e.textContent.includes(n)))",
        arg=list(needles),
        timeout=timeout_ms,
    )


def connected_text(page) -> str:
    return page.locator(".widget-html:has-text('Connected workers:')").first.text_content()


def test_main_notebook_in_chromium(browser, lab):
    """Run all in JupyterLab: names in the boxes, Connect/Disconnect, grids, progress, a readable
    worker panel, the timeline and the chart against the own-process reference, no error; then
    the last cell stops the cluster in one line, and no output anywhere holds a traceback or a
    page of log text."""
    ARTIFACTS.mkdir(exist_ok=True)
    page = open_notebook(browser, lab, "main.ipynb")
    select_last_cell(page)  # everything but `cluster.stop()`, so the buttons still have engines
    run_menu(page, "Run All Above Selected Cell", slice(0, -1))
    assert_no_errors(page)

    boxes = page.locator(".widget-text input")
    assert [boxes.nth(i).input_value() for i in range(4)] == [
        f"worker{i}@{HOST}" for i in range(1, 5)
    ]

    before = connected_text(page)
    assert all(f"worker{i}@{HOST}" in before for i in range(1, 5))
    page.locator("button:has-text('Disconnect')").first.click()
    wait_for_widget_text(page, "(none: only this notebook)", timeout_ms=15_000)
    page.locator("button:has-text('Connect')").first.click()
    wait_for_widget_text(page, "Connected workers:", f"worker4@{HOST}", timeout_ms=15_000)

    grids = page.locator(".imgdist-grid")
    images = page.locator(".imgdist-grid img")
    assert images.count() >= 6 + 32 + 32
    assert page.evaluate(
        "() => [...document.querySelectorAll('.imgdist-grid img')]"
        ".every(img => img.complete && img.naturalWidth > 0)"
    )
    four_worker_grid = grids.nth(grids.count() - 1)
    captions = four_worker_grid.locator("figcaption").all_text_contents()
    assert len(captions) == 32
    names = {f"worker{i}@{HOST}" for i in range(1, 5)}
    assert {next(n for n in names if c.endswith(n)) for c in captions} == names

    bars = page.locator(".widget-hprogress .progress-bar")
    assert bars.count() >= 3
    widths = page.evaluate(
        "() => [...document.querySelectorAll('.widget-hprogress .progress-bar')]"
        ".map(bar => bar.style.width)"
    )
    assert all(width == "100%" for width in widths), widths

    panel = page.locator("table.imgdist-workers").last
    assert "idle" in panel.text_content()
    # a readable table: header cells apart from each other, one row per worker
    assert page.evaluate(
        "t => [...t.querySelectorAll('th')].every(th => parseFloat(getComputedStyle(th)"
        ".paddingRight) >= 10)",
        panel.element_handle(),
    )
    assert panel.locator("tbody tr").count() == 4

    table = page.locator("table.imgdist-bench")
    assert table.count() == 1
    assert "seed: 4 workers" in table.text_content()
    assert "own process" in table.text_content()  # the reference the speed-ups are against
    assert "speed-up vs own process" in table.text_content()
    # the timeline after the 4-worker run, and the speed chart
    pictures = page.locator(".jp-RenderedImage img")
    assert pictures.count() >= 2
    timeline, chart = pictures.nth(pictures.count() - 2), pictures.last
    for picture in (timeline, chart):
        picture.scroll_into_view_if_needed()
        assert page.evaluate("img => img.naturalWidth > 300", picture.element_handle())

    # the first two rows (8 images, all four names), as a person scrolled there sees them
    figures = four_worker_grid.locator("figure")
    figures.first.scroll_into_view_if_needed()
    top, bottom = figures.nth(0).bounding_box(), figures.nth(7).bounding_box()
    grid_box = four_worker_grid.bounding_box()
    page.screenshot(
        path=str(ARTIFACTS / "four-worker-grid.png"),
        clip={
            "x": grid_box["x"],
            "y": top["y"],
            "width": grid_box["width"],
            "height": bottom["y"] + bottom["height"] - top["y"],
        },
    )
    chart.screenshot(path=str(ARTIFACTS / "speed-chart.png"))
    timeline.screenshot(path=str(ARTIFACTS / "timeline.png"))
    page.screenshot(path=str(ARTIFACTS / "main-notebook.png"))

    select_last_cell(page)
    run_menu(page, "Run Selected Cell and Do not Advance", slice(-1, None), timeout_s=60)
    assert_no_errors(page)
    assert_readable_outputs(page)
    stop_output = page.locator(".jp-Cell").last.locator(".jp-OutputArea-output")
    page.wait_for_function(
        "o => o.textContent.includes('Stopped the local cluster')",
        arg=stop_output.element_handle(),
        timeout=30_000,
    )
    assert stop_output.count() == 1
    assert stop_output.text_content().strip().count("\n") == 0
    page.close()


def test_worker_notebook_in_chromium(browser, lab, bare_controller):
    """The worker notebook's form in JupyterLab: started against a local controller, Stop and Start work."""
    page = open_notebook(browser, lab, "worker.ipynb")
    run_menu(page, "Run All Cells", slice(None), timeout_s=90)
    assert_no_errors(page)
    assert (
        f"browser-worker@{HOST}"
        in page.locator(".widget-html:has-text('Worker name')").first.text_content()
    )
    status = page.locator(".widget-html:has-text('Engine:')").first
    assert "registered as engine" in status.text_content()
    page.locator("button:has-text('Stop')").first.click()
    wait_for_widget_text(page, "Engine:", "exited", timeout_ms=20_000)
    page.locator("button:has-text('Start')").first.click()
    wait_for_widget_text(page, "Engine:", "registered as engine", timeout_ms=40_000)
    page.screenshot(path=str(ARTIFACTS / "worker-notebook.png"))
    page.close()
