"""companion.engine.regimes: the training-regime table of each profile against the thesis's.

Expected values are computed here by hand from the profile files (``profiles/cpu/*.yaml``, the
notebooks' parameters cells and ``validation_fraction``'s default 0.1): training images
``n - round(0.1 n)``, steps ``epochs * ceil(n_train / batch)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from companion.engine import book as lb
from companion.engine import regimes
from companion.engine.config import SCHEMA

THESIS_MLP_STEPS = 20 * 60_000 // 32  # 20 epochs of 60,000 MNIST images at batch 32


@pytest.fixture(scope="module")
def cpu_rows() -> list[dict[str, Any]]:
    return regimes.regime_rows("cpu")


def _rows(rows: list[dict[str, Any]], notebook: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["notebook"] == notebook]


def test_thesis_settings() -> None:
    assert THESIS_MLP_STEPS == 37_500
    assert regimes.THESIS["mlp"].steps == 37_500
    assert (
        regimes.THESIS["cnn"].steps == 100 * 391 == 39_100
    )  # ceil(50,000 / 128) = 391
    assert (
        regimes.THESIS["resnet"].steps == 100 * 148 == 14_800
    )  # ceil(9,469 / 64) = 148
    assert {t.lr for t in regimes.THESIS.values()} == {1e-4}
    assert [t.batch_size for t in regimes.THESIS.values()] == [32, 128, 64]
    assert "epoch 40" in regimes.THESIS["resnet"].schedule


def test_cpu_pareto_threshold_by_hand(cpu_rows: list[dict[str, Any]]) -> None:
    assert SCHEMA["validation_fraction"].default == 0.1
    n_train = 8000 - 800  # train_limit 8000, 10 % held out for validation
    steps = 2 * 225  # 2 epochs of ceil(7200 / 32) = 225 batches
    rows = _rows(cpu_rows, "pareto_threshold")
    assert [(r["dataset"], r["network"]) for r in rows] == [
        ("mnist", "mlp"),
        ("fashion_mnist", "mlp"),
    ]
    for r in rows:
        assert (r["train_limit"], r["n"], r["n_train"]) == (8000, 8000, n_train)
        assert (r["epochs"], r["batch_size"], r["steps"]) == (2, 32, steps)
        assert r["learning_rates"] == (1e-3,) and r["seeds"] == 5
        assert r["pretrain_epochs"] is None  # from scratch only
        assert r["ratio"] == pytest.approx(450 / 37_500)


def test_cpu_setup_override(cpu_rows: list[dict[str, Any]]) -> None:
    mlp, cnn = _rows(cpu_rows, "pareto_lr_reg")
    # notebook-wide: 8000 images, 2 epochs, lr {1e-3, 3e-3}, 5 seeds, post-training parents of 2 epochs
    assert (mlp["n_train"], mlp["steps"], mlp["learning_rates"]) == (
        7200,
        450,
        (1e-3, 3e-3),
    )
    assert (mlp["dataset"], mlp["seeds"], mlp["pretrain_epochs"]) == (
        "fashion_mnist",
        5,
        2,
    )
    # the CNN setup's own train_limit 3000, 4 epochs, one lr, one seed, from scratch only
    assert (cnn["dataset"], cnn["network"]) == ("fashion_mnist", "cnn")
    assert cnn["n_train"] == 3000 - 300
    assert cnn["steps"] == 4 * 85  # ceil(2700 / 32) = 85
    assert (cnn["learning_rates"], cnn["seeds"], cnn["pretrain_epochs"]) == (
        (1e-3,),
        1,
        None,
    )
    assert cnn["ratio"] == pytest.approx(340 / 39_100)


def test_cpu_generalization_cases(cpu_rows: list[dict[str, Any]]) -> None:
    mlp, cnn = _rows(cpu_rows, "generalization")
    assert (mlp["dataset"], mlp["n_train"], mlp["steps"]) == ("mnist", 900, 20 * 29)
    assert (cnn["dataset"], cnn["n_train"]) == ("fashion_mnist", 270)
    assert (cnn["batch_size"], cnn["steps"]) == (16, 50 * 17)  # ceil(270 / 16) = 17


def test_full_split_counts_the_official_split() -> None:
    row = regimes.regime_rows("full")[0]  # pareto_threshold, MNIST, train_limit null
    assert row["train_limit"] is None and row["n"] == 60_000
    assert row["n_train"] == 60_000 - 6_000
    assert row["steps"] == 2 * 1688  # ceil(54,000 / 32) = 1688


@pytest.mark.parametrize("n", [1, 7, 15, 100, 999])
@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.1, 0.25])
def test_training_images_match_the_validation_split(n: int, fraction: float) -> None:
    from companion.engine.experiment import validation_split

    train, _ = validation_split(np.arange(n) % 10, fraction, seed=3)
    assert regimes.training_images(n, fraction) == len(train)


def test_markdown_rows_and_note(cpu_rows: list[dict[str, Any]]) -> None:
    text = regimes.regime_markdown("cpu")
    lines = text.splitlines()
    setups = [line for line in lines if line.startswith("| `")]
    thesis = [line for line in lines if line.startswith("| **thesis** |")]
    assert (
        len(setups) == len(cpu_rows) == 8
    )  # pareto_threshold 2 + loss_terms 1 + baselines 1 + pareto_lr_reg 2 setups, 2 generalization cases
    notebooks = [s.split(" | ")[0] for s in setups]
    assert notebooks.count("| `loss_terms`") == 1
    assert notebooks.count("| `baselines`") == 1
    assert notebooks.count("| `pareto_lr_reg`") == 2
    assert len(thesis) == 2  # the MLP and the CNN; no ResNet trains under cpu
    assert "**37,500**" in thesis[0] and "**39,100**" in thesis[1]
    assert "| 7,200 of 8,000 | 2 | 32 | 450 | 1e-3 | 5 | 1/83 |" in text
    assert "- MLP: 450–580 steps per run = 1/83–1/65 of the thesis's 37,500" in text
    assert "lr 1e-3, 3e-3 instead of 1e-4" in text


def test_unknown_profile_is_named() -> None:
    with pytest.raises(ValueError, match="'huge'.*allowed"):
        regimes.regime_rows("huge")
    with pytest.raises(ValueError, match="'huge'"):
        regimes.regime_markdown("huge")


def test_prepare_writes_regimes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: book/a\n")
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "a.md").write_text(
        "# A\n\n```{include} generated/regimes.md\n```\n"
    )
    monkeypatch.setenv("LQS_RESULTS", str(tmp_path / "results"))
    executed = tmp_path / "results" / "smoke" / "executed" / "nb.ipynb"
    executed.parent.mkdir(parents=True)
    executed.write_text(
        json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    gen = lb.prepare(
        "smoke",
        toc=toc,
        generated=tmp_path / "book" / "generated",
        mathjax=False,
        log=False,
    )
    assert (gen / "regimes.md").read_text() == regimes.regime_markdown("smoke")
    assert "| 450 of 500 | 1 | 32 | 15 |" in (gen / "regimes.md").read_text()
