"""Consistent distillation views (`fmr.train.views`, `fmr.train.augment.augment_with_teacher`)
and the PyTorch port of dlib's network (`fmr.models.dlib_resnet`), on real photos of
training-side LFW people: the canvas reproduces the aligned crop and dlib's own chip, the port
reproduces dlib's descriptors, and the teacher's target belongs to the student's view."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmr.faces import align_face, find_face, load_image
from fmr.faces.align import WIDE_CANVAS
from fmr.pipelines.prepare import wide_canvas
from fmr.train.augment import AugmentSettings, augment_with_teacher
from fmr.train.views import (
    CHIP_SIZE,
    FIELD,
    ViewSettings,
    chip_to_canvas,
    cut,
    identity_views,
    render_canvases,
    sample_views,
    student_to_canvas,
)

# Training-side people (not in LFW pair folds 6-10).
PEOPLE = ("Colin_Powell_0001", "Colin_Powell_0002", "Tony_Blair_0001", "Donald_Rumsfeld_0001")


@pytest.fixture(scope="module")
def reference():
    from fmr.verify.dlib_reference import DlibReference

    return DlibReference()


@pytest.fixture(scope="module")
def faces(lfw_dir, reference):
    """[(photo, face, canvas, chip_to_template, dlib's own chip)] for PEOPLE."""
    found = []
    for stem in PEOPLE:
        path = lfw_dir / "images" / stem.rsplit("_", 1)[0] / f"{stem}.jpg"
        image = load_image(path)
        face = find_face(image, "center", path.name)
        canvas, chip = wide_canvas(image, face, reference)
        found.append((image, face, canvas, chip, reference.chip(image, face)))
    return found


def _canvas_batch(faces):
    canvases = torch.from_numpy(np.stack([f[2] for f in faces])).permute(0, 3, 1, 2)
    chips = torch.from_numpy(np.stack([f[3] for f in faces]))
    return canvases, chips


def test_identity_view_reproduces_the_crop_and_dlibs_chip(faces):
    canvases, chips = _canvas_batch(faces)
    views = identity_views(len(faces))
    rendered = render_canvases(canvases, None, views, WIDE_CANVAS)
    crops = cut(rendered, student_to_canvas(views, WIDE_CANVAS), 112).permute(0, 2, 3, 1)
    dlib_chips = cut(rendered, chip_to_canvas(views, chips, WIDE_CANVAS), CHIP_SIZE)
    for (image, face, _, _, dlib_chip), crop, chip in zip(
            faces, crops.numpy(), dlib_chips.permute(0, 2, 3, 1).numpy(), strict=True):
        # Two interpolations instead of one: within a grey level on average.
        assert np.abs(crop - align_face(image, face.landmarks)).mean() < 1.0
        assert np.abs(chip - dlib_chip).mean() < 1.5


def test_port_reproduces_dlibs_descriptors(faces, reference):
    from fmr.models.dlib_resnet import load_dlib_resnet
    from fmr.verify.dlib_reference import model_path

    port = load_dlib_resnet(model_path())
    chips = np.stack([f[4] for f in faces])
    theirs = reference.embed_chips(list(chips))
    ours = port.embed_chips(chips)
    assert ours.shape == (len(faces), 128)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    # and it is not trivially constant: different people stay apart
    assert float(ours[0] @ ours[2]) < float(ours[0] @ ours[1])


def test_a_flipped_view_is_the_mirror_image(faces):
    canvases, _ = _canvas_batch(faces)
    views = identity_views(len(faces))
    plain = cut(render_canvases(canvases, None, views, WIDE_CANVAS),
                student_to_canvas(views, WIDE_CANVAS), 112)
    views[:, FIELD["flip"]] = 1.0
    flipped = cut(render_canvases(canvases, None, views, WIDE_CANVAS),
                  student_to_canvas(views, WIDE_CANVAS), 112)
    assert torch.allclose(flipped, plain.flip(3), atol=1e-3)


def test_teacher_targets_belong_to_the_students_view(faces):
    """The target of each view is the teacher's descriptor of that very view: rotating,
    blurring or recolouring the view moves the target, and a masked student view keeps the
    target of the unmasked one."""
    from fmr.train.device import choose_policy
    from fmr.train.teacher import OnlineTeacher

    teacher = OnlineTeacher(choose_policy(torch.device("cpu"), "fp32"))
    canvases, chips = _canvas_batch(faces)
    labels = torch.arange(len(faces))
    strong = AugmentSettings(mask_prob=0.0, rotation=25.0, blur_prob=1.0, blur_sigma=2.5,
                             brightness=0.5)
    calm = AugmentSettings(mask_prob=0.0, rotation=0.0, scale_jitter=0.0, translate=0.0,
                           flip_prob=0.0, brightness=0.0, contrast=0.0, saturation=0.0,
                           grayscale_prob=0.0)
    fixed = augment_with_teacher(canvases, canvases, chips, labels, calm,
                                 torch.Generator().manual_seed(0), teacher)
    moved = augment_with_teacher(canvases, canvases, chips, labels, strong,
                                 torch.Generator().manual_seed(0), teacher)
    assert torch.equal(fixed.labels, labels)
    similarity = (fixed.targets * moved.targets).sum(1)
    assert (similarity < 0.999).all() and (similarity > 0.8).all()  # same person, other view
    masked_settings = AugmentSettings(**{**calm.__dict__, "mask_prob": 1.0})
    masked = augment_with_teacher(canvases, canvases, chips, labels, masked_settings,
                                  torch.Generator().manual_seed(0), teacher)
    assert torch.allclose(masked.targets, fixed.targets, atol=1e-5)
    lower = (masked.inputs - fixed.inputs)[:, :, 85:100, 40:72].abs().mean()
    assert lower > 0.1  # the student's view is masked, its target is not


def test_mixed_views_have_no_label_and_a_blended_target(faces):
    from fmr.train.device import choose_policy
    from fmr.train.teacher import OnlineTeacher

    teacher = OnlineTeacher(choose_policy(torch.device("cpu"), "fp32"))
    canvases, chips = _canvas_batch(faces)
    partners = canvases.roll(1, 0)
    labels = torch.arange(len(faces))
    settings = AugmentSettings(mask_prob=0.0, mix_prob=1.0, rotation=0.0, flip_prob=0.0)
    out = augment_with_teacher(canvases, partners, chips, labels, settings,
                               torch.Generator().manual_seed(3), teacher)
    assert (out.labels == -1).all()
    alone = augment_with_teacher(canvases, partners, chips, labels,
                                 AugmentSettings(**{**settings.__dict__, "mix_prob": 0.0}),
                                 torch.Generator().manual_seed(3), teacher)
    assert ((out.targets * alone.targets).sum(1) < 0.9999).all()


def test_random_views_are_seeded_and_within_bounds():
    settings = ViewSettings(rotation=10, zoom=0.1, shift=5, blur_prob=0.5, mix_prob=0.5)
    a = sample_views(500, settings, torch.Generator().manual_seed(1))
    b = sample_views(500, settings, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert a[:, FIELD["rotation"]].abs().max() <= 10
    assert ((a[:, FIELD["zoom"]] - 1).abs() <= 0.1 + 1e-6).all()
    mixed = a[:, FIELD["partner"]] >= 0
    assert 0.35 < mixed.float().mean() < 0.65
    assert (a[mixed, FIELD["mix"]] >= 0.5).all() and (a[~mixed, FIELD["mix"]] == 1).all()
    blurred = a[:, FIELD["blur"]] > 0
    assert 0.35 < blurred.float().mean() < 0.65


def test_a_mask_on_dlibs_chip_sits_where_it_sits_on_the_aligned_crop(faces):
    """A mask drawn on the chip through `chip_geometry_theta` covers the same part of the face as
    the same mask drawn on the view's aligned crop (`student_geometry_theta`): where the two
    images overlap, the masked pixels agree (IoU >= 0.95), for plain and for flipped views."""
    from fmr.masks.tensor import mask_batch
    from fmr.train.views import chip_geometry_theta, student_geometry_theta

    canvases, chips = _canvas_batch(faces)
    u, v = torch.meshgrid(torch.arange(CHIP_SIZE), torch.arange(CHIP_SIZE),
                          indexing="xy")
    chip_pixels = torch.stack([u.flatten(), v.flatten(), torch.ones(CHIP_SIZE ** 2)]).float()
    for flip in (0.0, 1.0):
        views = identity_views(len(faces))
        views[:, FIELD["flip"]] = flip
        rendered = render_canvases(canvases, None, views, WIDE_CANVAS)
        crops = cut(rendered, student_to_canvas(views, WIDE_CANVAS), 112)
        plain_chips = cut(rendered, chip_to_canvas(views, chips, WIDE_CANVAS), CHIP_SIZE)
        on_crop = mask_batch(crops, 1.0, styles=("surgical",),
                             generator=torch.Generator().manual_seed(3),
                             geometry=student_geometry_theta(views))
        on_chip = mask_batch(plain_chips, 1.0, styles=("surgical",),
                             generator=torch.Generator().manual_seed(3),
                             geometry=chip_geometry_theta(views, chips))
        assert on_chip.shape == plain_chips.shape
        for i in range(len(faces)):
            crop_masked = (on_crop[i] - crops[i]).abs().sum(0) > 30
            chip_masked = ((on_chip[i] - plain_chips[i]).abs().sum(0) > 30).flatten()
            # Each chip pixel in the view's template coordinates = the crop's pixel there.
            x, y = (chips[i] @ chip_pixels).round().long()
            inside = (x >= 2) & (x < 110) & (y >= 2) & (y < 110)
            on_both = crop_masked[y[inside], x[inside]], chip_masked[inside]
            iou = (on_both[0] & on_both[1]).sum() / (on_both[0] | on_both[1]).sum()
            assert iou >= 0.95, (i, flip, float(iou))
            assert on_both[1].float().mean() > 0.1  # the mask is there at all
