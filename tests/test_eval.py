"""`fmr eval` and fmr.eval.protocols on small real pair sets (training-side LFW people)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fmr.cli import main
from fmr.data.lfw import read_pairs
from fmr.errors import DataError, FmrError
from fmr.eval import protocols
from fmr.metrics import kfold_accuracy
from fmr.pipelines import embedding
from fmr.settings import REPO_ROOT


@pytest.fixture(scope="module")
def tiny_lfw(lfw_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A 2-fold LFW-format pairs file (2 same + 2 different pairs per fold) from folds 1-2 of
    the real pairs.txt, and an image root of links to the real photos, plus one broken photo."""
    pairs = read_pairs(lfw_dir / "pairs.txt")
    lines = ["2 2"]
    for fold in (1, 2):
        in_fold = [p for p in pairs if p.fold == fold]
        same = [p for p in in_fold if p.same][:2]
        different = [p for p in in_fold if not p.same][:2]
        lines += [f"{p.name_a} {p.index_a} {p.index_b}" for p in same]
        lines += [f"{p.name_a} {p.index_a} {p.name_b} {p.index_b}" for p in different]
    base = tmp_path_factory.mktemp("tiny_lfw")
    pairs_file = base / "pairs.txt"
    pairs_file.write_text("\n".join(lines) + "\n")
    root = base / "images"
    chosen = read_pairs(pairs_file)
    for pair in chosen:
        for name, index in ((pair.name_a, pair.index_a), (pair.name_b, pair.index_b)):
            link = root / name / f"{name}_{index:04d}.jpg"
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(lfw_dir / "images" / name / link.name)
    # The first image of the last different pair is replaced by a broken file.
    last = chosen[-1]
    broken = root / last.name_a / f"{last.name_a}_{last.index_a:04d}.jpg"
    broken.unlink()
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a real jpeg")
    return pairs_file, root


def test_lfw_pairs_and_folds(tiny_lfw, tmp_path):
    pairs_file, root = tiny_lfw
    pairs = protocols.lfw_pairs(pairs_file, root, "all")
    assert pairs.same.tolist() == ([True] * 2 + [False] * 2) * 2
    assert pairs.fold.tolist() == [1] * 4 + [2] * 4
    assert len(set(pairs.images)) == len(pairs.images)
    for i in range(8):
        a, b = pairs.images[pairs.first[i]], pairs.images[pairs.second[i]]
        assert (
            pairs.identities[pairs.first[i]] == pairs.identities[pairs.second[i]]
        ) == pairs.same[i]
        assert a.parent.name == pairs.identities[pairs.first[i]] and b.is_file()
    assert protocols.lfw_pairs(pairs_file, root, "2").fold.tolist() == [2] * 4
    assert protocols.parse_folds("6-10", range(1, 11)) == [6, 7, 8, 9, 10]
    assert protocols.parse_folds("1,3", range(1, 11)) == [1, 3]
    with pytest.raises(FmrError, match="folds 1-2"):
        protocols.lfw_pairs(pairs_file, root, "6-10")
    with pytest.raises(DataError, match="--root"):
        protocols.lfw_pairs(pairs_file, tmp_path, "all")


@pytest.fixture(scope="module")
def unmasked_eval(tiny_lfw, tmp_path_factory):
    """`fmr eval --backbone dlib` on the tiny pair set: (output folder, argv, printed table)."""
    pairs_file, root = tiny_lfw
    out = tmp_path_factory.mktemp("eval")
    argv = ["eval", "--pairs", str(pairs_file), "--root", str(root), "--folds", "all",
            "--backbone", "dlib", "--out", str(out), "--workers", "2", "--quiet"]  # fmt: skip
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    return out, argv, printed.getvalue()


def test_eval_dlib_end_to_end(tiny_lfw, unmasked_eval):
    pairs_file, root = tiny_lfw
    out, _, table = unmasked_eval
    assert "| dlib-resnet-v1 (dlib) |" in table
    folder = out / "unmasked"
    for name in ("metrics.json", "report.html", "roc.png", "scores.png", "angles.png"):
        assert (folder / name).stat().st_size > 1000, name
    report = json.loads((folder / "metrics.json").read_text())
    assert report["protocol"]["folds"] == [1, 2] and report["protocol"]["n_pairs"] == 8
    (entry,) = report["backbones"]
    listed = entry["listed_pairs"]
    pairs = protocols.lfw_pairs(pairs_file, root, "all")
    broken = [i for i, path in enumerate(pairs.images) if path.stat().st_size < 100]
    assert len(broken) == 1
    with_broken = np.isin(pairs.first, broken) | np.isin(pairs.second, broken)
    assert listed["n_pairs"] == 8 and listed["n_failed"] == with_broken.sum() >= 1
    kfold = listed["kfold_accuracy"]
    assert [f["fold"] for f in kfold["folds"]] == [1, 2]
    assert kfold["mean"] == pytest.approx(np.mean([f["accuracy"] for f in kfold["folds"]]))
    # The same numbers again from the cached embeddings, a failed pair scored -1 ("different").
    cache = np.load(out / "cache" / "dlib" / "unmasked-center.npz")
    rows = {p: i for i, p in enumerate(cache["paths"].tolist())}
    emb = cache["embeddings"][[rows[str(p)] for p in pairs.images]]
    scores = np.where(with_broken, -1.0, (emb[pairs.first] * emb[pairs.second]).sum(axis=1))
    expected = kfold_accuracy(scores, pairs.same, folds=pairs.fold)
    assert [f["accuracy"] for f in kfold["folds"]] == list(expected.accuracies)
    assert [f["threshold"] for f in kfold["folds"]] == pytest.approx(expected.thresholds, abs=1e-6)
    # dlib separates the clean listed pairs of LFW: every genuine above every impostor.
    clean = ~with_broken
    assert scores[clean & pairs.same].min() > scores[clean & ~pairs.same].max()
    n = entry["all_pairs"]["n_images"]
    assert n == len(pairs.images) - 1
    assert entry["all_pairs"]["n_genuine"] + entry["all_pairs"]["n_impostor"] == n * (n - 1) // 2
    assert [p["far_target"] for p in entry["all_pairs"]["tar_at_far"]] == [0.1, 0.01, 0.001, 0.0001]
    card = json.loads((REPO_ROOT / "checkpoints" / "dlib_reference.json").read_text())
    assert entry["calibrated"]["threshold"] == pytest.approx(card["calibration"]["threshold"])
    (failure,) = entry["failed_images"]["gallery"]
    assert "truncated or corrupt" in failure["reason"] or "not an image" in failure["reason"]
    # 1:N identification on the same images (fmr.eval.protocols.identification_sets).
    sets = protocols.identification_sets(pairs)
    identification = entry["identification"]
    assert identification["sizes"] == sets.sizes()
    assert identification["gallery_condition"] == identification["probe_condition"] == "unmasked"
    closed, open_set = identification["closed_set"], identification["open_set"]
    assert 0 <= closed["rank_1"] <= closed["rank_5"] <= 1 and len(closed["cmc"]) == 20
    broken_row = broken[0]
    assert closed["n_gallery_failed"] == int(broken_row in sets.closed_gallery)
    assert [p["fpir_target"] for p in open_set["dir_at_fpir"]] == [0.01, 0.1]
    assert open_set["calibrated"]["calibration"] == "calibration"
    enrolled = int(np.isin(sets.open_gallery, broken, invert=True).sum())
    assert open_set["calibrated"]["gallery_size"] == enrolled
    assert "Identification (1:N)" in table and "| dlib-resnet-v1 (dlib) | " in table
    assert "rank-1 %" in (folder / "report.html").read_text()


def test_eval_rerun_reuses_the_cache_and_records(unmasked_eval, monkeypatch, capsys, tmp_path):
    import shutil

    out, argv, _ = unmasked_eval
    before = json.loads((out / "unmasked" / "metrics.json").read_text())["backbones"][0]

    def no_embedding(task):
        raise AssertionError(f"{task[0]} was embedded again")

    monkeypatch.setattr(embedding, "_embed_one", no_embedding)
    monkeypatch.setenv("FMR_CHECKPOINT_DIR", str(tmp_path))  # --record writes a copy's card
    shutil.copy(REPO_ROOT / "checkpoints" / "dlib_reference.json", tmp_path)
    assert main([*argv, "--record"]) == 0
    capsys.readouterr()
    again = json.loads((out / "unmasked" / "metrics.json").read_text())["backbones"][0]
    assert again["listed_pairs"] == before["listed_pairs"]
    card = json.loads((tmp_path / "dlib_reference.json").read_text())
    recorded = card["metrics"]["lfw-folds1-2/unmasked"]
    assert recorded["accuracy"] == before["listed_pairs"]["kfold_accuracy"]["mean"]
    assert recorded["tar_at_far"]["0.001"] == before["all_pairs"]["tar_at_far"][2]["tar"]
    assert (
        card["calibration"]
        == json.loads((REPO_ROOT / "checkpoints" / "dlib_reference.json").read_text())[
            "calibration"
        ]
    )
    identification = card["metrics"]["lfw-folds1-2/unmasked/identification"]
    closed = before["identification"]["closed_set"]
    assert identification["rank_1"] == closed["rank_1"]
    assert identification["rank_5"] == closed["rank_5"]
    assert list(identification["dir_at_fpir"]) == ["0.01", "0.1"]
    # The app lists recorded accuracies from the card's metrics: the new key adds none.
    from fmr.app.models import accuracy_lines

    lines = accuracy_lines(card)
    assert any("LFW folds 1-2" in line for line in lines)
    assert not any("identification" in line for line in lines)

    # --no-identification: the verification numbers only.
    capsys.readouterr()
    assert main([*argv, "--no-identification"]) == 0
    assert "Identification" not in capsys.readouterr().out
    plain = json.loads((out / "unmasked" / "metrics.json").read_text())["backbones"][0]
    assert "identification" not in plain and plain["listed_pairs"] == before["listed_pairs"]


def test_eval_masked_second_reuses_the_unmasked_gallery(tiny_lfw, unmasked_eval, capsys):
    masks = pytest.importorskip("fmr.masks", reason="synthetic masks not built yet")
    out, argv, _ = unmasked_eval
    cache = out / "cache" / "dlib"
    unmasked = cache / "unmasked-center.npz"
    stamp = unmasked.stat().st_mtime_ns
    style = masks.MASK_STYLES[0]
    assert main([*argv, "--mask-second", style]) == 0
    capsys.readouterr()
    assert unmasked.stat().st_mtime_ns == stamp  # the unmasked embeddings were reused as is
    masked = np.load(cache / f"{style}-fmr-seed0-center.npz")
    assert set(masked["mask"][masked["ok"]].tolist()) == {style}
    report = json.loads((out / f"second-{style}-fmr-seed0" / "metrics.json").read_text())
    assert report["condition"]["second"] == {
        "masked": True, "style": style, "renderer": "fmr", "seed": 0
    }  # fmt: skip
    # Only the second photos (the probes of all-pairs metrics) and the identification probes
    # are masked and embedded again; all-pairs metrics use the second photos only.
    pairs = protocols.lfw_pairs(*tiny_lfw, "all")
    second_photos = {str(pairs.images[i]) for i in pairs.second}
    sets = protocols.identification_sets(pairs)
    id_probes = {str(pairs.images[i]) for i in sets.probe_rows}
    assert set(masked["paths"].tolist()) == second_photos | id_probes
    identification = report["backbones"][0]["identification"]
    assert identification["gallery_condition"] == "unmasked"
    assert identification["probe_condition"] == f"masked ({style}, fmr renderer)"
    assert identification["open_set"]["calibrated"]["calibration"] == "calibration_masked"
    all_pairs = report["backbones"][0]["all_pairs"]
    n, probes = all_pairs["n_images"], all_pairs["n_probes"]
    in_pairs = np.isin(masked["paths"], sorted(second_photos))
    assert probes == masked["ok"][in_pairs].sum() < masked["ok"].sum() and all_pairs["ordered"]
    # every probe against every gallery image but its own unmasked self
    assert all_pairs["n_genuine"] + all_pairs["n_impostor"] == probes * (n - 1)


def test_calibrate_only_stores_the_calibration_in_the_card(
    celeba_dir, lfw_dir, tmp_path, monkeypatch, capsys
):
    """`fmr eval --calibrate-only` on a tiny copy of the shared-data layout (2 CelebA people),
    into a copy of the dlib card (the checkpoint path, update_card, is tested in test_verify)."""
    import shutil

    data = tmp_path / "data"
    for identity in sorted(p.name for p in (celeba_dir / "images").iterdir())[:2]:
        folder = data / "celeba299" / "images" / identity
        folder.mkdir(parents=True)
        for photo in sorted((celeba_dir / "images" / identity).iterdir())[:3]:
            (folder / photo.name).symlink_to(photo)
    person = data / "lfw" / "images" / "Colin_Powell"
    person.mkdir(parents=True)
    (person / "Colin_Powell_0001.jpg").symlink_to(
        lfw_dir / "images" / person.name / "Colin_Powell_0001.jpg"
    )
    (data / "lfw" / "pairs.txt").write_text(
        "1 1\nColin_Powell 1 1\nColin_Powell 1 Colin_Powell 1\n"
    )
    monkeypatch.setenv("FMR_DATA_DIR", str(data))
    cards = tmp_path / "checkpoints"
    cards.mkdir()
    shutil.copy(REPO_ROOT / "checkpoints" / "dlib_reference.json", cards)
    monkeypatch.setenv("FMR_CHECKPOINT_DIR", str(cards))

    out = tmp_path / "out"
    argv = ["eval", "--backbone", "dlib", "--calibrate-only", "--out", str(out),
            "--workers", "1", "--quiet", "--target-far", "0.1"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "calibrated dlib:" in err and "calibrated dlib (a masked photo against" in err
    card = json.loads((cards / "dlib_reference.json").read_text())
    masked = card["calibration_masked"]
    assert "masked (random, fmr renderer) photo against every other" in masked["measured_on"]
    assert masked["n_impostor"] > card["calibration"]["n_impostor"]  # ordered probe pairs
    assert masked["threshold"] != card["calibration"]["threshold"]
    calibration = card["calibration"]
    assert calibration["target_far"] == 0.1
    assert calibration["n_genuine"] + calibration["n_impostor"] <= 6 * 5 // 2
    assert calibration["n_genuine"] >= 3  # two people with three photos each (some may lack a face)
    assert "validation split: 2 CelebA identities, 6 photos" in calibration["measured_on"]
    committed = json.loads((REPO_ROOT / "checkpoints" / "dlib_reference.json").read_text())
    assert card["metrics"] == committed["metrics"] and card["name"] == committed["name"]
    assert not (out / "unmasked").exists()  # --calibrate-only evaluates nothing


def test_committed_dlib_card_is_calibrated_on_validation_data():
    card = json.loads((REPO_ROOT / "checkpoints" / "dlib_reference.json").read_text())
    c = card["calibration"]
    assert card["architecture"] == "dlib_resnet_v1" and card["embedding_size"] == 128
    assert "validation split" in c["measured_on"] and "CelebA" in c["measured_on"]
    assert c["n_impostor"] > 100_000  # all cross-identity pairs, not a listed handful
    assert c["far"] <= c["target_far"] == 1e-3
    assert c["inconclusive"]["low"] <= c["threshold"]
    assert sum(c["histogram"]["genuine"]) == c["n_genuine"]
    assert math.isclose(c["frr"] + next(
        p["tar"] for p in c["operating_points"] if p["far_target"] == 1e-3
    ), 1.0)  # fmt: skip


def test_backbone_lists_name_several_families_and_refuse_unknown_ones(
    tmp_path, monkeypatch, capsys
):
    """`fmr eval --backbone iresnet,ressanet` evaluates those families only (no dlib); an
    unknown name is refused by argparse with the names it accepts; a listed family with no
    checkpoint is an error naming it, not a silent skip."""
    import argparse

    from fmr.commands.common import backbone_list

    assert backbone_list("iresnet,ressanet") == "iresnet,ressanet"
    assert backbone_list("dlib, dlib") == "dlib"
    assert backbone_list("all") == "all"
    for bad in ("iresnet,arcface", "", ","):
        with pytest.raises(argparse.ArgumentTypeError, match="one or more of iresnet"):
            backbone_list(bad)
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--backbone", "iresnet,vgg", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "'iresnet,vgg'" in capsys.readouterr().err

    monkeypatch.setenv("FMR_CHECKPOINT_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr("fmr.verify.lookup.runs_dir", lambda: tmp_path / "no-runs")
    assert main(["eval", "--backbone", "dlib,ressanet", "--out", str(tmp_path / "out")]) == 2
    assert "ressanet" in capsys.readouterr().err.lower()


def test_embedding_cache_key_follows_the_weights_not_the_card(tmp_path):
    """Recording results or a calibration rewrites a model file's card (its safetensors header):
    the cached embeddings stay valid. Other weights get another key."""
    import shutil

    import torch

    from fmr.modelfile import load_model_file, save_model_file, update_card
    from fmr.pipelines.embedding import embedder_key

    source = REPO_ROOT / "checkpoints" / "ressanet18_half.safetensors"
    weights = tmp_path / source.name
    shutil.copy(source, weights)
    shutil.copy(source.with_suffix(".json"), weights.with_suffix(".json"))
    key = embedder_key(str(weights))
    before = weights.read_bytes()
    update_card(weights, notes="recorded again")
    assert weights.read_bytes() != before and embedder_key(str(weights)) == key
    loaded = load_model_file(weights)
    with torch.no_grad():
        next(loaded.model.parameters()).add_(0.5)
    other = save_model_file(tmp_path / "other", loaded.model, loaded.card, storage="int8")
    assert embedder_key(str(other)) != key


def test_several_checkpoints_in_one_eval_are_told_apart(tiny_lfw, tmp_path, capsys):
    """`--checkpoint A --checkpoint B` scores both in one run (each photo detected and aligned
    once); two exports of one architecture get their run folders in their names."""
    import shutil

    pairs_file, root = tiny_lfw
    source = REPO_ROOT / "checkpoints" / "ressanet18_half.safetensors"
    files = []
    for run in ("seed0", "seed1"):
        (tmp_path / run).mkdir()
        files.append(tmp_path / run / "best.safetensors")
        shutil.copy(source, files[-1])
    out = tmp_path / "out"
    argv = ["eval", "--pairs", str(pairs_file), "--root", str(root), "--folds", "all",
            "--checkpoint", str(files[0]), "--checkpoint", str(files[1]), "--out", str(out),
            "--workers", "1", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "unmasked" / "metrics.json").read_text())
    first, second = report["backbones"]
    assert [first["checkpoint"], second["checkpoint"]] == [str(f.resolve()) for f in files]
    assert first["name"].endswith("[seed0]") and second["name"].endswith("[seed1]")
    assert first["listed_pairs"]["kfold_accuracy"] == second["listed_pairs"]["kfold_accuracy"]
    table = capsys.readouterr().out
    assert "[seed0]" in table and "[seed1]" in table
    assert main(["eval", "--closed-set", str(tmp_path), "--checkpoint", str(files[0]),
                 "--checkpoint", str(files[1])]) == 2  # fmt: skip
    assert "needs one --checkpoint" in capsys.readouterr().err

    # The app's score files hold one model per family: choose which of the two.
    from fmr.app.eval_scores import build_scores
    from fmr.app.eval_scores import main as eval_scores_main

    assert eval_scores_main([str(out), "--out", str(tmp_path / "scores"), "--quiet"]) == 2
    assert "several ressanet checkpoints" in capsys.readouterr().err
    files_by_family = build_scores(out, progress=False, checkpoints=[str(files[1])])
    assert list(files_by_family) == ["ressanet"]
    unmasked = files_by_family["ressanet"]["conditions"]["unmasked"]
    assert unmasked["summary"]["kfold_accuracy"]["mean"] == pytest.approx(
        second["listed_pairs"]["kfold_accuracy"]["mean"])
    assert len(unmasked["genuine"]) + len(unmasked["impostor"]) > 0
    with pytest.raises(DataError, match="none of the backbones"):
        build_scores(out, progress=False, checkpoints=["dlib"])
