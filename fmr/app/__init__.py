"""Shared set-up for the Streamlit app's pages (`streamlit_app.py`, `pages/*.py`).

Pages stay thin: they read widgets, call `fmr`, and draw. What several pages share lives here:

- `fmr.app.models`: which backbones exist, loading them once per server (`st.cache_resource`).
- `fmr.app.photos`: photo inputs (upload, camera, sample), cached detection, masking, embedding.
- `fmr.app.samples`: sample photos and pairs from the shared data folder, when present.
- `fmr.app.drawing`: face boxes, thumbnails.
- `fmr.app.charts`: plotly figure builders.
- `fmr.app.eval_scores`: the evaluation-pair score files in `assets/eval_scores/` (and the
  command that builds them from `fmr eval --out DIR`).
- `fmr.app.page`: page set-up (title, layout) common to every page, and `for_browser`, which
  takes the server's absolute paths out of messages.
- `fmr.app.jobs`: the face-work line: at most FMR_APP_JOBS visitors' detection and embedding at
  once, the others told their place in line.

Nothing here is needed to use fmr as a library; only the app imports it.
"""
