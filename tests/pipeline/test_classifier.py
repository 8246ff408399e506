"""The digits classifier behind the Frechet distance: deterministic, accurate on held-out digits, cached.

(Fashion-MNIST's and MNIST's, the same code at other data sets: test_image_classifiers.py.)"""
from __future__ import annotations

import torch

from bezier_distill.data import load_digits
from bezier_distill.evaluation.classifier import (
    ClassifierSettings,
    cached_classifier,
    frechet_in_features,
    split_data,
)

SETTINGS = ClassifierSettings(epochs=12)


def test_split_is_stratified_and_fixed_by_the_seed():
    train_x, train_y, test_x, test_y = split_data(SETTINGS)
    assert train_x.shape[0] + test_x.shape[0] == 1797 and 535 <= test_x.shape[0] <= 545
    for digit in range(10):
        share = float((test_y == digit).sum()) / float((torch.cat([train_y, test_y]) == digit).sum())
        assert abs(share - 0.3) < 0.01
    assert torch.equal(split_data(SETTINGS)[2], test_x)
    assert not torch.equal(split_data(ClassifierSettings(seed=1))[2], test_x)


def test_training_is_deterministic_accurate_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("BEZIER_DISTILL_CACHE", str(tmp_path / "a"))
    first = cached_classifier(SETTINGS, progress=False)
    assert first.path.parent == tmp_path / "a" and first.path.is_file() and first.accuracy > 0.9
    stamp = first.path.stat().st_mtime_ns
    again = cached_classifier(SETTINGS, progress=False)  # from the cache: same file, same weights, same accuracy
    assert again.path.stat().st_mtime_ns == stamp and again.accuracy == first.accuracy
    monkeypatch.setenv("BEZIER_DISTILL_CACHE", str(tmp_path / "b"))
    retrained = cached_classifier(SETTINGS, progress=False)  # trained afresh: bit-identical
    for (name, a), b in zip(first.model.state_dict().items(), retrained.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert ClassifierSettings(epochs=13).key() != SETTINGS.key()


def test_frechet_distance_in_feature_space(tmp_path, monkeypatch):
    """Two halves of the same digits are close; noise and another class group are far."""
    monkeypatch.setenv("BEZIER_DISTILL_CACHE", str(tmp_path))
    classifier = cached_classifier(SETTINGS, progress=False)
    images, labels = load_digits()
    order = torch.randperm(1797, generator=torch.Generator().manual_seed(0))
    same = frechet_in_features(images[order[:898]], images[order[898:]], classifier)
    other = frechet_in_features(images[labels < 5], images[labels >= 5], classifier)
    noise = frechet_in_features(torch.rand(898, 64) * 2 - 1, images[order[898:]], classifier)
    assert frechet_in_features(images, images, classifier) < 1e-6
    assert 0 < same < 0.1 * other and other < noise
