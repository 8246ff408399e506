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
(index, file, start, count, seed, and sha256 of the file once complete) and complete.

Chunk i draws its x0 from a generator seeded by (seed, i) alone, so the data do not depend on which
process wrote which chunk, or in what order. Chunks are written atomically, each followed by a
chunk-00000.sha256 file holding its sha256, which finalize moves into the manifest. Reading a dataset
checks every chunk against its sha256; rerunning the generation command skips the chunks that match
and makes the damaged or missing ones again, bit-identical to the originals. Launched by torchrun on
several ranks, `generate` shards the chunks across them (bezier_distill.distributed): each rank writes
its own chunk files, rank 0 the manifest. By hand: give each process its own chunk indices
(`generate(..., indices=...)`) and let one process call `finalize` once all are written.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Callable, Iterable

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save
from torch import Tensor
from tqdm.auto import tqdm

from . import distributed
from .data import StoredPairs, seeded_generator
from .errors import ConfigError, DamagedFileError, DamagedFileWarning, check_unchanged, rerun_command
from .files import atomic_write, canonical_safetensors, remove_stale_temps, try_read_json, write_json

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


def _without_digests(manifest: dict) -> dict:
    """manifest less what generation fills in (complete, each chunk's sha256): what the data are."""
    chunks = [{k: v for k, v in c.items() if k != "sha256"} for c in manifest.get("chunks", [])]
    return {**{k: v for k, v in manifest.items() if k != "complete"}, "chunks": chunks}


def repair_hint(out_dir: str | Path, manifest: dict | None = None) -> str:
    """What to run to regenerate the damaged or missing parts of a dataset: its producing command."""
    out_dir = Path(out_dir)
    stage = (manifest or {}).get("producer", {}).get("stage")
    if stage == "reflow" or (stage is None and out_dir.name == "coupling"):  # a reflow run's out/coupling
        return rerun_command("reflow", str(out_dir.parent))
    return rerun_command(stage or "guides", str(out_dir))


def _read_manifest(out_dir: str | Path) -> tuple[dict | None, str | None]:
    """(The manifest of a dataset, None), or (None, why it cannot be read)."""
    manifest, problem = try_read_json(Path(out_dir) / MANIFEST)
    if problem is None and not (isinstance(manifest, dict) and isinstance(manifest.get("chunks"), list)):
        problem = "not a dataset manifest"
    return (None, problem) if problem else (manifest, None)


def read_manifest(out_dir: str | Path) -> dict:
    """The manifest of a dataset; DamagedFileError naming it, and the command that remakes it, when unreadable."""
    manifest, problem = _read_manifest(out_dir)
    if problem:
        raise DamagedFileError(f"dataset manifest '{Path(out_dir) / MANIFEST}' is unreadable ({problem}); "
                               f"{repair_hint(out_dir)} to regenerate the dataset")
    return manifest


def prepare(out_dir: str | Path, header: dict, create: bool = True) -> dict:
    """Creates out_dir with a manifest for header (whose num_samples, chunk_size and seed plan the
    chunks), or checks that an existing manifest describes the same data; returns the manifest.
    An unreadable manifest is replaced by a new plan (every chunk is made again: none can be verified).
    With create=False a missing manifest is planned but not written."""
    out_dir = Path(out_dir)
    manifest = {"format": FORMAT, "version": VERSION, **header,
                "chunks": chunk_plan(header["num_samples"], header["chunk_size"], header["seed"]), "complete": False}
    path = out_dir / MANIFEST
    if path.is_file():
        old, problem = _read_manifest(out_dir)
        if problem:
            warnings.warn(f"dataset manifest '{path}' is unreadable ({problem}); making every chunk again",
                          DamagedFileWarning)
            for chunk in manifest["chunks"]:
                _digest_path(out_dir, chunk).unlink(missing_ok=True)
        if old:
            check_unchanged(_without_digests(old), _without_digests(manifest), section="",
                            holder=f"the dataset in '{out_dir}' was", remedy="use a new output directory")
            return old
    if create:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, manifest)
    return manifest


def _digest_path(out_dir: str | Path, chunk: dict) -> Path:
    """Where a chunk's sha256 waits, written right after the chunk, until finalize moves it into the manifest."""
    return Path(out_dir) / (Path(chunk["file"]).stem + ".sha256")


def chunk_digest(out_dir: str | Path, chunk: dict) -> str | None:
    """The recorded sha256 of a chunk: its .sha256 file (newer) or else the manifest's; None when unrecorded."""
    path = _digest_path(out_dir, chunk)
    return path.read_text().strip() if path.is_file() else chunk.get("sha256")


def _chunk_bytes(out_dir: str | Path, chunk: dict, unrecorded_ok: bool = False) -> tuple[bytes | None, str | None]:
    """(The bytes of a chunk's file, None) when it exists and matches its recorded sha256, else (None, what is
    wrong); unrecorded_ok accepts a chunk without a recorded sha256 (datasets made before they were recorded)."""
    path = Path(out_dir) / chunk["file"]
    digest = chunk_digest(out_dir, chunk)
    if not path.is_file():
        return None, "missing"
    if digest is None and not unrecorded_ok:
        return None, "without a recorded sha256 (a kill cut its write short)"
    data = path.read_bytes()
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
        return None, f"damaged (its sha256 differs from the one in {MANIFEST})"
    return data, None


def chunk_problem(out_dir: str | Path, chunk: dict) -> str | None:
    """None when the chunk's file exists and matches its recorded sha256, else what is wrong."""
    return _chunk_bytes(out_dir, chunk)[1]


def write_chunk(out_dir: str | Path, chunk: dict, tensors: dict[str, Tensor]) -> str:
    """Writes a chunk's file, then its .sha256 file (both atomically); returns the sha256."""
    for name, value in tensors.items():
        if value.shape[0] != chunk["count"]:
            raise ValueError(f"chunk {chunk['index']}: {name} has {value.shape[0]} samples, expected {chunk['count']}")
    data = canonical_safetensors(save({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()},
                                      metadata=_chunk_metadata(chunk)))
    digest = hashlib.sha256(data).hexdigest()
    atomic_write(Path(out_dir) / chunk["file"], data)
    atomic_write(_digest_path(out_dir, chunk), digest + "\n")
    return digest


def finalize(out_dir: str | Path) -> dict:
    """Marks the dataset complete once every chunk is written, with each chunk's sha256 in the manifest
    (the .sha256 files are then removed); returns the manifest."""
    manifest = read_manifest(out_dir)
    problems = [(c["file"], chunk_problem(out_dir, c)) for c in manifest["chunks"]]
    problems = [(name, why) for name, why in problems if why]
    if problems:
        raise RuntimeError(f"dataset '{out_dir}' lacks {len(problems)} chunk(s), first {problems[0][0]} "
                           f"({problems[0][1]})")
    digests = [chunk_digest(out_dir, c) for c in manifest["chunks"]]
    for chunk, digest in zip(manifest["chunks"], digests):
        if chunk.get("sha256") not in (None, digest):
            warnings.warn(f"chunk '{Path(out_dir) / chunk['file']}' was made again with different bytes than "
                          "before (another machine or library version?)", DamagedFileWarning)
    if not manifest["complete"] or any(c.get("sha256") != d for c, d in zip(manifest["chunks"], digests)):
        manifest = {**manifest, "chunks": [{**c, "sha256": d} for c, d in zip(manifest["chunks"], digests)],
                    "complete": True}
        write_json(Path(out_dir) / MANIFEST, manifest)
    for chunk in manifest["chunks"]:
        _digest_path(out_dir, chunk).unlink(missing_ok=True)
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
    if indices is None and world.main:  # no other process writes chunks yet
        remove_stale_temps(out_dir, "chunk-*")
    if sharded:
        distributed.barrier()  # the directory and manifest exist before any rank writes a chunk
        indices = distributed.my_chunks(len(manifest["chunks"]))
    chunks = manifest["chunks"] if indices is None else [manifest["chunks"][i] for i in indices]
    problems = {c["index"]: chunk_problem(out_dir, c) for c in chunks}
    pending = [c for c in chunks if problems[c["index"]]]
    for chunk in pending:
        if "sha256" in chunk:  # a chunk of a finished dataset: damaged or deleted since
            warnings.warn(f"chunk '{Path(out_dir) / chunk['file']}' is {problems[chunk['index']]}; making it again",
                          DamagedFileWarning)
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
    return read_manifest(out_dir)


def dataset_problem(path: str) -> str | None:
    """None when path is a complete dataset, else what is wrong (for config checks)."""
    if not path:
        return "needs a dataset directory (from make-guides, or a reflow run's coupling/)"
    if not (Path(path) / MANIFEST).is_file():
        return f"'{path}' is not a dataset (no {MANIFEST})"
    try:
        data = read_manifest(path)
    except DamagedFileError as error:
        return str(error)
    if data.get("format") != FORMAT:
        return f"'{path}' holds format {data.get('format')!r}, not {FORMAT!r}"
    if not data.get("complete"):
        return f"dataset '{path}' is incomplete; {repair_hint(path, data)} to finish it"
    return None


def load(path: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """The manifest and every tensor of a complete dataset, chunks concatenated in order, each chunk checked
    against its sha256 in the manifest; DamagedFileError naming a damaged or missing chunk and the command
    that makes it again."""
    problem = dataset_problem(str(path))
    if problem:
        raise ConfigError(problem)
    manifest = read_manifest(path)
    parts = []
    for chunk in manifest["chunks"]:
        data, problem = _chunk_bytes(path, chunk, unrecorded_ok=True)
        try:
            parts.append(load_tensors(data) if data is not None else None)
        except SafetensorError as error:
            problem = f"not a safetensors file ({error})"
        if problem:
            raise DamagedFileError(f"chunk '{Path(path) / chunk['file']}' of dataset '{path}' is {problem}; "
                                   f"{repair_hint(path, manifest)} to make it again")
    return manifest, {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


def load_pairs(path: str | Path, seed: int) -> tuple[dict, StoredPairs]:
    """The manifest and the stored control points as training pairs, in a data order fixed by seed."""
    manifest, tensors = load(path)
    return manifest, StoredPairs(tensors["x0"], tensors["x1"], tensors.get("guides"), seed)
