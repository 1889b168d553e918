"""fmr.metrics.identification (1:N search, CMC, FPIR / DIR) against plain loops and hand-built
cases, and the identification protocol of fmr.eval.protocols on a real LFW fold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fmr import metrics as m
from fmr.metrics import identification as ident


# ----------------------------------------------------------------------------- references
def reference_ranks(probes, probe_labels, probe_ok, gallery, gallery_labels):
    """The rank of each probe's person, written plainly: loop over probes and people."""
    people = sorted(set(gallery_labels))
    ranks = []
    for probe, label, ok in zip(probes, probe_labels, probe_ok, strict=True):
        if not ok or label not in people:
            ranks.append(math.inf)
            continue
        best = {}
        for entry, person in zip(gallery, gallery_labels, strict=True):
            probe, entry = np.asarray(probe, float), np.asarray(entry, float)
            score = float(np.dot(probe, entry) / np.linalg.norm(probe) / np.linalg.norm(entry))
            best[person] = max(best.get(person, -math.inf), score)
        others_at_least = sum(1 for p in people if p != label and best[p] >= best[label])
        ranks.append(1 + others_at_least)
    return np.array(ranks, dtype=float)


def reference_top(probes, probe_ok, gallery):
    """Each probe's best score over the entries (-1 for a failed probe)."""
    tops = []
    for probe, ok in zip(probes, probe_ok, strict=True):
        if not ok:
            tops.append(-1.0)
            continue
        probe = np.asarray(probe, float)
        tops.append(max(float(np.dot(probe, e) / np.linalg.norm(probe) / np.linalg.norm(e))
                        for e in np.asarray(gallery, float)))
    return np.array(tops)


def unit(rows):
    rows = np.asarray(rows, dtype=float)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# ----------------------------------------------------------------------------- search and ranks
def test_random_searches_match_the_loop_reference():
    rng = np.random.default_rng(3)
    for _trial in range(5):
        gallery_labels = rng.integers(0, 12, size=25)  # people with 1-5 entries, some none
        gallery = rng.normal(size=(25, 8))
        probe_labels = rng.integers(0, 14, size=40)  # labels 12, 13 never enrolled
        probes = rng.normal(size=(40, 8))
        probe_ok = rng.random(40) > 0.15
        probes[~probe_ok] = 0.0  # failed rows hold zeros, as in an EmbeddingTable
        scores = m.gallery_similarities(probes, gallery, probe_ok)
        assert scores.shape == (40, 25)
        assert (scores[~probe_ok] == ident.FAILED_SCORE).all()
        ranks = m.mated_ranks(scores, gallery_labels, probe_labels, probe_ok)
        expected = reference_ranks(probes, probe_labels, probe_ok, gallery, gallery_labels)
        np.testing.assert_array_equal(ranks, expected)
        tops, who = m.top_matches(scores, gallery_labels)
        np.testing.assert_allclose(tops, reference_top(probes, probe_ok, gallery), atol=1e-12)
        ok = probe_ok
        assert ((ranks[ok] == 1) <= (who[ok] == probe_labels[ok])).all()
        for k in (1, 3, 20):
            assert m.rank_k_rate(ranks, k) == np.mean(expected <= k)


def test_person_similarities_take_each_persons_best_entry():
    scores = np.array([[0.1, 0.9, 0.3, 0.2],
                       [0.5, 0.4, 0.6, 0.0]])  # fmt: skip
    best, people = m.person_similarities(scores, ["bo", "al", "bo", "cy"])
    assert people.tolist() == ["al", "bo", "cy"]
    np.testing.assert_array_equal(best, [[0.9, 0.3, 0.2], [0.4, 0.6, 0.0]])


def test_hand_built_ranks_with_ties_and_several_entries():
    # Person 0 has two entries; probe 0 is nearest person 0's second entry.
    gallery = unit([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    gallery_labels = [0, 1, 2, 0]
    probes = np.array([[1.0, 1.0, 0.05],   # person 0 (entry 3) best: rank 1
                       [1.0, 0.0, 1.0],    # person 2 ties with person 0: ties count against
                       [0.0, 1.0, 0.0],    # person 1 exactly: rank 1
                       [0.0, 1.0, 0.0],    # labelled 2: person 2 scores 0 < 0.707, 1: rank 3
                       [0.0, 0.0, 0.0]])   # failed
    probe_labels = [0, 2, 1, 2, 1]
    ok = [True, True, True, True, False]
    scores = m.gallery_similarities(probes, gallery, ok)
    ranks = m.mated_ranks(scores, gallery_labels, probe_labels, ok)
    assert ranks.tolist() == [1, 2, 1, 3, math.inf]
    assert m.cmc_curve(ranks, 4).tolist() == pytest.approx([2 / 5, 3 / 5, 4 / 5, 4 / 5])
    # Every score equal: last, never first.
    flat = np.zeros((1, 3))
    assert m.mated_ranks(flat, [0, 1, 2], [1]).tolist() == [3]
    # A person without a gallery entry (a failed enrolment, left out) is never found.
    assert m.mated_ranks(scores[:1], gallery_labels, [7]).tolist() == [math.inf]


def test_cmc_is_monotone_and_ends_at_one_when_every_probe_is_found():
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(30, 16))
    labels = np.arange(30)
    probe_labels = rng.integers(0, 30, size=200)
    probes = gallery[probe_labels] + rng.normal(scale=1.5, size=(200, 16))
    ranks = m.mated_ranks(m.gallery_similarities(probes, gallery), labels, probe_labels)
    curve = m.cmc_curve(ranks, 30)
    assert curve.shape == (30,) and (np.diff(curve) >= 0).all()
    assert curve[-1] == 1.0 and 0 < curve[0] < 1
    assert curve[0] == m.rank_k_rate(ranks, 1) and curve[4] == m.rank_k_rate(ranks, 5)
    longer = m.cmc_curve(ranks, 40)
    assert longer[:30].tolist() == curve.tolist() and (longer[30:] == 1).all()
    # One failed probe: the curve stops short of 1.
    ok = np.ones(200, bool)
    ok[0] = False
    failed = m.mated_ranks(m.gallery_similarities(probes, gallery, ok), labels, probe_labels, ok)
    assert m.cmc_curve(failed, 30)[-1] == pytest.approx(199 / 200)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="gallery"):
        m.gallery_similarities(np.ones((2, 3)), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="dimensions"):
        m.gallery_similarities(np.ones((2, 3)), np.ones((1, 4)))
    with pytest.raises(ValueError, match="labels"):
        m.mated_ranks(np.zeros((2, 3)), [0, 1], [0, 1])
    with pytest.raises(ValueError):
        m.rank_k_rate([1, 2], 0)
    with pytest.raises(ValueError):
        m.cmc_curve([], 5)
    with pytest.raises(ValueError):
        m.fpir_threshold([0.1, 0.2], 0.0)
    with pytest.raises(ValueError):
        m.fpir_threshold([], 0.1)
    with pytest.raises(ValueError):
        m.dir_at_threshold([True], [0.1, 0.2], 0.0)


# ----------------------------------------------------------------------------- open set
def test_fpir_threshold_never_exceeds_the_target():
    rng = np.random.default_rng(1)
    for size in (1, 7, 99, 100, 1000):
        # Rounded scores: many ties.
        scores = np.round(rng.normal(0.3, 0.1, size), 2)
        scores[: size // 10] = ident.FAILED_SCORE  # failed non-mated probes
        for fpir in (0.001, 0.01, 0.1, 0.25, 0.5, 0.99):
            threshold = m.fpir_threshold(scores, fpir)
            achieved = m.fpir_at_threshold(scores, threshold)
            assert achieved <= fpir + 1e-12
            assert achieved == np.mean(scores >= threshold)
            assert threshold > ident.FAILED_SCORE  # a failed probe is always rejected
            # The lowest such threshold: one step down (to the next score below) breaks it.
            below = scores[scores < threshold]
            if below.size:
                assert np.mean(scores >= below.max()) > fpir


def test_fpir_threshold_by_hand():
    scores = [0.9, 0.8, 0.8, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -1.0]  # N = 10
    # FPIR 10%: one probe may pass; the 2nd highest (0.8) must be rejected, and so its tie.
    threshold = m.fpir_threshold(scores, 0.1)
    assert threshold == np.nextafter(0.8, 1) and m.fpir_at_threshold(scores, threshold) == 0.1
    # FPIR 20%: two may pass, but 0.8 is tied with the third: still only 0.9 passes.
    assert m.fpir_at_threshold(scores, m.fpir_threshold(scores, 0.2)) == 0.1
    # FPIR 30%: 0.9, 0.8, 0.8 pass; 0.5 is rejected.
    assert m.fpir_threshold(scores, 0.3) == np.nextafter(0.5, 1)
    # FPIR 5%: none may pass: just above the highest.
    assert m.fpir_threshold(scores, 0.05) == np.nextafter(0.9, 1)


def test_dir_at_threshold_by_hand_and_at_fpir():
    correct = np.array([True, True, True, False, True])
    tops = np.array([0.9, 0.6, 0.5, 0.95, 0.3])
    assert m.dir_at_threshold(correct, tops, 0.5) == pytest.approx(3 / 5)
    assert m.dir_at_threshold(correct, tops, 0.55) == pytest.approx(2 / 5)
    assert m.dir_at_threshold(correct, tops, -1.0) == pytest.approx(4 / 5)  # = rank-1 rate
    nonmated = [0.7, 0.55, 0.4, 0.2, 0.1, 0.1, 0.0, -0.1, -0.2, -1.0]
    low, high = m.dir_at_fpir(correct, tops, nonmated, (0.1, 0.3))
    assert low.threshold == np.nextafter(0.55, 1) and low.fpir == 0.1 and low.dir == 2 / 5
    assert high.threshold == np.nextafter(0.2, 1) and high.fpir == 0.3 and high.dir == 4 / 5
    assert low.n_mated == 5 and low.n_nonmated == 10 and low.measurable
    (point,) = m.dir_at_fpir(correct, tops, nonmated, 0.01)
    assert not point.measurable and point.fpir == 0.0
    assert set(point.to_dict()) == {"fpir_target", "threshold", "fpir", "dir", "n_mated",
                                    "n_nonmated", "measurable"}


def test_dir_at_fpir_matches_a_loop_on_random_searches():
    rng = np.random.default_rng(7)
    gallery = rng.normal(size=(20, 8))
    labels = np.arange(20)
    mated_labels = rng.integers(0, 20, 150)
    mated = gallery[mated_labels] + rng.normal(scale=1.2, size=(150, 8))
    nonmated = rng.normal(size=(300, 8))
    ok = rng.random(300) > 0.05
    nonmated[~ok] = 0
    scores = m.gallery_similarities(mated, gallery)
    ranks = m.mated_ranks(scores, labels, mated_labels)
    tops, _ = m.top_matches(scores, labels)
    non_tops, _ = m.top_matches(m.gallery_similarities(nonmated, gallery, ok), labels)
    for point in m.dir_at_fpir(ranks == 1, tops, non_tops, (0.01, 0.1)):
        false_positives = sum(1 for s in non_tops if s >= point.threshold)
        assert false_positives / 300 == point.fpir <= point.fpir_target
        hits = 0
        for i in range(150):
            best = max(range(20), key=lambda j: float(scores[i, j]))
            unique_best = sum(1 for j in range(20) if scores[i, j] >= scores[i, best]) == 1
            hits += best == mated_labels[i] and unique_best and scores[i, best] >= point.threshold
        assert point.dir == hits / 150


def test_open_set_threshold_from_a_calibration_reads_its_far_curve():
    """The calibrated open-set threshold (kept from before) sits at the per-comparison FAR."""
    rng = np.random.default_rng(0)
    genuine, impostor = rng.normal(0.6, 0.1, 2000), rng.normal(0.1, 0.1, 200_000)
    calibration = m.calibrate(genuine, impostor, 1e-3)
    small = m.open_set_threshold(calibration, 0.01, 10)
    large = m.open_set_threshold(calibration, 0.01, 1000)
    assert small["comparison_far"] == pytest.approx(1 - 0.99 ** (1 / 10))
    assert large["threshold"] > small["threshold"]  # a larger gallery needs a stricter threshold
    assert small["measurable"] and small["gallery_size"] == 10


# ----------------------------------------------------------------------------- the protocol
@pytest.fixture(scope="module")
def fold6(lfw_dir):
    from fmr.eval import protocols

    pairs = protocols.lfw_pairs(lfw_dir / "pairs.txt", lfw_dir / "images", [6])
    return pairs, protocols.identification_sets(pairs)


def test_identification_sets_on_fold_6(fold6):
    """Fold 6 of LFW View-2: 743 images of 419 people, 144 of them with two or more."""
    from fmr.eval import protocols

    pairs, sets = fold6
    who = np.asarray(pairs.identities)
    everyone = np.arange(len(pairs.images))
    counts = {p: int((who == p).sum()) for p in set(pairs.identities)}
    repeated = {p for p, n in counts.items() if n >= 2}
    assert (len(pairs.images), len(counts), len(repeated)) == (743, 419, 144)
    assert sets.sizes() == {
        "n_images": 743, "n_people": 419, "n_people_with_2_or_more_images": 144,
        "n_people_with_1_image": 275,
        "closed_set": {"n_gallery": 419, "n_probes": 743 - 419},
        "open_set": {"n_enrolled": 72, "n_gallery": 72, "n_mated": 168, "n_nonmated": 503,
                     "n_nonmated_people": 419 - 72},
    }  # fmt: skip
    # Closed set: one gallery image per person, the first by path; probes are the rest of the
    # repeated people's images; together they are every image.
    assert sorted(who[sets.closed_gallery]) == sorted(counts)
    for row in sets.closed_gallery:
        own = [str(pairs.images[i]) for i in everyone if who[i] == who[row]]
        assert str(pairs.images[row]) == min(own)
    assert not np.intersect1d(sets.closed_gallery, sets.closed_probes).size
    assert np.union1d(sets.closed_gallery, sets.closed_probes).tolist() == everyone.tolist()
    assert set(who[sets.closed_probes]) == repeated
    # Open set: enrolled people (half of the repeated ones) and the rest never meet.
    enrolled = set(sets.enrolled)
    assert enrolled <= repeated and len(enrolled) == len(repeated) // 2
    assert set(who[sets.open_gallery]) == enrolled == set(who[sets.open_mated])
    assert not enrolled & set(who[sets.open_nonmated])
    assert set(who[sets.open_nonmated]) == set(counts) - enrolled
    parts = [sets.open_gallery, sets.open_mated, sets.open_nonmated]
    assert sorted(np.concatenate(parts).tolist()) == everyone.tolist()  # a partition
    assert np.isin(sets.open_gallery, sets.closed_gallery).all()
    assert not np.isin(sets.gallery_rows, sets.open_mated).any()
    # Deterministic: names and seed only.
    again = protocols.identification_sets(pairs)
    assert again.enrolled == sets.enrolled and (again.open_mated == sets.open_mated).all()
    shuffled = sorted(repeated, key=lambda name: name[::-1])
    assert protocols.enrolled_half(shuffled) == list(sets.enrolled)
    assert protocols.enrolled_half(shuffled, seed=1) != list(sets.enrolled)


def _tables(pairs, noise: float, seed: int = 0):
    """Synthetic embeddings: one random direction per person plus noise per image."""
    from fmr.eval.protocols import EmbeddingTable

    rng = np.random.default_rng(seed)
    people = sorted(set(pairs.identities))
    directions = dict(zip(people, rng.normal(size=(len(people), 32)), strict=True))
    vectors = np.stack([directions[p] for p in pairs.identities])
    vectors = unit(vectors + rng.normal(scale=noise, size=vectors.shape)).astype(np.float32)
    size = len(pairs.images)
    return EmbeddingTable(vectors, np.ones(size, bool), [""] * size, [""] * size)


def test_identification_metrics_on_precomputed_embeddings(fold6):
    from fmr.eval import protocols
    from fmr.eval.protocols import EmbeddingTable

    pairs, sets = fold6
    who = np.asarray(pairs.identities)
    # Nearly noiseless: every probe finds its person; a threshold separates everyone.
    table = _tables(pairs, noise=0.01)
    result = protocols.identification_metrics(pairs, sets, table, table)
    closed, open_set = result["closed_set"], result["open_set"]
    assert closed["rank_1"] == closed["rank_5"] == 1.0 and closed["cmc"] == [1.0] * 20
    for point in open_set["dir_at_fpir"]:
        assert point["dir"] == 1.0 and point["fpir"] <= point["fpir_target"]
        assert (point["n_mated"], point["n_nonmated"]) == (168, 503)
    assert "calibrated" not in open_set and result["failed_probes"] == []

    # Noisy: against plain loops over the probes.
    table = _tables(pairs, noise=1.0, seed=1)
    ok = table.ok.copy()
    failed_probe = sets.open_mated[0]
    failed_gallery = sets.open_gallery[-1]  # an enrolled person's only gallery image
    ok[[failed_probe, failed_gallery]] = False
    reasons = ["no face found" if not k else "" for k in ok]
    embeddings = np.where(ok[:, None], table.embeddings, 0).astype(np.float32)
    table = EmbeddingTable(embeddings, ok, reasons, table.masks)
    rng = np.random.default_rng(0)
    genuine, impostor = rng.normal(0.6, 0.2, 500), rng.normal(0.0, 0.2, 50_000)
    calibration = m.calibrate(genuine, impostor, 1e-3)
    result = protocols.identification_metrics(pairs, sets, table, table, calibration=calibration)
    closed, open_set = result["closed_set"], result["open_set"]
    assert closed["n_gallery_failed"] == 1 and open_set["n_gallery_failed"] == 1
    assert open_set["n_mated_failed"] == 1 and closed["n_probes_failed"] == 1
    assert result["failed_probes"] == [{"image": str(pairs.images[failed_probe]),
                                        "reason": "no face found"}]
    gallery = [r for r in sets.closed_gallery if ok[r]]
    expected = reference_ranks(table.embeddings[sets.closed_probes], who[sets.closed_probes],
                               ok[sets.closed_probes], table.embeddings[gallery], who[gallery])
    assert closed["rank_1"] == np.mean(expected <= 1) < 1
    assert closed["rank_5"] == np.mean(expected <= 5)
    assert closed["cmc"] == [np.mean(expected <= k) for k in range(1, 21)]
    enrolled = [r for r in sets.open_gallery if ok[r]]
    mated_ranks = reference_ranks(table.embeddings[sets.open_mated], who[sets.open_mated],
                                  ok[sets.open_mated], table.embeddings[enrolled], who[enrolled])
    # the failed enrolment's probes are never found
    lost = who[sets.open_mated] == who[failed_gallery]
    assert lost.any() and np.isinf(mated_ranks[lost]).all()
    mated_top = reference_top(table.embeddings[sets.open_mated], ok[sets.open_mated],
                              table.embeddings[enrolled])
    nonmated_top = reference_top(table.embeddings[sets.open_nonmated], ok[sets.open_nonmated],
                                 table.embeddings[enrolled])
    assert nonmated_top.size == 503 and (nonmated_top > -1).all()

    def between(rate, scores, threshold, extra=True):
        """rate is the share of scores >= threshold, up to rounding (the loop's cosines and
        numpy's may differ in the last bits, and thresholds sit one float above a score)."""
        low = np.mean(extra & (scores >= threshold + 1e-9))
        high = np.mean(extra & (scores >= threshold - 1e-9))
        return low <= rate <= high

    for point in open_set["dir_at_fpir"]:
        assert point["fpir"] <= point["fpir_target"]
        assert between(point["fpir"], nonmated_top, point["threshold"])
        assert between(point["dir"], mated_top, point["threshold"], mated_ranks == 1)
        assert 0 < point["dir"] < 1
    calibrated = open_set["calibrated"]
    expected_threshold = m.open_set_threshold(calibration, 0.01, len(enrolled))["threshold"]
    assert calibrated["threshold"] == expected_threshold and calibrated["gallery_size"] == 71
    assert between(calibrated["fpir"], nonmated_top, expected_threshold)
    assert between(calibrated["dir"], mated_top, expected_threshold, mated_ranks == 1)
    import json

    json.dumps(result, allow_nan=False)  # metrics.json is written with allow_nan=False
