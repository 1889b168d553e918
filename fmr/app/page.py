"""Set-up every page shares, so a page runs the same under `st.navigation` and on its own
(`streamlit run pages/verify_pair.py`, `AppTest.from_file("pages/verify_pair.py")`)."""

from __future__ import annotations

import streamlit as st

APP_NAME = "fmr"


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


def show_error(exc: Exception) -> None:
    """A user-caused problem (FmrError) as a message in the page, never a traceback."""
    st.error(str(exc), icon=":material/error:")
