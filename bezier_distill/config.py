"""Run configurations: one small dataclass per concern, read from YAML or JSON and checked field by field.

A config file has one section per CLI stage (teacher, reflow, guides, distill, sample); each
subcommand reads its own section and records it, with every default filled in, as
`config.yaml` beside its outputs. Every user mistake raises ConfigError with a one-line message
naming the field, e.g. "config field 'distill.train.lr': must be > 0, got -0.1".
"""
from __future__ import annotations

import json
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

import bezier_kernels as bk

from .errors import ConfigError  # defined in the leaf module errors; config.ConfigError stays importable


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def fail(where: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"config field '{where}': {message}")


def need(ok: bool, requirement: str, value: Any) -> str | None:
    """None when ok, else the problem "requirement, got value" for checks()."""
    return None if ok else f"{requirement}, got {value!r}"


@dataclass
class DataConfig:
    """Source (x0) and target (x1) distributions by name; see bezier_distill.data.DISTRIBUTIONS."""

    source: str = "normal"
    target: str = "moons"

    def checks(self):
        from .data import distribution_problem, pair_problem

        yield "source", distribution_problem(self.source)
        yield "target", distribution_problem(self.target)
        yield "target", pair_problem(self.source, self.target)


@dataclass
class ModelConfig:
    """MLP velocity network; width and depth None pick the preset for the data's dimension."""

    width: int | None = None        # hidden units; None: 256 for 2-D toys, 512 for the digits
    depth: int | None = None        # residual blocks; None: 3 for 2-D toys, 4 for the digits
    time_features: int = 64         # sinusoidal features of t (even)

    def checks(self):
        yield "width", need(self.width is None or self.width >= 1, "must be >= 1 or null", self.width)
        yield "depth", need(self.depth is None or self.depth >= 0, "must be >= 0 or null", self.depth)
        yield "time_features", need(self.time_features >= 2 and self.time_features % 2 == 0,
                                    "must be even and >= 2", self.time_features)


@dataclass
class TrainConfig:
    """Optimisation, the training objective along the stored paths, and checkpointing."""

    steps: int = 2000
    batch_size: int = 256            # the global batch: under torchrun each rank takes batch_size / world size rows
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100          # linear learning-rate warmup, then constant
    grad_clip: float = 1.0           # max global gradient norm; 0 disables clipping
    ema_decay: float = 0.999
    target: Literal["velocity", "endpoint"] = "velocity"
    loss: Literal["mse", "pseudo_huber"] = "mse"
    huber_c: float | None = None     # None: 0.00054 * sqrt(D)
    time_sampling: Literal["uniform", "u_shaped", "grid"] = "uniform"
    u_shape_a: float = 4.0           # u_shaped density ~ exp(a t) + exp(a (1 - t))
    grid_size: int = 8               # grid: t uniform over {0, 1/K, ..., (K-1)/K}
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2        # the last K checkpoints kept: a resume falls back to an older intact one
    log_every: int = 50
    bf16: bool = False               # bfloat16 autocast of the network (meant for GPUs)
    compile: bool = False            # torch.compile of the network (meant for GPUs)
    backend: Literal["auto", "torch", "cpp", "triton", "cuda"] = "auto"  # bezier_kernels backend

    def checks(self):
        yield "steps", need(self.steps >= 1, "must be >= 1", self.steps)
        yield "batch_size", need(self.batch_size >= 1, "must be >= 1", self.batch_size)
        yield "lr", need(self.lr > 0, "must be > 0", self.lr)
        yield "weight_decay", need(self.weight_decay >= 0, "must be >= 0", self.weight_decay)
        yield "warmup_steps", need(self.warmup_steps >= 0, "must be >= 0", self.warmup_steps)
        yield "grad_clip", need(self.grad_clip >= 0, "must be >= 0 (0 disables clipping)", self.grad_clip)
        yield "ema_decay", need(0 <= self.ema_decay < 1, "must be in [0, 1)", self.ema_decay)
        yield "huber_c", need(self.huber_c is None or self.huber_c > 0, "must be > 0 or null", self.huber_c)
        yield "u_shape_a", need(self.u_shape_a > 0, "must be > 0", self.u_shape_a)
        yield "grid_size", need(self.grid_size >= 1, "must be >= 1", self.grid_size)
        yield "seed", need(self.seed >= 0, "must be >= 0", self.seed)
        yield "checkpoint_every", need(self.checkpoint_every >= 1, "must be >= 1", self.checkpoint_every)
        yield "keep_checkpoints", need(self.keep_checkpoints >= 1, "must be >= 1", self.keep_checkpoints)
        yield "log_every", need(self.log_every >= 1, "must be >= 1", self.log_every)


@dataclass
class SolverConfig:
    """ODE solver: N steps of Euler or Heun on the uniform grid of [0, 1]."""

    method: Literal["euler", "heun"] = "euler"
    steps: int = 100

    def checks(self):
        yield "steps", need(self.steps >= 1, "must be >= 1", self.steps)


@dataclass
class GenerateConfig:
    """How many pairs to simulate, in chunks of chunk_size (each chunk seeded from seed and its index)."""

    num_samples: int = 20000
    chunk_size: int = 5000
    seed: int = 0
    solver: SolverConfig = field(default_factory=SolverConfig)

    def checks(self):
        yield "num_samples", need(self.num_samples >= 1, "must be >= 1", self.num_samples)
        yield "chunk_size", need(self.chunk_size >= 1, "must be >= 1", self.chunk_size)
        yield "seed", need(self.seed >= 0, "must be >= 0", self.seed)


def _velocity_target(train: TrainConfig) -> str | None:
    return need(train.target == "velocity", "a teacher fits the velocity: must be 'velocity'", train.target)


@dataclass
class TeacherStage:
    """`train-teacher`: 1-rectified flow on independent pairs (x0 ~ source, x1 ~ target)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def checks(self):
        yield "train.target", _velocity_target(self.train)


@dataclass
class ReflowStage:
    """`reflow`: simulate the teacher's ODE from fresh x0 (the coupling), train a (k+1)-RF teacher on it."""

    teacher: str = ""                # run directory of the k-RF teacher
    coupling: GenerateConfig = field(default_factory=GenerateConfig)
    init_from_teacher: bool = True   # start from the teacher's weights (same architecture either way)
    train: TrainConfig = field(default_factory=TrainConfig)

    def checks(self):
        yield "teacher", run_dir_problem(self.teacher)
        yield "train.target", _velocity_target(self.train)


@dataclass
class GuidesStage:
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

    def checks(self):
        yield "teachers", need(bool(self.teachers), "needs at least one teacher run directory", self.teachers)
        for i, run in enumerate(self.teachers):
            yield f"teachers[{i}]", run_dir_problem(run)
        if self.endpoint_teacher:
            yield "endpoint_teacher", run_dir_problem(self.endpoint_teacher)
        states = self.generate.solver.steps + 1
        if self.method == "fit":
            yield "teachers", need(len(self.teachers) == 1, "method 'fit' takes exactly one teacher", self.teachers)
            yield "degree", need(1 <= self.degree <= bk.MAX_KERNEL_DEGREE, f"must be in 1..{bk.MAX_KERNEL_DEGREE}",
                                 self.degree)
            m = self.fit_points or states
            yield "fit_points", need(self.degree + 1 <= m <= states,
                                     f"needs degree + 1 = {self.degree + 1} to generate.solver.steps + 1 = {states} "
                                     f"trajectory states (0 takes all {states})", self.fit_points)
        else:
            yield from guide_time_checks(self.guide_times, len(self.teachers))


def guide_time_checks(times: list[float], teachers: int):
    """The multi_teacher guide times: one per teacher, strictly increasing in (0, 1)."""
    yield "guide_times", need(len(times) == teachers, f"needs one time per teacher ({teachers})", times)
    rising = all(a < b for a, b in zip(times, times[1:]))
    yield "guide_times", need(rising and all(0 < s < 1 for s in times), "must be strictly increasing times in (0, 1)",
                              times)


@dataclass
class DistillStage:
    """`distill`: a student trained along the paths of stored control points (guides or a coupling)."""

    pairs: str = ""                  # dataset directory from make-guides or a reflow's coupling
    init_from: str = ""              # optional run directory whose weights start the student
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def checks(self):
        from .store import dataset_problem

        yield "pairs", dataset_problem(self.pairs)
        if self.init_from:
            yield "init_from", run_dir_problem(self.init_from)


@dataclass
class SampleStage:
    """`sample`: x0 ~ the model's source, then N solver steps (one Euler step for a one-step student)."""

    model: str = ""                  # run directory of a teacher or student
    num_samples: int = 2000
    seed: int = 1
    ema: bool = True                 # use the EMA weights
    solver: SolverConfig = field(default_factory=lambda: SolverConfig(steps=1))
    plot: bool = True                # write samples.png

    def checks(self):
        yield "model", run_dir_problem(self.model)
        yield "num_samples", need(self.num_samples >= 2, "must be >= 2", self.num_samples)
        yield "seed", need(self.seed >= 0, "must be >= 0", self.seed)


@dataclass
class MethodConfig:
    """One distilled student of a comparison.

    kind "reflow": k-RF distillation, the student trained on straight lines of the coupling of the
    k-RF teacher (k = reflows). kind "bezier": Bezier distillation on degree-n paths whose guides the
    k-RF teachers listed in `teachers` make: maker "fit" (one teacher, degree n) or "multi_teacher"
    (guide j = teacher teachers[j]'s ODE state at guide_times[j], n = len(teachers) + 1, x1 from
    the teacher `endpoint`, 0 meaning the last of `teachers`).
    """

    name: str = ""
    kind: Literal["reflow", "bezier"] = "reflow"
    reflows: int = 1
    maker: Literal["fit", "multi_teacher"] = "fit"
    degree: int = 2                  # fit
    teachers: list[int] = field(default_factory=lambda: [1])
    guide_times: list[float] = field(default_factory=list)
    endpoint: int = 0

    @property
    def path_degree(self) -> int:
        if self.kind == "reflow":
            return 1
        return self.degree if self.maker == "fit" else len(self.teachers) + 1

    @property
    def teacher_levels(self) -> list[int]:
        """The k of every k-RF teacher the method's data come from."""
        if self.kind == "reflow":
            return [self.reflows]
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


def default_methods() -> list[MethodConfig]:
    """k-RF distillation for k = 1, 2, 3 and Bezier distillation of degree 2 and 3 by both guide makers,
    on 1-RF teachers and on 2-RF teachers."""
    methods = [MethodConfig(f"{k}-RF", "reflow", reflows=k) for k in (1, 2, 3)]
    for k in (1, 2):
        methods += [MethodConfig(f"Bezier fit n=2 ({k}-RF)", "bezier", maker="fit", degree=2, teachers=[k]),
                    MethodConfig(f"Bezier fit n=3 ({k}-RF)", "bezier", maker="fit", degree=3, teachers=[k]),
                    MethodConfig(f"Bezier multi n=2 ({k}-RF)", "bezier", maker="multi_teacher", teachers=[k],
                                 guide_times=[0.5]),
                    MethodConfig(f"Bezier multi n=3 ({k}-RF)", "bezier", maker="multi_teacher", teachers=[k, k],
                                 guide_times=[1 / 3, 2 / 3])]
    return methods


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
class CompareStage:
    """`compare`: teachers, couplings, guides and students of every method, for every seed, then metrics.

    The defaults are the demo (`make demo`): normal -> two moons, small networks and short training,
    every method, three seeds. Every train config's seed and the generation seed are replaced per run seed.
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
    guide_map: GuideMapConfig = field(default_factory=GuideMapConfig)
    methods: list[MethodConfig] = field(default_factory=default_methods)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    plot: bool = True
    threads: int = 1                 # torch CPU threads (0: torch's default); these small networks gain nothing
                                     # from more, and on a busy machine extra threads spin-wait for each other

    def checks(self):
        yield "threads", need(self.threads >= 0, "must be >= 0 (0: torch's default)", self.threads)
        yield "seeds", need(bool(self.seeds) and all(s >= 0 for s in self.seeds) and len(set(self.seeds)) == len(self.seeds),
                            "needs distinct seeds >= 0", self.seeds)
        yield "teacher.target", _velocity_target(self.teacher)
        yield "reflow.target", _velocity_target(self.reflow)
        names = [m.name for m in self.methods]
        yield "methods", need(bool(names) and len(set(names)) == len(names), "needs methods with distinct names", names)


# section name in a config file -> stage dataclass (CLI subcommand names map onto these sections)
STAGES: dict[str, type] = {
    "teacher": TeacherStage,
    "reflow": ReflowStage,
    "guides": GuidesStage,
    "distill": DistillStage,
    "sample": SampleStage,
    "compare": CompareStage,
}

# fields that may change between a run and its resumption (they do not change the result)
RESUMABLE_CHANGES = ("train.steps", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints")


def run_dir_problem(path: str) -> str | None:
    """None when path is a training run directory (it has checkpoint.json), else the problem."""
    if not path:
        return "needs the run directory of a trained model"
    if not (Path(path) / "checkpoint.json").is_file():
        return f"'{path}' is not a training run (no checkpoint.json)"
    return None


# ---------------------------------------------------------------- building and checking

def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"a list (each {_type_name(typing.get_args(tp)[0])})"
    if is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _convert(tp: Any, value: Any, where: str) -> Any:
    """value as type tp (nested dataclasses from mappings, ints accepted as floats), or ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            if option is type(None) and value is None:
                return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) == 1:
            try:
                return _convert(inner[0], value, where)
            except ConfigError:
                pass
    elif origin is Literal:
        if value in typing.get_args(tp) and isinstance(value, str):
            return value
    elif origin is list:
        if isinstance(value, list):
            return [_convert(typing.get_args(tp)[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    elif is_dataclass(tp):
        return from_dict(tp, value, where)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    fail(where, f"expected {_type_name(tp)}, got {value!r}")


def _default(f: Any) -> Any:
    """A dataclass field's default value (a fresh one from its factory), None when it has none."""
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None if f.default is MISSING else f.default


def from_dict(cls: type, data: Any, where: str = "", base: Any = None) -> Any:
    """Builds dataclass cls from a mapping, rejecting unknown fields and wrong types by name; base (an
    instance of cls) gives the values of the fields that data leaves out (default: cls's defaults).

    A nested section given in part keeps the enclosing field's own defaults for the rest: with
    `compare.student` defaulting to target "endpoint", `{student: {steps: 5}}` changes only the steps.
    """
    if not isinstance(data, dict):
        fail(where or "<top>", f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            fail(_join(where, str(key)), f"unknown field (known: {', '.join(known)})")
    values = {}
    for key, value in data.items():
        inner = getattr(base, key) if base is not None else _default(known[key])
        if is_dataclass(inner) and isinstance(value, dict):
            values[key] = from_dict(type(inner), value, _join(where, key), base=inner)
        else:
            values[key] = _convert(hints[key], value, _join(where, key))
    return replace(base, **values) if base is not None else cls(**values)


def validate(cfg: Any, where: str = "") -> Any:
    """Type-checks every field and runs each nested dataclass's checks(); ConfigError for the first problem."""
    hints = typing.get_type_hints(type(cfg))
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            validate(value, _join(where, f.name))
        elif isinstance(value, list) and value and all(is_dataclass(v) for v in value):
            for i, item in enumerate(value):
                validate(item, f"{_join(where, f.name)}[{i}]")
        else:
            _convert(hints[f.name], value, _join(where, f.name))
    for name, problem in cfg.checks():
        if problem:
            fail(_join(where, name), problem)
    return cfg


def read_file(path: str | Path) -> dict:
    """The mapping in a .yaml/.yml/.json file; ConfigError for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        detail = " ".join(str(error).split())
        raise ConfigError(f"config file '{path}' is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {detail}")
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}': expected a mapping of stage sections ({', '.join(STAGES)})")
    return data


def apply_override(data: dict, assignment: str) -> None:
    """Sets one dotted field from "section.field.sub=value" (value parsed as YAML) in a raw config mapping."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set '{assignment}': expected FIELD=VALUE, e.g. distill.train.steps=100")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        child = node[part]
        if not isinstance(child, dict):
            fail(key, f"'{part}' is not a section")
        node = child
    node[parts[-1]] = value


def load_stage(section: str, data: dict) -> Any:
    """The validated config of one stage from a raw mapping of sections (read_file's, after overrides);
    an absent section means every default."""
    for key in data:
        if key not in STAGES:
            fail(str(key), f"unknown section (known: {', '.join(STAGES)})")
    return validate(from_dict(STAGES[section], data.get(section) or {}, section), section)


def to_yaml(section: str, cfg: Any) -> str:
    """The file that reproduces cfg: {section: every field}."""
    return yaml.safe_dump({section: asdict(cfg)}, sort_keys=False)


def first_difference(old: Any, new: Any, where: str = "") -> tuple[str, Any, Any] | None:
    """The first field (dotted path) whose value differs between two nested mappings, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            found = first_difference(old.get(key), new.get(key), _join(where, key))
            if found:
                return found
        return None
    return None if old == new else (where, old, new)
