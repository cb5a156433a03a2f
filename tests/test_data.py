import pickle

import numpy as np
import pytest
from PIL import Image

from harness.training import data


def check_normalised(dataset, shape):
    for images in (dataset.x_train, dataset.x_val, dataset.x_test):
        assert images.dtype == np.float32 and images.shape[1:] == shape
        assert 0.0 <= images.min() and images.max() <= 1.0
    # Pixels keep their fractions: a floor division would leave only 0s and 1s.
    assert len(np.unique(dataset.x_train)) > 10


def test_digits_needs_no_download():
    dataset = data.load("digits")
    check_normalised(dataset, (8, 8, 1))
    assert dataset.num_classes == 10
    assert len(dataset.x_train) + len(dataset.x_val) + len(dataset.x_test) == 1797


def test_subsets_are_seeded_and_disjoint():
    a = data.load("digits", train_size=100, val_size=50, test_size=40, seed=1)
    b = data.load("digits", train_size=100, val_size=50, test_size=40, seed=1)
    c = data.load("digits", train_size=100, val_size=50, test_size=40, seed=2)
    assert (len(a.x_train), len(a.x_val), len(a.x_test)) == (100, 50, 40)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert not {row.tobytes() for row in a.x_train} & {row.tobytes() for row in a.x_val}


def test_a_redrawn_split_keeps_its_sizes_and_the_test_set():
    dataset = data.load("digits", train_size=300, val_size=100, test_size=50, seed=0)
    first, again, other = (data.redrawn_split(dataset, seed) for seed in (1, 1, 2))
    assert first.x_train.shape == dataset.x_train.shape and first.x_val.shape == dataset.x_val.shape
    assert np.array_equal(first.x_test, dataset.x_test) and np.array_equal(first.x_val, again.x_val)
    assert not np.array_equal(first.x_val, other.x_val)
    pooled = np.concatenate([dataset.y_train, dataset.y_val])  # the same images, split another way
    assert np.array_equal(np.sort(np.concatenate([first.y_train, first.y_val])), np.sort(pooled))


def test_subset_larger_than_data_is_an_error():
    with pytest.raises(ValueError, match="train_size must be between 1 and"):
        data.load("digits", train_size=10**6)


@pytest.mark.parametrize("name,folder", [("mnist", "mnist"), ("fashion_mnist", "fashion-mnist")])
def test_official_idx_files(name, folder, shared_data):
    dataset = data.load(name, data_dir=shared_data, train_size=1000, test_size=500, download=False)
    check_normalised(dataset, (28, 28, 1))
    assert set(np.unique(dataset.y_train)) == set(range(10))


def test_data_dir_from_environment(shared_data, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(shared_data))
    assert data.load("mnist", train_size=10, test_size=10, download=False).input_shape == (28, 28, 1)


def test_keras_cache_layout(shared_data, tmp_path, monkeypatch):
    """mnist.npz in $KERAS_HOME/datasets, as keras.datasets.mnist.load_data() leaves it."""
    official = data.load("mnist", data_dir=shared_data, val_size=0, download=False)
    (tmp_path / "datasets").mkdir()
    np.savez(
        tmp_path / "datasets" / "mnist.npz",
        x_train=(official.x_train[:, :, :, 0] * 255).round().astype(np.uint8),
        y_train=official.y_train,
        x_test=(official.x_test[:, :, :, 0] * 255).round().astype(np.uint8),
        y_test=official.y_test,
    )
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    cached = data.load("mnist", val_size=0, download=False)
    np.testing.assert_array_equal(cached.x_train, official.x_train)


def test_cifar10_python_batches(tmp_path):
    """The layout of cifar-10-python.tar.gz, extracted: pickled channel-first batches."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": list(range(10)) * 2}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    dataset = data.load("cifar10", data_dir=tmp_path, val_size=10, download=False)
    check_normalised(dataset, (32, 32, 3))
    assert len(dataset.x_train) == 90 and len(dataset.x_test) == 20
    with open(folder / "test_batch", "rb") as f:
        first = pickle.load(f)[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert any(np.array_equal(image, first / np.float32(255)) for image in dataset.x_test)


def image_folder(root):
    rng = np.random.default_rng(0)
    for part in ("train", "test"):
        for cls in ("cat", "dog"):
            (root / part / cls).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / part / cls / f"{i}.png")
    return root


def test_image_folder(tmp_path):
    dataset = data.load(f"imagefolder:{image_folder(tmp_path)}", val_size=2)
    check_normalised(dataset, (12, 12, 3))
    assert dataset.num_classes == 2 and len(dataset.x_test) == 12


def test_an_image_folder_is_decoded_once_until_it_changes(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    root = image_folder(tmp_path / "images")
    first = data._read_image_folder(root)
    assert len(list((tmp_path / "cache").glob("imagefolder-*.npz"))) == 1

    def no_decoding(root):
        raise AssertionError("decoded again although the folder did not change")

    monkeypatch.setattr(data, "_decode_image_folder", no_decoding)
    second = data._read_image_folder(root)  # another process: the cache file, not the images
    for a, b in zip(first[:4], second[:4]):
        assert np.array_equal(a, b)
    os.utime(root / "test" / "dog" / "0.png", ns=(1, 1))  # a changed file changes the key
    with pytest.raises(AssertionError, match="decoded again"):
        data._read_image_folder(root)


def test_cifar10_jpeg_subset(shared_data):
    dataset = data.load(f"imagefolder:{shared_data / 'cifar10-jpeg-subset'}", train_size=200, test_size=100)
    check_normalised(dataset, (32, 32, 3))
    assert dataset.num_classes == 10


def test_missing_data_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load("fashion_mnist", data_dir=tmp_path / "nowhere", download=False)
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message and "HARNESS_DATA_DIR" in message and "zalandoresearch" in message
    assert message.startswith(f"the data folder {tmp_path / 'nowhere'} does not exist")


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        data.load("svhn")


def test_files_that_are_not_images_are_skipped_and_counted(tmp_path, capsys):
    root = image_folder(tmp_path)
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "test" / "dog" / "notes.txt").write_text("taken on a rainy day")
    (root / "train" / "cat" / "drafts").mkdir()  # a folder inside a class is no image either
    dataset = data.load(f"imagefolder:{root}", val_size=2)
    assert len(dataset.x_train) + len(dataset.x_val) == 12 and len(dataset.x_test) == 12
    from harness.cli import main

    capsys.readouterr()
    code = main(["train", "--dataset", f"imagefolder:{root}", "--val-size", "2", "--epochs", "1"])
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("harness: note:")]
    assert code == 0 and len(notes) == 1
    assert "skipped 2 file(s) that are not images" in notes[0] and ".DS_Store" in notes[0] and "notes.txt" in notes[0]
