"""The config of each pipeline stage (one per CLI subcommand), built from the shared sections."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import bezier_kernels as bk

from ..errors import need
from .sections import DataConfig, GenerateConfig, ModelConfig, SolverConfig, TrainConfig, velocity_target_problem

# fields that may change between a run and its resumption (they do not change the result)
RESUMABLE_CHANGES = ("train.steps", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints")


def run_dir_named(path: str) -> str | None:
    """None when a run directory is named (whether it holds a run is checked when the stage starts)."""
    return None if path else "needs the run directory of a trained model"


def outside_teacher_checks(model: str, weights: str, run_dirs: list[str]):
    """An outside teacher (teacher_model + teacher_weights) replaces the teacher run directories."""
    module, colon, function = model.partition(":")
    yield "teacher_model", need(not model or (module and colon and function), "must be 'package.module:function'",
                                model)
    yield "teacher_weights", need(bool(weights) == bool(model), "teacher_model and teacher_weights go together "
                                  "(--teacher-model and --teacher-weights)", weights)
    yield "teacher_model", need(not model or not any(run_dirs), "an outside teacher replaces the teacher run "
                                "directories: give one or the other", run_dirs)


@dataclass
class TeacherConfig:
    """`train-teacher`: 1-rectified flow on independent pairs (x0 ~ source, x1 ~ target)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def checks(self):
        yield "train.target", velocity_target_problem(self.train)


@dataclass
class ReflowConfig:
    """`reflow`: simulate the teacher's ODE from fresh x0 (the coupling), train a (k+1)-RF teacher on it."""

    teacher: str = ""                # run directory of the k-RF teacher
    coupling: GenerateConfig = field(default_factory=GenerateConfig)
    init_from_teacher: bool = True   # start from the teacher's weights (same architecture either way)
    train: TrainConfig = field(default_factory=TrainConfig)
    teacher_model: str = ""          # or an outside teacher: "package.module:function" called with the feature shape
    teacher_weights: str = ""        # ... its state dict (.pt or .safetensors)
    teacher_data: DataConfig = field(default_factory=DataConfig)  # ... and its source and target distributions

    def checks(self):
        if not self.teacher_model:
            yield "teacher", run_dir_named(self.teacher)
        yield from outside_teacher_checks(self.teacher_model, self.teacher_weights, [self.teacher])
        yield "train.target", velocity_target_problem(self.train)


@dataclass
class GuidesConfig:
    """`make-guides`: control points (x0, guides, x1) of degree-n Bezier paths, made by teachers.

    multi_teacher: guide j is teacher j's ODE state at guide_times[j], so degree = len(teachers) + 1;
    x1 is endpoint_teacher's ODE end (default: the last teacher). fit: one teacher's trajectory at
    fit_points times, fitted by the least-squares degree-`degree` curve with pinned endpoints.
    """

    method: Literal["fit", "multi_teacher"] = "fit"
    teachers: list[str] = field(default_factory=list)
    guide_times: list[float] = field(default_factory=list)
    endpoint_teacher: str = ""
    degree: int = 2                  # fit only
    fit_points: int = 0              # fit only; 0: every state of the solver's grid (solver.steps + 1)
    save_trajectory: bool = False    # also store the (endpoint) teacher's states on its solver grid
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    teacher_model: str = ""          # or one outside teacher: "package.module:function" called with the feature shape
    teacher_weights: str = ""        # ... its state dict (.pt or .safetensors)
    teacher_data: DataConfig = field(default_factory=DataConfig)  # ... and its source and target distributions

    def checks(self):
        yield from outside_teacher_checks(self.teacher_model, self.teacher_weights,
                                          [*self.teachers, self.endpoint_teacher])
        count = 1 if self.teacher_model else len(self.teachers)
        if not self.teacher_model:
            yield "teachers", need(bool(self.teachers), "needs at least one teacher run directory", self.teachers)
        for i, run in enumerate(self.teachers):
            yield f"teachers[{i}]", run_dir_named(run)
        states = self.generate.solver.steps + 1
        if self.method == "fit":
            yield "teachers", need(count == 1, "method 'fit' takes exactly one teacher", self.teachers)
            yield "degree", need(1 <= self.degree <= bk.MAX_KERNEL_DEGREE, f"must be in 1..{bk.MAX_KERNEL_DEGREE}",
                                 self.degree)
            m = self.fit_points or states
            yield "fit_points", need(self.degree + 1 <= m <= states,
                                     f"needs degree + 1 = {self.degree + 1} to generate.solver.steps + 1 = {states} "
                                     f"trajectory states (0 takes all {states})", self.fit_points)
        else:
            yield from guide_time_checks(self.guide_times, count)


def guide_time_checks(times: list[float], teachers: int):
    """The multi_teacher guide times: one per teacher, strictly increasing in (0, 1)."""
    yield "guide_times", need(len(times) == teachers, f"needs one time per teacher ({teachers})", times)
    rising = all(a < b for a, b in zip(times, times[1:]))
    yield "guide_times", need(rising and all(0 < s < 1 for s in times), "must be strictly increasing times in (0, 1)",
                              times)


@dataclass
class DistillConfig:
    """`distill`: a student trained along the paths of stored control points (guides or a coupling)."""

    pairs: str = ""                  # dataset directory from make-guides or a reflow's coupling
    init_from: str = ""              # optional run directory whose weights start the student
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def checks(self):
        yield "pairs", need(bool(self.pairs), "needs a dataset directory (from make-guides, or a reflow run's "
                            "coupling/)", self.pairs)


@dataclass
class SampleConfig:
    """`sample`: x0 ~ the model's source, then N solver steps (one Euler step for a one-step student)."""

    model: str = ""                  # run directory of a teacher or student
    num_samples: int = 2000
    seed: int = 1
    ema: bool = True                 # use the EMA weights
    solver: SolverConfig = field(default_factory=lambda: SolverConfig(steps=1))
    plot: bool = True                # write samples.png

    def checks(self):
        yield "model", run_dir_named(self.model)
        yield "num_samples", need(self.num_samples >= 2, "must be >= 2", self.num_samples)
        yield "seed", need(self.seed >= 0, "must be >= 0", self.seed)
