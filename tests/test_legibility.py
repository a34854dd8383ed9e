"""Every experiment figure stays legible in print for the cpu and full profile shapes.

Each figure is built from a small synthetic table shaped like a profile (number of
setups, granularities, modes, terms, rates, methods, the lr × L2 grid) and its smallest
text at the printed size (:func:`companion.chapters.style.smallest_text`) must reach
:data:`companion.chapters.style.MIN_FONT_PT`, in every part of a figure drawn in parts.
No training: tables only. ``python tests/test_legibility.py`` prints the sizes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from companion.chapters import analysis, style
from companion.chapters import comparison as C
from companion.chapters import dataset_figures as DF
from companion.chapters import figures as F
from companion.chapters import loss_terms as LT
from companion.chapters import lr_reg as L
from companion.chapters import thresholds as T

#: labels, networks and classes of the profiles' datasets (MNIST under its cpu label)
_LABELS = {
    "mnist": "MNIST (10k subset)",
    "fashion_mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "imagenette": "Imagenette (160 px)",
}
_ARCH = {
    "mnist": "mlp",
    "fashion_mnist": "mlp",
    "cifar10": "cnn",
    "imagenette": "resnet",
}
_CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"],
    "imagenette": ["tench", "English springer", "cassette player", "chain saw",
                   "church", "French horn", "garbage truck", "gas pump", "golf ball",
                   "parachute"],
}  # fmt: skip
_MLP_GRANS = ["scalar", "row", "column"]
_CONV_GRANS = ["scalar", "row", "column", "channel", "filter"]
_SHAPES = ("cpu", "full")


def _setup(dataset: str, **extra: Any) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "label": _LABELS[dataset],
        "arch": _ARCH[dataset],
        **extra,
    }


# ---- loss_terms


#: per shape (profiles/<shape>/loss_terms.yaml): setups with their granularities,
#: modes, rates, epochs
LOSS_TERMS = {
    "cpu": dict(
        setups=[
            _setup("mnist", grans=["scalar"]),
            _setup("fashion_mnist", grans=["scalar", "column"]),
        ],
        modes=["from_scratch"],
        rates=[1e-15, 1e-12, 1e-9, 1e-6],
        epochs=2,
    ),
    "full": dict(
        setups=[
            _setup("mnist", grans=_MLP_GRANS),
            _setup("fashion_mnist", grans=_MLP_GRANS),
            _setup("cifar10", grans=["scalar", "filter"], epochs=30),
            _setup("imagenette", grans=["scalar", "filter"], epochs=30),
        ],
        modes=["from_scratch", "post_training"],
        rates=[10.0**-k for k in range(15, 4, -1)],
        epochs=30,
    ),
}
#: every term variant of the sweep: (term, deviation form)
_VARIANTS = [("none", None), ("inverse", None), ("max_bin", None)] + [
    ("deviation", f) for f in ("reconstructed", "implementation")
]


def _loss_term_rows(shape: str) -> list[dict[str, Any]]:
    """One seed of every configuration of the shape, and the FP32 references."""
    p = LOSS_TERMS[shape]
    rows = []
    for s in p["setups"]:
        base = {"dataset": s["dataset"], "dataset_label": s["label"], "arch": s["arch"]}
        rows.append({**base, "flavour": "fp32", "mode": "from_scratch"})
        rows += [
            {**base, "flavour": "loss_terms", "kernel_granularity": gran, "mode": mode}
            | {f"rate_{term}": rate, "deviation_form": form or "reconstructed"}
            for gran in s["grans"]
            for mode in p["modes"]
            for term, form in _VARIANTS
            for rate in ([0.0] if term == "none" else p["rates"])
        ]
    return rows


def _loss_term_runs(shape: str) -> pd.DataFrame:
    df = pd.DataFrame(_loss_term_rows(shape))
    for t in ("inverse", "max_bin", "deviation"):
        df[f"rate_{t}"] = df[f"rate_{t}"].fillna(0.0)
    n, fp32 = len(df), df["flavour"] == "fp32"
    rng = np.random.default_rng(0)
    df["test_accuracy"] = np.where(fp32, 0.9, 0.85 + 0.05 * rng.uniform(size=n))
    df["mem_bits_per_param"] = np.where(fp32, 32.0, 2 + 8 * rng.uniform(size=n))
    df = df.assign(
        seed=0,
        lr=1e-4 if shape == "full" else 1e-3,
        epochs=LOSS_TERMS[shape]["epochs"],
        batch_size=32,
        train_limit=8000,
        test_limit=2000,
        val_accuracy=df["test_accuracy"],
        train_accuracy=df["test_accuracy"],
        mem_compression=32.0 / df["mem_bits_per_param"],
        mem_total_bits=df["mem_bits_per_param"] * 1000,
        mem_fp32_bits=32000.0,
        mem_kib=df["mem_bits_per_param"] * 1000 / 8192,
        penalty_inverse=1e3,
        penalty_max_bin=2.0,
        penalty_deviation=3e-2,
        config_hash=[f"h{i}" for i in range(n)],
    )
    df.loc[fp32, "kernel_granularity"] = None
    return LT.annotate(df)


@functools.cache
def _loss_term_tables(shape: str) -> LT.LossTermTables:
    return LT.summarise(_loss_term_runs(shape))


def _penalty_curves(shape: str) -> tuple[pd.DataFrame, LT.LossTermTables]:
    t = _loss_term_tables(shape)
    runs = t.first_granularity_rows(
        t.runs[(t.runs["flavour"] == "loss_terms") & (t.runs["term"] != "none")]
    )
    kernels = {
        "mlp": "dense1/kernel",
        "cnn": "conv1a/kernel",
        "resnet": "stem_conv/kernel",
    }
    last = LOSS_TERMS[shape]["epochs"]
    curves = pd.concat(
        [
            pd.DataFrame(
                {
                    "setup": r["setup"],
                    "term": r["term"],
                    "rate": r["rate"],
                    "seed": r["seed"],
                    "epoch": np.arange(last + 1),
                    "penalty": np.r_[np.nan, 10.0 ** -np.arange(last)] * 1e4,
                    "kernel_bits": 14.0 - np.arange(last + 1) * 8 / last,
                    "kernel": kernels[r["arch"]],
                }
            )
            for r in runs.to_dict("records")
        ],
        ignore_index=True,
    )
    return curves, t


# ---- pareto_lr_reg

#: per shape (profiles/<shape>/pareto_lr_reg.yaml): setups, the lr × L2 grid, modes
LR_REG = {
    "cpu": dict(
        setups=[
            _setup("mnist", grans=_MLP_GRANS),
            _setup("fashion_mnist", grans=_MLP_GRANS),
            _setup(
                "fashion_mnist",
                arch="cnn",
                grans=["scalar", "channel", "filter"],
                lrs=[1e-3],
                l2s=[0.0],
                modes=["from_scratch"],
            ),
        ],
        lrs=[1e-3, 3e-3],
        l2s=[0.0, 1e-3],
        modes=["from_scratch", "post_training"],
        post_grans=["scalar"],
    ),
    "full": dict(
        setups=[
            _setup("mnist", grans=_MLP_GRANS),
            _setup("fashion_mnist", grans=_MLP_GRANS),
            _setup("cifar10", grans=_CONV_GRANS),
            _setup("imagenette", grans=_CONV_GRANS),
        ],
        lrs=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
        l2s=[0.0, 1e-5, 1e-4, 1e-3, 1e-2],
        modes=["from_scratch", "post_training"],
        post_grans=_CONV_GRANS,
    ),
}


@functools.cache
def _lr_reg_tables(shape: str) -> L.LrRegTables:
    p = LR_REG[shape]
    rng = np.random.default_rng(1)
    rows = []
    for s in p["setups"]:
        base = {"dataset": s["dataset"], "arch": s["arch"]}
        base["setup"] = analysis.setup_label(s["label"], s["arch"])
        lrs, l2s = s.get("lrs", p["lrs"]), s.get("l2s", p["l2s"])
        for lr in lrs:
            for l2 in l2s:
                for epochs in (2, 4):
                    rows.append(
                        {**base, "flavour": "fp32", "mode": "from_scratch", "lr": lr}
                        | {"l2": l2, "epochs": epochs, "kernel_granularity": None}
                    )
                for mode in s.get("modes", p["modes"]):
                    for gran in s["grans"]:
                        if mode == "post_training" and gran not in p["post_grans"]:
                            continue
                        rows.append(
                            {**base, "flavour": "nested", "mode": mode, "lr": lr}
                            | {"l2": l2, "epochs": 2, "kernel_granularity": gran}
                        )
    df = pd.DataFrame(rows)
    n, fp32 = len(df), df["flavour"] == "fp32"
    df["pretrain_epochs"] = np.where(df["mode"] == "post_training", 2.0, np.nan)
    df["test_accuracy"] = np.where(fp32, 0.9, 0.8 + 0.1 * rng.uniform(size=n))
    df["mem_bits_per_param"] = np.where(fp32, 32.0, 3 + 5 * rng.uniform(size=n))
    df = df.assign(
        threshold=1e-9,
        seed=0,
        train_accuracy=df["test_accuracy"],
        val_accuracy=df["test_accuracy"],
        mem_compression=32.0 / df["mem_bits_per_param"],
        mem_kib=df["mem_bits_per_param"] * 101770 / 8192,
        mem_fp32_kib=397.5,
        mem_q_bits_per_param=df["mem_bits_per_param"] - 0.1,
        mem_quantized_fraction=1.0,
    )
    return L.summarise(df)


# ---- dataset_insights

#: datasets per shape (profiles/<shape>/dataset_insights.yaml)
INSIGHTS = {
    "cpu": ["mnist", "fashion_mnist"],
    "full": ["mnist", "fashion_mnist", "cifar10", "imagenette"],
}


def _pairs(shape: str) -> dict[str, tuple[dict, dict]]:
    fp32 = {"flavour": "fp32", "test_accuracy": 0.9712}
    qnt = {
        "flavour": "nested",
        "test_accuracy": 0.9655,
        "kernel_granularity": "scalar",
        "mem_bits_per_param": 4.123,
    }
    return {d: (fp32, qnt) for d in INSIGHTS[shape]}


def _labels(shape: str) -> dict[str, str]:
    return {d: _LABELS[d] for d in INSIGHTS[shape]}


def _confusion(shape: str) -> pd.DataFrame:
    """Quantized minus FP32 confusion of every dataset (the rows ``compare_pairs``
    writes): a change of a few points in every cell."""
    rng = np.random.default_rng(2)
    cells = [(i, j) for i in range(10) for j in range(10)]
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "dataset": d,
                    "dataset_label": _LABELS[d],
                    "true": [_CLASSES[d][i] for i, _ in cells],
                    "predicted": [_CLASSES[d][j] for _, j in cells],
                    "true_label": [i for i, _ in cells],
                    "predicted_label": [j for _, j in cells],
                    "change": rng.normal(scale=0.04, size=len(cells)),
                }
            )
            for d in INSIGHTS[shape]
        ],
        ignore_index=True,
    )


def _per_class(shape: str) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    parts = []
    for d in INSIGHTS[shape]:
        ref = 0.85 + 0.1 * rng.uniform(size=10)
        qnt = ref - 0.2 * rng.uniform(size=10)
        parts.append(
            pd.DataFrame(
                {
                    "class": _CLASSES[d],
                    "n": 200,
                    "accuracy_reference": ref,
                    "accuracy_quantized": qnt,
                    "change": qnt - ref,
                    "dataset": d,
                    "dataset_label": _LABELS[d],
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


@functools.cache
def _splits(shape: str) -> dict[str, dict[str, DF.Split]]:
    rng = np.random.default_rng(4)
    out = {}
    for d in INSIGHTS[shape]:
        side, ch = (32, 3) if d in ("cifar10", "imagenette") else (28, 1)
        info = SimpleNamespace(
            label=_LABELS[d], num_classes=10, class_names=_CLASSES[d]
        )
        y = np.repeat(np.arange(10), 12)
        x = rng.uniform(size=(len(y), side, side, ch)).astype(np.float32)
        out[d] = {"train": (x, y, info), "test": (x, y, info)}
    return out


def _most_changed(shape: str) -> tuple[np.ndarray, pd.DataFrame, str]:
    d = INSIGHTS[shape][-1]
    x, y, _ = _splits(shape)[d]["train"]
    k = {"cpu": 12, "full": 18}[shape]
    names = _CLASSES[d]
    changed = pd.DataFrame(
        {
            "index": np.arange(k),
            "class": [names[i % 10] for i in range(k)],
            "pred_class_reference": [names[i % 10] for i in range(k)],
            "p_pred_reference": 0.93,
            "pred_class_quantized": [names[(i + 1) % 10] for i in range(k)],
            "p_pred_quantized": 0.61,
        }
    )
    return x, changed, _LABELS[d]


# ---- baselines


@functools.cache
def _baseline_means(shape: str) -> pd.DataFrame:
    """Seed means of one setup with every method of the baselines comparison."""
    per = ["scalar"] if shape != "full" else ["scalar", "column"]
    rows = [{"flavour": "fp32", "bits": None, "mem": 32.0}]
    rows += [
        {"flavour": "ptq", "kernel_granularity": g, "bits": b, "mem": b + 1.0}
        for g in ("scalar", "column")
        for b in (8, 6, 4, 3, 2)
    ]
    rows += [
        {"flavour": f, "kernel_granularity": g, "mode": m, "bits": b, "mem": b + 1.2}
        for f, bits, modes in (
            ("fixed_bits", (8, 4, 2), ["from_scratch"]),
            ("lsq", (8, 4, 3, 2), ["from_scratch", "post_training"]),
        )
        for g in per
        for m in modes
        for b in bits
    ]
    rows += [
        {"flavour": "nested", "kernel_granularity": "scalar", "threshold": lam}
        | {"mem": 2.0 + 10 * k / 17}
        for k, lam in enumerate(10.0 ** np.linspace(-14, -2, 17))
    ]
    rows += [
        {"flavour": "loss_terms", "kernel_granularity": "scalar", "mem": 3.0 + k}
        for k in range(5)
    ]
    df = pd.DataFrame(rows)
    df["mode"] = df["mode"].fillna("from_scratch")
    rng = np.random.default_rng(5)
    df = df.assign(
        dataset="mnist",
        dataset_label=_LABELS["mnist"],
        arch="mlp",
        seed=0,
        lr=1e-3,
        epochs=2,
        batch_size=32,
        train_limit=8000,
        test_limit=2000,
        mem_n_params=101770,
        mem_bits_per_param=df["mem"],
        test_accuracy=0.9 - 0.02 * rng.uniform(size=len(df)),
    )
    df["val_accuracy"] = df["train_accuracy"] = df["test_accuracy"]
    df["mem_bits_per_param_twos"] = df["mem_bits_per_param"] - 1
    df["mem_compression"] = 32.0 / df["mem_bits_per_param"]
    df["mem_total_bits"] = df["mem_bits_per_param"] * 101770
    df["mem_fp32_bits"] = 32.0 * 101770
    df["mem_kib"] = df["mem_total_bits"] / 8192
    runs = C.label_runs(df.drop(columns="mem"))
    return C.seed_means(runs, pd.DataFrame())


# ---- pareto_threshold

#: per shape (profiles/<shape>/pareto_threshold.yaml): datasets, granularities per
#: network, number of thresholds
THRESHOLDS = {
    "cpu": (["mnist", "fashion_mnist"], {"mlp": ["scalar"]}, 8),
    "full": (
        ["mnist", "fashion_mnist", "cifar10", "imagenette"],
        {"mlp": _MLP_GRANS, "cnn": _CONV_GRANS, "resnet": _CONV_GRANS},
        17,
    ),
}


@functools.cache
def _threshold_tables(shape: str) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    datasets, grans, n = THRESHOLDS[shape]
    lambdas = 10.0 ** np.linspace(-14, -2, n)
    rows, kern = [], []
    for d in datasets:
        setup = analysis.setup_label(_LABELS[d], _ARCH[d])
        for g in grans[_ARCH[d]]:
            for k, lam in enumerate(lambdas):
                rows.append((setup, g, lam, 0.9 - 0.01 * k, 8 - 0.3 * k))
                for layer in ("dense1", "dense2"):
                    kern.append((setup, f"{layer} · {g}", lam, 200 - 10 * k, 100 - k))
    agg = pd.DataFrame(
        rows,
        columns=["setup", "kernel_granularity", "threshold"]
        + ["test_accuracy_mean", "mem_bits_per_param_mean"],
    ).assign(test_accuracy_std=0.01, mem_bits_per_param_std=0.1)
    kagg = pd.DataFrame(
        kern,
        columns=["setup", "layer_granularity", "threshold"]
        + ["unique_values_mean", "max_abs_q_mean"],
    ).assign(unique_values_std=1.0, max_abs_q_std=1.0)
    setups = list(dict.fromkeys(agg["setup"]))
    return agg, kagg, setups


def _threshold_dynamics(shape: str) -> plt.Figure:
    lambdas, epochs = {
        "cpu": ([1e-12, 1e-9, 1e-6], 6),
        "full": ([1e-12, 1e-10, 1e-9, 1e-8, 1e-6], 10),
    }[shape]
    grid = [(lam, e) for lam in lambdas for e in range(epochs + 1)]
    kh = pd.DataFrame(
        [
            (lam, layer, e, 1e-3 * (e + 1), 8 - 0.5 * e)
            for lam, e in grid
            for layer in ("dense1", "dense2")
        ],
        columns=["threshold", "layer", "epoch", "scale_mean", "bits_mean"],
    )
    acc = pd.DataFrame(grid, columns=["threshold", "epoch"]).assign(val_accuracy=0.9)
    return T.draw_threshold_dynamics(kh, acc, "MNIST (10k subset) · MLP · scalar")


# ---- the figures

#: (figure, builder of the figure for a shape)
FIGURES: dict[str, Callable[[str], plt.Figure | list[plt.Figure]]] = {
    "loss_terms/overall": lambda s: LT.draw_overall(
        _loss_term_tables(s), max_drop=0.01
    ),
    "loss_terms/dataset_fronts": lambda s: LT.draw_dataset_fronts(
        _loss_term_tables(s), max_drop=0.01
    ),
    "loss_terms/rate_response": lambda s: LT.draw_rate_response(_loss_term_tables(s)),
    "loss_terms/penalty_curves": lambda s: LT.draw_penalty_curves(*_penalty_curves(s)),
    "pareto_lr_reg/front_kib": lambda s: L.draw_fronts(
        _lr_reg_tables(s), "mem_kib", "memory (KiB, scales included)", max_drop=0.01
    ),
    "pareto_lr_reg/front_bits": lambda s: L.draw_fronts(
        _lr_reg_tables(s),
        "mem_bits_per_param",
        "memory (bits / parameter)",
        max_drop=0.01,
    ),
    "pareto_lr_reg/lr_l2_grid": lambda s: L.draw_lr_l2_grid(_lr_reg_tables(s)),
    "pareto_lr_reg/granularity": lambda s: _granularity(s),
    "dataset_insights/class_balance": lambda s: DF.draw_class_balance(
        DF.class_balance_table(_splits(s)), _labels(s)
    ),
    "dataset_insights/intensity_histogram": lambda s: DF.draw_intensity_histograms(
        DF.intensity_histograms(_splits(s), 64), _labels(s)
    ),
    "dataset_insights/per_class_accuracy": lambda s: DF.draw_per_class(
        _per_class(s), _pairs(s), _labels(s)
    ),
    "dataset_insights/confusion_difference": lambda s: DF.draw_confusion_difference(
        _confusion(s), _pairs(s), _labels(s)
    ),
    "dataset_insights/most_changed": lambda s: DF.draw_most_changed(*_most_changed(s)),
    "baselines/accuracy_vs_memory": lambda s: C.draw_accuracy_vs_memory(
        _baseline_means(s), 0.9, max_drop=0.01
    ),
    "pareto_threshold/threshold_sweep": lambda s: T.draw_threshold_sweep(
        _threshold_tables(s)[0],
        {},
        _threshold_tables(s)[2],
        max_drop=0.01,
    ),
    "pareto_threshold/threshold_values": lambda s: T.draw_threshold_values(
        _threshold_tables(s)[1], _threshold_tables(s)[2]
    ),
    "pareto_threshold/threshold_dynamics": _threshold_dynamics,
    "method_insights/ratio_histogram": lambda s: _ratio_histogram(s),
}


def _granularity(shape: str) -> plt.Figure:
    t = _lr_reg_tables(shape)
    best = L.granularity_best(t, max_drop=0.01)
    return L.draw_granularity(best, t, max_drop=0.01)


def _ratio_histogram(shape: str) -> plt.Figure:
    rng = np.random.default_rng(6)
    shape_ = (196, 32)
    ratio = 10.0 ** rng.normal(2, 2, size=shape_)
    ratio[:20] = 0.0
    group = np.tile(np.arange(32), (196, 1))
    lr_ = SimpleNamespace(
        ratio=ratio,
        group=group,
        threshold=1e-9,
        layer="dense1",
        granularity="column",
        p_q=np.zeros(shape_, np.int32),
    )
    return F.draw_ratio_histogram(lr_, [1e-9, 1e-6, 1e-4, 1e-2])


def _parts(figure: plt.Figure | list[plt.Figure]) -> list[plt.Figure]:
    return [figure] if isinstance(figure, plt.Figure) else list(figure)


def measure(name: str, shape: str) -> tuple[float, str]:
    """``(size_pt, text)``: the smallest printed text of figure ``name`` (every part)."""
    parts = _parts(FIGURES[name](shape))
    try:
        return min(style.smallest_text(fig) for fig in parts)
    finally:
        for fig in parts:
            plt.close(fig)


@pytest.mark.parametrize("shape", _SHAPES)
@pytest.mark.parametrize("name", list(FIGURES))
def test_figure_text_is_legible_in_print(name: str, shape: str) -> None:
    size, text = measure(name, shape)
    assert size >= style.MIN_FONT_PT, (
        f"{name} ({shape} shape): {text!r} is {size:.1f} pt in print "
        f"(at least {style.MIN_FONT_PT} pt)"
    )


def _report(names: Sequence[str] = tuple(FIGURES)) -> None:  # pragma: no cover
    for name in names:
        sizes = [f"{measure(name, s)[0]:5.1f}" for s in _SHAPES]
        print(f"{name:42s} " + " ".join(sizes))


if __name__ == "__main__":  # pragma: no cover
    _report()
