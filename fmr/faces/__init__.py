"""From any photo to an aligned 112x112 face: loading, detection, multi-face policy, alignment.

    image = load_image("photo.jpg")            # RGB uint8 (H, W, 3)
    face = find_face(image)                    # the main face: box, score, 5 landmarks
    crop = align_face(image, face.landmarks)   # (112, 112, 3) on the ArcFace template
"""

from fmr.errors import FaceError
from fmr.faces.align import (
    ARCFACE_TEMPLATE,
    align_face,
    alignment_matrix,
    similarity_transform,
    template_landmarks,
    transform_points,
)
from fmr.faces.detect import Face, detect_faces, is_aligned_crop, template_face
from fmr.faces.io import load_image
from fmr.faces.landmarks import landmarks68
from fmr.faces.policy import MULTI_FACE_POLICIES, find_face, select_face

__all__ = [
    "ARCFACE_TEMPLATE",
    "MULTI_FACE_POLICIES",
    "Face",
    "FaceError",
    "align_face",
    "alignment_matrix",
    "detect_faces",
    "find_face",
    "is_aligned_crop",
    "landmarks68",
    "load_image",
    "select_face",
    "similarity_transform",
    "template_face",
    "template_landmarks",
    "transform_points",
]
