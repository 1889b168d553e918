"""Checkpoint files: round trips in each storage, the model card (JSON beside, metadata inside),
update_card, insightface backbone.pth, and a clear CheckpointError for every wrong file."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import safe_open, save_file

from fmr.cards import ModelCard, read_card
from fmr.errors import CheckpointError
from fmr.modelfile import (
    CENTRES_TENSOR,
    CLOSED_SET_KEY,
    EXTRA_TENSOR_PREFIX,
    INT8_SCALE_SUFFIX,
    dequantise_int8,
    load_model_file,
    quantise_int8,
    read_class_centres,
    save_model_file,
    update_card,
)
from fmr.models import create_model

SMALL_INPUT = 32


def warmed(name: str, input_size: int = SMALL_INPUT, seed: int = 0):
    """A random-init model whose BN statistics come from a few batches (realistic activations
    in eval mode), in eval mode."""
    torch.manual_seed(seed)
    model = create_model(name, input_size=input_size)
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, input_size, input_size))
    return model.eval()


@pytest.fixture(scope="module")
def small_model():
    return warmed("ressanet18")


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, SMALL_INPUT, SMALL_INPUT, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def insightface_state():
    """An insightface-style r18 state dict (112x112 input, as insightface trains them; 128-d
    embeddings to keep the files small, and to check the size is read from fc.weight)."""
    torch.manual_seed(0)
    return create_model("iresnet18", embedding_size=128).state_dict()


def card(**fields) -> ModelCard:
    return ModelCard(name="test model", architecture="ressanet18", **fields)


def embed(model, images):
    with torch.inference_mode():
        return model(images)


def test_fp32_round_trip_is_exact(tmp_path, small_model, images):
    written = save_model_file(tmp_path / "model", small_model, card(), storage="fp32")
    assert written == tmp_path / "model.safetensors"
    assert (tmp_path / "model.json").is_file()
    loaded = load_model_file(written)
    assert not loaded.model.training
    assert torch.equal(embed(loaded.model, images), embed(small_model, images))
    assert loaded.card.architecture == "ressanet18" and loaded.card.storage == "fp32"
    assert loaded.card.input_size == SMALL_INPUT and loaded.card.embedding_size == 512
    assert loaded.card.created and loaded.card.fmr_version
    assert loaded.path == written
    # the base name, the .safetensors and the .json all name the same checkpoint
    for spelling in (tmp_path / "model", tmp_path / "model.json", str(written)):
        assert load_model_file(spelling).path == written


def test_fp16_and_int8_storage(tmp_path, small_model, images):
    reference = embed(small_model, images)
    sizes = {}
    for storage in ("fp32", "fp16", "int8"):
        path = save_model_file(tmp_path / storage, small_model, card(), storage=storage)
        sizes[storage] = path.stat().st_size
        loaded = load_model_file(path)
        assert loaded.card.storage == storage
        assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
        similarity = F.cosine_similarity(embed(loaded.model, images), reference).min().item()
        assert similarity > (0.9999 if storage == "fp16" else 0.995), storage
    assert 0.45 < sizes["fp16"] / sizes["fp32"] < 0.55
    assert 0.22 < sizes["int8"] / sizes["fp32"] < 0.32

    with safe_open(str(tmp_path / "int8.safetensors"), framework="pt") as reader:
        assert reader.get_tensor("layer1.0.conv1.weight").dtype == torch.int8
        assert reader.get_tensor("fc.weight").dtype == torch.int8
        scale = reader.get_tensor("fc.weight" + INT8_SCALE_SUFFIX)
        assert scale.dtype == torch.float16 and scale.shape == (512,)
        assert reader.get_tensor("layer1.0.bn1.running_var").dtype == torch.float32
        assert reader.get_tensor("layer1.0.prelu.weight").dtype == torch.float32
        assert reader.get_tensor("layer4.0.attention.rel_height").dtype == torch.float16


def test_save_unwraps_compiled_models_and_stores_fp32_as_fp32(tmp_path, small_model, images):
    compiled = torch.compile(small_model)  # the wrapper only (never run): keys get "_orig_mod."
    assert next(iter(compiled.state_dict())).startswith("_orig_mod.")
    path = save_model_file(tmp_path / "compiled", compiled, card(), storage="fp32")
    assert torch.equal(embed(load_model_file(path).model, images), embed(small_model, images))

    half_trained = copy.deepcopy(small_model).bfloat16()  # e.g. weights kept in bf16
    path = save_model_file(tmp_path / "bf16", half_trained, card(), storage="fp32")
    with safe_open(str(path), framework="pt") as reader:
        assert reader.get_tensor("fc.weight").dtype == torch.float32


def test_int8_quantisation_is_per_output_channel():
    weight = torch.randn(4, 3, 3, 3) * torch.tensor([1e-3, 0.1, 1.0, 10.0])[:, None, None, None]
    values, scale = quantise_int8(weight)
    assert values.dtype == torch.int8 and scale.shape == (4,)
    assert values.abs().amax(dim=(1, 2, 3)).tolist() == [127, 127, 127, 127]
    error = (dequantise_int8(values, scale) - weight).abs().amax(dim=(1, 2, 3))
    assert (error <= scale.float() * 0.5 + 1e-9).all()  # within half a step, channel by channel


def test_card_beside_takes_precedence_and_embedded_card_is_the_fallback(tmp_path, small_model):
    path = save_model_file(tmp_path / "m", small_model, card(notes="first"))
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["notes"] == "first" and data["storage"] == "fp16"
    data["notes"] = "edited by hand"
    (tmp_path / "m.json").write_text(json.dumps(data))
    assert load_model_file(path).card.notes == "edited by hand"
    (tmp_path / "m.json").unlink()
    assert load_model_file(path).card.notes == "first"
    assert read_card(path).notes == "first"


def test_update_card_rewrites_json_and_metadata_not_weights(tmp_path, small_model):
    path = save_model_file(tmp_path / "m", small_model, card())
    with safe_open(str(path), framework="pt") as reader:
        before = {k: reader.get_tensor(k) for k in reader.keys()}  # noqa: SIM118
    calibration = {"target_far": 1e-3, "threshold_cosine": 0.31, "threshold_deg": 71.9}
    updated = update_card(path, calibration=calibration, metrics={"lfw": {"accuracy": 0.99}})
    assert updated.calibration == calibration
    assert json.loads((tmp_path / "m.json").read_text())["calibration"] == calibration
    with safe_open(str(path), framework="pt") as reader:
        assert json.loads(reader.metadata()["fmr_card"])["calibration"] == calibration
        assert all(torch.equal(reader.get_tensor(k), v) for k, v in before.items())
    (tmp_path / "m.json").unlink()
    assert load_model_file(path).card.metrics == {"lfw": {"accuracy": 0.99}}
    with pytest.raises(ValueError, match="thresholds"):
        update_card(path, thresholds={})
    with pytest.raises(ValueError, match="calibration"):
        update_card(path, calibration="0.3")


def test_class_centres_ride_beside_the_backbone(tmp_path, small_model, images, monkeypatch):
    centres = torch.randn(3, 512)
    names = ["celeba-1", "lfw-A", "lfw-B"]
    path = save_model_file(tmp_path / "run" / "best", small_model, card(notes="Trained."),
                           class_centres=(centres, names))
    loaded = load_model_file(path)  # the backbone loader sets the extra tensor aside
    assert torch.allclose(embed(loaded.model, images), embed(small_model, images), atol=1e-2)
    assert loaded.card.training[CLOSED_SET_KEY]["identities"] == names
    assert "only for closed-set accuracy" in loaded.card.notes
    stored, stored_names = read_class_centres(path)
    assert torch.equal(stored, centres) and stored_names == names
    update_card(path, metrics={"x": 1.0})  # rewriting the card keeps them
    assert torch.equal(read_class_centres(path)[0], centres)

    # Re-exported without them (fmr export --safetensors): no centres, no card entry, no note.
    again = save_model_file(tmp_path / "again", loaded.model, loaded.card)
    assert read_class_centres(again) is None
    assert CLOSED_SET_KEY not in read_card(again).training
    assert read_card(again).notes == "Trained."
    with safe_open(str(again), framework="pt") as reader:
        assert not any(k.startswith(EXTRA_TENSOR_PREFIX) for k in reader.keys())  # noqa: SIM118

    # Never into the shipped checkpoint folder.
    monkeypatch.setenv("FMR_CHECKPOINT_DIR", str(tmp_path / "shipped"))
    with pytest.raises(CheckpointError, match="never go into the shipped"):
        save_model_file(tmp_path / "shipped" / "m", small_model, card(),
                        class_centres=(centres, names))
    assert not (tmp_path / "shipped" / "m.safetensors").exists()


def test_no_shipped_checkpoint_carries_class_centres(repo_root):
    for path in sorted((repo_root / "checkpoints").glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as reader:
            assert CENTRES_TENSOR not in set(reader.keys()), path  # noqa: SIM118
        assert CLOSED_SET_KEY not in read_card(path).training, path


def test_card_dict_round_trip():
    original = card(training={"epochs": 3}, metrics={"a": 1.0}, licence="MIT")
    assert ModelCard.from_dict(json.loads(json.dumps(original.to_dict()))) == original
    assert ModelCard.from_dict({**original.to_dict(), "from_a_newer_fmr": 1}) == original
    with pytest.raises(ValueError, match="architecture"):
        ModelCard.from_dict({"name": "x"})


@pytest.mark.parametrize("wrapping", ["plain", "module_prefix", "nested"])
def test_insightface_backbone_pth_loads(tmp_path, insightface_state, wrapping):
    state = dict(insightface_state)
    if wrapping == "module_prefix":  # saved from a DataParallel / DDP wrapper, older format
        state = {f"module.{k}": v for k, v in state.items() if "num_batches" not in k}
    elif wrapping == "nested":
        state = {"state_dict": state, "epoch": 3}
    torch.save(state, tmp_path / "backbone.pth")
    loaded = load_model_file(tmp_path / "backbone.pth")
    assert loaded.card.architecture == "iresnet18"
    assert loaded.card.embedding_size == 128 and loaded.card.input_size == 112
    assert loaded.card.channel_order == "RGB"
    assert loaded.card.input_normalisation == "(x/255 - 0.5) / 0.5"
    assert "insightface" in loaded.card.notes and "RGB" in loaded.card.notes
    reference = create_model("iresnet18", embedding_size=128).eval()
    reference.load_state_dict(insightface_state)
    x = torch.randn(1, 3, 112, 112)
    assert torch.equal(embed(loaded.model, x), embed(reference, x))


def test_insightface_pth_card_can_be_updated_beside_it(tmp_path, insightface_state):
    torch.save(insightface_state, tmp_path / "backbone.pth")
    update_card(tmp_path / "backbone.pth", calibration={"threshold_cosine": 0.3})
    assert (tmp_path / "backbone.json").is_file()
    loaded = load_model_file(tmp_path / "backbone.pth")
    assert loaded.card.calibration == {"threshold_cosine": 0.3}
    assert loaded.card.architecture == "iresnet18"


def _missing(tmp: Path, model, state) -> Path:
    return tmp / "nowhere.safetensors"


def _folder(tmp: Path, model, state) -> Path:
    (tmp / "run").mkdir()
    return tmp / "run"


def _truncated_safetensors(tmp: Path, model, state) -> Path:
    path = save_model_file(tmp / "cut", model, card())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _garbage_safetensors(tmp: Path, model, state) -> Path:
    path = tmp / "garbage.safetensors"
    path.write_bytes(b"this is not a checkpoint" * 10)
    return path


def _no_card_safetensors(tmp: Path, model, state) -> Path:
    path = tmp / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _card_with_other_architecture(tmp: Path, model, state) -> Path:
    path = save_model_file(tmp / "wrong", model, card())
    data = json.loads((tmp / "wrong.json").read_text())
    data["architecture"] = "iresnet18"  # weights are a ressanet18
    (tmp / "wrong.json").write_text(json.dumps(data))
    return path


def _unknown_architecture(tmp: Path, model, state) -> Path:
    path = save_model_file(tmp / "future", model, card())
    data = json.loads((tmp / "future.json").read_text())
    data["architecture"] = "vit_huge"
    (tmp / "future.json").write_text(json.dumps(data))
    return path


def _invalid_card_json(tmp: Path, model, state) -> Path:
    path = save_model_file(tmp / "badcard", model, card())
    (tmp / "badcard.json").write_text("{not json")
    return path


def _truncated_pth(tmp: Path, model, state) -> Path:
    path = tmp / "backbone.pth"
    torch.save(state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def _pickled_model_pth(tmp: Path, model, state) -> Path:
    path = tmp / "model.pth"
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), path)  # a whole module, not weights
    return path


def _other_network_pth(tmp: Path, model, state) -> Path:
    path = tmp / "resnet.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3), "classifier.weight": torch.zeros(2, 8)},
               path)
    return path


def _wrong_shape_pth(tmp: Path, model, state) -> Path:
    path = tmp / "backbone.pth"
    torch.save({**state, "layer2.0.conv1.weight": torch.zeros(128, 64, 5, 5)}, path)
    return path


def _onnx_file(tmp: Path, model, state) -> Path:
    path = tmp / "model.onnx"
    path.write_bytes(b"\x08\x07")
    return path


@pytest.mark.parametrize(
    "make_file, says",
    [
        (_missing, "not found"),
        (_folder, "folder"),
        (_truncated_safetensors, "truncated"),
        (_garbage_safetensors, "not a readable safetensors"),
        (_no_card_safetensors, "no fmr model card"),
        (_card_with_other_architecture, "do not fit iresnet18"),
        (_unknown_architecture, "not one fmr knows"),
        (_invalid_card_json, "is not valid"),
        (_truncated_pth, "truncated"),
        (_pickled_model_pth, "state dict"),
        (_other_network_pth, "does not look like an insightface IResNet"),
        (_wrong_shape_pth, "has shape (128, 64, 5, 5)"),
        (_onnx_file, "onnxruntime"),
    ],
    ids=lambda value: getattr(value, "__name__", "").strip("_") or None,
)
def test_wrong_files_raise_checkpoint_error_naming_the_file(
    tmp_path, small_model, insightface_state, make_file, says
):
    path = make_file(tmp_path, small_model, insightface_state)
    with pytest.raises(CheckpointError) as raised:
        load_model_file(path)
    message = str(raised.value)
    assert says in message
    assert path.stem in message
    assert "\n" not in message  # one line for the CLI
