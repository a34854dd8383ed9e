"""Helpers of the ``thesis_claims`` notebook: the thesis's own training settings.

The published thesis (A. Chinbat, 2025, chapter 4, table "Network settings") trains every
network with Adam at :math:`10^{-4}`, seed 42, weights and biases initialised random-normal:
the MNIST MLP with batch 32 for 20 epochs of 60,000 images (37,500 steps,
:data:`THESIS_SETTINGS`, :data:`THESIS_STEPS`), the CIFAR-10 CNN with batch 128 for 100
epochs, the Imagenette ResNet with batch 64 for 100 epochs, its learning rate multiplied by
0.5 at epoch 40 and by 0.2 at epoch 60 (cumulative: 1e-5 from epoch 60; config key
``lr_steps``, :func:`companion.engine.config.lr_at`) (:func:`thesis_settings`, from
:data:`companion.engine.regimes.THESIS`). This module builds those configurations
(:func:`thesis_configs`: nested λ x granularity from scratch, post-training, the three loss
terms, the FP32 reference, a full-size Fashion-MNIST repeat and SGD runs for the
scale-growth study; :func:`conv_sweep_configs`: the same parts for the CNN and the ResNet at
their published epochs, over the four kernel granularities of the thesis, with channel scales
for the loss terms); :mod:`companion.chapters.claims` turns their results into the claims
page. Training goes through :func:`companion.engine.experiment.sweep` in the notebook.

A step count, not an epoch count, carries over between training sets of different sizes:
:func:`epochs_for_steps` gives the number of epochs whose steps come closest to
:data:`THESIS_STEPS` on the images left after the validation split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import NullFormatter

from companion.chapters import analysis, style
from companion.engine import regimes

__all__ = [
    "THESIS_ARCHS",
    "CONV_DATASETS",
    "THESIS_GRANULARITIES",
    "CONV_TERM_GRANULARITY",
    "CONV_SWEEP_OPTIONS",
    "THESIS_SETTINGS",
    "THESIS_STEPS",
    "THESIS_VALIDATION_STEPS",
    "LOSS_TERMS",
    "thesis_settings",
    "steps_per_epoch",
    "epochs_for_steps",
    "thesis_configs",
    "conv_configs",
    "conv_sweep_configs",
    "dataset_train_size",
    "validation_cadence",
    "thesis_base",
    "setting_words",
    "front_table",
    "draw_fronts",
]

#: the thesis's network of each dataset of its chapter 4
THESIS_ARCHS: dict[str, str] = {
    "mnist": "mlp",
    "cifar10": "cnn",
    "imagenette": "resnet",
}
#: the datasets of the convolutional networks (run when their files are present and the
#: profile asks for them: ``conv_sweeps`` of the notebook)
CONV_DATASETS: tuple[str, ...] = ("cifar10", "imagenette")
#: the kernel granularities the thesis compares per network (its tables "Scale factor
#: granularity"; the ResNet: "four scenarios ... the same approach" as the CNN)
THESIS_GRANULARITIES: dict[str, tuple[str, ...]] = {
    "mlp": ("row", "column", "scalar"),
    "cnn": ("channel", "row", "column", "scalar"),
    "resnet": ("channel", "row", "column", "scalar"),
}
#: the loss terms' kernel granularity on the CNN and the ResNet (the thesis's choice for
#: CIFAR-10, section 4.3.2, and the granularity of its compression rows for both)
CONV_TERM_GRANULARITY = "channel"
#: the options of a ``conv_sweeps`` mapping besides configuration keys (which override the
#: published settings, e.g. ``epochs`` or ``image_size``)
CONV_SWEEP_OPTIONS: tuple[str, ...] = (
    "thresholds",
    "rates",
    "thesis_terms",
    "granularities",
    "term_granularities",
    "post_training_terms",
    "seeds",
)


def thesis_settings(arch: str) -> dict[str, Any]:
    """The published optimisation settings of one thesis network (table "Network settings").

    Adam, the network's learning rate and batch size, random-normal weights and biases, seed
    42, and -- for the ResNet only -- ``lr_steps`` (the Imagenette decay: ×0.5 at epoch 40,
    ×0.2 at epoch 60, the factors cumulative as in the thesis's implementation, so the rate is
    1e-5 from epoch 60 on; :func:`companion.engine.config.lr_at`). Networks without steps get
    no ``lr_steps`` key, so their configurations hash as before the key existed.
    """
    if arch not in regimes.THESIS:
        raise ValueError(
            f"unknown thesis network {arch!r}; allowed: "
            f"{', '.join(map(repr, regimes.THESIS))}"
        )
    t = regimes.THESIS[arch]
    out: dict[str, Any] = {
        "optimizer": "adam",
        "lr": t.lr,
        "batch_size": t.batch_size,
        "weight_init": "random_normal",
        "seed": 42,
    }
    if t.lr_steps:
        out["lr_steps"] = [[e, f] for e, f in t.lr_steps]
    return out


#: the thesis's MNIST training settings (table "Network settings" and section 4.1)
THESIS_SETTINGS: dict[str, Any] = thesis_settings("mlp")
#: training steps of the thesis's MNIST runs: 20 epochs x 60,000 images / batch 32 = 37,500
THESIS_STEPS = regimes.steps_per_run(
    regimes.TRAIN_SPLIT_SIZES["mnist"],
    regimes.THESIS["mlp"].epochs,
    regimes.THESIS["mlp"].batch_size,
)
#: optimizer steps between two validations in the thesis's MNIST runs: one epoch of 60,000
#: images at batch 32 (its curves are per epoch); :func:`thesis_base` validates as often
THESIS_VALIDATION_STEPS = regimes.steps_per_run(
    regimes.TRAIN_SPLIT_SIZES["mnist"], 1, regimes.THESIS["mlp"].batch_size
)
#: the thesis's loss-term names -> the configuration's rate key (and deviation form)
LOSS_TERMS: dict[str, dict[str, Any]] = {
    "difference": {"term": "deviation", "deviation_form": "implementation"},
    "max_bin": {"term": "max_bin"},
    "inverse": {"term": "inverse"},
}


def steps_per_epoch(n_train: int, validation_fraction: float, batch_size: int) -> int:
    """Optimizer steps of one epoch: :math:`\\lceil n_{fit} / B \\rceil`.

    :math:`n_{fit} = n - \\lfloor f n + 1/2 \\rfloor` are the images left after the
    validation split of :func:`companion.engine.experiment.validation_split`.

    Arguments:
        n_train: training images before the validation split.
        validation_fraction: share held out for validation (``0 <= f < 0.5``).
        batch_size: images per step.
    """
    if n_train < 1 or batch_size < 1:
        raise ValueError(
            f"n_train={n_train!r} and batch_size={batch_size!r} must be >= 1; "
            "give the number of training images and the batch size"
        )
    return regimes.steps_per_run(
        regimes.training_images(n_train, validation_fraction), 1, batch_size
    )


def epochs_for_steps(
    steps: int, n_train: int, validation_fraction: float, batch_size: int
) -> int:
    """The number of epochs whose steps come closest to ``steps`` (at least one).

    :math:`E = \\max(1, \\operatorname{round}(S / \\text{steps per epoch}))` with
    :func:`steps_per_epoch`.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}; e.g. THESIS_STEPS")
    per_epoch = steps_per_epoch(n_train, validation_fraction, batch_size)
    return max(1, int(math.floor(steps / per_epoch + 0.5)))


def _term_config(name: str, rate: float) -> dict[str, Any]:
    if name not in LOSS_TERMS:
        raise ValueError(
            f"unknown loss term {name!r}; allowed: {', '.join(map(repr, LOSS_TERMS))}"
        )
    spec = LOSS_TERMS[name]
    extra = {k: v for k, v in spec.items() if k != "term"}
    return {"flavour": "loss_terms", f"rate_{spec['term']}": rate, **extra}


def _post_keys(base: Mapping[str, Any]) -> dict[str, Any]:
    """Post-training from the FP32 network trained as long as ``base`` and at its rate."""
    return {
        "mode": "post_training",
        "pretrain_epochs": base["epochs"],
        "pretrain_lr": base["lr"],
    }


def thesis_configs(
    base: Mapping[str, Any],
    *,
    thresholds: Sequence[float],
    granularities: Sequence[str],
    post_training_granularities: Sequence[str],
    terms: Sequence[str],
    rates: Sequence[float],
    scalar_inverse_rates: Sequence[float],
    sgd_thresholds: Sequence[float] = (),
    post_training_terms: Sequence[str] = (),
    seeds: Sequence[int] = (42,),
    term_granularities: Sequence[str] = ("row",),
) -> dict[str, list[dict[str, Any]]]:
    """The configurations of the thesis-setting runs of one dataset, by part.

    Parts: ``fp32`` (the reference, also the post-training parent), ``nested`` (λ x
    granularity from scratch), ``post_training`` (λ x ``post_training_granularities``,
    starting from the FP32 reference trained as long), ``loss_terms`` (each term of
    :data:`LOSS_TERMS` x ``rates`` x ``term_granularities`` (row scales by default), plus
    scalar scales with the inverse term at ``scalar_inverse_rates``; the
    ``post_training_terms`` at ``rates`` also from the FP32 network) and ``sgd`` (row-wise
    nested at ``sgd_thresholds`` trained with SGD instead of Adam).

    Arguments:
        base: the shared configuration (dataset, arch, limits, epochs and
            :data:`THESIS_SETTINGS`).
        thresholds, granularities: the nested grid.
        post_training_granularities: granularities also run from the FP32 network.
        terms, rates: the loss-term grid.
        scalar_inverse_rates: rates of the scalar-scale inverse-term runs.
        sgd_thresholds: thresholds of the SGD runs (none: no SGD part).
        post_training_terms: loss terms also run post-training (``term_granularities``,
            ``rates``).
        seeds: seeds of every part.
        term_granularities: kernel granularities of the loss-term grid.
    """
    analysis.check_granularities(granularities, "granularities")
    analysis.check_granularities(
        post_training_granularities, "post_training_granularities"
    )
    analysis.check_granularities(term_granularities, "term_granularities")
    nested = {**base, "flavour": "nested", "mode": "from_scratch"}
    seed_axis = {"seed": list(seeds)}
    post = {**nested, **_post_keys(base)}
    terms_row = [
        {**base, **_term_config(t, r), "kernel_granularity": g}
        for t in terms
        for g in term_granularities
        for r in rates
    ]
    scalar_inverse = [
        {**base, **_term_config("inverse", r), "kernel_granularity": "scalar"}
        for r in scalar_inverse_rates
    ]
    terms_post = [
        {**base, **_term_config(t, r), "kernel_granularity": g, **_post_keys(base)}
        for t in post_training_terms
        for g in term_granularities
        for r in rates
    ]
    sgd = {**nested, "optimizer": "sgd", "kernel_granularity": "row"}
    return {
        "fp32": analysis.grid({**base, "flavour": "fp32"}, seed_axis),
        "nested": analysis.grid(
            nested,
            {
                "kernel_granularity": list(granularities),
                "threshold": list(thresholds),
                **seed_axis,
            },
        ),
        "post_training": analysis.grid(
            post,
            {
                "kernel_granularity": list(post_training_granularities),
                "threshold": list(thresholds),
                **seed_axis,
            },
        ),
        "loss_terms": [
            c
            for cfg in terms_row + scalar_inverse + terms_post
            for c in analysis.grid(cfg, seed_axis)
        ],
        "sgd": analysis.grid(sgd, {"threshold": list(sgd_thresholds), **seed_axis})
        if sgd_thresholds
        else [],
    }


def conv_configs(
    dataset: str, sweeps: Mapping[str, Any]
) -> dict[str, list[dict[str, Any]]]:
    """The thesis-setting runs of the CNN (CIFAR-10) or the ResNet (Imagenette), by part.

    The network's published settings (:func:`thesis_settings`, its published epochs; the
    FP32 parent of the post-training runs trains as long, with the same learning-rate steps),
    the full training and test splits, a tenth of the training images held out for
    validation, and the parts of :func:`thesis_configs`: FP32, the nested λ grid over the
    thesis's four kernel granularities (:data:`THESIS_GRANULARITIES`) from scratch and
    post-training, and the loss terms with :data:`CONV_TERM_GRANULARITY` scales. No SGD or
    scalar-inverse runs.

    Arguments:
        dataset: ``"cifar10"`` or ``"imagenette"`` (:data:`CONV_DATASETS`).
        sweeps: ``thresholds`` and ``rates`` (required), optional ``thesis_terms`` (default:
            all of :data:`LOSS_TERMS`), ``granularities``, ``term_granularities``,
            ``post_training_terms`` (default: none) and ``seeds`` (default: 42), and any
            run-configuration keys, which override the published settings (e.g. ``epochs``).
    """
    from companion.engine.config import SCHEMA

    if dataset not in CONV_DATASETS:
        raise ValueError(
            f"unknown convolutional dataset {dataset!r}; allowed: "
            f"{', '.join(map(repr, CONV_DATASETS))}"
        )
    unknown = sorted(set(sweeps) - set(CONV_SWEEP_OPTIONS) - set(SCHEMA))
    missing = [k for k in ("thresholds", "rates") if k not in sweeps]
    if unknown or missing:
        raise ValueError(
            f"conv_sweeps {dict(sweeps)!r}: unknown key(s) {unknown}, missing {missing}; "
            f"allowed: {', '.join(CONV_SWEEP_OPTIONS)} and configuration keys, with "
            "thresholds and rates, e.g. {thresholds: [0.0, 1.0e-11], rates: [1.0e-10]}"
        )
    arch = THESIS_ARCHS[dataset]
    base = {
        "dataset": dataset,
        "arch": arch,
        "train_limit": None,
        "test_limit": None,
        "validation_fraction": 0.1,
        "epochs": regimes.THESIS[arch].epochs,
        **thesis_settings(arch),
        **{k: v for k, v in sweeps.items() if k in SCHEMA},
    }
    granularities = list(sweeps.get("granularities", THESIS_GRANULARITIES[arch]))
    return thesis_configs(
        base,
        thresholds=sweeps["thresholds"],
        granularities=granularities,
        post_training_granularities=granularities,
        terms=sweeps.get("thesis_terms", list(LOSS_TERMS)),
        rates=sweeps["rates"],
        scalar_inverse_rates=[],
        post_training_terms=sweeps.get("post_training_terms", []),
        seeds=sweeps.get("seeds", [THESIS_SETTINGS["seed"]]),
        term_granularities=sweeps.get("term_granularities", [CONV_TERM_GRANULARITY]),
    )


def conv_sweep_configs(
    sweeps: Mapping[str, Any] | None, present: Mapping[str, bool]
) -> dict[str, list[dict[str, Any]]]:
    """Dataset -> every configuration of :func:`conv_configs`, for each present dataset.

    ``sweeps`` ``None`` (the ``smoke`` and ``cpu`` profiles) or a dataset whose files are
    absent (``present``) gives nothing: its claims stay "not run".
    """
    if not sweeps:
        return {}
    return {
        d: [c for part in conv_configs(d, sweeps).values() for c in part]
        for d in CONV_DATASETS
        if present.get(d, False)
    }


def dataset_train_size(dataset: str, train_limit: int | None) -> int:
    """Training images of ``dataset`` before the validation split (at most ``train_limit``)."""
    from companion import data

    _, y, _ = data.load_with_info(dataset, "train", limit=train_limit)
    return len(y)


def validation_cadence(steps_per_epoch_: int) -> int:
    """``validation_every`` that validates about every :data:`THESIS_VALIDATION_STEPS` steps.

    :math:`\\max(1, \\operatorname{round}(1875 / \\text{steps per epoch}))`: 8 for the 225-step
    epochs of the MNIST 10k subset (every 1,800 steps), 1 for a complete training set.
    """
    if steps_per_epoch_ < 1:
        raise ValueError(
            f"steps_per_epoch_={steps_per_epoch_!r} must be >= 1; pass the optimizer steps "
            "of one epoch (steps_per_epoch)"
        )
    return max(1, round(THESIS_VALIDATION_STEPS / steps_per_epoch_))


def thesis_base(
    dataset: str,
    *,
    steps: int,
    train_limit: int | None = None,
    test_limit: int | None = None,
    validation_fraction: float = 0.1,
) -> dict[str, Any]:
    """The MLP configuration at :data:`THESIS_SETTINGS` trained for about ``steps`` steps.

    The epochs are :func:`epochs_for_steps` on the dataset's training images. Validation runs
    about as often in steps as in the thesis (every :data:`THESIS_VALIDATION_STEPS` = 1,875
    steps, one of its epochs): every ``max(1, round(1875 / steps per epoch))`` epochs, e.g.
    every 8th epoch of 225 steps on the MNIST 10k subset, every epoch of a complete training
    set (:func:`validation_cadence`, at most the epoch count, so a short run validates at
    least after its last epoch; the final validation metrics are the same either way).
    """
    n_train = dataset_train_size(dataset, train_limit)
    batch = THESIS_SETTINGS["batch_size"]
    per_epoch = steps_per_epoch(n_train, validation_fraction, batch)
    epochs = epochs_for_steps(steps, n_train, validation_fraction, batch)
    return {
        "dataset": dataset,
        "arch": "mlp",
        "train_limit": train_limit,
        "test_limit": test_limit,
        "validation_fraction": validation_fraction,
        "epochs": epochs,
        # at least the last epoch validates in short (smoke) runs
        "validation_every": min(validation_cadence(per_epoch), epochs),
        **THESIS_SETTINGS,
    }


def setting_words(runs: pd.DataFrame, profile: str) -> str:
    """Where a value comes from: dataset, profile, seeds, steps (one run set of a dataset)."""
    first = runs.iloc[0]
    n_fit, epochs = int(first["n_train"]), int(first["epochs"])
    steps = regimes.steps_per_run(n_fit, epochs, int(first["batch_size"]))
    seeds = sorted(set(runs["seed"]))
    return (
        f"{first['dataset_label']}, profile {profile}, seed{'s' * (len(seeds) > 1)} "
        f"{', '.join(map(str, seeds))}, {steps:,} steps ({epochs} epochs of "
        f"{n_fit:,} images)"
    )


def front_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The sweeps as the thesis plots them: accuracy and distinct integers per value."""
    keep = summary[summary["kind"] != "fp32"].copy()
    keep["value"] = keep["threshold"].where(
        keep["kind"].isin(["nested", "sgd"]), keep["rate"]
    )
    cols = [
        "kind",
        "mode",
        "granularity",
        "value",
        "val_accuracy",
        "test_accuracy",
        "val_loss",
        "distinct",
        "lo",
        "hi",
        "bits",
    ]
    return (
        keep[cols]
        .sort_values(["kind", "mode", "granularity", "value"])
        .reset_index(drop=True)
    )


_TERM_KEYS = {"difference": "deviation_implementation"}


def _line_colour(kind: str, i: int) -> str:
    """The term's colour (:data:`style.TERM_COLORS`) for loss terms, else the i-th palette colour."""
    key = _TERM_KEYS.get(kind, kind)
    return style.TERM_COLORS.get(key, f"C{i % 10}")


def _front_lines(ax: plt.Axes, fronts: pd.DataFrame, fp32_acc: float) -> None:
    groups = fronts.groupby(["kind", "mode", "granularity"])
    for i, ((kind, mode, gran), g) in enumerate(groups):
        post = mode == "post_training"
        ax.plot(
            g["distinct"],
            100 * g["test_accuracy"],
            marker="o" if gran != "scalar" else "s",
            ms=4,
            ls="--" if post or gran == "scalar" else "-",
            color=_line_colour(kind, i),
            label=f"{kind} {gran}" + (" (post-training)" if post else ""),
        )
    ax.axhline(
        100 * fp32_acc, color=style.method_color("fp32"), lw=1, ls=":", label="FP32"
    )
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("distinct integers (all parameters)")


def draw_fronts(summary: pd.DataFrame) -> plt.Figure:
    """Test accuracy against distinct integers: nested layer (left), loss terms (right)."""
    fronts = front_table(summary)
    fp32 = float(summary.loc[summary["kind"] == "fp32", "test_accuracy"].iloc[0])
    fig, axes = style.panel_grid(2, panel=(3.2, 3.0), extra=(0.0, 1.2), sharey=True)
    nested = fronts[fronts["kind"] == "nested"]
    terms = fronts[~fronts["kind"].isin(["nested", "sgd"])]
    for ax, part, title in (
        (axes[0], nested, "nested layer (λ)"),
        (axes[1], terms, "loss terms (γ)"),
    ):
        _front_lines(ax, part, fp32)
        ax.set_title(title)
        ax.legend(
            fontsize=8,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.25),
            ncol=1,
            frameon=False,
        )
    axes[0].set_ylabel("test accuracy (%)")
    fig.tight_layout()
    return fig
