"""`fmr align` and the batch conventions every batch command shares."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmr.batch import collect_inputs, manifest_rows
from fmr.cli import main


def _write_bad_inputs(folder: Path) -> dict[str, str]:
    """Bad files of every kind, and the word each one's reason must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.jpg").write_text("not a photo\n")
    (folder / "empty.jpg").write_bytes(b"")
    buffer = io.BytesIO()
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(buffer, "JPEG")
    (folder / "cut.jpg").write_bytes(buffer.getvalue()[:300])
    # A PNG whose header claims 100 megapixels (a decompression bomb): refused before decoding.
    bomb = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bomb, "PNG")
    header = bytearray(bomb.getvalue())
    header[16:24] = (10_000).to_bytes(4, "big") * 2  # IHDR width and height
    header[29:33] = zlib.crc32(bytes(header[12:29])).to_bytes(4, "big")  # the chunk's CRC
    (folder / "bomb.png").write_bytes(bytes(header))
    y, x = np.mgrid[0:200, 0:300]
    landscape = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)
    Image.fromarray(landscape).save(folder / "landscape.png")
    return {
        "notes.jpg": "not an image",
        "empty.jpg": "empty",
        "cut.jpg": "truncated",
        "landscape.png": "no face found",
        "bomb.png": "megapixels",
    }


def test_bad_inputs_are_reported_in_the_manifest_and_the_batch_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    expected = _write_bad_inputs(tmp_path / "in")
    code = main(["align", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "0 ok, 5 failed, 5 inputs" in captured.err
    rows = {Path(r["input"]).name: r for r in manifest_rows(tmp_path / "out")}
    assert set(rows) == set(expected)
    for name, word in expected.items():
        assert rows[name]["status"] == "failed"
        assert name in rows[name]["reason"] and word in rows[name]["reason"], rows[name]
        assert rows[name]["output"] == ""


def test_usage_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    missing = subprocess.run(
        [sys.executable, "-m", "fmr", "align", str(tmp_path / "nope"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0
    assert "no such file or folder" in missing.stderr and "Traceback" not in missing.stderr
    bad_flag = subprocess.run(
        [sys.executable, "-m", "fmr", "align", str(tmp_path), "--multi-face", "biggest"],
        capture_output=True,
        text=True,
    )
    assert bad_flag.returncode == 2 and "invalid choice" in bad_flag.stderr


def test_help_explains_the_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fmr", "--help"], capture_output=True, text=True, check=True
    )
    assert "align" in result.stdout and "manifest.csv" in result.stdout
    align_help = subprocess.run(
        [sys.executable, "-m", "fmr", "align", "--help"], capture_output=True, text=True
    )
    assert align_help.returncode == 0 and "--multi-face" in align_help.stdout


def test_outputs_mirror_the_input_tree_and_never_collide(tmp_path: Path) -> None:
    for folder in ("a/deep", "b"):
        (tmp_path / folder).mkdir(parents=True)
    for path in ("a/deep/x.jpg", "b/x.jpg", "a/y.png", "b/readme.txt"):
        (tmp_path / path).write_bytes(b"x")
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "x.jpg").write_bytes(b"x")
    items = collect_inputs(
        [tmp_path / "a", tmp_path / "b", tmp_path / "b" / "x.jpg", other / "x.jpg"]
    )
    outputs = [item.relative_output.as_posix() for item in items]
    # Folder contents mirror under the folder's name; a file given directly lands at the top;
    # the same file twice is one input; a name taken twice gets a suffix; folders skip .txt.
    assert outputs == ["a/deep/x.jpg", "a/y.png", "b/x.jpg", "x.jpg"]
    assert items[-1].path == (other / "x.jpg").resolve()
    again = collect_inputs([tmp_path / "a", other / "x.jpg", tmp_path / "b" / "x.jpg"])
    assert [i.relative_output.as_posix() for i in again][-2:] == ["x.jpg", "x-2.jpg"]


def test_align_real_photos_with_workers(photos_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "in"
    shutil.copytree(photos_dir / "obama", source / "obama")
    shutil.copytree(photos_dir / "multi", source / "multi")
    _write_bad_inputs(source / "bad")
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    assert main(["align", str(source), "--out", str(out1), "--quiet"]) == 0
    assert main(["align", str(source), "--out", str(out2), "--quiet", "--workers", "2"]) == 0
    rows1, rows2 = manifest_rows(out1), manifest_rows(out2)
    assert [r["status"] for r in rows1] == [r["status"] for r in rows2]
    ok = [r for r in rows1 if r["status"] == "ok"]
    assert len(ok) == 5  # 3 obama + 2 multi (largest face); the 5 bad files fail
    for row in ok:
        crop1 = np.asarray(Image.open(out1 / row["output"]))
        crop2 = np.asarray(Image.open(out2 / row["output"]))
        assert crop1.shape == (112, 112, 3)
        np.testing.assert_array_equal(crop1, crop2)  # same bytes whatever the worker count
    assert {r["output"] for r in ok} >= {"in/obama/obama.jpg", "in/multi/obama_and_biden.jpg"}

    strict = tmp_path / "strict"
    assert (
        main(
            [
                "align",
                str(source / "multi"),
                "--out",
                str(strict),
                "--quiet",
                "--multi-face",
                "require-one",
            ]
        )
        == 0
    )
    for row in manifest_rows(strict):
        assert row["status"] == "failed" and "faces found but exactly one" in row["reason"]


def test_require_one_ignores_unlikely_background_detections(photos_dir: Path, tmp_path: Path):
    """obama.jpg has one face and one low-score detection in the background: under the one rule
    for secondary faces (fmr.faces.policy.likely_faces) it is a one-face photo."""
    out = tmp_path / "out"
    assert main(["align", str(photos_dir / "obama" / "obama.jpg"), "--out", str(out), "--quiet",
                 "--multi-face", "require-one"]) == 0
    (row,) = manifest_rows(out)
    assert row["status"] == "ok", row["reason"]
    assert float(row["score"]) > 0.99
    assert Image.open(out / row["output"]).size == (112, 112)
