import importlib.util
import json
import os
import subprocess
import sys
import time

import pandas as pd
import yaml
from mlflow.tracking import MlflowClient


def harness(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
    )


def test_train_prints_a_result():
    run = harness("train", "--train-size", "200", "--epochs", "1", "--param", "insertion=dense", "--param", "order=2")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["params"] == {"seed": 0, "insertion": "dense", "order": 2} and result["test_accuracy"] is not None


def test_bad_input_is_one_clear_line_and_exit_2():
    run = harness("train", "--param", "insertion=dense", "--param", "function=log")
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("harness: error:")]
    assert len(errors) == 1 and "log1p" in errors[0]


def harness_here(capsys, monkeypatch, *args, cwd, env):
    """`harness` in this process (TensorFlow loads once per test process, not once per command): its exit code and
    what it printed, as `harness` gives them."""
    from harness.cli import main

    monkeypatch.chdir(cwd)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = main(list(args))
    printed = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, printed.out, printed.err)


def one_error_line(run):
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert lines[-1].startswith("harness: error: ") and not [line for line in lines if line.startswith("harness:")][:-1]
    return lines[-1]


BEFORE_TENSORFLOW = """
import sys
from harness.cli import main
code = main(sys.argv[1:])
assert "tensorflow" not in sys.modules, "TensorFlow was imported before the error"
sys.exit(code)
"""


def test_a_bad_space_or_flag_answers_before_tensorflow_loads(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("dataset: {name: digits\nparams:\n  insertion: [none\n")
    empty = tmp_path / "empty.yaml"
    empty.write_text("params: {}\n")
    cases = {
        ("search", "--space", str(bad_yaml)): "bad.yaml: not valid YAML at line 2, column 7",
        ("search", "--space", str(empty)): "params: is empty; it must name at least one parameter",
        ("search", "--data-dir", str(tmp_path / "absent")): f"--data-dir {tmp_path / 'absent'}: no such folder",
        ("search", "--seeds", "1"): "--seeds must be at least 2",
        ("train", "--param", "order=24"): "order: 24 is out of range",
    }
    for args, expected in cases.items():
        run = subprocess.run(
            [sys.executable, "-c", BEFORE_TENSORFLOW, *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env={**os.environ, "HARNESS_HOME": str(tmp_path / "harness-runs")},
        )
        assert expected in one_error_line(run), args
    assert not (tmp_path / "harness-runs").exists()  # nothing written


def test_an_unreachable_database_or_tracking_server_is_one_line_without_the_password(tmp_path, capsys, monkeypatch):
    refused = "postgresql://u:s3cret@127.0.0.1:1/db"
    for args, expected in (
        (["--storage", refused], "storage postgresql://u:***@127.0.0.1:1/db: cannot connect"),
        (
            ["--tracking-uri", "http://u:s3cret@127.0.0.1:1"],
            "MLflow tracking server http://u:***@127.0.0.1:1 does not answer",
        ),
    ):
        run = harness_here(
            capsys,
            monkeypatch,
            "search",
            "--trials",
            "1",
            "--confirm",
            "0",
            *args,
            cwd=tmp_path,
            env={"HARNESS_HOME": str(tmp_path / "harness-runs")},
        )
        assert expected in one_error_line(run) and "s3cret" not in run.stdout + run.stderr
    assert not list((tmp_path / "harness-runs").glob("mlflow.db"))  # the storage failed before MLflow was touched


WITHOUT_PSYCOPG = """
import sys
class NoPsycopg:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("psycopg", "psycopg2"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoPsycopg())
from harness.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_missing_database_driver_names_the_extra(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            WITHOUT_PSYCOPG,
            "search",
            "--trials",
            "1",
            "--confirm",
            "0",
            "--storage",
            "postgresql://u:s3cret@127.0.0.1:1/db",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    line = one_error_line(run)
    assert "driver is missing" in line and "pip install 'taylor-harness[postgres]'" in line and "s3cret" not in line


def test_each_bad_input_a_user_met_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    env = {"HARNESS_HOME": str(tmp_path / "home")}
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.txt").write_text("two years of work")
    cases = {
        ("benchmark", "--from-study", "nosuch"): "--from-study nosuch: no such study in journal:",
        ("compare-engines", "--budget", "4", "--out", str(out)): "did not write (thesis.txt)",
    }
    if importlib.util.find_spec("torch") is None:
        cases[("search", "--sampler", "gp")] = "--sampler gp needs PyTorch, which is not installed"
    for args, expected in cases.items():
        run = harness_here(capsys, monkeypatch, *args, cwd=tmp_path, env=env)
        assert expected in one_error_line(run), args
    assert (out / "thesis.txt").read_text() == "two years of work" and [p.name for p in out.iterdir()] == ["thesis.txt"]


def test_a_report_says_at_once_that_its_tracking_server_is_down(tmp_path):
    started = time.monotonic()
    run = harness(
        "report",
        "--study",
        "typo",
        "--tracking-uri",
        "http://u:s3cret@127.0.0.1:1",
        cwd=tmp_path,
        env={"HARNESS_HOME": str(tmp_path / "home")},
    )
    line = one_error_line(run)
    assert "MLflow tracking server http://u:***@127.0.0.1:1 does not answer" in line
    assert "s3cret" not in run.stdout + run.stderr and time.monotonic() - started < 60
    assert not (tmp_path / "reports").exists()


def test_an_internal_error_is_one_line_without_a_password(monkeypatch, capsys):
    from harness import cli

    def broken(args):
        raise RuntimeError("lost the connection to postgresql://harness:s3cret@db:5432/optuna")

    monkeypatch.setitem(cli.COMMANDS, "report", broken)
    assert cli.main(["report", "--study", "x"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        "harness: internal error: RuntimeError: lost the connection to postgresql://harness:***@db:5432/"
        "optuna (set HARNESS_DEBUG=1 for the traceback)"
    ]


def test_no_password_reaches_a_report_made_through_a_url_that_has_one(tmp_path, mlflow_server):
    tracking = mlflow_server.replace("http://", "http://u:s3cret@")
    env = {"HARNESS_HOME": str(tmp_path / "home")}
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "dataset": {"name": "digits", "train_size": 120, "val_size": 40, "test_size": 40},
                "training": {"epochs": 1, "seed": 0},
                "params": {"insertion": ["none", "dense"], "width": 0.25},
            }
        )
    )
    run = harness(
        "search",
        "--space",
        str(space),
        "--study",
        "secret-test",
        "--trials",
        "2",
        "--confirm",
        "0",
        "--tracking-uri",
        tracking,
        cwd=tmp_path,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    typo = harness("report", "--study", "typo2", "--tracking-uri", tracking, cwd=tmp_path, env=env)
    assert "does not exist" in one_error_line(typo) and "u:***@" in typo.stderr
    out = tmp_path / "report"
    made = harness(
        "report", "--study", "secret-test", "--tracking-uri", tracking, "--out", str(out), cwd=tmp_path, env=env
    )
    assert made.returncode == 0, made.stderr[-3000:]
    for output in (run, typo, made):
        assert "s3cret" not in output.stdout + output.stderr
    for file in [*out.iterdir(), *(tmp_path / "home").rglob("*")]:
        if file.is_file():
            assert b"s3cret" not in file.read_bytes(), file
    assert pd.read_csv(out / "trials.csv")["run_url"].str.startswith("http://u:***@").all()
    client = MlflowClient(mlflow_server)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("secret-test").experiment_id], "tags.`harness.role` = 'search'"
    )
    uploaded = client.download_artifacts(parent.info.run_id, "report/trials.csv", str(tmp_path))
    assert "s3cret" not in open(uploaded).read()
