"""Datasets as normalised float32 train/validation/test splits.

Files are looked for, in order, in the `data_dir` argument, `$HARNESS_DATA_DIR`
and Keras's own cache (`~/.keras/datasets`, or `$KERAS_HOME/datasets`); only
then does Keras try to download them.
"""

import dataclasses
import functools
import gzip
import hashlib
import logging
import os
import pickle
from pathlib import Path

import keras
import numpy as np

LOG = logging.getLogger(__name__)
DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "imagefolder:PATH")

_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
_SOURCES = {
    "mnist": ("mnist", "https://storage.googleapis.com/tensorflow/tf-keras-datasets/ (mnist.npz) or the idx .gz files"),
    "fashion_mnist": ("fashion-mnist", "https://github.com/zalandoresearch/fashion-mnist (the four idx .gz files)"),
    "cifar10": ("cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (extract it)"),
}


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are nowhere on disk and could not be downloaded."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self):
        return self.x_train.shape[1:]

    @functools.cached_property
    def digest(self):
        """A short content hash of every split, so a run records exactly which data it saw."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test):
            digest.update(np.ascontiguousarray(array).data)
        return digest.hexdigest()[:16]


def load(
    name, data_dir=None, *, train_size=None, val_size=None, test_size=None, val_fraction=0.1, seed=0, download=True
):
    """Load `name` as a `Dataset` of float32 images in [0, 1] and integer labels.

    The validation split is `val_size` images (else `val_fraction` of
    `train_size`, or of the whole training set), held out of the training set
    before `train_size` images are drawn; `test_size` subsets the test set.
    All draws are seeded. Names: see `DATASETS`. With `download=False`, data
    missing from disk raises `DatasetNotFoundError` without going online.
    """
    x_train, y_train, x_test, y_test, scale, skipped = _read(name, _as_path(data_dir), download)
    if skipped:  # said on every load, so a cached read does not hide that the folder holds fewer images
        LOG.warning(
            f"{name.removeprefix('imagefolder:')}: skipped {len(skipped)} file(s) that are not images: "
            f"{', '.join(skipped[:3])}" + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_train))
    n_val = val_size if val_size is not None else int(round(val_fraction * (train_size or len(x_train))))
    val, train = order[:n_val], order[n_val:]
    train = train[: _checked_size("train_size", train_size, len(train))]
    test = rng.permutation(len(x_test))[: _checked_size("test_size", test_size, len(x_test))]

    def normalised(images):
        # True division: the original code's `//= 255` floored every pixel to 0.
        images = images.astype(np.float32) / np.float32(scale)
        return images[..., None] if images.ndim == 3 else images

    return Dataset(
        name=name,
        x_train=normalised(x_train[train]),
        y_train=y_train[train].astype(np.int64),
        x_val=normalised(x_train[val]),
        y_val=y_train[val].astype(np.int64),
        x_test=normalised(x_test[test]),
        y_test=y_test[test].astype(np.int64),
        num_classes=int(max(y_train.max(), y_test.max()) + 1),
    )


def redrawn_split(dataset, seed):
    """`dataset` with its training and validation images pooled and split again, at the same sizes, by `seed`;
    the test set stays as it is (`--vary-split`)."""
    images = np.concatenate([dataset.x_train, dataset.x_val])
    labels = np.concatenate([dataset.y_train, dataset.y_val])
    order = np.random.default_rng(seed).permutation(len(images))
    val, train = order[: len(dataset.x_val)], order[len(dataset.x_val) :]
    return dataclasses.replace(
        dataset, x_train=images[train], y_train=labels[train], x_val=images[val], y_val=labels[val]
    )


def _checked_size(option, size, available):
    if size is None:
        return available
    if not 0 < size <= available:
        raise ValueError(f"{option} must be between 1 and {available} (the images available), got {size}")
    return size


def _as_path(data_dir):
    return None if data_dir is None else str(Path(data_dir).expanduser().resolve())


@functools.lru_cache(maxsize=4)
def _read(name, data_dir, download):
    """Return (x_train, y_train, x_test, y_test, scale, skipped files) with raw pixel values."""
    if name == "digits":
        return *_read_digits(), ()
    if name.startswith("imagefolder:"):
        return _read_image_folder(Path(name.removeprefix("imagefolder:")).expanduser())
    if name in _SOURCES:
        return *_read_downloadable(name, data_dir, download), ()
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def _read_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # No official split: a fixed, stratified 20% keeps the test set the same for every seed.
    x_train, x_test, y_train, y_test = train_test_split(
        digits.images, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    return x_train, y_train, x_test, y_test, 16.0


def _search_dirs(data_dir):
    dirs = [Path(d) for d in (data_dir, os.environ.get("HARNESS_DATA_DIR")) if d]
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    return dirs + [keras_home / "datasets"]


def _read_downloadable(name, data_dir, download):
    folder, source = _SOURCES[name]
    looked = []
    for base in _search_dirs(data_dir):
        for candidate in (base / folder, base / name, base):
            looked.append(str(candidate))
            arrays = _read_files(name, candidate)
            if arrays is not None:
                return arrays + (255.0,)
    try:
        if not download:
            raise RuntimeError("downloads are off")
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as error:
        missing = f"the data folder {data_dir} does not exist, and " if data_dir and not Path(data_dir).is_dir() else ""
        raise DatasetNotFoundError(
            f"{missing}{name} is not on disk and could not be downloaded ({error}). "
            f"Looked in: {', '.join(dict.fromkeys(looked))}. "
            f"Get it from {source} and put it in <DIR>/{folder}/, then pass --data-dir DIR or set HARNESS_DATA_DIR=DIR."
        ) from None
    return x_train, y_train.ravel(), x_test, y_test.ravel(), 255.0


def _read_files(name, folder):
    if name == "cifar10":
        return _read_cifar_batches(folder) if (folder / "test_batch").is_file() else None
    if all((folder / f).is_file() for f in _IDX_FILES):
        return tuple(_read_idx(folder / f) for f in _IDX_FILES)
    if name == "mnist" and (folder / "mnist.npz").is_file():
        with np.load(folder / "mnist.npz") as f:
            return f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    return None


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _read_cifar_batches(folder):
    def batch(file):
        with open(folder / file, "rb") as f:
            entries = pickle.load(f, encoding="bytes")
        images = entries[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return images, np.array(entries[b"labels"])

    train = [batch(f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = batch("test_batch")
    return np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), x_test, y_test


def _read_image_folder(root):
    """Read root/train/<class>/* and root/test/<class>/*, classes in sorted order, skipping files that are not images.

    Decoding tens of thousands of images takes minutes, so the arrays are
    cached under `$HARNESS_CACHE` (default ~/.cache/harness), keyed by the
    folder's path and every file's name, size and modification time: a changed
    folder is decoded again.
    """
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DatasetNotFoundError(
            f"imagefolder needs {root}/train/<class>/ and {root}/test/<class>/ folders of images"
        )
    cache = _cache_dir() / f"imagefolder-v2-{_folder_fingerprint(root)}.npz"  # v2: with the skipped files
    if cache.is_file():
        with np.load(cache) as arrays:
            decoded = {name: arrays[name] for name in ("x_train", "y_train", "x_test", "y_test", "skipped")}
    else:
        decoded = _decode_image_folder(root)
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(f".{os.getpid()}.partial.npz")
        np.savez(partial, **decoded)
        partial.replace(cache)  # atomic: another process never reads half a file
    return (
        decoded["x_train"],
        decoded["y_train"],
        decoded["x_test"],
        decoded["y_test"],
        255.0,
        tuple(decoded["skipped"]),
    )


def _cache_dir():
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness"))


def _folder_fingerprint(root):
    digest = hashlib.sha256(str(root.resolve()).encode())
    for part in ("train", "test"):
        for file in sorted((root / part).rglob("*")):
            info = file.stat()
            digest.update(f"{file.relative_to(root)}:{info.st_size}:{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def _decode_image_folder(root):
    """{x_train, y_train, x_test, y_test, skipped}: every image decoded at the first image's size and colour mode;
    files that are not images (a .DS_Store, a notes file) skipped, by their paths relative to `root`."""
    from PIL import UnidentifiedImageError

    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise DatasetNotFoundError(f"imagefolder {root}/train holds no class folders")
    skipped, mode = [], {}

    def decode(file):
        try:
            image = keras.utils.load_img(file, **mode)
        except (UnidentifiedImageError, OSError):
            skipped.append(str(file.relative_to(root)))
            return None
        if not mode:  # the first image sets the size and colour mode of every other
            mode.update(
                color_mode="grayscale" if image.mode in ("L", "1") else "rgb", target_size=(image.height, image.width)
            )
            image = keras.utils.load_img(file, **mode)
        return np.asarray(image, dtype=np.uint8)

    def split(part):
        images, labels = [], []
        for label, cls in enumerate(classes):
            for file in sorted(f for f in (root / part / cls).iterdir() if f.is_file()):
                image = decode(file)
                if image is not None:
                    images.append(image)
                    labels.append(label)
        if not images:
            raise DatasetNotFoundError(f"imagefolder {root}/{part} holds no images")
        return np.stack(images), np.array(labels)

    (x_train, y_train), (x_test, y_test) = split("train"), split("test")
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "skipped": np.array(skipped, dtype=str),
    }
