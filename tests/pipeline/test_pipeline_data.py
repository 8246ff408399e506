"""Distributions, the digits, training-pair order, and the chunked on-disk store (resume, shards)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from sklearn.datasets import load_digits as sklearn_digits

from bezier_distill import store
from bezier_distill.config import ConfigError, DataConfig, TeacherConfig
from bezier_distill.data import StoredPairs, get_distribution, resolve_pair, seeded_generator
from bezier_distill.files import atomic_write
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
    with pytest.raises(ConfigError, match="config field 'teacher.data.target': 'digits' has 64 dimensions"):
        check_stage("teacher", TeacherConfig(data=DataConfig("moons", "digits")), "cpu")
    with pytest.raises(ConfigError, match="config field 'teacher.data.target': both sides are plain 'normal'"):
        check_stage("teacher", TeacherConfig(data=DataConfig("normal", "normal")), "cpu")


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
    assert not torch.equal(StoredPairs(x, x, None, seed=6).next_indices(N), StoredPairs(x, x, None, seed=5).next_indices(N))


# ---------------------------------------------------------------- store

HEADER = {"kind": "guides", "degree": 2, "dim": 3, "num_samples": 10, "chunk_size": 4, "seed": 11, "note": "test"}


def make_chunk(count, generator):
    x0 = torch.randn(count, 3, generator=generator)
    return {"x0": x0, "x1": 2 * x0, "guides": x0[:, None] + 1}


def test_store_writes_chunks_and_a_manifest_and_reads_them_back(tmp_path):
    manifest = store.generate(tmp_path / "d", HEADER, make_chunk, progress=False)
    assert manifest["complete"] and [c["count"] for c in manifest["chunks"]] == [4, 4, 2]
    assert json.loads((tmp_path / "d" / "manifest.json").read_text()) == manifest
    _, tensors = store.load(tmp_path / "d")
    assert tensors["x0"].shape == (10, 3) and tensors["guides"].shape == (10, 1, 3)
    torch.testing.assert_close(tensors["x1"], 2 * tensors["x0"], rtol=0, atol=0)
    chunk0 = load_file(str(tmp_path / "d" / "chunk-00000.safetensors"))
    assert torch.equal(chunk0["x0"], make_chunk(4, seeded_generator(11, 0))["x0"])
    assert not list((tmp_path / "d").glob("*.tmp"))


def test_store_generation_resumes_and_matches_an_uninterrupted_run(tmp_path):
    calls = []

    def failing_on_third(count, generator):
        calls.append(count)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return make_chunk(count, generator)

    with pytest.raises(KeyboardInterrupt):
        store.generate(tmp_path / "resumed", HEADER, failing_on_third, progress=False)
    with pytest.raises(ConfigError, match="incomplete"):
        store.load(tmp_path / "resumed")
    calls.clear()
    store.generate(tmp_path / "resumed", HEADER, failing_on_third, progress=False)
    assert calls == [2]  # only the missing last chunk was made
    store.generate(tmp_path / "straight", HEADER, make_chunk, progress=False)
    a, b = store.load(tmp_path / "resumed")[1], store.load(tmp_path / "straight")[1]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_store_shards_by_chunk_index_give_the_same_data(tmp_path):
    store.generate(tmp_path / "one", HEADER, make_chunk, progress=False)
    for shard in ([0, 2], [1]):  # two "ranks", each writing its own chunks
        manifest = store.generate(tmp_path / "two", HEADER, make_chunk, indices=shard, progress=False)
        assert not manifest["complete"]
    store.finalize(tmp_path / "two")
    a, b = store.load(tmp_path / "one")[1], store.load(tmp_path / "two")[1]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_store_rejects_a_different_config_in_the_same_directory(tmp_path):
    store.generate(tmp_path / "d", HEADER, make_chunk, progress=False)
    with pytest.raises(ConfigError, match="config field 'seed': .* made with 11, this run asks for 12"):
        store.generate(tmp_path / "d", {**HEADER, "seed": 12}, make_chunk, progress=False)


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    atomic_write(path, "old")

    def crash(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["state.json"]
