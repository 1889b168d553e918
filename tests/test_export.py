"""`fmr export` (ONNX parity under onnxruntime, conversion to safetensors) and `fmr models`."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from fmr.cli import build_parser, main
from fmr.export import check_onnx
from fmr.modelfile import ModelCard, load_model_file, save_model_file
from fmr.models import create_model, normalize_input

EXPORTED = ("iresnet18", "ressanet18")


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def warmed(name: str, seed: int = 0) -> torch.nn.Module:
    """Random init, BN statistics from two batches: embeddings of a realistic scale."""
    torch.manual_seed(seed)
    model = create_model(name)
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, 112, 112))
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (checkpoint, onnx file, command output), each exported once by `fmr export`."""
    folder = tmp_path_factory.mktemp("export")
    result = {}
    for name in EXPORTED:
        checkpoint = save_model_file(folder / name, warmed(name), ModelCard(name, name), "fp32")
        onnx_path = folder / f"{name}.onnx"
        result[name] = (checkpoint, onnx_path, run_cli("export", str(checkpoint), "--onnx",
                                                       str(onnx_path)))
    return result


@pytest.mark.parametrize("name", EXPORTED)
def test_onnx_matches_pytorch_under_onnxruntime(exported, name):
    checkpoint, onnx_path, (status, out, err) = exported[name]
    assert status == 0, err
    assert "onnxruntime check at batch 1 and 3" in out and out.rstrip().endswith(": ok")

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    assert given.name == "images" and isinstance(given.shape[0], str)  # dynamic batch
    assert given.shape[1:] == [3, 112, 112]
    pixels = torch.randint(0, 256, (5, 112, 112, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(9))
    images = normalize_input(pixels)
    (onnx_embeddings,) = session.run(["embeddings"], {"images": images.numpy()})
    with torch.inference_mode():
        torch_embeddings = load_model_file(checkpoint).model(images).numpy()
    assert onnx_embeddings.shape == (5, 512)
    assert np.abs(onnx_embeddings - torch_embeddings).max() < 1e-4
    assert np.abs(torch_embeddings).max() > 0.1  # a real signal, not all zeros

    metadata = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert json.loads(metadata["fmr_card"])["architecture"] == name


def test_parity_check_catches_a_small_difference(exported):
    checkpoint, onnx_path, _ = exported["iresnet18"]
    model = load_model_file(checkpoint).model
    with torch.no_grad():
        model.features.bias[7] += 1e-3  # one output off by 1e-3
    check = check_onnx(model, onnx_path, batch_sizes=(2,))
    assert not check.passed and check.max_abs_diff == pytest.approx(1e-3, rel=0.05)
    assert "FAILED" in check.summary()


def test_export_converts_insightface_pth_to_safetensors(tmp_path):
    torch.manual_seed(0)
    model = create_model("iresnet18", embedding_size=128).eval()
    torch.save(model.state_dict(), tmp_path / "backbone.pth")
    status, out, err = run_cli("export", str(tmp_path / "backbone.pth"),
                               "--safetensors", str(tmp_path / "r18"), "--storage", "fp16")
    assert status == 0, err
    assert "r18.safetensors" in out
    loaded = load_model_file(tmp_path / "r18.safetensors")
    assert loaded.card.architecture == "iresnet18" and loaded.card.storage == "fp16"
    assert "insightface" in loaded.card.notes
    images = torch.randn(2, 3, 112, 112)
    with torch.inference_mode():
        similarity = torch.nn.functional.cosine_similarity(loaded.model(images), model(images))
    assert similarity.min() > 0.9999


def test_export_usage_and_file_errors(tmp_path):
    status, _, err = run_cli("export", str(tmp_path / "missing.safetensors"), "--onnx",
                             str(tmp_path / "m.onnx"))
    assert status == 2
    assert err.count("\n") == 1 and "missing.safetensors" in err and "not found" in err
    status, _, err = run_cli("export", str(tmp_path / "x.safetensors"))
    assert status == 2 and "--onnx" in err


def test_export_help_documents_the_onnx_input():
    parser = build_parser()
    export = parser._subparsers._group_actions[0].choices["export"]
    text = export.format_help()
    assert "(x/255 - 0.5) / 0.5" in text and "RGB" in text
    assert "dynamic batch" in text and "NOT L2-normalised" in text


def test_models_command_lists_sizes():
    status, out, _ = run_cli("models")
    assert status == 0
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert list(rows) == ["iresnet18", "iresnet18_half", "iresnet34", "iresnet50", "iresnet100",
                          "iresnet200", "ressanet18", "ressanet18_half", "ressanet34",
                          "ressanet50", "ressanet100"]
    assert rows["iresnet50"] == ["43.6M", "6.31"]
    assert rows["iresnet100"] == ["65.2M", "12.09"]
