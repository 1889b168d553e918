"""The Streamlit app, page by page, through streamlit.testing (AppTest): every page renders
without an exception; the verify page gives "same person" for two photos of one person and
"different people" for two people, and a clear message for a text file or a huge image; the
mask studio makes a masked image; the angles page's slider moves the FAR figure.

Each page runs on its own (`AppTest.from_file("pages/...")`), as the issue asks. Uploaded
photos are the shared data's real photos, downscaled to 640 px so detection stays quick.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fmr.settings import REPO_ROOT

streamlit_testing = pytest.importorskip("streamlit.testing.v1")
AppTest = streamlit_testing.AppTest

TIMEOUT = 240  # seconds per script run: the first one loads every model on a busy 2-core box
MAX_SIDE = 640


def open_page(page: str) -> AppTest:
    return AppTest.from_file(str(REPO_ROOT / page), default_timeout=TIMEOUT)


def jpeg(path: Path, max_side: int = MAX_SIDE) -> bytes:
    """The photo at `path`, scaled down to at most `max_side` pixels, as JPEG bytes."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((max_side, max_side))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def texts(at: AppTest) -> str:
    """Everything the page wrote as markdown, captions, image captions and alerts."""
    parts = [e.value for e in (*at.markdown, *at.caption, *at.error, *at.warning, *at.info)]
    parts += [caption for image in at.image for caption in image.captions]
    return "\n".join(str(p) for p in parts)


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


@pytest.fixture(scope="module")
def photos(photos_dir) -> dict[str, bytes]:
    return {
        "obama_1": jpeg(photos_dir / "obama" / "obama.jpg"),
        "obama_2": jpeg(photos_dir / "obama" / "obama2.jpg"),
        "biden": jpeg(photos_dir / "biden" / "biden.jpg"),
        "kit": jpeg(photos_dir / "kit_harington" / "john3.jpg"),
        "kit_with_rose": jpeg(photos_dir / "multi" / "kit_with_rose.jpg"),
    }


def _isolate(monkeypatch, folder: Path) -> None:
    """Look up checkpoints only in `folder` (and no training runs)."""
    monkeypatch.setenv("FMR_CHECKPOINT_DIR", str(folder))
    monkeypatch.setattr("fmr.verify.lookup.runs_dir", lambda: folder / "runs")


@pytest.fixture(scope="module")
def dlib_only_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dlib-only")
    shutil.copy2(REPO_ROOT / "checkpoints" / "dlib_reference.json", folder)
    return folder


@pytest.fixture
def dlib_only(dlib_only_dir, monkeypatch) -> Path:
    """Checkpoints: only the dlib reference (its calibrated card), as in a fresh clone."""
    _isolate(monkeypatch, dlib_only_dir)
    return dlib_only_dir


@pytest.fixture(scope="module")
def random_checkpoints_dir(tmp_path_factory) -> Path:
    """Checkpoints: random-init IResNet-18 and ResSaNet-18 and an untrained dlib-mask (dlib's
    weights; none calibrated) beside dlib's, to drive every family's path in the app."""
    import torch

    from fmr.modelfile import ModelCard, save_model_file
    from fmr.models import create_model
    from fmr.models.dlib_resnet import load_dlib_resnet
    from fmr.train.teacher import dlib_weights_path

    folder = tmp_path_factory.mktemp("random-checkpoints")
    shutil.copy2(REPO_ROOT / "checkpoints" / "dlib_reference.json", folder)
    torch.manual_seed(0)
    for architecture in ("iresnet18", "ressanet18"):
        card = ModelCard(name=f"{architecture}-random", architecture=architecture,
                         training={"data": "none: random weights for tests"})
        save_model_file(folder / architecture, create_model(architecture).eval(), card, "fp16")
    card = ModelCard(name="dlib-mask-untrained", architecture="dlib_resnet_v1",
                     embedding_size=128, input_size=150,
                     training={"data": "none: dlib's weights, for tests"})
    save_model_file(folder / "dlib_mask", load_dlib_resnet(dlib_weights_path()), card, "fp16")
    return folder


@pytest.fixture
def random_checkpoints(random_checkpoints_dir, monkeypatch) -> Path:
    _isolate(monkeypatch, random_checkpoints_dir)
    return random_checkpoints_dir


def verify_with(photo_a: bytes, photo_b: bytes, names=("a.jpg", "b.jpg")) -> AppTest:
    at = open_page("pages/verify_pair.py")
    at.run()
    at.file_uploader(key="upload_a").set_value((names[0], photo_a, "image/jpeg"))
    at.file_uploader(key="upload_b").set_value((names[1], photo_b, "image/jpeg"))
    at.run()
    assert_no_exception(at)
    return at


# ------------------------------------------------------------------------------------- home
def test_home_lists_the_backbones_and_says_which_are_missing(dlib_only):
    at = open_page("streamlit_app.py")
    at.run()
    assert_no_exception(at)
    headings = [m.value for m in at.markdown if m.value.startswith("#### ")]
    assert headings == ["#### IResNet :red-badge[missing]", "#### ResSaNet :red-badge[missing]",
                        "#### dlib reference :green-badge[loaded]",
                        "#### dlib-mask (dlib fine-tuned for masks) :red-badge[missing]"]
    assert at.warning[0].value.startswith("Missing: IResNet, ResSaNet, dlib-mask")
    reasons = [c.value for c in at.caption if "checkpoint found" in c.value]
    assert len(reasons) == 3 and all("train.py" in r for r in reasons)  # says how to get one
    page = texts(at)
    assert "`dlib-resnet-v1` · dlib_resnet_v1, 128-d embeddings" in page
    threshold = next(m.value for m in at.markdown if m.value.startswith("**Threshold**"))
    card = json.loads((dlib_only / "dlib_reference.json").read_text())
    assert threshold.startswith(f"**Threshold** {card['calibration']['threshold']:.3f} cosine")


def test_every_backbone_found_is_loaded_and_compared(random_checkpoints, photos):
    home = open_page("streamlit_app.py")
    home.run()
    assert_no_exception(home)
    headings = [m.value for m in home.markdown if m.value.startswith("#### ")]
    assert all(h.endswith(":green-badge[loaded]") for h in headings) and len(headings) == 4
    assert not home.warning
    assert texts(home).count("**Threshold** not calibrated") == 3

    at = verify_with(photos["obama_1"], photos["obama_2"])
    cards = [m.value for m in at.markdown if m.value.startswith("**")]
    assert cards == ["**IResNet** · `iresnet18-random`", "**ResSaNet** · `ressanet18-random`",
                     "**dlib reference** · `dlib-resnet-v1`",
                     "**dlib-mask (dlib fine-tuned for masks)** · `dlib-mask-untrained`"]
    verdicts = [m.value for m in at.markdown if m.value.startswith("### ")]
    # Random weights carry no calibration: no verdict but a note saying how to calibrate.
    assert verdicts[:2] == ["### :orange[inconclusive]"] * 2
    assert verdicts[2] == "### :green[same person]"
    assert verdicts[3] == "### :orange[inconclusive]"  # the untrained dlib-mask: no calibration
    assert "has no calibration" in texts(at)
    assert len(at.metric) == 8  # similarity and angle per backbone
    # Unmasked faces go through dlib's own weights in dlib-mask: the same similarity as dlib.
    assert at.metric[4].value == at.metric[6].value


# ----------------------------------------------------------------------------------- verify
def test_verify_same_person_then_with_a_mask_and_why(dlib_only, photos):
    at = verify_with(photos["obama_1"], photos["obama_2"])
    assert "### :green[same person]" in [m.value for m in at.markdown]
    similarity = float(at.metric[0].value)
    angle = float(at.metric[1].value.rstrip("°"))
    assert 0.93 < similarity <= 1.0
    # Both are shown rounded (3 decimals, 0.1 degree): the angle matches the cosine closely.
    assert angle == pytest.approx(np.degrees(np.arccos(similarity)), abs=0.3)
    assert len(at.image) == 4  # both photos with their boxes, both aligned crops
    # The mask detector's probability under each face, and why the calibration was chosen.
    assert len([c for c in at.caption if c.value.startswith("wears a mask: ")]) == 2
    assert "because neither photo wears a mask (A " in texts(at)

    # A synthetic mask on photo B: the score drops but the pair is still compared.
    at.toggle(key="mask_on_b").set_value(True)
    at.run()
    at.selectbox(key="mask_style_b").set_value("N95")
    at.toggle(key="explain_on").set_value(True)
    at.run()
    assert_no_exception(at)
    masked_similarity = float(at.metric[0].value)
    assert masked_similarity < similarity
    assert "calibration: masked" in texts(at)
    assert "because a synthetic mask was drawn on photo B" in texts(at)
    assert any(m.value.startswith("### :") for m in at.markdown)
    assert len(at.get("plotly_chart")) == 2  # where the score sits, and the occlusion maps


def test_verify_different_people_with_a_camera_photo(dlib_only, photos):
    at = open_page("pages/verify_pair.py")
    at.run()
    at.toggle(key="camera_on_a").set_value(True)
    at.run()
    at.camera_input(key="camera_a").set_value(("shot.jpg", photos["biden"], "image/jpeg"))
    at.file_uploader(key="upload_b").set_value(("obama.jpg", photos["obama_1"], "image/jpeg"))
    at.run()
    assert_no_exception(at)
    assert "### :red[different people]" in [m.value for m in at.markdown]
    assert float(at.metric[0].value) < 0.88
    assert "camera photo A" in texts(at)


def test_verify_several_faces_lets_the_user_pick_one(dlib_only, photos):
    at = verify_with(photos["kit"], photos["kit_with_rose"], ("kit.jpg", "kit_with_rose.jpg"))
    picker = at.selectbox(key="face_b")
    # Both are in frame: the default is the bigger face, and the picker says why.
    first, second = picker.options
    assert first.startswith("face 1: the default (in frame, the biggest, ")
    assert second.startswith("face 2 (in frame, ") and second.endswith(" px wide)")
    verdicts = {}
    for choice in (0, 1):
        picker = at.selectbox(key="face_b").set_value(choice)
        at.run()
        assert_no_exception(at)
        verdicts[choice] = next(m.value for m in at.markdown if m.value.startswith("### "))
    # One of the two faces is Kit Harington, the other Rose Leslie.
    assert sorted(verdicts.values()) == ["### :green[same person]", "### :red[different people]"]


def test_face_picker_labels_say_which_face_is_the_default_and_why():
    """A bystander cut by the photo's edge comes after the person in frame, and says so."""
    from fmr.app.photos import DetectedPhoto, face_labels
    from fmr.faces import Face
    from fmr.faces.policy import likely_faces

    def face(x1, y1, x2, y2, score=0.99):
        w, h = x2 - x1, y2 - y1
        points = [[x1 + 0.3 * w, y1 + 0.4 * h], [x1 + 0.7 * w, y1 + 0.4 * h],
                  [x1 + 0.5 * w, y1 + 0.6 * h], [x1 + 0.35 * w, y1 + 0.8 * h],
                  [x1 + 0.65 * w, y1 + 0.8 * h]]
        return Face(np.array([x1, y1, x2, y2], np.float32), score, np.array(points, np.float32))

    image = np.zeros((300, 500, 3), np.uint8)
    bystander, subject = face(-70, 60, 80, 250, 0.73), face(200, 95, 290, 210)
    faces, hidden = likely_faces([bystander, subject], image.shape)
    labels = face_labels(DetectedPhoto("two.jpg", image, faces, hidden))
    assert labels == ["face 1: the default (the only face in frame, 90 px wide)",
                      "face 2 (cut by the edge, 80 px wide)"]
    group = [face(20, 20, 140, 170), face(200, 95, 290, 210), face(-40, 60, 60, 200)]
    # A bystander cut by the edge with more of it in the photo than any face in frame:
    cut_big = [face(300, 40, 380, 140), face(200, 95, 290, 210), face(-70, 60, 80, 250)]
    faces, hidden = likely_faces(cut_big, image.shape)
    assert face_labels(DetectedPhoto("three.jpg", image, faces, hidden))[0] == (
        "face 1: the default (in frame, the biggest of those in frame, 90 px wide)")
    # A bigger detection the detector is unsure of (a torso, say) comes second.
    torso = [face(200, 95, 290, 210), face(150, 150, 300, 300, 0.8)]
    faces, hidden = likely_faces(torso, image.shape)
    assert face_labels(DetectedPhoto("torso.jpg", image, faces, hidden)) == [
        "face 1: the default (in frame, the biggest the detector is sure of, 90 px wide)",
        "face 2 (in frame, 150 px wide)",
    ]
    faces, hidden = likely_faces(group, image.shape)
    assert face_labels(DetectedPhoto("group.jpg", image, faces, hidden)) == [
        "face 1: the default (in frame, the biggest, 120 px wide)",
        "face 2 (in frame, 90 px wide)",
        "face 3 (cut by the edge, 60 px wide)",
    ]


def test_verify_a_sample_pair(dlib_only, photos_dir):
    at = open_page("pages/verify_pair.py")
    at.run()
    chooser = at.selectbox(key="sample_pair")
    pair = next(p for p in chooser.options if p.startswith("Kit Harington: two photos"))
    chooser.select(pair)  # the labels are the options as shown
    at.run()
    assert_no_exception(at)
    assert "### :green[same person]" in [m.value for m in at.markdown]
    assert "kit_harington/john1.jpeg" in texts(at)


def test_verify_text_file_shows_the_error(dlib_only, photos):
    at = verify_with(b"this is a text file, not a photo\n", photos["obama_2"],
                     ("notes.jpg", "b.jpg"))
    errors = [e.value for e in at.error]
    assert len(errors) == 1
    assert "notes.jpg" in errors[0] and "not an image" in errors[0]
    assert not any(m.value.startswith("### ") for m in at.markdown)  # no verdict


def test_verify_huge_image_shows_the_error(dlib_only, photos, monkeypatch):
    monkeypatch.setenv("FMR_MAX_PIXELS", "100000")  # the 640 px photos are 0.2-0.4 MP
    at = verify_with(photos["obama_1"], photos["obama_2"], ("big.jpg", "b.jpg"))
    errors = " ".join(e.value for e in at.error)
    assert "big.jpg" in errors and "megapixels" in errors and "FMR_MAX_PIXELS" in errors


def test_verify_photo_without_a_face_says_so(dlib_only, photos):
    blank = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (320, 240), (120, 160, 200)).save(blank, "PNG")
    at = verify_with(photos["obama_1"], blank.getvalue(), ("a.jpg", "sky.png"))
    errors = " ".join(e.value for e in at.error)
    assert "sky.png: no face found" in errors


# ------------------------------------------------------------------------------ mask studio
def test_mask_studio_produces_a_masked_image(dlib_only, photos):
    at = open_page("pages/mask_studio.py")
    at.run()
    at.file_uploader(key="upload_studio").set_value(("me.jpg", photos["obama_1"], "image/jpeg"))
    at.selectbox(key="studio_style").set_value("cloth")
    at.selectbox(key="studio_colour").set_value("navy")
    at.run()
    assert_no_exception(at)
    captions = [c for image in at.image for c in image.captions]
    assert captions[0] == "original"
    assert captions[1].startswith("masked: cloth, #27355c")  # navy
    assert at.get("download_button")

    at.toggle(key="studio_grid").set_value(True)
    at.run()
    assert_no_exception(at)
    from fmr.masks import MASK_STYLES

    assert [c for image in at.image for c in image.captions][2:] == list(MASK_STYLES)


# ---------------------------------------------------------------------------- find a person
def _answer(at: AppTest) -> str:
    return " ".join([s.value for s in at.success] + [w.value for w in at.warning])


def test_find_a_person_names_the_enrolled_person_and_rejects_a_stranger(dlib_only, photos_dir):
    at = open_page("pages/find_a_person.py")
    at.run()
    assert_no_exception(at)
    # The last sample photo of each person is kept out of the gallery: a held-out probe.
    at.selectbox(key="find_sample").set_value(photos_dir / "obama" / "obama3.jpg")
    at.run()
    assert_no_exception(at)
    assert "This is **Obama**" in _answer(at)
    ranked = [m.value for m in at.markdown if m.value.startswith("**1. ")]
    assert ranked == ["**1. Obama**"]
    assert "calibration on validation people" in texts(at)

    # Obama out of the gallery: the same photo is now a stranger.
    at.multiselect(key="find_people").unselect("Obama")
    at.run()
    assert_no_exception(at)
    assert "**Not in the gallery.**" in _answer(at)
    assert "Obama" not in " ".join(m.value for m in at.markdown if m.value.startswith("**"))


def test_find_a_person_with_the_visitors_own_people_and_a_masked_probe(dlib_only, photos):
    at = open_page("pages/find_a_person.py")
    at.run()
    at.multiselect(key="find_people").set_value([])
    at.run()
    assert "Choose sample people or add your own" in texts(at)
    at.text_input(key="find_name").input("Barack")
    at.file_uploader(key="find_uploads").set_value(
        [("o1.jpg", photos["obama_1"], "image/jpeg"), ("sky.png", _blank_png(), "image/png")])
    at.run()  # the button is enabled once photos are chosen, as in a browser
    at.button(key="find_add").click()
    at.run()
    assert_no_exception(at)
    assert "Gallery: 1 photo of 1 person (Barack 1)" in texts(at)
    assert "Left out of the gallery: Barack/sky.png: no face found" in texts(at)
    at.file_uploader(key="upload_probe").set_value(("probe.jpg", photos["obama_2"],
                                                    "image/jpeg"))
    at.run()
    assert_no_exception(at)
    assert "This is **Barack**" in _answer(at)
    at.toggle(key="mask_on_probe").set_value(True)
    at.run()
    assert_no_exception(at)
    assert "masked calibration" in texts(at)


def _blank_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (120, 160, 200)).save(buffer, "PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------ compare backbones
def test_compare_backbones_draws_matrices_projection_and_score_drop(dlib_only, photos_dir):
    at = open_page("pages/compare_backbones.py")
    at.run()  # default gallery: three people, two photos each
    assert_no_exception(at)
    at.multiselect(key="gallery_people").set_value(["Kit Harington", "Rose Leslie"])
    at.run()
    assert_no_exception(at)
    assert len(at.get("plotly_chart")) == 3  # matrix, projection, score drop (dlib only)
    drop = next(m.value for m in at.markdown if "same-person similarity drops by" in m.value)
    assert drop.startswith("- **dlib reference**")


# --------------------------------------------------------------------------- ArcFace angles
def test_angles_page_slider_changes_the_far_figure(dlib_only):
    at = open_page("pages/arcface_angles.py")
    at.run()
    assert_no_exception(at)
    assert at.selectbox(key="angles_backbone").value == "dlib"
    far = next(m for m in at.metric if m.label == "FAR (false accepts)")
    before = float(far.value.rstrip("%"))
    at.slider(key="angle_threshold").set_value(45.0)
    at.run()
    assert_no_exception(at)
    after = float(next(m for m in at.metric if m.label == "FAR (false accepts)").value.rstrip("%"))
    assert after > before  # a wider angle lets more different-person pairs through
    table = at.dataframe[0].value
    assert table["condition"].iloc[0] == "unmasked"
    assert after == pytest.approx(table["FAR"].iloc[0] * 100, abs=0.01)
    assert len(at.get("plotly_chart")) == 3  # histograms, ROC, margin


def test_angles_page_without_score_files_says_so(dlib_only, monkeypatch, tmp_path):
    monkeypatch.setattr("fmr.app.eval_scores.scores_dir", lambda: tmp_path)
    at = open_page("pages/arcface_angles.py")
    at.run()
    assert_no_exception(at)
    assert "No evaluation scores" in texts(at)
    assert len(at.get("plotly_chart")) == 1  # the margin plot still shows
