"""Time from upload to verdict on the app's verify page, warm (models already loaded), for
photo pairs the app has never seen (nothing cached for them).

    .venv/bin/python benchmarks/app.py [--pairs 10] [--mode both|script|browser] [--max-side 0]

script:  the page runs in-process under streamlit.testing (AppTest); timed: the one script
         run after both photos of a new pair are uploaded (decode, detect, align, embed with
         every backbone found, compare, draw the charts). No browser, no network.
browser: `streamlit run streamlit_app.py` on 127.0.0.1 and Debian's chromium (Playwright);
         from empty uploaders, photo A is uploaded, then (once its run has finished) photo B;
         timed to the verdict for that pair on screen with the app idle: from B's upload (the
         upload that completes the pair), and from A's (two uploads, two reruns, rendering).

Pairs are consecutive photos of ../shared/data/photos (different and same people), each
given a new name and a few extra trailing bytes so no cache recognises it. --max-side N
downscales the photos first (0: full size, up to 2.2 MP, as a phone upload would be).
Prints a markdown table: median and 90th percentile seconds per pair, and the target (< 1 s).
"""

from __future__ import annotations

import argparse
import io
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

# devtools/ (the app server helpers) sits beside fmr/ in the repository, not in the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from fmr.settings import REPO_ROOT

TARGET_S = 1.0


def pair_files(count: int, max_side: int) -> list[tuple[tuple[str, bytes], tuple[str, bytes]]]:
    """`count + 1` pairs (the first is the warm-up) of (name, bytes), all names and bytes
    distinct."""
    from PIL import Image

    from fmr.app.samples import sample_people

    photos = [p for paths in sample_people().values() for p in paths]
    if len(photos) < 2:
        raise SystemExit("no sample photos: set FMR_DATA_DIR to the shared data folder")

    def load(path: Path, tag: str) -> tuple[str, bytes]:
        data = path.read_bytes()
        if max_side:
            with Image.open(path) as image:
                image = image.convert("RGB")
                image.thumbnail((max_side, max_side))
                buffer = io.BytesIO()
                image.save(buffer, "JPEG", quality=92)
                data = buffer.getvalue()
        # Trailing bytes after the JPEG end marker are ignored by decoders but change the hash.
        return f"{tag}_{path.parent.name}_{path.stem}.jpg", data + tag.encode()

    pairs = []
    for i in range(count + 1):
        a, b = photos[i % len(photos)], photos[(i + 1) % len(photos)]
        pairs.append((load(a, f"p{i}a"), load(b, f"p{i}b")))
    return pairs


def time_script(pairs) -> list[float]:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO_ROOT / "pages" / "verify_pair.py"), default_timeout=600)
    at.run()
    times = []
    for index, ((name_a, data_a), (name_b, data_b)) in enumerate(pairs):
        at.file_uploader(key="upload_a").set_value((name_a, data_a, "image/jpeg"))
        at.file_uploader(key="upload_b").set_value((name_b, data_b, "image/jpeg"))
        start = time.perf_counter()
        at.run()
        elapsed = time.perf_counter() - start
        if at.exception:
            raise RuntimeError(at.exception[0].value)
        if not any(m.value.startswith("### ") for m in at.markdown):
            errors = [e.value for e in at.error]
            raise RuntimeError(f"no verdict for {name_a} and {name_b}: {errors}")
        if index > 0:  # the first pair loads the models
            times.append(elapsed)
    return times


def time_browser(pairs) -> tuple[list[float], list[float]]:
    """(photo B set -> verdict, both photos from empty uploaders -> verdict) per pair."""
    from devtools.app_server import (
        SCRIPT_IDLE,
        VERDICT_PATTERN,
        chromium_page,
        clear_uploads,
        running_app,
        wait_until_idle,
    )

    folder = Path(tempfile.mkdtemp(prefix="fmr-bench-app-"))
    files = []
    for (name_a, data_a), (name_b, data_b) in pairs:
        (folder / name_a).write_bytes(data_a)
        (folder / name_b).write_bytes(data_b)
        files.append((folder / name_a, folder / name_b))
    last_upload, both_uploads = [], []
    with running_app(log_path=folder / "server.log") as url, chromium_page() as page:
        page.goto(f"{url}/verify_pair")
        page.get_by_text("Photo A", exact=True).wait_for(timeout=120_000)
        wait_until_idle(page)
        inputs = page.locator('[data-testid="stFileUploader"] input[type="file"]')
        for index, (path_a, path_b) in enumerate(files):
            clear_uploads(page)  # untimed: a user starts from an empty page too
            start = time.perf_counter()
            inputs.nth(0).set_input_files(str(path_a))
            # Photo B goes in once A's run has finished (a rerun redraws the uploaders).
            page.get_by_text(f"{path_a.name}: ", exact=False).first.wait_for(timeout=600_000)
            page.wait_for_function(SCRIPT_IDLE, timeout=600_000, polling=10)
            start_b = time.perf_counter()
            inputs.nth(1).set_input_files(str(path_b))
            # The verdict of THIS pair: B's caption is drawn before the verdict in the same run.
            page.get_by_text(f"{path_b.name}: ", exact=False).first.wait_for(timeout=600_000)
            page.get_by_role("heading", name=re.compile(VERDICT_PATTERN)).first.wait_for()
            page.wait_for_function(SCRIPT_IDLE, timeout=600_000, polling=10)
            end = time.perf_counter()
            if index > 0:  # the first pair loads the models
                last_upload.append(end - start_b)
                both_uploads.append(end - start)
            wait_until_idle(page, settle_ms=200)
    return last_upload, both_uploads


def summarise(label: str, times: list[float]) -> str:
    median = statistics.median(times)
    p90 = float(np.percentile(times, 90))
    verdict = "yes" if median < TARGET_S else "no"
    return f"| {label} | {len(times)} | {median:.3f} | {p90:.3f} | {verdict} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10, help="pairs timed (after a warm-up)")
    parser.add_argument("--mode", choices=("both", "script", "browser"), default="both")
    parser.add_argument("--max-side", type=int, default=0,
                        help="downscale photos to this many pixels first (0: full size)")
    args = parser.parse_args(argv)

    from fmr.app.models import backbone_inventory

    pairs = pair_files(args.pairs, args.max_side)
    found = [b.title for b in backbone_inventory() if b.available]
    rows = []
    if args.mode in ("both", "script"):
        rows.append(summarise("script run (AppTest, in-process)", time_script(pairs)))
    if args.mode in ("both", "browser"):
        from devtools.app_server import chromium_path

        if chromium_path() is None:
            print("no chromium (scripts/install_chromium.sh): browser mode skipped",
                  file=sys.stderr)
        else:
            last_upload, both_uploads = time_browser(pairs)
            rows.append(summarise("browser: photo B uploaded -> verdict on screen", last_upload))
            rows.append(summarise("browser: both photos uploaded, one after the other -> "
                                  "verdict on screen", both_uploads))
    size = f"downscaled to {args.max_side} px" if args.max_side else "full size (up to 2.2 MP)"
    print(f"Upload to verdict, warm, {len(pairs) - 1} new pairs of ../shared/data/photos, {size}; "
          f"backbones: {', '.join(found)}; {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}\n")
    print("| measured | pairs | median s | p90 s | under 1 s |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
