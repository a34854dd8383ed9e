"""Schematic figures of thesis chapters 2 and 3, drawn from computed data.

Every figure here is drawn from numbers that the library (or TensorFlow) computed, never
from hand-typed values, so a reader can change a parameter and watch the figure change.
Each figure has a *compute* function returning the numbers (checked against the library
by ``tests/test_figures.py``) and a *draw* function turning them into a Matplotlib
figure. The notebooks ``background_figures`` and ``method_insights`` only call these
functions, print the checks and save the figures.

Figures (thesis numbering) and what ties each to the library:

* 2.1 :func:`build_mlp`, :func:`mlp_edges`, :func:`draw_mlp`: a small Keras MLP; edge
  colour and width are its kernels' entries.
* 2.2 / 2.3 :func:`conv_example`, :func:`draw_conv2d`, :func:`draw_conv3d`: one output
  value of a 3x3 (x C) convolution over a zero-padded input, equal to ``tf.nn.conv2d``.
* 2.4 :func:`quantize_weights`, :func:`draw_weight_quantization`: the Fig. 2.1 kernel
  floored onto a scale grid with :func:`lqs.quantizers.scale_for_bits`,
  :func:`lqs.quantizers.integer_values` and :func:`lqs.quantizers.nested_quantize`.
* 2.5 :func:`affine_minmax_quantize`, :func:`minmax_matmul`, :func:`draw_minmax_matmul`:
  min-max (asymmetric, k-bit) quantization of inputs, equal to
  ``tf.quantization.fake_quant_with_min_max_vars``, then an integer matmul with the Fig.
  2.4 integers.
* 2.6 / 3.2 :func:`group_ids`, :func:`quantizer_scale_shape`,
  :func:`draw_conv_granularities`, :func:`draw_dense_granularities`: scale groups of the
  shapes :func:`lqs.quantizers.scale_shape` and :class:`lqs.quantizers.NestedQuantizer`
  create.
* 3.1 :func:`describe_nested_conv`, :func:`draw_nested_conv`: a layer diagram labelled
  with the shapes of a real :class:`lqs.layers.QConv2D`.
* method insights :func:`votes`, :func:`draw_vote_function`, :func:`train_qdense_mlp`,
  :func:`layer_ratios`, :func:`vote_stats`, :func:`draw_ratio_histogram`,
  :func:`worked_example`, :func:`draw_worked_example`: the scale-gradient vote
  :math:`g = -\\tanh(\\lambda - r)`, the ratios :math:`r = |G|/|P_{rec}|` of a trained
  layer, and one scale update computed by hand and by
  :func:`lqs.quantizers.nested_quantize`'s gradient.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf
from matplotlib import colors as mcolors
from matplotlib.collections import LineCollection, PatchCollection
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle
from matplotlib.ticker import LogLocator

from companion.chapters.style import (
    MAX_FIGURE_WIDTH_IN,
    PALETTE,
    legend_below,
    sequential_colors,
)
from lqs.layers import QConv2D, QDense
from lqs.quantizers import (
    EPS,
    GRANULARITIES,
    GRANULARITY_AXES,
    MIN_SCALE,
    NestedQuantizer,
    group_axes,
    integer_values,
    nested_quantize,
    scale_for_bits,
    scale_shape,
)

__all__ = [
    "DIVERGING",
    "ANNOTATION_SIZE",
    "SOBEL_X",
    "BLOB_SPREAD",
    "build_mlp",
    "gaussian_blobs",
    "full_batch_adam",
    "mlp_edges",
    "draw_mlp",
    "ConvExample",
    "integer_input",
    "conv_example",
    "draw_conv2d",
    "draw_conv3d",
    "WeightQuantization",
    "quantize_weights",
    "draw_weight_quantization",
    "MinMaxMatmul",
    "affine_minmax_quantize",
    "minmax_matmul",
    "draw_minmax_matmul",
    "group_ids",
    "quantizer_scale_shape",
    "granularity_table",
    "draw_conv_granularities",
    "draw_dense_granularities",
    "describe_nested_conv",
    "draw_nested_conv",
    "votes",
    "scale_gradient_numpy",
    "draw_vote_function",
    "synthetic_images",
    "load_images",
    "train_qdense_mlp",
    "LayerRatios",
    "layer_ratios",
    "vote_stats",
    "ratio_stats",
    "draw_ratio_histogram",
    "WorkedExample",
    "worked_example",
    "worked_example_table",
    "worked_example_markdown",
    "draw_worked_example",
    "CHECK_ATOL",
    "mlp_check",
    "conv_check",
    "weight_check",
    "minmax_check",
    "granularity_checks",
    "check_table",
]

#: diverging colour map for signed values (colour-blind-safe red/blue, white at zero)
DIVERGING = "RdBu_r"
#: font size in points of numbers written into cells and of diagram labels; at least
#: 8 pt in print for figures up to ``style.MAX_FIGURE_WIDTH_IN`` wide
ANNOTATION_SIZE = 9
#: most major ticks of a log axis spanning many decades (ratio histogram)
_LOG_TICKS = 5
#: spread of the blob centres of Fig. 2.1's toy problem (unit-variance points around
#: them: the blobs overlap a little)
BLOB_SPREAD = 2.0
#: the Sobel kernel that responds to vertical edges (a horizontal intensity gradient)
SOBEL_X = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]

_HIGHLIGHT = PALETTE[
    1
]  # orange: the window, the kernel and the output value that belong together
_FORWARD = "0.15"
_BACKWARD = PALETTE[3]  # vermillion-ish red for gradients


# --------------------------------------------------------------------------------------------
# shared drawing helpers


def _text_colour(rgba) -> str:
    """Black or white, whichever reads better on ``rgba`` (relative luminance)."""
    r, g, b = mcolors.to_rgb(rgba)
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def _symmetric_norm(*arrays: np.ndarray) -> mcolors.Normalize:
    vmax = max(float(np.max(np.abs(a))) for a in arrays) or 1.0
    return mcolors.Normalize(-vmax, vmax)


def _cells(
    ax: plt.Axes,
    values: np.ndarray,
    *,
    facecolors=None,
    cmap: str | None = None,
    norm: mcolors.Normalize | None = None,
    fmt: str = "{:g}",
    fontsize: float = ANNOTATION_SIZE,
    textcolors=None,
    origin: tuple[float, float] = (0.0, 0.0),
    edgecolor: str = "0.6",
    ticks: bool = False,
) -> None:
    """Draw ``values`` (2-D) as a grid of square cells with the number written in each cell.

    Row 0 is at the top. ``facecolors`` (an array of colours or one colour) wins over ``cmap``/``norm``.
    ``origin`` shifts the grid (x = column, y = row) so several grids can share one axes.
    """
    values = np.asarray(values)
    n_rows, n_cols = values.shape
    if facecolors is None and cmap is not None:
        norm = norm or _symmetric_norm(values)
        facecolors = plt.get_cmap(cmap)(norm(values.astype(float)))
    if facecolors is None:
        facecolors = "white"
    x0, y0 = origin
    single = isinstance(facecolors, str) or (
        isinstance(facecolors, tuple) and np.ndim(facecolors) == 1
    )
    rects, faces = [], []
    for i in range(n_rows):
        for j in range(n_cols):
            face = facecolors if single else facecolors[i][j]
            rects.append(Rectangle((x0 + j - 0.5, y0 + i - 0.5), 1, 1))
            faces.append(mcolors.to_rgba(face))
            colour = textcolors[i][j] if textcolors is not None else _text_colour(face)
            ax.text(
                x0 + j,
                y0 + i,
                fmt.format(values[i, j]),
                ha="center",
                va="center",
                fontsize=fontsize,
                color=colour,
            )
    ax.add_collection(
        PatchCollection(rects, facecolors=faces, edgecolors=edgecolor, linewidths=0.8)
    )
    ax.set_aspect("equal")
    ax.grid(False)
    if ticks:
        ax.set_xlim(x0 - 0.5, x0 + n_cols - 0.5)
        ax.set_ylim(y0 + n_rows - 0.5, y0 - 0.5)
        ax.set_xticks(np.arange(n_cols) + x0, [str(j) for j in range(n_cols)])
        ax.set_yticks(np.arange(n_rows) + y0, [str(i) for i in range(n_rows)])
        ax.tick_params(length=0, labelsize=ANNOTATION_SIZE)
        for spine in ax.spines.values():
            spine.set_visible(False)


def _frame(
    ax: plt.Axes,
    row: float,
    col: float,
    height: float,
    width: float,
    colour=_HIGHLIGHT,
    lw: float = 3,
) -> None:
    """Outline the cells ``[row, row+height) x [col, col+width)`` of a :func:`_cells` grid."""
    ax.add_patch(
        Rectangle(
            (col - 0.5, row - 0.5),
            width,
            height,
            fill=False,
            edgecolor=colour,
            lw=lw,
            zorder=5,
        )
    )


def _fit(ax: plt.Axes, n_rows: float, n_cols: float, margin: float = 0.1) -> None:
    ax.set_xlim(-0.5 - margin, n_cols - 0.5 + margin)
    ax.set_ylim(n_rows - 0.5 + margin, -0.5 - margin)
    ax.set_axis_off()


# --------------------------------------------------------------------------------------------
# Fig. 2.1 - an MLP with two hidden dense layers


def build_mlp(
    units: Sequence[int] = (4, 6, 5, 3),
    *,
    seed: int = 0,
    epochs: int = 0,
    n_samples: int = 256,
    lr: float = 0.05,
) -> keras.Model:
    """A Keras MLP ``units[0] -> units[1] -> ... -> units[-1]`` (ReLU hidden, softmax output).

    Initialised with ``seed`` (Glorot uniform kernels, zero biases) and, if ``epochs > 0``, trained
    with Adam for ``epochs`` eager full-batch steps on a seeded synthetic problem: ``units[-1]`` Gaussian
    blobs in ``units[0]`` dimensions, one class per blob.

    Arguments:
        units: layer widths, input first; at least an input and an output width.
        seed: seeds Keras/NumPy/TF (weights and the synthetic data).
        epochs: full-batch training steps (0: the model stays at its seeded initialisation).
        n_samples: size of the synthetic training set.
        lr: Adam learning rate.
    """
    units = [int(u) for u in units]
    if len(units) < 2 or min(units) < 1:
        raise ValueError(
            f"units must list at least two positive widths (input first), got {units!r}"
        )
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((units[0],), name="x")]
    for k, width in enumerate(units[1:-1], start=1):
        layers.append(keras.layers.Dense(width, activation="relu", name=f"dense_{k}"))
    layers.append(keras.layers.Dense(units[-1], activation="softmax", name="output"))
    model = keras.Sequential(layers, name="mlp")
    if epochs > 0:
        x, y = gaussian_blobs(units[0], units[-1], n_samples, seed=seed)
        full_batch_adam(model, x, y, steps=int(epochs), lr=lr)
    return model


def gaussian_blobs(
    dim: int, classes: int, n: int, *, seed: int = 0, spread: float = BLOB_SPREAD
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points of ``classes`` Gaussian blobs in ``dim`` dimensions: ``(x, y)``.

    Blob centres are drawn from N(0, spread²), the points around them from
    N(0, 1), labels uniformly; one seeded generator draws centres, labels and points.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, spread, size=(classes, dim))
    y = rng.integers(0, classes, size=n)
    x = (centres[y] + rng.normal(size=(n, dim))).astype(np.float32)
    return x, y


def full_batch_adam(
    model: keras.Model, x: np.ndarray, y: np.ndarray, *, steps: int, lr: float
) -> list[float]:
    """Eager full-batch Adam steps on the cross-entropy; the loss before each step.

    Not :func:`companion.engine.experiment.run`: the engine trains the thesis networks
    on the named datasets with mini-batches, while Fig. 2.1 draws a 4-6-5-3 toy network
    fitted to :func:`gaussian_blobs` in a few full-batch steps (eager: no graph tracing
    for tiny steps).
    """
    optimizer = keras.optimizers.Adam(lr)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    losses = []
    for _ in range(int(steps)):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        losses.append(float(loss))
    return losses


def _dense_layers(model: keras.Model) -> list:
    return [
        layer
        for layer in model.layers
        if hasattr(layer, "kernel") and len(layer.kernel.shape) == 2
    ]


def mlp_edges(model: keras.Model) -> pd.DataFrame:
    """One row per connection of the MLP: ``layer`` (0-based dense layer), ``source``, ``target``, ``weight``.

    ``weight`` is ``kernel[source, target]`` of that dense layer (Keras layout ``(in, out)``).
    """
    rows = []
    for k, layer in enumerate(_dense_layers(model)):
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        for i in range(kernel.shape[0]):
            for j in range(kernel.shape[1]):
                rows.append(
                    {
                        "layer": k,
                        "layer_name": layer.name,
                        "source": i,
                        "target": j,
                        "weight": float(kernel[i, j]),
                    }
                )
    return pd.DataFrame(rows)


def draw_mlp(
    model: keras.Model, *, figsize: tuple[float, float] = (6.6, 4.0)
) -> plt.Figure:
    """Nodes and edges of a dense MLP; edge colour and width from its kernels, node fill from its biases.

    One diverging colour map (white at 0) serves edges (weights) and nodes (biases); a colourbar
    shows the scale. Input nodes are grey (they carry no bias).
    """
    layers = _dense_layers(model)
    widths = [int(layers[0].kernel.shape[0])] + [
        int(layer.kernel.shape[1]) for layer in layers
    ]
    edges = mlp_edges(model)
    biases = [keras.ops.convert_to_numpy(layer.bias) for layer in layers]
    norm = _symmetric_norm(edges["weight"].to_numpy(), *biases)
    cmap = plt.get_cmap(DIVERGING)
    tallest = max(widths)

    def pos(layer: int, node: int) -> tuple[float, float]:
        n = widths[layer]
        return float(layer), (tallest - 1) / 2 - (node - (n - 1) / 2)

    fig, ax = plt.subplots(figsize=figsize)
    segments, colours, lws = [], [], []
    for row in edges.itertuples():
        segments.append([pos(row.layer, row.source), pos(row.layer + 1, row.target)])
        colours.append(cmap(norm(row.weight)))
        lws.append(0.4 + 3.6 * abs(row.weight) / norm.vmax)
    ax.add_collection(
        LineCollection(segments, colors=colours, linewidths=lws, zorder=1)
    )

    names = ["x"] + [f"a^{{({k})}}" for k in range(1, len(layers))] + ["o"]
    for layer, n in enumerate(widths):
        for node in range(n):
            x, y = pos(layer, node)
            face = "0.85" if layer == 0 else cmap(norm(biases[layer - 1][node]))
            ax.scatter(
                [x], [y], s=620, color=face, edgecolor="0.25", linewidth=1.0, zorder=2
            )
            ax.text(
                x,
                y,
                f"${names[layer]}_{{{node + 1}}}$",
                ha="center",
                va="center",
                fontsize=ANNOTATION_SIZE,
                zorder=3,
                color=_text_colour(face),
            )
    titles = [f"input\n{widths[0]} features"]
    titles += [
        f"hidden dense {k}\n{widths[k]} units, ReLU" for k in range(1, len(layers))
    ]
    titles += [f"output dense\n{widths[-1]} units, softmax"]
    for layer, title in enumerate(titles):
        ax.text(layer, -0.65, title, ha="center", va="top", fontsize=ANNOTATION_SIZE)
    ax.set_xlim(-0.45, len(widths) - 0.55)
    ax.set_ylim(-1.6, tallest - 0.4)
    ax.set_axis_off()
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    cbar = fig.colorbar(sm, ax=ax, fraction=0.035, pad=0.02, shrink=0.8)
    cbar.set_label("weight (edges) / bias (nodes)", fontsize=ANNOTATION_SIZE + 1)
    cbar.ax.tick_params(labelsize=ANNOTATION_SIZE)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Figs. 2.2 and 2.3 - one output value of a convolution


@dataclass
class ConvExample:
    """One output value of a stride-1 convolution over a zero-padded input.

    Attributes:
        x: input ``(H, W, C)``; ``x_padded`` the zero-padded input ``(H+2p, W+2p, C)``.
        kernel: ``(kh, kw, C)`` (one filter; Keras layout without the ``cout`` axis).
        padding: zeros added on each side.
        output: the whole output map ``(H+2p-kh+1, W+2p-kw+1)`` (NumPy, cross-correlation as in Keras).
        position: ``(i, j)`` of the output value worked out in the figure (0-based).
        window: the input window under the kernel at ``position`` ``(kh, kw, C)``.
        channel_sums: ``sum(window[..., c] * kernel[..., c])`` per channel.
        value: ``output[i, j]`` (NumPy); ``tf_value``: the same entry of ``tf.nn.conv2d``.
    """

    x: np.ndarray
    x_padded: np.ndarray
    kernel: np.ndarray
    padding: int
    output: np.ndarray
    tf_output: np.ndarray
    position: tuple[int, int]
    window: np.ndarray
    channel_sums: np.ndarray
    value: float
    tf_value: float

    def products_text(self, channel: int = 0) -> str:
        """The sum of products of one channel written out, e.g. ``0·(-1) + 3·0 + ... = 7``."""
        terms = [
            f"{_num(w)}·{_num(k, paren=True)}"
            for w, k in zip(
                self.window[..., channel].ravel(),
                self.kernel[..., channel].ravel(),
                strict=True,
            )
        ]
        return " + ".join(terms) + f" = {_num(self.channel_sums[channel])}"


def _num(v: float, paren: bool = False) -> str:
    text = f"{float(v):g}".replace("-", "\u2212")
    return f"({text})" if paren and v < 0 else text


def integer_input(
    size: int, channels: int = 1, *, seed: int = 0, high: int = 9
) -> np.ndarray:
    """A seeded ``(size, size, channels)`` float32 input of integers ``0..high`` (exact sums in float32)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, high + 1, size=(size, size, channels)).astype(np.float32)


def conv_example(
    x, kernel, position: Sequence[int], *, padding: int = 1
) -> ConvExample:
    """Compute one output value of ``x * kernel`` (stride 1, ``padding`` zeros) and check it with TensorFlow.

    The whole output map is computed with NumPy as the cross-correlation Keras uses
    (:math:`y_{i,j} = \\sum_{p,q,m} x^{pad}_{i+p,j+q,m} w_{p,q,m}`) and compared with
    ``tf.nn.conv2d`` on the padded input (``padding="VALID"``) is returned beside it
    (``tf_output``, ``tf_value``); ``tests/test_figures.py`` checks that they agree
    exactly for integer inputs.

    Arguments:
        x: input ``(H, W)`` or ``(H, W, C)``.
        kernel: ``(kh, kw)`` or ``(kh, kw, C)``.
        position: ``(i, j)`` of the output value to work out, in output coordinates.
        padding: zeros added on every side (1 keeps the size for a 3x3 kernel).
    """
    x = np.asarray(x, dtype=np.float32)
    kernel = np.asarray(kernel, dtype=np.float32)
    if x.ndim == 2:
        x = x[..., None]
    if kernel.ndim == 2:
        kernel = kernel[..., None]
    if x.shape[-1] != kernel.shape[-1]:
        raise ValueError(
            f"input has {x.shape[-1]} channels but the kernel {kernel.shape[-1]}; they must match"
        )
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    kh, kw, _ = kernel.shape
    xp = np.pad(x, ((padding, padding), (padding, padding), (0, 0)))
    out_h, out_w = xp.shape[0] - kh + 1, xp.shape[1] - kw + 1
    i, j = (int(v) for v in position)
    if not (0 <= i < out_h and 0 <= j < out_w):
        raise ValueError(f"position {(i, j)} is outside the {out_h}x{out_w} output map")
    output = np.zeros((out_h, out_w), dtype=np.float64)
    for a in range(out_h):
        for b in range(out_w):
            output[a, b] = np.sum(
                xp[a : a + kh, b : b + kw, :].astype(np.float64) * kernel
            )
    # the same map from TensorFlow (the tests check that the two agree)
    tf_out = tf.nn.conv2d(
        xp[None], kernel[..., None], strides=1, padding="VALID"
    ).numpy()[0, :, :, 0]
    window = xp[i : i + kh, j : j + kw, :]
    channel_sums = np.sum(window.astype(np.float64) * kernel, axis=(0, 1))
    value = float(np.sum(channel_sums))
    return ConvExample(
        x=x,
        x_padded=xp,
        kernel=kernel,
        padding=padding,
        output=output,
        tf_output=tf_out,
        position=(i, j),
        window=window,
        channel_sums=channel_sums,
        value=value,
        tf_value=float(tf_out[i, j]),
    )


def _padded_faces(ex: ConvExample, channel: int, tint: str = "white") -> list[list]:
    hp, wp = ex.x_padded.shape[:2]
    p = ex.padding
    return [
        [
            "0.88" if (r < p or r >= hp - p or c < p or c >= wp - p) else tint
            for c in range(wp)
        ]
        for r in range(hp)
    ]


def _draw_output(ax: plt.Axes, ex: ConvExample, title: str) -> None:
    i, j = ex.position
    faces = [["white"] * ex.output.shape[1] for _ in range(ex.output.shape[0])]
    texts = [["0.55"] * ex.output.shape[1] for _ in range(ex.output.shape[0])]
    faces[i][j] = mcolors.to_rgba(_HIGHLIGHT, 0.35)
    texts[i][j] = "black"
    _cells(ax, ex.output, facecolors=faces, textcolors=texts)
    _frame(ax, i, j, 1, 1)
    _fit(ax, *ex.output.shape)
    ax.set_title(title, fontsize=ANNOTATION_SIZE + 1)


def draw_conv2d(
    ex: ConvExample, *, figsize: tuple[float, float] = (7.0, 3.2)
) -> plt.Figure:
    """Fig. 2.2: padded input with the highlighted window, the kernel, the output map with the value.

    Padding cells are grey; the window, the kernel and the computed output cell share one highlight
    colour; the sum of products is written under the panels.
    """
    if ex.kernel.shape[-1] != 1:
        raise ValueError(
            "draw_conv2d draws a single-channel example; use draw_conv3d for several channels"
        )
    hp, wp = ex.x_padded.shape[:2]
    kh, kw = ex.kernel.shape[:2]
    out_h, out_w = ex.output.shape
    fig, axes = plt.subplots(
        1, 3, figsize=figsize, gridspec_kw={"width_ratios": [wp, kw + 1.5, out_w]}
    )
    i, j = ex.position
    _cells(axes[0], ex.x_padded[..., 0], facecolors=_padded_faces(ex, 0))
    _frame(axes[0], i, j, kh, kw)
    _fit(axes[0], hp, wp)
    axes[0].set_title(
        f"input {ex.x.shape[0]}x{ex.x.shape[1]}, zero-padded by {ex.padding}",
        fontsize=ANNOTATION_SIZE + 1,
    )
    _cells(axes[1], ex.kernel[..., 0], facecolors=mcolors.to_rgba(_HIGHLIGHT, 0.35))
    _frame(axes[1], 0, 0, kh, kw)
    _fit(axes[1], kh, kw, margin=0.75)
    axes[1].set_title(f"kernel {kh}x{kw}", fontsize=ANNOTATION_SIZE + 1)
    axes[1].text(-1.3, (kh - 1) / 2, "\u2217", ha="center", va="center", fontsize=18)
    axes[1].text(kw + 0.3, (kh - 1) / 2, "=", ha="center", va="center", fontsize=18)
    _draw_output(axes[2], ex, f"output {out_h}x{out_w}, value at ({i}, {j})")
    fig.text(
        0.5,
        0.04,
        f"window \u2299 kernel, summed:  {ex.products_text(0)}",
        ha="center",
        va="bottom",
        fontsize=ANNOTATION_SIZE,
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


#: face tints of the R, G, B planes (light, so the black numbers stay legible)
_CHANNEL_TINTS = ("#f6d5d0", "#d3ecd5", "#d3e0f3")
_CHANNEL_NAMES = ("R", "G", "B")


def draw_conv3d(
    ex: ConvExample, *, figsize: tuple[float, float] = (7.0, 5.8)
) -> plt.Figure:
    """Fig. 2.3: a 3x3xC kernel over a C-channel input; one row per channel plane, one output value.

    Each row shows a padded input plane with the window and the matching kernel plane, with that
    channel's sum of products; the output panel adds the channel sums into one value.
    """
    channels = ex.kernel.shape[-1]
    hp, wp = ex.x_padded.shape[:2]
    kh, kw = ex.kernel.shape[:2]
    out_h, out_w = ex.output.shape
    fig = plt.figure(figsize=figsize)
    grid = fig.add_gridspec(
        channels,
        3,
        width_ratios=[wp * 1.25, kw + 4.0, out_w + 1],
        hspace=0.25,
        wspace=0.05,
    )
    i, j = ex.position
    for c in range(channels):
        tint = _CHANNEL_TINTS[c % len(_CHANNEL_TINTS)]
        name = _CHANNEL_NAMES[c] if channels == 3 else f"channel {c}"
        ax_in = fig.add_subplot(grid[c, 0])
        _cells(ax_in, ex.x_padded[..., c], facecolors=_padded_faces(ex, c, tint))
        _frame(ax_in, i, j, kh, kw)
        _fit(ax_in, hp, wp)
        ax_in.text(
            -1.0,
            (hp - 1) / 2,
            f"input {name}",
            rotation=90,
            ha="center",
            va="center",
            fontsize=ANNOTATION_SIZE + 1,
        )
        ax_k = fig.add_subplot(grid[c, 1])
        _cells(ax_k, ex.kernel[..., c], facecolors=tint)
        _frame(ax_k, 0, 0, kh, kw)
        _fit(ax_k, kh, kw + 4.0, margin=0.3)
        ax_k.set_xlim(-1.6, kw + 2.9)
        ax_k.text(-1.1, (kh - 1) / 2, "\u2217", ha="center", va="center", fontsize=16)
        ax_k.text(
            kw - 0.2,
            (kh - 1) / 2,
            f"\u2192 {_num(ex.channel_sums[c])}",
            ha="left",
            va="center",
            fontsize=ANNOTATION_SIZE + 2,
        )
        ax_k.set_title(f"kernel plane {name}", fontsize=ANNOTATION_SIZE + 1)
        if c == 0:
            ax_in.set_title(
                f"padded input {hp}x{wp}x{channels}", fontsize=ANNOTATION_SIZE + 1
            )
    ax_out = fig.add_subplot(grid[:, 2])
    sums = " + ".join(_num(s, paren=True) for s in ex.channel_sums)
    _draw_output(
        ax_out, ex, f"output {out_h}x{out_w}x1\n({i}, {j}) = {sums}\n= {_num(ex.value)}"
    )
    return fig


# --------------------------------------------------------------------------------------------
# Fig. 2.4 - quantizing the Fig. 2.1 weight matrix


@dataclass
class WeightQuantization:
    """A weight matrix floored onto a scale grid by the nested quantizer's forward pass.

    Attributes:
        weights: the real float32 matrix ``W``.
        bits: bit width used to pick the scale (:func:`lqs.quantizers.scale_for_bits`).
        granularity: scale granularity (``"scalar"`` in the thesis figure).
        scale: the scales, shape :func:`lqs.quantizers.scale_shape` ``(granularity, W.shape)``.
        integers: ``P_q = floor(W / s)`` from :func:`lqs.quantizers.integer_values` (int64).
        reconstructed: ``P_rec`` returned by :func:`lqs.quantizers.nested_quantize` (float32).
        error: ``W - P_rec`` (always in ``[0, s)`` for the floor).
    """

    weights: np.ndarray
    bits: int
    granularity: str
    scale: np.ndarray
    integers: np.ndarray
    reconstructed: np.ndarray
    error: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per matrix entry (row, column, weight, integer, reconstructed, error)."""
        rows, cols = np.indices(self.weights.shape)
        return pd.DataFrame(
            {
                "row": rows.ravel(),
                "column": cols.ravel(),
                "weight": self.weights.ravel(),
                "integer": self.integers.ravel(),
                "reconstructed": self.reconstructed.ravel(),
                "error": self.error.ravel(),
                "scale": np.broadcast_to(self.scale, self.weights.shape).ravel(),
                "bits": self.bits,
                "granularity": self.granularity,
            }
        )


def quantize_weights(
    weights, bits: int, granularity: str = "scalar"
) -> WeightQuantization:
    """Quantize ``weights`` with a scale for ``bits`` bits and the nested quantizer's forward pass.

    ``s = scale_for_bits(W, granularity, bits)``, ``P_q = integer_values(W, s)``,
    ``P_rec = nested_quantize(W, s, 0)`` (equal to ``P_q * s`` in float32, checked by
    the tests).
    """
    w = np.asarray(weights, dtype=np.float32)
    scale = scale_for_bits(w, granularity, bits)
    integers = integer_values(w, scale)
    reconstructed = nested_quantize(tf.constant(w), tf.constant(scale), 0.0).numpy()
    return WeightQuantization(
        weights=w,
        bits=int(bits),
        granularity=granularity,
        scale=scale,
        integers=integers,
        reconstructed=reconstructed,
        error=(w - reconstructed).astype(np.float32),
    )


def _matrix_axes(
    ax: plt.Axes,
    title: str,
    xlabel: str = "column (output unit)",
    ylabel: str = "row (input)",
) -> None:
    ax.set_title(title, fontsize=ANNOTATION_SIZE + 1)
    ax.set_xlabel(xlabel, fontsize=ANNOTATION_SIZE)
    ax.set_ylabel(ylabel, fontsize=ANNOTATION_SIZE)


def draw_weight_quantization(
    q: WeightQuantization, *, figsize: tuple[float, float] | None = None
) -> plt.Figure:
    """Fig. 2.4: four heatmaps with numbers: real ``W`` -> integers ``P_q`` -> ``P_rec`` and the error.

    ``W`` and ``P_rec`` share one diverging colour scale, the integers have their own, the error
    (``W - P_rec``, in ``[0, s)``) a sequential one.
    """
    n_rows, n_cols = q.weights.shape
    figsize = figsize or (
        min(MAX_FIGURE_WIDTH_IN, 1.4 + 2 * 0.5 * n_cols),
        1.8 + 2 * 0.45 * n_rows,
    )
    fig, axes = plt.subplots(2, 2, figsize=figsize)
    axes = axes.ravel()
    norm = _symmetric_norm(q.weights, q.reconstructed)
    s_text = (
        f"{float(q.scale.ravel()[0]):.4g}"
        if q.scale.size == 1
        else f"{q.scale.size} scales"
    )
    _cells(axes[0], q.weights, cmap=DIVERGING, norm=norm, fmt="{:.2f}", ticks=True)
    _matrix_axes(axes[0], "real W (float32)")
    _cells(
        axes[1],
        q.integers,
        cmap=DIVERGING,
        norm=_symmetric_norm(q.integers),
        fmt="{:d}",
        ticks=True,
    )
    _matrix_axes(
        axes[1], f"{q.bits}-bit integers \u230aW/s\u230b, s = {s_text}", ylabel=""
    )
    _cells(
        axes[2], q.reconstructed, cmap=DIVERGING, norm=norm, fmt="{:.2f}", ticks=True
    )
    _matrix_axes(axes[2], "reconstructed \u230aW/s\u230b\u00b7s")
    err_norm = mcolors.Normalize(0.0, float(np.max(q.scale)))
    _cells(axes[3], q.error, cmap="Greys", norm=err_norm, fmt="{:.2f}", ticks=True)
    _matrix_axes(axes[3], "error W \u2212 reconstructed", ylabel="")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Fig. 2.5 - min-max quantization of an input, then the matmul with the quantized weights


@dataclass
class MinMaxMatmul:
    """Min-max ``bits``-bit quantization of inputs ``x`` and the integer product with quantized weights.

    ``x ≈ s_x (q_x - z)`` with ``q_x`` in ``[0, 2^bits - 1]``; ``W ≈ s_W W_q``. The integer accumulator
    ``acc = (q_x - z) @ W_q`` (int64) is rescaled once: ``y_deq = s_x s_W acc``, compared with the
    float ``y = x @ W``.
    """

    x: np.ndarray
    bits: int
    x_min: float
    x_max: float
    x_scale: float
    zero_point: int
    x_q: np.ndarray
    x_deq: np.ndarray
    tf_x_deq: np.ndarray
    weights: WeightQuantization
    accumulator: np.ndarray
    y_deq: np.ndarray
    y_float: np.ndarray
    error: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per output entry (sample, unit, accumulator, dequantized, float, error)."""
        rows, cols = np.indices(self.y_float.shape)
        return pd.DataFrame(
            {
                "sample": rows.ravel(),
                "unit": cols.ravel(),
                "accumulator": self.accumulator.ravel(),
                "y_dequantized": self.y_deq.ravel(),
                "y_float": self.y_float.ravel(),
                "error": self.error.ravel(),
                "input_bits": self.bits,
                "input_scale": self.x_scale,
                "zero_point": self.zero_point,
                "weight_bits": self.weights.bits,
                "weight_scale": float(self.weights.scale.ravel()[0]),
            }
        )


def affine_minmax_quantize(
    x, bits: int = 8
) -> tuple[np.ndarray, float, int, float, float]:
    """Asymmetric min-max quantization of ``x`` to unsigned ``bits``-bit integers.

    :math:`s = (\\max x - \\min x)/(2^b - 1)` (the range is first widened to contain 0),
    zero point :math:`z = \\operatorname{round}(-\\min x / s)`,
    :math:`q = \\lfloor x/s + z + 1/2 \\rfloor` clipped to :math:`[0, 2^b - 1]`, so
    :math:`x \\approx s (q - z)`. This is the rule of
    ``tf.quantization.fake_quant_with_min_max_vars`` (``narrow_range=False``); the tests
    check that the dequantized values equal it. Not
    :func:`lqs.baselines.minmax_quantize`, which is symmetric (signed integers, no zero
    point).

    Returns:
        ``(q, s, z, x_min, x_max)`` with ``q`` int64.
    """
    if int(bits) != bits or not 2 <= bits <= 16:
        raise ValueError(
            f"bits must be an integer in 2..16 (fake_quant's range), got {bits!r}"
        )
    x = np.asarray(x, dtype=np.float32)
    x_min = float(min(np.min(x), 0.0))
    x_max = float(max(np.max(x), 0.0))
    q_max = 2 ** int(bits) - 1
    scale = np.float32((x_max - x_min) / q_max) if x_max > x_min else np.float32(1.0)
    zero_point = int(np.clip(np.round(np.float32(-x_min) / scale), 0, q_max))
    nudged_min = np.float32(-zero_point) * scale
    q = np.floor(
        (np.clip(x, nudged_min, nudged_min + q_max * scale) - nudged_min) / scale
        + np.float32(0.5)
    )
    q = np.clip(q, 0, q_max).astype(np.int64)
    return q, float(scale), zero_point, x_min, x_max


def minmax_matmul(x, weights: WeightQuantization, bits: int = 8) -> MinMaxMatmul:
    """Quantize inputs ``x`` (``(n, in)``) min-max to ``bits`` bits and multiply with the quantized weights.

    The rescaled integer product equals ``x_deq @ P_rec`` up to rounding (checked by the
    tests).
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.shape[1] != weights.weights.shape[0]:
        raise ValueError(
            f"x has {x.shape[1]} features but the weight matrix {weights.weights.shape[0]} rows"
        )
    if weights.scale.size != 1:
        raise ValueError(
            "minmax_matmul rescales with one weight scale: quantize the weights at 'scalar' granularity"
        )
    q, s_x, z, x_min, x_max = affine_minmax_quantize(x, bits)
    tf_deq = tf.quantization.fake_quant_with_min_max_vars(
        tf.constant(x),
        min=tf.constant(x_min),
        max=tf.constant(x_max),
        num_bits=int(bits),
    ).numpy()
    s_w = float(weights.scale.ravel()[0])
    acc = (q - z) @ weights.integers
    y_deq = acc.astype(np.float64) * s_x * s_w
    x_deq = (s_x * (q - z)).astype(np.float64)
    y_float = x.astype(np.float64) @ weights.weights.astype(np.float64)
    return MinMaxMatmul(
        x=x,
        bits=int(bits),
        x_min=x_min,
        x_max=x_max,
        x_scale=s_x,
        zero_point=z,
        x_q=q,
        x_deq=x_deq.astype(np.float32),
        tf_x_deq=tf_deq,
        weights=weights,
        accumulator=acc,
        y_deq=y_deq,
        y_float=y_float,
        error=y_deq - y_float,
    )


def draw_minmax_matmul(
    mm: MinMaxMatmul, *, figsize: tuple[float, float] | None = None
) -> plt.Figure:
    """Fig. 2.5: inputs -> ``bits``-bit integers; integer matmul with ``W_q``; dequantized vs float result.

    Left column: real inputs ``x``, their min-max integers ``q_x`` and the weight integers ``W_q`` of
    Fig. 2.4. Right column: the integer accumulator ``(q_x - z) W_q``, the rescaled (dequantized)
    output ``s_x s_W acc``, the float output ``x W`` and the error.
    """
    wq = mm.weights
    n, n_in = mm.x.shape
    n_out = wq.weights.shape[1]
    height = 1.0 + 0.5 * (2 * n + n_in) + 1.6
    figsize = figsize or (7.0, max(height, 1.0 + 0.5 * 4 * n + 2.2))
    fig = plt.figure(figsize=figsize, layout="constrained")
    left, right = fig.subfigures(
        1, 2, width_ratios=[max(n_in, n_out) + 1, n_out + 1], wspace=0.04
    )
    la = left.subplots(3, 1, height_ratios=[n, n, n_in])
    ra = right.subplots(4, 1, height_ratios=[n] * 4)
    _cells(
        la[0],
        mm.x,
        cmap=DIVERGING,
        norm=_symmetric_norm(mm.x),
        fmt="{:.2f}",
        ticks=True,
    )
    _matrix_axes(la[0], "input x (float32)", "feature", "sample")
    q_max = 2**mm.bits - 1
    _cells(
        la[1],
        mm.x_q,
        cmap="Greys",
        norm=mcolors.Normalize(-0.4 * q_max, 1.6 * q_max),
        fmt="{:d}",
        ticks=True,
    )
    _matrix_axes(
        la[1],
        f"{mm.bits}-bit integers q\u2093: s\u2093 = {mm.x_scale:.3g}, z = {mm.zero_point}",
        "feature",
        "sample",
    )
    _cells(
        la[2],
        wq.integers,
        cmap=DIVERGING,
        norm=_symmetric_norm(wq.integers),
        fmt="{:d}",
        ticks=True,
    )
    _matrix_axes(
        la[2],
        f"{wq.bits}-bit weights W_q (Fig. 2.4), s_W = {float(wq.scale.ravel()[0]):.3g}",
        "output unit",
        "input feature",
    )
    _cells(
        ra[0],
        mm.accumulator,
        cmap=DIVERGING,
        norm=_symmetric_norm(mm.accumulator),
        fmt="{:d}",
        ticks=True,
    )
    _matrix_axes(ra[0], "integer matmul (q\u2093 \u2212 z)\u00b7W_q", "", "sample")
    ynorm = _symmetric_norm(mm.y_deq, mm.y_float)
    _cells(ra[1], mm.y_deq, cmap=DIVERGING, norm=ynorm, fmt="{:.2f}", ticks=True)
    _matrix_axes(ra[1], "rescaled: s\u2093\u00b7s_W\u00b7integers", "", "sample")
    _cells(ra[2], mm.y_float, cmap=DIVERGING, norm=ynorm, fmt="{:.2f}", ticks=True)
    _matrix_axes(ra[2], "float32 reference x\u00b7W", "", "sample")
    _cells(
        ra[3],
        mm.error,
        cmap=DIVERGING,
        norm=_symmetric_norm(mm.error),
        fmt="{:.2f}",
        ticks=True,
    )
    _matrix_axes(ra[3], "error: rescaled \u2212 float", "output unit", "sample")
    return fig


# --------------------------------------------------------------------------------------------
# Figs. 2.6 and 3.2 - scale granularities


def group_ids(param_shape: Sequence[int], granularity: str) -> np.ndarray:
    """Scale-group index (0-based, int64) of every element of a parameter of ``param_shape``.

    Elements that share one scale of :func:`lqs.quantizers.scale_shape` ``(granularity, param_shape)``
    share an id; ids run over the scale array in C order.
    """
    shape = tuple(int(d) for d in param_shape)
    sshape = scale_shape(granularity, shape)
    ids = np.arange(int(np.prod(sshape)), dtype=np.int64).reshape(sshape)
    return np.broadcast_to(ids, shape).copy()


def quantizer_scale_shape(
    granularity: str, param_shape: Sequence[int]
) -> tuple[int, ...]:
    """Shape of the ``scale`` variable a :class:`lqs.quantizers.NestedQuantizer` builds for ``param_shape``.

    The figures are drawn from :func:`lqs.quantizers.scale_shape`; the tests check that
    the two agree for every granularity.
    """
    quantizer = NestedQuantizer(granularity)
    quantizer.build(tuple(int(d) for d in param_shape))
    return tuple(int(d) for d in quantizer.scale.shape)


def granularity_table(
    param_shape: Sequence[int], granularities: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per granularity that fits ``param_shape``: axis, scale shape, number of scales, group size."""
    shape = tuple(int(d) for d in param_shape)
    names = granularities or [
        g
        for g in GRANULARITIES
        if GRANULARITY_AXES[g] is None or GRANULARITY_AXES[g] < len(shape)
    ]
    rows = []
    for g in names:
        sshape = quantizer_scale_shape(g, shape)
        n = int(np.prod(sshape))
        rows.append(
            {
                "granularity": g,
                "axis": GRANULARITY_AXES[g],
                "param_shape": str(shape),
                "scale_shape": str(sshape),
                "n_scales": n,
                "group_size": int(np.prod(shape)) // n,
            }
        )
    return pd.DataFrame(rows)


def _group_colours(n: int) -> list:
    base = list(PALETTE) if n <= len(PALETTE) else list(plt.get_cmap("tab20").colors)
    return [mcolors.to_rgba(base[k % len(base)], 0.55) for k in range(n)]


_CONV_AXIS_WORDS = {
    "scalar": "one scale for the whole kernel",
    "row": "one per kernel row (axis 0, kh)",
    "column": "one per kernel column (axis 1, kw)",
    "channel": "one per input channel (axis 2, cin)",
    "filter": "one per output channel (axis 3, cout)",
}


def draw_conv_granularities(
    kernel_shape: Sequence[int] = (3, 3, 3, 4),
    *,
    figsize: tuple[float, float] | None = None,
) -> plt.Figure:
    """Fig. 2.6: the five scale granularities of a Conv2D kernel ``(kh, kw, cin, cout)``.

    Each panel draws the kernel as a ``cin x cout`` arrangement of ``kh x kw`` tiles (tile
    ``(c, f)`` is ``K[:, :, c, f]``); every element is coloured and numbered by its scale group
    (1-based), as given by the scale shape a :class:`~lqs.quantizers.NestedQuantizer` builds.
    The sixth panel lists the scale shapes.
    """
    shape = tuple(int(d) for d in kernel_shape)
    if len(shape) != 4:
        raise ValueError(f"kernel_shape must be (kh, kw, cin, cout), got {shape!r}")
    kh, kw, cin, cout = shape
    gap = 0.6
    figsize = figsize or (6.8, 8.4)
    fig, axes = plt.subplots(3, 2, figsize=figsize)
    table = granularity_table(shape)
    for ax, g in zip(axes.ravel(), GRANULARITIES, strict=False):
        ids = group_ids(shape, g)
        n_groups = int(ids.max()) + 1
        colours = _group_colours(n_groups)
        for c in range(cin):
            for f in range(cout):
                y0 = c * (kh + gap)
                x0 = f * (kw + gap)
                tile = ids[:, :, c, f]
                faces = [[colours[tile[a, b]] for b in range(kw)] for a in range(kh)]
                _cells(
                    ax,
                    tile + 1,
                    facecolors=faces,
                    textcolors=[["black"] * kw] * kh,
                    origin=(x0, y0),
                    edgecolor="white",
                )
        width = cout * kw + (cout - 1) * gap
        height = cin * kh + (cin - 1) * gap
        ax.set_xlim(-0.7, width - 0.3)
        ax.set_ylim(height - 0.3, -0.7)
        ax.set_xticks(
            [f * (kw + gap) + (kw - 1) / 2 for f in range(cout)],
            [f"f{f + 1}" for f in range(cout)],
        )
        ax.set_yticks(
            [c * (kh + gap) + (kh - 1) / 2 for c in range(cin)],
            [f"c{c + 1}" for c in range(cin)],
        )
        ax.tick_params(length=0, labelsize=ANNOTATION_SIZE)
        for spine in ax.spines.values():
            spine.set_visible(False)
        sshape = quantizer_scale_shape(g, shape)
        ax.set_title(
            f"{g}: s {sshape}\n{n_groups} scale{'s' if n_groups > 1 else ''}",
            fontsize=ANNOTATION_SIZE + 1,
        )
        ax.set_xlabel("output channel (filter)", fontsize=ANNOTATION_SIZE)
        ax.set_ylabel("input channel", fontsize=ANNOTATION_SIZE)
    key = axes.ravel()[-1]
    key.set_axis_off()
    lines = [
        f"kernel (kh, kw, cin, cout) = {shape}",
        f"tile (c, f) = the {kh}x{kw} slice K[:, :, c, f]",
        "number = index of the element's scale",
        "",
    ]
    for row in table.itertuples():
        lines.append(
            f"{row.granularity:>7}: {row.n_scales:>2} scale(s) of {row.group_size:>2} weights"
        )
        lines.append(f"         {_CONV_AXIS_WORDS[row.granularity]}")
    key.text(
        0.0,
        1.0,
        "\n".join(lines),
        ha="left",
        va="top",
        fontsize=ANNOTATION_SIZE,
        family="monospace",
        transform=key.transAxes,
    )
    fig.tight_layout(h_pad=1.5)
    return fig


def draw_dense_granularities(
    in_features: int = 6,
    units: int = 4,
    *,
    figsize: tuple[float, float] = (MAX_FIGURE_WIDTH_IN, 3.4),
) -> plt.Figure:
    """Fig. 3.2: scalar, row and column scales of a dense kernel ``(in, out)`` from real QDense layers.

    For each granularity a :class:`~lqs.layers.QDense` is built; the panel draws the kernel coloured and numbered by scale group and the scale vector
    ``s`` beside it (right of the rows, above the columns, or one cell).
    """
    fig, axes = plt.subplots(1, 3, figsize=figsize)
    for ax, g in zip(axes, ("scalar", "row", "column"), strict=True):
        q = QDense(units, kernel_granularity=g)
        q.build((None, in_features))
        kshape = tuple(int(d) for d in q.kernel.shape)
        sshape = tuple(int(d) for d in q.kernel_quantizer.scale.shape)
        ids = group_ids(kshape, g)
        n = int(ids.max()) + 1
        colours = _group_colours(n)
        faces = [
            [colours[ids[a, b]] for b in range(kshape[1])] for a in range(kshape[0])
        ]
        _cells(
            ax,
            np.full(kshape, "", dtype=object),
            facecolors=faces,
            fmt="{}",
            edgecolor="white",
        )
        for a in range(kshape[0]):
            for b in range(kshape[1]):
                ax.text(
                    b,
                    a,
                    f"$w_{{{a + 1}{b + 1}}}$",
                    ha="center",
                    va="center",
                    fontsize=ANNOTATION_SIZE,
                )
        # the scale vector next to the matrix
        if g == "scalar":
            spots = [(kshape[1] + 0.6, (kshape[0] - 1) / 2)]
        elif g == "row":
            spots = [(kshape[1] + 0.6, a) for a in range(kshape[0])]
        else:
            spots = [(b, -1.6) for b in range(kshape[1])]
        for k, (x, y) in enumerate(spots):
            ax.add_patch(
                Rectangle(
                    (x - 0.5, y - 0.5),
                    1,
                    1,
                    facecolor=colours[k],
                    edgecolor="0.3",
                    lw=1.0,
                )
            )
            ax.text(
                x,
                y,
                f"$s_{{{k + 1}}}$",
                ha="center",
                va="center",
                fontsize=ANNOTATION_SIZE,
            )
        ax.set_xlim(-0.7, kshape[1] + 1.3)
        ax.set_ylim(kshape[0] - 0.3, -2.3)
        ax.set_axis_off()
        ax.set_title(
            f"{g}: kernel {kshape}\ns {sshape}, {n} scale{'s' if n > 1 else ''}",
            fontsize=ANNOTATION_SIZE + 1,
        )
    fig.text(
        0.5,
        0.02,
        "rows = input features (axis 0), columns = output units (axis 1), Keras layout (in, out)",
        ha="center",
        fontsize=ANNOTATION_SIZE,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


# --------------------------------------------------------------------------------------------
# Fig. 3.1 - standard vs nested-quantized convolutional layer


def describe_nested_conv(
    filters: int = 4,
    kernel_size: int = 3,
    input_shape: Sequence[int] = (8, 8, 3),
    *,
    kernel_granularity: str = "filter",
    bias_granularity: str = "scalar",
    threshold: float = 1e-9,
    seed: int = 0,
) -> dict[str, Any]:
    """Build a plain ``keras.layers.Conv2D`` and an :class:`~lqs.layers.QConv2D` and read their shapes.

    Both are called on a seeded input batch of ``input_shape``; returns a dict with the
    shapes of input, kernel, bias, output, the quantizers' scale shapes and
    granularities, the threshold and the (float32) number of quantized-layer weights
    (the tests check that the QConv2D kernel and output shapes equal the plain layer's).
    """
    keras.utils.set_random_seed(seed)
    x = np.random.default_rng(seed).normal(size=(1, *input_shape)).astype(np.float32)
    plain = keras.layers.Conv2D(filters, kernel_size, padding="same", activation="relu")
    y_plain = plain(x)
    qlayer = QConv2D(
        filters,
        kernel_size,
        padding="same",
        activation="relu",
        kernel_granularity=kernel_granularity,
        bias_granularity=bias_granularity,
        threshold=threshold,
    )
    y_q = qlayer(x)
    kq, bq = qlayer.kernel_quantizer, qlayer.bias_quantizer
    return {
        "input_shape": (None, *[int(d) for d in input_shape]),
        "output_shape": (None, *[int(d) for d in y_q.shape[1:]]),
        "kernel_shape": tuple(int(d) for d in qlayer.kernel.shape),
        "bias_shape": tuple(int(d) for d in qlayer.bias.shape),
        "kernel_scale_shape": tuple(int(d) for d in kq.scale.shape),
        "bias_scale_shape": tuple(int(d) for d in bq.scale.shape)
        if bq is not None
        else None,
        "kernel_granularity": kq.granularity,
        "bias_granularity": bq.granularity if bq is not None else None,
        "threshold": kq.threshold,
        "activation": "relu",
        "plain_output_shape": (None, *[int(d) for d in y_plain.shape[1:]]),
        "plain_weights": [tuple(int(d) for d in w.shape) for w in plain.weights],
        "qconv_weights": {
            w.path: tuple(int(d) for d in w.shape) for w in qlayer.weights
        },
    }


def _box(
    ax,
    x,
    y,
    w,
    h,
    text,
    *,
    face="white",
    edge="0.25",
    fontsize=ANNOTATION_SIZE,
    bold=False,
    lw=1.2,
):
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.15",
            facecolor=face,
            edgecolor=edge,
            lw=lw,
            zorder=2,
        )
    )
    ax.text(
        x,
        y,
        text,
        ha="center",
        va="center",
        fontsize=fontsize,
        zorder=3,
        fontweight="bold" if bold else "normal",
        linespacing=1.25,
    )


def _arrow(
    ax,
    start,
    end,
    *,
    colour=_FORWARD,
    dashed=False,
    text=None,
    text_offset=(0.0, 0.0),
    ha="left",
    rad=0.0,
):
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=12,
            color=colour,
            lw=1.4,
            linestyle=(0, (4, 2.5)) if dashed else "-",
            zorder=1,
            connectionstyle=f"arc3,rad={rad}",
            shrinkA=0,
            shrinkB=0,
        )
    )
    if text:
        mx, my = (
            (start[0] + end[0]) / 2 + text_offset[0],
            (start[1] + end[1]) / 2 + text_offset[1],
        )
        ax.text(
            mx,
            my,
            text,
            ha=ha,
            va="center",
            fontsize=ANNOTATION_SIZE,
            color=colour,
            zorder=3,
        )


def draw_nested_conv(
    desc: dict[str, Any], *, figsize: tuple[float, float] = (MAX_FIGURE_WIDTH_IN, 5.6)
) -> plt.Figure:
    """Fig. 3.1: a standard Conv2D (left) and the same layer with nested quantizers (right).

    Solid black arrows are the forward pass, dashed red ones the backward pass. All shapes,
    granularities and the threshold come from ``desc`` (:func:`describe_nested_conv`).
    """
    fig, axes = plt.subplots(
        1, 2, figsize=figsize, gridspec_kw={"width_ratios": [8.4, 13.6]}
    )
    kshape, bshape = desc["kernel_shape"], desc["bias_shape"]
    lam = desc["threshold"]
    for ax, nested in zip(axes, (False, True), strict=True):
        ax.set_xlim(0, 13.6 if nested else 8.4)
        ax.set_ylim(0.2, 12.0)
        ax.set_axis_off()
        if nested:
            (xi, wi), (xk, wk), (xb, wb) = (1.4, 2.6), (5.6, 4.6), (10.9, 4.6)
        else:
            (xi, wi), (xk, wk), (xb, wb) = (1.4, 2.6), (4.4, 2.4), (7.0, 2.4)
        _box(ax, xi, 1.0, wi, 1.1, f"input x\n{desc['input_shape']}")
        _box(ax, xk, 1.0, wk, 1.1, f"kernel K\n{kshape}", face="#eeeeee")
        _box(ax, xb, 1.0, wb, 1.1, f"bias b\n{bshape}", face="#eeeeee")
        conv_x = (xi + xb) / 2
        conv_w = (xb - xi) + 2.0
        conv_text = (
            "convolution  $x \\ast K + b$"
            if not nested
            else "convolution  $x \\ast K_{rec} + b_{rec}$"
        )
        _box(
            ax,
            conv_x,
            7.3,
            conv_w,
            1.0,
            conv_text,
            bold=True,
            fontsize=ANNOTATION_SIZE + 1,
        )
        _box(ax, conv_x, 9.2, 3.4, 0.8, f"activation {desc['activation']}")
        _box(ax, conv_x, 11.1, 3.6, 1.0, f"output y\n{desc['output_shape']}")
        _arrow(ax, (xi, 1.55), (xi, 6.8))
        _arrow(ax, (conv_x, 7.8), (conv_x, 8.8))
        _arrow(ax, (conv_x, 9.6), (conv_x, 10.6))
        if not nested:
            for xc, name in ((xk, "K"), (xb, "b")):
                _arrow(ax, (xc - 0.3, 1.55), (xc - 0.3, 6.8))
                _arrow(
                    ax,
                    (xc + 0.3, 6.8),
                    (xc + 0.3, 1.55),
                    colour=_BACKWARD,
                    dashed=True,
                    text=f"$\\partial L/\\partial {name}$",
                    text_offset=(0.1, 0.6 if name == "K" else -0.6),
                )
            ax.set_title("standard Conv2D", fontsize=ANNOTATION_SIZE + 2)
            continue
        ax.set_title(
            f"QConv2D with nested quantizers (\u03bb = {lam:g})",
            fontsize=ANNOTATION_SIZE + 2,
        )
        for xc, name, sshape, gran, w in (
            (xk, "K", desc["kernel_scale_shape"], desc["kernel_granularity"], wk),
            (xb, "b", desc["bias_scale_shape"], desc["bias_granularity"], wb),
        ):
            if sshape is None:
                continue
            _box(
                ax,
                xc,
                4.2,
                w,
                3.4,
                f"NestedQuantizer ({'kernel' if name == 'K' else 'bias'})\n"
                f"trainable $s_{name}$ {sshape}\n'{gran}' scales\n"
                f"${name}_q = \\lfloor {name}/s_{name} \\rfloor$,  "
                f"${name}_{{rec}} = {name}_q\\, s_{name}$\n"
                f"$\\partial L/\\partial s_{name} = m \\cdot \\mathrm{{mean}}(g)$",
                face=mcolors.to_rgba(PALETTE[0], 0.15),
                edge=PALETTE[0],
                fontsize=ANNOTATION_SIZE,
            )
            _arrow(ax, (xc - 0.35, 1.55), (xc - 0.35, 2.5))
            _arrow(
                ax,
                (xc - 0.35, 5.9),
                (xc - 0.35, 6.8),
                text=f"${name}_{{rec}}$",
                text_offset=(-0.12, 0),
                ha="right",
            )
            _arrow(
                ax,
                (xc + 0.35, 6.8),
                (xc + 0.35, 5.9),
                colour=_BACKWARD,
                dashed=True,
                text="$G$",
                text_offset=(0.1, 0),
            )
            _arrow(
                ax,
                (xc + 0.35, 2.5),
                (xc + 0.35, 1.55),
                colour=_BACKWARD,
                dashed=True,
                text="$G$ (straight through)" if name == "K" else "$G$",
                text_offset=(0.1, 0),
            )
    handles = [
        plt.Line2D([], [], color=_FORWARD, lw=1.4, label="forward pass"),
        plt.Line2D(
            [],
            [],
            color=_BACKWARD,
            lw=1.4,
            ls=(0, (4, 2.5)),
            label="backward pass (gradients)",
        ),
    ]
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=2,
        fontsize=ANNOTATION_SIZE,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


# --------------------------------------------------------------------------------------------
# The scale-gradient vote


def votes(
    r, threshold: float, group: np.ndarray | None = None, *, all_above_vote: bool = True
) -> np.ndarray:
    """Per-element votes :math:`g = -\\tanh(\\lambda - r)` where :math:`r < \\lambda`, else 0 (float32).

    With ``group`` (integer group id per element) and ``all_above_vote``, every element of a group
    in which all elements have :math:`r \\ge \\lambda` votes :math:`-\\tanh(\\lambda)` (the thesis
    implementation's rule). A NumPy reference, independent of :func:`lqs.quantizers.nested_quantize`.
    """
    r = np.asarray(r, dtype=np.float32)
    lam = np.float32(threshold)
    below = r < lam
    g = np.where(below, -np.tanh(lam - r), np.float32(0.0)).astype(np.float32)
    if all_above_vote and group is not None:
        group = np.asarray(group)
        groups_with_below = np.unique(group[below])
        all_above = ~np.isin(group, groups_with_below)
        g = np.where(all_above, -np.tanh(lam), g).astype(np.float32)
    return g


def scale_gradient_numpy(
    p_q, vote, scale_shape_: Sequence[int], aggregate: str = "mean"
) -> np.ndarray:
    """:math:`\\partial L/\\partial s = m \\cdot \\operatorname{mean}_{group}(g)` with :math:`m = \\max_{group}|P_q|` (float32)."""
    p_q = np.asarray(p_q)
    vote = np.asarray(vote, dtype=np.float32)
    axes = tuple(group_axes(p_q.shape, scale_shape_))
    m = np.max(np.abs(p_q), axis=axes, keepdims=True).astype(np.float32)
    reduce = np.mean if aggregate == "mean" else np.sum
    agg = reduce(vote, axis=axes, keepdims=True, dtype=np.float32)
    return (m * agg).reshape(tuple(scale_shape_)).astype(np.float32)


def draw_vote_function(
    lambdas: Sequence[float] = (1e-10, 1e-9, 1e-8),
    lambdas_wide: Sequence[float] = (0.25, 1.0, 2.0),
    *,
    n_points: int = 400,
    figsize: tuple[float, float] = (MAX_FIGURE_WIDTH_IN, 3.3),
) -> plt.Figure:
    """The vote :math:`g(r) = -\\tanh(\\lambda - r)` for :math:`r < \\lambda` (0 above) on a log ratio axis.

    Left: thesis-scale thresholds (``lambdas``), drawn as :math:`|g|` on log-log axes, where
    :math:`|g| \\approx \\lambda - r` (tanh is linear there); the dotted level is the all-above vote
    :math:`\\tanh(\\lambda)`. Right: wide thresholds (``lambdas_wide``) on a linear vote axis, where
    the tanh saturation shows. The curves come from :func:`votes`.
    """
    fig, axes = plt.subplots(1, 2, figsize=figsize)
    lo = min(lambdas) / 1e3
    r = np.logspace(np.log10(lo), np.log10(max(lambdas) * 10), n_points)
    ramp = sequential_colors(len(lambdas))
    for k, lam in enumerate(sorted(lambdas)):
        g = votes(r.astype(np.float32), lam)
        mask = g < 0
        colour = ramp[k]
        axes[0].loglog(r[mask], -g[mask], color=colour, lw=2, label=f"\u03bb = {lam:g}")
        axes[0].axhline(np.tanh(lam), color=colour, lw=1, ls=":")
        axes[0].axvline(lam, color=colour, lw=0.8, ls="--", alpha=0.7)
    axes[0].set_xlabel("ratio r = |G| / |P_rec|")
    axes[0].set_ylabel("|g| (vote magnitude)")
    axes[0].set_title(
        "thesis-scale \u03bb (|g| = 0 for r \u2265 \u03bb)",
        fontsize=ANNOTATION_SIZE + 2,
    )
    handles, _ = axes[0].get_legend_handles_labels()
    handles.append(
        plt.Line2D(
            [], [], color="0.3", lw=1, ls=":", label="all-above vote tanh(\u03bb)"
        )
    )
    axes[0].legend(handles=handles, fontsize=ANNOTATION_SIZE, loc="lower left")
    r_wide = np.logspace(-3, np.log10(max(lambdas_wide) * 10), n_points)
    ramp_wide = sequential_colors(len(lambdas_wide))
    for k, lam in enumerate(sorted(lambdas_wide)):
        g = votes(r_wide.astype(np.float32), lam)
        axes[1].semilogx(
            r_wide,
            g,
            color=ramp_wide[k],
            lw=2,
            label=f"\u03bb = {lam:g}",
        )
    axes[1].axhline(0, color="0.3", lw=0.8)
    axes[1].axhline(-1, color="0.3", lw=0.8, ls=":")
    axes[1].set_ylim(-1.05, 0.08)
    axes[1].set_xlabel("ratio r = |G| / |P_rec|")
    axes[1].set_ylabel("vote g = \u2212tanh(\u03bb \u2212 r)")
    axes[1].set_title(
        "wide \u03bb: tanh saturates at \u22121", fontsize=ANNOTATION_SIZE + 2
    )
    axes[1].legend(fontsize=ANNOTATION_SIZE, loc="lower right")
    for ax in axes:
        ax.tick_params(labelsize=ANNOTATION_SIZE)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Ratios r of a trained layer


def synthetic_images(
    n: int,
    *,
    seed: int = 0,
    shape: Sequence[int] = (28, 28, 1),
    classes: int = 10,
    noise: float = 0.25,
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded synthetic image classification set (for tests and the smoke profile only).

    Each class is a random smooth prototype in ``[0, 1]`` (with a zero border, like digit images);
    an image is its class prototype plus Gaussian noise, clipped to ``[0, 1]``. Returns
    ``(x float32 (n, *shape), y int64)``.
    """
    rng = np.random.default_rng(seed)
    h, w, c = (int(d) for d in shape)
    coarse = rng.uniform(0, 1, size=(classes, max(h // 4, 1), max(w // 4, 1), c))
    protos = np.kron(coarse, np.ones((1, 4, 4, 1)))[:, :h, :w, :]
    if h > 8 and w > 8:
        protos[:, :2] = protos[:, -2:] = 0
        protos[:, :, :2] = protos[:, :, -2:] = 0
    y = rng.integers(0, classes, size=n)
    x = np.clip(
        protos[y] + noise * rng.normal(size=(n, h, w, c)) * (protos[y] > 0), 0, 1
    )
    return x.astype(np.float32), y.astype(np.int64)


def load_images(
    dataset: str, n: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, str]:
    """``(x, y, label)``: ``n`` training images of ``dataset`` and the name to print in captions.

    ``"synthetic"`` draws :func:`synthetic_images` (label "synthetic (seeded prototypes
    + noise)"); any other name goes through
    :func:`companion.data.loaders.load_with_info` (a stratified subset of ``n``), whose
    errors (missing files) are raised, never replaced by synthetic data.
    """
    if dataset == "synthetic":
        x, y = synthetic_images(n, seed=seed)
        return x, y, f"synthetic (seeded prototypes + noise, {n} images)"
    from companion import data

    x, y, info = data.load_with_info(dataset, "train", limit=n, seed=seed)
    return (
        x,
        y,
        f"{info.label} (train, stratified subset of {info.n} images, seed {seed})",
    )


def train_qdense_mlp(
    x: np.ndarray,
    y: np.ndarray,
    *,
    hidden: int = 64,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 1e-3,
    threshold: float = 1e-9,
    granularity: str = "column",
    seed: int = 0,
    run_eagerly: bool = False,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Train Flatten -> QDense(hidden, relu) -> QDense(classes, softmax) with nested quantizers.

    Kernels at ``granularity``, biases ``"scalar"``; Adam, sparse categorical
    cross-entropy. ``run_eagerly`` skips graph tracing (faster for a handful of steps,
    e.g. in tests).
    Returns the model and the Keras history dict.

    Not :func:`companion.engine.experiment.run`: the engine's MLP is the thesis network
    (128 hidden units) on the named datasets, while the ratio figure uses a small
    ``hidden`` layer that the smoke profile trains on :func:`synthetic_images`; Keras
    ``fit`` is the whole loop.
    """
    keras.utils.set_random_seed(seed)
    classes = int(np.max(y)) + 1
    model = keras.Sequential(
        [
            keras.Input(x.shape[1:]),
            keras.layers.Flatten(),
            QDense(
                hidden,
                activation="relu",
                kernel_granularity=granularity,
                threshold=threshold,
                name="qdense_1",
            ),
            QDense(
                classes,
                activation="softmax",
                kernel_granularity=granularity,
                threshold=threshold,
                name="qdense_2",
            ),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        run_eagerly=run_eagerly,
    )
    history = model.fit(
        x, y, epochs=int(epochs), batch_size=int(batch_size), verbose=0, shuffle=True
    )
    return model, {k: [float(v) for v in vals] for k, vals in history.history.items()}


@dataclass
class LayerRatios:
    """Ratios of one QDense kernel on one batch, and the scale gradient they imply.

    Attributes:
        layer: layer name; ``granularity``, ``threshold`` its quantizer's.
        upstream: ``G = dL/dP_rec`` (equals ``dL/dkernel`` by the straight-through rule).
        p_q, p_rec: integers and reconstructed kernel; ``scale`` the scales.
        ratio: ``r = |G| / |P_rec|`` (eps for ``P_rec == 0``).
        group: scale-group id of every element (:func:`group_ids`).
        d_scale_numpy: ``m * mean(votes)`` from NumPy; ``d_scale_tf``: the scale's gradient from TF.
    """

    layer: str
    granularity: str
    threshold: float
    upstream: np.ndarray
    p_q: np.ndarray
    p_rec: np.ndarray
    scale: np.ndarray
    ratio: np.ndarray
    group: np.ndarray
    d_scale_numpy: np.ndarray
    d_scale_tf: np.ndarray
    extra: dict = field(default_factory=dict)


def layer_ratios(
    model: keras.Model, x: np.ndarray, y: np.ndarray, layer_index: int = 0
) -> LayerRatios:
    """Ratios :math:`r = |G|/|P_{rec}|` of the kernel of the ``layer_index``-th QDense layer on ``(x, y)``.

    The loss is the mean sparse categorical cross-entropy of the model on the batch.
    ``G`` is read as the kernel's gradient (the nested quantizer passes ``G`` straight
    through); the scale gradient that TensorFlow computes through
    :func:`lqs.quantizers.nested_quantize` (``d_scale_tf``) is returned beside the NumPy
    votes of :func:`votes` aggregated by :func:`scale_gradient_numpy`
    (``d_scale_numpy``); the tests check that they agree (``allclose``, rtol 1e-4).
    """
    qlayers = [layer for layer in model.layers if isinstance(layer, QDense)]
    if not 0 <= layer_index < len(qlayers):
        raise ValueError(
            f"layer_index {layer_index} out of range: the model has {len(qlayers)} QDense layers"
        )
    layer = qlayers[layer_index]
    quantizer = layer.kernel_quantizer
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=False))
    g_kernel, g_scale = tape.gradient(loss, [layer.kernel, quantizer.scale])
    upstream = g_kernel.numpy()
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    scale = keras.ops.convert_to_numpy(quantizer.scale).astype(np.float32)
    p_q = integer_values(kernel, scale)
    p_rec = (p_q.astype(np.float32) * scale).astype(np.float32)
    denom = np.where(p_rec == 0, np.float32(EPS), np.abs(p_rec))
    ratio = (np.abs(upstream) / denom).astype(np.float32)
    group = group_ids(kernel.shape, quantizer.granularity)
    vote = votes(
        ratio, quantizer.threshold, group, all_above_vote=quantizer.all_above_vote
    )
    d_numpy = scale_gradient_numpy(p_q, vote, scale.shape, quantizer.aggregate)
    d_tf = g_scale.numpy()
    return LayerRatios(
        layer=layer.name,
        granularity=quantizer.granularity,
        threshold=quantizer.threshold,
        upstream=upstream,
        p_q=p_q,
        p_rec=p_rec,
        scale=scale,
        ratio=ratio,
        group=group,
        d_scale_numpy=d_numpy,
        d_scale_tf=d_tf,
        extra={"loss": float(loss)},
    )


def vote_stats(
    ratio: np.ndarray, group: np.ndarray, lambdas: Sequence[float]
) -> pd.DataFrame:
    """One row per threshold: how the elements of one layer would vote.

    Columns: ``threshold``; ``zero_vote_fraction`` (elements with :math:`r \\ge \\lambda`, whose vote
    is 0 in the thesis text); ``all_above_group_share`` (groups in which every element has
    :math:`r \\ge \\lambda`: the implementation gives them :math:`-\\tanh(\\lambda)` instead);
    ``zero_vote_fraction_impl`` (elements that vote 0 under the implementation's rule);
    ``n_elements``, ``n_groups``, ``ratio_zero_fraction`` (elements with ``r == 0``, i.e. ``G == 0``).
    """
    r = np.asarray(ratio).ravel()
    gid = np.asarray(group).ravel()
    n_groups = int(np.unique(gid).size)
    rows = []
    for lam in lambdas:
        above = r >= np.float32(lam)
        groups_all_above = np.setdiff1d(np.unique(gid), np.unique(gid[~above]))
        in_all_above = np.isin(gid, groups_all_above)
        rows.append(
            {
                "threshold": float(lam),
                "zero_vote_fraction": float(np.mean(above)),
                "all_above_group_share": float(groups_all_above.size / n_groups),
                "zero_vote_fraction_impl": float(np.mean(above & ~in_all_above)),
                "n_elements": int(r.size),
                "n_groups": n_groups,
                "ratio_zero_fraction": float(np.mean(r == 0)),
            }
        )
    return pd.DataFrame(rows)


def ratio_stats(
    ratios: LayerRatios,
    lambdas: Sequence[float],
    *,
    dataset: str,
    trained_threshold: float,
    epochs: int,
    seed: int,
) -> pd.DataFrame:
    """:func:`vote_stats` of a trained layer, with provenance (``ratio_stats.csv``).

    ``dataset``, ``layer`` and ``granularity`` come first; the threshold the layer was
    trained with, the epochs and the seed last.
    """
    stats = vote_stats(ratios.ratio, ratios.group, lambdas)
    stats.insert(0, "dataset", dataset)
    stats.insert(1, "layer", ratios.layer)
    stats.insert(2, "granularity", ratios.granularity)
    stats["trained_threshold"] = trained_threshold
    stats["epochs"] = epochs
    stats["seed"] = seed
    return stats


def draw_ratio_histogram(
    lr_: LayerRatios,
    lambdas: Sequence[float],
    *,
    bins: int = 60,
    figsize: tuple[float, float] = (6.8, 3.0),
) -> plt.Figure:
    """Left: histogram of :math:`r` (log-spaced bins) with the thresholds marked; right: vote shares vs λ.

    The legend under both panels gives, per marked λ, the share of elements voting 0 (text's rule).
    Elements with ``r == 0`` (``G == 0``; they never vote 0) cannot sit on a log axis and are counted
    in the title. The right panel sweeps λ over the ratio range: element share with
    :math:`r \\ge \\lambda` and share of groups hitting the all-above rule.
    """
    r = lr_.ratio.ravel()
    positive = r[r > 0]
    n_zero = int(np.sum(r == 0))
    fig, axes = plt.subplots(
        1, 2, figsize=figsize, gridspec_kw={"width_ratios": [1.2, 1]}
    )
    lo = min(float(positive.min()), min(lambdas)) / 2
    hi = max(float(positive.max()), max(lambdas)) * 2
    edges = np.logspace(np.log10(lo), np.log10(hi), bins + 1)
    axes[0].hist(positive, bins=edges, color=PALETTE[0], alpha=0.8)
    axes[0].set_xscale("log")
    stats = vote_stats(lr_.ratio, lr_.group, lambdas)
    marks = sequential_colors(len(stats))
    for k, row in enumerate(stats.itertuples()):
        is_trained = np.isclose(row.threshold, lr_.threshold, rtol=1e-6)
        axes[0].axvline(
            row.threshold,
            color=marks[k],
            lw=2.2 if is_trained else 1.6,
            ls="-" if is_trained else "--",
            label=f"\u03bb = {row.threshold:g}{' (trained)' if is_trained else ''}: "
            f"{100 * row.zero_vote_fraction:.0f}% zero votes, "
            f"{100 * row.all_above_group_share:.0f}% groups all above",
        )
    axes[0].set_xlabel("ratio r = |G| / |P_rec|")
    axes[0].set_ylabel("kernel elements")
    zero_note = f"; {n_zero} with r = 0 (G = 0) not shown" if n_zero else ""
    axes[0].set_title(
        f"{lr_.layer} kernel {lr_.p_q.shape}{zero_note.replace('; ', chr(10))}",
        fontsize=ANNOTATION_SIZE + 1,
    )
    sweep = np.logspace(np.log10(lo), np.log10(hi), 200)
    sweep_stats = vote_stats(lr_.ratio, lr_.group, sweep)
    axes[1].semilogx(
        sweep,
        100 * sweep_stats["zero_vote_fraction"],
        color=PALETTE[0],
        lw=2,
        label="elements with r \u2265 \u03bb (vote 0)",
    )
    axes[1].semilogx(
        sweep,
        100 * sweep_stats["all_above_group_share"],
        color=PALETTE[2],
        lw=2,
        ls="--",
        label=f"groups all above \u03bb ({lr_.granularity}, {int(lr_.group.max()) + 1})",
    )
    axes[1].axvline(lr_.threshold, color="0.3", lw=1, ls=":")
    axes[1].set_xlabel("threshold \u03bb")
    axes[1].set_ylabel("share (%)")
    axes[1].set_ylim(-3, 103)
    axes[1].set_title(
        "vote shares as \u03bb varies\n(dotted: trained \u03bb)",
        fontsize=ANNOTATION_SIZE + 1,
    )
    for ax in axes:
        ax.tick_params(labelsize=ANNOTATION_SIZE)
        ax.xaxis.set_major_locator(LogLocator(numticks=_LOG_TICKS))
    fig.tight_layout()
    legend_below(fig, ncol=1, fontsize=ANNOTATION_SIZE)
    return fig


# --------------------------------------------------------------------------------------------
# A worked example of one scale update


@dataclass
class WorkedExample:
    """One scale update of the nested quantizer, by hand (NumPy) and by the library.

    Attributes:
        p, upstream: the parameter vector ``P`` and the upstream gradient
            ``G = dL/dP_rec``.
        threshold, scale, lr: :math:`\\lambda`, the scalar scale ``s`` and the SGD
            learning rate.
        p_q, p_rec, ratio, vote: per element, NumPy.
        all_above: whether the all-above rule fired (every element had ``r >= λ``).
        m, mean_vote, d_scale: ``max|P_q|``, the mean vote and ``dL/ds = m * mean_vote``
            (NumPy).
        new_scale: ``max(s - lr * dL/ds, min_scale)`` (NumPy).
        d_scale_tf, d_p_tf: the gradients :func:`lqs.quantizers.nested_quantize`
            returns.
        new_scale_keras: the scale after one ``keras.optimizers.SGD`` step on a
            :class:`~lqs.quantizers.NestedQuantizer` (its ``MinValue`` constraint
            applied).
        d_scale_zero_vote: ``dL/ds`` under the text's rule (``all_above_vote=False``),
            NumPy.
        exact: whether ``d_scale`` equals ``d_scale_tf`` bit for bit.
        p_rec_tf: the forward pass of the library's quantizer (equal to ``p_rec``).
    """

    p: np.ndarray
    upstream: np.ndarray
    threshold: float
    scale: float
    lr: float
    p_q: np.ndarray
    p_rec: np.ndarray
    ratio: np.ndarray
    vote: np.ndarray
    all_above: bool
    m: float
    mean_vote: float
    d_scale: float
    new_scale: float
    d_scale_tf: float
    d_p_tf: np.ndarray
    new_scale_keras: float
    d_scale_zero_vote: float
    exact: bool
    p_rec_tf: np.ndarray | None = None


def worked_example(
    p: Sequence[float],
    upstream: Sequence[float],
    threshold: float,
    scale: float,
    lr: float,
) -> WorkedExample:
    """Compute one scale update by hand (NumPy, float32) and check it against the library.

    By hand: ``P_q = floor(P/s)``, ``P_rec = P_q s``, ``r = |G|/|P_rec|`` (eps where
    ``P_rec = 0``), votes :func:`votes` (all-above rule on: one scalar group),
    ``m = max|P_q|``, ``dL/ds = m * mean(g)``, ``s' = max(s - lr * dL/ds, MIN_SCALE)``.
    Library: a :class:`~lqs.quantizers.NestedQuantizer` (``"scalar"``, ``threshold``)
    with scale ``s``, the loss ``sum(G * P_rec)`` (so ``dL/dP_rec = G``), its gradients,
    and one Keras SGD step. Both results are returned (the tests check ``dL/dP == G``
    exactly, ``dL/ds`` and the new scales equal within rtol 1e-6); ``exact`` says
    whether ``dL/ds`` matched bit for bit.
    """
    p = np.asarray(p, dtype=np.float32)
    g_up = np.asarray(upstream, dtype=np.float32)
    if p.shape != g_up.shape or p.ndim != 1:
        raise ValueError(
            f"p and upstream must be vectors of one length, got {p.shape} and {g_up.shape}"
        )
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    s = np.float32(scale)
    p_q = np.floor(p / s).astype(np.float32)
    p_rec = (p_q * s).astype(np.float32)
    ratio = (
        np.abs(g_up) / np.where(p_rec == 0, np.float32(EPS), np.abs(p_rec))
    ).astype(np.float32)
    group = np.zeros(p.shape, dtype=np.int64)
    vote = votes(ratio, threshold, group, all_above_vote=True)
    all_above = bool(np.all(ratio >= np.float32(threshold)))
    m = np.float32(np.max(np.abs(p_q)))
    mean_vote = np.mean(vote, dtype=np.float32)
    d_scale = np.float32(m * mean_vote)
    new_scale = float(
        max(np.float32(s - np.float32(lr) * d_scale), np.float32(MIN_SCALE))
    )
    d_zero = float(
        m
        * np.mean(
            votes(ratio, threshold, group, all_above_vote=False), dtype=np.float32
        )
    )

    quantizer = NestedQuantizer("scalar", threshold=threshold)
    quantizer.build(p.shape)
    quantizer.scale.assign(np.array([s], dtype=np.float32))
    p_var = tf.Variable(p)
    with tf.GradientTape() as tape:
        p_rec_tf = quantizer(p_var)
        loss = tf.reduce_sum(tf.constant(g_up) * p_rec_tf)
    d_p_tf, d_s_tf = tape.gradient(loss, [p_var, quantizer.scale])
    d_s_tf = float(d_s_tf.numpy()[0])
    optimizer = keras.optimizers.SGD(learning_rate=lr)
    optimizer.apply_gradients(
        [(tf.constant([d_s_tf], dtype=tf.float32), quantizer.scale)]
    )
    new_keras = float(quantizer.scale.numpy()[0])
    return WorkedExample(
        p=p,
        upstream=g_up,
        threshold=float(threshold),
        scale=float(s),
        lr=float(lr),
        p_q=p_q,
        p_rec=p_rec,
        ratio=ratio,
        vote=vote,
        all_above=all_above,
        m=float(m),
        mean_vote=float(mean_vote),
        d_scale=float(d_scale),
        new_scale=new_scale,
        d_scale_tf=d_s_tf,
        d_p_tf=d_p_tf.numpy(),
        new_scale_keras=new_keras,
        d_scale_zero_vote=d_zero,
        p_rec_tf=p_rec_tf.numpy(),
        exact=bool(np.float32(d_scale) == np.float32(d_s_tf)),
    )


def worked_example_table(ex: WorkedExample) -> pd.DataFrame:
    """One row per element: ``i, P, P_q, P_rec, G, r, below_threshold, vote`` (+ the run's constants)."""
    return pd.DataFrame(
        {
            "i": np.arange(1, ex.p.size + 1),
            "P": ex.p,
            "P_q": ex.p_q.astype(np.int64),
            "P_rec": ex.p_rec,
            "G": ex.upstream,
            "r": ex.ratio,
            "below_threshold": ex.ratio < np.float32(ex.threshold),
            "vote": ex.vote,
            "threshold": ex.threshold,
            "scale": ex.scale,
            "lr": ex.lr,
        }
    )


def _fmt(v: float) -> str:
    v = float(v)
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.3e}"
    return f"{v:.4g}"


def _short(v: float) -> str:
    v = float(v)
    return (
        f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
        if (v >= 1e3 or 0 < v < 1e-2)
        else f"{v:.2g}"
    )


def worked_example_markdown(ex: WorkedExample) -> str:
    """The worked example as Markdown: a table of the elements, then the update step by step."""
    lines = [
        f"Threshold $\\lambda = {ex.threshold:g}$, scale $s = {ex.scale:g}$, learning rate $\\eta = {ex.lr:g}$.",
        "",
        "| $i$ | $P$ | $P_q = \\lfloor P/s \\rfloor$ | $P_{rec} = P_q s$ | $G$ | $r = \\lvert G\\rvert / \\lvert P_{rec}\\rvert$ | vote $g$ |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in worked_example_table(ex).itertuples():
        r_text = _fmt(row.r) + (
            " ($P_{rec}=0$: $\\varepsilon$)" if row.P_rec == 0 else ""
        )
        lines.append(
            f"| {row.i} | {_fmt(row.P)} | {row.P_q} | {_fmt(row.P_rec)} | {_fmt(row.G)} | {r_text} | "
            f"{_fmt(row.vote)} |"
        )
    rule = (
        "every element has $r \\ge \\lambda$, so the all-above rule gives each the vote "
        f"$-\\tanh(\\lambda) = {_fmt(-np.tanh(ex.threshold))}$"
        if ex.all_above
        else "elements with $r \\ge \\lambda$ vote 0, the others $-\\tanh(\\lambda - r)$"
    )
    lines += [
        "",
        f"- Votes: {rule}.",
        f"- $m = \\max|P_q| = {ex.m:g}$, mean vote $= {_fmt(ex.mean_vote)}$.",
        f"- $\\partial L/\\partial s = m \\cdot \\mathrm{{mean}}(g) = {_fmt(ex.d_scale)}$ (by hand, NumPy float32); "
        f"`nested_quantize` gives ${_fmt(ex.d_scale_tf)}$ "
        f"({'bit-identical' if ex.exact else 'equal within float32 rounding'}).",
        f"- One SGD step: $s' = s - \\eta\\,\\partial L/\\partial s = {ex.scale:g} - {ex.lr:g} \\cdot "
        f"({_fmt(ex.d_scale)}) = {_fmt(ex.new_scale)}$ (Keras SGD on the quantizer: ${_fmt(ex.new_scale_keras)}$).",
        (
            f"- Under the thesis text's zero-vote rule the gradient would be ${_fmt(ex.d_scale_zero_vote)}$: "
            "the scale would not move."
            if ex.all_above
            else "- The all-above rule does not fire here (some element has $r < \\lambda$), so the thesis text's "
            f"zero-vote rule gives the same gradient, ${_fmt(ex.d_scale_zero_vote)}$."
        ),
        "",
    ]
    return "\n".join(lines)


def draw_worked_example(
    ex: WorkedExample, *, figsize: tuple[float, float] = (MAX_FIGURE_WIDTH_IN, 3.5)
) -> plt.Figure:
    """Left: each element's vote with its ratio; right: the grid of multiples of ``s`` before and after the step."""
    fig, axes = plt.subplots(
        1, 2, figsize=figsize, gridspec_kw={"width_ratios": [1, 1.25]}
    )
    idx = np.arange(1, ex.p.size + 1)
    below = ex.ratio < np.float32(ex.threshold)
    colours = [PALETTE[0] if b else "0.6" for b in below]
    axes[0].bar(idx, ex.vote, color=colours, edgecolor="0.3")
    axes[0].axhline(
        ex.mean_vote,
        color=PALETTE[1],
        lw=2,
        ls="--",
        label=f"mean vote {ex.mean_vote:.3f}",
    )
    axes[0].axhline(0, color="0.3", lw=0.8)
    for i in idx[~below]:
        axes[0].text(
            i,
            0.02,
            "0",
            ha="center",
            va="bottom",
            fontsize=ANNOTATION_SIZE,
            color="0.35",
        )
    axes[0].set_ylim(-1.05, 0.12)
    axes[0].set_xticks(
        idx,
        [f"{i}\nr={_short(r)}" for i, r in zip(idx, ex.ratio, strict=True)],
        fontsize=ANNOTATION_SIZE,
    )
    axes[0].set_xlabel("element i and its ratio r")
    axes[0].set_ylabel("vote g")
    axes[0].set_title(
        f"votes at \u03bb = {ex.threshold:g}\n(grey: r \u2265 \u03bb)",
        fontsize=ANNOTATION_SIZE + 1,
    )
    axes[0].legend(fontsize=ANNOTATION_SIZE, loc="lower right")
    lo = min(float(ex.p.min()), 0.0) - ex.scale
    hi = float(ex.p.max()) + ex.scale
    for y, s, label in (
        (1.0, ex.scale, f"s = {ex.scale:.4g}"),
        (0.0, ex.new_scale, f"s' = {ex.new_scale:.4g}"),
    ):
        ks = np.arange(np.floor(lo / s), np.ceil(hi / s) + 1)
        axes[1].vlines(ks * s, y - 0.18, y + 0.18, color="0.55", lw=1)
        rec = np.floor(ex.p / np.float32(s)) * np.float32(s)
        axes[1].scatter(
            ex.p,
            np.full_like(ex.p, y + 0.3),
            marker="o",
            color=PALETTE[0],
            s=30,
            zorder=3,
            label="P" if y == 1.0 else None,
        )
        axes[1].scatter(
            rec,
            np.full_like(rec, y),
            marker="D",
            color=PALETTE[1],
            s=30,
            zorder=3,
            label="P_rec = \u230aP/s\u230bs" if y == 1.0 else None,
        )
        for a, b in zip(ex.p, rec, strict=True):
            axes[1].plot([a, b], [y + 0.3, y], color="0.6", lw=0.8)
        axes[1].text(lo, y - 0.32, label, fontsize=ANNOTATION_SIZE, va="center")
    axes[1].set_yticks([1.0, 0.0], ["before", "after 1 step"])
    axes[1].set_ylim(-0.5, 1.55)
    axes[1].set_xlabel("value")
    axes[1].grid(False)
    axes[1].set_title(
        f"grid of multiples of s\n\u2202L/\u2202s = {ex.d_scale:.4g}, \u03b7 = {ex.lr:g}",
        fontsize=ANNOTATION_SIZE + 1,
    )
    axes[1].legend(fontsize=ANNOTATION_SIZE, loc="upper right", ncol=2)
    for ax in axes:
        ax.tick_params(labelsize=ANNOTATION_SIZE)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# checks the background notebook records (figure_checks.csv): what is drawn = the
# library


#: a recorded check passes when value and reference agree to this (absolute)
CHECK_ATOL = 1e-6


def _check(
    figure: str, quantity: str, value: float, reference: float
) -> dict[str, Any]:
    return {
        "figure": figure,
        "quantity": quantity,
        "value": float(value),
        "reference": float(reference),
    }


def mlp_check(model: keras.Model, edges: pd.DataFrame) -> dict[str, Any]:
    """Fig. 2.1: largest difference between the drawn edge weights and the kernels."""
    drawn = np.concatenate(
        [layer.kernel.numpy().ravel() for layer in _dense_layers(model)]
    )
    diff = np.max(np.abs(edges["weight"].to_numpy() - drawn))
    return _check(
        "fig2_1_mlp", "edge weights = model kernels (max abs diff)", diff, 0.0
    )


def conv_check(figure: str, ex: ConvExample) -> dict[str, Any]:
    """Figs. 2.2/2.3: the worked-out output value (NumPy) against ``tf.nn.conv2d``'s."""
    quantity = f"output{tuple(ex.position)} (NumPy vs tf.nn.conv2d)"
    return _check(figure, quantity, ex.value, ex.tf_value)


def weight_check(wq: WeightQuantization) -> dict[str, Any]:
    """Fig. 2.4: entries where the drawn integers differ from ``integer_values``."""
    mismatches = np.sum(wq.integers != integer_values(wq.weights, wq.scale))
    return _check(
        "fig2_4_weight_quantization",
        "integers = integer_values (mismatches)",
        mismatches,
        0.0,
    )


def minmax_check(mm: MinMaxMatmul) -> dict[str, Any]:
    """Fig. 2.5: the dequantized inputs against ``fake_quant_with_min_max_vars``."""
    diff = np.max(np.abs(mm.x_deq - mm.tf_x_deq))
    return _check(
        "fig2_5_minmax_matmul",
        "dequantized x vs tf fake_quant (max abs diff)",
        diff,
        0.0,
    )


def granularity_checks(
    kernel_shape: Sequence[int], granularities: Sequence[str]
) -> list[dict[str, Any]]:
    """Fig. 2.6: per granularity, scale groups drawn against the scales built."""
    rows = []
    for g in granularities:
        drawn = np.unique(group_ids(kernel_shape, g)).size
        built = np.prod(quantizer_scale_shape(g, kernel_shape))
        rows.append(
            _check(
                "fig2_6_conv_granularities",
                f"{g}: groups drawn = scales built",
                drawn,
                built,
            )
        )
    return rows


def check_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The checks with an ``equal`` column (:data:`CHECK_ATOL`); raises if any fails.

    Raises:
        ValueError: naming the checks whose value differs from the reference.
    """
    table = pd.DataFrame(list(rows))
    table["equal"] = np.isclose(
        table["value"], table["reference"], rtol=0, atol=CHECK_ATOL
    )
    failed = table[~table["equal"]]
    if len(failed):
        raise ValueError(
            f"figures differ from the library:\n{failed.to_string(index=False)}"
        )
    return table
