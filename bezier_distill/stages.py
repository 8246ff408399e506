"""The pipeline's stages, one function per CLI subcommand; each records its config beside its outputs.

    train_teacher  1-RF teacher on independent pairs                 -> run directory
    reflow         coupling of a k-RF teacher (out/coupling), then a (k+1)-RF teacher trained on it
    make_guides    control points by "multi_teacher" or "fit"        -> dataset directory
    distill        student on stored paths (guides: Bezier distillation; a coupling: k-RF distillation)
    sample         samples of a run, their energy distance to the target, a figure

Rerunning a stage with the same out directory resumes it (training from its checkpoint, generation
from its finished chunks). Changing the config of an existing out directory is a ConfigError naming
the field, except for config.RESUMABLE_CHANGES (e.g. more train.steps).

Under torchrun every rank runs the stage: training is data-parallel, generation sharded by chunks,
and only rank 0 writes files (bezier_distill.distributed).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save

import bezier_kernels as bk

from . import distributed, samplers, store
from .checkpoint import load_model, model_weights, run_dir_problem
from .config import (
    RESUMABLE_CHANGES,
    DataConfig,
    DistillConfig,
    GuidesConfig,
    ModelConfig,
    ReflowConfig,
    SampleConfig,
    TeacherConfig,
    TrainConfig,
    to_yaml,
    validate,
)
from .data import IndependentPairs, distribution_problem, get_distribution, pair_problem, resolve_pair, seeded_generator
from .errors import DamagedFileError, check_unchanged, field_error, join
from .evaluation.metrics import energy_distance
from .files import atomic_write, read_json, write_json
from .guides import PathMaker, coupling_maker, fit_maker, multi_teacher_maker, write_paths
from .models import build_model, resolve_model
from .teachers import Teacher, load_external_teacher, load_teacher, velocity_device
from .train import TrainResult, train

CONFIG_FILE = "config.yaml"
COUPLING_DIR = "coupling"        # a reflow run keeps the coupling it trained on in OUT/coupling


def record_config(out_dir: str | Path, section: str, cfg: Any) -> None:
    """Writes out_dir/config.yaml; when one exists it must match cfg except for RESUMABLE_CHANGES.
    Stages call it once every check has passed, so a rejected config is never recorded."""
    out_dir = Path(out_dir)
    path = out_dir / CONFIG_FILE
    if path.is_file():
        try:
            old = (yaml.safe_load(path.read_text()) or {}).get(section, {})
        except (yaml.YAMLError, AttributeError) as error:  # not YAML, or not a mapping
            raise DamagedFileError(f"'{path}' is unreadable ({type(error).__name__}); delete it to record this "
                                   "run's config again (the run's own config), or use a new output directory") from None
        new = asdict(cfg)
        for name in RESUMABLE_CHANGES:
            head, _, key = name.partition(".")
            if isinstance(old.get(head), dict) and isinstance(new.get(head), dict) and key in new[head]:
                old[head][key] = new[head][key]
        check_unchanged(old, new, section=section, holder=f"'{out_dir}' holds a run",
                        remedy="use a new output directory or the same config")
    if distributed.world().main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(path, to_yaml(section, cfg))


def input_problems(cfg: Any):
    """(field, problem or None) for what a stage's config names outside itself: distributions, run
    directories and datasets (config checks only values; these read the registry and the disk)."""
    if isinstance(getattr(cfg, "data", None), DataConfig):
        yield "data.source", distribution_problem(cfg.data.source)
        yield "data.target", distribution_problem(cfg.data.target)
        yield "data.target", pair_problem(cfg.data.source, cfg.data.target)
    if isinstance(cfg, (ReflowConfig, GuidesConfig)) and cfg.teacher_model:
        yield "teacher_data.source", distribution_problem(cfg.teacher_data.source)
        yield "teacher_data.target", distribution_problem(cfg.teacher_data.target)
        yield "teacher_data.target", pair_problem(cfg.teacher_data.source, cfg.teacher_data.target)
    elif isinstance(cfg, ReflowConfig):
        yield "teacher", run_dir_problem(cfg.teacher)
    elif isinstance(cfg, GuidesConfig):
        for i, run in enumerate(cfg.teachers):
            yield f"teachers[{i}]", run_dir_problem(run)
        if cfg.endpoint_teacher:
            yield "endpoint_teacher", run_dir_problem(cfg.endpoint_teacher)
    elif isinstance(cfg, DistillConfig):
        yield "pairs", store.dataset_problem(cfg.pairs)
        if cfg.init_from:
            yield "init_from", run_dir_problem(cfg.init_from)
    elif isinstance(cfg, SampleConfig):
        yield "model", run_dir_problem(cfg.model)


def check_stage(section: str, cfg: Any, device: torch.device | str) -> torch.device:
    """Every field check of cfg, what it names (input_problems), that its bezier_kernels backend runs on
    device and that its batch splits across the ranks; ConfigError naming the field. Returns the device
    (this rank's GPU under torchrun)."""
    validate(cfg, section)
    for name, problem in input_problems(cfg):
        if problem:
            raise field_error(join(section, name), problem)
    model = getattr(cfg, "model", None)
    if isinstance(model, ModelConfig) and model.factory:  # import, call and output shape, before anything is written
        with torch.random.fork_rng(devices=[]):
            build_model(model, _feature_shape(cfg), f"{section}.model")
    return check_backend(section, getattr(cfg, "train", None), device)


def _feature_shape(cfg: TeacherConfig | DistillConfig) -> tuple[int, ...]:
    """The feature shape of the data a teacher or distill config trains on (its names and paths checked)."""
    if isinstance(cfg, TeacherConfig):
        return resolve_pair(cfg.data)[0].features
    manifest = read_json(Path(cfg.pairs) / store.MANIFEST)
    return tuple(manifest.get("shape", [manifest["dim"]]))


def check_backend(section: str, train_cfg: TrainConfig | None, device: torch.device | str) -> torch.device:
    """That the training batch splits across the ranks and the bezier_kernels backend runs on device; ConfigError
    naming {section}.train.* otherwise. Returns the device (this rank's GPU under torchrun)."""
    device = distributed.rank_device(device)
    split = None if train_cfg is None else distributed.batch_problem(train_cfg.batch_size)
    if split:
        raise field_error(f"{section}.train.batch_size", split)
    backend = "auto" if train_cfg is None else train_cfg.backend
    info = bk.available_backends().get(backend)
    if info is not None and (not info.available or (backend != "torch" and device.type not in info.devices)):
        raise field_error(f"{section}.train.backend", f"backend {backend!r} cannot run on {device.type} here "
                          f"({info.reason})")
    return device


def _init_weights(run_dir: str, model_cfg: ModelConfig, shape: tuple[int, ...], field: str) -> dict:
    """The EMA weights of run_dir, checked to fit the architecture model_cfg at feature shape `shape`."""
    weights, state = model_weights(run_dir)
    theirs, ours = state["run"], asdict(resolve_model(model_cfg, shape))
    their_shape = tuple(theirs.get("shape", [theirs["dim"]]))
    if their_shape != tuple(shape) or resolve_model(ModelConfig(**theirs["model"]), their_shape) != \
            resolve_model(model_cfg, shape):
        raise field_error(field, f"'{run_dir}' is a {_shape_text(their_shape)} {theirs['model']} network, "
                                 f"this run builds a {_shape_text(shape)} {ours}")
    return weights


def _shape_text(shape: tuple[int, ...]) -> str:
    return f"dim-{shape[0]}" if len(shape) == 1 else f"{list(shape)}"


def _teacher(cfg: ReflowConfig | GuidesConfig, section: str, run_dir: str, device: torch.device) -> Teacher:
    """The teacher of a run directory, or the config's outside teacher (teacher_model) when run_dir is ""."""
    if run_dir:
        return load_teacher(run_dir, device)
    return load_external_teacher(cfg.teacher_model, cfg.teacher_weights, cfg.teacher_data, device, section)


def _write_paths(maker: PathMaker, teachers: list[Teacher], generate, out_dir, producer: dict, progress: bool,
                 desc: str) -> dict:
    """write_paths from the first teacher's source on its device, recording every (distinct) teacher."""
    first = teachers[0]
    records = list({id(t): t.record for t in teachers}.values())
    return write_paths(maker, generate, out_dir, producer, source=first.source, data=first.run["data"],
                       teachers=records, device=velocity_device(first.model), progress=progress, desc=desc)


def train_teacher(cfg: TeacherConfig, out_dir: str | Path, device: str = "cpu", progress: bool = True,
                  stop_after: int | None = None) -> TrainResult:
    """1-rectified flow: straight lines between independent x0 ~ source and x1 ~ target."""
    device = check_stage("teacher", cfg, device)
    pairs = IndependentPairs(*resolve_pair(cfg.data))
    record_config(out_dir, "teacher", cfg)
    run_info = {"stage": "teacher", "data": asdict(cfg.data), "reflow": 1}
    return train(cfg.train, cfg.model, pairs, out_dir, run_info=run_info, device=device, progress=progress,
                 stop_after=stop_after)


def reflow(cfg: ReflowConfig, out_dir: str | Path, device: str = "cpu", progress: bool = True,
           stop_after: int | None = None) -> TrainResult:
    """The k-RF teacher's coupling (stored in out_dir/coupling), then a (k+1)-RF teacher trained on it."""
    device = check_stage("reflow", cfg, device)
    teacher = _teacher(cfg, "reflow", cfg.teacher, device)
    record_config(out_dir, "reflow", cfg)
    coupling_dir = Path(out_dir) / COUPLING_DIR
    producer = {"stage": "reflow", "teacher": cfg.teacher or teacher.external, "coupling": asdict(cfg.coupling)}
    _write_paths(coupling_maker(teacher.model, cfg.coupling.solver), [teacher], cfg.coupling, coupling_dir, producer,
                 progress, "coupling")
    _, pairs = store.load_pairs(coupling_dir, cfg.train.seed)
    model_cfg = ModelConfig(**teacher.run["model"])  # the teacher's architecture
    init = {k: v.cpu() for k, v in teacher.model.state_dict().items()} if cfg.init_from_teacher else None
    k = teacher.run.get("reflow")  # None when the teacher is itself a distilled student
    run_info = {"stage": "reflow", "data": teacher.run["data"], "reflow": k + 1 if k else None,
                "teacher": teacher.record, "pairs": str(coupling_dir)}
    return train(cfg.train, model_cfg, pairs, out_dir, run_info=run_info, device=device, init_weights=init,
                 progress=progress, stop_after=stop_after)


def make_guides(cfg: GuidesConfig, out_dir: str | Path, device: str = "cpu", progress: bool = True) -> dict:
    """Control points of degree-n paths by the multi-teacher or the fit maker; returns the store manifest."""
    device = check_stage("guides", cfg, device)
    runs = cfg.teachers or [""]  # "": the outside teacher
    fields = [(f"guides.teachers[{i}]", run) for i, run in enumerate(runs)]
    if cfg.endpoint_teacher:
        fields.append(("guides.endpoint_teacher", cfg.endpoint_teacher))
    loaded = {run: _teacher(cfg, "guides", run, device) for _, run in fields}
    first = loaded[runs[0]]
    for field, run in fields:
        theirs = loaded[run]
        if (theirs.run["data"]["source"], theirs.shape) != (first.run["data"]["source"], first.shape):
            raise field_error(field, f"its source {theirs.run['data']['source']!r} {list(theirs.shape)} differs from "
                                     f"the first teacher's {first.run['data']['source']!r} {list(first.shape)}")
    teachers = [loaded[run] for run in runs]
    solver = cfg.generate.solver
    endpoint = loaded[cfg.endpoint_teacher or runs[-1]]
    if cfg.method == "fit":
        maker = fit_maker(first.model, cfg.degree, cfg.fit_points, solver, cfg.save_trajectory)
    else:
        maker = multi_teacher_maker([t.model for t in teachers], cfg.guide_times, endpoint.model, solver,
                                    cfg.save_trajectory)
    producer = {"stage": "guides", **asdict(cfg)}
    record_config(out_dir, "guides", cfg)
    return _write_paths(maker, [*teachers, endpoint], cfg.generate, out_dir, producer, progress,
                        f"guides ({cfg.method})")


def distill(cfg: DistillConfig, out_dir: str | Path, device: str = "cpu", progress: bool = True,
            stop_after: int | None = None) -> TrainResult:
    """A student along stored paths: Bezier distillation on guides, k-RF distillation on a coupling."""
    device = check_stage("distill", cfg, device)
    manifest, pairs = store.load_pairs(cfg.pairs, cfg.train.seed)
    init = _init_weights(cfg.init_from, cfg.model, pairs.shape, "distill.init_from") if cfg.init_from else None
    record_config(out_dir, "distill", cfg)
    return train(cfg.train, cfg.model, pairs, out_dir, run_info=distill_run_info(manifest, cfg.pairs), device=device,
                 init_weights=init, progress=progress, stop_after=stop_after)


def distill_run_info(manifest: dict, pairs: str) -> dict:
    """What a distill run records about itself, from its paths' manifest (or Paths.info) and dataset directory."""
    return {"stage": "distill", "data": manifest.get("data"), "reflow": None, "pairs": pairs or None,
            "paths": {"kind": "coupling" if manifest["degree"] == 1 else "guides", "degree": manifest["degree"],
                      "teachers": manifest.get("teachers", [])}}


@torch.no_grad()
def sample(cfg: SampleConfig, out_dir: str | Path, device: str = "cpu", progress: bool = True,
           batch_size: int = 8192) -> dict:
    """Samples of a run from fresh x0 (samples.safetensors: x0, x1), their energy distance to fresh
    target samples and the source's (summary.json), and samples.png; returns the summary."""
    device = check_stage("sample", cfg, device)
    model, state = load_model(cfg.model, device, ema=cfg.ema)
    record_config(out_dir, "sample", cfg)
    run = state["run"]
    if not run.get("data"):
        raise field_error("sample.model", f"'{cfg.model}' was trained on paths that name no source distribution "
                                          "(saved from Python); sample it with bezier_distill.sample")
    shape = tuple(run.get("shape", [run["dim"]]))
    source = get_distribution(run["data"]["source"], shape=shape)
    target = get_distribution(run["data"]["target"], shape=shape)
    x0 = source.sample(cfg.num_samples, seeded_generator(cfg.seed, 0))
    x1 = torch.cat([samplers.sample(model, chunk.to(device), cfg.solver.steps, cfg.solver.method).cpu()
                    for chunk in x0.split(batch_size)])
    reference = target.sample(cfg.num_samples, seeded_generator(cfg.seed, 1))
    summary = {"model": cfg.model, "stage": run["stage"], "target": run["target"], "step": state["step"],
               "solver": asdict(cfg.solver),
               "evaluations_per_sample": samplers.evaluations(cfg.solver.method, cfg.solver.steps),
               "energy_distance": energy_distance(x1, reference),
               "source_energy_distance": energy_distance(x0, reference)}
    out_dir = Path(out_dir)
    if not distributed.world().main:  # under torchrun every rank samples alike; rank 0 writes
        return summary
    atomic_write(out_dir / "samples.safetensors", save({"x0": x0.contiguous(), "x1": x1.contiguous()}))
    write_json(out_dir / "summary.json", summary)
    if cfg.plot:
        from .evaluation.plots import plot_samples  # matplotlib: only when a figure is drawn

        title = f"{run['stage']}, {cfg.solver.steps} {cfg.solver.method} step(s)"
        plot_samples(x1, reference, out_dir / "samples.png", title, target.image_shape)
    return summary
