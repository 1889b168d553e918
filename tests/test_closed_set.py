"""Closed-set accuracy in training and in `fmr eval --closed-set`, on a tiny synthetic pack with
a held-out split (the layout `fmr prepare --preset original` writes): the class ids of the
held-out photos, the three conditions (KN95 from the warp renderer without dlib, as on the GPU
machine), the log, epochs.csv, the card and the centres in the export, and the refusals."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fmr.cli import main as fmr_main
from fmr.data import pack as packs
from fmr.errors import DataError
from fmr.modelfile import load_model_file, read_class_centres, save_model_file
from fmr.settings import REPO_ROOT

NAMES = ["celeba-1", "celeba-2", "lfw-Ann", "lfw-Bob"]
HELD_OUT = ["celeba-1", "lfw-Ann", "lfw-Bob"]  # celeba-2 has no held-out photo
BLOCKER = """
import importlib.abc, sys
class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("dlib", "facenet_pytorch", "face_recognition_models",
                                  "streamlit"):
            raise ImportError(f"{name} is not installed on the GPU machine")
        return None
sys.meta_path.insert(0, _Blocked())
"""


def _jpeg(image: np.ndarray) -> bytes:
    import cv2

    return cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


def synthetic_original_pack(out: Path, train_per_class: int = 6, held_per_class: int = 2) -> Path:
    """Four identities of 112x112 crops (a colour pattern per identity plus noise), a held-out
    split of three of them, and pairs over the held-out photos."""
    rng = np.random.default_rng(0)
    bases = rng.integers(40, 215, size=(len(NAMES), 8, 8, 3))
    out.mkdir(parents=True)

    def sample(c: int) -> np.ndarray:
        image = np.kron(bases[c], np.ones((14, 14, 1))) + rng.normal(0, 12, (112, 112, 3))
        return np.clip(image, 0, 255).astype(np.uint8)

    train = [(c, _jpeg(sample(c))) for c in range(len(NAMES)) for _ in range(train_per_class)]
    packs.write_pack_images(out, "train", [b for _, b in train], [c for c, _ in train])
    val = [(v, _jpeg(sample(NAMES.index(name))))
           for v, name in enumerate(HELD_OUT) for _ in range(held_per_class)]
    packs.write_pack_images(out, "val", [b for _, b in val], [v for v, _ in val])
    same = [(i, j, True) for i in range(len(val)) for j in range(i + 1, len(val))
            if val[i][0] == val[j][0]]
    different = [(i, j, False) for i in range(len(val)) for j in range(i + 1, len(val))
                 if val[i][0] != val[j][0]][: len(same)]
    packs.write_pairs(out / packs.VAL_PAIRS_FILE, same + different)
    meta = {"format": packs.PACK_FORMAT, "version": packs.PACK_VERSION, "preset": "original",
            "seed": 0, "classes": NAMES, "validation_identities": HELD_OUT,
            "counts": {"training_images": len(train), "validation_images": len(val)}}
    (out / packs.META_FILE).write_text(json.dumps(meta))
    return out


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    return synthetic_original_pack(tmp_path_factory.mktemp("closed") / "pack")


@pytest.fixture(scope="module")
def run(pack, tmp_path_factory) -> Path:
    """Two tiny epochs of train.py where dlib & co. cannot be imported (the GPU machine)."""
    out = tmp_path_factory.mktemp("closed") / "run"
    code = (BLOCKER + "import runpy; sys.argv = ['train.py', *sys.argv[1:]]; "
            "runpy.run_path('train.py', run_name='__main__')")
    args = ["--data", str(pack), "--out", str(out), "--device", "cpu", "--backbone",
            "iresnet18_half", "--epochs", "2", "--batch-size", "4", "--warmup-epochs", "1",
            "--lr", "0.05", "--log-every", "1", "--workers", "1", "--storage", "fp32",
            "--mask-prob", "0.5", "--quiet"]
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out


def test_held_out_photos_map_to_their_classes(pack):
    validation = packs.read_validation(pack)
    held_out = packs.held_out_classes(packs.read_meta(pack), validation.labels)
    assert held_out.names == NAMES
    assert held_out.class_ids.tolist() == [0, 0, 2, 2, 3, 3]
    assert held_out.identities == 3
    assert packs.held_out_classes({"preset": "shared"}, validation.labels) is None
    with pytest.raises(DataError, match="not classes"):
        packs.held_out_classes({"preset": "original", "classes": NAMES[:2],
                                "validation_identities": HELD_OUT}, validation.labels)


def test_training_reports_closed_set_accuracy_and_exports_the_centres(run, pack):
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    vals = [e for e in events if e["kind"] == "val"]
    assert [v["epoch"] for v in vals] == [1, 2]
    for v in vals:
        closed = v["closed_set"]
        assert (closed["images"], closed["identities"], closed["classes"]) == (6, 3, 4)
        assert "skipped" not in closed  # the warp renderer runs without dlib
        for condition in ("unmasked", "surgical", "kn95_warp"):
            assert 0.0 <= closed[condition]["top1"] <= closed[condition]["top5"] <= 1.0
            assert closed[condition]["top5"] == 1.0  # four classes: always among the best five
    with open(run / "epochs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["val_top1_kn95_warp"]) for r in rows] == [
        v["closed_set"]["kn95_warp"]["top1"] for v in vals]
    assert all(r["val_top1_unmasked"] and r["val_top5_surgical"] for r in rows)
    # the curve of the model card: validation TAR against training hours
    assert [float(r["val_unmasked_tar"]) for r in rows] == [
        v["unmasked"]["tar_at_far_1e-3"] for v in vals]
    assert [float(r["hours"]) for r in rows] == [v["hours"] for v in vals]
    assert list((run / "tensorboard").iterdir())

    card = json.loads((run / "best.json").read_text())
    selected = card["metrics"]["selected"]["epoch"]
    chosen = next(v for v in vals if v["epoch"] == selected)
    assert card["metrics"]["closed_set"]["unmasked"] == chosen["closed_set"]["unmasked"]
    assert "held-out photos" in card["metrics"]["closed_set"]["measured_on"]
    assert card["training"]["closed_set"]["identities"] == NAMES
    assert "only for closed-set accuracy" in card["notes"]
    centres, names = read_class_centres(run / "best.safetensors")
    assert tuple(centres.shape) == (4, 512) and names == NAMES


def test_fmr_eval_closed_set_matches_the_run_and_refuses_mismatches(run, pack, tmp_path,
                                                                   capsys):
    best = run / "best.safetensors"
    capsys.readouterr()
    assert fmr_main(["eval", "--closed-set", str(pack), "--checkpoint", str(best),
                     "--out", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    assert "6 held-out photos of 3 identities, 4 class centres, mask seed 1234" in printed
    for condition in ("unmasked", "surgical", "kn95_warp"):
        assert condition in printed
    result = json.loads((tmp_path / "eval" / "closed_set.json").read_text())
    card = json.loads((run / "best.json").read_text())["metrics"]["closed_set"]
    for condition in ("unmasked", "surgical", "kn95_warp"):
        # the same photos, masks and centres; CPU fp32 here as in the run
        assert result[condition]["top1"] == pytest.approx(card[condition]["top1"], abs=1 / 6)

    # Another pack's identities: refused.
    other = tmp_path / "other"
    shutil.copytree(pack, other)
    meta = json.loads((other / "meta.json").read_text())
    meta["classes"] = ["celeba-9", *NAMES[1:]]
    meta["validation_identities"] = ["celeba-9", *HELD_OUT[1:]]
    (other / "meta.json").write_text(json.dumps(meta))
    assert fmr_main(["eval", "--closed-set", str(other), "--checkpoint", str(best)]) == 2
    err = capsys.readouterr().err
    assert "differ" in err and "celeba-9" in err and "celeba-1" in err

    # A checkpoint without centres (as every shipped one): refused.
    loaded = load_model_file(best)
    plain = save_model_file(tmp_path / "plain", loaded.model, loaded.card)
    assert fmr_main(["eval", "--closed-set", str(pack), "--checkpoint", str(plain)]) == 2
    assert "carries no class centres" in capsys.readouterr().err

    # A pack without a held-out split, and no checkpoint at all: refused.
    meta["preset"] = "shared"
    (other / "meta.json").write_text(json.dumps(meta))
    assert fmr_main(["eval", "--closed-set", str(other), "--checkpoint", str(best)]) == 2
    assert "no held-out split" in capsys.readouterr().err
    assert fmr_main(["eval", "--closed-set", str(pack)]) == 2
    assert "needs one --checkpoint" in capsys.readouterr().err
