"""The app in a real browser: `streamlit run streamlit_app.py` on 127.0.0.1, Debian's chromium
driven by Playwright uploads a photo pair and waits for the verdict, and the server's log must
hold no traceback and no deprecation warning.

chromium comes from apt (scripts/install_chromium.sh, which scripts/test.sh runs; this test
runs it too when chromium is missing), never from `playwright install`. The test skips, saying
why, only where chromium cannot be installed.
"""

from __future__ import annotations

import subprocess

import pytest

from fmr.settings import REPO_ROOT

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def chromium() -> str:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev tools)")
    from devtools.app_server import chromium_path

    if chromium_path() is None:
        result = subprocess.run(
            [str(REPO_ROOT / "scripts" / "install_chromium.sh")],
            capture_output=True, text=True, timeout=600,
        )
        if chromium_path() is None:
            reason = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            pytest.skip(f"chromium could not be installed with apt ({reason[0]})")
    return chromium_path()


def test_upload_a_pair_and_read_the_verdict(chromium, photos_dir, tmp_path):
    from PIL import Image

    from devtools.app_server import chromium_page, running_app, upload_pair, wait_until_idle

    pair = []
    for name in ("obama.jpg", "obama2.jpg"):
        with Image.open(photos_dir / "obama" / name) as image:
            image.thumbnail((800, 800))
            image.save(tmp_path / name, quality=92)
        pair.append(tmp_path / name)

    log = tmp_path / "server.log"
    # Only the checkpoints that ship, whatever training left in runs/.
    with running_app(log_path=log, hide_runs=True) as url, chromium_page() as page:
        page.goto(f"{url}/verify_pair")
        page.get_by_text("Photo A", exact=True).wait_for(timeout=120_000)
        upload_pair(page, *pair)
        # The first comparison loads the models (seconds); the verdict is a heading.
        # Several backbones may say so (dlib and dlib-mask): wait for the first.
        page.get_by_role("heading", name="same person").first.wait_for(timeout=240_000)
        wait_until_idle(page)
        assert page.get_by_text("obama2.jpg: 1 face found").count() == 1
        # Opened directly on a page's URL, the sidebar is still the app's own navigation.
        navigation = page.get_by_test_id("stSidebarNav")
        assert navigation.get_by_text("Verify a pair", exact=True).count() == 1
        assert navigation.get_by_text("ArcFace angles", exact=True).count() == 1
        shot = tmp_path / "verify.png"
        page.screenshot(path=str(shot), full_page=True)

    assert shot.stat().st_size > 20_000
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text
    assert "deprecat" not in text.lower(), text
