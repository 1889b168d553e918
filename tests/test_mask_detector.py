"""The mask detector (fmr.verify.mask_detector): a real photo with a synthetic mask scores high
and the plain photo low, on photos and on aligned crops; its model file round-trips; the
verdict's calibration follows it and says why."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fmr.errors import CheckpointError
from fmr.verify.mask_detector import (
    MASK_PROBABILITY_THRESHOLD,
    MaskDetector,
    load_mask_detector,
    mask_decision,
)


@pytest.fixture(scope="module")
def detector() -> MaskDetector:
    found = load_mask_detector()
    if found is None:
        pytest.skip("checkpoints/mask_detector.safetensors is not there")
    return found


def test_the_shipped_detector_is_small_and_cached(detector):
    assert detector.path.stat().st_size < 1 << 20
    assert load_mask_detector() is detector
    assert detector.card["architecture"] == "mask_cnn"
    assert "masks_real" not in detector.card["training"]["data"]


@pytest.mark.parametrize(("person", "style", "renderer"), [
    ("obama/obama.jpg", "surgical", "fmr"),
    ("biden/biden.jpg", "KN95", "warp"),
    ("kit_harington/john1.jpeg", "cloth", "fmr"),
])
def test_a_synthetic_mask_scores_high_and_the_plain_photo_low(detector, photos_dir, person,
                                                              style, renderer):
    from fmr.verify.pipeline import prepare_face

    plain = prepare_face(photos_dir / person)
    masked = prepare_face(photos_dir / person, mask=style, mask_renderer=renderer, seed=3)
    assert plain.mask_probability < 0.2, plain.mask_probability
    assert masked.mask_probability > 0.8, masked.mask_probability
    assert plain.to_dict()["mask_probability"] == round(plain.mask_probability, 4)


def test_aligned_crops_with_and_without_masks(detector, lfw_dir):
    from fmr.faces import align_face, find_face, load_image
    from fmr.masks import MASK_STYLES, mask_aligned

    crops = []
    for name in ("Colin_Powell", "Tony_Blair"):
        image = load_image(lfw_dir / "images" / name / f"{name}_0001.jpg")
        crops.append(align_face(image, find_face(image).landmarks))
    masked = [mask_aligned(crop, style, seed, renderer=renderer)[0]
              for seed, crop in enumerate(crops)
              for style in MASK_STYLES for renderer in ("fmr", "warp")]
    p_plain = detector.probabilities(np.stack(crops))
    p_masked = detector.probabilities(np.stack(masked))
    assert p_plain.dtype == np.float32 and p_plain.shape == (2,)
    assert (p_plain < MASK_PROBABILITY_THRESHOLD).all(), p_plain
    assert (p_masked >= MASK_PROBABILITY_THRESHOLD).all(), p_masked
    # Another square size is resized to the template's 112x112.
    import cv2

    big = cv2.resize(masked[0], (224, 224), interpolation=cv2.INTER_LINEAR)
    assert detector.probabilities(big[None])[0] == pytest.approx(p_masked[0], abs=0.1)


def test_model_file_round_trip_and_wrong_file(tmp_path):
    import torch

    from fmr.models.mask_classifier import (
        MaskClassifier,
        load_mask_classifier,
        mask_input,
        save_mask_classifier,
    )

    torch.manual_seed(0)
    model = MaskClassifier(width=8).eval()
    card = {"name": "test", "training": {"data": "none"}}
    path = save_mask_classifier(tmp_path / "m", model, card)
    loaded, read = load_mask_classifier(path)
    assert read["architecture"] == "mask_cnn" and read["training"]["width"] == 8
    x = mask_input(np.random.default_rng(0).integers(0, 255, (2, 112, 112, 3), dtype=np.uint8))
    with torch.inference_mode():
        assert loaded(x) == pytest.approx(model(x), abs=2e-2)  # fp16 weights
    from fmr.cards import read_card

    assert read_card(path).architecture == "mask_cnn"  # a card fmr's reader accepts
    (tmp_path / "bad.safetensors").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a readable mask detector"):
        load_mask_classifier(tmp_path / "bad.safetensors")


def _side(mask=None, probability=None):
    return SimpleNamespace(mask=mask, mask_probability=probability)


def test_mask_decision_says_why():
    decision = mask_decision([_side(probability=0.02), _side(probability=0.97)])
    assert decision.masked and decision.reason == "photo B wears a mask (detected, 97%)"
    decision = mask_decision([_side({"style": "N95"}, 0.99), _side(probability=0.1)])
    assert decision.masked and decision.reason == "a synthetic mask was drawn on photo A"
    decision = mask_decision([_side(probability=0.02), _side(probability=0.04)])
    assert not decision.masked
    assert decision.reason == "neither photo wears a mask (A 2%, B 4%)"
    assert mask_decision([_side(probability=0.5), _side(probability=0.49)]).masked
    decision = mask_decision([_side(), _side()])
    assert not decision.masked and "no mask detector" in decision.reason


def test_compare_uses_the_masked_calibration_and_says_why():
    from fmr.metrics.calibration import calibrate
    from fmr.verify import compare

    rng = np.random.default_rng(0)
    unmasked = calibrate(rng.normal(0.9, 0.03, 500), rng.normal(0.5, 0.1, 20_000))
    masked = calibrate(rng.normal(0.7, 0.05, 500), rng.normal(0.45, 0.1, 20_000))
    embedder = SimpleNamespace(calibration=unmasked, calibration_masked=masked, name="m")
    a, b = np.array([1.0, 0.0]), np.array([0.8, 0.6])
    result = compare(a, b, embedder, masked=True, mask_reason="photo B wears a mask (detected, "
                     "97%)")
    assert result.calibration == "masked" and result.threshold == masked["threshold"]
    assert result.to_dict()["calibration_reason"] == "photo B wears a mask (detected, 97%)"
    result = compare(a, b, SimpleNamespace(calibration=unmasked, calibration_masked={}),
                     masked=True, mask_reason="photo B wears a mask (detected, 97%)")
    assert result.calibration == "unmasked"
    assert result.calibration_reason.endswith("but this model has no masked calibration")


def test_without_a_detector_the_probability_is_none(photos_dir, tmp_path, monkeypatch):
    from fmr.verify import mask_detector
    from fmr.verify.pipeline import prepare_face

    monkeypatch.setattr(mask_detector, "mask_detector_path", lambda: tmp_path / "none")
    face = prepare_face(photos_dir / "obama" / "obama.jpg")
    assert face.mask_probability is None and face.to_dict()["mask_probability"] is None
    with pytest.raises(CheckpointError, match="train_mask_detector.py"):
        mask_detector.load_mask_detector(required=True)


def test_an_embedding_cache_from_before_the_detector_still_loads(tmp_path):
    """Caches written before mask probabilities existed are reused (NaN), not recomputed."""
    from fmr.pipelines.embedding import _load_cache

    np.savez(tmp_path / "old.npz", paths=np.array(["a.jpg"]),
             embeddings=np.ones((1, 4), np.float32), ok=np.array([True]),
             reason=np.array([""]), mask=np.array([""]))
    entry = _load_cache(tmp_path / "old.npz")["a.jpg"]
    assert entry[1] and np.isnan(entry[4])


def test_the_second_detection_pass_runs_only_when_the_first_finds_nothing(photos_dir,
                                                                          monkeypatch):
    from fmr.faces import detect, detect_faces, load_image

    image = load_image(photos_dir / "obama" / "obama.jpg")
    assert detect_faces(image, retry=False)
    # A first pass that can find nothing: the second, at MTCNN_RETRY_THRESHOLDS, finds the face.
    monkeypatch.setattr(detect, "MTCNN_THRESHOLDS", (0.999999, 0.999999, 0.999999))
    assert detect_faces(image, retry=False) == []
    faces = detect_faces(image)
    assert faces and faces[0].score > detect.MTCNN_RETRY_THRESHOLDS[2]
    # Nothing at all in a blank image, with or without the second pass.
    blank = np.full((200, 200, 3), 128, np.uint8)
    assert detect_faces(blank) == [] and detect_faces(blank, retry=False) == []
