"""Embedders: one interface over fmr checkpoints (IResNet, ResSaNet, insightface backbone.pth)
and the dlib reference.

    embedder = load_backbone("iresnet")          # or "ressanet", "dlib", a checkpoint path
    vector = embedder.embed_face(image, face)    # (D,) float32, unit norm
"""

from __future__ import annotations

import functools
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fmr.cards import ModelCard, card_json, read_card
from fmr.errors import CheckpointError, FaceError
from fmr.faces.detect import Face
from fmr.files import write_text_atomically
from fmr.verify.lookup import (
    DLIB_ARCHITECTURE,
    TRAINED_FAMILIES,
    dlib_card_path,
    family_of,
    find_checkpoint,
    resolve_checkpoint,
)

BATCH_SIZE = 64


class Embedder(ABC):
    """A face-recognition model behind one interface.

    name: what the model is called (the card's name); family: "iresnet", "ressanet", "dlib" or
    the architecture of another checkpoint; card: its model card (`fmr.cards.ModelCard`);
    path: the file it came from; embedding_size: D.
    """

    name: str
    family: str
    card: ModelCard
    path: Path
    embedding_size: int
    reads_aligned_crops: bool = True  # False: it cuts its own chip from the photo (dlib's)

    @property
    def calibration(self) -> dict:
        """The card's calibration (see `fmr.metrics.calibration`); {} when never calibrated."""
        return dict(self.card.calibration)

    @property
    def calibration_masked(self) -> dict:
        """The card's calibration for a masked photo against an unmasked one; {} when never
        measured."""
        return dict(self.card.calibration_masked)

    @property
    def architecture(self) -> str:
        return self.card.architecture

    def describe(self) -> dict:
        """A short JSON-serialisable description for reports."""
        return {
            "backbone": self.family,
            "name": self.name,
            "architecture": self.architecture,
            "checkpoint": str(self.path),
            "embedding_size": self.embedding_size,
            "calibrated": bool(self.calibration),
        }

    def embed_face(self, image: np.ndarray, face: Face) -> np.ndarray:
        """Unit-norm (D,) float32 embedding of `face` in `image` (RGB uint8, the photo it was
        detected in)."""
        return self.embed_faces([(image, face)])[0]

    @abstractmethod
    def embed_faces(self, faces: Sequence[tuple[np.ndarray, Face]]) -> np.ndarray:
        """(N, D) float32 unit-norm embeddings of (image, face) pairs, computed in batches."""

    @abstractmethod
    def embed_aligned(self, crops: np.ndarray) -> np.ndarray:
        """(N, D) float32 unit-norm embeddings of aligned crops, uint8 (N, H, W, 3) RGB."""


class TorchEmbedder(Embedder):
    """An fmr checkpoint (or an insightface backbone.pth): 5-point alignment onto the ArcFace
    template at the card's input size, then the mean of the embeddings of the crop and its
    mirror image, L2-normalised."""

    def __init__(self, loaded) -> None:
        self.model = loaded.model.eval()
        self.card = loaded.card
        self.path = Path(loaded.path)
        self.family = family_of(self.card, self.path)
        self.name = self.card.name or self.path.stem
        self.embedding_size = self.card.embedding_size
        from fmr.models import InputConfig

        try:
            self.input = InputConfig.from_card(self.card)
        except ValueError as exc:
            raise CheckpointError(
                f"{self.path}: its card's input is not one fmr can feed ({exc}); fmr's models "
                "and insightface's take (x/255 - 0.5) / 0.5, RGB: fix the card if that is what "
                "the model was trained with"
            ) from None
        self.input_size = self.input.input_size

    def embed_aligned(self, crops: np.ndarray) -> np.ndarray:
        import cv2
        import torch

        from fmr.models.inputs import embed_flip_averaged

        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3:
            raise ValueError(f"expected aligned crops (N, H, W, 3), got shape {crops.shape}")
        size = self.input_size
        if crops.shape[1:3] != (size, size):
            crops = np.stack(
                [cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops]
            )
        out = np.zeros((len(crops), self.embedding_size), np.float32)
        with torch.inference_mode():
            for start in range(0, len(crops), BATCH_SIZE):
                batch = torch.from_numpy(np.ascontiguousarray(crops[start : start + BATCH_SIZE]))
                x = self.input.normalise(batch)
                out[start : start + len(x)] = embed_flip_averaged(self.model, x).numpy()
        return out

    def embed_faces(self, faces: Sequence[tuple[np.ndarray, Face]]) -> np.ndarray:
        from fmr.faces.align import align_face

        if not faces:
            return np.zeros((0, self.embedding_size), np.float32)
        crops = np.stack(
            [align_face(image, face.landmarks, self.input_size) for image, face in faces]
        )
        return self.embed_aligned(crops)


class DlibEmbedder(Embedder):
    """dlib's ResNet descriptor (see `fmr.verify.dlib_reference`), with the card and calibration
    stored in `checkpoints/dlib_reference.json`."""

    family = "dlib"
    reads_aligned_crops = False

    def __init__(self) -> None:
        import json

        from fmr.verify.dlib_reference import DlibReference, model_path

        self.reference = DlibReference()
        self.path = model_path()
        card_file = dlib_card_path()
        try:
            data = (
                json.loads(card_file.read_text()) if card_file.is_file() else _default_dlib_card()
            )
            self.card = ModelCard.from_dict(data)
        except ValueError as exc:  # bad JSON, or not a model card
            raise CheckpointError(
                f"{card_file}: not a readable model card ({exc}); restore it from git or "
                "regenerate it with `fmr eval --backbone dlib --calibrate-only --out DIR`"
            ) from exc
        self.card_path = card_file
        self.name = self.card.name
        self.embedding_size = self.reference.embedding_size

    def chip(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The 150x150 RGB uint8 chip this model reads (dlib's 5-point alignment)."""
        return self.reference.chip(image, face)

    def embed_chips(self, chips) -> np.ndarray:
        """(N, 128) float32 unit-norm descriptors of chips from `chip`."""
        return self.reference.embed_chips(chips)

    def chip_view(self, image: np.ndarray, face: Face):
        """(chip, embed) for explanations: the chip and the function that describes chips."""
        return self.chip(image, face), self.embed_chips

    def embed_faces(self, faces: Sequence[tuple[np.ndarray, Face]]) -> np.ndarray:
        return self.embed_chips([self.chip(image, face) for image, face in faces])

    def embed_aligned(self, crops: np.ndarray) -> np.ndarray:
        raise FaceError(
            "the dlib reference aligns faces itself (its own 5 points and 150x150 chip) and "
            "needs the original photos, not aligned crops; drop --aligned or use iresnet/ressanet"
        )


class DlibMaskEmbedder(Embedder):
    """dlib's network and its mask fine-tune (`train.py mask-finetune`) as one model: a face the
    mask detector finds masked (`fmr.verify.mask_detector`) is described by the fine-tuned
    network, any other by dlib's own (the PyTorch port of the reference's weights), both on dlib's
    own 150x150 chip. The fine-tune was trained to put a masked face where dlib puts that face
    unmasked, so the two kinds of descriptor compare with each other, and a plain face gets
    exactly dlib's descriptor."""

    family = "dlib-mask"
    reads_aligned_crops = False

    def __init__(self, loaded) -> None:
        from fmr.models.dlib_resnet import load_dlib_resnet
        from fmr.verify.dlib_reference import DlibReference, model_path
        from fmr.verify.mask_detector import load_mask_detector

        self.model = loaded.model.eval()
        self.card = loaded.card
        self.path = Path(loaded.path)
        self.name = self.card.name or self.path.stem
        self.embedding_size = self.card.embedding_size
        self.reference = DlibReference()  # its chips; its own network is not used
        self.plain_model = load_dlib_resnet(model_path())
        self.detector = load_mask_detector(required=True)

    def chip(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The 150x150 RGB uint8 chip this model reads (dlib's 5-point alignment)."""
        return self.reference.chip(image, face)

    def masked(self, faces: Sequence[tuple[np.ndarray, Face]]) -> np.ndarray:
        """(N,) bool: which faces the mask detector finds masked (the fine-tune describes them)."""
        from fmr.faces.align import align_face
        from fmr.verify.mask_detector import MASK_PROBABILITY_THRESHOLD

        crops = np.stack([align_face(image, face.landmarks) for image, face in faces])
        return self.detector.probabilities(crops) >= MASK_PROBABILITY_THRESHOLD

    def embed_chips(self, chips, masked: np.ndarray) -> np.ndarray:
        """(N, 128) float32 unit-norm descriptors of chips from `chip`; `masked` (N,) bool says
        which network describes each."""
        chips, masked = np.asarray(chips), np.asarray(masked, bool)
        out = np.zeros((len(chips), self.embedding_size), np.float32)
        for network, rows in ((self.model, masked), (self.plain_model, ~masked)):
            if rows.any():
                out[rows] = network.embed_chips(chips[rows], batch_size=BATCH_SIZE)
        return out

    def chip_view(self, image: np.ndarray, face: Face):
        """(chip, embed) for explanations: `embed(chips)` keeps this face's network choice."""
        masked = self.masked([(image, face)])[0]
        return self.chip(image, face), lambda chips: self.embed_chips(
            chips, np.full(len(chips), masked))

    def embed_faces(self, faces: Sequence[tuple[np.ndarray, Face]]) -> np.ndarray:
        if not faces:
            return np.zeros((0, self.embedding_size), np.float32)
        chips = np.stack([self.chip(image, face) for image, face in faces])
        return self.embed_chips(chips, self.masked(faces))

    def embed_aligned(self, crops: np.ndarray) -> np.ndarray:
        raise FaceError(
            "dlib-mask reads dlib's own 150x150 chip (its 5 points) and needs the original "
            "photos, not aligned crops; drop --aligned or use iresnet/ressanet"
        )


def _default_dlib_card() -> dict:
    """The dlib card before calibration (`fmr eval --backbone dlib --calibrate` fills it in)."""
    from fmr import __version__

    return {
        "name": "dlib-resnet-v1",
        "architecture": "dlib_resnet_v1",
        "embedding_size": 128,
        "input_size": 150,
        "input_normalisation": "dlib: 5-point shapes, get_face_chip(size=150, padding=0.25)",
        "channel_order": "RGB",
        "storage": "dlib .dat (face_recognition_models)",
        "training": {
            "source": "dlib_face_recognition_resnet_model_v1.dat from face_recognition_models",
            "data": "about 3 million faces of 7,485 people (FaceScrub, VGG Face, web images), "
            "no LFW identities, per the dlib-models README",
        },
        "metrics": {},
        "calibration": {},
        "notes": "Reference model, compared by cosine similarity like fmr's backbones.",
        "licence": "public domain (released so by its author, Davis King: dlib-models README)",
        "created": "",
        "fmr_version": __version__,
    }


class _LoadedTorchModels:
    """Loaded checkpoints, one per file: a file rewritten since (a newer mtime) is loaded again
    and its old model let go, so a long-running app whose checkpoint a training run keeps
    rewriting holds one copy, not one per version. At most `max_files` files stay loaded.
    A dlib-mask checkpoint (dlib's architecture) gets a `DlibMaskEmbedder`, any other a
    `TorchEmbedder`."""

    def __init__(self, max_files: int = 8) -> None:
        self.max_files = max_files
        self._models: dict[str, tuple[float, TorchEmbedder]] = {}
        self._lock = threading.Lock()  # app sessions load from several threads

    def get(self, path: str, mtime: float) -> Embedder:
        with self._lock:
            found = self._models.get(path)
            if found is not None and found[0] == mtime:
                return found[1]
            from fmr.modelfile import load_model_file

            loaded = load_model_file(path)
            embedder = (DlibMaskEmbedder(loaded) if loaded.card.architecture == DLIB_ARCHITECTURE
                        else TorchEmbedder(loaded))
            self._models.pop(path, None)
            self._models[path] = (mtime, embedder)  # newest last
            while len(self._models) > self.max_files:
                self._models.pop(next(iter(self._models)))
            return embedder

    def cache_clear(self) -> None:
        with self._lock:
            self._models.clear()

    def __len__(self) -> int:
        return len(self._models)


_load_torch = _LoadedTorchModels()


@functools.lru_cache(maxsize=2)
def _load_dlib(card: str, card_mtime: float) -> DlibEmbedder:
    return DlibEmbedder()


def load_backbone(family_or_path: str | Path) -> Embedder:
    """An embedder for a family ("iresnet", "ressanet", "dlib", "dlib-mask"), a checkpoint name
    inside `checkpoints/`, or a checkpoint path (.safetensors, or an insightface backbone.pth).

    Loaded models are cached per process (keyed by the file and its modification time).
    Raises `CheckpointError` when the family has no checkpoint or the file is not one fmr loads.
    """
    name = str(family_or_path)
    if name == "dlib":
        card = dlib_card_path()
        return _load_dlib(str(card), card.stat().st_mtime if card.is_file() else 0.0)
    path = find_checkpoint(name) if name in TRAINED_FAMILIES else resolve_checkpoint(name)
    path = path.resolve()
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; pass the checkpoint file inside it")
    return _load_torch.get(str(path), path.stat().st_mtime)


def save_card_fields(spec: str | Path, **fields) -> Path:
    """Rewrite fields of a backbone's model card: "dlib" (checkpoints/dlib_reference.json) or
    a checkpoint path (through `fmr.modelfile.update_card`). Returns the card file."""
    import datetime
    import json

    if str(spec) == "dlib":
        path = dlib_card_path()
        data = json.loads(path.read_text()) if path.is_file() else _default_dlib_card()
        data.update(fields)
        data["created"] = data.get("created") or datetime.date.today().isoformat()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, card_json(data))
        _load_dlib.cache_clear()
        return path
    from fmr.modelfile import update_card

    path = Path(spec)
    if path.suffix != ".safetensors":
        raise CheckpointError(
            f"{path}: only .safetensors checkpoints carry a model card; convert it first "
            "(`fmr export CHECKPOINT --safetensors OUT`)"
        )
    update_card(path, **fields)
    _load_torch.cache_clear()
    return path.with_suffix(".json")


def save_metrics(spec: str | Path, key: str, values: dict) -> Path:
    """Add evaluation results under `key` to a backbone card's `metrics` (others are kept)."""
    if str(spec) == "dlib":
        import json

        path = dlib_card_path()
        metrics = (json.loads(path.read_text()) if path.is_file() else _default_dlib_card()).get(
            "metrics", {})
    else:
        card = read_card(spec)
        metrics = card.metrics if card is not None else {}
    return save_card_fields(spec, metrics={**metrics, key: values})


def save_calibration(spec: str | Path, calibration: dict) -> Path:
    """Store a calibration (from `fmr.metrics.calibration.calibrate`) in a backbone's model card.

    spec: "dlib" (writes `checkpoints/dlib_reference.json`) or a checkpoint path (its card is
    rewritten with `fmr.modelfile.update_card`). Returns the card file written.
    """
    return save_card_fields(spec, calibration=calibration)
