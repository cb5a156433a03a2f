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
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
         f"{ROOT}[gpu]"],
        capture_output=True, text=True, timeout=600,
    )
    if run.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"pip could not resolve the gpu extra: {run.stderr[-2000:]}")
        pytest.skip(f"pip could not resolve here (no package index?): {run.stderr[-300:]}")
    names = {item["metadata"]["name"].lower().replace("_", "-") for item in json.loads(report.read_text())["install"]}
    assert names & TENSORFLOW_DISTRIBUTIONS == {"tensorflow"}
    if sys.platform == "linux":
        assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12"} <= names  # what [and-cuda] brings
