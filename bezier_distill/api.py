"""The pipeline as a library: make guides with any teacher, distill a student, sample it (docs/spec.md section 7).

    paths = make_guides(teacher, x0, degree=2)           # teacher: any v(x [B, *F], t [B]) -> [B, *F]
    student = distill(paths, steps=2000)                  # an nn.Module f(x, t) with the EMA weights
    x1 = sample(student, x0_new, steps=1)                 # [N, *F]

Time runs from the source (t = 0, x0) to the target (t = 1, x1): a teacher integrates dx/dt = v(x, t) from
x0 at t = 0. A teacher with the other convention (say a noise level s running from 1 at the noise to 0
at the data, dx/ds = u(x, s)) is wrapped by reverse_time(u) into v(x, t) = -u(x, 1 - t).

The CLI stages run the same code: the guide makers of bezier_distill.guides, the training loop of
bezier_distill.train and the samplers of bezier_distill.samplers, and read and write the same files
(Paths.save writes what `make-guides` writes; distill(..., out=DIR) checkpoints and resumes like
`bezier-distill distill --out DIR`).
"""
from __future__ import annotations

import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

import bezier_kernels as bk

from . import samplers, stages
from .checkpoint import has_checkpoint, model_weights
from .config import DistillConfig, ModelConfig, SolverConfig, TrainConfig, from_dict, validate
from .data import StoredPairs
from .errors import ConfigError, field_error, need
from .guides import Paths, coupling_maker, fit_maker, multi_teacher_maker, run_maker
from .models import build_model, check_output_shape
from .teachers import Velocity, velocity_device
from .train import train

__all__ = ["Paths", "Student", "distill", "load_student", "make_guides", "reverse_time", "sample"]


class TimeReversed(nn.Module):
    """v(x, t) = -u(x, scale * (1 - t)): a teacher u whose time runs from the target to the source, in ours."""

    def __init__(self, velocity: Velocity, scale: float = 1.0):
        super().__init__()
        self.velocity, self.scale = velocity, scale  # an nn.Module velocity is registered: its device is found

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return -self.velocity(x, self.scale * (1 - t))


def reverse_time(velocity: Velocity, scale: float = 1.0) -> TimeReversed:
    """A teacher in this package's convention (t = 0 source, 1 target) from one whose time runs the other way.

    velocity u(x [B, *F], s [B]) = dx/dsigma, the velocity in a noise level sigma = s / scale that is 1 at the
    source (the noise) and 0 at the target (the data), called with s = scale * sigma (scale=1000 for a model
    that takes timesteps 0..1000). With t = 1 - sigma, dx/dt = -u(x, scale * (1 - t)), which is returned.
    """
    return TimeReversed(velocity, scale)


def _check_x0(x0: Tensor, where: str) -> None:
    if not isinstance(x0, Tensor) or x0.dim() < 2 or x0.shape[0] < 1:
        got = list(x0.shape) if isinstance(x0, Tensor) else type(x0).__name__
        raise field_error(where, f"must be a tensor [N, *F] with N >= 1, got {got}")
    if not x0.is_floating_point():
        raise field_error(where, f"must be floating point, got {x0.dtype}")


def _problems(where: str, checks) -> None:
    for name, problem in checks:
        if problem:
            raise field_error(f"{where}({name}=...)", problem)


@torch.no_grad()
def make_guides(teacher: Velocity | Sequence[Velocity], x0: Tensor, *, degree: int = 2, method: str = "fit",
                steps: int = 100, solver: str = "euler", guide_times: Sequence[float] | None = None,
                fit_points: int = 0, endpoint_teacher: Velocity | None = None, batch_size: int = 1024,
                device: torch.device | str | None = None, progress: bool = True,
                out: str | Path | None = None) -> Paths:
    """Control points of the teacher's paths from x0 [N, *F]: Paths(x0, x1 [N, *F], guides [N, n-1, *F] or None).

    method "fit": the least-squares degree-`degree` Bezier curve through the teacher's ODE trajectory at
    `fit_points` (0: all steps + 1) of its grid times, pinned to x0 and the ODE end x1 (degree 1: the coupling
    (x0, x1) alone). method "multi_teacher": teacher is a sequence of callables, guide j is teacher j's ODE
    state at guide_times[j] (strictly increasing in (0, 1)) and x1 the ODE end of endpoint_teacher (default:
    the last one); the degree is len(teachers) + 1. `steps` of the `solver` ("euler" or "heun") on [0, 1].
    Batches of batch_size run without autograd on the teacher's device (its parameters', else x0's, or
    `device`); the result is on x0's device. out=DIR also saves the paths as a dataset directory.
    """
    _check_x0(x0, "make_guides(x0=...)")
    teachers = list(teacher) if method == "multi_teacher" and isinstance(teacher, (list, tuple)) else [teacher]
    checks = [("method", need(method in ("fit", "multi_teacher"), "must be 'fit' or 'multi_teacher'", method)),
              ("solver", need(solver in samplers.METHODS, f"must be one of {samplers.METHODS}", solver)),
              ("steps", need(isinstance(steps, int) and steps >= 1, "must be an integer >= 1", steps)),
              ("batch_size", need(isinstance(batch_size, int) and batch_size >= 1, "must be an integer >= 1",
                                  batch_size)),
              ("teacher", need(all(callable(t) for t in teachers), "must be a callable v(x, t) (a sequence of them "
                               "for method 'multi_teacher')", teacher))]
    if method == "fit":
        checks.append(("degree", need(isinstance(degree, int) and 1 <= degree <= bk.MAX_KERNEL_DEGREE,
                                      f"must be in 1..{bk.MAX_KERNEL_DEGREE}", degree)))
        checks.append(("fit_points", need(fit_points == 0 or degree + 1 <= fit_points <= steps + 1,
                                          f"must be 0 (all) or in degree + 1 .. steps + 1 = {steps + 1}", fit_points)))
    else:
        times = list(guide_times or [])
        rising = all(a < b for a, b in zip(times, times[1:])) and all(0 < s < 1 for s in times)
        checks.append(("guide_times", need(len(times) == len(teachers) and rising, f"needs {len(teachers)} strictly "
                                           "increasing time(s) in (0, 1), one per teacher", guide_times)))
    _problems("make_guides", checks)
    config = SolverConfig(method=solver, steps=steps)
    if method == "fit":
        maker = fit_maker(teachers[0], degree, fit_points, config) if degree > 1 else \
            coupling_maker(teachers[0], config)
    else:
        maker = multi_teacher_maker(teachers, list(guide_times), endpoint_teacher or teachers[-1], config)
    device = torch.device(device) if device is not None else velocity_device(teachers[0], x0.device)
    made = run_maker(maker, x0, batch_size, device, progress=progress, desc=f"guides ({method})")
    producer = {"stage": "python", "method": method, "degree": maker.degree, "solver": asdict(config),
                "guide_times": list(guide_times or []), "fit_points": fit_points}
    info = {"producer": producer, "evaluations_per_sample": maker.evaluations_per_sample,
            "teachers": [{"python": f"{type(t).__module__}.{type(t).__qualname__}"} for t in teachers]}
    paths = Paths(made["x0"], made["x1"], made.get("guides"), info)
    if out is not None:
        paths.save(out)
    return paths


class Student(nn.Module):
    """A distilled network f(x [B, *F], t [B]) -> [B, *F] (the EMA weights), with what sampling needs to know.

    target: "endpoint" (x1 = x_t + (1 - t) f(x_t, t)) or "velocity" (f = dx/dt); degree: of the paths it
    learnt; shape: the feature shape F; run_dir: where its checkpoint is (None when trained without out=).
    """

    def __init__(self, network: nn.Module, target: str, degree: int, shape: Sequence[int], run_dir: str | None = None,
                 step: int = 0):
        super().__init__()
        self.network, self.target, self.degree, self.shape = network, target, degree, tuple(shape)
        self.run_dir, self.step = run_dir, step

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.network(x, t)


def _model_argument(model) -> tuple[ModelConfig, nn.Module | None]:
    """(the model config, the network passed in or None) of distill's `model` argument."""
    if model is None:
        return ModelConfig(), None
    if isinstance(model, nn.Module):
        return ModelConfig(), model
    if isinstance(model, str):
        return validate(ModelConfig(factory=model), "distill(model=...)"), None
    if isinstance(model, ModelConfig):
        return validate(model, "distill(model=...)"), None
    if isinstance(model, dict):
        return validate(from_dict(ModelConfig, model, "distill(model=...)"), "distill(model=...)"), None
    raise field_error("distill(model=...)", f"must be None, an nn.Module f(x, t), a ModelConfig (or its mapping) or "
                                            f"'package.module:function', got {type(model).__name__}")


def distill(paths: Paths | str | Path, *, model=None, steps: int = 2000, target: str = "endpoint",
            out: str | Path | None = None, device: torch.device | str | None = None, progress: bool = True,
            init_weights: dict[str, Tensor] | None = None, **options) -> Student:
    """A student trained along the paths (guides: Bezier distillation; degree 1: k-RF distillation).

    paths: a Paths or a dataset directory. model: None (the default network for the feature shape: the MLP
    for vectors, the UNet for images [C, H, W]), any nn.Module f(x, t) (trained in place), a ModelConfig or
    its mapping, or "package.module:function". options: the TrainConfig fields (batch_size, lr, ema_decay,
    time_sampling, loss, warmup_steps, seed, bf16, compile, backend, checkpoint_every, ...). out=DIR writes
    checkpoints and log.jsonl there and resumes from them (a rerun with more steps goes on); without it the
    run lives in a temporary directory. device: default the passed network's, else cuda when available.
    """
    dataset = str(paths) if isinstance(paths, (str, Path)) else ""
    if dataset:
        problem = stages.store.dataset_problem(dataset)
        if problem:
            raise field_error("distill(paths=...)", problem)
        paths = Paths.load(dataset)
    if not isinstance(paths, Paths):
        raise field_error("distill(paths=...)", f"must be a Paths or a dataset directory, got {type(paths).__name__}")
    known = {f.name for f in fields(TrainConfig)} - {"steps", "target"}
    for name in options:
        if name not in known:
            raise field_error(f"distill({name}=...)",
                              f"unknown option (known: steps, target, {', '.join(sorted(known))})")
    cfg = from_dict(TrainConfig, {"steps": steps, "target": target, **options}, "distill.train")
    validate(cfg, "distill.train")
    model_cfg, network = _model_argument(model)
    if device is None:
        device = velocity_device(network, "cuda" if torch.cuda.is_available() else "cpu") if network is not None \
            else ("cuda" if torch.cuda.is_available() else "cpu")
    if network is not None:
        check_output_shape(network.to(device), paths.shape, "distill(model=...)", type(network).__name__)
    record = DistillConfig(pairs=dataset, model=model_cfg, train=cfg)
    device = stages.check_backend("distill", cfg, device)
    pairs = StoredPairs(paths.x0, paths.x1, paths.guides, cfg.seed)
    with tempfile.TemporaryDirectory(prefix="bezier-distill-") as scratch:
        run_dir = Path(out) if out is not None else Path(scratch)
        if out is not None:
            stages.record_config(run_dir, "distill", record)
        run_info = stages.distill_run_info({**paths.info, "degree": paths.degree}, dataset)
        result = train(cfg, model_cfg, pairs, run_dir, run_info=run_info,
                       device=device, init_weights=init_weights, progress=progress, network=network)
    return Student(result.ema.eval(), cfg.target, paths.degree, paths.shape, None if out is None else str(out),
                   result.step)


def load_student(run_dir: str | Path, network: nn.Module | None = None, device: torch.device | str = "cpu") -> Student:
    """The student of a distill run directory (CLI or distill(out=...)) with its EMA weights, in eval mode.

    network: the module it was trained on when that was passed in from Python (an architecture of the
    package or a factory is rebuilt from the checkpoint)."""
    if not has_checkpoint(run_dir):
        raise ConfigError(f"'{run_dir}' is not a training run (no checkpoint.json)")
    weights, state = model_weights(run_dir)
    run = state["run"]
    shape = tuple(run.get("shape", [run["dim"]]))
    if network is None:
        if "module" in run["model"]:
            raise ConfigError(f"'{run_dir}' was trained on a network passed in ({run['model']['module']}): pass a "
                              "fresh one as load_student(run_dir, network)")
        network = build_model(ModelConfig(**run["model"]), shape)
    network.load_state_dict(weights)
    network = network.to(device).eval().requires_grad_(False)
    return Student(network, run["target"], run["degree"], shape, str(run_dir), state["step"])


@torch.no_grad()
def sample(student: Velocity, x0: Tensor, *, steps: int = 1, method: str = "euler", batch_size: int = 4096,
           device: torch.device | str | None = None, guide_map: Callable | None = None) -> Tensor:
    """Samples [N, *F] from x0 [N, *F]: `steps` uniform steps of "euler" or "heun" on [0, 1] (one Euler step of an
    endpoint student is x0 + f(x0, 0)); the same sampler serves velocity and endpoint students and teachers.

    guide_map (endpoint students of Bezier paths, vectors [N, D]): the re-entry sampler
    samplers.sample_on_bezier with guides predicted from x0. Runs in batches on the student's device (or
    `device`); the result is on x0's device.
    """
    _check_x0(x0, "sample(x0=...)")
    _problems("sample", [("steps", need(isinstance(steps, int) and steps >= 1, "must be an integer >= 1", steps)),
                         ("method", need(method in samplers.METHODS, f"must be one of {samplers.METHODS}", method)),
                         ("guide_map", need(guide_map is None or x0.dim() == 2, "works on vectors [N, D]",
                                            list(x0.shape)))])
    device = torch.device(device) if device is not None else velocity_device(student, x0.device)
    degree = getattr(student, "degree", 1)
    parts = []
    for chunk in x0.split(batch_size):
        chunk = chunk.to(device)
        if guide_map is not None:
            parts.append(samplers.sample_on_bezier(student, chunk, steps, guide_map, degree)[0].to(x0.device))
        else:
            parts.append(samplers.sample(student, chunk, steps, method).to(x0.device))
    return torch.cat(parts)

