"""Set-up every page shares, so a page runs the same under `st.navigation` and on its own
(`streamlit run pages/verify_pair.py`, `AppTest.from_file("pages/verify_pair.py")`)."""

from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

APP_NAME = "fmr"
# An absolute path in a message: a "/" that does not follow a word, a dot, a colon or another
# "/" (so "x/255", "1/1", "http://" and ":material/error:" are left alone), then path characters.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/[^\s'\"()\[\]{}<>,;:`*|]+")


def for_browser(text: str) -> str:
    """`text` as a visitor may see it: without the server's absolute paths.

    A path inside the project becomes relative to it (`checkpoints/r18.safetensors`), the shared
    data folder and the checkpoint folder are named by their settings (`FMR_DATA_DIR/photos`,
    `FMR_CHECKPOINT_DIR/r18.safetensors`), and any other absolute path is cut to its name.
    """
    from fmr.settings import REPO_ROOT, checkpoint_dir, data_dir

    named = {str(REPO_ROOT): "", str(data_dir()): "FMR_DATA_DIR", str(checkpoint_dir()): (
        "FMR_CHECKPOINT_DIR")}
    # The project's own checkpoints/ folder reads best as that, not as a setting.
    if str(checkpoint_dir()).startswith(str(REPO_ROOT) + "/"):
        named.pop(str(checkpoint_dir()))

    def replace(match: re.Match) -> str:
        path = match.group(0)
        trail = ""
        while path and path[-1] in ".":  # a full stop after a path is the sentence's
            path, trail = path[:-1], path[-1] + trail
        for root in sorted(named, key=len, reverse=True):
            if path == root:
                return (named[root] or "the project folder") + trail
            if path.startswith(root + "/"):
                inside = path[len(root) + 1 :].rstrip("/")
                slash = "/" if Path(path).is_dir() else ""  # "runs/" reads as a folder
                return (f"{named[root]}/{inside}" if named[root] else inside) + slash + trail
        return (path.rstrip("/").rsplit("/", 1)[-1] or path) + trail

    return _ABSOLUTE_PATH.sub(replace, str(text))


def _leave_pages_directory_mode() -> None:
    """Make the app's own navigation (streamlit_app.py's st.navigation) take over.

    Streamlit starts a server whose script folder has a pages/ directory in its old
    "pages directory" mode; only a run of streamlit_app.py (which calls st.navigation) turns
    that off. When the first visitor opens a page's URL directly, the page ran without
    streamlit_app.py and the sidebar showed file names ("arcface angles"). Switching the mode
    off and rerunning runs streamlit_app.py, which shows the same page with the real
    navigation. This happens at most once per server process.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover - a Streamlit without this internal
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


def setup(title: str, icon: str = ":material/face:") -> None:
    """Page title, icon and the wide layout (comparisons need two columns)."""
    _leave_pages_directory_mode()
    st.set_page_config(page_title=f"{title} · {APP_NAME}", page_icon=icon, layout="wide")


def show_error(exc: Exception | str) -> None:
    """A user-caused problem (FmrError) as a message in the page, never a traceback, and
    without the server's paths (`for_browser`)."""
    st.error(for_browser(str(exc)), icon=":material/error:")
