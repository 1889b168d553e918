"""The online teacher: dlib's face-recognition network, frozen, on the training device.

With `--distill-targets consistent` the teacher describes every augmented view the student
sees (its own 150x150 chip cut from the same rendered canvas, `fmr.train.views`), so the target
always belongs to the student's input. The network is dlib's, run by the PyTorch port in
`fmr.models.dlib_resnet` (batched, ~10x faster than dlib itself here, and available where dlib
is not); its weights come from face_recognition_models' `.dat` file.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from fmr.errors import FmrError
from fmr.train.device import DevicePolicy

TEACHER_NAME = "dlib_face_recognition_resnet_model_v1 (PyTorch port, fmr.models.dlib_resnet)"


def dlib_weights_path() -> Path:
    """dlib's descriptor network file from face_recognition_models (no dlib import needed)."""
    from fmr.faces.landmarks import dlib_model_path

    return dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")


class OnlineTeacher:
    """Unit-norm (N, 128) dlib descriptors of float (N, 3, 150, 150) RGB chips in [0, 255]."""

    name = TEACHER_NAME
    dimension = 128

    def __init__(self, policy: DevicePolicy, path: str | Path | None = None) -> None:
        from fmr.models.dlib_resnet import DlibFormatError, load_dlib_resnet

        try:
            path = Path(path) if path else dlib_weights_path()
            model = load_dlib_resnet(path)
        except (OSError, DlibFormatError, FmrError) as exc:
            raise FmrError(
                f"the online teacher (dlib's network) cannot be loaded: {exc}. It needs the "
                "face_recognition_models package; without it use --distill-targets fixed"
            ) from exc
        self.policy = policy
        self.model = policy.prepare_model(model).eval().requires_grad_(False)

    @torch.no_grad()
    def describe(self, chips: torch.Tensor) -> torch.Tensor:
        with self.policy.autocast():
            out = self.model(self.policy.prepare_input(chips))
        return F.normalize(out.float(), dim=1)
