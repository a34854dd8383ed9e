"""What each notebook parameter accepts: the declared rules the runner checks before anything runs.

:func:`companion.engine.runner.resolve_parameters` is the one place that validates notebook
parameters (the parameters cell's defaults, the profile YAML and ``--set``/``--params``
overrides); this module holds its rules, one per parameter name (:func:`rules`), and
:func:`check`, which applies one. A value passes when

1. its type is that of the default in the parameters cell (checked by the runner);
2. it is not ``None`` (YAML ``null``, or an empty ``--set epochs=``), unless the rule is
   ``nullable`` (or the default in the cell is ``None``);
3. it satisfies the rule: a range or a set of choices for a single value and for every element
   of a list (nested lists included); a list needs at least one element unless the rule says
   ``allow_empty``, and exactly ``length`` elements where the rule gives one.

Parameters that stand for a run-configuration key (``epochs``, ``mlp_epochs``, ``thresholds``,
``seeds``, ...) take that key's rule from :data:`companion.engine.config.SCHEMA` through
:func:`companion.engine.config.check_key`, so a range is written once. ``setups`` (and
``dataset_insights``' ``common``/``quantized``) are mappings of configuration keys and sweep options,
checked key by key the same way. Every parameter of every notebook has a rule here
(``tests/test_runner.py`` checks it): a notebook that gains a parameter gains a line in
:func:`rules`.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Rule", "UNDECLARED", "rules", "check", "describe_value"]


@dataclass(frozen=True)
class Rule:
    """The values one notebook parameter accepts.

    Arguments:
        allowed: what is allowed, in words (for one value, or for each element of a list).
        check: called with one value (each element of a list); raises ``ValueError`` saying what
            is allowed when the value does not fit.
        nullable: ``None`` is a meaningful value (e.g. ``train_limit: null`` = all examples).
        allow_empty: an empty list is meaningful (e.g. no extra models); otherwise refused.
        length: exact number of elements of a list (e.g. a ``[row, column]`` position).
    """

    allowed: str
    check: Callable[[Any], None]
    nullable: bool = False
    allow_empty: bool = False
    length: int | None = None


#: the rule of a parameter without a declared one: its type only, and lists not empty
UNDECLARED = Rule("a value of the default's type", lambda value: None)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _predicate(ok: Callable[[Any], bool], allowed: str) -> Callable[[Any], None]:
    def check_one(value: Any) -> None:
        if not ok(value):
            raise ValueError(f"allowed: {allowed}")

    return check_one


def _rule(ok: Callable[[Any], bool], allowed: str, **kw: Any) -> Rule:
    return Rule(allowed, _predicate(ok, allowed), **kw)


def _count(lo: int = 1, **kw: Any) -> Rule:
    return _rule(lambda v: _is_int(v) and v >= lo, f"an integer >= {lo}", **kw)


def _positive(**kw: Any) -> Rule:
    return _rule(lambda v: _is_number(v) and v > 0, "a finite number > 0", **kw)


def _number(**kw: Any) -> Rule:
    return _rule(_is_number, "a finite number", **kw)


def _choice(choices: tuple[Any, ...], **kw: Any) -> Rule:
    return _rule(
        lambda v: isinstance(v, str) and v in choices,
        ", ".join(map(repr, choices)),
        **kw,
    )


def _config_key(key: str, **kw: Any) -> Rule:
    """The rule of run-configuration key ``key`` (nullable where the key is optional)."""
    from companion.engine import config  # deferred, as in rules(): loads TensorFlow

    field = config.SCHEMA[key]

    def check_one(value: Any) -> None:
        try:
            config.check_key(key, value)
        except ValueError:
            raise ValueError(
                f"allowed: {field.allowed()} (like config key {key!r})"
            ) from None

    kw.setdefault("nullable", field.optional)
    return Rule(f"{field.allowed()} (like config key {key!r})", check_one, **kw)


def _config_mapping(
    what: str, *, options: tuple[str, ...] = (), need: tuple[str, ...] = ()
) -> Rule:
    """A mapping of configuration keys (each checked by :func:`companion.engine.config.check_key`)
    and of sweep ``options`` named like notebook parameters (each checked by that parameter's rule)."""
    from companion.engine import config  # deferred, as in rules(): loads TensorFlow

    allowed = f"a mapping of configuration keys ({', '.join(config.KEYS)})"
    if options:
        allowed += f" and sweep options ({', '.join(options)})"
    if need:
        allowed += f" with {', '.join(map(repr, need))}"

    def check_one(value: Any) -> None:
        if not isinstance(value, dict):
            raise ValueError(
                f"{what} must be a mapping, e.g. {{dataset: fashion_mnist, arch: mlp}}; allowed: {allowed}"
            )
        for key in need:
            if key not in value:
                raise ValueError(f"{what} {value!r} has no {key!r}; allowed: {allowed}")
        for key, item in value.items():
            if key in config.SCHEMA:
                try:
                    config.check_key(key, item)
                except ValueError as err:
                    raise ValueError(f"{what} key {key!r}: {err}") from None
            elif key in options:
                try:
                    check(key, item, rules()[key])
                except ValueError as err:
                    raise ValueError(f"{what} option {key!r}: {err}") from None
            else:
                raise ValueError(
                    f"{what} has the unknown key {key!r}; allowed: {allowed}"
                )

    return Rule(allowed, check_one)


def _landscape_model(v: Any) -> bool:
    return (
        isinstance(v, str)
        and re.fullmatch(r"fp32|nested|fixed_bits_\d+|lsq_\d+", v) is not None
    )


def _baseline_granularity(v: Any) -> bool:
    from companion.chapters import analysis  # deferred, as in rules(): import cycle

    try:
        analysis.baseline_granularity("mlp", v)
    except (ValueError, TypeError):
        return False
    return True


@functools.cache
def rules() -> dict[str, Rule]:
    """Parameter name -> :class:`Rule`, for every parameter of every notebook (built on first use).

    One declarative table (not logic), so it is long. The imports below are deferred: the
    chapter modules import the engine (a cycle at import time) and load TensorFlow, which
    ``--dry-run`` and the runner's start should not wait for.
    """
    from companion import paths
    from companion.chapters.analysis import SETUP_OPTIONS
    from companion.chapters.corruptions import CORRUPTIONS, SEVERITIES
    from companion.chapters.qgen import EXTRA_MODELS, WEIGHTS_MODES
    from companion.chapters.thesis import CONV_SWEEP_OPTIONS
    from companion.chapters.thesis import LOSS_TERMS as THESIS_TERMS
    from companion.data import DATASETS
    from lqs.generalization import FLATNESS_CRITERIA
    from lqs.losses import TERMS

    table: dict[str, Rule] = {
        # set by the runner (--profile; results/<profile>/<notebook>/)
        "profile": _choice(paths.PROFILES),
        "results_dir": _rule(
            lambda v: isinstance(v, str), "a folder path (set by the runner)"
        ),
        # flags
        **dict.fromkeys(
            (
                "strict_data",
                "include_no_term",
                "loss_terms_overlay",
                "cnn_with_extra_models",
            ),
            _rule(lambda v: isinstance(v, bool), "true or false"),
        ),
        # run-configuration keys, alone or as sweep lists (each element)
        **{
            k: _config_key(k)
            for k in (
                "epochs",
                "pretrain_epochs",
                "lr",
                "pretrain_lr",
                "l2",
                "threshold",
                "batch_size",
                "seed",
                "train_limit",
                "test_limit",
                "init_bits",
                "kernel_granularity",
                "bias_granularity",
                "mode",
            )
        },
        **dict.fromkeys(
            ("mlp_epochs", "cnn_epochs", "dynamics_epochs"), _config_key("epochs")
        ),
        **dict.fromkeys(
            ("mlp_batch_size", "cnn_batch_size", "measure_batch_size", "ratio_batch"),
            _config_key("batch_size"),
        ),
        **dict.fromkeys(
            ("seeds", "mlp_seeds", "cnn_seeds", "landscape_seed", "measure_seed"),
            _config_key("seed"),
        ),
        **dict.fromkeys(
            ("mlp_train_limit", "cnn_train_limit"), _config_key("train_limit")
        ),
        **dict.fromkeys(
            ("mlp_test_limit", "cnn_test_limit"), _config_key("test_limit")
        ),
        **dict.fromkeys(("learning_rates", "worked_lr"), _config_key("lr")),
        "l2_coefficients": _config_key("l2"),
        **dict.fromkeys(
            (
                "thresholds",
                "nested_thresholds",
                "dynamics_thresholds",
                "vote_lambdas",
                "vote_lambdas_wide",
                "ratio_lambdas",
                "worked_threshold",
                "sgd_thresholds",
            ),
            _config_key("threshold"),
        ),
        **dict.fromkeys(("rates", "scalar_inverse_rates"), _config_key("rate_inverse")),
        "deviation_forms": _config_key("deviation_form"),
        **dict.fromkeys(
            (
                "granularities",
                "nested_granularities",
                "post_training_granularities",
                "term_granularities",
                "granularity",
                "conv_kernel_granularity",
                "weight_granularity",
            ),
            _config_key("kernel_granularity"),
        ),
        **dict.fromkeys(
            ("modes", "qat_mode", "nested_mode", "lsq_modes"), _config_key("mode")
        ),
        **dict.fromkeys(
            (
                "bits",
                "ptq_bits",
                "fixed_bits",
                "lsq_bits",
                "weight_bits",
                "input_bits",
                "cnn_bits",
            ),
            _config_key("bits"),
        ),
        **dict.fromkeys(("mlp_dataset", "cnn_dataset"), _config_key("dataset")),
        "dataset": _choice(("synthetic", *DATASETS)),
        # mappings of configuration keys
        "setups": _config_mapping(
            "setup", options=(*SETUP_OPTIONS, "rates"), need=("dataset",)
        ),
        "common": _config_mapping("common"),
        "quantized": _config_mapping("quantized"),
        "threshold_source": _choice(("given", "pareto_threshold")),
        # study-specific choices
        "terms": _choice(TERMS),
        **dict.fromkeys(
            ("thesis_terms", "post_training_terms"), _choice(tuple(THESIS_TERMS))
        ),
        "steps": _count(1),
        "full_size": _config_mapping(
            "full_size", options=("thresholds",), need=("dataset",)
        ),
        "conv_sweeps": _config_mapping(
            "conv_sweeps", options=CONV_SWEEP_OPTIONS, need=("thresholds", "rates")
        ),
        **dict.fromkeys(
            ("ptq_granularities", "qat_granularities"),
            _rule(_baseline_granularity, "'per_tensor', 'per_channel'"),
        ),
        "cases": _choice(("mlp", "cnn")),
        "extra_models": _choice(EXTRA_MODELS, allow_empty=True),
        "severities": _rule(
            lambda v: _is_int(v) and v in SEVERITIES, ", ".join(map(str, SEVERITIES))
        ),
        "landscape_models": _rule(
            _landscape_model, "model keys: fp32, nested, fixed_bits_<bits>, lsq_<bits>"
        ),
        "flatness_criterion": _choice(FLATNESS_CRITERIA),
        "weights": _choice(WEIGHTS_MODES),
        "corruptions": _choice(CORRUPTIONS),
        "min_train_accuracy": _rule(
            lambda v: _is_number(v) and 0 <= v <= 1,
            "a number in [0, 1] (a fraction of accuracy)",
        ),
        # fractions and positive reals
        "max_drop": _rule(
            lambda v: _is_number(v) and 0 <= v <= 1,
            "a number in [0, 1] (a fraction of accuracy)",
        ),
        **dict.fromkeys(
            (
                "flatness_tolerance",
                "flatness_rtol",
                "flatness_sigma_min",
                "rho_average",
                "rho_worst",
                "flatness_sigma_max",
                "landscape_extent",
                "scale",
                "worked_scale",
            ),
            _positive(),
        ),
        **dict.fromkeys(("worked_p", "worked_g", "conv_kernel"), _number()),
        # counts and sizes
        **dict.fromkeys(
            (
                "mlp_samples",
                "samples_per_class",
                "histogram_bins",
                "top_k",
                "measure_samples",
                "sharpness_samples",
                "worst_restarts",
                "worst_steps",
                "flatness_samples",
                "flatness_iters",
                "robustness_samples",
                "landscape_samples",
                "n_points",
                "conv_filters",
                "conv_kernel_size",
                "dense_in",
                "dense_out",
                "n_train",
                "hidden_units",
                "n_inputs",
                "conv_input_size",
                "rgb_kernel_max",
                "mlp_units",
            ),
            _count(1),
        ),
        **dict.fromkeys(("landscape_points_1d", "landscape_points_2d"), _count(2)),
        # indices and positions
        **dict.fromkeys(("conv_padding", "weight_layer", "ratio_layer"), _count(0)),
        **dict.fromkeys(("conv_position", "rgb_position"), _count(0, length=2)),
        "conv_input_shape": _count(1, length=3),
        "conv_kernel_shape": _count(1, length=4),
    }
    return table


def describe_value(value: Any) -> str:
    """``value`` as a YAML flow value (how it is written after ``--set key=``)."""
    import yaml

    text = yaml.safe_dump(
        value, default_flow_style=True, width=10**6, sort_keys=False
    ).strip()
    return text.removesuffix("...").strip()  # a scalar document ends with "..."


def check(name: str, value: Any, rule: Rule) -> None:
    """Apply ``rule`` to ``value`` (not ``None``); raise ``ValueError`` naming the bad element and what is allowed.

    Lists (and tuples) are walked: a list must have at least one element unless ``rule.allow_empty``
    and exactly ``rule.length`` elements where given; every element (of nested lists too) must
    satisfy ``rule.check``. The message starts with the bad element (and its index) and ends with
    what is allowed; the runner adds the parameter, the source and the fix.
    """

    def walk(item: Any, where: str, top: bool) -> None:
        if isinstance(item, (list, tuple)):
            if not item and not rule.allow_empty:
                raise ValueError(
                    f"{'is' if top else f'has at {where}'} an empty list; the notebook needs at least one value "
                    f"(each: {rule.allowed})"
                )
            if top and rule.length is not None and len(item) != rule.length:
                raise ValueError(
                    f"has {len(item)} elements, not {rule.length} (each: {rule.allowed})"
                )
            for i, element in enumerate(item):
                walk(element, f"{where}[{i}]", False)
            return
        if item is None:
            if rule.nullable:
                return
            raise ValueError(
                f"has null at {where} (each element needs a value: {rule.allowed})"
            )
        try:
            rule.check(item)
        except ValueError as err:
            at = "" if top else f" at {where}"
            raise ValueError(f"has the bad value {item!r}{at}; {err}") from None

    walk(value, name, True)
