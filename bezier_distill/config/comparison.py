"""The config of `compare`: the methods to compare, their shared budgets, and how they are measured."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import bezier_kernels as bk

from ..errors import need
from .baselines import BaselinesConfig
from .sections import DataConfig, GenerateConfig, ModelConfig, TrainConfig, velocity_target_problem
from .stages import guide_time_checks


@dataclass
class MethodConfig:
    """One compared method: a distilled student or a few-step baseline.

    kind "reflow": k-RF distillation, the student trained on straight lines of the coupling of the
    k-RF teacher (k = reflows). kind "bezier": Bezier distillation on degree-n paths whose guides the
    k-RF teachers listed in `teachers` make: maker "fit" (one teacher, degree n) or "multi_teacher"
    (guide j = teacher teachers[j]'s ODE state at guide_times[j], n = len(teachers) + 1, x1 from
    the teacher `endpoint`, 0 meaning the last of `teachers`). The baselines (bezier_distill.baselines,
    settings in CompareConfig.baselines): kind "rfpp", 2-RF++ on the coupling of the k-RF teacher
    (k = reflows, 1: the paper's 2-RF++); kind "caf", Constant Acceleration Flow on that coupling;
    kind "meanflow", MeanFlow from scratch on independent pairs (no teacher).
    """

    name: str = ""
    kind: Literal["reflow", "bezier", "rfpp", "caf", "meanflow"] = "reflow"
    reflows: int = 1
    maker: Literal["fit", "multi_teacher"] = "fit"
    degree: int = 2                  # fit
    teachers: list[int] = field(default_factory=lambda: [1])
    guide_times: list[float] = field(default_factory=list)
    endpoint: int = 0

    @property
    def path_degree(self) -> int:
        if self.kind in ("reflow", "rfpp", "meanflow"):
            return 1
        if self.kind == "caf":
            return 2
        return self.degree if self.maker == "fit" else len(self.teachers) + 1

    @property
    def teacher_levels(self) -> list[int]:
        """The k of every k-RF teacher the method's data come from (none for MeanFlow)."""
        if self.kind in ("reflow", "rfpp", "caf"):
            return [self.reflows]
        if self.kind == "meanflow":
            return []
        return sorted(set(self.teachers) | ({self.endpoint} if self.endpoint else set()))

    def checks(self):
        usable = bool(self.name) and all(c.isalnum() or c in "-_.=@+()," for c in self.name.replace(" ", ""))
        yield "name", need(usable, "needs a name of letters, digits, spaces and -_.=@+(),", self.name)
        yield "reflows", need(self.reflows >= 1, "must be >= 1 (k of the k-RF coupling)", self.reflows)
        if self.kind == "bezier":
            yield "teachers", need(bool(self.teachers) and all(k >= 1 for k in self.teachers),
                                   "needs the k (>= 1) of each k-RF teacher", self.teachers)
            yield "endpoint", need(self.endpoint >= 0, "must be >= 0 (0: the last teacher)", self.endpoint)
            if self.maker == "fit":
                yield "teachers", need(len(self.teachers) == 1, "maker 'fit' takes exactly one teacher", self.teachers)
                yield "degree", need(2 <= self.degree <= bk.MAX_KERNEL_DEGREE,
                                     f"must be in 2..{bk.MAX_KERNEL_DEGREE} for a Bezier path", self.degree)
            else:
                yield from guide_time_checks(self.guide_times, len(self.teachers))


def baseline_methods() -> list[MethodConfig]:
    """The few-step baselines: 2-RF++ and CAF on the 1-RF teacher's coupling, MeanFlow from scratch."""
    return [MethodConfig("2-RF++", "rfpp", reflows=1), MethodConfig("CAF (1-RF)", "caf", reflows=1),
            MethodConfig("MeanFlow", "meanflow")]


def default_methods() -> list[MethodConfig]:
    """k-RF distillation for k = 1, 2, 3, Bezier distillation of degree 2 and 3 by both guide makers,
    on 1-RF teachers and on 2-RF teachers, and the baselines."""
    methods = [MethodConfig(f"{k}-RF", "reflow", reflows=k) for k in (1, 2, 3)]
    for k in (1, 2):
        methods += [MethodConfig(f"Bezier fit n=2 ({k}-RF)", "bezier", maker="fit", degree=2, teachers=[k]),
                    MethodConfig(f"Bezier fit n=3 ({k}-RF)", "bezier", maker="fit", degree=3, teachers=[k]),
                    MethodConfig(f"Bezier multi n=2 ({k}-RF)", "bezier", maker="multi_teacher", teachers=[k],
                                 guide_times=[0.5]),
                    MethodConfig(f"Bezier multi n=3 ({k}-RF)", "bezier", maker="multi_teacher", teachers=[k, k],
                                 guide_times=[1 / 3, 2 / 3])]
    return methods + baseline_methods()


@dataclass
class GuideMapConfig:
    """The guide map of a Bezier student's N-step sampler (samplers.sample_on_bezier): a network trained
    on the stored control points to give the guides of x0 (target "endpoint" at t = 0 only)."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig(width=128, depth=2, time_features=32))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=200, target="endpoint", time_sampling="grid", grid_size=1, checkpoint_every=200, log_every=20))

    def checks(self):
        yield "train.target", need(self.train.target == "endpoint", "must be 'endpoint'", self.train.target)
        at_zero = self.train.time_sampling == "grid" and self.train.grid_size == 1
        yield "train.time_sampling", need(at_zero, "must be 'grid' with grid_size 1 (t = 0 only)",
                                          f"{self.train.time_sampling} (grid_size {self.train.grid_size})")


@dataclass
class EvaluateConfig:
    """How every model is sampled and measured against fresh target samples."""

    num_samples: int = 1000          # samples per model and seed (and target samples to compare with)
    steps: list[int] = field(default_factory=lambda: [1, 2])  # sampler steps of every model
    reference_steps: int = 100       # the teachers' many-step reference
    reference_method: Literal["euler", "heun"] = "euler"
    w2_samples: int = 500            # the exact W2 uses the first w2_samples of each side (O(n^3))
    projections: int = 256           # sliced W2 directions
    seed: int = 12345
    figure_paths: int = 12           # trajectories drawn per panel (2-D data)

    def checks(self):
        yield "num_samples", need(self.num_samples >= 2, "must be >= 2", self.num_samples)
        yield "steps", need(bool(self.steps) and all(s >= 1 for s in self.steps), "needs step counts >= 1",
                            self.steps)
        yield "reference_steps", need(self.reference_steps >= 1, "must be >= 1", self.reference_steps)
        yield "w2_samples", need(self.w2_samples >= 2, "must be >= 2", self.w2_samples)
        yield "projections", need(self.projections >= 1, "must be >= 1", self.projections)
        yield "seed", need(self.seed >= 0, "must be >= 0", self.seed)


def _small_model() -> ModelConfig:
    return ModelConfig(width=128, depth=2, time_features=32)


@dataclass
class CompareConfig:
    """`compare`: teachers, couplings, guides and students of every method, for every seed, then metrics.

    The defaults are the demo (`make demo`): normal -> two moons, small networks and short training, three
    seeds, every method (the demo itself names a shorter list in configs/demo.yaml, to stay under 5 minutes).
    Every train config's seed and the generation seed are replaced per run seed.
    """

    data: DataConfig = field(default_factory=DataConfig)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    model: ModelConfig = field(default_factory=_small_model)           # teachers and students
    teacher: TrainConfig = field(default_factory=lambda: TrainConfig(steps=800, checkpoint_every=800))
    reflow: TrainConfig = field(default_factory=lambda: TrainConfig(steps=300, checkpoint_every=300))
    generate: GenerateConfig = field(default_factory=lambda: GenerateConfig(num_samples=5000))  # couplings, guides
    student: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=300, target="endpoint", time_sampling="u_shaped", checkpoint_every=300))
    init_students: bool = True       # start each student from the weights of the teacher whose ODE end is x1
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)  # settings of the rfpp, caf, meanflow kinds
    guide_map: GuideMapConfig = field(default_factory=GuideMapConfig)
    methods: list[MethodConfig] = field(default_factory=default_methods)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    plot: bool = True
    threads: int = 1                 # torch CPU threads (0: torch's default); these small networks gain nothing
                                     # from more, and on a busy machine extra threads spin-wait for each other

    def checks(self):
        yield "threads", need(self.threads >= 0, "must be >= 0 (0: torch's default)", self.threads)
        distinct = len(set(self.seeds)) == len(self.seeds)
        yield "seeds", need(bool(self.seeds) and all(s >= 0 for s in self.seeds) and distinct,
                            "needs distinct seeds >= 0", self.seeds)
        yield "teacher.target", velocity_target_problem(self.teacher)
        yield "reflow.target", velocity_target_problem(self.reflow)
        names = [m.name for m in self.methods]
        yield "methods", need(bool(names) and len(set(names)) == len(names), "needs methods with distinct names", names)
        two_input = sorted({m.kind for m in self.methods if m.kind in ("caf", "meanflow")})
        yield "model.factory", need(not (self.model.factory and two_input),
                                    f"is a plain f(x, t), but the methods of kind {' and '.join(two_input)} need "
                                    "networks with more inputs: drop them or use model.kind 'mlp' or 'unet'",
                                    self.model.factory)
