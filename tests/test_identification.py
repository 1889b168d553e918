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
        tops.append(max(float(np.dot(probe, e) / np.linalg.norm(probe) / np.linalg.norm(e))
                        for e in gallery))
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
