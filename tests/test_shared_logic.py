"""Logic that used to be written twice now lives once: the model's input config (timm's
pretrained_cfg idea) and the flip-averaged embedding, shared by training's validation and
`fmr verify`."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fmr.cards import ModelCard
from fmr.errors import CheckpointError
from fmr.models import DEFAULT_INPUT, InputConfig, create_model


def test_every_model_carries_its_input_config_and_cards_record_it(tmp_path):
    from fmr.modelfile import load_model_file, save_model_file

    model = create_model("iresnet18", input_size=32)
    assert model.input_config == InputConfig(input_size=32)
    path = save_model_file(tmp_path / "m", model.eval(), ModelCard("m", "iresnet18"), "fp32")
    loaded = load_model_file(path)
    assert loaded.card.input_normalisation == DEFAULT_INPUT.normalisation == "(x/255 - 0.5) / 0.5"
    assert loaded.model.input_config == InputConfig(input_size=32)


@pytest.mark.parametrize("text, mean, std", [
    ("(x/255 - 0.5) / 0.5", 0.5, 0.5), ("(x-127.5)/127.5", 0.5, 0.5), ("(x/255-0.4)/0.2", 0.4, 0.2),
])
def test_card_normalisations_are_read_into_one_config(text, mean, std):
    config = InputConfig.from_card(ModelCard("m", "iresnet18", input_normalisation=text))
    assert (config.mean, config.std) == pytest.approx((mean, std))
    pixels = torch.tensor([0, 255], dtype=torch.uint8).repeat(1, 3, 1, 1)
    assert config.normalise(pixels).flatten()[:2].tolist() == pytest.approx(
        [-mean / std, (1 - mean) / std])


def test_an_unreadable_normalisation_is_refused_by_the_embedder():
    from fmr.verify import TorchEmbedder

    card = ModelCard("m", "iresnet18", input_normalisation="x / 255")
    with pytest.raises(CheckpointError, match="input is not one fmr can feed"):
        TorchEmbedder(SimpleNamespace(model=create_model("iresnet18"), card=card,
                                      path=Path("m.safetensors")))


def test_training_validation_and_verify_embed_crops_alike():
    from fmr.train.device import DevicePolicy
    from fmr.train.validation import embed_crops
    from fmr.verify import TorchEmbedder

    torch.manual_seed(0)
    model = create_model("iresnet18", input_size=32).eval()
    crops = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    policy = DevicePolicy(torch.device("cpu"), "fp32", False, None, False, False, "test")
    trained = embed_crops(model, torch.from_numpy(crops).permute(0, 3, 1, 2), policy).numpy()
    card = ModelCard("m", "iresnet18", input_size=32)
    verified = TorchEmbedder(SimpleNamespace(model=model, card=card, path=Path("m"))
                             ).embed_aligned(crops)
    np.testing.assert_allclose(trained, verified, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(verified, axis=1), 1.0, atol=1e-5)


def test_training_states_written_before_the_rename_still_resume(tmp_path):
    """Runs before the rename kept their training states in checkpoints/; they are found (the
    newest step wins, wherever it is) and load as before."""
    import torch

    from fmr.train.state import (
        LEGACY_STATE_DIR,
        STATE_DIR,
        load_state,
        resolve_resume,
        save_state,
        state_files,
    )

    run = tmp_path / "run"
    (run / LEGACY_STATE_DIR).mkdir(parents=True)
    old = run / LEGACY_STATE_DIR / "step-00000004.pt"
    torch.save({"format": "fmr-train-state", "step": 4}, old)
    assert resolve_resume("latest", run) == old
    assert resolve_resume(str(run), None) == old
    assert load_state(resolve_resume("latest", run))["step"] == 4
    new = save_state(run, 6, {"step": 6})
    assert new.parent.name == STATE_DIR == "states"
    assert state_files(run)[-1] == new and load_state(resolve_resume("latest", run))["step"] == 6
