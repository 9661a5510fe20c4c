"""Fixtures of the browser tests: a real JupyterLab per mode, Debian's Chromium driven by Playwright.

``lab`` is one JupyterLab subprocess per module and mode (``extension``: the agh_nb server extension
hosts the runtime and kernels are its clients; ``embedded``: each kernel embeds its runtime). It is
always stopped at teardown, and every kernel or agent it left behind is killed by pid.

``page`` is a fresh browser tab; after each test its kernels are shut down through the REST API (an
embedded runtime holds the store's lock, so the next notebook's kernel needs the last one gone).
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, ViewportSize, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from tests.browser.lab import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Lab,
    extension_available,
    start_lab,
)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
APPROVALS_NOTEBOOK = REPO / "notebooks" / "approvals.ipynb"
ESCAPING_NOTEBOOK = FIXTURES / "escaping.ipynb"
ARTIFACTS = REPO / "test-artifacts" / "browser"
VIEWPORT: ViewportSize = {"width": 1400, "height": 1800}

# Tests start their own servers: never talk to a Jupyter server that happens to run this pytest.
os.environ.pop("AGH_NB_SERVER", None)


def _require_browser() -> None:
    """Fail with one clear line when Debian's Chromium is missing (the browser test is not optional)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: scripts/setup.sh installs Debian's chromium when run as root "
            "(or: apt-get install chromium)"
        )


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Headless Debian Chromium (never a downloaded browser) with a new, empty profile."""
    _require_browser()
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
        )
        context.set_default_timeout(60_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module", params=["extension", "embedded"])
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A real JupyterLab serving temporary copies of the notebooks, in one agh_nb mode."""
    mode = request.param
    _require_browser()
    assert extension_available(), "agh_nb must ship its Jupyter server extension (agh_nb.server)"
    assert APPROVALS_NOTEBOOK.exists(), f"{APPROVALS_NOTEBOOK} is missing"
    base = tmp_path_factory.mktemp(f"lab-{mode}")
    server = start_lab(base, mode, [APPROVALS_NOTEBOOK, ESCAPING_NOTEBOOK])
    try:
        yield server
    finally:
        server.stop()
        if server.killed:
            print(f"\nbrowser tests: killed leftovers of the {mode} JupyterLab: {server.killed}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's report on the item (``page`` screenshots a failed test)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def page(browser_context: BrowserContext, lab: Lab, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh tab; afterwards the tab is closed and the server's kernels are shut down.

    When the test failed: ``test-artifacts/browser/<mode>/FAILED-<test>.png`` and the server log's tail.
    """
    tab = browser_context.new_page()
    try:
        yield tab
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            shot = ARTIFACTS / lab.mode / f"FAILED-{request.node.originalname}.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            try:
                tab.screenshot(path=str(shot))
            except PlaywrightError as exc:  # the page may be gone; the log still helps
                print(f"no failure screenshot: {exc}")
            print(f"\n--- {shot}\n--- jupyterlab log (tail):\n{lab.log()[-6000:]}")
        tab.close()
        _shutdown_kernels(lab)


def _shutdown_kernels(lab: Lab, timeout: float = 60.0) -> None:
    import http.client

    for kernel in lab.kernels():
        conn = http.client.HTTPConnection("127.0.0.1", lab.port, timeout=timeout)
        try:
            conn.request("DELETE", f"/api/kernels/{kernel['id']}", headers={"Authorization": f"token {lab.token}"})
            conn.getresponse().read()
        finally:
            conn.close()
    deadline = time.monotonic() + timeout
    while lab.kernels() and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.fixture
def artifacts(lab: Lab) -> Path:
    """``test-artifacts/browser/<mode>/`` under the repository (gitignored): the screenshots."""
    path = ARTIFACTS / lab.mode
    path.mkdir(parents=True, exist_ok=True)
    return path
