import json
import subprocess
import sys


def harness(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


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
        run = subprocess.run([sys.executable, "-c", BEFORE_TENSORFLOW, *args], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
        assert expected in one_error_line(run), args
    assert not (tmp_path / "harness-runs").exists()  # nothing written


def test_an_unreachable_database_or_tracking_server_is_one_line_without_the_password(tmp_path):
    refused = "postgresql://u:s3cret@127.0.0.1:1/db"
    for args, expected in (
        (["--storage", refused], "storage postgresql://u:***@127.0.0.1:1/db: cannot connect"),
        (["--tracking-uri", "http://u:s3cret@127.0.0.1:1"], "MLflow tracking server http://u:***@127.0.0.1:1 does not answer"),
    ):
        run = harness("search", "--trials", "1", "--confirm", "0", *args, cwd=tmp_path)
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
    run = subprocess.run([sys.executable, "-c", WITHOUT_PSYCOPG, "search", "--trials", "1", "--confirm", "0",
                          "--storage", "postgresql://u:s3cret@127.0.0.1:1/db"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    line = one_error_line(run)
    assert "driver is missing" in line and "pip install 'taylor-harness[postgres]'" in line and "s3cret" not in line
