"""The papermill runner: parameter resolution, YAML errors, atomic outputs."""

from __future__ import annotations

import json
import textwrap

import pytest

from companion import paths
from companion.engine import runner

NOTEBOOK = textwrap.dedent(
    """\
    ---
    jupytext:
      text_representation:
        extension: .md
        format_name: myst
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---

    ```{code-cell} ipython3
    :tags: [parameters]

    profile = "smoke"
    results_dir = ""
    lr = 0.001
    epochs = 1
    fail = False
    grid = [1, 2]
    ```

    ```{code-cell} ipython3
    import pathlib, json
    assert not fail, "asked to fail"
    pathlib.Path(results_dir, "out.json").write_text(json.dumps({"lr": lr, "epochs": epochs, "grid": grid}))
    print(f"demo progress: epochs={epochs}")
    ```
    """
)


@pytest.fixture
def project(tmp_path, monkeypatch):
    nb_dir, prof_dir = tmp_path / "notebooks", tmp_path / "profiles"
    nb_dir.mkdir()
    (nb_dir / "demo.md").write_text(NOTEBOOK)
    for p in paths.PROFILES:
        (prof_dir / p).mkdir(parents=True)
        (prof_dir / p / "demo.yaml").write_text("epochs: 2\nlr: 1e-4\n")
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", nb_dir)
    monkeypatch.setattr(paths, "PROFILES_DIR", prof_dir)
    monkeypatch.setenv("LQS_RESULTS", str(tmp_path / "results"))
    return tmp_path


def test_yaml_reads_exponent_floats():
    assert runner.load_yaml("a: 1e-9\nb: 3\nc: [1e-12, 1.5]") == {"a": 1e-9, "b": 3, "c": [1e-12, 1.5]}


def test_resolve_merges_defaults_profile_and_overrides(project):
    params = runner.resolve_parameters("demo", "cpu", {"epochs": 5})
    assert params == {"profile": "cpu", "results_dir": "", "lr": 1e-4, "epochs": 5, "fail": False, "grid": [1, 2]}


@pytest.mark.parametrize(
    "yaml_text,message",
    [
        ("epochs: [1, 2\n", "malformed YAML in .*demo.yaml"),
        ("- 1\n- 2\n", "must hold a mapping"),
        ("epoch: 2\n", "unknown parameter 'epoch' for notebook 'demo'; allowed: epochs, fail, grid, lr"),
        ("epochs: two\n", "parameter 'epochs' must be of type int"),
        ("fail: 1\n", "parameter 'fail' must be of type bool"),
    ],
)
def test_bad_profile_files_are_named(project, yaml_text, message):
    (project / "profiles" / "cpu" / "demo.yaml").write_text(yaml_text)
    with pytest.raises(ValueError, match=message):
        runner.resolve_parameters("demo", "cpu")


def test_missing_things_are_named(project):
    (project / "profiles" / "full" / "demo.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="profiles/full/demo.yaml"):
        runner.resolve_parameters("demo", "full")
    with pytest.raises(FileNotFoundError, match="no notebook 'nope'.*existing: demo"):
        runner.resolve_parameters("nope", "cpu")
    with pytest.raises(ValueError, match="unknown profile 'gpu'; allowed: smoke, cpu, full"):
        runner.resolve_parameters("demo", "gpu")


def test_parameters_cell_must_be_unique_and_literal(project):
    nb = project / "notebooks" / "demo.md"
    nb.write_text(NOTEBOOK.replace("epochs = 1", "epochs = len([1])"))
    with pytest.raises(ValueError, match="not a plain literal"):
        runner.notebook_parameters("demo")
    nb.write_text(NOTEBOOK.replace(":tags: [parameters]\n", ""))
    with pytest.raises(ValueError, match="exactly one cell tagged 'parameters', found 0"):
        runner.notebook_parameters("demo")


def test_overrides_go_to_a_custom_folder(project):
    base, _ = runner.output_locations("demo", "cpu", None)
    custom, executed = runner.output_locations("demo", "cpu", {"lr": 0.1})
    assert base == paths.results_dir("demo", "cpu")
    assert "custom" in custom.parts and custom != base and executed.parent == custom


@pytest.mark.slow
def test_execute_is_atomic(project, capfd):
    out = runner.execute("demo", "smoke", log=lambda *_: None)
    assert "demo progress: epochs=2" in capfd.readouterr().out  # the notebook's output is streamed live
    assert out.exists() and out == paths.executed_dir("smoke") / "demo.ipynb"
    written = json.loads((paths.results_dir("demo", "smoke") / "out.json").read_text())
    assert written == {"lr": 1e-4, "epochs": 2, "grid": [1, 2]}
    assert json.loads((paths.results_dir("demo", "smoke") / "parameters.json").read_text())["epochs"] == 2
    # a failing run leaves the good executed notebook untouched and keeps the failed one aside
    before = out.read_bytes()
    assert runner.main(["demo", "--profile", "smoke", "--set", "fail=true", "--set", "epochs=3"]) == 1
    assert out.read_bytes() == before
    failed = list(paths.results_root().glob("custom/smoke/demo-*/demo.failed.ipynb"))
    assert len(failed) == 1
    assert not list(paths.results_root().rglob("*.partial.ipynb"))
    assert runner.main(["demo", "--profile", "smoke", "--set", "epochs"]) == 2
    capfd.readouterr()
    assert runner.main(["demo", "--profile", "smoke", "--set", "epochs=4", "--quiet"]) == 0
    assert "demo progress" not in capfd.readouterr().out


def test_execution_order_runs_readers_after_writers():
    order = runner.execution_order(["pareto_threshold", "baselines", "loss_terms", "hello"])
    assert order == ["loss_terms", "baselines", "hello", "pareto_threshold"]  # as make runs them
    assert runner.execution_order(["baselines"]) == ["baselines"]  # a missing writer is not added


def test_makefile_encodes_the_same_order():
    makefile = (paths.ROOT / "Makefile").read_text()
    for reader, writers in runner.RUNS_AFTER.items():
        for writer in writers:
            rule = f"results/$(PROFILE)/executed/{reader}.ipynb: | results/$(PROFILE)/executed/{writer}.ipynb"
            assert rule in makefile, rule
