"""Face verification: load a backbone, embed faces, compare them with a calibrated threshold.

    from fmr.verify import load_backbone, compare, verify_pair
    result = verify_pair("a.jpg", "b.jpg", backbones="all")   # the `fmr verify --json` object
    embedder = load_backbone("iresnet")                        # or "ressanet", "dlib", a path
    emb_a, emb_b = embedder.embed_face(img_a, face_a), embedder.embed_face(img_b, face_b)
    comparison = compare(emb_a, emb_b, embedder)
    comparison.verdict, comparison.similarity, comparison.far_at_score

Each prepared face carries the mask detector's `mask_probability`
(`fmr.verify.mask_detector`); a pair with a face found masked (>= `MASK_PROBABILITY_THRESHOLD`)
or a synthetic mask is compared with the masked calibration (`mask_decision`).

`available_backbones()` says which families have a checkpoint (cheap: reads model cards only).
"""

from fmr.verify.compare import Comparison, compare
from fmr.verify.embedder import DlibEmbedder, Embedder, TorchEmbedder, load_backbone
from fmr.verify.lookup import (
    FAMILIES,
    available_backbones,
    find_checkpoint,
    missing_reason,
)
from fmr.verify.mask_detector import (
    MASK_PROBABILITY_THRESHOLD,
    MaskDecision,
    MaskDetector,
    load_mask_detector,
    mask_decision,
)
from fmr.verify.pipeline import PreparedFace, prepare_face, resolve_backbones, verify_pair

__all__ = [
    "FAMILIES",
    "MASK_PROBABILITY_THRESHOLD",
    "Comparison",
    "DlibEmbedder",
    "Embedder",
    "MaskDecision",
    "MaskDetector",
    "PreparedFace",
    "TorchEmbedder",
    "available_backbones",
    "compare",
    "find_checkpoint",
    "load_backbone",
    "load_mask_detector",
    "mask_decision",
    "missing_reason",
    "prepare_face",
    "resolve_backbones",
    "verify_pair",
]
