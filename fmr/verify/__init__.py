"""Face verification: load a backbone, embed faces, compare them with a calibrated threshold.

    from fmr.verify import load_backbone, compare, verify_pair
    result = verify_pair("a.jpg", "b.jpg", backbones="all")   # the `fmr verify --json` object
    embedder = load_backbone("iresnet")                        # or "ressanet", "dlib", a path
    emb_a, emb_b = embedder.embed_face(img_a, face_a), embedder.embed_face(img_b, face_b)
    comparison = compare(emb_a, emb_b, embedder)
    comparison.verdict, comparison.similarity, comparison.far_at_score

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
from fmr.verify.pipeline import PreparedFace, prepare_face, resolve_backbones, verify_pair

__all__ = [
    "FAMILIES",
    "Comparison",
    "DlibEmbedder",
    "Embedder",
    "PreparedFace",
    "TorchEmbedder",
    "available_backbones",
    "compare",
    "find_checkpoint",
    "load_backbone",
    "missing_reason",
    "prepare_face",
    "resolve_backbones",
    "verify_pair",
]
