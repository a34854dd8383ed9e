"""Generalization measures for (quantized) Keras models: gap, sharpness, flatness, landscapes.

The companion study of QGen (AskariHemmat et al., 2024) asks whether quantization-aware training
leads to flatter minima and smaller generalization gaps. This module measures that on *any*
Keras 3 model (functional or Sequential, compiled or not), including models whose custom layers
fake-quantize their float weights in the forward pass: every measure perturbs the float weights
(by default the trainable weights named ``kernel``/``bias``), calls ``model(x, training=False)``
in batches and restores every weight of the model afterwards, also when an exception is raised.
Nothing is trained and nothing needs ``model.compile``.

Notation used in the docstrings: ``w`` the perturbed float weights (concatenated, ``d`` scalars),
``L(w)`` the mean loss over the given samples ``(x, y)``, ``|w|`` the element-wise magnitude,
``⊙`` the element-wise product and ``‖·‖`` the Euclidean norm over *all* perturbed weights.

Randomness: every random draw comes from ``numpy.random.default_rng([seed, k])`` where ``k``
indexes the sample (or restart, or direction); the same ``seed`` gives the same numbers.

Measures
--------
- :func:`evaluate`, :func:`generalization_gap` — mean loss/accuracy and train–test gaps.
- :func:`adaptive_sharpness` — magnitude-aware (adaptive) sharpness, average- or worst-case
  (Kwon et al., 2021; Andriushchenko et al., 2023).
- :func:`pac_bayes_flatness` — the largest magnitude-aware Gaussian perturbation that keeps the
  expected loss within a tolerance, and Jiang et al.'s (2020) measure ``1/σ²``.
- :func:`random_direction`, :func:`loss_landscape_1d`, :func:`loss_landscape_2d` — loss surfaces
  along filter-normalized random directions (Li et al., 2018).
- :func:`bin_widths` — QGen's "width of the quantization bin" (the scale) per quantized layer,
  duck-typed on the ``integer_parameters()`` protocol (:mod:`lqs.protocol`).

Which weights are perturbed
---------------------------
Every measure moves the float weights of the model it is given. For a quantized model that
is a choice with consequences, because its layers re-quantize whatever weights they hold:

- the model itself: the latent float weights move and every forward pass quantizes them
  again. A min-max (fixed-bit) layer recomputes its scale from the perturbed maximum, so one
  nudged weight can rescale a whole layer: the measure then describes the quantizer.
- :func:`frozen_scales`: the same, but min-max layers keep the scales of the unperturbed
  weights (``W_rec = clip(round(W / s₀), -Q, Q) s₀``); layers with learned scales (nested,
  LSQ) keep theirs anyway, since scales are never perturbed.
- :func:`dequantized_model`: a float copy of the model whose quantized layers are plain
  ``Dense``/``Conv2D`` layers holding the dequantized weights ``P_q s``; it computes the same
  function, and its loss around those weights is the continuous loss landscape at the point
  the quantized network implements (true gradients, no straight-through estimate).

References
----------
- M. AskariHemmat et al., "QGen: On the Ability to Generalize in Quantization Aware Training",
  2024, https://arxiv.org/abs/2404.11769
- J. Kwon et al., "ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant Learning of
  Deep Neural Networks", ICML 2021, https://arxiv.org/abs/2102.11600
- M. Andriushchenko et al., "A Modern Look at the Relationship between Sharpness and
  Generalization", ICML 2023, https://arxiv.org/abs/2302.07011
- Y. Jiang et al., "Fantastic Generalization Measures and Where to Find Them", ICLR 2020,
  https://arxiv.org/abs/1912.02178
- H. Li et al., "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018,
  https://arxiv.org/abs/1712.09913
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from lqs.protocol import is_quantized_layer

__all__ = [
    "LossFn",
    "WeightsFilter",
    "default_weights_filter",
    "perturbed_weights",
    "evaluate",
    "generalization_gap",
    "adaptive_sharpness",
    "pac_bayes_flatness",
    "bisection_steps",
    "random_direction",
    "loss_landscape_1d",
    "loss_landscape_2d",
    "bin_widths",
    "BIN_WIDTH_COLUMNS",
    "dequantized_model",
    "frozen_scales",
]

#: ``loss_fn(y_true, y_pred)`` -> per-sample losses (shape ``(batch, ...)``) or a batch mean (scalar)
LossFn = Callable[[Any, Any], Any]
#: ``weights_filter(variable) -> bool``, whether a trainable weight is perturbed
WeightsFilter = Callable[[Any], bool]

SHARPNESS_MODES = ("average", "worst")
AVERAGE_NOISE = ("sphere", "gaussian")
FLATNESS_CRITERIA = ("loss", "accuracy")
BIN_WIDTH_COLUMNS = (
    "layer",
    "parameter",
    "granularity",
    "n_groups",
    "n_params",
    "scale_mean",
    "scale_min",
    "scale_max",
)


# ---------------------------------------------------------------------------------------------
# which weights, and how to put them back
# ---------------------------------------------------------------------------------------------
def default_weights_filter(variable: Any) -> bool:
    """Default choice of perturbed weights: kernels and biases, not scales, not BatchNorm.

    A trainable weight is perturbed when its name (the last component of its path) is
    ``"kernel"`` or ``"bias"`` or ends with ``"_kernel"`` (``depthwise_kernel``,
    ``pointwise_kernel``, ``recurrent_kernel``). Quantizer scales (``scale``), BatchNorm's
    ``gamma``/``beta`` and non-trainable statistics are left alone.
    """
    name = str(getattr(variable, "name", "")).split("/")[-1].split(":")[0]
    return name in ("kernel", "bias") or name.endswith("_kernel")


def _ensure_built(model: keras.Model, x: np.ndarray) -> None:
    """Build ``model`` on one sample; called before any weight snapshot so that all are restored."""
    if not model.built or not model.weights:
        model(np.asarray(x[:1]), training=False)


def _unique(variables: Sequence[Any]) -> list[Any]:
    seen: set[int] = set()
    out = []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def perturbed_weights(
    model: keras.Model, weights_filter: WeightsFilter | None = None
) -> list[Any]:
    """The trainable weights of ``model`` that the measures of this module perturb.

    Arguments:
        model: a built Keras 3 model.
        weights_filter: ``callable(variable) -> bool``; defaults to
            :func:`default_weights_filter` (kernels and biases).

    Returns:
        The selected variables, in ``model.trainable_weights`` order, without duplicates.

    Raises:
        ValueError: when no weight is selected (the model is not built, or the filter
            rejects everything).
    """
    keep = default_weights_filter if weights_filter is None else weights_filter
    selected = [v for v in _unique(model.trainable_weights) if keep(v)]
    if not selected:
        names = [
            getattr(v, "path", getattr(v, "name", "?")) for v in model.trainable_weights
        ]
        raise ValueError(
            "no weight selected for perturbation; trainable weights are "
            f"{names or '[] (is the model built?)'}; pass weights_filter=callable(variable) -> bool"
        )
    return selected


@contextlib.contextmanager
def _preserved_weights(model: keras.Model) -> Iterator[None]:
    """Snapshot every weight of ``model`` and assign it back on exit (also on exceptions)."""
    variables = _unique(model.weights)
    saved = [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in variables]
    try:
        yield
    finally:
        for v, value in zip(variables, saved):
            v.assign(value)


def _assign(
    variables: Sequence[Any],
    base: Sequence[np.ndarray],
    delta: Sequence[np.ndarray] | None,
    scale: float = 1.0,
) -> None:
    for i, v in enumerate(variables):
        value = base[i] if delta is None else base[i] + scale * delta[i]
        v.assign(value.astype(base[i].dtype, copy=False))


def _global_norm(arrays: Sequence[np.ndarray]) -> float:
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays))


def _normal_like(
    rng: np.random.Generator, arrays: Sequence[np.ndarray]
) -> list[np.ndarray]:
    return [rng.standard_normal(a.shape).astype(np.float32) for a in arrays]


# ---------------------------------------------------------------------------------------------
# batched evaluation (one tf.function per public call)
# ---------------------------------------------------------------------------------------------
def _default_loss(from_logits: bool) -> LossFn:
    def loss(y_true: Any, y_pred: Any) -> Any:
        return keras.losses.sparse_categorical_crossentropy(
            y_true, y_pred, from_logits=from_logits
        )

    return loss


def _loss_sum(loss_fn: LossFn, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Sum over the batch of per-sample losses (a scalar loss is taken as the batch mean)."""
    values = tf.cast(tf.convert_to_tensor(loss_fn(y_true, y_pred)), tf.float32)
    n = tf.cast(tf.shape(y_pred)[0], tf.float32)
    if values.shape.rank == 0:
        return values * n
    per_sample = tf.reduce_mean(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)
    return tf.reduce_sum(per_sample)


def _correct_sum(y_true: tf.Tensor, y_pred: tf.Tensor, from_logits: bool) -> tf.Tensor:
    """Number of correct predictions: argmax for several outputs, threshold for one output."""
    n_out = int(np.prod(y_pred.shape[1:])) if None not in y_pred.shape[1:] else None
    y_pred = tf.reshape(
        y_pred,
        [-1, n_out if n_out is not None else tf.reduce_prod(tf.shape(y_pred)[1:])],
    )
    if n_out is not None and n_out > 1:
        predicted = tf.argmax(y_pred, axis=-1, output_type=tf.int64)
        if (
            y_true.shape.rank is not None
            and y_true.shape.rank >= 2
            and y_true.shape[-1] == n_out
        ):
            label = tf.argmax(y_true, axis=-1, output_type=tf.int64)  # one-hot labels
        else:
            label = tf.cast(tf.reshape(y_true, [-1]), tf.int64)
    else:
        threshold = 0.0 if from_logits else 0.5
        predicted = tf.cast(tf.reshape(y_pred, [-1]) > threshold, tf.int64)
        label = tf.cast(tf.cast(tf.reshape(y_true, [-1]), tf.float32) > 0.5, tf.int64)
    return tf.reduce_sum(tf.cast(tf.equal(predicted, label), tf.float32))


#: traced batch functions per model (weak keys: dropped with the model), at most
#: ``_CACHE_SIZE`` per model; avoids retracing when a notebook calls the measures repeatedly
_FUNCTION_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], Any]] = (
    weakref.WeakKeyDictionary()
)
_CACHE_SIZE = 8


def _traced(model: keras.Model, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    try:
        hash(key)
        per_model = _FUNCTION_CACHE.setdefault(model, {})
    except (
        TypeError
    ):  # unhashable loss_fn, or a model without weak references: no caching
        return build()
    if key not in per_model:
        if len(per_model) >= _CACHE_SIZE:
            per_model.pop(next(iter(per_model)))
        per_model[key] = build()
    return per_model[key]


class _Evaluator:
    """Mean loss/accuracy (and optionally its gradient) over ``(x, y)``, batch by batch.

    The per-batch sums run in a ``tf.function`` with a batch-agnostic signature (one trace per
    model, loss, data dtype/shape), which holds the model only through a weak reference.
    """

    def __init__(
        self,
        model: keras.Model,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        loss_fn: LossFn | None,
        from_logits: bool,
    ) -> None:
        if (
            not isinstance(batch_size, (int, np.integer))
            or isinstance(batch_size, bool)
            or batch_size < 1
        ):
            raise ValueError(
                f"batch_size must be a positive integer, got {batch_size!r}"
            )
        self.model, self.batch_size = model, int(batch_size)
        self.from_logits = bool(from_logits)
        self._loss_key = loss_fn
        self.loss_fn = _default_loss(self.from_logits) if loss_fn is None else loss_fn
        self.set_data(x, y)

    def set_data(self, x: np.ndarray, y: np.ndarray) -> None:
        """Evaluate on ``(x, y)`` from now on (the traced function is reused when shapes agree)."""
        x = np.asarray(x)
        y = np.asarray(y)
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(
                f"x and y must hold the same, non-zero number of samples; got {len(x)} and {len(y)}"
            )
        _ensure_built(self.model, x)
        self.x, self.y = x, y
        self._specs = (
            tf.TensorSpec([None, *x.shape[1:]], tf.as_dtype(x.dtype)),
            tf.TensorSpec([None, *y.shape[1:]], tf.as_dtype(y.dtype)),
        )
        key = ("sums", self._loss_key, self.from_logits, *self._specs)
        self._sums = _traced(self.model, key, self._build_sums)

    def _build_sums(self) -> Any:
        model_ref, loss_fn, from_logits = (
            weakref.ref(self.model),
            self.loss_fn,
            self.from_logits,
        )

        def sums(xb: tf.Tensor, yb: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            pred = model_ref()(xb, training=False)
            return _loss_sum(loss_fn, yb, pred), _correct_sum(yb, pred, from_logits)

        return tf.function(sums, input_signature=list(self._specs))

    def _build_grad(self, variables: Sequence[Any]) -> Any:
        model_ref, loss_fn, variables = (
            weakref.ref(self.model),
            self.loss_fn,
            list(variables),
        )

        def step(xb: tf.Tensor, yb: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
            with tf.GradientTape() as tape:
                total = _loss_sum(loss_fn, yb, model_ref()(xb, training=False))
            grads = tape.gradient(
                total, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
            return total, grads

        return tf.function(step, input_signature=list(self._specs))

    def _batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(self.x), self.batch_size):
            yield (
                self.x[start : start + self.batch_size],
                self.y[start : start + self.batch_size],
            )

    def __call__(self) -> tuple[float, float]:
        """Mean loss and accuracy at the current weights."""
        loss = correct = 0.0
        for xb, yb in self._batches():
            batch_loss, batch_correct = self._sums(xb, yb)
            loss += float(batch_loss)
            correct += float(batch_correct)
        return loss / len(self.x), correct / len(self.x)

    def loss_and_grad(self, variables: Sequence[Any]) -> tuple[float, list[np.ndarray]]:
        """Mean loss and its gradient with respect to ``variables`` at the current weights."""
        key = (
            "grad",
            self._loss_key,
            self.from_logits,
            *self._specs,
            tuple(id(v) for v in variables),
        )
        grad_fn = _traced(self.model, key, lambda: self._build_grad(variables))
        loss = 0.0
        grads = [np.zeros(tuple(v.shape), np.float64) for v in variables]
        for xb, yb in self._batches():
            batch_loss, batch_grads = grad_fn(xb, yb)
            loss += float(batch_loss)
            for g, bg in zip(grads, batch_grads):
                g += np.asarray(bg, np.float64)
        n = len(self.x)
        return loss / n, [(g / n).astype(np.float32) for g in grads]


def evaluate(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 256,
    loss_fn: LossFn | None = None,
    from_logits: bool = False,
) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` on ``(x, y)``, without ``compile`` or side effects.

    ``loss = (1/N) Σ_n ℓ(y_n, f(x_n))``, ``accuracy = (1/N) Σ_n [ŷ_n = y_n]`` with
    ``f = model(·, training=False)`` evaluated in batches. ``ŷ`` is the argmax over the outputs
    (labels may be integers or one-hot); for a single output unit, the output thresholded at 0.5
    (0 when ``from_logits``) against ``y > 0.5`` (only meaningful for binary labels).

    Arguments:
        model: a Keras 3 model with one output.
        x, y: NumPy arrays with the same first dimension ``N``.
        batch_size: samples per forward pass.
        loss_fn: ``loss_fn(y_true, y_pred)`` returning per-sample losses (or a batch mean);
            default: sparse categorical cross-entropy on probabilities.
        from_logits: for the default loss, whether the model outputs logits.

    Returns:
        ``{"loss": float, "accuracy": float, "n": int}``.
    """
    _ensure_built(model, np.asarray(x))
    with _preserved_weights(model):
        loss, accuracy = _Evaluator(model, x, y, batch_size, loss_fn, from_logits)()
    return {"loss": loss, "accuracy": accuracy, "n": int(len(x))}


def generalization_gap(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    batch_size: int = 256,
    loss_fn: LossFn | None = None,
    from_logits: bool = False,
) -> dict[str, float]:
    """Train and test loss/accuracy and the generalization gaps.

    Sign convention (both gaps are positive when the model overfits)::

        gap_loss     = test_loss - train_loss
        gap_accuracy = train_accuracy - test_accuracy

    Arguments:
        model: a Keras 3 model.
        train, test: ``(x, y)`` NumPy pairs.
        batch_size, loss_fn, from_logits: as in :func:`evaluate`.

    Returns:
        ``{"train_loss", "test_loss", "train_accuracy", "test_accuracy", "gap_loss",
        "gap_accuracy"}`` (floats).

    References:
        QGen (AskariHemmat et al., 2024) reports the gap of the loss and of the accuracy between
        the training and the test set, https://arxiv.org/abs/2404.11769
    """
    tr = evaluate(
        model, *train, batch_size=batch_size, loss_fn=loss_fn, from_logits=from_logits
    )
    te = evaluate(
        model, *test, batch_size=batch_size, loss_fn=loss_fn, from_logits=from_logits
    )
    return {
        "train_loss": tr["loss"],
        "test_loss": te["loss"],
        "train_accuracy": tr["accuracy"],
        "test_accuracy": te["accuracy"],
        "gap_loss": te["loss"] - tr["loss"],
        "gap_accuracy": tr["accuracy"] - te["accuracy"],
    }


# ---------------------------------------------------------------------------------------------
# sharpness and flatness
# ---------------------------------------------------------------------------------------------
def _check_choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ValueError(
            f"{name}={value!r} is not supported; allowed: {', '.join(map(repr, allowed))}"
        )


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_positive(name: str, value: Any) -> None:
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def adaptive_sharpness(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    rho: float = 0.1,
    n_samples: int = 10,
    mode: str = "average",
    seed: int = 0,
    *,
    n_steps: int = 20,
    step_size: float | None = None,
    noise: str = "sphere",
    batch_size: int = 256,
    loss_fn: LossFn | None = None,
    from_logits: bool = False,
    weights_filter: WeightsFilter | None = None,
) -> dict[str, Any]:
    """Magnitude-aware (adaptive) sharpness of the loss at the current weights.

    Perturbations live in the adaptive geometry of ASAM (Kwon et al., 2021): a perturbation ``δ``
    is measured by ``‖δ ⊘ |w|‖₂`` (``⊘`` element-wise division), so that rescaling a filter and
    its successor (which leaves a ReLU network's function unchanged) does not change the measure.

    ``mode="average"`` (random perturbations)::

        S_avg(w) = E_u[ L(w + δ(u)) ] - L(w),   δ(u) = ρ |w| ⊙ u / ‖u‖,   u ~ N(0, I_d)

    i.e. ``δ`` is uniform on the adaptive sphere ``‖δ ⊘ |w|‖₂ = ρ``, estimated with
    ``n_samples`` draws (``stderr`` in the result is the Monte-Carlo standard error). With
    ``noise="gaussian"``, ``δ = ρ |w| ⊙ u`` instead (no normalization): the average-case
    adaptive sharpness of Andriushchenko et al. (2023), whose adaptive norm is ``≈ ρ √d``.
    For a quadratic loss at a minimum (Hessian ``H``) the expectations are
    ``ρ²/(2d) Σ_i H_ii w_i²`` (sphere) and ``ρ²/2 Σ_i H_ii w_i²`` (gaussian).

    ``mode="worst"`` (adversarial perturbations)::

        S_max(w) = max_{‖δ ⊘ |w|‖₂ ≤ ρ} L(w + δ) - L(w)

    approximated from below by projected normalized-gradient ascent in the adaptive
    coordinates ``η = δ ⊘ |w|``, as in Andriushchenko et al. (2023): start on the sphere
    ``η₀ = ρ u/‖u‖`` (a random start: at an exact minimum the gradient vanishes), then
    ``n_steps`` times ``η ← Π_ρ(η + α g/‖g‖)`` with ``g = |w| ⊙ ∇L(w + |w| ⊙ η)``, step
    ``α = step_size`` (default ``ρ``) and ``Π_ρ`` the projection on the ball ``‖η‖ ≤ ρ``;
    ``n_samples`` random restarts; the value is the largest loss seen on any iterate. It is a
    lower bound on the true maximum (exact for a quadratic after enough steps: the iteration
    is then a shifted power method and converges to ``ρ²/2 · λ_max(diag|w| H diag|w|)``,
    slowly when the top eigenvalues are close: increase ``n_steps`` until the value settles).
    Unlike Andriushchenko et al., who maximise per batch and average (``E_S max``), the
    maximum here is over the loss of all of ``(x, y)`` together (``max E_S``).

    Only the weights chosen by ``weights_filter`` are perturbed; weights equal to zero are not
    perturbed (their adaptive scale is 0). The model's weights are restored on return.

    Arguments:
        model: a Keras 3 model (quantized layers re-quantize the perturbed float weights).
        x, y: NumPy data on which the loss is measured (usually the training set or a subset).
        rho: radius ``ρ`` of the adaptive ball (no universal value: sweep it).
        n_samples: random draws (average) or random restarts (worst).
        mode: ``"average"`` or ``"worst"``.
        seed: seed of all random draws (draw ``k`` uses ``default_rng([seed, k])``).
        n_steps: gradient-ascent steps per restart (worst only).
        step_size: ascent step ``α`` in adaptive coordinates (worst only); default ``ρ``.
        noise: ``"sphere"`` (default) or ``"gaussian"`` (average only), see above.
        batch_size, loss_fn, from_logits: as in :func:`evaluate`.
        weights_filter: which trainable weights to perturb (default: kernels and biases).

    Returns:
        dict with ``value`` (the sharpness), ``rho``, ``mode``, ``n_samples``, ``base_loss``
        (``L(w)``), ``n_parameters`` (``d``), ``n_zero`` (weights equal to 0, never moved),
        ``adaptive_norm`` (the size of the perturbation in the units of the ball,
        ``‖δ ⊘ |w|‖₂`` over the moved weights: ``ρ`` for the sphere and the worst case, the
        mean over the draws of ``ρ ‖u‖ ≈ ρ √(d - n_zero)`` for Gaussian noise), and
        ``stderr`` + ``noise`` (average) or ``n_steps`` + ``step_size`` (worst).

    References:
        - J. Kwon et al., "ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant
          Learning of Deep Neural Networks", ICML 2021, https://arxiv.org/abs/2102.11600
        - M. Andriushchenko et al., "A Modern Look at the Relationship between Sharpness and
          Generalization", ICML 2023, https://arxiv.org/abs/2302.07011
        - QGen (AskariHemmat et al., 2024) reports magnitude-aware sharpness of quantized
          models, https://arxiv.org/abs/2404.11769
    """
    _check_choice("mode", mode, SHARPNESS_MODES)
    _check_choice("noise", noise, AVERAGE_NOISE)
    _check_positive("rho", rho)
    _check_positive_int("n_samples", n_samples)
    _check_positive_int("n_steps", n_steps)
    if step_size is not None:
        _check_positive("step_size", step_size)
    _ensure_built(model, np.asarray(x))
    with _preserved_weights(model):
        evaluator = _Evaluator(model, x, y, batch_size, loss_fn, from_logits)
        variables = perturbed_weights(model, weights_filter)
        base = [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in variables]
        magnitude = [np.abs(b) for b in base]
        base_loss, _ = evaluator()
        result: dict[str, Any] = {
            "rho": float(rho),
            "mode": mode,
            "n_samples": int(n_samples),
            "base_loss": base_loss,
            "n_parameters": int(sum(b.size for b in base)),
        }
        moving = [(c > 0).astype(np.float32) for c in magnitude]
        result["n_zero"] = int(sum(m.size - int(m.sum()) for m in moving))
        if mode == "average":
            increases, norms = [], []
            for k in range(n_samples):
                u = _normal_like(np.random.default_rng([seed, k]), base)
                factor = rho / _global_norm(u) if noise == "sphere" else rho
                delta = [factor * c * ui for c, ui in zip(magnitude, u)]
                _assign(variables, base, delta)
                increases.append(evaluator()[0] - base_loss)
                norms.append(
                    factor * _global_norm([m * ui for m, ui in zip(moving, u)])
                )
            increases_arr = np.asarray(increases)
            stderr = (
                float(increases_arr.std(ddof=1) / math.sqrt(n_samples))
                if n_samples > 1
                else math.nan
            )
            result.update(
                value=float(increases_arr.mean()),
                stderr=stderr,
                noise=noise,
                adaptive_norm=float(np.mean(norms)),
            )
        else:
            alpha = float(rho if step_size is None else step_size)
            best = base_loss
            for k in range(n_samples):
                u = _normal_like(np.random.default_rng([seed, k]), base)
                norm_u = _global_norm(u)
                eta = [rho * ui / norm_u for ui in u]
                for _ in range(n_steps):
                    _assign(variables, base, [c * e for c, e in zip(magnitude, eta)])
                    loss, grads = evaluator.loss_and_grad(variables)
                    best = max(best, loss)
                    g = [c * gi for c, gi in zip(magnitude, grads)]
                    norm_g = _global_norm(g)
                    if norm_g == 0.0 or not np.isfinite(norm_g):
                        break
                    eta = [e + alpha * gi / norm_g for e, gi in zip(eta, g)]
                    norm_eta = _global_norm(eta)
                    if norm_eta > rho:
                        eta = [e * (rho / norm_eta) for e in eta]
                _assign(variables, base, [c * e for c, e in zip(magnitude, eta)])
                best = max(best, evaluator()[0])
            result.update(
                value=float(best - base_loss),
                n_steps=int(n_steps),
                step_size=alpha,
                adaptive_norm=float(rho),
            )
    return result


def _bisect_sigma(
    deviation: Callable[[float], float],
    sigma_min: float,
    sigma_max: float,
    tolerance: float,
    iters: int,
    rtol: float = 0.0,
) -> tuple[float, float, float, str]:
    """Largest ``sigma`` in ``[sigma_min, sigma_max]`` with ``deviation(sigma) <= tolerance``.

    Bisection on a log scale (``mid = sqrt(lo * hi)``), assuming the deviation grows with
    ``sigma``; it stops once the bracket is resolved, ``hi / lo <= 1 + rtol``, or after
    ``iters`` steps. Each step halves ``log(hi / lo)``, so reaching ``rtol`` from the whole
    interval takes ``ceil(log2(log(sigma_max / sigma_min) / log(1 + rtol)))`` steps.
    Returns ``(sigma, sigma_upper, deviation at sigma, status)`` with status ``"ok"``,
    ``"unresolved"`` (``iters`` ran out before ``rtol``), ``"sigma_max_within_tolerance"`` or
    ``"sigma_min_exceeds_tolerance"``.
    """
    lo, hi = float(sigma_min), float(sigma_max)
    dev_hi = deviation(hi)
    if dev_hi <= tolerance:
        return hi, hi, dev_hi, "sigma_max_within_tolerance"
    dev_lo = deviation(lo)
    if dev_lo > tolerance:
        return lo, lo, dev_lo, "sigma_min_exceeds_tolerance"
    for _ in range(iters):
        if hi / lo <= 1.0 + rtol:
            break
        mid = math.sqrt(lo * hi)
        dev_mid = deviation(mid)
        if dev_mid <= tolerance:
            lo, dev_lo = mid, dev_mid
        else:
            hi = mid
    status = "ok" if rtol <= 0 or hi / lo <= 1.0 + rtol else "unresolved"
    return lo, hi, dev_lo, status


def bisection_steps(sigma_min: float, sigma_max: float, rtol: float) -> int:
    """Bisection steps on ``log σ`` that resolve ``[sigma_min, sigma_max]`` to ``1 + rtol``.

    ``ceil(log2(log(sigma_max / sigma_min) / log(1 + rtol)))``; e.g. ``[1e-3, 4]`` to 2 %
    takes 9 steps (7 steps leave brackets ``1.126`` wide).
    """
    _check_positive("rtol", rtol)
    ratio = math.log(sigma_max / sigma_min) / math.log1p(rtol)
    return max(0, math.ceil(math.log2(ratio))) if ratio > 1 else 0


def pac_bayes_flatness(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    tolerance: float = 0.1,
    sigma_max: float = 1.0,
    n_samples: int = 10,
    iters: int = 40,
    relative: bool = True,
    seed: int = 0,
    *,
    rtol: float = 0.02,
    sigma_min: float = 1e-6,
    criterion: str = "loss",
    eps: float = 0.0,
    batch_size: int = 256,
    loss_fn: LossFn | None = None,
    from_logits: bool = False,
    weights_filter: WeightsFilter | None = None,
) -> dict[str, Any]:
    """Largest Gaussian weight-noise level ``σ`` the loss tolerates (PAC-Bayes flatness).

    Perturbation (``relative=True``, magnitude-aware, Jiang et al.'s "pacbayes.mag" family)::

        δ = sqrt(σ² w² + ε²) ⊙ e,   e ~ N(0, I_d)     (ε = eps, default 0: δ = σ |w| ⊙ e)

    or ``δ = σ e`` (``relative=False``, Jiang et al.'s "pacbayes"). The deviation is
    ``D(σ) = E_e[L(w + δ)] - L(w)`` (``criterion="loss"``) or
    ``D(σ) = acc(w) - E_e[acc(w + δ)]`` (``criterion="accuracy"``, Jiang et al.'s choice),
    estimated with ``n_samples`` draws that are *the same for every σ* (common random numbers,
    so that the estimate grows smoothly with σ). The result is the largest ``σ`` in
    ``[sigma_min, sigma_max]`` with ``D(σ) ≤ tolerance``, found by bisection on ``log σ`` (the
    midpoint is the geometric mean) until the bracket is resolved to ``sigma_upper / sigma ≤
    1 + rtol`` (at most ``iters`` steps); ``sigma`` is the lower end of the final bracket
    (verified within tolerance) and ``sigma_upper`` its upper end, so the true threshold of
    the estimated ``D`` lies within ``rtol`` above ``sigma``. The measure of Jiang
    et al. is ``flatness = 1/σ²``: despite the name, *larger means sharper* (a smaller noise
    level already moves the loss by ``tolerance``).

    For a quadratic loss at a minimum (Hessian ``H``), ``D(σ) = σ²/2 Σ_i H_ii w_i²``
    (relative, ε = 0) or ``σ²/2 tr H`` (absolute), so ``σ = sqrt(2 tolerance / Σ_i H_ii w_i²)``.

    Arguments:
        model: a Keras 3 model.
        x, y: NumPy data on which the loss is measured (Jiang et al. use the training set).
        tolerance: allowed deviation (loss units, or accuracy as a fraction for ``criterion="accuracy"``).
        sigma_max, sigma_min: the search interval for ``σ``.
        n_samples: Monte-Carlo draws per σ.
        iters: the most bisection steps (:func:`bisection_steps` gives the number ``rtol``
            needs; status ``"unresolved"`` when they run out first).
        rtol: relative resolution of ``σ``: bisect until ``sigma_upper ≤ (1 + rtol) sigma``
            (``0``: exactly ``iters`` steps).
        relative: magnitude-aware (``True``) or absolute (``False``) noise.
        seed: seed of the draws (draw ``k`` uses ``default_rng([seed, k])`` for every σ).
        criterion: ``"loss"`` (default) or ``"accuracy"``.
        eps: the additive ``ε`` of the magnitude-aware noise (Jiang et al. use ``1e-3``).
        batch_size, loss_fn, from_logits: as in :func:`evaluate`.
        weights_filter: which trainable weights to perturb (default: kernels and biases).

    Returns:
        dict with ``sigma``, ``sigma_upper``, ``resolution`` (``sigma_upper / sigma - 1``),
        ``flatness`` (``1/σ²``), ``deviation`` (``D`` at ``sigma``), ``tolerance``,
        ``base_loss``, ``base_accuracy``, ``relative``, ``criterion``, ``n_samples``,
        ``iters``, ``rtol`` and ``status``: ``"ok"``, ``"unresolved"`` (``iters`` ran out
        before ``rtol``), ``"sigma_max_within_tolerance"`` (``sigma = sigma_max``, a lower
        bound) or ``"sigma_min_exceeds_tolerance"`` (``sigma = sigma_min``, an upper bound).

    References:
        - Y. Jiang et al., "Fantastic Generalization Measures and Where to Find Them", ICLR 2020,
          measures "pacbayes.flatness" and "pacbayes.mag.flatness", https://arxiv.org/abs/1912.02178
        - G. K. Dziugaite and D. M. Roy, "Computing Nonvacuous Generalization Bounds for Deep
          (Stochastic) Neural Networks", UAI 2017, https://arxiv.org/abs/1703.11008
        - QGen (AskariHemmat et al., 2024) reports PAC-Bayes flatness of quantized models,
          https://arxiv.org/abs/2404.11769
    """
    _check_choice("criterion", criterion, FLATNESS_CRITERIA)
    _check_positive("tolerance", tolerance)
    _check_positive("sigma_max", sigma_max)
    _check_positive("sigma_min", sigma_min)
    if sigma_min >= sigma_max:
        raise ValueError(
            f"sigma_min={sigma_min!r} must be smaller than sigma_max={sigma_max!r}"
        )
    _check_positive_int("n_samples", n_samples)
    _check_positive_int("iters", iters)
    if not np.isfinite(rtol) or rtol < 0:
        raise ValueError(
            f"rtol must be a finite number >= 0, got {rtol!r}; e.g. rtol=0.02 resolves "
            "sigma to 2 %"
        )
    if not np.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    _ensure_built(model, np.asarray(x))
    with _preserved_weights(model):
        evaluator = _Evaluator(model, x, y, batch_size, loss_fn, from_logits)
        variables = perturbed_weights(model, weights_filter)
        base = [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in variables]
        base_loss, base_acc = evaluator()

        def deviation(sigma: float) -> float:
            values = []
            for k in range(n_samples):
                e = _normal_like(np.random.default_rng([seed, k]), base)
                if relative:
                    std = [np.sqrt(sigma**2 * np.square(b) + eps**2) for b in base]
                    delta = [s * ei for s, ei in zip(std, e)]
                else:
                    delta = [sigma * ei for ei in e]
                _assign(variables, base, delta)
                loss, acc = evaluator()
                values.append(
                    loss - base_loss if criterion == "loss" else base_acc - acc
                )
            return float(np.mean(values))

        sigma, upper, dev, status = _bisect_sigma(
            deviation, sigma_min, sigma_max, tolerance, iters, rtol
        )
    return {
        "sigma": sigma,
        "sigma_upper": upper,
        "resolution": upper / sigma - 1.0,
        "flatness": 1.0 / sigma**2,
        "deviation": dev,
        "tolerance": float(tolerance),
        "base_loss": base_loss,
        "base_accuracy": base_acc,
        "relative": bool(relative),
        "criterion": criterion,
        "n_samples": int(n_samples),
        "iters": int(iters),
        "rtol": float(rtol),
        "status": status,
    }


# ---------------------------------------------------------------------------------------------
# loss landscapes
# ---------------------------------------------------------------------------------------------
def _direction_from_rng(
    rng: np.random.Generator,
    base: Sequence[np.ndarray],
    filter_normalize: bool,
    ignore_bias_bn: bool,
) -> list[np.ndarray]:
    direction = []
    for w in base:
        d = rng.standard_normal(w.shape).astype(np.float32)
        if w.ndim <= 1:
            # Li et al.: biases / BN parameters get a zero direction, or else the weights themselves
            d = (
                np.zeros_like(w)
                if ignore_bias_bn
                else np.array(w, np.float32, copy=True)
            )
        elif filter_normalize:
            axes = tuple(
                range(w.ndim - 1)
            )  # one filter per output unit/channel = last axis
            w_norm = np.sqrt(
                np.sum(np.square(w, dtype=np.float64), axis=axes, keepdims=True)
            )
            d_norm = np.sqrt(
                np.sum(np.square(d, dtype=np.float64), axis=axes, keepdims=True)
            )
            d = (d * (w_norm / (d_norm + 1e-10))).astype(np.float32)
        direction.append(d)
    return direction


def random_direction(
    model: keras.Model,
    seed: int = 0,
    filter_normalize: bool = True,
    ignore_bias_bn: bool = True,
    weights_filter: WeightsFilter | None = None,
) -> list[np.ndarray]:
    """A random direction in weight space, filter-normalized as in Li et al. (2018).

    ``d ~ N(0, I)`` with the shapes of :func:`perturbed_weights`; with ``filter_normalize``,
    every filter is rescaled to the norm of the matching weight filter::

        d_{i,j} ← d_{i,j} / ‖d_{i,j}‖ · ‖w_{i,j}‖

    where ``j`` runs over the *last* axis of the Keras kernel: the output channel of a Conv2D
    kernel ``(kh, kw, cin, cout)`` (one filter = ``kernel[..., j]``) and the output unit of a
    Dense kernel ``(in, out)`` (``kernel[:, j]``, a row of ``W`` in ``y = W x``). One-dimensional
    weights (biases, BN parameters) get a zero direction when ``ignore_bias_bn`` and else the
    weights themselves (Li et al.'s code). Without ``filter_normalize`` the raw Gaussian is
    returned (apart from the 1-D rule).

    Arguments:
        model: a built Keras 3 model.
        seed: the direction uses ``default_rng(seed)``.
        filter_normalize: rescale each filter as above.
        ignore_bias_bn: zero direction for 1-D weights.
        weights_filter: which trainable weights the direction covers (default: kernels and biases).

    Returns:
        list of float32 arrays, one per :func:`perturbed_weights` entry, same shapes.

    References:
        H. Li et al., "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018,
        https://arxiv.org/abs/1712.09913
    """
    base = [
        keras.ops.convert_to_numpy(v) for v in perturbed_weights(model, weights_filter)
    ]
    return _direction_from_rng(
        np.random.default_rng(seed), base, filter_normalize, ignore_bias_bn
    )


def _check_direction(
    direction: Sequence[np.ndarray], base: Sequence[np.ndarray], name: str
) -> list[np.ndarray]:
    direction = [np.asarray(d, np.float32) for d in direction]
    shapes = [d.shape for d in direction]
    expected = [b.shape for b in base]
    if shapes != expected:
        raise ValueError(
            f"{name} has shapes {shapes}, but the perturbed weights have shapes {expected}; "
            "build it with random_direction(model, ...) and the same weights_filter"
        )
    return direction


def loss_landscape_1d(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    alphas: Sequence[float],
    direction: Sequence[np.ndarray] | None = None,
    seed: int = 0,
    *,
    filter_normalize: bool = True,
    ignore_bias_bn: bool = True,
    batch_size: int = 256,
    loss_fn: LossFn | None = None,
    from_logits: bool = False,
    weights_filter: WeightsFilter | None = None,
) -> list[dict[str, float]]:
    """Loss and accuracy along one direction: ``f(α) = L(w + α d)`` (Li et al., 2018).

    Arguments:
        model: a Keras 3 model (weights restored on return).
        x, y: NumPy data.
        alphas: step sizes ``α`` (``α = 0`` is the model itself).
        direction: list of arrays shaped like :func:`perturbed_weights`; default
            ``random_direction(model, seed, filter_normalize, ignore_bias_bn, weights_filter)``.
        seed: seed of the default direction.
        filter_normalize, ignore_bias_bn: see :func:`random_direction`.
        batch_size, loss_fn, from_logits: as in :func:`evaluate`.
        weights_filter: which trainable weights move (default: kernels and biases).

    Returns:
        One row (dict with keys ``alpha``, ``loss``, ``accuracy``) per α, in input order.

    References:
        H. Li et al., "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018,
        https://arxiv.org/abs/1712.09913
    """
    _ensure_built(model, np.asarray(x))
    with _preserved_weights(model):
        evaluator = _Evaluator(model, x, y, batch_size, loss_fn, from_logits)
        variables = perturbed_weights(model, weights_filter)
        base = [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in variables]
        if direction is None:
            direction = _direction_from_rng(
                np.random.default_rng(seed), base, filter_normalize, ignore_bias_bn
            )
        direction = _check_direction(direction, base, "direction")
        rows = []
        for alpha in alphas:
            _assign(variables, base, direction, float(alpha))
            loss, acc = evaluator()
            rows.append({"alpha": float(alpha), "loss": loss, "accuracy": acc})
    return rows


def loss_landscape_2d(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    alphas: Sequence[float],
    betas: Sequence[float],
    directions: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
    seed: int = 0,
    *,
    filter_normalize: bool = True,
    ignore_bias_bn: bool = True,
    batch_size: int = 256,
    loss_fn: LossFn | None = None,
    from_logits: bool = False,
    weights_filter: WeightsFilter | None = None,
) -> list[dict[str, float]]:
    """Loss and accuracy on a plane: ``f(α, β) = L(w + α d₁ + β d₂)`` (Li et al., 2018).

    The two directions are independent filter-normalized Gaussians drawn one after the other
    from ``default_rng(seed)``, so ``d₁`` equals ``random_direction(model, seed)`` and the
    ``β = 0`` line is ``loss_landscape_1d`` with the same seed. In high dimension they are
    nearly orthogonal.

    Arguments:
        model: a Keras 3 model (weights restored on return).
        x, y: NumPy data.
        alphas, betas: coordinates along ``d₁`` and ``d₂``.
        directions: optional pair ``(d₁, d₂)`` of lists shaped like :func:`perturbed_weights`.
        seed, filter_normalize, ignore_bias_bn: see :func:`random_direction`.
        batch_size, loss_fn, from_logits: as in :func:`evaluate`.
        weights_filter: which trainable weights move (default: kernels and biases).

    Returns:
        One row (dict with keys ``alpha``, ``beta``, ``loss``, ``accuracy``) per grid point,
        ``alpha`` the outer loop.

    References:
        H. Li et al., "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018,
        https://arxiv.org/abs/1712.09913
    """
    _ensure_built(model, np.asarray(x))
    with _preserved_weights(model):
        evaluator = _Evaluator(model, x, y, batch_size, loss_fn, from_logits)
        variables = perturbed_weights(model, weights_filter)
        base = [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in variables]
        if directions is None:
            rng = np.random.default_rng(seed)
            d1 = _direction_from_rng(rng, base, filter_normalize, ignore_bias_bn)
            d2 = _direction_from_rng(rng, base, filter_normalize, ignore_bias_bn)
        else:
            if len(directions) != 2:
                raise ValueError(
                    f"directions must be a pair (d1, d2), got {len(directions)} entries"
                )
            d1 = _check_direction(directions[0], base, "directions[0]")
            d2 = _check_direction(directions[1], base, "directions[1]")
        rows = []
        for alpha in alphas:
            for beta in betas:
                delta = [float(alpha) * a + float(beta) * b for a, b in zip(d1, d2)]
                _assign(variables, base, delta)
                loss, acc = evaluator()
                rows.append(
                    {
                        "alpha": float(alpha),
                        "beta": float(beta),
                        "loss": loss,
                        "accuracy": acc,
                    }
                )
    return rows


# ---------------------------------------------------------------------------------------------
# QGen: width of the quantization bin per layer
# ---------------------------------------------------------------------------------------------
def _all_layers(model: keras.Model) -> list[Any]:
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is not None:
        layers = list(flatten(include_self=False, recursive=True))
    else:  # pragma: no cover - public fallback
        layers, stack = [], list(getattr(model, "layers", []))
        while stack:
            layer = stack.pop(0)
            layers.append(layer)
            stack = list(getattr(layer, "layers", [])) + stack
    return _unique(layers)


def bin_widths(model: keras.Model) -> list[dict[str, Any]]:
    """Quantization bin width (the scale ``s``) per quantized layer and parameter (QGen Fig. 1).

    A layer counts as quantized when it has an ``integer_parameters()`` method (the protocol
    of :mod:`lqs.protocol`): each returned object has ``name``, ``values`` (integers ``P_q``),
    ``scale`` (one per scale group, broadcastable to the parameter; ``values * scale`` is the
    fake-quantized parameter) and ``granularity``. The bin width of a uniform quantizer is its
    step ``s``; QGen models quantization as additive noise whose width grows with ``s``.
    Other layers are skipped; nested models and sub-layers are searched.

    Arguments:
        model: a Keras 3 model.

    Returns:
        One row per quantized parameter, a dict with the keys :data:`BIN_WIDTH_COLUMNS`:
        ``layer``, ``parameter``, ``granularity``, ``n_groups`` (number of scales), ``n_params``
        (elements of the parameter), ``scale_mean``, ``scale_min``, ``scale_max``; empty when no
        layer is quantized.

    References:
        M. AskariHemmat et al., "QGen: On the Ability to Generalize in Quantization Aware
        Training", 2024, Figure 1, https://arxiv.org/abs/2404.11769
    """
    rows = []
    for layer in _all_layers(model):
        if not is_quantized_layer(layer):
            continue
        for tensor in layer.integer_parameters():
            scale = np.abs(
                np.asarray(keras.ops.convert_to_numpy(tensor.scale), np.float64)
            ).ravel()
            values = np.asarray(tensor.values)
            rows.append(
                {
                    "layer": layer.name,
                    "parameter": str(tensor.name),
                    "granularity": str(getattr(tensor, "granularity", "")),
                    "n_groups": int(scale.size),
                    "n_params": int(values.size),
                    "scale_mean": float(scale.mean()) if scale.size else math.nan,
                    "scale_min": float(scale.min()) if scale.size else math.nan,
                    "scale_max": float(scale.max()) if scale.size else math.nan,
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------
# which weights a measure perturbs: dequantized copy, frozen min-max scales
# ---------------------------------------------------------------------------------------------
def _float_base(layer: Any) -> type:
    for base in (keras.layers.Conv2D, keras.layers.Dense):
        if isinstance(layer, base):
            return base
    raise ValueError(
        f"quantized layer {layer.name!r} ({type(layer).__name__}) is neither a Dense nor a "
        "Conv2D subclass; dequantized_model supports Dense and Conv2D quantized layers only; "
        "fix: measure the model itself, or within frozen_scales(model)"
    )


def _dequantized_weights(layer: Any) -> dict[str, np.ndarray]:
    """``{"kernel": P_q s, "bias": ...}`` of a quantized layer (float parameters as they are)."""
    out = {
        t.name: np.asarray(t.values, np.float32) * np.asarray(t.scale, np.float32)
        for t in layer.integer_parameters()
    }
    for name, value in layer.float_parameters().items():
        out.setdefault(name, np.asarray(value, np.float32))
    return out


def _clone_layer(layer: Any) -> Any:
    if is_quantized_layer(layer):
        base = _float_base(layer)
        return base.from_config(base.get_config(layer))
    return layer.__class__.from_config(layer.get_config())


def dequantized_model(model: keras.Model) -> keras.Model:
    """A float copy of ``model`` whose quantized layers hold their dequantized weights.

    Every quantized layer (the :mod:`lqs.protocol`: ``integer_parameters()``) that subclasses
    ``keras.layers.Dense`` or ``keras.layers.Conv2D`` becomes that plain Keras layer, with the
    base layer's configuration and the weights

        kernel = P_q ⊙ s,   bias = P_q ⊙ s (quantized bias) or the float bias,

    i.e. exactly the values the quantized layer uses in its forward pass, so the copy computes
    the same function (weight quantization only). Every other layer is cloned with its weights
    (BatchNorm statistics included). Perturbation measures on the copy describe the continuous
    loss landscape at the quantized network's weights: scales are gone, nothing is re-rounded
    and gradients are exact. Weights that quantized to 0 stay 0 under magnitude-aware noise.

    Arguments:
        model: a built Sequential or functional Keras 3 model (nested models are cloned
            recursively).

    Returns:
        A new, uncompiled ``keras.Model`` with the same layer names; ``model`` is unchanged.
        A model without quantized layers gives a plain clone.

    Raises:
        ValueError: a quantized layer that is not a Dense/Conv2D subclass, or a model that
            Keras cannot clone (subclassed models).
    """
    try:
        twin = keras.models.clone_model(
            model, clone_function=_clone_layer, recursive=True
        )
    except Exception as exc:  # subclassed models and custom layers without from_config
        raise ValueError(
            f"cannot clone model {model.name!r} ({type(model).__name__}): {exc}; "
            "dequantized_model supports Sequential and functional models; fix: build the "
            "model functionally, or measure it within frozen_scales(model)"
        ) from exc
    targets = {layer.name: layer for layer in _all_layers(twin)}
    inner = {  # quantizer sub-layers of quantized layers: replaced with their owner
        id(sub)
        for layer in _all_layers(model)
        if is_quantized_layer(layer)
        for sub in _all_layers(layer)
    }
    for layer in _all_layers(model):
        if isinstance(layer, keras.Model) or not layer.weights or id(layer) in inner:
            continue
        target = targets[layer.name]
        if is_quantized_layer(layer):
            for name, value in _dequantized_weights(layer).items():
                getattr(target, name).assign(value)
        else:
            target.set_weights(layer.get_weights())
    return twin


def _minmax_layers(model: keras.Model) -> list[Any]:
    """The layers whose scales are recomputed from their weights (fixed-bit min-max)."""
    from lqs.baselines import FixedBitsConv2D, FixedBitsDense

    return [
        layer
        for layer in _all_layers(model)
        if isinstance(layer, (FixedBitsDense, FixedBitsConv2D))
    ]


def _frozen_minmax(scales: dict[str, np.ndarray], bits: int) -> Callable[..., Any]:
    """``quantize(p, which)``: ``clip(round(p / s₀), -Q, Q) s₀`` with fixed ``s₀``, STE gradient."""
    q = float(2 ** (int(bits) - 1) - 1)

    def quantize(p: Any, which: str) -> Any:
        p = tf.convert_to_tensor(p)
        s = tf.constant(scales[which], dtype=p.dtype)

        @tf.custom_gradient
        def fake_quant(x: Any) -> Any:
            def grad(upstream: Any) -> Any:
                return upstream

            return tf.clip_by_value(tf.round(x / s), -q, q) * s, grad

        return fake_quant(p)

    return quantize


@contextlib.contextmanager
def frozen_scales(model: keras.Model) -> Iterator[list[str]]:
    """Within the block, min-max layers quantize with the scales of their current weights.

    A fixed-bit layer (:class:`lqs.baselines.FixedBitsDense`/``FixedBitsConv2D``) normally
    recomputes its symmetric min-max scale from its weights at every call,
    ``s = max_g |W| / Q`` with ``Q = 2^(b-1) - 1``. Inside ``frozen_scales`` the scale is the one
    of the weights at entry, ``s₀``, and a perturbed weight ``W`` is quantized on that fixed grid:

        W_rec = clip(round(W / s₀), -Q, Q) · s₀

    (straight-through gradient), the rule of a quantizer that keeps its scale, as LSQ and the
    nested quantizer do with their learned scales (which no measure of this module perturbs).
    At the entry weights the forward pass is unchanged. On exit the layers quantize as before.

    Arguments:
        model: a built Keras 3 model; layers other than fixed-bit ones are left alone.

    Yields:
        The names of the layers whose scales are frozen (empty for FP32, nested or LSQ
        models).
    """
    layers = _minmax_layers(model)
    _FUNCTION_CACHE.pop(model, None)  # traced graphs bake the quantizer in: drop them
    try:
        for layer in layers:
            scales = {t.name: np.asarray(t.scale) for t in layer.integer_parameters()}
            layer._quantize = _frozen_minmax(scales, layer.bits)
        yield [layer.name for layer in layers]
    finally:
        for layer in layers:
            if "_quantize" in vars(layer):
                del layer._quantize
        _FUNCTION_CACHE.pop(model, None)
