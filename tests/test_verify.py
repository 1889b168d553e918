"""fmr.verify and the `fmr verify` / `fmr embed` commands on real photos."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fmr.cli import main
from fmr.settings import REPO_ROOT


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """A random-init iresnet18 saved as an fmr checkpoint (no calibration)."""
    import torch

    from fmr.modelfile import ModelCard, save_model_file
    from fmr.models import create_model

    torch.manual_seed(0)
    model = create_model("iresnet18").eval()
    card = ModelCard(name="iresnet18-random", architecture="iresnet18")
    return save_model_file(tmp_path_factory.mktemp("ckpt") / "random", model, card, "fp16")


@pytest.fixture(scope="session")
def lfw_faces(lfw_dir) -> dict[str, list[Path]]:
    """Small real photos (250x250) of two training-side LFW people (not in folds 6-10)."""
    people = {}
    for name in ("Colin_Powell", "Tony_Blair"):
        people[name] = [lfw_dir / "images" / name / f"{name}_{i:04d}.jpg" for i in (1, 2, 3)]
    assert all(p.is_file() for paths in people.values() for p in paths)
    return people


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ----------------------------------------------------------------------------- fmr verify, dlib
def test_verify_json_same_person_with_dlib(photos_dir):
    """A real `fmr verify --json` process: stdout holds exactly one JSON object."""
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "fmr", "verify", str(photos_dir / "obama" / "obama.jpg"),
         str(photos_dir / "obama" / "obama2.jpg"), "--backbone", "dlib", "--json"],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # fails if anything else is on stdout
    assert set(result) >= {"a", "b", "results"}
    (dlib,) = result["results"]
    assert dlib["backbone"] == "dlib"
    assert dlib["verdict"] == "same"
    assert dlib["similarity"] >= dlib["threshold"]
    assert dlib["far_at_score"] <= 1e-3
    assert 0 <= dlib["angle_deg"] < 60
    assert result["a"]["face"]["box"][2] > result["a"]["face"]["box"][0]


def test_verify_different_people_with_dlib(capsys, photos_dir):
    from fmr.commands.verify import format_result

    code, out, err = run_cli(
        capsys, "verify", str(photos_dir / "obama" / "obama.jpg"),
        str(photos_dir / "biden" / "biden.jpg"), "--backbone", "dlib", "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    (dlib,) = result["results"]
    assert dlib["verdict"] == "different"
    assert dlib["similarity"] < dlib["band"][0]
    assert "DIFFERENT PEOPLE" in format_result(result)


def test_verify_human_output_matches_the_json_verdict(capsys, lfw_faces):
    first, second = (str(p) for p in lfw_faces["Tony_Blair"][:2])
    code, out, _ = run_cli(capsys, "verify", first, second, "--backbone", "dlib", "--json")
    assert code == 0
    (dlib,) = json.loads(out)["results"]
    code, text, _ = run_cli(capsys, "verify", first, second, "--backbone", "dlib")
    assert code == 0
    words = {"same": "SAME PERSON", "different": "DIFFERENT PEOPLE", "inconclusive": "INCONCLUSIVE"}
    assert f"dlib (dlib-resnet-v1): {words[dlib['verdict']]}" in text
    assert f"similarity {dlib['similarity']:.3f}, angle {dlib['angle_deg']:.1f} degrees" in text
    assert "how sure: " + dlib["explanation"] in text
    assert f"calibration: {dlib['calibration']}, because {dlib['calibration_reason']}" in text
    if json.loads(out)["a"]["mask_probability"] is not None:
        assert "wears a mask: " in text


def test_verify_all_reports_missing_families(capsys, lfw_faces, tmp_path, monkeypatch):
    monkeypatch.setenv("FMR_CHECKPOINT_DIR", str(tmp_path))  # no trained checkpoints here
    monkeypatch.setattr("fmr.verify.lookup.runs_dir", lambda: tmp_path / "runs")
    shutil.copy(REPO_ROOT / "checkpoints" / "dlib_reference.json", tmp_path)
    first, second = lfw_faces["Colin_Powell"][:2]
    code, out, err = run_cli(capsys, "verify", str(first), str(second), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert [r["backbone"] for r in result["results"]] == ["dlib"]
    missing = {m["backbone"]: m["reason"] for m in result["missing"]}
    assert set(missing) == {"iresnet", "ressanet", "dlib-mask"}
    assert "python train.py --backbone iresnet18" in missing["iresnet"]
    assert "python train.py mask-finetune" in missing["dlib-mask"]


def test_verify_require_one_ignores_an_unlikely_background_detection(capsys, photos_dir):
    """obama.jpg shows one face plus a low-score MTCNN detection in the background; the one rule
    for secondary faces (likely_faces) applies in verify too, so require-one gives a verdict."""
    code, out, err = run_cli(
        capsys, "verify", str(photos_dir / "obama" / "obama.jpg"),
        str(photos_dir / "obama" / "obama2.jpg"), "--multi-face", "require-one",
        "--backbone", "dlib", "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["a"]["faces_found"] == 1 and result["a"]["unlikely_ignored"] == 1
    assert result["results"][0]["verdict"] == "same"


# ----------------------------------------------------------------------------- bad inputs
def _one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0]


def test_verify_missing_file(capsys, lfw_faces):
    code, out, err = run_cli(
        capsys, "verify", "/no/such/photo.jpg", str(lfw_faces["Tony_Blair"][0]),
        "--backbone", "dlib", "--json",
    )  # fmt: skip
    _one_line_error(code, out, err, "/no/such/photo.jpg", "no such file")


def test_verify_not_an_image(capsys, lfw_faces, tmp_path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not a photo")
    code, out, err = run_cli(
        capsys, "verify", str(fake), str(lfw_faces["Tony_Blair"][0]), "--backbone", "dlib", "--json"
    )
    _one_line_error(code, out, err, "notes.jpg", "not an image")


def test_verify_no_face(capsys, lfw_faces, tmp_path):
    import cv2

    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((300, 400, 3), 180, np.uint8))
    code, out, err = run_cli(
        capsys,
        "verify",
        str(blank),
        str(lfw_faces["Tony_Blair"][0]),
        "--backbone",
        "dlib",
        "--json",
    )
    _one_line_error(code, out, err, "wall.png", "no face")


def test_verify_wrong_checkpoint(capsys, lfw_faces, tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    first, second = lfw_faces["Tony_Blair"][:2]
    code, out, err = run_cli(
        capsys, "verify", str(first), str(second), "--checkpoint", str(bad), "--json"
    )
    _one_line_error(code, out, err, "model.safetensors")


def test_verify_bad_far(capsys, lfw_faces):
    first, second = lfw_faces["Tony_Blair"][:2]
    code, out, err = run_cli(
        capsys, "verify", str(first), str(second), "--threshold-far", "5", "--backbone", "dlib"
    )
    _one_line_error(code, out, err, "--threshold-far")


def test_verify_masked_probe(capsys, lfw_faces):
    masks = pytest.importorskip("fmr.masks", reason="synthetic masks not built yet")
    style = masks.MASK_STYLES[0]
    first, second = lfw_faces["Colin_Powell"][:2]
    code, out, err = run_cli(
        capsys, "verify", str(first), str(second), "--backbone", "dlib", "--mask-b", style, "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["a"]["mask"] is None
    assert result["b"]["mask"]["style"] == style and result["b"]["mask"]["renderer"] == "fmr"
    assert "redetected" in result["b"]["mask"]
    code, out, err = run_cli(
        capsys, "verify", str(first), str(second), "--backbone", "dlib", "--json"
    )
    unmasked = json.loads(out)["results"][0]
    # The mask hides half the face: the same person looks less alike.
    assert result["results"][0]["similarity"] < unmasked["similarity"]


# ----------------------------------------------------------------------------- Python API
def test_torch_embedder_is_flip_averaged_and_unit_norm(random_checkpoint, lfw_faces):
    from fmr.faces import align_face, find_face, load_image
    from fmr.verify import compare, load_backbone

    embedder = load_backbone(str(random_checkpoint))
    assert load_backbone(str(random_checkpoint)) is embedder  # cached per process
    assert embedder.family == "iresnet" and embedder.embedding_size == 512
    image = load_image(lfw_faces["Colin_Powell"][0])
    face = find_face(image)
    crop = align_face(image, face.landmarks)
    vectors = embedder.embed_aligned(np.stack([crop, crop[:, ::-1]]))
    assert vectors.shape == (2, 512) and vectors.dtype == np.float32
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    # The mean of a crop's and its mirror's embedding is the same for the mirrored crop.
    assert vectors[0] == pytest.approx(vectors[1], abs=1e-5)
    assert embedder.embed_face(image, face) == pytest.approx(vectors[0], abs=1e-5)
    comparison = compare(vectors[0], vectors[1], embedder)
    assert comparison.verdict == "inconclusive" and comparison.threshold is None
    assert "--calibrate-only" in comparison.note and str(embedder.path) in comparison.note


def test_verify_pair_api_with_arrays_and_a_calibrated_checkpoint(
    random_checkpoint, tmp_path, lfw_faces
):
    from fmr.faces import load_image
    from fmr.metrics.calibration import calibrate, decide
    from fmr.verify import load_backbone, verify_pair
    from fmr.verify.embedder import save_calibration, save_card_fields

    copy = tmp_path / "calibrated.safetensors"
    shutil.copy(random_checkpoint, copy)
    shutil.copy(random_checkpoint.with_suffix(".json"), copy.with_suffix(".json"))
    rng = np.random.default_rng(0)
    calibration = calibrate(rng.normal(0.9, 0.03, 500), rng.normal(0.5, 0.1, 20_000))
    card_file = save_calibration(copy, calibration)
    assert json.loads(card_file.read_text())["calibration"]["threshold"] == calibration["threshold"]
    embedder = load_backbone(str(copy))
    assert embedder.calibration["threshold"] == calibration["threshold"]

    a, b = (load_image(p) for p in lfw_faces["Tony_Blair"][:2])
    result = verify_pair(a, b, backbones=[embedder])
    json.dumps(result, allow_nan=False)
    assert result["a"]["input"] == "image A" and result["b"]["mask"] is None
    (r,) = result["results"]
    assert r["checkpoint"] == str(copy.resolve())
    assert r["verdict"] == decide(calibration, r["similarity"])[0]
    assert r["threshold"] == calibration["threshold"]
    assert r["calibration"] == "unmasked"

    # With a masked calibration in the card, a pair with a synthetic mask is decided by it.
    masked_calibration = calibrate(rng.normal(0.7, 0.05, 500), rng.normal(0.45, 0.1, 20_000))
    save_card_fields(copy, calibration_masked=masked_calibration)
    embedder = load_backbone(str(copy))
    result = verify_pair(a, b, backbones=[embedder], mask_b="surgical")
    (r,) = result["results"]
    assert r["calibration"] == "masked" and result["b"]["mask"]["style"] == "surgical"
    assert r["calibration_reason"] == "a synthetic mask was drawn on photo B"
    assert r["threshold"] == masked_calibration["threshold"] != calibration["threshold"]
    assert r["verdict"] == decide(masked_calibration, r["similarity"])[0]
    plain = verify_pair(a, b, backbones=[embedder])
    assert plain["results"][0]["calibration"] == "unmasked"
    assert plain["results"][0]["threshold"] == calibration["threshold"]
    if plain["a"]["mask_probability"] is not None:  # the mask detector ships
        assert result["b"]["mask_probability"] >= 0.5
        assert max(plain["a"]["mask_probability"], plain["b"]["mask_probability"]) < 0.5
        assert plain["results"][0]["calibration_reason"].startswith("neither photo wears a mask")


def test_insightface_backbone_pth_loads_with_its_input_convention(random_checkpoint, tmp_path):
    import torch

    from fmr.verify import load_backbone

    ours = load_backbone(str(random_checkpoint))
    pth = tmp_path / "backbone.pth"
    torch.save(ours.model.state_dict(), pth)  # insightface's arcface_torch key names
    theirs = load_backbone(str(pth))
    assert theirs.family == "iresnet" and theirs.embedding_size == 512
    assert "(x/255 - 0.5) / 0.5" in theirs.card.notes
    crops = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    assert theirs.embed_aligned(crops) == pytest.approx(ours.embed_aligned(crops), abs=1e-5)


def test_checkpoint_lookup_prefers_shipped_then_newest_run(
    random_checkpoint, tmp_path, monkeypatch
):
    from fmr.errors import CheckpointError
    from fmr.verify import available_backbones, find_checkpoint, missing_reason

    shipped, runs = tmp_path / "checkpoints", tmp_path / "runs"
    monkeypatch.setenv("FMR_CHECKPOINT_DIR", str(shipped))
    monkeypatch.setattr("fmr.verify.lookup.runs_dir", lambda: runs)

    def place(path: Path, architecture: str, mtime: float) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(random_checkpoint, path)
        card = json.loads(random_checkpoint.with_suffix(".json").read_text())
        path.with_suffix(".json").write_text(json.dumps({**card, "architecture": architecture}))
        os.utime(path, (mtime, mtime))
        return path

    with pytest.raises(
        CheckpointError, match="train one with `python train.py --backbone ressanet18`"
    ):
        find_checkpoint("ressanet")
    old = place(runs / "ressanet18-a" / "best.safetensors", "ressanet18", 1_000)
    new = place(runs / "ressanet34-b" / "best.safetensors", "ressanet34", 2_000)
    place(runs / "iresnet50-c" / "best.safetensors", "iresnet50", 3_000)
    assert find_checkpoint("ressanet") == new != old
    assert missing_reason("ressanet") is None
    ship = place(shipped / "ressanet18-shipped.safetensors", "ressanet18", 500)
    assert find_checkpoint("ressanet") == ship  # shipped beats newer trained runs
    found = available_backbones()
    assert found["ressanet"] == str(ship) and found["iresnet"].endswith("best.safetensors")
    assert found["dlib"].endswith("dlib_face_recognition_resnet_model_v1.dat")


# ----------------------------------------------------------------------------- fmr embed
def test_embed_folder_and_files_with_failures(capsys, random_checkpoint, lfw_faces, tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jpg").symlink_to(lfw_faces["Colin_Powell"][0])
    (folder / "sub" / "b.jpg").symlink_to(lfw_faces["Colin_Powell"][1])
    (folder / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    single = lfw_faces["Tony_Blair"][2]
    out = tmp_path / "emb.npz"
    code, _, err = run_cli(
        capsys, "embed", str(folder), str(single), "--checkpoint", str(random_checkpoint),
        "--out", str(out), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "1 failed" in err
    data = np.load(out)
    assert data["paths"].tolist() == [
        os.path.join(str(folder), "a.jpg"),
        os.path.join(str(folder), "sub", "b.jpg"),
        os.path.join(str(folder), "sub", "broken.jpg"),
        str(single),
    ]
    assert data["ok"].tolist() == [True, True, False, True]
    assert data["embeddings"].shape == (4, 512) and data["embeddings"].dtype == np.float32
    norms = np.linalg.norm(data["embeddings"], axis=1)
    assert norms[[0, 1, 3]] == pytest.approx(1.0, abs=1e-5) and norms[2] == 0
    assert "broken.jpg" in data["reason"][2] and data["reason"][0] == ""
    probability = data["mask_probability"]
    assert probability.shape == (4,) and probability.dtype == np.float32
    assert np.isnan(probability[2])  # the failed image
    from fmr.verify import load_mask_detector

    if load_mask_detector() is not None:
        assert (probability[[0, 1, 3]] < 0.5).all(), probability
    from fmr.batch import manifest_rows

    # manifest_rows reads <folder>/manifest.csv; ours is named after the .npz
    (tmp_path / "manifest.csv").write_bytes((tmp_path / "emb.manifest.csv").read_bytes())
    rows = manifest_rows(tmp_path)
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "ok"]
    assert rows[2]["reason"] == data["reason"][2] and rows[3]["row"] == "3"


def test_embed_aligned_crops(capsys, random_checkpoint, lfw_faces, tmp_path):
    import cv2

    from fmr.faces import align_face, find_face, load_image
    from fmr.verify import load_backbone

    image = load_image(lfw_faces["Tony_Blair"][1])
    crop = align_face(image, find_face(image).landmarks)
    cv2.imwrite(str(tmp_path / "crop.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    out = tmp_path / "aligned.npz"
    code, _, err = run_cli(
        capsys, "embed", str(tmp_path / "crop.png"), "--aligned", "--checkpoint",
        str(random_checkpoint), "--out", str(out), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    data = np.load(out)
    expected = load_backbone(str(random_checkpoint)).embed_aligned(crop[None])[0]
    assert data["embeddings"][0] == pytest.approx(expected, abs=1e-5)
    from fmr.verify import load_mask_detector

    detector = load_mask_detector()
    if detector is not None:  # the detector runs on the crop as given
        assert data["mask_probability"][0] == pytest.approx(
            detector.probabilities(crop[None])[0], abs=1e-3)
    # dlib aligns faces itself and refuses aligned crops, as a usage error.
    code, _, err = run_cli(
        capsys, "embed", str(tmp_path / "crop.png"), "--aligned", "--backbone", "dlib",
        "--out", str(tmp_path / "x.npz"),
    )  # fmt: skip
    assert code == 2 and "original photos" in err
