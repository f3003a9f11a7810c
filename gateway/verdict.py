"""Is one model really more accurate than another? Statistics over the same MNIST test images.

Every model answers the same 10,000 test images, so models are compared pair by pair on the images where
exactly one of the two is right (the exact McNemar test), with Holm's correction across all pairs. Also here:
Wilson intervals for accuracy, per-class accuracy, confusion matrices, calibration error, agreement between
models, spread over seeds, and the images the models disagree on.

Pure numpy and the standard library: the gateway image has no scipy. Every result is plain floats, ints,
lists and dicts, ready for JSON (never NaN).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import NamedTuple

import numpy as np

NUM_CLASSES = 10
TEST_NAME = "exact McNemar"


# --- single numbers -------------------------------------------------------------------------------------------


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a proportion of ``correct`` out of ``n``."""
    correct, n = _count(correct, "correct"), _count(n, "n")
    if n == 0:
        raise ValueError("n must be positive")
    if correct > n:
        raise ValueError(f"correct ({correct}) exceeds n ({n})")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    share = correct / n
    shrink = 1 + z * z / n
    center = (share + z * z / (2 * n)) / shrink
    half_width = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / shrink
    low, high = center - half_width, center + half_width
    # Exactly 0 (1) when none (all) are correct; rounding would leave a hair off or past the end.
    return (0.0 if correct == 0 else max(0.0, low)), (1.0 if correct == n else min(1.0, high))


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (images only A, resp. only B, gets right)."""
    a_only, b_only = _count(a_only, "a_only"), _count(b_only, "b_only")
    discordant = a_only + b_only
    if discordant == 0:
        return 1.0
    return min(1.0, 2 * _binomial_half_cdf(min(a_only, b_only), discordant))


def _binomial_half_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), summed exactly in integers and rounded once."""
    term, total = 1, 1  # C(n, 0)
    for i in range(k):
        term = term * (n - i) // (i + 1)
        total += term
    # Python's int / int is correctly rounded even when both are thousands of digits long.
    return total / (1 << n)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values, in the order given."""
    p = np.asarray(p_values, dtype=float).ravel()
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p-values must be numbers in [0, 1]")
    count = p.size
    order = np.argsort(p, kind="stable")
    stepped = p[order] * np.arange(count, 0, -1)
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate(stepped))
    adjusted = np.empty(count)
    adjusted[order] = adjusted_sorted
    return [float(value) for value in adjusted]


class Spread(NamedTuple):
    """Summary of one number over several seeds."""

    mean: float
    sd: float  # sample standard deviation (ddof=1); 0.0 for a single seed
    min: float
    max: float


def mean_sd(values: Sequence[float]) -> Spread:
    """Mean, sample standard deviation, min and max of per-seed values."""
    array = np.asarray(values, dtype=float).ravel()
    if array.size == 0:
        raise ValueError("no values")
    if not np.isfinite(array).all():
        raise ValueError("values must be finite")
    sd = float(np.std(array, ddof=1)) if array.size > 1 else 0.0
    return Spread(float(array.mean()), sd, float(array.min()), float(array.max()))


# --- one model --------------------------------------------------------------------------------------------------


def confusion_matrix(labels, predicted, num_classes: int = NUM_CLASSES) -> list[list[int]]:
    """Counts of (true label, predicted label): rows are true labels, columns predicted."""
    labels = _labels(labels, "labels", num_classes)
    predicted = _labels(predicted, "predicted", num_classes, len(labels))
    counts = np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).tolist()


def per_class_accuracy(labels, predicted, num_classes: int = NUM_CLASSES) -> list[float | None]:
    """For each true class, the fraction of its images predicted right (None for a class with no images)."""
    confusion = np.asarray(confusion_matrix(labels, predicted, num_classes))
    per_class = confusion.sum(axis=1)
    return [float(confusion[c, c] / per_class[c]) if per_class[c] else None for c in range(num_classes)]


def expected_calibration_error(correct, confidence, bins: int = 15) -> float:
    """Expected calibration error over equal-width confidence bins (Guo et al. 2017).

    Bin m holds confidences in ((m-1)/bins, m/bins]; a confidence of exactly 0 goes to the first bin.
    ECE = sum over bins of (share of images in the bin) * |accuracy in the bin - mean confidence in the bin|.
    """
    correct = np.asarray(correct).ravel()
    confidence = _probabilities(confidence, "confidence", len(correct))
    if correct.size == 0:
        raise ValueError("no images")
    if correct.dtype != bool and not np.isin(correct, (0, 1)).all():
        raise ValueError("correct must be booleans")
    bins = _count(bins, "bins")
    if bins == 0:
        raise ValueError("bins must be positive")
    edges = np.linspace(0.0, 1.0, bins + 1)
    # side="left" puts a value equal to an upper edge into the bin that edge closes.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    right = np.bincount(which, weights=correct.astype(float), minlength=bins)
    sure = np.bincount(which, weights=confidence, minlength=bins)
    return float(np.abs(right - sure).sum() / correct.size)


# --- several models ---------------------------------------------------------------------------------------------


def agreement_matrix(predictions: Mapping[str, object]) -> dict[str, dict[str, float]]:
    """For every two models, the fraction of images on which they predict the same label."""
    arrays = {name: np.asarray(labels).ravel() for name, labels in predictions.items()}
    _same_length(arrays.values())
    return {
        a: {b: float(np.mean(arrays[a] == arrays[b])) for b in arrays}
        for a in arrays
    }


def verdict(labels, models: Mapping[str, Mapping[str, object]], alpha: float = 0.05) -> dict:
    """Per-model accuracy and calibration, agreement, and Holm-adjusted exact McNemar tests of every pair.

    ``models`` maps a model name to {"predicted": labels, "confidence": top-class probability}, both one value
    per test image in the order of ``labels``. Pairs follow the order of ``models``.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    labels, answers = _checked_models(labels, models)
    right = {name: predicted == labels for name, (predicted, _) in answers.items()}
    pairs = _pairs(right, alpha)
    per_model = {name: _model_report(labels, predicted, confidence) for name, (predicted, confidence) in
                 answers.items()}
    return {
        "n": int(labels.size),
        "alpha": float(alpha),
        "test": f"{TEST_NAME}, Holm-adjusted",
        "models": per_model,
        "agreement": agreement_matrix({name: predicted for name, (predicted, _) in answers.items()}),
        "pairs": pairs,
        "summary": _summary(per_model, pairs, labels.size, alpha),
    }


def disagreements(labels, models: Mapping[str, Mapping[str, object]], limit: int = 50) -> list[dict]:
    """Test images on which the models do not all give the same label, the most split first.

    Order: more distinct labels first, then fewer models right, then lower mean confidence, then image index.
    """
    limit = _count(limit, "limit")
    labels, answers = _checked_models(labels, models)
    names = list(answers)
    predicted = np.stack([answers[name][0] for name in names])
    confidence = np.stack([answers[name][1] for name in names])
    ordered = np.sort(predicted, axis=0)
    distinct = 1 + (ordered[1:] != ordered[:-1]).sum(axis=0)
    models_right = (predicted == labels).sum(axis=0)
    mean_confidence = confidence.mean(axis=0)
    index = np.arange(labels.size)
    # lexsort's last key is the primary one.
    order = np.lexsort((index, mean_confidence, models_right, -distinct))
    chosen = order[distinct[order] > 1][:limit]
    return [
        {
            "index": int(i),
            "label": int(labels[i]),
            "predictions": {
                name: {"label": int(predicted[m, i]), "confidence": float(confidence[m, i])}
                for m, name in enumerate(names)
            },
        }
        for i in chosen
    ]


# --- verdict parts ----------------------------------------------------------------------------------------------


def _model_report(labels: np.ndarray, predicted: np.ndarray, confidence: np.ndarray) -> dict:
    """Accuracy with its Wilson 95% interval, per-class accuracy, calibration error and confusion matrix."""
    right = predicted == labels
    correct = int(right.sum())
    return {
        "correct": correct,
        "accuracy": correct / labels.size,
        "ci95": list(wilson_interval(correct, labels.size)),
        "per_class_accuracy": per_class_accuracy(labels, predicted),
        "ece": expected_calibration_error(right, confidence),
        "confusion": confusion_matrix(labels, predicted),
    }


def _pairs(right: dict[str, np.ndarray], alpha: float) -> list[dict]:
    """Every unordered pair of models with its discordant counts, raw and Holm-adjusted p-values."""
    names = list(right)
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            a_only = int(np.sum(right[a] & ~right[b]))
            b_only = int(np.sum(right[b] & ~right[a]))
            pairs.append({"a": a, "b": b, "a_only": a_only, "b_only": b_only,
                          "p_value": mcnemar_exact(a_only, b_only)})
    for pair, adjusted in zip(pairs, holm([pair["p_value"] for pair in pairs]), strict=True):
        pair["p_adjusted"] = adjusted
        pair["significant"] = adjusted < alpha
    return pairs


# Up to this many non-significant pairs are named one by one in the summary; more are counted.
LISTED_NON_SIGNIFICANT = 3


def _summary(per_model: dict[str, dict], pairs: list[dict], n: int, alpha: float) -> str:
    """A plain-words paragraph: which pairs differ significantly and which way, and how sure."""
    method = f"Holm-adjusted {TEST_NAME}, alpha {_format_number(alpha)}"
    if not pairs:
        (name, report), = per_model.items()
        return f"Only one model ({name}, {report['correct']:,} of {n:,} correct); nothing to compare."
    significant = [pair for pair in pairs if pair["significant"]]
    others = [pair for pair in pairs if not pair["significant"]]
    if not significant:
        return _no_difference_sentence(pairs, method)
    sentences = [_better_sentence(pair, per_model, n) for pair in significant]
    if len(others) <= LISTED_NON_SIGNIFICANT:
        sentences += [f"No significant difference between {pair['a']} and {pair['b']} "
                      f"(p {_format_p(pair['p_adjusted'])} adjusted)." for pair in others]
    else:
        closest = min(others, key=lambda pair: pair["p_adjusted"])
        sentences.append(f"The other {len(others)} pairs show no significant difference (smallest adjusted "
                         f"p {_format_p(closest['p_adjusted'])}, {closest['a']} vs {closest['b']}).")
    sentences.append(f"({method}.)")
    return " ".join(sentences)


def _no_difference_sentence(pairs: list[dict], method: str) -> str:
    """The summary when no pair differs significantly."""
    if len(pairs) == 1:
        (pair,) = pairs
        return (f"No significant difference between {pair['a']} and {pair['b']} "
                f"({method}; p {_format_p(pair['p_adjusted'])}).")
    closest = min(pairs, key=lambda pair: (pair["p_adjusted"], pair["p_value"]))
    if closest["p_adjusted"] >= 1:  # Holm capped them all at 1: no pair is "closest" by it, the raw p says more
        return (f"No significant difference between any pair of models ({method}); every adjusted p is 1, the "
                f"smallest unadjusted p {_format_number(closest['p_value'])} ({closest['a']} vs {closest['b']}).")
    return (f"No significant difference between any pair of models ({method}); the smallest adjusted p is "
            f"{_format_number(closest['p_adjusted'])} ({closest['a']} vs {closest['b']}).")


def _better_sentence(pair: dict, per_model: dict[str, dict], n: int) -> str:
    """'torch is more accurate than tf-native: 9,912 vs 9,871 of 10,000, p = 0.003 adjusted.'"""
    better, worse = (pair["a"], pair["b"]) if pair["a_only"] > pair["b_only"] else (pair["b"], pair["a"])
    return (f"{better} is more accurate than {worse}: {per_model[better]['correct']:,} vs "
            f"{per_model[worse]['correct']:,} of {n:,}, p {_format_p(pair['p_adjusted'])} adjusted.")


def _format_p(p: float) -> str:
    """'= 0.042', '= 1', or '< 0.001' (smaller p-values say nothing more to a reader)."""
    return "< 0.001" if p < 0.001 else f"= {_format_number(p)}"


def _format_number(value: float) -> str:
    """Two significant digits, never scientific notation for values from 0.001 up."""
    return f"{value:.2g}" if value >= 0.001 else f"{value:.1e}"


# --- input checks -----------------------------------------------------------------------------------------------


def _count(value, name: str) -> int:
    """A non-negative integer (numpy integers welcome), or ValueError/TypeError."""
    count = operator.index(value)
    if count < 0:
        raise ValueError(f"{name} must not be negative, got {count}")
    return count


def _labels(values, name: str, num_classes: int = NUM_CLASSES, length: int | None = None) -> np.ndarray:
    """A 1-D integer array of class labels in [0, num_classes)."""
    array = np.asarray(values).ravel()
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.array_equal(array, np.round(array)):
            raise ValueError(f"{name} must be integer class labels")
    array = array.astype(np.int64)
    if length is not None and array.size != length:
        raise ValueError(f"{name} has {array.size} values, expected {length}")
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(f"{name} must be class labels in [0, {num_classes})")
    return array


def _probabilities(values, name: str, length: int) -> np.ndarray:
    """A 1-D float array of probabilities in [0, 1] of the given length."""
    array = np.asarray(values, dtype=float).ravel()
    if array.size != length:
        raise ValueError(f"{name} has {array.size} values, expected {length}")
    if np.isnan(array).any() or (array < 0).any() or (array > 1).any():
        raise ValueError(f"{name} must be probabilities in [0, 1]")
    return array


def _same_length(arrays) -> int:
    """The common length of some arrays; ValueError if there are none, they differ, or they are empty."""
    lengths = {len(array) for array in arrays}
    if not lengths:
        raise ValueError("no models")
    if len(lengths) > 1:
        raise ValueError(f"models answered different numbers of images: {sorted(lengths)}")
    (length,) = lengths
    if length == 0:
        raise ValueError("no images")
    return length


def _checked_models(labels, models: Mapping[str, Mapping[str, object]]):
    """Labels and, per model, (predicted labels, top-class confidence), all checked to fit together."""
    labels = _labels(labels, "labels")
    if labels.size == 0:
        raise ValueError("no images")
    if not models:
        raise ValueError("no models")
    answers = {}
    for name, answer in models.items():
        predicted = _labels(answer["predicted"], f"{name} predicted", length=labels.size)
        answers[name] = (predicted, _probabilities(answer["confidence"], f"{name} confidence", labels.size))
    return labels, answers
