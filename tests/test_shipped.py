"""The checkpoints that ship in checkpoints/: one IResNet and one ResSaNet, small, calibrated for
unmasked and masked pairs, free of training identities and server paths, found by default and
telling people apart on real photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fmr.settings import REPO_ROOT

SHIPPED = REPO_ROOT / "checkpoints"


def _shipped(family: str) -> list[Path]:
    return sorted(SHIPPED.glob(f"{family}*.safetensors"))


@pytest.mark.parametrize("family", ["iresnet", "ressanet"])
def test_exactly_one_small_calibrated_checkpoint_per_family(family):
    files = _shipped(family)
    assert len(files) == 1, f"checkpoints/ should hold one {family} checkpoint: {files}"
    weights = files[0]
    assert weights.stat().st_size <= 25 * 2**20
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["architecture"].startswith(family) and card["storage"] == "int8"
    for key in ("calibration", "calibration_masked"):
        calibration = card[key]
        assert calibration["target_far"] == 1e-3 and -1 < calibration["threshold"] < 1
        assert "validation" in calibration["measured_on"]
    assert card["training"]["hours_total"] > 1.0  # CPU hours of training, said in the card
    assert "closed_set" not in card["training"]  # no class centres (training identities)
    text = weights.with_suffix(".json").read_text()
    assert '"/work' not in text and '"/home' not in text and '"/tmp' not in text


PEOPLE = {
    "obama": ["obama/obama.jpg", "obama/obama2.jpg", "obama/obama3.jpg"],
    "biden": ["biden/biden.jpg", "biden/biden2.jpg"],
    "kit_harington": ["kit_harington/john1.jpeg", "kit_harington/john2.jpeg",
                      "kit_harington/john3.jpg"],
    "rose_leslie": ["rose_leslie/img1.jpg", "rose_leslie/img2.jpg"],
    "alex_lacamoire": ["alex_lacamoire/img1.jpg", "alex_lacamoire/img2.jpg"],
}


def test_the_shipped_checkpoints_are_the_default_and_tell_people_apart(photos_dir, monkeypatch):
    """`--backbone iresnet|ressanet` finds the shipped files; on the sample photos (5 people, 12
    photos) same-person pairs score clearly higher than different-person pairs on average, and
    `verify_pair` reports the shipped checkpoint with its unmasked calibration."""
    from fmr.verify import verify_pair
    from fmr.verify.embedder import load_backbone
    from fmr.verify.lookup import find_checkpoint
    from fmr.verify.pipeline import prepare_face

    monkeypatch.delenv("FMR_CHECKPOINT_DIR", raising=False)
    faces, labels = [], []
    for person, files in PEOPLE.items():
        for file in files:
            prepared = prepare_face(photos_dir / file)
            faces.append((prepared.image, prepared.face))
            labels.append(person)
    labels = np.array(labels)
    same = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same), k=1)
    for family in ("iresnet", "ressanet"):
        assert find_checkpoint(family).resolve() == _shipped(family)[0].resolve()
        vectors = load_backbone(family).embed_faces(faces)
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        scores = vectors @ vectors.T
        genuine, impostor = scores[same & upper], scores[~same & upper]
        assert len(genuine) == 3 + 1 + 3 + 1 + 1 and len(impostor) == 66 - 9
        assert genuine.mean() > impostor.mean() + 0.3, (family, genuine.mean(), impostor.mean())
        result = verify_pair(photos_dir / "obama/obama.jpg", photos_dir / "obama/obama2.jpg",
                             family)["results"][0]
        assert Path(result["checkpoint"]).resolve() == _shipped(family)[0].resolve()
        assert result["calibration"] == "unmasked" and np.isfinite(result["similarity"])
