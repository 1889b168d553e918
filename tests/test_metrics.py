"""fmr.metrics, calibration and angles against hand-computed cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fmr import metrics as m
from fmr.metrics import calibration as cal
from fmr.metrics.angles import angles_to_centres, leave_one_out_centre_angles


# ----------------------------------------------------------------------------- thresholds
def test_best_threshold_perfect_separation_is_the_midpoint_of_the_gap():
    scores = [0.1, 0.2, 0.3, 0.7, 0.8]
    labels = [False, False, False, True, True]
    threshold, accuracy = m.best_threshold(scores, labels)
    assert accuracy == 1.0
    assert threshold == pytest.approx(0.5)


def test_best_threshold_with_ties_never_splits_equal_scores():
    # Two pairs at 0.5, one genuine, one impostor: no threshold can separate them.
    scores = [0.2, 0.5, 0.5, 0.9]
    labels = [False, True, False, True]
    threshold, accuracy = m.best_threshold(scores, labels)
    assert accuracy == pytest.approx(0.75)
    predictions = np.array(scores) >= threshold
    assert predictions[1] == predictions[2]  # both tied pairs get the same decision


def test_best_threshold_on_all_same_scores():
    threshold, accuracy = m.best_threshold([0.4, 0.4, 0.4, 0.4], [True, True, True, False])
    assert accuracy == pytest.approx(0.75)  # accept everything
    assert threshold == pytest.approx(0.4)
    threshold, accuracy = m.best_threshold([0.4, 0.4, 0.4], [False, False, True])
    assert accuracy == pytest.approx(2 / 3)  # reject everything
    assert threshold > 0.4


def test_best_threshold_tiny_sets():
    assert m.best_threshold([0.3], [True]) == (0.3, 1.0)
    threshold, accuracy = m.best_threshold([0.3], [False])
    assert accuracy == 1.0 and threshold > 0.3
    with pytest.raises(ValueError):
        m.best_threshold([], [])


def test_best_threshold_picks_the_median_of_equally_good_cuts():
    # Alternating labels: the cuts at 0.15, 0.35 and 0.55 each get 5 of 7 right.
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    labels = [False, True, False, True, False, True, True]
    threshold, accuracy = m.best_threshold(scores, labels)
    assert accuracy == pytest.approx(5 / 7)
    assert threshold == pytest.approx(0.35)


def test_accuracy_at_threshold_counts_equal_as_accepted():
    assert m.accuracy_at_threshold([0.5, 0.4], [True, False], 0.5) == 1.0
    assert m.accuracy_at_threshold([0.5, 0.4], [True, False], 0.51) == 0.5


# ----------------------------------------------------------------------------- k-fold
def test_kfold_thresholds_come_only_from_the_other_folds():
    rng = np.random.default_rng(0)
    folds = np.repeat(np.arange(1, 6), 40)
    labels = np.tile(np.r_[np.ones(20, bool), np.zeros(20, bool)], 5)
    scores = np.where(labels, rng.normal(0.6, 0.15, 200), rng.normal(0.2, 0.15, 200))
    result = m.kfold_accuracy(scores, labels, folds=folds)
    assert result.folds == (1, 2, 3, 4, 5)
    for fold, threshold, accuracy in zip(
        result.folds, result.thresholds, result.accuracies, strict=True
    ):
        train = folds != fold
        expected, _ = m.best_threshold(scores[train], labels[train])
        assert threshold == expected
        assert accuracy == m.accuracy_at_threshold(scores[~train], labels[~train], expected)
    # Changing the test fold's scores must not move its threshold (and does move the others').
    shifted = scores.copy()
    shifted[folds == 3] += np.where(labels[folds == 3], -0.5, 0.5)
    again = m.kfold_accuracy(shifted, labels, folds=folds)
    assert again.thresholds[2] == result.thresholds[2]
    assert again.accuracies[2] < result.accuracies[2]
    assert again.thresholds[0] != result.thresholds[0]
    assert result.mean == pytest.approx(np.mean(result.accuracies))
    assert result.std == pytest.approx(np.std(result.accuracies))


def test_kfold_hand_computed_two_folds():
    # fold 1: genuine 0.9, impostor 0.1; fold 2: genuine 0.6, impostor 0.4.
    scores = [0.9, 0.1, 0.6, 0.4]
    labels = [True, False, True, False]
    result = m.kfold_accuracy(scores, labels, folds=[1, 1, 2, 2])
    assert result.thresholds == (pytest.approx(0.5), pytest.approx(0.5))
    assert result.accuracies == (1.0, 1.0)
    # Contiguous folds in input order when none are given.
    assert m.kfold_accuracy(scores, labels, n_folds=2).folds == (0, 1)
    with pytest.raises(ValueError):
        m.kfold_accuracy(scores, labels, folds=[1, 1, 1, 1])


# ----------------------------------------------------------------------------- FAR / TAR / EER
def test_error_rates_hand_computed():
    far, frr = m.error_rates([0.5, 0.7, 0.9], [0.1, 0.5, 0.6, 0.8], [0.5, 0.75, 1.0])
    assert far.tolist() == [0.75, 0.25, 0.0]
    assert frr.tolist() == pytest.approx([0.0, 2 / 3, 1.0])


def test_threshold_at_far_allows_exactly_floor_far_times_n_false_accepts():
    impostor = np.arange(1, 11) / 10  # 0.1 ... 1.0
    t = m.threshold_at_far(impostor, 0.2)
    assert 0.8 < t <= np.nextafter(0.8, 1) + 1e-15  # accepts 0.9 and 1.0 only
    assert m.error_rates([1.0], impostor, t)[0][0] == pytest.approx(0.2)
    assert m.threshold_at_far(impostor, 1.0) == pytest.approx(0.1)  # accept all
    assert m.threshold_at_far(impostor, 0.0) > 1.0  # accept none
    assert m.threshold_at_far(impostor, 0.05) > 1.0  # half a false accept rounds down to none


def test_threshold_at_far_with_ties_stays_under_the_target():
    impostor = [0.3, 0.9, 0.9, 0.9]
    t = m.threshold_at_far(impostor, 0.5)  # 2 allowed, but the top 3 are tied
    far, _ = m.error_rates([1.0], impostor, t)
    assert far[0] == 0.0


def test_tar_at_far_and_measurability():
    genuine = [0.95, 0.85, 0.75, 0.65]
    impostor = np.linspace(0.0, 0.8, 100)  # 100 impostors, the top one at 0.8
    points = m.tar_at_far(genuine, impostor, (1e-1, 1e-2, 1e-3))
    assert [p.far_target for p in points] == [1e-1, 1e-2, 1e-3]
    assert points[0].measurable and points[1].measurable and not points[2].measurable
    # FAR 1e-2: one impostor (0.8) may be accepted; the threshold sits just above the second
    # (0.792), so the genuine 0.95 and 0.85 are accepted and 0.75, 0.65 rejected.
    assert points[1].far == pytest.approx(0.01)
    assert 0.79 < points[1].threshold < 0.8
    assert points[1].tar == pytest.approx(0.5)
    # FAR 1e-3 with 100 impostors: none may be accepted (not measurable, reported as a bound).
    assert (
        points[2].far == 0.0 and points[2].threshold > 0.8 and points[2].tar == pytest.approx(0.5)
    )
    assert points[0].tar == pytest.approx(0.75)  # threshold just above the 11th: 0.719
    for p in points:
        assert p.far <= p.far_target
        assert p.tar + p.frr == pytest.approx(1.0)


def test_equal_error_rate_cases():
    assert m.equal_error_rate([0.9, 0.8], [0.1, 0.2]) == (0.0, pytest.approx(0.8))
    eer, _ = m.equal_error_rate([0.5, 0.5], [0.5, 0.5])
    assert eer == pytest.approx(0.5)
    # genuine 0.3, 0.6, 0.9; impostor 0.2, 0.5, 0.7: one error on each side at the crossing.
    eer, threshold = m.equal_error_rate([0.3, 0.6, 0.9], [0.2, 0.5, 0.7])
    assert eer == pytest.approx(1 / 3)
    assert 0.3 <= threshold <= 0.7


def test_roc_curve_is_monotone_from_0_to_1():
    rng = np.random.default_rng(1)
    far, tar, thresholds = m.roc_curve(rng.normal(1, 1, 50), rng.normal(0, 1, 80))
    assert far[0] == 0 and tar[0] == 0 and far[-1] == 1 and tar[-1] == 1
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0)
    assert np.all(np.diff(thresholds) < 0)


def test_roc_at_far_samples_log_spaced_fars():
    rng = np.random.default_rng(2)
    roc = m.roc_at_far(rng.normal(0.5, 0.1, 300), rng.normal(0.0, 0.1, 10_000))
    assert roc["far_target"][0] == pytest.approx(1e-4)
    assert roc["far_target"][-1] == pytest.approx(1.0)
    assert np.all(roc["far"] <= roc["far_target"] + 1e-12)
    assert np.all(np.diff(roc["tar"]) >= 0)


def test_nan_scores_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        m.equal_error_rate([0.5, np.nan], [0.1])


# ----------------------------------------------------------------------------- distributions
def test_score_histogram_counts_every_score():
    counts, edges = m.score_histogram([-2.0, -0.99, 0.0, 0.5, 1.0, 3.0], bins=4)
    assert edges.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert counts.tolist() == [2, 0, 1, 3]


def test_cosine_to_degrees():
    assert m.cosine_to_degrees([1.0, 0.0, -1.0, 1.0000001]).tolist() == pytest.approx(
        [0.0, 90.0, 180.0, 0.0]
    )
    stats = m.angle_statistics([10.0, 20.0, 30.0])
    assert stats["mean"] == pytest.approx(20.0) and stats["median"] == pytest.approx(20.0)


def test_all_pair_scores_matches_brute_force():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(23, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = rng.integers(0, 5, 23)
    genuine, impostor = m.all_pair_scores(x, ids, block_size=7)
    brute_g = [x[i] @ x[j] for i in range(23) for j in range(i + 1, 23) if ids[i] == ids[j]]
    brute_i = [x[i] @ x[j] for i in range(23) for j in range(i + 1, 23) if ids[i] != ids[j]]
    assert np.sort(genuine) == pytest.approx(np.sort(brute_g), abs=1e-6)
    assert np.sort(impostor) == pytest.approx(np.sort(brute_i), abs=1e-6)
    # Probe mode: ordered pairs, never an image with itself.
    probe = x[:, ::-1].copy()
    genuine, impostor = m.all_pair_scores(x, ids, probe, block_size=5)
    brute = [(probe[i] @ x[j], ids[i] == ids[j]) for i in range(23) for j in range(23) if i != j]
    assert genuine.size + impostor.size == 23 * 22
    assert np.sort(genuine) == pytest.approx(np.sort([s for s, same in brute if same]), abs=1e-6)


def test_all_pair_scores_with_a_subset_of_probes():
    rng = np.random.default_rng(5)
    gallery = rng.normal(size=(9, 4))
    ids = np.array(list("aaabbbccd"))
    probes = rng.normal(size=(3, 4))
    probe_ids, probe_rows = np.array(["a", "c", "e"]), np.array([1, 7, -1])
    genuine, impostor = m.all_pair_scores(
        gallery, ids, probes, probe_identities=probe_ids, probe_rows=probe_rows
    )
    brute = [
        (probes[i] @ gallery[j], probe_ids[i] == ids[j])
        for i in range(3)
        for j in range(9)
        if j != probe_rows[i]
    ]
    assert genuine.size == 2 + 1 and impostor.size == 8 + 8 + 9 - 3
    assert np.sort(genuine) == pytest.approx(np.sort([s for s, same in brute if same]), abs=1e-5)
    assert np.sort(impostor) == pytest.approx(
        np.sort([s for s, same in brute if not same]), abs=1e-5
    )


# ----------------------------------------------------------------------------- calibration
@pytest.fixture(scope="module")
def calibration():
    rng = np.random.default_rng(4)
    return cal.calibrate(rng.normal(0.6, 0.1, 4000), rng.normal(0.1, 0.1, 200_000), 1e-3)


def test_calibration_threshold_and_rates(calibration):
    json.dumps(calibration, allow_nan=False)  # goes into a JSON model card as is
    assert calibration["far"] <= 1e-3
    assert calibration["n_genuine"] == 4000 and calibration["n_impostor"] == 200_000
    # Normal tails: the 1e-3 impostor quantile is about 0.1 + 3.09 * 0.1.
    assert calibration["threshold"] == pytest.approx(0.409, abs=0.01)
    low = calibration["inconclusive"]["low"]
    assert low <= calibration["threshold"]
    assert calibration["inconclusive"]["frr_at_low"] <= calibration["inconclusive"]["max_frr"]
    assert sum(calibration["histogram"]["impostor"]) == 200_000


def test_far_at_score_is_monotone_and_consistent_with_the_threshold(calibration):
    scores = np.linspace(-0.2, 1.0, 200)
    far = [cal.far_at_score(calibration, s) for s in scores]
    frr = [cal.frr_at_score(calibration, s) for s in scores]
    assert all(a >= b - 1e-12 for a, b in zip(far, far[1:], strict=False))
    assert all(a <= b + 1e-12 for a, b in zip(frr, frr[1:], strict=False))
    assert cal.far_at_score(calibration, calibration["threshold"]) == pytest.approx(1e-3, rel=0.05)
    assert cal.far_at_score(calibration, 0.99) == 0.0  # above every impostor
    # Never a rate finer than one pair in n, except exactly zero.
    assert all(f == 0 or f >= 1 / 200_000 - 1e-15 for f in far)


def test_decide_and_threshold_for_far(calibration):
    t, low = calibration["threshold"], calibration["inconclusive"]["low"]
    assert cal.decide(calibration, t) == ("same", t, low)
    assert cal.decide(calibration, low - 1e-6)[0] == "different"
    if low < t:
        assert cal.decide(calibration, (low + t) / 2)[0] == "inconclusive"
    point = next(p for p in calibration["operating_points"] if p["far_target"] == 1e-2)
    assert cal.threshold_for_far(calibration, 1e-2) == point["threshold"]
    between = cal.threshold_for_far(calibration, 3e-3)
    assert point["threshold"] < between < t
    # A stricter FAR never lowers the threshold.
    assert cal.decide(calibration, t, threshold_far=1e-4)[0] in ("inconclusive", "different")


def test_perfect_separation_has_no_inconclusive_band():
    c = cal.calibrate(np.linspace(0.7, 0.9, 50), np.linspace(-0.2, 0.3, 5000), 1e-3)
    assert c["inconclusive"]["low"] == c["threshold"]
    assert c["frr"] == 0.0 and c["eer"] == 0.0
    assert {cal.decide(c, s)[0] for s in np.linspace(-1, 1, 101)} == {"same", "different"}


def test_calibrate_refuses_too_little_data():
    with pytest.raises(ValueError):
        cal.calibrate([0.5], [0.1, 0.2])


# ----------------------------------------------------------------------------- angles
def test_leave_one_out_centre_angles_hand_computed():
    e = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    ids = ["a", "a", "b", "c"]
    angles = leave_one_out_centre_angles(e, e, ids)
    assert angles[0] == pytest.approx(90.0) and angles[1] == pytest.approx(90.0)
    assert math.isnan(angles[2]) and math.isnan(angles[3])  # no other image of b or c
    e3 = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    angles = leave_one_out_centre_angles(e3, e3, ["a", "a", "a"])
    assert angles[0] == pytest.approx(90.0) and angles[1] == pytest.approx(45.0)


def test_leave_one_out_centre_angles_for_a_subset_of_probes():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    probes = np.array([[1.0, 0.0], [0.0, 1.0]])
    angles = leave_one_out_centre_angles(
        probes, gallery, ["a", "a", "b"], probe_identities=["a", "b"], probe_rows=[0, -1]
    )
    # probe 0 is gallery row 0 (left out): centre = gallery row 1; probe 1 is new: centre row 2.
    assert angles == pytest.approx([90.0, 45.0])


def test_angles_to_centres():
    centres = np.array([[2.0, 0.0], [0.0, 1.0]])
    e = np.array([[1.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    angles = angles_to_centres(e, np.array([0, 1, -1]), centres)
    assert angles[0] == pytest.approx(45.0) and angles[1] == pytest.approx(0.0)
    assert math.isnan(angles[2])


# ----------------------------------------------------------------------------- closed set
def _separable_points():
    """Three classes of 2-D points around the directions 0, 120 and 240 degrees, four points
    each, spread +-20 degrees: every point is nearest its own class mean."""
    angles, labels = [], []
    for c, centre in enumerate((0.0, 120.0, 240.0)):
        for offset in (-20.0, -5.0, 5.0, 20.0):
            angles.append(np.radians(centre + offset))
            labels.append(c)
    points = np.stack([np.cos(angles), np.sin(angles)], axis=1) * 3.0  # any norm
    return points, np.array(labels)


def test_class_centres_are_the_normalised_class_means():
    points, labels = _separable_points()
    centres = m.class_centres(points, labels)
    assert centres.shape == (3, 2)
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 1.0)
    np.testing.assert_allclose(centres[1], [math.cos(math.radians(120)),
                                            math.sin(math.radians(120))], atol=1e-12)
    with pytest.raises(ValueError, match="without embeddings"):
        m.class_centres(points, labels, num_classes=4)


def test_closed_set_accuracy_on_separable_points_is_perfect():
    points, labels = _separable_points()
    result = m.closed_set_accuracy(points, labels, m.class_centres(points, labels))
    assert (result.top1, result.top5) == (1.0, 1.0)
    assert (result.images, result.identities, result.classes) == (12, 3, 3)


def test_a_point_across_the_boundary_costs_top1_not_top5():
    points, labels = _separable_points()
    centres = m.class_centres(points, labels)
    # Point 0 (class 0, at -20 deg) moved to 100 deg: nearest centre is class 1's (120 deg).
    moved = points.copy()
    moved[0] = [math.cos(math.radians(100)), math.sin(math.radians(100))]
    similarities = m.centre_similarities(moved, centres)
    assert similarities.shape == (12, 3)
    assert m.true_class_rank(similarities, labels)[0] == 1
    result = m.closed_set_accuracy(moved, labels, centres)
    assert result.top1 == pytest.approx(11 / 12)
    assert result.top5 == 1.0
    assert m.top_k_accuracy(similarities, labels, k=2) == 1.0


def test_top_k_with_more_classes_and_ties():
    # One embedding, six centres: the true class (0) is fourth best.
    centre_angles = np.radians([40.0, 0.0, 10.0, 20.0, 90.0, 180.0])
    centres = np.stack([np.cos(centre_angles), np.sin(centre_angles)], axis=1)
    similarities = m.centre_similarities([[1.0, 0.0]], centres)
    assert m.true_class_rank(similarities, [0]).tolist() == [3]
    assert [m.top_k_accuracy(similarities, [0], k) for k in (1, 3, 4, 5)] == [0, 0, 1, 1]
    # A model that scores every class alike ranks the true class last, never first.
    flat = np.zeros((2, 6))
    assert m.true_class_rank(flat, [0, 5]).tolist() == [5, 5]
    assert m.top_k_accuracy(flat, [0, 5], k=5) == 0.0


def test_closed_set_inputs_are_checked():
    points, labels = _separable_points()
    centres = m.class_centres(points, labels)
    with pytest.raises(ValueError, match="class ids"):
        m.closed_set_accuracy(points, labels + 1, centres)
    with pytest.raises(ValueError, match="dimensions"):
        m.closed_set_accuracy(points, labels, np.ones((3, 4)))
    with pytest.raises(ValueError, match="all-zero"):
        m.closed_set_accuracy(np.zeros((12, 2)), labels, centres)
    # Blocks give the same answer as one product.
    assert m.closed_set_accuracy(points, labels, centres, block_size=5) == \
        m.closed_set_accuracy(points, labels, centres)
