"""The numpy renderer (`fmr.masks.render.composite`, one photo) and the torch training path
(`fmr.masks.tensor.mask_batch`, a batch) light and blend a mask with the same maths
(`fmr.masks.shading`): the same inputs give the same numbers in numpy and in torch, one photo at
a time or as a batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmr.masks import shading


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    n, h, w = 3, 9, 7

    def f(*shape, low=0.0, high=1.0):
        return rng.uniform(low, high, shape).astype(np.float32)

    return dict(
        roi=f(n, h, w, 3, high=255), albedo=f(n, h, w, 3, high=255), shade=f(n, h, w, low=0.2,
        high=1.6), alpha=f(n, h, w), over_rgb=f(n, h, w, 3, high=255), over_alpha=f(n, h, w),
        blurred=f(n, h, w, high=255), level=f(n, low=50, high=200), white=f(n, low=60, high=255),
        mean_rgb=f(n, 3, low=20, high=200), colour=f(n, 3, high=255),
        references=f(n, 6, 3, high=255),
    )


def _numpy_one(s, i):
    gain = shading.photo_gain(float(s["white"][i]), s["mean_rgb"][i])
    light = shading.face_light(s["blurred"][i], float(s["level"][i]))
    lit, total = shading.lit_layers(s["albedo"][i], s["shade"][i], s["alpha"][i],
                                    s["over_rgb"][i], s["over_alpha"][i], light, gain)
    out = shading.blend(s["roi"][i], shading.clip_lit(lit, total), total)
    guarded = shading.guard_contrast(s["colour"][i], s["references"][i], gain)
    return out, guarded


def _torch_batch(s):
    t = {k: torch.from_numpy(v) for k, v in s.items()}
    gain = shading.photo_gain(t["white"], t["mean_rgb"])
    light = shading.face_light(t["blurred"], t["level"])
    lit, total = shading.lit_layers(t["albedo"], t["shade"], t["alpha"], t["over_rgb"],
                                    t["over_alpha"], light, gain)
    out = shading.blend(t["roi"], shading.clip_lit(lit, total), total)
    guarded = shading.guard_contrast(t["colour"], t["references"], gain)
    return out.numpy(), guarded.numpy()


def test_numpy_per_photo_and_torch_batch_agree(scene):
    batch_out, batch_guarded = _torch_batch(scene)
    for i in range(len(scene["roi"])):
        out, guarded = _numpy_one(scene, i)
        np.testing.assert_allclose(out, batch_out[i], rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(guarded, batch_guarded[i], rtol=1e-5, atol=1e-3)
    assert batch_out.min() >= 0 and batch_out.max() <= 255


def test_the_guard_moves_a_colour_only_when_it_is_too_close():
    gain = np.ones(3, np.float32)
    skin = np.array([[200.0, 150.0, 130.0]], np.float32)
    far = np.array([20.0, 40.0, 200.0], np.float32)
    assert shading.guard_contrast(far, skin, gain).tolist() == far.tolist()
    moved = shading.guard_contrast(skin[0] + 5, skin, gain)
    assert np.linalg.norm(moved - skin[0]) >= shading.MIN_CONTRAST
    torch_moved = shading.guard_contrast(torch.from_numpy(skin + 5), torch.from_numpy(skin[None]),
                                         torch.from_numpy(gain[None]))
    np.testing.assert_allclose(torch_moved.numpy()[0], moved, atol=1e-3)
