"""The experiment configuration: schema, validation and hash.

One configuration (a flat ``dict`` of plain JSON values) describes one training run completely:
dataset, network, quantization flavour, optimisation and data sizes. :func:`validate_config`
fills the defaults and rejects anything wrong -- unknown keys, wrong types, out-of-range values,
combinations that do not fit (e.g. a per-filter granularity on the MLP) -- *before* any training
starts, with a message naming the key, the value and what is allowed. :func:`config_hash` keys
the results store (:mod:`companion.engine.store`): the sha256 of the canonical JSON of the validated
configuration, of ``lqs.__version__`` and of :data:`CODE_VERSION`.

Keys that have no effect for a flavour or mode (``bits`` of a nested run, the loss-term rates of
any flavour but ``loss_terms``, ``pretrain_epochs`` of a ``from_scratch`` run, ...) are set to
``None`` by validation (see :func:`applies`), so a sweep that varies them runs once and tables show
an empty cell where a value had no effect; their type and range are still checked. ``None`` (YAML
``null``, e.g. ``--set epochs=``) is refused for a key that is not optional where that key acts; it is
accepted only where the key does not act (it is ``None`` there anyway, so a validated configuration
validates to itself). Leave a key out to get its default.

:data:`SCHEMA` lists every key with its type, default and allowed values;
:func:`describe` renders it as a Markdown table for the book.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import lqs
from companion.data import DATASETS
from lqs.baselines import MAX_BITS, MIN_BITS
from lqs.losses import DEVIATION_FORMS
from lqs.models import ARCHS, WEIGHT_INITS
from lqs.models import FLAVOURS as TRAINED_FLAVOURS
from lqs.models import allowed_kernel_granularities as _trained_granularities
from lqs.quantizers import (
    AGGREGATES,
    BIAS_GRANULARITIES,
    GRANULARITIES,
)

__all__ = [
    "CODE_VERSION",
    "ARCHS",
    "FLAVOURS",
    "TRAINED_FLAVOURS",
    "MODES",
    "OPTIMIZERS",
    "BITS_RANGE",
    "Field",
    "SCHEMA",
    "KEYS",
    "default_arch",
    "allowed_kernel_granularities",
    "validate_config",
    "check_key",
    "config_hash",
    "canonical_json",
    "parent_config",
    "lr_at",
    "applies",
    "describe",
]

#: bump when a code change alters the numbers an existing configuration produces (invalidates the store).
#: "2": the training images exclude the validation split (``validation_fraction``, default 0.1), so
#: every run trains on other data; records gain the validation columns (``val_accuracy``, ``val_loss``,
#: ``best_val_accuracy``, ``n_val``; ``best_epoch`` now picked on validation, ``best_test_accuracy``
#: removed) and the two's-complement memory columns.
CODE_VERSION = "2"

#: quantization flavours; ``ptq`` = post-training min-max quantization of the FP32 parent, no training
FLAVOURS: tuple[str, ...] = (*TRAINED_FLAVOURS, "ptq")
MODES: tuple[str, ...] = ("from_scratch", "post_training")
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
#: inclusive range of ``bits`` (LSQ, fixed-bit and PTQ baselines) and ``init_bits``
BITS_RANGE: tuple[int, int] = (MIN_BITS, MAX_BITS)

_DEFAULT_ARCH = {
    "mnist": "mlp",
    "fashion_mnist": "mlp",
    "cifar10": "cnn",
    "imagenette": "resnet",
}
#: granularities of PTQ: one scale per tensor or per output unit (``per_channel``)
_PTQ_GRANULARITIES = {
    "mlp": ("scalar", "column"),
    "cnn": ("scalar", "filter"),
    "resnet": ("scalar", "filter"),
}


def default_arch(dataset: str) -> str:
    """The thesis network of a dataset: MNIST/Fashion-MNIST -> ``mlp``, CIFAR-10 -> ``cnn``, Imagenette -> ``resnet``."""
    if dataset not in _DEFAULT_ARCH:
        raise ValueError(
            f"unknown dataset {dataset!r}; allowed: {', '.join(map(repr, _DEFAULT_ARCH))}"
        )
    return _DEFAULT_ARCH[dataset]


def allowed_kernel_granularities(arch: str, flavour: str) -> tuple[str, ...]:
    """Kernel granularities that fit ``arch`` and ``flavour``.

    Trained quantized flavours (nested, loss_terms, lsq, fixed_bits): the MLP's dense kernels
    ``(in, out)`` take ``scalar``/``row``/``column``; the convolutional nets also ``channel`` (per
    input channel) and ``filter`` (per output channel) -- their quantized dense layers, if any, then
    use ``row`` resp. ``column`` (:mod:`lqs.models`). ``ptq``: one scale per tensor (``scalar``) or
    per output unit (``column`` for the MLP, ``filter`` for the convolutional nets), as
    :func:`lqs.baselines.ptq_minmax` offers. ``fp32`` has no scales (the key is ``None`` there).
    """
    if flavour == "ptq":
        if arch not in ARCHS:
            raise ValueError(
                f"unknown arch {arch!r}; allowed: {', '.join(map(repr, ARCHS))}"
            )
        return _PTQ_GRANULARITIES[arch]
    return _trained_granularities(arch, flavour)


# --------------------------------------------------------------------------------------------
# schema


@dataclass(frozen=True)
class Field:
    """One configuration key: accepted type, default, a range/choice check and its documentation."""

    name: str
    kind: str  # "str", "int", "float", "bool"
    default: Any
    doc: str
    optional: bool = False  # None allowed
    choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None
    check: Callable[[Any], bool] | None = None
    rule: str = ""  # human words for `check`
    fix: str = ""  # what to do instead, appended to the out-of-range error

    def allowed(self) -> str:
        """What is allowed, in words (for error messages and :func:`describe`)."""
        if self.choices is not None:
            choices = self.choices() if callable(self.choices) else self.choices
            text = ", ".join(map(repr, choices))
        else:
            text = _KIND_WORDS[self.kind]
            if self.rule:
                text += f" {self.rule}"
        return text + (" or None" if self.optional else "")


#: what each :attr:`Field.kind` accepts, in words
_KIND_WORDS = {
    "bool": "a boolean",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "steps": "a list of [epoch, factor] pairs",
}


def _finite_ge(lo: float) -> Callable[[Any], bool]:
    return lambda v: math.isfinite(v) and v >= lo


def _finite_gt(lo: float) -> Callable[[Any], bool]:
    return lambda v: math.isfinite(v) and v > lo


def _bits(v: int) -> bool:
    return BITS_RANGE[0] <= v <= BITS_RANGE[1]


def _fraction_below_half(v: float) -> bool:
    return math.isfinite(v) and 0.0 <= v < 0.5


def _lr_steps_ok(steps: list[list[Any]]) -> bool:
    """Epochs >= 1 and strictly increasing, factors finite and > 0."""
    epochs = [e for e, _ in steps]
    increasing = all(a < b for a, b in zip(epochs, epochs[1:], strict=False))
    return (
        epochs[0] >= 1
        and increasing
        and all(math.isfinite(f) and f > 0 for _, f in steps)
    )


_FIELDS = [
    Field("dataset", "str", "mnist", "dataset name (companion.data)", choices=DATASETS),
    Field(
        "arch",
        "str",
        None,
        "network; None: the dataset's thesis network (default_arch)",
        optional=True,
        choices=ARCHS,
    ),
    Field(
        "flavour",
        "str",
        "nested",
        "layers: fp32; nested (threshold scale gradient); loss_terms (STE, scales learn "
        "from the loss terms); lsq; fixed_bits; ptq (min-max post-training quantization, no training)",
        choices=FLAVOURS,
    ),
    Field(
        "mode",
        "str",
        None,
        "from_scratch, or post_training (start from the trained FP32 parent); None: "
        "post_training for ptq, from_scratch otherwise",
        optional=True,
        choices=MODES,
    ),
    Field(
        "kernel_granularity",
        "str",
        "scalar",
        "axis of a kernel with its own scales (see lqs.quantizers)",
        choices=GRANULARITIES,
    ),
    Field(
        "bias_granularity",
        "str",
        "scalar",
        "scales of a bias: one (scalar) or one per unit (row)",
        choices=BIAS_GRANULARITIES,
    ),
    Field(
        "quantize_bias",
        "bool",
        True,
        "quantize biases too (thesis: yes; baselines: one scale per bias)",
    ),
    Field(
        "quantize_dense",
        "bool",
        None,
        "quantize the dense layers of the conv nets; None: thesis choice "
        "(mlp: yes, cnn/resnet: no, only the convolutions); ptq follows it too, so every "
        "method quantizes the same layers",
        optional=True,
    ),
    Field(
        "threshold",
        "float",
        1e-9,
        "lambda of the nested scale-gradient vote",
        check=_finite_ge(0.0),
        rule=">= 0",
    ),
    Field(
        "all_above_vote",
        "bool",
        True,
        "a group whose elements all exceed lambda votes -tanh(lambda) (implementation) "
        "instead of 0 (text)",
    ),
    Field(
        "aggregate",
        "str",
        "mean",
        "how the votes of a scale group combine",
        choices=AGGREGATES,
    ),
    Field(
        "init_bits",
        "int",
        None,
        "start nested/loss-term scales at max|P|/2^(b-1) per group (at build, and after "
        "copying FP32 weights in post_training); None: 100*eps (implementation)",
        optional=True,
        check=_bits,
        rule=f"in {BITS_RANGE[0]}..{BITS_RANGE[1]}",
    ),
    Field(
        "bits",
        "int",
        4,
        "bit width of the lsq, fixed_bits and ptq baselines",
        check=_bits,
        rule=f"in {BITS_RANGE[0]}..{BITS_RANGE[1]}",
    ),
    Field(
        "lr",
        "float",
        1e-4,
        "learning rate (thesis: 1e-4)",
        check=_finite_gt(0.0),
        rule="> 0",
    ),
    Field(
        "lr_steps",
        "steps",
        None,
        "learning-rate steps [[E, f], ...]: from epoch E on (after E epochs, Keras's 0-based "
        "epoch index E) the rate is multiplied by f, cumulatively (lr_at); the thesis's "
        "Imagenette [[40, 0.5], [60, 0.2]] trains at 1e-4, from epoch 40 at 5e-5, from 60 at "
        "1e-5; the FP32 parent of a post_training/ptq run trains with the same steps; a step "
        "at or after the last epoch has no effect; None or []: a constant rate",
        optional=True,
        check=_lr_steps_ok,
        rule="with epochs (integers >= 1) strictly increasing and factors > 0",
        fix="write e.g. [[40, 0.5], [60, 0.2]] (epoch, factor) with epochs in increasing "
        "order and positive factors (a change at epoch 0 is a different lr: set lr), "
        "or leave the key out for a constant learning rate",
    ),
    Field(
        "pretrain_lr",
        "float",
        None,
        "learning rate of the FP32 parent in post_training/ptq; None: lr",
        optional=True,
        check=_finite_gt(0.0),
        rule="> 0",
    ),
    Field(
        "l2",
        "float",
        0.0,
        "L2 coefficient on every conv/dense kernel",
        check=_finite_ge(0.0),
        rule=">= 0",
    ),
    Field(
        "optimizer", "str", "adam", "optimizer (sgd: momentum 0.9)", choices=OPTIMIZERS
    ),
    Field(
        "weight_init",
        "str",
        "default",
        "initial weights: default (the architecture's usual one, zero biases) or "
        "random_normal (the thesis: kernels and biases from N(0, 0.05^2))",
        choices=WEIGHT_INITS,
    ),
    Field(
        "batch_size",
        "int",
        32,
        "mini-batch size (thesis: 32)",
        check=lambda v: v >= 1,
        rule=">= 1",
    ),
    Field(
        "epochs",
        "int",
        2,
        "training epochs (post_training: epochs after the FP32 parent)",
        check=lambda v: v >= 1,
        rule=">= 1",
    ),
    Field(
        "pretrain_epochs",
        "int",
        2,
        "epochs of the FP32 parent (post_training and ptq only)",
        check=lambda v: v >= 1,
        rule=">= 1",
    ),
    Field(
        "seed",
        "int",
        0,
        "seed of initialisation, shuffling, dropout and data subsets",
        check=lambda v: v >= 0,
        rule=">= 0",
    ),
    Field(
        "train_limit",
        "int",
        None,
        "class-stratified subset size of the training split; None: all",
        optional=True,
        check=lambda v: v >= 1,
        rule=">= 1",
    ),
    Field(
        "validation_fraction",
        "float",
        0.1,
        "share of the training images (after train_limit) held out as the validation split: "
        "round(f*n) images, class-stratified, drawn with seed, never trained on; the best "
        "epoch and the chapters' selections use it, the test set is only reported; "
        "0: no validation split (validation metrics None)",
        check=_fraction_below_half,
        rule=">= 0 and < 0.5",
        fix="give a fraction of the training images below one half, e.g. 0.1 (the default: "
        "leave the key out), or 0 for no validation split",
    ),
    Field(
        "validation_every",
        "int",
        1,
        "validate on the split every N epochs during training (Keras validation_freq: after "
        "epochs N, 2N, ...); the other epochs' history rows have no val_* values; the final "
        "validation and test metrics and training are the same for every N; 1 (the default): "
        "every epoch",
        check=lambda v: v >= 1,
        rule=">= 1",
        fix="give a whole number of epochs, e.g. 8, or leave the key out to validate every epoch",
    ),
    Field(
        "test_limit",
        "int",
        None,
        "subset size of the test split; None: all",
        optional=True,
        check=lambda v: v >= 1,
        rule=">= 1",
    ),
    Field(
        "image_size",
        "int",
        None,
        "square image side; None: native (Imagenette: companion.data.IMAGENETTE_DEFAULT_SIZE)",
        optional=True,
        check=lambda v: v >= 8,
        rule=">= 8",
    ),
    Field(
        "rate_inverse",
        "float",
        0.0,
        "rate of the inverse loss term mean(1/s) (loss_terms only)",
        check=_finite_ge(0.0),
        rule=">= 0",
    ),
    Field(
        "rate_max_bin",
        "float",
        0.0,
        "rate of the max-bin loss term max|W|/s (loss_terms only)",
        check=_finite_ge(0.0),
        rule=">= 0",
    ),
    Field(
        "rate_deviation",
        "float",
        0.0,
        "rate of the deviation loss term (loss_terms only)",
        check=_finite_ge(0.0),
        rule=">= 0",
    ),
    Field(
        "deviation_form",
        "str",
        "implementation",
        "deviation term: implementation (|W - W/s|, what produced the thesis's results) "
        "or reconstructed (|W - floor(W/s) s|, the text's formula)",
        choices=DEVIATION_FORMS,
    ),
    Field(
        "deterministic",
        "bool",
        True,
        "enable TensorFlow op determinism (identical numbers for identical configs on CPU)",
    ),
]

#: every configuration key -> :class:`Field`, in canonical order
SCHEMA: dict[str, Field] = {f.name: f for f in _FIELDS}
KEYS: tuple[str, ...] = tuple(SCHEMA)


# --------------------------------------------------------------------------------------------
# validation


def _type_error(field: Field, value: Any) -> ValueError:
    hint = ""
    if isinstance(value, str) and field.kind in ("int", "float"):
        hint = " (a string was given: write the number without quotes; YAML 1.1 reads 1e-4 as a string, write 1.0e-4)"
    return ValueError(
        f"config key {field.name!r} has the wrong type: {value!r} ({type(value).__name__}); "
        f"allowed: {field.allowed()}{hint}"
    )


def _coerce(field: Field, value: Any) -> Any:
    """Type check + normalisation to plain Python (numpy scalars accepted); raises ValueError."""
    if value is None:
        if field.optional:
            return None
        raise ValueError(
            f"config key {field.name!r} must not be None; allowed: {field.allowed()}"
        )
    kind = field.kind
    if kind == "bool":
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise _type_error(field, value)
    if kind == "int":
        if isinstance(value, (bool, np.bool_)):
            raise _type_error(field, value)
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return int(value)  # 32.0 from a YAML/pandas round trip
        raise _type_error(field, value)
    if kind == "float":
        if isinstance(value, (bool, np.bool_)):
            raise _type_error(field, value)
        if isinstance(value, (int, float, np.integer, np.floating)):
            return float(value)
        raise _type_error(field, value)
    if kind == "str":
        if isinstance(value, str):
            return value
        raise _type_error(field, value)
    if kind == "steps":
        return _coerce_steps(field, value)
    raise AssertionError(kind)  # pragma: no cover


def _coerce_steps(field: Field, value: Any) -> list[list[Any]] | None:
    """``[[epoch, factor], ...]`` as plain ``[int, float]`` pairs; an empty list is ``None``.

    Lists or tuples of pairs are accepted (an epoch given as an integral float, e.g. ``40.0``
    from a YAML or pandas round trip, becomes an ``int``); anything else raises the key's
    type error with an example.
    """

    def bad() -> ValueError:
        err = _type_error(field, value)
        return ValueError(
            f"{err} -- each step is a pair [epoch, factor], e.g. [[40, 0.5], [60, 0.2]]"
        )

    if not isinstance(value, (list, tuple)):
        raise bad()
    steps = []
    for pair in value:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise bad()
        epoch, factor = pair
        if isinstance(epoch, (bool, np.bool_)) or isinstance(factor, (bool, np.bool_)):
            raise bad()
        if isinstance(epoch, (float, np.floating)) and float(epoch).is_integer():
            epoch = int(epoch)
        if not isinstance(epoch, (int, np.integer)) or not isinstance(
            factor, (int, float, np.integer, np.floating)
        ):
            raise bad()
        steps.append([int(epoch), float(factor)])
    return steps or None


def _check_value(field: Field, value: Any) -> None:
    if value is None:
        return
    if field.choices is not None:
        choices = field.choices() if callable(field.choices) else field.choices
        if value not in choices:
            raise ValueError(
                f"config key {field.name!r} has the value {value!r}; allowed: {field.allowed()}"
            )
    if field.check is not None and not field.check(value):
        fix = f". Fix: {field.fix}" if field.fix else ""
        raise ValueError(
            f"config key {field.name!r} has the value {value!r} out of range; "
            f"allowed: {field.allowed()}{fix}"
        )


def check_key(name: str, value: Any) -> Any:
    """Type and range check of one configuration key alone; returns the value normalised.

    The rules are those of :func:`validate_config` for that key (no combinations, ``None`` only for
    optional keys). Other inputs that carry configuration values -- a notebook's ``setups`` and the
    parameters named like a configuration key, checked by :mod:`companion.engine.runner` -- go
    through this function, so each key's rule is written once, in :data:`SCHEMA`.

    Raises:
        ValueError: unknown key, wrong type or value out of range; the message names the key, the
            value and what is allowed.
    """
    if name not in SCHEMA:
        raise ValueError(
            f"unknown config key {name!r}; allowed keys: {', '.join(KEYS)}"
        )
    field = SCHEMA[name]
    coerced = _coerce(field, value)
    _check_value(field, coerced)
    return coerced


#: key -> predicate on the resolved config: does the key act? (keys not listed always act)
_APPLIES: dict[str, Callable[[dict[str, Any]], bool]] = {
    "kernel_granularity": lambda c: c["flavour"] != "fp32",
    "bias_granularity": lambda c: c["flavour"] in ("nested", "loss_terms"),
    "quantize_bias": lambda c: c["flavour"] != "fp32",
    "quantize_dense": lambda c: c["flavour"] != "fp32",
    "threshold": lambda c: c["flavour"] == "nested",
    "all_above_vote": lambda c: c["flavour"] == "nested",
    "aggregate": lambda c: c["flavour"] == "nested",
    "init_bits": lambda c: c["flavour"] in ("nested", "loss_terms"),
    "bits": lambda c: c["flavour"] in ("lsq", "fixed_bits", "ptq"),
    "rate_inverse": lambda c: c["flavour"] == "loss_terms",
    "rate_max_bin": lambda c: c["flavour"] == "loss_terms",
    "rate_deviation": lambda c: c["flavour"] == "loss_terms",
    "deviation_form": lambda c: c["flavour"] == "loss_terms",
    "pretrain_epochs": lambda c: c["mode"] == "post_training",
    "pretrain_lr": lambda c: c["mode"] == "post_training",
    "lr": lambda c: c["flavour"] != "ptq",
    "epochs": lambda c: c["flavour"] != "ptq",
}


#: the rules of :data:`_APPLIES` in words (for :func:`describe`)
_APPLIES_TEXT: dict[str, str] = {
    "kernel_granularity": "flavour != fp32",
    "bias_granularity": "nested, loss_terms",
    "quantize_bias": "flavour != fp32",
    "quantize_dense": "nested, loss_terms, lsq, fixed_bits, ptq",
    "threshold": "nested",
    "all_above_vote": "nested",
    "aggregate": "nested",
    "init_bits": "nested, loss_terms",
    "bits": "lsq, fixed_bits, ptq",
    "rate_inverse": "loss_terms",
    "rate_max_bin": "loss_terms",
    "rate_deviation": "loss_terms",
    "deviation_form": "loss_terms",
    "pretrain_epochs": "mode post_training (ptq)",
    "pretrain_lr": "mode post_training (ptq)",
    "lr": "flavour != ptq",
    "epochs": "flavour != ptq",
}


def applies(key: str, config: dict[str, Any]) -> bool:
    """Whether ``key`` acts in the (validated) configuration; keys that do not act are ``None`` there."""
    if key not in SCHEMA:
        raise ValueError(f"unknown config key {key!r}; allowed keys: {', '.join(KEYS)}")
    rule = _APPLIES.get(key)
    return True if rule is None else bool(rule(config))


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Check a configuration and return it complete and canonical (defaults filled, key order of :data:`KEYS`).

    Steps: reject unknown keys; check the type and range of every given value (also of keys that
    will not act, so a typo never passes); refuse ``None`` for a key that is not optional and acts
    (a key left out takes its default); resolve ``arch=None`` to :func:`default_arch`,
    ``mode=None`` (``post_training`` for ``ptq``, else ``from_scratch``) and
    ``quantize_dense=None`` (the thesis choice: only the MLP's dense layers are quantized); check
    the combinations that must fit (granularity vs. arch and flavour, mode vs. flavour); set every
    key that does not act for this flavour/mode to ``None`` (:func:`applies`: e.g. ``bits`` of a
    nested run, the loss-term rates of any flavour but ``loss_terms``, ``pretrain_epochs`` of a
    ``from_scratch`` run). A sweep that varies such a key therefore runs -- and is stored -- once,
    and tables show an empty cell where a value had no effect. For ``ptq`` (no training),
    ``pretrain_lr`` takes the value of ``lr`` when not given and ``lr``/``epochs`` become ``None``.
    The result validates to itself (idempotent).

    Raises:
        ValueError: unknown key, wrong type, ``None`` for a key that acts and is not optional, value
            out of range or a combination that does not fit; the message names the key, the value
            and what is allowed.
    """
    cfg, given_none = _typed_values(config)
    _resolve(cfg)
    _refuse_nulls(cfg, given_none)
    _check_combinations(cfg)
    return cfg


def _typed_values(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Every key of :data:`SCHEMA` with its checked value (a key left out: its default).

    Returns the values and the non-optional keys given as ``None`` (refused later where they
    act). Raises ``ValueError`` for a non-dict, unknown keys, wrong types and bad ranges.
    """
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict, got {type(config).__name__}")
    unknown = sorted(map(str, set(config) - set(SCHEMA)))
    if unknown:
        raise ValueError(
            f"unknown config key(s) {', '.join(map(repr, unknown))}; "
            f"allowed keys: {', '.join(KEYS)}"
        )
    cfg: dict[str, Any] = {}
    given_none: list[str] = []
    for name, field in SCHEMA.items():
        value = config.get(name)
        if value is None:
            if name in config and not field.optional:
                given_none.append(name)
            value = None if field.optional else field.default
        else:
            value = _coerce(field, value)
        _check_value(field, value)
        cfg[name] = value
    return cfg, given_none


def _resolve(cfg: dict[str, Any]) -> None:
    """Fill the resolved defaults (arch, mode, ptq's pretrain_lr, quantize_dense) and set
    every key that does not act (:func:`applies`) to ``None``, in place."""
    if cfg["arch"] is None:
        cfg["arch"] = default_arch(cfg["dataset"])
    if cfg["mode"] is None:
        cfg["mode"] = "post_training" if cfg["flavour"] == "ptq" else "from_scratch"
    if cfg["flavour"] == "ptq" and cfg["pretrain_lr"] is None:
        cfg["pretrain_lr"] = cfg["lr"]
    for name in SCHEMA:
        if not applies(name, cfg):
            cfg[name] = None
    if applies("quantize_dense", cfg) and cfg["quantize_dense"] is None:
        cfg["quantize_dense"] = cfg["arch"] == "mlp"


def _refuse_nulls(cfg: dict[str, Any], given_none: list[str]) -> None:
    """Refuse a non-optional key given as ``None`` where it acts: None has no meaning there."""
    for name in given_none:
        if not applies(name, cfg):
            continue
        field = SCHEMA[name]
        where = (
            f"it acts for flavour {cfg['flavour']!r} ({_APPLIES_TEXT[name]})"
            if name in _APPLIES
            else "it always acts"
        )
        raise ValueError(
            f"config key {name!r} is None (YAML null, e.g. an empty `{name}=`), but {where} "
            f"and is not optional; allowed: {field.allowed()}. Give a value, or leave the "
            f"key out for its default ({field.default!r})"
        )


def _bad(cfg: dict[str, Any], key: str, why: str, allowed: str) -> ValueError:
    return ValueError(
        f"config key {key!r} has the value {cfg[key]!r}: {why}; allowed: {allowed}"
    )


def _check_combinations(cfg: dict[str, Any]) -> None:
    """Refuse combinations that do not fit: mode vs. flavour, quantize_dense vs. arch,
    kernel granularity vs. arch and flavour."""
    flavour, arch = cfg["flavour"], cfg["arch"]
    if flavour == "fp32" and cfg["mode"] != "from_scratch":
        raise _bad(
            cfg,
            "mode",
            "an fp32 network is trained from scratch",
            "'from_scratch' or None (or another flavour)",
        )
    if flavour == "ptq" and cfg["mode"] != "post_training":
        raise _bad(
            cfg,
            "mode",
            "ptq quantizes the trained FP32 parent",
            "'post_training' or None",
        )
    if arch == "mlp" and cfg["quantize_dense"] is False:
        raise _bad(
            cfg,
            "quantize_dense",
            "the MLP has only dense layers, nothing would be quantized",
            "True or None",
        )
    if cfg["kernel_granularity"] is not None:
        allowed_k = allowed_kernel_granularities(arch, flavour)
        if cfg["kernel_granularity"] not in allowed_k:
            raise _bad(
                cfg,
                "kernel_granularity",
                f"does not fit arch {arch!r} with flavour {flavour!r}"
                + (" (channel/filter need convolutions)" if arch == "mlp" else ""),
                ", ".join(map(repr, allowed_k)),
            )


def lr_at(lr: float, lr_steps: list[list[Any]] | None, epoch: int) -> float:
    """The learning rate of (0-based) epoch ``epoch`` under ``lr_steps``.

    :math:`\\eta_e = \\eta \\prod_{(E, f) \\in \\text{steps},\\, E \\le e} f`: each step multiplies the
    rate in force, so the factors are cumulative, as in the thesis's implementation (its Keras
    scheduler returns ``lr * 0.5`` at epoch 40 and ``lr * 0.2`` at epoch 60, ``lr`` being the
    current rate): the thesis's Imagenette ``[[40, 0.5], [60, 0.2]]`` trains epochs 0-39 at
    1e-4, 40-59 at 5e-5 and 60-99 at 1e-5. (The thesis's text, "decays by 0.5 at epoch 40 and
    by 0.2 at epoch 60", leaves it open; the implementation decides.) Epochs count as Keras
    counts them, from 0, so ``E`` is the number of epochs trained before the change.

    Arguments:
        lr: the rate at the start (``lr`` of the configuration).
        lr_steps: validated ``[[E, f], ...]`` (:data:`SCHEMA`), or ``None`` for a constant rate.
        epoch: 0-based epoch index.
    """
    rate = float(lr)
    for step_epoch, factor in lr_steps or ():
        if step_epoch <= epoch:
            rate *= factor
    return rate


# --------------------------------------------------------------------------------------------
# hash and derived configurations


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, floats as Python's shortest repr."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True)


#: keys added to :data:`SCHEMA` after results were stored: left out of the hashed payload while
#: they hold their default (``lr_steps`` None, ``validation_every`` 1), so every configuration
#: that existed before keeps its hash (and its stored runs); a non-default value is hashed like
#: any other key
_HASHED_UNLESS_DEFAULT: tuple[str, ...] = ("lr_steps", "validation_every")


def config_hash(config: dict[str, Any]) -> str:
    """First 16 hex digits of sha256(canonical JSON of the validated config, lqs.__version__, CODE_VERSION).

    Keys of :data:`_HASHED_UNLESS_DEFAULT` (``lr_steps``, ``validation_every``) are left out
    of the payload while they hold their default, so adding them changed no existing hash.
    """
    cfg = validate_config(config)
    hashed = {
        k: v
        for k, v in cfg.items()
        if not (k in _HASHED_UNLESS_DEFAULT and v == SCHEMA[k].default)
    }
    payload = canonical_json(
        {"config": hashed, "lqs": lqs.__version__, "code": CODE_VERSION}
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


#: keys of the quantized run that the FP32 parent inherits; every other key takes its default
_PARENT_KEYS = (
    "dataset",
    "arch",
    "l2",
    "optimizer",
    "lr_steps",
    "weight_init",
    "batch_size",
    "seed",
    "train_limit",
    "validation_fraction",
    "validation_every",
    "test_limit",
    "image_size",
    "deterministic",
)


def parent_config(config: dict[str, Any]) -> dict[str, Any]:
    """The FP32 configuration whose trained model a ``post_training`` or ``ptq`` run starts from.

    Keeps the data, network, optimiser and seed keys -- ``seed``, ``train_limit`` and
    ``validation_fraction`` among them, so the parent trains on exactly the child's training images
    and never on its validation split; ``lr_steps`` too, so the parent trains with the child's
    learning-rate steps (the thesis's Imagenette post-training starts from the FP32 network
    trained with its decay, and the child restarts at ``lr`` with the same steps);
    ``validation_every`` too (it changes no trained number), so a sweep's FP32 reference is
    the parent of its post-training runs;
    ``epochs = pretrain_epochs``,
    ``lr = pretrain_lr or lr``; every quantization key back to its default, so all post-training
    runs of a sweep (thresholds, rates, bits, granularities ...) share one cached parent.
    """
    cfg = validate_config(config)
    if cfg["mode"] != "post_training":
        raise ValueError(
            f"config has mode {cfg['mode']!r}; only 'post_training' runs (and ptq) have an FP32 parent"
        )
    parent = {k: cfg[k] for k in _PARENT_KEYS}
    parent.update(
        flavour="fp32",
        mode="from_scratch",
        epochs=cfg["pretrain_epochs"],
        lr=cfg["pretrain_lr"] if cfg["pretrain_lr"] is not None else cfg["lr"],
    )
    return validate_config(parent)


def describe() -> str:
    """The schema as a Markdown table (key, type, default, allowed, acts for, meaning) for the book."""
    rows = [
        "| key | type | default | allowed | acts for | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for f in _FIELDS:
        doc = f.doc.replace("|", "\\|")  # a literal bar inside a Markdown table cell
        acts = _APPLIES_TEXT.get(f.name, "all")
        rows.append(
            f"| `{f.name}` | {f.kind} | `{f.default!r}` | {f.allowed()} | {acts} | {doc} |"
        )
    return "\n".join(rows)
