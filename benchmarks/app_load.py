"""The app under load: N browser sessions verifying a pair at the same moment, and one session
verifying many pairs in a row (the soak). Not part of the test suite.

    .venv/bin/python benchmarks/app_load.py                          # N = 1 4 8 16, 200-pair soak
    .venv/bin/python benchmarks/app_load.py --sessions 1 2 --soak-pairs 10   # a quick check
    .venv/bin/python benchmarks/app_load.py --json load.json --markdown load.md

Concurrent sessions: for each N, a fresh `streamlit run streamlit_app.py` on 127.0.0.1 (as
scripts/run_app.sh starts it; only the checkpoints that ship, as in a fresh clone) is warmed up
with one untimed verification, then one chromium (Debian's, through Playwright) opens N
contexts on the verify page and all N upload a pair at once: photo A, then, once A's run has
finished, photo B, and wait for the verdict. Timed per session: from A's upload to the verdict
on screen, and from B's upload to it. Measured: how many sessions got a verdict, median and
90th percentile times, the server's peak resident memory (VmRSS of the streamlit process and
its children sampled every 0.2 s, and the process's own VmHWM), how many times each model was
loaded (counted inside the server: dlib's networks, MTCNN, fmr checkpoints; one each is right),
how long the face-work line grew (fmr.app.jobs), and the CPU the client (this script, the
Playwright driver and chromium) used, in cores, beside the server's.

Soak: a fresh server, one session, `--soak-pairs` new pairs in a row (uploads cleared between
pairs, as a visitor would); the server's resident memory after each verdict, its growth after
`--soak-warmup` pairs, and the curve.

Every pair is two consecutive photos of ../shared/data/photos (full size unless --max-side),
each upload with a new name and extra trailing bytes, so no cache ever recognises one.
The machine should be otherwise idle: the client and the server share its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# devtools/ (the app server helpers) sits beside fmr/ in the repository, not in the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from devtools.app_server import (
    CHROMIUM_ARGS,
    SCRIPT_IDLE,
    VERDICT_PATTERN,
    app_server,
    chromium_path,
)

PAGE_TIMEOUT_MS = 600_000
SAMPLE_SECONDS = 0.2
BUSY_TEXT = "The server is busy"

# Run inside the server before Streamlit starts: counts every model load (dlib's descriptor
# network and shape predictors, MTCNN's three networks, fmr checkpoints) and, every second,
# writes the counts and the face-work line's figures to $FMR_BENCH_STATS (a JSON file).
SERVER_PRELUDE = r'''
import collections, functools, json, os, threading, time
_stats_file = os.environ["FMR_BENCH_STATS"]
_loads = collections.Counter()
_lock = threading.Lock()

def _counted(label, make):
    @functools.wraps(make)
    def load(*args, **kwargs):
        made = make(*args, **kwargs)
        name = os.path.basename(str(args[0])) if args else ""
        with _lock:
            _loads[f"{label} {name}".strip()] += 1
        return made
    return load

import dlib
dlib.face_recognition_model_v1 = _counted("dlib", dlib.face_recognition_model_v1)
dlib.shape_predictor = _counted("dlib", dlib.shape_predictor)
import fmr.modelfile
fmr.modelfile.load_model_file = _counted("checkpoint", fmr.modelfile.load_model_file)
import fmr.faces.detect
fmr.faces.detect._mtcnn_weights = functools.lru_cache(maxsize=1)(
    _counted("MTCNN P-, R- and O-Net", fmr.faces.detect._mtcnn_weights.__wrapped__))

def _write_stats():
    while True:
        time.sleep(1.0)
        line = {}
        try:
            import fmr.app.jobs as jobs
            if jobs._line is not None:
                line = {"slots": jobs._line.slots, "served": jobs._line.served,
                        "most_waiting": jobs._line.most_waiting}
        except Exception:
            pass
        with _lock:
            stats = {"loads": dict(_loads), "line": line}
        with open(_stats_file + ".tmp", "w") as handle:
            json.dump(stats, handle)
        os.replace(_stats_file + ".tmp", _stats_file)

threading.Thread(target=_write_stats, daemon=True, name="fmr-bench-stats").start()
'''


# --------------------------------------------------------------------------- /proc readings
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (those alive now)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += _children(current)
    return tree


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat(5)


class Monitor:
    """Samples the server's resident memory and the CPU time of server and client every
    `SAMPLE_SECONDS` in a background thread.

    CPU time is tracked per process (the largest value seen), so processes that end between
    samples (chromium renderers) keep what they used until their last sample.
    """

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self._cpu: dict[tuple[str, int], float] = {}
        self.rss_kib = 0
        self.peak_rss_kib = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Monitor:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()

    def sample(self) -> None:
        server = process_tree(self.server_pid)
        client = [p for p in process_tree(os.getpid()) if p not in set(server)]
        rss = sum(_status_kib(p, "VmRSS") for p in server)
        with self._lock:
            self.rss_kib = rss
            self.peak_rss_kib = max(self.peak_rss_kib, rss)
            for side, pids in (("server", server), ("client", client)):
                for pid in pids:
                    key = (side, pid)
                    self._cpu[key] = max(self._cpu.get(key, 0.0), _cpu_seconds(pid))

    def cpu_seconds(self) -> dict[str, float]:
        with self._lock:
            totals = {"server": 0.0, "client": 0.0}
            for (side, _), seconds in self._cpu.items():
                totals[side] += seconds
            return totals

    def reset_peak(self) -> None:
        with self._lock:
            self.peak_rss_kib = self.rss_kib

    def server_hwm_kib(self) -> int:
        """The server process's own peak resident size since it started (VmHWM)."""
        return _status_kib(self.server_pid, "VmHWM")


# ---------------------------------------------------------------------------------- photos
@dataclass
class PairFiles:
    a: Path
    b: Path


class PhotoSupply:
    """Pairs of consecutive sample photos, each upload a new file (new name, new bytes)."""

    def __init__(self, folder: Path, max_side: int) -> None:
        from fmr.app.samples import sample_people

        self.photos = [p for paths in sample_people().values() for p in paths]
        if len(self.photos) < 2:
            raise SystemExit("no sample photos: set FMR_DATA_DIR to the shared data folder")
        self.folder = folder
        self.max_side = max_side
        self.count = 0
        self._bytes: dict[Path, bytes] = {}

    def _data(self, path: Path) -> bytes:
        if path not in self._bytes:
            data = path.read_bytes()
            if self.max_side:
                from PIL import Image

                with Image.open(path) as image:
                    image = image.convert("RGB")
                    image.thumbnail((self.max_side, self.max_side))
                    buffer = io.BytesIO()
                    image.save(buffer, "JPEG", quality=92)
                    data = buffer.getvalue()
            self._bytes[path] = data
        return self._bytes[path]

    def next_pair(self) -> PairFiles:
        index = self.count
        self.count += 1
        files = []
        for side, photo in (("a", self.photos[index % len(self.photos)]),
                            ("b", self.photos[(index + 1) % len(self.photos)])):
            tag = f"u{index}{side}"
            target = self.folder / f"{tag}_{photo.parent.name}_{photo.stem}.jpg"
            # Bytes after the JPEG end marker: decoders ignore them, caches see a new file.
            target.write_bytes(self._data(photo) + tag.encode())
            files.append(target)
        return PairFiles(*files)


# ----------------------------------------------------------------------------- one session
@dataclass
class SessionResult:
    ok: bool
    upload_to_verdict_s: float | None = None
    b_to_verdict_s: float | None = None
    waited_in_line: bool = False
    error: str = ""


# Set by a MutationObserver in every page: whether the busy notice ever appeared. It reads the
# alerts' textContent only (innerText would force a layout on every change of the page).
WATCH_BUSY = """() => {
    window.__fmrSawBusy = false;
    new MutationObserver(() => {
        if (window.__fmrSawBusy) return;
        for (const alert of document.querySelectorAll('[data-testid="stAlert"]')) {
            if (alert.textContent.includes(BUSY_TEXT)) { window.__fmrSawBusy = true; return; }
        }
    }).observe(document, {subtree: true, childList: true, characterData: true});
}""".replace("BUSY_TEXT", json.dumps(BUSY_TEXT))


async def new_context(browser):
    """A browser context whose every wait (uploads and clicks too, not only the explicit waits)
    allows PAGE_TIMEOUT_MS: a busy server or client must not turn into a failed session."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    return context


async def open_verify_page(context, url: str):
    page = await context.new_page()
    await page.add_init_script(f"({WATCH_BUSY})()")
    await page.goto(f"{url}/verify_pair")
    await page.get_by_text("Photo A", exact=True).wait_for(timeout=PAGE_TIMEOUT_MS)
    await page.wait_for_function(SCRIPT_IDLE, timeout=PAGE_TIMEOUT_MS, polling=50)
    return page


async def clear_uploads(page) -> None:
    delete = page.locator('[data-testid="stFileUploaderDeleteBtn"] button')
    while await delete.count():
        await delete.first.click()
        await page.wait_for_timeout(100)  # the click's rerun starts a moment after the event
        await page.wait_for_function(SCRIPT_IDLE, timeout=PAGE_TIMEOUT_MS, polling=50)


async def verify_pair(page, pair: PairFiles) -> SessionResult:
    """Upload A, then (A's run done) B, and wait for B's caption and a verdict."""
    inputs = page.locator('[data-testid="stFileUploader"] input[type="file"]')
    try:
        start = time.perf_counter()
        await inputs.nth(0).set_input_files(str(pair.a))
        await page.get_by_text(f"{pair.a.name}: ", exact=False).first.wait_for(
            timeout=PAGE_TIMEOUT_MS)
        await page.wait_for_function(SCRIPT_IDLE, timeout=PAGE_TIMEOUT_MS, polling=50)
        start_b = time.perf_counter()
        await inputs.nth(1).set_input_files(str(pair.b))
        # B's caption is drawn before the verdict in the same run: the verdict is this pair's.
        await page.get_by_text(f"{pair.b.name}: ", exact=False).first.wait_for(
            timeout=PAGE_TIMEOUT_MS)
        await page.get_by_role("heading", name=re.compile(VERDICT_PATTERN)).first.wait_for(
            timeout=PAGE_TIMEOUT_MS)
        end = time.perf_counter()
        waited = bool(await page.evaluate("() => window.__fmrSawBusy"))
        await page.wait_for_function(SCRIPT_IDLE, timeout=PAGE_TIMEOUT_MS, polling=50)
        return SessionResult(True, end - start, end - start_b, waited)
    except Exception as exc:  # a session that fails is counted, not fatal for the others
        errors = await page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
        return SessionResult(False, error=f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                             + (f"; page says {errors}" if errors else ""))


def read_stats(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def server_log_problems(path: Path) -> int:
    text = path.read_text(errors="replace") if path.is_file() else ""
    return text.count("Traceback")


# ------------------------------------------------------------------------ the measurements
@dataclass
class Round:
    sessions: int
    verdicts: int
    upload_to_verdict_s: list[float]
    b_to_verdict_s: list[float]
    waited_in_line: int
    server_peak_rss_mib: float
    server_rss_before_mib: float
    server_hwm_mib: float
    model_loads: dict
    line: dict
    client_cpu_cores: float
    server_cpu_cores: float
    wall_s: float
    server_tracebacks: int
    errors: list[str] = field(default_factory=list)


async def _concurrent_round(url: str, n: int, supply: PhotoSupply, monitor: Monitor) -> Round:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path(),
                                                   args=list(CHROMIUM_ARGS))
        try:
            # Warm-up: one untimed verification loads the models and the code paths.
            warm = await new_context(browser)
            result = await verify_pair(await open_verify_page(warm, url), supply.next_pair())
            await warm.close()
            if not result.ok:
                raise RuntimeError(f"the warm-up verification failed: {result.error}")
            contexts = [await new_context(browser) for _ in range(n)]
            pages = await asyncio.gather(*(open_verify_page(c, url) for c in contexts))
            pairs = [supply.next_pair() for _ in range(n)]
            rss_before = monitor.rss_kib
            monitor.reset_peak()
            cpu_before = monitor.cpu_seconds()
            started = time.perf_counter()
            results = await asyncio.gather(*(verify_pair(p, pair)
                                             for p, pair in zip(pages, pairs, strict=True)))
            wall = time.perf_counter() - started
            monitor.sample()
            cpu_after = monitor.cpu_seconds()
            for context in contexts:
                await context.close()
        finally:
            await browser.close()
    good = [r for r in results if r.ok]
    return Round(
        sessions=n,
        verdicts=len(good),
        upload_to_verdict_s=[r.upload_to_verdict_s for r in good],
        b_to_verdict_s=[r.b_to_verdict_s for r in good],
        waited_in_line=sum(r.waited_in_line for r in good),
        server_peak_rss_mib=monitor.peak_rss_kib / 1024,
        server_rss_before_mib=rss_before / 1024,
        server_hwm_mib=monitor.server_hwm_kib() / 1024,
        model_loads={},
        line={},
        client_cpu_cores=(cpu_after["client"] - cpu_before["client"]) / wall,
        server_cpu_cores=(cpu_after["server"] - cpu_before["server"]) / wall,
        wall_s=wall,
        server_tracebacks=0,
        errors=[r.error for r in results if not r.ok],
    )


def run_concurrent(n: int, supply: PhotoSupply, work: Path, server_env: dict) -> Round:
    stats_file = work / f"server-stats-{n}.json"
    log = work / f"server-{n}.log"
    with app_server(hide_runs=True, prelude=SERVER_PRELUDE, log_path=log,
                    env={**server_env, "FMR_BENCH_STATS": str(stats_file)}) as server, \
            Monitor(server.process.pid) as monitor:
        result = asyncio.run(_concurrent_round(server.url, n, supply, monitor))
        time.sleep(1.5)  # the server writes its stats every second
        stats = read_stats(stats_file)
    result.model_loads = stats.get("loads", {})
    result.line = stats.get("line", {})
    result.server_tracebacks = server_log_problems(log)
    return result


@dataclass
class Soak:
    pairs: int
    warmup: int
    rss_mib: list[float]
    seconds: list[float]
    failures: list[str]
    model_loads: dict
    server_tracebacks: int

    @property
    def growth_after_warmup(self) -> float:
        base = self.rss_mib[self.warmup - 1]
        return (self.rss_mib[-1] - base) / base

    @property
    def peak_growth_after_warmup(self) -> float:
        base = self.rss_mib[self.warmup - 1]
        return (max(self.rss_mib[self.warmup - 1:]) - base) / base


async def _soak(url: str, pairs: int, supply: PhotoSupply, monitor: Monitor,
                progress: bool) -> tuple[list[float], list[float], list[str]]:
    from playwright.async_api import async_playwright

    rss, seconds, failures = [], [], []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path(),
                                                   args=list(CHROMIUM_ARGS))
        try:
            context = await new_context(browser)
            page = await open_verify_page(context, url)
            for index in range(pairs):
                await clear_uploads(page)
                result = await verify_pair(page, supply.next_pair())
                if not result.ok:
                    failures.append(f"pair {index + 1}: {result.error}")
                    page = await open_verify_page(context, url)  # start again from a fresh page
                monitor.sample()
                rss.append(monitor.rss_kib / 1024)
                seconds.append(result.upload_to_verdict_s or float("nan"))
                if progress and (index + 1) % 10 == 0:
                    print(f"soak: {index + 1}/{pairs} pairs, server {rss[-1]:.0f} MiB",
                          file=sys.stderr)
        finally:
            await browser.close()
    return rss, seconds, failures


def run_soak(pairs: int, warmup: int, supply: PhotoSupply, work: Path,
             server_env: dict) -> Soak:
    stats_file = work / "server-stats-soak.json"
    log = work / "server-soak.log"
    with app_server(hide_runs=True, prelude=SERVER_PRELUDE, log_path=log,
                    env={**server_env, "FMR_BENCH_STATS": str(stats_file)}) as server, \
            Monitor(server.process.pid) as monitor:
        rss, seconds, failures = asyncio.run(_soak(server.url, pairs, supply, monitor, True))
        time.sleep(1.5)
        stats = read_stats(stats_file)
    return Soak(pairs, min(warmup, pairs), rss, seconds, failures, stats.get("loads", {}),
                server_log_problems(log))


# ---------------------------------------------------------------------------------- report
def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def _p90(values: list[float]) -> str:
    return f"{float(np.percentile(values, 90)):.2f}" if values else "-"


def _loads(loads: dict) -> str:
    if not loads:
        return "-"
    most = max(loads.values())
    return ("1 each" if most == 1 else f"up to {most}") + f" ({len(loads)} models)"


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])  # MemTotal comes first
    return (f"{os.cpu_count()} CPU cores ({model or platform.machine()}), "
            f"{memory_kib / 1024**2:.0f} GiB RAM, Python {platform.python_version()}")


def markdown(rounds: list[Round], soak: Soak | None, command: str, load_before: tuple,
             server_env: dict) -> str:
    slots = {r.line.get("slots") for r in rounds if r.line.get("slots")}
    lines = [f"Command: `{command}`", "",
             f"Machine: {machine()}; load average before the run "
             f"{load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f} (1/5/15 min); "
             f"face-work slots: {', '.join(map(str, sorted(slots))) or '-'} (FMR_APP_JOBS); "
             f"server environment: "
             f"{' '.join(f'{k}={v}' for k, v in server_env.items()) or 'as inherited'}.",
             ""]
    if rounds:
        lines += [
            "### Concurrent sessions", "",
            "| sessions | verdicts | upload to verdict, median s | p90 s | photo B to verdict, "
            "median s | waited in line | server RSS before / peak, MiB | server peak since "
            "start (VmHWM), MiB | model loads | longest line | client CPU, cores | server CPU, "
            "cores |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rounds:
            lines.append(
                f"| {r.sessions} | {r.verdicts}/{r.sessions} | {_median(r.upload_to_verdict_s)} | "
                f"{_p90(r.upload_to_verdict_s)} | {_median(r.b_to_verdict_s)} | "
                f"{r.waited_in_line} | {r.server_rss_before_mib:.0f} / "
                f"{r.server_peak_rss_mib:.0f} | {r.server_hwm_mib:.0f} | {_loads(r.model_loads)} | "
                f"{r.line.get('most_waiting', '-')} | {r.client_cpu_cores:.2f} | "
                f"{r.server_cpu_cores:.2f} |"
            )
        loads = {k: v for r in rounds for k, v in r.model_loads.items()}
        lines += ["", "Models loaded per server: " + (", ".join(
            f"{name} x{count}" for name, count in sorted(loads.items())) or "not recorded") + "."]
        problems = [(r.sessions, e) for r in rounds for e in r.errors]
        if problems:
            lines += ["", "Sessions without a verdict:"] + [f"- N={n}: {e}" for n, e in problems]
        tracebacks = sum(r.server_tracebacks for r in rounds)
        lines += ["", f"Tracebacks in the server logs: {tracebacks}."]
    if soak is not None:
        base = soak.rss_mib[soak.warmup - 1]
        lines += [
            "", "### Soak", "",
            f"{soak.pairs} pairs in a row in one session; server RSS {base:.0f} MiB after "
            f"{soak.warmup} pairs (warm-up), {soak.rss_mib[-1]:.0f} MiB after {soak.pairs}: "
            f"{soak.growth_after_warmup:+.1%} (peak {soak.peak_growth_after_warmup:+.1%}); "
            f"upload to verdict median {_median([s for s in soak.seconds if s == s])} s; "
            f"{len(soak.failures)} pairs without a verdict; model loads: "
            f"{_loads(soak.model_loads)}; tracebacks: {soak.server_tracebacks}.", "",
            "| after pair | server RSS MiB |", "|---|---|",
        ]
        step = max(1, soak.pairs // 20)
        marks = sorted({*range(step - 1, soak.pairs, step), soak.warmup - 1, soak.pairs - 1})
        lines += [f"| {i + 1} | {soak.rss_mib[i]:.0f} |" for i in marks]
        lines += [f"- {f}" for f in soak.failures[:10]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, nargs="*", default=[1, 4, 8, 16],
                        help="numbers of concurrent sessions, one round each (default 1 4 8 16; "
                        "none: soak only)")
    parser.add_argument("--soak-pairs", type=int, default=200,
                        help="pairs in a row in one session (0: no soak; default 200)")
    parser.add_argument("--soak-warmup", type=int, default=20,
                        help="pairs before memory growth is measured (default 20)")
    parser.add_argument("--max-side", type=int, default=0,
                        help="downscale the photos to this many pixels first (0: full size)")
    parser.add_argument("--stop-after-failure", action="store_true",
                        help="skip larger N once a round has sessions without a verdict")
    parser.add_argument("--server-env", nargs="*", default=["MALLOC_ARENA_MAX=2"],
                        metavar="NAME=VALUE",
                        help="environment for the server (default MALLOC_ARENA_MAX=2, as "
                        "scripts/run_app.sh sets it; MALLOC_ARENA_MAX= for glibc's default), "
                        "e.g. FMR_APP_JOBS=2")
    parser.add_argument("--json", type=Path, help="write every figure (and the curve) here")
    parser.add_argument("--markdown", type=Path, help="write the tables here too")
    args = parser.parse_args(argv)

    if chromium_path() is None:
        raise SystemExit("chromium is not installed; run scripts/install_chromium.sh")
    if any("=" not in item for item in args.server_env):
        parser.error("--server-env takes NAME=VALUE items")
    server_env = dict(item.split("=", 1) for item in args.server_env)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="fmr-app-load-"))
    supply = PhotoSupply(work, args.max_side)
    rounds: list[Round] = []
    for n in args.sessions:
        print(f"concurrent sessions: N={n}...", file=sys.stderr)
        rounds.append(run_concurrent(n, supply, work, server_env))
        last = rounds[-1]
        print(f"  {last.verdicts}/{n} verdicts, median {_median(last.upload_to_verdict_s)} s, "
              f"server peak {last.server_peak_rss_mib:.0f} MiB", file=sys.stderr)
        if args.stop_after_failure and last.verdicts < n:
            print("  sessions failed: larger N skipped", file=sys.stderr)
            break
    soak = None
    if args.soak_pairs > 0:
        if args.soak_pairs < args.soak_warmup + 1:
            raise SystemExit("--soak-pairs must be larger than --soak-warmup")
        soak = run_soak(args.soak_pairs, args.soak_warmup, supply, work, server_env)
    command = "benchmarks/app_load.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = markdown(rounds, soak, command.strip(), load_before, server_env)
    print(report)
    if args.markdown:
        args.markdown.write_text(report)
    if args.json:
        data = {"command": command.strip(), "machine": machine(), "load_before": load_before,
                "rounds": [asdict(r) for r in rounds],
                "soak": None if soak is None else {**asdict(soak),
                                                   "growth_after_warmup":
                                                   soak.growth_after_warmup}}
        args.json.write_text(json.dumps(data, indent=1))
    print(f"server logs and uploaded files: {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
