"""`fmr mask`: photos and aligned crops, bad inputs in the manifest, formats, seeds, workers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmr.batch import manifest_rows
from fmr.cli import main
from fmr.faces import align_face, detect_faces, load_image
from fmr.masks import MASK_STYLES

# Training-side LFW people (not in folds 6-10).
PHOTOS = (
    "Tiger_Woods/Tiger_Woods_0001.jpg",
    "Queen_Elizabeth_II/Queen_Elizabeth_II_0001.jpg",
    "Morgan_Freeman/Morgan_Freeman_0001.jpg",
)


@pytest.fixture(scope="module")
def inputs(lfw_dir: Path, photos_dir: Path, tmp_path_factory) -> Path:
    """Photos (JPEG, RGBA PNG, two people), aligned crops, and bad files, in one folder tree."""
    root = tmp_path_factory.mktemp("mask-in")
    (root / "photos").mkdir()
    for name in PHOTOS:
        shutil.copy(lfw_dir / "images" / name, root / "photos" / Path(name).name)
    shutil.copy(photos_dir / "edge" / "32bit.png", root / "photos" / "rgba.png")
    shutil.copy(photos_dir / "multi" / "kit_with_rose.jpg", root / "photos" / "two.jpg")
    (root / "crops").mkdir()
    for name in PHOTOS:
        image = load_image(lfw_dir / "images" / name)
        crop = align_face(image, detect_faces(image)[0].landmarks)
        Image.fromarray(crop).save(root / "crops" / Path(name).with_suffix(".png").name)
    (root / "bad").mkdir()
    (root / "bad" / "notes.jpg").write_text("not a photo\n")
    y, x = np.mgrid[0:160, 0:240]
    pattern = np.stack([x % 256, y % 256, (x * y) % 256], -1).astype(np.uint8)
    Image.fromarray(pattern).save(root / "bad" / "no_face.png")
    return root


def test_photos_every_face_masked_bad_inputs_reported(inputs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["mask", str(inputs / "photos"), str(inputs / "bad"), "--out", str(out),
                 "--mask-type", "random", "--seed", "3", "--quiet"])
    assert code == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "5 ok, 2 failed, 7 inputs" in err
    rows = {Path(r["input"]).name: r for r in manifest_rows(out)}
    assert rows["notes.jpg"]["status"] == "failed"
    reason = rows["notes.jpg"]["reason"]
    assert "notes.jpg" in reason and "not an image" in reason
    assert rows["no_face.png"]["status"] == "failed"
    assert "no_face.png: no face found" in rows["no_face.png"]["reason"]
    assert rows["two.jpg"]["faces"] == "2/2"
    for name in (*[Path(p).name for p in PHOTOS], "rgba.png", "two.jpg"):
        row = rows[name]
        assert row["status"] == "ok", row
        assert row["style"] in MASK_STYLES and row["colour"].startswith("#") and row["pattern"]
        assert 0.0 <= float(row["coverage"]) <= 1.0
        output = out / row["output"]
        source = inputs / "photos" / name
        # The input's format, size and (for JPEG) quality 95; the mask changed the image.
        with Image.open(output) as masked, Image.open(source) as original:
            assert masked.format == original.format and masked.size == original.size
            if masked.format == "JPEG":
                assert masked.quantization[0][0] <= 3  # quality 95 quantises by 2-3
            changed = np.abs(np.asarray(masked.convert("RGB"), np.int16)
                             - np.asarray(original.convert("RGB"), np.int16)).sum(-1) > 40
            assert changed.mean() > 0.02
    assert {r["output"].split("/")[0] for r in rows.values() if r["output"]} == {"photos"}


def test_all_styles_on_aligned_crops_with_options(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(["mask", str(inputs / "crops"), "--aligned", "--out", str(out), "--mask-type",
                 "all", "--color", "skin-medium", "--coverage", "0.2:0.4", "--quiet"])
    assert code == 0
    rows = manifest_rows(out)
    assert len(rows) == len(PHOTOS) * len(MASK_STYLES)
    assert all(r["status"] == "ok" and r["colour"] == "#c58c68" for r in rows)
    assert all(0.2 <= float(r["coverage"]) <= 0.4 for r in rows)
    for name in PHOTOS:
        stem = Path(name).stem
        for style in MASK_STYLES:
            path = out / "crops" / f"{stem}_{style}.png"
            assert path.exists()
            assert Image.open(path).format == "PNG"
        assert {r["style"] for r in rows if f"/{stem}_" in r["output"]} == set(MASK_STYLES)


def test_same_seed_same_bytes_for_any_number_of_workers(inputs: Path, tmp_path: Path) -> None:
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        main(["mask", str(inputs / "crops"), "--aligned", "--out", str(out), "--mask-type",
              "random", "--seed", "11", "--workers", str(workers), "--quiet"])
        runs[workers] = {p.name: p.read_bytes() for p in sorted((out / "crops").iterdir())}
    assert runs[1] == runs[2] and len(runs[1]) == len(PHOTOS)
    other = tmp_path / "other"
    main(["mask", str(inputs / "crops"), "--aligned", "--out", str(other), "--mask-type", "random",
          "--seed", "12", "--quiet"])
    assert {p.name: p.read_bytes() for p in (other / "crops").iterdir()} != runs[1]


def test_code_and_warp_renderer(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    main(["mask", str(inputs / "crops"), "--aligned", "--out", str(out), "--code",
          "cloth-navy-checks, KN95-#e54294, surgical-floral", "--renderer", "warp", "--quiet"])
    rows = manifest_rows(out)
    allowed = {("cloth", "#27355c", "checks"), ("KN95", "#e54294", None),
               ("surgical", None, "floral")}
    for row in rows:
        assert row["status"] == "ok" and row["renderer"] == "warp"
        assert any(row["style"] == s and (c is None or row["colour"] == c)
                   and (p is None or row["pattern"] == p) for s, c, p in allowed), row


def test_a_photo_given_as_an_aligned_crop_fails_with_a_reason(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    main(["mask", str(inputs / "photos" / "two.jpg"), "--aligned", "--out", str(out), "--quiet"])
    (row,) = manifest_rows(out)
    assert row["status"] == "failed" and "two.jpg" in row["reason"]
    assert "aligned face crop" in row["reason"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--color", "blurple"], "unknown colour 'blurple'"),
        (["--pattern", "paisley"], "unknown pattern 'paisley'"),
        (["--coverage", "0.8:0.1"], "bad coverage"),
        (["--code", "bandana-red"], "unknown mask style 'bandana'"),
        (["--mask-type", "bandana"], "choose one of surgical"),
    ],
)
def test_usage_errors_exit_2_before_any_image(inputs: Path, tmp_path: Path, flags, message) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fmr", "mask", str(inputs / "crops"), "--aligned", "--out",
         str(tmp_path / "out"), *flags], capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_help_lists_the_masktheface_flags() -> None:
    result = subprocess.run([sys.executable, "-m", "fmr", "mask", "--help"], capture_output=True,
                            text=True, check=True)
    for flag in ("--mask_type", "--color", "--pattern", "--pattern_weight", "--code", "--aligned",
                 "--seed", "--workers", "--coverage", "--renderer"):
        assert flag in result.stdout
