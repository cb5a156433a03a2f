"""The install resolves to exactly one TensorFlow distribution, with or without the gpu extra."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Distributions that each write the `tensorflow` package; two of them in one environment overwrite each other.
TENSORFLOW_DISTRIBUTIONS = {"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tf-nightly"}


def test_the_gpu_extra_resolves_one_tensorflow_and_its_cuda_libraries(tmp_path):
    report = tmp_path / "report.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            f"{ROOT}[gpu]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if run.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"pip could not resolve the gpu extra: {run.stderr[-2000:]}")
        pytest.skip(f"pip could not resolve here (no package index?): {run.stderr[-300:]}")
    names = {item["metadata"]["name"].lower().replace("_", "-") for item in json.loads(report.read_text())["install"]}
    assert names & TENSORFLOW_DISTRIBUTIONS == {"tensorflow"}
    if sys.platform == "linux":
        assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12"} <= names  # what [and-cuda] brings


def test_every_package_the_code_imports_is_declared_and_every_declared_one_is_used():
    import ast
    import importlib.metadata
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements):
        return {re.split(r"[<>=\[; ]", r)[0].lower().replace("_", "-") for r in requirements}

    base = names(project["dependencies"])
    extras = names(r for group in project["optional-dependencies"].values() for r in group)
    imported = set()
    for path in (ROOT / "harness").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    distributions = importlib.metadata.packages_distributions()
    third_party = {
        module: {d.lower().replace("_", "-") for d in distributions[module]}
        for module in imported - {"harness"}
        if module in distributions and module not in sys.stdlib_module_names
    }
    undeclared = {module for module, found in third_party.items() if not found & (base | extras)}
    assert (
        undeclared == set()
    )  # each is a dependency, or an extra's (optuna-dashboard, imported by `harness dashboard`)
    used = set().union(*third_party.values())
    assert base - used == {"tabulate"}  # pandas' to_markdown imports it


def test_what_the_gpu_check_carries_fits_a_device_call():
    """benchmarks/device/wheels.sh resolves the wheels the GPU machine lacks and exits 1 above 64 MiB carried."""
    run = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "device" / "wheels.sh")], capture_output=True, text=True, timeout=600
    )
    if run.returncode != 0 and "over the 64 MiB" not in run.stderr:
        if os.environ.get("CI"):
            pytest.fail(f"the wheels could not be resolved: {run.stderr[-2000:]}")
        pytest.skip(f"pip could not resolve here (no package index?): {run.stderr[-300:]}")
    assert run.returncode == 0, run.stdout[-500:] + run.stderr[-500:]
    wheels = {path.name.split("-")[0].lower() for path in (ROOT / ".whl").glob("*.whl")}
    assert {"keras", "optuna", "mlflow", "mlflow_skinny", "sqlalchemy"} <= wheels and "tensorflow" not in wheels
    assert "of 64" in run.stdout


@pytest.mark.xdist_group("ray")
def test_the_tests_of_one_xdist_group_run_in_one_worker(request):
    # xdist sends a group to one worker by the group's name on each test's id; where the installed pytest and xdist
    # disagree on ids (pytest 9.2 with xdist 3.8), every worker would start its own Ray cluster and PostgreSQL.
    if getattr(request.config.option, "loadgroup", False):
        assert request.node.nodeid.endswith("@ray")
