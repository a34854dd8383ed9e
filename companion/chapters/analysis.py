"""Shared analysis helpers of the experiment notebooks (Pareto sweeps and baselines).

The notebooks ``pareto_lr_reg``, ``pareto_threshold`` and ``baselines`` stay thin: they
build configuration lists with :func:`grid`, train them with
:func:`companion.engine.experiment.sweep`, and turn the returned tidy table (one row per
run) into figures and generated Markdown with the helpers here.

* :func:`grid` -- cartesian product of parameter axes over a base configuration,
  validated by :func:`companion.engine.config.validate_config` and de-duplicated (keys
  that do not act for a flavour are ``None`` after validation, so e.g. a ``bits`` axis
  collapses for nested runs).
* :func:`aggregate_seeds` -- mean, sample standard deviation (``ddof=1``; NaN for one
  seed) and count over seeds of every configuration; Pareto fronts are computed on these
  seed means. A compression's "mean" is the compression of the mean model size,
  :math:`32 n / \\bar b` with :math:`\\bar b` the mean total bits
  (:data:`RATIO_OF_MEANS`), so it agrees with the mean-bits column and ranks
  configurations exactly as mean bits do.
* :func:`mark_front` / :func:`fronts` -- Pareto fronts (:mod:`lqs.pareto`) per group.
* :func:`reference_accuracy` and :func:`best_compression_table` -- "best compression at
  <= 1 point accuracy loss vs FP32", one row per group, with the parameters that achieve
  it; chosen on the validation split (:data:`SELECT_ON`), reported on the test set.
* :func:`write_snippet`, :func:`write_csv` -- atomic writes (temporary file + rename);
  figures are saved by :func:`companion.chapters.style.save_figure`.
* :func:`history_stats` -- per-epoch quantizer statistics (scales, integer ranges,
  unique values) of stored runs, tidy.
* :func:`matching_runs`, :func:`read_run_tables` -- another notebook's runs, only where
  data and training budget match (the loss-term overlay of ``baselines``).
* :func:`plot_band`, :func:`plot_front`, :func:`reference_lines` -- seed means with
  their spread, Pareto fronts (on an x axis never blown up by :func:`honest_xlim`) and
  the FP32 reference in the shared style of :mod:`companion.chapters.style`.
* :func:`resolve_datasets` -- which requested datasets are present; writes the
  ``<notebook>_missing.md`` snippet that the book shows (never substitutes a dataset).

A notebook *setup* is a plain dict of its parameters cell naming one dataset/network and
optional overrides (:func:`setup_config`), so that profiles differ only in parameters.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import ScalarFormatter

from companion import paths
from companion.chapters.style import PALETTE, method_color, set_theme
from lqs.fileio import atomic_write_text
from lqs.pareto import best_within, pareto_mask
from lqs.quantizers import GRANULARITIES

__all__ = [
    "METHOD_ORDER",
    "SETUP_OPTIONS",
    "setup_config",
    "setup_label",
    "add_setup",
    "prepare_notebook",
    "MODE_ORDER",
    "GRANULARITY_ORDER",
    "present_in_order",
    "sort_by_order",
    "grid",
    "check_granularities",
    "granularity_fits",
    "baseline_granularity",
    "config_columns",
    "config_id",
    "BUDGET_KEYS",
    "total_epochs",
    "RATIO_OF_MEANS",
    "aggregate_seeds",
    "mark_front",
    "fronts",
    "SELECT_ON",
    "reference_accuracy",
    "best_compression_table",
    "method_label",
    "method_style",
    "add_method",
    "fmt_sci",
    "fmt_pm",
    "join_labels",
    "markdown_table",
    "write_snippet",
    "write_csv",
    "history_stats",
    "matching_runs",
    "read_run_tables",
    "plot_band",
    "plot_front",
    "MIN_RELATIVE_SPAN",
    "honest_xlim",
    "reference_lines",
    "missing_data_markdown",
    "resolve_datasets",
]

#: display order of the methods in tables and legends (see :func:`method_label`)
METHOD_ORDER: tuple[str, ...] = (
    "FP32",
    "nested",
    "loss terms",
    "PTQ min-max per-tensor",
    "PTQ min-max per-channel",
    "fixed-bit STE per-tensor",
    "fixed-bit STE per-channel",
    "fixed-bit STE per-tensor from FP32",
    "fixed-bit STE per-channel from FP32",
    "LSQ per-tensor",
    "LSQ per-channel",
    "LSQ per-tensor from FP32",
    "LSQ per-channel from FP32",
)
#: suffix of a trained baseline that starts from the trained FP32 network (post_training)
FROM_FP32 = " from FP32"


def _config_module():
    """:mod:`companion.engine.config`, imported when first needed (it loads TensorFlow)."""
    from companion.engine import config

    return config


# --------------------------------------------------------------------------------------------
# configuration grids


#: keys of a notebook "setup" dict that are sweep axes or options, not configuration keys
SETUP_OPTIONS: tuple[str, ...] = (
    "granularities", "learning_rates", "l2_coefficients", "thresholds", "modes", "seeds",
)  # fmt: skip

_ARCH_NAMES = {"mlp": "MLP", "cnn": "CNN", "resnet": "ResNet"}


def setup_config(
    setup: Mapping[str, Any], defaults: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a notebook setup into its base configuration and its sweep options.

    A setup is a plain dict of the notebook's parameters cell, e.g.
    ``{"dataset": "fashion_mnist", "arch": "cnn", "train_limit": 4000, "granularities": ["filter"]}``:
    configuration keys override ``defaults`` (the notebook-wide values), keys in
    :data:`SETUP_OPTIONS` override the notebook-wide sweep axes.

    Returns:
        ``(base, options)``; ``base`` has ``dataset`` and ``arch`` (the dataset's network if not given).
    """
    if "dataset" not in setup:
        raise ValueError(
            f"setup {dict(setup)!r} has no 'dataset'; every setup names one of companion.data.DATASETS"
        )
    base = {
        **dict(defaults),
        **{k: v for k, v in setup.items() if k not in SETUP_OPTIONS},
    }
    options = {k: setup[k] for k in SETUP_OPTIONS if k in setup}
    cfg = _config_module()
    if base.get("arch") is None:
        base["arch"] = cfg.default_arch(base["dataset"])
    return base, options


def setup_label(dataset_label: str, arch: str) -> str:
    """Display name of a setup, e.g. ``"Fashion-MNIST · MLP"``."""
    return f"{dataset_label} · {_ARCH_NAMES.get(arch, arch)}"


def add_setup(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a last column ``setup``: :func:`setup_label` of each row."""
    labels = [
        setup_label(d, a) for d, a in zip(df["dataset_label"], df["arch"], strict=True)
    ]
    return df.assign(setup=labels)


def prepare_notebook(
    notebook: str,
    profile: str,
    results_dir: str | os.PathLike[str] = "",
    setups: Sequence[Mapping[str, Any]] | None = None,
    *,
    strict: bool = False,
) -> tuple[Path, list[dict[str, Any]]]:
    """The first step of an experiment notebook: results folder, theme, datasets.

    Creates ``results_dir`` (default ``results/<profile>/<notebook>/``), applies the
    plot theme and, given ``setups``, writes and prints the ``<notebook>_missing.md``
    snippet (:func:`resolve_datasets`).

    Returns:
        ``(out, runnable)``: the results folder and the setups whose dataset is present.
    """
    out = Path(results_dir) if results_dir else paths.results_dir(notebook, profile)
    out.mkdir(parents=True, exist_ok=True)
    set_theme()
    if not setups:
        return out, []
    datasets = [s["dataset"] for s in setups]
    present = resolve_datasets(datasets, out, notebook, strict=strict)
    print((out / f"{notebook}_missing.md").read_text())
    return out, [dict(s) for s in setups if s["dataset"] in present]


#: display order of training modes and of granularities in tables and legends
MODE_ORDER: tuple[str, ...] = ("from_scratch", "post_training")
GRANULARITY_ORDER: tuple[str, ...] = GRANULARITIES


def present_in_order(values: Iterable[Any], order: Sequence[Any]) -> list[Any]:
    """The entries of ``order`` that occur in ``values``, in ``order``'s order."""
    seen = set(values)
    return [v for v in order if v in seen]


def sort_by_order(
    df: pd.DataFrame, orders: Mapping[str, Sequence[Any]], extra: Sequence[str] = ()
) -> pd.DataFrame:
    """``df`` sorted by each column's display order (``orders``), then by ``extra``.

    ``orders`` maps a column to its values in display order (e.g. setups as they ran,
    :data:`TERM_ORDER`-like lists); values missing from an order sort last. Stable.
    """
    keys = {
        f"_order_{c}": df[c].map({v: i for i, v in enumerate(order)}).fillna(len(order))
        for c, order in orders.items()
    }
    ordered = df.assign(**keys).sort_values([*keys, *extra], kind="stable")
    return ordered.drop(columns=list(keys))


def check_granularities(
    values: Iterable[Any], parameter: str = "granularities"
) -> list[str]:
    """``values`` as a list if every entry is a name of :data:`GRANULARITIES`.

    Raises:
        ValueError: naming ``parameter``, the unknown value(s) and the allowed names,
            e.g. for ``--set 'granularities=[scalar, colum]'``.
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(
            f"parameter {parameter!r} must be a list of granularity "
            f"names, got {values!r}; allowed names: "
            f"{', '.join(GRANULARITIES)}"
        )
    values = list(values)
    unknown = [v for v in values if v not in GRANULARITIES]
    if unknown:
        raise ValueError(
            f"parameter {parameter!r} has unknown granularity "
            f"{', '.join(map(repr, unknown))}; allowed: "
            f"{', '.join(GRANULARITIES)} (fix the value in the profile "
            "or the --set override)"
        )
    return values


def granularity_fits(config: Mapping[str, Any]) -> bool:
    """Whether ``config``'s ``kernel_granularity`` exists for its network and flavour.

    ``channel``/``filter`` need convolutions; the baselines have ``scalar`` and one per
    output unit. Use it as ``where=`` of :func:`grid` when crossing datasets (networks)
    with granularities. A name that is no granularity at all (a typo such as
    ``"colum"``) raises ``ValueError`` (:func:`check_granularities`) instead of silently
    dropping the configuration.
    """
    cfg = _config_module()
    gran = config.get("kernel_granularity")
    if gran is not None:
        check_granularities([gran])
    if gran is None:
        return True
    arch = config.get("arch") or cfg.default_arch(
        config.get("dataset", cfg.SCHEMA["dataset"].default)
    )
    flavour = config.get("flavour") or cfg.SCHEMA["flavour"].default
    if flavour == "fp32":
        return True  # validation resets the granularity of an fp32 run
    return gran in cfg.allowed_kernel_granularities(arch, flavour)


def baseline_granularity(arch: str, kind: str) -> str:
    """The ``kernel_granularity`` of a baseline: ``per_tensor`` -> ``scalar``; ``per_channel`` ->
    one scale per output unit (``column`` for the MLP's dense kernels, ``filter`` for convolutions)."""
    if kind == "per_tensor":
        return "scalar"
    if kind == "per_channel":
        return "column" if arch == "mlp" else "filter"
    raise ValueError(
        f"unknown baseline granularity {kind!r}; allowed: 'per_tensor', 'per_channel'"
    )


def grid(
    base: Mapping[str, Any],
    axes: Mapping[str, Sequence[Any]] | None = None,
    *,
    where: Callable[[dict[str, Any]], bool] | None = None,
    validate: bool = True,
) -> list[dict[str, Any]]:
    """Configurations of the cartesian product of ``axes`` over ``base``.

    ``grid({"dataset": "mnist"}, {"lr": [1e-4, 1e-3], "seed": [0, 1]})`` gives four configurations,
    the last axis varying fastest. With ``validate`` each one goes through
    :func:`companion.engine.config.validate_config` (defaults filled, keys without effect set to ``None``; a bad
    value raises ``ValueError`` naming it) and exact duplicates after validation are dropped, the
    first kept.

    Arguments:
        base: keys shared by every configuration.
        axes: parameter name -> list of values (an empty list gives no configuration).
        where: predicate on the raw configuration (before validation); ``False`` drops it, e.g.
            :func:`granularity_fits` to skip per-filter scales on the MLP.
        validate: validate and de-duplicate through :mod:`companion.engine.config`.

    Returns:
        A list of configuration dicts (validated, with every key, when ``validate``).
    """
    axes = dict(axes or {})
    for name, values in axes.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ValueError(
                f"grid axis {name!r} must be a list of values, got {values!r}"
            )
    names = list(axes)
    cfg_mod = _config_module() if validate else None
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for combo in itertools.product(*(list(axes[n]) for n in names)):
        raw = {**dict(base), **dict(zip(names, combo, strict=True))}
        if where is not None and not where(raw):
            continue
        if cfg_mod is not None:
            raw = cfg_mod.validate_config(raw)
            key = cfg_mod.canonical_json(raw)
        else:
            key = json.dumps(raw, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        out.append(raw)
    return out


#: configuration keys that define a run's data and training budget: two runs are comparable
#: (overlaid, paired) only when all of them are equal
BUDGET_KEYS: tuple[str, ...] = (
    "dataset", "arch", "train_limit", "test_limit", "validation_fraction", "image_size",
    "epochs", "batch_size", "optimizer", "lr", "l2", "mode", "pretrain_epochs", "pretrain_lr",
)  # fmt: skip


def total_epochs(df: pd.DataFrame) -> pd.Series:
    """Epochs of training each run has had in all: ``epochs``, plus ``pretrain_epochs`` of
    its FP32 parent for a ``post_training`` run (its budget to compare at)."""
    pre = pd.to_numeric(df["pretrain_epochs"], errors="coerce").fillna(0)
    post = df["mode"].eq("post_training")
    return (df["epochs"] + pre.where(post, 0)).astype(int)


def config_columns(
    df: pd.DataFrame, *, exclude: Iterable[str] = ("seed",)
) -> list[str]:
    """Configuration keys (:data:`companion.engine.config.KEYS`) present as columns of ``df``, minus ``exclude``."""
    cfg = _config_module()
    keys = cfg.KEYS
    skip = set(exclude)
    return [k for k in keys if k in df.columns and k not in skip]


def config_id(df: pd.DataFrame, *, seed: str = "seed") -> pd.Series:
    """One string per row naming its configuration without the seed (canonical JSON of
    :func:`config_columns`): the runs of one configuration over seeds share it."""
    cols = config_columns(df, exclude=(seed,))

    def key(row: pd.Series) -> str:
        values = {c: (None if _isna(row[c]) else row[c]) for c in cols}
        return json.dumps(values, sort_keys=True, default=str)

    if df.empty:
        return pd.Series([], dtype=object, index=df.index)
    return df.apply(key, axis=1)


# --------------------------------------------------------------------------------------------
# seeds and fronts


#: metrics whose seed "mean" is a ratio of means, ``mean(numerator) / mean(denominator)``:
#: compression = FP32 bits / model bits, so its mean is 32·n / mean(total bits) (the mean of
#: per-seed ratios would disagree with the bits column and favour seed-to-seed variation)
RATIO_OF_MEANS: dict[str, tuple[str, str]] = {
    "mem_compression": ("mem_fp32_bits", "mem_total_bits"),
    "mem_q_compression": ("mem_q_fp32_bits", "mem_q_total_bits"),
    "mem_compression_twos": ("mem_fp32_bits", "mem_total_bits_twos"),
    "mem_q_compression_twos": ("mem_q_fp32_bits", "mem_q_total_bits_twos"),
    "compression": ("mem_fp32_bits", "mem_total_bits"),
}


def _seed_mean(group: pd.DataFrame, metric: str, values: np.ndarray) -> float:
    """Seed mean of ``metric``; a ratio metric (:data:`RATIO_OF_MEANS`) as a ratio of means."""
    ratio = RATIO_OF_MEANS.get(metric)
    if ratio is not None and all(c in group.columns for c in ratio):
        num, den = (
            pd.to_numeric(group[c], errors="coerce").to_numpy(dtype=float)
            for c in ratio
        )
        ok = ~(np.isnan(num) | np.isnan(den))
        return float(num[ok].mean() / den[ok].mean()) if ok.any() else math.nan
    return float(values.mean()) if values.size else math.nan


def aggregate_seeds(
    df: pd.DataFrame,
    metrics: Sequence[str],
    by: Sequence[str] | None = None,
    *,
    seed: str = "seed",
) -> pd.DataFrame:
    """Mean and spread over seeds: one row per configuration without its seed.

    Arguments:
        df: tidy table, one row per run.
        metrics: numeric columns to summarise (missing ones are skipped).
        by: grouping columns; default every configuration column but ``seed`` plus
            ``dataset_label`` and ``method`` when present. Missing values form their own group.
        seed: name of the seed column.

    Returns:
        The ``by`` columns, then ``<m>_mean``, ``<m>_std`` (sample standard deviation, ``ddof=1``;
        NaN with one seed) and ``<m>_min``/``<m>_max`` for every metric (a compression's
        ``_mean`` is the ratio of means of :data:`RATIO_OF_MEANS`, its spread that of the
        per-seed ratios), ``n_seeds`` (runs in the
        group) and ``seeds`` (the sorted seeds, comma-separated).
    """
    if by is None:
        by = config_columns(df, exclude=(seed,)) + [
            c for c in ("dataset_label", "method") if c in df.columns
        ]
    by = [c for c in by if c in df.columns]
    metrics = [m for m in metrics if m in df.columns]
    if not by:
        raise ValueError(
            f"nothing to group by: none of the configuration columns are in {list(df.columns)}"
        )
    rows = []
    for key, group in df.groupby(by, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = {
            c: (None if _isna(v) else v) for c, v in zip(by, key, strict=True)
        }
        for m in metrics:
            values = pd.to_numeric(group[m], errors="coerce").to_numpy(dtype=float)
            values = values[~np.isnan(values)]
            row[f"{m}_mean"] = _seed_mean(group, m, values)
            row[f"{m}_std"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
            row[f"{m}_min"] = float(values.min()) if values.size else math.nan
            row[f"{m}_max"] = float(values.max()) if values.size else math.nan
        row["n_seeds"] = len(group)
        if seed in group:
            row["seeds"] = ", ".join(
                str(int(s)) for s in sorted(group[seed].dropna().unique())
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _isna(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def mark_front(
    df: pd.DataFrame, x: str, y: str, by: str | Sequence[str] | None = None
) -> pd.Series:
    """Boolean Series (``df``'s index): row on the Pareto front of ``x`` (min) vs ``y`` (max) in its group."""
    mask = pd.Series(False, index=df.index)
    if df.empty:
        return mask
    if by is None:
        mask[:] = pareto_mask(df[x], df[y])
        return mask
    for _, group in df.groupby(
        by if isinstance(by, str) else list(by), dropna=False, sort=False
    ):
        mask.loc[group.index] = pareto_mask(group[x], group[y])
    return mask


def fronts(
    df: pd.DataFrame, x: str, y: str, by: str | Sequence[str] | None = None
) -> pd.DataFrame:
    """Rows on the front of their group, sorted by the group columns and ``x``."""
    front = df[mark_front(df, x, y, by)]
    order = ([by] if isinstance(by, str) else list(by or [])) + [x]
    return front.sort_values(order, kind="stable")


# --------------------------------------------------------------------------------------------
# reference and best-compression tables


#: the split every selection (λ, rate, lr, L2, best configuration, FP32 reference) is made on;
#: test numbers are reported for the selected configurations (held out from the training data
#: by the engine: ``validation_fraction``)
SELECT_ON = "val_accuracy"


def reference_accuracy(
    df: pd.DataFrame,
    by: str | Sequence[str] = "dataset",
    *,
    accuracy: str = "test_accuracy",
    select: str = SELECT_ON,
    flavour: str = "flavour",
) -> pd.Series:
    """FP32 reference accuracy per group: seed-mean ``accuracy`` of the best ``fp32`` configuration.

    ``df`` is the per-run table; seed means are taken per FP32 configuration, and with several
    FP32 configurations in a group (e.g. two learning rates) the one with the best seed-mean
    ``select`` accuracy (the validation split) is the reference -- the conservative choice for
    "loss vs FP32", made without looking at the test set. The Series is indexed by ``by``.
    """
    by_list = [by] if isinstance(by, str) else list(by)
    fp = df[df[flavour] == "fp32"]
    if fp.empty:
        return pd.Series(dtype=float, name=accuracy)
    missing = [c for c in (*by_list, accuracy, select) if c not in fp.columns]
    if missing:
        raise ValueError(
            f"reference_accuracy: columns {missing} not in the table (columns: "
            f"{list(fp.columns)}); runs stored before the validation split need "
            "retraining (a fresh results store)"
        )
    group_by = list(dict.fromkeys(by_list + config_columns(fp, exclude=("seed",))))
    agg = aggregate_seeds(fp, list(dict.fromkeys([accuracy, select])), by=group_by)
    score = agg.assign(_score=agg[f"{select}_mean"].fillna(-np.inf))
    best = agg.loc[score.groupby(by_list, dropna=False)["_score"].idxmax()]
    ref = best.set_index(by_list)[f"{accuracy}_mean"]
    ref.name = accuracy
    return ref


def best_compression_table(
    agg: pd.DataFrame,
    reference: Mapping[Any, float] | pd.Series,
    *,
    by: Sequence[str] = ("dataset", "method"),
    ref_by: str | Sequence[str] = "dataset",
    max_drop: float = 0.01,
    accuracy: str = f"{SELECT_ON}_mean",
    report: str = "test_accuracy_mean",
    report_reference: Mapping[Any, float] | pd.Series | None = None,
    compression: str = "mem_compression_mean",
    keep: Sequence[str] = (),
) -> pd.DataFrame:
    """Best compression within ``max_drop`` of the reference accuracy, one row per ``by`` group.

    The choice is made on ``accuracy`` (the validation split) against ``reference`` (FP32 on
    the same split): :func:`lqs.pareto.best_within` on each group of ``agg`` (seed means,
    from :func:`aggregate_seeds`); the winner's ``report`` accuracy (the test set) is what
    the table reports. A group without a qualifying row keeps a row with NaN values and
    ``within = False``; a group whose reference is unknown is left out.

    Arguments:
        agg: table with ``accuracy``, ``report`` and ``compression`` columns.
        reference: selection-split reference accuracy keyed by the ``ref_by`` value(s)
            (e.g. FP32 validation accuracy per dataset).
        by: grouping columns of the output (e.g. dataset and method).
        ref_by: column(s) whose value(s) key ``reference``.
        max_drop: allowed drop in accuracy units (0.01 = one percentage point).
        accuracy: the selection column; report: the reported column of the winner.
        report_reference: the reference on the ``report`` split (FP32 test accuracy),
            shown as ``reference_accuracy``; None shows ``reference``.
        compression: column name.
        keep: further columns copied from the winning row (parameters that achieve it,
            spread, ...).

    Returns:
        One row per group with the columns ``by``, ``reference_accuracy``,
        ``selection_reference``, ``within`` (a row qualified), ``selection_accuracy``,
        ``accuracy`` (``report`` of the winner), ``compression``, then ``keep``.
    """
    missing = [c for c in (accuracy, report, compression) if c not in agg.columns]
    if missing:
        raise ValueError(
            f"best_compression_table: columns {missing} not in the table; aggregate "
            "val_accuracy and test_accuracy over seeds (runs stored before the "
            "validation split need retraining)"
        )
    ref_cols = [ref_by] if isinstance(ref_by, str) else list(ref_by)
    by = list(by)
    ref_map, shown_map = _as_map(reference), _as_map(report_reference)
    rows = []
    for key, group in agg.groupby(by, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        rkey = tuple(group[c].iloc[0] for c in ref_cols)
        rkey = rkey[0] if len(rkey) == 1 else rkey
        if rkey not in ref_map or _isna(ref_map[rkey]):
            continue
        ref = float(ref_map[rkey])
        index = best_within(group[accuracy], group[compression], ref, max_drop=max_drop)
        best = None if index is None else group.iloc[index]
        row: dict[str, Any] = dict(zip(by, key, strict=True))
        row["reference_accuracy"] = float(shown_map.get(rkey, ref))
        row["selection_reference"] = ref
        row["within"] = best is not None
        for out, col in (
            ("selection_accuracy", accuracy),
            ("accuracy", report),
            ("compression", compression),
        ):
            row[out] = float(best[col]) if best is not None else math.nan
        for c in keep:
            row[c] = best[c] if best is not None and c in best.index else None
        rows.append(row)
    columns = by + [
        "reference_accuracy",
        "selection_reference",
        "within",
        "selection_accuracy",
        "accuracy",
        "compression",
        *keep,
    ]
    return pd.DataFrame(rows, columns=columns)


def _as_map(values: Mapping[Any, float] | pd.Series | None) -> dict[Any, float]:
    if values is None:
        return {}
    return dict(values.items()) if isinstance(values, pd.Series) else dict(values)


# --------------------------------------------------------------------------------------------
# labels and formatting


def method_label(row: Mapping[str, Any]) -> str:
    """Human name of a run's method from its configuration (see :data:`METHOD_ORDER`).

    ``fp32`` -> ``FP32``, ``nested`` -> ``nested``, ``loss_terms`` -> ``loss terms``; the baselines
    name their granularity: ``scalar`` is per-tensor, any other (``column``/``filter``) per-channel;
    a fixed-bit or LSQ network fine-tuned from the trained FP32 network (``post_training``, LSQ's
    own protocol) ends in :data:`FROM_FP32`.
    """
    flavour = row.get("flavour")
    if flavour == "fp32":
        return "FP32"
    if flavour == "nested":
        return "nested"
    if flavour == "loss_terms":
        return "loss terms"
    per = (
        "per-tensor"
        if row.get("kernel_granularity") in (None, "scalar")
        else "per-channel"
    )
    names = {"ptq": "PTQ min-max", "fixed_bits": "fixed-bit STE", "lsq": "LSQ"}
    if flavour in names:
        start = (
            FROM_FP32 if flavour != "ptq" and row.get("mode") == "post_training" else ""
        )
        return f"{names[flavour]} {per}{start}"
    raise ValueError(
        f"unknown flavour {flavour!r}; allowed: fp32, nested, loss_terms, ptq, fixed_bits, lsq"
    )


#: (line style, marker) per method family; per-channel variants are dashed; the colour
#: is the method's colour of :data:`companion.chapters.style.METHOD_COLORS`
_METHOD_STYLE = {
    "FP32": ("-", "*"), "nested": ("-", "D"), "loss terms": ("-", "D"),
    "PTQ min-max": ("-", "s"), "fixed-bit STE": ("-", "^"), "LSQ": ("-", "v"),
}  # fmt: skip


def method_style(method: str) -> dict[str, Any]:
    """Colour, line style and marker of a method for plots.

    The colour is the method's one colour in every chapter
    (:func:`companion.chapters.style.method_color`: black FP32, blue nested, green loss
    terms, grey PTQ, purple fixed-bit, vermillion LSQ); per-channel variants use a
    dashed line, variants started from FP32 a dotted one and an open marker.
    """
    family = next(
        (k for k in _METHOD_STYLE if method == k or method.startswith(k + " ")), None
    )
    if family is None:
        raise ValueError(
            f"unknown method {method!r}; allowed: {', '.join(METHOD_ORDER)}"
        )
    ls, marker = _METHOD_STYLE[family]
    base = method.removesuffix(FROM_FP32)
    if base.endswith("per-channel"):
        ls = "--"
    style = {"color": method_color(family), "ls": ls, "marker": marker}
    if base != method:
        style.update(ls=":" if ls == "-" else "-.", mfc="white")
    return style


def add_method(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``method`` column (:func:`method_label` of each row)."""
    out = df.copy()
    out["method"] = (
        [method_label(r) for r in out.to_dict("records")]
        if len(out)
        else pd.Series(dtype=str)
    )
    return out


def fmt_sci(x: Any) -> str:
    """Compact scientific notation for parameters: ``1e-09`` -> ``1e-9``, ``0.0003`` -> ``3e-4``, 0 -> ``0``."""
    if x is None or _isna(x):
        return "–"
    x = float(x)
    if x == 0:
        return "0"
    mant, exp = f"{x:.1e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"


def fmt_pm(mean: Any, std: Any, *, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` (times ``scale``, e.g. accuracy in %); only the mean when std is NaN."""
    if mean is None or _isna(mean):
        return "–"
    text = f"{float(mean) * scale:.{digits}f}"
    if std is not None and not _isna(std):
        text += f" ± {float(std) * scale:.{digits}f}"
    return text


def join_labels(values: Iterable[Any]) -> str:
    """Distinct non-empty values in first-seen order, comma-separated (dataset labels for captions)."""
    seen: list[str] = []
    for v in values:
        if v is None or _isna(v):
            continue
        v = str(v)
        if v and v not in seen:
            seen.append(v)
    return ", ".join(seen)


def markdown_table(df: pd.DataFrame, *, floatfmt: str = ".3g") -> str:
    """``df`` as a GitHub/MyST pipe table (pandas ``to_markdown``, no index); empty cells for None/NaN.

    Float columns are formatted with ``floatfmt`` and right-aligned; text cells are kept verbatim
    (``"1e-9"`` is not turned back into a number).
    """
    shown = pd.DataFrame(index=df.index)
    align = []
    for col in df.columns:
        values = df[col]
        numeric = pd.api.types.is_numeric_dtype(
            values
        ) and not pd.api.types.is_bool_dtype(values)
        if numeric:
            shown[col] = [
                (
                    ""
                    if _isna(v)
                    else format(v, floatfmt)
                    if isinstance(v, float)
                    else str(v)
                )
                for v in values
            ]
        else:
            shown[col] = ["" if v is None or _isna(v) else str(v) for v in values]
        align.append("right" if numeric else "left")
    # numparse off: strings such as "1e-9" stay as written
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"


# --------------------------------------------------------------------------------------------
# atomic writes


def write_snippet(results_dir: str | os.PathLike[str], stem: str, text: str) -> Path:
    """Write the Markdown snippet ``results_dir/<stem>.md`` atomically (temporary file + rename)."""
    if not stem or "/" in stem or stem.endswith(".md"):
        raise ValueError(
            f"snippet stem must be a plain file stem without '/' or '.md', got {stem!r}"
        )
    text = text if text.endswith("\n") else text + "\n"
    return atomic_write_text(Path(results_dir) / f"{stem}.md", text)


def write_csv(df: pd.DataFrame, results_dir: str | os.PathLike[str], name: str) -> Path:
    """Write ``df`` (no index) to ``results_dir/<name>.csv`` atomically."""
    return atomic_write_text(Path(results_dir) / f"{name}.csv", df.to_csv(index=False))


# --------------------------------------------------------------------------------------------
# per-epoch histories


def history_stats(
    runs: pd.DataFrame,
    *,
    keep: Sequence[str] = (),
    last_only: bool = False,
    store: Any = None,
) -> pd.DataFrame:
    """Quantizer statistics of stored runs' histories, tidy: one row per run, epoch, layer, parameter, stat.

    Reads each run's per-epoch history (:func:`companion.engine.experiment.load_history`, ``long=True``): the
    statistics :data:`companion.engine.experiment.HISTORY_STATS` (scale mean/min/max, max|P_q|, unique P_q
    values, bits) per quantized parameter, epoch 0 = before training.

    Arguments:
        runs: the sweep's table (needs ``config_hash``).
        keep: columns of ``runs`` copied onto every row (e.g. ``threshold``, ``seed``, ``setup``).
        last_only: only the last epoch of every run.
        store: results store (default: the experiment's default store).
    """
    from companion.engine import experiment

    parts = []
    for rec in runs.to_dict("records"):
        kwargs = {} if store is None else {"store": store}
        long = experiment.load_history(rec["config_hash"], long=True, **kwargs)
        if last_only and len(long):
            long = long[long["epoch"] == long["epoch"].max()]
        long = long.assign(
            config_hash=rec["config_hash"], **{k: rec.get(k) for k in keep}
        )
        parts.append(long)
    columns = ["config_hash", *keep, "epoch", "layer", "parameter", "stat", "value"]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]


def matching_runs(
    df: pd.DataFrame, base: Mapping[str, Any], keys: Sequence[str]
) -> pd.DataFrame:
    """Rows of ``df`` whose ``keys`` equal ``base``'s values (``None`` matches a missing value).

    Used to overlay runs of another notebook only where they share the data and training budget
    (dataset, network, subset sizes, epochs, ...). A key missing from ``df`` matches nothing
    unless ``base``'s value is ``None``.
    """
    mask = pd.Series(True, index=df.index)
    for k in keys:
        want = base.get(k)
        if k not in df.columns:
            if want is not None:
                return df.iloc[:0]
            continue
        col = df[k]
        if want is None or _isna(want):
            mask &= col.isna()
        elif isinstance(want, (int, float)) and not isinstance(want, bool):
            mask &= (
                pd.to_numeric(col, errors="coerce")
                .sub(float(want))
                .abs()
                .le(1e-12 * max(1.0, abs(float(want))))
            )
        else:
            mask &= col.astype(object).map(lambda v, w=want: _equal(v, w))
    return df[mask]


def _equal(value: Any, want: Any) -> bool:
    """``value == want`` for a table cell: a string compares with ``str(want)``, NaN never."""
    if isinstance(value, str):
        return value == str(want)
    return (not _isna(value)) and value == want


def read_run_tables(
    folder: str | os.PathLike[str],
    *,
    required: Sequence[str] = ("config_hash",),
    pattern: str = "*.csv",
) -> pd.DataFrame:
    """Concatenate the per-run CSV tables of a notebook's results folder (one row per ``config_hash``).

    Files matching ``pattern`` (e.g. ``"runs.csv"``) but lacking a ``required`` column (summaries,
    seed means) are skipped; an absent folder gives an empty table.
    """
    folder = Path(folder)
    parts = []
    for path in sorted(folder.glob(pattern)) if folder.is_dir() else []:
        try:
            df = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            continue
        if all(c in df.columns for c in required):
            parts.append(df)
    if not parts:
        return pd.DataFrame(columns=list(required))
    out = pd.concat(parts, ignore_index=True)
    return (
        out.drop_duplicates(subset=["config_hash"])
        if "config_hash" in out.columns
        else out
    )


# --------------------------------------------------------------------------------------------
# plotting helpers (seed means with spread; styling from companion.chapters.style)


def _groups(df: pd.DataFrame, hue: str | None, hue_order: Sequence[Any] | None):
    if hue is None:
        return [(None, df)]
    order = list(hue_order) if hue_order is not None else list(dict.fromkeys(df[hue]))
    return [(k, df[df[hue] == k]) for k in order if (df[hue] == k).any()]


def plot_band(
    ax,
    agg: pd.DataFrame,
    x: str,
    y: str,
    *,
    hue: str | None = None,
    hue_order: Sequence[Any] | None = None,
    palette: Sequence[Any] | None = None,
    scale: float = 1.0,
    label: Callable[[Any], str] = str,
    marker: str = "o",
    **kwargs,
) -> None:
    """Seed mean of ``y`` against ``x`` as a line per ``hue`` group, mean ± std as a band.

    ``agg`` comes from :func:`aggregate_seeds` (columns ``<y>_mean``/``<y>_std``); ``scale``
    multiplies the values (100 for accuracy in %).
    """
    palette = list(palette or PALETTE)
    for i, (key, g) in enumerate(_groups(agg, hue, hue_order)):
        g = g.sort_values(x)
        mean = g[f"{y}_mean"].to_numpy(float) * scale
        std = np.nan_to_num(g[f"{y}_std"].to_numpy(float)) * scale
        colour = palette[i % len(palette)]
        ax.plot(
            g[x],
            mean,
            marker=marker,
            ms=4,
            color=colour,
            label=None if key is None else label(key),
            **kwargs,
        )
        ax.fill_between(g[x], mean - std, mean + std, color=colour, alpha=0.18, lw=0)


def plot_front(
    ax,
    agg: pd.DataFrame,
    x: str,
    y: str,
    *,
    hue: str | None = None,
    hue_order: Sequence[Any] | None = None,
    palette: Sequence[Any] | None = None,
    scale_y: float = 100.0,
    label: Callable[[Any], str] = str,
    front_label: bool = True,
) -> pd.DataFrame:
    """All seed-mean points with ± std error bars (faint) and each ``hue`` group's Pareto front.

    The front (memory ``x`` minimised, ``y`` maximised, on seed means) is drawn as a step line,
    its points as diamonds with a black edge; the x axis spans at least
    :data:`MIN_RELATIVE_SPAN` of its centre (:func:`honest_xlim`). Returns the front rows.
    """
    palette = list(palette or PALETTE)
    fronts_ = []
    for i, (key, g) in enumerate(_groups(agg, hue, hue_order)):
        colour = palette[i % len(palette)]
        xs, ys = (
            g[f"{x}_mean"].to_numpy(float),
            g[f"{y}_mean"].to_numpy(float) * scale_y,
        )
        xe = np.nan_to_num(g[f"{x}_std"].to_numpy(float)) if f"{x}_std" in g else None
        ye = (
            np.nan_to_num(g[f"{y}_std"].to_numpy(float)) * scale_y
            if f"{y}_std" in g
            else None
        )
        ax.errorbar(
            xs,
            ys,
            xerr=xe,
            yerr=ye,
            fmt="o",
            ms=4,
            color=colour,
            alpha=0.45,
            elinewidth=0.8,
            label=None if key is None else label(key),
        )
        mask = pareto_mask(xs, ys)
        order = np.argsort(xs[mask], kind="stable")
        fx, fy = xs[mask][order], ys[mask][order]
        ax.step(fx, fy, where="post", color=colour, lw=1.6)
        ax.scatter(
            fx,
            fy,
            color=colour,
            s=46,
            marker="D",
            edgecolor="black",
            zorder=3,
            label=("Pareto front" if front_label and i == 0 else None),
        )
        fronts_.append(g[mask])
    honest_xlim(ax)
    return pd.concat(fronts_) if fronts_ else agg.iloc[:0]


#: the x axis of a front spans at least this share of its centre value, so that memory
#: differences of a few thousandths of a bit are not drawn across the whole panel
MIN_RELATIVE_SPAN = 0.05


def honest_xlim(ax) -> None:
    """Widen a tiny x range to :data:`MIN_RELATIVE_SPAN` of its centre; no tick offset.

    The data limits are widened and autoscaling stays on, so data drawn later still
    widen the axis; the ticks of a linear axis are written in full (no ``+1.435e1``
    offset).

    Arguments:
        ax: the axes of a front (:func:`plot_front` calls this after drawing).
    """
    lo, hi = ax.dataLim.intervalx
    centre, span = (lo + hi) / 2, hi - lo
    if np.isfinite(centre) and centre > 0 and span < MIN_RELATIVE_SPAN * centre:
        half = MIN_RELATIVE_SPAN * centre / 2
        y = ax.dataLim.y0
        ax.update_datalim([(centre - half, y), (centre + half, y)], updatey=False)
        ax.autoscale_view(scaley=False)
    if isinstance(ax.xaxis.get_major_formatter(), ScalarFormatter):
        ax.ticklabel_format(axis="x", useOffset=False, style="plain")


def reference_lines(
    ax, reference: float | None, *, max_drop: float = 0.01, scale: float = 100.0
) -> None:
    """Horizontal FP32 reference (dashed) and the ``reference - max_drop`` bar (dotted), in % by default."""
    if reference is None or _isna(reference):
        return
    ax.axhline(reference * scale, color="black", ls="--", lw=1, label="FP32")
    ax.axhline(
        (reference - max_drop) * scale,
        color="black",
        ls=":",
        lw=1,
        label=f"FP32 − {max_drop * scale:g} pt",
    )


# --------------------------------------------------------------------------------------------
# datasets that are not present


def _truthy(value: Any) -> bool:
    return value is not None and not _isna(value) and bool(value)


def missing_data_markdown(available: pd.DataFrame, requested: Sequence[str]) -> str:
    """Markdown saying which requested datasets were not run and how to get them.

    ``available`` is :func:`companion.data.loaders.available`'s table (columns
    ``dataset``, ``present``, ``label``, ``missing``, ``fetch``, ``is_subset``). All
    present: one sentence saying so (naming any partial copy, e.g. "MNIST (10k
    subset)"); otherwise a warning admonition with one "not run: <file> missing" line
    and the fix per missing dataset.
    """
    table = available.set_index("dataset")
    unknown = [d for d in requested if d not in table.index]
    if unknown:
        raise ValueError(
            f"datasets {unknown} are not in the availability table (rows: {list(table.index)})"
        )
    present = [d for d in requested if bool(table.loc[d, "present"])]
    missing = [d for d in requested if d not in present]
    notes = [
        f"{table.loc[d, 'label']} is a partial copy (see data/README.md)"
        for d in present
        if "is_subset" in table.columns and _truthy(table.loc[d, "is_subset"])
    ]
    if not missing:
        text = (
            "All requested datasets were present: "
            + ", ".join(str(table.loc[d, "label"]) for d in present)
            + "."
        )
        if notes:
            text += " " + "; ".join(notes) + "."
        return text + "\n"
    lines = ["```{admonition} Datasets not run", ":class: warning"]
    for d in missing:
        what = str(table.loc[d, "missing"]) or "its data"
        fix = str(table.loc[d, "fetch"]) or "run `make data`"
        lines.append(
            f"- **{table.loc[d, 'label']}** not run: `{what}` missing ({fix})."
        )
    if present:
        lines.append("")
        lines.append(
            "Run: "
            + ", ".join(str(table.loc[d, "label"]) for d in present)
            + "."
            + (" " + "; ".join(notes) + "." if notes else "")
        )
    lines.append("```")
    return "\n".join(lines) + "\n"


def resolve_datasets(
    requested: Sequence[str],
    results_dir: str | os.PathLike[str],
    notebook: str,
    *,
    strict: bool = False,
    available: pd.DataFrame | None = None,
) -> list[str]:
    """The requested datasets that are present; writes ``results_dir/<notebook>_missing.md`` always.

    Missing datasets are skipped (never replaced by another one); with ``strict`` a
    ``FileNotFoundError`` naming them and the fix is raised instead (after the snippet
    is written).

    Arguments:
        requested: dataset names, in order.
        results_dir: where the snippet goes.
        notebook: notebook name (snippet stem ``<notebook>_missing``).
        strict: raise when a requested dataset is missing.
        available: :func:`companion.data.loaders.available`'s table (default: computed
            for ``requested``).
    """
    requested = list(dict.fromkeys(requested))
    if not requested:
        raise ValueError(
            "no dataset requested; give at least one of the companion.data.DATASETS names"
        )
    if available is None:
        from companion import data

        available = data.available(requested)
    write_snippet(
        results_dir, f"{notebook}_missing", missing_data_markdown(available, requested)
    )
    table = available.set_index("dataset")
    present = [d for d in requested if bool(table.loc[d, "present"])]
    missing = [d for d in requested if d not in present]
    if missing and strict:
        details = "; ".join(
            f"{d}: {table.loc[d, 'missing']} missing ({table.loc[d, 'fetch']})"
            for d in missing
        )
        raise FileNotFoundError(
            f"strict_data: requested datasets are missing -- {details}"
        )
    return present
