"""fmr.faces: loading any image, detecting, choosing and aligning faces."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fmr.errors import FaceError
from fmr.faces import (
    ARCFACE_TEMPLATE,
    Face,
    align_face,
    detect_faces,
    find_face,
    landmarks68,
    load_image,
    select_face,
    similarity_transform,
    template_landmarks,
    transform_points,
)

# ---------------------------------------------------------------- loading (no data needed)


def _gradient(h: int = 60, w: int = 80) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (h + w)], -1).astype(np.uint8)


def test_load_image_from_path_bytes_and_file_object(tmp_path: Path) -> None:
    rgb = _gradient()
    path = tmp_path / "g.png"
    Image.fromarray(rgb).save(path)
    from_path = load_image(path)
    from_bytes = load_image(path.read_bytes())
    with open(path, "rb") as handle:
        from_file = load_image(handle)
    for loaded in (from_path, from_bytes, from_file):
        assert loaded.dtype == np.uint8 and loaded.shape == (60, 80, 3)
        np.testing.assert_array_equal(loaded, rgb)


def test_load_image_converts_greyscale_16bit_rgba_palette_and_cmyk(tmp_path: Path) -> None:
    rgb = _gradient()
    grey = rgb[:, :, 0]
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(load_image(tmp_path / "l.png")[:, :, 1], grey)

    deep = (grey.astype(np.uint16) * 257).astype(np.uint16)  # 16-bit greyscale, full range
    Image.fromarray(deep).save(tmp_path / "16.png")
    loaded16 = load_image(tmp_path / "16.png")
    assert loaded16.dtype == np.uint8
    np.testing.assert_allclose(loaded16[:, :, 0].astype(int), grey.astype(int), atol=1)

    rgba = np.dstack([rgb, np.full(grey.shape, 255, np.uint8)])
    rgba[:10, :10, 3] = 0  # transparent corner composites onto white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    loaded_rgba = load_image(tmp_path / "a.png")
    assert loaded_rgba.shape == (60, 80, 3)
    assert (loaded_rgba[:10, :10] == 255).all()
    np.testing.assert_array_equal(loaded_rgba[20:, 20:], rgb[20:, 20:])

    Image.fromarray(rgb).convert("P").save(tmp_path / "p.gif")
    assert load_image(tmp_path / "p.gif").shape == (60, 80, 3)

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    cmyk = load_image(tmp_path / "c.jpg")
    assert cmyk.shape == (60, 80, 3)
    assert np.abs(cmyk.astype(int) - rgb.astype(int)).mean() < 12


def test_load_image_applies_exif_orientation(tmp_path: Path) -> None:
    rgb = _gradient(40, 90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(rgb).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    loaded = load_image(tmp_path / "rot.jpg")
    assert loaded.shape == (90, 40, 3)  # displayed upright: width and height swap


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size: signature, IHDR, a few bytes of pixel data, IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return (
            struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("notes.jpg", b"these are not pixels, just text\n" * 4, "not an image"),
        ("empty.jpg", b"", "empty"),
        ("bomb.png", _png_header_only(10_000, 10_000), "megapixels"),
    ],
)
def test_bad_files_raise_face_error_naming_the_file(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(FaceError) as info:
        load_image(path)
    assert name in str(info.value) and expected in str(info.value)


def test_a_truncated_jpeg_or_png_is_refused_even_if_pillow_would_decode_part_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any library may switch on PIL.ImageFile.LOAD_TRUNCATED_IMAGES; a cut file still fails."""
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    for kind, suffix in (("JPEG", "jpg"), ("PNG", "png")):
        buffer = io.BytesIO()
        Image.fromarray(_gradient(200, 200)).save(buffer, kind)
        whole = buffer.getvalue()
        cut = tmp_path / f"cut.{suffix}"
        cut.write_bytes(whole[: len(whole) * 3 // 4])
        with pytest.raises(FaceError, match=rf"cut\.{suffix}: the image is truncated"):
            load_image(cut)
        # Bytes after the end marker (camera trailers) do not make a whole file "truncated".
        assert load_image(whole + b"trailer", name=f"whole.{suffix}").shape == (200, 200, 3)


def test_truncated_jpeg_raises_face_error(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(_gradient(200, 200)).save(buffer, "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(FaceError, match=r"cut\.jpg.*truncated"):
        load_image(path)


def test_missing_file_and_folder_raise_face_error(tmp_path: Path) -> None:
    with pytest.raises(FaceError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(FaceError, match="folder"):
        load_image(tmp_path)


def test_pixel_limit_is_configurable(tmp_path: Path) -> None:
    Image.fromarray(_gradient(100, 100)).save(tmp_path / "x.png")
    assert load_image(tmp_path / "x.png", max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(FaceError, match="limit"):
        load_image(tmp_path / "x.png", max_pixels=9_999)


# ---------------------------------------------------------------- alignment maths (no data needed)


def test_similarity_transform_recovers_a_known_transform() -> None:
    angle, scale, shift = np.deg2rad(17.0), 2.3, np.array([31.0, -12.5])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_TEMPLATE.astype(np.float64)
    dst = src @ (scale * rotation).T + shift
    matrix = similarity_transform(src, dst)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


def test_align_face_maps_landmarks_onto_template_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    landmarks = ARCFACE_TEMPLATE * 1.7 + np.array([120.0, 60.0], dtype=np.float32)
    crop = align_face(image, landmarks)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, align_face(image.copy(), landmarks.copy()))
    from fmr.faces import alignment_matrix

    moved = transform_points(landmarks, alignment_matrix(landmarks))
    np.testing.assert_allclose(moved, ARCFACE_TEMPLATE, atol=1e-3)
    np.testing.assert_allclose(template_landmarks(224), ARCFACE_TEMPLATE * 2)


def test_select_face_policies_on_synthetic_faces() -> None:
    def face(x1, y1, x2, y2):
        return Face(np.array([x1, y1, x2, y2], np.float32), 0.99, np.zeros((5, 2), np.float32))

    big_corner, small_centre = face(0, 0, 100, 100), face(180, 130, 220, 170)
    faces = [big_corner, small_centre]
    assert select_face(faces, (300, 400, 3), "largest") is big_corner
    assert select_face(faces, (300, 400, 3), "center") is small_centre
    with pytest.raises(FaceError, match="group.jpg: 2 faces"):
        select_face(faces, (300, 400, 3), "require-one", "group.jpg")
    with pytest.raises(FaceError, match="empty.jpg: no face found"):
        select_face([], (300, 400, 3), "largest", "empty.jpg")
    with pytest.raises(FaceError, match="unknown multi-face policy"):
        select_face(faces, (300, 400, 3), "biggest")


def test_select_face_ignores_unlikely_secondary_detections() -> None:
    """One rule for secondary faces (fmr.faces.policy.likely_faces): a smaller detection MTCNN
    is not sure of neither counts for require-one nor wins "center"."""

    def face(x1, y1, x2, y2, score):
        return Face(np.array([x1, y1, x2, y2], np.float32), score, np.zeros((5, 2), np.float32))

    portrait, clutter = face(0, 0, 100, 100, 0.999), face(180, 130, 220, 170, 0.91)
    assert select_face([portrait, clutter], (300, 400, 3), "require-one") is portrait
    assert select_face([portrait, clutter], (300, 400, 3), "center") is portrait
    sure = face(180, 130, 220, 170, 0.97)
    assert select_face([portrait, sure], (300, 400, 3), "center") is sure
    with pytest.raises(FaceError, match="two.jpg: 2 faces"):
        select_face([portrait, clutter, sure], (300, 400, 3), "require-one", "two.jpg")


def test_an_image_too_thin_for_a_face_says_so() -> None:
    strip = np.random.default_rng(0).integers(0, 255, (10, 10_000, 3), dtype=np.uint8)
    with pytest.raises(FaceError, match=r"strip.png: the image is 10000 x 10 pixels, too thin"):
        find_face(strip, name="strip.png")


def test_image_without_a_face_gives_no_face_error() -> None:
    with pytest.raises(FaceError, match="landscape.png: no face found"):
        find_face(_gradient(240, 320), name="landscape.png")


def test_aligned_crop_without_a_detectable_face_falls_back_to_template() -> None:
    flat = np.full((112, 112, 3), 128, np.uint8)
    faces = detect_faces(flat)
    assert len(faces) == 1 and faces[0].source == "template"
    np.testing.assert_allclose(faces[0].landmarks, ARCFACE_TEMPLATE)


# ---------------------------------------------------------------- real photos (shared data)


def _person_photos(photos_dir: Path) -> list[Path]:
    skip = {"multi", "edge"}
    return sorted(
        p for d in photos_dir.iterdir() if d.is_dir() and d.name not in skip for p in d.iterdir()
    )


def test_every_person_photo_yields_one_aligned_face(photos_dir: Path) -> None:
    photos = _person_photos(photos_dir)
    assert len(photos) >= 12
    for path in photos:
        image = load_image(path)
        face = find_face(image, "largest", str(path))
        assert face.score > 0.9, path
        crop = align_face(image, face.landmarks)
        assert crop.shape == (112, 112, 3)
        assert crop.std() > 20, f"{path}: the aligned crop is nearly flat"


def test_multi_face_photos_follow_the_policy(photos_dir: Path) -> None:
    from fmr.faces.policy import likely_faces

    for path in sorted((photos_dir / "multi").iterdir()):
        image = load_image(path)
        faces, _ = likely_faces(detect_faces(image), image.shape)
        assert len(faces) >= 2, path
        np.testing.assert_array_equal(find_face(image).box, faces[0].box)  # main first
        largest = max(faces, key=lambda f: f.area)
        np.testing.assert_array_equal(find_face(image, "largest").box, largest.box)
        # Both people are fully in the photo: the default takes the larger face.
        np.testing.assert_array_equal(find_face(image).box, largest.box)
        centre = find_face(image, "center")
        cx, cy = image.shape[1] / 2, image.shape[0] / 2
        distances = [np.hypot(f.center[0] - cx, f.center[1] - cy) for f in faces]
        np.testing.assert_array_equal(centre.box, faces[int(np.argmin(distances))].box)
        with pytest.raises(FaceError, match=f"{path.name}: {len(faces)} faces"):
            find_face(image, "require-one", str(path))


def test_32bit_png_loads_as_rgb(photos_dir: Path) -> None:
    image = load_image(photos_dir / "edge" / "32bit.png")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert len(detect_faces(image)) >= 1


def test_lfw_aligned_crops_put_the_eyes_on_the_template(lfw_dir: Path) -> None:
    """Re-detect the eyes on each aligned crop of one person: on average over the photos each eye
    sits within 3 px of its template point, and so does the typical (median) photo.

    Single photos of turned heads can be off by more: a similarity transform fitted to all five
    points (insightface's convention, which pretrained backbones expect) cannot put the eyes of a
    turned head on the frontal template exactly.
    """
    person = lfw_dir / "images" / "Colin_Powell"
    photos = sorted(person.glob("*.jpg"))[:12]
    assert len(photos) == 12, person
    eyes = []
    for path in photos:
        image = load_image(path)
        crop = align_face(image, find_face(image, "center", str(path)).landmarks)
        again = find_face(crop, "largest", str(path))
        assert again.source == "mtcnn"
        eyes.append(again.landmarks[:2])
    eyes = np.array(eyes)
    mean_error = np.linalg.norm(eyes.mean(axis=0) - ARCFACE_TEMPLATE[:2], axis=1)
    per_photo = np.linalg.norm(eyes - ARCFACE_TEMPLATE[:2], axis=2).max(axis=1)
    assert mean_error.max() < 3.0, mean_error
    assert np.median(per_photo) < 3.0, per_photo


def test_tight_face_crops_still_yield_a_face(photos_dir: Path) -> None:
    image = load_image(photos_dir / "obama" / "obama.jpg")
    face = find_face(image)
    x1, y1, x2, y2 = face.box.astype(int)
    cx, cy, half = (x1 + x2) // 2, (y1 + y2) // 2, max(x2 - x1, y2 - y1) // 2
    tight = image[max(cy - half, 0) : cy + half, max(cx - half, 0) : cx + half]
    tight160 = cv2.resize(tight, (160, 160), interpolation=cv2.INTER_AREA)
    faces160 = detect_faces(tight160)
    assert faces160 and faces160[0].source == "mtcnn"
    aligned = align_face(image, face.landmarks)
    faces112 = detect_faces(aligned)
    assert faces112
    # The eyes found on the crop sit where the alignment put the photo's eyes.
    from fmr.faces import alignment_matrix

    warped_eyes = transform_points(face.landmarks, alignment_matrix(face.landmarks))[:2]
    assert np.linalg.norm(faces112[0].landmarks[:2] - warped_eyes, axis=1).max() < 3

    # A large tight crop is padded after downscaling (memory stays bounded) and the face it
    # finds is mapped back to the crop's own pixels: the same place as on the 160 px copy.
    tight1600 = cv2.resize(tight, (1600, 1600), interpolation=cv2.INTER_CUBIC)
    faces1600 = detect_faces(tight1600)
    assert faces1600 and faces1600[0].source == "mtcnn"
    np.testing.assert_allclose(faces1600[0].landmarks / 10, faces160[0].landmarks, atol=3)


def test_landmarks68_fall_on_the_face(photos_dir: Path) -> None:
    image = load_image(photos_dir / "biden" / "biden.jpg")
    face = find_face(image)
    points = landmarks68(image, face.box)
    assert points.shape == (68, 2) and points.dtype == np.float32
    left_eye, right_eye = points[36:42].mean(0), points[42:48].mean(0)
    assert np.linalg.norm(left_eye - face.landmarks[0]) < 0.1 * face.width
    assert np.linalg.norm(right_eye - face.landmarks[1]) < 0.1 * face.width
    mouth = points[48:68].mean(0)
    assert np.linalg.norm(mouth - face.landmarks[3:5].mean(0)) < 0.1 * face.width


def test_shape_predictors_are_loaded_once_per_process() -> None:
    # Loading the 68-point file takes about a second, fitting it a millisecond: every mask
    # drawn on a photo fits it once, so a reload per call made masking ~100x slower.
    from fmr.faces.landmarks import shape_predictor

    assert shape_predictor(68) is shape_predictor(68)
    assert shape_predictor(5) is shape_predictor(5)
    assert shape_predictor(5) is not shape_predictor(68)
