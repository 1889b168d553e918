"""train.py on CPU: two short epochs on a pack from `fmr prepare`, exact resume, NaN stop,
`fmr verify` loading the export; data errors; config files; the schedule and augmentation;
the training path importing without dlib, facenet-pytorch or streamlit (the GPU machine has
none of them)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fmr.cli import main as fmr_main
from fmr.data.sources import open_training_set
from fmr.errors import FmrError
from fmr.settings import REPO_ROOT
from fmr.train.augment import AugmentSettings, augment_batch
from fmr.train.cli import config_from_args
from fmr.train.cli import main as train_main
from fmr.train.schedule import warmup_poly_factor
from fmr.train.state import STATE_DIR

BLOCKED = ("dlib", "facenet_pytorch", "face_recognition_models", "streamlit")
BLOCKER = f"""
import importlib.abc, sys
class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is not installed on the GPU machine")
        return None
sys.meta_path.insert(0, _Blocked())
"""
TINY = [
    "--device",
    "cpu",
    "--backbone",
    "iresnet18",
    "--epochs",
    "2",
    "--batch-size",
    "4",
    "--warmup-epochs",
    "1",
    "--lr",
    "0.02",
    "--log-every",
    "1",
    "--workers",
    "1",
    "--quiet",
]


def _train_blocked(*args: str) -> subprocess.CompletedProcess:
    """train.py in a fresh interpreter where dlib, facenet-pytorch and streamlit cannot load."""
    code = (
        BLOCKER + "import runpy; sys.argv = ['train.py', *sys.argv[1:]]; "
        "runpy.run_path('train.py', run_name='__main__')"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _state_steps(run: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in (run / STATE_DIR).glob("step-*.pt"))


def _events(run: Path, kind: str) -> list[dict]:
    lines = (run / "log.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == kind]


@pytest.fixture(scope="module")
def pack(tmp_path_factory, shared_data) -> Path:
    out = tmp_path_factory.mktemp("train") / "pack"
    code = fmr_main(
        [
            "prepare",
            "--preset",
            "shared",
            "--out",
            str(out),
            "--quiet",
            "--teacher",
            "dlib",
            "--max-identities",
            "6",
            "--max-validation-identities",
            "2",
            "--max-images-per-identity",
            "2",
            "--canvases",
        ]
    )
    assert code == 0
    return out


def test_train_resume_nan_stop_and_verify(pack, tmp_path, photos_dir, capsys):
    run = tmp_path / "run"
    first = _train_blocked(
        "--data", str(pack), "--out", str(run), "--stop-after-epochs", "1", *TINY
    )
    assert first.returncode == 0, first.stderr
    steps_per_epoch = _events(run, "start")[0]["steps_per_epoch"]
    assert _state_steps(run) == [steps_per_epoch]
    assert (run / "best.safetensors").is_file() and (run / "best.json").is_file()

    # A copy of the run after one epoch, to make diverge later.
    diverging = tmp_path / "diverging"
    shutil.copytree(run, diverging)

    assert train_main(["--resume", "--out", str(run), "--quiet"]) == 0
    assert _state_steps(run) == [steps_per_epoch, 2 * steps_per_epoch]
    assert _events(run, "stop")[-1]["step"] == 2 * steps_per_epoch
    assert [e["epoch"] for e in _events(run, "val")] == [1, 2]

    # Resuming gives exactly the weights of an uninterrupted run.
    straight = tmp_path / "straight"
    assert train_main(["--data", str(pack), "--out", str(straight), *TINY]) == 0
    resumed = torch.load(
        run / STATE_DIR / f"step-{2 * steps_per_epoch:08d}.pt", weights_only=False
    )
    direct = torch.load(
        straight / STATE_DIR / f"step-{2 * steps_per_epoch:08d}.pt", weights_only=False
    )
    for name, value in direct["backbone"].items():
        assert torch.equal(value, resumed["backbone"][name]), name
    for name, value in direct["head"].items():
        assert torch.equal(value, resumed["head"][name]), name

    # The export is a calibrated model card `fmr verify` loads as it is.
    card = json.loads((run / "best.json").read_text())
    assert card["architecture"] == "iresnet18"
    assert {"unmasked", "masked"} <= set(card["metrics"]["validation"])
    assert -1.0 <= card["calibration"]["threshold"] <= 1.0
    assert card["training"]["data"]["kind"] == "pack"
    assert card["training"]["data"]["teacher"]["dimension"] == 128
    # a shared-preset pack has no held-out split: no closed-set accuracy, no class centres
    assert "closed_set" not in card["metrics"] and "closed_set" not in card["training"]
    capsys.readouterr()
    photo_a, photo_b = sorted((photos_dir / "obama").iterdir())[:2]
    code = fmr_main(
        [
            "verify",
            "--checkpoint",
            str(run / "best.safetensors"),
            str(photo_a),
            str(photo_b),
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert "iresnet18" in json.dumps(result)

    # A diverging loss stops the run and keeps the last good checkpoint and export.
    best_before = (diverging / "best.safetensors").read_bytes()
    capsys.readouterr()
    assert train_main(["--resume", "--out", str(diverging), "--lr", "1e30", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "loss became" in err and "last good checkpoint" in err
    assert _state_steps(diverging) == [steps_per_epoch]
    assert (diverging / "best.safetensors").read_bytes() == best_before


def test_consistent_targets_and_exact_resume_in_mid_epoch(pack, tmp_path):
    """An online teacher on the student's own views, mixup, 128-d embeddings distilled
    directly: a run stopped after its first step (inside the first epoch) and resumed ends
    with exactly the weights of a run that was never stopped; the export carries both
    calibrations."""
    recipe = [*TINY, "--distill-targets", "consistent", "--embedding-size", "128",
              "--mix-prob", "0.5", "--margin-weight", "0.1", "--distill-weight", "5"]
    run = tmp_path / "stopped"
    assert train_main(["--data", str(pack), "--out", str(run), *recipe,
                       "--time-limit", "0"]) == 0
    first_stop = _events(run, "stop")[-1]
    steps_per_epoch = _events(run, "start")[0]["steps_per_epoch"]
    assert first_stop["reason"] == "time_limit" and first_stop["step"] == 1 < steps_per_epoch
    start = _events(run, "start")[0]
    assert "same augmented view (online)" in start["targets"] and "mixup 0.5" in start["targets"]
    assert start["data"]["canvases"] is True
    assert train_main(["--resume", "--out", str(run), "--quiet"]) == 0
    straight = tmp_path / "straight"
    assert train_main(["--data", str(pack), "--out", str(straight), *recipe]) == 0
    last = f"step-{2 * steps_per_epoch:08d}.pt"
    resumed = torch.load(run / STATE_DIR / last, weights_only=False)
    direct = torch.load(straight / STATE_DIR / last, weights_only=False)
    for name, value in direct["backbone"].items():
        assert torch.equal(value, resumed["backbone"][name]), name
    assert resumed["projection"] is None  # 128-d: the embedding itself is distilled
    distill = [e["distill_loss"] for e in _events(straight, "train")]
    assert all(0.0 < d < 2.0 for d in distill)
    card = json.loads((straight / "best.json").read_text())
    assert card["embedding_size"] == 128
    assert card["calibration"]["measured_on"].endswith("both photos unmasked")
    assert "masked probe" in card["calibration_masked"]["measured_on"]
    assert card["training"]["hours_total"] > 0


def test_time_budget_plans_the_schedule_inside_the_loop(pack, tmp_path):
    """With --time-budget the schedule's length is re-planned from the measured speed and the
    learning rate follows the planned length down to its end."""
    run = tmp_path / "budget"
    args = [*TINY, "--epochs", "500", "--time-budget", "25", "--val", "none",
            "--warmup-epochs", "0"]
    assert train_main(["--data", str(pack), "--out", str(run), *args]) == 0
    plans = _events(run, "budget")
    assert plans and all(p["planned_steps"] < p["asked_steps"] for p in plans)
    stop = _events(run, "stop")[-1]
    assert stop["reason"] == "finished" and stop["step"] == plans[-1]["planned_steps"]
    last = _events(run, "train")[-1]
    assert last["step"] == stop["step"]
    # the last step's learning rate follows the plan in force when it was taken (a plan made at
    # that very step can only end the run there): the schedule decays towards that plan's end
    in_force = [p["planned_steps"] for p in plans if p["step"] < last["step"]][-1]
    expected = 0.02 * warmup_poly_factor(last["step"], in_force, 0)
    assert last["lr"] == pytest.approx(expected, abs=1e-12)
    assert last["lr"] < 0.5 * 0.02  # well into the decay


def test_streaming_feed_gives_the_in_memory_batches(pack, tmp_path):
    """The streaming loader (for sets too big for memory) feeds the very batches the in-memory
    one does: the same losses step by step."""
    bare = tmp_path / "ms1m-like"
    bare.mkdir()
    for name in ("train.rec", "train.idx"):
        shutil.copy(pack / name, bare / name)
    losses = {}
    for mode in ("yes", "no"):
        run = tmp_path / f"in-memory-{mode}"
        assert train_main(["--data", str(bare), "--out", str(run), *TINY, "--epochs", "1",
                           "--in-memory", mode, "--workers", "0" if mode == "no" else "1"]) == 0
        losses[mode] = [e["loss"] for e in _events(run, "train")]
    assert len(losses["no"]) >= 2
    assert losses["no"] == pytest.approx(losses["yes"], rel=1e-5)


DDP_SCRIPT = """
import hashlib, json, sys
import torch
from fmr.train import distributed
from fmr.train.config import TrainConfig
from fmr.train.loop import Training

pack, out = sys.argv[1], sys.argv[2]
config = TrainConfig(data=pack, out=out, device="cpu", backbone="iresnet18", epochs=2,
                     batch_size=2, warmup_epochs=1, lr=0.02, log_every=1, workers=1,
                     threads=1, progress=False, distill_targets="consistent",
                     embedding_size=128, mix_prob=0.5)
ctx = distributed.setup("cpu")
training = Training(config, ctx)
result = training.fit()
digest = hashlib.sha256()
for value in training.module.backbone.state_dict().values():
    digest.update(value.detach().contiguous().numpy().tobytes())
shards = [training.batches.step_indices(e).ravel().tolist() for e in range(2)]
json.dump({"rank": ctx.rank, "weights": digest.hexdigest(), "shards": shards,
           "step": result.step}, open(f"{out}/rank{ctx.rank}.json", "w"))
distributed.cleanup(ctx)
"""


def test_ddp_two_gloo_processes_split_the_data_and_agree(pack, tmp_path):
    """train.py's loop under torchrun with 2 CPU processes (gloo): each rank reads its own
    shard of every epoch, both end with identical weights (batch-norm statistics averaged over
    ranks at each epoch end), rank 0 alone writes the run."""
    out = tmp_path / "ddp"
    out.mkdir()
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(pack), str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["step"] == ranks[1]["step"] > 0
    for epoch in range(2):
        first, second = (set(r["shards"][epoch]) for r in ranks)
        assert first and second and not first & second
    assert len(_events(out, "start")) == 1 and _events(out, "start")[0]["world_size"] == 2
    assert (out / "best.safetensors").is_file()


def test_train_rec_folder_without_validation(pack, tmp_path):
    bare = tmp_path / "ms1m-like"
    bare.mkdir()
    for name in ("train.rec", "train.idx"):
        shutil.copy(pack / name, bare / name)
    dataset = open_training_set(bare)
    assert dataset.kind == "recordio" and dataset.teacher is None
    assert np.array_equal(dataset.labels, open_training_set(pack).labels)
    run = tmp_path / "run"
    assert train_main(["--data", str(bare), "--out", str(run), *TINY, "--epochs", "1"]) == 0
    card = json.loads((run / "best.json").read_text())
    assert card["metrics"]["validation"] is None
    assert card["metrics"]["selected"]["rule"].startswith("last epoch")
    assert not _events(run, "val")


def _image_folder(root: Path, people: dict[str, int]) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    for person, count in people.items():
        (root / person).mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
            cv2.imwrite(str(root / person / f"{i}.png"), image)
    return root


def test_data_errors_are_clear(tmp_path, capsys):
    cases = {
        tmp_path / "missing": "no such file or folder",
        (tmp_path / "empty").resolve(): "empty, or not training data",
        _image_folder(tmp_path / "one", {"solo": 3}): "training needs at least two identities",
        tmp_path / "loose": "images lie directly in this folder",
    }
    (tmp_path / "empty").mkdir()
    _image_folder(tmp_path, {"loose": 2})
    for path, message in cases.items():
        assert train_main(["--data", str(path), "--out", str(tmp_path / "run"), *TINY]) == 2
        err = capsys.readouterr().err
        assert message in err and str(path) in err, err


def test_image_folder_is_training_data(tmp_path):
    folder = _image_folder(tmp_path / "crops", {"ann": 2, "bob": 3, "cid": 2})
    dataset = open_training_set(folder)
    assert dataset.kind == "folder" and dataset.num_classes == 3
    assert dataset.labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert dataset.decode(2).shape == (112, 112, 3)


def test_config_file_and_flags(tmp_path):
    config_file = tmp_path / "recipe.toml"
    config_file.write_text('backbone = "ressanet18"\nepochs = 3\nmask-prob = 0.7\n')
    config = config_from_args(["--config", str(config_file), "--epochs", "5"])
    assert (config.backbone, config.epochs, config.mask_prob) == ("ressanet18", 5, 0.7)
    assert config.lr == 0.1  # untouched default
    (tmp_path / "bad.json").write_text('{"epoch": 3}')
    with pytest.raises(FmrError, match="unknown setting 'epoch'"):
        config_from_args(["--config", str(tmp_path / "bad.json")])
    with pytest.raises(FmrError, match="--mask-prob"):
        config_from_args(["--mask-prob", "1.5"])


def test_warmup_then_polynomial_decay():
    factors = [warmup_poly_factor(s, total_steps=10, warmup_steps=4, power=2.0) for s in range(11)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and factors[10] == 0.0
    assert factors[7] == pytest.approx((1 - 3 / 6) ** 2)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:], strict=False))


def test_time_budget_plans_the_steps_that_fit():
    from fmr.train.loop import StepBudget

    budget = StepBudget(400.0, asked=2000, started=0.0)
    # 100 s gone, 20 steps in 10 s (0.5 s/step): 300 s * 0.92 left = 552 more steps
    assert budget.update(step=30, steps=20, seconds=10.0, now=100.0) == 30 + 552
    # the speed is smoothed: a window at 1 s/step moves the estimate to 0.65 s/step
    assert budget.update(step=50, steps=20, seconds=20.0, now=120.0) == 50 + int(280 * 0.92 / 0.65)
    # 1 s left at about 15 s/step: the next step would not fit, so the plan ends here
    assert budget.update(step=60, steps=10, seconds=500.0, now=399.0) == 60
    assert budget.update(step=61, steps=1, seconds=1.0, now=401.0) == 61  # time spent: stop
    fast = StepBudget(400.0, asked=2000, started=0.0)
    assert fast.update(step=30, steps=20, seconds=1e-3, now=1.0) == 2000  # never more than asked

    # The last validation's time is set aside: estimated from the crops it embeds (batch 10 at
    # 0.5 s/step is 0.05 s per image; 400 crops at 0.55 of that: 11 s) until one was timed.
    validating = StepBudget(400.0, asked=2000, started=0.0, batch_size=10, val_images=400)
    assert validating.update(step=30, steps=20, seconds=10.0, now=100.0) == 30 + int(
        (300 - 11) * 0.92 / 0.5)
    validating.epoch_end_took(40.0)
    assert validating.final_seconds() == 40.0
    assert validating.update(step=50, steps=20, seconds=10.0, now=110.0) == 50 + int(
        (290 - 40) * 0.92 / 0.5)


def test_augmentation_is_seeded_and_masks_the_lower_face(pack):
    dataset = open_training_set(pack)
    crops = torch.from_numpy(np.stack([dataset.decode(i) for i in range(4)])).permute(0, 3, 1, 2)
    settings = AugmentSettings()
    first = augment_batch(crops, settings, torch.Generator().manual_seed(7))
    again = augment_batch(crops, settings, torch.Generator().manual_seed(7))
    other = augment_batch(crops, settings, torch.Generator().manual_seed(8))
    assert first.shape == (4, 3, 112, 112) and first.dtype == torch.float32
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.min() >= -1.0 and first.max() <= 1.0

    # Without jitter and with flip probability 1 the result is the normalised mirror image.
    mirror = AugmentSettings(
        mask_prob=0.0,
        flip_prob=1.0,
        rotation=0.0,
        scale_jitter=0.0,
        translate=0.0,
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        grayscale_prob=0.0,
    )
    flipped = augment_batch(crops, mirror, torch.Generator().manual_seed(0))
    expected = crops.flip(3).float() / 127.5 - 1.0
    assert torch.allclose(flipped, expected, atol=1e-4)

    # Masks only (probability 1): the mouth region changes, the eye band does not.
    masks_only = AugmentSettings(**{**mirror.__dict__, "flip_prob": 0.0, "mask_prob": 1.0})
    masked = (augment_batch(crops, masks_only, torch.Generator().manual_seed(1)) + 1.0) * 127.5
    plain = crops.float()
    mouth = (masked[:, :, 85:100, 40:72] - plain[:, :, 85:100, 40:72]).abs().mean()
    eyes = (masked[:, :, 38:50, 30:82] - plain[:, :, 38:50, 30:82]).abs().mean()
    assert mouth > 20 and eyes < 1


def test_training_path_imports_without_dlib_facenet_streamlit():
    modules = [
        "train",
        "fmr.train",
        "fmr.train.loop",
        "fmr.train.cli",
        "fmr.train.data",
        "fmr.train.validation",
        "fmr.train.augment",
        "fmr.data.sources",
        "fmr.data.recordio",
        "fmr.masks.tensor",
        "fmr.models",
        "fmr.losses",
        "fmr.modelfile",
        "fmr.metrics",
        "fmr.metrics.calibration",
    ]
    code = BLOCKER + (
        "import importlib\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"assert not [m for m in sys.modules if m.split('.')[0] in {BLOCKED!r}]\n"
        "import fmr.train.cli; fmr.train.cli.build_parser()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr


def test_init_from_imprints_class_centres_that_start_the_loss_low(pack, tmp_path):
    """--init-from a shipped checkpoint sets each class centre to the mean embedding of its class
    (the centre every member agrees with most), so the first step's ArcFace loss is far below
    that of random centres."""
    from fmr.modelfile import load_model_file
    from fmr.train.device import choose_policy
    from fmr.train.imprint import class_mean_centres

    shipped = REPO_ROOT / "checkpoints" / "iresnet18_half.safetensors"
    dataset = open_training_set(pack)
    model = load_model_file(str(shipped)).model
    policy = choose_policy(torch.device("cpu"), "fp32", channels_last=False, compile=False)
    centres = class_mean_centres(model, dataset, policy, workers=1, progress=False)
    assert centres.shape == (dataset.num_classes, 512)
    assert torch.allclose(centres.norm(dim=1), torch.ones(dataset.num_classes), atol=1e-5)

    from fmr.train.validation import embed_crops

    labelled = np.flatnonzero(dataset.labels >= 0)
    crops = np.stack([dataset.decode(i) for i in labelled])
    embeddings = embed_crops(model, torch.from_numpy(crops).permute(0, 3, 1, 2), policy)
    labels = torch.from_numpy(dataset.labels[labelled])
    for c in range(dataset.num_classes):
        mean_cosines = (embeddings[labels == c] @ centres.T).mean(dim=0)
        assert int(mean_cosines.argmax()) == c  # a class mean is the direction its members share

    first_losses = {}
    for how in ("class-means", "random"):
        run = tmp_path / how
        args = [*TINY, "--backbone", "iresnet18_half", "--embedding-size", "512",
                "--init-from", str(shipped), "--init-centres", how, "--distill-weight", "0",
                "--epochs", "1", "--val", "none", "--stop-after-epochs", "1"]
        assert train_main(["--data", str(pack), "--out", str(run), *args]) == 0
        assert bool(_events(run, "centres_imprinted")) == (how == "class-means")
        first_losses[how] = _events(run, "train")[0]["margin_loss"]
    assert first_losses["class-means"] < 0.5 * first_losses["random"]
