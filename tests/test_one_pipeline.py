"""The app and `fmr verify` prepare and compare a face through the one verify pipeline: the same
two files give the same similarity on the verify page (AppTest) and in `fmr verify --json`,
also for an aligned 112x112 crop wearing a synthetic mask; with a mask the masked calibration
decides in both, and the page says so."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fmr.settings import REPO_ROOT

streamlit_testing = pytest.importorskip("streamlit.testing.v1")

MAX_SIDE = 480


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pair(photos_dir, tmp_path_factory) -> tuple[Path, Path]:
    """An aligned 112x112 crop of one photo of Obama (A) and another photo of him (B)."""
    from PIL import Image

    from fmr.faces import align_face, load_image
    from fmr.faces.policy import find_face

    folder = tmp_path_factory.mktemp("pair")
    image = load_image(photos_dir / "obama" / "obama.jpg")
    crop = align_face(image, find_face(image).landmarks)
    assert crop.shape == (112, 112, 3)
    a = folder / "crop.png"
    a.write_bytes(_png(crop))
    with Image.open(photos_dir / "obama" / "obama2.jpg") as photo:
        photo = photo.convert("RGB")
        photo.thumbnail((MAX_SIDE, MAX_SIDE))
        b = folder / "photo.png"
        b.write_bytes(_png(np.asarray(photo)))
    return a, b


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    """dlib's card with a masked calibration (a copy of its unmasked one, so that the choice
    shows) and a random-init IResNet-18 (the torch path, aligned crops included)."""
    import torch

    from fmr.modelfile import ModelCard, save_model_file
    from fmr.models import create_model

    folder = tmp_path_factory.mktemp("checkpoints")
    card = json.loads((REPO_ROOT / "checkpoints" / "dlib_reference.json").read_text())
    card["calibration_masked"] = card["calibration"]
    (folder / "dlib_reference.json").write_text(json.dumps(card))
    torch.manual_seed(0)
    save_model_file(folder / "iresnet18", create_model("iresnet18").eval(),
                    ModelCard(name="iresnet18-random", architecture="iresnet18"), "fp32")
    return folder


def _cli_similarities(a: Path, b: Path, *extra: str) -> list[tuple[str, float, str]]:
    from fmr.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["verify", str(a), str(b), "--json", *extra]) == 0
    result = json.loads(out.getvalue())
    return [(r["backbone"], r["similarity"], r["calibration"]) for r in result["results"]]


def _app_similarities(a: Path, b: Path, mask_a: str | None):
    at = streamlit_testing.AppTest.from_file(str(REPO_ROOT / "pages" / "verify_pair.py"),
                                             default_timeout=240)
    at.run()
    at.file_uploader(key="upload_a").set_value((a.name, a.read_bytes(), "image/png"))
    at.file_uploader(key="upload_b").set_value((b.name, b.read_bytes(), "image/png"))
    if mask_a:
        at.toggle(key="mask_on_a").set_value(True)
        at.run()
        at.selectbox(key="mask_style_a").set_value(mask_a)
        coverage = at.slider(key="mask_coverage_a").value
    else:
        coverage = None
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    similarities = [float(m.value) for m in at.metric if m.label == "Similarity"]
    captions = [c.value for c in at.caption]
    return similarities, captions, coverage


def test_app_and_fmr_verify_give_the_same_similarity(pair, checkpoints, monkeypatch):
    monkeypatch.setenv("FMR_CHECKPOINT_DIR", str(checkpoints))
    monkeypatch.setattr("fmr.verify.lookup.runs_dir", lambda: checkpoints / "runs")
    a, b = pair

    app, _, _ = _app_similarities(a, b, None)
    cli = _cli_similarities(a, b)
    assert [family for family, _, _ in cli] == ["iresnet", "dlib"]
    assert app == pytest.approx([s for _, s, _ in cli], abs=5e-4)  # the page shows 3 decimals
    assert {c for _, _, c in cli} == {"unmasked"}

    # A surgical mask on the aligned crop: its face is the template's, in both.
    masked_app, captions, coverage = _app_similarities(a, b, "surgical")
    masked_cli = _cli_similarities(a, b, "--mask-a", "surgical", "--mask-coverage", str(coverage))
    assert masked_app == pytest.approx([s for _, s, _ in masked_cli], abs=5e-4)
    assert masked_app != pytest.approx(app, abs=5e-3)  # the mask changed the scores
    assert dict((f, c) for f, _, c in masked_cli)["dlib"] == "masked"
    assert any("calibration: masked" in c for c in captions)
    shutil.rmtree(checkpoints / "runs", ignore_errors=True)
