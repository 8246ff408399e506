"""The chunked on-disk store of control points (resume, shards, changed configs) and atomic writes."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from bezier_distill import store
from bezier_distill.config import ConfigError
from bezier_distill.data import seeded_generator
from bezier_distill.files import atomic_write

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
