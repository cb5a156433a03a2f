import json
import subprocess
import sys


def harness(*args):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=300)


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
