"""Support code of the ``generalization`` notebook: a small-scale reproduction of QGen's findings.

QGen (AskariHemmat et al., 2024) claims that quantization-aware training (QAT) regularizes: the
quantization noise drives training to flatter minima, 8-bit models generalize like float32 ones,
fewer bits shrink the generalization gap at the cost of a higher training loss, and QAT models are
more robust to distorted inputs. This module holds everything the notebook needs beyond
:mod:`lqs.generalization` and :mod:`companion.chapters.corruptions` (which hold the measures themselves):

* the study design: :func:`model_specs`, :func:`study_configs` (configurations for
  :func:`companion.engine.experiment.sweep`), :func:`model_key` / :func:`model_label` / :func:`model_order`;
* data availability per part of the study (:func:`check_parts`): a missing dataset is reported
  as "not run: ... missing", never replaced by another one;
* measuring a list of trained runs into tidy tables (:func:`measure_runs`, :func:`landscapes`),
  every result cached on disk per run and measure settings (:func:`cached_frame`);
* which weights the perturbation measures move (:data:`WEIGHTS_MODES`: the dequantized
  float copy, or the quantized model with frozen scales), both recorded in column ``weights``;
* aggregation and QGen's claims decided by explicit rules (:func:`model_metrics`,
  :func:`summarize`, :func:`compare`, :func:`claims_table` with :func:`trend_slopes` over the
  bit widths and :func:`matched_model` at FP32's training loss, :func:`claims_detail`) and the
  Markdown snippets the book includes (:func:`claims_markdown`, :func:`gap_markdown`,
  :func:`radii_markdown`);
* the chapter's figures, drawn from those tables (``plot_*``).

Identification columns of every tidy table: :data:`ID_COLUMNS` (one row per model x seed x
measure setting).

References
----------
- M. AskariHemmat et al., "QGen: On the Ability to Generalize in Quantization Aware Training",
  2024, https://arxiv.org/abs/2404.11769
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import to_rgb

from companion.chapters import corruptions, stats
from companion.chapters.analysis import fmt_pm
from companion.chapters.style import caption, method_color
from companion.engine import experiment
from lqs import generalization
from lqs.fileio import atomic_write

__all__ = [
    "MEASURE_VERSION",
    "WEIGHTS_MODES",
    "EXTRA_MODELS",
    "ID_COLUMNS",
    "METRICS",
    "CLAIMS",
    "ClaimSpec",
    "TRAIN_LOSS_MARGIN",
    "MIN_TRAIN_ACCURACY",
    "matched_model",
    "trend_slopes",
    "MeasureSettings",
    "model_specs",
    "model_key",
    "model_label",
    "model_order",
    "model_colors",
    "study_configs",
    "check_parts",
    "train_study",
    "annotate_runs",
    "cached_frame",
    "measure_runs",
    "landscapes",
    "model_metrics",
    "robustness_rows",
    "summarize",
    "compare",
    "claims_table",
    "claims_detail",
    "claims_markdown",
    "gap_markdown",
    "GAP_COLUMNS",
    "case_settings",
    "data_status_markdown",
    "not_run_notes",
    "setup_markdown",
    "radii_markdown",
    "CaptionContext",
    "flatness_label",
    "figure_caption",
    "format_mean_std",
    "case_title",
    "plot_gap",
    "plot_bin_widths",
    "plot_sharpness",
    "plot_landscape_1d",
    "plot_landscape_2d",
    "plot_robustness",
    "average_radii",
]

#: bump when a change of the measuring code alters cached numbers (invalidates the measure cache)
MEASURE_VERSION = "2"
#: models trained besides FP32 and the fixed-bit QAT models
EXTRA_MODELS: tuple[str, ...] = ("lsq", "nested")
#: columns that identify one trained model in every tidy table
ID_COLUMNS: tuple[str, ...] = (
    "case", "arch", "dataset", "dataset_label", "model", "label", "flavour", "bits", "seed", "config_hash",
)  # fmt: skip
#: per-model metrics of :func:`model_metrics` -> (description, unit) used by tables and claims
METRICS: dict[str, tuple[str, str]] = {
    "gap_loss": ("loss gap (test - train loss)", "nats"),
    "gap_accuracy": ("accuracy gap (train - test accuracy)", "pp"),
    "train_loss": ("training loss", "nats"),
    "test_loss": ("test loss", "nats"),
    "train_accuracy": ("training accuracy", "%"),
    "test_accuracy": ("test accuracy", "%"),
    "sharpness_average": (
        "average-case adaptive sharpness at the dequantized weights",
        "nats",
    ),
    "sharpness_worst": (
        "worst-case adaptive sharpness at the dequantized weights",
        "nats",
    ),
    "pac_bayes_sigma": ("PAC-Bayes noise level sigma* at the dequantized weights", ""),
    "sharpness_average_frozen": (
        "average-case adaptive sharpness with frozen scales",
        "nats",
    ),
    "sharpness_worst_frozen": (
        "worst-case adaptive sharpness with frozen scales",
        "nats",
    ),
    "pac_bayes_sigma_frozen": ("PAC-Bayes noise level sigma* with frozen scales", ""),
    "clean_accuracy": ("clean accuracy (robustness subset)", "%"),
    "corrupted_accuracy": ("mean accuracy under corruptions", "%"),
    "corrupted_loss_gap": (
        "loss gap on corrupted test data (corrupted test - train loss)",
        "nats",
    ),
    "corrupted_error_ratio": ("error under corruptions relative to clean error", ""),
}
_PERCENT = {
    "train_accuracy",
    "test_accuracy",
    "gap_accuracy",
    "clean_accuracy",
    "corrupted_accuracy",
}
#: which weights the perturbation measures move (:mod:`lqs.generalization`): the float copy
#: holding the dequantized weights, or the quantized model with its scales frozen
WEIGHTS_MODES: tuple[str, ...] = ("dequantized", "frozen")
_CASE_TITLE = {"mlp": "MLP", "cnn": "CNN", "resnet": "ResNet"}


# ---------------------------------------------------------------------------------------------
# study design
# ---------------------------------------------------------------------------------------------
def model_specs(
    bits: Sequence[int], extra_models: Sequence[str] = EXTRA_MODELS, lsq_bits: int = 4
) -> list[tuple[str, int | None]]:
    """The trained models of the study as ``(flavour, bits)``: FP32, fixed bits, then the extras.

    Arguments:
        bits: bit widths of the fixed-bit QAT models (each 2..16, no duplicates).
        extra_models: any of :data:`EXTRA_MODELS` (``"lsq"`` at ``lsq_bits``, ``"nested"``).
        lsq_bits: bit width of the LSQ model.

    Raises
        ValueError: an unknown extra model, a bit width out of range or repeated.
    """
    bits = [int(b) for b in bits]
    bad = [b for b in bits if not 2 <= b <= 16]
    if bad or len(set(bits)) != len(bits):
        raise ValueError(f"bits must be distinct integers in 2..16, got {bits!r}")
    unknown = [m for m in extra_models if m not in EXTRA_MODELS]
    if unknown:
        raise ValueError(
            f"unknown extra model(s) {unknown!r}; allowed: {', '.join(EXTRA_MODELS)}"
        )
    specs: list[tuple[str, int | None]] = [("fp32", None)]
    specs += [("fixed_bits", b) for b in sorted(bits, reverse=True)]
    for extra in extra_models:
        specs.append(("lsq", int(lsq_bits)) if extra == "lsq" else (extra, None))
    return specs


def _bits_or_none(bits: Any) -> int | None:
    if bits is None:
        return None
    try:
        if isinstance(bits, float) and math.isnan(bits):
            return None
    except TypeError:  # pragma: no cover
        pass
    if pd.isna(bits):
        return None
    return int(bits)


def model_key(flavour: str, bits: Any = None) -> str:
    """Stable identifier of a model kind: ``fp32``, ``fixed_bits_8``, ``lsq_4``, ``nested``."""
    b = _bits_or_none(bits)
    if flavour in ("fp32", "nested", "loss_terms") or b is None:
        return flavour
    return f"{flavour}_{b}"


def model_label(flavour: str, bits: Any = None) -> str:
    """Human label: ``FP32``, ``8-bit``, ``LSQ 4-bit``, ``nested``, ``PTQ 4-bit``."""
    b = _bits_or_none(bits)
    if flavour == "fp32":
        return "FP32"
    if flavour == "fixed_bits":
        return f"{b}-bit"
    if flavour == "lsq":
        return f"LSQ {b}-bit"
    if flavour == "ptq":
        return f"PTQ {b}-bit"
    if flavour == "loss_terms":
        return "loss terms"
    return str(flavour)


def _order_key(key: str) -> tuple[int, int, str]:
    if key == "fp32":
        return (0, 0, key)
    flavour, _, bits = key.rpartition("_")
    if flavour == "fixed_bits" and bits.isdigit():
        return (1, -int(bits), key)
    if flavour == "lsq":
        return (2, -int(bits) if bits.isdigit() else 0, key)
    if flavour == "ptq":
        return (3, -int(bits) if bits.isdigit() else 0, key)
    return (4, 0, key)


def model_order(keys: Iterable[str]) -> list[str]:
    """Distinct model keys in display order: FP32, fixed bits (many to few), LSQ, PTQ, others."""
    return sorted(set(keys), key=_order_key)


def model_colors(keys: Iterable[str]) -> dict[str, Any]:
    """One colour (RGB) per model key, the same in every figure and chapter.

    Each model takes its method's colour (:func:`companion.chapters.style.method_color`:
    FP32 black, LSQ vermillion, nested blue, PTQ grey); fixed-bit models take shades of
    the fixed-bit purple, darker for fewer bits (with an odd number of bit widths the
    middle one is the method's colour itself).
    """
    keys = model_order(keys)
    colors: dict[str, Any] = {}
    for flavour in ("fixed_bits", "lsq", "ptq"):
        group = [k for k in keys if k.startswith(f"{flavour}_")]
        if len(group) == 1:
            colors[group[0]] = to_rgb(method_color(flavour))
        elif group:  # model_order: many bits first; fewer bits get darker shades
            base = to_rgb(method_color(flavour))
            light = tuple(c + 0.5 * (1 - c) for c in base)
            dark = tuple(0.55 * c for c in base)
            ramp = sns.blend_palette([light, base, dark], len(group))
            colors.update({k: to_rgb(c) for k, c in zip(group, ramp, strict=True)})
    for k in keys:
        if k not in colors:
            colors[k] = to_rgb(method_color(k))
    return {k: colors[k] for k in keys}


def study_configs(
    arch: str,
    dataset: str,
    *,
    bits: Sequence[int],
    seeds: Sequence[int],
    extra_models: Sequence[str] = EXTRA_MODELS,
    lsq_bits: int = 4,
    train_limit: int | None,
    test_limit: int | None,
    epochs: int,
    lr: float,
    batch_size: int,
    kernel_granularity: str = "scalar",
    l2: float = 0.0,
    quantize_dense: bool | None = None,
    image_size: int | None = None,
) -> list[dict[str, Any]]:
    """Configurations (:mod:`companion.engine.config`) of one part of the study, seed-major.

    Every model of :func:`model_specs` is trained from scratch with the same data, optimiser and
    schedule; only the flavour and bit width differ. The list is ordered seed by seed, so an
    interrupted sweep leaves complete seeds behind.

    Returns
        list of plain configuration dicts, validated by :func:`companion.engine.config.validate_config`.
    """
    from companion.engine.config import validate_config

    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    configs = []
    for seed in seeds:
        for flavour, b in model_specs(bits, extra_models, lsq_bits):
            cfg = {
                "dataset": dataset, "arch": arch, "flavour": flavour, "bits": b, "lr": float(lr),
                "epochs": int(epochs), "batch_size": int(batch_size), "seed": int(seed),
                "train_limit": train_limit, "test_limit": test_limit, "l2": float(l2),
                "kernel_granularity": kernel_granularity, "quantize_dense": quantize_dense,
                "image_size": image_size,
            }  # fmt: skip
            configs.append(validate_config(cfg))
    return configs


def check_parts(
    requests: Mapping[str, str],
    *,
    strict: bool = False,
    available: Callable[[Sequence[str]], pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Which parts of the study can run: one row per ``case -> dataset`` request.

    A part whose dataset is absent is marked ``run = False`` with a ``note`` "not run:
    <dataset> missing (<files>); fix: <command>". Nothing is substituted.

    Arguments:
        requests: ``{case: dataset}``, e.g. ``{"mlp": "mnist", "cnn": "cifar10"}``.
        strict: raise ``FileNotFoundError`` instead of skipping a part whose data is
            missing.
        available: the availability function (default
            :func:`companion.data.loaders.available`; tests pass a stub).

    Returns
        DataFrame with columns ``case``, ``dataset``, ``run``, ``label``, ``note``.
    """
    if available is None:
        from companion.data import available as available
    rows = []
    for case, dataset in requests.items():
        info = available([dataset]).iloc[0]
        if bool(info["present"]):
            note = f"runs on {info['label']} ({info['source']})"
            rows.append(
                {
                    "case": case,
                    "dataset": dataset,
                    "run": True,
                    "label": info["label"],
                    "note": note,
                }
            )
            continue
        note = f"not run: {dataset} missing ({info['missing']}); fix: {info['fetch']}"
        if strict:
            raise FileNotFoundError(
                f"part {case!r} of the generalization study needs {dataset!r}: {note}"
            )
        rows.append(
            {
                "case": case,
                "dataset": dataset,
                "run": False,
                "label": info["label"],
                "note": note,
            }
        )
    return pd.DataFrame(rows, columns=["case", "dataset", "run", "label", "note"])


def train_study(
    parts: pd.DataFrame,
    settings: Mapping[str, Mapping[str, Any]],
    *,
    bits: Sequence[int],
    extra_models: Sequence[str],
    lsq_bits: int,
    lr: float,
    kernel_granularity: str,
) -> dict[str, pd.DataFrame]:
    """Train (or reuse from the store) every model of the parts that run.

    ``parts`` is :func:`check_parts`' table; ``settings`` the training settings per part
    (``dataset``, ``seeds``, ``train_limit``, ``test_limit``, ``epochs``,
    ``batch_size``, and optionally ``bits`` / ``extra_models`` overriding the study's
    for that part).
    Returns ``{case: runs}`` annotated by :func:`annotate_runs`, in the order of
    ``parts``.
    """
    runs_by_case = {}
    for case in parts.loc[parts["run"].astype(bool), "case"]:
        s = settings[case]
        configs = study_configs(
            case,
            s["dataset"],
            bits=s.get("bits") or bits,
            seeds=s["seeds"],
            extra_models=s.get("extra_models", extra_models),
            lsq_bits=lsq_bits,
            train_limit=s["train_limit"],
            test_limit=s["test_limit"],
            epochs=s["epochs"],
            lr=lr,
            batch_size=s["batch_size"],
            kernel_granularity=kernel_granularity,
        )
        records = experiment.sweep(configs, desc=f"generalization {case}")
        runs_by_case[case] = annotate_runs(records, case)
    return runs_by_case


def annotate_runs(records: pd.DataFrame, case: str) -> pd.DataFrame:
    """Add the identification columns (``case``, ``model``, ``label``) to sweep records."""
    out = records.copy()
    out.insert(0, "case", case)
    out["model"] = [
        model_key(f, b) for f, b in zip(out["flavour"], out["bits"], strict=True)
    ]
    out["label"] = [
        model_label(f, b) for f, b in zip(out["flavour"], out["bits"], strict=True)
    ]
    return out


# ---------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MeasureSettings:
    """Sizes and hyper-parameters of the measures (one object per notebook run).

    Arguments:
        measure_samples: training examples (class-stratified subset of each run's own training
            set) on which sharpness and PAC-Bayes flatness are measured.
        rho_average: relative noise level of the average-case adaptive sharpness: Gaussian
            noise ``delta = rho |w| * u``, ``u ~ N(0, I)`` (Andriushchenko et al., 2023), so
            each weight moves by ``rho`` times its magnitude on average and the adaptive norm
            ``||delta / |w|||`` is about ``rho sqrt(d)``.
        rho_worst: radius of the worst-case adaptive sharpness: the adaptive l2 ball
            ``||delta / |w||| <= rho_worst`` (all ``d`` weights together).
        sharpness_samples: random draws of the average-case sharpness.
        worst_restarts, worst_steps: restarts and gradient-ascent steps of the worst case.
        flatness_criterion, flatness_tolerance: PAC-Bayes deviation (``"accuracy"``: drop of the
            training accuracy, Jiang et al., 2020) and its allowed size.
        flatness_samples: Monte-Carlo draws per sigma.
        flatness_rtol: relative resolution of sigma* (bisection until the bracket is
            ``1 + rtol`` wide).
        flatness_sigma_min, flatness_sigma_max, flatness_eps: the sigma search interval and
            the additive epsilon.
        weights: which weights sharpness and flatness perturb, any of :data:`WEIGHTS_MODES`
            (``"dequantized"``: :func:`lqs.generalization.dequantized_model`, ``"frozen"``:
            the model within :func:`lqs.generalization.frozen_scales`).
        robustness_samples: test examples for the corruption benchmark.
        corruptions: of :mod:`companion.chapters.corruptions`; severities: ``None`` (each
            corruption at :func:`~companion.chapters.corruptions.default_severities`) or
            levels for every corruption.
        batch_size: evaluation batch size.
        seed: seed of every measurement subset and random draw (the same for every model).
    """

    measure_samples: int = 256
    rho_average: float = 0.1
    rho_worst: float = 0.5
    sharpness_samples: int = 8
    worst_restarts: int = 1
    worst_steps: int = 10
    flatness_criterion: str = "accuracy"
    flatness_tolerance: float = 0.1
    flatness_samples: int = 4
    flatness_rtol: float = 0.02
    flatness_sigma_min: float = 1e-3
    flatness_sigma_max: float = 4.0
    flatness_eps: float = 1e-3
    weights: tuple[str, ...] = WEIGHTS_MODES
    robustness_samples: int = 500
    corruptions: tuple[str, ...] = corruptions.MNIST_C
    severities: tuple[int, ...] | None = None
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [w for w in self.weights if w not in WEIGHTS_MODES]
        if bad or not self.weights:
            raise ValueError(
                f"parameter 'weights' = {list(self.weights)!r}; allowed: a non-empty "
                f"list of {list(WEIGHTS_MODES)}; fix: e.g. weights=['dequantized']"
            )
        if not 0 < self.flatness_rtol < 1:
            raise ValueError(
                f"parameter 'flatness_rtol' = {self.flatness_rtol!r}; allowed: 0 < rtol "
                "< 1 (relative resolution of sigma*); fix: e.g. flatness_rtol=0.02"
            )
        if not 0 < self.flatness_sigma_min < self.flatness_sigma_max:
            raise ValueError(
                f"parameters 'flatness_sigma_min' = {self.flatness_sigma_min!r} and "
                f"'flatness_sigma_max' = {self.flatness_sigma_max!r}; allowed: 0 < "
                "sigma_min < sigma_max; fix: e.g. 1e-3 and 4.0"
            )
        for name in self.corruptions:
            corruptions.default_severities(name)  # ValueError names the allowed ones

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _key_hash(payload: Mapping[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_frame(
    cache_dir: str | os.PathLike[str] | None,
    name: str,
    key: Mapping[str, Any],
    compute: Callable[[], pd.DataFrame],
) -> pd.DataFrame:
    """``compute()`` once per ``(name, key, MEASURE_VERSION)``; the table is kept as CSV in ``cache_dir``.

    The file is written to a temporary name and renamed, so an interrupted computation never
    leaves a partial table behind. The returned frame is always read back from the CSV, so a
    first and a cached call give identical frames. ``cache_dir=None`` disables caching.

    The measures key on the run's ``config_hash`` (which includes the lqs and code versions), not
    on the model file: training is deterministic on one machine, but a run retrained under the
    same hash elsewhere (``force=True``, another device) needs its cache folder deleted, or
    :data:`MEASURE_VERSION` bumped.
    """
    if cache_dir is None:
        return compute()
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = (
        folder
        / f"{name}-{_key_hash({'name': name, 'key': dict(key), 'version': MEASURE_VERSION})}.csv"
    )
    if not path.exists():
        frame = compute()
        atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
    return pd.read_csv(path, dtype=_STRING_COLUMNS)


#: columns read back from cached CSVs as strings (a hash of digits only must not become a number)
_STRING_COLUMNS = {
    c: str
    for c in (
        "case",
        "arch",
        "dataset",
        "dataset_label",
        "model",
        "label",
        "flavour",
        "config_hash",
        "layer",
        "parameter",
        "granularity",
        "corruption",
        "mode",
        "noise",
        "criterion",
        "status",
        "weights",
    )
}


def _ids(run: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "case": run["case"], "arch": run["arch"], "dataset": run["dataset"],
        "dataset_label": run.get("dataset_label", run["dataset"]), "model": run["model"], "label": run["label"],
        "flavour": run["flavour"], "bits": _bits_or_none(run.get("bits")), "seed": int(run["seed"]),
        "config_hash": run["config_hash"],
    }  # fmt: skip


class _DataCache:
    """The (train, test) arrays of runs, loaded once per dataset/limit/seed."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}

    def get(
        self, dataset: str, split: str, limit: Any, image_size: Any, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        from companion import data as lqs_data

        limit = None if limit is None or pd.isna(limit) else int(limit)
        image_size = (
            None if image_size is None or pd.isna(image_size) else int(image_size)
        )
        key = (dataset, split, limit, image_size, int(seed))
        if key not in self._cache:
            x, y, _ = lqs_data.load_with_info(
                dataset, split, limit=limit, image_size=image_size, seed=int(seed)
            )
            self._cache[key] = (x, y)
        return self._cache[key]

    def run_data(
        self, run: Mapping[str, Any]
    ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """Exactly the training images and test set the run used (same limits and seed).

        The training images are the ``train_limit`` subset minus the run's validation
        split (:func:`companion.engine.experiment.validation_split`), as in training.
        """
        args = (run["dataset"], run.get("image_size"), int(run["seed"]))
        x, y = self.get(args[0], "train", run.get("train_limit"), args[1], args[2])
        fraction = run.get("validation_fraction")
        fraction = 0.0 if fraction is None or pd.isna(fraction) else float(fraction)
        kept, _ = experiment.validation_split(y, fraction, int(run["seed"]))
        test = self.get(args[0], "test", run.get("test_limit"), args[1], args[2])
        return (x[kept], y[kept]), test


def _subset(
    x: np.ndarray, y: np.ndarray, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    from companion.data import stratified_subset

    idx = stratified_subset(y, int(n), seed=seed)
    return x[idx], y[idx]


def _release() -> None:
    import keras

    keras.backend.clear_session()
    gc.collect()


def _gap_table(
    model: Any,
    ids: Mapping[str, Any],
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    s: MeasureSettings,
) -> pd.DataFrame:
    """One row: :func:`lqs.generalization.generalization_gap` on the run's own data."""
    g = generalization.generalization_gap(model, train, test, batch_size=s.batch_size)
    return pd.DataFrame(
        [{**ids, "n_train": len(train[1]), "n_test": len(test[1]), **g}]
    )


def _weights_views(model: Any, modes: Sequence[str]) -> Iterable[tuple[str, Any]]:
    """``(mode, model to perturb)`` for each of ``modes`` (:data:`WEIGHTS_MODES`).

    ``"dequantized"``: :func:`lqs.generalization.dequantized_model` (the model itself when
    nothing is quantized); ``"frozen"``: the model within
    :func:`lqs.generalization.frozen_scales` while the caller measures it.
    """
    quantized = bool(generalization.bin_widths(model))
    for mode in modes:
        if mode == "dequantized":
            yield mode, generalization.dequantized_model(model) if quantized else model
        else:
            with generalization.frozen_scales(model):
                yield mode, model


def _sharpness_rows(
    model: Any, x_m: np.ndarray, y_m: np.ndarray, s: MeasureSettings
) -> list[dict[str, Any]]:
    """Average-case (Gaussian) and worst-case adaptive sharpness of one weights view."""
    common = dict(seed=s.seed, batch_size=s.batch_size)
    avg = generalization.adaptive_sharpness(
        model, x_m, y_m, rho=s.rho_average, n_samples=s.sharpness_samples,
        mode="average", noise="gaussian", **common,
    )  # fmt: skip
    worst = generalization.adaptive_sharpness(
        model, x_m, y_m, rho=s.rho_worst, n_samples=s.worst_restarts, mode="worst",
        n_steps=s.worst_steps, **common,
    )  # fmt: skip
    keys = ("mode", "rho", "value", "adaptive_norm", "n_samples", "base_loss")
    return [
        {**{k: r[k] for k in keys}, "stderr": r.get("stderr", math.nan),
         "noise": r.get("noise", "ball"), "n_steps": r.get("n_steps", 0),
         "n_parameters": r["n_parameters"], "n_zero": r["n_zero"]}
        for r in (avg, worst)
    ]  # fmt: skip


def _sharpness_table(
    model: Any,
    ids: Mapping[str, Any],
    x_m: np.ndarray,
    y_m: np.ndarray,
    s: MeasureSettings,
) -> pd.DataFrame:
    """Two rows (average, worst) per weights mode of ``s.weights``."""
    rows, done = [], {}
    for weights, view in _weights_views(model, s.weights):
        if id(view) not in done:  # FP32: both modes are the model itself
            done[id(view)] = _sharpness_rows(view, x_m, y_m, s)
        for r in done[id(view)]:
            rows.append({**ids, "weights": weights, **r, "n_examples": len(y_m)})
    return pd.DataFrame(rows)


def _flatness_table(
    model: Any,
    ids: Mapping[str, Any],
    x_m: np.ndarray,
    y_m: np.ndarray,
    s: MeasureSettings,
) -> pd.DataFrame:
    """One row per weights mode: the magnitude-aware PAC-Bayes noise level sigma*."""
    rows, done = [], {}
    for weights, view in _weights_views(model, s.weights):
        if id(view) in done:  # FP32: both modes are the model itself
            rows.append({**done[id(view)], "weights": weights})
            continue
        r = generalization.pac_bayes_flatness(
            view, x_m, y_m, tolerance=s.flatness_tolerance,
            sigma_min=s.flatness_sigma_min, sigma_max=s.flatness_sigma_max,
            rtol=s.flatness_rtol, n_samples=s.flatness_samples, relative=True,
            seed=s.seed, criterion=s.flatness_criterion, eps=s.flatness_eps,
            batch_size=s.batch_size,
        )  # fmt: skip
        done[id(view)] = {**ids, "weights": weights, **r, "n_examples": len(y_m)}
        rows.append(done[id(view)])
    return pd.DataFrame(rows)


def _with_ids(table: pd.DataFrame, ids: Mapping[str, Any]) -> pd.DataFrame:
    """``table`` with the identification columns ``ids`` inserted first."""
    for k in reversed(list(ids)):
        table.insert(0, k, ids[k])
    return table


def _bin_width_table(model: Any, ids: Mapping[str, Any]) -> pd.DataFrame:
    """Per quantized parameter: :func:`lqs.generalization.bin_widths` (FP32: none)."""
    bw = pd.DataFrame(
        generalization.bin_widths(model), columns=list(generalization.BIN_WIDTH_COLUMNS)
    )
    bw.insert(0, "layer_index", range(len(bw)))
    return _with_ids(bw, ids)


def _robustness_table(
    model: Any,
    ids: Mapping[str, Any],
    x_r: np.ndarray,
    y_r: np.ndarray,
    s: MeasureSettings,
) -> pd.DataFrame:
    """Accuracy per corruption and severity on the robustness subset.

    :func:`~companion.chapters.corruptions.robustness_table` with the settings ``s``.
    """
    table = corruptions.robustness_table(
        model,
        x_r,
        y_r,
        severities=s.severities,
        corruptions=s.corruptions,
        batch_size=s.batch_size,
        seed=s.seed,
    )
    table = _with_ids(table, ids)
    table["n_examples"] = len(y_r)
    return table


#: the settings each measure depends on (its cache key, besides the run's config hash)
_MEASURE_KEYS: dict[str, tuple[str, ...]] = {
    "gap": ("batch_size",),
    "sharpness": (
        "measure_samples",
        "rho_average",
        "rho_worst",
        "sharpness_samples",
        "worst_restarts",
        "worst_steps",
        "weights",
        "seed",
        "batch_size",
    ),
    "flatness": (
        "measure_samples",
        "flatness_criterion",
        "flatness_tolerance",
        "flatness_samples",
        "flatness_rtol",
        "flatness_sigma_min",
        "flatness_sigma_max",
        "flatness_eps",
        "weights",
        "seed",
        "batch_size",
    ),
    "bin_widths": (),
    "robustness": (
        "robustness_samples",
        "corruptions",
        "severities",
        "seed",
        "batch_size",
    ),
}


def _measure_one(
    model: Any,
    run: Mapping[str, Any],
    data: _DataCache,
    s: MeasureSettings,
    cache_dir: Path | None,
) -> dict[str, pd.DataFrame]:
    """Every measure of one trained model, each cached per run and settings."""
    ids = _ids(run)
    train, test = data.run_data(run)
    x_m, y_m = _subset(*train, s.measure_samples, s.seed)
    x_r, y_r = _subset(*test, s.robustness_samples, s.seed)
    compute = {
        "gap": lambda: _gap_table(model, ids, train, test, s),
        "sharpness": lambda: _sharpness_table(model, ids, x_m, y_m, s),
        "flatness": lambda: _flatness_table(model, ids, x_m, y_m, s),
        "bin_widths": lambda: _bin_width_table(model, ids),
        "robustness": lambda: _robustness_table(model, ids, x_r, y_r, s),
    }
    settings = s.to_dict()
    tables = {}
    for name, keys in _MEASURE_KEYS.items():
        key = {"config_hash": run["config_hash"], **{k: settings[k] for k in keys}}
        tables[name] = cached_frame(cache_dir, name, key, compute[name])
    return tables


MEASURE_TABLES: tuple[str, ...] = (
    "gap",
    "sharpness",
    "flatness",
    "bin_widths",
    "robustness",
)


def measure_runs(
    runs: pd.DataFrame,
    settings: MeasureSettings,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    load_model: Callable[[Any], Any] | None = None,
) -> dict[str, pd.DataFrame]:
    """Every measure of the chapter for every trained run: tidy tables keyed by measure name.

    For each run (a row of :func:`annotate_runs`' output) the saved model is loaded and measured
    on exactly the training subset and test set it was trained/evaluated with:

    * ``gap``: :func:`lqs.generalization.generalization_gap` on the full training subset and test set;
    * ``sharpness``: :func:`lqs.generalization.adaptive_sharpness`, average case (Gaussian noise,
      ``rho_average``) and worst case (``rho_worst``), on ``measure_samples`` training
      examples, once per weights mode of ``settings.weights`` (column ``weights``:
      ``"dequantized"`` or ``"frozen"``);
    * ``flatness``: :func:`lqs.generalization.pac_bayes_flatness` (magnitude-aware) on the
      same examples, per weights mode;
    * ``bin_widths``: :func:`lqs.generalization.bin_widths` (empty for FP32);
    * ``robustness``: :func:`companion.chapters.corruptions.robustness_table` on ``robustness_samples`` test examples.

    Each (run, measure, settings) result is cached in ``cache_dir`` (:func:`cached_frame`), so a
    rerun or an interrupted notebook only measures what is missing.

    Returns
        ``{"gap", "sharpness", "flatness", "bin_widths", "robustness"}`` -> DataFrame, each
        starting with :data:`ID_COLUMNS`.
    """
    from tqdm import tqdm

    if load_model is None:
        from companion.engine.experiment import load_model as load_model
    data = _DataCache()
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in MEASURE_TABLES}
    bar = tqdm(
        list(runs.to_dict("records")),
        desc="measures",
        unit="model",
        disable=not progress,
    )
    for run in bar:
        bar.set_postfix_str(
            f"{run['case']} {run['label']} seed {run['seed']}", refresh=False
        )
        model = load_model(run)
        try:
            tables = _measure_one(
                model,
                run,
                data,
                settings,
                None if cache_dir is None else Path(cache_dir),
            )
        finally:
            del model
            _release()
        for name, frame in tables.items():
            parts[name].append(frame)
    bar.close()
    return {
        name: (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame(columns=list(ID_COLUMNS))
        )
        for name, frames in parts.items()
    }


def landscapes(
    runs: pd.DataFrame,
    *,
    models: Sequence[str],
    seed: int,
    extent: float,
    points_1d: int,
    points_2d: int,
    samples: int,
    direction_seed: int = 0,
    batch_size: int = 256,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    load_model: Callable[[Any], Any] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """1-D and 2-D loss landscapes (Li et al., 2018) of the chosen models of one training seed.

    Every model is evaluated on the same grid ``alpha, beta in linspace(-extent, extent, n)``
    along filter-normalized random directions drawn with ``direction_seed`` (the same draw for
    every model of an architecture, normalized to that model's own filters), on ``samples``
    examples of its training subset (the training loss, as in Li et al.). Quantized models
    are measured at their dequantized weights
    (:func:`lqs.generalization.dequantized_model`): the continuous loss surface around the
    point the quantized network implements.

    Returns
        ``(one_d, two_d)``: tidy frames with :data:`ID_COLUMNS` + ``alpha`` (+ ``beta``),
        ``loss``, ``accuracy``; models that were not trained are skipped.
    """
    from tqdm import tqdm

    if load_model is None:
        from companion.engine.experiment import load_model as load_model
    chosen = runs[runs["model"].isin(models) & (runs["seed"] == seed)]
    alphas_1d = np.linspace(-extent, extent, int(points_1d))
    grid = np.linspace(-extent, extent, int(points_2d))
    data = _DataCache()
    one, two = [], []
    for run in tqdm(
        list(chosen.to_dict("records")),
        desc="landscapes",
        unit="model",
        disable=not progress,
    ):
        ids = _ids(run)
        (x_tr, y_tr), _ = data.run_data(run)
        x_l, y_l = _subset(x_tr, y_tr, samples, direction_seed)
        key = {"config_hash": run["config_hash"], "extent": float(extent), "points_1d": int(points_1d),
               "points_2d": int(points_2d), "samples": int(samples), "direction_seed": int(direction_seed),
               "batch_size": int(batch_size), "weights": "dequantized"}  # fmt: skip
        holder: dict[str, Any] = {}

        def model() -> Any:
            if "model" not in holder:
                loaded = load_model(run)
                quantized = bool(generalization.bin_widths(loaded))
                holder["model"] = (
                    generalization.dequantized_model(loaded) if quantized else loaded
                )
            return holder["model"]

        def line() -> pd.DataFrame:
            df = pd.DataFrame(
                generalization.loss_landscape_1d(
                    model(),
                    x_l,
                    y_l,
                    alphas_1d,
                    seed=direction_seed,
                    batch_size=batch_size,
                )
            )
            return pd.concat([pd.DataFrame([ids] * len(df)), df], axis=1)

        def plane() -> pd.DataFrame:
            df = pd.DataFrame(
                generalization.loss_landscape_2d(
                    model(),
                    x_l,
                    y_l,
                    grid,
                    grid,
                    seed=direction_seed,
                    batch_size=batch_size,
                )
            )
            return pd.concat([pd.DataFrame([ids] * len(df)), df], axis=1)

        one.append(cached_frame(cache_dir, "landscape_1d", key, line))
        two.append(cached_frame(cache_dir, "landscape_2d", key, plane))
        holder.clear()
        _release()
    empty = pd.DataFrame(columns=list(ID_COLUMNS))
    return (
        pd.concat(one, ignore_index=True) if one else empty,
        pd.concat(two, ignore_index=True) if two else empty,
    )


# ---------------------------------------------------------------------------------------------
# aggregation and claims
# ---------------------------------------------------------------------------------------------
def _weights_column(table: pd.DataFrame) -> pd.Series:
    """The ``weights`` mode of each row (tables without the column: ``dequantized``)."""
    if "weights" in table:
        return table["weights"].fillna("dequantized")
    return pd.Series("dequantized", index=table.index)


def _suffix(weights: str) -> str:
    return "" if weights == "dequantized" else f"_{weights}"


def _perturbation_metrics(
    key: list[str], sharpness: pd.DataFrame | None, flatness: pd.DataFrame | None
) -> list[pd.DataFrame]:
    """Wide per-model tables of sharpness (per mode) and sigma*, one column per weights mode."""
    wide = []
    if sharpness is not None and len(sharpness):
        sh = sharpness.assign(
            metric="sharpness_"
            + sharpness["mode"]
            + _weights_column(sharpness).map(_suffix)
        )
        w = sh.pivot_table(index=key, columns="metric", values="value", aggfunc="first")
        wide.append(w.reset_index())
    if flatness is not None and len(flatness):
        fl = flatness.assign(
            metric="pac_bayes_sigma" + _weights_column(flatness).map(_suffix)
        )
        w = fl.pivot_table(index=key, columns="metric", values="sigma", aggfunc="first")
        wide.append(w.reset_index())
    return wide


def robustness_rows(gap: pd.DataFrame, robustness: pd.DataFrame) -> pd.DataFrame:
    """The robustness table with each model's loss gap and error ratio per corruption.

    :func:`companion.chapters.corruptions.robustness_metrics` per model (``case``,
    ``config_hash``), with the training loss of the model's ``gap`` row: ``loss_gap =
    L_corrupted - L_train`` and ``error_ratio = error_corrupted / error_clean``.
    """
    key = [c for c in ("case", "config_hash") if c in robustness.columns]
    train = gap.set_index(key)["train_loss"]
    parts = [
        corruptions.robustness_metrics(rows, float(train.loc[k]))
        for k, rows in robustness.groupby(key, sort=False)
    ]
    return pd.concat(parts, ignore_index=True) if parts else robustness.copy()


def _robustness_metrics(
    key: list[str], gap: pd.DataFrame, robustness: pd.DataFrame
) -> pd.DataFrame:
    rows = robustness_rows(gap, robustness)
    clean = rows[rows["corruption"] == "clean"].groupby(key)
    corrupted = rows[rows["corruption"] != "clean"].groupby(key)
    return pd.DataFrame(
        {
            "clean_accuracy": clean["accuracy"].mean(),
            "corrupted_accuracy": corrupted["accuracy"].mean(),
            "corrupted_loss_gap": corrupted["loss_gap"].mean(),
            "corrupted_error_ratio": corrupted["error_ratio"].mean(),
        }
    ).reset_index()


def model_metrics(
    gap: pd.DataFrame,
    sharpness: pd.DataFrame | None = None,
    flatness: pd.DataFrame | None = None,
    robustness: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per trained model (x seed) with every scalar metric of :data:`METRICS`.

    ``sharpness_average`` / ``sharpness_worst`` are the ``value`` of the sharpness rows with
    that mode and ``pac_bayes_sigma`` the ``sigma`` of the flatness table, at the
    dequantized weights; the same measures with frozen scales get the suffix ``_frozen``
    (rows without a ``weights`` column count as dequantized). From the robustness table
    (:func:`robustness_rows`): ``clean_accuracy``, ``corrupted_accuracy`` (mean over the
    corruptions and their levels), ``corrupted_loss_gap`` (mean of ``L_c - L_train``) and
    ``corrupted_error_ratio`` (mean of ``error_c / error_clean``). Missing tables leave their
    columns out.
    """
    ids = [c for c in ID_COLUMNS if c in gap.columns]
    keep = ids + [c for c in ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "gap_loss",
                              "gap_accuracy") if c in gap.columns]  # fmt: skip
    out = gap[keep].copy()
    key = [c for c in ("case", "config_hash") if c in ids] or ids
    for wide in _perturbation_metrics(key, sharpness, flatness):
        out = out.merge(wide, on=key, how="left")
    if robustness is not None and len(robustness) and "loss" in robustness:
        out = out.merge(_robustness_metrics(key, gap, robustness), on=key, how="left")
    return out


def summarize(
    metrics: pd.DataFrame,
    columns: Sequence[str] | None = None,
    by: Sequence[str] = ("case", "model"),
) -> pd.DataFrame:
    """Mean, sample standard deviation (ddof 1; NaN for one seed) and count per group, tidy.

    Returns
        DataFrame with ``by`` + ``metric``, ``mean``, ``std``, ``n`` (one row per group x metric),
        groups in :func:`model_order` when ``model`` is among ``by``.
    """
    by = list(by)
    columns = [c for c in (columns or METRICS) if c in metrics.columns]
    long = metrics.melt(
        id_vars=by, value_vars=columns, var_name="metric", value_name="value"
    ).dropna(subset=["value"])
    agg = long.groupby(by + ["metric"], sort=False)["value"].agg(
        mean="mean", std=lambda v: v.std(ddof=1), n="count"
    )
    agg = agg.reset_index()
    if "model" in by:
        order = {k: i for i, k in enumerate(model_order(agg["model"]))}
        agg = (
            agg.assign(_o=agg["model"].map(order))
            .sort_values(by[: by.index("model")] + ["_o", "metric"], kind="stable")
            .drop(columns="_o")
        )
    return agg.reset_index(drop=True)


def compare(values: Sequence[float], reference: Sequence[float]) -> dict[str, Any]:
    """Compare two samples (over seeds) by their mean ± std intervals.

    ``relation`` is ``"lower"`` when ``mean + std`` of ``values`` lies below ``mean - std`` of
    ``reference``, ``"higher"`` in the mirrored case, ``"overlap"`` otherwise, and ``"n/a"``
    when either sample has fewer than two finite values (no spread, no decision).

    Returns
        dict with ``mean``, ``std``, ``n``, ``ref_mean``, ``ref_std``, ``ref_n``, ``relation``.
    """
    a = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    b = np.asarray(
        [v for v in reference if v is not None and np.isfinite(v)], np.float64
    )
    out = {
        "mean": float(a.mean()) if a.size else math.nan, "std": float(a.std(ddof=1)) if a.size > 1 else math.nan,
        "n": int(a.size), "ref_mean": float(b.mean()) if b.size else math.nan,
        "ref_std": float(b.std(ddof=1)) if b.size > 1 else math.nan, "ref_n": int(b.size),
    }  # fmt: skip
    if a.size < 2 or b.size < 2:
        out["relation"] = "n/a"
    elif out["mean"] + out["std"] < out["ref_mean"] - out["ref_std"]:
        out["relation"] = "lower"
    elif out["mean"] - out["std"] > out["ref_mean"] + out["ref_std"]:
        out["relation"] = "higher"
    else:
        out["relation"] = "overlap"
    return out


@dataclass(frozen=True)
class ClaimSpec:
    """One of QGen's claims, tested on one metric for one model against FP32.

    Arguments:
        key: short identifier.
        claim: the claim in words; ``{q}`` is replaced by the quantized model's label.
        metric: a column of :func:`model_metrics`.
        model: model key, ``"lowest"`` (the fixed-bit model with the fewest bits),
            ``"highest"`` (the most bits), ``"matched"`` (the fewest bits whose training loss
            matches FP32's, :func:`matched_model`) or ``"trend"`` (the slope of the metric
            over the fixed bit widths, :func:`trend_slopes`, against 0).
        expected: ``"lower"``/``"higher"`` (the paired difference, or the slope, below/above
            0) or ``"same"`` (equivalent within :data:`EQUIVALENCE_MARGINS`).
    """

    key: str
    claim: str
    metric: str
    model: str
    expected: str


#: QGen's claims as tested here (each per part of the study)
CLAIMS: tuple[ClaimSpec, ...] = (
    ClaimSpec("regularizer_loss", "quantization regularizes: {q} has a smaller loss gap "
              "than FP32", "gap_loss", "lowest", "lower"),
    ClaimSpec("regularizer_accuracy", "quantization regularizes: {q} has a smaller "
              "accuracy gap than FP32", "gap_accuracy", "lowest", "lower"),
    ClaimSpec("trend_loss", "fewer bits, smaller loss gap: the loss gap grows with the "
              "bit width", "gap_loss", "trend", "higher"),
    ClaimSpec("trend_accuracy", "fewer bits, smaller accuracy gap: the accuracy gap "
              "grows with the bit width", "gap_accuracy", "trend", "higher"),
    ClaimSpec("eight_bit_loss", "8-bit generalizes like FP32 (loss gap)", "gap_loss",
              "fixed_bits_8", "same"),
    ClaimSpec("eight_bit_accuracy", "8-bit generalizes like FP32 (accuracy gap)",
              "gap_accuracy", "fixed_bits_8", "same"),
    ClaimSpec("training_cost", "fewer bits cost training loss: {q} has a higher "
              "training loss than FP32", "train_loss", "lowest", "higher"),
    ClaimSpec("trend_training_cost", "fewer bits cost training loss: the training loss "
              "falls as the bit width grows", "train_loss", "trend", "lower"),
    ClaimSpec("flat_average", "quantization finds flatter minima: {q} has a lower "
              "average-case adaptive sharpness", "sharpness_average", "matched", "lower"),
    ClaimSpec("flat_worst", "quantization finds flatter minima: {q} has a lower "
              "worst-case adaptive sharpness", "sharpness_worst", "matched", "lower"),
    ClaimSpec("flat_pac_bayes", "quantization finds flatter minima: {q} tolerates more "
              "weight noise (PAC-Bayes sigma*)", "pac_bayes_sigma", "matched", "higher"),
    ClaimSpec("robust_8", "QAT is more robust to distorted data: {q} has a smaller loss "
              "gap on corrupted test data", "corrupted_loss_gap", "fixed_bits_8", "lower"),
    ClaimSpec("robust_low", "QAT is more robust to distorted data: {q} has a smaller "
              "loss gap on corrupted test data", "corrupted_loss_gap", "lowest", "lower"),
)  # fmt: skip
#: largest absolute mean paired difference of training loss (nats) at which a quantized model
#: counts as trained to FP32's loss (the flatness claims compare such models only)
TRAIN_LOSS_MARGIN = 0.05
#: FP32's mean training accuracy below which a part is not at a minimum: no verdicts
MIN_TRAIN_ACCURACY = 0.98


def _fixed_bits(keys: Iterable[str]) -> list[tuple[int, str]]:
    return sorted(
        (int(k.rsplit("_", 1)[1]), k) for k in keys if k.startswith("fixed_bits_")
    )


def matched_model(
    part: pd.DataFrame, margin: float = TRAIN_LOSS_MARGIN, reference: str = "fp32"
) -> str | None:
    """The fixed-bit model with the fewest bits whose training loss matches ``reference``'s.

    Matched: the mean over seeds of the paired difference of ``train_loss`` (model −
    reference, seed by seed) lies within ``±margin`` nats. Sharpness depends on the loss
    level, so the flatness claims compare models at matched training loss.

    Returns:
        The model key, or ``None`` when no fixed-bit model is matched.
    """
    ref = part[part["model"] == reference].set_index("seed")["train_loss"]
    for _, key in _fixed_bits(part["model"].unique()):
        mine = part[part["model"] == key].set_index("seed")["train_loss"]
        diff = (mine - ref).dropna()
        if len(diff) and abs(float(diff.mean())) <= margin:
            return key
    return None


def trend_slopes(part: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per seed, the least-squares slope of ``metric`` over the fixed bit widths.

    ``b_s = Σ_k (k - k̄)(v_{k,s} - v̄_s) / Σ_k (k - k̄)²`` over the fixed-bit models ``k``
    (bits) of seed ``s`` (at least two bit widths), in the metric's units per bit.

    Returns:
        DataFrame with ``seed``, ``slope``, ``n_bits``.
    """
    fixed = part[part["model"].str.startswith("fixed_bits_")]
    rows = []
    for seed, sub in fixed.groupby("seed"):
        sub = sub[np.isfinite(pd.to_numeric(sub[metric], errors="coerce"))]
        k = sub["model"].str.rsplit("_", n=1).str[1].astype(float).to_numpy()
        if len(np.unique(k)) < 2:
            continue
        v = sub[metric].to_numpy(np.float64)
        slope = np.sum((k - k.mean()) * (v - v.mean())) / np.sum((k - k.mean()) ** 2)
        rows.append({"seed": seed, "slope": float(slope), "n_bits": len(k)})
    return pd.DataFrame(rows, columns=["seed", "slope", "n_bits"])


def _resolve_model(
    spec_model: str, keys: Sequence[str], part: pd.DataFrame | None = None
) -> str | None:
    fixed = _fixed_bits(keys)
    if spec_model == "lowest":
        return fixed[0][1] if fixed else None
    if spec_model == "highest":
        return fixed[-1][1] if fixed else None
    if spec_model == "matched":
        return None if part is None else matched_model(part)
    if spec_model == "trend":
        return "trend" if len(fixed) >= 2 else None
    return spec_model if spec_model in keys else None


def _scale(metric: str) -> float:
    return 100.0 if metric in _PERCENT else 1.0


def format_mean_std(
    mean: float, std: float, n: int, metric: str = "", digits: int | None = None
) -> str:
    """``"0.375 ± 0.012"`` (loss-like) or ``"8.1 ± 0.4"`` (percent metrics, in %/pp); ``n = 1``: no ±."""
    f = _scale(metric)
    if digits is None:
        digits = 1 if f == 100.0 else 3
    if not np.isfinite(mean):
        return "n/a"
    return fmt_pm(
        mean, std if n > 1 and np.isfinite(std) else None, scale=f, digits=digits
    )


#: equivalence margins of the "like FP32" claims (TOST), in the metric's units: one
#: percentage point of accuracy gap (the experiments' one-point bar) and 0.05 nats of loss gap
EQUIVALENCE_MARGINS: dict[str, float] = {"gap_accuracy": 0.01, "gap_loss": 0.05}
#: family-wise error rate of the claims of one page (Holm-Bonferroni)
CLAIMS_ALPHA = 0.05
_EXPECTED_SIGN = {"lower": -1.0, "higher": 1.0}


def _paired_row(part: pd.DataFrame, model: str, metric: str, reference: str) -> dict:
    """Paired summary (:func:`companion.chapters.stats.compare_paired`) of model − FP32.

    For ``model="trend"`` the per-seed slopes of :func:`trend_slopes` against 0.
    """
    if model == "trend":
        slopes = trend_slopes(part, metric)
        sub = pd.concat(
            [slopes.assign(model="trend", value=slopes["slope"]),
             slopes.assign(model="zero", value=0.0)]
        ).rename(columns={"value": metric})[["model", "seed", metric]]  # fmt: skip
        model, reference = "trend", "zero"
    else:
        sub = part[part["model"].isin([model, reference])][["model", "seed", metric]]
        sub = sub[np.isfinite(pd.to_numeric(sub[metric], errors="coerce"))]
    if sub.empty:
        return {"n": 0, "mean": math.nan, "sd": math.nan, "p_value": math.nan,
                "ci_low": math.nan, "ci_high": math.nan, "reason": "no finite values"}  # fmt: skip
    s = stats.compare_paired(
        sub, metric=metric, method_col="model", a=model, b=reference
    ).iloc[0]
    keys = ("n", "mean", "sd", "p_value", "ci_low", "ci_high", "reason")
    return {k: s[k] for k in keys}


def _decide(rows: list[dict]) -> None:
    """Verdicts in place: Holm over the page's directional claims and, separately, over its
    "like FP32" claims (:mod:`companion.chapters.stats`)."""
    direction = [r for r in rows if r["expected"] in _EXPECTED_SIGN and r["n"] >= 0]
    if direction:
        # a "higher" claim becomes a "lower" one on the negated difference: one family
        table = pd.DataFrame(
            [
                {**r, "mean": r["mean"] * -_EXPECTED_SIGN[r["expected"]]}
                for r in direction
            ]
        )
        decided = stats.directional_verdicts(table, expected="less", alpha=CLAIMS_ALPHA)
        for r, (_, d) in zip(direction, decided.iterrows(), strict=True):
            r.update(p_holm=d["p_holm"], verdict=d["verdict"], reason=d["reason"])
    for metric, margin in EQUIVALENCE_MARGINS.items():
        same = [r for r in rows if r["expected"] == "same" and r["metric"] == metric]
        if not same:
            continue
        decided = stats.equivalence_verdicts(
            pd.DataFrame(same), margin=margin, alpha=CLAIMS_ALPHA
        )
        for r, (_, d) in zip(same, decided.iterrows(), strict=True):
            r.update(p_holm=d["p_tost_holm"], verdict=d["verdict"], reason=d["reason"])


def _criterion(spec: ClaimSpec, label: str) -> str:
    what = METRICS.get(spec.metric, (spec.metric, ""))[0]
    if spec.expected == "same":
        m = EQUIVALENCE_MARGINS.get(spec.metric, math.nan) * _scale(spec.metric)
        unit = " pp" if _scale(spec.metric) == 100.0 else ""
        return (
            f"holds if TOST shows the paired difference in {what} of {label} − FP32 "
            f"within ±{m:g}{unit}"
        )
    side = "below" if spec.expected == "lower" else "above"
    if spec.model == "trend":
        return (
            f"holds if the per-seed slope of the {what} over the fixed bit widths is "
            f"significantly {side} 0"
        )
    matched = (
        f" ({label}: the fewest bits whose training loss is within "
        f"±{TRAIN_LOSS_MARGIN:g} nats of FP32's)"
        if spec.model == "matched"
        else ""
    )
    return (
        f"holds if the paired difference in {what} of {label} − FP32 is "
        f"significantly {side} 0{matched}"
    )


def _numbers(r: dict, label: str) -> str:
    f = _scale(r["metric"])
    unit = " pp" if f == 100.0 else ""
    digits = 1 if f == 100.0 else 3
    what = f"{label} − FP32"
    if r["model"] == "trend":
        what, unit, digits = "slope", unit + " per bit", digits + 1
    if r["n"] < 2 or not np.isfinite(r["ci_low"]):
        return f"{what}: {r['mean'] * f:+.{digits}f}{unit} (n = {r['n']} pairs)"
    return (
        f"{what}: {r['mean'] * f:+.{digits}f}{unit}, 95 % CI "
        f"[{r['ci_low'] * f:+.{digits}f}, {r['ci_high'] * f:+.{digits}f}] "
        f"(n = {r['n']} seed pairs)"
    )


def _not_run(row: dict, reason: str) -> None:
    row.update(n=-1, mean=math.nan, sd=math.nan, p_value=math.nan, ci_low=math.nan,
               ci_high=math.nan, verdict="not run", reason=reason, numbers=reason)  # fmt: skip


def _fit_note(part: pd.DataFrame, reference: str, min_train_accuracy: float) -> str:
    """Why a part gets no verdicts ("" when FP32 reached ``min_train_accuracy``)."""
    if "train_accuracy" not in part:
        return ""
    acc = part.loc[part["model"] == reference, "train_accuracy"].mean()
    if not np.isfinite(acc) or acc >= min_train_accuracy:
        return ""
    return (
        f"FP32 reaches {100 * acc:.1f} % training accuracy (< "
        f"{100 * min_train_accuracy:g} %): not trained to a minimum, no verdicts"
    )


def _claim_label(spec: ClaimSpec, model: str | None, labels: Mapping[str, str]) -> str:
    if spec.model == "trend":
        fixed = [labels.get(k, k) for _, k in reversed(_fixed_bits(labels))]
        return f"fixed bits {' → '.join(fixed)}" if fixed else "fixed bits"
    if model is None:
        return {"matched": "a model at FP32's training loss"}.get(
            spec.model, spec.model
        )
    return labels.get(model, model)


def claims_table(
    metrics: pd.DataFrame,
    claims: Sequence[ClaimSpec] = CLAIMS,
    reference: str = "fp32",
    *,
    min_train_accuracy: float = MIN_TRAIN_ACCURACY,
) -> pd.DataFrame:
    """QGen's claims decided by the paired rule of :mod:`companion.chapters.stats`.

    For each claim and part (``case``): the per-seed paired differences, quantized model
    minus ``reference`` (seed ``s`` of both share data subset and initialisation seed), with
    their mean, 95 % t-interval and paired t-test; a trend claim tests the per-seed slopes
    over the fixed bit widths (:func:`trend_slopes`) against 0; the flatness claims compare
    :func:`matched_model`. A directional claim **holds** when the Holm-adjusted p (over the
    page's directional claims) is below :data:`CLAIMS_ALPHA` and the mean has the claimed
    sign, **does not hold** when it is significant the other way, and is **not shown**
    otherwise; a "like FP32" claim holds when TOST within :data:`EQUIVALENCE_MARGINS` (Holm
    over the page's such claims of that metric) rejects, does not hold when the difference
    lies wholly outside the margin, else not shown; **not run**: the model or the metric is
    missing, no model matches FP32's training loss, or FP32's mean training accuracy is
    below ``min_train_accuracy`` (the part is not at a minimum: no verdicts at all).

    Returns
        DataFrame with ``case``, ``key``, ``claim``, ``metric``, ``model``, ``label``,
        ``expected``, ``n`` (seed pairs), ``mean`` (difference or slope), ``sd``,
        ``ci_low``, ``ci_high``, ``p_value``, ``p_holm``, ``verdict``, ``reason``,
        ``criterion``, ``numbers``.
    """
    if not 0 <= min_train_accuracy <= 1:
        raise ValueError(
            f"parameter 'min_train_accuracy' = {min_train_accuracy!r}; allowed: 0..1 "
            "(a fraction); fix: e.g. 0.98"
        )
    rows = []
    for case, part in metrics.groupby("case", sort=False):
        keys = list(part["model"].unique())
        labels = dict(zip(part["model"], part["label"], strict=True))
        unfit = _fit_note(part, reference, min_train_accuracy)
        for spec in claims:
            model = _resolve_model(spec.model, keys, part)
            label = _claim_label(spec, model, labels)
            row = {"case": case, "key": spec.key, "claim": spec.claim.format(q=label),
                   "metric": spec.metric, "model": model, "label": label,
                   "expected": spec.expected, "criterion": _criterion(spec, label),
                   "p_holm": math.nan}  # fmt: skip
            if unfit:
                _not_run(row, unfit)
            elif model is None and spec.model == "matched":
                _not_run(row, "no fixed-bit model matches FP32's training loss within "
                         f"±{TRAIN_LOSS_MARGIN:g} nats")  # fmt: skip
            elif (
                model is None
                or spec.metric not in part.columns
                or reference not in keys
            ):
                _not_run(row, "model or metric not measured")
            else:
                row.update(_paired_row(part, model, spec.metric, reference))
                row["numbers"] = _numbers(row, label)
            rows.append(row)
    _decide([r for r in rows if r.get("verdict") != "not run"])
    for r in rows:
        r["n"] = max(int(r["n"]), 0)
    cols = ["case", "key", "claim", "metric", "model", "label", "expected", "n", "mean", "sd",
            "ci_low", "ci_high", "p_value", "p_holm", "verdict", "reason", "criterion",
            "numbers"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def claims_detail(metrics: pd.DataFrame, reference: str = "fp32") -> pd.DataFrame:
    """Every model against ``reference`` on every metric: :func:`compare` per (case, model, metric)."""
    rows = []
    columns = [c for c in METRICS if c in metrics.columns]
    for case, part in metrics.groupby("case", sort=False):
        ref = part[part["model"] == reference]
        for model in model_order(part["model"]):
            if model == reference:
                continue
            sub = part[part["model"] == model]
            for metric in columns:
                c = compare(sub[metric], ref[metric])
                rows.append(
                    {
                        "case": case,
                        "model": model,
                        "label": sub["label"].iloc[0],
                        "metric": metric,
                        **c,
                    }
                )
    return pd.DataFrame(
        rows,
        columns=[
            "case",
            "model",
            "label",
            "metric",
            "mean",
            "std",
            "n",
            "ref_mean",
            "ref_std",
            "ref_n",
            "relation",
        ],
    )


def case_title(case: str, dataset_label: str | None = None) -> str:
    """``"MLP"`` / ``"CNN on Fashion-MNIST"``: the name of one part of the study in captions and tables."""
    title = _CASE_TITLE.get(case, case)
    return f"{title} on {dataset_label}" if dataset_label else title


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def _fmt_p(p: float) -> str:
    return "–" if not np.isfinite(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def claims_markdown(
    claims: pd.DataFrame,
    dataset_labels: Mapping[str, str],
    *,
    profile: str,
    not_run: Sequence[str] = (),
) -> str:
    """The ``claims.md`` snippet: a Markdown table of every claim with numbers and verdict."""
    lines = [
        f"QGen's claims tested on this build's models (profile `{profile}`). Each claim compares a "
        "quantized model with FP32 on the per-seed paired differences (seed s of both share data "
        "subset and initialisation seed): mean difference, 95 % t-interval, paired t-test. "
        + stats.rule_text("directional", alpha=CLAIMS_ALPHA)
        + " "
        + " ".join(
            stats.rule_text(
                "equivalence",
                alpha=CLAIMS_ALPHA,
                margin=m * _scale(k),
                unit="pp" if _scale(k) == 100.0 else "nats",
            )
            + f" (for the {METRICS.get(k, (k, ''))[0]})"
            for k, m in EQUIVALENCE_MARGINS.items()
        )  # fmt: skip
        + " Gaps: loss = test − train (nats), accuracy = train − test (percentage points).",
        "",
        "| part | claim | criterion | numbers | Holm p | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in claims.iterrows():
        part = case_title(r["case"], dataset_labels.get(r["case"]))
        verdict = f"**{r['verdict']}**"
        lines.append(
            f"| {_md_escape(part)} | {_md_escape(r['claim'])} | {_md_escape(r['criterion'])} | "
            f"{_md_escape(r['numbers'])} | {_fmt_p(r['p_holm'])} | {verdict} |"
        )
    if claims.empty:
        lines.append("| – | no part of the study ran | – | – | – | not run |")
    for note in not_run:
        lines.append("")
        lines.append(f"- {note}")
    counts = claims["verdict"].value_counts() if len(claims) else pd.Series(dtype=int)
    lines.append("")
    lines.append(
        "Tally: "
        + ", ".join(
            f"{counts.get(v, 0)} {v}"
            for v in ("holds", "does not hold", "not shown", "not run")
        )
        + "."
    )
    return "\n".join(lines) + "\n"


#: the columns of the gap summary: every gap next to the test loss and accuracy it comes with
GAP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("train_loss", "train loss"), ("test_loss", "test loss"),
    ("gap_loss", "loss gap"), ("train_accuracy", "train acc. (%)"),
    ("test_accuracy", "test acc. (%)"), ("gap_accuracy", "acc. gap (pp)"),
)  # fmt: skip


def _gap_row(sub: pd.DataFrame) -> str:
    cells = []
    for metric, _ in GAP_COLUMNS:
        values = sub[metric].dropna()
        n = len(values)
        cells.append(format_mean_std(values.mean(), values.std(ddof=1), n, metric))
    n = int(sub["gap_loss"].notna().sum())
    return f"| {_md_escape(sub['label'].iloc[0])} | " + " | ".join(cells) + f" | {n} |"


def gap_markdown(
    metrics: pd.DataFrame,
    dataset_labels: Mapping[str, str],
    *,
    profile: str,
    models: Sequence[str] | None = None,
) -> str:
    """The ``gap_summary.md`` snippet: every model's gaps with its losses and accuracies.

    One Markdown table per part, one row per model (FP32, every fixed bit width from many
    to few, the extras; ``models`` restricts them), mean ± std over seeds of
    :data:`GAP_COLUMNS`: a smaller gap reads next to the test loss and accuracy it comes
    with.
    """
    if metrics.empty:
        return f"No part of the generalization study ran under profile `{profile}` (see the data status).\n"
    lines = [
        f"Measured losses, accuracies and generalization gaps (mean ± std over seeds, "
        f"profile `{profile}`; losses in nats, loss gap = test − train loss, accuracy gap "
        "= train − test accuracy in percentage points):",
    ]
    header = "| model | " + " | ".join(t for _, t in GAP_COLUMNS) + " | seeds |"
    for case, part in metrics.groupby("case", sort=False):
        keys = model_order(part["model"])
        chosen = [k for k in keys if models is None or k in models]
        lines += ["", f"**{case_title(case, dataset_labels.get(case))}**", "", header,
                  "|---" * (len(GAP_COLUMNS) + 2) + "|"]  # fmt: skip
        lines += [_gap_row(part[part["model"] == k]) for k in chosen]
    return "\n".join(lines) + "\n"


def case_settings(
    cases: Sequence[str], settings: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The training settings of the requested ``cases`` (parts of the study), in order.

    Raises:
        ValueError: naming the parameter ``cases``, the unknown case(s) and the allowed
            ones.
    """
    unknown = sorted(set(cases) - set(settings))
    if unknown:
        raise ValueError(
            f"parameter 'cases' has unknown case(s) {unknown}; allowed: "
            f"{sorted(settings)}"
        )
    return {case: dict(settings[case]) for case in cases}


def data_status_markdown(parts: pd.DataFrame) -> str:
    """The ``data_status.md`` snippet: one line per part (:func:`check_parts`)."""
    lines = [
        f"- {case_title(r.case)} part (`{r.dataset}`): {r.note}"
        for r in parts.itertuples()
    ]
    return "\n".join(lines) + "\n"


def not_run_notes(parts: pd.DataFrame) -> list[str]:
    """``"<part> part: not run: ..."`` for every part that did not run."""
    return [
        f"{case_title(r.case)} part: {r.note}" for r in parts.itertuples() if not r.run
    ]


def _case_line(case: str, df: pd.DataFrame, s: Mapping[str, Any], lr: float) -> str:
    """The setup of one part: data, training, models, time, and FP32's accuracy."""
    fp32 = df[df["model"] == "fp32"]
    order = {m: i for i, m in enumerate(model_order(df["model"]))}
    models = df.drop_duplicates("model").sort_values(
        "model", key=lambda k: k.map(order)
    )
    minutes = df["train_seconds"].sum() / 60
    return (
        f"- {case_title(case, df['dataset_label'].iloc[0])}: "
        f"{int(df['n_train'].iloc[0])} training and {int(df['n_test'].iloc[0])} "
        f"test images, {s['epochs']} epoch(s), Adam lr {lr:g}, batch "
        f"{s['batch_size']}, seeds {', '.join(map(str, s['seeds']))}; models "
        f"{', '.join(models['label'])} ({len(df)} runs, {minutes:.1f} min of "
        f"training on {df['device'].iloc[0]}); FP32 reaches "
        f"{100 * fp32['train_accuracy'].mean():.1f} % training and "
        f"{100 * fp32['test_accuracy'].mean():.1f} % test accuracy (mean over "
        "seeds)."
    )


def _weights_text(m: MeasureSettings) -> str:
    texts = {
        "dequantized": "at the dequantized weights (a float copy of each model whose "
        "quantized layers hold P_q·s: the continuous loss around the point the quantized "
        "network implements)",
        "frozen": "on the quantized model with its scales frozen (perturbed float weights "
        "re-rounded onto the unperturbed grid)",
    }
    return " and ".join(texts[w] for w in m.weights)


def _corruption_text(m: MeasureSettings) -> str:
    levels = [
        f"{name.replace('_', ' ')} (level "
        f"{', '.join(map(str, m.severities or corruptions.default_severities(name)))})"
        for name in m.corruptions
    ]
    return ", ".join(levels)


def _measures_line(m: MeasureSettings, landscape: Mapping[str, Any]) -> str:
    """What every measure perturbs and on what, with each radius in its own units."""
    n_1d, n_2d, extent = (
        landscape["points_1d"],
        landscape["points_2d"],
        landscape["extent"],
    )
    return (
        f"- Sharpness and PAC-Bayes flatness on {m.measure_samples} training images per "
        f"model, {_weights_text(m)}. Average case: {m.sharpness_samples} draws of "
        f"Gaussian noise δ = ρ|w|⊙u with ρ = {m.rho_average:g}, i.e. each weight moves by "
        f"{m.rho_average:g} times its magnitude (adaptive norm ‖δ⊘|w|‖ ≈ ρ√d, measured "
        "per part below); worst case: the adaptive ℓ2 ball ‖δ⊘|w|‖ ≤ "
        f"{m.rho_worst:g} over all d weights together ({m.worst_restarts} restart(s) × "
        f"{m.worst_steps} ascent steps). PAC-Bayes σ*: the largest relative Gaussian "
        f"noise with {flatness_label(m)} ({m.flatness_samples} draws), bisected on log σ "
        f"in [{m.flatness_sigma_min:g}, {m.flatness_sigma_max:g}] to "
        f"{100 * m.flatness_rtol:g} %.\n"
        f"- Robustness on {m.robustness_samples} test images, locally generated "
        f"corruptions: {_corruption_text(m)}.\n"
        f"- Loss landscapes at the dequantized weights on {landscape['samples']} "
        f"training images, α, β ∈ [−{extent:g}, {extent:g}] with {n_1d} (1-D) and "
        f"{n_2d}×{n_2d} (2-D) points."
    )


def radii_markdown(sharpness: pd.DataFrame, m: MeasureSettings) -> str:
    """The ``radii.md`` snippet: the sharpness radii of each part in their real units.

    Per part: the number ``d`` of perturbed weights, how many are 0 (never moved by
    magnitude-aware noise; mean over models and seeds, per weights mode), the measured
    adaptive norm of the average-case noise and the worst case's ball radius.
    """
    if sharpness.empty:
        return "No sharpness was measured in this build.\n"
    lines = ["Sharpness radii of this build, in the adaptive norm ‖δ⊘|w|‖₂:", ""]
    avg = sharpness[sharpness["mode"] == "average"]
    for case, part in avg.groupby("case", sort=False):
        zeros = (
            part.groupby(_weights_column(part))["n_zero"].mean()
            / part["n_parameters"].mean()
        )
        zero_text = ", ".join(f"{100 * v:.0f} % {k}" for k, v in zeros.items())
        lines.append(
            f"- {case_title(case, part['dataset_label'].iloc[0])}: d = "
            f"{int(part['n_parameters'].iloc[0]):,} perturbed weights (mean share equal "
            f"to 0, not moved: {zero_text}); average case ρ = {m.rho_average:g} per "
            f"weight, adaptive norm {part['adaptive_norm'].mean():.3g} (≈ ρ√d); worst "
            f"case ball radius {m.rho_worst:g}."
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def setup_markdown(
    runs_by_case: Mapping[str, pd.DataFrame],
    settings: Mapping[str, Mapping[str, Any]],
    *,
    profile: str,
    lr: float,
    measures: MeasureSettings,
    landscape: Mapping[str, Any],
) -> str:
    """The ``setup.md`` snippet: one line per part that ran and one for the measures.

    Arguments:
        runs_by_case: the annotated runs of every part that ran (:func:`annotate_runs`).
        settings: training settings per part (``epochs``, ``batch_size``, ``seeds``).
        profile: the profile name; lr: the learning rate of every run.
        measures: the measure settings; landscape: ``samples``, ``extent``,
            ``points_1d``, ``points_2d`` of the loss landscapes.
    """
    lines = [
        _case_line(case, df, settings[case], lr) for case, df in runs_by_case.items()
    ]
    if not lines:
        lines.append("- No part of the study ran (see the data status).")
    lines.append(_measures_line(measures, landscape))
    return f"Setup of this build (profile `{profile}`):\n\n" + "\n".join(lines) + "\n"


@dataclass(frozen=True)
class CaptionContext:
    """What the chapter's captions name: data, profile, seeds and settings.

    Attributes:
        dataset: the datasets of the parts that ran (e.g.
            ``"MLP: MNIST (10k subset)"``).
        profile, seeds: the profile and the training seeds of the study.
        measures: the measure settings; landscape: ``samples``, ``extent``,
            ``points_1d``, ``points_2d`` of the loss landscapes, and ``seed`` (the
            training seed shown).
        bits, lsq_bits: the fixed bit widths and LSQ's bit width.
    """

    dataset: str
    profile: str
    seeds: Sequence[int]
    measures: MeasureSettings
    landscape: Mapping[str, Any]
    bits: Sequence[int]
    lsq_bits: int


def flatness_label(m: MeasureSettings) -> str:
    """The PAC-Bayes criterion in words, e.g. ``"accuracy drop ≤ 0.1"``."""
    return f"{m.flatness_criterion} drop ≤ {m.flatness_tolerance:g}"


def _caption_texts(c: CaptionContext, shown: str) -> dict[str, tuple[str, str]]:
    m, land = c.measures, c.landscape
    n, e = land["points_2d"], land["extent"]
    quantization = "quantization and bit width"
    fixed = ", ".join(map(str, sorted(c.bits, reverse=True)))
    return {
        "gap_vs_bits": (
            "Generalization gaps with the losses and accuracies they come from, per model "
            "(FP32, fixed bits from many to few, then LSQ and nested): loss gap (test − "
            "train loss), accuracy gap (train − test accuracy, percentage points), training "
            "and test loss, training and test accuracy; large markers and lines are the "
            "mean ± std over seeds, small dots the individual seeds",
            f"quantization (FP32, fixed bits {fixed}, LSQ {c.lsq_bits}-bit, nested)",
        ),
        "bin_widths": (
            "Quantization bin width (mean scale s of the kernel) per "
            "quantized layer and model, mean ± std over seeds; log "
            "scale",
            quantization,
        ),
        "sharpness": (
            "Adaptive sharpness and PAC-Bayes noise level σ* on "
            f"{m.measure_samples} training images per model; filled markers at the "
            "dequantized weights (float copy holding P_q·s), hollow markers with frozen "
            "scales (perturbed float weights re-rounded onto the unperturbed grid). "
            f"Average case: Gaussian noise of {m.rho_average:g} times each weight's "
            f"magnitude, {m.sharpness_samples} draws (its adaptive norm ‖δ⊘|w|‖ in the "
            f"column titles); worst case: the adaptive ℓ2 ball of radius {m.rho_worst:g}, "
            f"{m.worst_restarts} restart(s) × {m.worst_steps} steps; σ*: "
            f"{flatness_label(m)}, {m.flatness_samples} draws, resolved to "
            f"{100 * m.flatness_rtol:g} %, logarithmic axis; mean ± std over seeds and "
            "individual seeds",
            quantization,
        ),
        "landscape_1d": (
            "Training loss (log scale) and accuracy along one "
            f"filter-normalized random direction for {shown} at their dequantized "
            f"weights (training seed {land['seed']}, {land['samples']} "
            "training images, α on the same grid for every model)",
            "quantization",
        ),
        "landscape_2d": (
            "Training loss on the plane of two filter-normalized "
            f"random directions for {shown} at their dequantized weights (training seed "
            f"{land['seed']}, {n}×{n} grid on [−{e:g}, {e:g}]², "
            f"{land['samples']} training images); one shared "
            "logarithmic colour scale per architecture, the star "
            "marks the trained weights",
            "quantization",
        ),
        "robustness": (
            "Robustness per corruption (locally generated, MNIST-C style): loss gap on "
            "corrupted test data (corrupted test loss − training loss) and test error "
            "under the corruption relative to the clean test error (1 = unaffected), "
            f"{m.robustness_samples} test images; mean ± std over seeds",
            "quantization and corruption",
        ),
    }


def figure_caption(stem: str, context: CaptionContext, shown: str = "") -> str:
    """The caption of the chapter's figure ``stem``, provenance included.

    Made by :func:`~companion.chapters.style.caption`. ``shown`` names the models of the
    landscape figures. The landscapes name their one training seed, every other figure
    all seeds of the study.
    """
    texts = _caption_texts(context, shown)
    if stem not in texts:
        raise ValueError(f"no caption for figure {stem!r}; figures: {', '.join(texts)}")
    text, varied = texts[stem]
    seeds = (
        [context.landscape["seed"]] if stem.startswith("landscape") else context.seeds
    )
    return caption(
        text,
        dataset=context.dataset,
        profile=context.profile,
        seeds=seeds,
        varied=varied,
    )


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------
def _cases(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["case"]))


def _titles(df: pd.DataFrame) -> dict[str, str]:
    labels = (
        df.groupby("case", sort=False)["dataset_label"].first()
        if "dataset_label" in df
        else {}
    )
    return {
        c: case_title(c, labels.get(c) if len(labels) else None) for c in _cases(df)
    }


def _tick_labels(df: pd.DataFrame, order: Sequence[str]) -> list[str]:
    labels = dict(zip(df["model"], df["label"], strict=True))
    return [labels.get(k, k) for k in order]


#: printed width of the chapter's figures: the text column, so nothing shrinks in print
_WIDTH = 6.5


def _legend_below(fig: Any, ax: Any, ncol: int = 4) -> None:
    """One legend for the figure, below the panels (constrained layout keeps it inside)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center",
                   ncol=min(ncol, len(labels)), frameon=False)  # fmt: skip


def _errorbar_panel(
    ax: Any,
    part: pd.DataFrame,
    metric: str,
    colors: Mapping[str, Any],
    scale: float = 1.0,
    *,
    offset: float = 0.0,
    hollow: bool = False,
    ticks: bool = True,
) -> None:
    """Mean ± std over seeds (large marker) and every seed (dots) per model, in model order."""
    order = model_order(part["model"])
    for i, key in enumerate(order):
        values = part.loc[part["model"] == key, metric].dropna().to_numpy() * scale
        if not values.size:
            continue
        jitter = np.linspace(-0.1, 0.1, values.size) if values.size > 1 else np.zeros(1)
        ax.scatter(i + offset + jitter, values, s=10, color=colors[key], alpha=0.45,
                   lw=0, zorder=2)  # fmt: skip
        std = values.std(ddof=1) if values.size > 1 else 0.0
        ax.errorbar(i + offset, values.mean(), yerr=std, fmt="o", ms=6,
                    color=colors[key], mfc="white" if hollow else colors[key],
                    mec=colors[key] if hollow else "black", mew=1.0 if hollow else 0.6,
                    capsize=3, lw=1.3, zorder=3)  # fmt: skip
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(_tick_labels(part, order) if ticks else [], rotation=40,
                       ha="right")  # fmt: skip
    ax.set_xlim(-0.6, len(order) - 0.4)


def _pair_lines(ax: Any, part: pd.DataFrame, pairs: Sequence[tuple[str, str]],
                scale: float = 1.0) -> None:  # fmt: skip
    """Mean ± std over seeds of two metrics (train solid, test dashed) per model."""
    order = model_order(part["model"])
    for (name, text), ls, shade in zip(
        pairs, ("-", "--"), ("0.2", "0.55"), strict=True
    ):
        agg = part.groupby("model")[name].agg(["mean", "std"]).reindex(order) * scale
        ax.errorbar(range(len(order)), agg["mean"], yerr=agg["std"].fillna(0.0),
                    marker="o" if ls == "-" else "s", ms=4, ls=ls, color=shade,
                    capsize=2, label=text)  # fmt: skip
    ax.set_xticks(range(len(order)))
    ax.set_xlim(-0.6, len(order) - 0.4)


def plot_gap(metrics: pd.DataFrame):
    """Every gap with the losses and accuracies it comes from, per model (FP32, 8 → 2 bits, ...).

    One column per part; rows: loss gap, accuracy gap (mean ± std over seeds and every
    seed), training and test loss, training and test accuracy. The printed width is the
    text column whatever the number of parts and models.
    """
    import matplotlib.pyplot as plt

    cases, titles = _cases(metrics), _titles(metrics)
    colors = model_colors(metrics["model"])
    fig, axes = plt.subplots(
        4, len(cases), figsize=(_WIDTH, 8.4), squeeze=False, layout="constrained"
    )
    for j, case in enumerate(cases):
        part = metrics[metrics["case"] == case]
        col = axes[:, j]
        _errorbar_panel(col[0], part, "gap_loss", colors, ticks=False)
        _errorbar_panel(col[1], part, "gap_accuracy", colors, 100.0, ticks=False)
        _pair_lines(col[2], part, (("train_loss", "train"), ("test_loss", "test")))
        _pair_lines(col[3], part, (("train_accuracy", "train"),
                                   ("test_accuracy", "test")), 100.0)  # fmt: skip
        col[2].set_xticklabels([])
        order = model_order(part["model"])
        col[3].set_xticklabels(_tick_labels(part, order), rotation=40, ha="right")
        col[0].set_title(titles[case], fontsize="medium")
        for ax in col[:2]:
            ax.axhline(0.0, color="0.6", lw=0.8, zorder=1)
    for ax, text in zip(axes[:, 0], ("loss gap (nats)", "accuracy gap (pp)",
                                     "loss (nats)", "accuracy (%)"), strict=True):  # fmt: skip
        ax.set_ylabel(text)
    _legend_below(fig, axes[2, 0], ncol=2)
    return fig


def plot_bin_widths(bin_widths: pd.DataFrame, parameter: str = "kernel"):
    """QGen Fig. 1 analogue: quantization bin width (mean scale) per quantized layer, one line per model."""
    import matplotlib.pyplot as plt

    df = bin_widths[bin_widths["parameter"] == parameter]
    cases, titles = _cases(df), _titles(df)
    colors = model_colors(df["model"]) if len(df) else {}
    fig, axes = plt.subplots(1, max(len(cases), 1), figsize=(_WIDTH, 3.8),
                             squeeze=False, layout="constrained")  # fmt: skip
    for j, case in enumerate(cases):
        ax = axes[0, j]
        part = df[df["case"] == case]
        layers = list(dict.fromkeys(part.sort_values("layer_index")["layer"]))
        for key in model_order(part["model"]):
            sub = part[part["model"] == key]
            agg = (
                sub.groupby("layer")["scale_mean"].agg(["mean", "std"]).reindex(layers)
            )
            ax.errorbar(range(len(layers)), agg["mean"], yerr=agg["std"].fillna(0.0),
                        marker="o", ms=4, capsize=2, color=colors[key],
                        label=sub["label"].iloc[0])  # fmt: skip
        ax.set_yscale("log")
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(layers, rotation=40, ha="right")
        ax.set_xlabel("quantized layer")
        ax.set_title(titles[case], fontsize="medium")
    axes[0, 0].set_ylabel(f"bin width s of the {parameter}")
    if cases:
        _legend_below(fig, axes[0, int(np.argmax([df[df.case == c].model.nunique()
                                                   for c in cases]))])  # fmt: skip
    return fig


def average_radii(sharpness: pd.DataFrame) -> dict[str, float]:
    """Per part: the mean adaptive norm ``‖δ ⊘ |w|‖`` of the average-case perturbations.

    The average case draws Gaussian noise of relative size ``ρ`` per weight, whose norm in the
    adaptive geometry is about ``ρ √d``; this is that norm as measured (column
    ``adaptive_norm`` of the sharpness table), to be read next to the worst case's ball.
    """
    if sharpness.empty or "adaptive_norm" not in sharpness:
        return {}
    avg = sharpness[sharpness["mode"] == "average"]
    return {c: float(v) for c, v in avg.groupby("case", sort=False)["adaptive_norm"].mean().items()}  # fmt: skip


def plot_sharpness(
    metrics: pd.DataFrame,
    rho_average: float,
    rho_worst: float,
    flatness_label: str,
    radii: Mapping[str, float] | None = None,
):
    """Adaptive sharpness (average, worst case) and PAC-Bayes σ* per model, mean ± std over seeds.

    Filled markers: at the dequantized weights; hollow markers (right of them): the quantized
    model with frozen scales, where measured (``*_frozen`` columns). The rows name each
    radius in its own units: the average case's relative noise ``ρ`` per weight (and its
    adaptive norm, ``radii``), the worst case's adaptive ball radius.
    """
    import matplotlib.pyplot as plt

    cases, titles = _cases(metrics), _titles(metrics)
    colors = model_colors(metrics["model"])
    radii = radii or {}
    panels = [
        ("sharpness_average", f"average case (nats)\nnoise ρ = {rho_average:g}·|w|"),
        ("sharpness_worst", f"worst case (nats)\nball ‖δ⊘|w|‖ ≤ {rho_worst:g}"),
        ("pac_bayes_sigma", f"PAC-Bayes σ*\n({flatness_label})"),
    ]
    fig, axes = plt.subplots(len(panels), len(cases), figsize=(_WIDTH, 7.6),
                             squeeze=False, layout="constrained")  # fmt: skip
    for j, case in enumerate(cases):
        part = metrics[metrics["case"] == case]
        for i, (metric, ylabel) in enumerate(panels):
            ax, last = axes[i, j], i == len(panels) - 1
            frozen = f"{metric}_frozen" in part
            if metric in part:
                _errorbar_panel(ax, part, metric, colors, offset=-0.15 * frozen,
                                ticks=last)  # fmt: skip
            if frozen:
                _errorbar_panel(ax, part, f"{metric}_frozen", colors, offset=0.15,
                                hollow=True, ticks=last)  # fmt: skip
            ax.set_ylabel(ylabel if j == 0 else "")
            if metric == "pac_bayes_sigma":
                ax.set_yscale("log")
        norm = radii.get(case)
        note = f"\n(average-case ‖δ⊘|w|‖ ≈ {norm:.3g})" if norm else ""
        axes[0, j].set_title(titles[case] + note, fontsize="medium")
    return fig


def plot_landscape_1d(one_d: pd.DataFrame):
    """Training loss (log) and accuracy along one filter-normalized direction, same alpha grid for all models."""
    import matplotlib.pyplot as plt

    cases, titles = _cases(one_d), _titles(one_d)
    colors = model_colors(one_d["model"])
    fig, axes = plt.subplots(2, len(cases), figsize=(_WIDTH, 5.8), squeeze=False,
                             sharex=True, layout="constrained")  # fmt: skip
    for j, case in enumerate(cases):
        part = one_d[one_d["case"] == case]
        for key in model_order(part["model"]):
            sub = part[part["model"] == key].sort_values("alpha")
            axes[0, j].plot(sub["alpha"], sub["loss"], marker=".", color=colors[key],
                            label=sub["label"].iloc[0])  # fmt: skip
            axes[1, j].plot(sub["alpha"], 100 * sub["accuracy"], marker=".",
                            color=colors[key])  # fmt: skip
        axes[0, j].set_yscale("log")
        axes[0, j].set_title(titles[case], fontsize="medium")
        axes[1, j].set_xlabel("α (along d₁)")
    axes[0, 0].set_ylabel("training loss (nats)")
    axes[1, 0].set_ylabel("training accuracy (%)")
    _legend_below(fig, axes[0, 0])
    return fig


def _contour(ax: Any, sub: pd.DataFrame, levels: np.ndarray, norm: Any) -> Any:
    grid = sub.pivot_table(index="beta", columns="alpha", values="loss")
    a, b = np.meshgrid(grid.columns.to_numpy(), grid.index.to_numpy())
    z = np.clip(grid.to_numpy(), levels[0], levels[-1])
    mappable = ax.contourf(a, b, z, levels=levels, norm=norm, cmap="viridis")
    lines = ax.contour(a, b, z, levels=levels[1::3], norm=norm, colors="white",
                       linewidths=0.7)  # fmt: skip
    ax.clabel(lines, fontsize=9, fmt="%.2g")
    ax.plot(0, 0, marker="*", color="red", ms=9)
    ax.set_aspect("equal")
    return mappable


def plot_landscape_2d(two_d: pd.DataFrame, n_levels: int = 14):
    """Contour plots of the training loss on the (alpha, beta) plane: one row per part, one
    column per model, a shared log colour scale per part."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FixedLocator, FormatStrFormatter

    cases = _cases(two_d)
    ncols = (
        max(int(two_d.groupby("case")["model"].nunique().max()), 1) if len(two_d) else 1
    )
    panel = min(2.3, (_WIDTH - 1.0) / ncols)
    fig, grid_axes = plt.subplots(len(cases), ncols, squeeze=False, layout="constrained",
                                  figsize=(_WIDTH, (panel + 0.7) * len(cases)))  # fmt: skip
    for i, case in enumerate(cases):
        part = two_d[two_d["case"] == case]
        vmin = max(float(part["loss"].min()), 1e-6)
        vmax = max(float(part["loss"].max()), vmin * 1.01)
        levels, norm = np.geomspace(vmin, vmax, n_levels), LogNorm(vmin=vmin, vmax=vmax)
        order = model_order(part["model"])
        for j, ax in enumerate(grid_axes[i]):
            if j >= len(order):
                ax.set_visible(False)
                continue
            sub = part[part["model"] == order[j]]
            mappable = _contour(ax, sub, levels, norm)
            ax.set_title(f"{_CASE_TITLE.get(case, case)}: {sub['label'].iloc[0]}",
                         fontsize="small")  # fmt: skip
            ax.set_xlabel("α (d₁)")
            ax.set_ylabel("β (d₂)" if j == 0 else "")
        cbar = fig.colorbar(mappable, ax=list(grid_axes[i, : len(order)]), shrink=0.9)
        cbar.set_label(f"{_CASE_TITLE.get(case, case)} training loss", fontsize="small")
        cbar.ax.yaxis.set_major_locator(FixedLocator(levels[::3]))
        cbar.ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
        cbar.ax.yaxis.set_minor_locator(FixedLocator([]))
        cbar.ax.tick_params(labelsize="small")
    return fig


def plot_robustness(robustness: pd.DataFrame):
    """Per corruption and model: loss gap on corrupted test data and error relative to clean.

    ``robustness`` is :func:`robustness_rows`' table (columns ``loss_gap``,
    ``error_ratio``). One column per part, two rows (loss gap in nats; error ratio); the
    corruptions along the x axis (the clean test set first), one marker per model: mean ±
    std over seeds (and over the levels of a corruption evaluated at several).
    """
    import matplotlib.pyplot as plt

    cases, titles = _cases(robustness), _titles(robustness)
    colors = model_colors(robustness["model"])
    names = list(dict.fromkeys(robustness["corruption"]))
    fig, axes = plt.subplots(2, len(cases), figsize=(_WIDTH, 6.6), squeeze=False,
                             sharex=True, layout="constrained")  # fmt: skip
    for j, case in enumerate(cases):
        part = robustness[robustness["case"] == case]
        keys = model_order(part["model"])
        offsets = np.linspace(-0.3, 0.3, len(keys)) if len(keys) > 1 else np.zeros(1)
        for key, dx in zip(keys, offsets, strict=True):
            rows = part[part["model"] == key]
            for ax, metric in zip(axes[:, j], ("loss_gap", "error_ratio"), strict=True):
                agg = (
                    rows.groupby("corruption")[metric]
                    .agg(["mean", "std"])
                    .reindex(names)
                )
                ax.errorbar(np.arange(len(names)) + dx, agg["mean"],
                            yerr=agg["std"].fillna(0.0), fmt="o", ms=3, elinewidth=0.8,
                            color=colors[key], label=rows["label"].iloc[0])  # fmt: skip
        axes[0, j].set_title(titles[case], fontsize="medium")
        axes[1, j].axhline(1.0, color="0.6", lw=0.8, zorder=1)
        axes[1, j].set_xticks(range(len(names)))
        axes[1, j].set_xticklabels([n.replace("_", " ") for n in names], rotation=60,
                                   ha="right")  # fmt: skip
    axes[0, 0].set_ylabel("loss gap on corrupted\ntest data (nats)")
    axes[1, 0].set_ylabel("error / clean error")
    _legend_below(fig, axes[0, int(np.argmax([robustness[robustness.case == c].model.nunique()
                                               for c in cases]))])  # fmt: skip
    return fig
