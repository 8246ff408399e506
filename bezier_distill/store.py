"""On-disk datasets of path control points: chunked safetensors files plus a JSON manifest.

A dataset directory holds:
    manifest.json            what the data are (see below) and the plan of chunks
    chunk-00000.safetensors  the samples [start, start + count) of chunk 0; one file per chunk ...
Tensors of a chunk (float32, CPU):
    x0          [count, D]        sources
    x1          [count, D]        targets (a teacher's ODE end)
    guides      [count, n-1, D]   inner control points; absent for a coupling (degree 1)
    trajectory  [count, K, D]     a teacher's states at manifest "trajectory_times" (optional)
The safetensors header metadata of a chunk repeats its index, start, count and seed.

manifest.json: format ("bezier-distill-paths"), version, kind ("coupling" or "guides"), degree,
dim, num_samples, chunk_size, seed, tensors (name -> shape per sample), data (source and target
names), producer (the config that made it), teachers (run directory and checkpoint sha256 of each
teacher), trajectory_times, evaluations_per_sample (teacher network calls per pair), chunks
(index, file, start, count, seed) and complete.

Chunk i draws its x0 from a generator seeded by (seed, i) alone, so the data do not depend on which
process wrote which chunk, or in what order. Chunks are written atomically: a chunk file exists only
when complete and a rerun skips it. Launched by torchrun on several ranks, `generate` shards the
chunks across them (bezier_distill.distributed): each rank writes its own chunk files, rank 0 the
manifest. By hand: give each process its own chunk indices (`generate(..., indices=...)`) and let one
process call `finalize` once all are written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import Tensor
from tqdm.auto import tqdm

from . import distributed
from .data import StoredPairs, seeded_generator
from .errors import ConfigError, check_unchanged
from .files import atomic_write, read_json, write_json

FORMAT = "bezier-distill-paths"
VERSION = 1
MANIFEST = "manifest.json"
ChunkMaker = Callable[[int, torch.Generator], dict[str, Tensor]]  # (count, generator) -> tensors


def chunk_plan(num_samples: int, chunk_size: int, seed: int) -> list[dict]:
    """The chunks covering num_samples: index, file name, start, count and seed of each."""
    return [{"index": i, "file": f"chunk-{i:05d}.safetensors", "start": start,
             "count": min(chunk_size, num_samples - start), "seed": seed}
            for i, start in enumerate(range(0, num_samples, chunk_size))]


def _chunk_metadata(chunk: dict) -> dict[str, str]:
    return {key: str(chunk[key]) for key in ("index", "start", "count", "seed")}


def prepare(out_dir: str | Path, header: dict, create: bool = True) -> dict:
    """Creates out_dir with a manifest for header (whose num_samples, chunk_size and seed plan the
    chunks), or checks that an existing manifest describes the same data; returns the manifest.
    With create=False a missing manifest is planned but not written."""
    out_dir = Path(out_dir)
    manifest = {"format": FORMAT, "version": VERSION, **header,
                "chunks": chunk_plan(header["num_samples"], header["chunk_size"], header["seed"]), "complete": False}
    path = out_dir / MANIFEST
    if path.is_file():
        old = read_json(path)
        ignore = ("complete",)
        check_unchanged({k: v for k, v in old.items() if k not in ignore},
                        {k: v for k, v in manifest.items() if k not in ignore},
                        section="", holder=f"the dataset in '{out_dir}' was", remedy="use a new output directory")
        return old
    if create:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, manifest)
    return manifest


def chunk_done(out_dir: str | Path, chunk: dict) -> bool:
    """Whether chunk's file exists and its header says it is this chunk."""
    path = Path(out_dir) / chunk["file"]
    if not path.is_file():
        return False
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() == _chunk_metadata(chunk)


def write_chunk(out_dir: str | Path, chunk: dict, tensors: dict[str, Tensor]) -> None:
    for name, value in tensors.items():
        if value.shape[0] != chunk["count"]:
            raise ValueError(f"chunk {chunk['index']}: {name} has {value.shape[0]} samples, expected {chunk['count']}")
    data = save({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()},
                metadata=_chunk_metadata(chunk))
    atomic_write(Path(out_dir) / chunk["file"], data)


def finalize(out_dir: str | Path) -> dict:
    """Marks the dataset complete once every chunk is written; returns the manifest."""
    path = Path(out_dir) / MANIFEST
    manifest = read_json(path)
    missing = [c["file"] for c in manifest["chunks"] if not chunk_done(out_dir, c)]
    if missing:
        raise RuntimeError(f"dataset '{out_dir}' lacks {len(missing)} chunk(s), first {missing[0]}")
    if not manifest["complete"]:
        manifest["complete"] = True
        write_json(path, manifest)
    return manifest


def generate(out_dir: str | Path, header: dict, make_chunk: ChunkMaker, *, indices: Iterable[int] | None = None,
             progress: bool = True, desc: str = "generate") -> dict:
    """Writes every missing chunk (or those of `indices`) with make_chunk, then finalizes (all chunks only).

    make_chunk(count, generator) returns the chunk's tensors; generator is seeded by (seed, index).
    On several ranks with indices None, rank r writes chunks r, r + W, ...: rank 0 writes the manifest
    before any chunk and finalizes it once every rank is done; every rank returns the complete manifest.
    """
    world = distributed.world()
    sharded = indices is None and world.size > 1
    manifest = prepare(out_dir, header, create=world.main or not sharded)  # every rank checks an old one
    if sharded:
        distributed.barrier()  # the directory and manifest exist before any rank writes a chunk
        indices = distributed.my_chunks(len(manifest["chunks"]))
    chunks = manifest["chunks"] if indices is None else [manifest["chunks"][i] for i in indices]
    pending = [c for c in chunks if not chunk_done(out_dir, c)]
    total = sum(c["count"] for c in chunks)
    with tqdm(total=total, initial=total - sum(c["count"] for c in pending), unit="pair", desc=desc,
              disable=not progress or not world.main, dynamic_ncols=True) as bar:
        for chunk in pending:
            tensors = make_chunk(chunk["count"], seeded_generator(chunk["seed"], chunk["index"]))
            write_chunk(out_dir, chunk, tensors)
            bar.update(chunk["count"])
    if not sharded:
        return finalize(out_dir) if indices is None else manifest
    distributed.barrier()  # every chunk is written
    if world.main:
        finalize(out_dir)
    distributed.barrier()  # the manifest says complete
    return read_json(Path(out_dir) / MANIFEST)


def dataset_problem(path: str) -> str | None:
    """None when path is a complete dataset, else what is wrong (for config checks)."""
    if not path:
        return "needs a dataset directory (from make-guides, or a reflow run's coupling/)"
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        return f"'{path}' is not a dataset (no {MANIFEST})"
    data = read_json(manifest)
    if data.get("format") != FORMAT:
        return f"'{path}' holds format {data.get('format')!r}, not {FORMAT!r}"
    if not data.get("complete"):
        return f"dataset '{path}' is incomplete; rerun the command that made it to finish it"
    return None


def load(path: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """The manifest and every tensor of a complete dataset, chunks concatenated in order."""
    problem = dataset_problem(str(path))
    if problem:
        raise ConfigError(problem)
    manifest = read_json(Path(path) / MANIFEST)
    parts = [load_file(str(Path(path) / c["file"])) for c in manifest["chunks"]]
    return manifest, {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


def load_pairs(path: str | Path, seed: int) -> tuple[dict, StoredPairs]:
    """The manifest and the stored control points as training pairs, in a data order fixed by seed."""
    manifest, tensors = load(path)
    return manifest, StoredPairs(tensors["x0"], tensors["x1"], tensors.get("guides"), seed)
