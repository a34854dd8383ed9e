"""companion.engine.config: pinned hashes, None for keys that act, single-key checks, and a property test.

The property test feeds generated bad values for every key to :func:`validate_config`: each must
raise the project's own ``ValueError`` naming the key -- never a TensorFlow/NumPy error, never pass.
Nothing is trained here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lqs
from companion.engine import config
from companion.engine.config import (
    KEYS,
    SCHEMA,
    applies,
    check_key,
    config_hash,
    validate_config,
)

# ------------------------------------------------------------------------------------------------
# results must not change: hashes of valid configurations are pinned

#: config -> hash under lqs 0.1.0 / CODE_VERSION "2" (recomputed when validation_fraction was added
#: and CODE_VERSION went from "1" to "2": every hash changed, as every record's numbers do)
PINNED = [
    ({}, "542cace0de86a1d4"),
    ({"epochs": 3, "lr": 1e-3}, "61697b9214ab08e9"),
    (
        {
            "dataset": "cifar10",
            "flavour": "ptq",
            "bits": 8,
            "kernel_granularity": "filter",
        },
        "c41f46422015171e",  # ptq takes quantize_dense (the thesis CNN: convolutions only)
    ),
    (
        {
            "dataset": "fashion_mnist",
            "flavour": "loss_terms",
            "rate_inverse": 1e-6,
            "mode": "post_training",
            "pretrain_epochs": 1,
            "epochs": 1,
            "train_limit": 500,
            "test_limit": 200,
        },
        "3045d51c6b5ae2a7",
    ),
    (
        {
            "dataset": "mnist",
            "flavour": "lsq",
            "bits": 3,
            "kernel_granularity": "column",
            "seed": 2,
        },
        "248c0d882139d18f",
    ),
    (
        {
            "dataset": "imagenette",
            "flavour": "fixed_bits",
            "image_size": 64,
            "bits": 4,
            "quantize_dense": True,
        },
        "6fda8a89b7e53678",
    ),
    # None for keys that do not act (fp32: bits, threshold) is still accepted: same hash as leaving them out
    (
        {"flavour": "fp32", "epochs": 1, "bits": None, "threshold": None},
        "a135caf1fcf1464c",
    ),
    ({"flavour": "fp32", "epochs": 1}, "a135caf1fcf1464c"),
]


@pytest.mark.parametrize("cfg,expected", PINNED)
def test_hash_of_known_configs_is_pinned(cfg, expected):
    assert (lqs.__version__, config.CODE_VERSION) == ("0.1.0", "2"), (
        "versions bumped: recompute the pins"
    )
    assert config_hash(cfg) == expected


def _refusals(key: str, value) -> list[str]:
    """The messages with which :func:`validate_config` and :func:`check_key` refuse ``value``."""
    messages = []
    for check in (lambda: validate_config({key: value}), lambda: check_key(key, value)):
        with pytest.raises(ValueError) as err:
            check()
        messages.append(str(err.value))
    return messages


# ------------------------------------------------------------------------------------------------
# lr_steps: added after thousands of runs were stored, so its default changes no hash

#: the thesis's Imagenette ResNet setting (lr x0.5 at epoch 40, x0.2 at 60)
IMAGENETTE_STEPS = {"dataset": "imagenette", "lr_steps": [[40, 0.5], [60, 0.2]]}


@pytest.mark.parametrize("cfg,expected", PINNED)
@pytest.mark.parametrize("empty", [[], (), None])
def test_lr_steps_default_leaves_every_pinned_hash_unchanged(cfg, expected, empty):
    assert validate_config({**cfg, "lr_steps": empty})["lr_steps"] is None
    assert config_hash({**cfg, "lr_steps": empty}) == expected
    # steps act everywhere (ptq: in its FP32 parent), so they always change the hash
    assert config_hash({**cfg, "lr_steps": [[1, 0.5]]}) != expected


def test_lr_steps_hash_is_pinned_and_canonical():
    assert config_hash(IMAGENETTE_STEPS) == "6887daa40a605a41"
    # tuples, and epochs written as integral floats (a YAML or pandas round trip), are the same
    same = {"dataset": "imagenette", "lr_steps": ((40.0, 0.5), (60, 0.2))}
    assert validate_config(same)["lr_steps"] == [[40, 0.5], [60, 0.2]]
    assert config_hash(same) == "6887daa40a605a41"
    assert config_hash({**IMAGENETTE_STEPS, "lr_steps": [[40, 0.5]]}) != config_hash(
        IMAGENETTE_STEPS
    )


def test_post_training_parent_inherits_lr_steps():
    child = {"dataset": "imagenette", "mode": "post_training", "pretrain_epochs": 100}
    plain = config.parent_config(child)
    assert plain["lr_steps"] is None
    assert config_hash(config.parent_config({**child, "lr_steps": []})) == config_hash(
        plain
    )
    parent = config.parent_config({**child, **IMAGENETTE_STEPS})
    assert parent["lr_steps"] == [[40, 0.5], [60, 0.2]] and parent["epochs"] == 100
    assert config_hash(parent) != config_hash(plain)


def test_lr_at_applies_the_factors_cumulatively():
    steps = IMAGENETTE_STEPS["lr_steps"]
    rates = [config.lr_at(1e-4, steps, e) for e in (0, 39, 40, 59, 60, 99)]
    assert rates == pytest.approx([1e-4, 1e-4, 5e-5, 5e-5, 1e-5, 1e-5], rel=1e-12)
    assert config.lr_at(1e-3, None, 50) == 1e-3


@pytest.mark.parametrize(
    "value,words",
    [
        ([[0, 0.5]], "out of range"),
        ([[60, 0.5], [40, 0.2]], "out of range"),
        ([[40, 0.5], [40, 0.2]], "out of range"),
        ([[40, 0.0]], "out of range"),
        ([[40, -0.5]], "out of range"),
        ([[40, math.nan]], "out of range"),
        ([40, 0.5], "wrong type"),
        ([[40]], "wrong type"),
        ([[40, 0.5, 1]], "wrong type"),
        ([[40.5, 0.5]], "wrong type"),
        ([[True, 0.5]], "wrong type"),
        ([[40, "0.5"]], "wrong type"),
        ("[[40, 0.5]]", "wrong type"),
        ({"40": 0.5}, "wrong type"),
    ],
)
def test_bad_lr_steps_are_refused_with_the_fix(value, words):
    for msg in _refusals("lr_steps", value):
        said = {
            "out of range": f"has the value {value!r} out of range",
            "wrong type": f"has the wrong type: {value!r}",
        }[words]
        assert f"config key 'lr_steps' {said}" in msg
        assert "allowed: a list of [epoch, factor] pairs" in msg
        assert "[[40, 0.5], [60, 0.2]]" in msg  # an example of what to write


@pytest.mark.parametrize("cfg,expected", PINNED)
def test_validation_every_default_leaves_every_pinned_hash_unchanged(cfg, expected):
    assert config_hash({**cfg, "validation_every": 1}) == expected
    assert config_hash({**cfg, "validation_every": 8}) != expected


def test_validation_every_is_checked_and_inherited_by_the_parent():
    with pytest.raises(ValueError, match="validation_every"):
        validate_config({"validation_every": 0})
    child = {"mode": "post_training", "validation_every": 8}
    assert config.parent_config(child)["validation_every"] == 8


def test_lr_steps_is_documented():
    row = next(line for line in config.describe().splitlines() if "`lr_steps`" in line)
    assert "cumulatively" in row and "[[40, 0.5], [60, 0.2]]" in row
    assert "lr_steps" in config._PARENT_KEYS


# ------------------------------------------------------------------------------------------------
# None (YAML null) for a key that is not optional


def _base_where_acts(key: str) -> dict:
    """A configuration in which ``key`` acts."""
    for base in (
        {},
        {"flavour": "lsq"},
        {"flavour": "loss_terms"},
        {"mode": "post_training"},
    ):
        if applies(key, validate_config(base)):
            return base
    raise AssertionError(key)


@pytest.mark.parametrize("key", [k for k in KEYS if not SCHEMA[k].optional])
def test_none_is_refused_where_a_non_optional_key_acts(key):
    base = _base_where_acts(key)
    with pytest.raises(ValueError) as err:
        validate_config({**base, key: None})
    msg = str(err.value)
    assert (
        f"config key {key!r} is None" in msg
        and "allowed:" in msg
        and "leave the key out" in msg
    )
    assert repr(SCHEMA[key].default) in msg  # the fix names the default


def test_none_is_accepted_where_the_key_does_not_act():
    nested = validate_config(
        {"bits": None, "rate_inverse": None, "pretrain_epochs": None}
    )
    assert nested == validate_config({})
    ptq = validate_config({"flavour": "ptq", "epochs": None, "lr": None})
    assert ptq["epochs"] is None and ptq["lr"] is None
    assert validate_config(ptq) == ptq  # a validated configuration validates to itself


def test_optional_keys_take_none():
    cfg = validate_config(
        {"arch": None, "mode": None, "train_limit": None, "init_bits": None}
    )
    assert (
        cfg["arch"] == "mlp"
        and cfg["mode"] == "from_scratch"
        and cfg["train_limit"] is None
    )


def test_check_key_checks_one_key():
    assert check_key("epochs", np.int64(3)) == 3 and type(check_key("epochs", 3)) is int
    assert check_key("train_limit", None) is None
    with pytest.raises(
        ValueError,
        match=r"'epochs' has the value 0 out of range; allowed: an integer >= 1",
    ):
        check_key("epochs", 0)
    with pytest.raises(ValueError, match="'seed' must not be None"):
        check_key("seed", None)
    with pytest.raises(ValueError, match="unknown config key 'epoch'"):
        check_key("epoch", 1)


# ------------------------------------------------------------------------------------------------
# validation_fraction


def test_validation_fraction_default_and_accepted_values():
    for flavour in ("nested", "fp32", "loss_terms", "lsq", "fixed_bits", "ptq"):
        assert validate_config({"flavour": flavour})["validation_fraction"] == 0.1
    for value, expected in (
        (0, 0.0),
        (0.0, 0.0),
        (0.25, 0.25),
        (np.float32(0.5) - 1e-3, 0.499),
    ):
        got = validate_config({"validation_fraction": value})["validation_fraction"]
        assert type(got) is float and got == pytest.approx(expected)
    assert config_hash({"validation_fraction": 0.2}) != config_hash({})
    assert config_hash({"validation_fraction": 0.1}) == config_hash({})  # the default


@pytest.mark.parametrize(
    "value", [-0.1, -1e-12, 0.5, 0.75, 1.0, 10.0, math.nan, math.inf]
)
def test_validation_fraction_out_of_range_is_refused(value):
    for msg in _refusals("validation_fraction", value):
        assert (
            f"config key 'validation_fraction' has the value {value!r} out of range"
            in msg
        )
        assert "allowed: a number >= 0 and < 0.5" in msg  # the range
        assert (
            "Fix: " in msg
            and "e.g. 0.1" in msg
            and "or 0 for no validation split" in msg
        )


@pytest.mark.parametrize("value", ["0.1", True, None, [0.1]])
def test_validation_fraction_wrong_type_is_refused(value):
    with pytest.raises(ValueError, match=r"'validation_fraction'"):
        validate_config({"validation_fraction": value})


def test_validation_fraction_is_documented():
    table = config.describe()
    row = next(line for line in table.splitlines() if "`validation_fraction`" in line)
    assert "`0.1`" in row and ">= 0 and < 0.5" in row and "stratified" in row
    assert "validation_fraction" in config._PARENT_KEYS


# ------------------------------------------------------------------------------------------------
# property: every generated bad value raises our ValueError naming the key


def _wrong_type(kind: str, optional: bool) -> st.SearchStrategy:
    junk = [
        # an empty list is a valid lr_steps (no steps)
        st.lists(st.integers(), min_size=int(kind == "steps"), max_size=2),
        st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
        st.binary(max_size=3),
        st.just(object()),
        st.just(np.array([1, 2])),
    ]
    if not optional:
        junk.append(st.none())
    if kind == "bool":
        junk += [st.integers(), st.text(max_size=5), st.floats(allow_nan=True)]
    elif kind == "int":
        junk += [
            st.text(max_size=5),
            st.booleans(),
            st.floats().filter(lambda v: not float(v).is_integer()),
        ]
    elif kind == "float":
        junk += [st.text(max_size=5), st.booleans()]
    else:  # str
        junk += [st.integers(), st.floats(), st.booleans()]
    return st.one_of(junk)


def _out_of_range(field: config.Field) -> st.SearchStrategy:
    if field.choices is not None:
        choices = field.choices() if callable(field.choices) else field.choices
        return st.text(max_size=12).filter(lambda t: t not in choices)
    if field.kind == "int":
        return st.integers(min_value=-(10**6), max_value=10**6).filter(
            lambda v: not field.check(v)
        )
    if field.kind == "float":
        return st.one_of(
            st.just(math.nan),
            st.just(math.inf),
            st.just(-math.inf),
            st.floats(allow_nan=False, allow_infinity=False).filter(
                lambda v: not field.check(v)
            ),
        )
    if field.kind == "steps":
        epochs = st.integers(min_value=-5, max_value=5)
        factors = st.floats(allow_infinity=True, allow_nan=True)
        pairs = st.lists(st.tuples(epochs, factors).map(list), min_size=1, max_size=3)
        return pairs.filter(lambda v: not field.check(v))
    return st.nothing()


_CHECKED = [
    k
    for k in KEYS
    if SCHEMA[k].kind != "bool" and (SCHEMA[k].check or SCHEMA[k].choices)
]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)
@given(data=st.data())
def test_bad_values_raise_value_error_naming_the_key(data):
    key = data.draw(st.sampled_from(KEYS), label="key")
    field = SCHEMA[key]
    strategies = [_wrong_type(field.kind, field.optional)]
    if key in _CHECKED:
        strategies.append(_out_of_range(field))
    value = data.draw(st.one_of(strategies), label="value")
    with pytest.raises(ValueError) as err:
        validate_config({**_base_where_acts(key), key: value})
    assert repr(key) in str(err.value)


@settings(max_examples=30, deadline=None)
@given(
    config_=st.dictionaries(
        st.text(max_size=10).filter(lambda k: k not in SCHEMA),
        st.integers(),
        min_size=1,
        max_size=2,
    )
)
def test_unknown_keys_are_named(config_):
    with pytest.raises(ValueError, match="unknown config key"):
        validate_config(config_)


def test_ptq_quantizes_the_same_layers_as_the_trained_methods():
    """Regression: ptq ignored quantize_dense and quantized the CNN's dense layers too."""
    for flavour in ("ptq", "nested", "lsq"):
        cnn = validate_config({"dataset": "cifar10", "flavour": flavour, "bits": 4})
        mlp = validate_config({"dataset": "mnist", "flavour": flavour, "bits": 4})
        assert cnn["quantize_dense"] is False and mlp["quantize_dense"] is True
    assert (
        validate_config({"dataset": "mnist", "flavour": "fp32"})["quantize_dense"]
        is None
    )
