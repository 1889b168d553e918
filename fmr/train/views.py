"""Augmented views of faces, rendered so that a student and its teacher can see the same one.

Distilling dlib's descriptor into a student works when the target belongs to the very image the
student sees ("a good teacher is patient and consistent", Beyer et al., CVPR 2022): the same
geometry, colour and blur, and for mixup the same blend of two faces. dlib needs its own
150x150 chip (its 5-point alignment, 0.25 padding) and the student the 112x112 ArcFace crop, so
both are cut from one augmented *canvas*:

- a canvas (`fmr.faces.align.Canvas`) is a face aligned to the ArcFace template like the
  112x112 crop, with a margin of `margin` template pixels on every side, at `scale` canvas
  pixels per template pixel. `WIDE_CANVAS` (24 px margin, 1.5x: 240x240) is what
  `fmr prepare --canvases` stores: dlib's chip reaches below the crop and is sharper than it.
  A plain aligned crop is the canvas `CROP_CANVAS` (no margin, 1x), so crops from any training
  set use this code too.
- `chip_to_template` (per photo, 2x3) maps dlib chip pixels to template coordinates, from
  dlib's own 5-point shape of that photo (`fmr prepare --canvases` stores it).
- a view is a row of `VIEW_FIELDS` (`sample_views`): geometry (rotation, zoom, shift, flip;
  about the template centre), colour (brightness, contrast, saturation, grey), blur, and a
  mixup partner (a row of the batch's partner canvases) with the photo's own weight.
  `render_canvases` applies mixup, blur and colour to whole canvases; `cut` then takes any
  crop through the view's geometry, so the student's crop and the teacher's chip of one view
  come from the same rendered pixels.

Everything is batched torch on any device and deterministic for given parameters; every random
number comes from the generator passed in. Affine matrices use OpenCV's pixel convention
(pixel i sits at coordinate i), like `fmr.faces.align`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fmr.faces.align import CROP_CANVAS, TEMPLATE_SIZE, WIDE_CANVAS, Canvas
from fmr.models.dlib_resnet import INPUT_SIZE as DLIB_INPUT_SIZE

__all__ = ["CROP_CANVAS", "WIDE_CANVAS", "Canvas", "ViewSettings", "sample_views", "cut",
           "render_canvases", "student_to_canvas", "chip_to_canvas", "student_geometry_theta",
           "chip_geometry_theta", "identity_views"]

CHIP_SIZE = DLIB_INPUT_SIZE  # dlib's face chip, 150x150
TEMPLATE_CENTRE = (TEMPLATE_SIZE - 1) / 2.0
VIEW_FIELDS = ("rotation", "zoom", "shift_x", "shift_y", "flip", "brightness", "contrast",
               "saturation", "grey", "blur", "partner", "mix")
FIELD = {name: i for i, name in enumerate(VIEW_FIELDS)}
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma




@dataclass(frozen=True)
class ViewSettings:
    """How far random views go. Angles in degrees, zoom as a relative change, shifts and blur
    sigma in template pixels; colour factors are drawn from 1 +- the amount."""

    rotation: float = 8.0
    zoom: float = 0.08
    shift: float = 4.5
    flip_prob: float = 0.5
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    grey_prob: float = 0.05
    blur_prob: float = 0.0
    blur_sigma: float = 1.5  # the largest blur; a blurred view draws sigma from [0.3, this]
    mix_prob: float = 0.0
    mix_min: float = 0.5  # the photo's own weight in a mix is in [mix_min, 1)


def sample_views(n: int, settings: ViewSettings, generator: torch.Generator,
                 device=None) -> torch.Tensor:
    """`n` random views (n, len(VIEW_FIELDS)) float32. A mixed view's `partner` is its own row
    of the partner batch (`render_canvases`); -1 means no mix."""
    s = settings
    u = torch.rand(n, 15, generator=generator, device=device)
    views = torch.empty(n, len(VIEW_FIELDS), device=device)
    views[:, 0] = (2 * u[:, 0] - 1) * s.rotation
    views[:, 1] = 1 + (2 * u[:, 1] - 1) * s.zoom
    views[:, 2] = (2 * u[:, 2] - 1) * s.shift
    views[:, 3] = (2 * u[:, 3] - 1) * s.shift
    views[:, 4] = (u[:, 4] < s.flip_prob).float()
    views[:, 5] = 1 + (2 * u[:, 5] - 1) * s.brightness
    views[:, 6] = 1 + (2 * u[:, 6] - 1) * s.contrast
    views[:, 7] = 1 + (2 * u[:, 7] - 1) * s.saturation
    views[:, 8] = (u[:, 8] < s.grey_prob).float()
    blur = 0.3 + u[:, 10] * max(0.0, s.blur_sigma - 0.3)
    views[:, 9] = torch.where(u[:, 9] < s.blur_prob, blur, torch.zeros_like(blur))
    mixed = u[:, 11] < s.mix_prob
    rows = torch.arange(n, device=device, dtype=torch.float32)
    views[:, 10] = torch.where(mixed, rows, torch.full_like(rows, -1.0))
    views[:, 11] = torch.where(mixed, s.mix_min + u[:, 12] * (1 - s.mix_min),
                               torch.ones_like(rows))
    return views


def identity_views(n: int, device=None) -> torch.Tensor:
    """Views that change nothing: the aligned face as it is."""
    views = torch.zeros(n, len(VIEW_FIELDS), device=device)
    for name in ("zoom", "brightness", "contrast", "saturation", "mix"):
        views[:, FIELD[name]] = 1.0
    views[:, FIELD["partner"]] = -1.0
    return views


# ---------------------------------------------------------------------------------------------
# geometry (2x3 affine matrices as (N, 2, 3) float32 tensors)


def canvas_from_template(canvas: Canvas, n: int, device=None) -> torch.Tensor:
    """(n, 2, 3): template coordinates -> canvas pixels."""
    m = torch.from_numpy(canvas.from_template()).float()
    return m.to(device).expand(n, 2, 3)


def _as3(m: torch.Tensor) -> torch.Tensor:
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=m.dtype, device=m.device).expand(
        *m.shape[:-2], 1, 3)
    return torch.cat([m, bottom], dim=-2)


def compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """outer o inner (apply `inner` first); both (..., 2, 3)."""
    return (_as3(outer) @ _as3(inner))[..., :2, :]


def _scaling(n: int, factor: float, device) -> torch.Tensor:
    return torch.tensor([[factor, 0, 0], [0, factor, 0]], dtype=torch.float32,
                        device=device).expand(n, 2, 3)


def _pixels_to_normalised(n: int, size: int, device) -> torch.Tensor:
    # affine_grid with align_corners=False puts pixel i at (2i + 1) / size - 1.
    return torch.tensor([[2 / size, 0, 1 / size - 1], [0, 2 / size, 1 / size - 1]],
                        dtype=torch.float32, device=device).expand(n, 2, 3)


def _normalised_to_pixels(n: int, size: int, device) -> torch.Tensor:
    return torch.tensor([[size / 2, 0, size / 2 - 0.5], [0, size / 2, size / 2 - 0.5]],
                        dtype=torch.float32, device=device).expand(n, 2, 3)


def view_geometry(views: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) maps from a view's template coordinates to the source template coordinates:
    mirror about the centre line (flip), then rotation and zoom about the template centre, then
    the shift."""
    angle = torch.deg2rad(views[:, FIELD["rotation"]])
    zoom = views[:, FIELD["zoom"]].clamp(min=1e-3)
    sign = 1 - 2 * views[:, FIELD["flip"]]
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    c = TEMPLATE_CENTRE
    m = torch.zeros(len(views), 2, 3, dtype=torch.float32, device=views.device)
    m[:, 0, 0], m[:, 0, 1] = cos * sign, -sin
    m[:, 1, 0], m[:, 1, 1] = sin * sign, cos
    m[:, 0, 2] = c - (cos * sign * c - sin * c) + views[:, FIELD["shift_x"]]
    m[:, 1, 2] = c - (sin * sign * c + cos * c) + views[:, FIELD["shift_y"]]
    return m


def student_to_canvas(views: torch.Tensor, canvas: Canvas,
                      size: int = TEMPLATE_SIZE) -> torch.Tensor:
    """(N, 2, 3): pixels of each view's student crop (`size` a side) -> canvas pixels."""
    n, device = len(views), views.device
    geometry = compose(view_geometry(views), _scaling(n, TEMPLATE_SIZE / size, device))
    return compose(canvas_from_template(canvas, n, device), geometry)


def chip_to_canvas(views: torch.Tensor, chip_to_template: torch.Tensor,
                   canvas: Canvas) -> torch.Tensor:
    """(N, 2, 3): pixels of dlib's chip of each view -> canvas pixels. `chip_to_template`:
    (N, 2, 3), each photo's (see the module docstring)."""
    geometry = compose(view_geometry(views), chip_to_template.to(views.device).float())
    return compose(canvas_from_template(canvas, len(views), views.device), geometry)


def cut(canvases: torch.Tensor, to_canvas: torch.Tensor, size: int) -> torch.Tensor:
    """Crops (N, C, size, size) from float canvases (N, C, H, W) through `to_canvas`
    (N, 2, 3: crop pixels -> canvas pixels), bilinear, black outside the canvas."""
    n, channels, h, w = canvases.shape
    device = canvases.device
    if h != w:
        raise ValueError(f"canvases must be square, got {h}x{w}")
    theta = compose(_pixels_to_normalised(n, w, device),
                    compose(to_canvas.to(device), _normalised_to_pixels(n, size, device)))
    grid = F.affine_grid(theta, [n, channels, size, size], align_corners=False)
    return F.grid_sample(canvases, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def student_geometry_theta(views: torch.Tensor, size: int = TEMPLATE_SIZE) -> torch.Tensor:
    """(N, 2, 3) `affine_grid` matrices taking a view's crop (normalised coordinates) to the
    unaugmented aligned crop's: how a layer drawn on the aligned crop (a synthetic mask, see
    `fmr.masks.tensor.mask_batch`) must be warped to sit on the view."""
    n, device = len(views), views.device
    geometry = compose(_scaling(n, size / TEMPLATE_SIZE, device),
                       compose(view_geometry(views), _scaling(n, TEMPLATE_SIZE / size, device)))
    return compose(_pixels_to_normalised(n, size, device),
                   compose(geometry, _normalised_to_pixels(n, size, device)))


def chip_geometry_theta(views: torch.Tensor, chip_to_template: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) `affine_grid` matrices taking dlib's chip of each view (normalised
    coordinates) to the unaugmented aligned crop's: how a mask drawn on the aligned crop
    (`fmr.masks.tensor.mask_batch`) must be warped to sit on the chip."""
    n, device = len(views), views.device
    geometry = compose(view_geometry(views), chip_to_template.to(device).float())
    return compose(_pixels_to_normalised(n, TEMPLATE_SIZE, device),
                   compose(geometry, _normalised_to_pixels(n, CHIP_SIZE, device)))


# ---------------------------------------------------------------------------------------------
# photometry


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur of (N, C, H, W) with `sigma` (N,) in pixels (0: unchanged)."""
    n, c, h, w = x.shape
    blurred = sigma > 0
    if not bool(blurred.any()):
        return x
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets[None] / sigma.clamp(min=1e-3).to(x.dtype)[:, None]) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)
    identity = (offsets == 0).to(x.dtype).expand(n, -1)
    kernel = torch.where(blurred[:, None], kernel, identity).repeat_interleave(c, 0)
    flat = F.pad(x.reshape(1, n * c, h, w), (radius,) * 4, mode="replicate")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=n * c)
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, h, w)


def photometric(x: torch.Tensor, views: torch.Tensor, blur_scale: float = 1.0) -> torch.Tensor:
    """Blur, brightness, contrast, saturation and grey of float RGB (N, 3, H, W) in [0, 255].
    Contrast pivots on each image's mean grey. `blur_scale`: pixels per template pixel."""
    n = x.shape[0]
    x = gaussian_blur(x, views[:, FIELD["blur"]] * blur_scale)
    weights = torch.tensor(GREY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)

    def factor(name: str) -> torch.Tensor:
        return views[:, FIELD[name]].to(x.dtype).view(n, 1, 1, 1)

    x = x * factor("brightness")
    grey = (x * weights).sum(1, keepdim=True)
    mean = grey.mean((2, 3), keepdim=True)
    x = (x - mean) * factor("contrast") + mean
    grey = (x * weights).sum(1, keepdim=True)
    x = (x - grey) * factor("saturation") + grey
    x = torch.where(factor("grey") > 0.5, grey.expand_as(x), x)
    return x.clamp(0.0, 255.0)


def render_canvases(canvases: torch.Tensor, partners: torch.Tensor | None, views: torch.Tensor,
                    canvas: Canvas) -> torch.Tensor:
    """Float (N, 3, S, S) canvases of the views: mixup with the same row of `partners` where the
    view has a partner, then blur and colour. canvases, partners: uint8 or float (N, 3, S, S)."""
    x = canvases.float()
    if partners is not None:
        mix = views[:, FIELD["mix"]].view(-1, 1, 1, 1)
        has = (views[:, FIELD["partner"]] >= 0).view(-1, 1, 1, 1)
        x = torch.where(has, x * mix + partners.float() * (1 - mix), x)
    return photometric(x, views, blur_scale=canvas.scale)


def mixed(views: torch.Tensor) -> torch.Tensor:
    """(N,) bool: which views blend two faces."""
    return views[:, FIELD["partner"]] >= 0
