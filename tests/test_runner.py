"""The papermill runner: parameter resolution, YAML errors, atomic outputs."""

from __future__ import annotations

import json
import math
import re
import textwrap
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    long_error = False
    ```

    ```{code-cell} ipython3
    import pathlib, json
    assert not fail, "asked to fail"
    if long_error:
        raise ValueError("config key 'kernel_granularity' has the value 'diagonal'; " + "x" * 3000 + " END")
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
    assert runner.load_yaml("a: 1e-9\nb: 3\nc: [1e-12, 1.5]") == {
        "a": 1e-9,
        "b": 3,
        "c": [1e-12, 1.5],
    }


def test_resolve_merges_defaults_profile_and_overrides(project):
    params = runner.resolve_parameters("demo", "cpu", {"epochs": 5})
    assert params == {
        "profile": "cpu",
        "results_dir": "",
        "lr": 1e-4,
        "epochs": 5,
        "fail": False,
        "grid": [1, 2],
        "long_error": False,
    }


@pytest.mark.parametrize(
    "yaml_text,message",
    [
        ("epochs: [1, 2\n", "malformed YAML in .*demo.yaml"),
        ("- 1\n- 2\n", "must hold a mapping"),
        (
            "epoch: 2\n",
            "unknown parameter 'epoch' for notebook 'demo'; allowed: epochs, fail, grid, long_error, lr",
        ),
        ("epochs:\n", "parameter 'epochs' is null .* allowed: an integer >= 1"),
        (
            "epochs: 0\n",
            "parameter 'epochs' has the bad value 0; allowed: an integer >= 1",
        ),
        (
            "lr: -1.0e-3\n",
            "parameter 'lr' has the bad value -0.001; allowed: a number > 0",
        ),
        (
            "grid: []\n",
            "parameter 'grid' is an empty list; the notebook needs at least one value",
        ),
        ("profile: full\n", "parameter 'profile' = 'full' is set by --profile P"),
        (
            "results_dir: /tmp/x\n",
            "parameter 'results_dir' = '/tmp/x' is set by the runner",
        ),
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
    with pytest.raises(
        ValueError, match="unknown profile 'gpu'; allowed: smoke, cpu, full"
    ):
        runner.resolve_parameters("demo", "gpu")


def test_parameters_cell_must_be_unique_and_literal(project):
    nb = project / "notebooks" / "demo.md"
    nb.write_text(NOTEBOOK.replace("epochs = 1", "epochs = len([1])"))
    with pytest.raises(ValueError, match="not a plain literal"):
        runner.notebook_parameters("demo")
    nb.write_text(NOTEBOOK.replace(":tags: [parameters]\n", ""))
    with pytest.raises(
        ValueError, match="exactly one cell tagged 'parameters', found 0"
    ):
        runner.notebook_parameters("demo")


def test_overrides_go_to_a_custom_folder(project):
    base, _ = runner.output_locations("demo", "cpu", None)
    custom, executed = runner.output_locations("demo", "cpu", {"lr": 0.1})
    assert base == paths.results_dir("demo", "cpu")
    assert "custom" in custom.parts and custom != base and executed.parent == custom


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "epochs=",
            r"--set: parameter 'epochs' is null \(YAML null: an empty value as in `epochs=`",
        ),
        ("epochs=~", r"parameter 'epochs' is null"),
        (
            "epochs=-1",
            r"parameter 'epochs' has the bad value -1; allowed: an integer >= 1",
        ),
        ("lr=0", r"parameter 'lr' has the bad value 0.0; allowed: a number > 0"),
        ("lr=.nan", r"parameter 'lr' has the bad value nan"),
        ("grid=[]", r"parameter 'grid' is an empty list"),
        ("grid=[1, null]", r"parameter 'grid' has null at grid\[1\]"),
        ("fail=maybe", r"parameter 'fail' must be of type bool"),
        ("profile=full", r"parameter 'profile' = 'full' is set by --profile P"),
    ],
)
def test_bad_overrides_are_refused_before_anything_runs(
    project, capsys, override, message
):
    assert (
        runner.main(["demo", "--profile", "smoke", "--set", override, "--dry-run"]) == 2
    )
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert (
        "Fix: give an allowed value, e.g. --set '" in err
        or "must be of type" in err
        or "set by" in err
    )
    assert not paths.results_root().exists()  # nothing ran, nothing was written


def test_every_notebook_parameter_has_a_declared_rule():
    from companion.engine import parameters

    declared = parameters.rules()
    missing = {
        nb.stem: sorted(set(runner.notebook_parameters(nb.stem)) - set(declared))
        for nb in sorted(paths.NOTEBOOKS_DIR.glob("*.md"))
    }
    assert not {k: v for k, v in missing.items() if v}, (
        "add a rule per parameter in companion/engine/parameters.py"
    )


@pytest.mark.parametrize(
    "text,items",
    [
        ("", []),
        ("epochs=3", ["epochs=3"]),
        ("seeds=[0, 1] epochs=3", ["seeds=[0, 1]", "epochs=3"]),
        ("seeds=[0, 1];epochs=3 ; lr=1e-3", ["seeds=[0, 1]", "epochs=3", "lr=1e-3"]),
        (
            "setups=[{dataset: mnist, arch: mlp}] thresholds=[1e-9, 1e-6]",
            ["setups=[{dataset: mnist, arch: mlp}]", "thresholds=[1e-9, 1e-6]"],
        ),
        ("note='a b; c' x=\"[ \"", ["note='a b; c'", 'x="[ "']),
        ("epochs=", ["epochs="]),
    ],
)
def test_split_params_keeps_brackets_and_quotes_together(text, items):
    assert runner.split_params(text) == items


@pytest.mark.parametrize(
    "text,message",
    [
        ("seeds=[0, 1", "bracket\\(s\\) not closed"),
        ("seeds=0]", "closes a bracket that was not opened"),
        ("note='open", "quote ' is not closed"),
        (
            "seeds = [0]",
            "'seeds' is not key=value; write key=value without spaces around '='",
        ),
        ("=3", "'=3' is not key=value"),
    ],
)
def test_split_params_errors_show_the_form(text, message):
    with pytest.raises(ValueError, match=message) as err:
        runner.split_params(text)
    assert 'PARAMS="seeds=[0, 1] epochs=3"' in str(err.value)


def test_params_and_set_reach_the_notebook(project, capsys):
    assert (
        runner.main(
            [
                "demo",
                "--profile",
                "smoke",
                "--params",
                "grid=[3, 4, 5] epochs=3",
                "--set",
                "lr=0.5",
                "--dry-run",
            ]
        )
        == 0
    )
    params = json.loads(capsys.readouterr().out)
    assert (params["grid"], params["epochs"], params["lr"]) == ([3, 4, 5], 3, 0.5)


def test_makefile_passes_params_whole(repo_root):
    """`make run PARAMS="seeds=[0, 1] ..."` reaches the runner as one string (was split at the space)."""
    import subprocess

    proc = subprocess.run(
        [
            "make",
            "-s",
            "run",
            "NB=background_figures",
            "PROFILE=smoke",
            "PARAMS=mlp_units=[4, 6, 3]; seed=2",
            "RUN_FLAGS=--dry-run",
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    params = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert params["mlp_units"] == [4, 6, 3] and params["seed"] == 2
    help_text = subprocess.run(
        ["make", "-s", "help"], cwd=repo_root, capture_output=True, text=True
    ).stdout
    assert (
        'PARAMS="seeds=[0, 1] epochs=3' in help_text
        and "RUN_FLAGS=--dry-run" in help_text
    )


def test_datasets_missing_refused_before_running(project, monkeypatch):
    """Every dataset a notebook's setups ask for is missing: refused with the files and the fix (no KeyError later)."""
    import pandas as pd

    from companion import data

    present = {"fashion_mnist"}

    def available(names):
        return pd.DataFrame(
            [
                {
                    "dataset": n,
                    "present": n in present,
                    "label": n.upper(),
                    "missing": f"data/{n}/x.tgz" if n not in present else "",
                    "fetch": "make data",
                }
                for n in names
            ]
        )

    monkeypatch.setattr(data, "available", available)
    runner.check_datasets(
        "nb", {"setups": [{"dataset": "cifar10"}, {"dataset": "fashion_mnist"}]}
    )  # one is enough
    runner.check_datasets("nb", {"seeds": [0]})  # no setups: nothing to check
    with pytest.raises(FileNotFoundError) as err:
        runner.check_datasets(
            "nb", {"setups": [{"dataset": "cifar10"}, {"dataset": "imagenette"}]}
        )
    msg = str(err.value)
    assert "notebook 'nb' not run: none of the datasets" in msg
    assert (
        "CIFAR10 (cifar10): data/cifar10/x.tgz missing; fix: make data" in msg
        and "imagenette" in msg
    )
    with pytest.raises(FileNotFoundError, match="strict_data is true"):
        runner.check_datasets(
            "nb",
            {
                "strict_data": True,
                "setups": [{"dataset": "fashion_mnist"}, {"dataset": "cifar10"}],
            },
        )


def test_all_datasets_missing_builds_the_not_run_result(tmp_path, monkeypatch, capsys):
    """`--set 'setups=[{dataset: cifar10}]'` without the file: no KeyError, no training,
    exit 0 and the "not run" snippet naming the missing file and its fix."""
    import pandas as pd

    from companion import data

    def available(names):
        return pd.DataFrame(
            [
                {
                    "dataset": n,
                    "present": False,
                    "label": n.upper(),
                    "missing": f"data/{n}/x.tgz",
                    "fetch": "make data",
                    "is_subset": None,
                }
                for n in names
            ]
        )

    monkeypatch.setattr(data, "available", available)
    monkeypatch.setenv("LQS_RESULTS", str(tmp_path / "results"))
    argv = ["pareto_threshold", "--profile", "smoke", "--quiet"]
    argv += ["--set", "setups=[{dataset: cifar10}]"]
    assert runner.main(argv) == 0
    written = list((tmp_path / "results").rglob("pareto_threshold_missing.md"))
    assert len(written) == 1, written
    text = written[0].read_text()
    assert "not run" in text and "data/cifar10/x.tgz" in text and "make data" in text
    assert not list((tmp_path / "results").rglob("*.ipynb")), "nothing may be executed"
    assert "not run" in capsys.readouterr().out
    # the dry run says so too, and strict mode refuses instead
    assert runner.main([*argv, "--dry-run"]) == 0
    assert runner.main([*argv, "--set", "strict_data=true"]) == 2


@pytest.mark.slow
def test_failed_rerun_removes_the_old_notebook_and_shows_the_whole_error(
    project, capfd
):
    """A failed run never leaves the previous success looking current; the error's last line is shown whole."""
    out = runner.execute("demo", "smoke", log=lambda *_: None, echo=False)
    assert out.exists()
    (project / "profiles" / "smoke" / "demo.yaml").write_text("long_error: true\n")
    capfd.readouterr()
    assert runner.main(["demo", "--profile", "smoke", "--quiet"]) == 1
    err = capfd.readouterr().err
    assert not out.exists(), (
        "the old executed notebook would pass for the result of the failed run"
    )
    failed = out.with_suffix(".failed.ipynb")
    assert (
        failed.exists() and f"the failed notebook (with the traceback): {failed}" in err
    )
    assert (
        "ValueError: config key 'kernel_granularity' has the value 'diagonal'; "
        + "x" * 3000
        + " END"
        in err
    )
    assert not [
        p for p in out.parent.iterdir() if p.name.startswith(".")
    ]  # no partial or temporary file left
    # a later success replaces the failed notebook
    (project / "profiles" / "smoke" / "demo.yaml").write_text("epochs: 2\n")
    assert runner.main(["demo", "--profile", "smoke", "--quiet"]) == 0
    assert out.exists() and not failed.exists()


@pytest.mark.slow
def test_execute_is_atomic(project, capfd):
    out = runner.execute("demo", "smoke", log=lambda *_: None)
    assert (
        "demo progress: epochs=2" in capfd.readouterr().out
    )  # the notebook's output is streamed live
    assert out.exists() and out == paths.executed_dir("smoke") / "demo.ipynb"
    written = json.loads((paths.results_dir("demo", "smoke") / "out.json").read_text())
    assert written == {"lr": 1e-4, "epochs": 2, "grid": [1, 2]}
    assert (
        json.loads(
            (paths.results_dir("demo", "smoke") / "parameters.json").read_text()
        )["epochs"]
        == 2
    )
    # a failing run leaves the good executed notebook untouched and keeps the failed one aside
    before = out.read_bytes()
    assert (
        runner.main(
            ["demo", "--profile", "smoke", "--set", "fail=true", "--set", "epochs=3"]
        )
        == 1
    )
    assert out.read_bytes() == before
    failed = list(paths.results_root().glob("custom/smoke/demo-*/demo.failed.ipynb"))
    assert len(failed) == 1
    assert not list(paths.results_root().rglob("*.partial.ipynb"))
    assert runner.main(["demo", "--profile", "smoke", "--set", "epochs"]) == 2
    capfd.readouterr()
    assert (
        runner.main(["demo", "--profile", "smoke", "--set", "epochs=4", "--quiet"]) == 0
    )
    assert "demo progress" not in capfd.readouterr().out


def test_execution_order_runs_readers_after_writers():
    order = runner.execution_order(
        ["pareto_threshold", "baselines", "loss_terms", "hello"]
    )
    assert order == [
        "loss_terms",
        "baselines",
        "hello",
        "pareto_threshold",
    ]  # as make runs them
    assert runner.execution_order(["baselines"]) == [
        "baselines"
    ]  # a missing writer is not added


def test_makefile_encodes_the_same_order():
    makefile = (paths.ROOT / "Makefile").read_text()
    for reader, writers in runner.RUNS_AFTER.items():
        for writer in writers:
            rule = f"results/$(PROFILE)/executed/{reader}.ipynb: | results/$(PROFILE)/executed/{writer}.ipynb"
            assert rule in makefile, rule


# ------------------------------------------------------------------------------------------------
# property: every bad value for every parameter of every real notebook is refused by the runner,
# with its own error naming the parameter (exit 2), before anything runs


#: parameters whose numbers may be negative (a worked example's weights and gradients, a Sobel kernel)
_SIGNED = {"worked_p", "worked_g", "conv_kernel"}
_REAL = sorted(p.stem for p in paths.NOTEBOOKS_DIR.glob("*.md"))


def _numeric(default) -> bool:
    if isinstance(default, bool):
        return False
    if isinstance(default, (int, float)):
        return True
    return (
        isinstance(default, list)
        and bool(default)
        and all(_numeric(v) for v in default)
    )


def _bad_value(name: str, default) -> st.SearchStrategy:
    """Values that must be refused for a parameter whose default is ``default`` (independent of the rules)."""
    from companion.engine import parameters

    rule = parameters.rules()[name]
    junk = [
        st.lists(st.integers(), min_size=1, max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
    ]
    out = []
    if default is not None and not rule.nullable:
        out.append(st.none())
    if isinstance(default, bool):
        out += [st.integers(), st.text(max_size=4), *junk]
    elif isinstance(default, int):
        out += [
            st.text(max_size=4),
            st.booleans(),
            st.floats(),
            *junk,
            st.integers(max_value=-1),
        ]
    elif isinstance(default, float):
        out += [
            st.text(max_size=4),
            st.booleans(),
            *junk,
            st.sampled_from([math.nan, math.inf, -math.inf]),
        ]
        if name not in _SIGNED:
            out.append(st.floats(max_value=-1e-300, allow_infinity=False))
    elif isinstance(default, str):
        out += [st.integers(), st.floats(), st.booleans(), *junk]
    elif isinstance(default, dict):
        out += [st.integers(), st.text(max_size=4), st.lists(st.integers(), max_size=2)]
    elif isinstance(default, list):
        out += [
            st.integers(),
            st.text(max_size=4),
            st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
        ]
        if not rule.allow_empty:
            out.append(st.just([]))
        if _numeric(default):
            flat = default[0] if not isinstance(default[0], list) else default[0][0]
            out.append(
                st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=2)
            )
            if name not in _SIGNED:
                bad = (
                    st.integers(max_value=-1)
                    if isinstance(flat, int)
                    else st.floats(max_value=-1e-300)
                )
                out.append(
                    bad.map(
                        lambda v: [v] if not isinstance(default[0], list) else [[v]]
                    )
                )
        else:
            out.append(
                st.lists(st.integers(), min_size=1, max_size=2)
                if isinstance(default[0], (str, dict))
                else st.lists(st.text(max_size=3), min_size=1, max_size=2)
            )
    elif (
        default is None
    ):  # nullable by default (init_bits): wrong types and numbers out of every range
        out += [
            st.text(min_size=1, max_size=4),
            st.booleans(),
            st.floats(allow_nan=False).filter(lambda v: not float(v).is_integer()),
            st.integers(max_value=-1),
            *junk,
        ]
    return st.one_of(out)


@pytest.fixture
def fast_notebook_parameters(monkeypatch):
    import functools

    monkeypatch.setattr(
        runner, "notebook_parameters", functools.cache(runner.notebook_parameters)
    )


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_property_bad_set_values_are_refused_naming_the_parameter(
    data, fast_notebook_parameters, capsys
):
    import yaml

    notebook = data.draw(st.sampled_from(_REAL), label="notebook")
    defaults = runner.notebook_parameters(notebook)
    name = data.draw(
        st.sampled_from(
            sorted(k for k in defaults if k not in ("profile", "results_dir"))
        ),
        label="name",
    )
    value = data.draw(_bad_value(name, defaults[name]), label="value")
    text = (
        ""
        if value is None
        else yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    )
    text = text.removesuffix("...").strip()
    code = runner.main(
        [notebook, "--profile", "smoke", "--set", f"{name}={text}", "--dry-run"]
    )
    err = capsys.readouterr().err
    assert code == 2, f"{notebook}: --set {name}={text} was accepted (exit {code})"
    assert repr(name) in err and "Traceback" not in err, err


def test_every_parameter_refuses_null_and_empty_lists(fast_notebook_parameters):
    """Exhaustive over every parameter of every notebook: None unless nullable, [] unless declared."""
    from companion.engine import parameters

    for notebook in _REAL:
        for name, default in runner.notebook_parameters(notebook).items():
            if name in ("profile", "results_dir"):
                continue
            rule = parameters.rules()[name]
            bad = [None] if default is not None and not rule.nullable else []
            bad += [[]] if isinstance(default, list) and not rule.allow_empty else []
            for value in bad:
                with pytest.raises(ValueError, match=f"parameter {name!r}"):
                    runner.resolve_parameters(notebook, "smoke", {name: value})


# --------------------------------------------------------------------------------------------
# Output cleaning: the executed notebook keeps what a reader needs


TF_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796032996.119074   22738 port.cc:153] oneDNN custom operations are on.",
    "E0000 00:00:1796033116.839979   24947 node_def_util.cc:682] NodeDef mentions attribute"
    " use_unbounded_threadpool which is not in the op definition",
    "2024-01-05 10:00:00.123456: I tensorflow/core/platform/cpu_feature_guard.cc:210] AVX",
    "WARNING:tensorflow:5 out of the last 13 calls to <function f> triggered tf.function",
    "WARNING:absl:Compiled the loaded model, but the compiled metrics have yet to be built.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
]


@pytest.mark.parametrize("line", TF_LINES)
def test_library_log_lines_are_recognised(line):
    assert runner.NOISE_LINE_RE.match(line)


@pytest.mark.parametrize(
    "line",
    [
        "PTQ: 6 runs (0 already stored) -> /tmp/runs",
        "Warning: the CIFAR-10 archive is missing",
        "E0000 is not a log line without its time and source",
        "| method | accuracy (%) |",
    ],
)
def test_ordinary_lines_are_not_noise(line):
    assert not runner.NOISE_LINE_RE.match(line)
    assert not runner.PROGRESS_RE.match(line)


def test_clean_text_keeps_each_bars_final_frame():
    bar = "PTQ: {p:3d}%|{b:<10}| {k}/6 [00:0{k}<00:00,  1.5s/run, test acc 0.5{k}0]"
    frames = [
        "\r" + bar.format(p=100 * k // 6, b="#" * (10 * k // 6), k=k) for k in range(7)
    ]
    # a C++ log line interrupts the bar; tqdm's close repeats the last frame
    text = "\n" + "".join(frames[:3]) + "\n" + TF_LINES[2] + "\n" + "".join(frames[3:])
    text += frames[-1]
    assert runner.clean_text(text) == bar.format(p=100, b="#" * 10, k=6) + "\n"
    two = "\rA:   0%|  | 0/1 [00:00<?]\rA: 100%|##| 1/1 [00:01<00:00]\n" * 2
    assert runner.clean_text(two) == "A: 100%|##| 1/1 [00:01<00:00]\n"
    assert runner.clean_text("\n".join(TF_LINES) + "\n\n") == ""
    assert runner.clean_text("a\n\n\n\nb\n\n") == "a\n\nb\n"


def test_clean_outputs_merges_streams_and_drops_noise_and_empty_outputs():
    def stream(name, text):
        return {"output_type": "stream", "name": name, "text": text}

    png = {
        "output_type": "display_data",
        "data": {"image/png": "iVBOR"},
        "metadata": {},
    }
    error = {"output_type": "error", "ename": "E", "evalue": "v", "traceback": []}
    nb = {
        "cells": [
            {"cell_type": "markdown", "source": "x"},
            {
                "cell_type": "code",
                "outputs": [
                    stream("stderr", TF_LINES[0] + "\n" + TF_LINES[1] + "\n"),
                    stream("stdout", "sweep: 2 runs (1 already stored) -> /runs\n"),
                    stream("stderr", "\n"),
                    stream("stderr", "\rsweep:   0%|  | 0/2 [00:00<?, ?run/s]"),
                    stream("stderr", TF_LINES[2] + "\n"),
                    stream("stderr", "\rsweep:  50%|# | 1/2 [00:01<00:01, 1s/run]"),
                    stream(
                        "stderr", ["\rsweep: 100%|##| 2/2 ", "[00:02<00:00, 1s/run]"]
                    ),
                    stream("stderr", "\rsweep: 100%|##| 2/2 [00:02<00:00, 1s/run]\n"),
                    stream("stdout", ["2 runs on ", "MNIST\n"]),
                    png,
                    {"output_type": "display_data", "data": {"text/plain": [""]}},
                    {"output_type": "execute_result", "data": {}, "metadata": {}},
                ],
            },
            {"cell_type": "code", "outputs": [stream("stderr", TF_LINES[3]), error]},
        ]
    }
    cleaned = runner.clean_outputs(nb)
    assert cleaned is nb
    # the finished bar is a result: it joins the printed lines around it
    assert nb["cells"][1]["outputs"] == [
        stream(
            "stdout",
            "sweep: 2 runs (1 already stored) -> /runs\n"
            "sweep: 100%|##| 2/2 [00:02<00:00, 1s/run]\n"
            "2 runs on MNIST\n",
        ),
        png,
    ]
    assert nb["cells"][2]["outputs"] == [error]


def _legibility_warning(message: str) -> str:
    """A figure-legibility warning as the kernel's stderr shows it (Python's format)."""
    from companion.chapters import style

    return warnings.formatwarning(
        message, style.FigureLegibilityWarning, "/tmp/ipykernel_7/42.py", 3, "fig("
    )


def test_figure_warnings_are_taken_out_of_the_stored_notebook(tmp_path):
    from companion.chapters import style

    assert runner.LEGIBILITY_WARNING == style.FigureLegibilityWarning.__name__
    first, second = "figure nb/a: text 'x' is 7.1 pt", "figure nb/b: text 'y' is 5.0 pt"
    shown = _legibility_warning(first)
    assert runner.FIGURE_WARNING_RE.match(shown.splitlines()[0])
    outputs = [
        {"output_type": "stream", "name": "stderr", "text": shown},
        {"output_type": "stream", "name": "stdout", "text": "3 runs\n"},
        {"output_type": "stream", "name": "stderr", "text": ["  kept\n", "warned:\n"]},
        {
            "output_type": "stream",
            "name": "stderr",
            "text": _legibility_warning(second),
        },
    ]
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "outputs": outputs}]}))
    assert runner._clean_file(path) == [first, second]  # for the terminal
    stored = json.loads(path.read_text())["cells"][0]["outputs"]
    texts = "".join(o["text"] for o in stored)
    assert runner.LEGIBILITY_WARNING not in texts and "fig(" not in texts
    assert texts == "3 runs\n  kept\nwarned:\n"  # everything else stays


FIGURE_NOTEBOOK = NOTEBOOK.split("```{code-cell}")[0] + textwrap.dedent(
    """\
    ```{code-cell} ipython3
    :tags: [parameters]

    profile = "smoke"
    results_dir = ""
    ```

    ```{code-cell} ipython3
    import matplotlib.pyplot as plt
    from companion.chapters.style import save_figure

    fig, ax = plt.subplots(figsize=(12, 2))
    ax.set_xlabel("tiny", fontsize=5)
    save_figure(fig, results_dir, "figs", "tiny", "A tiny label.", show=False)
    print("saved")
    ```
    """
)


@pytest.mark.slow
def test_a_legibility_warning_reaches_the_terminal_not_the_page(project, capfd):
    (project / "notebooks" / "figs.md").write_text(FIGURE_NOTEBOOK)
    for p in paths.PROFILES:
        (project / "profiles" / p / "figs.yaml").write_text("{}\n")
    logged: list[str] = []
    out = runner.execute("figs", "smoke", log=logged.append)
    assert "FigureLegibilityWarning" in capfd.readouterr().err  # streamed live
    assert any("figs: FigureLegibilityWarning: figure figs/tiny" in m for m in logged)
    stored = [
        line
        for cell in json.loads(out.read_text())["cells"]
        for o in cell.get("outputs", [])
        if o.get("output_type") == "stream"
        for line in "".join(o["text"]).splitlines()
    ]
    assert stored == ["saved"]


def test_kernel_arguments_and_environment_silence_libraries(monkeypatch):
    assert "--IPKernelApp.capture_fd_output=False" in runner.KERNEL_ARGUMENTS
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)
    with runner._kernel_environment():
        import os

        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
        assert os.environ["GRPC_VERBOSITY"] == "ERROR"
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert "GRPC_VERBOSITY" not in os.environ


def test_clean_text_keeps_the_final_line_of_each_run_of_a_reused_bar():
    first = "\rsweep:   0%|  | 0/2 [00:00<?]\rsweep: 100%|##| 2/2 [00:02<00:00]\n"
    second = "\rsweep:   0%|  | 0/3 [00:00<?]\rsweep: 100%|##| 3/3 [00:03<00:00]\n"
    between = "UserWarning: something the reader should see\n"
    assert runner.clean_text(first + between + second) == (
        "sweep: 100%|##| 2/2 [00:02<00:00]\n"
        + between
        + "sweep: 100%|##| 3/3 [00:03<00:00]\n"
    )


def test_injected_parameters_are_wrapped_to_the_code_width():
    long_dict = {f"key_{i}": i * 0.5 for i in range(12)}
    source = (
        "# Parameters\n"
        'profile = "smoke"\n'
        f"common = {long_dict!r}\n"
        f"setups = {[{'dataset': 'fashion_mnist', 'arch': 'mlp', 'n': i} for i in range(3)]!r}\n"
    )
    wrapped = runner.wrap_parameters(source)
    assert max(len(line) for line in wrapped.splitlines()) <= runner.MAX_CODE_LINE
    assert wrapped.startswith('# Parameters\nprofile = "smoke"\ncommon = {\n')
    assert wrapped.endswith("\n")
    before, after = {}, {}
    exec(source, {}, before)
    exec(wrapped, {}, after)
    assert after == before
    cell = {
        "cell_type": "code",
        "metadata": {"tags": ["injected-parameters"]},
        "source": source,
        "outputs": [],
    }
    runner.clean_outputs({"cells": [cell]})
    assert cell["source"] == wrapped
