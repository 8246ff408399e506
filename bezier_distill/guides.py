"""Guide makers: control points (x0, guides, x1) of Bezier paths made by teachers, written to a store.

A maker turns a chunk of x0 [B, D] into x1 [B, D], guides [B, n-1, D] (none for degree 1) and,
when asked, the teacher's trajectory on its solver grid:
    coupling_maker       degree 1: x1 = the teacher's ODE end (the k-RF coupling that reflow trains on)
    multi_teacher_maker  guide j = teacher j's ODE state at time s_j; x1 = the endpoint teacher's end
    fit_maker            the least-squares degree-n Bezier curve through one teacher's trajectory at
                         m >= n + 1 times, endpoints pinned to x0 and the ODE end (fit_bezier)
`write_paths` runs a maker over chunks of x0 drawn from the teachers' source into a store dataset.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

import bezier_kernels as bk

from . import store
from .config import GenerateConfig, SolverConfig
from .samplers import evaluations, ode_grid, uniform_times
from .teachers import Teacher


def fit_bezier(points: Tensor, times: Tensor, degree: int, x0: Tensor, x1: Tensor) -> Tensor:
    """Inner control points [B, n-1, D] of the degree-n Bezier curve from x0 to x1 [B, D] closest in
    least squares to points [B, m, D] at times [m] (shared by the batch) or [B, m]; m >= n + 1.

    With P_0 = x0 and P_n = x1 pinned, sum_i b_{i,n}(t_k) P_i ~ points_k is linear in P_1 .. P_{n-1}:
    a least-squares solve with the Bernstein matrix (bezier_kernels.bernstein_weights, float64), for
    shared times one factorisation with B * D right-hand sides. Returns points' dtype.
    """
    B, m, D = points.shape
    if degree < 1 or m < degree + 1 or times.shape not in ((m,), (B, m)):
        raise ValueError(f"fit_bezier needs degree >= 1, points [B, m, D] with m >= degree + 1 = {degree + 1} and "
                         f"times [m] or [B, m]; got points {list(points.shape)}, times {list(times.shape)}")
    if degree == 1:
        return points.new_zeros(B, 0, D)
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
    teachers: list[Teacher]
    make: Callable[[Tensor], dict[str, Tensor]]
    evaluations_per_sample: int                  # teacher network calls per pair
    trajectory_times: list[float] | None = None  # the times of "trajectory", when saved


def fit_maker(teacher: Teacher, degree: int, fit_points: int, solver: SolverConfig,
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
        states = teacher.states_at(x0, grid if keep_states else [1.0], solver)
        x1 = states[:, -1]
        out = {"x1": x1}
        if degree > 1:
            out["guides"] = fit_bezier(states[:, pick.to(states.device)], fit_times, degree, x0, x1)
        if save_trajectory:
            out["trajectory"] = states
        return out

    return PathMaker(degree, [teacher], make, evaluations(solver.method, solver.steps),
                     grid if save_trajectory else None)


def coupling_maker(teacher: Teacher, solver: SolverConfig, save_trajectory: bool = False) -> PathMaker:
    """Degree 1: (x0, x1 = the teacher's ODE end), the coupling a reflow trains on."""
    return fit_maker(teacher, 1, 0, solver, save_trajectory)


def multi_teacher_maker(teachers: list[Teacher], times: list[float], endpoint: Teacher, solver: SolverConfig,
                        save_trajectory: bool = False) -> PathMaker:
    """Guide j = teachers[j]'s ODE state at times[j]; x1 (and the trajectory) from the endpoint teacher."""
    end_times = uniform_times(solver.steps).tolist() if save_trajectory else [1.0]

    def make(x0: Tensor) -> dict[str, Tensor]:
        guides = [teacher.states_at(x0, [s], solver)[:, 0] for teacher, s in zip(teachers, times)]
        states = endpoint.states_at(x0, end_times, solver)
        out = {"x1": states[:, -1], "guides": torch.stack(guides, dim=1)}
        if save_trajectory:
            out["trajectory"] = states
        return out

    calls = sum(evaluations(solver.method, len(ode_grid([s], solver.steps)) - 1) for s in times)
    unique = list({id(t): t for t in [*teachers, endpoint]}.values())
    return PathMaker(len(teachers) + 1, unique, make, calls + evaluations(solver.method, solver.steps),
                     end_times if save_trajectory else None)


def write_paths(maker: PathMaker, generate: GenerateConfig, out_dir: str | Path, producer: dict, *,
                progress: bool = True, desc: str = "paths") -> dict:
    """Draws x0 from the teachers' source in chunks, runs the maker, stores the control points
    (resuming: finished chunks are kept); returns the store manifest."""
    first = maker.teachers[0]
    source, dim, n = first.source, first.run["dim"], maker.degree
    device = next(first.model.parameters()).device
    shapes = {"x0": [dim], "x1": [dim]}
    if n > 1:
        shapes["guides"] = [n - 1, dim]
    if maker.trajectory_times is not None:
        shapes["trajectory"] = [len(maker.trajectory_times), dim]
    header = {"kind": "coupling" if n == 1 else "guides", "degree": n, "dim": dim,
              "num_samples": generate.num_samples, "chunk_size": generate.chunk_size, "seed": generate.seed,
              "dtype": "float32", "tensors": shapes, "data": first.run["data"], "producer": producer,
              "teachers": [t.record for t in maker.teachers], "trajectory_times": maker.trajectory_times,
              "evaluations_per_sample": maker.evaluations_per_sample}

    def make_chunk(count: int, generator: torch.Generator) -> dict[str, Tensor]:
        x0 = source.sample(count, generator).to(device)
        return {"x0": x0, **maker.make(x0)}

    return store.generate(out_dir, header, make_chunk, progress=progress, desc=desc)
