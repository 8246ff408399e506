"""Distributions, the digits, name checks at stage start, and the order of training pairs."""
from __future__ import annotations

import json

import pytest
import torch
from sklearn.datasets import load_digits as sklearn_digits

from bezier_distill.config import ConfigError, DataConfig, TeacherConfig, validate
from bezier_distill.data import StoredPairs, get_distribution, resolve_pair, seeded_generator
from bezier_distill.stages import check_stage

TOYS = ["8gaussians", "moons", "checkerboard", "rings", "gmm_left", "gmm_right"]


@pytest.mark.parametrize("name", TOYS + ["normal:3", "digits", "digits:0-4"])
def test_distributions_sample_deterministically(name):
    dist = get_distribution(name)
    a = dist.sample(500, seeded_generator(7))
    assert a.shape == (500, dist.dim) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, dist.sample(500, seeded_generator(7)))
    assert not torch.equal(a, dist.sample(500, seeded_generator(8)))


def test_toy_shapes():
    gen = seeded_generator(0)
    board = get_distribution("checkerboard").sample(4000, gen)
    assert ((torch.floor(board[:, 0]) + torch.floor(board[:, 1])) % 2 == 0).all()  # black squares only
    assert board.abs().max() <= 2
    radius = get_distribution("rings").sample(4000, gen).norm(dim=1)
    nearest = torch.tensor([0.75, 1.5, 2.25])[(radius[:, None] - torch.tensor([0.75, 1.5, 2.25])).abs().argmin(1)]
    assert (radius - nearest).abs().max() < 0.5 and (radius - nearest).abs().mean() < 0.1
    left, right = get_distribution("gmm_left").sample(2000, gen), get_distribution("gmm_right").sample(2000, gen)
    assert left[:, 0].mean() < -1.8 and right[:, 0].mean() > 1.8


def test_digits_are_sklearn_images_scaled_to_minus_one_one():
    bunch = sklearn_digits()
    dist = get_distribution("digits")
    assert dist.dim == 64 and dist.image_shape == (8, 8)
    draws = dist.sample(3000, seeded_generator(0))
    assert draws.min() == -1 and draws.max() == 1
    images = torch.from_numpy(bunch.data).float() / 8 - 1
    assert images.shape == (1797, 64)
    # every draw is one of the 1797 images
    assert (torch.cdist(draws, images).min(dim=1).values == 0).all()


def test_digit_groups_hold_only_their_classes():
    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.data).float() / 8 - 1
    labels = torch.from_numpy(bunch.target)
    for spec, classes in (("digits:0-4", {0, 1, 2, 3, 4}), ("digits:5-9", {5, 6, 7, 8, 9}), ("digits:1,7", {1, 7})):
        draws = get_distribution(spec).sample(2000, seeded_generator(1))
        which = torch.cdist(draws, images).argmin(dim=1)
        assert set(labels[which].tolist()) == classes


def test_pairs_take_the_other_sides_dimension_and_reject_mismatches():
    source, target = resolve_pair(DataConfig("normal", "digits:0-4"))
    assert source.dim == target.dim == 64
    source, target = resolve_pair(DataConfig("digits:0-4", "digits:5-9"))
    assert source.dim == 64
    # names are checked when a stage starts (config validation reads no data set)
    validate(TeacherConfig(data=DataConfig("moons", "digits")), "teacher")
    with pytest.raises(ConfigError, match="config field 'teacher.data.target': 'digits' has 64 dimensions"):
        check_stage("teacher", TeacherConfig(data=DataConfig("moons", "digits")), "cpu")
    with pytest.raises(ConfigError, match="config field 'teacher.data.target': both sides are plain 'normal'"):
        check_stage("teacher", TeacherConfig(data=DataConfig("normal", "normal")), "cpu")
    with pytest.raises(ConfigError, match="config field 'teacher.data.source': unknown distribution 'nope'"):
        check_stage("teacher", TeacherConfig(data=DataConfig("nope", "moons")), "cpu")


def test_stored_pairs_visit_every_sample_once_per_epoch_and_resume_exactly():
    N = 10
    x = torch.arange(N, dtype=torch.float32)[:, None]
    pairs = StoredPairs(x, x + 100, None, seed=5)
    first_epoch = torch.cat([pairs.batch(4)[0] for _ in range(2)] + [pairs.next_indices(2).float()[:, None]])
    assert sorted(first_epoch[:, 0].tolist()) == list(range(N)) and pairs.epoch == 1 and pairs.cursor == 0
    pairs.batch(7)
    state = pairs.state_dict()
    expected = [pairs.next_indices(4) for _ in range(3)]  # crosses into epoch 2
    resumed = StoredPairs(x, x + 100, None, seed=5)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    assert all(torch.equal(resumed.next_indices(4), e) for e in expected)
    other = StoredPairs(x, x, None, seed=5).next_indices(N)
    assert not torch.equal(StoredPairs(x, x, None, seed=6).next_indices(N), other)
