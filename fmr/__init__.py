"""fmr: masked face recognition.

Detection and alignment (`fmr.faces`), synthetic masks (`fmr.masks`), IResNet and ResSaNet
backbones (`fmr.models`), margin losses (`fmr.losses`), data preparation (`fmr.data`),
training (`fmr.train`), evaluation (`fmr.eval`) and verification (`fmr.verify`).

Importing `fmr` itself is cheap: sub-packages load torch, dlib or MTCNN only when used.
"""

from fmr.errors import FmrError

__version__ = "0.1.0"
__all__ = ["FmrError", "__version__"]
