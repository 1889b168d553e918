"""What keeps the app up under many visitors: the face-work line (fmr.app.jobs), one loaded copy
per checkpoint, and messages without the server's paths (fmr.app.page.for_browser).

The line is driven by real threads synchronised with events: no test depends on timing.
"""

from __future__ import annotations

import os
import threading

import pytest

from fmr.app.jobs import JobLine
from fmr.app.page import for_browser
from fmr.settings import REPO_ROOT, data_dir


def _wait_for(condition, event: threading.Event) -> None:
    """Block until `condition()` holds (re-checked whenever `event` times out)."""
    while not condition():
        event.wait(0.01)


def test_the_line_is_first_come_first_served_and_says_each_place():
    line = JobLine(1)
    started: list[int] = []
    places: dict[int, list[int]] = {0: [], 1: [], 2: []}
    tick = threading.Event()

    def visitor(number: int) -> None:
        def on_wait(position: int) -> None:
            if not places[number] or places[number][-1] != position:
                places[number].append(position)

        with line.slot(on_wait):
            started.append(number)

    with line.slot():  # the job running when they arrive
        threads = []
        for number in range(3):
            threads.append(threading.Thread(target=visitor, args=(number,)))
            threads[-1].start()
            _wait_for(lambda n=number: line.waiting == n + 1 and places[n], tick)
        assert line.running == 1 and started == []
    for thread in threads:
        thread.join()
    assert started == [0, 1, 2]
    # Each was told its place on arrival, and any later notice showed it moving up.
    for number, shown in places.items():
        assert shown[0] == number + 1
        assert shown == sorted(set(shown), reverse=True)
    assert line.served == 4 and line.most_waiting == 3
    assert line.running == 0 and line.waiting == 0


def test_a_visitor_who_leaves_while_waiting_leaves_the_line():
    """Streamlit stops a run (the visitor left, or changed a widget) by raising inside the
    notice callback: the ticket must not block the ones behind it."""
    line = JobLine(1)
    outcome: list[str] = []

    class VisitorLeft(Exception):
        pass

    def leaving() -> None:
        def on_wait(position: int) -> None:
            raise VisitorLeft

        try:
            with line.slot(on_wait):
                outcome.append("ran")
        except VisitorLeft:
            outcome.append("left")

    with line.slot():
        thread = threading.Thread(target=leaving)
        thread.start()
        thread.join()
        assert outcome == ["left"] and line.waiting == 0
    with line.slot(lambda position: outcome.append(f"waited at {position}")):
        outcome.append("next one ran at once")
    assert outcome == ["left", "next one ran at once"]
    assert line.served == 2 and line.running == 0


def test_two_slots_run_two_jobs_side_by_side_without_a_notice():
    line = JobLine(2)
    inside = threading.Barrier(2)  # both jobs must be inside their slot at the same time
    notices: list[int] = []

    def job() -> None:
        with line.slot(notices.append):
            inside.wait(timeout=600)  # a safety net against a hang, not a measurement

    threads = [threading.Thread(target=job) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert notices == [] and line.served == 2 and line.most_waiting <= 2
    with pytest.raises(ValueError):
        JobLine(0)


def test_a_rewritten_checkpoint_replaces_its_loaded_copy(tmp_path):
    """A training run rewriting best.safetensors while the app runs: the app loads the new
    version and lets the old one go (one copy per file, not one per version)."""
    import torch

    from fmr.modelfile import ModelCard, save_model_file
    from fmr.models import create_model
    from fmr.verify.embedder import _load_torch, load_backbone

    torch.manual_seed(0)
    path = save_model_file(tmp_path / "best", create_model("iresnet18").eval(),
                           ModelCard(name="r18", architecture="iresnet18"), "int8")
    first = load_backbone(path)
    assert load_backbone(path) is first
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # rewritten a second later
    second = load_backbone(path)
    assert second is not first
    assert load_backbone(path) is second
    assert [p for p in _load_torch._models if p == str(path.resolve())] == [str(path.resolve())]
    assert _load_torch._models[str(path.resolve())][1] is second


def test_for_browser_keeps_words_and_drops_server_paths():
    inside = REPO_ROOT / "fmr" / "settings.py"
    assert for_browser(f"{inside}: broken.") == "fmr/settings.py: broken."
    assert for_browser(f"found in {REPO_ROOT / 'fmr'} or nowhere") == "found in fmr/ or nowhere"
    assert for_browser(f"({data_dir() / 'people' / 'a.jpg'})") == "(FMR_DATA_DIR/people/a.jpg)"
    assert for_browser("/srv/secret/models/x.dat is missing") == "x.dat is missing"
    untouched = ("(x/255 - 0.5) / 0.5, 1/1, and/or, http://127.0.0.1:8501/verify_pair, "
                 ":material/error:, `python train.py --backbone iresnet18`")
    assert for_browser(untouched) == untouched
    assert for_browser(f"at {REPO_ROOT}.") == "at the project folder."
