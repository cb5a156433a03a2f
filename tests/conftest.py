import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
    """The datasets in ../shared/data beside the checkout, where they exist."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"no shared datasets at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def digits():
    from harness import data

    return data.load("digits", train_size=256, val_size=64, test_size=128)
