"""`fmr prepare` on small slices of the shared data: the documented split, nothing from LFW
folds 6-10 in training, deterministic and resumable output, the pack readable by training."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fmr.cli import main as fmr_main
from fmr.data.pack import read_validation
from fmr.data.recordio import read_image_set
from fmr.data.sources import open_training_set
from fmr.data.splits import shared_split
from fmr.errors import DataError

SLICE = ["--max-identities", "8", "--max-validation-identities", "2",
         "--max-images-per-identity", "3"]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _prepare(out: Path, *extra: str) -> int:
    return fmr_main(["prepare", "--preset", "shared", "--out", str(out), "--quiet", *SLICE,
                     "--cache", str(out.parent / "cache"), *extra])


@pytest.fixture(scope="module")
def shared_pack(tmp_path_factory, shared_data) -> Path:
    out = tmp_path_factory.mktemp("prepare") / "pack"
    assert _prepare(out, "--teacher", "dlib", "--workers", "2") == 0
    return out


def test_shared_pack_follows_the_split(shared_pack, shared_data):
    meta = json.loads((shared_pack / "meta.json").read_text())
    split = shared_split(shared_data)
    classes = meta["classes"]
    training = set(classes) | set(meta["distillation_identities"])
    assert training <= set(split.train)
    assert set(meta["validation_identities"]) <= set(split.validation)
    assert not training & set(meta["validation_identities"])
    # Nobody from LFW pair folds 6-10 trains.
    lfw_people = {key.split("/", 1)[1] for key in training if key.startswith("lfw/")}
    assert lfw_people and not lfw_people & split.eval_people
    assert any(key.startswith("celeba/") for key in classes)

    records = read_image_set(shared_pack / "train.rec")
    assert records.layout == "header"
    labels = records.labels
    counts = meta["counts"]
    assert len(labels) == counts["training_images"]
    assert sorted(set(labels[labels >= 0].tolist())) == list(range(len(classes)))
    assert (labels == -1).sum() == counts["distillation_only_images"]
    # Every class has at least two photos (a same-person pair for ArcFace).
    assert np.bincount(labels[labels >= 0]).min() >= 2

    teacher = np.load(shared_pack / "teacher.npy")
    assert teacher.dtype == np.float16 and teacher.shape == (len(labels), 128)
    np.testing.assert_allclose(np.linalg.norm(teacher.astype(np.float32), axis=1), 1.0, atol=2e-3)


def test_validation_pairs_are_consistent(shared_pack):
    validation = read_validation(shared_pack)
    assert validation.images.shape[1:] == (112, 112, 3)
    labels = validation.labels
    i, j = validation.pairs[:, 0], validation.pairs[:, 1]
    assert np.array_equal(labels[i] == labels[j], validation.same)
    genuine = int(validation.same.sum())
    assert genuine > 0 and len(validation.same) == 2 * genuine  # as many impostor pairs


def test_manifest_and_dropped_report(shared_pack):
    meta = json.loads((shared_pack / "meta.json").read_text())
    rows = _rows(shared_pack / "manifest.csv")
    assert len(rows) == meta["counts"]["photos_planned"]
    assert {r["split"] for r in rows} == {"train", "validation"}
    assert all(r["status"] in ("ok", "failed") for r in rows)
    assert (shared_pack / "dropped.csv").read_text().startswith("what,name,identity,reason")
    assert meta["pack_mib"] < 32 and meta["jpeg_quality"] == 95  # a slice fits at the top quality


def test_pack_is_training_data(shared_pack):
    dataset = open_training_set(shared_pack)
    assert dataset.kind == "pack" and dataset.num_classes >= 2
    crop = dataset.decode(0)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    assert 20 < crop.mean() < 235  # a real photo, not a blank
    info = dataset.describe()
    assert info["teacher"]["dimension"] == 128


def test_same_seed_same_pack_and_rerun_uses_the_cache(shared_pack, tmp_path):
    cache = shared_pack.parent / "cache" / "detections.jsonl"
    lines_before = len(cache.read_text().splitlines())
    copy = shared_pack.parent / "pack-again"
    shutil.rmtree(copy, ignore_errors=True)
    assert _prepare(copy, "--teacher", "dlib") == 0
    # Nothing new was detected or embedded: every face came from the cache.
    assert len(cache.read_text().splitlines()) == lines_before
    for name in ("train.rec", "train.idx", "val.rec", "val_pairs.txt", "teacher.npy"):
        assert (copy / name).read_bytes() == (shared_pack / name).read_bytes(), name


def test_without_teacher_one_photo_identities_are_dropped(shared_pack):
    out = shared_pack.parent / "no-teacher"
    assert _prepare(out) == 0
    meta = json.loads((out / "meta.json").read_text())
    with_teacher = json.loads((shared_pack / "meta.json").read_text())
    assert meta["counts"]["distillation_only_images"] == 0
    assert not (out / "teacher.npy").exists()
    dropped = _rows(out / "dropped.csv")
    single = {r["identity"] for r in dropped if "single usable photo" in r["reason"]}
    assert single == set(with_teacher["distillation_identities"])
    assert meta["classes"] == with_teacher["classes"]


def test_max_identities_zero_writes_a_validation_only_pack(shared_pack):
    """The pack `train.py --val` takes beside an original-preset pack: the same validation
    images and pairs as a full pack of the same seed, and nothing to train on."""
    out = shared_pack.parent / "validation-only"
    args = ["prepare", "--preset", "shared", "--out", str(out), "--quiet",
            "--max-identities", "0", "--max-validation-identities", "2",
            "--max-images-per-identity", "3", "--cache", str(shared_pack.parent / "cache")]
    assert fmr_main(args) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["classes"] == [] and meta["counts"]["training_images"] == 0
    assert (out / "val_pairs.txt").read_bytes() == (shared_pack / "val_pairs.txt").read_bytes()
    validation, full = read_validation(out), read_validation(shared_pack)
    assert np.array_equal(validation.images, full.images)
    assert np.array_equal(validation.labels, full.labels)
    with pytest.raises(DataError, match="no training images"):
        open_training_set(out)


def test_original_preset_splits_masks_and_augments(tmp_path, photos_dir):
    people = tmp_path / "people"
    for person in ("obama", "biden", "kit_harington"):
        shutil.copytree(photos_dir / person, people / person)
    out = tmp_path / "original"
    cache = tmp_path / "cache"
    args = ["--preset", "original", "--quiet", "--cache", str(cache),
            "--min-masked", "3", "--val-fraction", "0.34", "--seed", "3"]  # fmt: skip
    assert fmr_main(["prepare", str(people), "--out", str(out), *args]) == 0
    # The same photos copied elsewhere (new paths and mtimes): the cache, keyed by the photos'
    # bytes, answers every detection, and the pack is the same byte for byte.
    lines = len((cache / "detections.jsonl").read_text().splitlines())
    copied = tmp_path / "copied"
    shutil.copytree(people, copied, copy_function=shutil.copyfile)
    assert fmr_main(["prepare", str(copied), "--out", str(tmp_path / "again"), *args]) == 0
    assert len((cache / "detections.jsonl").read_text().splitlines()) == lines
    for name in ("train.rec", "train.idx", "val.rec", "val_pairs.txt"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name
    meta = json.loads((out / "meta.json").read_text())
    photos = {p: len(list((people / p).iterdir())) for p in ("obama", "biden", "kit_harington")}
    kept = [p for p, n in photos.items() if n >= 3]
    assert meta["classes"] == sorted(kept)
    counts = meta["counts"]
    held_out = counts["validation_images"]
    trained_photos = sum(photos[p] for p in kept) - counts["photos_failed"] - held_out
    # each training photo: itself, its masked copy, and a flip and a rotation of both
    assert counts["training_images"] == 6 * trained_photos
    assert held_out >= len(kept)  # at least one photo of each kept identity held out
    dropped = _rows(out / "dropped.csv")
    for person in set(photos) - set(kept):
        assert any(r["identity"] == person and "--min-masked" in r["reason"] for r in dropped)


def test_prepare_errors_are_clear(tmp_path, capsys):
    assert fmr_main(["prepare", "--preset", "original", "--out", str(tmp_path / "x")]) == 2
    assert "needs SOURCE" in capsys.readouterr().err
    lonely = tmp_path / "lonely" / "only_person"
    lonely.mkdir(parents=True)
    assert fmr_main(["prepare", str(lonely.parent), "--preset", "original",
                     "--out", str(tmp_path / "y"), "--quiet"]) == 2
    assert "no photos found" in capsys.readouterr().err


def _eval_person(shared_data: Path, at_least: int = 3) -> str:
    from fmr.data.splits import evaluation_people

    return next(p for p in sorted(evaluation_people(shared_data))
                if len(list((shared_data / "lfw" / "images" / p).glob("*.jpg"))) >= at_least)


def test_training_side_folder_holds_no_evaluation_person(shared_data, tmp_path):
    from fmr.data.splits import (
        EvaluationPeople,
        link_identity_folder,
        training_side_identities,
    )

    split = shared_split(shared_data)
    identities = training_side_identities(shared_data, min_photos=10)
    assert any(k.startswith("celeba-") for k in identities)
    assert any(k.startswith("lfw-") for k in identities)
    assert all(len(v) >= 10 for v in identities.values())
    people = EvaluationPeople(shared_data)
    for key, photos in identities.items():
        assert people.identity(key, photos) is None, key
    validation = {k.split("/", 1)[1] for k in split.validation}
    assert not {k.removeprefix("celeba-") for k in identities} & validation
    few = dict(list(identities.items())[:2])
    out = link_identity_folder(few, tmp_path / "side")
    assert sorted(p.name for p in out.iterdir()) == sorted(few)
    link = next((out / next(iter(few))).iterdir())
    assert link.is_symlink() and link.resolve() in {p.resolve() for p in next(iter(few.values()))}


def test_original_preset_leaves_out_evaluation_people(shared_data, tmp_path):
    """Evaluation people under any disguise (a folder named after them, links renamed, copies
    with LFW names) never enter the plan of a source from the shared data, nor the pack."""
    from fmr.pipelines.prepare import PrepareOptions, plan_original

    person = _eval_person(shared_data)
    lfw = shared_data / "lfw" / "images"
    source = tmp_path / "source"
    celeba = sorted(p for p in (shared_data / "celeba299" / "images").iterdir()
                    if len(list(p.iterdir())) >= 6)[:2]
    for folder in celeba:  # two training-side identities, linked
        (source / f"celeba-{folder.name}").mkdir(parents=True)
        for photo in sorted(folder.iterdir())[:5]:
            (source / f"celeba-{folder.name}" / photo.name).symlink_to(photo)
    photos = sorted((lfw / person).iterdir())
    (source / f"lfw-{person}").mkdir()  # named after the person
    (source / f"lfw-{person}" / photos[0].name).symlink_to(photos[0])
    (source / "someone").mkdir()  # a harmless name, links renamed: found by where they lead
    (source / "someone" / "a.jpg").symlink_to(photos[1])
    (source / "copied").mkdir()  # a plain copy that keeps LFW's file name
    shutil.copy(photos[2], source / "copied" / photos[2].name)
    disguised = {f"lfw-{person}", "someone", "copied"}

    plan = plan_original(PrepareOptions("original", tmp_path / "o", source))
    assert plan.description["evaluation_people_excluded"] is True  # links into the shared data
    assert {p.identity for p in plan.images} == {f"celeba-{f.name}" for f in celeba}
    assert {d["name"] for d in plan.dropped} == disguised
    assert all("pair folds 6-10" in d["reason"] for d in plan.dropped)
    # --no-exclude-evaluation-people is the only way to keep them
    kept = plan_original(PrepareOptions("original", tmp_path / "o", source,
                                        exclude_evaluation_people=False))
    assert disguised <= {p.identity for p in kept.images}

    # The whole command: the pack's classes and validation identities hold no evaluation person.
    out = tmp_path / "pack"
    code = fmr_main(["prepare", str(source), "--preset", "original", "--out", str(out),
                     "--quiet", "--min-masked", "2", "--max-images-per-identity", "4",
                     "--val-fraction", "0.25"])
    assert code == 0
    meta = json.loads((out / "meta.json").read_text())
    assert set(meta["classes"]) == {f"celeba-{f.name}" for f in celeba}
    assert set(meta["validation_identities"]) <= set(meta["classes"])
    manifest = _rows(out / "manifest.csv")
    assert not any(person in Path(r["input"]).resolve().parts for r in manifest)
    assert {r["name"] for r in _rows(out / "dropped.csv") if r["what"] == "identity"} >= disguised
