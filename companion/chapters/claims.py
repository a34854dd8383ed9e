"""The published thesis's claims (chapter 4) against the companion's thesis-setting runs.

One row per claim, labelled as in the issue that asked for this page: N1-N9 for the nested
layer (section 4.2), L1-L7 for the loss terms (section 4.3) (:data:`CLAIMS`). Each row gives
the thesis's statement, section and value, the companion's measured value and a verdict in
:data:`VERDICTS` by the rule of that claim (:data:`RULES`, printed on the page).

Definitions shared by the rules:

* **distinct integers** of a network: the number of different values of :math:`P_q` over all
  its quantized parameters together (the thesis counts them "aggregated across all
  parameters of the two dense layers"); their **range** is min...max and their **bits**
  :math:`\\lceil \\log_2(\\text{distinct}) \\rceil`, the thesis's count
  (:func:`integer_stats`);
* **trade-off point** of a sweep (the thesis's "optimal" λ or γ): among the values whose
  validation accuracy is within :data:`ACCURACY_MARGIN` of the FP32 network's, the one with
  the fewest distinct integers (ties: the smaller value) (:func:`tradeoff_point`); it is
  chosen on validation data, the accuracy reported is on the test set;
* **zip size** (the thesis's compression method, :func:`zip_sizes`): each weight and bias
  of the quantized layers saved as a ``.npy`` file and the files zipped (deflate), FP32 for
  the baseline and the integers cast to int8 for the quantized network;
* **seed means** (the CIFAR-10 and Imagenette rules): with several seeds, a sweep's
  accuracies, losses and integer counts are averaged over the seeds per value before the
  trade-off point is taken (one seed: the run itself); where a rule compares two settings
  over two or more shared seeds it uses the paired tests of
  :mod:`companion.chapters.stats` (TOST for "alike", the paired t-test for "better",
  Holm-adjusted, α = 0.05), otherwise the 0.5-point margin; each value names its seed count.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from companion.chapters import stats
from companion.chapters.analysis import fmt_sci
from companion.chapters.thesis import (
    CONV_TERM_GRANULARITY,
    LOSS_TERMS,
    THESIS_GRANULARITIES,
)

__all__ = [
    "Claim",
    "CLAIMS",
    "VERDICTS",
    "NOT_RUN_DATA",
    "NOT_RUN_PROFILE",
    "ACCURACY_MARGIN",
    "RATIO_TOLERANCE",
    "RULES",
    "integer_stats",
    "zip_sizes",
    "network_integers",
    "run_summary",
    "thesis_zips",
    "collect",
    "collect_conv",
    "evaluate_claims",
    "tradeoff_point",
    "graded",
]

#: a network is "within FP32 accuracy" when its accuracy is at most this far below (0.5 points)
ACCURACY_MARGIN = 0.005
#: a measured compression ratio "matches" the thesis's within this factor either way
RATIO_TOLERANCE = 1.25
NOT_RUN_DATA = "not run: data missing"
NOT_RUN_PROFILE = "not run: not in this profile"
#: the verdicts a claim can get
VERDICTS: tuple[str, ...] = (
    "reproduced",
    "partly",
    "not reproduced",
    NOT_RUN_DATA,
    NOT_RUN_PROFILE,
)


@dataclass(frozen=True)
class Claim:
    """One published claim: label, thesis section, dataset, statement and the thesis's value."""

    id: str
    section: str
    dataset: str
    statement: str
    thesis_value: str


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "N1",
        "4.2.1",
        "mnist",
        "λ = 1e-10 is the best trade-off for row, column and scalar kernel scales",
        "1e-10 for row, column and scalar",
    ),
    Claim(
        "N2",
        "4.2.1",
        "mnist",
        "row-wise at λ = 1e-10: few distinct integers, accuracy about FP32's",
        "24 integers, −12…11, 5 bits; ≈ FP32",
    ),
    Claim(
        "N3",
        "4.2.1",
        "mnist",
        "validation loss at λ = 1e-10 stays below FP32 and λ = 0 throughout training",
        "below both in every epoch",
    ),
    Claim(
        "N4",
        "4.2.1",
        "mnist",
        "scalar scales degrade more than row/column at λ = 1e-8",
        "scalar: larger accuracy drop and loss rise",
    ),
    Claim(
        "N5",
        "4.2.1",
        "mnist",
        "post-training (start from FP32) gives fronts like from scratch",
        "same best λ (1e-10), comparable results",
    ),
    Claim(
        "N6",
        "4.2.2",
        "cifar10",
        "CIFAR-10 CNN: best λ = 1e-11 for all four granularities",
        "1e-11; row: −22…32, 60 integers, 6 bits",
    ),
    Claim(
        "N7",
        "4.2.2",
        "cifar10",
        "no significant difference between granularities: scalar suffices",
        "granularities alike",
    ),
    Claim(
        "N8",
        "4.2.2",
        "imagenette",
        "Imagenette: post-training improves accuracy; granularities alike",
        "PTQ above from scratch",
    ),
    Claim(
        "N9",
        "4.2.2",
        "mnist",
        "zip of int8 integers vs zip of FP32 weights, post-training (MNIST row 1e-10; "
        "CIFAR-10 row 1e-11; Imagenette channel 1e-11)",
        "0.36 → 0.05, 1.02 → 0.16, 39.57 → 6.39 MB; up to 8×",
    ),
    Claim(
        "L1",
        "4.3.1",
        "mnist",
        "row-wise + Difference is the best term; its vertex at γ = 1e-7",
        "Difference, γ = 1e-7: −6…2, 4 bits",
    ),
    Claim(
        "L2",
        "4.3.1",
        "mnist",
        "Inverse is the most aggressive term, scalar + "
        "Inverse the worst, still < 100 integers at γ = 1e-12",
        "Inverse most aggressive; scalar worst; < 100",
    ),
    Claim(
        "L3",
        "4.3.1",
        "mnist",
        "row-wise Difference's validation loss rises only from γ = 1e-6",
        "first rise at 1e-6",
    ),
    Claim(
        "L4",
        "4.3.1",
        "mnist",
        "loss terms: post-training ≈ from scratch",
        "approximately similar",
    ),
    Claim(
        "L5",
        "4.3.2",
        "cifar10",
        "CIFAR-10: channel-wise best, γ = 1e-10 gives "
        "−28…34; more bias outliers than nested",
        "channel, −28…34",
    ),
    Claim(
        "L6",
        "4.3.2",
        "imagenette",
        "Imagenette: no Pareto front (lr decay stops quantization)",
        "no front",
    ),
    Claim(
        "L7",
        "4.3.2",
        "mnist",
        "zip compression of the loss terms (MNIST row; CIFAR-10 and Imagenette "
        "channel scales)",
        "0.36 → 0.03 / 0.04 / 0.04; 1.02 → 0.17 / 0.15 / 0.16; 39.57 → 5.90 / 6.46 / "
        "5.37 MB; > 10× sometimes",
    ),
)

#: the rule of each claim's verdict, in words (printed on the page)
RULES: dict[str, str] = {
    "N1": "reproduced when the trade-off point is 1e-10 for all three granularities, "
    "partly for one or two, not reproduced for none",
    "N2": "reproduced when the bits, ceil(log2 distinct), equal 5 and the test accuracy is "
    "within 0.5 points of FP32, partly when one of the two holds",
    "N3": "share of validated epochs (about every 1,875 steps, as often as the thesis "
    "validated) with the λ = 1e-10 validation loss below both FP32's and "
    "λ = 0's, per granularity: reproduced when ≥ 95 % for all, partly when ≥ 50 % on "
    "average, else not reproduced",
    "N4": "reproduced when scalar has the largest test-accuracy drop and the highest "
    "final validation loss of the three granularities at λ = 1e-8, partly when one "
    "of the two holds",
    "N5": "row-wise: reproduced when post-training has the same trade-off point as from "
    "scratch and its test accuracy there is within 0.5 points, partly when one holds",
    "N6": "CIFAR-10, nested from scratch, seed means; six parts: the trade-off point is "
    "1e-11 for each of channel, row, column and scalar; row-wise at 1e-11 the bits, "
    "ceil(log2 distinct), equal 6; row-wise at 1e-10 the range min…max needs 5 bits, "
    "ceil(log2(max − min + 1)), as the thesis's −8…11: all → reproduced, some → partly, "
    "none → not reproduced",
    "N7": "CIFAR-10, nested from scratch, at each granularity's trade-off point (seed "
    "means); two parts: the test accuracies alike (one seed: max − min ≤ 0.5 points; two "
    "or more shared seeds: every granularity equivalent to scalar within ±0.5 points by "
    "a paired TOST, Holm-adjusted) and the bits within 1 of each other: both → "
    "reproduced, one → partly, none → not reproduced",
    "N8": "Imagenette, nested; two parts: post-training's test accuracy minus from "
    "scratch's, averaged over the λ both ran, is above +0.5 points for every "
    "granularity (two or more seeds: above 0 by a paired t-test over the seeds, "
    "Holm-adjusted over the granularities); the granularities alike from scratch by the "
    "rule of N7: both → reproduced, one → partly, none → not reproduced",
    "N9": "each dataset's row: reproduced when the measured zip ratio is within a factor "
    "1.25 of the thesis's, partly within a factor 2, else not reproduced; several rows "
    "(CIFAR-10, Imagenette when run): all reproduced → reproduced, some reproduced or "
    "partly → partly",
    "L1": "three parts (Difference has the fewest distinct integers at its trade-off "
    "point among the terms; that point is γ = 1e-7; 4 bits there): all hold → "
    "reproduced, some → partly, none → not reproduced",
    "L2": "three parts (Inverse has the fewest distinct integers of the row-wise terms "
    "at most rates; scalar + Inverse has lower test accuracy than row + Inverse at most "
    "shared rates; scalar + Inverse has < 100 integers at γ = 1e-12): all → reproduced, "
    "some → partly, none → not reproduced",
    "L3": "the first γ whose final validation loss exceeds FP32's by more than 5 %: "
    "reproduced when it is 1e-6, partly when it is one decade away, else not reproduced",
    "L4": "the rule of N5 for the row-wise Difference term",
    "L5": "CIFAR-10, Difference term with channel scales at γ = 1e-10 from scratch (seed "
    "means); parts: the kernels' range min…max needs 6 bits, ceil(log2(max − min + 1)), "
    "as the thesis's −28…34; its largest |bias integer| exceeds the row-wise nested "
    "layer's at λ = 1e-11 (more bias outliers); where the terms also ran at other "
    "granularities, channel has the fewest distinct integers at the trade-off point for "
    "every such term: all → reproduced, some → partly, none → not reproduced",
    "L6": "Imagenette, each loss term with channel scales from scratch (seed means) forms "
    "no front when its validation accuracy stays within 0.5 points of FP32's at every γ "
    "run: all terms → reproduced, some → partly, none → not reproduced (the cause the "
    "thesis names, the learning-rate decay, is not tested)",
    "L7": "the ratio rule of N9 for each loss-term row (MNIST row; CIFAR-10 and "
    "Imagenette channel, when run): all reproduced → reproduced, some → partly, none → "
    "not reproduced",
}


def integer_stats(values: Iterable[np.ndarray]) -> dict[str, int]:
    """Distinct integers over several integer tensors together, their range and bits.

    :math:`\\text{bits} = \\lceil \\log_2 \\text{distinct} \\rceil` (at least 1), the thesis's
    count.

    Arguments:
        values: the integer tensors :math:`P_q` of a network's quantized parameters.

    Returns:
        ``{"distinct", "lo", "hi", "bits"}``.
    """
    arrays = [np.asarray(v).ravel() for v in values]
    if not arrays or not sum(a.size for a in arrays):
        raise ValueError(
            "integer_stats needs at least one non-empty integer tensor; pass the P_q of "
            "a quantized network's parameters"
        )
    pooled = np.unique(np.concatenate(arrays))
    return {
        "distinct": int(pooled.size),
        "lo": int(pooled[0]),
        "hi": int(pooled[-1]),
        "bits": max(1, math.ceil(math.log2(pooled.size))),
    }


def _zip_bytes(arrays: Mapping[str, np.ndarray]) -> int:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.save(member, array)
            zf.writestr(f"{name}.npy", member.getvalue())
    return len(buf.getvalue())


def zip_sizes(
    float_arrays: Mapping[str, np.ndarray], integer_arrays: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """The thesis's compression method: zipped ``.npy`` files, FP32 vs int8 integers.

    Arguments:
        float_arrays: name -> the FP32 weights and biases of the baseline.
        integer_arrays: name -> the integers :math:`P_q` of the quantized network, cast to
            int8 as the thesis does; a tensor whose values do not fit -128...127 (the cast
            would wrap them) is stored in the smallest integer type that holds it
            (:func:`lqs.export.smallest_int_dtype`) and named in ``wider``.

    Returns:
        ``{"fp32_bytes", "int8_bytes", "ratio", "wider"}`` (ratio = fp32 / int8; ``wider``:
        ``{name: dtype}`` of the tensors that needed more than int8).
    """
    from lqs.export import smallest_int_dtype

    cast, wider = {}, {}
    for name, values in integer_arrays.items():
        v = np.asarray(values)
        dtype = np.dtype(np.int8)
        if v.size and (v.min() < -128 or v.max() > 127):
            dtype = smallest_int_dtype(v)
            wider[name] = dtype.name
        cast[name] = v.astype(dtype)
    fp32 = _zip_bytes({k: np.asarray(v, np.float32) for k, v in float_arrays.items()})
    int8 = _zip_bytes(cast)
    return {
        "fp32_bytes": fp32,
        "int8_bytes": int8,
        "ratio": fp32 / int8,
        "wider": wider,
    }


def tradeoff_point(
    sweep: pd.DataFrame, fp32_val_accuracy: float, *, value: str = "threshold"
) -> pd.Series | None:
    """The trade-off point of one sweep (module docstring), or ``None`` if no value qualifies.

    Arguments:
        sweep: one row per swept value with ``value``, ``val_accuracy`` and ``distinct``.
        fp32_val_accuracy: the FP32 network's validation accuracy.
        value: the swept column (``"threshold"`` or ``"rate"``).
    """
    missing = {value, "val_accuracy", "distinct"} - set(sweep.columns)
    if missing:
        raise ValueError(
            f"sweep lacks column(s) {sorted(missing)}; build it with claims' run summary"
        )
    ok = sweep[sweep["val_accuracy"] >= fp32_val_accuracy - ACCURACY_MARGIN - 1e-12]
    if ok.empty:
        return None
    return ok.sort_values(["distinct", value], kind="stable").iloc[0]


def graded(n_hold: int, n_parts: int) -> str:
    """``reproduced`` when every part holds, ``partly`` for some, ``not reproduced`` for none."""
    if n_parts < 1 or not 0 <= n_hold <= n_parts:
        raise ValueError(
            f"n_hold={n_hold!r} of n_parts={n_parts!r}: need 0 <= n_hold <= n_parts, "
            "n_parts >= 1"
        )
    if n_hold == n_parts:
        return "reproduced"
    return "partly" if n_hold else "not reproduced"


# --------------------------------------------------------------------------------------------
# from records to the per-run summary the rules read


def network_integers(model: Any) -> dict[str, np.ndarray]:
    """``"<layer>/<parameter>" -> P_q`` of every quantized parameter of ``model``."""
    from lqs.memory import iter_layers

    out = {}
    for entry in iter_layers(model):
        for t in getattr(entry.layer, "integer_parameters", lambda: [])():
            out[f"{entry.layer.name}/{t.name}"] = np.asarray(t.values)
    return out


def network_floats(model: Any) -> dict[str, np.ndarray]:
    """``"<layer>/<kernel|bias>" -> values`` of every layer with a kernel (FP32 baseline)."""
    out = {}
    for layer in model.layers:
        for name in ("kernel", "bias"):
            var = getattr(layer, name, None)
            if var is not None:
                out[f"{layer.name}/{name}"] = np.asarray(var)
    return out


def run_kind(row: Mapping[str, Any]) -> str:
    """``fp32``, ``nested``, ``sgd`` (nested trained with SGD) or the loss term's thesis name."""
    if row["flavour"] == "fp32":
        return "fp32"
    if row["flavour"] == "loss_terms":
        for name, spec in LOSS_TERMS.items():
            if (row.get(f"rate_{spec['term']}") or 0) > 0:
                return name
        return "no_term"
    return "sgd" if row.get("optimizer") == "sgd" else "nested"


_SUMMARY_COLUMNS = [
    "hash",
    "dataset",
    "kind",
    "mode",
    "granularity",
    "threshold",
    "rate",
    "val_accuracy",
    "test_accuracy",
    "val_loss",
    "test_loss",
    "distinct",
    "lo",
    "hi",
    "bits",
    "seed",
    "kernel_lo",
    "kernel_hi",
    "bias_max",
]


def _kernel_bias_stats(integers: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The kernels' integer range and the largest |bias integer| (NaN where there is none)."""
    kernels = [v for k, v in integers.items() if k.endswith("/kernel")]
    biases = [
        np.abs(np.asarray(v)).ravel()
        for k, v in integers.items()
        if k.endswith("/bias")
    ]
    k = integer_stats(kernels) if kernels else {"lo": np.nan, "hi": np.nan}
    biases = [b for b in biases if b.size]
    return {
        "kernel_lo": k["lo"],
        "kernel_hi": k["hi"],
        "bias_max": float(max(b.max() for b in biases)) if biases else np.nan,
    }


def run_summary(
    runs: pd.DataFrame, integers: Mapping[str, Mapping[str, np.ndarray]]
) -> pd.DataFrame:
    """One row per run: kind, granularity, λ or γ, accuracies, losses, integer stats, seed.

    Integer stats: distinct, range and bits over all quantized parameters, the kernels'
    range (``kernel_lo``, ``kernel_hi``) and the largest absolute bias integer (``bias_max``).

    Arguments:
        runs: the sweep's records (config keys, metrics, ``config_hash``).
        integers: ``config_hash -> {parameter: P_q}`` (:func:`network_integers`) of every
            quantized run; FP32 runs need none.
    """
    rows = []
    for rec in runs.to_dict("records"):
        kind = run_kind(rec)
        ints = integers[rec["config_hash"]] if kind != "fp32" else {}
        counts = (
            {**integer_stats(ints.values()), **_kernel_bias_stats(ints)}
            if kind != "fp32"
            else dict.fromkeys(("distinct", "lo", "hi", "bits"), np.nan)
        )
        term = LOSS_TERMS[kind]["term"] if kind in LOSS_TERMS else None
        rows.append(
            {
                "hash": rec["config_hash"],
                "dataset": rec["dataset"],
                "kind": kind,
                "mode": rec.get("mode") or "from_scratch",
                "granularity": rec.get("kernel_granularity"),
                "threshold": rec.get("threshold"),
                "rate": rec.get(f"rate_{term}") if term else np.nan,
                **{k: rec[k] for k in _SUMMARY_COLUMNS[7:11]},
                **counts,
                "seed": rec.get("seed"),
            }
        )
    return pd.DataFrame(rows, columns=_SUMMARY_COLUMNS)


# --------------------------------------------------------------------------------------------
# the rules, one function per claim: (companion value, verdict)

#: the thesis's zip sizes in MB: (FP32 baseline, quantized), per dataset and claim row (its
#: tables "Compression rate"; the rules compare ratios: the companion's ResNet is smaller than
#: the thesis's, so its sizes differ)
THESIS_ZIP_MB: dict[str, dict[str, tuple[float, float]]] = {
    "mnist": {
        "nested": (0.36, 0.05),
        "difference": (0.36, 0.03),
        "max_bin": (0.36, 0.04),
        "inverse": (0.36, 0.04),
    },
    "cifar10": {
        "nested": (1.02, 0.16),
        "difference": (1.02, 0.17),
        "max_bin": (1.02, 0.15),
        "inverse": (1.02, 0.16),
    },
    "imagenette": {
        "nested": (39.57, 6.39),
        "difference": (39.57, 5.90),
        "max_bin": (39.57, 6.46),
        "inverse": (39.57, 5.37),
    },
}
#: the (granularity, λ or γ) of the thesis's compression rows, per dataset
THESIS_ZIP_POINT: dict[str, dict[str, tuple[str, float]]] = {
    "mnist": {
        "nested": ("row", 1e-10),
        "difference": ("row", 1e-7),
        "max_bin": ("row", 1e-8),
        "inverse": ("row", 1e-9),
    },
    "cifar10": {
        "nested": ("row", 1e-11),
        "difference": ("channel", 1e-10),
        "max_bin": ("channel", 1e-10),
        "inverse": ("channel", 1e-11),
    },
    "imagenette": {
        "nested": ("channel", 1e-11),
        "difference": ("channel", 1e-9),
        "max_bin": ("channel", 1e-9),
        "inverse": ("channel", 1e-8),
    },
}
_DATASET_LABELS = {"mnist": "MNIST", "cifar10": "CIFAR-10", "imagenette": "Imagenette"}
_GRANULARITIES = THESIS_GRANULARITIES["mlp"]
_TERMS = tuple(LOSS_TERMS)


def _pct(acc: float) -> str:
    return f"{100 * acc:.1f} %"


def _sweep(s: pd.DataFrame, kind: str, granularity: str, mode: str = "from_scratch"):
    col = "threshold" if kind in ("nested", "sgd") else "rate"
    rows = s[
        (s["kind"] == kind) & (s["granularity"] == granularity) & (s["mode"] == mode)
    ]
    return rows.sort_values(col), col


def _matches(values: Any, value: float) -> Any:
    """Where ``values`` equal the swept ``value`` (λ or γ) up to float round-off (rel. 1e-9)."""
    return np.isclose(np.asarray(values, dtype=float), value, rtol=1e-9, atol=0)


def _at(sweep: pd.DataFrame, col: str, value: float) -> pd.Series | None:
    hit = sweep[_matches(sweep[col], value)]
    return None if hit.empty else hit.iloc[0]


def _fp32(s: pd.DataFrame) -> pd.Series:
    fp32 = s[s["kind"] == "fp32"]
    if fp32.empty:
        raise ValueError("the run summary has no FP32 run; the rules compare with it")
    return fp32.iloc[0]


def _point(s, kind, gran, mode="from_scratch"):
    sweep, col = _sweep(s, kind, gran, mode)
    if sweep.empty:
        return None, col
    return tradeoff_point(sweep, _fp32(s)["val_accuracy"], value=col), col


#: the summary columns averaged over seeds (:func:`_mean_sweep`): the metrics and counts
_MEAN_COLUMNS = tuple(c for c in _SUMMARY_COLUMNS[7:] if c not in ("bits", "seed"))


def _n_seeds(rows: pd.DataFrame) -> int:
    """Distinct seeds of ``rows`` (a summary without a seed column: one)."""
    return max(1, int(rows["seed"].nunique())) if "seed" in rows else 1


def _seed_words(rows: pd.DataFrame) -> str:
    n = _n_seeds(rows)
    return "1 seed" if n == 1 else f"means of {n} seeds"


def _bits_of(count: float) -> float:
    """:math:`\\lceil \\log_2 \\text{count} \\rceil` (at least 1; NaN stays NaN)."""
    if not count >= 1:
        return np.nan
    return float(max(1, math.ceil(math.log2(round(count)))))


def _mean_sweep(s: pd.DataFrame, kind: str, gran: str, mode: str = "from_scratch"):
    """:func:`_sweep` averaged over seeds: one row per value, bits of the mean count."""
    sweep, col = _sweep(s, kind, gran, mode)
    if sweep.empty:
        return sweep, col
    groups = sweep.groupby(col, sort=True)
    means = groups[[c for c in _MEAN_COLUMNS if c in sweep]].mean()
    means["n_seeds"] = groups.size()
    means = means.reset_index()
    means["bits"] = means["distinct"].map(_bits_of)
    return means, col


def _fp32_means(s: pd.DataFrame) -> pd.Series:
    """The FP32 runs' seed means (validation and test accuracy and loss)."""
    _fp32(s)  # raises without one
    return s.loc[s["kind"] == "fp32", list(_MEAN_COLUMNS[:4])].mean()


def _mean_point(s, kind, gran, mode="from_scratch"):
    """The trade-off point of the seed-mean sweep (:func:`_mean_sweep`), or ``None``."""
    means, col = _mean_sweep(s, kind, gran, mode)
    if means.empty:
        return None, col
    return tradeoff_point(means, _fp32_means(s)["val_accuracy"], value=col), col


def _range_bits(lo: float, hi: float) -> float:
    """Bits of a range of integers: :math:`\\lceil \\log_2(hi - lo + 1) \\rceil`."""
    return _bits_of(round(hi) - round(lo) + 1)


def _same(a: float, b: float) -> bool:
    return bool(_matches(a, b))


def _points_text(points: Mapping[str, pd.Series | None], col: str) -> str:
    """``row 1e-10, scalar none within 0.5 pt`` (granularity and trade-off value)."""
    return ", ".join(
        f"{g} {fmt_sci(p[col]) if p is not None else 'none within 0.5 pt'}"
        for g, p in points.items()
    )


def n1(s: pd.DataFrame) -> tuple[str, str]:
    """N1: the trade-off point per granularity."""
    ran = [g for g in _GRANULARITIES if not _sweep(s, "nested", g)[0].empty]
    if not ran:
        return "no nested runs", NOT_RUN_PROFILE
    points = {g: _point(s, "nested", g)[0] for g in ran}
    text = _points_text(points, "threshold")
    missing = [g for g in _GRANULARITIES if g not in ran]
    if missing:
        text += f" ({', '.join(missing)} not run)"
    hold = sum(p is not None and p["threshold"] == 1e-10 for p in points.values())
    return text, graded(hold, len(_GRANULARITIES))


def n2(s: pd.DataFrame) -> tuple[str, str]:
    """N2: row-wise at λ = 1e-10, distinct integers, range, bits, accuracy vs FP32."""
    sweep, col = _sweep(s, "nested", "row")
    r, fp32 = _at(sweep, col, 1e-10), _fp32(s)
    if r is None:
        return "no row-wise run at 1e-10", NOT_RUN_PROFILE
    text = (
        f"{r['distinct']:.0f} integers, {r['lo']:.0f}…{r['hi']:.0f}, {r['bits']:.0f} bits; "
        f"test {_pct(r['test_accuracy'])} vs FP32 {_pct(fp32['test_accuracy'])}"
    )
    close = r["test_accuracy"] >= fp32["test_accuracy"] - ACCURACY_MARGIN
    return text, graded(int(r["bits"] == 5) + int(close), 2)


def n3(s: pd.DataFrame, histories: Mapping[str, pd.DataFrame]) -> tuple[str, str]:
    """N3: share of validated epochs with λ = 1e-10's validation loss below FP32's and λ = 0's.

    Epochs without a validation in any of the three runs (``validation_every`` > 1) are left
    out.
    """
    fp32 = histories[_fp32(s)["hash"]]
    shares = {}
    for g in _GRANULARITIES:
        sweep, col = _sweep(s, "nested", g)
        at, zero = _at(sweep, col, 1e-10), _at(sweep, col, 0.0)
        if at is None or zero is None:
            continue
        losses = [
            histories[h]["val_loss"].to_numpy()[1:] for h in (at["hash"], zero["hash"])
        ]
        ref = fp32["val_loss"].to_numpy()[1:]
        n = min(len(ref), *(len(x) for x in losses))
        a, b, r = losses[0][:n], losses[1][:n], ref[:n]
        seen = np.isfinite(a) & np.isfinite(b) & np.isfinite(r)
        if seen.any():
            shares[g] = float(((a < r) & (a < b))[seen].mean())
    if not shares:
        return "no runs at λ = 0 and 1e-10", NOT_RUN_PROFILE
    text = ", ".join(
        f"{g} {100 * v:.0f} % of validated epochs" for g, v in shares.items()
    )
    if min(shares.values()) >= 0.95:
        return text, "reproduced"
    return text, "partly" if np.mean(list(shares.values())) >= 0.5 else "not reproduced"


def n4(s: pd.DataFrame) -> tuple[str, str]:
    """N4: at λ = 1e-8, scalar's accuracy drop and final validation loss vs row/column."""
    fp32, rows = _fp32(s), {}
    for g in _GRANULARITIES:
        sweep, col = _sweep(s, "nested", g)
        rows[g] = _at(sweep, col, 1e-8)
    if any(r is None for r in rows.values()):
        return "not every granularity ran at 1e-8", NOT_RUN_PROFILE
    drop = {g: fp32["test_accuracy"] - r["test_accuracy"] for g, r in rows.items()}
    loss = {g: r["val_loss"] for g, r in rows.items()}
    text = "; ".join(
        f"{g}: drop {100 * drop[g]:+.1f} pt, val loss {loss[g]:.3f}" for g in rows
    )
    hold = int(max(drop, key=drop.get) == "scalar") + int(
        max(loss, key=loss.get) == "scalar"
    )
    return text, graded(hold, 2)


def _post_vs_scratch(s: pd.DataFrame, kind: str) -> tuple[str, str]:
    """Row-wise ``kind`` post-training vs from scratch: trade-off point and accuracy there.

    Two parts: the same trade-off point, and post-training's test accuracy at its point
    within :data:`ACCURACY_MARGIN` of the from-scratch run at the same value.
    """
    if _sweep(s, kind, "row", "post_training")[0].empty:
        return f"no row-wise post-training {kind} runs", NOT_RUN_PROFILE
    scratch, col = _point(s, kind, "row")
    post, _ = _point(s, kind, "row", "post_training")
    if post is None or scratch is None:
        side = "post-training" if post is None else "from scratch"
        return f"no {side} value within 0.5 points of FP32", "not reproduced"
    twin = _at(_sweep(s, kind, "row")[0], col, post[col])
    close = (
        twin is not None
        and abs(post["test_accuracy"] - twin["test_accuracy"]) <= ACCURACY_MARGIN
    )
    text = (
        f"{kind}, row: trade-off point post-training {fmt_sci(post[col])}, from "
        f"scratch {fmt_sci(scratch[col])}; test {_pct(post['test_accuracy'])} vs "
        f"{_pct(twin['test_accuracy']) if twin is not None else 'n/a'}"
    )
    return text, graded(int(scratch[col] == post[col]) + int(close), 2)


def n5(s: pd.DataFrame) -> tuple[str, str]:
    """N5: the nested layer post-training vs from scratch (:func:`_post_vs_scratch`)."""
    return _post_vs_scratch(s, "nested")


def l4(s: pd.DataFrame) -> tuple[str, str]:
    """L4: the Difference term post-training vs from scratch (the rule of N5)."""
    return _post_vs_scratch(s, "difference")


def ratio_verdict(measured: float, thesis: float) -> str:
    """N9's rule: within :data:`RATIO_TOLERANCE` either way, partly within a factor 2."""
    factor = max(measured / thesis, thesis / measured)
    if factor <= RATIO_TOLERANCE:
        return "reproduced"
    return "partly" if factor <= 2 else "not reproduced"


def _zip_text(z: Mapping[str, Any]) -> str:
    wider = z.get("wider") or {}
    note = "; beyond int8: " + ", ".join(f"{k} {v}" for k, v in wider.items())
    return (
        f"{z['fp32_bytes'] / 1e6:.2f} → {z['int8_bytes'] / 1e6:.3f} MB "
        f"({z['ratio']:.1f}×{note if wider else ''})"
    )


def _thesis_ratio(dataset: str, key: str) -> float:
    fp32_mb, q_mb = THESIS_ZIP_MB[dataset][key]
    return fp32_mb / q_mb


def _zip_rows(
    zips: Mapping[str, Mapping[str, Mapping[str, Any]]], keys: Sequence[str]
) -> list[tuple[str, str, Mapping[str, Any]]]:
    """``(dataset, key, zip)`` of every row of ``keys`` that ran, in dataset order."""
    return [
        (d, k, zips[d][k]) for d in THESIS_ZIP_MB for k in keys if k in zips.get(d, {})
    ]


def _rows_verdict(verdicts: Sequence[str]) -> str:
    """Several rows' :func:`ratio_verdict`: all reproduced -> reproduced, some reproduced or
    partly -> partly, else not reproduced (one row: its own verdict)."""
    if all(v == "reproduced" for v in verdicts):
        return "reproduced"
    close = any(v in ("reproduced", "partly") for v in verdicts)
    return "partly" if close else "not reproduced"


def n9(zips: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> tuple[str, str]:
    """N9: the zip ratio of each dataset's nested post-training row (:data:`THESIS_ZIP_POINT`)."""
    rows = _zip_rows(zips, ["nested"])
    if not rows:
        return "no nested post-training run at the thesis's points", NOT_RUN_PROFILE
    text = "; ".join(f"{_DATASET_LABELS[d]}: {_zip_text(z)}" for d, _, z in rows)
    verdicts = [ratio_verdict(z["ratio"], _thesis_ratio(d, k)) for d, k, z in rows]
    return text, _rows_verdict(verdicts)


def l1(s: pd.DataFrame) -> tuple[str, str]:
    """L1: the term with the fewest distinct integers at its trade-off point (row)."""
    points = {t: _point(s, t, "row")[0] for t in _TERMS}
    points = {t: p for t, p in points.items() if p is not None}
    if not points:
        return "no row-wise loss-term run within the accuracy margin", "not reproduced"
    best = min(points, key=lambda t: (points[t]["distinct"], _TERMS.index(t)))
    p = points[best]
    text = (
        f"{best}, γ = {fmt_sci(p['rate'])}: {p['lo']:.0f}…{p['hi']:.0f}, "
        f"{p['distinct']:.0f} integers, {p['bits']:.0f} bits"
    )
    parts = [best == "difference", best == "difference" and p["rate"] == 1e-7]
    parts.append(best == "difference" and p["bits"] == 4)
    return text, graded(sum(parts), len(parts))


def l2(s: pd.DataFrame) -> tuple[str, str]:
    """L2: Inverse most aggressive; scalar + Inverse worst; < 100 integers at 1e-12."""
    rates = sorted(
        set(s.loc[s["kind"].isin(_TERMS) & (s["granularity"] == "row"), "rate"])
    )
    fewest = []
    for r in rates:
        at = {t: _at(*_sweep(s, t, "row"), r) for t in _TERMS}
        at = {t: x for t, x in at.items() if x is not None}
        fewest.append(min(at, key=lambda t: at[t]["distinct"]) == "inverse")
    scalar, col = _sweep(s, "inverse", "scalar")
    row, _ = _sweep(s, "inverse", "row")
    shared = [r for r in scalar[col] if _at(row, col, r) is not None]
    worse = [
        _at(scalar, col, r)["test_accuracy"] < _at(row, col, r)["test_accuracy"]
        for r in shared
    ]
    tiny = _at(scalar, col, 1e-12)
    parts = [
        bool(fewest) and sum(fewest) > len(fewest) / 2,
        bool(worse) and sum(worse) > len(worse) / 2,
        tiny is not None and tiny["distinct"] < 100,
    ]
    at_12 = "n/a" if tiny is None else f"{tiny['distinct']:.0f} integers"
    text = (
        f"Inverse fewest integers at {sum(fewest)}/{len(fewest)} rates; scalar + Inverse "
        f"below row + Inverse at {sum(worse)}/{len(worse)}; scalar + Inverse at 1e-12: "
        f"{at_12}"
    )
    return text, graded(sum(parts), len(parts))


def l3(s: pd.DataFrame) -> tuple[str, str]:
    """L3: the first γ where row-wise Difference's validation loss exceeds FP32's by 5 %."""
    sweep, col = _sweep(s, "difference", "row")
    if sweep.empty:
        return "no row-wise Difference runs", NOT_RUN_PROFILE
    limit = 1.05 * _fp32(s)["val_loss"]
    risen = sweep[sweep["val_loss"] > limit]
    if risen.empty:
        top = fmt_sci(sweep[col].max())
        return f"no rise up to γ = {top}", "not reproduced"
    first = float(risen[col].min())
    decades = abs(math.log10(first) - math.log10(1e-6))
    verdict = (
        "reproduced"
        if decades < 0.5
        else "partly"
        if decades < 1.5
        else "not reproduced"
    )
    return f"first rise at γ = {fmt_sci(first)}", verdict


def l7(zips: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> tuple[str, str]:
    """L7: the zip ratio of each term at the thesis's points, every dataset (N9's ratio rule)."""
    rows = _zip_rows(zips, _TERMS)
    if not rows:
        return "no loss-term runs at the thesis's points", NOT_RUN_PROFILE
    hold = sum(
        ratio_verdict(z["ratio"], _thesis_ratio(d, t)) == "reproduced"
        for d, t, z in rows
    )
    text = "; ".join(f"{_DATASET_LABELS[d]} {t} {_zip_text(z)}" for d, t, z in rows)
    return text, graded(hold, len(rows))


def zip_point_run(
    summary: pd.DataFrame, key: str, dataset: str = "mnist"
) -> pd.Series | None:
    """The run of :data:`THESIS_ZIP_POINT` ``[dataset][key]`` (nested: post-training, as the
    thesis's "PTQ + Compression" column; loss terms: from scratch, the only mode of the cpu
    profile)."""
    gran, value = THESIS_ZIP_POINT[dataset][key]
    mode = "post_training" if key == "nested" else "from_scratch"
    sweep, col = _sweep(summary, key, gran, mode)
    return _at(sweep, col, value) if not sweep.empty else None


def thesis_zips(
    summary: pd.DataFrame, load_model: Callable[[str], Any], dataset: str = "mnist"
) -> dict[str, dict[str, Any]]:
    """:func:`zip_sizes` of every :data:`THESIS_ZIP_POINT` of ``dataset`` that ran, against
    the FP32 run's same layers (the quantized ones: the CNN's dense layers stay FP32 in
    both, as the thesis's conv baselines hold the convolutions only).

    Arguments:
        summary: :func:`run_summary` of one dataset.
        load_model: ``hash -> trained Keras model``
            (:func:`companion.engine.experiment.load_model`).
        dataset: the summary's dataset (``mnist``, ``cifar10`` or ``imagenette``).

    Returns:
        key -> ``{"fp32_bytes", "int8_bytes", "ratio", "wider", "hash"}``.
    """
    floats = network_floats(load_model(_fp32(summary)["hash"]))
    out = {}
    for key in THESIS_ZIP_POINT[dataset]:
        run = zip_point_run(summary, key, dataset)
        if run is not None:
            ints = network_integers(load_model(run["hash"]))
            same = {k: v for k, v in floats.items() if k in ints}
            out[key] = {**zip_sizes(same, ints), "hash": run["hash"]}
    return out


# --------------------------------------------------------------------------------------------
# the rules of the CIFAR-10 CNN and the Imagenette ResNet (seed means, module docstring)

_CONV_GRANULARITIES = THESIS_GRANULARITIES["cnn"]


def n6(s: pd.DataFrame) -> tuple[str, str]:
    """N6: CIFAR-10's trade-off points (1e-11 for all four) and the row-wise integers."""
    ran = [g for g in _CONV_GRANULARITIES if not _sweep(s, "nested", g)[0].empty]
    if not ran:
        return "no nested runs", NOT_RUN_PROFILE
    points = {g: _mean_point(s, "nested", g)[0] for g in ran}
    row, col = _mean_sweep(s, "nested", "row")
    at11 = _at(row, col, 1e-11) if not row.empty else None
    at10 = _at(row, col, 1e-10) if not row.empty else None
    parts = [
        points.get(g) is not None and _same(points[g][col], 1e-11)
        for g in _CONV_GRANULARITIES
    ]
    parts.append(at11 is not None and at11["bits"] == 6)
    parts.append(at10 is not None and _range_bits(at10["lo"], at10["hi"]) == 5)
    text = f"trade-off points {_points_text(points, col)}"
    if at11 is not None:
        text += (
            f"; row 1e-11: {at11['distinct']:.0f} integers, "
            f"{at11['lo']:.0f}…{at11['hi']:.0f}, {at11['bits']:.0f} bits"
        )
    if at10 is not None:
        text += f"; row 1e-10: {at10['lo']:.0f}…{at10['hi']:.0f}"
    return f"{text} ({_seed_words(s)})", graded(sum(parts), len(parts))


def _equivalent_to_scalar(
    s: pd.DataFrame, points: Mapping[str, pd.Series], mode: str
) -> tuple[bool, str]:
    """Paired TOST (±:data:`ACCURACY_MARGIN`, Holm) of each granularity's per-seed test
    accuracy at its trade-off point against scalar's at scalar's."""
    rows = []
    for g, p in points.items():
        sweep, col = _sweep(s, "nested", g, mode)
        at = sweep[_matches(sweep[col], p[col])]
        rows += [
            {"granularity": g, "seed": r["seed"], "test_accuracy": r["test_accuracy"]}
            for r in at.to_dict("records")
        ]
    df = pd.DataFrame(rows)
    summary = pd.concat(
        [
            stats.compare_paired(
                df, metric="test_accuracy", method_col="granularity", a=g, b="scalar"
            )
            for g in points
            if g != "scalar"
        ],
        ignore_index=True,
    )
    held = stats.equivalence_verdicts(summary, margin=ACCURACY_MARGIN)["verdict"]
    n = int((held == "holds").sum())
    return n == len(held), f"{n}/{len(held)} equivalent to scalar (paired TOST)"


def _alike(
    s: pd.DataFrame, grans: Sequence[str], mode: str = "from_scratch"
) -> tuple[str, list[bool]] | None:
    """N7's two parts (accuracy and bits alike at the trade-off points), with their text;
    ``None`` when fewer than two granularities or no scalar runs ran."""
    ran = [g for g in grans if not _sweep(s, "nested", g, mode)[0].empty]
    if len(ran) < 2 or "scalar" not in ran:
        return None
    points = {g: _mean_point(s, "nested", g, mode)[0] for g in ran}
    lost = [g for g, p in points.items() if p is None]
    if lost:
        return f"no trade-off point for {', '.join(lost)}", [False, False]
    acc = {g: p["test_accuracy"] for g, p in points.items()}
    bits = [p["bits"] for p in points.values()]
    spread = max(acc.values()) - min(acc.values())
    if _n_seeds(s) >= 2:
        same_acc, how = _equivalent_to_scalar(s, points, mode)
    else:
        same_acc = spread <= ACCURACY_MARGIN + 1e-12
        how = f"spread {100 * spread:.1f} pt"
    text = ", ".join(
        f"{g} {fmt_sci(p['threshold'])}: {_pct(acc[g])}, {p['bits']:.0f} bits"
        for g, p in points.items()
    )
    text = f"at the trade-off points {text}; accuracy {how}"
    return text, [bool(same_acc), max(bits) - min(bits) <= 1]


def n7(s: pd.DataFrame) -> tuple[str, str]:
    """N7: CIFAR-10's granularities alike at their trade-off points (:func:`_alike`)."""
    alike = _alike(s, _CONV_GRANULARITIES)
    if alike is None:
        return "fewer than two granularities (with scalar) ran", NOT_RUN_PROFILE
    text, parts = alike
    return f"{text} ({_seed_words(s)})", graded(sum(parts), len(parts))


def _post_gains(s: pd.DataFrame, gran: str) -> pd.Series:
    """Per seed: post-training minus from-scratch test accuracy, mean over the shared λ."""
    cols = ["threshold", "test_accuracy"]
    sides = []
    for mode in ("from_scratch", "post_training"):
        sweep, _ = _sweep(s, "nested", gran, mode)
        seed = sweep["seed"] if "seed" in sweep else pd.Series(0, index=sweep.index)
        sides.append(sweep[cols].assign(seed=seed.to_numpy()))
    both = sides[0].merge(sides[1], on=["seed", "threshold"], suffixes=("_s", "_p"))
    gain = both["test_accuracy_p"] - both["test_accuracy_s"]
    return gain.groupby(both["seed"]).mean()


def n8(s: pd.DataFrame) -> tuple[str, str]:
    """N8: Imagenette, post-training above from scratch; granularities alike."""
    grans = THESIS_GRANULARITIES["resnet"]
    both = [
        g
        for g in grans
        if not _sweep(s, "nested", g)[0].empty
        and not _sweep(s, "nested", g, "post_training")[0].empty
    ]
    if not both:
        return "no nested runs both from scratch and post-training", NOT_RUN_PROFILE
    gains = {g: _post_gains(s, g) for g in both}
    text = "post-training − from scratch, mean over λ: " + ", ".join(
        f"{g} {100 * v.mean():+.1f} pt" for g, v in gains.items()
    )
    if _n_seeds(s) >= 2:
        diffs = pd.concat(
            pd.DataFrame({"granularity": g, "diff": v.to_numpy()})
            for g, v in gains.items()
        )
        summary = stats.paired_summary(diffs, by=["granularity"])
        held = stats.directional_verdicts(summary, expected="greater")["verdict"]
        improved = bool((held == "holds").all())
        text += f" ({int((held == 'holds').sum())}/{len(held)} above 0, paired t-test)"
    else:
        improved = all(v.mean() > ACCURACY_MARGIN for v in gains.values())
    parts = [improved]
    alike = _alike(s, grans)
    if alike is not None:
        text += f"; granularities {alike[0]}"
        parts.append(all(alike[1]))
    return f"{text} ({_seed_words(s)})", graded(sum(parts), len(parts))


def _channel_best(s: pd.DataFrame) -> list[bool]:
    """Per loss term that ran at two or more granularities: is channel's trade-off point
    the one with the fewest distinct integers?"""
    out = []
    for t in _TERMS:
        grans = [g for g in _CONV_GRANULARITIES if not _sweep(s, t, g)[0].empty]
        if len(grans) < 2 or CONV_TERM_GRANULARITY not in grans:
            continue
        points = {g: _mean_point(s, t, g)[0] for g in grans}
        points = {g: p for g, p in points.items() if p is not None}
        best = min(points, key=lambda g: points[g]["distinct"]) if points else None
        out.append(best == CONV_TERM_GRANULARITY)
    return out


def l5(s: pd.DataFrame) -> tuple[str, str]:
    """L5: CIFAR-10, Difference with channel scales at γ = 1e-10 (range, bias outliers)."""
    terms, col = _mean_sweep(s, "difference", CONV_TERM_GRANULARITY)
    at = _at(terms, col, 1e-10) if not terms.empty else None
    if at is None:
        return "no Difference run with channel scales at γ = 1e-10", NOT_RUN_PROFILE
    nested, ncol = _mean_sweep(s, "nested", "row")
    ref = _at(nested, ncol, 1e-11) if not nested.empty else None
    parts = [_range_bits(at["kernel_lo"], at["kernel_hi"]) == 6]
    parts.append(ref is not None and at["bias_max"] > ref["bias_max"])
    text = (
        f"Difference, channel, γ = 1e-10: kernels {at['kernel_lo']:.0f}…"
        f"{at['kernel_hi']:.0f}; largest |bias integer| {at['bias_max']:.0f} vs nested "
        f"row λ = 1e-11: {'n/a' if ref is None else format(ref['bias_max'], '.0f')}"
    )
    best = _channel_best(s)
    if best:
        parts.append(all(best))
        text += f"; channel best for {sum(best)}/{len(best)} terms"
    else:
        text += "; the terms ran with channel scales only (not compared)"
    return f"{text} ({_seed_words(s)})", graded(sum(parts), len(parts))


def l6(s: pd.DataFrame) -> tuple[str, str]:
    """L6: Imagenette, every loss term keeps FP32's validation accuracy at every γ."""
    fp32 = _fp32_means(s)["val_accuracy"]
    done = {t: _mean_sweep(s, t, CONV_TERM_GRANULARITY)[0] for t in _TERMS}
    done = {t: sw for t, sw in done.items() if not sw.empty}
    if not done:
        return "no loss-term runs with channel scales", NOT_RUN_PROFILE
    flat = {
        t: bool((sw["val_accuracy"] >= fp32 - ACCURACY_MARGIN - 1e-12).all())
        for t, sw in done.items()
    }
    text = "; ".join(
        f"{t}: lowest validation accuracy {_pct(sw['val_accuracy'].min())}, "
        f"{sw['distinct'].iloc[-1]:.0f} integers at γ = {fmt_sci(sw['rate'].iloc[-1])}"
        for t, sw in done.items()
    )
    text += f" (FP32 {_pct(fp32)}; {_seed_words(s)})"
    return text, graded(sum(flat.values()), len(flat))


# --------------------------------------------------------------------------------------------
# the table

#: the rules that read one dataset's run summary
_SUMMARY_RULES = {
    "N1": n1,
    "N2": n2,
    "N4": n4,
    "N5": n5,
    "N6": n6,
    "N7": n7,
    "N8": n8,
    "L1": l1,
    "L2": l2,
    "L3": l3,
    "L4": l4,
    "L5": l5,
    "L6": l6,
}
CLAIM_COLUMNS = [
    "claim",
    "section",
    "thesis",
    "thesis value",
    "companion value",
    "verdict",
]


def _claim_value(
    claim: Claim,
    summary: pd.DataFrame,
    histories: Mapping[str, pd.DataFrame],
    zips: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> tuple[str, str]:
    if claim.id in _SUMMARY_RULES:
        return _SUMMARY_RULES[claim.id](summary)
    if claim.id == "N3":
        return n3(summary, histories)
    if claim.id == "N9":
        return n9(zips)
    if claim.id == "L7":
        return l7(zips)
    return "no runs of this kind in this profile", NOT_RUN_PROFILE


def evaluate_claims(
    summaries: Mapping[str, pd.DataFrame],
    histories: Mapping[str, pd.DataFrame],
    zips: Mapping[str, Mapping[str, Mapping[str, Any]]],
    present: Mapping[str, bool],
) -> pd.DataFrame:
    """The claims table: one row per claim of :data:`CLAIMS` (columns :data:`CLAIM_COLUMNS`).

    Arguments:
        summaries: dataset -> :func:`run_summary` of its thesis-setting runs (``mnist``;
            ``cifar10``/``imagenette`` when run).
        histories: ``hash -> per-epoch history`` of the runs (N3 reads ``val_loss``).
        zips: dataset -> ``"nested"`` and each loss term -> :func:`zip_sizes` at its thesis
            point (:func:`thesis_zips`, :data:`THESIS_ZIP_POINT`).
        present: dataset -> whether its files are on this machine.
    """
    rows = []
    for c in CLAIMS:
        if not present.get(c.dataset, False):
            value, verdict = "", NOT_RUN_DATA
        elif c.dataset not in summaries:
            value, verdict = "", NOT_RUN_PROFILE
        else:
            value, verdict = _claim_value(c, summaries[c.dataset], histories, zips)
        rows.append([c.id, c.section, c.statement, c.thesis_value, value, verdict])
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def rules_markdown() -> str:
    """The definitions and every claim's rule as a Markdown list (for the page)."""
    lines = [f"* **{cid}**: {rule}." for cid, rule in RULES.items()]
    lines.append(
        "* Claims on CIFAR-10 or Imagenette say *not run: data missing* when the "
        "dataset's files are absent, *not run: not in this profile* when no run of "
        "that kind was made."
    )
    return "\n".join(lines) + "\n"


def verdict_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many claims got each verdict (:data:`VERDICTS` order, zeros kept)."""
    counts = table["verdict"].value_counts()
    return {v: int(counts.get(v, 0)) for v in VERDICTS}


def collect(
    runs: pd.DataFrame,
    load_model: Callable[[str], Any],
    load_history: Callable[[str], pd.DataFrame],
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """:func:`run_summary` of ``runs`` and their per-epoch histories, read from the store.

    Arguments:
        runs: sweep records.
        load_model, load_history: ``hash -> model`` / ``hash -> history``
            (:func:`companion.engine.experiment.load_model` / ``load_history``).
    """
    hashes = list(runs["config_hash"])
    integers = {
        h: network_integers(load_model(h))
        for h, flavour in zip(hashes, runs["flavour"], strict=True)
        if flavour != "fp32"
    }
    return run_summary(runs, integers), {h: load_history(h) for h in hashes}


def collect_conv(
    runs: Mapping[str, pd.DataFrame],
    load_model: Callable[[str], Any],
    load_history: Callable[[str], pd.DataFrame],
) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, dict[str, Any]]]]:
    """:func:`collect`'s summary and :func:`thesis_zips` of each convolutional dataset.

    Arguments:
        runs: dataset (``cifar10``, ``imagenette``) -> its sweep records (none: ``{}``).
        load_model, load_history: as :func:`collect`.

    Returns:
        ``(dataset -> run summary, dataset -> zips)``.
    """
    summaries = {d: collect(r, load_model, load_history)[0] for d, r in runs.items()}
    zips = {d: thesis_zips(s, load_model, d) for d, s in summaries.items()}
    return summaries, zips


# --------------------------------------------------------------------------------------------
# compression and the words of the page

_POINT_LABELS = {
    "nested": "nested, row, λ = 1e-10, post-training",
    "difference": "Difference, row, γ = 1e-7",
    "max_bin": "MaxBin, row, γ = 1e-8",
    "inverse": "Inverse, row, γ = 1e-9",
}


def _export_bytes(model: Any) -> int:
    """Size of :func:`lqs.export.to_integer`'s compressed file of ``model``."""
    import tempfile
    from pathlib import Path

    from lqs import export

    with tempfile.TemporaryDirectory() as tmp:
        return int(
            export.to_integer(model, Path(tmp) / "m", compress=True)["file_bytes"]
        )


def compression_table(
    runs: pd.DataFrame,
    zips: Mapping[str, Mapping[str, Any]],
    load_model: Callable[[str], Any],
) -> pd.DataFrame:
    """The thesis's zip sizes next to lqs's bit accounting and ``lqs.export``'s file.

    ``zips``: :func:`thesis_zips` of the MNIST runs. One row per MNIST
    :data:`THESIS_ZIP_POINT` that ran: FP32 and int8 zip sizes (MB = 10^6
    bytes) and their ratio, the thesis's ratio, lqs's bits per parameter and compression
    (32 / bits, sign-magnitude widths of :mod:`lqs.memory`), and the size of
    :func:`lqs.export.to_integer`'s compressed ``.npz``.
    """
    by_hash = runs.set_index("config_hash")
    rows = []
    for key, z in zips.items():
        rec = by_hash.loc[z["hash"]]
        fp32_mb, q_mb = THESIS_ZIP_MB["mnist"][key]
        rows.append(
            {
                "configuration": _POINT_LABELS[key],
                "FP32 zip (MB)": round(z["fp32_bytes"] / 1e6, 3),
                "int8 zip (MB)": round(z["int8_bytes"] / 1e6, 3),
                "zip ratio": round(z["ratio"], 1),
                "thesis zip ratio": round(fp32_mb / q_mb, 1),
                "lqs bits/param": round(float(rec["mem_bits_per_param"]), 2),
                "lqs ratio": round(float(rec["mem_compression"]), 1),
                "wider than int8": ", ".join(z["wider"]) or "none",
                "lqs.export (KB)": round(_export_bytes(load_model(z["hash"])) / 1e3, 1),
                "test accuracy (%)": round(100 * float(rec["test_accuracy"]), 1),
            }
        )
    return pd.DataFrame(rows)


def headline_markdown(compression: pd.DataFrame, setting: str) -> str:
    """The first page's headline: the thesis-setting compression next to "up to 8×"."""
    if compression.empty:
        return (
            "No thesis-setting network reached its compression point in this build "
            f"({setting}).\n"
        )
    best = compression.loc[compression["zip ratio"].idxmax()]
    nested = compression[compression["configuration"] == _POINT_LABELS["nested"]]
    lines = [
        f"At the thesis's own settings ({setting}), the thesis's zip method measures up "
        f"to **{best['zip ratio']:.1f}×** ({best['configuration']}: "
        f"{best['FP32 zip (MB)']:.2f} → {best['int8 zip (MB)']:.3f} MB, test accuracy "
        f'{best["test accuracy (%)"]:.1f} %); the thesis reports "up to an eight-fold '
        'reduction" with this method.'
    ]
    if not nested.empty:
        n = nested.iloc[0]
        lines.append(
            f"For the thesis's own example ({n['configuration']}): zip "
            f"{n['zip ratio']:.1f}× (thesis {n['thesis zip ratio']:.1f}×); lqs's bit "
            f"accounting, which counts every bit a parameter needs, "
            f"{n['lqs bits/param']:.2f} bits per parameter = {n['lqs ratio']:.1f}×."
        )
    return " ".join(lines) + "\n"


def counts_markdown(table: pd.DataFrame) -> str:
    """One sentence: how many claims got each verdict."""
    counts = verdict_counts(table)
    parts = [f"{n} {v}" for v, n in counts.items() if n]
    return f"Of {len(table)} claims: " + ", ".join(parts) + ".\n"


def full_size_table(
    small: pd.DataFrame, big: pd.DataFrame, labels: Sequence[str]
) -> pd.DataFrame:
    """Row-wise nested findings on the claims' dataset next to a full-size training set.

    Per summary: the trade-off point (module docstring), its distinct integers, range and
    bits, and its test accuracy against the FP32 network's.

    Arguments:
        small, big: :func:`run_summary` of the two datasets' runs.
        labels: the two datasets' display labels (records' ``dataset_label``).
    """
    rows = []
    for s, label in zip((small, big), labels, strict=True):
        point, _ = _point(s, "nested", "row")
        fp32 = _fp32(s)
        rows.append(
            {
                "dataset": label,
                "trade-off λ": fmt_sci(point["threshold"])
                if point is not None
                else "none",
                "integers": "" if point is None else f"{point['distinct']:.0f}",
                "range": ""
                if point is None
                else f"{point['lo']:.0f}…{point['hi']:.0f}",
                "bits": "" if point is None else f"{point['bits']:.0f}",
                "test acc. (%)": "" if point is None else _pct(point["test_accuracy"]),
                "FP32 test acc. (%)": _pct(fp32["test_accuracy"]),
            }
        )
    return pd.DataFrame(rows)


def claims_markdown(table: pd.DataFrame, setting: str) -> str:
    """The claims page's body: where the values come from, then one item per claim.

    A stacked layout (label, verdict, the thesis's statement and value, the measured
    value) that fits the page at any width, instead of a six-column table.
    """
    lines = [f"Measured values: {setting}.", ""]
    for row in table.to_dict("records"):
        here = f" Here: {row['companion value']}." if row["companion value"] else ""
        lines.append(
            f"- **{row['claim']}** (thesis §{row['section']}) · *{row['verdict']}*. "
            f"Thesis: {row['thesis']} ({row['thesis value']}).{here}"
        )
    return "\n".join(lines) + "\n"


def verdict_table(table: pd.DataFrame) -> pd.DataFrame:
    """Claim -> verdict, the compact overview (two columns)."""
    return table[["claim", "verdict"]]


_SHORT_LABELS = {
    "nested": "nested 1e-10 (PT)",
    "difference": "Difference 1e-7",
    "max_bin": "MaxBin 1e-8",
    "inverse": "Inverse 1e-9",
}


def compression_markdown(compression: pd.DataFrame) -> str:
    """:func:`compression_table` transposed (a column per configuration) so it fits the page."""
    if compression.empty:
        return "No network of the thesis's compression rows ran in this build.\n"
    short = {v: _SHORT_LABELS[k] for k, v in _POINT_LABELS.items()}
    wide = compression.set_index("configuration").rename(index=short).T
    wide.insert(0, "quantity", wide.index)
    return wide.to_markdown(index=False, disable_numparse=True) + "\n"
