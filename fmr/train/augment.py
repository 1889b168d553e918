"""Training augmentation on whole batches, on the training device.

One call per step turns a uint8 batch into the normalised float input (and, with an online
teacher, its targets). Both paths draw one random view per image (`fmr.train.views`: flip,
rotation, zoom, shift, colour, blur, and with a teacher mixup) and then synthetic masks on a
share of the images (`fmr.masks.tensor.mask_batch`, training styles) that follow the view's
geometry, then `(x/255 - 0.5) / 0.5`, the input every fmr model expects.

- `augment_batch`: 112x112 aligned crops (any training set). Pixels from outside the crop are
  black, as in aligned crops.
- `augment_with_teacher`: the wide canvases of a pack prepared with `--canvases`. The student's
  crop and the teacher's 150x150 chip are cut from the same rendered canvas, so the teacher
  describes exactly the view the student sees, without its mask: the target of a masked face is
  the descriptor of the same face unmasked. A view that blends two faces has no class label.

Every random number comes from the `generator` argument (on the batch's device): the same
generator state gives the same batch, which is what makes resumed runs exact. Nothing here reads
values back to the host.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from fmr.faces.align import CROP_CANVAS, TEMPLATE_SIZE, WIDE_CANVAS, Canvas
from fmr.models.inputs import DEFAULT_INPUT
from fmr.train.config import TrainConfig
from fmr.train.views import (
    CHIP_SIZE,
    ViewSettings,
    chip_to_canvas,
    cut,
    mixed,
    render_canvases,
    sample_views,
    student_geometry_theta,
    student_to_canvas,
)

_DEFAULTS = TrainConfig()


@dataclass(frozen=True)
class AugmentSettings:
    """train.py's augmentation settings; names, meaning and defaults are `TrainConfig`'s."""

    mask_prob: float = _DEFAULTS.mask_prob
    flip_prob: float = _DEFAULTS.flip_prob
    rotation: float = _DEFAULTS.rotation
    scale_jitter: float = _DEFAULTS.scale_jitter
    translate: float = _DEFAULTS.translate
    brightness: float = _DEFAULTS.brightness
    contrast: float = _DEFAULTS.contrast
    saturation: float = _DEFAULTS.saturation
    grayscale_prob: float = _DEFAULTS.grayscale_prob
    blur_prob: float = _DEFAULTS.blur_prob
    blur_sigma: float = _DEFAULTS.blur_sigma
    mix_prob: float = _DEFAULTS.mix_prob

    @classmethod
    def from_config(cls, config) -> AugmentSettings:
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    def views(self) -> ViewSettings:
        return ViewSettings(
            rotation=self.rotation, zoom=self.scale_jitter,
            shift=self.translate * TEMPLATE_SIZE, flip_prob=self.flip_prob,
            brightness=self.brightness, contrast=self.contrast, saturation=self.saturation,
            grey_prob=self.grayscale_prob, blur_prob=self.blur_prob, blur_sigma=self.blur_sigma,
            mix_prob=self.mix_prob,
        )


def normalise(x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """Float [0, 255] images -> the model input (x/255 - 0.5) / 0.5, in [-1, 1]."""
    x = DEFAULT_INPUT.normalise(x).clamp_(-1.0, 1.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def apply_masks(images: torch.Tensor, prob: float, generator: torch.Generator,
                geometry: torch.Tensor | None = None) -> torch.Tensor:
    """Synthetic masks (training styles) on a share `prob` of the crops, following `geometry`
    (see `fmr.masks.tensor.mask_batch`)."""
    if prob <= 0:
        return images
    from fmr.masks.tensor import mask_batch  # its default styles are the training styles

    return mask_batch(images, prob, generator=generator, geometry=geometry)


def _student_view(rendered: torch.Tensor, views: torch.Tensor, canvas: Canvas,
                  settings: AugmentSettings, generator: torch.Generator) -> torch.Tensor:
    crops = cut(rendered, student_to_canvas(views, canvas), TEMPLATE_SIZE)
    return apply_masks(crops, settings.mask_prob, generator, student_geometry_theta(views))


def augment_batch(
    images: torch.Tensor,
    settings: AugmentSettings,
    generator: torch.Generator,
    *,
    channels_last: bool = False,
    canvas: Canvas = CROP_CANVAS,
) -> torch.Tensor:
    """uint8 (N, 3, S, S) aligned crops (or canvases of `canvas`) -> float32 normalised
    (N, 3, 112, 112) model input. No mixup: nothing would say what a blend is."""
    views = sample_views(images.shape[0], settings.views(), generator, images.device)
    views[:, 10] = -1.0  # no partner
    rendered = render_canvases(images, None, views, canvas)
    return normalise(_student_view(rendered, views, canvas, settings, generator), channels_last)


@dataclass
class TeacherBatch:
    """inputs: the normalised student input (N, 3, 112, 112); labels: (N,) int64, -1 where the
    view blends two faces; targets: (N, D) unit-norm teacher descriptors of the unmasked
    views."""

    inputs: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor


def augment_with_teacher(
    canvases: torch.Tensor,
    partners: torch.Tensor,
    chips: torch.Tensor,
    labels: torch.Tensor,
    settings: AugmentSettings,
    generator: torch.Generator,
    teacher,
    *,
    channels_last: bool = False,
    canvas: Canvas = WIDE_CANVAS,
) -> TeacherBatch:
    """Views of uint8 canvases (N, 3, S, S) for the student and the teacher alike (see the
    module docstring). partners: other photos' canvases (N, 3, S, S) for mixup; chips: (N, 2, 3)
    dlib chip geometry of each photo; teacher: an object with `describe(chips)`, e.g.
    `fmr.train.teacher.OnlineTeacher`."""
    views = sample_views(canvases.shape[0], settings.views(), generator, canvases.device)
    rendered = render_canvases(canvases, partners, views, canvas)
    targets = teacher.describe(cut(rendered, chip_to_canvas(views, chips, canvas), CHIP_SIZE))
    student = _student_view(rendered, views, canvas, settings, generator)
    labels = torch.where(mixed(views), torch.full_like(labels, -1), labels)
    return TeacherBatch(normalise(student, channels_last), labels, targets)
