"""Why the two forms of the deviation penalty move a scale in opposite directions (thesis 3.2.3).

For weights :math:`W` of :math:`n` elements and one scalar scale :math:`s` the two forms of
:mod:`lqs.losses` (``deviation_form``) are

.. math::

    \\mathcal{P}_{impl}(s) = \\frac{1}{n}\\sum_i |W_i - W_i/s| = \\overline{|W|}\\,|1 - 1/s| ,
    \\qquad
    \\mathcal{P}_{rec}(s) = \\frac{1}{n}\\sum_i |W_i - q_i s| = \\frac{1}{n}\\sum_i r_i ,

with :math:`q_i = \\lfloor W_i/s \\rfloor` and the residual :math:`r_i = W_i - q_i s \\in [0, s)`.
Their derivatives with respect to the scale (``floor`` has derivative 0 where it is
differentiable, as in TensorFlow) are

.. math::

    \\frac{d\\mathcal{P}_{impl}}{ds} = \\frac{1}{n}\\sum_i \\operatorname{sign}(W_i - W_i/s)
        \\frac{W_i}{s^2} = \\overline{|W|}\\,\\frac{\\operatorname{sign}(s - 1)}{s^2} ,
    \\qquad
    \\frac{d\\mathcal{P}_{rec}}{ds} = -\\frac{1}{n}\\sum_i \\operatorname{sign}(r_i)\\, q_i .

Gradient descent moves :math:`s` against the derivative (:math:`\\Delta s \\propto -d\\mathcal{P}/ds`).
The implementation's form pulls every scale towards :math:`s = 1`: it grows scales below 1 (coarser
quantization) whatever the weights. In the reconstructed form the floor rounds towards
:math:`-\\infty`, so :math:`q_i = W_i/s - f_i` with the fractional part :math:`f_i \\in [0, 1)`; where no
residual is exactly 0,

.. math::

    \\frac{d\\mathcal{P}_{rec}}{ds} = \\bar f - \\frac{\\bar W}{s} ,

which is positive for zero-mean weights (:math:`\\bar f > 0`): the biased rounding makes descent
*shrink* the scale (finer quantization), the opposite of what a penalty on the deviation is meant to
do. Only where :math:`\\bar W / s > \\bar f` (positive-mean weights at small :math:`s`) does it grow.

:func:`deviation_curves` computes both penalties and their derivatives with
:func:`lqs.losses.parameter_penalties` and ``tf.GradientTape`` over a log-spaced range of
:math:`s` and checks them against the closed forms (:func:`closed_form_gradient`);
:func:`deviation_facts` measures what the book states, :func:`draw_deviation_forms` draws it and
:func:`deviation_markdown` writes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf

from companion.chapters.style import MIN_FONT_PT, TERM_COLORS, panel_grid
from lqs.losses import DEVIATION_FORMS, parameter_penalties

__all__ = [
    "FORM_LABEL",
    "FORM_COLOUR",
    "GRADIENT_RTOL",
    "normal_weights",
    "scale_grid",
    "closed_form_gradient",
    "deviation_curves",
    "deviation_facts",
    "draw_deviation_forms",
    "deviation_markdown",
]

#: legend and label text of each form
FORM_LABEL: dict[str, str] = {
    "implementation": "implementation |W − W/s|",
    "reconstructed": "reconstructed |W − floor(W/s)·s|",
}
#: one colour per form, those of the loss-term chapter (:data:`style.TERM_COLORS`)
FORM_COLOUR: dict[str, str] = {
    form: TERM_COLORS[f"deviation_{form}"] for form in DEVIATION_FORMS
}
#: largest relative difference allowed between the taped and the closed-form derivative
GRADIENT_RTOL = 1e-3
_LINESTYLE = {"implementation": "-", "reconstructed": "--"}
#: panel text size: >= style.MIN_FONT_PT in print
_TEXT_SIZE = max(9.0, MIN_FONT_PT + 1)


def _check_forms(forms: Sequence[str]) -> list[str]:
    forms = list(forms)
    bad = [f for f in forms if f not in DEVIATION_FORMS]
    if bad or not forms:
        raise ValueError(
            f"forms={forms!r} is not a non-empty list of deviation forms; allowed: "
            f"{', '.join(map(repr, DEVIATION_FORMS))}; pass e.g. forms={list(DEVIATION_FORMS)!r}"
        )
    return forms


def _check_weights(weights: np.ndarray) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float32).ravel()
    if w.size == 0 or not np.all(np.isfinite(w)):
        raise ValueError(
            f"weights must be a non-empty array of finite numbers, got {w.size} elements "
            f"({int(np.sum(~np.isfinite(w)))} not finite); pass a layer's kernel, e.g. "
            "model.get_layer('dense1').kernel.numpy(), or normal_weights()"
        )
    return w


def normal_weights(
    shape: Sequence[int] = (784, 128), *, std: float = 0.05, seed: int = 42
) -> np.ndarray:
    """A seeded zero-mean normal sample, float32: Keras's ``RandomNormal`` default (std 0.05).

    The default shape is the first kernel of the thesis MLP (784 inputs, 128 units), seed 42
    as in the thesis. The sample mean is subtracted, so :math:`\\bar W = 0` up to float32 rounding.

    Raises:
        ValueError: ``std`` not a positive finite number or an empty ``shape``.
    """
    if not (np.isfinite(std) and std > 0):
        raise ValueError(f"std={std!r} must be a positive finite number, e.g. 0.05")
    if not shape or any(int(d) < 1 for d in shape):
        raise ValueError(
            f"shape={tuple(shape)!r} must be positive sizes, e.g. (784, 128)"
        )
    w = np.random.default_rng(seed).normal(0.0, std, tuple(int(d) for d in shape))
    return (w - w.mean()).astype(np.float32)


def scale_grid(s_min: float = 1e-5, s_max: float = 10.0, num: int = 61) -> np.ndarray:
    """``num`` log-spaced scales from ``s_min`` to ``s_max`` (float32 values, as a scale variable).

    Raises:
        ValueError: not ``0 < s_min < s_max`` or ``num < 2``.
    """
    if not (np.isfinite(s_min) and np.isfinite(s_max) and 0 < s_min < s_max):
        raise ValueError(
            f"need 0 < s_min < s_max, got s_min={s_min!r}, s_max={s_max!r}; e.g. 1e-5 and 10"
        )
    if int(num) < 2:
        raise ValueError(f"num={num!r} must be >= 2, e.g. 61")
    return np.geomspace(s_min, s_max, int(num)).astype(np.float32)


def closed_form_gradient(weights: np.ndarray, s: float, form: str) -> float:
    """:math:`d\\mathcal{P}/ds` of one form from the module docstring's closed forms (NumPy).

    The quotients, floors and residuals are formed in float32 as TensorFlow forms them (so a
    residual that float32 rounds to 0 or below 0 gets the same sign there); the mean is float64.

    Arguments:
        weights: the weights (any shape, flattened).
        s: the scalar scale, > 0.
        form: ``"implementation"`` or ``"reconstructed"`` (:data:`lqs.losses.DEVIATION_FORMS`).
    """
    (form,) = _check_forms([form])
    return float(_gradient_terms(_check_weights(weights), s, form).mean())


def _gradient_terms(w: np.ndarray, s: float, form: str) -> np.ndarray:
    """Per-element terms of :math:`d\\mathcal{P}/ds` (their mean is the derivative), float64."""
    s32 = np.float32(s)
    ratio = w / s32
    if form == "implementation":
        return np.sign(w - ratio).astype(np.float64) * w / (np.float64(s32) ** 2)
    q = np.floor(ratio)
    return -(np.sign(w - q * s32).astype(np.float64) * q)


def _taped(w: tf.Tensor, s: float, form: str) -> tuple[float, float]:
    """``(penalty, dpenalty/ds)`` of :func:`lqs.losses.parameter_penalties` at one scale."""
    scale = tf.Variable(np.array([s], np.float32))
    with tf.GradientTape() as tape:
        value = parameter_penalties(w, scale, form)["deviation"]
    grad = tape.gradient(value, scale)
    return float(value), float(0.0 if grad is None else grad.numpy()[0])


def deviation_curves(
    weights: np.ndarray,
    scales: np.ndarray | None = None,
    *,
    forms: Sequence[str] = DEVIATION_FORMS,
) -> pd.DataFrame:
    """Both deviation penalties and their scale derivatives over a range of one scalar scale.

    Arguments:
        weights: the weights, e.g. a trained layer's kernel or :func:`normal_weights`.
        scales: the scales (default :func:`scale_grid`), all > 0.
        forms: the deviation forms to compute.

    Returns:
        One row per form and scale: ``form, s, penalty, gradient`` (:math:`d\\mathcal{P}/ds` taped
        through :func:`lqs.losses.parameter_penalties`), ``gradient_closed_form``
        (:func:`closed_form_gradient`), ``descent`` (:math:`-d\\mathcal{P}/ds`, the direction a
        gradient step moves ``s``) and ``direction`` (``"grows"``, ``"shrinks"`` or ``"flat"``).

    Raises:
        ValueError: bad weights, scales or forms; or a taped derivative that differs from the closed
            form by more than :data:`GRADIENT_RTOL` (relative to the largest closed-form value).
    """
    forms = _check_forms(forms)
    w = _check_weights(weights)
    s_all = scale_grid() if scales is None else np.asarray(scales, np.float32).ravel()
    if s_all.size == 0 or not np.all(np.isfinite(s_all) & (s_all > 0)):
        raise ValueError(
            f"scales must be positive finite numbers, got {s_all!r}; use scale_grid(1e-5, 10)"
        )
    tensor = tf.constant(w)
    rows = []
    for form in forms:
        for s in s_all:
            penalty, grad = _taped(tensor, float(s), form)
            terms = _gradient_terms(w, float(s), form)
            rows.append(
                (form, float(s), penalty, grad, terms.mean(), np.abs(terms).mean())
            )
    df = pd.DataFrame(
        rows,
        columns=["form", "s", "penalty", "gradient", "gradient_closed_form", "_size"],
    )
    _check_gradients(df)
    df = df.drop(columns="_size")
    df["descent"] = -df["gradient"]
    df["direction"] = np.select(
        [df["descent"] > 0, df["descent"] < 0], ["grows", "shrinks"], "flat"
    )
    return df


def _check_gradients(df: pd.DataFrame) -> None:
    """Taped against closed-form derivative, relative to the mean size of the summed terms."""
    err = np.abs(df["gradient"] - df["gradient_closed_form"]) / np.maximum(
        df["_size"], 1e-30
    )
    if len(df) and float(err.max()) > GRADIENT_RTOL:
        row = df.loc[err.idxmax()]
        raise ValueError(
            f"taped dP/ds of the {row['form']!r} form at s={row['s']:.3g} differs from its closed "
            f"form by {float(err.max()):.2e} (relative; allowed {GRADIENT_RTOL}): "
            "lqs.losses.parameter_penalties no longer computes the formula of "
            "companion.chapters.deviation_forms' docstring"
        )


def _runs_of(mask: np.ndarray, s: np.ndarray) -> list[tuple[float, float]]:
    """The ``(first, last)`` scale of each maximal run of ``True`` in ``mask`` (grid order)."""
    runs, start = [], None
    for i, m in enumerate(mask):
        if m and start is None:
            start = i
        if start is not None and (not m or i == len(mask) - 1):
            end = i if m else i - 1
            runs.append((float(s[start]), float(s[end])))
            start = None
    return runs


def deviation_facts(curves: pd.DataFrame) -> dict[str, dict[str, object]]:
    """What the curves show, per form, measured (the numbers :func:`deviation_markdown` states).

    Returns:
        ``{form: facts}`` with ``n_scales``, ``s_min``, ``s_max``, ``share_shrinks`` and
        ``share_grows`` (fractions of the scales where a gradient step shrinks/grows ``s``),
        ``shrinks_ranges`` and ``grows_ranges`` (``(first, last)`` scale of each stretch of the
        grid where it does), ``crossings`` (where the direction flips: the geometric midpoint of
        the last scale of one direction and the first of the other, scales with a zero
        derivative skipped) and ``max_gradient_error`` (largest relative difference of
        the taped and closed-form derivative, relative to the largest closed-form value).

    Raises:
        ValueError: ``curves`` lacks a column of :func:`deviation_curves`.
    """
    need = {"form", "s", "gradient", "gradient_closed_form", "direction"}
    if missing := need - set(curves.columns):
        raise ValueError(
            f"curves lacks the columns {sorted(missing)}; pass the table of deviation_curves()"
        )
    facts: dict[str, dict[str, object]] = {}
    for form, g in curves.groupby("form", sort=False):
        g = g.sort_values("s")
        s = g["s"].to_numpy()
        d = g["direction"].to_numpy()
        moving = (
            d != "flat"
        )  # a crossing is between the last step of one sign and the next
        sm, dm = s[moving], d[moving]
        flips = np.flatnonzero(dm[1:] != dm[:-1])
        size = max(float(np.abs(g["gradient_closed_form"]).max()), 1e-30)
        facts[str(form)] = {
            "n_scales": len(g),
            "s_min": float(s[0]),
            "s_max": float(s[-1]),
            "share_shrinks": float(np.mean(d == "shrinks")),
            "share_grows": float(np.mean(d == "grows")),
            "shrinks_ranges": _runs_of(d == "shrinks", s),
            "grows_ranges": _runs_of(d == "grows", s),
            "crossings": [float(np.sqrt(sm[i] * sm[i + 1])) for i in flips],
            "max_gradient_error": float(
                np.max(np.abs(g["gradient"] - g["gradient_closed_form"])) / size
            ),
        }
    return facts


def _symlog_axis(ax: plt.Axes, values: np.ndarray, max_ticks: int = 4) -> None:
    """A symmetric log y axis for ``values``: linear band below the smallest ``|value|``, a
    decade of room beyond each sign's extreme, labelled powers of ten every ``step`` decades
    (the same on both signs; at most ``max_ticks`` on the longer side)."""
    finite = values[np.isfinite(values)]
    nonzero = np.abs(finite[finite != 0])
    if nonzero.size == 0:
        return
    lo = int(np.floor(np.log10(nonzero.min())))
    ax.set_yscale("symlog", linthresh=10.0**lo)
    sides = {sign: np.abs(finite[np.sign(finite) == sign]) for sign in (1, -1)}
    his = {
        sign: int(np.ceil(np.log10(v.max()))) if v.size else lo
        for sign, v in sides.items()
    }
    step = max(1, -(-(max(his.values()) - lo) // max_ticks))
    ticks = [0.0]
    for sign, hi in his.items():
        if sides[sign].size:
            ticks += [sign * 10.0**k for k in range(hi, lo + 1, -step)]
    ax.set_yticks(sorted(ticks))
    ax.yaxis.set_minor_locator(plt.NullLocator())
    room = {sign: his[sign] + (1 if sides[sign].size else 0) for sign in his}
    ax.set_ylim(-(10.0 ** room[-1]), 10.0 ** room[1])


def draw_deviation_forms(curves: pd.DataFrame) -> plt.Figure:
    """Two panels: the penalty against ``s``, and :math:`-d\\mathcal{P}/ds` against ``s``.

    Left: :math:`\\mathcal{P}(s)` of each form (log-log). Right: the direction and size of a
    gradient-descent step on ``s``, :math:`-d\\mathcal{P}/ds` (symmetric log axis; above 0 a
    step grows the scale, coarser quantization; below 0 it shrinks it, finer quantization).
    Colours: the loss-term chapter's deviation colours (:data:`FORM_COLOUR`).

    Arguments:
        curves: :func:`deviation_curves`.
    """
    deviation_facts(curves)  # checks the columns
    fig, (left, right) = panel_grid(2, max_cols=2, panel=(3.4, 3.0), extra=(0.0, 0.5))
    for form, g in curves.groupby("form", sort=False):
        g = g.sort_values("s")
        style = dict(
            color=FORM_COLOUR[form], ls=_LINESTYLE[form], lw=2.2, label=FORM_LABEL[form]
        )
        left.plot(g["s"], g["penalty"], **style)
        right.plot(g["s"], g["descent"], **style)
    left.set_yscale("log")
    left.set_ylabel("penalty $\\mathcal{P}(s)$")
    _symlog_axis(right, curves["descent"].to_numpy())
    right.axhline(0.0, color="black", lw=0.8)
    right.set_ylabel("$-d\\mathcal{P}/ds$  (> 0: a step grows s)")
    for ax, title in ((left, "penalty"), (right, "gradient-descent step on s")):
        ax.set_xscale("log")
        ax.set_xlabel("scale s")
        ax.set_title(title, fontsize=_TEXT_SIZE + 1)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="lower center", ncol=2, fontsize=_TEXT_SIZE, frameon=False
    )
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def _num(x: float) -> str:
    """Two significant digits; powers of ten and tiny/huge values in compact scientific form."""
    if x == 0 or 1e-3 <= abs(x) < 1e4:
        return f"{x:.2g}"
    mant, exp = f"{x:.1e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"


def _ranges(ranges: list[tuple[float, float]]) -> str:
    return " and ".join(
        f"s = {_num(a)}" if a == b else f"s from {_num(a)} to {_num(b)}"
        for a, b in ranges
    )


def _share(share: float, n: int) -> str:
    if share == 1.0:
        return f"at every one of the {n} scales"
    if share == 0.0:
        return f"at none of the {n} scales"
    return f"at {100 * share:.0f} % of the {n} scales"


def deviation_markdown(curves: pd.DataFrame, weights_label: str) -> str:
    """Markdown stating what :func:`deviation_curves` measured, every number from the table.

    Arguments:
        curves: :func:`deviation_curves` (both forms).
        weights_label: what the weights are, e.g. ``"the first kernel of the trained MLP"``.

    Raises:
        ValueError: ``curves`` lacks one of the two forms or a column.
    """
    facts = deviation_facts(curves)
    if missing := [f for f in DEVIATION_FORMS if f not in facts]:
        raise ValueError(
            f"curves lacks the form(s) {missing}; call deviation_curves(weights) with "
            f"forms={list(DEVIATION_FORMS)!r}"
        )
    rec, imp = facts["reconstructed"], facts["implementation"]
    n = int(rec["n_scales"])
    lines = [
        f"For {weights_label}, over {n} log-spaced scales from {_num(rec['s_min'])} to "
        f"{_num(rec['s_max'])}:",
        "",
        f"- **reconstructed** $|W - \\lfloor W/s \\rfloor s|$: $d\\mathcal{{P}}/ds > 0$ "
        f"{_share(rec['share_shrinks'], n)}, so a gradient step on the penalty shrinks the "
        "scale (finer quantization, more bits) there"
        + (
            f"; it grows the scale only for {_ranges(rec['grows_ranges'])}"
            if rec["grows_ranges"]
            else ""
        )
        + ". The floor rounds towards $-\\infty$, so the residual carries the mean fractional "
        "part of $W/s$ and the derivative is $\\bar f - \\bar W / s$, positive unless the "
        "weights' mean is large against the scale.",
        f"- **implementation** $|W - W/s|$: a step grows the scale "
        f"{_share(imp['share_grows'], n)} ({_ranges(imp['grows_ranges']) or 'nowhere'})"
        + (
            f" and shrinks it for {_ranges(imp['shrinks_ranges'])}"
            if imp["shrinks_ranges"]
            else ""
        )
        + (
            f"; the direction flips at s ≈ {', '.join(_num(c) for c in imp['crossings'])}, "
            "so it pulls every scale towards that value (coarser quantization for every "
            "smaller scale)"
            if imp["crossings"]
            else ""
        )
        + ".",
        "",
        "The derivatives taped through `lqs.losses.parameter_penalties` agree with these closed "
        f"forms to {_num(max(rec['max_gradient_error'], imp['max_gradient_error']))} "
        "(relative to the largest).",
    ]
    return "\n".join(lines) + "\n"
