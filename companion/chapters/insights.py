"""Dataset insights: class balance, pixel statistics, and where quantization hurts.

Pure NumPy/pandas functions (no training, no models) behind the ``dataset_insights`` notebook.
The notebook obtains predicted probabilities from two trained networks -- the FP32 reference
and a quantized one, trained on the same data with the same seed -- and compares them here:

* :func:`class_balance` -- examples per class and their share;
* :func:`pixel_stats`, :func:`intensity_histogram` -- per-channel mean/std/min/max and the
  distribution of pixel intensities;
* :func:`sample_indices` -- the first ``k`` examples of every class (for sample grids);
* :func:`per_class_accuracy`, :func:`per_class_table` -- accuracy per true class, of one
  prediction or of the reference and the quantized prediction side by side;
* :func:`confusion_matrix`, :func:`confusion_difference` -- confusion matrices (counts, or rates
  per true class) and their difference *quantized - reference*;
* :func:`most_changed` -- the test examples whose predicted probability of the true class
  dropped most from the reference to the quantized network.

Conventions: labels are integers ``0 .. C-1``; ``C`` (``num_classes``) is inferred as
``max(label) + 1`` over every label array given when not passed; probabilities are arrays of
shape ``(N, C)``. Confusion matrices are indexed ``[true, predicted]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "num_classes_of",
    "class_balance",
    "pixel_stats",
    "intensity_histogram",
    "sample_indices",
    "per_class_accuracy",
    "per_class_table",
    "confusion_matrix",
    "confusion_difference",
    "most_changed",
]


# --------------------------------------------------------------------------------------------
# argument checks


def _labels(y, name: str = "y") -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of integer labels, got shape {y.shape}"
        )
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(
                f"{name} must hold integer labels 0..C-1, got non-integer values"
            )
        y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"{name} must hold labels >= 0, got {int(y.min())}")
    return y.astype(np.int64, copy=False)


def num_classes_of(*label_arrays, num_classes: int | None = None) -> int:
    """``num_classes`` if given (checked against the labels), else ``max(label) + 1`` over all arrays."""
    arrays = [_labels(a, "labels") for a in label_arrays]
    top = max((int(a.max()) for a in arrays if a.size), default=-1)
    if num_classes is None:
        if top < 0:
            raise ValueError(
                "cannot infer the number of classes from empty label arrays; pass num_classes"
            )
        return top + 1
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if top >= int(num_classes):
        raise ValueError(
            f"label {top} out of range for num_classes={num_classes} (labels must be 0..{int(num_classes) - 1})"
        )
    return int(num_classes)


def _same_length(**arrays) -> int:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays must have the same length, got {lengths}")
    return next(iter(lengths.values()))


def _names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(
            f"class_names has {len(class_names)} entries for {num_classes} classes"
        )
    return [str(c) for c in class_names]


def _proba(p, n: int, num_classes: int, name: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.shape != (n, num_classes):
        raise ValueError(
            f"{name} must have shape (N, C) = ({n}, {num_classes}), got {p.shape}"
        )
    return p


# --------------------------------------------------------------------------------------------
# the data itself


def class_balance(
    y, num_classes: int | None = None, class_names: Sequence[str] | None = None
) -> pd.DataFrame:
    """Examples per class: ``label, class, count, share`` (share = count / N; classes with no example: 0).

    Arguments:
        y: integer labels, shape ``(N,)``.
        num_classes: number of classes (default ``max(y) + 1``).
        class_names: display names, index = label.
    """
    y = _labels(y)
    c = num_classes_of(y, num_classes=num_classes)
    counts = np.bincount(y, minlength=c)
    share = counts / counts.sum() if counts.sum() else np.zeros(c)
    return pd.DataFrame(
        {
            "label": np.arange(c),
            "class": _names(class_names, c),
            "count": counts,
            "share": share,
        }
    )


def _channels_last(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:  # (N, H, W) grey images
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(
            f"images must have shape (N, H, W, C) or (N, H, W), got {x.shape}"
        )
    return x


def pixel_stats(x, channel_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-channel pixel statistics over all images and positions: ``channel, mean, std, min, max``.

    ``std`` is the population standard deviation (``ddof=0``, the value a normalisation layer
    would use), computed in float64.

    Arguments:
        x: images ``(N, H, W, C)`` (or ``(N, H, W)``, one channel).
        channel_names: names of the channels (default ``"grey"`` for one channel, ``R, G, B`` for three,
            else their indices).
    """
    x = _channels_last(x).astype(np.float64, copy=False)
    c = x.shape[-1]
    flat = x.reshape(-1, c)
    if channel_names is None:
        channel_names = (
            ["grey"]
            if c == 1
            else ["R", "G", "B"]
            if c == 3
            else [str(i) for i in range(c)]
        )
    if len(channel_names) != c:
        raise ValueError(
            f"channel_names has {len(channel_names)} entries for {c} channels"
        )
    return pd.DataFrame(
        {
            "channel": list(channel_names),
            "mean": flat.mean(axis=0),
            "std": flat.std(axis=0),
            "min": flat.min(axis=0),
            "max": flat.max(axis=0),
        }
    )


def intensity_histogram(
    x,
    bins: int = 32,
    value_range: tuple[float, float] = (0.0, 1.0),
    channel_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Histogram of pixel intensities per channel, tidy: ``channel, bin_left, bin_right, count, density``.

    ``bins`` equal-width bins over ``value_range`` (the last bin includes its right edge, as
    ``numpy.histogram``); ``density`` = count / (pixels of the channel * bin width), so it
    integrates to 1 when every pixel lies in the range.
    """
    if int(bins) < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    lo, hi = map(float, value_range)
    if not hi > lo:
        raise ValueError(
            f"value_range must be (low, high) with high > low, got {value_range}"
        )
    x = _channels_last(x)
    c = x.shape[-1]
    if channel_names is None:
        channel_names = (
            ["grey"]
            if c == 1
            else ["R", "G", "B"]
            if c == 3
            else [str(i) for i in range(c)]
        )
    rows = []
    for i, name in enumerate(channel_names):
        values = x[..., i].ravel()
        counts, edges = np.histogram(values, bins=int(bins), range=(lo, hi))
        width = np.diff(edges)
        density = (
            counts / (values.size * width) if values.size else np.zeros_like(width)
        )
        rows.append(
            pd.DataFrame(
                {
                    "channel": name,
                    "bin_left": edges[:-1],
                    "bin_right": edges[1:],
                    "count": counts,
                    "density": density,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def sample_indices(
    y, per_class: int, num_classes: int | None = None
) -> dict[int, list[int]]:
    """The first ``per_class`` indices of every class in ``y`` (fewer where a class has fewer examples).

    Deterministic (dataset order), so a sample grid shows the same images on every rerun.
    """
    y = _labels(y)
    if int(per_class) < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    c = num_classes_of(y, num_classes=num_classes)
    return {k: np.flatnonzero(y == k)[: int(per_class)].tolist() for k in range(c)}


# --------------------------------------------------------------------------------------------
# accuracy per class and confusion matrices


def per_class_accuracy(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """Accuracy among the examples of each true class: ``acc[k] = mean(y_pred[y_true == k] == k)``.

    Classes without examples get NaN. Shape ``(C,)``.
    """
    y_true, y_pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    _same_length(y_true=y_true, y_pred=y_pred)
    c = num_classes_of(y_true, y_pred, num_classes=num_classes)
    totals = np.bincount(y_true, minlength=c).astype(np.float64)
    hits = np.bincount(y_true[y_true == y_pred], minlength=c).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, hits / np.where(totals > 0, totals, 1.0), np.nan)


def per_class_table(
    y_true,
    pred_reference,
    pred_quantized,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per-class accuracy of the reference and the quantized predictions side by side.

    The columns are ``label``, ``class``, ``n`` (test examples of the class), ``accuracy_reference``,
    ``accuracy_quantized``, ``change`` (= quantized - reference, in accuracy units), ``errors_reference``,
    ``errors_quantized`` (misclassified examples). One row per class, in label order.
    """
    y_true = _labels(y_true, "y_true")
    ref, qnt = (
        _labels(pred_reference, "pred_reference"),
        _labels(pred_quantized, "pred_quantized"),
    )
    _same_length(y_true=y_true, pred_reference=ref, pred_quantized=qnt)
    c = num_classes_of(y_true, ref, qnt, num_classes=num_classes)
    n = np.bincount(y_true, minlength=c)
    acc_r = per_class_accuracy(y_true, ref, c)
    acc_q = per_class_accuracy(y_true, qnt, c)
    return pd.DataFrame(
        {
            "label": np.arange(c),
            "class": _names(class_names, c),
            "n": n,
            "accuracy_reference": acc_r,
            "accuracy_quantized": acc_q,
            "change": acc_q - acc_r,
            "errors_reference": np.bincount(y_true[ref != y_true], minlength=c),
            "errors_quantized": np.bincount(y_true[qnt != y_true], minlength=c),
        }
    )


def confusion_matrix(
    y_true, y_pred, num_classes: int | None = None, normalize: str | None = None
) -> np.ndarray:
    """Confusion matrix ``M[i, j]`` = examples of true class ``i`` predicted as ``j``.

    Arguments:
        y_true, y_pred: integer labels, shape ``(N,)``.
        num_classes: ``C`` (default ``max + 1`` over both arrays).
        normalize: ``None`` (counts, int64) or ``"true"`` (each row divided by its class's count:
            rates that sum to 1 per row; a class without examples gives a row of zeros).
    """
    y_true, y_pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    _same_length(y_true=y_true, y_pred=y_pred)
    c = num_classes_of(y_true, y_pred, num_classes=num_classes)
    m = np.bincount(y_true * c + y_pred, minlength=c * c).reshape(c, c)
    if normalize is None:
        return m.astype(np.int64)
    if normalize != "true":
        raise ValueError(f"unknown normalize {normalize!r}; allowed: None, 'true'")
    rows = m.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(m, rows, out=np.zeros((c, c), dtype=np.float64), where=rows > 0)


def confusion_difference(
    y_true,
    pred_reference,
    pred_quantized,
    num_classes: int | None = None,
    normalize: str | None = "true",
) -> np.ndarray:
    """``confusion_matrix(quantized) - confusion_matrix(reference)`` on the same examples.

    With ``normalize="true"`` (default) the entries are changes in rates per true class: the
    diagonal is the per-class accuracy change, off-diagonal entries > 0 are confusions the
    quantized network makes more often. Each row sums to 0 (for classes with examples).
    """
    y_true = _labels(y_true, "y_true")
    ref, qnt = (
        _labels(pred_reference, "pred_reference"),
        _labels(pred_quantized, "pred_quantized"),
    )
    _same_length(y_true=y_true, pred_reference=ref, pred_quantized=qnt)
    c = num_classes_of(y_true, ref, qnt, num_classes=num_classes)
    a = confusion_matrix(y_true, ref, c, normalize)
    b = confusion_matrix(y_true, qnt, c, normalize)
    return b - a


def most_changed(
    y_true,
    proba_reference,
    proba_quantized,
    k: int = 10,
    class_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The ``k`` examples whose probability of the true class dropped most (reference -> quantized).

    ``drop = p_reference[i, y_i] - p_quantized[i, y_i]``; rows sorted by ``drop`` descending, ties
    by index ascending (stable). Only examples with ``drop > 0`` are listed (fewer than ``k`` if
    the quantized network is at least as confident everywhere).

    The columns are ``index`` (position in the arrays), ``label``, ``class``, ``p_true_reference``,
    ``p_true_quantized``, ``drop``, ``pred_reference``, ``pred_quantized`` (arg-max labels, ties to
    the lowest label as ``numpy.argmax``), ``pred_class_reference``, ``pred_class_quantized``,
    ``p_pred_reference``, ``p_pred_quantized`` (probability of each network's own prediction).
    """
    y = _labels(y_true, "y_true")
    n = len(y)
    if int(k) < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    pa = np.asarray(proba_reference)
    if pa.ndim != 2:
        raise ValueError(f"proba_reference must have shape (N, C), got {pa.shape}")
    c = num_classes_of(y, num_classes=pa.shape[1])
    pa = _proba(pa, n, c, "proba_reference")
    pb = _proba(proba_quantized, n, c, "proba_quantized")
    idx = np.arange(n)
    p_a, p_b = pa[idx, y], pb[idx, y]
    drop = p_a - p_b
    order = np.lexsort(
        (idx, -drop)
    )  # primary: drop descending; secondary: index ascending
    order = order[drop[order] > 0][: int(k)]
    names = _names(class_names, c)
    pred_a, pred_b = pa.argmax(axis=1), pb.argmax(axis=1)
    return pd.DataFrame(
        {
            "index": order,
            "label": y[order],
            "class": [names[v] for v in y[order]],
            "p_true_reference": p_a[order],
            "p_true_quantized": p_b[order],
            "drop": drop[order],
            "pred_reference": pred_a[order],
            "pred_quantized": pred_b[order],
            "pred_class_reference": [names[v] for v in pred_a[order]],
            "pred_class_quantized": [names[v] for v in pred_b[order]],
            "p_pred_reference": pa[order, pred_a[order]],
            "p_pred_quantized": pb[order, pred_b[order]],
        }
    )
