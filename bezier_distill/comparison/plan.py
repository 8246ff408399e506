"""The plan of one seed of a comparison: every pipeline stage it runs, in order, typed.

A Stage makes one Product (a teacher, a coupling, guides, a student or a guide map) into its run
directory (comparison.layout names them) and lists the stages it needs; a MethodRuns names, for
one compared method, the data it trains on, its student and its guide map. A baseline's "student"
is its trained network(s): 2-RF++ by the distill stage, CAF and MeanFlow by bezier_distill.baselines.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Callable

from .. import stages, store
from ..baselines.caf import caf_stage
from ..baselines.meanflow import meanflow_stage
from ..baselines.rfpp import rfpp_distill_config
from ..config import (
    CompareConfig,
    DistillConfig,
    GuideMapConfig,
    GuidesConfig,
    MethodConfig,
    ReflowConfig,
    TeacherConfig,
)
from ..data import StoredPairs, derive_seed
from ..train import train
from . import layout


class Choice(str, Enum):
    """A name that results.json records as its plain string value."""

    def __str__(self) -> str:
        return self.value


class Product(Choice):
    """What a stage makes."""

    TEACHER = "teacher"
    COUPLING = "coupling"
    GUIDES = "guides"
    STUDENT = "student"
    GUIDE_MAP = "guide_map"


class Family(Choice):
    """What a sampled model is: a reference sample, a teacher, or the student of a method kind."""

    REFERENCE = "reference"
    TEACHER = "teacher"
    REFLOW = "reflow"              # k-RF distillation
    BEZIER = "bezier"              # Bezier distillation
    RFPP = "rfpp"                  # 2-RF++
    CAF = "caf"                    # Constant Acceleration Flow
    MEANFLOW = "meanflow"          # MeanFlow


class Sampler(Choice):
    """How a model is sampled (samplers.solve_ode, sample_on_bezier for BEZIER, the baselines' own for CAF and
    MEANFLOW)."""

    NONE = "-"                     # a reference sample
    EULER = "euler"                # for a student at N >= 2 steps: re-entering the line
    HEUN = "heun"
    ONE_STEP = "one step"          # a student's single Euler step from t = 0
    BEZIER = "bezier"              # a Bezier student re-entering its own path with its guide map
    CAF = "caf"                    # CAF: initial velocity once, then constant-acceleration steps
    MEANFLOW = "meanflow"          # MeanFlow: jumps by the average velocity over each step


@dataclass
class Stage:
    """A pipeline stage of one seed: its directory name, how to run it, and the stages it needs (itself included)."""

    name: str
    product: Product
    run: Callable[[], object]
    needs: list[str]


@dataclass
class MethodRuns:
    """The directory names of one method's data, student and (Bezier students) guide map."""

    data: str | None               # None: MeanFlow trains on fresh independent pairs
    student: str
    guide_map: str | None


@dataclass
class SeedPlan:
    """Every stage of one seed in running order, the path of each directory, and each method's runs."""

    stages: list[Stage]
    paths: dict[str, str]
    methods: dict[str, MethodRuns]
    levels: int                    # the highest k of a k-RF teacher the methods need


def generation_seed(seed: int, name: str) -> int:
    """The seed of a generated dataset: independent across run seeds and datasets, fixed by both."""
    return derive_seed(seed, zlib.crc32(name.encode())) % 2**31


def teacher_of(method: MethodConfig) -> int | None:
    """k of the teacher whose ODE end is the method's x1 (its student starts from that teacher's weights);
    None for MeanFlow, which has no teacher."""
    if method.kind in ("reflow", "rfpp", "caf"):
        return method.reflows
    if method.kind == "meanflow":
        return None
    if method.maker == "multi_teacher":
        return method.endpoint or method.teachers[-1]
    return method.teachers[0]


def plan_seed(cfg: CompareConfig, seed: int, seed_dir: Path, device: str, progress: bool) -> SeedPlan:
    """Every stage of one seed in running order, and per method the names of its data, student and guide map."""
    planned: list[Stage] = []
    path: dict[str, str] = {}

    def add(name: str, product: Product, stage: Callable, needs: list[str]) -> None:
        """stage(out_dir, device, progress) runs the stage into seed_dir/name."""
        path[name] = str(seed_dir / name)
        planned.append(Stage(name, product, partial(stage, path[name], device, progress), needs + [name]))

    def generate(name: str):
        return replace(cfg.generate, seed=generation_seed(seed, name))

    levels = max((k for m in cfg.methods for k in m.teacher_levels), default=1)
    teacher_needs: dict[int, list[str]] = {1: []}
    add(layout.teacher_run(1), Product.TEACHER, partial(stages.train_teacher, TeacherConfig(
        data=cfg.data, model=cfg.model, train=replace(cfg.teacher, seed=seed))), [])
    for k in range(2, levels + 1):
        teacher_needs[k] = teacher_needs[k - 1] + [layout.teacher_run(k - 1)]
        reflow = ReflowConfig(teacher=path[layout.teacher_run(k - 1)], coupling=generate(layout.teacher_run(k)),
                              train=replace(cfg.reflow, seed=seed))
        add(layout.teacher_run(k), Product.TEACHER, partial(stages.reflow, reflow), teacher_needs[k])

    methods = {}
    for index, method in enumerate(cfg.methods):
        needs = sorted({n for k in method.teacher_levels for n in teacher_needs[k] + [layout.teacher_run(k)]})
        slug = layout.method_slug(method, index)
        student = layout.student_run(slug)
        if method.kind == "meanflow":
            add(student, Product.STUDENT, partial(meanflow_stage, cfg.baselines.meanflow, cfg.data, cfg.model, seed),
                [])
            methods[method.name] = MethodRuns(None, student, None)
            continue
        if method.kind in ("reflow", "rfpp", "caf"):
            data, product = layout.coupling_data(method.reflows), Product.COUPLING
            guides = GuidesConfig(method="fit", teachers=[path[layout.teacher_run(method.reflows)]], degree=1,
                                  generate=generate(data))
        else:
            data, product = layout.guides_data(slug), Product.GUIDES
            endpoint = path[layout.teacher_run(method.endpoint)] if method.endpoint else ""
            guides = GuidesConfig(method=method.maker, teachers=[path[layout.teacher_run(k)] for k in method.teachers],
                                  degree=method.degree, guide_times=method.guide_times, generate=generate(data),
                                  endpoint_teacher=endpoint)
        if data not in path:
            add(data, product, partial(stages.make_guides, guides), needs)
        teacher = path[layout.teacher_run(teacher_of(method))]
        init = teacher if cfg.init_students else ""
        if method.kind == "caf":
            run = partial(caf_stage, cfg.baselines.caf, path[data], cfg.model, seed, init)
        else:
            distill = (rfpp_distill_config(cfg.baselines.rfpp, path[data], cfg.model, seed, teacher)
                       if method.kind == "rfpp" else
                       DistillConfig(pairs=path[data], model=cfg.model, train=replace(cfg.student, seed=seed),
                                     init_from=init))
            run = partial(stages.distill, distill)
        add(student, Product.STUDENT, run, needs + [data])
        guide_map = None
        if method.kind == "bezier" and cfg.student.target == "endpoint":
            guide_map = layout.guide_map_run(slug)
            add(guide_map, Product.GUIDE_MAP, partial(train_guide_map, cfg.guide_map, path[data], seed),
                needs + [data])
        methods[method.name] = MethodRuns(data, student, guide_map)
    return SeedPlan(planned, path, methods, levels)


def train_guide_map(cfg: GuideMapConfig, guides_dir: str, seed: int, out_dir: str, device: str, progress: bool):
    """The guide map of samplers.sample_on_bezier, trained by the pipeline's loop on the stored control points:
    inputs the n-1 stacked copies of x0 (flattened: images [n, *F] too), target the flattened guides, target
    "endpoint" at t = 0."""
    manifest, tensors = store.load(guides_dir)
    inner = manifest["degree"] - 1
    pairs = StoredPairs(tensors["x0"].flatten(1).repeat(1, inner), tensors["guides"].flatten(1), None, seed)
    stages.record_config(out_dir, "guide_map", cfg)
    run_info = {"stage": "guide_map", "data": manifest["data"], "reflow": None, "pairs": guides_dir}
    return train(replace(cfg.train, seed=seed), cfg.model, pairs, out_dir, run_info=run_info, device=device,
                 progress=progress)
