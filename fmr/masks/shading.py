"""The maths of lighting and blending a mask into a face, written once for numpy and torch.

`fmr.masks.render.composite` (one photo, numpy) and `fmr.masks.tensor.mask_batch` (a training
batch, torch) both call these functions. Arrays are channel-last (..., 3) in both; each function
works on numpy arrays and torch tensors alike (`xp` picks the library where it matters), so a
batch dimension in front is fine. How each caller measures the photo's light (a Gaussian blur of
one photo, an average pool over a batch) stays its own.
"""

from __future__ import annotations

import numpy as np

MIN_CONTRAST = 55.0  # lit mask colour vs skin / key points: RGB distance
WHITE_LEVEL = 236.0  # a white mask is no brighter than the photo's highlights at this level
GUARD_STEPS = 12  # lighter and darker candidates tried by the contrast guard


def _is_numpy(x) -> bool:
    return isinstance(x, np.ndarray | np.generic | float | int)


def luminance(rgb):
    """Luminance (ITU-R 601) of channel-last RGB (..., 3)."""
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def photo_gain(white, mean_rgb):
    """How the photo is exposed and tinted: (..., 3) gain on a mask's colour.

    white: the photo's highlight luminance (99.5th percentile), (...) or a number; mean_rgb:
    its mean colour plus one, (..., 3). A white mask is no brighter than the highlights
    (exposure in [0.35, 1]) and takes a little of the photo's colour cast (each channel within
    12% of grey).
    """
    if _is_numpy(mean_rgb):
        exposure = float(np.clip(white / WHITE_LEVEL, 0.35, 1.0)) if np.ndim(white) == 0 else (
            np.clip(white / WHITE_LEVEL, 0.35, 1.0)[..., None])
        cast = np.clip((mean_rgb / mean_rgb.mean(-1, keepdims=True)) ** 0.35, 0.88, 1.12)
        return (exposure * cast).astype(np.float32)
    exposure = (white / WHITE_LEVEL).clamp(0.35, 1.0)[..., None]
    cast = ((mean_rgb / mean_rgb.mean(-1, keepdim=True)) ** 0.35).clamp(0.88, 1.12)
    return exposure * cast


def face_light(blurred, face_level):
    """The face's own light and shadow on the mask: blurred luminance (..., h, w) relative to the
    face's mean level (...), softened: a factor in [0.5, 1.4] ** 0.7."""
    if _is_numpy(blurred):
        return np.clip((blurred + 1.0) * (1.0 / face_level), 0.5, 1.4) ** 0.7
    return ((blurred + 1.0) / face_level[..., None, None]).clamp(0.5, 1.4) ** 0.7


def guard_candidates(colour):
    """The colours the contrast guard tries, in order of the size of the change: the colour
    itself, then 12 steps darker and lighter, interleaved: (..., 25, 3)."""
    if _is_numpy(colour):
        steps = np.linspace(0.08, 1.0, GUARD_STEPS, dtype=np.float32)[:, None]
        colour = np.asarray(colour, np.float32)
        moved = np.stack([colour[..., None, :] * (1 - steps),
                          colour[..., None, :] + (255 - colour[..., None, :]) * steps], axis=-2)
        return np.concatenate([colour[..., None, :],
                               moved.reshape(*colour.shape[:-1], -1, 3)], axis=-2)
    import torch

    steps = torch.linspace(0.08, 1.0, GUARD_STEPS, device=colour.device)[:, None]
    moved = torch.stack([colour[..., None, :] * (1 - steps),
                         colour[..., None, :] + (255 - colour[..., None, :]) * steps], dim=-2)
    return torch.cat([colour[..., None, :], moved.reshape(*colour.shape[:-1], -1, 3)], dim=-2)


def guard_contrast(colour, references, gain):
    """Colour (..., 3) moved lighter or darker until, lit by `gain` (..., 3), it differs by at
    least MIN_CONTRAST from every reference colour (..., R, 3); unchanged when it already does.
    When no candidate is far enough, the one farthest from the references is used."""
    candidates = guard_candidates(colour)
    lit = candidates * gain[..., None, :]
    if _is_numpy(candidates):
        distance = np.sqrt(((lit[..., :, None, :] - references[..., None, :, :]) ** 2).sum(-1))
        distance = distance.min(-1)
        ok = distance >= MIN_CONTRAST
        first = np.where(ok.any(-1), ok.argmax(-1), distance.argmax(-1))
        return np.take_along_axis(candidates, first[..., None, None], -2)[..., 0, :].astype(
            np.float32)
    import torch

    distance = torch.cdist(lit, references).amin(dim=-1)
    ok = distance >= MIN_CONTRAST
    first = torch.where(ok.any(-1), ok.float().argmax(-1), distance.argmax(-1))
    return torch.take_along_dim(candidates, first[..., None, None], -2)[..., 0, :]


def lit_layers(albedo, shade, alpha, over_rgb, over_alpha, light, gain):
    """The mask's colour, lit and premultiplied by its coverage, and the coverage itself.

    albedo (..., h, w, 3) or (3,): the fabric's colour; shade, alpha, over_alpha, light
    (..., h, w); over_rgb (..., h, w, 3): parts drawn over the body (straps, valves); gain
    (..., 3). Returns (lit (..., h, w, 3), coverage (..., h, w, 1)); `clip_lit` bounds lit.
    """
    a_over = over_alpha[..., None]
    a_body = alpha[..., None] * (1 - a_over)
    total = a_body + a_over
    premultiplied = albedo * (shade[..., None] * a_body) + over_rgb * a_over
    return premultiplied * (light[..., None] * gain[..., None, None, :]), total


def clip_lit(lit, total):
    """Premultiplied colour within [0, 255 x coverage] (in place for numpy)."""
    if _is_numpy(lit):
        lit = np.clip(lit, 0, None)
        return np.minimum(lit, 255.0 * total, out=lit)
    import torch

    return torch.minimum(lit.clamp(min=0), 255.0 * total)


def blend(roi, lit, total):
    """The photo `roi` (..., h, w, 3) under the lit, premultiplied mask:
    roi (1 - coverage) + lit."""
    return roi * (1 - total) + lit
