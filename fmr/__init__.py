"""fmr: masked face recognition.

Detection and alignment (`fmr.faces`), synthetic masks (`fmr.masks`), IResNet and ResSaNet
backbones (`fmr.models`), margin losses (`fmr.losses`), data formats (`fmr.data`), metrics
(`fmr.metrics`), model files and cards (`fmr.modelfile`, `fmr.cards`), verification
(`fmr.verify`), training (`fmr.train`), evaluation protocols (`fmr.eval`), pipelines
(`fmr.pipelines`: preparing packs, embedding image lists). The layers: docs/architecture.md.

Importing `fmr` itself is cheap: sub-packages load torch, dlib or MTCNN only when used.
"""

from fmr.errors import FmrError

__version__ = "0.1.0"
__all__ = ["FmrError", "__version__"]
