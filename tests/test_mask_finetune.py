"""`train.py mask-finetune` on a small canvas pack of the shared data: it trains dlib's network
against its frozen self, exports a checkpoint that fmr loads as the `dlib-mask` family, keeps
what `--layers last` freezes, and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fmr.cli import main as fmr_main
from fmr.train.cli import main as train_main


@pytest.fixture(scope="module")
def canvas_pack(tmp_path_factory, shared_data) -> Path:
    out = tmp_path_factory.mktemp("finetune") / "pack"
    code = fmr_main(["prepare", "--preset", "shared", "--out", str(out), "--quiet",
                     "--max-identities", "6", "--max-validation-identities", "2",
                     "--max-images-per-identity", "2", "--canvases"])
    assert code == 0
    return out


def _events(run: Path, kind: str) -> list[dict]:
    lines = (run / "log.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def _finetune(pack: Path, run: Path, *extra: str) -> int:
    return train_main(["mask-finetune", "--data", str(pack), "--out", str(run), "--steps", "4",
                       "--batch-size", "4", "--val-every", "2", "--warmup-steps", "1",
                       "--precision", "fp32", "--threads", "1", "--no-progress", *extra])


def test_finetune_exports_a_dlib_mask_checkpoint_that_routes_masked_faces(canvas_pack, tmp_path,
                                                                           photos_dir):
    from fmr.verify import load_backbone

    run = tmp_path / "run"
    assert _finetune(canvas_pack, run, "--lr", "1e-3", "--no-val-at-start") == 0
    validations = _events(run, "validation")
    assert [v["step"] for v in validations] == [2, 4]
    for v in validations:
        assert 0 <= v["unmasked"]["tar_at_far_1e-3"] <= 1 and "masked" in v
    end = _events(run, "end")[-1]
    assert end["step"] == 4

    card = json.loads((run / "best.json").read_text())
    assert card["architecture"] == "dlib_resnet_v1" and card["embedding_size"] == 128
    assert card["calibration"] and card["calibration_masked"]
    model = load_backbone(str(run / "best.safetensors"))
    assert model.family == "dlib-mask" and not model.reads_aligned_crops
    reference = load_backbone("dlib")
    from fmr.faces import find_face, load_image
    from fmr.verify.pipeline import mask_and_redetect

    # A plain face goes through dlib's own weights: exactly dlib's descriptor.
    image = load_image(next((photos_dir / "obama").iterdir()))
    face = find_face(image)
    ours, theirs = model.embed_face(image, face), reference.embed_face(image, face)
    assert ours.shape == (128,) and abs(np.linalg.norm(ours) - 1) < 1e-4
    assert float(ours @ theirs) > 0.9999
    # A masked face goes through the fine-tune (trained at a high rate here, so it differs).
    masked_image, masked_face, _ = mask_and_redetect(image, face, "surgical", rng=0)
    assert model.masked([(masked_image, masked_face)])[0]
    ours = model.embed_face(masked_image, masked_face)
    theirs = reference.embed_face(masked_image, masked_face)
    assert card["training"]["step"] in (2, 4)
    student = model.model.embed_chips(model.chip(masked_image, masked_face)[None])[0]
    np.testing.assert_allclose(ours, student, atol=1e-5)
    assert float(ours @ theirs) < 0.9999

    # The trained weights moved: the state after 4 steps differs from dlib's.
    state = torch.load(run / "state.pt", weights_only=False)
    start = load_backbone("dlib")  # noqa: F841 (the reference stays loadable beside it)
    from fmr.models.dlib_resnet import load_dlib_resnet
    from fmr.train.teacher import dlib_weights_path

    dlib_weights = load_dlib_resnet(dlib_weights_path()).state_dict()
    moved = [k for k, v in state["student"].items() if not torch.equal(v, dlib_weights[k])]
    assert moved


def test_last_layers_only_keeps_the_early_layers_and_resumes(canvas_pack, tmp_path):
    run = tmp_path / "last"
    assert _finetune(canvas_pack, run, "--layers", "last", "--lr", "1e-3") == 0
    assert [v["step"] for v in _events(run, "validation")] == [0, 2, 4]  # dlib first
    from fmr.models.dlib_resnet import load_dlib_resnet
    from fmr.train.teacher import dlib_weights_path

    dlib_weights = load_dlib_resnet(dlib_weights_path()).state_dict()
    state = torch.load(run / "state.pt", weights_only=False)["student"]
    assert torch.equal(state["conv1.weight"], dlib_weights["conv1.weight"])
    assert torch.equal(state["blocks.0.conv1.weight"], dlib_weights["blocks.0.conv1.weight"])
    assert not torch.equal(state["fc.weight"], dlib_weights["fc.weight"])

    # --resume continues from the saved step to the new --steps.
    assert train_main(["mask-finetune", "--data", str(canvas_pack), "--out", str(run),
                       "--steps", "6", "--batch-size", "4", "--val-every", "2",
                       "--layers", "last", "--precision", "fp32", "--threads", "1",
                       "--no-progress", "--resume"]) == 0
    assert _events(run, "end")[-1]["step"] == 6


def test_a_pack_without_canvases_is_refused_with_a_clear_message(tmp_path, shared_data,
                                                                 capsys):
    pack = tmp_path / "plain"
    assert fmr_main(["prepare", "--preset", "shared", "--out", str(pack), "--quiet",
                     "--max-identities", "4", "--max-validation-identities", "2",
                     "--max-images-per-identity", "2"]) == 0
    assert _finetune(pack, tmp_path / "run") == 2
    assert "--canvases" in capsys.readouterr().err
