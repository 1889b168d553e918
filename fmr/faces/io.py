"""Reading photos into RGB uint8 arrays, whatever their format, with errors a person can act on."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fmr.errors import FaceError
from fmr.settings import max_pixels as default_max_pixels

ImageSource = str | os.PathLike | bytes | bytearray | BinaryIO

READABLE_FORMATS = "JPEG, PNG, WebP, BMP, TIFF or GIF"


def source_name(source: ImageSource, name: str | None = None) -> str:
    """How messages refer to `source`: the given name, the path, or the file object's name."""
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return str(getattr(source, "name", None) or "the uploaded image")


def read_image_bytes(source: ImageSource, name: str | None = None) -> bytes:
    """The bytes of a photo given as a path, bytes or an open binary file, undecoded.

    Raises `FaceError`, with `name` (or the path) in the message, for a missing, unreadable or
    folder path.
    """
    label = source_name(source, name)
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FaceError(f"{label}: no such file")
        if path.is_dir():
            raise FaceError(f"{label}: is a folder, not an image file")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise FaceError(f"{label}: cannot be read ({exc.strerror or exc})") from exc
    if hasattr(source, "read"):
        if hasattr(source, "seek"):
            source.seek(0)
        return source.read()
    raise FaceError(
        f"{label}: expected a file path, bytes or an open file, got {type(source).__name__}"
    )


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to RGB uint8; transparency is composited onto white."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit (and 32-bit integer) greyscale: scale to 8 bits instead of clipping at 255.
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        top = 1.0 if arr.max() <= 1.0 else 255.0
        grey = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


# The end markers of a complete file: a JPEG's last scan ends with EOI; a PNG ends with IEND
# (a fixed chunk, CRC included).
JPEG_START_OF_SCAN, JPEG_END = b"\xff\xda", b"\xff\xd9"
PNG_END = b"IEND\xaeB`\x82"


def _cut_short(data: bytes, image_format: str | None) -> bool:
    """True when a JPEG or PNG lacks its end marker: the file was cut off.

    Pillow refuses such files itself unless `PIL.ImageFile.LOAD_TRUNCATED_IMAGES` was switched
    on (by any library in the process), in which case it would return the part that decodes
    with the rest grey. This check does not depend on that global flag.
    """
    if image_format in ("JPEG", "MPO"):
        # Entropy-coded data never holds FF D9 or FF DA (0xFF is stuffed), so the last end of
        # image must come after the last start of scan; an EXIF thumbnail's EOI comes before.
        return data.rfind(JPEG_END) < data.rfind(JPEG_START_OF_SCAN)
    if image_format == "PNG":
        return PNG_END not in data
    return False


def load_image(
    source: ImageSource,
    *,
    max_pixels: int | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Read a photo into an RGB uint8 array of shape (H, W, 3).

    `source` is a path, the file's bytes, or an open binary file (an upload). EXIF orientation is
    applied; greyscale, 16-bit, palette, CMYK and transparent images are converted. Images with
    more than `max_pixels` pixels (default: `fmr.settings.max_pixels()`, 40 megapixels) are
    refused before they are decoded, so a decompression bomb costs nothing.

    Raises `FaceError`, with `name` (or the path) in the message, for missing, empty, truncated,
    corrupt, oversized or non-image input.
    """
    label = source_name(source, name)
    limit = default_max_pixels() if max_pixels is None else int(max_pixels)
    data = read_image_bytes(source, label)
    if not data:
        raise FaceError(f"{label}: the file is empty (0 bytes); choose a photo file")
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check is replaced by ours (its warning would only be noise).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            saved_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                image = Image.open(io.BytesIO(data))
            finally:
                Image.MAX_IMAGE_PIXELS = saved_limit
            width, height = image.size
            if width * height > limit:
                raise FaceError(
                    f"{label}: the image is {width} x {height} pixels "
                    f"({width * height / 1e6:.1f} megapixels), more than the limit of "
                    f"{limit / 1e6:.0f} megapixels; resize it, or raise FMR_MAX_PIXELS"
                )
            if width == 0 or height == 0:
                raise FaceError(f"{label}: the image has no pixels ({width} x {height})")
            image.load()
            if _cut_short(data, image.format):
                raise FaceError(
                    f"{label}: the image is truncated (the file ends before the picture does); "
                    "download or export it again"
                )
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except FaceError:
        raise
    except UnidentifiedImageError as exc:
        raise FaceError(
            f"{label}: not an image fmr can read (expected {READABLE_FORMATS}); "
            "check that the file really is a photo"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Truncated downloads and corrupt files end up here (Pillow raises OSError).
        raise FaceError(
            f"{label}: the image is truncated or corrupt ({exc}); download or export it again"
        ) from exc
    except Image.DecompressionBombError as exc:  # pragma: no cover - our check runs first
        raise FaceError(f"{label}: the image is too large to decode safely") from exc
