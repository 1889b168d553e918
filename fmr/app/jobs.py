"""A bound on the face work the app does at once, first come first served.

Streamlit runs every visitor's page in its own thread. Without a bound, N visitors who upload
at the same moment run N detections and embeddings side by side: each holds its decoded photos
and the networks' activations while the CPU cores are shared N ways, so memory grows with N and
everyone waits about as long as the last one. With a bound, at most `slots` page runs do face
work at a time and the others wait in line, in arrival order, holding only their uploaded files;
a waiting visitor sees "The server is busy: your request is number K in the line".

    with jobs.face_work():          # in a page, around detection, masking and embedding
        ...

`FMR_APP_JOBS` sets the number of slots (default: half the CPU cores, at least one: torch
already spreads one job over several cores).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator

# How often a waiting page run redraws its notice. Each redraw is also where Streamlit stops a
# run whose visitor left or changed a widget, so a departed visitor leaves the line quickly.
POLL_SECONDS = 0.5


def default_slots() -> int:
    """`FMR_APP_JOBS`, else half the CPU cores (at least 1)."""
    env = os.environ.get("FMR_APP_JOBS")
    if env:
        return max(1, int(env))
    return max(1, (os.cpu_count() or 2) // 2)


class JobLine:
    """At most `slots` holders at a time; the others wait first come, first served.

    `slot(on_wait)` is a context manager: it returns at once when a slot is free and nobody is
    waiting, else it calls `on_wait(position)` (1 = next in line) whenever the position changes
    and at least every `POLL_SECONDS`, with no lock held, so the callback may raise (Streamlit
    stopping the run) and the waiter leaves the line.
    """

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a job line needs at least one slot, got {slots}")
        self.slots = slots
        self._condition = threading.Condition()
        self._running = 0
        self._waiting: list[object] = []  # tickets, in arrival order
        self.served = 0  # jobs started since the server started
        self.most_waiting = 0  # the longest the line has been

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _may_start(self, ticket: object) -> bool:
        return self._running < self.slots and self._waiting[0] is ticket

    @contextlib.contextmanager
    def slot(self, on_wait: Callable[[int], None] | None = None) -> Iterator[None]:
        ticket = object()
        shown, shown_at = 0, 0.0
        condition = self._condition
        with condition:
            self._waiting.append(ticket)
            self.most_waiting = max(self.most_waiting, len(self._waiting))
            try:
                while not self._may_start(ticket):
                    position = self._waiting.index(ticket) + 1
                    now = time.monotonic()
                    if on_wait is not None and (
                        position != shown or now - shown_at >= POLL_SECONDS
                    ):
                        condition.release()  # the callback draws; it must not block the line
                        try:
                            on_wait(position)
                        finally:
                            condition.acquire()
                        shown, shown_at = position, now
                        continue  # the line may have moved while the lock was released
                    condition.wait(timeout=POLL_SECONDS)
            except BaseException:
                self._waiting.remove(ticket)
                condition.notify_all()  # the next in line may be able to start now
                raise
            self._waiting.remove(ticket)
            self._running += 1
            self.served += 1
            condition.notify_all()  # everyone behind moved up one place: update their notices
        try:
            yield
        finally:
            with condition:
                self._running -= 1
                condition.notify_all()


_line: JobLine | None = None
_line_lock = threading.Lock()


def job_line() -> JobLine:
    """The server's one line (created on first use, with `default_slots()`)."""
    global _line
    with _line_lock:
        if _line is None:
            _line = JobLine(default_slots())
        return _line


def busy_message(position: int) -> str:
    ahead = position - 1
    others = "1 request" if ahead == 1 else f"{ahead} requests"
    return (
        f"The server is busy: your request is number {position} in the line "
        f"({others} before it, {job_line().running} running). It starts by itself."
        if ahead
        else "The server is busy: your request is next and starts as soon as a running one "
        "finishes."
    )


@contextlib.contextmanager
def face_work() -> Iterator[None]:
    """Hold one of the server's face-work slots for the `with` block (decode, detect, mask,
    embed); while waiting, a notice in the page says the request's place in the line."""
    import streamlit as st

    notice = st.empty()
    waited = False

    def show(position: int) -> None:
        nonlocal waited
        waited = True
        notice.info(busy_message(position), icon=":material/hourglass_top:")

    with job_line().slot(show):
        if waited:
            notice.empty()
        yield
