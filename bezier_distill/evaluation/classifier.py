"""The feature space of the digits' Frechet distance: a small classifier of scikit-learn's 8x8 digits.

An MLP (64 pixels -> hidden -> features -> 10 classes) is trained deterministically on a stratified
training split of the 1797 digits (in the [-1, 1] pixel scale of bezier_distill.data) and its
accuracy is measured on the held-out split. The penultimate activations ("features") are the space
in which `digits_frechet_distance` compares Gaussian fits, as FID does with Inception features.

Trained weights are cached in safetensors under the cache directory ($BEZIER_DISTILL_CACHE, else
~/.cache/bezier-distill), in a file named by a hash of the settings; the file's metadata holds the
settings and the held-out accuracy. Training is deterministic: fixed seeds for the split, the
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

from ..data import load_digits
from ..files import atomic_write
from .metrics import frechet_distance

VERSION = 1  # bump when the training procedure changes: old cache files are then not reused


@dataclass(frozen=True)
class ClassifierSettings:
    hidden: int = 256
    features: int = 64
    epochs: int = 60
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    test_fraction: float = 0.3       # held-out share of each class
    seed: int = 0

    def key(self) -> str:
        """12 hex digits of the sha256 of the settings and VERSION: the cache file's name."""
        text = json.dumps({"version": VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


class DigitsClassifier(nn.Module):
    """x [B, 64] in [-1, 1] -> logits [B, 10]; features(x) -> [B, settings.features]."""

    def __init__(self, settings: ClassifierSettings):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, settings.hidden), nn.ReLU(),
                                  nn.Linear(settings.hidden, settings.features), nn.ReLU())
        self.head = nn.Linear(settings.features, 10)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


@dataclass
class Classifier:
    model: DigitsClassifier
    settings: ClassifierSettings
    accuracy: float          # on the held-out split
    path: Path               # the cache file

    @torch.no_grad()
    def features(self, x: Tensor, batch_size: int = 4096) -> Tensor:
        """Penultimate features [n, F] (float32, CPU) of images x [n, 64] (any device)."""
        self.model.eval()
        return torch.cat([self.model.features(chunk.float().cpu().flatten(1)) for chunk in x.split(batch_size)])


def split_digits(settings: ClassifierSettings) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(train images, train labels, test images, test labels): a stratified split, the same for a given seed."""
    images, labels = load_digits()
    generator = torch.Generator().manual_seed(settings.seed)
    test = torch.zeros(labels.shape[0], dtype=torch.bool)
    for digit in range(10):
        members = torch.nonzero(labels == digit).flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        test[members[:round(settings.test_fraction * members.numel())]] = True
    return images[~test], labels[~test], images[test], labels[test]


def train_classifier(settings: ClassifierSettings, progress: bool = True) -> tuple[DigitsClassifier, float]:
    """A freshly trained classifier (AdamW, cross-entropy, seeded batch order) and its held-out accuracy."""
    train_x, train_y, test_x, test_y = split_digits(settings)
    torch.manual_seed(settings.seed)
    model = DigitsClassifier(settings)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    generator = torch.Generator().manual_seed(settings.seed + 1)
    for _ in tqdm(range(settings.epochs), desc="digits classifier", unit="epoch", disable=not progress,
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


def digits_classifier(settings: ClassifierSettings = ClassifierSettings(), progress: bool = True) -> Classifier:
    """The cached classifier for these settings, trained (and cached atomically) on first use."""
    path = cache_dir() / f"digits-classifier-{settings.key()}.safetensors"
    model = DigitsClassifier(settings)
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


def digits_frechet_distance(x: Tensor, y: Tensor, classifier: Classifier) -> float:
    """Frechet distance between digit images x [n, 64] and y [m, 64] in the classifier's feature space."""
    return frechet_distance(classifier.features(x), classifier.features(y))
