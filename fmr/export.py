"""ONNX export of fmr backbones, checked against PyTorch under onnxruntime.

The ONNX model has one input `images`: float32 (batch, 3, 112, 112), RGB, normalised
(x/255 - 0.5) / 0.5 (what `fmr.models.normalize_input` returns), with a dynamic batch
dimension, and one output `embeddings`: float32 (batch, embedding_size), not L2-normalised
(exactly what the PyTorch model returns; normalise before comparing with cosines). The model
card is stored as JSON in the ONNX metadata under "fmr_card".
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
# the parity check passes when |onnx - torch| <= ABS_TOLERANCE + REL_TOLERANCE * |torch|
ABS_TOLERANCE = 1e-4
REL_TOLERANCE = 1e-5
CHECK_BATCH_SIZES = (1, 3)  # two sizes, neither the size traced, to exercise the dynamic batch


@dataclass
class ParityCheck:
    """onnxruntime against PyTorch on random RGB images normalised as the model expects."""

    batch_sizes: tuple[int, ...]
    max_abs_diff: float  # max |onnx - torch| over all outputs
    max_abs_value: float  # max |torch| (the scale the difference compares to)
    passed: bool

    def summary(self) -> str:
        sizes = " and ".join(str(b) for b in self.batch_sizes)
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"onnxruntime check at batch {sizes}: max |onnx - torch| = {self.max_abs_diff:.2e} "
            f"(outputs up to {self.max_abs_value:.3g}; limit {ABS_TOLERANCE:g} + "
            f"{REL_TOLERANCE:g} x |torch|): {verdict}"
        )


def random_normalised_images(batch_size: int, input_size: int = 112, seed: int = 0) -> torch.Tensor:
    """(batch, 3, S, S) float32 uniform RGB noise in [0, 255], normalised as fmr models expect."""
    from fmr.models import normalize_input

    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (batch_size, 3, input_size, input_size), generator=generator)
    return normalize_input(pixels.to(torch.uint8))


def check_onnx(
    model: nn.Module, onnx_path: str | Path, batch_sizes=CHECK_BATCH_SIZES, input_size: int = 112
) -> ParityCheck:
    """Runs `onnx_path` under onnxruntime (CPU) and `model` under PyTorch (CPU, fp32, eval) on
    the same random images; compares the embeddings."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model = model.eval()
    device = next(model.parameters()).device
    worst_diff, worst_value, passed = 0.0, 0.0, True
    for seed, batch_size in enumerate(batch_sizes):
        images = random_normalised_images(batch_size, input_size, seed)
        with torch.inference_mode():
            expected = model(images.to(device)).float().cpu().numpy()
        actual = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]
        if actual.shape != expected.shape:
            largest = float(np.abs(expected).max())
            return ParityCheck(tuple(batch_sizes), float("inf"), largest, False)
        diff = np.abs(actual.astype(np.float64) - expected)
        passed &= bool(np.all(diff <= ABS_TOLERANCE + REL_TOLERANCE * np.abs(expected)))
        worst_diff = max(worst_diff, float(diff.max()))
        worst_value = max(worst_value, float(np.abs(expected).max()))
    return ParityCheck(tuple(batch_sizes), worst_diff, worst_value, passed)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    card=None,
    input_size: int = 112,
    opset: int | None = None,
    check: bool = True,
) -> ParityCheck | None:
    """Writes `model` to `path` as ONNX (one file, dynamic batch; see the module docstring) and,
    when `check`, verifies it under onnxruntime. card: the `ModelCard` to embed (optional).
    Returns the parity check (None when not checked). The model is exported on CPU in fp32.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().cpu().eval()
    example = random_normalised_images(2, input_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    # the exporter logs each step and warns about its own internals; the user needs none of it
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    program.model.doc_string = (
        f"fmr face embedding model. Input '{INPUT_NAME}': float32 (batch, 3, {input_size}, "
        f"{input_size}) RGB, (x/255 - 0.5) / 0.5. Output '{OUTPUT_NAME}': float32 (batch, E), "
        "not L2-normalised."
    )
    if card is not None:
        program.model.metadata_props["fmr_card"] = json.dumps(dataclasses.asdict(card))
    program.save(str(path), external_data=False)
    return check_onnx(model, path, input_size=input_size) if check else None
