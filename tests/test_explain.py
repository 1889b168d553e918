"""Occlusion sensitivity (fmr.explain): the map finds the pixels an embedding depends on, and on
a real masked face the dlib reference is matched on the eyes, not the mask."""

from __future__ import annotations

import numpy as np
import pytest

from fmr.explain import ModelView, explain_pair, model_view, occlusion_map, patch_positions


def test_patch_positions_cover_every_pixel_and_end_flush():
    assert patch_positions(112, 28, 14) == [0, 14, 28, 42, 56, 70, 84]
    positions = patch_positions(150, 38, 19)
    assert positions[-1] == 150 - 38  # a last square flush with the far edge
    covered = np.zeros(150, bool)
    for start in positions:
        covered[start : start + 38] = True
    assert covered.all()
    with pytest.raises(ValueError):
        patch_positions(20, 30, 5)


def _region_embedder(top: int, left: int, size: int):
    """An 'embedding' that depends only on one square region of the crop: its mean colour
    (centred on grey) and a constant, so hiding pixels elsewhere changes nothing."""

    def embed(batch: np.ndarray) -> np.ndarray:
        region = batch[:, top : top + size, left : left + size].astype(np.float64)
        colour = region.mean(axis=(1, 2)) - 128.0
        vectors = np.concatenate([colour, np.full((len(batch), 1), 40.0)], axis=1)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    return embed


def test_occlusion_map_is_positive_on_the_region_the_embedding_uses_and_zero_elsewhere():
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    crop[30:50, 60:80] = (230, 40, 40)  # a saturated patch far from grey: hiding it matters
    embed = _region_embedder(30, 60, 20)
    reference = embed(crop[None])[0]
    result = occlusion_map(embed, crop, reference, patch_fraction=0.25, stride_fraction=0.125)

    assert result.heatmap.shape == (112, 112)
    assert result.baseline == pytest.approx(1.0)
    assert result.heatmap[30:50, 60:80].min() > 0.01  # hiding the region lowers the score
    # Pixels whose every covering square misses the region: no change at all.
    assert np.abs(result.heatmap[80:, :30]).max() == 0.0
    assert np.abs(result.heatmap[:, :20]).max() == 0.0
    peak = np.unravel_index(np.argmax(result.heatmap), result.heatmap.shape)
    assert 25 <= peak[0] <= 55 and 55 <= peak[1] <= 85


def test_explain_pair_maps_each_face_against_the_other():
    rng = np.random.default_rng(1)
    crop_a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    crop_b = crop_a.copy()
    crop_b[:, 32:] = 255 - crop_b[:, 32:]  # the right half differs
    embed = _region_embedder(0, 0, 64)
    map_a, map_b = explain_pair(ModelView(crop_a, embed), ModelView(crop_b, embed))
    expected = float(embed(crop_a[None])[0] @ embed(crop_b[None])[0])
    assert map_a.baseline == pytest.approx(expected)
    assert map_b.baseline == pytest.approx(expected)
    assert map_a.crop is crop_a or np.array_equal(map_a.crop, crop_a)


@pytest.fixture(scope="module")
def obama_pair(photos_dir):
    """Obama in two photos, downscaled (detection on full-size photos is slow on 2 cores)."""
    import cv2

    from fmr.faces import detect_faces, load_image

    faces = []
    for name in ("obama.jpg", "obama2.jpg"):
        image = load_image(photos_dir / "obama" / name)
        scale = 640 / max(image.shape[:2])
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        face = max(detect_faces(image), key=lambda f: f.area)
        faces.append((image, face))
    return faces


def test_a_masked_face_is_matched_on_the_eyes_not_the_mask(obama_pair):
    from fmr.masks import mask_face
    from fmr.verify import load_backbone

    dlib = load_backbone("dlib")
    (image_a, face_a), (image_b, face_b) = obama_pair
    masked, _ = mask_face(image_a, face_a, "surgical", 3, colour="light-blue", coverage=0.8)
    view_a = model_view(dlib, masked, face_a)
    assert view_a.crop.shape == (150, 150, 3)  # dlib's own chip, not fmr's 112x112 crop
    emb_a, emb_b = dlib.embed_faces([(masked, face_a), (image_b, face_b)])
    # A coarse grid (4 x 4 squares) keeps the test quick; the page uses a finer one.
    map_a = occlusion_map(view_a.embed, view_a.crop, emb_b, stride_fraction=0.25)

    # The baseline is the pair's similarity as fmr.verify computes it.
    assert map_a.baseline == pytest.approx(float(emb_a @ emb_b), abs=1e-4)
    # In dlib's chip the eyes and brows sit in the upper half, the mask in the lower part.
    eyes, mask_region = map_a.region_mean(0.15, 0.45), map_a.region_mean(0.55, 0.95)
    assert eyes > 0.001  # hiding the eyes lowers the score
    assert eyes > mask_region + 0.003  # far more than hiding the mask does
