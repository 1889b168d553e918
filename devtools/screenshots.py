"""Screenshots of every page for the README (docs/img/app-*.png), taken in Debian's chromium.

    python -m devtools.screenshots [--out docs/img] [--width 1400]

Needs the shared data's sample photos (FMR_DATA_DIR) and chromium (scripts/install_chromium.sh).
The server's log is kept beside the images' folder in a temporary file and checked for
tracebacks and deprecation warnings.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from devtools.app_server import (
    chromium_page,
    running_app,
    screenshot_whole_page,
    upload_pair,
    wait_until_idle,
)
from fmr.app.samples import photos_root
from fmr.settings import REPO_ROOT


def _choose(page, label: str, option: str) -> None:
    """Pick `option` in the selectbox labelled `label`."""
    page.get_by_test_id("stSelectbox").filter(has_text=label).click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_until_idle(page)


def _toggle(page, label: str) -> None:
    page.get_by_text(label, exact=True).click()
    wait_until_idle(page)


def take(out: Path, width: int = 1400, with_runs: bool = False) -> list[Path]:
    photos = photos_root()
    if not photos.is_dir():
        raise SystemExit(f"no sample photos at {photos}: set FMR_DATA_DIR")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    log = Path(tempfile.gettempdir()) / "fmr-screenshots-server.log"
    with running_app(log_path=log, hide_runs=not with_runs) as url, \
            chromium_page(width, 1000) as page:

        def shoot(name: str) -> None:
            path = out / f"app-{name}.png"
            screenshot_whole_page(page, path, width)
            page.set_viewport_size({"width": width, "height": 1000})
            written.append(path)
            print(f"wrote {path}", file=sys.stderr)

        page.goto(url)
        page.get_by_text("Backbones", exact=True).wait_for(timeout=240_000)
        wait_until_idle(page)
        shoot("home")

        page.goto(f"{url}/verify_pair")
        page.get_by_text("Photo A", exact=True).wait_for(timeout=120_000)
        upload_pair(page, photos / "obama" / "obama.jpg", photos / "obama" / "obama2.jpg")
        page.get_by_role("heading", name=re.compile("same person")).first.wait_for(timeout=240_000)
        wait_until_idle(page)
        _toggle(page, "Add a synthetic mask to Photo B")
        _toggle(page, "Show the occlusion maps")
        page.get_by_test_id("stPlotlyChart").nth(1).wait_for(timeout=240_000)
        wait_until_idle(page)
        shoot("verify")

        page.goto(f"{url}/mask_studio")
        page.get_by_text("Sample photo", exact=True).wait_for(timeout=120_000)
        wait_until_idle(page)
        _choose(page, "Sample photo", "Obama: obama2.jpg")
        _choose(page, "Style", "cloth")
        _choose(page, "Pattern", "floral")
        _toggle(page, "Show every style on this face")
        shoot("mask-studio")

        page.goto(f"{url}/find_a_person")
        page.get_by_text("Try a sample probe", exact=True).wait_for(timeout=240_000)
        wait_until_idle(page)
        _choose(page, "Try a sample probe", "Obama: obama3.jpg")
        page.get_by_text(re.compile("This is")).first.wait_for(timeout=240_000)
        wait_until_idle(page)
        shoot("find-a-person")

        page.goto(f"{url}/compare_backbones")
        page.get_by_text("What a mask costs", exact=True).wait_for(timeout=240_000)
        wait_until_idle(page)
        shoot("compare-backbones")

        page.goto(f"{url}/arcface_angles")
        page.get_by_text("The additive angular margin", exact=True).wait_for(timeout=120_000)
        wait_until_idle(page)
        shoot("arcface-angles")
    text = log.read_text(errors="replace")
    problems = [line for line in text.splitlines() if "Traceback" in line or "eprecat" in line]
    if problems:
        print(f"server log {log} has problems:\n" + "\n".join(problems), file=sys.stderr)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.screenshots", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "img")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument(
        "--with-runs", action="store_true",
        help="also use checkpoints trained under runs/ (default: only those that ship in "
        "checkpoints/, so the pictures show what a fresh clone shows)",
    )
    args = parser.parse_args(argv)
    take(args.out, args.width, args.with_runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
