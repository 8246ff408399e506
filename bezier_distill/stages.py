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
from .checkpoint import load_model, model_weights
from .config import (RESUMABLE_CHANGES, ConfigError, DistillStage, GuidesStage, ModelConfig, ReflowStage,
                     SampleStage, TeacherStage, first_difference, to_yaml, validate)
from .data import IndependentPairs, get_distribution, resolve_pair, seeded_generator
from .errors import DamagedFileError
from .files import atomic_write, write_json
from .guides import coupling_maker, fit_maker, multi_teacher_maker, write_paths
from .metrics import energy_distance
from .models import resolve_model
from .teachers import load_teacher
from .train import TrainResult, train

CONFIG_FILE = "config.yaml"


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
        found = first_difference(old, new)
        if found:
            field, before, now = found
            raise ConfigError(f"config field '{section}.{field}': '{out_dir}' holds a run made with {before!r}, "
                              f"this run asks for {now!r}; use a new output directory or the same config")
    if distributed.world().main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(path, to_yaml(section, cfg))


def check_stage(section: str, cfg: Any, device: torch.device | str) -> torch.device:
    """Every field check of cfg, that its bezier_kernels backend runs on device and that its batch splits
    across the ranks; ConfigError naming the field. Returns the device (this rank's GPU under torchrun)."""
    device = distributed.rank_device(device)
    validate(cfg, section)
    train_cfg = getattr(cfg, "train", None)
    split = None if train_cfg is None else distributed.batch_problem(train_cfg.batch_size)
    if split:
        raise ConfigError(f"config field '{section}.train.batch_size': {split}")
    backend = "auto" if train_cfg is None else train_cfg.backend
    info = bk.available_backends().get(backend)
    if info is not None and (not info.available or (backend != "torch" and device.type not in info.devices)):
        raise ConfigError(f"config field '{section}.train.backend': backend {backend!r} cannot run on "
                          f"{device.type} here ({info.reason})")
    return device


def _init_weights(run_dir: str, model_cfg: ModelConfig, dim: int, field: str) -> dict:
    """The EMA weights of run_dir, checked to fit the architecture model_cfg at dimension dim."""
    weights, state = model_weights(run_dir)
    theirs, ours = state["run"], asdict(resolve_model(model_cfg, dim))
    if theirs["dim"] != dim or theirs["model"] != ours:
        raise ConfigError(f"config field '{field}': '{run_dir}' is a dim-{theirs['dim']} {theirs['model']} network, "
                          f"this run builds a dim-{dim} {ours}")
    return weights


def train_teacher(cfg: TeacherStage, out_dir: str | Path, device: str = "cpu", progress: bool = True,
                  stop_after: int | None = None) -> TrainResult:
    """1-rectified flow: straight lines between independent x0 ~ source and x1 ~ target."""
    device = check_stage("teacher", cfg, device)
    pairs = IndependentPairs(*resolve_pair(cfg.data))
    record_config(out_dir, "teacher", cfg)
    run_info = {"stage": "teacher", "data": asdict(cfg.data), "reflow": 1}
    return train(cfg.train, cfg.model, pairs, out_dir, run_info=run_info, device=device, progress=progress,
                 stop_after=stop_after)


def reflow(cfg: ReflowStage, out_dir: str | Path, device: str = "cpu", progress: bool = True,
           stop_after: int | None = None) -> TrainResult:
    """The k-RF teacher's coupling (stored in out_dir/coupling), then a (k+1)-RF teacher trained on it."""
    device = check_stage("reflow", cfg, device)
    teacher = load_teacher(cfg.teacher, device)
    record_config(out_dir, "reflow", cfg)
    coupling_dir = Path(out_dir) / "coupling"
    producer = {"stage": "reflow", "teacher": cfg.teacher, "coupling": asdict(cfg.coupling)}
    write_paths(coupling_maker(teacher, cfg.coupling.solver), cfg.coupling, coupling_dir, producer,
                progress=progress, desc="coupling")
    _, pairs = store.load_pairs(coupling_dir, cfg.train.seed)
    model_cfg = ModelConfig(**teacher.run["model"])  # the teacher's architecture
    init = {k: v.cpu() for k, v in teacher.model.state_dict().items()} if cfg.init_from_teacher else None
    k = teacher.run.get("reflow")  # None when the teacher is itself a distilled student
    run_info = {"stage": "reflow", "data": teacher.run["data"], "reflow": k + 1 if k else None,
                "teacher": teacher.record, "pairs": str(coupling_dir)}
    return train(cfg.train, model_cfg, pairs, out_dir, run_info=run_info, device=device, init_weights=init,
                 progress=progress, stop_after=stop_after)


def make_guides(cfg: GuidesStage, out_dir: str | Path, device: str = "cpu", progress: bool = True) -> dict:
    """Control points of degree-n paths by the multi-teacher or the fit maker; returns the store manifest."""
    device = check_stage("guides", cfg, device)
    fields = [(f"guides.teachers[{i}]", run) for i, run in enumerate(cfg.teachers)]
    if cfg.endpoint_teacher:
        fields.append(("guides.endpoint_teacher", cfg.endpoint_teacher))
    loaded = {run: load_teacher(run, device) for _, run in fields}
    first = loaded[cfg.teachers[0]].run
    for field, run in fields:
        theirs = loaded[run].run
        if (theirs["data"]["source"], theirs["dim"]) != (first["data"]["source"], first["dim"]):
            raise ConfigError(f"config field '{field}': its source {theirs['data']['source']!r} (dim {theirs['dim']}) "
                              f"differs from the first teacher's {first['data']['source']!r} (dim {first['dim']})")
    teachers = [loaded[run] for run in cfg.teachers]
    solver = cfg.generate.solver
    if cfg.method == "fit":
        maker = fit_maker(teachers[0], cfg.degree, cfg.fit_points, solver, cfg.save_trajectory)
    else:
        endpoint = loaded[cfg.endpoint_teacher or cfg.teachers[-1]]
        maker = multi_teacher_maker(teachers, cfg.guide_times, endpoint, solver, cfg.save_trajectory)
    producer = {"stage": "guides", **asdict(cfg)}
    record_config(out_dir, "guides", cfg)
    return write_paths(maker, cfg.generate, out_dir, producer, progress=progress, desc=f"guides ({cfg.method})")


def distill(cfg: DistillStage, out_dir: str | Path, device: str = "cpu", progress: bool = True,
            stop_after: int | None = None) -> TrainResult:
    """A student along stored paths: Bezier distillation on guides, k-RF distillation on a coupling."""
    device = check_stage("distill", cfg, device)
    manifest, pairs = store.load_pairs(cfg.pairs, cfg.train.seed)
    init = _init_weights(cfg.init_from, cfg.model, pairs.dim, "distill.init_from") if cfg.init_from else None
    record_config(out_dir, "distill", cfg)
    run_info = {"stage": "distill", "data": manifest["data"], "reflow": None, "pairs": cfg.pairs,
                "paths": {"kind": manifest["kind"], "degree": manifest["degree"], "teachers": manifest["teachers"]}}
    return train(cfg.train, cfg.model, pairs, out_dir, run_info=run_info, device=device, init_weights=init,
                 progress=progress, stop_after=stop_after)


@torch.no_grad()
def sample(cfg: SampleStage, out_dir: str | Path, device: str = "cpu", progress: bool = True,
           batch_size: int = 8192) -> dict:
    """Samples of a run from fresh x0 (samples.safetensors: x0, x1), their energy distance to fresh
    target samples and the source's (summary.json), and samples.png; returns the summary."""
    device = check_stage("sample", cfg, device)
    model, state = load_model(cfg.model, device, ema=cfg.ema)
    record_config(out_dir, "sample", cfg)
    run = state["run"]
    source = get_distribution(run["data"]["source"], run["dim"])
    target = get_distribution(run["data"]["target"], run["dim"])
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
        from .plots import plot_samples

        title = f"{run['stage']}, {cfg.solver.steps} {cfg.solver.method} step(s)"
        plot_samples(x1, reference, out_dir / "samples.png", title, target.image_shape)
    return summary
