"""Guide makers: control points (x0, guides, x1) of Bezier paths made by teachers, written to a store.

A teacher here is any velocity callable v(x [B, *F], t [B]) (t = 0 at the source, 1 at the target). A
maker turns a chunk of x0 [B, *F] into x1 [B, *F], guides [B, n-1, *F] (none for degree 1) and, when
asked, the teacher's trajectory on its solver grid:
    coupling_maker       degree 1: x1 = the teacher's ODE end (the k-RF coupling that reflow trains on)
    multi_teacher_maker  guide j = teacher j's ODE state at time s_j; x1 = the endpoint teacher's end
    fit_maker            the least-squares degree-n Bezier curve through one teacher's trajectory at
                         m >= n + 1 times, endpoints pinned to x0 and the ODE end (fit_bezier)
`run_maker` runs a maker over batches of a given x0 (the Python API); `write_paths` over chunks of x0
drawn from a source into a store dataset (the CLI). `Paths` holds control points in memory and saves
them to / loads them from a dataset directory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

import bezier_kernels as bk

from . import store
from .config import GenerateConfig, SolverConfig
from .data import Distribution
from .samplers import evaluations, ode_grid, uniform_times
from .teachers import Velocity, states_at


def fit_bezier(points: Tensor, times: Tensor, degree: int, x0: Tensor, x1: Tensor) -> Tensor:
    """Inner control points [B, n-1, *F] of the degree-n Bezier curve from x0 to x1 [B, *F] closest in
    least squares to points [B, m, *F] at times [m] (shared by the batch) or [B, m]; m >= n + 1.

    With P_0 = x0 and P_n = x1 pinned, sum_i b_{i,n}(t_k) P_i ~ points_k is linear in P_1 .. P_{n-1}:
    a least-squares solve with the Bernstein matrix (bezier_kernels.bernstein_weights, float64), for
    shared times one factorisation with B * D right-hand sides (D = prod(F)). Returns points' dtype.
    """
    if points.dim() < 3:
        raise ValueError(f"fit_bezier needs points [B, m, *F], got {list(points.shape)}")
    B, m, features = points.shape[0], points.shape[1], points.shape[2:]
    if degree < 1 or m < degree + 1 or times.shape not in ((m,), (B, m)):
        raise ValueError(f"fit_bezier needs degree >= 1, points [B, m, *F] with m >= degree + 1 = {degree + 1} and "
                         f"times [m] or [B, m]; got points {list(points.shape)}, times {list(times.shape)}")
    if degree == 1:
        return points.new_zeros(B, 0, *features)
    if len(features) != 1:
        flat = fit_bezier(points.reshape(B, m, -1), times, degree, x0.reshape(B, -1), x1.reshape(B, -1))
        return flat.reshape(B, degree - 1, *features)
    D = features[0]
    flat_times = times.reshape(-1).to(points.device, torch.float64)
    bernstein = bk.bernstein_weights(flat_times, degree).reshape(*times.shape, degree + 1)
    first, last = bernstein[..., 0, None], bernstein[..., -1, None]  # [(B,) m, 1]
    rhs = points.double() - first * x0.double()[:, None] - last * x1.double()[:, None]  # [B, m, D]
    inner = bernstein[..., 1:-1]  # [(B,) m, n-1]
    if times.dim() == 1:
        solution = torch.linalg.lstsq(inner, rhs.permute(1, 0, 2).reshape(m, B * D)).solution
        return solution.reshape(degree - 1, B, D).permute(1, 0, 2).to(points.dtype)
    return torch.linalg.lstsq(inner, rhs).solution.to(points.dtype)


@dataclass
class PathMaker:
    """make(x0) -> {"x1", "guides" (degree > 1), "trajectory" (when saved)}, plus what the manifest records."""

    degree: int
    make: Callable[[Tensor], dict[str, Tensor]]
    evaluations_per_sample: int                  # teacher network calls per pair
    trajectory_times: list[float] | None = None  # the times of "trajectory", when saved


def fit_maker(teacher: Velocity, degree: int, fit_points: int, solver: SolverConfig,
              save_trajectory: bool = False) -> PathMaker:
    """Fits a degree-`degree` curve to the teacher's states at fit_points (0: all) of its N + 1 grid times."""
    grid = uniform_times(solver.steps).tolist()
    m = fit_points or len(grid)
    pick = torch.linspace(0, solver.steps, m).round().long()
    if degree > 1 and torch.unique(pick).numel() != m:
        raise ValueError(f"fit_points {m} needs distinct grid times; the solver has {len(grid)}")
    fit_times = torch.tensor(grid, dtype=torch.float64)[pick]
    keep_states = save_trajectory or degree > 1

    def make(x0: Tensor) -> dict[str, Tensor]:
        states = states_at(teacher, x0, grid if keep_states else [1.0], solver)
        x1 = states[:, -1]
        out = {"x1": x1}
        if degree > 1:
            out["guides"] = fit_bezier(states[:, pick.to(states.device)], fit_times, degree, x0, x1)
        if save_trajectory:
            out["trajectory"] = states
        return out

    return PathMaker(degree, make, evaluations(solver.method, solver.steps), grid if save_trajectory else None)


def coupling_maker(teacher: Velocity, solver: SolverConfig, save_trajectory: bool = False) -> PathMaker:
    """Degree 1: (x0, x1 = the teacher's ODE end), the coupling a reflow trains on."""
    return fit_maker(teacher, 1, 0, solver, save_trajectory)


def multi_teacher_maker(teachers: Sequence[Velocity], times: list[float], endpoint: Velocity, solver: SolverConfig,
                        save_trajectory: bool = False) -> PathMaker:
    """Guide j = teachers[j]'s ODE state at times[j]; x1 (and the trajectory) from the endpoint teacher."""
    end_times = uniform_times(solver.steps).tolist() if save_trajectory else [1.0]

    def make(x0: Tensor) -> dict[str, Tensor]:
        guides = [states_at(teacher, x0, [s], solver)[:, 0] for teacher, s in zip(teachers, times)]
        states = states_at(endpoint, x0, end_times, solver)
        out = {"x1": states[:, -1], "guides": torch.stack(guides, dim=1)}
        if save_trajectory:
            out["trajectory"] = states
        return out

    calls = sum(evaluations(solver.method, len(ode_grid([s], solver.steps)) - 1) for s in times)
    return PathMaker(len(teachers) + 1, make, calls + evaluations(solver.method, solver.steps),
                     end_times if save_trajectory else None)


def paths_header(maker: PathMaker, shape: Sequence[int], num_samples: int, chunk_size: int, seed: int, *,
                 data: dict | None, producer: dict, teachers: list[dict]) -> dict:
    """The store manifest header of a maker's paths with feature shape `shape`."""
    shape, n = list(shape), maker.degree
    shapes = {"x0": shape, "x1": shape}
    if n > 1:
        shapes["guides"] = [n - 1, *shape]
    if maker.trajectory_times is not None:
        shapes["trajectory"] = [len(maker.trajectory_times), *shape]
    return {"kind": "coupling" if n == 1 else "guides", "degree": n, "dim": math.prod(shape), "shape": shape,
            "num_samples": num_samples, "chunk_size": chunk_size, "seed": seed, "dtype": "float32",
            "tensors": shapes, "data": data, "producer": producer, "teachers": teachers,
            "trajectory_times": maker.trajectory_times, "evaluations_per_sample": maker.evaluations_per_sample}


@torch.no_grad()
def run_maker(maker: PathMaker, x0: Tensor, batch_size: int, device: torch.device | str, *, progress: bool = True,
              desc: str = "paths") -> dict[str, Tensor]:
    """The maker over x0 [N, *F] in batches on device: {"x0", "x1", "guides"?, "trajectory"?} on x0's device."""
    parts: list[dict[str, Tensor]] = []
    with tqdm(total=x0.shape[0], unit="pair", desc=desc, disable=not progress, dynamic_ncols=True) as bar:
        for chunk in x0.split(batch_size):
            made = maker.make(chunk.to(device))
            parts.append({"x0": chunk, **{k: v.to(x0.device) for k, v in made.items()}})
            bar.update(chunk.shape[0])
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


def write_paths(maker: PathMaker, generate: GenerateConfig, out_dir: str | Path, producer: dict, *,
                source: Distribution, data: dict, teachers: list[dict], device: torch.device | str = "cpu",
                progress: bool = True, desc: str = "paths") -> dict:
    """Draws x0 [chunk, *F] from `source` in chunks, runs the maker on device, stores the control points
    (resuming: finished chunks are kept); returns the store manifest. data: the source and target names;
    teachers: what each teacher is (their records)."""
    header = paths_header(maker, source.features, generate.num_samples, generate.chunk_size, generate.seed,
                          data=data, producer=producer, teachers=teachers)

    def make_chunk(count: int, generator: torch.Generator) -> dict[str, Tensor]:
        x0 = source.sample(count, generator).to(device)
        return {"x0": x0, **maker.make(x0)}

    return store.generate(out_dir, header, make_chunk, progress=progress, desc=desc)


@dataclass
class Paths:
    """Control points of N paths: x0, x1 [N, *F]; guides [N, n-1, *F] (None: degree 1, straight lines).

    save(dir) writes the pipeline's dataset directory (bezier_distill.store, what make-guides writes and
    `distill --pairs` reads); Paths.load(dir) reads one back. info: the rest of its manifest (data, teachers, ...).
    """

    x0: Tensor
    x1: Tensor
    guides: Tensor | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.x0.dim() < 2 or self.x1.shape != self.x0.shape:
            raise ValueError(f"Paths needs x0 and x1 [N, *F] of one shape, got {list(self.x0.shape)} and "
                             f"{list(self.x1.shape)}")
        if self.guides is not None and (self.guides.dim() != self.x0.dim() + 1 or self.guides.shape[1] < 1 or
                                        self.guides.shape[:1] + self.guides.shape[2:] != self.x0.shape):
            raise ValueError(f"Paths guides must be [N, n-1, *F] = [{self.x0.shape[0]}, n-1, "
                             f"{', '.join(map(str, self.x0.shape[1:]))}], got {list(self.guides.shape)}")

    @property
    def degree(self) -> int:
        return 1 if self.guides is None else self.guides.shape[1] + 1

    @property
    def shape(self) -> tuple[int, ...]:
        """The feature shape F."""
        return tuple(self.x0.shape[1:])

    def __len__(self) -> int:
        return self.x0.shape[0]

    def save(self, out_dir: str | Path, chunk_size: int = 5000) -> Path:
        """Writes the dataset directory out_dir (a manifest and safetensors chunks); returns it."""
        maker = PathMaker(self.degree, lambda x0: {}, self.info.get("evaluations_per_sample", 0))
        header = paths_header(maker, self.shape, len(self), chunk_size, 0, data=self.info.get("data"),
                              producer=self.info.get("producer", {"stage": "python"}),
                              teachers=self.info.get("teachers", []))
        manifest = store.prepare(out_dir, header)
        tensors = {"x0": self.x0, "x1": self.x1, **({"guides": self.guides} if self.guides is not None else {})}
        for chunk in manifest["chunks"]:
            rows = slice(chunk["start"], chunk["start"] + chunk["count"])
            store.write_chunk(out_dir, chunk, {name: value[rows] for name, value in tensors.items()})
        store.finalize(out_dir)
        return Path(out_dir)

    @classmethod
    def load(cls, path: str | Path) -> "Paths":
        """The paths of a complete dataset directory (from make-guides, a reflow's coupling/ or save)."""
        manifest, tensors = store.load(path)
        info = {k: v for k, v in manifest.items() if k not in ("chunks", "complete")}
        return cls(tensors["x0"], tensors["x1"], tensors.get("guides"), info)
