"""Starting the app on a free local port and driving it with a real browser: shared by the
browser test, the screenshots (`python -m devtools.screenshots`) and `benchmarks/app.py`.

The browser is Debian's chromium (`scripts/install_chromium.sh`), driven by Playwright;
`playwright install` (a download) is never used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fmr.settings import REPO_ROOT

# Flags that let headless chromium run in containers without a GPU, sandbox or network.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str | None:
    """Debian's chromium, or None when it is not installed."""
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    return shutil.which("chromium")


def free_port() -> int:
    """A TCP port nothing listens on right now (127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# `python -c` prelude for a server that ignores checkpoints trained under runs/ (it sees
# only those that ship, as a fresh clone does; messages still name runs/).
_HIDE_RUNS = """
import pathlib
import fmr.verify.lookup as lookup
class NoRuns(type(pathlib.Path())):
    def glob(self, pattern, **kwargs):
        return iter(())
runs = NoRuns(lookup.runs_dir())
lookup.runs_dir = lambda: runs
"""
# After any prelude: Streamlit's own command line.
_STREAMLIT_MAIN = """
import sys
from streamlit.web.cli import main
sys.argv[0] = "streamlit"
sys.exit(main())
"""


@dataclass(frozen=True)
class AppServer:
    """A running `streamlit run`: its URL and process (for its memory, say)."""

    url: str
    process: subprocess.Popen


@contextlib.contextmanager
def running_app(
    script: str = "streamlit_app.py",
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
    hide_runs: bool = False,
    log_path: Path | None = None,
    timeout: float = 90.0,
) -> Iterator[str]:
    """Run `streamlit run <script>` on 127.0.0.1 (a free port by default) and yield its URL.

    env: extra environment variables (e.g. FMR_CHECKPOINT_DIR). hide_runs: ignore checkpoints
    trained under runs/ (only those that ship in checkpoints/ load, as in a fresh clone).
    The server's output goes to `log_path`. The server is stopped on exit.
    """
    with app_server(script, port=port, env=env, hide_runs=hide_runs, log_path=log_path,
                    timeout=timeout) as server:
        yield server.url


@contextlib.contextmanager
def app_server(
    script: str = "streamlit_app.py",
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
    hide_runs: bool = False,
    prelude: str = "",
    log_path: Path | None = None,
    timeout: float = 90.0,
) -> Iterator[AppServer]:
    """`running_app`, yielding the URL and the server process; `prelude` is Python run in the
    server before Streamlit starts (benchmarks use it to count model loads)."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    code = (_HIDE_RUNS if hide_runs else "") + prelude
    launcher = [sys.executable, "-c", code + _STREAMLIT_MAIN] if code else [
        sys.executable, "-m", "streamlit"]
    command = [
        *launcher, "run", script,
        "--server.address", "127.0.0.1", "--server.port", str(port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env={**os.environ, **(env or {})}, stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited with status {process.returncode}"
                                   + (f"; see {log_path}" if log_path else ""))
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.25)
        yield AppServer(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log_path:
            log.close()


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 1000) -> Iterator:
    """A Playwright page in Debian's chromium (raises RuntimeError when it is missing)."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError("chromium is not installed; run scripts/install_chromium.sh")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            context = browser.new_context(viewport={"width": width, "height": height},
                                          device_scale_factor=1)
            yield context.new_page()
        finally:
            browser.close()


def wait_until_idle(page, timeout_ms: int = 120_000, settle_ms: int = 500) -> None:
    """Wait until the app's script run has finished and no spinner shows, twice `settle_ms`
    apart (a widget change starts its rerun a moment after the event)."""
    idle = """() => {
        const app = document.querySelector('[data-testid="stApp"]');
        return app && app.getAttribute('data-test-script-state') === 'notRunning'
            && !document.querySelector('[data-testid="stSpinner"]')
            && !document.querySelector('[data-testid="stSkeleton"]');
    }"""
    for _ in range(2):
        page.wait_for_timeout(settle_ms)
        page.wait_for_function(idle, timeout=timeout_ms)


def screenshot_whole_page(page, path: Path | str, width: int = 1400) -> None:
    """Screenshot the whole app, not only the viewport: Streamlit scrolls inside its main
    container, so the viewport is grown to that container's height first."""
    height = page.evaluate(
        """() => Math.max(...['stMain', 'stAppViewContainer', 'stMainBlockContainer']
            .map(id => document.querySelector(`[data-testid="${id}"]`))
            .filter(Boolean).map(e => e.scrollHeight), window.innerHeight)"""
    )
    page.set_viewport_size({"width": width, "height": int(height) + 40})
    page.wait_for_timeout(800)  # plotly charts redraw at the new size
    page.screenshot(path=str(path))


def upload_pair(page, photo_a: Path | str, photo_b: Path | str) -> None:
    """Put two files into the first two file uploaders of the page (photo A, then photo B).

    Photo B is set once the run that photo A started has finished: a rerun redraws the
    uploaders, and a file set on an uploader while it is redrawn can be lost.
    """
    inputs = page.locator('[data-testid="stFileUploader"] input[type="file"]')
    inputs.nth(0).set_input_files(str(photo_a))
    page.get_by_text(f"{Path(photo_a).name}: ", exact=False).first.wait_for(timeout=120_000)
    page.wait_for_function(SCRIPT_IDLE, timeout=120_000, polling=10)
    inputs.nth(1).set_input_files(str(photo_b))


def clear_uploads(page) -> None:
    """Remove the files from every uploader of the page (one at a time, each with its rerun)."""
    delete = page.locator('[data-testid="stFileUploaderDeleteBtn"] button')
    while delete.count():
        delete.first.click()
        wait_until_idle(page, settle_ms=100)


VERDICT_PATTERN = r"same person|different people|inconclusive"
SCRIPT_IDLE = """() => document.querySelector('[data-testid="stApp"]')
    ?.getAttribute('data-test-script-state') === 'notRunning'"""
