"""Training regimes of the experiment notebooks per profile, next to the thesis's.

The Experiments chapter includes ``generated/regimes.md`` (:func:`regime_markdown`, written by
:func:`companion.engine.book.prepare`), so what the book says about images, epochs, batches and
learning rates comes from the profiles, never from hand-typed prose.

For one notebook setup (:func:`regime_rows`; parameters from
:func:`companion.engine.runner.resolve_parameters`, a setup's own keys overriding the notebook's):

* ``n`` = ``train_limit``, or the official training split size (:data:`TRAIN_SPLIT_SIZES`) when
  ``train_limit`` is ``None`` (the full split);
* ``n_train = n - floor(f * n + 1/2)`` training images, ``f`` = ``validation_fraction`` (the
  validation split that :func:`companion.engine.experiment.validation_split` holds out);
* ``steps = epochs * ceil(n_train / batch_size)`` optimizer steps per run (Keras ``fit``: the
  last batch of an epoch may be partial);
* ``ratio = steps / thesis steps`` of the setup's network (:data:`THESIS`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from companion.engine.config import SCHEMA, default_arch
from companion.engine.runner import resolve_parameters
from companion.paths import check_profile

__all__ = [
    "NOTEBOOKS",
    "TRAIN_SPLIT_SIZES",
    "ThesisRegime",
    "THESIS",
    "training_images",
    "steps_per_run",
    "regime_rows",
    "regime_markdown",
]

#: the experiment notebooks whose training regime the book states, in chapter order
NOTEBOOKS: tuple[str, ...] = (
    "pareto_threshold",
    "pareto_lr_reg",
    "loss_terms",
    "baselines",
    "generalization",
)

#: images in the official training split of each dataset (a partial local copy, such as the
#: MNIST 10k subset, has fewer: its run records' ``n_train`` column has the count)
TRAIN_SPLIT_SIZES: dict[str, int] = {
    "mnist": 60_000,
    "fashion_mnist": 60_000,
    "cifar10": 50_000,
    "imagenette": 9_469,  # imagenette2-160 "train"
}

_DATASET_NAMES = {
    "mnist": "MNIST",
    "fashion_mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "imagenette": "Imagenette",
}
_NETWORK_NAMES = {"mlp": "MLP", "cnn": "CNN", "resnet": "ResNet"}


@dataclass(frozen=True)
class ThesisRegime:
    """The published training setting of one thesis network (Adam, no validation split).

    Arguments:
        dataset: the dataset the thesis trained the network on.
        train_images: training images per epoch (the whole official training split).
        epochs: training epochs.
        batch_size: mini-batch size.
        lr: Adam learning rate at the start.
        lr_steps: learning-rate changes during training as ``(epoch, factor)`` pairs, the
            factors cumulative (the run-configuration key ``lr_steps``,
            :func:`companion.engine.config.lr_at`); ``()`` for none.
        seeds: number of seeds (the thesis: one, seed 42).
    """

    dataset: str
    train_images: int
    epochs: int
    batch_size: int
    lr: float
    lr_steps: tuple[tuple[int, float], ...] = ()
    seeds: int = 1

    @property
    def schedule(self) -> str:
        """The learning-rate steps in words (``"×0.5 at epoch 40, ×0.2 at epoch 60"``; ``""``)."""
        return ", ".join(f"×{f:g} at epoch {e}" for e, f in self.lr_steps)

    @property
    def steps(self) -> int:
        """Optimizer steps of one run: ``epochs * ceil(train_images / batch_size)``."""
        return self.epochs * math.ceil(self.train_images / self.batch_size)


#: The settings of the published thesis per network, from its table "Network settings" and
#: section 4.1. Adam with learning rate 1e-4 throughout. MLP on MNIST: batch 32, 20 epochs,
#: 37,500 steps. CNN on CIFAR-10: batch 128, 100 epochs, 39,100 steps. ResNet on Imagenette:
#: batch 64, 100 epochs, learning rate halved at epoch 40 and multiplied by 0.2 at epoch 60
#: (cumulative, as the thesis's implementation applies them: 1e-5 from epoch 60 on),
#: 14,800 steps.
THESIS: dict[str, ThesisRegime] = {
    "mlp": ThesisRegime("mnist", TRAIN_SPLIT_SIZES["mnist"], 20, 32, 1e-4),
    "cnn": ThesisRegime("cifar10", TRAIN_SPLIT_SIZES["cifar10"], 100, 128, 1e-4),
    "resnet": ThesisRegime(
        "imagenette",
        TRAIN_SPLIT_SIZES["imagenette"],
        100,
        64,
        1e-4,
        lr_steps=((40, 0.5), (60, 0.2)),
    ),
}


# --------------------------------------------------------------------------------------------
# arithmetic


def training_images(n: int, validation_fraction: float) -> int:
    """Images trained on: ``n - floor(validation_fraction * n + 1/2)`` (the validation split held out)."""
    return n - int(math.floor(validation_fraction * n + 0.5))


def steps_per_run(n_train: int, epochs: int, batch_size: int) -> int:
    """Optimizer steps of one run: ``epochs * ceil(n_train / batch_size)``."""
    return epochs * math.ceil(n_train / batch_size)


# --------------------------------------------------------------------------------------------
# rows


def _default(key: str) -> Any:
    """The configuration default of ``key`` (:data:`companion.engine.config.SCHEMA`)."""
    return SCHEMA[key].default


def _setups(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each setup's parameters: the notebook's, overridden by the setup's own keys.

    ``setups`` (a list of dicts) as in the Pareto, loss-term and baseline notebooks; ``cases``
    (network names) as in ``generalization``, whose per-case keys are ``<case>_<key>``.
    """
    if "setups" in params:
        return [{**params, **setup} for setup in params["setups"]]
    if "cases" in params:
        return [
            {
                **params,
                "arch": case,
                **{
                    key.removeprefix(f"{case}_"): value
                    for key, value in params.items()
                    if key.startswith(f"{case}_")
                },
            }
            for case in params["cases"]
        ]
    return [dict(params)]


def _learning_rates(setup: Mapping[str, Any]) -> tuple[float, ...]:
    """``learning_rates`` (a sweep axis), else ``lr``, else the configuration default."""
    if "learning_rates" in setup:
        return tuple(float(v) for v in setup["learning_rates"])
    return (float(setup.get("lr", _default("lr"))),)


def _modes(setup: Mapping[str, Any]) -> set[str]:
    """Every training mode a setup names: ``mode``, ``modes``, ``<method>_mode(s)``."""
    found: set[str] = set()
    for key, value in setup.items():
        if key in ("mode", "modes") or key.endswith(("_mode", "_modes")):
            found.update([value] if isinstance(value, str) else value or [])
    return found


def _pretrain_epochs(setup: Mapping[str, Any], epochs: int) -> int | None:
    """Epochs of the FP32 parent where the setup trains post-training, else ``None``.

    ``pretrain_epochs`` where the notebook has it, else ``epochs`` (the notebooks without the
    parameter pretrain as long as they train).
    """
    if "post_training" not in _modes(setup):
        return None
    return int(setup.get("pretrain_epochs", epochs))


def _row(notebook: str, setup: Mapping[str, Any]) -> dict[str, Any]:
    """The regime of one setup (see the module docstring for the formulas)."""
    dataset = setup["dataset"]
    arch = setup.get("arch") or default_arch(dataset)
    limit = setup.get("train_limit")
    n = limit if limit is not None else TRAIN_SPLIT_SIZES.get(dataset)
    fraction = float(setup.get("validation_fraction", _default("validation_fraction")))
    epochs = int(setup.get("epochs", _default("epochs")))
    batch = int(setup.get("batch_size", _default("batch_size")))
    n_train = None if n is None else training_images(n, fraction)
    steps = None if n_train is None else steps_per_run(n_train, epochs, batch)
    thesis = THESIS.get(arch)
    return {
        "notebook": notebook,
        "dataset": dataset,
        "network": arch,
        "train_limit": limit,
        "n": n,
        "validation_fraction": fraction,
        "n_train": n_train,
        "epochs": epochs,
        "pretrain_epochs": _pretrain_epochs(setup, epochs),
        "batch_size": batch,
        "steps": steps,
        "learning_rates": _learning_rates(setup),
        "optimizer": setup.get("optimizer", _default("optimizer")),
        "seeds": len(setup.get("seeds", [_default("seed")])),
        "thesis_steps": None if thesis is None else thesis.steps,
        "ratio": None if steps is None or thesis is None else steps / thesis.steps,
    }


def regime_rows(profile: str) -> list[dict[str, Any]]:
    """One row per (experiment notebook, setup) of ``profile``, in :data:`NOTEBOOKS` order.

    Keys: ``notebook``, ``dataset``, ``network``, ``train_limit`` (``None``: full split), ``n``
    (images before the validation split; the official split size for a full split),
    ``validation_fraction``, ``n_train`` (``n - floor(f n + 1/2)``), ``epochs``,
    ``pretrain_epochs`` (FP32 parent of post-training runs, ``None`` without them),
    ``batch_size``, ``steps`` (``epochs * ceil(n_train / batch_size)``), ``learning_rates``
    (tuple), ``optimizer``, ``seeds`` (count), ``thesis_steps`` and ``ratio`` (``steps /
    thesis_steps`` of the network, :data:`THESIS`).

    Raises:
        ValueError: unknown profile (the message names it and the allowed ones).
    """
    check_profile(profile)
    rows = []
    for notebook in NOTEBOOKS:
        params = resolve_parameters(notebook, profile)
        rows += [_row(notebook, setup) for setup in _setups(params)]
    return rows


# --------------------------------------------------------------------------------------------
# Markdown


def _number(n: int) -> str:
    return f"{n:,}"


def _lr(x: float) -> str:
    """``1e-3``, ``2.5e-4``: mantissa and exponent without padding."""
    mantissa, exponent = f"{x:e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def _lrs(values: Iterable[float]) -> str:
    return ", ".join(_lr(v) for v in sorted(set(values)))


def _ratio(r: float) -> str:
    """``1/83`` below one half, ``0.62×`` or ``1.5×`` otherwise."""
    return f"1/{1 / r:.0f}" if r < 0.5 else f"{r:.2g}×"


def _images(row: Mapping[str, Any]) -> str:
    """``7,200 of 8,000`` (after the validation split), ``54,000 of 60,000 (full split)``."""
    if row["n"] is None:
        return "full split"
    full = " (full split)" if row["train_limit"] is None else ""
    return f"{_number(row['n_train'])} of {_number(row['n'])}{full}"


def _setup(dataset: str, network: str) -> str:
    return f"{_DATASET_NAMES.get(dataset, dataset)} · {_NETWORK_NAMES.get(network, network)}"


def _table_row(row: Mapping[str, Any]) -> str:
    epochs = str(row["epochs"])
    if row["pretrain_epochs"] is not None:
        epochs += f" (+{row['pretrain_epochs']} FP32 parent)"
    cells = [
        f"`{row['notebook']}`",
        _setup(row["dataset"], row["network"]),
        _images(row),
        epochs,
        str(row["batch_size"]),
        "?" if row["steps"] is None else _number(row["steps"]),
        _lrs(row["learning_rates"]),
        str(row["seeds"]),
        "" if row["ratio"] is None else _ratio(row["ratio"]),
    ]
    return "| " + " | ".join(cells) + " |"


def _thesis_row(network: str) -> str:
    t = THESIS[network]
    lr = _lr(t.lr) + (f" ({t.schedule})" if t.schedule else "")
    cells = [
        "thesis",
        _setup(t.dataset, network),
        _number(t.train_images),
        str(t.epochs),
        str(t.batch_size),
        _number(t.steps),
        lr,
        str(t.seeds),
        "1×",
    ]
    return "| " + " | ".join(f"**{c}**" for c in cells) + " |"


def _span(values: Sequence[Any], fmt=str) -> str:
    """``a`` when all values are equal, else ``min–max``."""
    lo, hi = min(values), max(values)
    return fmt(lo) if lo == hi else f"{fmt(lo)}–{fmt(hi)}"


def _lr_note(lrs: set[float], thesis_lr: float) -> str:
    """``lr 1e-3 instead of 1e-4``, ``lr 1e-4 as in the thesis`` or ``lr 1e-4, 1e-3 (the thesis's 1e-4 among them)``."""
    if lrs == {thesis_lr}:
        return f"lr {_lr(thesis_lr)} as in the thesis"
    if thesis_lr in lrs:
        return f"lr {_lrs(lrs)} (the thesis's {_lr(thesis_lr)} among them)"
    return f"lr {_lrs(lrs)} instead of {_lr(thesis_lr)}"


def _network_note(network: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """One sentence: a network's steps, epochs, batch, learning rates and schedule vs the thesis's."""
    t = THESIS[network]
    steps = [r["steps"] for r in rows if r["steps"] is not None]
    parts = []
    if steps:
        ratios = dict.fromkeys(_ratio(s / t.steps) for s in (min(steps), max(steps)))
        parts.append(
            f"{_span(steps, _number)} steps per run = {'–'.join(ratios)} of the thesis's "
            f"{_number(t.steps)}"
        )
    parts.append(
        f"epochs {_span([r['epochs'] for r in rows])} (thesis {t.epochs}), batch "
        f"{_span([r['batch_size'] for r in rows])} (thesis {t.batch_size})"
    )
    parts.append(_lr_note({v for r in rows for v in r["learning_rates"]}, t.lr))
    optimizers = sorted({r["optimizer"] for r in rows})
    if optimizers != ["adam"]:
        parts.append(f"optimizer {', '.join(optimizers)} instead of Adam")
    if t.schedule:
        parts.append(f"constant lr (thesis: {t.schedule})")
    return f"- {_NETWORK_NAMES[network]}: " + "; ".join(parts) + "."


def regime_markdown(profile: str) -> str:
    """The regime table of ``profile`` (:func:`regime_rows`), the thesis rows and a computed note.

    One table row per notebook setup, then one bold row per thesis network that the profile
    trains; below it, per network, the profile's steps per run as a fraction of the thesis's,
    its epochs, batch sizes and learning rates against the thesis's.

    Raises:
        ValueError: unknown profile.
    """
    rows = regime_rows(profile)
    networks = [n for n in THESIS if any(r["network"] == n for r in rows)]
    lines = [
        f"Training regime of each experiment notebook under profile `{profile}` "
        f"(`profiles/{profile}/*.yaml`) and, in bold, the thesis's (thesis, table 'Network "
        "settings' and §4.1). *Training images*: those of `train_limit` (or of the full split) "
        "left after the validation split (`validation_fraction` "
        f"{', '.join(f'{f:g}' for f in sorted({r['validation_fraction'] for r in rows}))}) "
        "is held out. *Steps per run* = epochs × ⌈training images / batch⌉. *Steps vs thesis*: "
        "steps per run over the thesis's steps for the same network (which the thesis trained "
        "on its own dataset). Every run uses Adam unless the note says otherwise.",
        "",
        "| notebook | data · network | training images | epochs | batch | steps per run "
        "| learning rate | seeds | steps vs thesis |",
        "|---|---|---|---|---|---|---|---|---|",
        *(_table_row(r) for r in rows),
        *(_thesis_row(n) for n in networks),
        "",
        f"Profile `{profile}` against the thesis:",
        "",
        *(_network_note(n, [r for r in rows if r["network"] == n]) for n in networks),
    ]
    if any(r["pretrain_epochs"] is not None for r in rows):
        lines += [
            "",
            "Post-training runs start from an FP32 parent trained for the epochs in "
            "parentheses (one parent per setup and seed, shared by its runs); their steps "
            "are not counted above.",
        ]
    if any(r["train_limit"] is None for r in rows):
        lines += [
            "",
            "A full split counts the official training split; a partial local copy (the "
            "MNIST 10k subset) trains on fewer images and takes fewer steps (the run "
            "records' `n_train` column).",
        ]
    return "\n".join(lines) + "\n"
