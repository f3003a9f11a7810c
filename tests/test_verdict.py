"""The verdict statistics against scipy/statsmodels (test-only oracles) and hand-computed cases."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from gateway.verdict import (
    agreement_matrix,
    confusion_matrix,
    disagreements,
    expected_calibration_error,
    holm,
    mcnemar_exact,
    mean_sd,
    per_class_accuracy,
    verdict,
    wilson_interval,
)

N_TEST = 10_000


# --- Wilson -----------------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 20_000), share=st.floats(0, 1), confidence=st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_wilson_matches_statsmodels(n, share, confidence):
    correct = round(share * n)
    low, high = wilson_interval(correct, n, confidence)
    expected = proportion_confint(correct, n, alpha=1 - confidence, method="wilson")
    assert (low, high) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert 0.0 <= low <= correct / n <= high <= 1.0


def test_wilson_known_value():
    # 9,912 of 10,000 correct.
    assert wilson_interval(9912, 10_000) == pytest.approx((0.98917154, 0.99285122), abs=1e-8)


@pytest.mark.parametrize(("correct", "n"), [(0, 0), (5, 4), (-1, 10)])
def test_wilson_rejects_impossible_counts(correct, n):
    with pytest.raises(ValueError):
        wilson_interval(correct, n)


# --- exact McNemar ----------------------------------------------------------------------------------------------


def _statsmodels_mcnemar(b: int, c: int) -> float:
    return mcnemar([[0, b], [c, 0]], exact=True).pvalue


def _scipy_mcnemar(b: int, c: int) -> float:
    return 1.0 if b + c == 0 else binomtest(min(b, c), b + c, 0.5).pvalue


DISCORDANT_CASES = [
    (0, 0), (0, 1), (1, 0), (0, 7), (7, 0), (0, 60), (3, 3), (5, 6), (1, 9), (10, 25), (41, 88),
    (100, 140), (512, 600), (4000, 4100), (4100, 4000), (5000, 5000), (4999, 5001), (1, 9999),
    (300, 9700), (9700, 300), (0, 1100),
]


@pytest.mark.parametrize(("b", "c"), DISCORDANT_CASES)
def test_mcnemar_matches_statsmodels_and_scipy(b, c):
    p = mcnemar_exact(b, c)
    assert p == pytest.approx(_statsmodels_mcnemar(b, c), rel=1e-9, abs=1e-250)  # statsmodels underflows to 0 first
    assert p == pytest.approx(_scipy_mcnemar(b, c), rel=1e-9, abs=1e-250)  # statsmodels underflows to 0 first


@settings(max_examples=200, deadline=None)
@given(b=st.integers(0, 5000), c=st.integers(0, 5000))
def test_mcnemar_property(b, c):
    p = mcnemar_exact(b, c)
    assert p == mcnemar_exact(c, b)
    assert 0.0 <= p <= 1.0
    assert p == pytest.approx(_statsmodels_mcnemar(b, c), rel=1e-9, abs=1e-250)  # statsmodels underflows to 0 first


def test_mcnemar_edge_values():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(0, 10_000) == 0.0  # 2 * 2**-10000 underflows, as it should
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


# --- Holm -------------------------------------------------------------------------------------------------------


# statsmodels' multipletests takes ~70 ms a call, hence fewer examples here.
@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=30))
def test_holm_matches_statsmodels(p_values):
    expected = multipletests(p_values, method="holm")[1]
    adjusted = holm(p_values)
    assert adjusted == pytest.approx(list(expected), rel=1e-12, abs=1e-15)
    order = np.argsort(p_values, kind="stable")
    assert all(np.diff(np.asarray(adjusted)[order]) >= 0)  # monotone in the raw p
    assert all(a >= p for a, p in zip(adjusted, p_values, strict=True))
    assert max(adjusted) <= 1.0


def test_holm_hand_case_keeps_input_order():
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([]) == []


def test_holm_rejects_non_probabilities():
    for bad in ([0.1, float("nan")], [1.2], [-0.1]):
        with pytest.raises(ValueError):
            holm(bad)


# --- one model: confusion, per class, calibration ---------------------------------------------------------------


def test_confusion_and_per_class_hand_case():
    labels = [0, 0, 1, 1, 1, 2]
    predicted = [0, 1, 1, 1, 2, 2]
    confusion = confusion_matrix(labels, predicted)
    assert len(confusion) == 10 and all(len(row) == 10 for row in confusion)
    assert [row[:3] for row in confusion[:3]] == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]
    assert sum(map(sum, confusion)) == 6
    accuracy = per_class_accuracy(labels, predicted)
    assert accuracy[:3] == pytest.approx([0.5, 2 / 3, 1.0])
    assert accuracy[3:] == [None] * 7


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), min_size=1, max_size=300))
def test_confusion_and_per_class_match_a_loop(pairs):
    labels, predicted = (np.array(column) for column in zip(*pairs, strict=True))
    expected = np.zeros((10, 10), dtype=int)
    for true, guess in pairs:
        expected[true, guess] += 1
    assert confusion_matrix(labels, predicted) == expected.tolist()
    for digit, accuracy in enumerate(per_class_accuracy(labels, predicted)):
        of_digit = labels == digit
        if of_digit.any():
            assert accuracy == pytest.approx(np.mean(predicted[of_digit] == digit))
        else:
            assert accuracy is None


def test_labels_out_of_range_are_refused():
    with pytest.raises(ValueError):
        confusion_matrix([0, 10], [0, 1])
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0, 1, 2])
    with pytest.raises(ValueError):
        confusion_matrix([0.5], [0])


def test_ece_hand_case():
    # 3 bins: (0, 1/3], (1/3, 2/3], (2/3, 1].
    # bin 2: confidences 0.4, 0.6 (mean 0.5), 1 of 2 right (0.5) -> gap 0
    # bin 3: confidences 0.7, 0.9, 1.0 (mean 13/15), 1 of 3 right -> gap 13/15 - 1/3 = 8/15
    # ECE = 2/5 * 0 + 3/5 * 8/15 = 8/25
    correct = np.array([True, False, True, False, False])
    confidence = np.array([0.4, 0.6, 0.7, 0.9, 1.0])
    assert expected_calibration_error(correct, confidence, bins=3) == pytest.approx(8 / 25)


def test_ece_upper_bin_edge_is_closed():
    # 0.5 belongs to (0, 0.5], not (0.5, 1]: all right at mean confidence 0.5 in one bin, 0.75 in the other.
    assert expected_calibration_error([True], [0.5], bins=2) == pytest.approx(0.5)
    assert expected_calibration_error([True, True], [0.5, 1.0], bins=2) == pytest.approx(0.25)


def test_ece_perfectly_calibrated_and_extremes():
    assert expected_calibration_error([True] * 4, [1.0] * 4) == 0.0
    assert expected_calibration_error([False] * 4, [1.0] * 4) == 1.0
    assert expected_calibration_error([True, False], [0.0, 0.0]) == pytest.approx(0.5)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(0, 1)), min_size=1, max_size=200), st.integers(1, 20))
def test_ece_matches_a_loop_over_bins(samples, bins):
    correct = np.array([right for right, _ in samples])
    confidence = np.array([sure for _, sure in samples])
    edges = np.linspace(0, 1, bins + 1)
    expected = 0.0
    for m in range(bins):
        in_bin = (confidence > edges[m]) & (confidence <= edges[m + 1])
        if m == 0:
            in_bin |= confidence == 0
        if in_bin.any():
            expected += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    assert expected_calibration_error(correct, confidence, bins) == pytest.approx(expected, abs=1e-12)


def test_ece_refuses_bad_input():
    with pytest.raises(ValueError):
        expected_calibration_error([], [])
    with pytest.raises(ValueError):
        expected_calibration_error([True], [1.5])
    with pytest.raises(ValueError):
        expected_calibration_error([True, False], [0.9])


# --- several models ---------------------------------------------------------------------------------------------


def test_agreement_matrix():
    agreement = agreement_matrix({"a": [1, 2, 3, 4], "b": [1, 2, 0, 0], "c": [1, 2, 3, 0]})
    assert agreement["a"]["b"] == agreement["b"]["a"] == 0.5
    assert agreement["a"]["c"] == 0.75
    assert agreement["b"]["c"] == 0.75
    assert all(agreement[name][name] == 1.0 for name in "abc")


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 200).flatmap(lambda n: st.lists(
    st.lists(st.integers(0, 9), min_size=n, max_size=n), min_size=1, max_size=5)))
def test_agreement_is_symmetric_with_ones_on_the_diagonal(columns):
    agreement = agreement_matrix({f"m{i}": column for i, column in enumerate(columns)})
    for a in agreement:
        assert agreement[a][a] == 1.0
        for b in agreement:
            assert agreement[a][b] == agreement[b][a]
            assert 0.0 <= agreement[a][b] <= 1.0


def test_agreement_refuses_mismatched_or_empty():
    with pytest.raises(ValueError):
        agreement_matrix({"a": [1, 2], "b": [1]})
    with pytest.raises(ValueError):
        agreement_matrix({"a": [], "b": []})
    with pytest.raises(ValueError):
        agreement_matrix({})


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=20))
def test_mean_sd_over_seeds(values):
    spread = mean_sd(values)
    assert spread.mean == pytest.approx(statistics.fmean(values), abs=1e-12)
    assert spread.sd == pytest.approx(statistics.stdev(values) if len(values) > 1 else 0.0, abs=1e-12)
    assert (spread.min, spread.max) == (min(values), max(values))
    mean, sd, low, high = spread
    assert low <= high and sd >= 0


def test_mean_sd_one_value_and_empty():
    assert mean_sd([0.99]) == (0.99, 0.0, 0.99, 0.99)
    with pytest.raises(ValueError):
        mean_sd([])


# --- verdict ----------------------------------------------------------------------------------------------------


def _model_right_on(labels: np.ndarray, right: np.ndarray, rng: np.random.Generator, confidence=0.9) -> dict:
    """Predictions that are right exactly where ``right`` says (wrong answers are label + 1..9)."""
    wrong = (labels + rng.integers(1, 10, labels.size)) % 10
    return {"predicted": np.where(right, labels, wrong), "confidence": np.full(labels.size, confidence)}


@pytest.fixture
def synthetic():
    """10,000 labels; "good" misses 90 images, "bad" misses those and 220 more, "twin" answers like "good"."""
    rng = np.random.default_rng(15)
    labels = rng.integers(0, 10, N_TEST)
    misses = rng.permutation(N_TEST)
    good_right = np.ones(N_TEST, bool)
    good_right[misses[:90]] = False
    bad_right = good_right.copy()
    bad_right[misses[90:310]] = False
    good = _model_right_on(labels, good_right, rng, 0.99)
    return labels, {"good": good, "bad": _model_right_on(labels, bad_right, rng, 0.95),
                    "twin": {"predicted": good["predicted"].copy(), "confidence": good["confidence"].copy()}}


def test_verdict_names_the_clearly_better_model(synthetic):
    labels, models = synthetic
    result = verdict(labels, models)
    json.dumps(result, allow_nan=False)  # plain JSON, no NaN

    assert result["models"]["good"]["correct"] == 9910
    assert result["models"]["good"]["accuracy"] == pytest.approx(0.991)
    assert result["models"]["bad"]["accuracy"] == pytest.approx(0.969)
    low, high = result["models"]["good"]["ci95"]
    assert low < 0.991 < high
    assert len(result["models"]["bad"]["per_class_accuracy"]) == 10
    assert result["models"]["good"]["ece"] == pytest.approx(0.001, abs=1e-12)
    assert sum(map(sum, result["models"]["bad"]["confusion"])) == N_TEST

    pairs = {(pair["a"], pair["b"]): pair for pair in result["pairs"]}
    assert list(pairs) == [("good", "bad"), ("good", "twin"), ("bad", "twin")]
    good_bad = pairs["good", "bad"]
    assert (good_bad["a_only"], good_bad["b_only"]) == (220, 0)
    assert good_bad["significant"] and good_bad["p_adjusted"] < 1e-60
    twins = pairs["good", "twin"]
    assert (twins["a_only"], twins["b_only"], twins["p_value"], twins["p_adjusted"]) == (0, 0, 1.0, 1.0)
    assert not twins["significant"]
    assert result["agreement"]["good"]["twin"] == 1.0

    summary = result["summary"]
    assert "good is more accurate than bad: 9,910 vs 9,690 of 10,000, p < 0.001 adjusted." in summary
    assert "twin is more accurate than bad" in summary
    assert "No significant difference between good and twin (p = 1 adjusted)." in summary


def test_verdict_p_values_are_holm_adjusted_mcnemar(synthetic):
    labels, models = synthetic
    result = verdict(labels, models)
    raw = [mcnemar_exact(pair["a_only"], pair["b_only"]) for pair in result["pairs"]]
    assert [pair["p_value"] for pair in result["pairs"]] == raw
    assert [pair["p_adjusted"] for pair in result["pairs"]] == holm(raw)


def test_verdict_without_significant_difference():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, N_TEST)
    right_a = rng.random(N_TEST) > 0.01
    right_b = right_a.copy()
    right_b[np.flatnonzero(right_a)[:7]] = False  # b misses 7 more images than a
    right_b[np.flatnonzero(~right_a)[:1]] = True  # and gets 1 that a misses: a raw p of 0.07
    right_c = right_a.copy()
    right_c[np.flatnonzero(right_a)[:1]] = False  # c misses 1 more than a
    models = {"torch": _model_right_on(labels, right_a, rng), "tf-native": _model_right_on(labels, right_b, rng),
              "tf-hybrid": _model_right_on(labels, right_c, rng)}
    result = verdict(labels, models)
    assert not any(pair["significant"] for pair in result["pairs"])
    closest = min(result["pairs"], key=lambda pair: pair["p_adjusted"])
    assert closest["p_adjusted"] < 1 and {closest["a"], closest["b"]} == {"torch", "tf-native"}
    assert result["summary"] == (
        "No significant difference between any pair of models (Holm-adjusted exact McNemar, alpha 0.05); "
        f"the smallest adjusted p is {closest['p_adjusted']:.2g} ({closest['a']} vs {closest['b']}).")


def test_verdict_where_holm_caps_every_p_at_one_names_the_smallest_raw_p():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 10, N_TEST)
    right_a = rng.random(N_TEST) > 0.01
    right_b, right_c = right_a.copy(), right_a.copy()
    right_b[np.flatnonzero(right_a)[:2]] = False  # b misses 2 more than a: a raw p of 0.5
    right_c[np.flatnonzero(right_a)[:1]] = False  # c misses 1 more than a: a raw p of 1
    models = {name: _model_right_on(labels, right, rng) for name, right in
              (("torch", right_a), ("tf-native", right_b), ("tf-hybrid", right_c))}
    result = verdict(labels, models)
    assert all(pair["p_adjusted"] == 1 for pair in result["pairs"])
    smallest = min(result["pairs"], key=lambda pair: pair["p_value"])
    assert smallest["p_value"] == 0.5 and {smallest["a"], smallest["b"]} == {"torch", "tf-native"}
    assert result["summary"] == (
        "No significant difference between any pair of models (Holm-adjusted exact McNemar, alpha 0.05); "
        f"every adjusted p is 1, the smallest unadjusted p 0.5 ({smallest['a']} vs {smallest['b']}).")


def test_verdict_two_models_and_one_model():
    labels = np.arange(10)
    same = {"predicted": labels, "confidence": np.ones(10)}
    two = verdict(labels, {"x": same, "y": same})
    assert two["summary"].startswith("No significant difference between x and y")
    one = verdict(labels, {"x": same})
    assert one["pairs"] == [] and "nothing to compare" in one["summary"]


def test_verdict_summary_counts_many_non_significant_pairs():
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 10, N_TEST)
    base = rng.random(N_TEST) > 0.01
    worse = base & (rng.random(N_TEST) > 0.05)
    models = {"poor": _model_right_on(labels, worse, rng)}
    models.update({f"m{i}": _model_right_on(labels, base, rng) for i in range(4)})
    summary = verdict(labels, models)["summary"]
    assert summary.count("is more accurate than poor") == 4
    assert "The other 6 pairs show no significant difference" in summary


def test_verdict_refuses_empty_or_mismatched_input():
    with pytest.raises(ValueError):
        verdict([], {"a": {"predicted": [], "confidence": []}})
    with pytest.raises(ValueError):
        verdict([1, 2], {})
    with pytest.raises(ValueError):
        verdict([1, 2], {"a": {"predicted": [1], "confidence": [0.5]}})
    with pytest.raises(ValueError):
        verdict([1, 2], {"a": {"predicted": [1, 2], "confidence": [0.5, float("nan")]}})
    with pytest.raises(ValueError):
        verdict([1], {"a": {"predicted": [1], "confidence": [0.5]}}, alpha=0)


# --- disagreements ----------------------------------------------------------------------------------------------


def _answers(predicted: list[int], confidence: list[float]) -> dict:
    return {"predicted": np.array(predicted), "confidence": np.array(confidence)}


def test_disagreements_most_split_first():
    labels = [7, 7, 7, 7, 7, 7]
    models = {
        #                  0  1  2  3  4  5
        "a": _answers([7, 7, 1, 7, 1, 7], [0.9, 0.9, 0.6, 0.9, 0.9, 0.5]),
        "b": _answers([7, 2, 2, 7, 1, 1], [0.9, 0.8, 0.6, 0.9, 0.9, 0.5]),
        "c": _answers([7, 7, 3, 1, 7, 7], [0.9, 0.7, 0.6, 0.3, 0.9, 0.5]),
    }
    found = disagreements(labels, models)
    # image 2: three labels; then two labels with one model right (4), then two right, by mean confidence.
    assert [item["index"] for item in found] == [2, 4, 5, 3, 1]
    assert found[0] == {"index": 2, "label": 7, "predictions": {
        "a": {"label": 1, "confidence": 0.6}, "b": {"label": 2, "confidence": 0.6},
        "c": {"label": 3, "confidence": 0.6}}}
    json.dumps(found, allow_nan=False)
    assert [item["index"] for item in disagreements(labels, models, limit=2)] == [2, 4]
    assert disagreements(labels, models, limit=0) == []


def test_no_disagreements_when_all_agree():
    labels = [1, 2, 3]
    same = _answers([1, 2, 0], [0.5, 0.5, 0.5])
    assert disagreements(labels, {"a": same, "b": same}) == []


def test_disagreements_ties_keep_image_order():
    labels = [0, 0, 0]
    models = {"a": _answers([0, 0, 0], [0.5] * 3), "b": _answers([1, 1, 1], [0.5] * 3)}
    assert [item["index"] for item in disagreements(labels, models)] == [0, 1, 2]
