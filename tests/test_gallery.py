"""Find a person: the gallery store (synthetic unit vectors), the open-set decision, and
`fmr gallery build / add / remove / search / info` on real LFW photos with dlib."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fmr.cli import main
from fmr.errors import DataError, FmrError
from fmr.gallery import index as faiss_index
from fmr.gallery.search import Match, decide, identify, pick_calibration, search_people
from fmr.gallery.store import DATA_FILE, GALLERY_FILE, BackboneInfo, Gallery
from fmr.settings import REPO_ROOT

DIM = 16
BACKBONE = BackboneInfo("test", "test-model", "/nowhere/test.safetensors", "test-0123456789",
                        DIM)


def unit_rows(count: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def synthetic(people: int = 12, per_person: int = 5, seed: int = 0, **kwargs) -> Gallery:
    count = people * per_person
    names = [f"person{i // per_person:02d}" for i in range(count)]
    photos = [f"{name}/{i}.jpg" for i, name in enumerate(names)]
    return Gallery.from_arrays(unit_rows(count, seed), names, photos, BACKBONE, **kwargs)


def brute_force_people(gallery: Gallery, queries: np.ndarray, top: int):
    """Each person's best cosine similarity, best people first (numpy, no FAISS)."""
    scores = queries @ gallery.embeddings.T
    people = np.asarray(gallery.people)
    answers = []
    for row in scores:
        best = {name: float(row[people == name].max()) for name in set(gallery.people)}
        answers.append(sorted(best.items(), key=lambda item: -item[1])[:top])
    return answers


def data_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if DATA_FILE.match(p.name))


def dlib_calibrations() -> tuple[dict, dict]:
    card = json.loads((REPO_ROOT / "checkpoints" / "dlib_reference.json").read_text())
    return card["calibration"], card.get("calibration_masked", {})


# ----------------------------------------------------------------------------- the store
def test_search_people_equals_brute_force_and_groups_by_person():
    gallery = synthetic()
    queries = unit_rows(7, seed=1)
    found = search_people(gallery, queries, top=5)
    for matches, expected in zip(found, brute_force_people(gallery, queries, 5), strict=True):
        assert [m.person for m in matches] == [name for name, _ in expected]
        assert [m.similarity for m in matches] == pytest.approx([s for _, s in expected],
                                                                abs=1e-5)
        for match in matches:  # the entry named is that person's best photo
            row = gallery.row_of(match.entry_id)
            assert gallery.people[row] == match.person and gallery.photos[row] == match.photo
            assert match.angle_deg == pytest.approx(
                np.degrees(np.arccos(np.clip(match.similarity, -1, 1))), abs=1e-3)


def test_one_person_with_many_photos_does_not_crowd_out_the_others():
    many = unit_rows(1, seed=2)[0] + 0.05 * unit_rows(40, seed=3)
    many /= np.linalg.norm(many, axis=1, keepdims=True)
    others = unit_rows(6, seed=4)
    gallery = Gallery.from_arrays(np.concatenate([many, others]),
                                  ["crowd"] * 40 + [f"p{i}" for i in range(6)],
                                  [f"{i}.jpg" for i in range(46)], BACKBONE)
    (matches,) = search_people(gallery, many[:1], top=4)  # 40 'crowd' entries score highest
    assert [m.person for m in matches][0] == "crowd" and len(matches) == 4
    assert len({m.person for m in matches}) == 4


def test_add_and_remove_keep_ids_stable():
    gallery = synthetic(people=3, per_person=2)
    first_ids = gallery.ids.copy()
    new = gallery.add(unit_rows(2, seed=5), "newcomer", ["a.jpg", "b.jpg"])
    assert new.tolist() == [6, 7] and gallery.counts()["newcomer"] == 2
    assert gallery.remove_person("person01") == 2
    assert gallery.ids.tolist() == [0, 1, 4, 5, 6, 7]
    again = gallery.add(unit_rows(1, seed=6), "later", ["c.jpg"])
    assert again.tolist() == [8]  # removed ids are never reused
    assert set(first_ids[[0, 1, 4, 5]]) <= set(gallery.ids.tolist())
    (matches,) = search_people(gallery, gallery.embeddings[gallery.row_of(7)], top=1)
    assert matches[0].entry_id == 7 and matches[0].similarity == pytest.approx(1, abs=1e-5)
    with pytest.raises(FmrError, match="no person named 'nobody'.*person00"):
        gallery.remove_person("nobody")
    with pytest.raises(ValueError, match="L2-normalised"):
        gallery.add(np.zeros((1, DIM), np.float32), "x", ["zero.jpg"])


def test_index_is_rebuilt_when_the_size_crosses_the_exact_ivf_boundary(monkeypatch, tmp_path):
    import faiss

    monkeypatch.setattr(faiss_index, "EXACT_MAX_ENTRIES", 50)
    gallery = synthetic(people=8, per_person=5)  # 40 entries
    assert gallery.choice.kind == "exact" and isinstance(gallery.index, faiss.IndexIDMap2)
    gallery.add(unit_rows(20, seed=7), "big", [f"big{i}.jpg" for i in range(20)])
    assert gallery.choice.kind == "ivf" and isinstance(gallery.index, faiss.IndexIVFFlat)
    assert gallery.index.ntotal == 60
    queries = unit_rows(5, seed=8)
    expected = brute_force_people(gallery, queries, 3)
    # One list (nlist = 60 // 39): IVF searches everything, so it is exact here.
    assert [[m.person for m in ms] for ms in search_people(gallery, queries, 3)] == \
        [[name for name, _ in e] for e in expected]
    gallery.save(tmp_path / "g")
    loaded = Gallery.load(tmp_path / "g")
    assert loaded.choice.kind == "ivf" and loaded.index.ntotal == 60
    assert loaded.remove_person("big") == 20
    assert loaded.choice.kind == "exact" and loaded.index.ntotal == 40
    assert "40 entries" in loaded.choice.reason


def test_save_load_round_trip_and_generations(tmp_path):
    folder = tmp_path / "gallery"
    gallery = synthetic(mask_probability=np.linspace(0, 1, 60, dtype=np.float32))
    gallery.save(folder)
    first = json.loads((folder / GALLERY_FILE).read_text())
    assert first["generation"] == 1 and first["entries"] == 60 and first["people"] == 12
    assert first["backbone"]["key"] == BACKBONE.key and first["index"]["kind"] == "exact"
    loaded = Gallery.load(folder)
    assert np.array_equal(loaded.embeddings, gallery.embeddings)
    assert loaded.people == gallery.people and loaded.photos == gallery.photos
    assert np.array_equal(loaded.mask_probability, gallery.mask_probability)
    assert loaded.backbone == BACKBONE and loaded.generation == 1
    queries = unit_rows(3, seed=9)
    assert search_people(loaded, queries) == search_people(gallery, queries)
    loaded.add(unit_rows(1, seed=10), "x", ["x.jpg"])
    loaded.save(folder)
    second = json.loads((folder / GALLERY_FILE).read_text())
    assert second["generation"] == 2 and second["next_id"] == 61
    assert data_files(folder) == sorted(second["files"].values())  # the old generation is gone


def test_a_crash_before_the_commit_leaves_the_old_gallery_whole(tmp_path, monkeypatch):
    import fmr.gallery.store as store

    folder = tmp_path / "gallery"
    synthetic().save(folder)
    gallery = Gallery.load(folder)
    gallery.remove_person("person00")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store, "write_text_atomically", crash)
    with pytest.raises(OSError):
        gallery.save(folder)
    monkeypatch.undo()
    survivor = Gallery.load(folder)  # the new data files are there, but not named: unseen
    assert len(survivor) == 60 and "person00" in survivor.people
    survivor.save(folder)  # the next save clears the crashed one's stray files
    meta = json.loads((folder / GALLERY_FILE).read_text())
    assert data_files(folder) == sorted(meta["files"].values())


def test_a_save_over_a_generation_it_did_not_read_is_refused(tmp_path):
    folder = tmp_path / "gallery"
    synthetic().save(folder)
    first, second = Gallery.load(folder), Gallery.load(folder)
    first.add(unit_rows(1, seed=11), "a", ["a.jpg"])
    first.save(folder)
    second.add(unit_rows(1, seed=12), "b", ["b.jpg"])
    with pytest.raises(DataError, match="changed since it was read"):
        second.save(folder)
    assert "a" in Gallery.load(folder).people


@pytest.mark.parametrize("damage, message", [
    ("no-json", "damaged gallery: its gallery.json is missing"),
    ("empty-folder", "not a gallery: no gallery.json \\(an empty folder\\)"),
    ("garbage-json", "not readable JSON"),
    ("foreign-json", "not an fmr gallery"),
    ("version", "format version 99"),
    ("truncated-index", "not a readable FAISS index"),
    ("truncated-entries", "is not readable"),
    ("missing-entries", "is missing"),
    ("wrong-count", "says 61 entries"),
    ("not-a-folder", "is a file"),
    ("no-folder", "no such gallery folder"),
])
def test_a_damaged_or_foreign_folder_is_a_data_error(tmp_path, damage, message):
    folder = tmp_path / "gallery"
    synthetic().save(folder)
    meta_file = folder / GALLERY_FILE
    meta = json.loads(meta_file.read_text())
    entries, index = folder / meta["files"]["entries"], folder / meta["files"]["index"]
    if damage == "no-json":
        meta_file.unlink()
    elif damage == "empty-folder":
        folder = tmp_path / "empty"
        folder.mkdir()
    elif damage == "garbage-json":
        meta_file.write_text("{not json")
    elif damage == "foreign-json":
        meta_file.write_text(json.dumps({"name": "some other tool"}))
    elif damage == "version":
        meta_file.write_text(json.dumps({**meta, "version": 99}))
    elif damage == "truncated-index":
        index.write_bytes(index.read_bytes()[:100])
    elif damage == "truncated-entries":
        entries.write_bytes(entries.read_bytes()[:200])
    elif damage == "missing-entries":
        entries.unlink()
    elif damage == "wrong-count":
        meta_file.write_text(json.dumps({**meta, "entries": 61}))
    elif damage == "not-a-folder":
        folder = tmp_path / "file"
        folder.write_text("x")
    elif damage == "no-folder":
        folder = tmp_path / "nowhere"
    with pytest.raises(DataError, match=message):
        Gallery.load(folder)


# ----------------------------------------------------------------------------- the decision
def test_decide_uses_the_open_set_threshold_for_the_gallery_size():
    from fmr.metrics.identification import open_set_threshold

    calibration, _ = dlib_calibrations()
    threshold = open_set_threshold(calibration, 0.01, 10)["threshold"]
    above = [Match("ada", "a.jpg", threshold + 1e-4, 0.0, 3), Match("bob", "b.jpg", 0.1, 0, 4)]
    below = [Match("ada", "a.jpg", threshold - 1e-4, 0.0, 3)]
    assert decide(above, calibration, fpir=0.01, gallery_size=10)["decision"] == "ada"
    assert decide(below, calibration, fpir=0.01, gallery_size=10)["decision"] is None
    assert decide([], calibration, fpir=0.01, gallery_size=10)["decision"] is None
    # A bigger gallery gives a stranger more chances: a higher threshold.
    big = decide(below, calibration, fpir=0.01, gallery_size=100_000)
    assert big["threshold"] > threshold and big["comparison_far"] < 1e-6
    none = decide(above, {}, fpir=0.01, gallery_size=10)
    assert none["decision"] is None and none["threshold"] is None and "calibrat" in none["note"]


def test_a_masked_probe_is_decided_with_the_masked_calibration():
    from types import SimpleNamespace

    unmasked, masked = dlib_calibrations()
    model = SimpleNamespace(calibration=unmasked, calibration_masked=masked)
    assert pick_calibration(model, False)[1] == "unmasked"
    chosen, used, why = pick_calibration(model, True, "the probe wears a mask (detected, 97%)")
    assert chosen == masked and used == "masked" and "97%" in why
    plain = SimpleNamespace(calibration=unmasked, calibration_masked={})
    assert pick_calibration(plain, True)[1:] == (
        "unmasked", "the probe wears a mask, but this model has no masked calibration")
    gallery = synthetic(people=3, per_person=2)
    probe = gallery.embeddings[0]
    (answer,) = identify(gallery, probe, model, masked=True, mask_reasons=["drawn"],
                         probes=["p.jpg"])
    assert answer.calibration == "masked" and answer.decision == "person00"
    assert answer.matches[0].similarity == pytest.approx(1, abs=1e-5)
    data = answer.to_dict()
    assert data["probe"] == "p.jpg" and data["decision"] == "person00"
    assert set(data["matches"][0]) == {"person", "photo", "similarity", "angle_deg", "entry_id"}


# ----------------------------------------------------------------------------- the command
ENROLLED = ("Colin_Powell", "Serena_Williams", "Junichiro_Koizumi", "Vladimir_Putin")
STRANGER = "Laura_Bush"  # not enrolled at first; her best similarity to them is about 0.85


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def lfw(lfw_dir: Path, name: str, number: int) -> Path:
    path = lfw_dir / "images" / name / f"{name}_{number:04d}.jpg"
    assert path.is_file(), path
    return path


@pytest.fixture(scope="module")
def built(lfw_dir, tmp_path_factory):
    """A dlib gallery of 4 LFW people x photos 1-2 (plus a blank PNG and a text file posing as
    a photo, which fail), built once through the command."""
    import cv2

    root = tmp_path_factory.mktemp("people")
    for name in ENROLLED:
        (root / name).mkdir()
        for number in (1, 2):
            (root / name / f"{number}.jpg").symlink_to(lfw(lfw_dir, name, number))
    cv2.imwrite(str(root / ENROLLED[0] / "wall.png"), np.full((200, 300, 3), 180, np.uint8))
    (root / ENROLLED[0] / "notes.jpg").write_text("this is not a photo")
    out = tmp_path_factory.mktemp("built") / "gallery"
    code = main(["gallery", "build", str(root), "--out", str(out), "--backbone", "dlib",
                 "--workers", "1", "--quiet"])
    assert code == 0
    return root, out


def test_build_enrols_every_face_and_lists_failures(built, capsys):
    import csv

    root, out = built
    gallery = Gallery.load(out)
    assert len(gallery) == 8 and gallery.person_names == sorted(ENROLLED)
    assert gallery.backbone.family == "dlib" and gallery.backbone.key == "dlib"
    assert gallery.choice.kind == "exact"
    with open(out / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10 and list(rows[0]) == ["input", "person", "status", "reason",
                                                 "entry_id"]
    failed = {Path(r["input"]).name: r["reason"] for r in rows if r["status"] == "failed"}
    assert set(failed) == {"wall.png", "notes.jpg"}
    assert "no face" in failed["wall.png"] and "not an image" in failed["notes.jpg"]
    code, out_text, _ = run_cli(capsys, "gallery", "info", str(out), "--json")
    info = json.loads(out_text)
    assert code == 0 and info["entries"] == 8 and info["counts"]["Colin_Powell"] == 2


def test_search_finds_the_enrolled_and_not_the_stranger(built, lfw_dir, tmp_path, capsys):
    _, out = built
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.full((200, 300, 3), 90, np.uint8))
    probes = [lfw(lfw_dir, "Junichiro_Koizumi", 3), lfw(lfw_dir, "Serena_Williams", 3),
              lfw(lfw_dir, STRANGER, 3), blank, tmp_path / "missing.jpg"]
    code, text, err = run_cli(capsys, "gallery", "search", str(out), *map(str, probes),
                              "--top", "3", "--json")
    assert code == 0, err
    answers = [json.loads(line) for line in text.splitlines()]
    assert [a["probe"] for a in answers] == [str(p) for p in probes]
    koizumi, serena, stranger, no_face, missing = answers
    for answer, name in ((koizumi, "Junichiro_Koizumi"), (serena, "Serena_Williams")):
        assert answer["decision"] == name and answer["matches"][0]["person"] == name
        assert answer["matches"][0]["similarity"] >= answer["threshold"]
        assert Path(answer["matches"][0]["photo"]).parent.name == name
        assert len(answer["matches"]) == 3 and len({m["person"] for m in answer["matches"]}) == 3
    assert stranger["decision"] is None and stranger["matches"][0]["similarity"] < 0.9
    assert stranger["matches"][0]["similarity"] < stranger["threshold"]
    assert koizumi["fpir"] == 0.01 and koizumi["gallery_size"] == 8
    assert koizumi["calibration"] == "unmasked" and koizumi["calibration_reason"]
    assert set(koizumi) >= {"probe", "decision", "matches", "threshold", "fpir", "calibration",
                            "calibration_reason", "mask_probability"}
    assert set(koizumi["matches"][0]) >= {"person", "photo", "similarity", "angle_deg"}
    assert no_face["decision"] is None and no_face["matches"] == [] and "no face" in \
        no_face["error"]
    assert missing["matches"] == [] and "no such file" in missing["error"]
    # The words say the same.
    code, text, _ = run_cli(capsys, "gallery", "search", str(out), str(probes[0]),
                            str(probes[2]))
    assert code == 0
    assert "decision: Junichiro_Koizumi (similarity" in text
    assert "decision: not in the gallery; the closest" in text
    assert f"threshold {koizumi['threshold']:.3f}: set for FPIR 0.01 in a gallery of 8" in text
    assert "calibration: unmasked, because" in text
    # Nothing could be searched: exit 2, the error still reported.
    code, text, _ = run_cli(capsys, "gallery", "search", str(out), str(blank), "--json")
    assert code == 2 and "no face" in json.loads(text)["error"]


def test_a_masked_probe_uses_the_masked_calibration(built, lfw_dir, capsys):
    _, out = built
    code, text, err = run_cli(capsys, "gallery", "search", str(out),
                              str(lfw(lfw_dir, "Serena_Williams", 3)), "--mask-probe",
                              "surgical", "--json")
    assert code == 0, err
    answer = json.loads(text)
    assert answer["mask"] == "surgical" and answer["calibration"] == "masked"
    assert "synthetic mask" in answer["calibration_reason"]


def test_add_then_remove_a_person(built, lfw_dir, tmp_path, capsys):
    import shutil

    _, original = built
    out = tmp_path / "gallery"
    shutil.copytree(original, out)
    probe = str(lfw(lfw_dir, STRANGER, 3))
    photos = [str(lfw(lfw_dir, STRANGER, n)) for n in (1, 2)]
    code, _, err = run_cli(capsys, "gallery", "add", str(out), *photos, "--person", STRANGER,
                           "--quiet")
    assert code == 0, err
    assert "added 2 photo(s) of Laura_Bush (new person)" in err
    gallery = Gallery.load(out)
    assert len(gallery) == 10 and gallery.ids.tolist()[-2:] == [8, 9]
    code, text, _ = run_cli(capsys, "gallery", "search", str(out), probe, "--json")
    found = json.loads(text)
    assert found["decision"] == STRANGER and found["gallery_size"] == 10
    code, _, err = run_cli(capsys, "gallery", "add", str(out), photos[0], "--person", STRANGER)
    assert code == 0 and "already enrolled" in err and len(Gallery.load(out)) == 10
    code, _, err = run_cli(capsys, "gallery", "remove", str(out), "--person", STRANGER)
    assert code == 0 and "removed Laura_Bush (2 entries)" in err
    code, text, _ = run_cli(capsys, "gallery", "search", str(out), probe, "--json")
    assert json.loads(text)["decision"] is None
    code, _, err = run_cli(capsys, "gallery", "remove", str(out), "--person", "Colin")
    assert code == 2 and "no person named 'Colin'" in err and "Colin_Powell" in err


def _one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_another_model_is_refused(built, lfw_dir, tmp_path, capsys):
    import shutil

    _, original = built
    probe = str(lfw(lfw_dir, "Serena_Williams", 3))
    code, out, err = run_cli(capsys, "gallery", "search", str(original), probe,
                             "--backbone", "dlib-mask")
    _one_line_error(code, out, err, "built with dlib (dlib, 128-d)", "--backbone dlib-mask",
                    "dlib_mask-", "do not compare")
    code, out, err = run_cli(capsys, "gallery", "add", str(original), probe, "--person", "x",
                             "--backbone", "iresnet")
    _one_line_error(code, out, err, "--backbone iresnet", "iresnet18_half-")
    # A gallery whose model's weights changed since the build (here: a forged record).
    out_dir = tmp_path / "gallery"
    shutil.copytree(original, out_dir)
    meta = json.loads((out_dir / GALLERY_FILE).read_text())
    meta["backbone"].update(family="iresnet", key="iresnet18_half-0000000000",
                            checkpoint=str(tmp_path / "gone.safetensors"), embedding_size=128)
    (out_dir / GALLERY_FILE).write_text(json.dumps(meta))
    code, out, err = run_cli(capsys, "gallery", "search", str(out_dir), probe)
    _one_line_error(code, out, err, "gone.safetensors is gone", "the iresnet checkpoint now is",
                    "Rebuild the gallery")


def test_damaged_galleries_and_bad_folders_are_one_line_errors(built, lfw_dir, tmp_path,
                                                               capsys):
    import shutil

    _, original = built
    probe = str(lfw(lfw_dir, "Serena_Williams", 3))
    broken = tmp_path / "broken"
    shutil.copytree(original, broken)
    meta = json.loads((broken / GALLERY_FILE).read_text())
    index = broken / meta["files"]["index"]
    index.write_bytes(index.read_bytes()[:64])
    _one_line_error(*run_cli(capsys, "gallery", "search", str(broken), probe),
                    "damaged gallery", "not a readable FAISS index")
    (broken / GALLERY_FILE).write_text("garbage{")
    _one_line_error(*run_cli(capsys, "gallery", "search", str(broken), probe),
                    "not readable JSON")
    (broken / GALLERY_FILE).unlink()
    _one_line_error(*run_cli(capsys, "gallery", "search", str(broken), probe),
                    "damaged gallery: its gallery.json is missing")
    _one_line_error(*run_cli(capsys, "gallery", "search", str(tmp_path), probe),
                    "not a gallery: no gallery.json")
    # build never writes into a folder that holds something else
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "thesis.txt").write_text("precious")
    people = tmp_path / "people"
    (people / "Serena").mkdir(parents=True)
    (people / "Serena" / "a.jpg").symlink_to(probe)
    _one_line_error(*run_cli(capsys, "gallery", "build", str(people), "--out",
                             str(tmp_path / "taken"), "--backbone", "dlib"),
                    "not empty and holds no gallery")
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["thesis.txt"]
    _one_line_error(*run_cli(capsys, "gallery", "build", str(people / "Serena"), "--out",
                             str(tmp_path / "new"), "--backbone", "dlib"),
                    "no sub-folders")
    code, out, err = run_cli(capsys, "gallery", "search", str(original), probe, "--fpir", "2")
    _one_line_error(code, out, err, "--fpir 2")


def test_the_app_path_builds_in_memory_from_uploads(lfw_dir):
    """What the app does: photos as bytes and arrays, no folder; a faceless upload is reported,
    not raised; the same search and decision as the command."""
    from fmr.faces.io import load_image
    from fmr.gallery.photos import gallery_from_photos, search_photos
    from fmr.verify import load_backbone

    embedder = load_backbone("dlib")
    serena, putin = lfw(lfw_dir, "Serena_Williams", 1), lfw(lfw_dir, "Vladimir_Putin", 1)
    uploads = [serena.read_bytes(), load_image(putin), np.full((120, 160, 3), 200, np.uint8)]
    gallery, table = gallery_from_photos(uploads, ["Serena", "Putin", "Wall"], embedder,
                                         names=["serena.jpg", "putin.png", "wall.png"])
    assert table.ok.tolist() == [True, True, False] and "no face" in table.reasons[2]
    assert len(gallery) == 2 and gallery.photos == ["serena.jpg", "putin.png"]
    assert gallery.folder is None and gallery.backbone.key == "dlib"
    answers = search_photos(gallery, [load_image(lfw(lfw_dir, "Serena_Williams", 3)),
                                      b"not a photo"], embedder, names=["probe", "junk"])
    assert answers[0].decision == "Serena" and answers[0].matches[0].photo == "serena.jpg"
    assert answers[1].error and answers[1].matches == [] and answers[1].probe == "junk"


def test_a_reader_racing_a_save_reads_the_new_generation(tmp_path, monkeypatch):
    """gallery.json read, then a save replaces the generation and deletes its files before the
    reader opens them: the reader reads gallery.json again and gets the new gallery whole."""
    import fmr.gallery.store as store

    folder = tmp_path / "gallery"
    synthetic().save(folder)
    newer = synthetic(people=2, per_person=3, seed=5)
    real = store.Gallery._load_generation.__func__
    calls = []

    def racing(cls, where, meta):
        if not calls:
            newer.save(where)  # between the reader's gallery.json and its data files
        calls.append(meta["generation"])
        return real(cls, where, meta)

    monkeypatch.setattr(store.Gallery, "_load_generation", classmethod(racing))
    loaded = Gallery.load(folder)
    assert calls == [1, 2] and len(loaded) == 6 and loaded.generation == 2


def test_an_emptied_gallery_saves_loads_and_refills(tmp_path):
    gallery = synthetic(people=2, per_person=2, index_kind="ivf")
    assert gallery.choice.kind == "ivf"
    for name in gallery.person_names:
        gallery.remove_person(name)
    assert len(gallery) == 0 and gallery.choice.kind == "exact"  # IVF cannot train on nothing
    gallery.save(tmp_path / "g")
    empty = Gallery.load(tmp_path / "g")
    assert len(empty) == 0 and search_people(empty, unit_rows(1)) == [[]]
    empty.add(unit_rows(3, seed=13), "back", ["1.jpg", "2.jpg", "3.jpg"])
    assert empty.choice.kind == "ivf" and empty.ids.tolist() == [4, 5, 6]
