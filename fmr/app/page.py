"""Set-up every page shares, so a page runs the same under `st.navigation` and on its own
(`streamlit run pages/verify_pair.py`, `AppTest.from_file("pages/verify_pair.py")`)."""

from __future__ import annotations

import streamlit as st

APP_NAME = "fmr"


def setup(title: str, icon: str = ":material/face:") -> None:
    """Page title, icon and the wide layout (comparisons need two columns)."""
    st.set_page_config(page_title=f"{title} · {APP_NAME}", page_icon=icon, layout="wide")


def show_error(exc: Exception) -> None:
    """A user-caused problem (FmrError) as a message in the page, never a traceback."""
    st.error(str(exc), icon=":material/error:")
