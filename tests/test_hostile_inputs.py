"""Hostile and unusual inputs, each through the CLI (`fmr verify`, `fmr embed`, `fmr mask`) and
the app's verify page (AppTest): refused with a message naming the file (verify exits 2, a batch
records a failed row and exits 0), or accepted and verified like any photo; a crowd gets the
multi-face policy and a count of its faces; broken checkpoints give one clear line.

Every file is made here, in a temporary folder, from the shared data's photos (never
committed). The portrait and its partner are two photos of one person (obama.jpg, obama2.jpg)
scaled to 480 px, so "accepted" means the verdict is "same person". dlib is the backbone (the
cheapest real one; no trained IResNet/ResSaNet checkpoint ships yet).
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fmr.batch import manifest_rows
from fmr.cli import main
from fmr.settings import REPO_ROOT

PORTRAIT_SIDE = 480
CROWD_GRID = 6  # 6 x 6 LFW photos: 36 people, more faces with the ones in their backgrounds

# name -> what the refusal message must say (besides the file's name)
REFUSED = {
    "empty.jpg": "the file is empty (0 bytes)",
    "truncated.jpg": "the image is truncated",
    "notes.jpg": "not an image fmr can read",
    "bomb.png": "100000 x 100000 pixels",
    "strip.png": "10000 x 10 pixels, too thin to hold a face",
    "landscape.jpg": "no face found",
}
ACCEPTED = ("cmyk.jpg", "deep16.png", "exif-rotated.jpg", "animated.gif")


# ------------------------------------------------------------------------------- the files
def _png_claiming(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming width x height, a little pixel data, IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + chunk(b"IEND", b""))


def _landscape() -> np.ndarray:
    """A sky-and-field picture without a face (smooth gradients and grain)."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:360, 0:480].astype(np.float32)
    sky = np.stack([120 + 60 * y / 360, 160 + 40 * y / 360, 230 - 20 * x / 480], -1)
    field = np.stack([60 + 40 * x / 480, 130 + 30 * (y - 220) / 140, 50 + 0 * x], -1)
    picture = np.where((y > 220)[..., None], field, sky) + rng.normal(0, 6, (360, 480, 3))
    return np.clip(picture, 0, 255).astype(np.uint8)


def _scaled(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((PORTRAIT_SIDE, PORTRAIT_SIDE))
    return image


@pytest.fixture(scope="module")
def portrait(photos_dir) -> Image.Image:
    return _scaled(photos_dir / "obama" / "obama.jpg")


@pytest.fixture(scope="module")
def files(tmp_path_factory, photos_dir, lfw_dir, portrait) -> dict[str, Path]:
    """Every input of these tests, by name, in one temporary folder."""
    folder = tmp_path_factory.mktemp("hostile")
    paths = {}

    def path(name: str) -> Path:
        paths[name] = folder / name
        return paths[name]

    portrait.save(path("portrait.jpg"), quality=92)
    _scaled(photos_dir / "obama" / "obama2.jpg").save(path("partner.jpg"), quality=92)

    # Refused.
    path("empty.jpg").write_bytes(b"")
    whole = io.BytesIO()
    portrait.save(whole, "JPEG", quality=92)
    path("truncated.jpg").write_bytes(whole.getvalue()[: len(whole.getvalue()) * 3 // 5])
    with Image.open(paths["truncated.jpg"]) as cut:  # the header and the top rows still decode
        assert cut.size == portrait.size
    path("notes.jpg").write_text("Shopping list: milk, eggs, bread.\n")
    path("bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    strip = np.random.default_rng(0).integers(0, 256, (10, 10_000, 3), dtype=np.uint8)
    Image.fromarray(strip).save(path("strip.png"))
    Image.fromarray(_landscape()).save(path("landscape.jpg"), quality=92)

    # Accepted: the portrait in unusual encodings.
    portrait.convert("CMYK").save(path("cmyk.jpg"), quality=95)
    deep = np.asarray(portrait).astype(np.uint16) * 257  # 16 bits per channel, full range
    cv2.imwrite(str(path("deep16.png")), np.ascontiguousarray(deep[:, :, ::-1]))
    assert paths["deep16.png"].read_bytes()[24] == 16  # IHDR bit depth
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    portrait.transpose(Image.Transpose.ROTATE_90).save(path("exif-rotated.jpg"), exif=exif,
                                                       quality=95)
    # An animated GIF whose later frames show no face: only the first frame may be used.
    later = Image.fromarray(_landscape()).resize(portrait.size)
    portrait.save(path("animated.gif"), save_all=True, append_images=[later, later],
                  duration=200, loop=0)
    with Image.open(paths["animated.gif"]) as gif:
        assert gif.n_frames >= 2  # identical frames are merged

    # A crowd: a grid of LFW photos of different people.
    people = sorted(p for p in (lfw_dir / "images").iterdir() if p.is_dir())[: CROWD_GRID**2]
    tiles = [np.asarray(Image.open(min(p.iterdir())).convert("RGB")) for p in people]
    rows = [np.concatenate(tiles[r * CROWD_GRID:(r + 1) * CROWD_GRID], axis=1)
            for r in range(CROWD_GRID)]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path("crowd.jpg"), quality=90)
    return paths


@pytest.fixture(scope="module")
def crowd_faces(files) -> int:
    """How many faces fmr counts in the crowd (the likely ones: fmr.faces.policy)."""
    from fmr.faces import detect_faces, load_image
    from fmr.faces.policy import likely_faces

    image = load_image(files["crowd.jpg"])
    faces, _ = likely_faces(detect_faces(image), image.shape)
    assert len(faces) >= 30
    return len(faces)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def _one_line_error(code: int, out: str, err: str, *needles: str) -> str:
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------- fmr verify
@pytest.mark.parametrize("name", list(REFUSED))
def test_verify_refuses_with_one_line_naming_the_file(capsys, files, name):
    code, out, err = run_cli(capsys, "verify", files[name], files["partner.jpg"],
                             "--backbone", "dlib")
    _one_line_error(code, out, err, f"fmr verify: error: {files[name]}: ", REFUSED[name])


@pytest.mark.parametrize("name", ACCEPTED)
def test_verify_accepts_unusual_encodings_of_a_photo(capsys, files, portrait, name):
    code, out, err = run_cli(capsys, "verify", files[name], files["partner.jpg"],
                             "--backbone", "dlib", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["a"]["size"] == list(portrait.size)  # upright, full size, first frame
    assert result["a"]["faces_found"] == 1
    assert result["results"][0]["verdict"] == "same"


def test_verify_a_crowd_follows_the_multi_face_policy_and_counts_the_faces(
    capsys, files, crowd_faces
):
    code, out, err = run_cli(capsys, "verify", files["crowd.jpg"], files["partner.jpg"],
                             "--backbone", "dlib")
    assert code == 0, err
    assert f"A: {files['crowd.jpg']} (1500x1500; {crowd_faces} face(s) found" in out
    assert "DIFFERENT PEOPLE" in out  # the main face is someone from LFW, not the partner

    code, out, err = run_cli(capsys, "verify", files["crowd.jpg"], files["partner.jpg"],
                             "--backbone", "dlib", "--multi-face", "require-one")
    _one_line_error(code, out, err,
                    f"{files['crowd.jpg']}: {crowd_faces} faces found but exactly one is required")


# ------------------------------------------------------------------------- fmr embed, mask
def _batch_inputs(files) -> list[Path]:
    return [files[n] for n in ("portrait.jpg", *REFUSED, *ACCEPTED, "crowd.jpg")]


def test_embed_records_refused_files_and_embeds_the_rest(capsys, files, tmp_path, crowd_faces):
    out_file = tmp_path / "hostile.npz"
    inputs = _batch_inputs(files)
    code, _, err = run_cli(capsys, "embed", *inputs, "--backbone", "dlib", "--out", out_file,
                           "--quiet")
    assert code == 0, err
    assert f"fmr embed: 6 ok, 6 failed, {len(inputs)} inputs" in err
    rows = {Path(r["input"]).name: r for r in _manifest(tmp_path / "hostile.manifest.csv")}
    for name, says in REFUSED.items():
        assert rows[name]["status"] == "failed"
        assert f"{files[name]}: " in rows[name]["reason"] and says in rows[name]["reason"]
    with np.load(out_file) as saved:
        vectors = dict(zip((Path(p).name for p in saved["paths"]), saved["embeddings"],
                           strict=True))
        assert saved["ok"].sum() == 6
    for name in ACCEPTED:  # the same face, whatever the encoding
        assert rows[name]["status"] == "ok"
        assert float(vectors[name] @ vectors["portrait.jpg"]) > 0.9, name
    assert rows["crowd.jpg"]["status"] == "ok"  # --multi-face main

    strict = tmp_path / "strict.npz"
    code, _, err = run_cli(capsys, "embed", files["crowd.jpg"], "--backbone", "dlib",
                           "--multi-face", "require-one", "--out", strict, "--quiet")
    assert code == 0, err
    (row,) = _manifest(tmp_path / "strict.manifest.csv")
    assert row["status"] == "failed"
    assert f"{crowd_faces} faces found but exactly one is required" in row["reason"]


def _manifest(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_mask_records_refused_files_and_masks_the_rest(capsys, files, tmp_path, crowd_faces,
                                                       portrait):
    out = tmp_path / "masked"
    inputs = _batch_inputs(files)
    code, _, err = run_cli(capsys, "mask", *inputs, "--out", out, "--quiet", "--min-face", "20")
    assert code == 0, err
    assert f"fmr mask: 6 ok, 6 failed, {len(inputs)} inputs" in err
    rows = {Path(r["input"]).name: r for r in manifest_rows(out)}
    for name, says in REFUSED.items():
        assert rows[name]["status"] == "failed"
        assert f"{files[name]}: " in rows[name]["reason"] and says in rows[name]["reason"]
    for name in ACCEPTED:
        assert rows[name]["status"] == "ok" and rows[name]["faces"] == "1/1", rows[name]
        with Image.open(out / rows[name]["output"]) as masked:
            assert masked.size == portrait.size  # upright, the first frame
    # Every likely face of the crowd gets a mask (less any dlib disagrees with), and the row
    # says how many were found.
    masked, found = (int(v) for v in rows["crowd.jpg"]["faces"].split("/"))
    assert found <= crowd_faces and masked >= 30


# ------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def broken_checkpoints(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the message must say): a truncated safetensors file, one whose
    header length is longer than the file, and another architecture's weights."""
    import torch

    from fmr.modelfile import ModelCard, save_model_file
    from fmr.models import create_model

    folder = tmp_path_factory.mktemp("broken-checkpoints")
    torch.manual_seed(0)
    good = save_model_file(folder / "good", create_model("iresnet18").eval(),
                           ModelCard(name="r18", architecture="iresnet18"), "int8")
    data = good.read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    # The first 8 bytes are the header's length: claim one longer than the whole file.
    (folder / "long-header.safetensors").write_bytes(struct.pack("<Q", len(data)) + data[8:])
    # ResSaNet-18 weights under a card that says IResNet-18 (the card inside the file only).
    other = save_model_file(folder / "other-architecture", create_model("ressanet18").eval(),
                            ModelCard(name="r18", architecture="iresnet18"), "int8")
    other.with_suffix(".json").unlink()
    for name in ("truncated", "long-header"):  # their cards beside them are intact
        shutil.copy(folder / "good.json", folder / f"{name}.json")
    (folder / "good.safetensors").unlink()
    (folder / "good.json").unlink()
    return {
        "truncated": (folder / "truncated.safetensors", "not a readable safetensors file"),
        "long-header": (folder / "long-header.safetensors", "not a readable safetensors file"),
        "other-architecture": (other, "its weights do not fit iresnet18"),
    }


@pytest.mark.parametrize("kind", ["truncated", "long-header", "other-architecture"])
def test_a_broken_checkpoint_is_one_clear_line_and_exit_2(capsys, files, broken_checkpoints,
                                                         kind, tmp_path):
    checkpoint, says = broken_checkpoints[kind]
    code, out, err = run_cli(capsys, "verify", files["portrait.jpg"], files["partner.jpg"],
                             "--checkpoint", checkpoint)
    _one_line_error(code, out, err, f"fmr verify: error: {checkpoint}", says)
    code, out, err = run_cli(capsys, "embed", files["portrait.jpg"], "--checkpoint", checkpoint,
                             "--out", tmp_path / "e.npz")
    _one_line_error(code, out, err, f"fmr embed: error: {checkpoint}", says)
    assert not (tmp_path / "e.npz").exists()


# ---------------------------------------------------------------------------------- the app
streamlit_testing = pytest.importorskip("streamlit.testing.v1")
AppTest = streamlit_testing.AppTest
APP_TIMEOUT = 240  # seconds per script run: the first loads the models on a busy machine


@pytest.fixture
def dlib_only(tmp_path, monkeypatch) -> Path:
    """Checkpoints: only the dlib reference, as in a fresh clone (no runs/)."""
    shutil.copy2(REPO_ROOT / "checkpoints" / "dlib_reference.json", tmp_path)
    monkeypatch.setenv("FMR_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.setattr("fmr.verify.lookup.runs_dir", lambda: tmp_path / "runs")
    return tmp_path


def page_text(at) -> str:
    """Every string the page holds (bodies, captions, labels, help, chart specs)."""

    def walk(node) -> list[str]:
        proto = getattr(node, "proto", None)
        found = [str(proto)] if proto is not None else []
        for child in getattr(node, "children", {}).values():
            found += walk(child)
        return found

    return "\n".join(walk(at._tree))


def verify_upload(files, name: str, partner: str = "partner.jpg") -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "pages" / "verify_pair.py"),
                           default_timeout=APP_TIMEOUT)
    at.run()
    at.file_uploader(key="upload_a").set_value((name, files[name].read_bytes(), "image/jpeg"))
    at.file_uploader(key="upload_b").set_value((partner, files[partner].read_bytes(),
                                                "image/jpeg"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def verdicts(at) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("### ")]


@pytest.mark.parametrize("name", list(REFUSED))
def test_app_refuses_with_a_message_naming_the_file(dlib_only, files, name):
    at = verify_upload(files, name)
    errors = [e.value for e in at.error]
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{name}: ") and REFUSED[name] in errors[0], errors[0]
    assert str(files[name].parent) not in page_text(at)  # the upload's name, no server path
    assert verdicts(at) == []
    assert "partner.jpg: 1 face found" in [c for i in at.image for c in i.captions]


@pytest.mark.parametrize("name", ACCEPTED)
def test_app_accepts_unusual_encodings_of_a_photo(dlib_only, files, name):
    at = verify_upload(files, name)
    assert not at.error, [e.value for e in at.error]
    assert verdicts(at) == ["### :green[same person]"]
    captions = [c for i in at.image for c in i.captions]
    assert any(c.startswith(f"{name}: 1 face found") for c in captions), captions


def test_app_crowd_lets_the_visitor_pick_among_its_faces(dlib_only, files, crowd_faces):
    at = verify_upload(files, "crowd.jpg")
    picker = at.selectbox(key="face_a")
    assert picker.label == f"{crowd_faces} faces in photo A: which one?"
    assert len(picker.options) == crowd_faces
    assert f"crowd.jpg: {crowd_faces} faces found" in [c for i in at.image for c in i.captions]
    assert verdicts(at) == ["### :red[different people]"]


@pytest.mark.parametrize("kind", ["truncated", "long-header", "other-architecture"])
def test_app_names_a_broken_checkpoint_without_server_paths(
    dlib_only, files, broken_checkpoints, kind
):
    checkpoint, says = broken_checkpoints[kind]
    shutil.copy2(checkpoint, dlib_only)
    if checkpoint.with_suffix(".json").is_file():
        shutil.copy2(checkpoint.with_suffix(".json"), dlib_only)
    home = AppTest.from_file(str(REPO_ROOT / "streamlit_app.py"), default_timeout=APP_TIMEOUT)
    home.run()
    assert not home.exception, [e.value for e in home.exception]
    headings = [m.value for m in home.markdown if m.value.startswith("#### ")]
    assert "#### IResNet :red-badge[missing]" in headings
    reason = next(c.value for c in home.caption if checkpoint.name in c.value)
    assert f"FMR_CHECKPOINT_DIR/{checkpoint.name}: could not be loaded" in reason
    assert says in reason
    assert str(dlib_only) not in page_text(home)

    at = verify_upload(files, "portrait.jpg")  # dlib still compares the pair
    assert verdicts(at) == ["### :green[same person]"]
    note = next(i.value for i in at.info if "is not loaded" in i.value)
    assert f"**IResNet** is not loaded: FMR_CHECKPOINT_DIR/{checkpoint.name}" in note
    assert str(dlib_only) not in page_text(at)


PAGES = ("streamlit_app.py", "pages/verify_pair.py", "pages/mask_studio.py",
         "pages/compare_backbones.py", "pages/arcface_angles.py")


def test_no_page_shows_the_servers_paths(dlib_only, tmp_path, monkeypatch):
    """Without sample photos and with no trained checkpoint every page explains itself, naming
    folders relative to the project or by their setting, never by absolute path."""
    from fmr.settings import data_dir

    monkeypatch.setenv("FMR_DATA_DIR", str(tmp_path / "no-shared-data"))
    for page in PAGES:
        at = AppTest.from_file(str(REPO_ROOT / page), default_timeout=APP_TIMEOUT)
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
        text = page_text(at)
        for server_path in (str(REPO_ROOT), str(tmp_path), str(data_dir())):
            assert server_path not in text, (page, server_path)
        if page == "streamlit_app.py":
            assert "no IResNet checkpoint found in FMR_CHECKPOINT_DIR or " in text
        if page == "pages/verify_pair.py":
            assert "the shared data folder (FMR_DATA_DIR/photos) is not there" in text


def test_uploads_are_never_written_to_disk(dlib_only, files, tmp_path):
    """An upload with a unique marker: after a verdict, no file the run wrote (temporary
    folder, the project, Streamlit's folder in the home directory) holds the marker."""
    import os
    import tempfile
    import time
    import uuid

    marker = f"fmr-upload-marker-{uuid.uuid4().hex}".encode()
    marked = tmp_path / "marked"
    marked.mkdir()
    # Bytes after the JPEG's end marker: ignored by decoders, kept by anything storing the file.
    (marked / "portrait.jpg").write_bytes(files["portrait.jpg"].read_bytes() + marker)
    (marked / "partner.jpg").write_bytes(files["partner.jpg"].read_bytes() + marker)
    started = time.time() - 1
    at = verify_upload({"portrait.jpg": marked / "portrait.jpg",
                        "partner.jpg": marked / "partner.jpg"}, "portrait.jpg")
    assert verdicts(at) == ["### :green[same person]"]

    holders = []
    for root in (Path(tempfile.gettempdir()), REPO_ROOT, Path.home() / ".streamlit"):
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d not in (".git", ".venv", "__pycache__")]
            for name in names:
                path = Path(folder, name)
                try:
                    if (path.is_relative_to(marked) or path.is_symlink()
                            or path.stat().st_mtime < started or path.stat().st_size > 64 << 20):
                        continue
                    if marker in path.read_bytes():
                        holders.append(path)
                except OSError:
                    continue
    assert holders == []


def test_the_page_waits_in_line_when_the_server_is_busy(dlib_only, files, monkeypatch):
    """With every face-work slot taken, the verify page waits, tells its place in the line
    (number 1: next), and gives its verdict once the slot is free."""
    import threading

    from fmr.app import jobs

    line = jobs.JobLine(1)
    monkeypatch.setattr(jobs, "_line", line)
    shown: list[int] = []
    real_message = jobs.busy_message

    def recording(position: int) -> str:
        shown.append(position)
        return real_message(position)

    monkeypatch.setattr(jobs, "busy_message", recording)
    at = AppTest.from_file(str(REPO_ROOT / "pages" / "verify_pair.py"),
                           default_timeout=APP_TIMEOUT)
    at.run()
    at.file_uploader(key="upload_a").set_value(
        ("portrait.jpg", files["portrait.jpg"].read_bytes(), "image/jpeg"))
    at.file_uploader(key="upload_b").set_value(
        ("partner.jpg", files["partner.jpg"].read_bytes(), "image/jpeg"))

    held, release = threading.Event(), threading.Event()

    def busy_visitor() -> None:  # another visitor's job holds the only slot
        with line.slot():
            held.set()
            release.wait()

    def watch() -> None:  # the other job ends once the page waits in line behind it
        while not line.waiting:
            release.wait(0.05)
        release.set()

    holder, watcher = threading.Thread(target=busy_visitor), threading.Thread(target=watch)
    holder.start()
    held.wait()
    watcher.start()
    at.run()
    holder.join()
    watcher.join()
    assert not at.exception, [e.value for e in at.exception]
    assert shown and shown[0] == 1
    assert verdicts(at) == ["### :green[same person]"]
    assert line.served == 2 and line.waiting == 0 and line.running == 0
    assert "your request is next" in real_message(1)
    assert "number 3 in the line (2 requests before it" in real_message(3)
